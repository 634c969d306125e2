"""The decision clients against real gRPC servers on loopback: the real service, and small
servers that misbehave on purpose (unavailable, refusing, answering garbage, TLS only)."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mcp_authz._pb.mcp.authz.v1 import authz_pb2 as pb
from mcp_authz.client import AsyncDecisionClient, ClientOptions, DecisionClient, TLSOptions
from mcp_authz.model import DecisionRequest
from mcp_authz.server import SERVICE_NAME
from support import RESOURCE, Keys, Service

FAST = ClientOptions(deadline_seconds=2.0, max_attempts=3, backoff_seconds=0.001)


def read_request(token: str, path: str = "sandbox/acme/notes.txt") -> DecisionRequest:
    return DecisionRequest(method="tools/call", tenant="acme", server_resource=RESOURCE,
                           bearer_token=token, tool_name="read_file",
                           tool_arguments={"path": path})


@contextmanager
def fake_service(behaviour: Callable[[Any, grpc.ServicerContext], Any],
                 credentials: grpc.ServerCredentials | None = None) -> Iterator[tuple[str, list]]:
    """A gRPC server answering Decide and FilterTools with ``behaviour``; records each call."""
    calls: list[Any] = []

    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        calls.append(request)
        return behaviour(request, context)

    handlers = {
        "Decide": grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=pb.DecideRequest.FromString,
            response_serializer=pb.Decision.SerializeToString),
        "FilterTools": grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=pb.FilterToolsRequest.FromString,
            response_serializer=pb.FilterToolsResponse.SerializeToString),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME,
                                                                          handlers),))
    port = (server.add_secure_port("127.0.0.1:0", credentials) if credentials
            else server.add_insecure_port("127.0.0.1:0"))
    server.start()
    try:
        yield f"127.0.0.1:{port}", calls
    finally:
        server.stop(0).wait()


def unavailable(request: Any, context: grpc.ServicerContext) -> Any:
    context.abort(grpc.StatusCode.UNAVAILABLE, "down for maintenance")


def test_allow_and_deny_from_the_real_service(service: Service, keys: Keys) -> None:
    with DecisionClient(service.target, FAST) as client:
        allowed = client.decide(read_request(keys.token("alice", "acme", ("files:read",))))
        denied = client.decide(read_request(keys.token("alice", "acme", ("files:read",)),
                                            "sandbox/globex/x.txt"))
    assert allowed.allow and allowed.policy_revision
    assert not denied.allow and denied.primary_reason == "argument_violation"


@pytest.mark.requirement("fail-closed-service-down")
def test_unreachable_service_is_a_deny_after_bounded_retries() -> None:
    with fake_service(unavailable) as (target, calls), DecisionClient(target, FAST) as client:
        decision = client.decide(read_request("t"))
        hidden = client.filter_tools(read_request("t"), ["read_file"])
    assert not decision.allow and decision.primary_reason == "service_unavailable"
    assert len(calls) == 2 * FAST.max_attempts
    assert hidden.allowed == frozenset() and "read_file" in hidden.denied


def test_nothing_listening_is_a_deny() -> None:
    with fake_service(unavailable) as (target, _):
        pass  # the port is closed now
    with DecisionClient(target, FAST) as client:
        assert client.decide(read_request("t")).primary_reason == "service_unavailable"


def test_a_refused_request_is_not_retried_and_is_a_deny() -> None:
    def refuse(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "tool.name: required")

    with fake_service(refuse) as (target, calls), DecisionClient(target, FAST) as client:
        decision = client.decide(read_request("t"))
    assert (decision.allow, decision.primary_reason, len(calls)) == (False, "invalid_request", 1)


@pytest.mark.requirement("fail-closed-garbage")
@pytest.mark.parametrize("answer", [
    lambda r: pb.Decision(decision_id="d", request_id="someone-else", allow=True),
    lambda r: pb.Decision(decision_id="", request_id=r.request_id, allow=True),
    lambda r: pb.Decision(decision_id="d", request_id=r.request_id, allow=True,
                          obligations=[pb.Obligation(type="")]),
])
def test_an_allow_that_breaks_the_contract_is_a_deny(answer: Callable[[Any], Any]) -> None:
    with fake_service(lambda r, c: answer(r)) as (target, _), \
            DecisionClient(target, FAST) as client:
        decision = client.decide(read_request("t"))
    assert (decision.allow, decision.primary_reason) == (False, "policy_error")


def test_the_async_client_decides_and_fails_closed(service: Service, keys: Keys) -> None:
    token = keys.token("alice", "acme", ("files:read",))

    async def run(target: str) -> Any:
        client = AsyncDecisionClient(target, FAST)
        try:
            return await client.decide(read_request(token))
        finally:
            await client.close()

    assert asyncio.run(run(service.target)).allow
    with fake_service(unavailable) as (target, calls):
        decision = asyncio.run(run(target))
    assert decision.primary_reason == "service_unavailable" and len(calls) == FAST.max_attempts


def _certificate(name: str, key: Any, issuer: tuple[x509.Name, Any] | None,
                 ca: bool = False) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]),
                                        critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(item: Any) -> bytes:
    if isinstance(item, x509.Certificate):
        return item.public_bytes(serialization.Encoding.PEM)
    return item.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())


@pytest.mark.requirement("mutual-tls")
def test_mutual_tls_needs_the_client_certificate(tmp_path: Path) -> None:
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _certificate("test-ca", ca_key, None, ca=True)
    server_cert = _certificate("authz.internal", server_key, (ca.subject, ca_key))
    client_cert = _certificate("gateway", client_key, (ca.subject, ca_key))
    files = {"ca.pem": _pem(ca), "client.pem": _pem(client_cert), "client.key": _pem(client_key)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    credentials = grpc.ssl_server_credentials([(_pem(server_key), _pem(server_cert))],
                                              root_certificates=_pem(ca),
                                              require_client_auth=True)

    def allow(request: Any, context: grpc.ServicerContext) -> Any:
        return pb.Decision(decision_id="d", request_id=request.request_id, allow=True)

    mutual = TLSOptions(ca_file=str(tmp_path / "ca.pem"), cert_file=str(tmp_path / "client.pem"),
                        key_file=str(tmp_path / "client.key"), server_name="authz.internal")
    server_only = TLSOptions(ca_file=str(tmp_path / "ca.pem"), server_name="authz.internal")
    with fake_service(allow, credentials) as (target, _):
        with DecisionClient(target, ClientOptions(tls=mutual)) as client:
            assert client.decide(read_request("t")).allow
        with DecisionClient(target, ClientOptions(tls=server_only, max_attempts=1)) as client:
            assert client.decide(read_request("t")).primary_reason == "service_unavailable"
