"""OPA's bundle format: read a directory or a .tar.gz into checked, parsed contents.

Reading is defensive (STYLE: verify before you parse): tar members must be regular files with
relative paths inside the bundle, each file and the whole bundle are size-limited, policy files
must be UTF-8, and data may only live under the manifest's roots. Every error starts with the
file it concerns. Nothing here compiles Rego; ``engine.compile_bundle`` does.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import posixpath
import re
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from .errors import BundleError

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_TOTAL_BYTES = 256 * 1024 * 1024
MAX_FILES = 10000
DATA_FILES = ("data.json", "data.yaml", "data.yml")
TEST_FILE_SUFFIX = "_test.rego"
PACKAGE_RE = re.compile(r"^\s*package\s+([A-Za-z_][\w.]*)", re.MULTILINE)


@dataclass(frozen=True)
class Lookup:
    """A keyed lookup the service resolves in Python before evaluation.

    ``key`` is a dotted path into the input document (``tool.name``), ``data`` a slash path to an
    object in the bundle's data (``mcp/catalog/tools``). The entry found, if any, is handed to the
    policy as ``input.lookup.<name>``, so the policy never indexes a large object with a key the
    caller chose (a miss costs regopy time linear in the object's size).
    """

    name: str
    key: tuple[str, ...]
    data: tuple[str, ...]


@dataclass(frozen=True)
class BundleContents:
    revision: str
    roots: tuple[str, ...]
    metadata: Mapping[str, Any]
    modules: Mapping[str, str]
    data: Mapping[str, Any]
    files: Mapping[str, bytes] = field(repr=False)
    source: str = ""
    lookups: tuple[Lookup, ...] = ()

    def for_serving(self) -> BundleContents:
        """The bundle without its ``*_test.rego`` modules: tests are for ``mcp-authz test``.

        Served, they would cost every query time (regopy's per-query cost grows with the number
        of rules) and could crash the engine at compile time (``with input as`` on rules that
        call builtins aborts regopy)."""
        modules = {name: text for name, text in self.modules.items()
                   if not name.endswith(TEST_FILE_SUFFIX)}
        return dataclasses.replace(self, modules=modules)

    def packages(self) -> dict[str, str]:
        """Each module's package name, by file."""
        result = {}
        for name, text in self.modules.items():
            match = PACKAGE_RE.search(text)
            result[name] = match.group(1) if match else ""
        return result


def read_files(path: str | os.PathLike[str], *, max_file_bytes: int = MAX_FILE_BYTES,
               max_total_bytes: int = MAX_TOTAL_BYTES) -> dict[str, bytes]:
    """Every file of a bundle directory or tarball, by bundle-relative path.

    All regular files are read (within the limits), not only policy and data: a signature
    covers every file, as in OPA. Only ``parse_bundle`` decides which files mean something.
    A directory's hidden files and directories are skipped, except the manifest and signatures.
    """
    source = Path(path)
    if source.is_dir():
        return _read_directory(source, max_file_bytes, max_total_bytes)
    if source.is_file():
        try:
            with source.open("rb") as handle:
                return _read_tarball(handle, source.name, max_file_bytes, max_total_bytes)
        except OSError as exc:
            raise BundleError(f"{source.name}: cannot read: {exc.strerror}") from exc
    raise BundleError(f"{path}: no such bundle directory or file")


def read_archive(data: bytes, name: str = "bundle.tar.gz", *,
                 max_file_bytes: int = MAX_FILE_BYTES,
                 max_total_bytes: int = MAX_TOTAL_BYTES) -> dict[str, bytes]:
    """Every file of a tarball held in memory (a downloaded bundle), with the same checks."""
    return _read_tarball(io.BytesIO(data), name, max_file_bytes, max_total_bytes)


def _read_directory(root: Path, max_file: int, max_total: int) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    total = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") or d == ".signatures")
        for name in sorted(filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                raise BundleError(f"{rel}: symbolic links are not allowed in a bundle")
            if name.startswith(".") and rel not in (".manifest", ".signatures.json"):
                continue
            size = full.stat().st_size
            total += size
            _check_sizes(rel, size, total, len(files), max_file, max_total)
            files[rel] = full.read_bytes()
    return files


def _read_tarball(handle: IO[bytes], label: str, max_file: int,
                  max_total: int) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=handle, mode="r:*") as archive:
            for member in archive:
                name = member.name
                if member.isdir():
                    continue
                if not member.isfile():
                    raise BundleError(f"{name}: only regular files are allowed in a bundle "
                                      "(no links or devices)")
                rel = _safe_member_name(name)
                total += member.size
                _check_sizes(rel, member.size, total, len(files), max_file, max_total)
                entry = archive.extractfile(member)
                data = entry.read(max_file + 1) if entry else b""
                if len(data) != member.size:
                    raise BundleError(f"{rel}: truncated or oversized entry")
                if rel in files:
                    raise BundleError(f"{rel}: appears twice in the archive")
                files[rel] = data
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise BundleError(f"{label}: not a readable tar.gz bundle: {exc}") from exc
    return files


def _safe_member_name(name: str) -> str:
    """A member name as a bundle-relative path; refuses anything that could point elsewhere.

    One leading ``/`` is OPA's own convention (``opa build`` writes ``/data.json``): it means the
    bundle root, and the file is only ever read into memory. ``//``, ``..`` components, drive
    letters, backslashes and NUL are refused."""
    if (name.startswith("//") or "\\" in name or "\x00" in name or re.match(r"^/?[A-Za-z]:", name)
            or not name.strip("/")):
        raise BundleError(f"{name}: absolute or malformed path in archive")
    if "/../" in f"/{name}/":
        raise BundleError(f"{name}: path escapes the bundle")
    name = name[1:] if name.startswith("/") else name
    normal = posixpath.normpath(name)
    if normal.startswith("../") or normal == ".." or "/../" in f"/{name}/":
        raise BundleError(f"{name}: path escapes the bundle")
    return normal[2:] if normal.startswith("./") else normal


def _check_sizes(rel: str, size: int, total: int, count: int, max_file: int,
                 max_total: int) -> None:
    if size > max_file:
        raise BundleError(f"{rel}: {size} bytes exceeds the per-file limit of {max_file}")
    if total > max_total:
        raise BundleError(f"{rel}: bundle exceeds the total size limit of {max_total} bytes")
    if count >= MAX_FILES:
        raise BundleError(f"{rel}: bundle has more than {MAX_FILES} files")


def parse_bundle(files: Mapping[str, bytes], source: str = "") -> BundleContents:
    """Manifest, modules and merged data from a bundle's files; checks roots."""
    manifest = _manifest(files)
    roots = tuple(r.strip("/") for r in manifest.get("roots", [""]))
    modules = {}
    data: dict[str, Any] = {}
    for rel in sorted(files):
        raw = files[rel]
        if rel.endswith(".rego"):
            modules[rel] = _utf8(rel, raw)
        elif posixpath.basename(rel) in DATA_FILES:
            _merge_data(data, rel, _parse_data(rel, raw))
    contents = BundleContents(
        revision=str(manifest.get("revision", "")), roots=roots,
        metadata=manifest.get("metadata") or {}, modules=modules, data=data, files=dict(files),
        source=source, lookups=_lookups(manifest))
    _check_roots(contents)
    return contents


def load_bundle(path: str | os.PathLike[str]) -> BundleContents:
    return parse_bundle(read_files(path), source=str(path))


def _manifest(files: Mapping[str, bytes]) -> dict[str, Any]:
    raw = files.get(".manifest")
    if raw is None:
        return {"roots": [""]}
    try:
        manifest = json.loads(_utf8(".manifest", raw))
    except json.JSONDecodeError as exc:
        raise BundleError(f".manifest:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from exc
    if not isinstance(manifest, dict):
        raise BundleError(".manifest: must be a JSON object")
    roots = manifest.get("roots", [""])
    if not isinstance(roots, list) or not all(isinstance(r, str) for r in roots):
        raise BundleError(".manifest: roots must be a list of strings")
    if not isinstance(manifest.get("revision", ""), str):
        raise BundleError(".manifest: revision must be a string")
    if not isinstance(manifest.get("metadata", {}) or {}, dict):
        raise BundleError(".manifest: metadata must be an object")
    return manifest


def _lookups(manifest: Mapping[str, Any]) -> tuple[Lookup, ...]:
    declared = (manifest.get("metadata") or {}).get("mcp_authz", {}).get("lookups", [])
    lookups = []
    for i, entry in enumerate(declared if isinstance(declared, list) else [None]):
        where = f".manifest: metadata.mcp_authz.lookups[{i}]"
        if not isinstance(entry, dict) or not all(
                isinstance(entry.get(k), str) and entry.get(k) for k in ("name", "key", "data")):
            raise BundleError(f"{where}: needs string fields name, key and data")
        lookups.append(Lookup(entry["name"], tuple(entry["key"].split(".")),
                              tuple(p for p in entry["data"].split("/") if p)))
    return tuple(lookups)


def _utf8(rel: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise BundleError(f"{rel}:{line}: not valid UTF-8") from exc


def _parse_data(rel: str, raw: bytes) -> Any:
    text = _utf8(rel, raw)
    if rel.endswith(".json"):
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            raise BundleError(f"{rel}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from exc
        except ValueError as exc:
            raise BundleError(f"{rel}: {exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{rel}:{mark.line + 1}:{mark.column + 1}" if mark else rel
        raise BundleError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON data")


def _merge_data(data: dict[str, Any], rel: str, value: Any) -> None:
    """Place a data file's content at its directory path, as OPA does; no silent overwrite."""
    parts = [p for p in posixpath.dirname(rel).split("/") if p]
    if not parts and not isinstance(value, dict):
        raise BundleError(f"{rel}: top-level data must be an object")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise BundleError(f"{rel}: conflicts with data already at {'/'.join(parts)}")
    if not parts:
        _deep_merge(data, value, rel)
    elif parts[-1] in node and isinstance(node[parts[-1]], dict) and isinstance(value, dict):
        _deep_merge(node[parts[-1]], value, rel)
    elif parts[-1] in node:
        raise BundleError(f"{rel}: conflicts with data already at {'/'.join(parts)}")
    else:
        node[parts[-1]] = value


def _deep_merge(target: dict[str, Any], value: dict[str, Any], rel: str) -> None:
    for key, item in value.items():
        if key in target and isinstance(target[key], dict) and isinstance(item, dict):
            _deep_merge(target[key], item, rel)
        elif key in target:
            raise BundleError(f"{rel}: key {key!r} is defined by more than one data file")
        else:
            target[key] = item


def _check_roots(contents: BundleContents) -> None:
    roots = [r for r in contents.roots]
    if "" in roots:
        return

    def covered(path: str) -> bool:
        return any(path == r or path.startswith(r + "/") for r in roots)

    for rel, package in contents.packages().items():
        if not package:
            raise BundleError(f"{rel}:1: no package declaration")
        if not covered(package.replace(".", "/")):
            raise BundleError(f"{rel}: package {package} is outside the manifest roots "
                              f"({', '.join(roots)})")
    _check_data_roots(contents.data, "", covered, roots)


def _check_data_roots(data: Mapping[str, Any], prefix: str, covered: Any,
                      roots: list[str]) -> None:
    """Every data path must lie under a root; descend only where a root starts deeper."""
    for key, value in data.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if covered(path):
            continue
        if isinstance(value, dict) and any(r.startswith(path + "/") for r in roots):
            _check_data_roots(value, path, covered, roots)
        else:
            raise BundleError(f"data at {path!r} is outside the manifest roots "
                              f"({', '.join(roots)})")
