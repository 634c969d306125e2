"""Authenticated callers: TLS and mutual TLS on the gRPC and HTTP listeners, an allowlist of
client identities, certificates reloaded from disk without a restart (real certificates, real
servers on loopback)."""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pki import Authority, Issued

from mcp_authz._pb.mcp.authz.v1 import authz_pb2_grpc as pb_grpc
from mcp_authz.config import TlsConfig, load_config
from mcp_authz.decisions import DecisionRecord
from mcp_authz.errors import ConfigError, MCPAuthzError
from mcp_authz.monitoring import MonitoringServer
from mcp_authz.tls import CertificateFiles, HttpTls
from support import JsonServer, Keys, decide_request, running_service, write_config

requirement = pytest.mark.requirement
GATEWAY = "gateway.mesh.local"
SPIFFE = "spiffe://mesh.local/ns/gw/sa/agentgateway"


@dataclass
class Pki:
    directory: Path
    ca: Authority
    gateway: Issued  # allowlisted by SAN DNS
    spiffe: Issued  # allowlisted by SAN URI
    by_cn: Issued  # allowlisted by subject CN
    stranger: Issued  # signed by the CA, not allowlisted
    foreign: Issued  # signed by another CA

    def tls(self, **overrides: Any) -> dict[str, Any]:
        section = {"cert_file": str(self.directory / "server.crt"),
                   "key_file": str(self.directory / "server.key"),
                   "client_ca_file": str(self.directory / "ca.crt"),
                   "allowed_client_identities": [GATEWAY, SPIFFE, "pep-by-cn"],
                   "reload_interval_seconds": 0.05}
        section.update(overrides)
        return section


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = Authority()
    ca.write(directory)
    ca.server().write(directory, "server")
    return Pki(directory, ca, ca.client("gw", dns=(GATEWAY,)), ca.client("sp", uris=(SPIFFE,)),
               ca.client("pep-by-cn"), ca.client("intruder", dns=("intruder.mesh.local",)),
               Authority("other CA").client("gw", dns=(GATEWAY,)))


class Recorder:
    def __init__(self) -> None:
        self.records: list[DecisionRecord] = []

    def observe(self, record: DecisionRecord) -> None:
        self.records.append(record)


def channel(port: int, ca: bytes, client: Issued | None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=client.key if client else None,
        certificate_chain=client.cert if client else None)
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials)


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory, jwks_server: JsonServer,
         pki: Pki) -> Iterator[tuple[Any, Recorder]]:
    path = write_config(tmp_path_factory.mktemp("mtls"), jwks_server.url("/jwks.json"),
                        jwks_server.url("/approval-jwks.json"), server={"tls": pki.tls()})
    with running_service(path) as svc:
        recorder = Recorder()
        svc.path.add_observer(recorder)
        yield svc, recorder


def decide(port: int, pki: Pki, client: Issued | None, keys: Keys) -> Any:
    with channel(port, pki.ca.pem, client) as ch:
        return pb_grpc.DecisionServiceStub(ch).Decide(decide_request(
            keys.token(scopes=("files:read",), roles=("analyst",)), "read_file",
            {"path": "/srv/mcp/acme/reports/q3.txt"}), timeout=10)


@requirement("authenticated-callers")
@pytest.mark.parametrize("who", ["gateway", "spiffe", "by_cn"])
def test_allowlisted_client_certificates_get_decisions(mtls: Any, pki: Pki, keys: Keys,
                                                       who: str) -> None:
    svc, recorder = mtls
    before = len(recorder.records)
    decision = decide(svc.port, pki, getattr(pki, who), keys)
    assert decision.allow and decision.policy_revision
    assert len(recorder.records) == before + 1


@requirement("authenticated-callers")
def test_a_certificate_outside_the_allowlist_is_unauthenticated_with_no_decision(
        mtls: Any, pki: Pki, keys: Keys) -> None:
    svc, recorder = mtls
    before = len(recorder.records)
    with pytest.raises(grpc.RpcError) as info:
        decide(svc.port, pki, pki.stranger, keys)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "server.tls.allowed_client_identities" in info.value.details()
    with channel(svc.port, pki.ca.pem, pki.stranger) as ch, pytest.raises(grpc.RpcError) as hc:
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert hc.value.code() == grpc.StatusCode.UNAUTHENTICATED  # every service, not only decisions
    assert len(recorder.records) == before


@requirement("authenticated-callers")
@pytest.mark.parametrize("who", ["no certificate", "another CA's certificate", "plaintext"])
def test_callers_without_a_valid_client_certificate_cannot_connect(
        mtls: Any, pki: Pki, keys: Keys, who: str) -> None:
    svc, recorder = mtls
    before = len(recorder.records)
    with pytest.raises(grpc.RpcError) as info:
        if who == "plaintext":
            with grpc.insecure_channel(f"127.0.0.1:{svc.port}") as ch:
                pb_grpc.DecisionServiceStub(ch).Decide(decide_request(keys.token(), "read_file"),
                                                       timeout=10)
        else:
            decide(svc.port, pki, None if who == "no certificate" else pki.foreign, keys)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(recorder.records) == before


@requirement("certificates-reload-without-restart")
def test_grpc_certificates_are_reloaded_from_disk(tmp_path: Path, jwks_server: JsonServer,
                                                  pki: Pki, keys: Keys) -> None:
    directory = tmp_path
    old_ca = Authority("old CA")
    old_ca.write(directory)
    old_ca.server().write(directory, "server")
    client = old_ca.client("gw", dns=(GATEWAY,))
    tls = pki.tls(cert_file=str(directory / "server.crt"), key_file=str(directory / "server.key"),
                  client_ca_file=str(directory / "ca.crt"))
    path = write_config(directory, jwks_server.url("/jwks.json"),
                        jwks_server.url("/approval-jwks.json"), server={"tls": tls})
    with running_service(path) as svc:
        assert decide(svc.port, Pki(directory, old_ca, client, *[client] * 4), client, keys).allow
        new_ca = Authority("new CA")  # rotate everything: server certificate and client CA
        new_client = new_ca.client("gw", dns=(GATEWAY,))
        new_ca.server().write(directory, "server")
        new_ca.write(directory)
        time.sleep(0.2)  # past reload_interval_seconds
        new_pki = Pki(directory, new_ca, new_client, *[new_client] * 4)
        assert _eventually(lambda: decide(svc.port, new_pki, new_client, keys).allow)
        with pytest.raises(grpc.RpcError) as info:  # the old CA's clients are refused now
            decide(svc.port, Pki(directory, old_ca, client, *[client] * 4), client, keys)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def _eventually(attempt: Any, tries: int = 20) -> Any:
    for _ in range(tries - 1):
        try:
            return attempt()
        except grpc.RpcError:
            time.sleep(0.1)
    return attempt()


# --- HTTP listeners: the ops port and AuthZEN (the same TlsHttpServer) ----------------------


class _Metrics:
    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        return b"up 1\n", "text/plain"


@pytest.fixture
def ops(pki: Pki) -> Iterator[tuple[MonitoringServer, HttpTls]]:
    tls = CertificateFiles(TlsConfig(**pki.tls(allowed_client_identities=(GATEWAY, SPIFFE))),
                           "metrics.tls", str)
    http_tls = HttpTls(tls)
    server = MonitoringServer("127.0.0.1:0", _Metrics(), lambda: None, tls=http_tls)
    server.start()
    yield server, http_tls
    server.stop()


def https_get(port: int, ca: bytes, client: Issued | None, tmp: Path,
              path: str = "/metrics") -> tuple[int, bytes]:
    context = ssl.create_default_context(cadata=ca.decode())
    if client is not None:
        cert, key = client.write(tmp, "client")
        context.load_cert_chain(cert, key)
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@requirement("authenticated-callers")
def test_ops_port_serves_allowlisted_clients_and_refuses_others_with_401(
        ops: Any, pki: Pki, tmp_path: Path) -> None:
    server, _ = ops
    assert https_get(server.port, pki.ca.pem, pki.gateway, tmp_path) == (200, b"up 1\n")
    assert https_get(server.port, pki.ca.pem, pki.spiffe, tmp_path, "/healthz")[0] == 200
    status, body = https_get(server.port, pki.ca.pem, pki.stranger, tmp_path)
    assert status == 401 and json.loads(body)["error"] == "unauthenticated"
    assert "metrics.tls.allowed_client_identities" in json.loads(body)["message"]
    for client in (None, pki.foreign):  # no certificate, or another CA's: no TLS session
        with pytest.raises((ssl.SSLError, ConnectionError)):
            https_get(server.port, pki.ca.pem, client, tmp_path)
    with pytest.raises((http.client.HTTPException, ConnectionError)):  # plain HTTP
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", "/metrics")
        connection.getresponse().read()


@requirement("certificates-reload-without-restart")
def test_http_certificates_are_reloaded_from_disk(tmp_path: Path) -> None:
    ca = Authority("first CA")
    ca.write(tmp_path)
    ca.server().write(tmp_path, "server")
    files = CertificateFiles(TlsConfig(
        cert_file=str(tmp_path / "server.crt"), key_file=str(tmp_path / "server.key"),
        client_ca_file=str(tmp_path / "ca.crt"), allowed_client_identities=(GATEWAY,),
        reload_interval_seconds=0.05), "metrics.tls", str)
    server = MonitoringServer("127.0.0.1:0", _Metrics(), lambda: None, tls=HttpTls(files))
    server.start()
    try:
        client = ca.client("gw", dns=(GATEWAY,))
        assert https_get(server.port, ca.pem, client, tmp_path)[0] == 200
        rotated = Authority("second CA")
        rotated.server().write(tmp_path, "server")
        rotated.write(tmp_path)
        time.sleep(0.2)
        new_client = rotated.client("gw", dns=(GATEWAY,))
        assert https_get(server.port, rotated.pem, new_client, tmp_path)[0] == 200
        assert files.reloads == 1
        (tmp_path / "server.crt").write_text("garbage")  # a bad rotation keeps the last good
        time.sleep(0.2)
        assert https_get(server.port, rotated.pem, new_client, tmp_path)[0] == 200
        assert files.reloads == 1
    finally:
        server.stop()


@requirement("authenticated-callers")
def test_authzen_listener_speaks_mtls_from_config(tmp_path: Path, jwks_server: JsonServer,
                                                  pki: Pki, keys: Keys) -> None:
    from adapter_support import PEP_SECRET, PEP_SECRET_SHA256, mcp_evaluation, running_app

    authzen = {"enabled": True, "listen": "127.0.0.1:0", "pep_token_sha256": [PEP_SECRET_SHA256],
               "tenant": "acme", "server_resource": "https://mcp.example.com/files",
               "tls": pki.tls()}
    with running_app(tmp_path, jwks_server, adapters={"authzen": authzen}) as running:
        port = running.authzen_port
        body = json.dumps(mcp_evaluation(keys.token(scopes=("files:read",)), "read_file",
                                         {"path": "/srv/mcp/acme/a.txt"})).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {PEP_SECRET}"}
        results = {}
        for name in ("gateway", "stranger"):
            context = ssl.create_default_context(cadata=pki.ca.pem.decode())
            context.load_cert_chain(*getattr(pki, name).write(tmp_path, name))
            connection = http.client.HTTPSConnection("127.0.0.1", port, context=context,
                                                     timeout=10)
            connection.request("POST", "/access/v1/evaluation", body=body, headers=headers)
            response = connection.getresponse()
            results[name] = (response.status, json.loads(response.read()))
            connection.close()
    assert results["gateway"][0] == 200 and results["gateway"][1]["decision"] is True
    assert results["stranger"] == (401, {"error": "unauthenticated", "message": (
        "the client certificate names no identity in "
        "adapters.authzen.tls.allowed_client_identities")})


def test_tls_config_problems_name_the_option(tmp_path: Path, jwks_server: JsonServer,
                                             pki: Pki) -> None:
    path = write_config(tmp_path, jwks_server.url("/jwks.json"),
                        jwks_server.url("/approval-jwks.json"),
                        server={"tls": {"cert_file": "missing.crt", "client_ca_file": "",
                                        "allowed_client_identities": ["gw"]}},
                        metrics={"tls": pki.tls(require_client_cert=False)})
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.problems == [
        "server.tls.cert_file: no such file: missing.crt",
        "server.tls.key_file: required",
        "server.tls.client_ca_file: required with require_client_cert: true (set "
        "require_client_cert: false for server-only TLS)",
        "server.tls.allowed_client_identities: needs client_ca_file (client certificates are "
        "what the identities are read from)",
        "metrics.tls.allowed_client_identities: needs require_client_cert: true",
    ]
    (tmp_path / "bad.crt").write_text("not a certificate")
    files = CertificateFiles(TlsConfig(cert_file=str(tmp_path / "bad.crt"),
                                       key_file=str(tmp_path / "bad.crt")), "server.tls", str)
    with pytest.raises(MCPAuthzError, match=r"server.tls.cert_file: .*bad.crt: not a PEM file"):
        files.read()


def test_the_decide_command_speaks_mutual_tls(mtls: Any, pki: Pki, keys: Keys, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from mcp_authz.cli import main

    svc, _ = mtls
    cert, key = pki.gateway.write(tmp_path, "gateway")
    ca = pki.ca.write(tmp_path)
    common = ["decide", "--target", f"127.0.0.1:{svc.port}", "--tenant", "acme",
              "--resource", "https://mcp.example.com/files", "--tool", "read_file",
              "--arguments", '{"path": "/srv/mcp/acme/reports/q3.txt"}',
              "--token", keys.token(scopes=("files:read",), roles=("analyst",))]
    assert main([*common, "--cacert", str(ca), "--cert", str(cert), "--key", str(key)]) == 0
    assert json.loads(capsys.readouterr().out)["allow"] is True
    assert main([*common, "--cacert", str(ca)]) == 2  # no client certificate: no connection
    assert "UNAVAILABLE" in capsys.readouterr().out
    assert main([*common, "--cacert", str(ca), "--cert", str(cert)]) == 2
    assert "set both cert_file and key_file" in capsys.readouterr().err
