"""The internal request and decision shapes: one for every protocol adapter.

Frozen dataclasses: the decision path is a function of these, with the clock passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SUPPORTED_METHODS = ("tools/call", "resources/read", "prompts/get")

REASON_CODES = (
    "token_missing", "token_invalid", "token_expired", "issuer_untrusted", "audience_mismatch",
    "token_lifetime_exceeded", "tenant_mismatch", "tool_unknown", "scope_missing",
    "role_missing", "argument_violation", "approval_required", "approval_invalid",
    "policy_error", "no_policy",
)


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    """One MCP request as every adapter hands it to the decision path."""

    method: str
    tenant: str
    server_resource: str
    bearer_token: str = field(default="", repr=False)
    request_id: str = ""
    server_id: str = ""
    client_id: str = ""
    client_name: str = ""
    client_version: str = ""
    tool_name: str = ""
    tool_arguments: Mapping[str, Any] = field(default_factory=dict)
    tool_annotations: Mapping[str, bool] = field(default_factory=dict)
    resource_uri: str = ""
    prompt_name: str = ""
    prompt_arguments: Mapping[str, Any] = field(default_factory=dict)
    approval_tokens: tuple[str, ...] = field(default=(), repr=False)
    context: Mapping[str, Any] = field(default_factory=dict)
    session_id: str = ""


@dataclass(frozen=True, slots=True)
class Subject:
    """The caller, from a verified token only."""

    id: str
    tenant: str
    issuer: str
    client_id: str
    scopes: tuple[str, ...]
    roles: tuple[str, ...]
    groups: tuple[str, ...]
    claims: Mapping[str, Any]
    issued_at: int
    expires_at: int
    jti: str

    def to_input(self) -> dict[str, Any]:
        return {
            "id": self.id, "tenant": self.tenant, "issuer": self.issuer,
            "client_id": self.client_id, "scopes": list(self.scopes), "roles": list(self.roles),
            "groups": list(self.groups), "claims": dict(self.claims),
            "token": {"iat": self.issued_at, "exp": self.expires_at, "jti": self.jti},
        }


@dataclass(frozen=True, slots=True)
class Approval:
    """A verified approval: who approved which request digest, and when."""

    approver: str
    roles: tuple[str, ...]
    issued_at: int
    digest: str

    def to_input(self) -> dict[str, Any]:
        return {"approver": self.approver, "roles": list(self.roles),
                "issued_at": self.issued_at, "digest": self.digest}


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Obligation:
    type: str
    params: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Decision:
    decision_id: str
    request_id: str
    allow: bool
    reasons: tuple[Reason, ...]
    obligations: tuple[Obligation, ...]
    policy_revision: str
    decided_at_ns: int

    @property
    def primary_reason(self) -> str:
        return self.reasons[0].code if self.reasons else ""
