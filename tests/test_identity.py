"""Token verification: every failure is a deny with its reason code; keys only from config."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from mcp_authz import devkeys
from mcp_authz.config import ApprovalConfig, IssuerConfig
from mcp_authz.errors import IdentityError
from mcp_authz.identity import JwtApprovalVerifier, JwtVerifier, request_digest
from mcp_authz.jwks import KeySet
from support import APPROVALS, ISSUER, RESOURCE, JsonServer, Keys

requirement = pytest.mark.requirement


@pytest.fixture(scope="module")
def verifier(keys: Keys, jwks_server: JsonServer) -> JwtVerifier:
    cfg = IssuerConfig(issuer=ISSUER, jwks_url=jwks_server.url("/jwks.json"),
                       algorithms=("RS256", "ES256"), leeway_seconds=5, max_lifetime_seconds=3600)
    return JwtVerifier([(cfg, KeySet(url=cfg.jwks_url, min_refresh_seconds=0))], 16384)


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(**overrides: object) -> dict:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": RESOURCE, "sub": "alice", "tenant": "acme", "iat": now,
            "exp": now + 300, "scope": "files:read files:list", "roles": ["analyst"]}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def reason(verifier: JwtVerifier, token: str, audience: str = RESOURCE) -> str:
    with pytest.raises(IdentityError) as info:
        verifier.verify(token, audience, time.time())
    assert token not in str(info.value) or not token
    return info.value.code


def test_valid_token_gives_subject(verifier: JwtVerifier, keys: Keys) -> None:
    subject = verifier.verify(keys.token(scopes=("a", "b"), roles=("analyst",)), RESOURCE,
                              time.time())
    assert (subject.id, subject.tenant, subject.scopes, subject.roles) == (
        "alice", "acme", ("a", "b"), ("analyst",))


def test_scp_list_and_tenant_roles(verifier: JwtVerifier, keys: Keys) -> None:
    token = devkeys.mint(keys.user, "user-1", "RS256", claims(
        scope=None, scp=["x", "y"], roles={"acme": ["admin"], "globex": ["viewer"]}))
    subject = verifier.verify(token, RESOURCE, time.time())
    assert subject.scopes == ("x", "y") and subject.roles == ("admin",)


@requirement("jwt-attack-matrix")
@pytest.mark.parametrize("case, expected", [
    ("missing", "token_missing"),
    ("garbage", "token_invalid"),
    ("alg_none", "token_invalid"),
    ("hs256_with_public_key", "token_invalid"),
    ("unknown_kid", "token_invalid"),
    ("untrusted_key_same_kid", "token_invalid"),
    ("expired", "token_expired"),
    ("not_yet_valid", "token_invalid"),
    ("issued_in_future", "token_invalid"),
    ("wrong_audience", "audience_mismatch"),
    ("unknown_issuer", "issuer_untrusted"),
    ("lifetime_exceeded", "token_lifetime_exceeded"),
    ("missing_exp", "token_invalid"),
    ("missing_iat", "token_invalid"),
    ("missing_tenant", "token_invalid"),
    ("missing_sub", "token_invalid"),
    ("oversized", "token_invalid"),
    ("jku_header_ignored", "token_invalid"),
])
def test_attack_matrix(verifier: JwtVerifier, keys: Keys, case: str, expected: str) -> None:
    now = int(time.time())
    public_pem = keys.user.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    tokens = {
        "missing": "",
        "garbage": "not.a.jwt",
        "alg_none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}.",
        "hs256_with_public_key": _hmac_token(public_pem, claims()),
        "unknown_kid": devkeys.mint(keys.user, "nope", "RS256", claims()),
        "untrusted_key_same_kid": devkeys.mint(keys.other, "user-1", "RS256", claims()),
        "expired": devkeys.mint(keys.user, "user-1", "RS256",
                                claims(iat=now - 900, exp=now - 600)),
        "not_yet_valid": devkeys.mint(keys.user, "user-1", "RS256", claims(nbf=now + 600)),
        "issued_in_future": devkeys.mint(keys.user, "user-1", "RS256",
                                         claims(iat=now + 600, exp=now + 900)),
        "wrong_audience": devkeys.mint(keys.user, "user-1", "RS256",
                                       claims(aud="https://other.example.com")),
        "unknown_issuer": devkeys.mint(keys.user, "user-1", "RS256",
                                       claims(iss="https://evil.example.com")),
        "lifetime_exceeded": devkeys.mint(keys.user, "user-1", "RS256",
                                          claims(exp=now + 86400)),
        "missing_exp": devkeys.mint(keys.user, "user-1", "RS256", claims(exp=None)),
        "missing_iat": devkeys.mint(keys.user, "user-1", "RS256", claims(iat=None)),
        "missing_tenant": devkeys.mint(keys.user, "user-1", "RS256", claims(tenant=None)),
        "missing_sub": devkeys.mint(keys.user, "user-1", "RS256", claims(sub=None)),
        "oversized": devkeys.mint(keys.user, "user-1", "RS256", claims(pad="x" * 20000)),
        "jku_header_ignored": jwt.encode(claims(), keys.other, algorithm="RS256", headers={
            "kid": "attacker", "jku": "http://127.0.0.1:1/jwks.json",
            "jwk": devkeys.public_jwk(keys.other, "attacker", "RS256")}),
    }
    assert reason(verifier, tokens[case]) == expected


def _hmac_token(secret: bytes, payload: dict) -> str:
    import hashlib
    import hmac

    header = b64({"alg": "HS256", "typ": "JWT", "kid": "user-1"})
    body = b64(payload)
    sig = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"


def test_unknown_kid_refresh_is_rate_limited(keys: Keys) -> None:
    server = JsonServer()
    server.documents["/jwks.json"] = keys.user_jwks()
    try:
        key_set = KeySet(url=server.url("/jwks.json"), min_refresh_seconds=60)
        cfg = IssuerConfig(issuer=ISSUER, jwks_url="x", algorithms=("RS256",))
        verifier = JwtVerifier([(cfg, key_set)], 16384)
        verifier.verify(keys.token(), RESOURCE, time.time())
        for i in range(20):
            token = devkeys.mint(keys.user, f"invented-{i}", "RS256", claims())
            assert reason(verifier, token) == "token_invalid"
        assert server.hits["/jwks.json"] <= 2
    finally:
        server.close()


def test_key_rotation_picked_up_on_unknown_kid(keys: Keys) -> None:
    server = JsonServer()
    server.documents["/jwks.json"] = keys.user_jwks()
    try:
        cfg = IssuerConfig(issuer=ISSUER, jwks_url="x", algorithms=("RS256",))
        verifier = JwtVerifier(
            [(cfg, KeySet(url=server.url("/jwks.json"), min_refresh_seconds=0))], 16384)
        verifier.verify(keys.token(), RESOURCE, time.time())
        rotated = devkeys.new_rsa_key()
        server.documents["/jwks.json"] = {"keys": [devkeys.public_jwk(rotated, "user-2", "RS256")]}
        token = devkeys.mint(rotated, "user-2", "RS256", claims())
        assert verifier.verify(token, RESOURCE, time.time()).id == "alice"
    finally:
        server.close()


@requirement("jwks-outage-bounded")
def test_jwks_down_uses_cache_until_max_stale(keys: Keys) -> None:
    server = JsonServer()
    server.documents["/jwks.json"] = keys.user_jwks()
    clock = [1000.0]
    try:
        key_set = KeySet(url=server.url("/jwks.json"), cache_seconds=10, max_stale_seconds=100,
                         min_refresh_seconds=0, clock=lambda: clock[0])
        cfg = IssuerConfig(issuer=ISSUER, jwks_url="x", algorithms=("RS256",))
        verifier = JwtVerifier([(cfg, key_set)], 16384)
        verifier.verify(keys.token(), RESOURCE, time.time())
        server.down = True
        clock[0] += 50  # cache expired, endpoint down: the stale keys still verify
        assert verifier.verify(keys.token(), RESOURCE, time.time()).id == "alice"
        clock[0] += 100  # past max_stale: deny with a clear reason
        assert reason(verifier, keys.token()) == "token_invalid"
    finally:
        server.close()


def test_approval_verifier(keys: Keys, jwks_server: JsonServer) -> None:
    cfg = ApprovalConfig(issuer=APPROVALS, jwks_url="x", algorithms=("ES256",),
                         max_lifetime_seconds=600)
    verifier = JwtApprovalVerifier(cfg, KeySet(document=keys.approval_jwks()), 16384)
    digest = request_digest("acme", "alice", RESOURCE, "tools/call", "delete_file", {"path": "a"})
    other = request_digest("acme", "alice", RESOURCE, "tools/call", "delete_file", {"path": "b"})
    good = keys.approval_token("bob", digest)
    approvals, errors = verifier.verify_all(
        [good, keys.approval_token("bob", other), keys.token(sub="bob"),
         keys.approval_token("bob", digest, ttl=-10)], digest, time.time())
    assert [a.approver for a in approvals] == ["bob"] and approvals[0].roles == ("approver",)
    assert [e["code"] for e in errors] == ["approval_invalid"] * 3
    assert all(good not in e["message"] for e in errors)


def test_digest_is_canonical() -> None:
    a = request_digest("acme", "alice", RESOURCE, "tools/call", "t", {"b": 1, "a": [1, "x"]})
    b = request_digest("acme", "alice", RESOURCE, "tools/call", "t", {"a": [1, "x"], "b": 1})
    assert a == b and len(a) == 64
    assert a != request_digest("globex", "alice", RESOURCE, "tools/call", "t",
                               {"a": [1, "x"], "b": 1})


def test_subject_claims_hold_only_what_its_fields_do_not(verifier: JwtVerifier,
                                                         keys: Keys) -> None:
    token = devkeys.mint(keys.user, "user-1", "RS256", claims(department="finance",
                                                              azp="agent-1", jti="j-1"))
    subject = verifier.verify(token, RESOURCE, time.time())
    assert subject.claims == {"department": "finance"}
    assert (subject.client_id, subject.jti, subject.tenant) == ("agent-1", "j-1", "acme")
