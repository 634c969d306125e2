"""The gRPC contract on a real server: status codes, health, reflection, batch order, bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mcp_authz._pb.mcp.authz.v1 import authz_pb2 as pb
from support import JsonServer, Keys, Service, decide_request, running_service, write_config

requirement = pytest.mark.requirement
ECHO_BUNDLE = Path(__file__).parent / "data" / "echo_bundle"
SERVICE = "mcp.authz.v1.DecisionService"
INJECTIONS = [
    'x", "allow": true, "zz": "',
    '"}], "allow": true, "x": [{"',
    "\x00allow",
    "\\u0022, \\\"allow\\\": true",
    "\\", "\\\\", "\u2028\u2029", "\ufeff\ud7ff\ue000", "safe_tool\x00",
    "</script>'; DROP TABLE x; --", "{{input}}", "${allow}", "\u202esafe_tool",
    "s\u0430fe_tool",  # Cyrillic a
    "x" * 60000,
]


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory, jwks_server: JsonServer) -> Iterator[Service]:
    path = write_config(tmp_path_factory.mktemp("echo"), jwks_server.url("/jwks.json"),
                        jwks_server.url("/approval-jwks.json"), bundle=ECHO_BUNDLE)
    with running_service(path) as svc:
        yield svc


def test_echo_policy_allows_only_the_benign_case(echo: Service, keys: Keys) -> None:
    allowed = echo.stub.Decide(decide_request(keys.token(scopes=("safe",)), "safe_tool"))
    assert allowed.allow and allowed.policy_revision == "echo-1"
    assert allowed.obligations[0].type == "audit"
    denied = echo.stub.Decide(decide_request(keys.token(scopes=()), "safe_tool"))
    assert not denied.allow


@requirement("no-encoding-trick-changes-a-decision")
@pytest.mark.parametrize("payload", INJECTIONS, ids=range(len(INJECTIONS)))
def test_injection_in_every_string_field_never_flips_a_deny(echo: Service, keys: Keys,
                                                            payload: str) -> None:
    token = keys.token(scopes=())  # benign equivalent is denied: no scope
    request = decide_request(token, payload, {payload: payload, "nested": {"k": [payload]}},
                             resource_uri=payload, session_id=payload)
    request.client.name = payload
    request.context.update({"note": payload})
    decision = echo.stub.Decide(request)
    assert decision.allow is False
    # and the echoed strings come back intact: nothing was truncated or re-parsed
    assert payload[:1000] in decision.reasons[0].message
    assert decision.obligations[0].params["echo"][payload] == payload


@requirement("no-encoding-trick-changes-a-decision")
@pytest.mark.parametrize("payload", INJECTIONS[:10], ids=range(10))
def test_injection_in_tenant_and_tool_does_not_grant(echo: Service, keys: Keys,
                                                     payload: str) -> None:
    token = keys.token(scopes=("safe",))
    assert not echo.stub.Decide(decide_request(token, "safe_tool", tenant=payload)).allow
    assert not echo.stub.Decide(decide_request(token, payload)).allow
    assert echo.stub.Decide(decide_request(token, "safe_tool", {"a": payload})).allow


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r.ClearField("method"), "method"),
    (lambda r: setattr(r, "method", "tools/delete"), "method"),
    (lambda r: r.tool.ClearField("name"), "tool.name"),
    (lambda r: r.ClearField("tenant"), "tenant"),
    (lambda r: r.server.ClearField("resource"), "server.resource"),
    (lambda r: r.tool.arguments.update({"big": "x" * (1024 * 1024)}), "max_string_bytes"),
    (lambda r: r.tool.arguments.update({f"k{i}": "y" * 60000 for i in range(20)}),
     "max_arguments_bytes"),
    (lambda r: r.tool.arguments.update({"n": float("nan")}), "NaN"),
    (lambda r: r.tool.arguments.update({"n": float("inf")}), "NaN"),
    (lambda r: r.approval_tokens.extend(["t"] * 50), "max_approval_tokens"),
    (lambda r: r.tool.arguments.update({f"k{i}": i for i in range(20000)}), "max_keys"),
])
def test_malformed_requests_are_invalid_argument(service: Service, keys: Keys, mutate,
                                                 field: str) -> None:
    request = decide_request(keys.token(scopes=("files:read",)), "read_file", {"path": "a"})
    mutate(request)
    with pytest.raises(grpc.RpcError) as info:
        service.stub.Decide(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in info.value.details()


def _nested(depth: int) -> dict:
    value: dict = {"leaf": "x"}
    for _ in range(depth):
        value = {"n": value}
    return value


@pytest.mark.parametrize("depth", [40, 200, 5000])
def test_deep_nesting_is_invalid_argument(service: Service, keys: Keys, depth: int) -> None:
    request = decide_request(keys.token(), "read_file")
    if depth < 1000:
        request.tool.arguments.update(_nested(depth))
        payload = request.SerializeToString()
    else:  # too deep for protobuf-python to build: hand-encode the wire bytes
        payload = _deep_wire(request, depth)
    call = service.channel.unary_unary(f"/{SERVICE}/Decide",
                                       request_serializer=lambda b: b,
                                       response_deserializer=pb.Decision.FromString)
    with pytest.raises(grpc.RpcError) as info:
        call(payload)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_depth" in info.value.details() or "cannot parse" in info.value.details()


def _deep_wire(request: pb.DecideRequest, depth: int) -> bytes:
    def ld(field: int, body: bytes) -> bytes:
        key = bytes([(field << 3) | 2])
        return key + _varint(len(body)) + body

    value = ld(3, b"x")  # Value.string_value
    for _ in range(depth):
        struct = ld(1, ld(1, b"n") + ld(2, value))  # Struct.fields entry {key, value}
        value = ld(5, struct)  # Value.struct_value
    arguments = ld(1, ld(1, b"n") + ld(2, value))
    return request.SerializeToString() + ld(7, ld(2, arguments))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_garbage_bytes_are_invalid_argument(service: Service) -> None:
    call = service.channel.unary_unary(f"/{SERVICE}/Decide", request_serializer=lambda b: b,
                                       response_deserializer=pb.Decision.FromString)
    with pytest.raises(grpc.RpcError) as info:
        call(b"\xff\xff\xff\xff garbage")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "x" * 100000, "Bearer abc",
                                   "eyJhbGciOiJub25lIn0.e30.", "\x00" * 10])
def test_garbage_tokens_are_denies_with_a_reason(service: Service, token: str) -> None:
    decision = service.stub.Decide(decide_request(token, "read_file", {"path": "a"}))
    assert not decision.allow
    assert decision.reasons[0].code in {"token_missing", "token_invalid"}
    assert decision.policy_revision == service.store.status().active_revision
    assert token not in decision.reasons[0].message or not token


def test_server_keeps_serving_after_bad_input(service: Service, keys: Keys) -> None:
    for payload in (b"\xff", b"", b"\x0a\xff"):
        call = service.channel.unary_unary(f"/{SERVICE}/Decide", request_serializer=lambda b: b,
                                           response_deserializer=pb.Decision.FromString)
        try:
            call(payload)
        except grpc.RpcError:
            pass
    status = health_pb2_grpc.HealthStub(service.channel).Check(
        health_pb2.HealthCheckRequest(service=SERVICE))
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    assert service.stub.GetPolicyStatus(pb.GetPolicyStatusRequest()).active_revision


def test_batch_answers_in_request_order(echo: Service, keys: Keys) -> None:
    good, bad = keys.token(scopes=("safe",)), keys.token(scopes=())
    requests = [decide_request(t, "safe_tool", request_id=f"id-{i}")
                for i, t in enumerate([good, bad, good, "junk", good])]
    response = echo.stub.DecideBatch(pb.DecideBatchRequest(requests=requests))
    assert [d.request_id for d in response.decisions] == [f"id-{i}" for i in range(5)]
    assert [d.allow for d in response.decisions] == [True, False, True, False, True]
    assert len({d.decision_id for d in response.decisions}) == 5


def test_batch_errors_name_the_item_and_limit(echo: Service, keys: Keys) -> None:
    items = [decide_request(keys.token(), "safe_tool"), decide_request(keys.token(), "")]
    with pytest.raises(grpc.RpcError) as info:
        echo.stub.DecideBatch(pb.DecideBatchRequest(requests=items))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "requests[1].tool.name" in info.value.details()
    many = [decide_request("t", "safe_tool")] * (echo.config.limits.max_batch + 1)
    with pytest.raises(grpc.RpcError) as info:
        echo.stub.DecideBatch(pb.DecideBatchRequest(requests=many))
    assert "max_batch" in info.value.details()


@requirement("health-follows-policy")
def test_no_policy_is_unavailable_and_not_serving(config_path: Path, keys: Keys) -> None:
    with running_service(config_path, activate=False) as svc:
        health = health_pb2_grpc.HealthStub(svc.channel)
        for name in ("", SERVICE):
            assert health.Check(health_pb2.HealthCheckRequest(service=name)).status == \
                health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as info:
            svc.stub.Decide(decide_request(keys.token(), "read_file"))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        svc.store.activate_path(str(ECHO_BUNDLE))
        assert health.Check(health_pb2.HealthCheckRequest(service=SERVICE)).status == \
            health_pb2.HealthCheckResponse.SERVING
        assert svc.stub.Decide(decide_request(keys.token(scopes=("safe",)), "safe_tool")).allow


def test_reflection_lists_the_services(service: Service) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(service.channel)
    responses = stub.ServerReflectionInfo(iter([
        reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names


def test_policy_status_reports_revision(service: Service) -> None:
    status = service.stub.GetPolicyStatus(pb.GetPolicyStatusRequest())
    assert status.active_revision == service.store.active().revision
    assert status.activated_at.seconds > 0 and status.entrypoint == "mcp/authz/decision"
