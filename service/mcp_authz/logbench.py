"""Decision-log overhead on throughput: decisions/s with and without the log, in one run.

Two decision paths share one policy store and one token verifier; only one of them has a
``DecisionLog`` (file sink with rotation, the policy's ``log_mask`` evaluated per line) as an
observer. Rounds alternate between them so machine noise hits both alike; the result is the
ratio of their throughputs plus what the log wrote and dropped.

    python -m mcp_authz.logbench [--seconds 10] [--threads 2] [--out FILE]

``measure_log_overhead`` is what ``make bench`` can call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .activation import PolicyStore
from .audit import DecisionLog, RotatingFileSink
from .bench_common import ROOT, Setup, sample_request
from .config import DecisionLogConfig
from .decisions import DecisionPath
from .identity import build_verifiers


def _throughput(path: DecisionPath, request: Any, seconds: float, threads: int) -> int:
    """Decisions made by ``threads`` callers in ``seconds``."""
    counts = [0] * threads
    deadline = time.perf_counter() + seconds

    def caller(i: int) -> None:
        while time.perf_counter() < deadline:
            path.decide(request)
            counts[i] += 1

    workers = [threading.Thread(target=caller, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts)


def measure_log_overhead(bundle: Path = ROOT / "policies", seconds: float = 10.0,
                         threads: int = 2, rounds: int = 5, queue_size: int = 10000,
                         policy_masks: bool = True) -> dict[str, Any]:
    """Decisions/s without and with the decision log, alternating ``rounds`` times.

    ``policy_masks`` off skips the bundle's ``log_mask`` rule (one more evaluation per line)."""
    with tempfile.TemporaryDirectory() as directory:
        setup = Setup(directory, bundle)
        store = PolicyStore(setup.config.policy.entrypoint)
        store.activate_path(setup.config.path(setup.config.policy.bundle))
        verifier, approvals = build_verifiers(setup.config)
        log_path = os.path.join(directory, "decisions.log")
        settings = DecisionLogConfig(queue_size=queue_size, policy_masks=policy_masks)
        decision_log = DecisionLog(settings, store,
                                   RotatingFileSink(log_path, 64 * 1024 * 1024, 1))
        plain = DecisionPath(store, verifier, approvals, setup.config.limits)
        logged = DecisionPath(store, verifier, approvals, setup.config.limits,
                              observers=[decision_log])
        request = sample_request(setup.token())
        assert plain.decide(request).allow, "the benchmark request must be allowed"
        decision_log.start()
        made = {"without_log": 0, "with_log": 0}
        slice_seconds = seconds / rounds / 2
        for _ in range(rounds):
            made["without_log"] += _throughput(plain, request, slice_seconds, threads)
            made["with_log"] += _throughput(logged, request, slice_seconds, threads)
        decision_log.stop(30)
        line_bytes = os.path.getsize(log_path) / max(decision_log.written, 1)
    per_s = {name: count / (slice_seconds * rounds) for name, count in made.items()}
    return {
        "threads": threads, "seconds": seconds, "rounds": rounds, "policy_masks": policy_masks,
        "without_log_per_s": per_s["without_log"], "with_log_per_s": per_s["with_log"],
        "ratio": per_s["with_log"] / per_s["without_log"],
        "lines_written": decision_log.written, "lines_dropped": decision_log.dropped,
        "bytes_per_line": line_bytes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcp_authz.logbench")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bundle", default=str(ROOT / "policies"))
    parser.add_argument("--no-policy-masks", action="store_true",
                        help="do not evaluate the bundle's log_mask rule per line")
    parser.add_argument("--out", help="write the result as JSON here too")
    args = parser.parse_args(argv)
    result = measure_log_overhead(Path(args.bundle), args.seconds, args.threads,
                                  policy_masks=not args.no_policy_masks)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
