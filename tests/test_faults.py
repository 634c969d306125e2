"""Faults the service survives, each on real parts: the JWKS endpoint down, the bundle server down
or serving garbage, the decision log's disk full, SIGTERM under load, a stuck evaluation, and a
worker killed with SIGKILL under load. In every case no answer is an allow that the policy would
not give, and the service recovers on its own."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from bundle_support import BundleServer, revision_archive
from worker_support import WorkerGroup, worker_group

from mcp_authz._pb.mcp.authz.v1 import authz_pb2 as pb
from mcp_authz._pb.mcp.authz.v1 import authz_pb2_grpc as pb_grpc
from mcp_authz.app import App
from mcp_authz.config import load_config
from mcp_authz.evalguard import EXIT_EVALUATION_STUCK
from support import JsonServer, Keys, decide_request, running_service, wait_until, write_config

requirement = pytest.mark.requirement
SLOW_BUNDLE = Path(__file__).parent / "data" / "slow_bundle"
READ = {"path": "/srv/mcp/acme/reports/q3.txt"}
SECOND = 250_000  # slow bundle `spin` units for about a second


def reader(keys: Keys) -> str:
    return keys.token(scopes=("files:read",), roles=("analyst",))


def one_call(target: str, request: pb.DecideRequest, timeout: float = 10) -> str:
    """One Decide on a new connection: "allow", "deny" or the status code's name."""
    with grpc.insecure_channel(target) as channel:
        try:
            decision = pb_grpc.DecisionServiceStub(channel).Decide(request, timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code().name
    return "allow" if decision.allow else "deny"


class Load:
    """``callers`` threads calling until stopped; every outcome is recorded with its time."""

    def __init__(self, call: Callable[[], str], callers: int = 4):
        self.outcomes: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(call,)) for _ in range(callers)]

    def _run(self, call: Callable[[], str]) -> None:
        while not self._stop.is_set():
            self.outcomes.append((time.monotonic(), call()))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def kinds(self) -> set[str]:
        return {outcome for _, outcome in self.outcomes}


# --- identity provider down ---------------------------------------------------------------


@requirement("jwks-outage-bounded")
def test_jwks_down_cached_keys_serve_until_max_stale_then_a_clear_deny(
        tmp_path: Path, keys: Keys) -> None:
    idp = JsonServer()
    idp.documents["/jwks.json"] = keys.user_jwks()
    idp.documents["/approval-jwks.json"] = keys.approval_jwks()
    config = write_config(tmp_path, idp.url("/jwks.json"), idp.url("/approval-jwks.json"),
                          identity={"token_cache_seconds": 0.5})
    text = config.read_text().replace("jwks_min_refresh_seconds: 0",
                                      "jwks_min_refresh_seconds: 0\n    jwks_cache_seconds: 1"
                                      "\n    jwks_max_stale_seconds: 3")
    config.write_text(text)
    try:
        with running_service(config) as svc:
            token = reader(keys)
            fetched = time.monotonic()
            assert svc.stub.Decide(decide_request(token, "read_file", READ)).allow
            idp.down = True
            time.sleep(1.2)  # the key set is past jwks_cache_seconds, the endpoint answers 503
            assert svc.stub.Decide(decide_request(token, "read_file", READ)).allow
            assert svc.stub.Decide(decide_request(reader(keys), "read_file", READ)).allow
            time.sleep(max(3.2 - (time.monotonic() - fetched), 0))  # past jwks_max_stale
            denied = svc.stub.Decide(decide_request(token, "read_file", READ))
            assert not denied.allow
            assert [(r.code, r.message) for r in denied.reasons] == [(
                "token_invalid", f"signing keys unavailable: no current key set from "
                                 f"{idp.url('/jwks.json')}")]
            idp.down = False  # the provider is back: the next call refreshes and verifies
            assert svc.stub.Decide(decide_request(token, "read_file", READ)).allow
    finally:
        idp.close()


# --- bundle server down or serving garbage -------------------------------------------------


@requirement("last-good-bundle-serves")
def test_bundle_server_down_then_serving_garbage_keeps_the_last_good_revision(
        tmp_path: Path, jwks_server: JsonServer, keys: Keys) -> None:
    """On a running service polling every 0.1 s: the server goes down, then serves a tarball
    that is not one, then a truncated one; rev-2 answers throughout; rev-3 is then picked up."""
    bundles = BundleServer()
    bundles.publish(revision_archive(2))  # revision 2 allows tool "x"
    config = write_config(tmp_path, jwks_server.url("/jwks.json"),
                          jwks_server.url("/approval-jwks.json"),
                          policy={"bundle": bundles.url, "poll_interval_seconds": 0.1,
                                  "backoff_max_seconds": 0.2, "poll_jitter": 0,
                                  "persist_dir": str(tmp_path / "persist")},
                          metrics={"enabled": False}, decision_log={"enabled": False})
    app = App(load_config(str(config)))
    app.start()
    target = f"127.0.0.1:{app.grpc.port}"
    token = keys.token()
    try:
        with Load(lambda: one_call(target, decide_request(token, "x")), callers=2) as load:
            assert one_call(target, decide_request(token, "x")) == "allow"
            bundles.down = True
            wait_until(lambda: app.source.counters.failures >= 3, "polls against a down server")
            bundles.down = False
            good = revision_archive(3)
            for garbage in (b"this is not a tarball", good[: len(good) // 2]):
                rejected = app.source.counters.rejected
                bundles.publish(garbage)
                wait_until(lambda r=rejected: app.source.counters.rejected > r,
                           "the garbage to be rejected")
                status = app.store.status()
                assert status.active_revision == "rev-2" and status.last_error
            bundles.publish(good)
            wait_until(lambda: app.store.status().active_revision == "rev-3", "rev-3")
        assert one_call(target, decide_request(token, "x")) == "deny"  # rev-3 denies "x"
    finally:
        app.stop(0)
        bundles.close()
    during = [outcome for _, outcome in load.outcomes]
    assert during.count("allow") >= 5 and set(during) <= {"allow", "deny"}


# --- decision log disk full ----------------------------------------------------------------


def _private_tmpfs(mountpoint: Path, size: str) -> tuple[str, ...]:
    """A command prefix that runs the command with a tiny tmpfs at ``mountpoint`` in a private
    mount namespace, or () when namespaces are not available here."""
    unshare = shutil.which("unshare")
    probe = [unshare or "unshare", "--user", "--map-root-user", "--mount", "true"]
    if not unshare or subprocess.run(probe, capture_output=True).returncode != 0:
        return ()
    script = f'mount -t tmpfs -o size={size} tmpfs "{mountpoint}" && exec "$@"'
    return (unshare, "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh")


@requirement("log-never-blocks-decisions")
def test_a_full_disk_for_the_decision_log_drops_and_counts_lines_and_decisions_go_on(
        tmp_path: Path, jwks_server: JsonServer, keys: Keys) -> None:
    mountpoint = tmp_path / "logs"
    mountpoint.mkdir()
    prefix = _private_tmpfs(mountpoint, "24k")
    log_path = str(mountpoint / "decisions.log") if prefix else "/dev/full"
    config = write_config(tmp_path, jwks_server.url("/jwks.json"),
                          jwks_server.url("/approval-jwks.json"),
                          decision_log={"sink": "file", "path": log_path, "max_bytes": 10**6},
                          metrics={"listen": "127.0.0.1:0"})
    with worker_group(config, 1, tmp_path, prefix=prefix) as service:
        token = reader(keys)
        answers = [one_call(service.target, decide_request(token, "read_file", READ))
                   for _ in range(60)]

        def dropped() -> float:
            return sum(v for (name, labels), v in service.metrics().items()
                       if name == "mcp_authz_decision_log_dropped_total"
                       and ("reason", "write_error") in labels)

        wait_until(dropped, "dropped lines to be counted")
        written = sum(v for (name, _), v in service.metrics().items()
                      if name == "mcp_authz_decision_log_lines_total")
        assert "decision log: write failed (No space left on device)" in service.stderr()
    assert answers == ["allow"] * 60
    if prefix:  # the tmpfs took some lines before it filled up
        assert written > 0


# --- SIGTERM under load --------------------------------------------------------------------


@requirement("graceful-shutdown")
def test_sigterm_under_load_finishes_in_flight_calls_and_refuses_new_ones(
        tmp_path: Path, jwks_server: JsonServer, keys: Keys) -> None:
    config = write_config(tmp_path, jwks_server.url("/jwks.json"),
                          jwks_server.url("/approval-jwks.json"), bundle=SLOW_BUNDLE,
                          server={"grace_seconds": 20}, metrics={"enabled": False},
                          decision_log={"enabled": False},
                          limits={"max_evaluation_ms": 8000})  # the 2 s evaluations may finish
    token = keys.token()
    with worker_group(config, 1, tmp_path) as service:
        results: list[str] = []
        slow = [threading.Thread(target=lambda: results.append(one_call(
            service.target, decide_request(token, "t", {"spin": 2 * SECOND}), 30)))
            for _ in range(3)]
        for thread in slow:
            thread.start()
        time.sleep(0.5)  # all three are in flight (evaluating, or queued for an engine thread)
        started = time.monotonic()
        service.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        refused = one_call(service.target, decide_request(token, "t", {"spin": 0}), 5)
        refused_after = time.monotonic() - started
        for thread in slow:
            thread.join(30)
        code = service.process.wait(30)
    assert results == ["allow"] * 3  # the in-flight calls got their decisions
    assert refused == "UNAVAILABLE" and refused_after < 5  # refused at once, not queued
    assert code == 0 and "draining" in service.stderr()


# --- a stuck evaluation --------------------------------------------------------------------


@requirement("evaluation-time-bounded")
def test_a_stuck_evaluation_ends_its_worker_which_is_replaced_and_nothing_is_allowed(
        tmp_path: Path, jwks_server: JsonServer, keys: Keys) -> None:
    config = write_config(tmp_path, jwks_server.url("/jwks.json"),
                          jwks_server.url("/approval-jwks.json"), bundle=SLOW_BUNDLE,
                          limits={"max_evaluation_ms": 100, "evaluation_abort_ms": 400},
                          metrics={"enabled": False}, decision_log={"enabled": False})
    token = keys.token()
    with worker_group(config, 2, tmp_path) as service:
        outcome = one_call(service.target, decide_request(token, "t", {"spin": 20 * SECOND}), 30)
        wait_until(lambda: f"ended with exit code {EXIT_EVALUATION_STUCK}; restarting"
                   in service.stderr(), "the supervisor to see the stuck worker exit")
        wait_until(lambda: len([w for w in _workers(service) if w.serving]) == 2,
                   "both workers serving again")
        assert one_call(service.target, decide_request(token, "t", {"spin": 0})) == "allow"
        assert "past limits.evaluation_abort_ms (400)" in service.stderr()
    # denied at max_evaluation_ms (100), before the watchdog ended the worker at 400 ms
    assert outcome == "deny"


# --- a worker killed under load ------------------------------------------------------------


def _workers(group: WorkerGroup) -> list[pb.WorkerPolicy]:
    """The group's workers, or none while the connection lands on a dying worker."""
    try:
        return group.workers()
    except grpc.RpcError:
        return []


@pytest.fixture
def two_workers(tmp_path: Path, jwks_server: JsonServer) -> Iterator[WorkerGroup]:
    config = write_config(tmp_path, jwks_server.url("/jwks.json"),
                          jwks_server.url("/approval-jwks.json"),
                          metrics={"enabled": False}, decision_log={"enabled": False})
    with worker_group(config, 2, tmp_path) as group:
        yield group


@requirement("workers-crash-fails-closed")
def test_sigkill_under_load_never_allows_and_the_service_recovers(
        two_workers: WorkerGroup, keys: Keys, record_property: Any) -> None:
    """Load on new connections (as a gateway's pool opens them) asks for a call the default
    policy denies (no scope); one worker is SIGKILLed. Time to recover: from the kill to the
    replacement serving. (test_workers.py covers SIGSEGV and per-connection answers.)"""
    group = two_workers
    token = keys.token(scopes=(), roles=("analyst",))  # read_file needs files:read: deny
    victim = group.workers()[0].pid
    with Load(lambda: one_call(group.target, decide_request(token, "read_file", READ), 5),
              callers=4) as load:
        wait_until(lambda: len(load.outcomes) >= 20, "load")
        killed = time.monotonic()
        subprocess.run(["kill", "-KILL", str(victim)], check=True)
        wait_until(lambda: any(w.pid != victim and w.serving and w.index == 0
                               for w in _workers(group)), "the replacement worker", 60)
        recovered = time.monotonic() - killed
        settled = killed + recovered + 0.5
        wait_until(lambda: sum(at > settled for at, _ in load.outcomes) >= 20,
                   "load after the restart")
    record_property("recovery_seconds", round(recovered, 2))
    answers = [outcome for _, outcome in load.outcomes]
    print(f"\nrecovered {recovered:.2f}s after SIGKILL; {len(answers)} calls: "
          f"{ {kind: answers.count(kind) for kind in set(answers)} }")
    after = [outcome for at, outcome in load.outcomes if at > settled]
    assert "allow" not in answers
    assert set(answers) <= {"deny", "UNAVAILABLE", "DEADLINE_EXCEEDED"}
    assert after and set(after) == {"deny"}  # recovered: every call answered again
    assert "ended with signal SIGKILL; restarting" in group.stderr()
