"""``mcp-authz decide``: send one request to a running service and print its decision."""

from __future__ import annotations

import argparse
import json
from typing import Any

import grpc
from google.protobuf import json_format

from .._pb.mcp.authz.v1 import authz_pb2 as pb
from .._pb.mcp.authz.v1 import authz_pb2_grpc as pb_grpc
from ..client import TLSOptions
from ..errors import RequestError
from ..evaluation import load_request_file


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("decide", help="ask a running service for one decision")
    parser.add_argument("--target", default="127.0.0.1:50051", help="HOST:PORT of the service")
    parser.add_argument("--request", help="a DecideRequest as JSON or YAML (snake_case)")
    parser.add_argument("--token", default="", help="the end user's bearer token")
    parser.add_argument("--tenant", default="")
    parser.add_argument("--resource", default="", help="the MCP server's resource URI")
    parser.add_argument("--method", default="tools/call")
    parser.add_argument("--tool", default="", help="tool name (tools/call)")
    parser.add_argument("--arguments", default="{}", help="tool arguments as a JSON object")
    parser.add_argument("--approval-token", action="append", default=[])
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--cacert", default="", help="CA of the service's certificate (TLS)")
    parser.add_argument("--cert", default="", help="client certificate (mutual TLS)")
    parser.add_argument("--key", default="", help="client certificate's key (mutual TLS)")
    parser.set_defaults(run=run)


def channel(args: argparse.Namespace) -> grpc.Channel:
    """Plaintext, or TLS (mutual with --cert/--key) when any TLS option is given."""
    if not (args.cacert or args.cert or args.key):
        return grpc.insecure_channel(args.target)
    try:
        credentials = TLSOptions(ca_file=args.cacert, cert_file=args.cert,
                                 key_file=args.key).credentials()
    except (ValueError, OSError) as exc:
        raise RequestError("--cacert/--cert/--key", str(exc)) from exc
    return grpc.secure_channel(args.target, credentials)


def build_request(args: argparse.Namespace) -> pb.DecideRequest:
    data: dict[str, Any] = load_request_file(args.request) if args.request else {}
    if not isinstance(data, dict):
        raise RequestError(args.request, "must be an object")
    try:
        arguments = json.loads(args.arguments)
    except json.JSONDecodeError as exc:
        raise RequestError("--arguments", f"invalid JSON: {exc.msg}") from exc
    overrides = {"bearer_token": args.token, "tenant": args.tenant, "method": args.method}
    data.update({k: v for k, v in overrides.items() if v})
    if args.resource:
        data.setdefault("server", {})["resource"] = args.resource
    if args.tool:
        data["tool"] = {**data.get("tool", {}), "name": args.tool, "arguments": arguments}
    if args.approval_token:
        data["approval_tokens"] = args.approval_token
    try:
        return json_format.ParseDict(data, pb.DecideRequest(), ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise RequestError(args.request or "request", str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    request = build_request(args)
    with channel(args) as connection:
        try:
            decision = pb_grpc.DecisionServiceStub(connection).Decide(request,
                                                                      timeout=args.timeout)
        except grpc.RpcError as exc:
            print(f"mcp-authz decide: {exc.code().name}: {exc.details()}")
            return 2
    print(json_format.MessageToJson(decision, preserving_proto_field_name=True))
    return 0 if decision.allow else 1
