"""A child process for regopy work that might crash: the test runner, ``check`` and activation.

regopy can kill its process (SIGSEGV, SIGABRT), so a parent that must survive never compiles an
untrusted bundle first in its own process: ``run_worker`` starts ``python -m
mcp_authz.engine_worker``, writes one JSON job to its stdin
and reads one JSON line per result from the child's original stdout. The child's fd 1 is
pointed at stderr first, so ``print()`` in a policy (regopy writes it to the C++ stdout) can
never corrupt the result stream; results are flushed one by one, so those before a crash
survive it.

Jobs: ``{"op": "tests", "modules", "data", "tests": [entrypoint, ...]}`` answers
``{"test", "status": pass|fail|error, "message", "seconds"}`` per test;
``{"op": "compile", "modules", "data", "entrypoint", "smoke"?}`` answers
``{"error": message|null}``; with ``smoke`` (an input document as JSON text) the entrypoint is
also evaluated once on it, since evaluation can crash regopy too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

from .bundles import BundleContents
from .engine import compile_bundle
from .errors import BundleError, PolicyError

#: Tests evaluate with an empty input document, on both engines (OPA's ``opa test`` has none;
#: an empty object keeps the two engines on the same footing).
TEST_INPUT = "{}"
_UNDEFINED = "is undefined for this input"


def _contents(job: Mapping[str, Any]) -> BundleContents:
    return BundleContents(revision="", roots=("",), metadata={}, modules=job["modules"],
                          data=job["data"], files={})


def run_tests(job: Mapping[str, Any], out: IO[str]) -> None:
    tests = list(job["tests"])
    try:
        policy = compile_bundle(_contents(job), tests[0], extra_entrypoints=tests[1:])
    except BundleError as exc:
        for test in tests:
            _emit(out, {"test": test, "status": "error", "message": str(exc), "seconds": 0.0})
        return
    for test in tests:
        started = time.perf_counter()
        try:
            value = policy.evaluate_raw(TEST_INPUT, test)
            status, message = ("pass", "") if value is True else (
                "fail", f"evaluated to {json.dumps(value)[:200]}, not true")
        except PolicyError as exc:
            undefined = str(exc).endswith(_UNDEFINED)
            status, message = ("fail", "undefined") if undefined else ("error", str(exc))
        _emit(out, {"test": test, "status": status, "message": message,
                    "seconds": time.perf_counter() - started})


def run_compile(job: Mapping[str, Any], out: IO[str]) -> None:
    try:
        policy = compile_bundle(_contents(job), job["entrypoint"])
        if job.get("smoke") is not None:
            policy.evaluate_raw(job["smoke"])
        _emit(out, {"error": None})
    except (BundleError, PolicyError) as exc:
        _emit(out, {"error": str(exc)})


def run_worker(job: Mapping[str, Any], timeout: float) -> tuple[list[dict[str, Any]], str]:
    """Run one job in a child; its JSON records, and "" or why the child died (first line: the
    reason, then the child's last output)."""
    command = [sys.executable, "-m", "mcp_authz.engine_worker"]
    try:
        done = subprocess.run(command, input=json.dumps(job, ensure_ascii=False),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [], f"regopy did not finish within {timeout:g} s"
    records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    if done.returncode == 0:
        return records, ""
    return records, _death(done.returncode) + "\n" + done.stderr[-2000:].strip()


def _death(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"regopy crashed (signal {-returncode}, {name})"
    return f"the engine process exited with status {returncode}"


def _emit(out: IO[str], record: Mapping[str, Any]) -> None:
    out.write(json.dumps(record) + "\n")
    out.flush()


def main() -> None:
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    job = json.loads(sys.stdin.read())
    (run_tests if job["op"] == "tests" else run_compile)(job, out)


if __name__ == "__main__":
    main()
