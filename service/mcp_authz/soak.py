"""``make soak``: sustained load on ``mcp-authz serve --workers N`` while the bundle changes and
the issuer's keys and the callers' tokens rotate; reports errors, false allows and memory.

Every answer is checked against what its revision must say. Revision N of the soak bundle allows
tool ``x`` exactly when N is even, so ``allow`` on an odd revision is a false allow; so is any
allow for the calls that must always be denied whatever the revision (a token for another
audience, an expired token, a token signed by a key the issuer never published, another
tenant). The bundle directory is rewritten every ``--bundle-every`` seconds (watched by the
service); the issuer publishes a new key every ``--rotate-every`` seconds and drops the one
before the previous, and callers mint fresh short-lived tokens with the newest key.

Memory: each worker's resident set (VmRSS) is sampled every 5 s; growth is the last sample
minus the first one after the warm-up (the first tenth of the run), per worker index.

    .venv/bin/python -m mcp_authz.soak --seconds 600 [--workers 2] [--callers 8]

Exit status 1 when there was a false allow.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml

from . import devkeys
from ._pb.mcp.authz.v1 import authz_pb2 as pb
from ._pb.mcp.authz.v1 import authz_pb2_grpc as pb_grpc
from .devstack import start_service
from .loopback import LoopbackServer

ISSUER = "https://soak-issuer.local"
RESOURCE = "https://mcp.example.com/soak"
POLICY = """package mcp.authz

import rego.v1

default decision := {"allow": false, "reasons": [{"code": "tool_unknown", "message": "no"}],
	"obligations": []}

decision := {"allow": true, "reasons": [], "obligations": [{"type": "audit",
	"params": {"level": "basic"}}]} if {
	input.tool.name == "x"
	input.subject.tenant == input.tenant
	data.mcp.soak.allow_x == true
}
"""
#: Calls whose answer must be a deny on every revision, by what is wrong with them.
ALWAYS_DENIED = ("other audience", "expired", "unpublished key", "other tenant")


class Issuer:
    """A JWKS endpoint on loopback whose keys rotate; mints tokens with the newest key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: list[tuple[str, Any]] = []
        self._ids = itertools.count(1)
        self.rotations = 0
        self.rotate()
        self._server = LoopbackServer(lambda method, path, headers: (
            200, {"Content-Type": "application/json"}, json.dumps(self.jwks()).encode()))
        self.url = self._server.url("/jwks.json")

    def rotate(self) -> None:
        """Publish a new key; keep the previous one (tokens in flight), drop older ones."""
        with self._lock:
            self._keys = [*self._keys[-1:], (f"k{next(self._ids)}", devkeys.new_rsa_key())]
            self.rotations += 1

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [devkeys.public_jwk(key, kid, "RS256") for kid, key in self._keys]}

    def token(self, audience: str = RESOURCE, tenant: str = "acme", ttl: int = 60,
              now: float | None = None, key: Any = None) -> str:
        with self._lock:
            kid, newest = self._keys[-1]
        claims = devkeys.user_claims(issuer=ISSUER, audience=audience, sub="alice",
                                     tenant=tenant, scopes=["x"], roles=[], ttl=ttl, now=now)
        return devkeys.mint(key or newest, kid, "RS256", claims)

    def close(self) -> None:
        self._server.close()


def write_revision(directory: Path, n: int) -> None:
    """Revision ``soak-N``: allows tool x exactly when N is even. Files replaced atomically."""
    files = {".manifest": json.dumps({"revision": f"soak-{n}", "roots": ["mcp"]}),
             "mcp/authz/policy.rego": POLICY,
             "mcp/soak/data.json": json.dumps({"allow_x": n % 2 == 0})}
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    outcomes: Counter[str] = field(default_factory=Counter)
    false_allows: list[str] = field(default_factory=list)
    revisions: set[str] = field(default_factory=set)

    def add(self, outcome: str, false_allow: str = "") -> None:
        with self.lock:
            self.outcomes[outcome] += 1
            if false_allow:
                self.false_allows.append(false_allow)


def check(kind: str, decision: pb.Decision) -> str:
    """Why this answer is a false allow ("" when it is not)."""
    if not decision.allow:
        return ""
    if kind != "x":
        return f"{kind} allowed on {decision.policy_revision}"
    number = decision.policy_revision.rpartition("-")[2]
    if not number.isdigit() or int(number) % 2:
        return f"x allowed on odd revision {decision.policy_revision}"
    return ""


class Caller(threading.Thread):
    def __init__(self, target: str, issuer: Issuer, tally: Tally, stop: threading.Event,
                 seed: int):
        super().__init__(daemon=True)
        self._target, self._issuer, self._tally, self._stopping = target, issuer, tally, stop
        self._random = random.Random(seed)
        self._stranger = devkeys.new_rsa_key()

    def _request(self, kind: str, token: str) -> pb.DecideRequest:
        return pb.DecideRequest(request_id=kind, bearer_token=token, tenant="acme",
                                method="tools/call", tool=pb.ToolCall(name="x"),
                                server=pb.ServerRef(id="soak", resource=RESOURCE))

    def _token(self, kind: str) -> str:
        issuer = self._issuer
        if kind == "other audience":
            return issuer.token(audience="https://mcp.example.com/other")
        if kind == "expired":
            return issuer.token(now=time.time() - 600, ttl=60)
        if kind == "unpublished key":
            return issuer.token(key=self._stranger)
        if kind == "other tenant":
            return issuer.token(tenant="globex")
        return issuer.token()

    def run(self) -> None:
        channel = grpc.insecure_channel(self._target)
        stub = pb_grpc.DecisionServiceStub(channel)
        token, minted = self._token("x"), time.monotonic()
        try:
            while not self._stopping.is_set():
                if time.monotonic() - minted > 5:  # tokens rotate: a fresh one every 5 s
                    token, minted = self._token("x"), time.monotonic()
                kind = "x" if self._random.random() < 0.9 else self._random.choice(ALWAYS_DENIED)
                request = self._request(kind, token if kind == "x" else self._token(kind))
                try:
                    decision = stub.Decide(request, timeout=10)
                except grpc.RpcError as exc:
                    self._tally.add(f"error {exc.code().name}")
                    continue
                self._tally.revisions.add(decision.policy_revision)
                self._tally.add("allow" if decision.allow else "deny", check(kind, decision))
        finally:
            channel.close()


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def workers(target: str) -> list[pb.WorkerPolicy]:
    with grpc.insecure_channel(target) as channel:
        try:
            status = pb_grpc.DecisionServiceStub(channel).GetPolicyStatus(
                pb.GetPolicyStatusRequest(), timeout=5)
        except grpc.RpcError:
            return []
    return list(status.workers)


def write_config(directory: Path, issuer: Issuer, bundle: Path) -> Path:
    config = {
        "server": {"listen": "127.0.0.1:0", "grace_seconds": 5},
        "policy": {"bundle": str(bundle), "watch": True, "watch_interval_seconds": 0.5},
        "identity": {"issuers": [{"issuer": ISSUER, "jwks_url": issuer.url,
                                  "algorithms": ["RS256"], "max_lifetime_seconds": 3600,
                                  "jwks_cache_seconds": 5, "jwks_min_refresh_seconds": 1}]},
        "decision_log": {"sink": "file", "path": str(directory / "decisions.log"),
                         "max_bytes": 16 * 1024 * 1024, "backups": 1},
        "metrics": {"enabled": False},
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def soak(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mcp-authz-soak-") as tmp:
        directory = Path(tmp)
        issuer, bundle = Issuer(), directory / "bundle"
        revision = 2
        write_revision(bundle, revision)
        process, target = start_service(write_config(directory, issuer, bundle), directory,
                                        timeout=120, extra_args=("--workers", str(args.workers)))
        tally, stop = Tally(), threading.Event()
        memory: dict[int, list[tuple[float, int]]] = {}
        callers = [Caller(target, issuer, tally, stop, seed) for seed in range(args.callers)]
        started = time.monotonic()
        next_bundle, next_rotation, next_sample = (started + args.bundle_every,
                                                   started + args.rotate_every, started)
        try:
            for caller in callers:
                caller.start()
            while (now := time.monotonic()) < started + args.seconds:
                if now >= next_bundle:
                    revision += 1
                    write_revision(bundle, revision)
                    next_bundle += args.bundle_every
                if now >= next_rotation:
                    issuer.rotate()
                    next_rotation += args.rotate_every
                if now >= next_sample:
                    for worker in workers(target):
                        memory.setdefault(worker.index, []).append(
                            (now - started, rss_kib(worker.pid)))
                    next_sample += 5
                time.sleep(0.1)
        finally:
            stop.set()
            try:
                for caller in callers:
                    caller.join(15)
            finally:  # the service never outlives the soak
                process.stop(30)
                issuer.close()
        stderr = process.log_path.read_text(errors="replace")
    return report(args, tally, memory, revision, issuer.rotations, stderr)


def report(args: argparse.Namespace, tally: Tally, memory: dict[int, list[tuple[float, int]]],
           revision: int, rotations: int, stderr: str) -> dict[str, Any]:
    warm = args.seconds / 10
    growth = {}
    for index, samples in sorted(memory.items()):
        steady = [kib for at, kib in samples if at >= warm and kib] or [0]
        growth[index] = {"first_kib": steady[0], "last_kib": steady[-1],
                         "max_kib": max(steady), "growth_kib": steady[-1] - steady[0]}
    calls = sum(tally.outcomes.values())
    return {
        "seconds": args.seconds, "workers": args.workers, "callers": args.callers,
        "calls": calls, "calls_per_second": round(calls / args.seconds, 1),
        "outcomes": dict(tally.outcomes),
        "errors": sum(v for k, v in tally.outcomes.items() if k.startswith("error")),
        "false_allows": len(tally.false_allows), "false_allow_examples": tally.false_allows[:10],
        "bundle_revisions_written": revision - 1, "revisions_seen": len(tally.revisions),
        "key_rotations": rotations, "memory_per_worker": growth,
        "worker_restarts": stderr.count("restarting in"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float,
                        default=float(os.environ.get("SOAK_SECONDS", "600")))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--bundle-every", type=float, default=5.0)
    parser.add_argument("--rotate-every", type=float, default=20.0)
    parser.add_argument("--out", default="bench-results-soak.json")
    args = parser.parse_args()
    result = soak(args)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"soak: {result['seconds']:.0f}s, {result['workers']} workers, "
          f"{result['callers']} callers")
    for name in ("calls", "calls_per_second", "outcomes", "errors", "false_allows",
                 "bundle_revisions_written", "revisions_seen", "key_rotations",
                 "worker_restarts"):
        print(f"  {name:26s} {result[name]}")
    for index, m in result["memory_per_worker"].items():
        print(f"  worker {index} RSS KiB: first {m['first_kib']} last {m['last_kib']} "
              f"max {m['max_kib']} growth {m['growth_kib']:+d}")
    if result["false_allow_examples"]:
        print("  false allows:", *result["false_allow_examples"], sep="\n    ")
    sys.exit(1 if result["false_allows"] else 0)


if __name__ == "__main__":
    main()
