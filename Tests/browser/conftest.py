"""Fixtures for the browser tests: a real presence-server process and Debian's Chromium
driven by Playwright (never a browser Playwright downloads)."""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
SERVER = Path(os.environ.get("PRESENCE_SERVER_BIN", ROOT / ".build" / "debug" / "presence-server"))
CHROMIUM = os.environ.get("CHROMIUM_BIN") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """presence-server on 127.0.0.1; `restart()` brings it back on the same port."""

    def __init__(self, *extra_args):
        self.extra_args = list(extra_args)
        self.port = free_port()
        self.data_dir = tempfile.mkdtemp(prefix="presence-browser-")
        self.process = None
        self.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self.process = subprocess.Popen(
            [str(SERVER), "--port", str(self.port), "--data-dir", self.data_dir, "--admin-key", "browser-admin",
             *self.extra_args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "PRESENCE_LOG_LEVEL": "warning"},
        )
        line = self.process.stdout.readline()
        assert "listening on" in line, f"server did not start: {line!r}"

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                # A server that hangs on shutdown fails the test, and is not left running.
                self.process.kill()
                self.process.wait()
                raise

    def restart(self):
        self.stop()
        self.start()


@pytest.fixture
def server():
    server = Server()
    yield server
    server.stop()
    shutil.rmtree(server.data_dir, ignore_errors=True)


JWT_SECRET = "browser-test-secret-that-is-long-enough"


def hs256_token(subject, lifetime=3600):
    """A user token as an identity provider would mint it."""
    import base64, hashlib, hmac, json
    def encode(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    header = encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = encode(json.dumps({"sub": subject, "exp": int(time.time()) + lifetime, "name": subject.title()}).encode())
    signature = hmac.new(JWT_SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{encode(signature)}"


@pytest.fixture
def jwt_server():
    server = Server("--auth", "jwt", "--jwt-secret", JWT_SECRET)
    yield server
    server.stop()
    shutil.rmtree(server.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as playwright:
        # A page the tests fulfil themselves (the React app) has no address, so Chromium's Local
        # Network Access counts it as public and blocks its sockets to 127.0.0.1; served by the
        # presence server itself, as in production, it would be local.
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-features=LocalNetworkAccessChecks"])
        yield browser
        browser.close()


@pytest.fixture
def artifacts():
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
