"""A Decision expressed for gateways: HTTP status, WWW-Authenticate, JSON-RPC error bodies.

The rules every adapter shares (MCP authorization spec, RFC 6750): a missing or refused token is
401 with ``WWW-Authenticate: Bearer`` (no ``error`` when no token was sent); a missing scope is
403 with ``error="insufficient_scope", scope="..."``; any other deny is 403. Bodies carry the
stable reason codes, never a token.
"""

from __future__ import annotations

import re
from typing import Any

from ..model import Decision, Obligation, Reason

TOKEN_REASONS = frozenset({"token_missing", "token_invalid", "token_expired", "issuer_untrusted",
                           "audience_mismatch", "token_lifetime_exceeded"})
# JSON-RPC error codes: the spec's own, and agentgateway's for a policy deny (-32001).
INVALID_REQUEST = -32600
INTERNAL_ERROR = -32603
PERMISSION_DENIED = -32001
UNAVAILABLE = -32603
# RFC 6749 scope-token characters.
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
_UNSAFE_HEADER_CHARS = re.compile(r'[\x00-\x1f\x7f"\\]')


def http_status(decision: Decision) -> int:
    if decision.allow:
        return 200
    return 401 if decision.primary_reason in TOKEN_REASONS else 403


def missing_scopes(decision: Decision) -> list[str]:
    """Scopes named by ``scope_missing`` reasons.

    The default policy's messages end with ``: scope1, scope2`` (one per joined finding, ``; ``
    apart); anything that does not parse as scope tokens is left out, never guessed."""
    scopes: list[str] = []
    for reason in decision.reasons:
        if reason.code != "scope_missing":
            continue
        for finding in reason.message.split("; "):
            _, sep, tail = finding.rpartition(": ")
            candidates = [s.strip() for s in tail.split(",")] if sep else []
            if candidates and all(_SCOPE_TOKEN.match(s) for s in candidates):
                scopes.extend(s for s in candidates if s not in scopes)
    return scopes


def www_authenticate(decision: Decision, resource_metadata: str = "") -> str | None:
    """The challenge for a deny, or None when the deny is not about the token or its scopes."""
    params: list[str] = []
    code = decision.primary_reason
    if code in TOKEN_REASONS:
        if code != "token_missing":
            params += ['error="invalid_token"',
                       f'error_description="{header_text(decision.reasons[0].message)}"']
    elif code == "scope_missing":
        params.append('error="insufficient_scope"')
        scopes = missing_scopes(decision)
        if scopes:
            params.append(f'scope="{" ".join(scopes)}"')
    else:
        return None
    if resource_metadata:
        params.append(f'resource_metadata="{header_text(resource_metadata)}"')
    return "Bearer " + ", ".join(params) if params else "Bearer"


def header_text(value: str, limit: int = 256) -> str:
    """A value safe inside a quoted header parameter: no quotes, backslashes or controls."""
    return _UNSAFE_HEADER_CHARS.sub("", value)[:limit]


def reasons_json(reasons: tuple[Reason, ...]) -> list[dict[str, str]]:
    return [{"code": r.code, "message": r.message} for r in reasons]


def obligations_json(obligations: tuple[Obligation, ...]) -> list[dict[str, Any]]:
    return [{"type": o.type, "params": dict(o.params)} for o in obligations]


def decision_json(decision: Decision) -> dict[str, Any]:
    return {"decision_id": decision.decision_id, "allow": decision.allow,
            "reasons": reasons_json(decision.reasons),
            "obligations": obligations_json(decision.obligations),
            "policy_revision": decision.policy_revision}


def jsonrpc_error(message_id: Any, code: int, message: str,
                  data: dict[str, Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": message_id, "error": error}


def deny_error(decision: Decision, message_id: Any = None) -> dict[str, Any]:
    """The JSON-RPC error a client sees for a deny: reason code first, then the details."""
    first = decision.reasons[0] if decision.reasons else Reason("policy_error", "denied")
    data = {"reason": first.code, "reasons": reasons_json(decision.reasons),
            "obligations": obligations_json(decision.obligations),
            "decision_id": decision.decision_id, "policy_revision": decision.policy_revision}
    return jsonrpc_error(message_id, PERMISSION_DENIED, f"{first.code}: {first.message}", data)
