"""Evaluations run on the process's engine threads, bounded in time: regopy has no timeout.

A regopy evaluation is one C++ call that cannot be interrupted. The guard (docs/limits.md):

- runs every evaluation on one of ``server.engine_threads`` dedicated threads (workers.py picks
  the count: the cores divided among the workers). regopy releases the GIL while it evaluates,
  so request threads evaluating themselves oversubscribe the cores, and each evaluation starts
  on a thread that has just woken up, which costs 15-55 % more CPU than back to back (make
  bench's engine_paused row). Measured under load, one worker decided 216-249 calls/s that
  way and 347-426 with its engine thread kept busy. The hand-off is a queue and a future;
  when the service is idle it costs CPU instead (scripts/bench_eval_guard.py);
- lets a call wait for an engine thread only within its deadline: past it the caller gets
  DEADLINE_EXCEEDED naming ``server.engine_threads``, and the queued evaluation is cancelled;
- once an evaluation has started, waits at most ``limits.max_evaluation_ms`` (or what is left of
  the deadline): past that the request is denied with ``policy_error`` naming the limit and the
  evaluation is abandoned to finish on its own;
- registers every evaluation with a watchdog (a dict write). One still running after
  ``limits.evaluation_abort_ms`` means a stuck engine: the watchdog logs it and ends the
  process with ``EXIT_EVALUATION_STUCK``. Calls in flight on it fail with UNAVAILABLE at the
  caller (never an allow) and the worker supervisor starts a fresh worker.

The guard is process-wide (``install``), like the watchdog's remedy. The engine calls ``run``
for every query; with no guard installed (tools, tests) that is a direct call.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any, TypeVar

from .config import LimitsConfig
from .errors import DeadlineExceeded, PolicyError

log = logging.getLogger(__name__)

T = TypeVar("T")
#: The exit status of a worker whose evaluation passed ``limits.evaluation_abort_ms``.
EXIT_EVALUATION_STUCK = 75
_NO_DEADLINE = 1e9  # grpc reports a call without a deadline as one about 10**9 s away


class EvaluationTimeout(PolicyError):
    """An evaluation passed its bound; the request is denied with this message."""


_call = threading.local()


@contextmanager
def call_deadline(seconds: float, source: str) -> Iterator[None]:
    """Within this block, the call on this thread must be decided within ``seconds`` from now;
    ``source`` names where that deadline came from (for the DEADLINE_EXCEEDED message)."""
    previous = getattr(_call, "deadline", None), getattr(_call, "source", "")
    _call.deadline, _call.source = time.monotonic() + seconds, source
    try:
        yield
    finally:
        _call.deadline, _call.source = previous


def check_deadline() -> None:
    """DeadlineExceeded when this thread's call deadline has passed."""
    deadline = getattr(_call, "deadline", None)
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlineExceeded(f"{_call.source} passed before the call was decided")


def remaining(seconds: float | None) -> float | None:
    """grpc's ``time_remaining()`` as seconds, or None when the call carries no deadline."""
    return None if seconds is None or seconds >= _NO_DEADLINE else seconds


def exit_worker(message: str) -> None:
    """The watchdog's default remedy: log, flush, and end the process at once."""
    log.critical("%s; exiting (status %d) so that a fresh worker takes over", message,
                 EXIT_EVALUATION_STUCK)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_EVALUATION_STUCK)


class EvaluationGuard:
    """Runs and bounds every evaluation of this process; a lifecycle component (the engine
    threads and the watchdog thread)."""

    def __init__(self, limits: LimitsConfig, engine_threads: int,
                 abort: Callable[[str], None] = exit_worker,
                 clock: Callable[[], float] = time.monotonic):
        self._max_seconds = limits.max_evaluation_ms / 1000
        self._max_ms = limits.max_evaluation_ms
        self._abort_ms = limits.evaluation_abort_ms
        self._abort = abort
        self._clock = clock
        self._pool = futures.ThreadPoolExecutor(max_workers=engine_threads,
                                                thread_name_prefix="engine")
        self._running: dict[int, float] = {}
        self._ids = itertools.count()
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self.timeouts = 0

    def run(self, query: Callable[..., T], *args: Any) -> T:
        """``query(*args)`` on an engine thread, bounded; its CPU is charged to this thread."""
        started = threading.Event()
        future = self._pool.submit(self._watched, started, query, args)
        deadline = getattr(_call, "deadline", None)
        wait = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        if not started.wait(wait) and future.cancel():
            raise DeadlineExceeded(f"{_call.source} passed while waiting for an evaluation "
                                   "slot (server.engine_threads)")
        bound = self._max_seconds
        if deadline is not None:
            bound = max(min(bound, deadline - time.monotonic()), 0.0)
        try:
            value, cpu = future.result(bound)
        except futures.TimeoutError:
            self.timeouts += 1
            limit = ("limits.max_evaluation_ms" if bound >= self._max_seconds
                     else "the call's deadline")
            raise EvaluationTimeout(f"evaluation exceeded {limit} ({self._max_ms} ms)") from None
        _charge(cpu)
        return value

    def _watched(self, started: threading.Event, query: Callable[..., T],
                 args: tuple[Any, ...]) -> tuple[T, float]:
        """``query(*args)``, watched; with the CPU time it took on this thread."""
        key = next(self._ids)
        self._running[key] = self._clock()
        started.set()
        cpu = time.thread_time()
        try:
            return query(*args), time.thread_time() - cpu
        finally:
            del self._running[key]

    def longest_ms(self) -> float:
        """How long the oldest evaluation still running has run, in ms (0 when none is)."""
        starts = list(self._running.values())
        return (self._clock() - min(starts)) * 1000 if starts else 0.0

    def start(self) -> None:
        """Install this guard for the process and start its watchdog."""
        install(self)
        self._stop.clear()
        self._watchdog = threading.Thread(target=self._watch, name="evaluation-watchdog",
                                          daemon=True)
        self._watchdog.start()

    def stop(self, grace: float = 0.0) -> None:
        if _installed is self:
            install(None)
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join(1.0)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _watch(self) -> None:
        interval = min(max(self._abort_ms / 10_000, 0.01), 1.0)
        while not self._stop.wait(interval):
            longest = self.longest_ms()
            if longest > self._abort_ms:
                self._abort(f"an evaluation has run for {longest:.0f} ms, past "
                            f"limits.evaluation_abort_ms ({self._abort_ms})")
                return


def engine_cpu_taken() -> float:
    """CPU seconds evaluations spent for this thread's calls since the last take (then 0).

    Counted on the engine thread that evaluated, so the metric says what the engine itself
    costs next to the service's CPU as a whole."""
    spent = getattr(_call, "engine_cpu", 0.0)
    _call.engine_cpu = 0.0
    return spent


def _charge(seconds: float) -> None:
    _call.engine_cpu = getattr(_call, "engine_cpu", 0.0) + seconds


_installed: EvaluationGuard | None = None


def install(guard: EvaluationGuard | None) -> None:
    """Make ``guard`` bound every evaluation in this process (None: unbounded)."""
    global _installed
    _installed = guard


def run(query: Callable[..., T], *args: Any) -> T:
    """The engine's entry: ``query(*args)`` through the installed guard, if any."""
    guard = _installed
    if guard is not None:
        return guard.run(query, *args)
    started = time.thread_time()
    try:
        return query(*args)
    finally:
        _charge(time.thread_time() - started)
