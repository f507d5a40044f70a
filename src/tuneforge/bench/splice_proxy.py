"""The floor for any proxy on this machine: a TCP splice that copies bytes both ways and looks at nothing
(no HTTP parsing, no auth, no limits), on uvloop when it is installed.

`tuneforge bench gateway` puts it between the load and the same upstream as a third peer: what it costs
is what one extra hop costs here (a socket read and a write per event, in the kernel and the event loop),
so the gateway's overhead can be read against it rather than against no hop at all.
`python -m tuneforge.bench.splice_proxy --port 9002 --upstream 127.0.0.1:9001`.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys

CHUNK = 65536


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def serve(port: int, host: str, upstream_port: int) -> None:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, upstream_port)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(client, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def start(upstream_url: str) -> tuple[subprocess.Popen, str]:
    """A splice proxy in front of `upstream_url` (http://host:port/v1) as a process on a free port;
    (process, its base URL /v1) once /health answers through it."""
    from urllib.parse import urlsplit

    from tuneforge.core.net import free_port, wait_ready

    target = urlsplit(upstream_url)
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tuneforge.bench.splice_proxy", "--port", str(port),
                                "--upstream", f"{target.hostname}:{target.port}"])
    wait_ready(f"http://127.0.0.1:{port}/health", process, 60)
    return process, f"http://127.0.0.1:{port}/v1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="host:port to copy bytes to and from")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    try:
        import uvloop

        uvloop.run(serve(args.port, host, int(port)))
    except ImportError:
        asyncio.run(serve(args.port, host, int(port)))


if __name__ == "__main__":
    main()
