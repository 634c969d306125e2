"""Shadow evaluation: a candidate bundle decides the same live requests, off the request path.

``ShadowEvaluator`` is a ``DecisionObserver``: for each live decision that reached the policy,
it queues the input document (bounded; when full the record is dropped and counted, never
waited for). A worker thread evaluates the input on the candidate's active revision and
compares: an allow flip, a different list of reason codes or different obligations is a
disagreement. Each one is counted, kept in a bounded list of recent ones and logged as one line
with the decision id, both revisions and both results (never the input, which may hold
arguments). The live answer is never touched.

The candidate has its own ``PolicyStore`` (same entrypoint and signature checks as live) fed by
its own source; the candidate's keyed lookups are resolved again from its own data.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .activation import PolicyStore
from .config import Config
from .decisions import DecisionRecord, encode_input
from .engine import CompiledPolicy, PolicyResult
from .errors import PolicyError
from .model import Decision
from .sources import HttpBundleSource, LocalBundleSource, bundle_source, policy_store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What a policy answered, in the terms a disagreement is judged by."""

    allow: bool
    reasons: tuple[str, ...]
    obligations: tuple[str, ...]

    @classmethod
    def of(cls, result: Decision | PolicyResult) -> Outcome:
        return cls(result.allow, tuple(r.code for r in result.reasons),
                   tuple(json.dumps({"type": o.type, "params": o.params}, sort_keys=True,
                                    default=str) for o in result.obligations))

    def to_log(self) -> dict[str, Any]:
        return {"allow": self.allow, "reasons": list(self.reasons),
                "obligations": [json.loads(o) for o in self.obligations]}


@dataclass(frozen=True)
class Disagreement:
    decision_id: str
    live_revision: str
    shadow_revision: str
    live: Outcome
    shadow: Outcome
    kinds: tuple[str, ...]  # "allow", "reasons", "obligations"


@dataclass
class ShadowCounters:
    """Plain counters for metrics (only the worker writes them, except ``dropped``)."""

    evaluated: int = 0
    agreements: int = 0
    disagreements: int = 0
    allow_flips: int = 0
    reason_changes: int = 0
    obligation_changes: int = 0
    dropped: int = 0  # the queue was full
    skipped: int = 0  # no candidate revision active yet
    errors: int = 0  # the candidate could not decide (counted as a policy_error deny too)


class ShadowEvaluator:
    """A ``DecisionObserver`` comparing live decisions with a candidate policy's."""

    def __init__(self, store: PolicyStore, queue_size: int = 1000, recent: int = 100,
                 source: LocalBundleSource | HttpBundleSource | None = None):
        self.store = store
        self.source = source
        self.counters = ShadowCounters()
        self._queue: queue.Queue[tuple[Decision, Mapping[str, Any]] | None] = queue.Queue(
            maxsize=queue_size)
        self._recent: deque[Disagreement] = deque(maxlen=recent)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._thread: threading.Thread | None = None

    def observe(self, record: DecisionRecord) -> None:
        """Called on the request path: O(1), never blocks."""
        if record.input is None:
            return  # decided before the policy (token refused): nothing to compare
        with self._lock:
            self._pending += 1
        try:
            self._queue.put_nowait((record.decision, record.input))
        except queue.Full:
            self.counters.dropped += 1
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    def recent(self) -> list[Disagreement]:
        """The latest disagreements, oldest first."""
        with self._lock:
            return list(self._recent)

    def start(self) -> None:
        if self.source is not None:
            self.source.start()
        self._thread = threading.Thread(target=self._run, name="shadow-evaluator", daemon=True)
        self._thread.start()

    def stop(self, grace: float = 1.0) -> None:
        if self.source is not None:
            self.source.stop(grace)
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass  # the worker is busy: it is a daemon thread and ends with the process
        if self._thread is not None:
            self._thread.join(grace)

    def drain(self, timeout: float) -> bool:
        """Wait until every queued record is compared (tests, shutdown); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self.compare(*item)
            except Exception:  # the worker must survive anything; live answers are unaffected
                self.counters.errors += 1
                log.exception("shadow evaluation failed")
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def compare(self, decision: Decision, document: Mapping[str, Any]) -> Disagreement | None:
        """Evaluate ``document`` on the candidate and record any disagreement with ``decision``."""
        policy = self.store.active()
        if policy is None:
            self.counters.skipped += 1
            return None
        shadow = self._evaluate(policy, document)
        live = Outcome.of(decision)
        self.counters.evaluated += 1
        kinds = tuple(kind for kind, differs in (
            ("allow", live.allow != shadow.allow), ("reasons", live.reasons != shadow.reasons),
            ("obligations", live.obligations != shadow.obligations)) if differs)
        if not kinds:
            self.counters.agreements += 1
            return None
        found = Disagreement(decision.decision_id, decision.policy_revision, policy.revision,
                             live, shadow, kinds)
        self._record(found)
        return found

    def _evaluate(self, policy: CompiledPolicy, document: Mapping[str, Any]) -> Outcome:
        candidate = dict(document)
        candidate["lookup"] = policy.lookups(candidate)
        try:
            return Outcome.of(policy.evaluate(encode_input(candidate)))
        except PolicyError as exc:
            self.counters.errors += 1
            log.warning("shadow revision %s could not decide: %s", policy.revision, exc)
            return Outcome(False, ("policy_error",), ())

    def _record(self, found: Disagreement) -> None:
        counters = self.counters
        counters.disagreements += 1
        counters.allow_flips += "allow" in found.kinds
        counters.reason_changes += "reasons" in found.kinds
        counters.obligation_changes += "obligations" in found.kinds
        with self._lock:
            self._recent.append(found)
        log.warning("shadow disagreement %s", json.dumps({
            "decision_id": found.decision_id, "differs": list(found.kinds),
            "live_revision": found.live_revision, "shadow_revision": found.shadow_revision,
            "live": found.live.to_log(), "shadow": found.shadow.to_log()}, sort_keys=True))


def shadow_from_config(config: Config) -> ShadowEvaluator | None:
    """The shadow evaluator for ``policy.shadow`` (None when not configured), with its source:
    same entrypoint, limits and signing key as live; never persisted."""
    shadow = config.policy.shadow
    if shadow is None:
        return None
    store = policy_store(config)
    source = bundle_source(store, shadow.bundle, config, persist=False, name="shadow bundle")
    return ShadowEvaluator(store, shadow.queue_size, shadow.recent_disagreements, source)
