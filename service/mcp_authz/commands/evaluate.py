"""``mcp-authz eval``: one decision, as the service would make it.

Exit codes: 0 allow, 1 deny, 2 a bad bundle, request or claims file (the message names the file
and, where there is one, the line or field).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from ..errors import RequestError
from ..evaluation import OfflineDecider, load_request_file, request_from_mapping


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
    request = request_from_mapping(load_request_file(args.request),
                                   where=f"{args.request}: request")
    claims = load_request_file(args.claims) if args.claims else None
    if claims is not None and not isinstance(claims, Mapping):
        raise RequestError(args.claims, "token claims must be an object")
    decider = OfflineDecider(args.bundle)
    try:
        outcome = decider.decide(request, claims)
    except RequestError as exc:
        raise RequestError(args.request, str(exc)) from exc
    output: dict[str, Any] = {"decision": outcome.decision_json()}
    if args.explain:
        output["input"] = outcome.input
    print(json.dumps(output, indent=2, ensure_ascii=False))
    return 0 if outcome.decision.allow else 1
