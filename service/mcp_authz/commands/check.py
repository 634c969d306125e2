"""``mcp-authz check PATH``: compile a bundle and lint it for regopy's differences from OPA.

Prints ``file:line:col: severity: message [rule]``. Exit codes: 0 no errors (warnings are
printed), 1 warnings with ``--strict``, 2 errors: the bundle does not read or compile, or calls
a function that exists nowhere (regopy would fail only when that call is evaluated).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

from ..bundles import load_bundle
from ..engine import DEFAULT_ENTRYPOINT, is_builtin
from ..errors import BundleError
from ..policytest.lint import ERROR, WARNING, lint
from ..policytest.runner import check_compiles, split_location

EXIT_OK, EXIT_WARNINGS, EXIT_ERRORS = 0, 1, 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("check", help="compile a bundle and report problems")
    parser.add_argument("path", help="bundle directory or .tar.gz")
    parser.add_argument("--entrypoint", default=DEFAULT_ENTRYPOINT)
    parser.add_argument("--strict", action="store_true",
                        help="treat warnings as errors (exit 1 when there are any)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    contents = load_bundle(args.path)
    prefix = args.path if os.path.isdir(args.path) else ""
    findings = [dataclasses.replace(f, file=_shown(prefix, f.file))
                for f in lint(contents.modules, is_builtin)]
    problems = [str(f) for f in findings]
    try:
        check_compiles(contents, args.entrypoint, timeout=120.0)
        compiled = True
    except BundleError as exc:
        compiled = False
        errors = [split_location(line, contents.modules, prefix) for line in str(exc).splitlines()]
        problems = [f"{where}: error: {message}" if where else f"error: {message}"
                    for where, message in errors] + problems
    for problem in problems:
        print(problem)
    errors = sum(f.severity == ERROR for f in findings) + (0 if compiled else 1)
    warnings = sum(f.severity == WARNING for f in findings)
    print(f"{args.path}: {'compiled' if compiled else 'does not compile'}; {errors} error(s), "
          f"{warnings} warning(s) (revision {contents.revision!r}, {len(contents.modules)} "
          "modules)", file=sys.stderr)
    if errors:
        return EXIT_ERRORS
    return EXIT_WARNINGS if warnings and args.strict else EXIT_OK


def _shown(prefix: str, module: str) -> str:
    return os.path.normpath(os.path.join(prefix, module)) if prefix else module

