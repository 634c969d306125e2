"""The engine's memory stays flat over many decisions in the service's own import order.

Loaded after grpc's native library, regopy leaked ~1.5 KB per query (a soak worker grew by
180 MB in four minutes); the package now loads regopy first (mcp_authz/__init__.py). This runs
the service's entry module in a fresh interpreter, as `mcp-authz serve` does, and counts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SLOW_BUNDLE = Path(__file__).parent / "data" / "slow_bundle"
PROGRAM = f"""
import mcp_authz.cli  # what `mcp-authz serve` imports first; grpc comes in through it
import json, grpc
from mcp_authz.bundles import load_bundle
from mcp_authz.engine import compile_bundle

def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

policy = compile_bundle(load_bundle({str(SLOW_BUNDLE)!r}))
def evaluate(i):
    document = {{"tool": {{"arguments": {{"spin": 0}}}}, "subject": {{"id": "alice"}}, "n": i}}
    assert policy.evaluate(json.dumps(document)).allow
for i in range(1000):  # warm up: the allocator's pools, the thread's interpreter
    evaluate(i)
before = rss_kib()
for i in range(10000):
    evaluate(i)
print(rss_kib() - before)
"""


@pytest.mark.requirement("bounded-memory")
def test_ten_thousand_evaluations_do_not_grow_memory() -> None:
    result = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    growth_kib = int(result.stdout.split()[-1])
    assert growth_kib < 4096  # the leak was ~20 MB here
