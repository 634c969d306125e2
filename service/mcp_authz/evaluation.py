"""Offline decisions for tools (``mcp-authz eval``, the policy test runner) on the service's path.

A request file has the shape of ``DecideRequest`` (snake_case JSON or YAML). When a subject is
given as token claims instead of a bearer token, a real token is minted for it with an ephemeral
key and verified by the same ``JwtVerifier`` the service uses; approvals given as
``{approver, roles}`` become real approval tokens for the request's digest. So what passes here
passes through the identical input builder, engine wrapper and output validation in production.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import devkeys
from .activation import PolicyStore
from .bundles import BundleContents, load_bundle
from .config import ApprovalConfig, IssuerConfig, LimitsConfig
from .decisions import TOOLS_LIST, DecisionPath, DecisionRecord, digest_target
from .engine import DEFAULT_ENTRYPOINT
from .errors import RequestError
from .identity import JwtApprovalVerifier, JwtVerifier, request_digest
from .jwks import KeySet
from .model import Decision, DecisionRequest

TOOL_ISSUER = "https://mcp-authz.test/issuer"
TOOL_APPROVALS = "https://mcp-authz.test/approvals"

_REQUEST_FIELDS = {"request_id", "bearer_token", "tenant", "server", "client", "method", "tool",
                   "resource_uri", "prompt", "approval_tokens", "context", "session_id"}
_NESTED_FIELDS = {"server": {"id", "resource"}, "client": {"id", "name", "version"},
                  "tool": {"name", "arguments", "annotations"}, "prompt": {"name", "arguments"}}


def load_request_file(path: str) -> Any:
    """JSON or YAML from ``path``; RequestError naming file:line on a syntax error."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RequestError(path, f"cannot read: {exc}") from exc
    try:
        if path.endswith(".json"):
            return json.loads(text)
        return yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise RequestError(f"{path}:{exc.lineno}:{exc.colno}", f"invalid JSON: {exc.msg}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise RequestError(where, f"invalid YAML: {getattr(exc, 'problem', exc)}") from exc


def request_from_mapping(data: Any, where: str = "request") -> DecisionRequest:
    """A DecisionRequest from DecideRequest-shaped data; unknown fields are errors."""
    if not isinstance(data, Mapping):
        raise RequestError(where, "must be an object")
    unknown = set(data) - _REQUEST_FIELDS
    if unknown:
        raise RequestError(where, f"unknown field(s): {', '.join(sorted(unknown))}")
    for name, allowed in _NESTED_FIELDS.items():
        value = data.get(name, {})
        if not isinstance(value, Mapping):
            raise RequestError(f"{where}.{name}", "must be an object")
        extra = set(value) - allowed
        if extra:
            raise RequestError(f"{where}.{name}", f"unknown field(s): {', '.join(sorted(extra))}")
    server, client = data.get("server", {}), data.get("client", {})
    tool, prompt = data.get("tool", {}), data.get("prompt", {})
    tokens = data.get("approval_tokens", [])
    if not isinstance(tokens, list):
        raise RequestError(f"{where}.approval_tokens", "must be a list of strings")
    for name, value in (("tool.arguments", tool.get("arguments", {})),
                        ("tool.annotations", tool.get("annotations", {})),
                        ("prompt.arguments", prompt.get("arguments", {})),
                        ("context", data.get("context", {}))):
        if not isinstance(value, Mapping):
            raise RequestError(f"{where}.{name}", "must be an object")
    try:
        return DecisionRequest(
            request_id=str(data.get("request_id", "")),
            bearer_token=str(data.get("bearer_token", "")),
            tenant=str(data.get("tenant", "")), server_id=str(server.get("id", "")),
            server_resource=str(server.get("resource", "")), client_id=str(client.get("id", "")),
            client_name=str(client.get("name", "")), client_version=str(client.get("version", "")),
            method=str(data.get("method", "")), tool_name=str(tool.get("name", "")),
            tool_arguments=tool.get("arguments", {}), tool_annotations=tool.get("annotations", {}),
            resource_uri=str(data.get("resource_uri", "")),
            prompt_name=str(prompt.get("name", "")), prompt_arguments=prompt.get("arguments", {}),
            approval_tokens=tuple(str(t) for t in tokens), context=data.get("context", {}),
            session_id=str(data.get("session_id", "")))
    except TypeError as exc:
        raise RequestError(where, str(exc)) from exc


class EphemeralIssuer:
    """A throw-away user issuer and approval service with real keys, for tools and tests."""

    def __init__(self, max_lifetime_seconds: int = 86400):
        self._user_key, self._approval_key = devkeys.new_rsa_key(), devkeys.new_ec_key()
        issuer = IssuerConfig(issuer=TOOL_ISSUER, jwks_file="inline", algorithms=("RS256",),
                              max_lifetime_seconds=max_lifetime_seconds)
        approval = ApprovalConfig(issuer=TOOL_APPROVALS, jwks_file="inline",
                                  algorithms=("ES256",), max_lifetime_seconds=max_lifetime_seconds)
        user_keys = KeySet(document={"keys": [devkeys.public_jwk(self._user_key, "u", "RS256")]})
        approval_keys = KeySet(
            document={"keys": [devkeys.public_jwk(self._approval_key, "a", "ES256")]})
        self.verifier = JwtVerifier([(issuer, user_keys)], max_token_bytes=65536)
        self.approvals = JwtApprovalVerifier(approval, approval_keys, max_token_bytes=65536)

    def user_token(self, claims: Mapping[str, Any], audience: str, now: float) -> str:
        full = {"iss": TOOL_ISSUER, "aud": audience, "iat": int(now), "exp": int(now) + 600,
                **claims}
        return devkeys.mint(self._user_key, "u", "RS256", full)

    def approval_token(self, approver: str, roles: list[str], digest: str, now: float,
                       ttl: int = 300) -> str:
        claims = devkeys.approval_claims(issuer=TOOL_APPROVALS, approver=approver, digest=digest,
                                         roles=roles, ttl=ttl, now=now)
        return devkeys.mint(self._approval_key, "a", "ES256", claims)


@dataclass
class Outcome:
    decision: Decision
    input: Mapping[str, Any] | None

    def decision_json(self) -> dict[str, Any]:
        d = self.decision
        return {"allow": d.allow, "reasons": [{"code": r.code, "message": r.message}
                                              for r in d.reasons],
                "obligations": [{"type": o.type, "params": dict(o.params)}
                                for o in d.obligations],
                "policy_revision": d.policy_revision, "decision_id": d.decision_id}


class _Capture:
    def __init__(self) -> None:
        self.record: DecisionRecord | None = None

    def observe(self, record: DecisionRecord) -> None:
        self.record = record


class OfflineDecider:
    """The service's decision path over one bundle, with an ephemeral issuer for subjects."""

    def __init__(self, bundle: str | BundleContents, entrypoint: str = DEFAULT_ENTRYPOINT,
                 limits: LimitsConfig | None = None):
        self.store = PolicyStore(entrypoint)
        self.store.activate(bundle if isinstance(bundle, BundleContents) else load_bundle(bundle))
        self.issuer = EphemeralIssuer()
        self._capture = _Capture()
        self._now_ns = 0
        self.path = DecisionPath(self.store, self.issuer.verifier, self.issuer.approvals,
                                 limits or LimitsConfig(), clock=lambda: self._now_ns,
                                 observers=[self._capture])

    def decide(self, request: DecisionRequest, claims: Mapping[str, Any] | None = None,
               approvals: list[Mapping[str, Any]] | None = None,
               now: float | None = None) -> Outcome:
        now = time.time() if now is None else now
        self._now_ns = int(now * 1e9)  # tokens are minted and verified at the same instant
        if claims is not None:
            token = self.issuer.user_token(claims, request.server_resource, now)
            request = dataclasses.replace(request, bearer_token=token)
            if approvals:
                digest_tool, digest_args = digest_target(request)
                digest = request_digest(request.tenant, str(claims.get("sub", "")),
                                        request.server_resource, request.method, digest_tool,
                                        digest_args)
                tokens = tuple(self.issuer.approval_token(
                    str(a.get("approver", "")), list(a.get("roles", [])),
                    str(a.get("digest", digest)), now, int(a.get("ttl", 300)))
                    for a in approvals)
                request = dataclasses.replace(
                    request, approval_tokens=request.approval_tokens + tokens)
        if request.method == TOOLS_LIST:  # one tool's visibility, as FilterTools decides it
            self.path.filter_tools(request, [(request.tool_name, request.tool_annotations)])
            record = self._capture.record
            assert record is not None
            return Outcome(record.decision, record.input)
        decision = self.path.decide(request)
        record = self._capture.record
        return Outcome(decision, record.input if record else None)

