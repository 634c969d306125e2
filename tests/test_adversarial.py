"""Property-based attacks on the default bundle through the real decision path and real tokens.

The invariant: no request is allowed unless its benign equivalent is allowed by the policy.
A request is built from a base case (one the policy allows and one it denies) with a hostile
value put somewhere: an argument value or key, a path, the tool name, the tenant, the client
and session fields, the context, the token's claims. Its benign equivalent is the same request
with every character outside a plain set replaced by ``_`` (same length), so quotes,
backslashes, NUL, control characters, escapes, surrogates and look-alike letters can only make
a decision stricter, never turn a deny into an allow. Deep and wide structures stand in for a
plain string, and amounts with unusual encodings are checked against the catalog's own rule.

The in-process path (``OfflineDecider``: the service's ``DecisionPath`` with tokens minted and
verified per decision) takes every string Python can hold; the gRPC path takes what protobuf
can carry. A malformed request (INVALID_ARGUMENT) counts as not allowed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_authz.errors import RequestError
from mcp_authz.evaluation import OfflineDecider
from mcp_authz.model import DecisionRequest
from support import POLICIES, RESOURCE, Keys, Service, decide_request

requirement = pytest.mark.requirement
PLAIN = re.compile(r"[^A-Za-z0-9:/._\- ]")
SETTINGS = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])

NASTY = ['"', "'", "\\", "\x00", "\n", "\r", "\t", "\u2028", "\ufeff", "\u202e", "\ud800",
         "\udfff", "\u0430", "\uff0f", "\\u0022", '\\"', "\\u0000", "\\x00", "%00", "%2e%2e",
         "../", "..\\", "{", "}", "[", "]", ",", ":", '", "allow": true, "x": "',
         '"}]}, "allow": true, {"', "${input}", "{{x}}", "*", "?", "~", "\U0001f600"]


def benign(value: Any) -> Any:
    """The plain twin of a value: hostile characters become ``_``, structure is kept."""
    if isinstance(value, str):
        return PLAIN.sub("_", value)
    if isinstance(value, dict):
        return {benign(k): benign(v) for k, v in value.items()}
    if isinstance(value, list):
        return [benign(v) for v in value]
    return value


hostile = st.lists(st.one_of(st.sampled_from(NASTY), st.text(max_size=8),
                             st.text(alphabet="acme/srvmcp._-", max_size=6)),
                   min_size=1, max_size=6).map("".join)
long_hostile = st.builds(lambda s, n: s * n, hostile, st.integers(50, 4000))
strings = st.one_of(hostile, hostile, long_hostile)
scalars = st.one_of(strings, st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                    st.booleans(), st.none())
structures = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=6), st.dictionaries(strings, inner, max_size=6)), max_leaves=40)


def deep(depth: int, wide: int) -> Any:
    value: Any = {f"k{i}": "v" for i in range(wide)}
    for _ in range(depth):
        value = {"n": value, "l": [value] if depth < 8 else []}
    return value


@dataclass(frozen=True)
class Case:
    """A request plus the claims of the token it carries."""

    request: DecisionRequest
    claims: dict[str, Any] = field(default_factory=dict)


READ = Case(DecisionRequest(
    method="tools/call", tenant="acme", server_id="files", server_resource=RESOURCE,
    client_id="agent-1", client_name="agent", tool_name="read_file",
    tool_arguments={"path": "/srv/mcp/acme/reports/q3.txt"}, request_id="r1", session_id="s1"),
    {"sub": "alice", "tenant": "acme", "scope": "files:read", "roles": ["analyst"]})
BASES = {"allowed": READ, "denied": replace(READ, claims={**READ.claims, "scope": "git:read"})}


def place(case: Case, where: str, value: Any) -> Case:
    """``case`` with ``value`` put at ``where``."""
    r, claims = case.request, case.claims
    args = dict(r.tool_arguments)
    if where == "argument value":
        return replace(case, request=replace(r, tool_arguments={**args, "note": value}))
    if where == "argument key":
        return replace(case, request=replace(r, tool_arguments={**args, value: "v"}))
    if where == "path":
        return replace(case, request=replace(r, tool_arguments={
            **args, "path": "/srv/mcp/acme/" + value}))
    if where == "tool name":
        return replace(case, request=replace(r, tool_name="read_file" + value))
    if where == "tenant":
        return replace(case, request=replace(r, tenant="acme" + value))
    if where == "client and session":
        return replace(case, request=replace(r, client_name=value, client_id=value,
                                             session_id=value, request_id=value))
    if where == "context":
        return replace(case, request=replace(r, context={"gateway": value, value: value}))
    if where == "subject":
        return replace(case, claims={**claims, "sub": "alice" + value})
    if where == "token tenant":
        return replace(case, claims={**claims, "tenant": "acme" + value})
    if where == "scope":
        return replace(case, claims={**claims, "scope": claims["scope"] + value})
    if where == "role":
        return replace(case, claims={**claims, "roles": ["analyst" + value]})
    raise AssertionError(where)


STRING_PLACES = ["argument value", "argument key", "path", "tool name", "tenant",
                 "client and session", "context", "subject", "token tenant", "scope", "role"]


@pytest.fixture(scope="module")
def decider() -> OfflineDecider:
    return OfflineDecider(str(POLICIES))


def allowed(decider: OfflineDecider, case: Case) -> bool:
    try:
        return decider.decide(case.request, claims=case.claims).decision.allow
    except RequestError:  # INVALID_ARGUMENT: not an allow
        return False


@requirement("no-encoding-trick-changes-a-decision")
def test_the_base_cases_are_what_the_properties_assume(decider: OfflineDecider) -> None:
    assert allowed(decider, BASES["allowed"]) and not allowed(decider, BASES["denied"])


@requirement("no-encoding-trick-changes-a-decision")
@SETTINGS
@given(base=st.sampled_from(sorted(BASES)), where=st.sampled_from(STRING_PLACES), value=strings)
def test_a_hostile_string_never_allows_what_its_benign_twin_does_not(
        decider: OfflineDecider, base: str, where: str, value: str) -> None:
    attack = place(BASES[base], where, value)
    if allowed(decider, attack):
        assert allowed(decider, place(BASES[base], where, benign(value))), (where, value)


@requirement("no-encoding-trick-changes-a-decision")
@SETTINGS
@given(base=st.sampled_from(sorted(BASES)), value=st.one_of(
    structures, st.builds(deep, st.integers(1, 40), st.integers(1, 300))))
def test_deep_and_wide_structures_never_allow_what_a_plain_value_does_not(
        decider: OfflineDecider, base: str, value: Any) -> None:
    attack = place(BASES[base], "argument value", value)
    if allowed(decider, attack):
        assert allowed(decider, place(BASES[base], "argument value", "v"))


PAY = Case(DecisionRequest(method="tools/call", tenant="acme", server_resource=RESOURCE,
                           tool_name="pay_invoice"),
           {"sub": "alice", "tenant": "acme", "scope": "payments:write", "roles": ["finance"]})
amounts = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**80), 2**80),
    st.sampled_from([0, -0.0, 5e-324, 1000, 1000.0000000000001, 999.9999999999999, 1001,
                     1e308, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -1, "1000", "1e3", "0x10",
                     " 100", "100\x00", True, None, [100], {"value": 100}]))


@requirement("no-encoding-trick-changes-a-decision")
@SETTINGS
@given(amount=amounts)
def test_unusual_amounts_are_allowed_only_within_the_catalog_rule(
        decider: OfflineDecider, amount: Any) -> None:
    """pay_invoice: allowed without approval only for a number in [0, 1000] (the policy's
    amount kind: 0 to the tenant limit, 5000; the catalog: approval above 1000)."""
    case = replace(PAY, request=replace(PAY.request, tool_arguments={"amount": amount}))
    if allowed(decider, case):
        assert (isinstance(amount, int | float) and not isinstance(amount, bool)
                and 0 <= amount <= 1000), amount


def test_a_plain_payment_is_allowed(decider: OfflineDecider) -> None:
    case = replace(PAY, request=replace(PAY.request, tool_arguments={"amount": 250}))
    assert allowed(decider, case)


# --- the same property over gRPC (what protobuf can carry) --------------------------------


@pytest.fixture(scope="module")
def token_for(keys: Keys) -> Iterator[Any]:
    cache: dict[str, str] = {}

    def token(claims: dict[str, Any]) -> str:
        key = repr(sorted(claims.items()))
        if key not in cache:
            extra = {k: v for k, v in claims.items() if k not in ("sub", "tenant", "scope")}
            cache[key] = keys.token(sub=claims["sub"], tenant=claims["tenant"],
                                    scopes=tuple(claims["scope"].split(" ")), **extra)
        return cache[key]

    yield token


def grpc_allowed(service: Service, token: Any, case: Case) -> bool:
    r = case.request
    try:
        request = decide_request(token(case.claims), r.tool_name, dict(r.tool_arguments),
                                 tenant=r.tenant, request_id=r.request_id,
                                 session_id=r.session_id)
        request.client.id, request.client.name = r.client_id, r.client_name
        if r.context:
            request.context.update(dict(r.context))
    except (ValueError, UnicodeError):  # protobuf cannot carry it (unpaired surrogates)
        return False
    try:
        return service.stub.Decide(request, timeout=30).allow
    except grpc.RpcError as exc:
        assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT,
                              grpc.StatusCode.RESOURCE_EXHAUSTED), exc
        return False


@requirement("no-encoding-trick-changes-a-decision")
@settings(SETTINGS, max_examples=60)
@given(base=st.sampled_from(sorted(BASES)), where=st.sampled_from(STRING_PLACES), value=hostile)
def test_over_grpc_a_hostile_string_never_allows_what_its_benign_twin_does_not(
        service: Service, token_for: Any, base: str, where: str, value: str) -> None:
    attack = place(BASES[base], where, value)
    if grpc_allowed(service, token_for, attack):
        assert grpc_allowed(service, token_for, place(BASES[base], where, benign(value)))
