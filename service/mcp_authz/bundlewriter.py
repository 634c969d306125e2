"""Write bundles: a deterministic .tar.gz, and a manifest with a given revision.

The same files give byte-identical archives: entries sorted by name, no directory entries,
mtime 0, uid/gid 0 with no user or group names, mode 0644, and a gzip header with mtime 0 and no
file name. A release pipeline can therefore rebuild a bundle and compare digests.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Mapping

from .bundles import parse_bundle
from .errors import BundleError
from .signing import SIGNATURES_FILE


def write_archive(files: Mapping[str, bytes]) -> bytes:
    """A deterministic gzipped tar of ``files`` (bundle-relative path -> content)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name in sorted(files):
            content = files[name]
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(content), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            archive.addfile(info, io.BytesIO(content))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def with_revision(files: Mapping[str, bytes], revision: str) -> dict[str, bytes]:
    """``files`` with the manifest's revision set (a manifest is created when there is none).

    Refuses a signed bundle: changing the manifest would break its signature; sign after."""
    if SIGNATURES_FILE in files:
        raise BundleError(f"{SIGNATURES_FILE}: setting the revision would invalidate the "
                          "signature; build first, then sign")
    parse_bundle(files)  # the manifest (and everything else) must be valid first
    manifest = _manifest(files)
    manifest["revision"] = revision
    result = dict(files)
    result[".manifest"] = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()
    return result


def _manifest(files: Mapping[str, bytes]) -> dict[str, object]:
    raw = files.get(".manifest")
    return dict(json.loads(raw)) if raw else {"roots": [""]}
