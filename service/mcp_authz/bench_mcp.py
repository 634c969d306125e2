"""Added latency per MCP tool call: the middleware and the gateway, against an unprotected baseline.

Real processes on loopback (``devstack``): the decision service, the example server without
authorization (baseline), the example server with the middleware, and the gateway in front of
the baseline server. One `mcp` client session per target calls ``read_file`` (allowed by the
default policy) ``--calls`` times after a warm-up; the added latency is the difference of the
medians (and of the p99s) to the baseline. Numbers from a noisy 2-core machine are indicative.

    python -m mcp_authz.bench_mcp [--calls 300] [--out bench-mcp.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from . import devstack

GATEWAY = "https://mcp.example.com/bench-gateway"
ARGUMENTS = {"path": "sandbox/acme/notes.txt"}


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _measure(url: str, token: str, tool: str, calls: int, warmup: int) -> list[float]:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            await client.list_tools()
            samples = []
            for i in range(warmup + calls):
                started = time.perf_counter()
                result = await client.call_tool(tool, ARGUMENTS)
                elapsed = time.perf_counter() - started
                if result.is_error:
                    raise RuntimeError(f"{url}: {tool} failed: {result.content}")
                if i >= warmup:
                    samples.append(elapsed * 1000)
    return samples


def _summary(samples: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(samples), 3),
            "p99_ms": round(_percentile(samples, 0.99), 3), "calls": len(samples)}


def run(calls: int, warmup: int, directory: Path) -> dict[str, Any]:
    logs = directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    config, identity = devstack.dev_setup(directory / "dev")
    processes: list[devstack.Process] = []
    try:
        service, target = devstack.start_service(config, logs)
        processes.append(service)
        baseline = devstack.start_example(directory / "baseline", target, logs, protected=False)
        processes.append(baseline)
        protected = devstack.start_example(directory / "protected", target, logs)
        processes.append(protected)
        gateway_config = devstack.write_gateway_config(
            directory / "gateway.yaml", authz=target, resource=GATEWAY,
            issuer="https://dev-issuer.mcp-authz.local", tenant="acme",
            upstreams=[{"name": "example", "url": baseline.url + "/mcp"}])
        gateway = devstack.start_gateway(gateway_config, logs)
        processes.append(gateway)
        scopes = ("files:read",)
        targets = {
            "baseline": (baseline.url, identity.token("bench", "acme", scopes)),
            "middleware": (protected.url, identity.token("bench", "acme", scopes)),
            "gateway": (gateway.url, identity.token("bench", "acme", scopes, audience=GATEWAY)),
        }
        results = {name: _summary(anyio.run(_measure, url + "/mcp", token, "read_file", calls,
                                            warmup))
                   for name, (url, token) in targets.items()}
    finally:
        for process in reversed(processes):
            process.stop()
    base = results["baseline"]
    for name in ("middleware", "gateway"):
        results[name]["added_median_ms"] = round(results[name]["median_ms"] - base["median_ms"], 3)
        results[name]["added_p99_ms"] = round(results[name]["p99_ms"] - base["p99_ms"], 3)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="added latency per MCP tool call")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--out", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-mcp-") as directory:
        results = run(args.calls, args.warmup, Path(directory))
    text = json.dumps({"mcp_tool_call_latency": results}, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
