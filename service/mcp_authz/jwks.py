"""JSON Web Key Sets from a file or an HTTP(S) URL, cached, refreshed on an unknown ``kid``.

A refresh is rate-limited (``min_refresh_seconds``) so a flood of tokens with invented key ids
cannot turn into a flood of fetches. When the endpoint is down, the keys last fetched keep
working until ``max_stale_seconds`` after that fetch; after that no key is returned and every
token is refused.
"""

from __future__ import annotations

import json
import logging
import math
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 1024 * 1024
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class JwksUnavailable(Exception):
    """No usable key set: never fetched, or stale past its limit."""


class KeySet:
    """The keys of one issuer, by ``kid``."""

    def __init__(self, *, file: str = "", url: str = "", document: dict[str, Any] | None = None,
                 ca_file: str = "",
                 cache_seconds: float = 300, max_stale_seconds: float = 86400,
                 min_refresh_seconds: float = 10, clock: Callable[[], float] = time.monotonic):
        if (bool(file) + bool(url) + (document is not None)) != 1:
            raise ValueError("exactly one of file, url and document")
        if url and urlsplit(url).scheme != "https" and urlsplit(url).hostname not in LOOPBACK_HOSTS:
            raise ValueError(f"jwks_url {url!r}: https is required (http only on loopback)")
        self._file, self._url, self._ca_file = file, url, ca_file
        self._cache_seconds = cache_seconds
        self._max_stale = max_stale_seconds
        self._min_refresh = min_refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._anonymous: list[jwt.PyJWK] = []
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._source_mtime: float | None = None
        if document is not None:  # a fixed in-memory key set (tests, the policy toolkit)
            self._install(document)
            self._fetched_at, self._cache_seconds, self._max_stale = clock(), math.inf, math.inf

    @property
    def source(self) -> str:
        return self._file or self._url or "<in-memory>"

    def get(self, kid: str | None) -> jwt.PyJWK | None:
        """The key for ``kid``; refreshes once (rate-limited) when the kid is unknown or stale."""
        key = self._lookup(kid)
        if key is not None and not self._expired():
            return key
        self.refresh(force=key is None)
        if self._fetched_at is None or self._too_stale():
            raise JwksUnavailable(f"no current key set from {self._describe()}")
        return self._lookup(kid)

    def refresh(self, force: bool = False) -> None:
        if not self._file and not self._url:
            return  # in-memory: nothing to fetch
        with self._lock:
            now = self._clock()
            if self._attempted_at is not None and now - self._attempted_at < self._min_refresh:
                if not (self._file and self._file_changed()):
                    return
            if not force and not self._expired() and not (self._file and self._file_changed()):
                return
            self._attempted_at = now
            try:
                document = self._read()
                self._install(document)
                self._fetched_at = now
            except (OSError, ValueError, jwt.PyJWTError) as exc:
                log.warning("jwks refresh from %s failed: %s", self._describe(), exc)

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            return self._anonymous[0] if len(self._anonymous) == 1 and not self._keys else None
        return self._keys.get(kid)

    def _expired(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= self._cache_seconds

    def _too_stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= self._max_stale

    def _file_changed(self) -> bool:
        try:
            return Path(self._file).stat().st_mtime != self._source_mtime
        except OSError:
            return False

    def _describe(self) -> str:
        if not self._url:
            return self._file or "<in-memory>"
        return urlsplit(self._url)._replace(query="", fragment="").geturl()

    def _read(self) -> dict[str, Any]:
        if self._file:
            path = Path(self._file)
            self._source_mtime = path.stat().st_mtime
            raw = path.read_bytes()[:MAX_JWKS_BYTES + 1]
        else:
            context = ssl.create_default_context(cafile=self._ca_file or None)
            request = urllib.request.Request(self._url, headers={"Accept": "application/json"})
            with urllib.request.urlopen(request, timeout=5, context=context) as response:
                raw = response.read(MAX_JWKS_BYTES + 1)
        if len(raw) > MAX_JWKS_BYTES:
            raise ValueError("key set larger than 1 MiB")
        document = json.loads(raw)
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("not a JWKS document (no 'keys' list)")
        return document

    def _install(self, document: dict[str, Any]) -> None:
        keys: dict[str, jwt.PyJWK] = {}
        anonymous: list[jwt.PyJWK] = []
        for entry in document["keys"]:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            if entry.get("kty") == "oct" or "d" in entry:
                continue  # only public asymmetric keys verify tokens
            try:
                key = jwt.PyJWK(entry)
            except (jwt.PyJWKError, jwt.InvalidKeyError) as exc:
                log.warning("jwks %s: skipping key %s: %s", self._describe(), entry.get("kid"), exc)
                continue
            if isinstance(entry.get("kid"), str):
                keys[entry["kid"]] = key
            else:
                anonymous.append(key)
        self._keys, self._anonymous = keys, anonymous
