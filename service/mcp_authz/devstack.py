"""A local stack of real processes on loopback: the decision service, the example MCP server and
the gateway. Used by ``make demo``, the MCP benchmark and the end-to-end tests.

Every process is started with a command line a user could type, prints where it listens, and is
stopped with SIGTERM (then SIGKILL after a grace period). Output goes to log files in the stack's
directory, so a failing start can be explained.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import grpc
import yaml

from . import devkeys
from ._pb.mcp.authz.v1 import authz_pb2 as pb
from ._pb.mcp.authz.v1 import authz_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_SERVER = ROOT / "examples" / "mcp_server" / "server.py"
NPM_PREFIX = ROOT / ".npm-prefix"
FILESYSTEM_SERVER = (NPM_PREFIX / "node_modules" / "@modelcontextprotocol" / "server-filesystem"
                     / "dist" / "index.js")
READY = "listening on "

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """One child process; ``url`` is what it printed after ``listening on``, if it does."""

    def __init__(self, name: str, command: Sequence[str], log_dir: Path,
                 cwd: Path | None = None, wait_for_url: bool = True, timeout: float = 30.0,
                 announces_url: bool = True):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[str] = self.log_path.open("w")
        # stdout is a pipe only to read the ``listening on`` line; a child that announces none
        # (the decision service, whose decision log is on stdout) writes it to the log, so it
        # can never block on a pipe nobody reads
        self.proc = subprocess.Popen(list(command), cwd=cwd, stderr=self._log, text=True,
                                     stdout=subprocess.PIPE if announces_url else self._log)
        self.url = ""
        if wait_for_url:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> str:
        """Wait for the ``listening on URL`` line; RuntimeError (with the log) otherwise."""
        if not self.url:
            self.url = self._read_url(timeout)
        return self.url

    def _read_url(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith(READY):
                return line[len(READY):].strip()
            if not line and self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"{self.name} did not start; see {self.log_path}:\n"
                           + self.log_path.read_text()[-3000:])

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def start_service(config: Path, log_dir: Path, timeout: float = 30.0,
                  extra_args: Sequence[str] = ()) -> tuple[Process, str]:
    """``mcp-authz serve`` on a free port; returns it and its target once a policy is active.

    ``extra_args`` are added to the command line (e.g. ``--workers 2``)."""
    target = f"127.0.0.1:{free_port()}"
    process = Process("decision-service", [sys.executable, "-m", "mcp_authz.cli", "serve",
                                           "--config", str(config), "--listen", target,
                                           *extra_args],
                      log_dir, wait_for_url=False, announces_url=False)
    channel = grpc.insecure_channel(target)
    try:
        stub = pb_grpc.DecisionServiceStub(channel)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.running():
            try:
                if stub.GetPolicyStatus(pb.GetPolicyStatusRequest(), timeout=1).active_revision:
                    return process, target
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    finally:
        channel.close()
    process.stop()
    raise RuntimeError(f"the decision service did not start; see {process.log_path}:\n"
                       + process.log_path.read_text()[-3000:])


def start_example(root: Path, authz: str, log_dir: Path, tenant: str = "acme",
                  resource: str = "https://mcp.example.com/files",
                  issuer: str = "https://dev-issuer.mcp-authz.local",
                  wait: bool = True, protected: bool = True) -> Process:
    """The example server; ``protected=False`` runs it without authorization (a baseline)."""
    return Process("example-server" if protected else "example-server-baseline", [
        sys.executable, str(EXAMPLE_SERVER), "--root", str(root), "--authz", authz,
        "--tenant", tenant, "--resource", resource, "--issuer", issuer,
        "--listen", "127.0.0.1:0", *(() if protected else ("--no-authz",))],
        log_dir, wait_for_url=wait)


def write_gateway_config(path: Path, *, authz: str, resource: str, issuer: str, tenant: str,
                         upstreams: list[dict[str, Any]], **extra: Any) -> Path:
    document = {"listen": "127.0.0.1:0", "resource": resource,
                "authorization_servers": [issuer], "tenant": tenant,
                "decision_service": {"target": authz, "deadline_seconds": 2.0},
                "upstreams": upstreams, **extra}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def start_gateway(config: Path, log_dir: Path, name: str = "gateway",
                  wait: bool = True) -> Process:
    return Process(name, [sys.executable, "-m", "mcp_authz.cli", "gateway", "--config",
                          str(config)], log_dir, wait_for_url=wait)


def filesystem_upstream(name: str, directory: Path) -> dict[str, Any]:
    """The npm reference filesystem server (installed by ``make mcp-servers``)."""
    if not FILESYSTEM_SERVER.exists():
        raise RuntimeError(f"{FILESYSTEM_SERVER} is missing: run `make mcp-servers`")
    return {"name": name, "command": ["node", str(FILESYSTEM_SERVER), str(directory)]}


def git_upstream(name: str, repository: Path, cwd: Path) -> dict[str, Any]:
    """The PyPI reference git server, from this environment's scripts."""
    command = Path(sys.executable).parent / "mcp-server-git"
    return {"name": name, "command": [str(command), "--repository", str(repository)],
            "cwd": str(cwd)}


class DevIdentity:
    """Tokens signed with the development keys ``mcp-authz dev-init`` wrote (demo, benchmark)."""

    def __init__(self, directory: Path):
        self._user_key = devkeys.load_private_key(str(directory / "issuer-key.pem"))
        self._approval_key = devkeys.load_private_key(str(directory / "approval-key.pem"))

    def token(self, sub: str, tenant: str, scopes: Sequence[str] = (),
              roles: Sequence[str] = (), audience: str = devkeys.DEV_AUDIENCE,
              ttl: int = 900) -> str:
        claims = devkeys.user_claims(issuer=devkeys.DEV_ISSUER, audience=audience, sub=sub,
                                     tenant=tenant, scopes=list(scopes), roles=list(roles),
                                     ttl=ttl)
        return devkeys.mint(self._user_key, "dev-1", "RS256", claims)

    def approval(self, approver: str, digest: str, roles: Sequence[str] = ("approver",)) -> str:
        claims = devkeys.approval_claims(issuer=devkeys.DEV_APPROVAL_ISSUER, approver=approver,
                                         digest=digest, roles=list(roles), ttl=120)
        return devkeys.mint(self._approval_key, "approvals-1", "ES256", claims)


def dev_setup(directory: Path, bundle: Path = ROOT / "policies") -> tuple[Path, DevIdentity]:
    """Development keys and a service config in ``directory`` (default bundle)."""
    config = devkeys.write_dev_setup(str(directory), str(bundle))
    document = yaml.safe_load(config.read_text())
    document["policy"]["watch"] = False
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    return config, DevIdentity(directory)
