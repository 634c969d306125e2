"""``make bench``: the full performance report, every number from one run on this machine.

- in process: the engine alone (back to back, and with a 2 ms pause between evaluations, as a
  server thread has: the same work costs more CPU on a thread that sleeps between calls), the
  engine path (input encoding + engine) on one thread and on a thread per core, the decision path,
  the decision path answering from its cache, token verification (with and without the
  verified-token cache); OPA's Go engine on the same bundle and inputs when installed;
- the miss path: a known and an unknown tool on a 10,000-tool, 1,000-tenant catalog;
- servers under h2load: a no-op gRPC server (thread pool and asyncio), the service with one
  worker (with and without the decision log), DecideBatch of 32, two workers, then two workers
  at fixed open-loop rates (25/50/75% of their measured maximum) and their memory;
- issue 9's ratios computed from those, with the raw numbers (bench_report.py);
- the decision-log overhead (logbench) and the MCP tool-call latency (bench_mcp).

Compare ratios within a run rather than absolute figures across runs (machines here are shared
and noisy). Results are printed as tables and written as JSON (``--out``).

    python -m mcp_authz.bench [--seconds 3] [--load-seconds 6] [--out bench-results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import bench_mcp, bench_report, logbench
from .bench_common import ROOT, Setup, sample_request

__all__ = ["ROOT", "Setup", "sample_request", "main"]


def table(results: dict[str, Any]) -> str:
    """Throughput, latency and CPU per operation of every measured loop and server run."""
    rows = [("benchmark", "ops/s", "p50 µs", "p99 µs", "CPU µs/op")]
    groups = {"in_process": results["in_process"], "opa": results.get("opa") or {},
              "miss_path": {k: v for k, v in results["miss_path"].items()
                            if isinstance(v, dict)},
              "server": {k: v for k, v in results["servers"].items()
                         if isinstance(v, dict) and "per_s" in v},
              "open_loop_2_workers": results["servers"].get("open_loop", {})}
    for group, entries in groups.items():
        for name, r in entries.items():
            cpu = r.get("server_cpu_us_per_op", r.get("cpu_us_per_op", 0))
            rows.append((f"{group}.{name}", f"{r['per_s']:.0f}", f"{r['p50_us']:.0f}",
                         f"{r['p99_us']:.0f}", f"{cpu:.0f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True)))
                     for row in rows)


def _companions(seconds: float, directory: str) -> dict[str, Any]:
    """The other engineers' benchmarks, called rather than duplicated; a failure is reported."""
    found: dict[str, Any] = {}
    try:
        found["decision_log"] = logbench.measure_log_overhead(seconds=seconds, rounds=2)
    except Exception as exc:  # a companion benchmark never sinks the report
        found["decision_log"] = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        found["mcp_tool_call"] = bench_mcp.run(100, 20, Path(directory))
    except Exception as exc:
        found["mcp_tool_call"] = {"error": f"{type(exc).__name__}: {exc}"}
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcp_authz.bench")
    parser.add_argument("--out", default="bench-results.json")
    parser.add_argument("--seconds", type=float, default=3.0, help="per in-process loop")
    parser.add_argument("--load-seconds", type=float, default=6.0, help="per h2load run")
    parser.add_argument("--bundle", default=str(ROOT / "policies"))
    parser.add_argument("--skip-companions", action="store_true",
                        help="leave out logbench and bench_mcp")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as directory:
        results: dict[str, Any] = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            **bench_report.run(directory, Path(args.bundle), args.seconds, args.load_seconds),
        }
        if not args.skip_companions:
            results["companions"] = _companions(args.seconds, directory)
    results["seconds"] = round(time.monotonic() - started, 1)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(table(results))
    servers = results["servers"]
    print(f"\nmemory: {servers['rss_mib_per_worker']} MiB per worker, supervisor "
          f"{servers['rss_mib_supervisor']} MiB; 10k-tool compile "
          f"{results['miss_path']['compile_seconds']:.1f}s")
    print("\n" + bench_report.ratio_table(results["ratios"]))
    if "companions" in results:
        print("\n" + json.dumps(results["companions"], indent=1)[:3000])
    print(f"\nwrote {args.out} ({results['seconds']}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
