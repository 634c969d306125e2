"""Every bad bundle from issue 4 is refused with a clear reason; the previous revision keeps
serving and the status names the error."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest
from bundle_support import member, members_of, policy_files, raw_tar, revision_files

from mcp_authz.activation import PolicyStore
from mcp_authz.bundlewriter import write_archive
from mcp_authz.decisions import encode_input
from mcp_authz.devkeys import new_ec_key, new_rsa_key
from mcp_authz.errors import BundleError
from mcp_authz.signing import SIGNATURES_FILE, SigningKey, Verification, sign_files

MAX_FILE = 64 * 1024
MAX_TOTAL = 256 * 1024
SIGNER = new_rsa_key()
KEY = SigningKey("RS256", SIGNER, "release-1")
VERIFY = Verification({"release-1": SigningKey("RS256", SIGNER.public_key(), "release-1")})


def store(verification: Verification | None = None) -> PolicyStore:
    result = PolicyStore("mcp/authz/decision", verification=verification,
                         max_file_bytes=MAX_FILE, max_total_bytes=MAX_TOTAL)
    result.activate_archive(signed(revision_files(2)) if verification else
                            write_archive(revision_files(2)), "good")
    return result


def signed(files: dict[str, bytes], key: SigningKey = KEY) -> bytes:
    return write_archive({**files, SIGNATURES_FILE: sign_files(files, key)})


def assert_refused(target: PolicyStore, archive: bytes, reason: str) -> None:
    with pytest.raises(BundleError, match=reason):
        target.activate_archive(archive, "candidate")
    policy = target.active()
    assert policy is not None and policy.revision == "rev-2"
    assert policy.evaluate(encode_input({"tool": {"name": "x"}})).allow is True
    status = target.status()
    assert status.active_revision == "rev-2"
    assert status.last_error.startswith("candidate: ")
    assert re.search(reason, status.last_error), status.last_error


BAD_ARCHIVES = {
    "traversal": (raw_tar([*members_of(revision_files(3)), member("../evil.rego", b"x")]),
                  "path escapes the bundle"),
    "traversal inside": (raw_tar([member("mcp/../../etc/x.rego", b"x")]),
                         "path escapes the bundle"),
    "absolute traversal": (raw_tar([member("/../etc/passwd", b"x")]), "path escapes the bundle"),
    "double-slash absolute": (raw_tar([member("//etc/passwd", b"x")]),
                              "absolute or malformed path"),
    "drive letter": (raw_tar([member("C:/windows/x.rego", b"x")]), "absolute or malformed path"),
    "symlink": (raw_tar([*members_of(revision_files(3)),
                         member("mcp/link.rego", kind=tarfile.SYMTYPE, link="/etc/passwd")]),
                "only regular files"),
    "hard link": (raw_tar([*members_of(revision_files(3)),
                           member("mcp/hard.rego", kind=tarfile.LNKTYPE,
                                  link="mcp/authz/policy.rego")]), "only regular files"),
    "oversized entry": (write_archive(policy_files(
        "rev-3", True, extra={"mcp/big/data.json": b'{"k": "' + b"a" * MAX_FILE + b'"}'})),
        "exceeds the per-file limit"),
    "non-UTF-8 policy": (write_archive(policy_files(
        "rev-3", True, extra={"mcp/authz/extra.rego": b"package mcp.authz\n\n# caf\xe9\n"})),
        r"mcp/authz/extra.rego:3: not valid UTF-8"),
    "invalid JSON data": (write_archive({**revision_files(3),
                                         "mcp/config/data.json": b'{"allow_x": tru}'}),
                          r"mcp/config/data.json:1:\d+: invalid JSON"),
    "invalid YAML data": (write_archive(policy_files(
        "rev-3", True, extra={"mcp/more/data.yaml": b"a: 1\nb: [unclosed\n"})),
        r"mcp/more/data.yaml:\d+:\d+: invalid YAML"),
    "Rego syntax error": (write_archive({**revision_files(3), "mcp/authz/policy.rego":
                                         b"package mcp.authz\n\nimport rego.v1\n\n"
                                         b"decision := {\"allow\": true if {\n"}),
                          r"mcp/authz/policy.rego:\d+:\d+: "),
    "data outside roots": (write_archive({**revision_files(3),
                                          "other/data.json": b'{"x": 1}'}),
                           "data at 'other' is outside the manifest roots"),
    "policy outside roots": (write_archive({**revision_files(3),
                                            "evil/p.rego": b"package evil\n\nx := 1\n"}),
                             "package evil is outside the manifest roots"),
    "not a tarball": (b"this is not gzip", "not a readable tar.gz bundle"),
}


@pytest.mark.requirement("bundle-refusals")
@pytest.mark.parametrize("case", sorted(BAD_ARCHIVES))
def test_bad_archive_is_refused_and_previous_revision_serves(case: str) -> None:
    archive, reason = BAD_ARCHIVES[case]
    assert_refused(store(), archive, reason)


@pytest.mark.requirement("bundle-refusals")
def test_decompression_bomb_is_refused_before_it_is_inflated() -> None:
    # 12 files of zeros, each under the per-file limit, 600 KiB together: a 2 KiB download
    zeros = {f"mcp/bomb{i}/data.json": b"0" * (50 * 1024) for i in range(12)}
    archive = write_archive({**revision_files(3), **zeros})
    assert len(archive) < 4096
    assert_refused(store(), archive, "exceeds the total size limit")
    # one entry that inflates past the per-file limit is refused from its header
    inflating = {"mcp/z/data.json": b"[" + b"0," * MAX_FILE + b"0]"}
    single = write_archive(policy_files("rev-3", True, extra=inflating))
    assert len(single) < 4096
    assert_refused(store(), single, "exceeds the per-file limit")


@pytest.mark.requirement("bundle-refusals")
def test_truncated_gzip_is_refused() -> None:
    archive = write_archive(revision_files(3))
    assert_refused(store(), archive[: len(archive) // 2], "not a readable tar.gz bundle")


@pytest.mark.requirement("bundle-signature")
def test_signed_bundle_activates_when_key_matches() -> None:
    target = store(VERIFY)
    policy = target.activate_archive(signed(revision_files(4)), "release")
    assert policy.revision == "rev-4"


SIGNATURE_CASES = {
    "unsigned": (lambda: write_archive(revision_files(3)), "missing: the bundle is not signed"),
    "tampered after signing": (
        lambda: _tamper(revision_files(3), "mcp/config/data.json",
                        b'{"allow_x": true, "audit": "none"}'),
        "mcp/config/data.json: digest mismatch"),
    "file missing from bundle": (lambda: _drop(revision_files(3), "mcp/config/data.json"),
                                 "mcp/config/data.json: listed in the bundle signature but "
                                 "missing"),
    "extra file": (lambda: _add(revision_files(3), "mcp/extra/data.json", b'{"a": 1}'),
                   "mcp/extra/data.json: not listed in the bundle signature"),
    "unknown key id": (lambda: signed(revision_files(3), SigningKey("RS256", new_rsa_key(),
                                                                    "someone-else")),
                       "signed with unknown key id 'someone-else'"),
    "right key id, wrong key": (lambda: signed(revision_files(3),
                                               SigningKey("RS256", new_rsa_key(), "release-1")),
                                "signature does not verify"),
    "algorithm switch": (lambda: signed(revision_files(3),
                                        SigningKey("ES256", new_ec_key(), "release-1")),
                         "JWS alg 'ES256' does not match the configured RS256"),
    "HMAC with the public key as secret": (
        lambda: signed(revision_files(3), SigningKey("HS256", _public_pem(), "release-1")),
        "JWS alg 'HS256' does not match"),
    "two signatures": (lambda: _two_signatures(revision_files(3)),
                       "expected exactly one JWS, found 2"),
}


@pytest.mark.requirement("bundle-signature")
@pytest.mark.parametrize("case", sorted(SIGNATURE_CASES))
def test_badly_signed_bundle_is_refused(case: str) -> None:
    build, reason = SIGNATURE_CASES[case]
    assert_refused(store(VERIFY), build(), reason)


def _tamper(files: dict[str, bytes], name: str, content: bytes) -> bytes:
    signature = sign_files(files, KEY)
    return write_archive({**files, name: content, SIGNATURES_FILE: signature})


def _drop(files: dict[str, bytes], name: str) -> bytes:
    signature = sign_files(files, KEY)
    rest = {k: v for k, v in files.items() if k != name}
    return write_archive({**rest, SIGNATURES_FILE: signature})


def _add(files: dict[str, bytes], name: str, content: bytes) -> bytes:
    return write_archive({**files, name: content, SIGNATURES_FILE: sign_files(files, KEY)})


def _two_signatures(files: dict[str, bytes]) -> bytes:
    token = json.loads(sign_files(files, KEY))["signatures"][0]
    document = json.dumps({"signatures": [token, token]}).encode()
    return write_archive({**files, SIGNATURES_FILE: document})


def _public_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    return SIGNER.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)


def test_reformatted_data_keeps_its_signature_as_in_opa() -> None:
    """OPA hashes data files over their parsed value: re-indenting one does not break it."""
    files = revision_files(3)
    signature = sign_files(files, KEY)
    pretty = json.dumps(json.loads(files["mcp/config/data.json"]), indent=4).encode()
    archive = write_archive({**files, "mcp/config/data.json": pretty,
                             SIGNATURES_FILE: signature})
    assert store(VERIFY).activate_archive(archive, "release").revision == "rev-3"


def test_directory_with_symlink_is_refused(tmp_path: Path) -> None:
    for name, data in revision_files(3).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    (tmp_path / "mcp" / "secret.rego").symlink_to("/etc/passwd")
    target = store()
    with pytest.raises(BundleError, match="mcp/secret.rego: symbolic links are not allowed"):
        target.activate_path(str(tmp_path))
    assert target.active() is not None and target.active().revision == "rev-2"


def test_opa_style_leading_slash_names_are_bundle_relative() -> None:
    """``opa build`` writes ``/data.json``: a leading slash means the bundle root."""
    archive = raw_tar([member("/" + name, data) for name, data in revision_files(5).items()])
    assert store().activate_archive(archive, "opa-built").revision == "rev-5"
