"""Development keys and tokens: what ``mcp-authz dev-init`` and ``mcp-authz token`` use.

Production configs have no ``development`` section and so no signing key: this module can only
mint tokens for a config that ``dev-init`` wrote.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

DEV_ISSUER = "https://dev-issuer.mcp-authz.local"
DEV_APPROVAL_ISSUER = "https://dev-approvals.mcp-authz.local"
DEV_AUDIENCE = "https://mcp.example.com/files"


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def new_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_jwk(key: PrivateKeyTypes, kid: str, alg: str) -> dict[str, Any]:
    """The public half of ``key`` as a JWK with ``kid``, ``alg`` and ``use: sig``."""
    algorithm = jwt.get_algorithm_by_name(alg)
    jwk = json.loads(algorithm.to_jwk(key.public_key()))  # type: ignore[union-attr]
    jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    return jwk


def load_private_key(path: str) -> PrivateKeyTypes:
    return serialization.load_pem_private_key(Path(path).read_bytes(), password=None)


def mint(key: PrivateKeyTypes, kid: str, alg: str, claims: dict[str, Any]) -> str:
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})  # type: ignore[arg-type]


def user_claims(*, issuer: str, audience: str, sub: str, tenant: str, scopes: list[str],
                roles: list[str], ttl: int, now: float | None = None) -> dict[str, Any]:
    now = int(time.time() if now is None else now)
    return {"iss": issuer, "aud": audience, "sub": sub, "tenant": tenant,
            "scope": " ".join(scopes), "roles": roles, "iat": now, "exp": now + ttl,
            "jti": str(uuid.uuid4())}


def approval_claims(*, issuer: str, approver: str, digest: str, roles: list[str], ttl: int,
                    now: float | None = None) -> dict[str, Any]:
    now = int(time.time() if now is None else now)
    return {"iss": issuer, "sub": approver, "digest": digest, "roles": roles, "iat": now,
            "exp": now + ttl, "jti": str(uuid.uuid4())}


def write_dev_setup(directory: str, bundle: str) -> Path:
    """Keys, key sets and a development config in ``directory``; returns the config path."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    user_key, approval_key = new_rsa_key(), new_ec_key()
    (root / "issuer-key.pem").write_bytes(private_pem(user_key))
    (root / "approval-key.pem").write_bytes(private_pem(approval_key))
    for path in (root / "issuer-key.pem", root / "approval-key.pem"):
        path.chmod(0o600)
    (root / "jwks.json").write_text(json.dumps(
        {"keys": [public_jwk(user_key, "dev-1", "RS256")]}, indent=2))
    (root / "approval-jwks.json").write_text(json.dumps(
        {"keys": [public_jwk(approval_key, "approvals-1", "ES256")]}, indent=2))
    bundle_path = Path(bundle).resolve()
    try:
        bundle_ref = str(bundle_path.relative_to(root.resolve().parent))
        bundle_ref = f"../{bundle_ref}"
    except ValueError:
        bundle_ref = str(bundle_path)
    config = f"""\
# Development configuration written by `mcp-authz dev-init`. Not for production: it carries
# the development signing keys that `mcp-authz token` uses.
server:
  listen: 127.0.0.1:50051
policy:
  bundle: {bundle_ref}
identity:
  issuers:
    - issuer: {DEV_ISSUER}
      jwks_file: jwks.json
      algorithms: [RS256]
      max_lifetime_seconds: 3600
  approval:
    issuer: {DEV_APPROVAL_ISSUER}
    jwks_file: approval-jwks.json
    algorithms: [ES256]
development:
  signing_key: issuer-key.pem
  key_id: dev-1
  issuer: {DEV_ISSUER}
  audience: {DEV_AUDIENCE}
  approval_signing_key: approval-key.pem
  approval_key_id: approvals-1
"""
    (root / "config.yaml").write_text(config)
    return root / "config.yaml"
