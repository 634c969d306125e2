"""``mcp-authz test PATH...``: Rego unit tests and decision fixtures, for CI.

Exit codes: 0 everything passed, 1 a test failed, errored or (with ``--compare-opa``) the two
engines disagreed, 2 a usage or load error (message with file:line, before any test runs).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

from ..cpus import available_cpus
from ..errors import MCPAuthzError
from ..policytest.report import FORMATS, render
from ..policytest.runner import Options, collect, run

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(MCPAuthzError):
    code = "usage"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "test", help="run a bundle's Rego unit tests and decision fixtures",
        description="PATH is a bundle directory (its *_test.rego files, *.fixtures.yaml files "
        "and YAML/JSON files under tests/), a .tar.gz bundle, or fixture files.")
    parser.add_argument("paths", nargs="+", metavar="PATH")
    parser.add_argument("--run", metavar="REGEX", dest="run_regex",
                        help="only tests whose name (data.pkg.test_x, or the case name) matches")
    parser.add_argument("--format", choices=FORMATS, default="pretty")
    parser.add_argument("--output", metavar="FILE", help="write the report here (a one-line "
                        "summary still goes to stderr)")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="list every test with its timing, not only the failures")
    parser.add_argument("--compare-opa", action="store_true",
                        help="also run everything on OPA's Go engine and report divergences")
    parser.add_argument("--bundle", metavar="DIR",
                        help="the bundle for fixture files given as PATH (default: the nearest "
                        "directory above them with a .manifest)")
    parser.add_argument("--entrypoint", default="mcp/authz/decision")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds one test process may take (default 120)")
    parser.set_defaults(run=run_command)


def run_command(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    options = Options(run=_regex(args.run_regex), compare_opa=args.compare_opa,
                      entrypoint=args.entrypoint, workers=min(4, available_cpus()),
                      timeout=args.timeout)
    if args.compare_opa:
        from ..policytest.opa import require_opa

        require_opa()
    targets = collect(args.paths, options, args.bundle)
    if not any(t.tests or t.cases for t in targets):
        raise UsageError(f"no tests or fixture cases found in {', '.join(args.paths)}"
                         + (f" matching --run {args.run_regex!r}" if args.run_regex else ""))
    results = run(targets, options)
    seconds = time.perf_counter() - started
    report = render(args.format, results, seconds, args.verbose)
    if args.output:
        try:
            Path(args.output).write_text(report + "\n", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{args.output}: cannot write the report: {exc}") from exc
        print(render("pretty", results, seconds).splitlines()[-1], file=sys.stderr)
    else:
        print(report)
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def _regex(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"--run: not a valid regular expression: {exc}") from exc
