"""``mcp-authz eval``: one decision, as the service would make it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..evaluation import decide_offline, load_request_file


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("eval", help="evaluate one request against a bundle")
    parser.add_argument("--bundle", required=True, help="bundle directory or .tar.gz")
    parser.add_argument("--request", required=True, help="request as JSON or YAML")
    parser.add_argument("--claims", help="the subject's token claims, JSON or YAML "
                        "(instead of a bearer token in the request)")
    parser.add_argument("--explain", action="store_true",
                        help="also print the input document the policy saw")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    request = load_request_file(args.request)
    claims = load_request_file(args.claims) if args.claims else None
    outcome = decide_offline(args.bundle, request, claims)
    output: dict[str, Any] = {"decision": outcome.decision_json()}
    if args.explain:
        output["input"] = outcome.input
    print(json.dumps(output, indent=2, ensure_ascii=False))
    return 0 if outcome.decision.allow else 1
