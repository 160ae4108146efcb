"""What an open connection costs presence-server, before presence does anything.

Starts a release server, opens N connections that stay idle after one step, and
prints the growth of the server's resident memory per connection:

    python3 scripts/bench/connection_memory.py 5000 tcp    # accepted, nothing sent
    python3 scripts/bench/connection_memory.py 5000 http   # after one GET /health
    python3 scripts/bench/connection_memory.py 5000 ws     # after the WebSocket upgrade

Run `ulimit -n 20000` first for more than about 1,000 connections.
"""
import asyncio
import re
import subprocess
import sys
import time

SERVER = ".build/release/presence-server"
UPGRADE = (b"GET /api/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def resident_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def open_connection(port, mode):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if mode == "http":
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b'{"status":"ok"}')
    elif mode == "ws":
        writer.write(UPGRADE)
        await reader.readuntil(b"\r\n\r\n")
    return reader, writer


async def measure(count, mode):
    server = subprocess.Popen(
        [SERVER, "--port", "0", "--store", "memory", "--admin-key", "k", "--log-level", "error",
         "--rate-limit", "1e9", "--socket-rate-limit", "1e9", "--max-connections-per-address", "19000"],
        stdout=subprocess.PIPE)
    try:
        port = int(re.search(rb":(\d+) ", server.stdout.readline()).group(1))
        time.sleep(0.5)
        before = resident_kib(server.pid)
        connections = []
        for start in range(0, count, 200):  # a steady pace: the listen backlog is capped
            batch = range(start, min(count, start + 200))
            connections += await asyncio.gather(*[open_connection(port, mode) for _ in batch])
        await asyncio.sleep(2)
        after = resident_kib(server.pid)
        print(f"{mode}: {count} connections, server RSS {before} KiB -> {after} KiB, "
              f"{(after - before) / count:.1f} KiB per connection")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    asyncio.run(measure(int(sys.argv[1]), sys.argv[2]))
