"""OPA bundle signatures: ``.signatures.json`` with one compact JWS over every file's hash.

The format is OPA's (bundle/sign.go, bundle/verify.go, bundle/hash.go):

- ``.signatures.json`` = ``{"signatures": ["<compact JWS>"]}``, exactly one JWS;
- the JWS payload = ``{"files": [{"name", "hash", "algorithm"}], "keyid"?, "scope"?}``, names
  relative to the bundle root without a leading ``/``, hashes in lowercase hex;
- a structured file (basename ``data.json``, ``data.yaml``, ``.manifest``) is hashed over a
  canonical form of its parsed value, not its bytes: objects as ``{`` key ``:`` value ``,`` ...
  ``}`` with keys sorted, arrays as ``[`` ... ``]``, scalars as Go's ``encoding/json`` writes them
  (no HTML escaping, numbers as written in the source). Every other file is hashed as bytes.
  So re-indenting a data file keeps its signature valid, as in OPA.

Verification is stricter than OPA where OPA is lenient: the header ``alg`` must be the configured
algorithm, a key id in the token must name the configured key, every file must be listed with a
matching digest, no listed file may be missing, and MD5/SHA-1 digests are refused.
HMAC and JWS encoding are done here (with pyjwt's algorithm objects for RSA/EC), so every error
message says exactly which check failed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .errors import BundleError

SIGNATURES_FILE = ".signatures.json"
STRUCTURED_FILES = ("data.json", "data.yaml", ".manifest")
HMAC_ALGORITHMS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                         "ES512")
SIGNING_ALGORITHMS = (*ASYMMETRIC_ALGORITHMS, *HMAC_ALGORITHMS)
HASHES = {"SHA-224": hashlib.sha224, "SHA-256": hashlib.sha256, "SHA-384": hashlib.sha384,
          "SHA-512": hashlib.sha512, "SHA-512-224": lambda: hashlib.new("sha512_224"),
          "SHA-512-256": lambda: hashlib.new("sha512_256"),
          "MD5": hashlib.md5, "SHA-1": hashlib.sha1}
WEAK_HASHES = ("MD5", "SHA-1")
MIN_SECRET_BYTES = 32
MAX_SIGNATURES_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class SigningKey:
    """A key that signs (private PEM or HMAC secret) or verifies (public PEM or HMAC secret)."""

    algorithm: str
    key: Any
    key_id: str = ""

    @classmethod
    def from_file(cls, path: str, algorithm: str = "", key_id: str = "",
                  private: bool = False) -> SigningKey:
        """Read a PEM key or an HMAC secret file (its exact bytes, as OPA reads it)."""
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise BundleError(f"{path}: cannot read key: {exc.strerror}") from exc
        return cls.from_bytes(raw, algorithm, key_id, private, where=path)

    @classmethod
    def from_bytes(cls, raw: bytes, algorithm: str = "", key_id: str = "",
                   private: bool = False, where: str = "key") -> SigningKey:
        if algorithm and algorithm not in SIGNING_ALGORITHMS:
            raise BundleError(f"{where}: algorithm {algorithm!r} is not one of "
                              + ", ".join(SIGNING_ALGORITHMS))
        if not raw.lstrip().startswith(b"-----BEGIN"):
            if algorithm and algorithm not in HMAC_ALGORITHMS:
                raise BundleError(f"{where}: {algorithm} needs a PEM key")
            return cls(algorithm or "HS256", raw, key_id)
        if algorithm in HMAC_ALGORITHMS:
            raise BundleError(f"{where}: {algorithm} needs a shared secret, not a PEM key")
        key = _load_pem(raw, private, where)
        return cls(algorithm or _default_algorithm(key, where), key, key_id)


def _load_pem(raw: bytes, private: bool, where: str) -> Any:
    try:
        if private:
            return serialization.load_pem_private_key(raw, password=None)
        if b"PRIVATE KEY" in raw:  # OPA accepts a private key to verify with: use its public half
            return serialization.load_pem_private_key(raw, password=None).public_key()
        return serialization.load_pem_public_key(raw)
    except (ValueError, TypeError) as exc:
        kind = "private" if private else "public"
        raise BundleError(f"{where}: not a PEM {kind} key: {exc}") from exc


def _default_algorithm(key: Any, where: str) -> str:
    public = key.public_key() if hasattr(key, "public_key") else key
    if isinstance(public, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(public, ec.EllipticCurvePublicKey):
        return {256: "ES256", 384: "ES384", 521: "ES512"}.get(public.curve.key_size, "ES256")
    raise BundleError(f"{where}: unsupported key type {type(public).__name__}")


@dataclass(frozen=True)
class Verification:
    """The keys (by key id) and scope a bundle's signature must satisfy."""

    keys: Mapping[str, SigningKey]
    scope: str = ""

    def verify(self, files: Mapping[str, bytes]) -> Verified:
        return verify_files(files, self.keys, self.scope)

    @classmethod
    def from_config(cls, public_key_file: str, secret_file: str, key_id: str, algorithm: str,
                    scope: str) -> Verification:
        """One configured key; an HMAC secret shorter than 32 bytes is refused."""
        key = SigningKey.from_file(public_key_file or secret_file, algorithm, key_id)
        if key.algorithm in HMAC_ALGORITHMS and len(key.key) < MIN_SECRET_BYTES:
            raise BundleError(f"{secret_file}: an HMAC secret needs at least {MIN_SECRET_BYTES} "
                              "bytes")
        return cls({key_id: key}, scope)


@dataclass(frozen=True)
class Verified:
    """What a valid signature established."""

    key_id: str
    algorithm: str
    files: tuple[str, ...]


# --- hashing -------------------------------------------------------------------------------


class _Number(str):
    """A JSON number kept as written, as Go's ``json.Number`` keeps it."""


def file_digest(name: str, raw: bytes, algorithm: str = "SHA-256") -> str:
    """OPA's digest of one bundle file: canonical JSON for structured files, else the bytes."""
    factory = HASHES.get(algorithm)
    if factory is None:
        raise BundleError(f"{name}: unsupported hashing algorithm {algorithm!r}")
    digest = factory()
    if posixpath.basename(name) in STRUCTURED_FILES:
        digest.update(canonical_json(_parse_structured(name, raw)).encode("utf-8"))
    else:
        digest.update(raw)
    return digest.hexdigest()


def _parse_structured(name: str, raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
        if name.endswith(".yaml"):
            return yaml.safe_load(text)
        return json.loads(text, parse_float=_Number, parse_int=_Number,
                          parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise BundleError(f"{name}: cannot be hashed, not valid structured data: "
                          f"{str(exc).splitlines()[0]}") from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def canonical_json(value: Any) -> str:
    """The text OPA's hasher feeds to the digest for a parsed value (bundle/hash.go ``walk``)."""
    if isinstance(value, dict):
        items = sorted((str(k), v) for k, v in value.items())
        return "{" + ",".join(f"{_go_string(k)}:{canonical_json(v)}" for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(canonical_json(v) for v in value) + "]"
    if isinstance(value, _Number):
        return str(value)
    if isinstance(value, str):
        return _go_string(value)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return json.dumps(value)
    return _go_string(str(value))  # YAML dates and the like: OPA sees them as strings


_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b",
               "\f": "\\f", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _go_string(text: str) -> str:
    """A string as Go's encoder writes it with HTML escaping off."""
    out = []
    for ch in text:
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


# --- signing -------------------------------------------------------------------------------


def signature_payload(files: Mapping[str, bytes], key_id: str = "",
                      scope: str = "") -> dict[str, Any]:
    """The JWS payload for a bundle's files (all but ``.signatures.json``), sorted by name."""
    listed = [{"name": name, "hash": file_digest(name, raw), "algorithm": "SHA-256"}
              for name, raw in sorted(files.items()) if name != SIGNATURES_FILE]
    payload: dict[str, Any] = {"files": listed}
    if key_id:
        payload["keyid"] = key_id  # deprecated in OPA, still read: kept for older verifiers
    if scope:
        payload["scope"] = scope
    return payload


def sign_files(files: Mapping[str, bytes], key: SigningKey, scope: str = "") -> bytes:
    """The ``.signatures.json`` content for ``files``, signed with ``key``."""
    header: dict[str, Any] = {"alg": key.algorithm, "typ": "JWT"}
    if key.key_id:
        header["kid"] = key.key_id
    payload = signature_payload(files, key.key_id, scope)
    signing_input = _b64(_compact(header)) + "." + _b64(_compact(payload))
    signature = _sign(signing_input.encode("ascii"), key)
    token = signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    return (json.dumps({"signatures": [token]}, indent=1) + "\n").encode("utf-8")


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(part: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError) as exc:
        raise BundleError(f"{SIGNATURES_FILE}: JWS {what} is not base64url") from exc


def _sign(message: bytes, key: SigningKey) -> bytes:
    if key.algorithm in HMAC_ALGORITHMS:
        return hmac.new(key.key, message, HMAC_ALGORITHMS[key.algorithm]).digest()
    algorithm = jwt.get_algorithm_by_name(key.algorithm)
    try:
        return algorithm.sign(message, key.key)
    except (TypeError, ValueError, AttributeError) as exc:
        raise BundleError(f"key: cannot sign with {key.algorithm}: {exc}") from exc


def _signature_ok(message: bytes, signature: bytes, key: SigningKey) -> bool:
    if key.algorithm in HMAC_ALGORITHMS:
        expected = hmac.new(key.key, message, HMAC_ALGORITHMS[key.algorithm]).digest()
        return hmac.compare_digest(expected, signature)
    try:
        return bool(jwt.get_algorithm_by_name(key.algorithm).verify(message, key.key, signature))
    except (TypeError, ValueError, AttributeError):
        return False


# --- verification --------------------------------------------------------------------------


def read_token(files: Mapping[str, bytes]) -> str:
    """The one JWS in ``.signatures.json``; BundleError when absent or malformed."""
    raw = files.get(SIGNATURES_FILE)
    if raw is None:
        raise BundleError(f"{SIGNATURES_FILE}: missing: the bundle is not signed")
    if len(raw) > MAX_SIGNATURES_BYTES:
        raise BundleError(f"{SIGNATURES_FILE}: larger than {MAX_SIGNATURES_BYTES} bytes")
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{SIGNATURES_FILE}: not valid JSON") from exc
    tokens = document.get("signatures") if isinstance(document, dict) else None
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise BundleError(f"{SIGNATURES_FILE}: must be {{\"signatures\": [\"<JWS>\"]}}")
    if len(tokens) != 1:
        raise BundleError(f"{SIGNATURES_FILE}: expected exactly one JWS, found {len(tokens)}")
    return tokens[0]


def decode_token(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """Header, payload, signing input and signature of a compact JWS, without verifying."""
    parts = token.split(".")
    if len(parts) != 3:
        raise BundleError(f"{SIGNATURES_FILE}: not a compact JWS (need three parts)")
    try:
        header = json.loads(_unb64(parts[0], "header"))
        payload = json.loads(_unb64(parts[1], "payload"))
    except ValueError as exc:
        raise BundleError(f"{SIGNATURES_FILE}: JWS header or payload is not JSON") from exc
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise BundleError(f"{SIGNATURES_FILE}: JWS header and payload must be objects")
    return header, payload, f"{parts[0]}.{parts[1]}".encode("ascii"), _unb64(parts[2], "sig")


def verify_files(files: Mapping[str, bytes], keys: Mapping[str, SigningKey],
                 scope: str = "") -> Verified:
    """Check ``files`` against their ``.signatures.json``; BundleError names the failed check.

    ``keys`` maps key id to key. A token naming a key id must name a configured one, unless a
    key is configured under the empty id (it then verifies any token); a token naming none is
    verified with the empty-id key or the only key.
    """
    key_id, key, payload = verify_token(read_token(files), keys, scope)
    listed = _listed_files(payload)
    _check_digests(files, listed)
    return Verified(key_id, key.algorithm, tuple(sorted(listed)))


def verify_token(token: str, keys: Mapping[str, SigningKey],
                 scope: str = "") -> tuple[str, SigningKey, dict[str, Any]]:
    """Key id, key and payload of a JWS whose signature, algorithm and scope check out."""
    header, payload, signing_input, signature = decode_token(token)
    key_id = header.get("kid") or payload.get("keyid") or ""
    key = keys.get(key_id) or keys.get("") or (None if key_id else _only(keys))
    if key is None:
        known = ", ".join(sorted(k for k in keys if k)) or "none"
        raise BundleError(f"{SIGNATURES_FILE}: signed with unknown key id {key_id!r} "
                          f"(configured: {known})")
    if header.get("alg") != key.algorithm:
        raise BundleError(f"{SIGNATURES_FILE}: JWS alg {header.get('alg')!r} does not match the "
                          f"configured {key.algorithm}")
    if not _signature_ok(signing_input, signature, key):
        raise BundleError(f"{SIGNATURES_FILE}: signature does not verify with key "
                          f"{key_id or key.key_id or '<configured>'!r}")
    if payload.get("scope", "") != scope:
        raise BundleError(f"{SIGNATURES_FILE}: scope {payload.get('scope', '')!r} does not match "
                          f"the configured scope {scope!r}")
    return key_id or key.key_id, key, payload


def _only(keys: Mapping[str, SigningKey]) -> SigningKey | None:
    return next(iter(keys.values())) if len(keys) == 1 else None


def _listed_files(payload: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    entries = payload.get("files")
    if not isinstance(entries, list):
        raise BundleError(f"{SIGNATURES_FILE}: payload.files must be a list")
    listed: dict[str, tuple[str, str]] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not all(
                isinstance(entry.get(k), str) for k in ("name", "hash", "algorithm")):
            raise BundleError(f"{SIGNATURES_FILE}: payload.files[{i}] needs string name, hash "
                              "and algorithm")
        name = entry["name"].lstrip("/")
        if entry["algorithm"].upper() in WEAK_HASHES:
            raise BundleError(f"{name}: signed with weak hash {entry['algorithm']}: refused")
        listed[name] = (entry["hash"].lower(), entry["algorithm"].upper())
    return listed


def _check_digests(files: Mapping[str, bytes], listed: Mapping[str, tuple[str, str]]) -> None:
    present = {name for name in files if name != SIGNATURES_FILE}
    unlisted = sorted(present - set(listed))
    if unlisted:
        raise BundleError(f"{unlisted[0]}: not listed in the bundle signature "
                          f"({len(unlisted)} unlisted file(s))")
    missing = sorted(set(listed) - present)
    if missing:
        raise BundleError(f"{missing[0]}: listed in the bundle signature but missing from the "
                          f"bundle ({len(missing)} missing file(s))")
    for name in sorted(present):
        want, algorithm = listed[name]
        got = file_digest(name, files[name], algorithm)
        if not hmac.compare_digest(got, want):
            raise BundleError(f"{name}: digest mismatch: the file changed after signing "
                              f"(want {want}, got {got})")
