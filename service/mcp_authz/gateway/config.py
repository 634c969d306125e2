"""The gateway's configuration: one YAML file, validated at start, every problem named by path.

    listen: 127.0.0.1:8080
    path: /mcp
    resource: https://mcp.example.com/gateway     # canonical URI = the audience of user tokens
    authorization_servers: [https://issuer.example.com]
    tenant: acme                                  # the tenant this gateway serves
    decision_service:
      target: 127.0.0.1:50051
      deadline_seconds: 1.0
      tls: {ca_file: ca.pem, cert_file: client.pem, key_file: client-key.pem}
    upstreams:
      - name: files                               # the server id the policy sees
        command: [npx, -y, "@modelcontextprotocol/server-filesystem", /srv/mcp/acme]
      - name: git
        url: http://127.0.0.1:9000/mcp
        headers: ["X-Api-Key: the gateway's own credential"]

Several upstreams: tool and prompt names are namespaced ``<name>__<tool>`` (``namespace:
always`` does it for one upstream too; ``never`` refuses duplicate names at start). Resource URIs
are not renamed (see upstreams.py for how they are routed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import _build  # the one YAML-path validating builder (config.py)
from ..errors import ConfigError

NAMESPACE_SEPARATOR = "__"


@dataclass(frozen=True)
class TLSConfig:
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""


@dataclass(frozen=True)
class DecisionServiceConfig:
    target: str = "127.0.0.1:50051"
    deadline_seconds: float = 1.0
    max_attempts: int = 3
    tls: TLSConfig | None = None


@dataclass(frozen=True)
class UpstreamConfig:
    """An MCP server: a stdio ``command`` or a streamable HTTP ``url`` (exactly one)."""

    name: str = ""
    command: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    """``NAME=value`` entries added to the command's environment."""
    cwd: str = ""
    url: str = ""
    headers: tuple[str, ...] = ()
    """``Name: value`` headers the gateway sends upstream (its own credentials, never the
    user's token)."""
    mode: str = "legacy"
    """Protocol negotiation with the upstream: ``legacy`` (initialize), ``auto``."""
    timeout_seconds: float = 60.0


@dataclass(frozen=True)
class GatewayConfig:
    listen: str = "127.0.0.1:8080"
    path: str = "/mcp"
    resource: str = ""
    authorization_servers: tuple[str, ...] = ()
    tenant: str = ""
    server_id: str = "gateway"
    namespace: str = "auto"
    allowed_hosts: tuple[str, ...] = ()
    """Host headers accepted (DNS-rebinding protection); empty: loopback names when listening
    on loopback, anything otherwise."""
    decision_service: DecisionServiceConfig = field(default_factory=DecisionServiceConfig)
    upstreams: tuple[UpstreamConfig, ...] = ()
    log_level: str = "INFO"
    base_dir: str = "."

    def path_of(self, value: str) -> str:
        """A file path from the config, relative to the config file's directory."""
        if not value or Path(value).is_absolute():
            return value
        return str((Path(self.base_dir) / value).resolve())


def load_gateway_config(path: str) -> GatewayConfig:
    try:
        raw: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise ConfigError([f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}"]) from exc
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: the top level must be a mapping"])
    raw = {**raw, "base_dir": str(Path(path).resolve().parent)}
    config = _build(GatewayConfig, raw, "", problems)
    problems.extend(_checks(config))
    if problems:
        raise ConfigError(problems)
    return config


def _checks(config: GatewayConfig) -> list[str]:
    problems = []
    host, _, port = config.listen.rpartition(":")
    if not host or not port.isdigit():
        problems.append(f"listen: expected HOST:PORT, got {config.listen!r}")
    if not config.path.startswith("/"):
        problems.append("path: must start with '/'")
    if not config.resource.startswith(("https://", "http://")):
        problems.append("resource: required, the gateway's canonical https:// URI")
    if not config.authorization_servers:
        problems.append("authorization_servers: at least one issuer URL is required")
    if not config.tenant:
        problems.append("tenant: required (the tenant this gateway serves)")
    if config.namespace not in ("auto", "always", "never"):
        problems.append("namespace: must be auto, always or never")
    if not config.decision_service.target:
        problems.append("decision_service.target: required (HOST:PORT)")
    if not config.upstreams:
        problems.append("upstreams: at least one upstream is required")
    names = [u.name for u in config.upstreams]
    for i, upstream in enumerate(config.upstreams):
        problems.extend(_upstream_checks(f"upstreams[{i}]", upstream, names))
    return problems


def _upstream_checks(where: str, upstream: UpstreamConfig, names: list[str]) -> list[str]:
    problems = []
    if not upstream.name or NAMESPACE_SEPARATOR in upstream.name:
        problems.append(f"{where}.name: required, without '{NAMESPACE_SEPARATOR}'")
    elif names.count(upstream.name) > 1:
        problems.append(f"{where}.name: {upstream.name!r} is used twice")
    if bool(upstream.command) == bool(upstream.url):
        problems.append(f"{where}: set exactly one of command and url")
    if upstream.mode not in ("legacy", "auto"):
        problems.append(f"{where}.mode: must be legacy or auto")
    for j, entry in enumerate(upstream.env):
        if "=" not in entry:
            problems.append(f"{where}.env[{j}]: expected NAME=value")
    for j, entry in enumerate(upstream.headers):
        if ":" not in entry:
            problems.append(f"{where}.headers[{j}]: expected 'Name: value'")
    if upstream.headers and not upstream.url:
        problems.append(f"{where}.headers: only for url upstreams")
    if (upstream.env or upstream.cwd) and not upstream.command:
        problems.append(f"{where}: env and cwd are only for command upstreams")
    return problems
