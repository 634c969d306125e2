"""Load for ``make bench``: real servers in their own processes, driven by h2load.

h2load (Debian's nghttp2-client) sends pre-encoded gRPC frames (a 5-byte prefix: 0, then the
message length big-endian) over HTTP/2 and costs far less CPU than a Python client, so on a
2-core machine the cores go to the server. A server's CPU time is read from /proc for its
whole process group (supervisor and workers) around each run, so "CPU per call" is what the
service itself spent. Latency percentiles come from h2load's per-request log.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message
from prometheus_client.parser import text_string_to_metric_families

from ._pb.mcp.authz.v1 import authz_pb2 as pb
from ._pb.mcp.authz.v1 import authz_pb2_grpc as pb_grpc

DECIDE = "/mcp.authz.v1.DecisionService/Decide"
DECIDE_BATCH = "/mcp.authz.v1.DecisionService/DecideBatch"
_REQUESTS_RE = re.compile(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, "
                          r"(\d+) failed, (\d+) errored")
_RATE_RE = re.compile(r"finished in [\d.]+\w+, ([\d.]+) req/s")


def ensure_h2load() -> str | None:
    """h2load's path; installs nghttp2-client with apt-get when missing and allowed (root)."""
    found = shutil.which("h2load")
    if found or not shutil.which("apt-get") or os.geteuid() != 0:
        return found
    print("installing h2load (apt-get install nghttp2-client)...", file=sys.stderr, flush=True)
    for command in (["apt-get", "install", "-y", "-q", "nghttp2-client"],
                    ["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q",
                                                  "nghttp2-client"]):
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        if shutil.which("h2load"):
            break
    return shutil.which("h2load")


def write_frame(message: Message, path: Path) -> Path:
    body = message.SerializeToString()
    path.write_bytes(b"\x00" + len(body).to_bytes(4, "big") + body)
    return path


def percentiles_us(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples) or [0.0]

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    return {"p50_us": at(0.50), "p99_us": at(0.99), "mean_us": sum(ordered) / len(ordered)}


def h2load(port: int, method: str, frame: Path, *, clients: int, streams: int,
           seconds: float, rate: float | None = None, warmup: float = 1.0) -> dict[str, Any]:
    """Closed loop (``rate`` None: every client keeps ``streams`` calls in flight) or open loop
    (``rate`` requests/s in total, spread over the clients) for ``seconds``."""
    with tempfile.TemporaryDirectory() as directory:
        log = Path(directory, "requests.tsv")
        command = ["h2load", "-c", str(clients), "-m", str(streams), "-D", f"{seconds:g}",
                   "--warm-up-time", f"{warmup:g}", "-H", "content-type: application/grpc",
                   "-H", "te: trailers", "-d", str(frame), "--log-file", str(log)]
        if rate is not None:
            command += ["--rps", f"{max(rate / clients, 0.1):.2f}"]
        done = subprocess.run([*command, f"http://127.0.0.1:{port}{method}"],
                              capture_output=True, text=True, timeout=seconds + warmup + 60)
        counts = _REQUESTS_RE.search(done.stdout)
        rate_match = _RATE_RE.search(done.stdout)
        if counts is None or rate_match is None:
            raise RuntimeError(f"h2load failed: {done.stdout[-500:]} {done.stderr[-500:]}")
        latencies = [float(line.split("\t")[2]) for line in log.read_text().splitlines()
                     if line.count("\t") >= 2]
    return {"ops": int(counts.group(2)), "per_s": float(rate_match.group(1)),
            "failed": int(counts.group(4)) + int(counts.group(5)),
            "clients": clients, "streams": streams, "offered_per_s": rate,
            **percentiles_us(latencies)}


def per_call_us(spent: float, calls: int, seconds: float, warmup: float = 1.0) -> float:
    """CPU seconds spent over an h2load run per counted call, in µs. h2load does not count the
    warm-up's calls, but their CPU is spent: it is scaled away by time."""
    return spent * seconds / (seconds + warmup) / max(calls, 1) * 1e6


def scrape(port: int, name: str) -> float:
    """The sum of a metric's samples on a server's ``/metrics`` (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the supervisor and its workers)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        queue.extend(int(c) for c in children)
    return found


def cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Served:
    """A server process (tree) under load."""

    process: subprocess.Popen[bytes]
    port: int

    def pids(self) -> list[int]:
        return process_tree(self.process.pid)

    def measure(self, method: str, frame: Path, per_message: int = 1,
                **load: Any) -> dict[str, Any]:
        """One h2load run, with the server's CPU per call (per decision with ``per_message``)."""
        pids = self.pids()
        before = cpu_seconds(pids)
        result = h2load(self.port, method, frame, **load)
        result["server_cpu_us_per_op"] = per_call_us(cpu_seconds(pids) - before,
                                                     result["ops"] * per_message,
                                                     load["seconds"], load.get("warmup", 1.0))
        return result


@contextmanager
def serve(command: list[str], port: int, env: Mapping[str, str] | None = None,
          workers: int = 1) -> Iterator[Served]:
    """Run a server command (it must listen on ``port``) until the block ends."""
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, env={**os.environ, **(env or {})},
                                   stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            wait_ready(port, workers, process)
            yield Served(process, port)
        except BaseException:
            stderr.seek(0)
            sys.stderr.write(stderr.read().decode(errors="replace")[-3000:])
            raise
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_ready(port: int, workers: int, process: subprocess.Popen[bytes],
               timeout: float = 120) -> None:
    """Until ``workers`` processes answer GetPolicyStatus with an active policy (the no-op
    server answers with a fixed one)."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.DecisionServiceStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            try:
                status = stub.GetPolicyStatus(pb.GetPolicyStatusRequest(), timeout=2)
                serving = [w for w in status.workers if w.serving]
                if status.active_revision and (workers == 1 or len(serving) >= workers):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"server on port {port} did not become ready")
