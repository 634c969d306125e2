"""The AuthZEN 1.0 HTTP binding: a small threaded server from the standard library.

Why ``http.server``: three JSON endpoints need no framework, and the service gains no runtime
dependency. The server is hardened where the stdlib is not by default: a bounded number of
requests in flight (503 beyond), a socket timeout against slow clients, a body limit checked
before reading, no logging of request lines or headers (the PEP's secret is in one).

Endpoints: ``POST /access/v1/evaluation``, ``POST /access/v1/evaluations`` (PEP bearer secret
required, compared by SHA-256 in constant time), ``GET /.well-known/authzen-configuration``
(public). ``X-Request-ID`` is echoed on every answer.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import logging
import re
import socket
import threading
from collections.abc import Callable
from typing import Any

from ..config import AuthzenConfig
from ..errors import LimitExceeded, MCPAuthzError, NoPolicyError, RequestError
from ..tls import TlsHttpServer
from .mcp_messages import bearer

log = logging.getLogger(__name__)

EVALUATION = "/access/v1/evaluation"
EVALUATIONS = "/access/v1/evaluations"
METADATA = "/.well-known/authzen-configuration"
_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
# (document, request id) -> response document
Endpoint = Callable[[Any, str], dict[str, Any]]


class AuthzenHttpServer(TlsHttpServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], config: AuthzenConfig,
                 endpoints: dict[str, Endpoint], max_in_flight: int):
        self.config = config
        self.endpoints = endpoints
        self.secret_hashes = tuple(h.lower() for h in config.pep_token_sha256)
        self.in_flight = threading.BoundedSemaphore(max_in_flight)
        super().__init__(address, _Handler)

    def metadata(self) -> dict[str, Any] | None:
        base = self.config.public_url.rstrip("/")
        if not base:
            return None
        return {"policy_decision_point": base,
                "access_evaluation_endpoint": base + EVALUATION,
                "access_evaluations_endpoint": base + EVALUATIONS}

    def authenticated(self, authorization: str) -> bool:
        token = bearer(authorization)
        if not token:
            return False
        digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
        # every configured hash is compared, so timing says nothing about which one matched
        matches = [hmac.compare_digest(digest, expected) for expected in self.secret_hashes]
        return any(matches)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: AuthzenHttpServer
    protocol_version = "HTTP/1.1"
    timeout = 30
    error_content_type = "application/json"

    def setup(self) -> None:
        super().setup()
        # headers and body go out in two writes: without this, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every keep-alive answer
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.split("?", 1)[0] != METADATA:
            self._send(404, {"error": "not_found", "message": f"no resource at {self.path[:80]}"})
            return
        metadata = self.server.metadata()
        if metadata is None:
            self._send(404, {"error": "not_configured",
                             "message": "adapters.authzen.public_url is not set"})
            return
        self._send(200, metadata)

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        endpoint = self.server.endpoints.get(self.path.split("?", 1)[0])
        if endpoint is None:
            self._discard_body()
            self._send(404, {"error": "not_found", "message": f"no endpoint {self.path[:80]}"})
            return
        if not self.server.authenticated(self.headers.get("Authorization", "")):
            self._discard_body()
            self._send(401, {"error": "unauthenticated",
                             "message": "a PEP bearer token is required"},
                       {"WWW-Authenticate": 'Bearer realm="authzen"'})
            return
        if not self.server.in_flight.acquire(blocking=False):
            self._discard_body()
            self._send(503, {"error": "overloaded", "message": "too many requests in flight"})
            return
        try:
            self._evaluate(endpoint)
        finally:
            self.server.in_flight.release()

    def _evaluate(self, endpoint: Endpoint) -> None:
        try:
            document = self._json_body()
            self._send(200, endpoint(document, self._request_id()))
        except RequestError as exc:
            too_large = isinstance(exc, LimitExceeded) and exc.field == "body"
            self.close_connection = self.close_connection or too_large  # body left unread
            self._send(413 if too_large else 400, {"error": exc.code, "message": str(exc)})
        except NoPolicyError:
            self._send(503, {"error": "no_policy", "message": "no active policy"})
        except MCPAuthzError as exc:
            log.warning("authzen: %s", exc)
            self._send(500, {"error": exc.code, "message": "internal error"})
        except Exception:
            log.exception("authzen: internal error")
            self._send(500, {"error": "internal", "message": "internal error"})

    def _json_body(self) -> Any:
        content_type = self.headers.get("Content-Type", "application/json")
        if "json" not in content_type.lower():
            raise RequestError("Content-Type", "must be application/json")
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            raise RequestError("Content-Length", "required (chunked bodies are not accepted)")
        limit = self.server.config.max_body_bytes
        if int(length) > limit:
            raise LimitExceeded("body", "max_body_bytes", limit)
        raw = self.rfile.read(int(length))
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise RequestError("body", f"is not valid JSON ({_json_problem(exc)})") from exc

    def _discard_body(self) -> None:
        """Answers that never read the body close the connection instead of reading it."""
        self.close_connection = True

    def _request_id(self) -> str:
        value = self.headers.get("X-Request-ID", "")
        return value if _REQUEST_ID.match(value) else ""

    def _send(self, status: int, document: dict[str, Any],
              headers: dict[str, str] | None = None) -> None:
        body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self._request_id():
            self.send_header("X-Request-ID", self._request_id())
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib's name)
        """Request lines are not logged: decisions are, by the decision log."""


def _json_problem(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"line {exc.lineno} column {exc.colno}: {exc.msg}"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8"
    return "nested too deeply"
