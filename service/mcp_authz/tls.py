"""TLS and mutual TLS for the listeners, with certificates reloaded from disk and an allowlist of
the client identities that may call (config: ``server.tls``, ``metrics.tls``,
``adapters.authzen.tls``; docs/tls.md).

- gRPC: ``grpc.dynamic_ssl_server_credentials``. grpc asks ``CertificateFiles`` for a new
  configuration before every handshake; the files are stat'ed at most every
  ``reload_interval_seconds`` and re-read when one changed, so a rotated certificate (a
  Kubernetes Secret update) is served without a restart. A file that fails to load keeps the
  previous certificates and is logged. ``CallerAllowlist`` (a server interceptor) checks the
  verified peer certificate of every call before any handler runs: a caller whose SAN DNS name,
  SAN URI or subject CN is not listed gets UNAUTHENTICATED and no decision.
- HTTP (``http.server``): ``TlsHttpServer`` wraps accepted sockets in the current
  ``ssl.SSLContext`` (rebuilt when the files change) and does the handshake on the connection's
  own thread, so a slow client cannot stall the accept loop. A caller outside the allowlist gets
  401 before its request reaches a handler.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc

from .config import Config, TlsConfig
from .errors import MCPAuthzError

log = logging.getLogger(__name__)

HANDSHAKE_SECONDS = 10.0
MAX_DISCARD_BYTES = 1024 * 1024


class CertificateFiles:
    """The PEM files of one listener, read again after one of them changes."""

    def __init__(self, config: TlsConfig, where: str, resolve: Callable[[str], str]):
        self.config = config
        self.where = where
        self.paths = {name: resolve(getattr(config, name))
                       for name in ("cert_file", "key_file", "client_ca_file")
                       if getattr(config, name)}
        self._lock = threading.Lock()
        self._checked = 0.0
        self._stamps = self._stat()
        self.reloads = 0

    def read(self) -> dict[str, bytes]:
        """The files' contents by option name; MCPAuthzError naming the file otherwise."""
        contents = {}
        for name, path in self.paths.items():
            try:
                contents[name] = _read_pem(path)
            except (OSError, ValueError) as exc:
                raise MCPAuthzError(f"{self.where}.{name}: {path}: "
                                    f"{getattr(exc, 'strerror', None) or exc}") from exc
        return contents

    def changed(self) -> bool:
        """Whether a file changed since the last call that said so (stat'ed at most every
        ``reload_interval_seconds``)."""
        now = time.monotonic()
        if now - self._checked < self.config.reload_interval_seconds:
            return False
        with self._lock:
            self._checked = now
            stamps = self._stat()
            if stamps == self._stamps:
                return False
            self._stamps = stamps
            return True

    def _stat(self) -> tuple[tuple[float, int, int], ...]:
        stamps = []
        for path in self.paths.values():
            try:
                st = os.stat(path)  # follows the symlinks a Kubernetes Secret volume swaps
                stamps.append((st.st_mtime, st.st_size, st.st_ino))
            except OSError:
                stamps.append((0.0, 0, 0))
        return tuple(stamps)


def _read_pem(path: str) -> bytes:
    with open(path, "rb") as file:
        data = file.read()
    if b"-----BEGIN " not in data:
        raise ValueError("not a PEM file")
    return data


# --- gRPC ---------------------------------------------------------------------------------


def _grpc_configuration(files: CertificateFiles) -> Any:
    pem = files.read()
    return grpc.ssl_server_certificate_configuration(
        [(pem["key_file"], pem["cert_file"])], root_certificates=pem.get("client_ca_file"))


def grpc_credentials(files: CertificateFiles) -> grpc.ServerCredentials:
    """Server credentials that pick up new certificate files without a restart."""
    initial = _grpc_configuration(files)

    def fetch() -> Any:  # called by grpc before every handshake
        if not files.changed():
            return None
        try:
            configuration = _grpc_configuration(files)
        except MCPAuthzError as exc:
            log.error("%s: keeping the previous certificates: %s", files.where, exc)
            return None
        files.reloads += 1
        log.info("%s: certificates reloaded", files.where)
        return configuration

    return grpc.dynamic_ssl_server_credentials(
        initial, fetch, require_client_authentication=files.config.require_client_cert)


def grpc_interceptors(tls: TlsConfig | None, where: str) -> list[grpc.ServerInterceptor]:
    """The interceptors a gRPC listener with ``tls`` needs (the allowlist, when one is set)."""
    if tls is None or not tls.allowed_client_identities:
        return []
    return [CallerAllowlist(tls.allowed_client_identities, where)]


def bind_grpc(server: grpc.Server, address: str, config: Config, where: str) -> int:
    """Bind ``address``, with TLS when ``server.tls`` is set; the bound port. MCPAuthzError
    (``where``: cannot bind) when binding fails."""
    try:  # grpcio raises RuntimeError where older releases returned 0
        if config.server.tls is None:
            port = server.add_insecure_port(address)
        else:
            files = CertificateFiles(config.server.tls, "server.tls", config.path)
            port = server.add_secure_port(address, grpc_credentials(files))
    except RuntimeError:
        port = 0
    if port == 0:
        raise MCPAuthzError(f"{where}: cannot bind {address} (in use, or not an address of "
                            "this host)")
    return port


def peer_identities(auth_context: Mapping[str, Sequence[bytes]]) -> set[str]:
    """SAN DNS names and URIs and the subject CN of a verified gRPC peer."""
    names: set[str] = set()
    for key in ("x509_common_name", "x509_subject_alternative_name", "peer_dns", "peer_uri"):
        names.update(value.decode("utf-8", "replace") for value in auth_context.get(key, ()))
    return names


class CallerAllowlist(grpc.ServerInterceptor):
    """UNAUTHENTICATED for every call whose verified client certificate names no allowed
    identity, before any handler (decision, health, reflection) runs."""

    def __init__(self, identities: Iterable[str], where: str):
        self._identities = frozenset(identities)
        self._message = (f"the client certificate names no identity in "
                         f"{where}.tls.allowed_client_identities")

    def intercept_service(self, continuation: Callable[[Any], Any],
                          details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        kinds = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
        return handler._replace(**{kind: self._checked(getattr(handler, kind))
                                   for kind in kinds if getattr(handler, kind) is not None})

    def _checked(self, behavior: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
        def checked(request: Any, context: grpc.ServicerContext) -> Any:
            if not peer_identities(context.auth_context()) & self._identities:
                context.abort(grpc.StatusCode.UNAUTHENTICATED, self._message)
            return behavior(request, context)
        return checked


# --- HTTP ---------------------------------------------------------------------------------


class HttpTls:
    """The SSLContext of one HTTP listener, rebuilt when its files change."""

    def __init__(self, files: CertificateFiles):
        self.files = files
        self._identities = frozenset(files.config.allowed_client_identities)
        self._context = self._build()

    @classmethod
    def from_config(cls, tls: TlsConfig | None, config: Config, where: str) -> HttpTls | None:
        return None if tls is None else cls(CertificateFiles(tls, f"{where}.tls", config.path))

    def _build(self) -> ssl.SSLContext:
        files, where = self.files, self.files.where
        self.files.read()  # names the file that cannot be read
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        paths = files.paths
        try:
            context.load_cert_chain(paths["cert_file"], paths["key_file"])
            if "client_ca_file" in paths:
                context.load_verify_locations(paths["client_ca_file"])
                context.verify_mode = (ssl.CERT_REQUIRED if files.config.require_client_cert
                                       else ssl.CERT_OPTIONAL)
        except (OSError, ssl.SSLError) as exc:
            raise MCPAuthzError(f"{where}: cannot load the certificate, key or client CA: "
                                f"{exc}") from exc
        return context

    def context(self) -> ssl.SSLContext:
        if self.files.changed():
            try:
                self._context = self._build()
                self.files.reloads += 1
                log.info("%s: certificates reloaded", self.files.where)
            except MCPAuthzError as exc:
                log.error("%s: keeping the previous certificates: %s", self.files.where, exc)
        return self._context

    def allowed(self, peer: dict[str, Any] | None) -> bool:
        """Whether a peer certificate (``SSLSocket.getpeercert()``) may call."""
        if not self._identities:
            return True
        names = {value for kind, value in (peer or {}).get("subjectAltName", ())
                 if kind in ("DNS", "URI")}
        names.update(value for rdn in (peer or {}).get("subject", ()) for key, value in rdn
                     if key == "commonName")
        return bool(names & self._identities)

    @property
    def message(self) -> str:
        return (f"the client certificate names no identity in "
                f"{self.files.where}.allowed_client_identities")


class TlsHttpServer(http.server.ThreadingHTTPServer):
    """A ThreadingHTTPServer that speaks TLS when ``tls`` is set (plain HTTP otherwise)."""

    tls: HttpTls | None = None

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        if self.tls is None:
            return sock, address
        return self.tls.context().wrap_socket(sock, server_side=True,
                                              do_handshake_on_connect=False), address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is not None:
            request.settimeout(HANDSHAKE_SECONDS)
            try:
                request.do_handshake()
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                log.debug("TLS handshake with %s failed: %s", client_address, exc)
                return
            request.settimeout(None)
            if not self.tls.allowed(request.getpeercert()):
                _Refusal(request, client_address, self)
                return
        super().finish_request(request, client_address)


class _Refusal(http.server.BaseHTTPRequestHandler):
    """Answers any request with 401: the caller's certificate is not on the allowlist."""

    protocol_version = "HTTP/1.1"
    server: TlsHttpServer

    def _refuse(self) -> None:
        assert self.server.tls is not None
        length = self.headers.get("Content-Length", "")
        if length.isdigit() and int(length) <= MAX_DISCARD_BYTES:
            self.rfile.read(int(length))  # read, so closing does not reset the connection
        body = json.dumps({"error": "unauthenticated",
                           "message": self.server.tls.message}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _refuse  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib's name)
        """Refusals are not logged per request (a scanner would flood the log)."""


def scheme(tls: HttpTls | None) -> str:
    return "http" if tls is None else "https"

