#!/usr/bin/env python3
"""A TCP proxy with a bandwidth limit, for benchmarks: what a registry behind a slow link looks
like. Both directions share one token bucket of RATE bytes per second. The total of bytes sent to
clients is kept in COUNT_FILE (rewritten every 50 ms), so a benchmark can read how much had
arrived at any moment.

usage: throttle-proxy.py LISTEN_PORT_FILE TARGET_HOST:PORT RATE_BYTES_PER_S COUNT_FILE
Listens on 127.0.0.1 on a free port, written to LISTEN_PORT_FILE once it accepts."""
import asyncio
import os
import sys
import time

port_file, target, rate, count_file = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
thost, tport = target.rsplit(":", 1)
tokens = 0.0
last = time.monotonic()
sent_to_clients = 0
lock = asyncio.Lock()


async def take(n):
    """Wait until n bytes may pass."""
    global tokens, last
    async with lock:
        while True:
            now = time.monotonic()
            tokens = min(rate * 0.05, tokens + (now - last) * rate)
            last = now
            if tokens >= n:
                tokens -= n
                return
            await asyncio.sleep((n - tokens) / rate)


async def pipe(reader, writer, to_client):
    global sent_to_clients
    try:
        while True:
            data = await reader.read(16384)
            if not data:
                break
            await take(len(data))
            writer.write(data)
            await writer.drain()
            if to_client:
                sent_to_clients += len(data)
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def handle(creader, cwriter):
    try:
        sreader, swriter = await asyncio.open_connection(thost, int(tport))
    except OSError:
        cwriter.close()
        return
    await asyncio.gather(pipe(creader, swriter, False), pipe(sreader, cwriter, True))


async def report():
    while True:
        tmp = count_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{sent_to_clients}\n")
        os.replace(tmp, count_file)
        await asyncio.sleep(0.05)


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    with open(port_file + ".tmp", "w") as f:
        f.write(f"{server.sockets[0].getsockname()[1]}\n")
    os.replace(port_file + ".tmp", port_file)
    asyncio.create_task(report())
    async with server:
        await server.serve_forever()


asyncio.run(main())
