"""Whether closed WebSockets leave anything behind in presence-server.

Starts a release server (memory store), then in each round opens 1,000 WebSockets, closes
them without a close frame (a FIN, as a killed tab does), waits, and prints the server's
resident memory and its open-socket gauge. A server that frees what a socket held stays
flat after the first rounds; one that leaks grows by the leak every round. With --message,
each socket first sends a heartbeat and reads the reply (a socket that answered a message
held its handler through its outbox until issue 27):

    ulimit -n 20000; python3 scripts/bench/socket_churn.py [rounds] [--message] [--server PATH]
"""
import asyncio
import re
import subprocess
import sys
import urllib.request

from connection_memory import SERVER, UPGRADE, resident_kib


HEARTBEAT = b'{"type":"heartbeat","roomId":"churn","userId":"u","sessionId":"s","interval":60000}'


def masked_text_frame(payload):
    mask = b"\x01\x02\x03\x04"
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))


async def main(rounds, message, server_path):
    arguments = [server_path, "--port", "0", "--store", "memory", "--max-connections-per-address", "100000", "--rate-limit", "1000000"]
    if "max-tcp-connections-per-address" in subprocess.run([server_path, "--help"], capture_output=True, text=True).stdout:
        arguments += ["--max-tcp-connections-per-address", "100000"]
    server = subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    port = None
    while port is None:
        match = re.search(r"127\.0\.0\.1:(\d+)", server.stdout.readline())
        port = int(match.group(1)) if match else None

    async def upgraded():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(UPGRADE)
        await reader.readuntil(b"\r\n\r\n")
        if message:
            writer.write(masked_text_frame(HEARTBEAT))
            header = await reader.readexactly(2)
            await reader.readexactly(header[1] & 0x7F)  # a heartbeat reply is short
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
    positional = [argument for argument in sys.argv[1:] if not argument.startswith("--")]
    server_path = sys.argv[sys.argv.index("--server") + 1] if "--server" in sys.argv else SERVER
    positional = [argument for argument in positional if argument != server_path]
    asyncio.run(main(int(positional[0]) if positional else 12, "--message" in sys.argv, server_path))
