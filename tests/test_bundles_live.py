"""Live bundles: an HTTP bundle server on loopback that changes what it serves, ETags, backoff,
persistence across a restart with the server down, hot reload under concurrent load, and shadow
evaluation of a candidate bundle on the same live requests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from bundle_support import (
    BundleServer,
    policy_files,
    revision_archive,
    revision_files,
    write_tree,
)

from mcp_authz._pb.mcp.authz.v1 import authz_pb2 as pb
from mcp_authz._pb.mcp.authz.v1 import authz_pb2_grpc as pb_grpc
from mcp_authz.activation import PolicyStore
from mcp_authz.app import App
from mcp_authz.bundlewriter import write_archive
from mcp_authz.config import PolicyConfig, load_config
from mcp_authz.decisions import DecisionRecord
from mcp_authz.model import Decision, DecisionRequest, Obligation
from mcp_authz.shadow import ShadowEvaluator, shadow_from_config
from mcp_authz.sources import HttpBundleSource
from support import Keys, decide_request, running_service, wait_until, write_config

ENTRYPOINT = "mcp/authz/decision"


@pytest.fixture
def bundle_server() -> Iterator[BundleServer]:
    server = BundleServer(token="bundle-token-1")
    yield server
    server.close()


def http_source(store: PolicyStore, server: BundleServer, tmp_path: Path,
                **options: Any) -> HttpBundleSource:
    token_file = tmp_path / "bundle-token"
    token_file.write_text("bundle-token-1\n")
    return HttpBundleSource(store, server.url,
                            PolicyConfig(bearer_token_file=str(token_file), **options),
                            persist_dir=str(tmp_path / "persist"))


def revision(store: PolicyStore) -> str:
    policy = store.active()
    return policy.revision if policy else ""


@pytest.mark.requirement("bundle-http-etag")
def test_http_source_picks_up_each_revision_and_honours_etags(
        bundle_server: BundleServer, tmp_path: Path) -> None:
    store = PolicyStore(ENTRYPOINT)
    source = http_source(store, bundle_server, tmp_path)
    bundle_server.publish(revision_archive(1))
    source.start()
    try:
        assert revision(store) == "rev-1" and bundle_server.ok == 1
        for _ in range(3):  # unchanged: a 304 each time, nothing downloaded or activated
            assert source.poll()
        assert (bundle_server.ok, bundle_server.not_modified) == (1, 3)
        assert source.counters.activations == 1 and source.counters.not_modified == 3
        bundle_server.publish(revision_archive(2))
        source.poll()
        assert revision(store) == "rev-2" and bundle_server.ok == 2
        bundle_server.publish(revision_archive(1))  # roll back by publishing the older revision
        source.poll()
        assert revision(store) == "rev-1"
        assert store.status().previous_revision == "rev-2"
        assert bundle_server.unauthorized == 0
    finally:
        source.stop(1)


@pytest.mark.requirement("bundle-http-etag")
def test_poller_thread_follows_the_server(bundle_server: BundleServer, tmp_path: Path) -> None:
    store = PolicyStore(ENTRYPOINT)
    source = http_source(store, bundle_server, tmp_path, poll_interval_seconds=0.02,
                         backoff_max_seconds=0.1)
    bundle_server.publish(revision_archive(1))
    source.start()
    try:
        for n in (2, 3, 4):
            bundle_server.publish(revision_archive(n))
            wait_until(lambda n=n: revision(store) == f"rev-{n}")
        wait_until(lambda: bundle_server.not_modified >= 2)
        assert bundle_server.ok == 4  # one download per revision, however often it polled
    finally:
        source.stop(1)


@pytest.mark.requirement("bundle-refusals")
def test_bad_download_is_rejected_once_and_previous_revision_serves(
        bundle_server: BundleServer, tmp_path: Path) -> None:
    store = PolicyStore(ENTRYPOINT)
    source = http_source(store, bundle_server, tmp_path)
    bundle_server.publish(revision_archive(2))
    source.start()
    try:
        broken = {**revision_files(3), "mcp/authz/policy.rego": b"package mcp.authz\n\nx := {\n"}
        bundle_server.publish(write_archive(broken))
        source.poll()
        assert revision(store) == "rev-2"
        assert store.status().last_error.startswith(f"{bundle_server.url}: mcp/authz/policy.rego:")
        source.poll()  # the same bad bundle is not downloaded again
        assert source.counters.rejected == 1 and bundle_server.not_modified == 1
    finally:
        source.stop(1)


def test_failures_back_off_exponentially_with_jitter(bundle_server: BundleServer,
                                                     tmp_path: Path) -> None:
    store = PolicyStore(ENTRYPOINT)
    source = HttpBundleSource(store, bundle_server.url, PolicyConfig(
        poll_interval_seconds=1, poll_jitter=0.1, backoff_max_seconds=5), rand=lambda: 1.0)
    assert source.next_delay() == pytest.approx(1.1)  # +10% jitter at rand=1
    delays = []
    for _ in range(4):
        assert not source.poll()  # no bearer token: the server answers 401
        delays.append(source.next_delay())
    assert delays == pytest.approx([2.2, 4.4, 5.5, 5.5])
    assert bundle_server.unauthorized == 4 and source.counters.failures == 4
    bundle_server.token = ""
    bundle_server.publish(revision_archive(2))
    assert source.poll() and source.next_delay() == pytest.approx(1.1)
    assert revision(store) == "rev-2"


@pytest.fixture
def live_config(tmp_path: Path, jwks_server: Any, bundle_server: BundleServer) -> Path:
    token_file = tmp_path / "bundle-token"
    token_file.write_text("bundle-token-1")
    return write_config(
        tmp_path, jwks_server.url("/jwks.json"), jwks_server.url("/approval-jwks.json"),
        policy={"bundle": bundle_server.url, "persist_dir": str(tmp_path / "persist"),
                "bearer_token_file": str(token_file), "poll_interval_seconds": 60},
        metrics={"enabled": False}, decision_log={"enabled": False})


def decide(port: int, token: str, tool: str = "x") -> pb.Decision:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return pb_grpc.DecisionServiceStub(channel).Decide(decide_request(token, tool=tool),
                                                           timeout=10)


@pytest.mark.requirement("bundle-persistence")
def test_restart_with_bundle_server_down_serves_persisted_revision(
        live_config: Path, bundle_server: BundleServer, keys: Keys) -> None:
    config = load_config(str(live_config))
    bundle_server.publish(revision_archive(3))
    app = App(config, listen="127.0.0.1:0")
    app.start()
    try:
        assert decide(app.grpc.port, keys.token()).policy_revision == "rev-3"
    finally:
        app.stop(0)
    bundle_server.down = True
    restarted = App(config, listen="127.0.0.1:0")
    restarted.start()
    try:
        answer = decide(restarted.grpc.port, keys.token())
        assert (answer.policy_revision, answer.allow) == ("rev-3", False)  # 3 is odd: deny
        assert restarted.source.counters.failures == 1
        with grpc.insecure_channel(f"127.0.0.1:{restarted.grpc.port}") as channel:
            status = pb_grpc.DecisionServiceStub(channel).GetPolicyStatus(
                pb.GetPolicyStatusRequest(), timeout=10)
        assert status.active_revision == "rev-3" and status.source.endswith("bundle.tar.gz")
    finally:
        restarted.stop(0)


@pytest.mark.requirement("hot-reload-under-load")
def test_hot_reload_under_load_no_failed_call_and_consistent_revisions(
        config_path: Path, bundle_server: BundleServer, keys: Keys, tmp_path: Path) -> None:
    """Four callers decide continuously while six revisions are published; revision N allows
    tool x exactly when N is even, so each answer must match the revision it reports."""
    token = keys.token()
    answers: list[tuple[str, bool]] = []
    errors: list[str] = []
    stop = threading.Event()
    with running_service(config_path, activate=False) as svc:
        source = http_source(svc.store, bundle_server, tmp_path)
        bundle_server.publish(revision_archive(1))
        source.start()

        def caller() -> None:
            with grpc.insecure_channel(svc.target) as channel:
                stub = pb_grpc.DecisionServiceStub(channel)
                while not stop.is_set():
                    try:
                        answer = stub.Decide(decide_request(token, tool="x"), timeout=10)
                        answers.append((answer.policy_revision, answer.allow))
                    except grpc.RpcError as exc:
                        errors.append(f"{exc.code()}: {exc.details()}")

        threads = [threading.Thread(target=caller) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            for n in range(2, 8):
                bundle_server.publish(revision_archive(n))
                source.poll()
                seen = len(answers)
                wait_until(lambda n=n, seen=seen: any(
                    r == f"rev-{n}" for r, _ in answers[seen:]))
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
            source.stop(1)
    assert errors == []
    assert {r for r, _ in answers} >= {f"rev-{n}" for n in range(2, 8)}
    inconsistent = [(r, allow) for r, allow in answers if allow != (int(r[4:]) % 2 == 0)]
    assert inconsistent == [] and len(answers) > 12


# --- shadow evaluation -------------------------------------------------------------------------


@pytest.mark.requirement("shadow-evaluation")
def test_shadow_counts_and_records_every_disagreement_without_changing_answers(
        tmp_path: Path, jwks_server: Any, keys: Keys, caplog: pytest.LogCaptureFixture) -> None:
    live = write_tree(tmp_path / "live", revision_files(2))  # allows x, audit basic
    candidate = write_tree(tmp_path / "candidate",
                           policy_files("cand-1", allow_x=False))  # denies x
    config_path = write_config(
        tmp_path, jwks_server.url("/jwks.json"), jwks_server.url("/approval-jwks.json"),
        bundle=live, policy={"shadow": {"bundle": str(candidate)}})
    shadow = shadow_from_config(load_config(str(config_path)))
    assert shadow is not None
    shadow.start()
    try:
        with running_service(config_path) as svc:
            svc.path.add_observer(shadow)
            token = keys.token()
            flipped = svc.stub.Decide(decide_request(token, tool="x"), timeout=10)
            same = svc.stub.Decide(decide_request(token, tool="y"), timeout=10)
            refused = svc.stub.Decide(decide_request("garbage", tool="x"), timeout=10)
            assert shadow.drain(10)
    finally:
        shadow.stop(1)
    # live answers are the live revision's, untouched
    assert (flipped.allow, flipped.policy_revision) == (True, "rev-2")
    assert (same.allow, same.reasons[0].code) == (False, "tool_unknown")
    assert refused.reasons[0].code == "token_invalid"  # decided before the policy: not compared
    counters = shadow.counters
    assert (counters.evaluated, counters.agreements, counters.disagreements) == (2, 1, 1)
    assert (counters.allow_flips, counters.reason_changes, counters.obligation_changes) == (1, 1, 1)
    [found] = shadow.recent()
    assert found.decision_id == flipped.decision_id
    assert (found.live_revision, found.shadow_revision) == ("rev-2", "cand-1")
    assert found.live.allow and not found.shadow.allow
    assert found.shadow.reasons == ("tool_unknown",)
    line = next(r.getMessage() for r in caplog.records if "shadow disagreement" in r.getMessage())
    assert flipped.decision_id in line and '"shadow_revision": "cand-1"' in line
    assert token not in line


@pytest.mark.requirement("shadow-evaluation")
def test_shadow_obligation_only_change_and_bounded_queue() -> None:
    store = PolicyStore(ENTRYPOINT)
    store.activate_archive(write_archive(policy_files("cand-2", True, audit="full")), "cand")
    shadow = ShadowEvaluator(store, queue_size=2)
    live = Decision("d-1", "r-1", True, (), (Obligation("audit", {"level": "basic"}),), "rev-2", 0)
    found = shadow.compare(live, {"tool": {"name": "x"}})
    assert found is not None and found.kinds == ("obligations",)
    assert shadow.counters.allow_flips == 0 and shadow.counters.obligation_changes == 1
    # not started: the queue fills and further records are dropped, never waited for
    record = DecisionRecord(DecisionRequest("tools/call", "acme", "r"), live,
                            {"tool": {"name": "x"}}, None, 0.0, 0.0)
    for _ in range(5):
        shadow.observe(record)
    assert shadow.counters.dropped == 3
