"""A loopback TCP proxy that starts listening only after a delay: until then every connection to its
port is refused, as during a database failover.

    python -m feedback_assets_tests.tcp_proxy --port P --target-port 5432 --refuse-seconds 20

Run by the source-fault tests in its own process group and stopped by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

HOST = "127.0.0.1"


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def _forward(target_port: int, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
    try:
        server_reader, server_writer = await asyncio.open_connection(HOST, target_port)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(port: int, handle: Handler) -> None:
    """Serve connections on 127.0.0.1:port with `handle`, saying so on stdout once listening."""
    server = await asyncio.start_server(handle, HOST, port, reuse_address=True)
    print(f"listening on {HOST}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target-port", type=int, default=5432)
    parser.add_argument("--refuse-seconds", type=float, default=0.0)
    args = parser.parse_args()
    time.sleep(args.refuse_seconds)
    asyncio.run(serve(args.port, lambda reader, writer: _forward(args.target_port, reader, writer)))


if __name__ == "__main__":
    main()
