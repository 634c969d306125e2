"""``mcp-authz bundle build|sign|verify|inspect``: OPA-format bundles and signatures.

- ``build DIR -o OUT [--revision R]``: a deterministic .tar.gz (the same input gives the same
  bytes), after checking that the bundle parses;
- ``sign DIR|FILE --key KEY [--key-id ID] [--algorithm A] [--scope S] [-o OUT]``: writes OPA's
  ``.signatures.json`` into the directory, or a signed copy of the tarball (in place by default);
- ``verify FILE --public-key KEY|--secret FILE``: exit 0 when the signature and every digest check
  out, 1 when they do not;
- ``inspect FILE [--public-key KEY] [--format text|json]``: revision, roots, files, packages,
  entry points, signature status.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..bundles import parse_bundle, read_files
from ..bundlewriter import with_revision, write_archive
from ..engine import DEFAULT_ENTRYPOINT
from ..errors import BundleError
from ..signing import (
    SIGNATURES_FILE,
    SIGNING_ALGORITHMS,
    SigningKey,
    Verification,
    decode_token,
    read_token,
    sign_files,
)

EXIT_OK, EXIT_FAILED = 0, 1
_ENTRYPOINT_RE = re.compile(
    r"#\s*METADATA\s*\n(?:#.*\n)*?#\s*entrypoint:\s*true\s*\n(?:#.*\n)*\s*([A-Za-z_]\w*)")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("bundle", help="build, sign, verify and inspect bundles")
    commands = parser.add_subparsers(dest="bundle_command", required=True, metavar="SUBCOMMAND")

    build = commands.add_parser("build", help="a deterministic .tar.gz from a directory")
    build.add_argument("directory")
    build.add_argument("-o", "--output", required=True, help="the .tar.gz to write")
    build.add_argument("--revision", help="set the manifest's revision")
    build.set_defaults(run=run_build)

    sign = commands.add_parser("sign", help="write OPA's .signatures.json")
    sign.add_argument("bundle", help="bundle directory or .tar.gz")
    sign.add_argument("--key", required=True, help="PEM private key, or a file holding an HMAC "
                      "secret (its exact bytes)")
    sign.add_argument("--key-id", default="", help="key id (JWS kid) verifiers look up")
    sign.add_argument("--algorithm", choices=SIGNING_ALGORITHMS,
                      help="default: RS256 for RSA, ES256 for P-256, HS256 for a secret")
    sign.add_argument("--scope", default="", help="scope claim verifiers must expect")
    sign.add_argument("-o", "--output", help="for a .tar.gz: write here instead of in place")
    sign.set_defaults(run=run_sign)

    for name, text in (("verify", "check a bundle's signature and digests"),
                       ("inspect", "revision, roots, files, packages, signature")):
        command = commands.add_parser(name, help=text)
        command.add_argument("bundle", help="bundle directory or .tar.gz")
        _verification_arguments(command, required=name == "verify")
        if name == "inspect":
            command.add_argument("--format", choices=("text", "json"), default="text")
        command.set_defaults(run=run_verify if name == "verify" else run_inspect)


def _verification_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    keys = parser.add_mutually_exclusive_group(required=required)
    keys.add_argument("--public-key", help="PEM public key the bundle must be signed with")
    keys.add_argument("--secret", help="file holding the HMAC secret (its exact bytes)")
    parser.add_argument("--key-id", default="", help="the key's id (default: accept any kid)")
    parser.add_argument("--algorithm", choices=SIGNING_ALGORITHMS)
    parser.add_argument("--scope", default="")


def run_build(args: argparse.Namespace) -> int:
    if not Path(args.directory).is_dir():
        raise BundleError(f"{args.directory}: not a directory")
    files = read_files(args.directory)
    if args.revision is not None:
        files = with_revision(files, args.revision)
    contents = parse_bundle(files, source=args.directory)
    data = write_archive(files)
    Path(args.output).write_bytes(data)
    print(f"{args.output}: revision {contents.revision!r}, {len(files)} files, "
          f"sha256 {hashlib.sha256(data).hexdigest()}", file=sys.stderr)
    return EXIT_OK


def run_sign(args: argparse.Namespace) -> int:
    key = SigningKey.from_file(args.key, args.algorithm or "", args.key_id, private=True)
    files = read_files(args.bundle)
    files.pop(SIGNATURES_FILE, None)
    parse_bundle(files, source=args.bundle)  # never sign a bundle that cannot load
    signatures = sign_files(files, key, args.scope)
    if Path(args.bundle).is_dir():
        if args.output:
            raise BundleError("--output is for tarballs; a directory is signed in place")
        written = Path(args.bundle) / SIGNATURES_FILE
        written.write_bytes(signatures)
    else:
        written = Path(args.output or args.bundle)
        written.write_bytes(write_archive({**files, SIGNATURES_FILE: signatures}))
    print(f"{written}: signed {len(files)} files with {key.algorithm}"
          f"{f' (key id {key.key_id})' if key.key_id else ''}", file=sys.stderr)
    return EXIT_OK


def _verification(args: argparse.Namespace) -> Verification | None:
    path = args.public_key or args.secret
    if not path:
        return None
    key = SigningKey.from_file(path, args.algorithm or "", args.key_id)
    return Verification({args.key_id: key}, args.scope)


def run_verify(args: argparse.Namespace) -> int:
    files = read_files(args.bundle)
    verification = _verification(args)
    assert verification is not None
    try:
        verified = verification.verify(files)
        parse_bundle(files, source=args.bundle)
    except BundleError as exc:
        print(f"{args.bundle}: NOT VERIFIED: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.bundle}: verified: {len(verified.files)} files, {verified.algorithm}, key id "
          f"{verified.key_id!r}", file=sys.stderr)
    return EXIT_OK


def run_inspect(args: argparse.Namespace) -> int:
    files = read_files(args.bundle)
    contents = parse_bundle(files, source=args.bundle)
    report = {
        "revision": contents.revision,
        "roots": list(contents.roots),
        "metadata": dict(contents.metadata),
        "files": [{"name": name, "bytes": len(raw)} for name, raw in sorted(files.items())],
        "packages": sorted(set(contents.packages().values())),
        "entrypoints": entrypoints(contents.modules, contents.packages()),
        "lookups": [{"name": lk.name, "key": ".".join(lk.key), "data": "/".join(lk.data)}
                    for lk in contents.lookups],
        "signature": signature_status(files, _verification(args)),
    }
    if args.format == "json":
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return EXIT_OK
    _print_text(report)
    return EXIT_OK


def entrypoints(modules: Mapping[str, str], packages: Mapping[str, str]) -> list[str]:
    """Rules annotated ``entrypoint: true`` (OPA's METADATA), plus the service's default
    entrypoint when the bundle defines it."""
    found = []
    for name, text in modules.items():
        package = packages.get(name, "").replace(".", "/")
        found.extend(f"{package}/{rule}" for rule in _ENTRYPOINT_RE.findall(text))
    default_package, _, default_rule = DEFAULT_ENTRYPOINT.rpartition("/")
    rule_re = re.compile(rf"^\s*(default\s+)?{default_rule}\b", re.MULTILINE)
    if any(packages.get(n, "").replace(".", "/") == default_package and rule_re.search(t)
           for n, t in modules.items()):
        found.append(DEFAULT_ENTRYPOINT)
    return sorted(set(found))


def signature_status(files: dict[str, bytes],
                     verification: Verification | None) -> dict[str, Any]:
    if SIGNATURES_FILE not in files:
        return {"status": "unsigned"}
    try:
        header, payload, _, _ = decode_token(read_token(files))
    except BundleError as exc:
        return {"status": "malformed", "error": str(exc)}
    status: dict[str, Any] = {
        "status": "signed (not verified: no key given)", "algorithm": header.get("alg"),
        "key_id": header.get("kid") or payload.get("keyid") or "",
        "scope": payload.get("scope", ""),
        "files": len(payload.get("files") or [])}
    if verification is not None:
        try:
            verification.verify(files)
            status["status"] = "verified"
        except BundleError as exc:
            status.update(status="INVALID", error=str(exc))
    return status


def _print_text(report: dict[str, Any]) -> None:
    signature = report["signature"]
    lines = [
        f"revision:    {report['revision']!r}",
        f"roots:       {', '.join(repr(r) for r in report['roots'])}",
        f"packages:    {', '.join(report['packages']) or '-'}",
        f"entrypoints: {', '.join(report['entrypoints']) or '-'}",
        f"signature:   {signature['status']}"
        + "".join(f"; {k} {signature[k]!r}" for k in ("algorithm", "key_id", "error")
                  if signature.get(k)),
        "files:",
        *(f"  {f['bytes']:>10}  {f['name']}" for f in report["files"]),
    ]
    if report["lookups"]:
        lines.append("lookups:")
        lines.extend(f"  input.lookup.{lk['name']} = data.{lk['data'].replace('/', '.')}"
                     f"[input.{lk['key']}]" for lk in report["lookups"])
    print("\n".join(lines))
