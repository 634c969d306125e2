"""The default bundle on a real server: a table of requests with the decision, the primary
reason code and the obligations a gateway depends on. Real RSA/EC keys, a real JWKS over HTTP.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mcp_authz import devkeys
from mcp_authz._pb.mcp.authz.v1 import authz_pb2 as pb
from mcp_authz.errors import BundleError
from mcp_authz.identity import request_digest
from support import APPROVALS, ISSUER, POLICIES, RESOURCE, Keys, Service, decide_request

requirement = pytest.mark.requirement
ACME = "/srv/mcp/acme/"


@dataclass
class Case:
    name: str
    tool: str = "read_file"
    arguments: dict[str, Any] = field(default_factory=lambda: {"path": ACME + "notes.txt"})
    scopes: tuple[str, ...] = ("files:read",)
    roles: tuple[str, ...] = ("analyst",)
    token: str | None = None  # a named bad token instead of a good one
    token_tenant: str = "acme"
    tenant: str = "acme"
    method: str = "tools/call"
    resource_uri: str = ""
    prompt: str = ""
    annotations: dict[str, bool] = field(default_factory=dict)
    approval: str | None = None  # a named approval scenario
    allow: bool = False
    reason: str = ""
    obligations: tuple[str, ...] = ()


CASES = [
    # identity: decided by the service before the policy
    Case("no token", token="missing", reason="token_missing"),
    Case("garbage token", token="garbage", reason="token_invalid"),
    Case("expired token", token="expired", reason="token_expired"),
    Case("untrusted issuer", token="issuer", reason="issuer_untrusted"),
    Case("other audience", token="audience", reason="audience_mismatch"),
    Case("lifetime too long", token="lifetime", reason="token_lifetime_exceeded"),
    Case("signed by an unknown key", token="foreign_key", reason="token_invalid"),
    Case("alg none", token="alg_none", reason="token_invalid"),
    # tenant isolation
    Case("token of another tenant", token_tenant="globex", reason="tenant_mismatch"),
    Case("tenant not configured", tenant="initech", token_tenant="initech",
         reason="tenant_mismatch"),
    # catalog, scopes, roles
    Case("read allowed", allow=True, obligations=("max_result_bytes",)),
    Case("unknown tool", tool="exfiltrate_all", reason="tool_unknown"),
    Case("read without scope", scopes=("files:list",), reason="scope_missing"),
    Case("payment without finance role", tool="pay_invoice", arguments={"amount": 10},
         scopes=("payments:write",), reason="role_missing"),
    Case("small payment by finance", tool="pay_invoice", arguments={"amount": 10},
         scopes=("payments:write",), roles=("finance",), allow=True,
         obligations=("redact", "audit")),
    Case("env needs admin", tool="get-env", arguments={}, scopes=("demo:read",),
         reason="role_missing"),
    # argument constraints
    Case("dot-dot escape", arguments={"path": ACME + "../globex/secrets.txt"},
         reason="argument_violation"),
    Case("encoded escape", arguments={"path": ACME + "%2e%2e/globex/x"},
         reason="argument_violation"),
    Case("absolute path outside", arguments={"path": "/etc/passwd"}, reason="argument_violation"),
    Case("sibling prefix", arguments={"path": "/srv/mcp/acme-evil/x"},
         reason="argument_violation"),
    Case("backslash escape", arguments={"path": ACME + "..\\..\\etc"},
         reason="argument_violation"),
    Case("NUL in path", arguments={"path": ACME + "a\x00/../../etc"},
         reason="argument_violation"),
    Case("missing required argument", arguments={}, reason="argument_violation"),
    Case("sql select", tool="sql_query", arguments={"query": "SELECT * FROM invoices"},
         scopes=("sql:read",), allow=True, obligations=("max_result_bytes",)),
    Case("sql write without sql:write", tool="sql_query",
         arguments={"query": "DELETE FROM invoices"}, scopes=("sql:read",),
         reason="argument_violation"),
    Case("sql stacked statement", tool="sql_query",
         arguments={"query": "SELECT 1; DROP TABLE invoices"}, scopes=("sql:read",),
         reason="argument_violation"),
    Case("url on allowed host", tool="http_fetch", arguments={"url": "https://example.com/a"},
         scopes=("web:fetch",), allow=True, obligations=("max_result_bytes",)),
    Case("url on other host", tool="http_fetch", arguments={"url": "https://evil.example.net/"},
         scopes=("web:fetch",), reason="argument_violation"),
    Case("url userinfo trick", tool="http_fetch",
         arguments={"url": "https://example.com@evil.example.net/"}, scopes=("web:fetch",),
         reason="argument_violation"),
    Case("payment over tenant ceiling", tool="pay_invoice", arguments={"amount": 999999},
         scopes=("payments:write",), roles=("finance",), reason="argument_violation"),
    Case("negative payment", tool="pay_invoice", arguments={"amount": -5},
         scopes=("payments:write",), roles=("finance",), reason="argument_violation"),
    # annotations are hints; destructive tools need a human
    Case("delete needs approval", tool="delete_file", scopes=("files:write",),
         reason="approval_required", obligations=("require_approval",)),
    Case("caller says read-only: still needs approval", tool="delete_file",
         scopes=("files:write",), annotations={"read_only_hint": True, "destructive_hint": False},
         reason="approval_required", obligations=("require_approval",)),
    Case("approved by another approver", tool="delete_file", scopes=("files:write",),
         approval="valid", allow=True, obligations=("audit",)),
    Case("self-approval", tool="delete_file", scopes=("files:write",), approval="self",
         reason="approval_invalid", obligations=("require_approval",)),
    Case("approver lacks the role", tool="delete_file", scopes=("files:write",),
         approval="no_role", reason="approval_invalid", obligations=("require_approval",)),
    Case("approval for other arguments", tool="delete_file", scopes=("files:write",),
         approval="other_args", reason="approval_invalid", obligations=("require_approval",)),
    Case("approval for another tenant", tool="delete_file", scopes=("files:write",),
         approval="other_tenant", reason="approval_invalid", obligations=("require_approval",)),
    Case("approval signed by the user issuer", tool="delete_file", scopes=("files:write",),
         approval="user_key", reason="approval_invalid", obligations=("require_approval",)),
    Case("expired approval", tool="delete_file", scopes=("files:write",), approval="expired",
         reason="approval_invalid", obligations=("require_approval",)),
    # resources and prompts
    Case("read a file resource", method="resources/read", resource_uri=f"file://{ACME}a.txt",
         allow=True, obligations=("max_result_bytes",)),
    Case("file resource of another tenant", method="resources/read",
         resource_uri="file:///srv/mcp/globex/a.txt", reason="argument_violation"),
    Case("unknown resource scheme", method="resources/read", resource_uri="s3://bucket/key",
         reason="tool_unknown"),
    Case("prompt allowed", method="prompts/get", prompt="simple-prompt", scopes=("demo:read",),
         allow=True),
    Case("prompt without scope", method="prompts/get", prompt="simple-prompt",
         reason="scope_missing"),
    Case("unknown prompt", method="prompts/get", prompt="jailbreak", reason="tool_unknown"),
]


def _token(keys: Keys, case: Case) -> str:
    now = int(time.time())
    base = {"sub": "alice", "tenant": case.token_tenant, "scopes": case.scopes,
            "roles": case.roles}
    named = {
        "missing": lambda: "",
        "garbage": lambda: "not-a-jwt",
        "expired": lambda: keys.token(**base, now=now - 7200, ttl=600),
        "issuer": lambda: devkeys.mint(keys.user, "user-1", "RS256", devkeys.user_claims(
            issuer="https://evil.example", audience=RESOURCE, sub="alice", tenant="acme",
            scopes=[], roles=[], ttl=600)),
        "audience": lambda: keys.token(**base, audience="https://mcp.example.com/other"),
        "lifetime": lambda: keys.token(**base, ttl=86400),
        "foreign_key": lambda: devkeys.mint(keys.other, "user-1", "RS256", devkeys.user_claims(
            issuer=ISSUER, audience=RESOURCE, sub="alice", tenant="acme", scopes=[], roles=[],
            ttl=600)),
        "alg_none": lambda: "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.",
    }
    return named[case.token]() if case.token else keys.token(**base)


def _approval(keys: Keys, case: Case) -> list[str]:
    if case.approval is None:
        return []
    digest = request_digest("acme", "alice", RESOURCE, "tools/call", case.tool, case.arguments)
    other = {
        "other_args": request_digest("acme", "alice", RESOURCE, "tools/call", case.tool,
                                     {"path": ACME + "other.txt"}),
        "other_tenant": request_digest("globex", "alice", RESOURCE, "tools/call", case.tool,
                                       case.arguments),
    }
    if case.approval == "user_key":
        claims = devkeys.approval_claims(issuer=APPROVALS, approver="bob", digest=digest,
                                         roles=["approver"], ttl=60)
        return [devkeys.mint(keys.user, "user-1", "RS256", claims)]
    approver = "alice" if case.approval == "self" else "bob"
    roles = ("viewer",) if case.approval == "no_role" else ("approver",)
    ttl = -30 if case.approval == "expired" else 60
    return [keys.approval_token(approver, other.get(case.approval, digest), roles=roles,
                                ttl=ttl)]


def _request(keys: Keys, case: Case) -> pb.DecideRequest:
    request = decide_request(_token(keys, case), "", tenant=case.tenant, method=case.method,
                             resource_uri=case.resource_uri)
    if case.method == "tools/call":
        request.tool.name = case.tool
        request.tool.arguments.update(case.arguments)
        for name, value in case.annotations.items():
            setattr(request.tool.annotations, name, value)
    if case.prompt:
        request.prompt.name = case.prompt
    request.approval_tokens.extend(_approval(keys, case))
    return request


def test_the_table_covers_every_reason_code() -> None:
    codes = {c.reason for c in CASES if c.reason}
    assert codes >= {
        "token_missing", "token_invalid", "token_expired", "issuer_untrusted",
        "audience_mismatch", "token_lifetime_exceeded", "tenant_mismatch", "tool_unknown",
        "scope_missing", "role_missing", "argument_violation", "approval_required",
        "approval_invalid"}
    assert len(CASES) >= 30


@requirement("decision-table")
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decision(service: Service, keys: Keys, case: Case) -> None:
    request = _request(keys, case)
    decision = service.stub.Decide(request)
    reasons = [r.code for r in decision.reasons]
    assert decision.allow is case.allow, (reasons, [r.message for r in decision.reasons])
    if case.reason:
        assert reasons[0] == case.reason, [r.message for r in decision.reasons]
    assert {o.type for o in decision.obligations} == set(case.obligations)
    assert decision.request_id == request.request_id and decision.decision_id
    assert decision.policy_revision == service.store.active().revision
    for obligation in decision.obligations:
        if obligation.type == "require_approval":
            expected = request_digest("acme", "alice", RESOURCE, "tools/call", case.tool,
                                      case.arguments)
            assert obligation.params["digest"] == expected
            assert "approver" in list(obligation.params["approver_roles"])


def _variant(tmp_path: Path, revision: str, decision_rule: str) -> Path:
    bundle = tmp_path / revision
    shutil.copytree(POLICIES, bundle)
    manifest = json.loads((bundle / ".manifest").read_text())
    manifest["revision"] = revision
    (bundle / ".manifest").write_text(json.dumps(manifest))
    policy = bundle / "mcp" / "authz" / "policy.rego"
    text, replaced = re.subn(r"^decision := decide\(input\)$", decision_rule.replace("\\", "\\\\"),
                             policy.read_text(), count=1, flags=re.MULTILINE)
    assert replaced == 1, "the default policy's entry point rule moved"
    policy.write_text(text)
    return bundle


@requirement("policy-error-is-deny")
def test_output_breaking_the_contract_for_one_input_is_a_policy_error_deny(
        service: Service, keys: Keys, tmp_path: Path) -> None:
    bundle = _variant(tmp_path, "breaks-for-boom", """decision := {"allow": "true", "reasons": [],
	"obligations": []} if input.tool.name == "boom" else := decide(input)""")
    previous = service.store.active()
    service.store.activate_path(str(bundle))
    try:
        boom = Case("boom", tool="boom")
        decision = service.stub.Decide(_request(keys, boom))
        assert not decision.allow and [r.code for r in decision.reasons] == ["policy_error"]
        assert decision.policy_revision == "breaks-for-boom"
        assert service.stub.Decide(_request(keys, CASES[10])).allow
    finally:
        service.store.activate(previous.contents)


@requirement("policy-error-is-deny")
def test_bundle_whose_output_breaks_the_contract_is_refused(service: Service,
                                                            tmp_path: Path) -> None:
    bundle = _variant(tmp_path, "always-broken",
                      'decision := {"allow": 1, "reasons": [], "obligations": []}')
    previous = service.store.active()
    with pytest.raises(BundleError, match="allow must be a boolean"):
        service.store.activate_path(str(bundle))
    assert service.store.active() is previous
