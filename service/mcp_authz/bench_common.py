"""What the benchmarks share: a development issuer and config, the sample request, a timed loop.

Every number comes from one run on this machine, side by side, so compare ratios within a run
rather than absolute figures across runs (machines here are shared and noisy).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import devkeys
from .config import load_config
from .model import DecisionRequest

ROOT = Path(__file__).resolve().parents[2]
RESOURCE = devkeys.DEV_AUDIENCE


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    return {"p50_us": at(0.50) * 1e6, "p99_us": at(0.99) * 1e6,
            "mean_us": statistics.fmean(ordered) * 1e6}


def timed_loop(fn: Callable[[], Any], seconds: float) -> dict[str, float]:
    """Call ``fn`` repeatedly for ``seconds``; wall throughput, CPU per call, latencies."""
    samples = []
    cpu0, start = time.process_time(), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    return {"ops": len(samples), "per_s": len(samples) / wall,
            "cpu_us_per_op": cpu / len(samples) * 1e6, **percentiles(samples)}


def threaded_loop(make: Callable[[], Callable[[], Any]], threads: int,
                  seconds: float) -> dict[str, float]:
    """``threads`` threads, each calling its own ``make()`` for ``seconds``: throughput on the
    whole machine (an engine that releases the GIL scales with them; one that does not, not)."""
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def loop(index: int) -> None:
        fn = make()
        while time.perf_counter() < stop:
            fn()
            counts[index] += 1
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    cpu0, start = time.process_time(), time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall, cpu, ops = time.perf_counter() - start, time.process_time() - cpu0, max(sum(counts), 1)
    return {"ops": ops, "threads": threads, "per_s": ops / wall, "cpu_us_per_op": cpu / ops * 1e6,
            "p50_us": 0.0, "p99_us": 0.0}


class Setup:
    """A development issuer and config in a temporary directory, on the default bundle."""

    def __init__(self, directory: str, bundle: Path):
        self.config_path = devkeys.write_dev_setup(directory, str(bundle))
        self.config = load_config(str(self.config_path))
        dev = self.config.development
        assert dev is not None
        self.key = devkeys.load_private_key(self.config.path(dev.signing_key))
        self.kid, self.issuer = dev.key_id, dev.issuer

    def token(self, sub: str = "alice", scopes: tuple[str, ...] = ("files:read",)) -> str:
        claims = devkeys.user_claims(issuer=self.issuer, audience=RESOURCE, sub=sub,
                                     tenant="acme", scopes=list(scopes), roles=["analyst"],
                                     ttl=3600)
        return devkeys.mint(self.key, self.kid, "RS256", claims)


def sample_request(token: str) -> DecisionRequest:
    return DecisionRequest(method="tools/call", tenant="acme", server_resource=RESOURCE,
                           bearer_token=token, server_id="files", tool_name="read_file",
                           tool_arguments={"path": "/srv/mcp/acme/reports/q3.txt"})
