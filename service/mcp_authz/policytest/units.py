"""Rego unit tests: every ``test_*`` rule in a bundle's ``*_test.rego`` files, run on regopy in
child processes so that a crash costs one test, not the run.

A file's tests run in one child, with the test rules of other files blanked out (a crashing
test elsewhere cannot take this file down). regopy crashes while compiling, so when a child
dies every test it had not reported is re-run alone, in its own child, with every other test
rule blanked: the test that still kills its child is the one reported as crashed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..bundles import TEST_FILE_SUFFIX, BundleContents
from ..engine_worker import run_worker
from .results import ERROR, Result
from .source import blank, package_of, statements

CRASH_HINT = ("`with input as` on rules that call builtins crashes regopy: call a function "
              "taking the input instead")


@dataclass(frozen=True)
class UnitTest:
    module: str  # bundle-relative file name
    package: str
    rule: str
    line: int

    @property
    def entrypoint(self) -> str:
        return f"{self.package.replace('.', '/')}/{self.rule}"

    @property
    def name(self) -> str:
        return f"data.{self.package}.{self.rule}"


def discover(contents: BundleContents) -> list[UnitTest]:
    """The bundle's tests in file order; a rule defined in several statements is one test."""
    found: dict[tuple[str, str], UnitTest] = {}
    for module, source in sorted(contents.modules.items()):
        if not module.endswith(TEST_FILE_SUFFIX):
            continue
        package = package_of(source)
        for statement in statements(source):
            if statement.name.startswith("test_") and not statement.is_function:
                key = (package, statement.name)
                found.setdefault(key, UnitTest(module, package, statement.name, statement.line))
    return list(found.values())


def isolate(contents: BundleContents, keep: Sequence[UnitTest]) -> dict[str, str]:
    """The modules with every test rule blanked except those in ``keep``."""
    kept = {(t.module, t.rule) for t in keep}
    modules = {}
    for module, source in contents.modules.items():
        spans = [(s.start, s.end) for s in statements(source)
                 if module.endswith(TEST_FILE_SUFFIX) and s.name.startswith("test_")
                 and (module, s.name) not in kept]
        modules[module] = blank(source, spans) if spans else source
    return modules


class UnitRunner:
    """Runs unit tests of one bundle; ``display`` maps a module name to the path users see."""

    def __init__(self, contents: BundleContents, display: Mapping[str, str],
                 workers: int = 2, timeout: float = 120.0):
        self.contents = contents
        self.display = display
        self.workers = max(1, workers)
        self.timeout = timeout

    def run(self, tests: Sequence[UnitTest]) -> list[Result]:
        groups: dict[str, list[UnitTest]] = {}
        for test in tests:
            groups.setdefault(test.module, []).append(test)
        with ThreadPoolExecutor(self.workers) as pool:
            batches = list(pool.map(self._run_group, groups.values()))
        by_test = {r.name: r for batch in batches for r in batch}
        return [by_test[t.name] for t in tests]

    def _run_group(self, tests: list[UnitTest]) -> list[Result]:
        records, crash = self._child(tests)
        results = [self._result(t, records[t.entrypoint]) for t in tests if t.entrypoint in records]
        missing = [t for t in tests if t.entrypoint not in records]
        if len(missing) == 1 and len(tests) == 1:
            return [self._crashed(missing[0], crash)]
        for test in missing:
            single, single_crash = self._child([test])
            results.append(self._result(test, single[test.entrypoint]) if single
                           else self._crashed(test, single_crash))
        return results

    def _child(self, tests: list[UnitTest]) -> tuple[dict[str, dict[str, Any]], str]:
        """Run ``tests`` in one child; their records, and why it died if it did."""
        job = {"op": "tests", "modules": isolate(self.contents, tests),
               "data": self.contents.data, "tests": [t.entrypoint for t in tests]}
        records, problem = run_worker(job, self.timeout)
        return {r["test"]: r for r in records if "test" in r}, problem

    def _result(self, test: UnitTest, record: Mapping[str, Any]) -> Result:
        return Result("rego", test.name, self.display.get(test.module, test.module), test.line,
                      record["status"], record.get("message", ""),
                      seconds=float(record.get("seconds", 0.0)))

    def _crashed(self, test: UnitTest, problem: str) -> Result:
        first, _, rest = (problem or "no result from the test process").partition("\n")
        return Result("rego", test.name, self.display.get(test.module, test.module), test.line,
                      ERROR, f"{first}; {CRASH_HINT}", detail=rest)
