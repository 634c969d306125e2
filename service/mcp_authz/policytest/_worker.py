"""The child process that touches regopy for the test runner and ``check``.

regopy can kill its process (SIGSEGV, SIGABRT), so the parent never compiles test modules
itself: it starts ``python -m mcp_authz.policytest._worker``, writes one JSON job to its stdin
and reads one JSON line per result from the child's original stdout. The child's fd 1 is
pointed at stderr first, so ``print()`` in a policy (regopy writes it to the C++ stdout) can
never corrupt the result stream; results are flushed one by one, so those before a crash
survive it.

Jobs: ``{"op": "tests", "modules", "data", "tests": [entrypoint, ...]}`` answers
``{"test", "status": pass|fail|error, "message", "seconds"}`` per test;
``{"op": "compile", "modules", "data", "entrypoint"}`` answers ``{"error": message|null}``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

from ..bundles import BundleContents
from ..engine import compile_bundle
from ..errors import BundleError, PolicyError

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
        compile_bundle(_contents(job), job["entrypoint"])
        _emit(out, {"error": None})
    except BundleError as exc:
        _emit(out, {"error": str(exc)})


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
