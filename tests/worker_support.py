"""A real ``mcp-authz serve --workers N`` process group on loopback, for tests.

``worker_group`` starts the supervisor as a subprocess (ephemeral gRPC and ops ports), waits
until every worker listens, collects its stdout (decision log lines) and stderr, and always
stops it with SIGTERM (SIGKILL if it does not exit), so no process or port outlives a test.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from mcp_authz._pb.mcp.authz.v1 import authz_pb2 as pb
from mcp_authz._pb.mcp.authz.v1 import authz_pb2_grpc as pb_grpc
from support import wait_until

# a group ("(N worker processes)") or, with --workers 1, the single process ("(policy ...")
LISTENING_RE = re.compile(r"listening on [\d.]+:(\d+) \((?:(\d+) worker processes|policy)")
OPS_RE = re.compile(r"metrics and health on http://[\d.]+:(\d+)")


@dataclass
class WorkerGroup:
    process: subprocess.Popen[str]
    stderr_path: Path
    port: int = 0
    ops_port: int = 0
    stdout_lines: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stub(self) -> tuple[grpc.Channel, pb_grpc.DecisionServiceStub]:
        """A new channel (one connection: the kernel picks its worker) and its stub."""
        channel = grpc.insecure_channel(self.target, options=[("grpc.use_local_subchannel_pool",
                                                                1)])
        return channel, pb_grpc.DecisionServiceStub(channel)

    def status(self) -> pb.PolicyStatus:
        channel, stub = self.stub()
        with channel:
            return stub.GetPolicyStatus(pb.GetPolicyStatusRequest(), timeout=10)

    def workers(self) -> list[pb.WorkerPolicy]:
        return list(self.status().workers)

    def stub_on_each_worker(self, count: int) -> dict[int, tuple[grpc.Channel,
                                                                  pb_grpc.DecisionServiceStub]]:
        """One channel per worker pid (opening channels until each of ``count`` is hit)."""
        found: dict[int, tuple[grpc.Channel, pb_grpc.DecisionServiceStub]] = {}
        for _ in range(200):
            channel, stub = self.stub()
            pid = stub.GetPolicyStatus(pb.GetPolicyStatusRequest(), timeout=10).worker_pid
            if pid in found:
                channel.close()
            else:
                found[pid] = (channel, stub)
            if len(found) == count:
                return found
        raise AssertionError(f"connections reached only {len(found)} of {count} workers")

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        url = f"http://127.0.0.1:{self.ops_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def readyz(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ops_port}/readyz",
                                        timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def log_entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.stdout_lines)]


@contextmanager
def worker_group(config: Path, workers: int, tmp_path: Path,
                 extra_args: tuple[str, ...] = (), prefix: tuple[str, ...] = ()
                 ) -> Iterator[WorkerGroup]:
    """``prefix`` goes before the command (e.g. ``unshare`` for a private mount namespace)."""
    stderr_path = tmp_path / "supervisor.stderr"
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "mcp_authz.cli", "serve", "--config", str(config),
             "--listen", "127.0.0.1:0", "--workers", str(workers), *extra_args],
            stdout=subprocess.PIPE, stderr=stderr, text=True)
    group = WorkerGroup(process, stderr_path)
    reader = threading.Thread(target=_collect, args=(process, group.stdout_lines), daemon=True)
    reader.start()
    try:
        match = wait_until(lambda: LISTENING_RE.search(group.stderr()) or process.poll(),
                           "the workers to listen", 60)
        assert process.poll() is None, group.stderr()
        group.port = int(match.group(1))
        ops = OPS_RE.search(group.stderr())
        group.ops_port = int(ops.group(1)) if ops else 0
        yield group
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(5)
        if process.stdout is not None:
            process.stdout.close()


def _collect(process: subprocess.Popen[str], lines: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
