"""How long activating a large bundle takes: the default policy with its tool catalog and tenant
table grown to N tools and M tenants, signed (RS256), then read, verified, parsed, compiled,
smoke-evaluated and swapped in by ``PolicyStore.activate_archive``.

    .venv/bin/python scripts/bench_bundles.py [--sizes 1000x100,10000x1000] [--repeat 3]

Prints one line per size with the median of each step (seconds) and the archive size.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

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
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000x100,10000x1000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for size in args.sizes.split(","):
        tools, tenants = (int(n) for n in size.split("x"))
        result = measure(tools, tenants, args.repeat)
        print(f"{tools} tools / {tenants} tenants: " + ", ".join(
            f"{k} {v:.3f}s" if k != "archive_bytes" else f"{k} {int(v)}"
            for k, v in result.items()), flush=True)


if __name__ == "__main__":
    main()
