"""``serve --workers 2``: one port, two processes, summed metrics, whole log lines, converging
revisions, and a worker that dies (SIGSEGV, SIGKILL) never turns into an allow."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from bundle_support import revision_files
from worker_support import WorkerGroup, worker_group

from mcp_authz._pb.mcp.authz.v1 import authz_pb2_grpc as pb_grpc
from mcp_authz.cpus import available_cpus
from support import JsonServer, Keys, decide_request, wait_until, write_config


def write_bundle(directory: Path, revision: int) -> None:
    """Revision N allows tool "x" exactly when N is even (bundle_support)."""
    for name, data in revision_files(revision).items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory, jwks_server: JsonServer
          ) -> Iterator[WorkerGroup]:
    tmp = tmp_path_factory.mktemp("workers")
    bundle = tmp / "bundle"
    write_bundle(bundle, 2)
    config = write_config(tmp, jwks_server.url("/jwks.json"),
                          jwks_server.url("/approval-jwks.json"), bundle=bundle,
                          policy={"watch": True, "watch_interval_seconds": 0.2},
                          metrics={"listen": "127.0.0.1:0"})
    with worker_group(config, 2, tmp) as running:
        running.bundle = bundle  # type: ignore[attr-defined]
        yield running


@pytest.mark.requirement("workers-metrics-summed")
def test_two_workers_share_the_port_and_metrics_and_log_lines_add_up(group: WorkerGroup,
                                                                     keys: Keys) -> None:
    workers = group.workers()
    assert sorted(w.index for w in workers) == [0, 1] and all(w.serving for w in workers)
    assert group.readyz() == 200
    before = group.metrics()
    stubs = group.stub_on_each_worker(2)
    sent = 0
    for count, (channel, stub) in zip((3, 5), stubs.values(), strict=True):
        for _ in range(count):
            decision = stub.Decide(decide_request(keys.token(), tool="x"), timeout=10)
            assert decision.allow and decision.policy_revision == "rev-2"
            sent += 1
        channel.close()
    after = wait_until(lambda: (m := group.metrics()) and _decisions(m) - _decisions(before)
                       == sent and m, "the summed decision counter")
    assert after[("mcp_authz_policy_revision_info", frozenset({("revision", "rev-2")}))] == 2
    assert after[("mcp_authz_policy_active", frozenset())] == 1
    lines = wait_until(lambda: len(group.stdout_lines) >= sent and group.log_entries(),
                       "a decision log line per decision")
    assert len(lines) == sent  # every line parsed: none split or interleaved
    assert {entry["policy_revision"] for entry in lines} == {"rev-2"}


def _decisions(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> float:
    return sum(v for (name, _), v in samples.items() if name == "mcp_authz_decisions_total")


@pytest.mark.requirement("workers-revision-consistency")
def test_every_worker_converges_on_a_new_revision_and_answers_match_it(
        group: WorkerGroup, keys: Keys) -> None:
    stubs = group.stub_on_each_worker(2)
    seen: list[tuple[str, bool]] = []
    token = keys.token()
    write_bundle(group.bundle, 3)  # type: ignore[attr-defined]  # revision 3 denies "x"

    def converged() -> bool:
        for _, stub in stubs.values():
            decision = stub.Decide(decide_request(token, tool="x"), timeout=10)
            seen.append((decision.policy_revision, decision.allow))
        return {w.active_revision for w in group.workers()} == {"rev-3"}

    wait_until(converged, "both workers on rev-3")
    for _, stub in stubs.values():
        decision = stub.Decide(decide_request(token, tool="x"), timeout=10)
        assert (decision.policy_revision, decision.allow) == ("rev-3", False)
    for revision, allow in seen:  # an answer always matches the revision that gave it
        assert allow == (int(revision.rpartition("-")[2]) % 2 == 0), (revision, allow)
    for channel, _ in stubs.values():
        channel.close()


@pytest.mark.requirement("engine-threads")
def test_the_cores_are_divided_among_the_workers_engines(group: WorkerGroup) -> None:
    each = max(1, available_cpus() // 2)
    threads = f"{each} engine thread" + ("s" if each > 1 else "")
    assert f"(2 worker processes, {threads} each)" in group.stderr()
    for worker in group.workers():  # each worker sizes its engine from the group's size
        argv = Path(f"/proc/{worker.pid}/cmdline").read_bytes().split(b"\0")
        assert argv[argv.index(b"--workers") + 1] == b"2"


@pytest.mark.requirement("workers-crash-fails-closed")
@pytest.mark.parametrize("signum", [signal.SIGSEGV, signal.SIGKILL])
def test_a_dead_worker_is_restarted_the_other_serves_and_nothing_is_allowed(
        group: WorkerGroup, keys: Keys, signum: int) -> None:
    """Callers send a request the current revision denies, on connections to both workers,
    while one worker is killed: every answer is a deny or an error, never an allow."""
    revision = group.status().active_revision
    assert revision == "rev-3"  # denies tool "x"
    stubs = group.stub_on_each_worker(2)
    victim, survivor = list(stubs)
    token = keys.token()
    answers: list[str] = []
    stop = threading.Event()

    def caller(stub: pb_grpc.DecisionServiceStub) -> None:
        while not stop.is_set():
            try:
                decision = stub.Decide(decide_request(token, tool="x"), timeout=5)
                answers.append("allow" if decision.allow else "deny")
            except grpc.RpcError as exc:
                answers.append(exc.code().name)

    threads = [threading.Thread(target=caller, args=(stub,)) for _, stub in stubs.values()]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(answers) >= 10, "load on both workers")
        os.kill(victim, signum)
        survivor_channel, survivor_stub = stubs[survivor]
        served = 0
        for _ in range(5):  # the other worker keeps answering meanwhile
            served += not survivor_stub.Decide(decide_request(token, tool="x"), timeout=5).allow
        assert served == 5
        restarted = wait_until(
            lambda: [w for w in group.workers() if w.pid not in stubs and w.serving],
            "the supervisor to restart the worker")
        assert len(restarted) == 1
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        for channel, _ in stubs.values():
            channel.close()
    assert "allow" not in answers
    assert answers.count("deny") >= 10
    assert set(answers) <= {"deny", "UNAVAILABLE", "DEADLINE_EXCEEDED"}
    name = signal.Signals(signum).name
    assert f"ended with signal {name}; restarting" in group.stderr()
    assert len(group.workers()) == 2
