"""``mcp-authz test``: find a run's bundles, tests and fixtures, check them all, then run them.

Everything that can be wrong with the inputs (an unreadable path, a bundle that does not
compile, a fixture with an unknown field) is found before any test runs and raised as an
``MCPAuthzError`` naming the file and line, so the command exits 2 without a partial report.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..bundles import BundleContents, load_bundle
from ..engine import DEFAULT_ENTRYPOINT
from ..engine_worker import run_worker
from ..errors import BundleError
from ..evaluation import OfflineDecider
from .fixtures import FIXTURE_SUFFIXES, Case, is_fixture_file, load_fixture_file, run_case
from .results import FixtureError, Result
from .units import CRASH_HINT, UnitRunner, UnitTest, discover, isolate

_TARBALL_SUFFIXES = (".tar.gz", ".tgz")
_PROBE_MODULE = "<mcp-authz compile probe>.rego"
_PROBE_SOURCE = "package mcp_authz_compile_probe\n\nok := true\n"
_PROBE_ENTRYPOINT = "mcp_authz_compile_probe/ok"


@dataclass
class Target:
    """One bundle with the tests and fixture cases chosen from it."""

    path: str
    contents: BundleContents
    tests: list[UnitTest] = field(default_factory=list)
    cases: list[Case] = field(default_factory=list)
    #: The bundle with its test rules blanked: what fixtures run on. Test rules never decide,
    #: and one that crashes regopy must cost that test (units.py), not every fixture.
    runnable: BundleContents | None = None

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
        target.runnable = dataclasses.replace(target.contents,
                                              modules=isolate(target.contents, []))
        check_compiles(target.runnable, options.entrypoint if target.cases else None,
                       options.timeout, target.path if os.path.isdir(target.path) else "")
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


def check_compiles(contents: BundleContents, entrypoint: str | None, timeout: float,
                   shown: str = "") -> None:
    """Compile the bundle in a child: a bundle that crashes regopy must not crash us.

    Without an entrypoint every module is still compiled, for a stand-in rule. Errors name
    files as ``shown`` (the bundle directory as the user gave it) joined with the module."""
    modules = dict(contents.modules)
    if entrypoint is None:
        modules[_PROBE_MODULE], entrypoint = _PROBE_SOURCE, _PROBE_ENTRYPOINT
    job = {"op": "compile", "modules": modules, "data": contents.data, "entrypoint": entrypoint}
    records, crash = run_worker(job, timeout)
    if crash:
        raise BundleError(f"{contents.source}: {crash.partition(chr(10))[0]} while compiling "
                          f"the bundle; {CRASH_HINT}")
    if records and records[0].get("error"):
        raise BundleError("\n".join(
            ": ".join(p for p in split_location(line, contents.modules, shown) if p)
            for line in records[0]["error"].splitlines()))


def split_location(line: str, modules: Mapping[str, str], shown: str) -> tuple[str, str]:
    """``("dir/module:line:col", message)`` from an engine's ``module:line:col: message``
    (``("", line)`` when it names no module)."""
    module, sep, rest = line.partition(":")
    if not sep or module not in modules:
        return "", line
    position, _, message = rest.partition(": ")
    where = os.path.normpath(os.path.join(shown, module)) if shown else module
    return f"{where}:{position}", message


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
        decider = OfflineDecider(target.runnable or target.contents, options.entrypoint)
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
