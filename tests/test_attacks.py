"""Token and approval attacks through the whole service (real gRPC server, default bundle, real
keys). The verifier-level matrix is in test_identity.py; these are the cases that need the
service around it: headers that point at attacker keys, a valid token for another tenant, and
approval tokens abused every way the design says must be worthless."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest

from mcp_authz import devkeys
from mcp_authz._pb.mcp.authz.v1 import authz_pb2 as pb
from mcp_authz.identity import request_digest
from support import APPROVALS, RESOURCE, Keys, Service, decide_request

requirement = pytest.mark.requirement
WRITER = {"scopes": ("files:write", "files:read"), "roles": ("analyst",)}
TARGET = {"path": "/srv/mcp/acme/old/report.txt"}


def reasons(decision: pb.Decision) -> list[str]:
    return [r.code for r in decision.reasons]


@requirement("jwt-attack-matrix")
@pytest.mark.parametrize("header", ["jku", "x5u", "jwk", "x5c"])
def test_key_location_headers_are_ignored(service: Service, keys: Keys, header: str) -> None:
    """A token signed by an attacker's key, with a header pointing at (or embedding) that key,
    is refused: keys come from configuration only."""
    claims = devkeys.user_claims(issuer="https://issuer.test.local", audience=RESOURCE,
                                 sub="alice", tenant="acme", scopes=["files:read"],
                                 roles=["analyst"], ttl=300)
    values: dict[str, Any] = {
        "jku": "http://127.0.0.1:1/jwks.json", "x5u": "http://127.0.0.1:1/cert.pem",
        "jwk": devkeys.public_jwk(keys.other, "user-1", "RS256"), "x5c": ["MIIB"]}
    token = jwt.encode(claims, keys.other, algorithm="RS256",
                       headers={"kid": "user-1", header: values[header]})
    decision = service.stub.Decide(decide_request(token, "read_file", TARGET))
    assert not decision.allow and reasons(decision) == ["token_invalid"]


@requirement("jwt-attack-matrix")
@pytest.mark.parametrize("claim, raw", [("exp", "NaN"), ("exp", "Infinity"),
                                        ("sub", '"\\ud800"'), ("tenant", '"acme\\udfff"')])
def test_signed_claims_that_are_not_plain_json_are_refused(service: Service, keys: Keys,
                                                           claim: str, raw: str) -> None:
    """A trusted issuer's signature over ``"exp": NaN`` (never expires) or a lone surrogate
    (not UTF-8) is still a deny with token_invalid, never an error or an allow."""
    claims = devkeys.user_claims(issuer="https://issuer.test.local", audience=RESOURCE,
                                 sub="alice", tenant="acme", scopes=["files:read"],
                                 roles=["analyst"], ttl=300)
    claims[claim] = "PLACEHOLDER"
    payload = json.dumps(claims).replace('"PLACEHOLDER"', raw).encode()
    token = jwt.api_jws.encode(payload, keys.user, algorithm="RS256",
                               headers={"kid": "user-1", "typ": "JWT"})
    decision = service.stub.Decide(decide_request(token, "read_file", TARGET))
    assert not decision.allow and reasons(decision) == ["token_invalid"]
    assert "not plain JSON" in decision.reasons[0].message


@requirement("tenant-isolation")
def test_a_valid_token_for_another_tenant_is_tenant_mismatch(service: Service,
                                                             keys: Keys) -> None:
    token = keys.token(tenant="globex", scopes=("files:read",), roles=("analyst",))
    decision = service.stub.Decide(decide_request(token, "read_file",
                                                  {"path": "/srv/mcp/acme/reports/q3.txt"}))
    assert not decision.allow and reasons(decision)[0] == "tenant_mismatch"
    # ... and the same token on its own tenant's server is fine: the token itself is valid
    own = service.stub.Decide(decide_request(token, "read_file",
                                             {"path": "/srv/mcp/globex/reports/q3.txt"},
                                             tenant="globex"))
    assert own.allow


# --- approval abuse -----------------------------------------------------------------------


def _digest(tenant: str = "acme", subject: str = "alice", tool: str = "delete_file",
            arguments: dict[str, Any] | None = None) -> str:
    return request_digest(tenant, subject, RESOURCE, "tools/call", tool,
                          TARGET if arguments is None else arguments)


def _approved(service: Service, keys: Keys, approval: str, tool: str = "delete_file",
              arguments: dict[str, Any] | None = None) -> pb.Decision:
    request = decide_request(keys.token(**WRITER), tool,
                             TARGET if arguments is None else arguments)
    request.approval_tokens.append(approval)
    return service.stub.Decide(request)


@requirement("approval-abuse")
def test_the_approval_flow_works_when_nobody_cheats(service: Service, keys: Keys) -> None:
    denied = service.stub.Decide(decide_request(keys.token(**WRITER), "delete_file", TARGET))
    assert not denied.allow and reasons(denied) == ["approval_required"]
    obligation = next(o for o in denied.obligations if o.type == "require_approval")
    assert obligation.params["digest"] == _digest()
    assert _approved(service, keys, keys.approval_token("bob", _digest())).allow


def _user_key_approval(keys: Keys) -> str:
    claims = devkeys.approval_claims(issuer=APPROVALS, approver="bob", digest=_digest(),
                                     roles=["approver"], ttl=120)
    return devkeys.mint(keys.user, "user-1", "RS256", claims)


ABUSES = {
    "replayed for other arguments": lambda k: (
        k.approval_token("bob", _digest(arguments={"path": "/srv/mcp/acme/other.txt"})), {}),
    "replayed for another tool": lambda k: (
        k.approval_token("bob", _digest()), {"tool": "write_file",
                                              "arguments": {**TARGET, "content": "x"}}),
    "replayed from another tenant": lambda k: (
        k.approval_token("bob", _digest(tenant="globex")), {}),
    "replayed for another subject": lambda k: (
        k.approval_token("bob", _digest(subject="mallory")), {}),
    "self-approval": lambda k: (k.approval_token("alice", _digest()), {}),
    "approver without the approver role": lambda k: (
        k.approval_token("bob", _digest(), roles=("analyst",)), {}),
    "expired": lambda k: (k.approval_token("bob", _digest(), ttl=-60), {}),
    "signed with the user issuer's key": lambda k: (_user_key_approval(k), {}),
    "signed with an untrusted key under the approval kid": lambda k: (
        k.approval_token("bob", _digest(), key=devkeys.new_ec_key()), {}),
    "a user access token presented as an approval": lambda k: (
        k.token(sub="bob", roles=("approver",)), {}),
}


@requirement("approval-abuse")
@pytest.mark.parametrize("abuse", sorted(ABUSES))
def test_an_abused_approval_is_worthless(service: Service, keys: Keys, abuse: str) -> None:
    approval, call = ABUSES[abuse](keys)
    decision = _approved(service, keys, approval, **call)
    assert not decision.allow
    assert reasons(decision) == ["approval_invalid", "approval_required"]
