"""Prometheus metrics: every metric the service exports is defined here, in one registry per App.

``Metrics`` is a ``DecisionObserver`` (decisions, latencies, token failures), a policy-store
listener (activations, active revision, last success), the decision log's ``LogCounters`` and
the source of the in-flight gauge the gRPC servicer wraps each RPC in.

Label cardinality is bounded: ``result`` and ``method`` are closed sets; ``reason`` is the
stable reason codes plus at most ``metrics.max_label_values`` policy-defined codes; ``tenant``
and ``tool`` labels exist only when ``metrics.per_tenant_labels`` / ``per_tool_labels`` are on,
and keep at most ``max_label_values`` distinct values each. Anything past a bound is ``other``.

Keeping the definitions here is what lets a multi-process server switch prometheus-client's
multiprocess mode on in one place. With workers (``Metrics(..., multiprocess=True)`` in each
worker, ``PROMETHEUS_MULTIPROC_DIR`` set by the supervisor), every worker writes its values to
files and the supervisor's ``group_registry`` sums them: counters and histograms add up, the
in-flight gauge is the sum over live workers, ``policy_active`` and the activation timestamp are
the minimum over live workers (1 only when every worker has a policy; the oldest activation),
``mcp_authz_policy_revision_info{revision}`` counts the live workers on each revision (an Info
metric cannot be shared between processes) and the seconds since the last activation are
computed by the supervisor at scrape time.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from .activation import PolicyStatus
from .config import MetricsConfig
from .decisions import TOOLS_LIST, DecisionRecord
from .model import REASON_CODES, SUPPORTED_METHODS

OTHER = "other"
NONE = "none"
REVISION_INFO = "mcp_authz_policy_revision_info"
LAST_ACTIVATION = "mcp_authz_bundle_last_activation_timestamp_seconds"
SINCE_ACTIVATION = "mcp_authz_bundle_seconds_since_last_activation"
SINCE_ACTIVATION_HELP = "Seconds since the last successful bundle activation (+Inf: never)."
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5)


class BoundedLabel:
    """Passes the first ``limit`` distinct values (besides ``known``) through; the rest are
    ``other``. A race may admit a value or two past the limit, never an unbounded number."""

    def __init__(self, limit: int, known: Iterable[str] = ()):
        self._known = frozenset(known)
        self._seen: set[str] = set()
        self._limit = limit
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._known or value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self._limit:
                self._seen.add(value)
                return value
        return OTHER


class Metrics:
    def __init__(self, config: MetricsConfig, clock: Callable[[], float] = time.time,
                 multiprocess: bool = False):
        self.registry = CollectorRegistry()
        self._clock = clock
        self._multiprocess = multiprocess
        self._revision_shown = ""
        self._last_success = 0.0
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._per_tenant = config.per_tenant_labels
        self._per_tool = config.per_tool_labels
        limit = config.max_label_values
        self._reason = BoundedLabel(limit, REASON_CODES)
        self._method = BoundedLabel(0, (*SUPPORTED_METHODS, TOOLS_LIST))
        self._tenant = BoundedLabel(limit)
        self._tool = BoundedLabel(limit)
        labels = ["result", "reason", "method"]
        labels += ["tenant"] * self._per_tenant + ["tool"] * self._per_tool
        r = self.registry
        self.decisions = Counter(
            "mcp_authz_decisions", "Decisions made, by result, primary reason code and method.",
            labels, registry=r)
        self.decision_seconds = Histogram(
            "mcp_authz_decision_duration_seconds",
            "Time to decide one request: token verification, input building and policy.",
            ["method"], buckets=LATENCY_BUCKETS, registry=r)
        self.engine_seconds = Histogram(
            "mcp_authz_engine_duration_seconds", "Time the Rego engine spent on one decision.",
            ["method"], buckets=LATENCY_BUCKETS, registry=r)
        self.engine_cpu = Counter(
            "mcp_authz_engine_cpu_seconds",
            "CPU time the Rego engine spent on decisions (input parse and evaluation), on the "
            "threads that evaluated. Against process_cpu_seconds_total: the service's share.",
            registry=r)
        self.token_failures = Counter(
            "mcp_authz_token_verification_failures",
            "Refused tokens, by kind (bearer or approval) and reason code.",
            ["kind", "reason"], registry=r)
        self.activations = Counter(
            "mcp_authz_bundle_activations",
            "Policy bundle activation attempts, by outcome (success or failure).",
            ["outcome"], registry=r)
        if multiprocess:
            self.revision_workers = Gauge(
                REVISION_INFO, "Live workers serving each policy bundle revision.",
                ["revision"], registry=r, multiprocess_mode="livesum")
        else:
            self.revision = Info(
                "mcp_authz_policy_revision", "The active policy bundle revision.", registry=r)
            self.since_success = Gauge(
                SINCE_ACTIVATION, SINCE_ACTIVATION_HELP, registry=r)
            self.since_success.set_function(self._seconds_since_success)
        self.last_success = Gauge(
            LAST_ACTIVATION, "Unix time of the last successful bundle activation (0: never).",
            registry=r, multiprocess_mode="livemin")
        self.policy_active = Gauge(
            "mcp_authz_policy_active", "1 while a policy is active, 0 otherwise.", registry=r,
            multiprocess_mode="livemin")
        self.log_lines_total = Counter(
            "mcp_authz_decision_log_lines", "Decision log lines written.", registry=r)
        self.log_dropped_total = Counter(
            "mcp_authz_decision_log_dropped",
            "Decision log lines dropped, by reason (queue_full, write_error, stopped).",
            ["reason"], registry=r)
        self.cache_lookups = Counter(
            "mcp_authz_decision_cache_lookups",
            "Decision cache use per evaluated decision: hit, miss or bypass (a policy that reads "
            "the time). Absent when the cache is off.", ["result"], registry=r)
        self.in_flight = Gauge(
            "mcp_authz_requests_in_flight", "gRPC requests being handled now.", registry=r,
            multiprocess_mode="livesum")
        for outcome in ("success", "failure"):
            self.activations.labels(outcome)
        for reason in ("queue_full", "write_error", "stopped"):
            self.log_dropped_total.labels(reason)

    # DecisionObserver
    def observe(self, record: DecisionRecord) -> None:
        request, decision = record.request, record.decision
        method = self._method(request.method)
        reason = self._reason(decision.primary_reason or NONE)
        labels = ["allow" if decision.allow else "deny", reason, method]
        if self._per_tenant:
            labels.append(self._tenant(request.tenant))
        if self._per_tool:
            labels.append(self._tool(request.tool_name or NONE))
        self._child(self.decisions, *labels).inc()
        self._child(self.decision_seconds, method).observe(record.total_seconds)
        if record.input is None:
            if record.subject is None:  # identity refused the bearer token
                self.token_failures.labels("bearer", reason).inc()
            return
        self._child(self.engine_seconds, method).observe(record.engine_seconds)
        if record.engine_cpu_seconds:
            self.engine_cpu.inc(record.engine_cpu_seconds)
        if record.cache:
            self._child(self.cache_lookups, record.cache).inc()
        for error in record.input.get("approval_errors") or ():
            code = error.get("code", "") if isinstance(error, dict) else ""
            self.token_failures.labels("approval", self._reason(code or OTHER)).inc()

    def _child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, remembered: prometheus-client validates and locks on every
        ``labels`` call, and these run on every decision. Label values are bounded
        (``max_label_values``), so is this dict; a race only asks prometheus twice for the same
        child."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    # PolicyStore listener
    def policy_changed(self, status: PolicyStatus, activated: bool) -> None:
        self.activations.labels("success" if activated else "failure").inc()
        self.track_status(status)

    def track_status(self, status: PolicyStatus) -> None:
        """Set the revision, activation time and active flag from a store status."""
        self.policy_active.set(1 if status.active_revision else 0)
        if status.active_revision:
            self._show_revision(status.active_revision)
            self._last_success = status.activated_at_ns / 1e9
            self.last_success.set(self._last_success)

    def _show_revision(self, revision: str) -> None:
        if not self._multiprocess:
            self.revision.info({"revision": revision})
            return
        if self._revision_shown and self._revision_shown != revision:
            self.revision_workers.labels(self._revision_shown).set(0)
        self.revision_workers.labels(revision).set(1)
        self._revision_shown = revision

    def _seconds_since_success(self) -> float:
        last = self._last_success
        return max(self._clock() - last, 0.0) if last else math.inf

    # LogCounters
    def log_written(self, lines: int) -> None:
        self.log_lines_total.inc(lines)

    def log_dropped(self, reason: str, lines: int) -> None:
        self.log_dropped_total.labels(reason).inc(lines)

    def rpc_in_flight(self) -> AbstractContextManager[Any]:
        """A context manager counting one RPC in flight (server.py wraps every RPC in it)."""
        return self.in_flight.track_inprogress()

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The registry in the format the scraper asked for: (body, content type)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class GroupMetrics:
    """The supervisor's view of a worker group's metrics: the sum of every worker's files."""

    def __init__(self, directory: str, clock: Callable[[], float] = time.time):
        self.registry = CollectorRegistry()
        self._collector = MultiProcessCollector(None, path=directory)
        self._clock = clock
        self.registry.register(self)

    def collect(self) -> Iterable[Metric]:
        metrics = list(self._collector.collect())
        last = next((s.value for m in metrics for s in m.samples if s.name == LAST_ACTIVATION),
                    0.0)
        since = GaugeMetricFamily(SINCE_ACTIVATION, SINCE_ACTIVATION_HELP)
        since.add_metric([], max(self._clock() - last, 0.0) if last else math.inf)
        return [*metrics, since]

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type
