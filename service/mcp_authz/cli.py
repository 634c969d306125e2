"""``mcp-authz``: the command line. Each command lives in ``commands/<name>.py`` and registers
itself; this module only dispatches and turns errors into messages and exit codes.

Exit codes: 0 success, 1 test failures or a deny the command reports, 2 usage, input or load
errors (a message naming the file, line or field; never a traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .commands import COMMANDS
from .errors import MCPAuthzError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcp-authz", description="Authorization decisions for MCP requests.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except MCPAuthzError as exc:
        print(f"mcp-authz {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
