"""``make bench``: decisions/s and latency of the engine, the gRPC service and token checks.

Every number comes from one run on this machine, side by side, so compare ratios within a run
rather than absolute figures across runs (machines here are shared and noisy). Results are
printed as a table and written as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from . import devkeys
from ._pb.mcp.authz.v1 import authz_pb2 as pb
from ._pb.mcp.authz.v1 import authz_pb2_grpc as pb_grpc
from .activation import PolicyStore
from .bundles import load_bundle
from .config import load_config
from .decisions import DecisionPath, encode_input
from .identity import build_verifiers
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


def bench_engine(setup: Setup, seconds: float) -> dict[str, Any]:
    """(a) the engine alone: one compiled bundle, the input document prebuilt."""
    store = PolicyStore(setup.config.policy.entrypoint)
    policy = store.activate(load_bundle(setup.config.path(setup.config.policy.bundle)))
    verifier, approvals = build_verifiers(setup.config)
    path = DecisionPath(store, verifier, approvals, setup.config.limits)
    request = sample_request(setup.token())
    subject = verifier.verify(request.bearer_token, RESOURCE, time.time())
    document = encode_input(path.input_document(request, subject, policy, time.time_ns()))
    assert policy.evaluate(document).allow, "the benchmark request must be allowed"
    engine = timed_loop(lambda: policy.evaluate(document), seconds)
    full = timed_loop(lambda: path.decide(request), seconds)
    return {"engine": engine, "decision_path": full}


def bench_tokens(setup: Setup, seconds: float) -> dict[str, Any]:
    """(c) token verification with the key set cached."""
    verifier, _ = build_verifiers(setup.config)
    token = setup.token()
    return {"verify": timed_loop(lambda: verifier.verify(token, RESOURCE, time.time()), seconds)}


def bench_grpc(setup: Setup, seconds: float, concurrency: int) -> dict[str, Any]:
    """(b) Decide over gRPC on loopback: the service in its own process, ``concurrency``
    callers from one asyncio client."""
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mcp_authz.cli", "serve", "--config", str(setup.config_path),
         "--listen", f"127.0.0.1:{port}", "--log-level", "WARNING"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_serving(f"127.0.0.1:{port}")
        request = pb.DecideRequest(bearer_token=setup.token(), tenant="acme", method="tools/call",
                                   server=pb.ServerRef(id="files", resource=RESOURCE))
        request.tool.name = "read_file"
        request.tool.arguments.update({"path": "/srv/mcp/acme/reports/q3.txt"})
        server_cpu0 = _process_cpu(process.pid)
        result = asyncio.run(_drive(f"127.0.0.1:{port}", request, seconds, concurrency))
        server_cpu = _process_cpu(process.pid) - server_cpu0
        result["server_cpu_us_per_op"] = server_cpu / max(result["ops"], 1) * 1e6
        return {"decide": result}
    finally:
        process.terminate()
        process.wait(10)


async def _drive(target: str, request: pb.DecideRequest, seconds: float,
                 concurrency: int) -> dict[str, Any]:
    samples: list[float] = []
    denies = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.DecisionServiceStub(channel)
        deadline = time.perf_counter() + seconds

        async def caller() -> None:
            nonlocal denies
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                decision = await stub.Decide(request, timeout=10)
                samples.append(time.perf_counter() - t0)
                denies += not decision.allow

        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    assert denies == 0, "the benchmark request must be allowed"
    return {"ops": len(samples), "per_s": len(samples) / wall, "concurrency": concurrency,
            **percentiles(samples)}


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_serving(target: str, timeout: float = 30) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"service at {target} did not become SERVING")


def table(results: dict[str, Any]) -> str:
    rows = [("benchmark", "ops/s", "p50 µs", "p99 µs", "CPU µs/op")]
    for group, entries in results["benchmarks"].items():
        for name, r in entries.items():
            cpu = r.get("server_cpu_us_per_op", r.get("cpu_us_per_op", 0))
            rows.append((f"{group}.{name}", f"{r['per_s']:.0f}", f"{r['p50_us']:.0f}",
                         f"{r['p99_us']:.0f}", f"{cpu:.0f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True)))
                     for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcp_authz.bench")
    parser.add_argument("--out", default="bench-results.json")
    parser.add_argument("--seconds", type=float, default=5.0, help="per benchmark")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--bundle", default=str(ROOT / "policies"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        setup = Setup(directory, Path(args.bundle))
        results = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "benchmarks": {
                "in_process": bench_engine(setup, args.seconds),
                "tokens": bench_tokens(setup, args.seconds),
                "grpc": bench_grpc(setup, args.seconds, args.concurrency),
            },
        }
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(table(results))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
