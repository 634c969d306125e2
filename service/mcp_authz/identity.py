"""Verify bearer tokens and approval tokens. Every refusal is an IdentityError with a reason code.

pyjwt's errors are translated here and nowhere else. Messages never contain a token.
Rules beyond the signature: the issuer must be configured, the algorithm must be one the issuer
allows (asymmetric only, checked against the key's type by pyjwt), ``exp`` and ``iat`` are
required, ``aud`` must name the MCP server's resource, and ``exp - iat`` may not exceed the
issuer's longest allowed lifetime. ``jku``, ``x5u`` and embedded ``jwk`` headers are ignored:
keys come from configuration only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import jwt

from .config import ApprovalConfig, Config, IssuerConfig, KeySourceConfig
from .errors import IdentityError
from .jwks import JwksUnavailable, KeySet
from .model import Approval, Subject
from .tokencache import CachedVerifier

#: Claims the Subject already carries in its own fields; ``Subject.claims`` holds the others.
#: The engine parses every JSON value of the input (~17 us each), so none is sent twice.
REPRESENTED_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "scope", "scp",
                                "client_id"})


class TokenVerifier(Protocol):
    def verify(self, token: str, audience: str, now: float) -> Subject: ...


class ApprovalVerifier(Protocol):
    def verify_all(self, tokens: Sequence[str], digest: str,
                   now: float) -> tuple[list[Approval], list[dict[str, str]]]: ...


def request_digest(tenant: str, subject_id: str, resource: str, method: str, tool: str,
                   arguments: Any) -> str:
    """SHA-256 over the canonical JSON of what an approval is for (DESIGN.md, human approval).

    Canonical: keys sorted, no insignificant whitespace, UTF-8, integral numbers without a
    fraction (the request normaliser already turned 2.0 into 2).
    """
    document = {"tenant": tenant, "subject": subject_id, "resource": resource,
                "method": method, "tool": tool, "arguments": arguments}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _decode(token: str, keys: KeySet, algorithms: Sequence[str], *, issuer: str,
            audience: str | None, leeway: float, now: float, max_bytes: int) -> dict[str, Any]:
    """Verify signature and registered claims; translate pyjwt's errors into reason codes."""
    if len(token) > max_bytes:
        raise IdentityError("token_invalid", f"token longer than {max_bytes} bytes")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise IdentityError("token_invalid", "token is not a well-formed JWT") from exc
    alg = header.get("alg")
    if alg not in algorithms:
        raise IdentityError("token_invalid", f"algorithm {str(alg)[:16]!r} is not allowed")
    key = _signing_key(keys, header.get("kid"))
    # Time claims are checked below against the clock passed in, not pyjwt's own.
    options = {"require": ["exp", "iat"], "verify_aud": audience is not None,
               "verify_exp": False, "verify_nbf": False, "verify_iat": False}
    try:
        claims = jwt.api_jwt.decode_complete(
            token, key=key, algorithms=[alg], issuer=issuer, audience=audience,
            leeway=leeway, options=options)["payload"]
    except jwt.InvalidAudienceError as exc:
        raise IdentityError("audience_mismatch",
                            "token audience does not name this server") from exc
    except jwt.InvalidIssuerError as exc:
        raise IdentityError("issuer_untrusted", "token issuer is not trusted") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise IdentityError("token_invalid", f"token lacks the {exc.claim!r} claim") from exc
    except jwt.InvalidSignatureError as exc:
        raise IdentityError("token_invalid", "token signature does not verify") from exc
    except jwt.PyJWTError as exc:
        raise IdentityError("token_invalid", f"token rejected: {type(exc).__name__}") from exc
    _check_plain_json(claims)
    _check_times(claims, leeway, now)
    return claims


def _check_plain_json(claims: dict[str, Any]) -> None:
    """JSON escapes can put what UTF-8 and the engine cannot carry into a signed token: a lone
    surrogate (``"\\ud800"``), or NaN and Infinity (Python's parser accepts them, and an
    ``exp`` of NaN would never expire). Such a token is refused."""
    try:
        json.dumps(claims, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, UnicodeError) as exc:
        raise IdentityError("token_invalid", "token claims are not plain JSON (a lone "
                            "surrogate, NaN or Infinity)") from exc


def _signing_key(keys: KeySet, kid: Any) -> jwt.PyJWK:
    if kid is not None and not isinstance(kid, str):
        raise IdentityError("token_invalid", "kid must be a string")
    try:
        key = keys.get(kid)
    except JwksUnavailable as exc:
        raise IdentityError("token_invalid", f"signing keys unavailable: {exc}") from exc
    if key is None:
        raise IdentityError("token_invalid", "unknown signing key (kid)")
    return key


def _check_times(claims: dict[str, Any], leeway: float, now: float) -> None:
    exp, iat, nbf = claims["exp"], claims["iat"], claims.get("nbf", claims["iat"])
    if not all(_is_number(v) for v in (exp, iat, nbf)):
        raise IdentityError("token_invalid", "exp, iat and nbf must be numbers")
    if iat > now + leeway:
        raise IdentityError("token_invalid", "token is issued in the future")
    if nbf > now + leeway:
        raise IdentityError("token_invalid", "token is not yet valid")
    if exp <= now - leeway:
        raise IdentityError("token_expired", "token has expired")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _strings(value: Any) -> tuple[str, ...]:
    """A claim's strings: a list, or one string delimited by spaces only (RFC 6749 3.3), so
    ``"files:read\n"`` is one unknown scope, not ``files:read``."""
    if isinstance(value, str):
        return tuple(v for v in value.split(" ") if v)
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str))
    return ()


class _Issuer:
    def __init__(self, config: IssuerConfig, keys: KeySet):
        self.config = config
        self.keys = keys


class JwtVerifier:
    """Bearer tokens of the configured issuers."""

    def __init__(self, issuers: Iterable[tuple[IssuerConfig, KeySet]], max_token_bytes: int):
        self._issuers = {cfg.issuer: _Issuer(cfg, keys) for cfg, keys in issuers}
        self._algorithms = {alg for i in self._issuers.values() for alg in i.config.algorithms}
        self._max_bytes = max_token_bytes

    def verify(self, token: str, audience: str, now: float) -> Subject:
        if not token:
            raise IdentityError("token_missing", "no bearer token")
        if len(token) > self._max_bytes:
            raise IdentityError("token_invalid", f"token longer than {self._max_bytes} bytes")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise IdentityError("token_invalid", "token is not a well-formed JWT") from exc
        if header.get("alg") not in self._algorithms:
            raise IdentityError("token_invalid",
                                f"algorithm {str(header.get('alg'))[:16]!r} is not allowed")
        issuer = self._issuers.get(unverified.get("iss")) if isinstance(
            unverified.get("iss"), str) else None
        if issuer is None:
            raise IdentityError("issuer_untrusted", "token issuer is not trusted")
        cfg = issuer.config
        claims = _decode(token, issuer.keys, cfg.algorithms, issuer=cfg.issuer,
                         audience=audience, leeway=cfg.leeway_seconds, now=now,
                         max_bytes=self._max_bytes)
        if claims["exp"] - claims["iat"] > cfg.max_lifetime_seconds:
            raise IdentityError("token_lifetime_exceeded",
                                f"token lifetime exceeds {cfg.max_lifetime_seconds}s")
        return subject_from_claims(claims, cfg)


def subject_from_claims(claims: dict[str, Any], cfg: IssuerConfig) -> Subject:
    """The Subject a verified token's claims describe, per the issuer's claim mapping."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise IdentityError("token_invalid", "token lacks the 'sub' claim")
    tenant = claims.get(cfg.claims.tenant)
    if not isinstance(tenant, str) or not tenant:
        raise IdentityError("token_invalid", f"token lacks the {cfg.claims.tenant!r} claim")
    roles_claim = claims.get(cfg.claims.roles)
    roles = _strings(roles_claim.get(tenant)) if isinstance(roles_claim, dict) else _strings(
        roles_claim)
    scopes = _strings(claims.get("scope")) + _strings(claims.get("scp"))
    client_id = claims.get(cfg.claims.client_id) or claims.get("client_id") or ""
    jti = claims.get("jti")
    mapped = {cfg.claims.tenant, cfg.claims.roles, cfg.claims.groups, cfg.claims.client_id}
    return Subject(
        id=sub, tenant=tenant, issuer=cfg.issuer,
        client_id=client_id if isinstance(client_id, str) else "",
        scopes=tuple(dict.fromkeys(scopes)), roles=roles,
        groups=_strings(claims.get(cfg.claims.groups)),
        claims={k: v for k, v in claims.items() if k not in mapped | REPRESENTED_CLAIMS},
        issued_at=int(claims["iat"]), expires_at=int(claims["exp"]),
        jti=jti if isinstance(jti, str) else "")


class JwtApprovalVerifier:
    """Approval tokens, signed by the approval service's key only."""

    def __init__(self, config: ApprovalConfig, keys: KeySet, max_token_bytes: int):
        self._config = config
        self._keys = keys
        self._max_bytes = max_token_bytes

    def verify_all(self, tokens: Sequence[str], digest: str,
                   now: float) -> tuple[list[Approval], list[dict[str, str]]]:
        approvals, errors = [], []
        for token in tokens:
            try:
                approvals.append(self._verify(token, digest, now))
            except IdentityError as exc:
                errors.append({"code": "approval_invalid", "message": str(exc)})
        return approvals, errors

    def _verify(self, token: str, digest: str, now: float) -> Approval:
        cfg = self._config
        claims = _decode(token, self._keys, cfg.algorithms, issuer=cfg.issuer, audience=None,
                         leeway=cfg.leeway_seconds, now=now, max_bytes=self._max_bytes)
        if claims["exp"] - claims["iat"] > cfg.max_lifetime_seconds:
            raise IdentityError("approval_invalid",
                                f"approval lifetime exceeds {cfg.max_lifetime_seconds}s")
        if claims.get("digest") != digest:
            raise IdentityError("approval_invalid", "approval is for a different request")
        approver = claims.get("sub")
        if not isinstance(approver, str) or not approver:
            raise IdentityError("approval_invalid", "approval lacks the 'sub' claim")
        return Approval(approver=approver, roles=_strings(claims.get(cfg.roles_claim)),
                        issued_at=int(claims["iat"]), digest=digest)


def build_verifiers(config: Config) -> tuple[TokenVerifier, JwtApprovalVerifier | None]:
    """The verifiers a config describes, each issuer with its own cached key set, verified
    bearer tokens cached (tokencache.py) unless ``identity.token_cache_size`` is 0."""
    issuers = [(cfg, _key_set(config, cfg)) for cfg in config.identity.issuers]
    verifier: TokenVerifier = JwtVerifier(issuers, config.identity.max_token_bytes)
    if config.identity.token_cache_size:
        verifier = CachedVerifier(verifier, config.identity.token_cache_size,
                                  config.identity.token_cache_seconds)
    approval = None
    if config.identity.approval is not None:
        cfg = config.identity.approval
        approval = JwtApprovalVerifier(cfg, _key_set(config, cfg), config.identity.max_token_bytes)
    return verifier, approval


def _key_set(config: Config, cfg: KeySourceConfig) -> KeySet:
    return KeySet(file=config.path(cfg.jwks_file), url=cfg.jwks_url,
                  ca_file=config.path(cfg.jwks_ca_file), cache_seconds=cfg.jwks_cache_seconds,
                  max_stale_seconds=cfg.jwks_max_stale_seconds,
                  min_refresh_seconds=cfg.jwks_min_refresh_seconds)
