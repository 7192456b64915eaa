"""A loopback HTTP proxy in front of the S3 test server that forwards every request whole, except the
first PUT whose path matches a pattern: of that one it forwards the headers and half the body, prints
`STALLED <path>` and holds the connection open, so that the writer can be killed with its upload half
sent, as a pod dies mid-upload.

    python -m feedback_assets_tests.stalling_proxy --port P --target-port T --stall 'feedback_training_.*\\.csv'

Run by the object-storage kill test in its own process group and stopped by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re

from feedback_assets_tests.tcp_proxy import HOST, pipe, serve


class _Proxy:
    def __init__(self, target_port: int, stall: re.Pattern[str]) -> None:
        self.target_port = target_port
        self.stall = stall
        self.stalled = False

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(HOST, self.target_port)
        responses = asyncio.create_task(pipe(server_reader, client_writer))
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await client_reader.readuntil(b"\r\n\r\n")
                method, path, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in head.decode("latin-1").split("\r\n")[1:])
                }
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    # Not parsed: the rest of this connection is passed through as it comes.
                    server_writer.write(head)
                    await pipe(client_reader, server_writer)
                    break
                body = await client_reader.readexactly(int(headers.get("content-length", "0") or 0))
                if method == "PUT" and not self.stalled and self.stall.search(path):
                    self.stalled = True
                    server_writer.write(head + body[: len(body) // 2])
                    await server_writer.drain()
                    print(f"STALLED {path}", flush=True)
                    await asyncio.Event().wait()
                server_writer.write(head + body)
                await server_writer.drain()
        server_writer.close()
        await responses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--stall", required=True, help="a regular expression the stalled PUT's path matches")
    args = parser.parse_args()
    asyncio.run(serve(args.port, _Proxy(args.target_port, re.compile(args.stall)).handle))


if __name__ == "__main__":
    main()
