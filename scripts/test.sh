#!/usr/bin/env bash
# Runs every test of swift-presence: unit, store conformance, server over real
# sockets, the real executable (including SIGKILL crash recovery), the Swift client,
# and the browser client in a real Chromium. Installs whatever the tests need first,
# so it works the same on a fresh machine, a developer's machine and CI.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v swift >/dev/null 2>&1; then
    echo "swift is not on PATH: install the Swift 6 toolchain first" >&2
    exit 1
fi

# Debian packages: SQLite's headers for GRDB; Chromium and an emoji font for the browser tests;
# curl for the API fuzzing script; Node for the browser client's unit tests (when the machine has none);
# tsc to check the client's TypeScript declarations; nginx to run deploy/nginx.conf in front of several servers.
missing=()
for package in libsqlite3-dev chromium fonts-noto-color-emoji curl node-typescript nginx-light; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
command -v node >/dev/null 2>&1 || missing+=(nodejs)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# Python packages for the browser tests. Playwright drives Debian's Chromium
# (executable_path); it never downloads a browser of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
if ! python3 -c "import playwright.sync_api, pytest, standardwebhooks" >/dev/null 2>&1 || ! command -v schemathesis >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check playwright pytest schemathesis standardwebhooks
fi

# A PostgreSQL server of the tests' own (Debian's, installed when missing) for the PostgreSQL store
# and the several-process tests; stopped when this script ends.
postgres_folder=$(mktemp -d /tmp/presence-postgres.XXXXXX)
chmod 755 "$postgres_folder"
trap 'scripts/postgres.sh stop "$postgres_folder" || true; rm -rf "$postgres_folder"' EXIT
PRESENCE_TEST_POSTGRES_URL=$(scripts/postgres.sh start "$postgres_folder")
export PRESENCE_TEST_POSTGRES_URL PRESENCE_TEST_POSTGRES_FOLDER="$postgres_folder" PRESENCE_REQUIRE_POSTGRES=1

# Build everything once (libraries, executables, tests); later tests run the built binaries.
swift build --build-tests
# The several-process tests start many servers and load both cores, and the socket churn tests
# open 10,000 sockets and push megabytes: run them on their own, so the timing bounds of the
# other tests are not measured on a machine they saturate.
swift test --skip-build --skip MultiProcessTests --skip LoadBalancerTests --skip SocketChurnTests --skip ShippedNginxTests
swift test --skip-build --filter "MultiProcessTests|LoadBalancerTests|SocketChurnTests|ShippedNginxTests"
node --test Tests/js
scripts/schemathesis.sh
python3 scripts/fetch-react.py   # React 18 for the React bindings' tests (from PyPI's dash wheel)
python3 -m pytest -q Tests/browser
# A short pass over the request decoders, so the fuzz target and its corpus cannot rot.
scripts/fuzz.sh 45
