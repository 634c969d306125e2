"""``mcp-authz serve --workers N``: N worker processes serve one port, under a supervisor.

One Python process decides on about one core (the GIL; regopy releases it only inside an
evaluation), so a process per core is how the service uses a machine. The shape follows grpcio's
multiprocessing example, with SO_REUSEPORT:

- the supervisor never creates a gRPC object. It reserves the port (a socket bound with
  SO_REUSEPORT and kept open, never listening, so an ephemeral port stays ours), then starts the
  workers: fresh ``mcp-authz serve ... --worker-index I --run-dir D`` processes (spawned, not
  forked, so no thread, lock or engine state is inherited). Each activates its policy first and
  only then binds the same port with SO_REUSEPORT; the kernel spreads new connections over the
  workers that listen. (A gRPC channel is one connection: a caller with one channel talks to
  one worker, so gateways should open a few.)
- a worker that exits unexpectedly (regopy can SIGSEGV) is restarted, with a delay doubling from
  0.5 s to 30 s while it keeps dying within 10 s of its start; the others keep serving. Calls in
  flight on the dead worker fail at the caller with UNAVAILABLE (the connection drops), never an
  allow. Its live gauges are dropped from the metrics; its counters stay counted.
- SIGTERM or SIGINT: ``/readyz`` answers 503 at once, every worker gets SIGTERM (its gRPC
  health turns NOT_SERVING, then it drains for ``server.grace_seconds``), stragglers are killed
  5 s after that, and the supervisor exits. A worker whose supervisor disappears stops too.
- the ops port (``metrics.listen``: ``/metrics``, ``/healthz``, ``/readyz``) is served once, by
  the supervisor: ``/metrics`` sums every worker's values (prometheus-client's multiprocess
  files, metrics.GroupMetrics); ``/readyz`` is 200 while at least one worker serves.
- each worker publishes the revision it serves on the group's board (worker_state.py), which
  ``GetPolicyStatus`` reports for every worker.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import multiprocess

from .config import Config
from .cpus import available_cpus
from .errors import ConfigError, MCPAuthzError
from .metrics import GroupMetrics
from .monitoring import MonitoringServer
from .tls import HttpTls
from .worker_state import WorkerBoard

log = logging.getLogger(__name__)

RESTART_MIN_SECONDS = 0.5
RESTART_MAX_SECONDS = 30.0
STABLE_SECONDS = 10.0
KILL_AFTER_GRACE_SECONDS = 5.0
POLL_SECONDS = 0.1


def worker_count(config: Config, requested: int | None = None) -> int:
    """How many workers to run: ``--workers``, else ``server.workers``, else one per core this
    process may use (cpus.py: the affinity mask and the container's CPU quota).

    Adapters on listeners of their own (ext_authz/ExtMcp ``listen``, AuthZEN HTTP) bind in
    one process only: with them, an explicit count above 1 is an error and the default is 1."""
    explicit = requested if requested is not None else config.server.workers
    unshared = _unshared_listeners(config)
    if explicit > 1 and unshared:
        raise ConfigError([f"server.workers: {explicit} workers cannot share "
                           f"{', '.join(unshared)}; serve those adapters on the native port "
                           "(listen: '') or run one worker"])
    if explicit:
        return explicit
    if unshared:
        log.info("one worker process: %s listen on ports of their own", ", ".join(unshared))
        return 1
    return available_cpus()


def engine_threads(config: Config, workers: int) -> int:
    """Evaluations one of ``workers`` processes runs at once: ``server.engine_threads``, else
    the cores divided among the workers (at least 1), so the group keeps every core busy and
    no more: one worker per core evaluates on one thread."""
    if config.server.engine_threads:
        return config.server.engine_threads
    return max(1, available_cpus() // max(workers, 1))


def _unshared_listeners(config: Config) -> list[str]:
    adapters = config.adapters
    names = [f"adapters.{name}.listen" for name in ("ext_authz", "ext_mcp")
             if getattr(adapters, name).enabled and getattr(adapters, name).listen]
    return names + (["adapters.authzen"] if adapters.authzen.enabled else [])


@contextmanager
def reserved_port(listen: str) -> Iterator[tuple[str, int]]:
    """Bind ``listen`` with SO_REUSEPORT (port 0: the kernel picks) and hold it while the
    workers run; yields (host, port)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, int(port), type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, ValueError) as exc:
        raise MCPAuthzError(f"server.listen: cannot resolve {listen} ({exc})") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise MCPAuthzError(f"server.listen: cannot bind {listen} ({exc.strerror})") from exc
    try:
        yield host, int(sock.getsockname()[1])
    finally:
        sock.close()


@dataclass
class _Slot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float = 0.0


class Supervisor:
    """Starts, watches, restarts and stops the workers of one ``serve``."""

    def __init__(self, config: Config, count: int, worker_argv: Callable[[str, int, str],
                 list[str]], listen: str):
        """``worker_argv(listen, index, run_dir)`` is the command line of one worker."""
        self._config = config
        self._slots = [_Slot(i) for i in range(count)]
        self._worker_argv = worker_argv
        self._listen = listen
        # a plain flag, not an Event: Event.set() from a signal handler can deadlock against
        # the main thread's own Event.wait() (both take the Event's lock)
        self._stopping = False
        self._board: WorkerBoard | None = None
        self._metrics_dir = ""
        self._env: dict[str, str] = {}
        self.port = 0
        self.restarts = 0

    def stop(self, *_: Any) -> None:
        """Begin shutdown (safe from a signal handler)."""
        self._stopping = True

    def readiness(self) -> str | None:
        """None while at least one worker serves and shutdown has not begun."""
        if self._stopping:
            return "shutting down"
        board = self._board
        if board is not None and any(w.serving for w in board.read()):
            return None
        return "no worker is serving yet"

    def run(self, on_listening: Callable[[str, int], None] = lambda host, port: None) -> int:
        """Serve until ``stop()``; ``on_listening(host, port)`` once every worker listens."""
        with reserved_port(self._listen) as (host, port), tempfile.TemporaryDirectory(
                prefix="mcp-authz-workers-") as run_dir:
            self.port = port
            self._board = WorkerBoard(run_dir)
            self._metrics_dir = str(Path(run_dir, "metrics"))
            os.mkdir(self._metrics_dir)
            self._env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": self._metrics_dir}
            ops = self._ops()
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            for slot in self._slots:
                self._spawn(slot, address, run_dir)
            announced = False
            try:
                while not self._stopping:
                    time.sleep(POLL_SECONDS)
                    self._tend(address, run_dir)
                    if not announced and self._all_bound():
                        on_listening(host, port)
                        announced = True
            finally:
                self._shutdown()
                if ops is not None:
                    ops.stop()
        return 0

    def _all_bound(self) -> bool:
        """Every worker has published once: its policy activation was tried and it listens."""
        assert self._board is not None
        return len(self._board.read()) == len(self._slots)

    def _ops(self) -> MonitoringServer | None:
        if not self._config.metrics.enabled:
            return None
        ops = MonitoringServer(self._config.metrics.listen, GroupMetrics(self._metrics_dir),
                               self.readiness, tls=HttpTls.from_config(
                                   self._config.metrics.tls, self._config, "metrics"))
        ops.start()
        return ops

    def _spawn(self, slot: _Slot, address: str, run_dir: str) -> None:
        slot.process = subprocess.Popen(self._worker_argv(address, slot.index, run_dir),
                                        env=self._env)
        slot.started = time.monotonic()
        log.info("worker %d started (pid %d)", slot.index, slot.process.pid)

    def _tend(self, address: str, run_dir: str) -> None:
        """Reap workers that died and restart the ones whose delay has passed."""
        now = time.monotonic()
        for slot in self._slots:
            process = slot.process
            if process is not None and process.poll() is not None:
                self._buried(slot, process, now)
            if slot.process is None and now >= slot.restart_at and not self._stopping:
                self.restarts += 1
                self._spawn(slot, address, run_dir)

    def _buried(self, slot: _Slot, process: subprocess.Popen[bytes], now: float) -> None:
        code = process.returncode
        how = f"signal {_signal_name(-code)}" if code < 0 else f"exit code {code}"
        slot.failures = slot.failures + 1 if now - slot.started < STABLE_SECONDS else 1
        delay = min(RESTART_MIN_SECONDS * 2 ** (slot.failures - 1), RESTART_MAX_SECONDS)
        slot.process, slot.restart_at = None, now + delay
        multiprocess.mark_process_dead(process.pid, self._metrics_dir)
        assert self._board is not None
        self._board.retire(slot.index)
        log.error("worker %d (pid %d) ended with %s; restarting in %.1fs", slot.index,
                  process.pid, how, delay)

    def _shutdown(self) -> None:
        """SIGTERM every worker, wait for them to drain, kill the ones that do not."""
        running = [s.process for s in self._slots if s.process is not None]
        log.info("stopping %d workers (grace %.1fs)", len(running),
                 self._config.server.grace_seconds)
        for process in running:
            _signal(process, signal.SIGTERM)
        deadline = (time.monotonic() + self._config.server.grace_seconds
                    + KILL_AFTER_GRACE_SECONDS)
        for process in running:
            try:
                process.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                log.error("worker pid %d did not stop in time; killing it", process.pid)
                _signal(process, signal.SIGKILL)
                process.wait()


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:  # a real-time signal has no name
        return str(signum)


def _signal(process: subprocess.Popen[bytes], signum: int) -> None:
    try:
        process.send_signal(signum)
    except ProcessLookupError:
        pass


def watch_parent(parent: int | None, stopping: threading.Event) -> None:
    """Return once ``stopping`` is set (by a signal handler) or, in a worker, the supervisor
    (``parent``) is gone. Sleeps rather than ``stopping.wait()``, which can deadlock with a
    handler's ``set()`` on the same thread."""
    while not stopping.is_set():
        if parent is not None and os.getppid() != parent:
            log.error("supervisor gone; stopping")
            return
        time.sleep(0.2)


def worker_command(args: Any, count: int) -> Callable[[str, int, str], list[str]]:
    """The worker command line for a ``serve`` invocation's arguments (``count`` workers)."""

    def argv(listen: str, index: int, run_dir: str) -> list[str]:
        command = [sys.executable, "-m", "mcp_authz.cli", "serve", "--config", args.config,
                   "--listen", listen, "--log-level", args.log_level, "--workers", str(count),
                   "--worker-index", str(index), "--run-dir", run_dir]
        return command + (["--bundle", args.bundle] if args.bundle else [])

    return argv
