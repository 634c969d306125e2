"""``mcp-authz check PATH``: read and compile a bundle; report ``file:line:col: message``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..bundles import load_bundle
from ..engine import DEFAULT_ENTRYPOINT, compile_bundle


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("check", help="compile a bundle and report problems")
    parser.add_argument("path", help="bundle directory or .tar.gz")
    parser.add_argument("--entrypoint", default=DEFAULT_ENTRYPOINT)
    parser.add_argument("--strict", action="store_true", help="treat warnings as errors")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    contents = load_bundle(args.path)
    compile_bundle(contents, args.entrypoint)
    print(f"{args.path}: ok (revision {contents.revision!r}, {len(contents.modules)} modules)",
          file=sys.stderr)
    return 0
