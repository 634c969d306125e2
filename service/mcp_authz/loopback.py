"""A small HTTP server on 127.0.0.1 for key sets and bundles that tests and ``make soak`` serve.

Each user supplies one function, ``answer(method, path, headers) -> (status, headers, body)``;
this module owns the socket, the thread and the HTTP plumbing, once.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Mapping
from typing import Any

Answer = tuple[int, Mapping[str, str], bytes]
Responder = Callable[[str, str, Mapping[str, str]], Answer]


class LoopbackServer:
    """Serves ``responder``'s answers on an ephemeral loopback port until ``close()``."""

    def __init__(self, responder: Responder):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                status, headers, body = responder("GET", self.path, self.headers)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
