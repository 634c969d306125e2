"""One typed configuration, read from a YAML file plus environment overrides, validated at start.

Every problem is collected and reported with its YAML path (``identity.issuers[0].jwks_url: ...``)
before anything starts. The result is a tree of frozen dataclasses: nothing changes it later.

Environment overrides: ``MCP_AUTHZ__SECTION__KEY=value`` sets ``section.key`` (the value is read
as a YAML scalar), e.g. ``MCP_AUTHZ__SERVER__LISTEN=0.0.0.0:50051``.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from .errors import ConfigError
from .signing import HMAC_ALGORITHMS, SIGNING_ALGORITHMS

ENV_PREFIX = "MCP_AUTHZ__"
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})


@dataclass(frozen=True)
class TlsConfig:
    """TLS for one listener (tls.py): the server's certificate and key, and for mutual TLS the
    CA that signs client certificates. ``require_client_cert`` refuses a connection without a
    valid client certificate; ``allowed_client_identities`` (SAN DNS names, SAN URIs or subject
    CNs; empty: any certificate the CA signed) lets only those callers in: anyone else gets
    UNAUTHENTICATED (gRPC) or 401 (HTTP) and no decision. The files are read again when they
    change, at most every ``reload_interval_seconds``, without a restart."""

    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""
    require_client_cert: bool = True
    allowed_client_identities: tuple[str, ...] = ()
    reload_interval_seconds: float = 5.0


@dataclass(frozen=True)
class ServerConfig:
    """The gRPC listener."""

    listen: str = "127.0.0.1:50051"
    max_workers: int = 16
    max_concurrent_requests: int = 256
    max_message_bytes: int = 4 * 1024 * 1024
    grace_seconds: float = 10.0
    reflection: bool = True
    #: Worker processes serving ``listen`` together (SO_REUSEPORT, workers.py); 0 = one per
    #: core, 1 = a single process with no supervisor.
    workers: int = 0
    #: Evaluations one worker runs at once (regopy releases the GIL while it evaluates, so one
    #: process can keep several cores busy); 0 = the cores divided among the workers, at
    #: least 1. Calls beyond it wait for a turn within their deadline.
    engine_threads: int = 0
    tls: TlsConfig | None = None


@dataclass(frozen=True)
class CacheConfig:
    """The decision cache (decision_cache.py): off unless enabled. Entries are keyed by the
    active revision and the canonical input document (time excluded), and never outlive
    ``max_age_seconds``, the subject token's expiry or the revision."""

    enabled: bool = False
    max_entries: int = 10000
    max_age_seconds: float = 5.0


@dataclass(frozen=True)
class SigningConfig:
    """The key bundles must be signed with (OPA's .signatures.json). When this section is set,
    an unsigned or badly signed bundle is refused. ``algorithm`` defaults to the key's own
    (RS256 for RSA, ES256 for P-256, HS256 for a secret)."""

    public_key_file: str = ""
    secret_file: str = ""
    key_id: str = ""
    algorithm: str = ""
    scope: str = ""


@dataclass(frozen=True)
class ShadowConfig:
    """A candidate bundle (path or URL) evaluated on the same live requests; its answers are
    compared with the live ones and never returned (shadow.py)."""

    bundle: str = ""
    queue_size: int = 1000
    recent_disagreements: int = 100


@dataclass(frozen=True)
class PolicyConfig:
    """Where the bundle comes from and which rule decides.

    ``bundle`` is a directory or tarball (watched when ``watch``) or an http(s) URL (polled every
    ``poll_interval_seconds`` with ETag, jitter and exponential backoff up to
    ``backoff_max_seconds``; the last activated bundle is kept in ``persist_dir``).
    ``precheck_timeout_seconds`` (0 turns it off): each new bundle is first compiled and
    smoke-evaluated in a child process, so a bundle that crashes the engine is refused instead
    of taking the service down."""

    bundle: str = "policies"
    entrypoint: str = "mcp/authz/decision"
    watch: bool = True
    watch_interval_seconds: float = 2.0
    poll_interval_seconds: float = 30.0
    poll_jitter: float = 0.1
    backoff_max_seconds: float = 300.0
    timeout_seconds: float = 10.0
    bearer_token_file: str = ""
    bearer_token_env: str = ""
    ca_file: str = ""
    persist_dir: str = ""
    max_file_bytes: int = 64 * 1024 * 1024
    max_total_bytes: int = 256 * 1024 * 1024
    precheck_timeout_seconds: float = 300.0
    signing: SigningConfig | None = None
    shadow: ShadowConfig | None = None


@dataclass(frozen=True)
class ClaimsConfig:
    """Which token claims hold what. ``roles`` may be a list or an object keyed by tenant."""

    tenant: str = "tenant"
    roles: str = "roles"
    groups: str = "groups"
    client_id: str = "azp"


@dataclass(frozen=True)
class KeySourceConfig:
    """A token issuer and where its public keys come from (a JWKS file or URL)."""

    issuer: str = ""
    jwks_file: str = ""
    jwks_url: str = ""
    jwks_ca_file: str = ""
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    leeway_seconds: int = 30
    max_lifetime_seconds: int = 3600
    jwks_cache_seconds: int = 300
    jwks_max_stale_seconds: int = 86400
    jwks_min_refresh_seconds: float = 10.0


@dataclass(frozen=True)
class IssuerConfig(KeySourceConfig):
    """An identity provider whose access tokens the service accepts."""

    claims: ClaimsConfig = field(default_factory=ClaimsConfig)


@dataclass(frozen=True)
class ApprovalConfig(KeySourceConfig):
    """The approval service's key: approval tokens are verified against it and nothing else."""

    algorithms: tuple[str, ...] = ("ES256", "RS256")
    leeway_seconds: int = 10
    max_lifetime_seconds: int = 900
    roles_claim: str = "roles"


@dataclass(frozen=True)
class IdentityConfig:
    issuers: tuple[IssuerConfig, ...] = ()
    approval: ApprovalConfig | None = None
    max_token_bytes: int = 16384
    #: Verified bearer tokens kept (by SHA-256 of the token and the audience) until their
    #: ``exp`` or for ``token_cache_seconds``, whichever comes first; 0 turns the cache off.
    token_cache_size: int = 10000
    token_cache_seconds: float = 300.0


@dataclass(frozen=True)
class LimitsConfig:
    """Bounds on what one request may carry; each is reported by name when hit."""

    max_depth: int = 32
    max_keys: int = 1000
    max_string_bytes: int = 65536
    max_arguments_bytes: int = 256 * 1024
    max_batch: int = 128
    max_tools: int = 2000
    max_approval_tokens: int = 8
    #: Evaluation time (evalguard.py, docs/limits.md). A request is denied (policy_error) when
    #: its evaluation runs past ``max_evaluation_ms``; any evaluation still running after
    #: ``evaluation_abort_ms`` ends the worker process (the supervisor starts a fresh one).
    max_evaluation_ms: int = 1000
    evaluation_abort_ms: int = 10000
    #: The deadline of a gRPC call that carries none; an expired call gets DEADLINE_EXCEEDED.
    default_deadline_ms: int = 10000


@dataclass(frozen=True)
class DevelopmentConfig:
    """Set only by ``mcp-authz dev-init``: keys that mint development tokens.

    Never in production."""

    signing_key: str = ""
    key_id: str = ""
    issuer: str = ""
    approval_signing_key: str = ""
    approval_key_id: str = ""
    audience: str = ""


@dataclass(frozen=True)
class DecisionLogConfig:
    """One JSON line per decision (audit.py), written off the request path.

    ``mask`` and ``drop`` are dotted paths into the input document (``*`` matches any key or
    index): a masked value is replaced by ``"<masked>"``, a dropped one is left out. The policy
    adds paths per decision with the optional rule ``data.mcp.authz.log_mask``."""

    enabled: bool = True
    sink: str = "stdout"
    path: str = ""
    max_bytes: int = 100 * 1024 * 1024
    backups: int = 5
    queue_size: int = 10000
    mask: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    mask_sensitive_tools: bool = True
    policy_masks: bool = True


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus ``/metrics`` plus ``/healthz`` and ``/readyz`` on one HTTP port (metrics.py).

    Per-tenant and per-tool labels are off by default; when on, at most ``max_label_values``
    distinct values are kept per label and the rest are counted as ``other``."""

    enabled: bool = True
    listen: str = "127.0.0.1:9090"
    per_tenant_labels: bool = False
    per_tool_labels: bool = False
    max_label_values: int = 100
    tls: TlsConfig | None = None


MCP_PASSTHROUGH_METHODS = (
    "initialize", "notifications/*", "ping", "tools/list", "prompts/list", "resources/list",
    "resources/templates/list", "completion/complete", "logging/setLevel",
)


@dataclass(frozen=True)
class ExtAuthzConfig:
    """Envoy ext_authz v3 (adapters/ext_authz.py). ``listen`` empty: on the native gRPC server.

    Tenant, server resource and server id come from the route's context extensions (``tenant``,
    ``server_resource``, ``server_id``), then from the named headers (which the gateway must set,
    never pass through from clients), then from the static values here."""

    enabled: bool = False
    listen: str = ""
    tenant: str = ""
    server_id: str = ""
    server_resource: str = ""
    tenant_header: str = ""
    server_resource_header: str = ""
    approval_header: str = "mcp-approval-token"
    resource_metadata_url: str = ""
    max_body_bytes: int = 1024 * 1024
    passthrough_methods: tuple[str, ...] = MCP_PASSTHROUGH_METHODS


@dataclass(frozen=True)
class ExtMcpConfig:
    """agentgateway ExtMcp (adapters/ext_mcp.py). ``listen`` empty: on the native gRPC server.

    The ``*_key`` options name ``metadata_context`` fields (the gateway's CEL ``metadata``);
    the token falls back to the forwarded ``token_header``. CheckResponse finds the request's
    obligations by ``correlation_key`` in a bounded cache (docs/gateways.md)."""

    enabled: bool = False
    listen: str = ""
    token_key: str = "authorization"
    token_header: str = "authorization"
    tenant_key: str = "tenant"
    server_resource_key: str = "server_resource"
    approval_key: str = "approval_tokens"
    correlation_key: str = "request_id"
    tenant: str = ""
    server_resource: str = ""
    decision_cache_size: int = 10000
    decision_ttl_seconds: float = 300.0
    passthrough_methods: tuple[str, ...] = MCP_PASSTHROUGH_METHODS


AUTHZEN_SUBJECT_MODES = ("token", "trusted_id")


@dataclass(frozen=True)
class AuthzenConfig:
    """AuthZEN Authorization API 1.0 over HTTP (adapters/authzen.py).

    PEPs authenticate with a bearer secret whose SHA-256 (hex) is listed in
    ``pep_token_sha256``. ``subject_mode: token`` takes the subject from the end user's token
    (``subject.properties.token``) and decides on the service's bundle; ``trusted_id`` takes
    ``subject.id`` from the authenticated PEP as-is and decides on ``bundle`` only, which is
    then required (docs/gateways.md)."""

    enabled: bool = False
    listen: str = "127.0.0.1:8181"
    public_url: str = ""
    pep_token_sha256: tuple[str, ...] = ()
    max_body_bytes: int = 1024 * 1024
    subject_mode: str = "token"
    bundle: str = ""
    entrypoint: str = ""
    tenant: str = ""
    server_id: str = ""
    server_resource: str = ""
    tls: TlsConfig | None = None


@dataclass(frozen=True)
class AdaptersConfig:
    """The gateway protocols, each off unless enabled."""

    ext_authz: ExtAuthzConfig = field(default_factory=ExtAuthzConfig)
    ext_mcp: ExtMcpConfig = field(default_factory=ExtMcpConfig)
    authzen: AuthzenConfig = field(default_factory=AuthzenConfig)


def _listen_problem(where: str, value: str) -> list[str]:
    host, _, port = value.rpartition(":")
    return [] if host and port.isdigit() else [f"{where}: expected HOST:PORT, got {value!r}"]


def _adapter_checks(adapters: AdaptersConfig) -> list[str]:
    """Each enabled adapter must know where to listen and how to reach a decision."""
    problems: list[str] = []
    for name in ("ext_authz", "ext_mcp"):
        section = getattr(adapters, name)
        if section.enabled and section.listen:
            problems.extend(_listen_problem(f"adapters.{name}.listen", section.listen))
    ext_mcp = adapters.ext_mcp
    if ext_mcp.enabled and (ext_mcp.decision_cache_size or 0) < 1:
        problems.append("adapters.ext_mcp.decision_cache_size: must be at least 1")
    if ext_mcp.enabled and (ext_mcp.decision_ttl_seconds or 0) <= 0:
        problems.append("adapters.ext_mcp.decision_ttl_seconds: must be positive")
    if adapters.authzen.enabled:
        problems.extend(_authzen_checks(adapters.authzen))
    return problems


def _authzen_checks(authzen: AuthzenConfig) -> list[str]:
    problems = _listen_problem("adapters.authzen.listen", authzen.listen)
    if authzen.subject_mode not in AUTHZEN_SUBJECT_MODES:
        problems.append(f"adapters.authzen.subject_mode: must be one of "
                        f"{', '.join(AUTHZEN_SUBJECT_MODES)}, got {authzen.subject_mode!r}")
    if authzen.subject_mode == "trusted_id" and not authzen.bundle:
        problems.append("adapters.authzen.bundle: required with subject_mode: trusted_id (the "
                        "subject ids a PEP asserts are trusted for that bundle only)")
    if not authzen.pep_token_sha256:
        problems.append("adapters.authzen.pep_token_sha256: at least one PEP secret hash is "
                        "required (PEPs must authenticate)")
    for i, digest in enumerate(authzen.pep_token_sha256 or ()):
        if not (isinstance(digest, str) and len(digest) == 64
                and all(c in "0123456789abcdef" for c in digest.lower())):
            problems.append(f"adapters.authzen.pep_token_sha256[{i}]: expected 64 hex digits "
                            "(sha256 of the PEP's bearer secret)")
    if (authzen.max_body_bytes or 0) < 1:
        problems.append("adapters.authzen.max_body_bytes: must be at least 1")
    return problems


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    development: DevelopmentConfig | None = None
    decision_log: DecisionLogConfig = field(default_factory=DecisionLogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    adapters: AdaptersConfig = field(default_factory=AdaptersConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    base_dir: str = "."

    def path(self, value: str) -> str:
        """A path from the config, relative to the config file's directory."""
        if not value or value.startswith(("http://", "https://")):
            return value
        return str((Path(self.base_dir) / value).resolve()) if not os.path.isabs(value) else value


def load_config(path: str | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment, and validate.

    Raises ConfigError listing every problem."""
    raw: dict[str, Any] = {}
    base_dir = "."
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
            raise ConfigError([f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}"]) from exc
        if not isinstance(raw, dict):
            raise ConfigError([f"{path}: the top level must be a mapping"])
        base_dir = str(Path(path).resolve().parent)
    _apply_env(raw, os.environ if environ is None else environ)
    problems: list[str] = []
    config = _build(Config, {**raw, "base_dir": base_dir}, "", problems)
    problems.extend(_cross_checks(config))
    if problems:
        raise ConfigError(problems)
    return config


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX):].split("__") if k]
        node = raw
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                break
        else:
            if keys:
                node[keys[-1]] = yaml.safe_load(value) if value else ""


#: Options that existed once, with what replaced them (named at start instead of a bare
#: "unknown option").
REMOVED = {
    "limits.evaluation_thread_min_bytes": "removed: every evaluation now runs on the engine "
                                          "threads (server.engine_threads) and is bounded by "
                                          "limits.max_evaluation_ms; delete this line",
}


def _build(cls: type, raw: Any, where: str, problems: list[str]) -> Any:
    """Build dataclass ``cls`` from ``raw``, appending problems named by YAML path."""
    if not isinstance(raw, dict):
        problems.append(f"{where or '<top>'}: expected a mapping")
        return cls()
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            path = _join(where, str(key))
            problems.append(f"{path}: {REMOVED.get(path, 'unknown option')}")
    values = {}
    for name in names:
        if name in raw:
            values[name] = _convert(hints[name], raw[name], _join(where, name), problems)
    try:
        return cls(**values)
    except TypeError as exc:
        problems.append(f"{where or '<top>'}: {exc}")
        return cls()


def _convert(hint: Any, value: Any, where: str, problems: list[str]) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _convert(inner[0], value, where, problems)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list")
            return ()
        return tuple(_convert(item, v, f"{where}[{i}]", problems) for i, v in enumerate(value))
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where, problems)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        problems.append(f"{where}: expected {hint.__name__}, got {type(value).__name__}")
        return None
    return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _cross_checks(config: Config) -> list[str]:
    problems = []
    host, _, port = config.server.listen.rpartition(":")
    if not host or not port.isdigit():
        problems.append(f"server.listen: expected HOST:PORT, got {config.server.listen!r}")
    for name in ("max_workers", "max_concurrent_requests", "max_message_bytes"):
        if getattr(config.server, name) is not None and getattr(config.server, name) < 1:
            problems.append(f"server.{name}: must be at least 1")
    if config.server.engine_threads < 0:
        problems.append("server.engine_threads: must be 0 (automatic) or more")
    problems.extend(_performance_checks(config))
    problems.extend(_hardening_checks(config))
    for f in dataclasses.fields(LimitsConfig):
        if (getattr(config.limits, f.name) or 0) < 1:
            problems.append(f"limits.{f.name}: must be at least 1")
    if not config.identity.issuers:
        problems.append("identity.issuers: at least one issuer is required")
    for i, issuer in enumerate(config.identity.issuers):
        problems.extend(_key_source_checks(f"identity.issuers[{i}]", issuer))
    if config.identity.approval is not None:
        problems.extend(_key_source_checks("identity.approval", config.identity.approval))
    problems.extend(_observability_checks(config.decision_log, config.metrics))
    problems.extend(_policy_checks(config.policy))
    problems.extend(_adapter_checks(config.adapters))
    return problems


def _performance_checks(config: Config) -> list[str]:
    """Workers, the token cache and the decision cache (docs/performance.md)."""
    problems = []
    if (config.server.workers or 0) < 0:
        problems.append("server.workers: must be 0 (one per core) or more")
    if (config.identity.token_cache_size or 0) < 0:
        problems.append("identity.token_cache_size: must be 0 (off) or more")
    if (config.identity.token_cache_seconds or 0) <= 0:
        problems.append("identity.token_cache_seconds: must be greater than 0")
    if (config.cache.max_entries or 0) < 1:
        problems.append("cache.max_entries: must be at least 1")
    if (config.cache.max_age_seconds or 0) <= 0:
        problems.append("cache.max_age_seconds: must be greater than 0")
    return problems


def _hardening_checks(config: Config) -> list[str]:
    """TLS on each listener that has it, and the evaluation-time bounds (docs/limits.md)."""
    problems = []
    for where, tls in (("server.tls", config.server.tls), ("metrics.tls", config.metrics.tls),
                       ("adapters.authzen.tls", config.adapters.authzen.tls)):
        if tls is not None:
            problems.extend(_tls_checks(where, tls, config))
    limits = config.limits
    if (limits.evaluation_abort_ms or 0) <= (limits.max_evaluation_ms or 0):
        problems.append("limits.evaluation_abort_ms: must be greater than "
                        "limits.max_evaluation_ms (the watchdog is the last resort)")
    return problems


def _tls_checks(where: str, tls: TlsConfig, config: Config) -> list[str]:
    problems = []
    for name in ("cert_file", "key_file", "client_ca_file"):
        value = getattr(tls, name)
        if value and not os.path.isfile(config.path(value)):
            problems.append(f"{where}.{name}: no such file: {value}")
    for name in ("cert_file", "key_file"):
        if not getattr(tls, name):
            problems.append(f"{where}.{name}: required")
    if not tls.client_ca_file:
        if tls.require_client_cert:
            problems.append(f"{where}.client_ca_file: required with require_client_cert: true "
                            "(set require_client_cert: false for server-only TLS)")
        if tls.allowed_client_identities:
            problems.append(f"{where}.allowed_client_identities: needs client_ca_file (client "
                            "certificates are what the identities are read from)")
    if tls.allowed_client_identities and not tls.require_client_cert:
        problems.append(f"{where}.allowed_client_identities: needs require_client_cert: true")
    for i, identity in enumerate(tls.allowed_client_identities or ()):
        if not isinstance(identity, str) or not identity.strip():
            problems.append(f"{where}.allowed_client_identities[{i}]: must be a non-empty "
                            "string (a SAN DNS name or URI, or a subject CN)")
    if (tls.reload_interval_seconds or 0) <= 0:
        problems.append(f"{where}.reload_interval_seconds: must be greater than 0")
    return problems


DECISION_LOG_SINKS = ("stdout", "file")


def _observability_checks(log: DecisionLogConfig, metrics: MetricsConfig) -> list[str]:
    problems = []
    if log.sink not in DECISION_LOG_SINKS:
        problems.append(f"decision_log.sink: must be one of {', '.join(DECISION_LOG_SINKS)}, "
                        f"got {log.sink!r}")
    if log.sink == "file" and not log.path:
        problems.append("decision_log.path: required when decision_log.sink is file")
    if log.sink != "file" and log.path:
        problems.append("decision_log.path: only used with decision_log.sink: file")
    for name in ("max_bytes", "queue_size"):
        if (getattr(log, name) or 0) < 1:
            problems.append(f"decision_log.{name}: must be at least 1")
    if log.backups is not None and log.backups < 0:
        problems.append("decision_log.backups: must be at least 0")
    for name in ("mask", "drop"):
        for i, path in enumerate(getattr(log, name) or ()):
            if isinstance(path, str) and not all(path.split(".")):
                problems.append(f"decision_log.{name}[{i}]: {path!r} is not a dotted path")
    host, _, port = (metrics.listen or "").rpartition(":")
    if not host or not port.isdigit():
        problems.append(f"metrics.listen: expected HOST:PORT, got {metrics.listen!r}")
    if (metrics.max_label_values or 0) < 1:
        problems.append("metrics.max_label_values: must be at least 1")
    return problems


def _key_source_checks(where: str, source: KeySourceConfig) -> list[str]:
    problems = []
    if not source.issuer:
        problems.append(f"{where}.issuer: required")
    if bool(source.jwks_file) == bool(source.jwks_url):
        problems.append(f"{where}: set exactly one of jwks_file and jwks_url")
    for j, alg in enumerate(source.algorithms or ()):
        if alg not in ASYMMETRIC_ALGORITHMS:
            problems.append(f"{where}.algorithms[{j}]: {alg!r} is not allowed; use one of "
                            + ", ".join(sorted(ASYMMETRIC_ALGORITHMS)))
    if source.max_lifetime_seconds is not None and source.max_lifetime_seconds < 1:
        problems.append(f"{where}.max_lifetime_seconds: must be at least 1")
    return problems


def _policy_checks(policy: PolicyConfig) -> list[str]:
    """Bundle source, limits, signing key and shadow options (sources.py, signing.py)."""
    problems = _source_checks(policy)
    if policy.signing is not None:
        problems.extend(_signing_checks(policy.signing))
    if policy.shadow is not None:
        if not policy.shadow.bundle:
            problems.append("policy.shadow.bundle: required (a path or URL)")
        for name in ("queue_size", "recent_disagreements"):
            if (getattr(policy.shadow, name) or 0) < 1:
                problems.append(f"policy.shadow.{name}: must be at least 1")
    return problems


def _source_checks(policy: PolicyConfig) -> list[str]:
    problems = []
    for sub, value in (("bundle", policy.bundle), ("shadow.bundle",
                                                   policy.shadow.bundle if policy.shadow else "")):
        if value and "://" in value:
            problems.extend(f"policy.{sub}: {p}" for p in check_bundle_url(value))
    for name in ("poll_interval_seconds", "timeout_seconds", "watch_interval_seconds",
                 "max_file_bytes", "max_total_bytes"):
        if (getattr(policy, name) or 0) <= 0:
            problems.append(f"policy.{name}: must be greater than 0")
    if not 0 <= (policy.poll_jitter or 0) < 1:
        problems.append("policy.poll_jitter: must be in [0, 1) (a fraction of the interval)")
    if (policy.backoff_max_seconds or 0) < (policy.poll_interval_seconds or 0):
        problems.append("policy.backoff_max_seconds: must be at least poll_interval_seconds")
    if policy.bearer_token_file and policy.bearer_token_env:
        problems.append("policy: set at most one of bearer_token_file and bearer_token_env")
    return problems


def _signing_checks(signing: SigningConfig) -> list[str]:
    problems = []
    if bool(signing.public_key_file) == bool(signing.secret_file):
        problems.append("policy.signing: set exactly one of public_key_file and secret_file")
    if signing.algorithm and signing.algorithm not in SIGNING_ALGORITHMS:
        problems.append(f"policy.signing.algorithm: {signing.algorithm!r} is not one of "
                        + ", ".join(SIGNING_ALGORITHMS))
    elif signing.algorithm and (signing.algorithm in HMAC_ALGORITHMS) != bool(signing.secret_file):
        problems.append(f"policy.signing.algorithm: {signing.algorithm} does not go with "
                        + ("secret_file" if signing.secret_file else "public_key_file"))
    return problems


def check_bundle_url(url: str) -> list[str]:
    """Problems with a bundle URL: http(s) only, and plain http only on loopback (a bearer
    token or an unsigned bundle must not cross a network in the clear)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [f"{url!r} is not an http(s) URL"]
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return [f"{url!r}: https is required (http only on loopback)"]
    return []
