"""Forward a host loopback port to the portal inside the gateway namespace:
``python -m mudguard.demo.forward --fd N --to 192.0.2.1:8080``.

The demo opens the listening socket on 127.0.0.1 in the host's namespace and hands its
file descriptor to this process, which it starts inside the gateway namespace. A socket
keeps the namespace it was created in, so this process accepts host connections and
connects to the portal on the LAN side: the owner opens http://127.0.0.1:PORT/ in a
browser on the host, and the host's own network is left untouched (no address, route or
firewall change).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys

MAX_CONNECTIONS = 64
IDLE_TIMEOUT = 300.0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await asyncio.wait_for(reader.read(65536), IDLE_TIMEOUT):
            writer.write(data)
            await writer.drain()
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def forward(listener: socket.socket, host: str, port: int) -> None:
    """Accept on ``listener`` and relay each connection to ``host``:``port``."""
    limit = asyncio.Semaphore(MAX_CONNECTIONS)

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        async with limit:
            try:
                server_r, server_w = await asyncio.wait_for(
                    asyncio.open_connection(host, port), 5)
            except (OSError, TimeoutError):
                client_w.close()
                return
            await asyncio.gather(_pipe(client_r, server_w), _pipe(server_r, client_w))

    server = await asyncio.start_server(relay, sock=listener)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description="Relay a host port into the gateway.")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--to", required=True, help="ADDRESS:PORT inside this namespace")
    args = parser.parse_args(argv)
    host, _, port = args.to.rpartition(":")
    listener = socket.socket(fileno=args.fd)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(forward(listener, host, int(port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
