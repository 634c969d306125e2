"""What the evaluation-time guard costs per decision (docs/limits.md).

Evaluates the same input, interleaved over several rounds: with no guard, and through the guard
(on its engine thread, one call at a time: the hand-off's cost when the service is idle; under
load the engine thread stays busy and `make bench` measures the gain), then regopy's input
parse for growing argument objects (the reason for the default limits). Prints median CPU
microseconds per evaluation.

    .venv/bin/python scripts/bench_eval_guard.py [--rounds 9] [--calls 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from mcp_authz import evalguard
from mcp_authz.config import LimitsConfig
from mcp_authz.decisions import encode_input
from mcp_authz.engine import CompiledPolicy
from mcp_authz.evalguard import EvaluationGuard
from mcp_authz.evaluation import OfflineDecider, request_from_mapping

CLAIMS = {"sub": "alice", "tenant": "acme", "scope": "files:read", "roles": ["analyst"]}
REQUEST = {"tenant": "acme", "method": "tools/call",
           "server": {"id": "files", "resource": "https://mcp.example.com/files"},
           "tool": {"name": "read_file", "arguments": {"path": "/srv/mcp/acme/reports/q3.txt"}}}


def cpu_per_call(fn: Callable[[], Any], calls: int) -> float:
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls * 1e6


def guard_overhead(policy: CompiledPolicy, text: str, rounds: int, calls: int) -> dict[str, float]:
    guard = EvaluationGuard(LimitsConfig(), engine_threads=1)
    ways = {"no guard": None, "guard, engine thread": guard}
    samples: dict[str, list[float]] = {name: [] for name in ways}
    try:
        order = list(ways.items())
        for round_ in range(rounds):
            for name, installed in order[round_ % 2:] + order[:round_ % 2]:  # no position bias
                evalguard.install(installed)
                policy.evaluate(text)
                samples[name].append(cpu_per_call(lambda: policy.evaluate(text), calls))
    finally:
        evalguard.install(None)
        guard.stop()
    return {name: statistics.median(values) for name, values in samples.items()}


def parse_cost(policy: CompiledPolicy, document: dict[str, Any]) -> list[tuple[int, int, float]]:
    """(values, bytes, ms) of one evaluation with an argument object of that many values."""
    rows = []
    for values in (100, 1000, 2000, 4000):
        best = float("inf")
        for nonce in range(3):  # a new text each time: the engine skips re-parsing the same
            arguments = {f"k{i}": i for i in range(values)}
            doc = {**document, "tool": {**document["tool"], "arguments": arguments},
                   "now_ns": nonce}
            text = encode_input(doc)
            start = time.perf_counter()
            policy.evaluate(text)
            best = min(best, time.perf_counter() - start)
        rows.append((values, len(text), best * 1000))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    decider = OfflineDecider("policies")
    outcome = decider.decide(request_from_mapping(REQUEST), claims=CLAIMS)
    assert outcome.decision.allow and outcome.input is not None
    policy = decider.store.active()
    assert policy is not None
    text = encode_input(outcome.input)
    results = guard_overhead(policy, text, args.rounds, args.calls)
    base = results["no guard"]
    print(f"default policy, {len(text)}-byte input; median CPU per evaluation over "
          f"{args.rounds} interleaved rounds of {args.calls}:")
    for name, value in results.items():
        print(f"  {name:24s} {value:8.1f} us  (+{value - base:6.1f} us, x{value / base:.3f})")
    print("regopy input parse, one argument object of N values:")
    for values, size, ms in parse_cost(policy, outcome.input):
        print(f"  {values:6d} values {size:8d} bytes {ms:9.1f} ms")
    print(json.dumps({"guard_cpu_us": results}))


if __name__ == "__main__":
    main()
