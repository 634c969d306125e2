"""Real parts for the bundle tests: small policy bundles, raw tarballs, an HTTP bundle server."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mcp_authz.bundlewriter import write_archive
from mcp_authz.loopback import LoopbackServer

# Revision N allows tool "x" only when N is even: a decision is consistent with the revision it
# reports exactly when allow == (N is even).
POLICY = """package mcp.authz

import rego.v1

default decision := {"allow": false, "reasons": [{"code": "tool_unknown", "message": "no"}],
	"obligations": []}

decision := {"allow": true, "reasons": [], "obligations": [{"type": "audit",
	"params": {"level": data.mcp.config.audit}}]} if {
	input.tool.name == "x"
	data.mcp.config.allow_x == true
}
"""


def policy_files(revision: str, allow_x: bool, audit: str = "basic",
                 extra: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """A valid bundle: manifest with roots [mcp], the policy, one data file, plus ``extra``."""
    files = {
        ".manifest": json.dumps({"revision": revision, "roots": ["mcp"]}).encode(),
        "mcp/authz/policy.rego": POLICY.encode(),
        "mcp/config/data.json": json.dumps({"allow_x": allow_x, "audit": audit}).encode(),
    }
    files.update(extra or {})
    return files


def revision_files(n: int) -> dict[str, bytes]:
    return policy_files(f"rev-{n}", allow_x=n % 2 == 0)


def revision_archive(n: int) -> bytes:
    return write_archive(revision_files(n))


def raw_tar(members: Iterable[tuple[tarfile.TarInfo, bytes]], compress: bool = True) -> bytes:
    """A tarball with exactly these members, however malformed (links, odd names)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz" if compress else "w",
                      format=tarfile.GNU_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return out.getvalue()


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE,
           link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def members_of(files: dict[str, bytes]) -> list[tuple[tarfile.TarInfo, bytes]]:
    return [member(name, data) for name, data in sorted(files.items())]


class BundleServer:
    """A real HTTP server on 127.0.0.1 serving one bundle with a strong ETag; answers 304 to a
    matching If-None-Match and counts 200s and 304s. ``down`` makes it answer 503."""

    def __init__(self, token: str = "") -> None:
        self.body = b""
        self.etag = ""
        self.down = False
        self.token = token
        self.ok = 0
        self.not_modified = 0
        self.unauthorized = 0
        self.lock = threading.Lock()
        self._server = LoopbackServer(self._respond)
        self.url = self._server.url("/bundles/mcp.tar.gz")

    def _respond(self, method: str, path: str, headers: Any) -> tuple[int, dict[str, str], bytes]:
        status, body, etag = self.answer(headers.get("If-None-Match", ""),
                                         headers.get("Authorization", ""))
        return status, ({"ETag": etag} if etag else {}), body

    def publish(self, body: bytes) -> None:
        with self.lock:
            self.body = body
            self.etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'

    def answer(self, if_none_match: str, authorization: str) -> tuple[int, bytes, str]:
        with self.lock:
            if self.down:
                return 503, b"", ""
            if self.token and authorization != f"Bearer {self.token}":
                self.unauthorized += 1
                return 401, b"", ""
            if if_none_match and if_none_match == self.etag:
                self.not_modified += 1
                return 304, b"", self.etag
            self.ok += 1
            return 200, self.body, self.etag

    def close(self) -> None:
        self._server.close()


def write_tree(directory: Path, files: dict[str, bytes]) -> Path:
    for name, raw in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(raw)
    return directory
