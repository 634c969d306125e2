"""The decision cache and the token cache can only ever answer for the very same input.

Real keys and tokens, a real compiled policy; the decision path's clock is the only thing the
tests set (it is a parameter of the path by design). The policy allows exactly one subject,
tenant and argument set, with no approval tokens, so any answer served for another input
from the cache would show up as an allow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mcp_authz.activation import PolicyStore
from mcp_authz.config import ApprovalConfig, CacheConfig, IssuerConfig, LimitsConfig
from mcp_authz.decision_cache import DecisionCache
from mcp_authz.decisions import DecisionPath, DecisionRecord
from mcp_authz.identity import JwtApprovalVerifier, JwtVerifier, request_digest
from mcp_authz.jwks import KeySet
from mcp_authz.model import DecisionRequest, Subject
from mcp_authz.tokencache import CachedVerifier
from support import APPROVALS, ISSUER, RESOURCE, Keys

POLICY = """package mcp.authz

import rego.v1

default decision := {"allow": false, "reasons": [{"code": "role_missing", "message": "no"}],
	"obligations": []}

decision := {"allow": true, "reasons": [], "obligations": []} if {
	input.subject.id == data.mcp.config.subject
	input.tenant == "acme"
	input.tool.arguments.n == 1
	count(input.approvals) == 0
	count(input.approval_errors) == 0
}
"""
CLOCK_RULE = "\nstarted := input.now_ns\n"
NOW = 1_900_000_000


def bundle(directory: Path, revision: str, subject: str = "alice", policy: str = POLICY) -> str:
    (directory / "mcp" / "authz").mkdir(parents=True, exist_ok=True)
    (directory / "mcp" / "config").mkdir(parents=True, exist_ok=True)
    (directory / ".manifest").write_text(json.dumps({"revision": revision, "roots": ["mcp"]}))
    (directory / "mcp" / "authz" / "policy.rego").write_text(policy)
    (directory / "mcp" / "config" / "data.json").write_text(json.dumps({"subject": subject}))
    return str(directory)


class Clock:
    def __init__(self) -> None:
        self.seconds = float(NOW)

    def __call__(self) -> int:
        return int(self.seconds * 1e9)


class Recorder:
    def __init__(self) -> None:
        self.records: list[DecisionRecord] = []

    def observe(self, record: DecisionRecord) -> None:
        self.records.append(record)

    def last(self) -> str:
        return self.records[-1].cache


@pytest.fixture()
def setup(tmp_path: Path, keys: Keys) -> tuple[DecisionPath, PolicyStore, Clock, Recorder]:
    store = PolicyStore("mcp/authz/decision")
    store.activate_path(bundle(tmp_path / "b1", "rev-1"))
    issuer = IssuerConfig(issuer=ISSUER, jwks_file="x", max_lifetime_seconds=3600)
    verifier = CachedVerifier(JwtVerifier([(issuer, KeySet(document=keys.user_jwks()))], 16384),
                              100, 300)
    approvals = JwtApprovalVerifier(ApprovalConfig(issuer=APPROVALS, jwks_file="x"),
                                    KeySet(document=keys.approval_jwks()), 16384)
    clock, recorder = Clock(), Recorder()
    path = DecisionPath(store, verifier, approvals, LimitsConfig(), clock=clock,
                        observers=[recorder],
                        cache=DecisionCache.from_config(CacheConfig(enabled=True,
                                                                    max_age_seconds=30)))
    return path, store, clock, recorder


def request(token: str, tenant: str = "acme", n: int = 1, **fields: Any) -> DecisionRequest:
    return DecisionRequest(method="tools/call", tenant=tenant, server_resource=RESOURCE,
                           bearer_token=token, tool_name="x", tool_arguments={"n": n}, **fields)


def token(keys: Keys, sub: str = "alice", tenant: str = "acme", ttl: int = 600) -> str:
    return keys.token(sub=sub, tenant=tenant, ttl=ttl, now=NOW)


@pytest.mark.requirement("decision-cache-isolation")
def test_a_cached_allow_never_answers_another_subject_tenant_argument_or_approval_set(
        setup: Any, keys: Keys) -> None:
    path, _, _, recorder = setup
    alice = token(keys)
    first = path.decide(request(alice))
    assert first.allow and recorder.last() == "miss"
    again = path.decide(request(alice, request_id="second"))
    assert again.allow and recorder.last() == "hit"
    assert again.decision_id != first.decision_id and again.request_id == "second"
    # same token and tool, one fact changed each time: each is evaluated, and denied
    assert not path.decide(request(token(keys, sub="bob"))).allow
    assert recorder.last() == "miss"
    assert not path.decide(request(alice, tenant="globex")).allow
    assert not path.decide(request(alice, n=2)).allow
    assert recorder.last() == "miss"
    digest = request_digest("acme", "alice", RESOURCE, "tools/call", "x", {"n": 1})
    approval = keys.approval_token("bob", digest)
    with_approval = path.decide(request(alice, approval_tokens=(approval,)))
    assert not with_approval.allow and recorder.last() == ""  # approvals bypass the cache
    assert path.decide(request(alice)).allow and recorder.last() == "hit"


@pytest.mark.requirement("decision-cache-isolation")
def test_a_new_revision_empties_the_cache_even_with_the_same_revision_name(
        setup: Any, keys: Keys, tmp_path: Path) -> None:
    path, store, _, recorder = setup
    alice = token(keys)
    assert path.decide(request(alice)).allow
    assert path.decide(request(alice)).allow and recorder.last() == "hit"
    store.activate_path(bundle(tmp_path / "b2", "rev-1", subject="carol"))
    decision = path.decide(request(alice))
    assert not decision.allow and recorder.last() == "miss"
    store.activate_path(bundle(tmp_path / "b3", "rev-3"))
    decision = path.decide(request(alice))
    assert decision.allow and decision.policy_revision == "rev-3" and recorder.last() == "miss"


@pytest.mark.requirement("decision-cache-bounds")
def test_entries_expire_with_max_age_and_never_outlive_the_token(setup: Any,
                                                                  keys: Keys) -> None:
    path, _, clock, recorder = setup
    short = token(keys, ttl=40)
    assert path.decide(request(short)).allow
    clock.seconds += 29
    assert path.decide(request(short)).allow and recorder.last() == "hit"
    clock.seconds += 2  # past max_age_seconds (30)
    assert path.decide(request(short)).allow and recorder.last() == "miss"
    clock.seconds += 8
    assert path.decide(request(short)).allow and recorder.last() == "hit"
    clock.seconds += 2  # past exp (40 s), within the issuer's 30 s leeway: evaluated again
    assert path.decide(request(short)).allow and recorder.last() == "miss"
    clock.seconds += 30  # past exp + leeway: refused, from no cache
    expired = path.decide(request(short))
    assert not expired.allow and expired.reasons[0].code == "token_expired"


@pytest.mark.requirement("decision-cache-bypass-time")
def test_a_policy_that_reads_the_time_is_always_evaluated(setup: Any, keys: Keys,
                                                          tmp_path: Path) -> None:
    path, store, _, recorder = setup
    store.activate_path(bundle(tmp_path / "t", "clock", policy=POLICY + CLOCK_RULE))
    alice = token(keys)
    for _ in range(3):
        assert path.decide(request(alice)).allow
        assert recorder.last() == "bypass"


def test_the_cache_is_bounded(setup: Any, keys: Keys) -> None:
    path, _, _, _ = setup
    cache = DecisionCache(max_entries=3, max_age_seconds=30)
    small = DecisionPath(path._policies, path._verifier, None, LimitsConfig(),
                         clock=path._clock, cache=cache)
    alice = token(keys)
    for n in range(10):
        small.decide(request(alice, n=n))
    assert len(cache) == 3


@pytest.mark.requirement("token-cache")
def test_verified_tokens_are_cached_per_audience_until_exp_and_refusals_never(
        keys: Keys) -> None:
    issuer = IssuerConfig(issuer=ISSUER, jwks_file="x", max_lifetime_seconds=3600)
    counting = _Counting(JwtVerifier([(issuer, KeySet(document=keys.user_jwks()))], 16384))
    cached = CachedVerifier(counting, max_entries=2, max_age_seconds=100)
    good = token(keys, ttl=60)
    assert cached.verify(good, RESOURCE, NOW).id == "alice"
    assert cached.verify(good, RESOURCE, NOW + 10).id == "alice"
    assert counting.calls == 1
    with pytest.raises(Exception, match="audience"):
        cached.verify(good, "https://other.example.com", NOW)  # never from the cache
    with pytest.raises(Exception, match="expired"):
        cached.verify(good, RESOURCE, NOW + 61 + 30)  # past exp (+ leeway): verified again
    bad = good[:-4] + "AAAA"
    for _ in range(2):
        with pytest.raises(Exception, match="signature"):
            cached.verify(bad, RESOURCE, NOW)
    assert counting.calls == 5 and len(cached) <= 2


class _Counting:
    def __init__(self, verifier: JwtVerifier) -> None:
        self._verifier = verifier
        self.calls = 0

    def verify(self, token: str, audience: str, now: float) -> Subject:
        self.calls += 1
        return self._verifier.verify(token, audience, now)
