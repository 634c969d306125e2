"""The operations HTTP port: ``/metrics``, ``/healthz`` and ``/readyz`` (config ``metrics``).

``/healthz`` answers 200 while the process can serve HTTP at all. ``/readyz`` answers 200 only
when the gRPC health service says SERVING (a policy is active and shutdown has not begun), and
503 with the reason otherwise, so an HTTP probe and a gRPC probe never disagree.
A lifecycle component: ``start()`` binds (``port`` is then the bound port), ``stop(grace)``.
If the port cannot be bound the error is logged and the service runs on without it: decisions
come first, and a scraper sees the target down (``up == 0``); the gRPC health service, which the
chart's probes use, is unaffected.
"""

from __future__ import annotations

import http.server
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any, Protocol

from .tls import HttpTls, TlsHttpServer, scheme

log = logging.getLogger(__name__)


class Exposition(Protocol):
    """Renders metrics for a scrape (``Metrics``, or ``GroupMetrics`` in a worker group)."""

    def exposition(self, accept: str = "") -> tuple[bytes, str]: ...


class _Server(TlsHttpServer):
    daemon_threads = True


class MonitoringServer:
    def __init__(self, listen: str, metrics: Exposition, readiness: Callable[[], str | None],
                 tls: HttpTls | None = None):
        self._listen = listen
        self._tls = tls
        self._metrics = metrics
        self._readiness = readiness
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> None:
        host, _, port = self._listen.rpartition(":")
        host = host.strip("[]")
        server_class = type("_Bound", (_Server,), {
            "address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
        try:
            self._server = server_class((host, int(port)), self._handler())
        except OSError as exc:
            log.error("metrics.listen: cannot bind %s (%s); running without /metrics, /healthz "
                      "and /readyz", self._listen, exc.strerror or exc)
            return
        self._server.tls = self._tls
        self.port = self._server.server_address[1]
        log.info("metrics and health on %s://%s:%d (/metrics, /healthz, /readyz)",
                 scheme(self._tls), host if ":" not in host else f"[{host}]", self.port)
        self._thread = threading.Thread(target=self._server.serve_forever, name="monitoring",
                                        daemon=True)
        self._thread.start()

    def stop(self, grace: float = 0.0) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        metrics, readiness = self._metrics, self._readiness

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.partition("?")[0]
                if path == "/metrics":
                    body, content_type = metrics.exposition(self.headers.get("Accept", ""))
                    self._reply(200, body, content_type)
                elif path == "/healthz":
                    self._reply(200, b"ok\n")
                elif path == "/readyz":
                    problem = readiness()
                    if problem is None:
                        self._reply(200, b"ready\n")
                    else:
                        self._reply(503, f"not ready: {problem}\n".encode())
                else:
                    self._reply(404, b"not found: try /metrics, /healthz or /readyz\n")

            def _reply(self, status: int, body: bytes,
                       content_type: str = "text/plain; charset=utf-8") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass  # scrapes and probes every few seconds would flood the log

        return Handler
