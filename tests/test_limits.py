"""Limits on a real gRPC server: evaluation time, call deadlines, concurrency (no unbounded
queue), message size, tool count; each reported with the limit's name when hit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from mcp_authz._pb.mcp.authz.v1 import authz_pb2 as pb
from mcp_authz.config import LimitsConfig
from mcp_authz.decisions import DecisionRecord
from mcp_authz.evalguard import EvaluationGuard, EvaluationTimeout
from mcp_authz.workers import engine_threads
from support import (
    JsonServer,
    Keys,
    Service,
    decide_request,
    running_service,
    wait_until,
    write_config,
)

requirement = pytest.mark.requirement
SLOW_BUNDLE = Path(__file__).parent / "data" / "slow_bundle"
SECOND = 250_000  # `spin` units the slow bundle needs for about a second (measured ~4 us each)


class Recorder:
    def __init__(self) -> None:
        self.request_ids: list[str] = []

    def observe(self, record: DecisionRecord) -> None:
        self.request_ids.append(record.request.request_id)


@pytest.fixture
def slow(tmp_path: Path, jwks_server: JsonServer, request: pytest.FixtureRequest
         ) -> Iterator[tuple[Service, Recorder]]:
    """A service on the slow bundle; ``@pytest.mark.parametrize`` may pass config sections."""
    sections: dict[str, Any] = getattr(request, "param", {})
    path = write_config(tmp_path, jwks_server.url("/jwks.json"),
                        jwks_server.url("/approval-jwks.json"), bundle=SLOW_BUNDLE, **sections)
    with running_service(path) as svc:
        recorder = Recorder()
        svc.path.add_observer(recorder)
        yield svc, recorder


def spin(keys: Keys, units: int, request_id: str = "", pad: int = 0) -> pb.DecideRequest:
    arguments: dict[str, Any] = {"spin": units}
    if pad:
        arguments["pad"] = "x" * pad
    return decide_request(keys.token(), "slow_tool", arguments,
                          **({"request_id": request_id} if request_id else {}))


@requirement("evaluation-time-bounded")
@pytest.mark.parametrize("slow", [{"limits": {"max_evaluation_ms": 200}}], indirect=True)
def test_an_evaluation_past_max_evaluation_ms_is_denied_naming_the_limit(
        slow: tuple[Service, Recorder], keys: Keys) -> None:
    svc, _ = slow
    aborts: list[str] = []
    guard = EvaluationGuard(svc.config.limits, engine_threads=2, abort=aborts.append)
    guard.start()
    try:
        fast = svc.stub.Decide(spin(keys, 0), timeout=30)
        decision = svc.stub.Decide(spin(keys, SECOND), timeout=30)  # 5x the bound
    finally:
        guard.stop()
    assert fast.allow  # the same request, quick: the policy allows it
    assert not decision.allow
    assert [(r.code, r.message) for r in decision.reasons] == [
        ("policy_error", "evaluation exceeded limits.max_evaluation_ms (200 ms)")]
    assert guard.timeouts == 1 and aborts == []


@requirement("evaluation-time-bounded")
def test_every_evaluation_runs_on_an_engine_thread_and_a_stuck_one_is_denied_then_aborted(
        ) -> None:
    """The watchdog's remedy (exit) is replaced here; tests/test_faults.py shows the real one."""
    limits = LimitsConfig(max_evaluation_ms=50, evaluation_abort_ms=100)
    fired = threading.Event()
    messages: list[str] = []
    guard = EvaluationGuard(limits, engine_threads=1,
                            abort=lambda message: (messages.append(message), fired.set()))
    guard.start()
    try:
        ran_on: list[str] = []

        def stuck() -> str:
            ran_on.append(threading.current_thread().name)
            fired.wait(10)  # an engine call that does not return until the watchdog fires
            return "finished"

        assert guard.run(lambda: "quick") == "quick"
        with pytest.raises(EvaluationTimeout) as info:
            guard.run(stuck)  # however small its input
        assert str(info.value) == "evaluation exceeded limits.max_evaluation_ms (50 ms)"
        assert fired.wait(10)
    finally:
        guard.stop()
    assert len(ran_on) == 1 and ran_on[0].startswith("engine") and guard.timeouts == 1
    assert len(messages) == 1 and "past limits.evaluation_abort_ms (100)" in messages[0]


@requirement("default-deadline")
@pytest.mark.parametrize("slow", [{"limits": {"default_deadline_ms": 300}}], indirect=True)
def test_a_call_without_a_deadline_gets_the_default_one(slow: tuple[Service, Recorder],
                                                        keys: Keys) -> None:
    svc, _ = slow
    assert svc.stub.Decide(spin(keys, 0)).allow
    with pytest.raises(grpc.RpcError) as info:
        svc.stub.Decide(spin(keys, SECOND))  # no client deadline
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert info.value.details() == (
        "limits.default_deadline_ms (300) passed before the call was decided")


@requirement("default-deadline")
@pytest.mark.parametrize("slow", [{"server": {"max_workers": 1},
                                   "limits": {"max_evaluation_ms": 5000}}], indirect=True)
def test_a_call_whose_deadline_passed_in_the_queue_is_never_decided(
        slow: tuple[Service, Recorder], keys: Keys) -> None:
    svc, recorder = slow
    guard = EvaluationGuard(svc.config.limits, engine_threads=1)
    guard.start()
    try:
        with futures.ThreadPoolExecutor(2) as pool:
            busy = pool.submit(svc.stub.Decide, spin(keys, SECOND, "busy"), timeout=30)
            # the one request thread is now waiting for "busy"'s evaluation
            wait_until(lambda: guard.longest_ms() > 0, "the busy evaluation to start")
            with pytest.raises(grpc.RpcError) as info:
                svc.stub.Decide(spin(keys, 0, "late"), timeout=0.3)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert busy.result().allow
    finally:
        guard.stop()
    svc.stub.Decide(spin(keys, 0, "after"), timeout=30)  # the queue has drained past "late"
    assert "late" not in recorder.request_ids and recorder.request_ids[-1] == "after"


@requirement("bounded-concurrency")
@pytest.mark.parametrize("slow", [{"server": {"max_workers": 1, "max_concurrent_requests": 2}}],
                         indirect=True)
def test_requests_past_max_concurrent_requests_are_refused_not_queued(
        slow: tuple[Service, Recorder], keys: Keys) -> None:
    """One running, one queued (grpc counts both), the third refused at once."""
    svc, recorder = slow
    with futures.ThreadPoolExecutor(2) as pool:
        running = [pool.submit(svc.stub.Decide, spin(keys, SECOND, f"in-{i}"), timeout=30)
                   for i in range(2)]
        time.sleep(0.3)
        with pytest.raises(grpc.RpcError) as info:
            svc.stub.Decide(spin(keys, 0, "third"), timeout=30)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert not running[1].done()  # the refusal did not wait for a slot
        assert all(f.result().allow for f in running)
    assert "third" not in recorder.request_ids


@pytest.mark.parametrize("slow", [{"server": {"max_message_bytes": 65536},
                                   "limits": {"max_tools": 3}}], indirect=True)
def test_message_size_and_tool_count_limits(slow: tuple[Service, Recorder], keys: Keys) -> None:
    svc, recorder = slow
    with pytest.raises(grpc.RpcError) as info:
        svc.stub.Decide(spin(keys, 0, pad=70000), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in info.value.details()
    listing = pb.FilterToolsRequest(bearer_token=keys.token(), tenant="acme",
                                    server=pb.ServerRef(resource=decide_request("").server.resource),
                                    tools=[pb.ToolDescriptor(name=f"t{i}") for i in range(4)])
    with pytest.raises(grpc.RpcError) as info:
        svc.stub.FilterTools(listing, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "tools: exceeds limits.max_tools (3)"
    assert recorder.request_ids == []


@requirement("engine-threads")
@pytest.mark.parametrize("slots", [1, 2])
def test_engine_threads_bound_the_evaluations_running_at_once(slots: int) -> None:
    guard = EvaluationGuard(LimitsConfig(), engine_threads=slots, abort=lambda message: None)
    running, most = [0], [0]
    lock = threading.Lock()

    def evaluation() -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    with futures.ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: guard.run(evaluation), range(12)))
    assert most[0] == slots


@requirement("engine-threads")
@pytest.mark.parametrize("slow", [{"server": {"engine_threads": 1},
                                   "limits": {"default_deadline_ms": 500,
                                              "max_evaluation_ms": 5000}}], indirect=True)
def test_a_call_waiting_for_an_evaluation_slot_past_its_deadline_is_not_decided(
        slow: tuple[Service, Recorder], keys: Keys) -> None:
    svc, recorder = slow
    guard = EvaluationGuard(svc.config.limits, engine_threads=engine_threads(svc.config, 1))
    guard.start()
    try:
        with futures.ThreadPoolExecutor(1) as pool:
            long = pool.submit(svc.stub.Decide, spin(keys, 2 * SECOND, "long"), timeout=60)
            wait_until(lambda: guard.longest_ms() > 0, "the long evaluation to start")
            with pytest.raises(grpc.RpcError) as info:
                svc.stub.Decide(spin(keys, 0, "queued"))  # the 500 ms default deadline applies
            assert long.result().allow
    finally:
        guard.stop()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert info.value.details() == ("limits.default_deadline_ms (500) passed while waiting for "
                                    "an evaluation slot (server.engine_threads)")
    assert recorder.request_ids == ["long"]  # the queued call was never decided
