"""A no-op DecisionService for ``make bench``: the floor of a unary gRPC call in Python.

``Decide`` parses the request (as the real service does) and returns a fixed allow; nothing
else happens. The thread-pool server uses the same options as the real one
(``server.max_workers`` threads); ``--aio`` runs grpc.aio instead, to compare the two.

    python -m mcp_authz.bench_noop --port P [--aio] [--threads 16]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from concurrent import futures
from typing import Any

import grpc

from ._pb.mcp.authz.v1 import authz_pb2 as pb

SERVICE = "mcp.authz.v1.DecisionService"
ANSWER = pb.Decision(decision_id="00000000-0000-4000-8000-000000000000", allow=True,
                     policy_revision="noop")
STATUS = pb.PolicyStatus(active_revision="noop")


def _handlers(decide: Any, status: Any) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(SERVICE, {
        "Decide": grpc.unary_unary_rpc_method_handler(
            decide, request_deserializer=pb.DecideRequest.FromString,
            response_serializer=pb.Decision.SerializeToString),
        "GetPolicyStatus": grpc.unary_unary_rpc_method_handler(
            status, request_deserializer=pb.GetPolicyStatusRequest.FromString,
            response_serializer=pb.PolicyStatus.SerializeToString)})


def serve_threads(port: int, threads: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
    server.add_generic_rpc_handlers((_handlers(lambda request, context: ANSWER,
                                               lambda request, context: STATUS),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    stopping.wait()
    server.stop(0).wait()


async def serve_aio(port: int) -> None:
    async def decide(request: pb.DecideRequest, context: Any) -> pb.Decision:
        return ANSWER

    async def status(request: pb.GetPolicyStatusRequest, context: Any) -> pb.PolicyStatus:
        return STATUS

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_handlers(decide, status),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    await server.stop(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mcp_authz.bench_noop")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--aio", action="store_true")
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args(argv)
    if args.aio:
        asyncio.run(serve_aio(args.port))
    else:
        serve_threads(args.port, args.threads)


if __name__ == "__main__":
    main()
