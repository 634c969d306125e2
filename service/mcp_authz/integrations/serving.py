"""Run an ASGI app (an MCP streamable HTTP app) with uvicorn on HOST:PORT, port 0 allowed.

The bound address is printed on stdout as one line, ``listening on http://HOST:PORT``, so a
parent process (tests, ``make demo``) can start it on an ephemeral port and read where it is.
uvicorn handles SIGTERM/SIGINT: it stops accepting, finishes open requests, runs the lifespan
shutdown (which closes upstream sessions), and returns.
"""

from __future__ import annotations

import socket
import sys

import uvicorn
from starlette.types import ASGIApp

READY_PREFIX = "listening on "


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"listen: expected HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


class _Server(uvicorn.Server):
    """Announces the address once the lifespan (upstream connections) is up and it accepts."""

    address = ""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            print(f"{READY_PREFIX}{self.address}", flush=True, file=sys.stdout)


def run_app(app: ASGIApp, listen: str, log_level: str = "warning") -> None:
    host, port = split_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = _Server(uvicorn.Config(app, log_level=log_level.lower(), lifespan="on"))
    server.address = f"http://{host}:{sock.getsockname()[1]}"
    server.run(sockets=[sock])
