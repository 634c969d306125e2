"""Signature interoperability with OPA, checked against OPA's own known-good vectors, and the
bundle CLI (build is deterministic; sign, verify and inspect agree with each other).

The vectors are copied from open-policy-agent/opa v1/bundle: bundle_test.go
(TestReadWithSignaturesWithBaseDir: a token OPA verifies with HS256 secret "secret", key id
"foo", scope "write"; TestReadWithSignatures "digest_mismatch"; TestVerifyBundleFileHash: digests
of structured and raw files) and verify_test.go (TestVerifyJWTSignature: an RS256 token and its
public key).
"""

from __future__ import annotations

import base64
import json
import tarfile
from pathlib import Path

import pytest
from bundle_support import revision_files, write_tree

from mcp_authz import cli, devkeys
from mcp_authz.bundlewriter import write_archive
from mcp_authz.errors import BundleError
from mcp_authz.signing import (
    SIGNATURES_FILE,
    SigningKey,
    file_digest,
    sign_files,
    signature_payload,
    verify_files,
    verify_token,
)

OPA_HS256_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImZvbyJ9.eyJmaWxlcyI6W3sibmFtZSI6ImZvby9iYXIvLm1"
    "hbmlmZXN0IiwiaGFzaCI6IjUwN2EyYzM4YTE0NDFkYjU4ZDJjYjg3OTgyYzQyYWE5MWE0MzQyZWY0MjJhNmI1NDJlZGRl"
    "YmVlZjZmMDQxMmYiLCJhbGdvcml0aG0iOiJTSEEtMjU2In0seyJuYW1lIjoiZm9vL2Jhci9hL2IvYy9kYXRhLmpzb24i"
    "LCJoYXNoIjoiYTYxNWVlYWVlMjFkZTUxNzlkZTA4MGRlOGMzMDUyYzhkYTkwMTEzODQwNmJhNzFjMzhjMDMyODQ1Zjdk"
    "NTRmNCIsImFsZ29yaXRobSI6IlNIQS0yNTYifSx7Im5hbWUiOiJmb28vYmFyL2h0dHAvcG9saWN5L3BvbGljeS5yZWdv"
    "IiwiaGFzaCI6ImY2NjQ0NjFlMzAzYjM3YzIwYzVlMGJlMjkwMDg4MTY3OGNkZjhlODYwYWE0MzNhNWExNGQ0OTRiYTNj"
    "NjY2NDkiLCJhbGdvcml0aG0iOiJTSEEtMjU2In1dLCJpYXQiOjE1OTIyNDgwMjcsImlzcyI6IkpXVFNlcnZpY2UiLCJz"
    "Y29wZSI6IndyaXRlIn0.qTHkuBDVuT-Zl5pbJdZ6LoJ9eooFOhhpRdCheauDrlA")
# the same files signed with the digests of data.json and policy.rego swapped
OPA_MISMATCH_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImZvbyJ9.eyJmaWxlcyI6W3sibmFtZSI6Ii5tYW5pZmVzdCIs"
    "Imhhc2giOiI1MDdhMmMzOGExNDQxZGI1OGQyY2I4Nzk4MmM0MmFhOTFhNDM0MmVmNDIyYTZiNTQyZWRkZWJlZWY2ZjA0"
    "MTJmIiwiYWxnb3JpdGhtIjoiU0hBLTI1NiJ9LHsibmFtZSI6ImEvYi9jL2RhdGEuanNvbiIsImhhc2giOiI0MmNmZTY3"
    "NjhiNTdiYjVmNzUwM2MxNjVjMjhkZDA3YWM1YjgxMzU1NGViYzg1MGYyY2MzNTg0M2U3MTM3YjFkIiwiYWxnb3JpdGht"
    "IjoiU0hBLTI1NiJ9LHsibmFtZSI6Imh0dHAvcG9saWN5L3BvbGljeS5yZWdvIiwiaGFzaCI6ImE2MTVlZWFlZTIxZGU1"
    "MTc5ZGUwODBkZThjMzA1MmM4ZGE5MDExMzg0MDZiYTcxYzM4YzAzMjg0NWY3ZDU0ZjQiLCJhbGdvcml0aG0iOiJTSEEt"
    "MjU2In1dLCJpYXQiOjE1OTIyNDgwMjcsImlzcyI6IkpXVFNlcnZpY2UiLCJrZXlpZCI6ImZvbyIsInNjb3BlIjoid3Jp"
    "dGUifQ.grzWHYvyVS6LfWy0oiFTEJThKooOAwic8sexYaflzOM")
OPA_RS256_TOKEN = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImZvbyJ9.eyJmaWxlcyI6W3sibmFtZSI6ImRiL3VhbTIvZW50"
    "aXRsZW1lbnRzL2RhdGEuanNvbiIsImhhc2giOiJjMjEzMTU0NGM3MTZhMjVhNWUzMWY1MDQzMDBmNTI0MGU4MjM1Y2Fk"
    "YjlhNTdmMGJkMWI2ZjRiZDc0YjI2NjEyIiwiYWxnb3JpdGhtIjoic2hhMjU2In0seyJuYW1lIjoiZGIvdWFtMi9wb2xp"
    "Y3kvb3BhLXBvbGljeS5yZWdvIiwiaGFzaCI6IjQyY2ZlNjc2OGI1N2JiNWY3NTAzYzE2NWMyOGRkMDdhYzViODEzNTU0"
    "ZWJjODUwZjJjYzM1ODQzZTcxMzdiMWQifV0sImlhdCI6MTU5MjI1MTQwNiwiaXNzIjoiSldUU2VydmljZSIsInNjb3Bl"
    "Ijoid3JpdGUifQ.UZcX_Qj29o213nwZ5mysiyNcgAp1AOqCkDLkj1KGZ7Cw3l17TbkF8t3FJd654sf762NGcABA0WQ2zx"
    "q-labXl_d5TKQmq23lurO3qLHI1cKQPyoxPbddGo78sJpMwWsiMyEYcyyKC9FpNUpa8cT81GPo4q9Zui8TAD0wtHh2Yx"
    "BL7E8QYLJxcLMJTJxVBgrQGLXFT7vYRc6hJz9Vu-i0SWuLBGxOCmYoHr4DWFfy0IhAbhiUFyLRpukfBPjCJNYY5LgaZd"
    "N6LaYivtIEUms5jUuXubBimLJm7KOT5-bgJMXTcUsbrbl2Ma7PwG5IOKjjgyEvH8KVfGFZSzNrpuxKmA")
OPA_RSA_PUBLIC = b"""-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA9KaakMv1XKKDaSch3PFR
3a27oaHp1GNTTNqvb1ZaHZXp+wuhYDwc/MTE67x9GCifvQBWzEGorgTq7aisiOyl
vKifwz6/wQ+62WHKG/sqKn2Xikp3P63aBIPlZcHbkyyRmL62yeyuzYoGvLEYel+m
z5SiKGBwviSY0Th2L4e5sGJuk2HOut6emxDi+E2Fuuj5zokFJvIT6Urlq8f3h6+l
GeR6HUOXqoYVf7ff126GP7dticTVBgibxkkuJFmpvQSW6xmxruT4k6iwjzbZHY7P
ypZ/TdlnuGC1cOpAVyU7k32IJ9CRbt3nwEf5U54LRXLLQjFixWZHwKdDiMTF4ws0
+wIDAQAB
-----END PUBLIC KEY-----
"""
OPA_FILES = {".manifest": b'{"revision": "quickbrownfaux"}', "a/b/c/data.json": b"[1,2,3]",
             "http/policy/policy.rego": b"package example"}
OPA_SECRET = SigningKey("HS256", b"secret", "foo")


def signatures(token: str) -> bytes:
    return json.dumps({"signatures": [token]}).encode()


@pytest.mark.requirement("opa-signature-interop")
def test_opa_signed_vector_verifies_here() -> None:
    files = {f"foo/bar/{name}": raw for name, raw in OPA_FILES.items()}
    files[SIGNATURES_FILE] = signatures(OPA_HS256_TOKEN)
    verified = verify_files(files, {"foo": OPA_SECRET}, scope="write")
    assert verified.key_id == "foo"
    assert verified.files == ("foo/bar/.manifest", "foo/bar/a/b/c/data.json",
                              "foo/bar/http/policy/policy.rego")
    with pytest.raises(BundleError, match="scope 'write' does not match"):
        verify_files(files, {"foo": OPA_SECRET})
    with pytest.raises(BundleError, match="signature does not verify"):
        verify_files(files, {"foo": SigningKey("HS256", b"bad_secret", "foo")}, scope="write")


@pytest.mark.requirement("opa-signature-interop")
def test_opa_digest_mismatch_vector_gives_opas_digests() -> None:
    files = {**OPA_FILES, SIGNATURES_FILE: signatures(OPA_MISMATCH_TOKEN)}
    with pytest.raises(BundleError, match=(
            "a/b/c/data.json: digest mismatch: .*want 42cfe6768b57bb5f7503c165c28dd07ac5b81355"
            "4ebc850f2cc35843e7137b1d, got a615eeaee21de5179de080de8c3052c8da901138406ba71c38c0"
            "32845f7d54f4")):
        verify_files(files, {"foo": OPA_SECRET}, scope="write")


@pytest.mark.requirement("opa-signature-interop")
def test_opa_rs256_vector_verifies_with_its_public_key() -> None:
    key = SigningKey.from_bytes(OPA_RSA_PUBLIC, "RS256", "foo")
    key_id, _, payload = verify_token(OPA_RS256_TOKEN, {"foo": key}, scope="write")
    assert key_id == "foo" and payload["files"][0]["name"] == "db/uam2/entitlements/data.json"
    other = SigningKey("RS256", devkeys.new_rsa_key().public_key(), "foo")
    with pytest.raises(BundleError, match="signature does not verify"):
        verify_token(OPA_RS256_TOKEN, {"foo": other}, scope="write")


# TestVerifyBundleFileHash: even entries are MD5, odd ones SHA-512, as in OPA's test
OPA_DIGESTS = [
    (".manifest", b'{"revision": "quickbrownfaux"}', "MD5", "a005c38a509dc2d5a7407b9494efb2ad"),
    ("a/b/c/data.json", b"[1,2,3]", "SHA-512",
     "60f7b5dc86ded48785436192a08dbfd04894d7f1b417c4f8d3714679a7f78cb3c833f16a8559a1cf1f32968747"
     "dc1d95ef34826263dacf125ded8f5c374be4c0"),
    ("a/b/d/data.json", b"true", "MD5", "b326b5062b2f0e69046810717534cb09"),
    ("a/b/y/data.yaml", b"foo: 1", "SHA-512",
     "20f27a640a233e6524fe7d138898583cd43475724806feb26be7f214e1d10b29edf6a0d3cb08f82107a45686b6"
     "1b8fdabab6406cf4e70efe134f42238dbd70ab"),
    ("example/example.rego", b"package example", "MD5", "ceecc199d432a4eeae305914ea4816cb"),
    ("policy.wasm", b"modules-compiled-as-wasm-binary", "SHA-512",
     "4f73765168fd8b5c294b739436da312cc5e979faf09f67bf576d36ea79a4f79c70cbb3c33d06ff65f531a9f42a"
     "bd0a8f4daacc554cb521837e876dc28f56ce89"),
    ("data.json", b'{"x": {"y": true}, "a": {"b": {"z": true}}}', "MD5",
     "36669864a622563256817033b1fc53db"),
]


@pytest.mark.requirement("opa-signature-interop")
@pytest.mark.parametrize(("name", "raw", "algorithm", "digest"), OPA_DIGESTS,
                         ids=[d[0] for d in OPA_DIGESTS])
def test_file_digests_match_opas_hasher(name: str, raw: bytes, algorithm: str,
                                        digest: str) -> None:
    assert file_digest(name, raw, algorithm) == digest


@pytest.mark.requirement("opa-signature-interop")
def test_signing_here_gives_the_payload_opa_signed() -> None:
    """The reverse direction: the file list this signer writes is byte-for-byte what OPA put in
    its token for the same files, and the token verifies as OPA's does."""
    files = {f"foo/bar/{name}": raw for name, raw in OPA_FILES.items()}
    opa_payload = json.loads(base64.urlsafe_b64decode(OPA_HS256_TOKEN.split(".")[1] + "=="))
    ours = signature_payload(files, key_id="", scope="write")
    assert ours["files"] == opa_payload["files"] and ours["scope"] == opa_payload["scope"]
    token = json.loads(sign_files(files, OPA_SECRET, scope="write"))["signatures"][0]
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "HS256", "kid": "foo", "typ": "JWT"}
    verify_files({**files, SIGNATURES_FILE: signatures(token)}, {"foo": OPA_SECRET}, "write")


def test_canonical_hash_ignores_layout_but_not_values() -> None:
    a = file_digest("x/data.json", b'{"b": [1, 2], "a": "\\u00e9<>&"}')
    assert a == file_digest("x/data.json", b'{\n  "a": "\xc3\xa9<>&",\n  "b": [1,2]\n}')
    assert a != file_digest("x/data.json", b'{"b": [1, 2.0], "a": "\\u00e9<>&"}')
    assert file_digest("x/data.yml", b"a: 1") != file_digest("x/data.yml", b"a:  1")


# --- the CLI ---------------------------------------------------------------------------------


def test_build_is_deterministic_and_sets_the_revision(tmp_path: Path) -> None:
    source = write_tree(tmp_path / "src", revision_files(2))
    first, second = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    assert cli.main(["bundle", "build", str(source), "-o", str(first), "--revision", "v7"]) == 0
    for path in source.rglob("*"):  # new mtimes must not change the output
        path.touch()
    assert cli.main(["bundle", "build", str(source), "-o", str(second), "--revision", "v7"]) == 0
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as archive:
        members = archive.getmembers()
        assert [m.name for m in members] == sorted(m.name for m in members)
        assert {(m.mtime, m.uid, m.gid, m.mode) for m in members} == {(0, 0, 0, 0o644)}
        assert json.load(archive.extractfile(".manifest"))["revision"] == "v7"


def test_sign_verify_inspect_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = devkeys.new_ec_key()
    (tmp_path / "key.pem").write_bytes(devkeys.private_pem(key))
    from cryptography.hazmat.primitives import serialization
    (tmp_path / "pub.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    bundle = tmp_path / "b.tar.gz"
    bundle.write_bytes(write_archive(revision_files(4)))
    assert cli.main(["bundle", "sign", str(bundle), "--key", str(tmp_path / "key.pem"),
                     "--key-id", "rel-1"]) == 0
    assert cli.main(["bundle", "verify", str(bundle), "--public-key",
                     str(tmp_path / "pub.pem")]) == 0
    assert cli.main(["bundle", "inspect", str(bundle), "--public-key", str(tmp_path / "pub.pem"),
                     "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["revision"] == "rev-4" and report["roots"] == ["mcp"]
    assert report["packages"] == ["mcp.authz"]
    assert report["entrypoints"] == ["mcp/authz/decision"]
    assert report["signature"]["status"] == "verified"
    assert report["signature"]["algorithm"] == "ES256" and report["signature"]["key_id"] == "rel-1"
    # a tampered copy: verify fails with the file's name, inspect reports it
    with tarfile.open(bundle) as archive:
        files = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}
    files["mcp/config/data.json"] = b'{"allow_x": false, "audit": "basic"}'
    bundle.write_bytes(write_archive(files))
    assert cli.main(["bundle", "verify", str(bundle), "--public-key",
                     str(tmp_path / "pub.pem")]) == 1
    assert "mcp/config/data.json: digest mismatch" in capsys.readouterr().err


def test_sign_directory_in_place_and_refuse_revision_change(tmp_path: Path) -> None:
    source = write_tree(tmp_path / "src", revision_files(2))
    (tmp_path / "secret").write_bytes(b"s" * 40)
    assert cli.main(["bundle", "sign", str(source), "--key", str(tmp_path / "secret")]) == 0
    assert (source / SIGNATURES_FILE).is_file()
    assert cli.main(["bundle", "verify", str(source), "--secret", str(tmp_path / "secret")]) == 0
    # changing the revision of a signed bundle would break its signature: refused (exit 2)
    assert cli.main(["bundle", "build", str(source), "-o", str(tmp_path / "o.tar.gz"),
                     "--revision", "x"]) == 2


@pytest.mark.requirement("opa-signature-interop")
@pytest.mark.parametrize("algorithm", ["RS256", "PS256", "ES256", "HS256"])
def test_opa_engine_verifies_our_signatures(algorithm: str) -> None:
    """OPA's own JWS code (its Go engine, via PyPI opa-golib-python-bindings when installed)
    accepts the token this signer writes, and agrees with the digest of a raw file."""
    opa = pytest.importorskip("opa_bindings")
    from cryptography.hazmat.primitives import serialization
    private = {"RS256": devkeys.new_rsa_key, "PS256": devkeys.new_rsa_key,
               "ES256": devkeys.new_ec_key}.get(algorithm)
    key = private() if private else b"s" * 40
    files = revision_files(2)
    token = json.loads(sign_files(files, SigningKey(algorithm, key, "k1")))["signatures"][0]
    verifier = (key.decode() if isinstance(key, bytes) else key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode())
    with opa.OpaEngine() as engine:
        result = engine.eval_query(
            f"ok := io.jwt.verify_{algorithm.lower()}(input.token, input.key); "
            "digest := crypto.sha256(input.policy)",
            {"token": token, "key": verifier, "policy": files["mcp/authz/policy.rego"].decode()})
    assert result[0]["ok"] is True
    assert result[0]["digest"] == file_digest("mcp/authz/policy.rego",
                                              files["mcp/authz/policy.rego"])
