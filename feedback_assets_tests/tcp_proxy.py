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

HOST = "127.0.0.1"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
    await asyncio.gather(_pipe(client_reader, server_writer), _pipe(server_reader, client_writer))


async def _serve(port: int, target_port: int) -> None:
    server = await asyncio.start_server(
        lambda reader, writer: _forward(target_port, reader, writer), HOST, port, reuse_address=True
    )
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
    asyncio.run(_serve(args.port, args.target_port))


if __name__ == "__main__":
    main()
