"""``mcp-authz serve``: run the decision service until SIGTERM, then drain."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any

from ..app import App
from ..config import Config, load_config
from ..worker_state import WorkerBoard
from ..workers import Supervisor, engine_threads, watch_parent, worker_command, worker_count

log = logging.getLogger("mcp_authz.serve")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("serve", help="run the decision service")
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--bundle", help="policy bundle (directory or .tar.gz); overrides "
                        "policy.bundle")
    parser.add_argument("--listen", help="HOST:PORT; overrides server.listen")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--workers", type=int, help="worker processes sharing the port "
                        "(overrides server.workers; default one per core, 1: no supervisor)")
    # set by the supervisor on the processes it starts (workers.py), not by users
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    parser.set_defaults(run=run)


def isolate_engine_stdout() -> None:
    """The engine's C++ side prints compile errors to file descriptor 1. Point fd 1 at stderr
    and keep Python's ``sys.stdout`` on the original stdout, so stdout carries only what this
    service writes there (the decision log)."""
    sys.stdout.flush()
    original = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = os.fdopen(original, "w", buffering=1, encoding="utf-8")


def first_decision_hint(args: argparse.Namespace, port: int) -> str:
    """What to type next, shown only for a development config (it has the dev signing key)."""
    host = (args.listen or "127.0.0.1:0").rpartition(":")[0] or "127.0.0.1"
    return f"""
Development mode. In another shell:
  TOKEN=$(.venv/bin/mcp-authz token --config {args.config} --sub alice --tenant acme \\
          --scope files:read --role analyst)
  .venv/bin/mcp-authz decide --target {host}:{port} --token "$TOKEN" --tenant acme \\
          --resource https://mcp.example.com/files --tool read_file \\
          --arguments '{{"path": "/srv/mcp/acme/reports/q3.txt"}}'
"""


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(args.config)
    if args.worker_index is None and (count := worker_count(config, args.workers)) > 1:
        return supervise(args, config, count)
    parent = os.getppid()
    isolate_engine_stdout()
    board = None if args.worker_index is None else WorkerBoard(args.run_dir, args.worker_index)
    app = App(config, bundle=args.bundle, listen=args.listen, worker=board,
              workers=1 if board is None else args.workers)
    app.start()
    if board is None:
        host = (args.listen or config.server.listen).rpartition(":")[0]
        log.info("mcp-authz listening on %s:%d (policy revision %r, %s)", host, app.grpc.port,
                 app.store.status().active_revision, _engine_threads_text(config, 1))
        if config.development is not None:
            print(first_decision_hint(args, app.grpc.port), file=sys.stderr, flush=True)
    stopping = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("signal %d: draining for up to %.1fs", signum, config.server.grace_seconds)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    watch_parent(None if board is None else parent, stopping)
    app.stop()
    log.info("stopped")
    return 0


def supervise(args: argparse.Namespace, config: Config, count: int) -> int:
    """Run ``count`` workers on one port until SIGTERM (workers.py)."""
    supervisor = Supervisor(config, count, worker_command(args, count),
                            args.listen or config.server.listen)

    def listening(host: str, port: int) -> None:
        log.info("mcp-authz listening on %s:%d (%d worker processes, %s each)", host, port,
                 count, _engine_threads_text(config, count))
        if config.development is not None:
            print(first_decision_hint(args, port), file=sys.stderr, flush=True)

    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    return supervisor.run(listening)


def _engine_threads_text(config: Config, workers: int) -> str:
    count = engine_threads(config, workers)
    return f"{count} engine thread{'' if count == 1 else 's'}"
