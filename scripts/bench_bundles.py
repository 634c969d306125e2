"""How long activating a large bundle takes: the default policy with its tool catalog and tenant
table grown to N tools and M tenants, signed (RS256), then read, verified, parsed, compiled,
smoke-evaluated and swapped in by ``PolicyStore.activate_archive``.

    .venv/bin/python scripts/bench_bundles.py [--sizes 1000x100,10000x1000] [--repeat 3]

Prints one line per size with the median of each step (seconds) and the archive size; each size
runs in a fresh process, which also reports its resident memory (VmRSS, MiB) with the policy
active (what one worker holds) and at its peak during activation. ``--during-compile`` also
measures decisions on an already active (small) revision while a large one compiles in another
thread, to show whether activation blocks requests.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from mcp_authz.activation import SMOKE_INPUT as SMOKE
from mcp_authz.activation import PolicyStore
from mcp_authz.bundles import parse_bundle, read_archive, read_files
from mcp_authz.bundlewriter import write_archive
from mcp_authz.devkeys import new_rsa_key
from mcp_authz.engine import DEFAULT_ENTRYPOINT, compile_bundle
from mcp_authz.signing import SIGNATURES_FILE, SigningKey, Verification, sign_files

POLICIES = Path(__file__).resolve().parent.parent / "policies"


def grown_bundle(tools: int, tenants: int) -> dict[str, bytes]:
    files = read_files(POLICIES)
    catalog = json.loads(files["mcp/catalog/data.json"])
    template = next(iter(catalog["tools"].values()))
    for i in range(tools - len(catalog["tools"])):
        catalog["tools"][f"tool_{i:05d}"] = copy.deepcopy(template)
    table = json.loads(files["mcp/tenants/data.json"])
    first = next(iter(table.values()))
    for i in range(tenants - len(table)):
        table[f"tenant_{i:05d}"] = copy.deepcopy(first)
    files["mcp/catalog/data.json"] = json.dumps(catalog, indent=1).encode()
    files["mcp/tenants/data.json"] = json.dumps(table, indent=1).encode()
    return files


def measure(tools: int, tenants: int, repeat: int) -> dict[str, float]:
    key = new_rsa_key()
    files = grown_bundle(tools, tenants)
    archive = write_archive({**files, SIGNATURES_FILE: sign_files(files, SigningKey(
        "RS256", key, "bench"))})
    verification = Verification({"bench": SigningKey("RS256", key.public_key(), "bench")})
    steps: dict[str, list[float]] = {k: [] for k in ("read", "verify", "parse", "compile",
                                                     "activate_total")}
    for _ in range(repeat):
        started = time.perf_counter()
        read = read_archive(archive)
        steps["read"].append(time.perf_counter() - started)
        started = time.perf_counter()
        verification.verify(read)
        steps["verify"].append(time.perf_counter() - started)
        started = time.perf_counter()
        contents = parse_bundle(read)
        steps["parse"].append(time.perf_counter() - started)
        started = time.perf_counter()
        compile_bundle(contents, DEFAULT_ENTRYPOINT)
        steps["compile"].append(time.perf_counter() - started)
        store = PolicyStore(DEFAULT_ENTRYPOINT, verification=verification)
        started = time.perf_counter()
        store.activate_archive(archive, "bench")
        steps["activate_total"].append(time.perf_counter() - started)
    result = {name: statistics.median(values) for name, values in steps.items()}
    result["archive_bytes"] = len(archive)
    result["rss_active_mib"] = rss_mib()  # the last store still holds its compiled policy
    return result


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def during_compile(tools: int, tenants: int) -> dict[str, float]:
    """Engine latency (ms) on the small default revision, idle and while a grown bundle
    compiles on another thread (regopy is called through ctypes, which releases the GIL)."""
    small = compile_bundle(parse_bundle(read_files(POLICIES)).for_serving(), DEFAULT_ENTRYPOINT)
    big = parse_bundle(grown_bundle(tools, tenants)).for_serving()
    inputs = [SMOKE.replace('"now_ns":0', f'"now_ns":{i}') for i in range(2)]

    def sample(until: threading.Event | None, count: int = 200) -> list[float]:
        found: list[float] = []
        while (until is None and len(found) < count) or (until is not None
                                                         and not until.is_set()):
            started = time.perf_counter()
            small.evaluate(inputs[len(found) % 2])
            found.append((time.perf_counter() - started) * 1000)
        return found

    idle = sample(None)
    done = threading.Event()
    worker = threading.Thread(target=lambda: (compile_bundle(big, DEFAULT_ENTRYPOINT),
                                              done.set()))
    worker.start()
    busy = sample(done)
    worker.join()
    return {"idle_p50_ms": statistics.median(idle), "compiling_p50_ms": statistics.median(busy),
            "compiling_max_ms": max(busy), "decisions_while_compiling": len(busy)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000x100,10000x1000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--during-compile", action="store_true")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for size in args.sizes.split(","):
        if not args.one:  # each size in a fresh process, so its memory is its own
            subprocess.run([sys.executable, __file__, "--sizes", size, "--repeat",
                            str(args.repeat), "--one"] + ["--during-compile"] *
                           args.during_compile, check=True)
            continue
        tools, tenants = (int(n) for n in size.split("x"))
        result = measure(tools, tenants, args.repeat)
        result["rss_peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{tools} tools / {tenants} tenants: " + ", ".join(
            f"{k} {v:.3f}s" if k not in ("archive_bytes",) and not k.startswith("rss")
            else f"{k} {int(v)}" for k, v in result.items()), flush=True)
        if args.during_compile:
            print(f"  engine latency on the active revision while {tools} tools compile: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in during_compile(tools, tenants).items()),
                  flush=True)


if __name__ == "__main__":
    main()
