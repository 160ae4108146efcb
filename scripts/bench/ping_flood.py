"""What a WebSocket peer that sends pings and never reads the pongs makes presence-server hold.

Starts a release server (memory store, the per-socket message budget lifted so that only
back-pressure bounds the flood), opens one WebSocket with a small receive buffer, sends up to
150 MiB of 125-byte pings without reading, and prints how much went through and the server's
resident memory before and after. A server that stops reading while its writes do not drain
takes a few MiB, until the kernel's buffers push back; one that reads on holds every pong:

    python3 scripts/bench/ping_flood.py [--server PATH]
"""
import re
import socket
import subprocess
import sys
import time

from connection_memory import SERVER, UPGRADE, resident_kib

server_path = sys.argv[sys.argv.index("--server") + 1] if "--server" in sys.argv else SERVER
server = subprocess.Popen(
    [server_path, "--port", "0", "--store", "memory", "--socket-rate-limit", "1000000000", "--rate-limit", "1000000"],
    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
port = None
while port is None:
    match = re.search(r"127\.0\.0\.1:(\d+)", server.stdout.readline())
    port = int(match.group(1)) if match else None
try:
    peer = socket.socket()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    peer.connect(("127.0.0.1", port))
    peer.sendall(UPGRADE)
    head = b""
    while b"\r\n\r\n" not in head:
        head += peer.recv(1)
    before = resident_kib(server.pid)
    mask = [1, 2, 3, 4]
    ping = bytes([0x89, 0x80 | 125]) + bytes(mask) + bytes(0x61 ^ mask[i % 4] for i in range(125))
    batch = ping * 1000
    peer.settimeout(2)
    sent = 0
    try:
        while sent < 150 << 20:
            sent += peer.send(batch)
    except OSError:  # a send that waited 2 s: the server stopped reading
        pass
    time.sleep(1)
    print(f"sent {sent >> 20} MiB of pings; server RSS {before >> 10} -> {resident_kib(server.pid) >> 10} MiB")
finally:
    server.terminate()
    server.wait()
