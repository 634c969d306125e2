"""``mcp-authz gateway --config FILE``: an authorizing MCP gateway on streamable HTTP."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "gateway", help="run an authorizing MCP gateway in front of MCP servers")
    parser.add_argument("--config", required=True, help="gateway YAML config (docs/mcp.md)")
    parser.add_argument("--listen", help="HOST:PORT; overrides listen (port 0: any free port)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: the gateway needs the optional `mcp` extra, other commands do not.
    try:
        from ..gateway import build_gateway, load_gateway_config
        from ..integrations.serving import run_app
    except ImportError as exc:
        print(f"mcp-authz gateway: needs the 'mcp' extra (pip install 'mcp-authz[mcp]'): {exc}",
              file=sys.stderr)
        return 2
    config = load_gateway_config(args.config)
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    app, _ = build_gateway(config)
    run_app(app, args.listen or config.listen, log_level="warning")
    return 0
