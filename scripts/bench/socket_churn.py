"""Whether closed WebSockets leave anything behind in presence-server.

Starts a release server (memory store), then in each round opens 1,000 WebSockets, closes
them without a close frame (a FIN, as a killed tab does), waits, and prints the server's
resident memory and its open-socket gauge. A server that frees what a socket held stays
flat after the first rounds; one that leaks grows by the leak every round:

    ulimit -n 20000; python3 scripts/bench/socket_churn.py [rounds]
"""
import asyncio
import re
import subprocess
import sys
import urllib.request

from connection_memory import SERVER, UPGRADE, resident_kib


async def main(rounds):
    server = subprocess.Popen(
        [SERVER, "--port", "0", "--store", "memory", "--max-connections-per-address", "100000", "--rate-limit", "1000000"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    port = None
    while port is None:
        match = re.search(r"127\.0\.0\.1:(\d+)", server.stdout.readline())
        port = int(match.group(1)) if match else None

    async def upgraded():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(UPGRADE)
        await reader.readuntil(b"\r\n\r\n")
        return writer

    try:
        for round in range(rounds):
            writers = await asyncio.gather(*[upgraded() for _ in range(1000)])
            for writer in writers:
                writer.close()
            await asyncio.sleep(1.5)
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            open_sockets = next(line.split()[1] for line in metrics.splitlines() if line.startswith("presence_ws_connections "))
            print(f"round {round}: {(round + 1) * 1000} sockets opened and closed, "
                  f"RSS {resident_kib(server.pid)} KiB, open sockets {open_sockets}", flush=True)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 12))
