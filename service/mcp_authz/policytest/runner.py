"""``mcp-authz test``: find a run's bundles, tests and fixtures, check them all, then run them.

Everything that can be wrong with the inputs (an unreadable path, a bundle that does not
compile, a fixture with an unknown field) is found before any test runs and raised as an
``MCPAuthzError`` naming the file and line, so the command exits 2 without a partial report.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..bundles import BundleContents, load_bundle
from ..engine import DEFAULT_ENTRYPOINT
from ..errors import BundleError
from ..evaluation import OfflineDecider
from .fixtures import FIXTURE_SUFFIXES, Case, is_fixture_file, load_fixture_file, run_case
from .results import FixtureError, Result
from .units import CRASH_HINT, UnitRunner, UnitTest, discover, run_worker

_TARBALL_SUFFIXES = (".tar.gz", ".tgz")


@dataclass
class Target:
    """One bundle with the tests and fixture cases chosen from it."""

    path: str
    contents: BundleContents
    tests: list[UnitTest] = field(default_factory=list)
    cases: list[Case] = field(default_factory=list)

    def display(self, module: str) -> str:
        return os.path.normpath(os.path.join(self.path, module))


@dataclass
class Options:
    run: re.Pattern[str] | None = None
    compare_opa: bool = False
    entrypoint: str = DEFAULT_ENTRYPOINT
    workers: int = 2
    timeout: float = 120.0


def collect(paths: Sequence[str], options: Options, bundle: str | None = None) -> list[Target]:
    """Bundles from directories and tarballs, fixture files attached to their bundle."""
    targets: dict[str, Target] = {}
    fixture_files: list[tuple[str, str]] = []
    for path in paths:
        if os.path.isdir(path):
            target = _target(targets, path)
            fixture_files += [(target.path, f) for f in _fixture_files(path)]
        elif os.path.isfile(path) and path.endswith(_TARBALL_SUFFIXES):
            _target(targets, path)
        elif os.path.isfile(path) and path.endswith(FIXTURE_SUFFIXES):
            owner = bundle or _owning_bundle(path)
            fixture_files.append((_target(targets, owner).path, path))
        elif os.path.exists(path):
            raise FixtureError(f"{path}: not a bundle directory, a .tar.gz bundle or a fixture "
                               f"file ({', '.join(FIXTURE_SUFFIXES)})")
        else:
            raise FixtureError(f"{path}: no such file or directory")
    for owner, fixture in fixture_files:
        targets[_key(owner)].cases.extend(load_fixture_file(fixture))
    for target in targets.values():
        target.tests = discover(target.contents)
        if options.run is not None:
            target.tests = [t for t in target.tests if options.run.search(t.name)]
            target.cases = [c for c in target.cases if options.run.search(c.name)]
        if target.cases:
            check_compiles(target.contents, options.entrypoint, options.timeout)
    return list(targets.values())


def _key(path: str) -> str:
    return os.path.realpath(path)


def _target(targets: dict[str, Target], path: str) -> Target:
    key = _key(path)
    if key not in targets:
        targets[key] = Target(path, load_bundle(path))
    return targets[key]


def _fixture_files(root: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if is_fixture_file(Path(os.path.relpath(full, root)).as_posix()):
                found.append(full)
    return found


def _owning_bundle(fixture: str) -> str:
    """The nearest directory above a fixture file that holds a ``.manifest``."""
    for parent in Path(fixture).resolve().parents:
        if (parent / ".manifest").is_file():
            return os.path.relpath(parent)
    raise FixtureError(f"{fixture}: no bundle found for this fixture file (no .manifest in any "
                       "directory above it): pass --bundle DIR")


def check_compiles(contents: BundleContents, entrypoint: str, timeout: float) -> None:
    """Compile the bundle in a child first: a bundle that crashes regopy must not crash us."""
    job = {"op": "compile", "modules": dict(contents.modules), "data": contents.data,
           "entrypoint": entrypoint}
    records, crash = run_worker(job, timeout)
    if crash:
        raise BundleError(f"{contents.source}: {crash.partition(chr(10))[0]} while compiling "
                          f"the bundle; {CRASH_HINT}")
    if records and records[0].get("error"):
        raise BundleError(records[0]["error"])


def run(targets: Sequence[Target], options: Options) -> list[Result]:
    results: list[Result] = []
    for target in targets:
        results += _run_target(target, options)
    return results


def _run_target(target: Target, options: Options) -> list[Result]:
    display = {m: target.display(m) for m in target.contents.modules}
    unit_results = UnitRunner(target.contents, display, options.workers,
                              options.timeout).run(target.tests)
    cross = None
    if options.compare_opa:
        from .opa import OpaCrossCheck

        cross = OpaCrossCheck(target.contents, options.entrypoint)
        cross.compare_units(target.tests, unit_results)
    case_results = []
    if target.cases:
        decider = OfflineDecider(target.contents, options.entrypoint)
        for case in target.cases:
            started = time.perf_counter()
            result, outcome = run_case(decider, case, os.path.normpath(case.file))
            result.seconds = time.perf_counter() - started
            if cross is not None and outcome is not None and outcome.input is not None:
                cross.compare_decision(result, outcome.input, outcome.decision)
            case_results.append(result)
    if cross is not None:
        cross.close()
    return unit_results + case_results
