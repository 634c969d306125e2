"""Real parts for tests: keys, a JWKS over HTTP on loopback, a gRPC service on an ephemeral port."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml

from mcp_authz import devkeys
from mcp_authz._pb.mcp.authz.v1 import authz_pb2 as pb
from mcp_authz._pb.mcp.authz.v1 import authz_pb2_grpc as pb_grpc
from mcp_authz.activation import PolicyStore
from mcp_authz.config import Config, load_config
from mcp_authz.decisions import DecisionPath
from mcp_authz.identity import build_verifiers
from mcp_authz.loopback import LoopbackServer
from mcp_authz.server import create_server

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"
ISSUER = "https://issuer.test.local"
APPROVALS = "https://approvals.test.local"
RESOURCE = "https://mcp.example.com/files"


class JsonServer:
    """A real HTTP server on 127.0.0.1 serving JSON documents it can change, counting hits."""

    def __init__(self) -> None:
        self.documents: dict[str, Any] = {}
        self.hits: dict[str, int] = {}
        self.down = False
        self._server = LoopbackServer(self._answer)
        self.port = self._server.port

    def _answer(self, method: str, path: str, headers: Any) -> tuple[int, dict[str, str], bytes]:
        self.hits[path] = self.hits.get(path, 0) + 1
        if self.down or path not in self.documents:
            return (503 if self.down else 404), {}, b""
        return 200, {"Content-Type": "application/json"}, json.dumps(
            self.documents[path]).encode()

    def url(self, path: str) -> str:
        return self._server.url(path)

    def close(self) -> None:
        self._server.close()


@dataclass
class Keys:
    """A user issuer (RSA) and an approval service (EC) with real keys."""

    user: Any = field(default_factory=devkeys.new_rsa_key)
    approval: Any = field(default_factory=devkeys.new_ec_key)
    other: Any = field(default_factory=devkeys.new_rsa_key)  # a key nobody trusts

    def user_jwks(self) -> dict[str, Any]:
        return {"keys": [devkeys.public_jwk(self.user, "user-1", "RS256")]}

    def approval_jwks(self) -> dict[str, Any]:
        return {"keys": [devkeys.public_jwk(self.approval, "appr-1", "ES256")]}

    def token(self, sub: str = "alice", tenant: str = "acme", scopes: tuple[str, ...] = (),
              roles: tuple[str, ...] = (), audience: str = RESOURCE, ttl: int = 600,
              now: float | None = None, **extra: Any) -> str:
        claims = devkeys.user_claims(issuer=ISSUER, audience=audience, sub=sub, tenant=tenant,
                                     scopes=list(scopes), roles=list(roles), ttl=ttl, now=now)
        claims.update(extra)
        return devkeys.mint(self.user, "user-1", "RS256", claims)

    def approval_token(self, approver: str, digest: str, roles: tuple[str, ...] = ("approver",),
                       ttl: int = 120, key: Any = None, kid: str = "appr-1",
                       alg: str = "ES256") -> str:
        claims = devkeys.approval_claims(issuer=APPROVALS, approver=approver, digest=digest,
                                         roles=list(roles), ttl=ttl)
        return devkeys.mint(key or self.approval, kid, alg, claims)


def write_config(directory: Path, jwks_url: str, approval_jwks_url: str,
                 bundle: Path = POLICIES, **sections: Any) -> Path:
    document: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:0"},
        "policy": {"bundle": str(bundle), "watch": False},
        "identity": {
            "issuers": [{"issuer": ISSUER, "jwks_url": jwks_url, "algorithms": ["RS256", "ES256"],
                         "max_lifetime_seconds": 3600, "jwks_min_refresh_seconds": 0}],
            "approval": {"issuer": APPROVALS, "jwks_url": approval_jwks_url,
                         "algorithms": ["ES256"], "max_lifetime_seconds": 600},
        },
    }
    for name, value in sections.items():
        document.setdefault(name, {}).update(value)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@dataclass
class Service:
    config: Config
    store: PolicyStore
    path: DecisionPath
    server: grpc.Server
    port: int
    channel: grpc.Channel
    stub: pb_grpc.DecisionServiceStub

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextmanager
def running_service(config_path: Path, activate: bool = True) -> Iterator[Service]:
    """The real server, in this process, on 127.0.0.1 and an ephemeral port."""
    config = load_config(str(config_path))
    verifier, approvals = build_verifiers(config)
    store = PolicyStore(config.policy.entrypoint)
    if activate:
        store.activate_path(config.path(config.policy.bundle))
    path = DecisionPath(store, verifier, approvals, config.limits)
    server, port, _ = create_server(config, path, store)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Service(config, store, path, server, port, channel,
                      pb_grpc.DecisionServiceStub(channel))
    finally:
        channel.close()
        server.stop(0).wait()


def wait_until(condition: Callable[[], Any], what: str = "the condition",
               timeout: float = 30.0) -> Any:
    """Poll until ``condition()`` is truthy and return it; AssertionError after ``timeout``.

    For what happens on other threads or processes (writers, pollers, workers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def decide_request(token: str, tool: str = "", arguments: dict[str, Any] | None = None,
                   tenant: str = "acme", method: str = "tools/call", resource: str = RESOURCE,
                   **fields: Any) -> pb.DecideRequest:
    fields.setdefault("request_id", f"r-{time.monotonic_ns()}")
    request = pb.DecideRequest(bearer_token=token, tenant=tenant, method=method,
                               server=pb.ServerRef(id="files", resource=resource), **fields)
    if tool:
        request.tool.name = tool
    if arguments:
        request.tool.arguments.update(arguments)
    return request
