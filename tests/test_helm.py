"""The Helm chart, linted and rendered by Helm's own Go engine (PyPI helm-python-sdk).

What operators depend on: the chart lints clean, renders with the defaults and with every
optional feature on, every rendering carries the security settings and gRPC probes, the config
it renders is one the service itself accepts, and bad values are refused with a message naming
the value.
"""

from __future__ import annotations

import base64
import copy
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from mcp_authz.config import load_config
from mcp_authz.server import LIVENESS_SERVICE, SERVICE_NAME

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "mcp-authz"


def _archive() -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = b'{"revision": "r1", "roots": ["mcp"]}'
        info = tarfile.TarInfo(".manifest")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buffer.getvalue()).decode()


ALL_ON: dict[str, Any] = {
    "image": {"digest": "sha256:" + "a" * 64},
    "policy": {"source": "configMap", "configMap": {"archiveBase64": _archive()},
               "signingKeySecret": {"name": "bundle-signing", "key": "public.pem",
                                    "keyId": "prod"}},
    "identity": {
        "issuers": [{"issuer": "https://idp.corp.example", "jwksSecret": {"name": "idp-jwks"},
                     "algorithms": ["RS256"], "claims": {"tenant": "org"}},
                    {"issuer": "https://login.other.example",
                     "jwks_url": "https://login.other.example/jwks"}],
        "approval": {"issuer": "https://approvals.corp.example",
                     "jwksSecret": {"name": "approval-jwks", "key": "jwks.json"}},
    },
    "tls": {"caSecret": {"name": "corp-ca", "key": "ca.crt"}},
    "config": {"decision_log": {"mask": ["tool.arguments.password"], "drop": ["context.debug"]},
               "metrics": {"per_tenant_labels": True}},
    "autoscaling": {"enabled": True, "maxReplicas": 20},
    "podDisruptionBudget": {"enabled": True, "minAvailable": 2},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "networkPolicy": {"enabled": True,
                      "gateways": [{"podSelector": {"app.kubernetes.io/name": "agentgateway"},
                                    "namespaceSelector": {"kubernetes.io/metadata.name": "gw"}}],
                      "metricsFrom": [{"podSelector": {"app": "prometheus"}}]},
}
URL_SOURCE = {"policy": {"source": "url", "url": "https://bundles.corp.example/mcp.tar.gz",
                         "urlTokenSecret": {"name": "bundle-token", "key": "token"}},
              "tls": {"caSecret": {"name": "corp-ca", "key": "ca.crt"}}}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(str(CHART)) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> dict[str, list[Any]]:
    """Rendered manifests by kind, schema-checked the way `helm install` checks them."""
    chart.validate_schema(values or {})
    manifests = chart.render(values or {}, name="authz", namespace="mcp", is_install=True)
    by_kind: dict[str, list[Any]] = {}
    for name, text in manifests.items():
        if name.endswith(".txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                by_kind.setdefault(document["kind"], []).append(document)
    return by_kind


def container(by_kind: dict[str, list[Any]]) -> dict[str, Any]:
    [deployment] = by_kind["Deployment"]
    [main] = deployment["spec"]["template"]["spec"]["containers"]
    return main


def service_config(by_kind: dict[str, list[Any]], tmp_path: Path) -> Any:
    [configmap] = [c for c in by_kind["ConfigMap"] if "config.yaml" in c.get("data", {})]
    path = tmp_path / "config.yaml"
    path.write_text(configmap["data"]["config.yaml"])
    return load_config(str(path), environ={})


@pytest.mark.parametrize("values", [None, ALL_ON], ids=["defaults", "all-on"])
def test_chart_lints_clean(values: dict[str, Any] | None) -> None:
    report = helm.lint(str(CHART), values, strict=True, namespace="mcp")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == []


@pytest.mark.requirement("hardened-deployment")
@pytest.mark.parametrize("values", [None, ALL_ON, URL_SOURCE], ids=["defaults", "all-on", "url"])
def test_every_rendering_is_hardened_and_probed(chart: helm.Chart,
                                                values: dict[str, Any] | None) -> None:
    by_kind = render(chart, values)
    [deployment] = by_kind["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    main = container(by_kind)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = main["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["runAsNonRoot"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert set(main["resources"]) == {"requests", "limits"}
    assert main["resources"]["limits"]["memory"]
    grpc_port = next(p["containerPort"] for p in main["ports"] if p["name"] == "grpc")
    assert main["readinessProbe"]["grpc"] == {"port": grpc_port, "service": SERVICE_NAME}
    assert main["livenessProbe"]["grpc"] == {"port": grpc_port, "service": LIVENESS_SERVICE}
    assert pod["terminationGracePeriodSeconds"] >= 10
    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    [service] = by_kind["Service"]
    assert {p["name"] for p in service["spec"]["ports"]} == {"grpc", "metrics"}
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget"} <= set(by_kind)


@pytest.mark.parametrize("values", [None, ALL_ON, URL_SOURCE], ids=["defaults", "all-on", "url"])
def test_rendered_config_is_accepted_by_the_service(chart: helm.Chart, tmp_path: Path,
                                                    values: dict[str, Any] | None) -> None:
    config = service_config(render(chart, values), tmp_path)
    assert config.server.listen == "0.0.0.0:50051"
    assert config.metrics.listen == "0.0.0.0:9090" and config.metrics.enabled


def test_all_optional_features_render_with_their_secret_mounts(chart: helm.Chart,
                                                               tmp_path: Path) -> None:
    by_kind = render(chart, ALL_ON)
    assert {"ServiceMonitor", "NetworkPolicy"} <= set(by_kind)
    [monitor] = by_kind["ServiceMonitor"]
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    [netpol] = by_kind["NetworkPolicy"]
    grpc_rule, metrics_rule = netpol["spec"]["ingress"]
    assert grpc_rule["from"] == [{
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "agentgateway"}},
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gw"}}}]
    assert grpc_rule["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    assert metrics_rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    [pdb] = by_kind["PodDisruptionBudget"]
    assert pdb["spec"] == {"minAvailable": 2, "selector": pdb["spec"]["selector"]}
    main = container(by_kind)
    assert main["image"] == "ghcr.io/mcp-authz/mcp-authz@sha256:" + "a" * 64
    [deployment] = by_kind["Deployment"]
    secrets = {v["secret"]["secretName"] for v in deployment["spec"]["template"]["spec"]["volumes"]
               if "secret" in v}
    assert secrets == {"idp-jwks", "approval-jwks", "bundle-signing", "corp-ca"}
    mounts = {m["mountPath"] for m in main["volumeMounts"]}
    config = service_config(by_kind, tmp_path)
    assert config.identity.issuers[0].jwks_file == "/etc/mcp-authz/jwks/0/jwks.json"
    assert config.identity.issuers[1].jwks_ca_file == "/etc/mcp-authz/ca/ca.crt"
    assert config.identity.approval.jwks_file == "/etc/mcp-authz/approval/jwks.json"
    assert config.policy.bundle == "/etc/mcp-authz/bundle/bundle.tar.gz"
    assert config.policy.signing.public_key_file == "/etc/mcp-authz/signing/public.pem"
    for path in ("/etc/mcp-authz/jwks/0", "/etc/mcp-authz/approval", "/etc/mcp-authz/bundle",
                 "/etc/mcp-authz/signing", "/etc/mcp-authz/ca"):
        assert path in mounts
    assert config.decision_log.drop == ("context.debug",)
    [bundle] = [c for c in by_kind["ConfigMap"] if "binaryData" in c]
    assert bundle["binaryData"]["bundle.tar.gz"] == ALL_ON["policy"]["configMap"]["archiveBase64"]


def with_value(path: str, value: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    node = values
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return values


BAD_VALUES = [
    ("securityContext.readOnlyRootFilesystem", False, "readOnlyRootFilesystem"),
    ("securityContext.allowPrivilegeEscalation", True, "allowPrivilegeEscalation"),
    ("podSecurityContext.runAsNonRoot", False, "runAsNonRoot"),
    ("replicaCount", 0, "replicaCount"),
    ("ports.grpc", 70000, "grpc"),
    ("policy.source", "s3", "source"),
    ("image.digest", "latest", "digest"),
    ("config.decision_log.sink", "syslog", "sink"),
    ("config.metrics.per_tenant_labels", "yes", "per_tenant_labels"),
    ("config.server.max_workerz", 4, "max_workerz"),
    ("logLevel", "LOUD", "logLevel"),
]


@pytest.mark.parametrize("path,value,named", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_values_are_rejected_with_a_message_naming_them(
        chart: helm.Chart, path: str, value: Any, named: str) -> None:
    with pytest.raises(helm.HelmError) as caught:
        chart.validate_schema(with_value(path, value))
    assert named in str(caught.value)


@pytest.mark.parametrize("values,named", [
    ({"policy": {"source": "url"}}, "url"),
    ({"policy": {"source": "configMap"}}, "configMap"),
    ({"networkPolicy": {"enabled": True}}, "gateways"),
    ({"networkPolicy": {"enabled": True, "gateways": [{"podSelector": {}}]}}, "podSelector"),
    ({"identity": {"issuers": []}}, "issuers"),
], ids=["url-without-url", "configmap-without-archive", "netpol-without-gateways",
        "netpol-admitting-every-pod", "no-issuer"])
def test_values_that_cannot_work_together_are_rejected(
        chart: helm.Chart, values: dict[str, Any], named: str) -> None:
    merged = copy.deepcopy(values)
    with pytest.raises(helm.HelmError) as caught:
        chart.validate_schema(merged)
    assert named in str(caught.value)


def test_render_refuses_values_the_schema_rejects(chart: helm.Chart) -> None:
    """Rendering goes through the same schema check as `helm install`."""
    with pytest.raises(helm.HelmError, match="readOnlyRootFilesystem"):
        chart.render(with_value("securityContext.readOnlyRootFilesystem", False), name="authz")


def test_dockerfile_is_what_the_chart_runs() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    stages = [line for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert len(stages) == 2  # build stage, then a clean runtime stage
    final = dockerfile[dockerfile.rindex("FROM "):]
    assert "USER 10001:10001" in final
    assert "grpcio-tools" not in final and "gcc" not in final
    assert "scripts/gen_proto.py" in dockerfile
    assert values["podSecurityContext"]["runAsUser"] == 10001
    assert 'ENTRYPOINT ["mcp-authz"]' in final
    assert "COPY --from=build /app/policies /app/policies" in final


TLS_ON: dict[str, Any] = {
    "tls": {"server": {"secretName": "authz-grpc-tls",
                       "allowedClientIdentities": ["spiffe://mesh.local/ns/gw/sa/agentgateway"]},
            "metrics": {"secretName": "authz-ops-tls"}},
    "serviceMonitor": {"enabled": True},
}


@pytest.mark.requirement("authenticated-callers")
def test_tls_from_secrets_is_mounted_configured_and_probed_over_the_ops_port(
        chart: helm.Chart, tmp_path: Path) -> None:
    from pki import Authority  # real certificates, so the service accepts the rendered config

    report = helm.lint(str(CHART), TLS_ON, strict=True, namespace="mcp")
    assert report["errors"] == [] and not [m for m in report["messages"] if m["severity"] >= 2]
    by_kind = render(chart, TLS_ON)
    main = container(by_kind)
    [deployment] = by_kind["Deployment"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls-server"]["secret"] == {"secretName": "authz-grpc-tls", "items": [
        {"key": k, "path": k} for k in ("tls.crt", "tls.key", "ca.crt")]}
    assert volumes["tls-metrics"]["secret"]["secretName"] == "authz-ops-tls"
    mounts = {m["name"]: m for m in main["volumeMounts"]}
    assert all(mounts[n]["readOnly"] and "subPath" not in mounts[n]  # rotation reaches the pod
               for n in ("tls-server", "tls-metrics"))
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                        ("readinessProbe", "/readyz")):  # kubelet's gRPC probe has no TLS
        assert main[probe]["httpGet"] == {"path": path, "port": "metrics", "scheme": "HTTPS"}
    [monitor] = by_kind["ServiceMonitor"]
    assert monitor["spec"]["endpoints"][0]["scheme"] == "https"
    [configmap] = [c for c in by_kind["ConfigMap"] if "config.yaml" in c.get("data", {})]
    ca = Authority()
    for name in ("server", "metrics"):
        directory = tmp_path / name
        directory.mkdir()
        ca.write(directory)
        ca.server().write(directory, "tls")
    text = configmap["data"]["config.yaml"].replace("/etc/mcp-authz/tls", str(tmp_path))
    path = tmp_path / "config.yaml"
    path.write_text(text)
    config = load_config(str(path), environ={})
    assert config.server.tls is not None and config.server.tls.require_client_cert
    assert config.server.tls.allowed_client_identities == (
        "spiffe://mesh.local/ns/gw/sa/agentgateway",)
    assert config.server.tls.client_ca_file == str(tmp_path / "server" / "ca.crt")
    assert config.metrics.tls is not None and not config.metrics.tls.require_client_cert


def test_without_tls_the_probes_stay_grpc_and_nothing_is_mounted(chart: helm.Chart) -> None:
    main = container(render(chart))
    assert "grpc" in main["readinessProbe"]
    assert not {"tls-server", "tls-metrics"} & {m["name"] for m in main["volumeMounts"]}
