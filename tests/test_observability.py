"""Operations (issue 6): metrics scraped over HTTP, /healthz and /readyz, the decision log.

Everything runs for real: the App with its gRPC server and ops HTTP port on 127.0.0.1 ephemeral
ports, real keys and JWKS over HTTP, a real Rego bundle (tests/data/obs_bundle), real files,
pipes and /dev/full as log sinks.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from mcp_authz import engine, evalguard
from mcp_authz._pb.mcp.authz.v1 import authz_pb2 as pb
from mcp_authz._pb.mcp.authz.v1 import authz_pb2_grpc as pb_grpc
from mcp_authz.app import App
from mcp_authz.audit import DecisionLog, RotatingFileSink, StreamSink
from mcp_authz.bundles import load_bundle
from mcp_authz.config import DecisionLogConfig, MetricsConfig, load_config
from mcp_authz.engine import compile_bundle
from mcp_authz.errors import MCPAuthzError
from mcp_authz.evaluation import OfflineDecider
from mcp_authz.metrics import Metrics
from mcp_authz.model import DecisionRequest
from mcp_authz.server import LIVENESS_SERVICE, SERVICE_NAME
from support import RESOURCE, JsonServer, Keys, decide_request, wait_until, write_config

BUNDLE = Path(__file__).parent / "data" / "obs_bundle"
SECRET_ARGUMENT = "hunter2-correct-horse"


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, text = get(port, "/metrics")
    assert status == 200
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
           **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def health_status(port: int, service: str) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


@pytest.fixture
def start_app(tmp_path: Path, jwks_server: JsonServer) -> Iterator[Callable[..., App]]:
    apps: list[App] = []

    def start(bundle: Path = BUNDLE, **sections: Any) -> App:
        sections.setdefault("metrics", {}).setdefault("listen", "127.0.0.1:0")
        sections.setdefault("decision_log", {"sink": "file", "path": "decisions.log"})
        config = write_config(tmp_path, jwks_server.url("/jwks.json"),
                              jwks_server.url("/approval-jwks.json"), bundle=bundle, **sections)
        app = App(load_config(str(config)))
        apps.append(app)
        app.start()
        return app

    yield start
    for app in apps:
        app.stop(0)


def log_lines(app: App, count: int) -> list[dict[str, Any]]:
    assert app.decision_log is not None
    path = Path(app.config.path(app.config.decision_log.path))
    wait_until(lambda: app.decision_log.written >= count, f"{count} decision log lines")
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.requirement("metrics-scraped")
def test_metrics_parse_and_counters_move_with_decisions(start_app: Any, keys: Keys) -> None:
    app = start_app()
    assert app.monitoring is not None
    port = app.monitoring.port
    before = scrape(port)
    stub = pb_grpc.DecisionServiceStub(grpc.insecure_channel(f"127.0.0.1:{app.grpc.port}"))
    token = keys.token()
    assert stub.Decide(decide_request(token, tool="read_file")).allow
    assert not stub.Decide(decide_request(token, tool="no_such_tool")).allow
    assert not stub.Decide(decide_request("not-a-jwt", tool="read_file")).allow
    after = scrape(port)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    call = {"method": "tools/call"}
    assert moved("mcp_authz_decisions_total", result="allow", reason="none", **call) == 1
    assert moved("mcp_authz_decisions_total", result="deny", reason="tool_unknown", **call) == 1
    assert moved("mcp_authz_decisions_total", result="deny", reason="token_invalid", **call) == 1
    assert moved("mcp_authz_token_verification_failures_total", kind="bearer",
                 reason="token_invalid") == 1
    assert moved("mcp_authz_decision_duration_seconds_count", **call) == 3
    assert moved("mcp_authz_engine_duration_seconds_count", **call) == 2  # not for a bad token
    # two evaluations of the default policy cost CPU; a refused token costs the engine none
    assert 0 < moved("mcp_authz_engine_cpu_seconds_total") < 5
    assert sample(after, "mcp_authz_bundle_activations_total", outcome="success") == 1
    assert sample(after, "mcp_authz_policy_revision_info", revision="obs-1") == 1
    assert sample(after, "mcp_authz_policy_active") == 1
    assert 0 <= sample(after, "mcp_authz_bundle_seconds_since_last_activation") < 3600
    assert sample(after, "mcp_authz_requests_in_flight") == 0
    log_lines(app, 3)
    assert sample(scrape(port), "mcp_authz_decision_log_lines_total") == 3


def test_tenant_and_tool_labels_are_opt_in_and_bounded() -> None:
    metrics = Metrics(MetricsConfig(per_tenant_labels=True, per_tool_labels=True,
                                    max_label_values=2))
    decider = OfflineDecider(str(BUNDLE))
    decider.path.add_observer(metrics)
    for i in range(5):
        decider.decide(DecisionRequest(method="tools/call", tenant=f"t{i}",
                                       server_resource=RESOURCE, tool_name=f"tool{i}"),
                       claims={"sub": "alice", "tenant": "t0"})
    tenants = {s.labels["tenant"] for f in metrics.registry.collect() for s in f.samples
               if f.name == "mcp_authz_decisions"}
    assert tenants == {"t0", "t1", "other"}
    default = Metrics(MetricsConfig())
    decider.path.add_observer(default)
    decider.decide(DecisionRequest(method="tools/call", tenant="t9", server_resource=RESOURCE,
                                   tool_name="tool9"), claims={"sub": "alice", "tenant": "t9"})
    [labels] = [set(s.labels) for f in default.registry.collect() for s in f.samples
                if s.name == "mcp_authz_decisions_total"]
    assert labels == {"result", "reason", "method"}


@pytest.mark.requirement("readiness-follows-policy")
def test_readyz_follows_policy_state_and_matches_grpc_health(
        start_app: Any, tmp_path: Path) -> None:
    app = start_app(bundle=tmp_path / "not-there-yet")
    port = app.monitoring.port
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    serving = health_pb2.HealthCheckResponse.SERVING
    assert get(port, "/healthz") == (200, "ok\n")
    assert get(port, "/readyz") == (503, "not ready: no active policy\n")
    assert health_status(app.grpc.port, SERVICE_NAME) == not_serving
    assert health_status(app.grpc.port, LIVENESS_SERVICE) == serving

    app.store.activate_path(str(BUNDLE))
    assert get(port, "/readyz") == (200, "ready\n")
    assert health_status(app.grpc.port, SERVICE_NAME) == serving

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "policy.rego").write_text("package mcp.authz\ndecision := \n")
    with pytest.raises(Exception, match="policy.rego"):
        app.store.activate_path(str(broken))
    samples = scrape(port)
    assert sample(samples, "mcp_authz_bundle_activations_total", outcome="failure") == 2
    assert get(port, "/readyz")[0] == 200  # the previous revision keeps serving

    app.grpc.health.shutting_down()  # what App.stop does first, before draining
    assert get(port, "/readyz") == (503, "not ready: shutting down\n")
    assert health_status(app.grpc.port, SERVICE_NAME) == not_serving


@pytest.mark.requirement("decision-log-fields")
def test_decision_log_line_explains_the_decision(start_app: Any, keys: Keys) -> None:
    app = start_app()
    stub = pb_grpc.DecisionServiceStub(grpc.insecure_channel(f"127.0.0.1:{app.grpc.port}"))
    request = decide_request(keys.token(), tool="read_file", arguments={"path": "/a.txt"},
                             client=pb.ClientRef(id="claude-desktop"), session_id="s-1")
    decision = stub.Decide(request)
    [line] = log_lines(app, 1)
    assert line["decision_id"] == decision.decision_id
    assert line["request_id"] == request.request_id
    assert line["timestamp"].endswith("Z") and line["timestamp"][:4].isdigit()
    assert line["policy_revision"] == "obs-1"
    assert (line["tenant"], line["subject_id"], line["client_id"]) == (
        "acme", "alice", "claude-desktop")
    assert line["server"] == {"id": "files", "resource": RESOURCE}
    assert (line["method"], line["tool"], line["session_id"]) == ("tools/call", "read_file", "s-1")
    assert line["input"]["tool"]["arguments"] == {"path": "/a.txt"}
    assert line["result"] == {"allow": True, "reasons": [],
                              "obligations": [{"type": "audit", "params": {"level": "info"}}]}
    assert line["latency_ms"]["total"] >= line["latency_ms"]["engine"] > 0
    assert line["input"]["subject"]["claims"] == "<masked>"  # the policy's log_mask
    assert line["masked"] == ["context.internal", "subject.claims"]


@pytest.mark.requirement("tokens-never-logged")
def test_no_token_in_the_log_even_when_copied_into_every_field(
        start_app: Any, keys: Keys) -> None:
    app = start_app()
    stub = pb_grpc.DecisionServiceStub(grpc.insecure_channel(f"127.0.0.1:{app.grpc.port}"))
    token = keys.token()
    approval = keys.approval_token("bob", "0" * 64)
    other_user = keys.token(sub="mallory")  # any JWT-shaped string is masked too
    everywhere = {"copy": token, token: "as a key", "approval": approval,
                  "nested": [{"deep": f"Bearer {token}"}], "other": other_user}

    def request(resource: str) -> pb.DecideRequest:
        r = decide_request(token, tool=token, arguments=everywhere, tenant=token,
                           resource=resource, resource_uri=token, session_id=token,
                           request_id=token, approval_tokens=[approval, token],
                           client=pb.ClientRef(id=token, name=token, version=token),
                           prompt=pb.PromptRef(name=token))
        r.server.id = token
        r.context.update(everywhere)
        r.prompt.arguments.update(everywhere)
        return r

    assert not stub.Decide(request(RESOURCE)).allow  # identity passes: the input holds copies
    assert not stub.Decide(request(token)).allow  # audience mismatch: no input document
    lines = log_lines(app, 2)
    text = Path(app.config.path("decisions.log")).read_text()
    for secret in (token, approval, other_user, token.split(".")[1], approval.split(".")[2]):
        assert secret not in text
    assert lines[0]["input"]["context"]["copy"] == "<token>"
    assert lines[0]["input"]["context"]["nested"] == [{"deep": "Bearer <token>"}]
    assert lines[1]["input"] is None
    assert lines[1]["result"]["reasons"][0]["code"] == "audience_mismatch"


@pytest.mark.requirement("sensitive-arguments-masked")
def test_masked_and_dropped_paths_are_absent(start_app: Any, keys: Keys) -> None:
    app = start_app(decision_log={"sink": "file", "path": "decisions.log",
                                  "mask": ["context.*.password"]})
    stub = pb_grpc.DecisionServiceStub(grpc.insecure_channel(f"127.0.0.1:{app.grpc.port}"))
    request = decide_request(keys.token(), tool="vault_read",
                             arguments={"secret": SECRET_ARGUMENT})
    request.context.update({"internal": {"note": "drop-me-please"},
                            "db": {"password": "pa55word-in-context", "host": "db1"}})
    assert stub.Decide(request).allow
    [line] = log_lines(app, 1)
    text = Path(app.config.path("decisions.log")).read_text()
    for value in (SECRET_ARGUMENT, "drop-me-please", "pa55word-in-context"):
        assert value not in text
    assert line["input"]["tool"]["arguments"] == "<masked>"  # catalog: sensitive: true
    assert "internal" not in line["input"]["context"]  # the policy's log_mask drop
    assert line["input"]["context"]["db"] == {"password": "<masked>", "host": "db1"}
    assert line["masked"] == ["context.*.password", "context.internal", "subject.claims",
                              "tool.arguments"]


class _NoPolicy:
    def active(self) -> None:
        return None


def test_log_mask_unreadable_masks_every_caller_value() -> None:
    decider = OfflineDecider(str(BUNDLE))
    capture = DecisionLog(DecisionLogConfig(), _NoPolicy(), StreamSink())
    records: list[Any] = []
    decider.path.add_observer(type("R", (), {"observe": lambda self, r: records.append(r)})())
    decider.decide(DecisionRequest(method="tools/call", tenant="acme", server_resource=RESOURCE,
                                   tool_name="read_file", tool_arguments={"q": "x"},
                                   context={"k": "v"}),
                   claims={"sub": "alice", "tenant": "acme"})
    entry = capture.entry(records[0])  # the revision that decided is no longer active
    assert entry["input"]["tool"]["arguments"] == "<masked>"
    assert entry["input"]["context"] == "<masked>"
    unmasked = DecisionLog(DecisionLogConfig(policy_masks=False), _NoPolicy(), StreamSink())
    assert unmasked.entry(records[0])["input"]["tool"]["arguments"] == {"q": "x"}


@pytest.mark.requirement("log-never-blocks-decisions")
def test_queue_overflow_drops_and_counts_lines_and_no_decision_fails() -> None:
    read_fd, write_fd = os.pipe()  # nobody reads until the end: the writer blocks on a full pipe
    metrics = Metrics(MetricsConfig())
    decision_log = DecisionLog(DecisionLogConfig(queue_size=2), _NoPolicy(),
                               StreamSink(os.fdopen(write_fd, "w", encoding="utf-8")), metrics)
    decision_log.start()
    decider = OfflineDecider(str(BUNDLE))
    decider.path.add_observer(decision_log)
    request = DecisionRequest(method="tools/call", tenant="acme", server_resource=RESOURCE,
                              tool_name="read_file", tool_arguments={"blob": "x" * 8000})
    total = 100
    outcomes = [decider.decide(request, claims={"sub": "alice", "tenant": "acme"})
                for _ in range(total)]
    assert all(o.decision.allow for o in outcomes)
    assert decision_log.dropped > 0
    counted = sum(s.value for f in metrics.registry.collect() for s in f.samples
                  if s.name == "mcp_authz_decision_log_dropped_total"
                  and s.labels == {"reason": "queue_full"})
    assert counted == decision_log.dropped

    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(_read_all(read_fd)))
    reader.start()
    decision_log.stop(5)
    reader.join(10)
    lines = b"".join(received).decode().splitlines()
    assert len(lines) + decision_log.dropped == total
    assert all(json.loads(line)["result"]["allow"] for line in lines)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


@pytest.mark.requirement("log-never-blocks-decisions")
def test_write_errors_are_counted_and_warned_not_raised(
        caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics(MetricsConfig())
    decision_log = DecisionLog(DecisionLogConfig(), _NoPolicy(),
                               RotatingFileSink("/dev/full", 1024, 1), metrics)
    decision_log.start()
    decider = OfflineDecider(str(BUNDLE))
    decider.path.add_observer(decision_log)
    with caplog.at_level(logging.WARNING, logger="mcp_authz.audit"):
        outcome = decider.decide(DecisionRequest(method="tools/call", tenant="acme",
                                                 server_resource=RESOURCE, tool_name="read_file"),
                                 claims={"sub": "alice", "tenant": "acme"})
        wait_until(lambda: decision_log.write_errors, "a write error")
        decision_log.stop(1)
    assert outcome.decision.allow
    assert decision_log.dropped == 1 and decision_log.written == 0
    assert "decision log: write failed (No space left on device)" in caplog.text
    assert metrics.log_dropped_total.labels("write_error")._value.get() == 1


def test_file_sink_rotates_by_size_and_keeps_bounded_backups(tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    sink = RotatingFileSink(str(path), max_bytes=100, backups=2)
    for i in range(10):
        sink.write([f'{{"n": {i}, "pad": "{"x" * 40}"}}\n'])
    sink.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["d.log", "d.log.1", "d.log.2"]
    assert all(p.stat().st_size <= 100 for p in tmp_path.iterdir())
    kept = [[json.loads(line)["n"] for line in (tmp_path / name).read_text().splitlines()]
            for name in ("d.log", "d.log.1", "d.log.2")]
    assert kept == [[9], [8], [7]]  # 60-byte lines, 100-byte files: the oldest are gone


class _BadMask:
    """A policy source whose active policy answers log_mask with a shape the log refuses."""

    def __init__(self, decider: OfflineDecider):
        self._policy = decider.store.active()

    def active(self) -> Any:
        policy = self._policy

        class Wrapped:
            revision = policy.revision

            def evaluate_log_mask(self, input_json: str) -> Any:
                return {"mask": "tool.arguments"}  # a string, not a list

        return Wrapped()


def test_log_mask_rule_is_built_only_when_the_bundle_defines_it(tmp_path: Path) -> None:
    decider = OfflineDecider(str(BUNDLE))
    policy = decider.store.active()
    assert policy.log_mask_entrypoint == "mcp/authz/log_mask"
    assert policy.evaluate_log_mask("{}") == {"mask": ["subject.claims"],
                                              "drop": ["context.internal"]}
    plain = tmp_path / "plain"
    for source in BUNDLE.rglob("*"):
        if source.is_file():
            target = plain / source.relative_to(BUNDLE)
            target.parent.mkdir(parents=True, exist_ok=True)
            text = source.read_text()
            target.write_text(text.split("log_mask :=")[0] if source.suffix == ".rego" else text)
    without = OfflineDecider(str(plain)).store.active()
    assert without.log_mask_entrypoint is None and without.evaluate_log_mask("{}") is None


def test_a_malformed_log_mask_answer_masks_every_caller_value() -> None:
    decider = OfflineDecider(str(BUNDLE))
    records: list[Any] = []
    decider.path.add_observer(type("R", (), {"observe": lambda self, r: records.append(r)})())
    decider.decide(DecisionRequest(method="tools/call", tenant="acme", server_resource=RESOURCE,
                                   tool_name="read_file", prompt_arguments={"p": "y"},
                                   tool_arguments={"q": "x"}, context={"k": "v"}),
                   claims={"sub": "alice", "tenant": "acme"})
    entry = DecisionLog(DecisionLogConfig(), _BadMask(decider), StreamSink()).entry(records[0])
    assert entry["input"]["context"] == "<masked>"
    assert entry["input"]["tool"]["arguments"] == "<masked>"
    assert entry["input"]["prompt"]["arguments"] == "<masked>"


@pytest.mark.requirement("decision-log-stdout")
def test_serve_writes_only_decision_lines_to_stdout(tmp_path: Path, jwks_server: JsonServer,
                                                    keys: Keys) -> None:
    config = write_config(tmp_path, jwks_server.url("/jwks.json"),
                          jwks_server.url("/approval-jwks.json"), bundle=BUNDLE,
                          metrics={"listen": "127.0.0.1:0"})
    stderr_path = tmp_path / "stderr.log"
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "mcp_authz.cli", "serve", "--config", str(config)],
            stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        ports = wait_until(lambda: _ports(stderr_path.read_text()), "serve to start", 30)
        grpc_port, http_port = ports
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        decision = pb_grpc.DecisionServiceStub(channel).Decide(
            decide_request(keys.token(), tool="read_file"), timeout=10)
        channel.close()
        assert process.stdout is not None
        line = json.loads(process.stdout.readline())
        assert line["decision_id"] == decision.decision_id and line["result"]["allow"]
        assert get(http_port, "/readyz") == (200, "ready\n")
        assert sample(scrape(http_port), "mcp_authz_decisions_total", result="allow",
                      reason="none", method="tools/call") == 1
    finally:
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert rest == ""  # nothing but decision lines ever reaches stdout


def _ports(stderr: str) -> tuple[int, int] | None:
    grpc_match = re.search(r"listening on [\d.]+:(\d+)", stderr)
    http_match = re.search(r"metrics and health on http://[\d.]+:(\d+)", stderr)
    if grpc_match and http_match:
        return int(grpc_match.group(1)), int(http_match.group(1))
    return None


@pytest.mark.requirement("decision-log-fields")
def test_the_log_mask_is_evaluated_in_the_decisions_engine_task(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With the decision log on, a decision and its log_mask are one engine task (one input
    parse); the mask is used once, only for the same policy and input text."""
    policy = compile_bundle(load_bundle(BUNDLE).for_serving())
    tasks: list[list[str]] = []
    real = engine._queries
    monkeypatch.setattr(engine, "_queries",
                        lambda bundle, entrypoints, text: tasks.append(list(entrypoints))
                        or real(bundle, entrypoints, text))
    text = json.dumps({"tenant": "acme", "subject": {"tenant": "acme"},
                       "lookup": {"tool": {"scopes": []}}})
    other = json.dumps({"tenant": "acme", "subject": {"tenant": "evil"}})
    mask = {"mask": ["subject.claims"], "drop": ["context.internal"]}
    engine.prefetch_log_masks(True)
    try:
        assert policy.evaluate(text).allow
        assert policy.evaluate_log_mask(text) == mask  # from the decision's task
        assert policy.evaluate_log_mask(text) == mask  # used once: evaluated again
        assert policy.evaluate(text).allow
        assert policy.evaluate_log_mask(other) == mask  # another input: its own query
    finally:
        engine.prefetch_log_masks(False)
    decision, log_mask = "mcp/authz/decision", "mcp/authz/log_mask"
    assert tasks == [[decision, log_mask], [log_mask], [decision, log_mask], [log_mask]]


def test_a_failed_start_stops_what_it_had_started(tmp_path: Path, jwks_server: JsonServer
                                                  ) -> None:
    """The gRPC port is taken: the ops port and the evaluation guard (process-wide) that were
    already started are stopped again, so nothing of the failed App keeps running."""
    config = write_config(tmp_path, jwks_server.url("/jwks.json"),
                          jwks_server.url("/approval-jwks.json"), bundle=BUNDLE,
                          metrics={"listen": "127.0.0.1:0"}, decision_log={"enabled": False})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = App(load_config(str(config)), listen=f"127.0.0.1:{port}")
        with pytest.raises(MCPAuthzError, match=f"cannot bind 127.0.0.1:{port}"):
            app.start()
    assert app.monitoring is not None
    with pytest.raises(OSError):  # the ops port was closed again
        urllib.request.urlopen(f"http://127.0.0.1:{app.monitoring.port}/healthz", timeout=5)
    caller = threading.current_thread().name  # no guard left installed: evaluated right here
    assert evalguard.run(lambda: threading.current_thread().name) == caller
