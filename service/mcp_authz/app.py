"""The running service, assembled from the config: one lifecycle for every long-running part.

Each part (the gRPC server, the bundle watcher, and whatever else the config turns on) is a
``Component`` with ``start()`` and ``stop(grace)``. ``App.start`` starts them in order; ``App.stop``
first turns health to NOT_SERVING, then stops them in reverse order, so in-flight requests drain.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Protocol

import grpc

from .activation import PolicyStatus
from .adapters.components import adapter_components
from .audit import DecisionLog
from .config import Config
from .decision_cache import DecisionCache
from .decisions import DecisionPath
from .evalguard import EvaluationGuard
from .identity import build_verifiers
from .metrics import Metrics
from .monitoring import MonitoringServer
from .server import HealthReporter, create_server
from .shadow import shadow_from_config
from .sources import bundle_source, policy_store
from .tls import HttpTls
from .worker_state import WorkerBoard
from .workers import engine_threads

log = logging.getLogger(__name__)


class Component(Protocol):
    def start(self) -> None: ...

    def stop(self, grace: float) -> None: ...


class GrpcComponent:
    """The native DecisionService (with health and reflection) on ``server.listen``."""

    def __init__(self, app: App, listen: str | None):
        self._app = app
        self._listen = listen
        self.server: grpc.Server | None = None
        self.port = 0
        self.health: HealthReporter | None = None

    def start(self) -> None:
        metrics = self._app.metrics
        self.server, self.port, self.health = create_server(
            self._app.config, self._app.path, self._app.store, self._listen,
            in_flight=metrics.rpc_in_flight if metrics else contextlib.nullcontext,
            board=self._app.worker)

    def stop(self, grace: float) -> None:
        if self.server is not None:
            self.server.stop(grace).wait()


class App:
    """Everything ``mcp-authz serve`` runs, built from one validated config."""

    def __init__(self, config: Config, bundle: str | None = None, listen: str | None = None,
                 worker: WorkerBoard | None = None, workers: int = 1):
        self.config = config
        self.bundle = config.path(bundle or config.policy.bundle)
        #: set in a worker of a group (workers.py): its slot on the group's status board;
        #: ``workers`` is the group's size (it divides the cores among the workers' engines)
        self.worker = worker
        verifier, approvals = build_verifiers(config)
        self.store = policy_store(config)
        self.path = DecisionPath(self.store, verifier, approvals, config.limits,
                                 cache=DecisionCache.from_config(config.cache))
        self.grpc = GrpcComponent(self, listen)
        # the bundle source activates the first revision when it starts (after the gRPC server,
        # which answers NOT_SERVING / UNAVAILABLE until then), then watches or polls. A worker
        # binds its shared port only after its first activation, so the kernel never hands a
        # connection to a worker that is still compiling (a restarted one, say).
        self.source = bundle_source(self.store, self.bundle, config)
        self.components: list[Component] = (
            [self.grpc, self.source] if worker is None else [self.source, self.grpc])
        if worker is not None:
            self.store.on_change(self._publish)
        self.shadow = shadow_from_config(config)
        if self.shadow is not None:
            self.path.add_observer(self.shadow)
            self.components.append(self.shadow)
        self.metrics: Metrics | None = None
        self.monitoring: MonitoringServer | None = None
        self.decision_log: DecisionLog | None = None
        self._observability()
        # gateway protocols (ext_authz, ExtMcp, AuthZEN): after the native server and the bundle
        self.components.extend(adapter_components(self))
        # the evaluation-time bound: first to start, last to stop
        self.guard = EvaluationGuard(config.limits, engine_threads(config, workers))
        self.components.insert(0, self.guard)

    def _observability(self) -> None:
        """Metrics, the ops HTTP port and the decision log: started before the gRPC server and
        stopped after it, so the last drained decisions are still counted and written."""
        first: list[Component] = []
        if self.config.metrics.enabled:
            # in a worker group the supervisor serves the ops port, summing every worker's files
            self.metrics = Metrics(self.config.metrics, multiprocess=self.worker is not None)
            self.store.on_change(self.metrics.policy_changed)
            self.path.add_observer(self.metrics)
            if self.worker is None:
                self.monitoring = MonitoringServer(
                    self.config.metrics.listen, self.metrics, self.readiness,
                    tls=HttpTls.from_config(self.config.metrics.tls, self.config, "metrics"))
                first.append(self.monitoring)
        if self.config.decision_log.enabled:
            self.decision_log = DecisionLog.from_config(
                self.config, self.store, self.metrics,
                worker=self.worker.index if self.worker is not None else None)
            self.path.add_observer(self.decision_log)
            first.append(self.decision_log)
        self.components[:0] = first

    def readiness(self) -> str | None:
        """Why the service is not ready, or None: the gRPC health service's rule, in words."""
        health = self.grpc.health
        if health is not None and health.serving():
            return None
        if self.store.active() is None:
            return "no active policy"
        return "starting" if health is None else "shutting down"

    def _publish(self, status: PolicyStatus, activated: bool = False) -> None:
        """Put this worker's revision and health on the group's board, once it listens."""
        health = self.grpc.health
        if self.worker is not None and health is not None:
            self.worker.publish(status, health.serving())

    def start(self) -> None:
        """Start every component in order. If one fails, the ones already started are stopped
        (the evaluation guard too: it is installed for the whole process) and the error is
        raised."""
        started: list[Component] = []
        try:
            for component in self.components:
                component.start()
                started.append(component)
        except BaseException:
            for component in reversed(started):
                try:
                    component.stop(0)
                except Exception:
                    log.exception("stopping %s after a failed start", type(component).__name__)
            raise
        self._publish(self.store.status())

    def stop(self, grace: float | None = None) -> None:
        grace = self.config.server.grace_seconds if grace is None else grace
        if self.grpc.health is not None:
            self.grpc.health.shutting_down()
        self._publish(self.store.status())
        for component in reversed(self.components):
            component.stop(grace)
