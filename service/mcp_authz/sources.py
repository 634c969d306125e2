"""Bundles from an HTTP(S) server: polled with ETag, backed off on failure, persisted on disk.

``HttpBundleSource`` is a lifecycle component (``start()``/``stop(grace)``). ``start`` first
activates the bundle persisted by an earlier run (so a restart with the bundle server down still
serves the last good revision), then makes one synchronous poll, then keeps polling in a thread:

- every ``poll_interval_seconds`` with +/- ``poll_jitter`` (a fraction) so a fleet does not poll
  in step; ``If-None-Match`` with the last ETag, so an unchanged bundle costs a 304 and no
  download or activation;
- on a failed request the delay doubles per consecutive failure, up to ``backoff_max_seconds``;
- a bundle that downloads but fails activation is not fetched again until its ETag changes (the
  reason stays in the store's status); the previous revision keeps serving.

The response body is read up to ``max_total_bytes``; the tarball then goes through the same
checks as a local one (``bundles.read_archive``). The bearer token is read from its file on every
request (so it can be rotated) and never logged.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .activation import BundleWatcher, PolicyStore
from .config import Config, PolicyConfig
from .errors import BundleError, ConfigError
from .signing import Verification

log = logging.getLogger(__name__)

PERSISTED_BUNDLE = "bundle.tar.gz"
PERSISTED_META = "bundle.json"


@dataclass
class SourceCounters:
    """Plain counters for metrics (read them; only the source thread writes them)."""

    downloads: int = 0  # 200 responses
    not_modified: int = 0  # 304 responses
    failures: int = 0  # request errors and non-200/304 answers
    rejected: int = 0  # downloaded bundles that failed activation
    activations: int = 0
    consecutive_failures: int = 0


class FetchError(Exception):
    """The bundle server could not be reached or answered with an error."""


class HttpBundleSource:
    """Polls ``url`` and activates each new bundle on ``store``."""

    def __init__(self, store: PolicyStore, url: str, options: PolicyConfig, persist_dir: str = "",
                 name: str = "bundle", rand: Callable[[], float] = random.random):
        self._store = store
        self._url = url
        self._options = options
        self._persist = Path(persist_dir) if persist_dir else None
        self._name = name
        self._rand = rand
        self._etag = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.counters = SourceCounters()
        self._context = (ssl.create_default_context(cafile=options.ca_file)
                         if options.ca_file else None)

    @property
    def url(self) -> str:
        return self._url

    def start(self) -> None:
        self.load_persisted()
        self.poll()
        self._thread = threading.Thread(target=self._run, name=f"{self._name}-poller",
                                        daemon=True)
        self._thread.start()

    def stop(self, grace: float = 1.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(grace)

    def load_persisted(self) -> bool:
        """Activate the bundle an earlier run persisted; True when one was activated."""
        if self._persist is None or not (self._persist / PERSISTED_BUNDLE).is_file():
            return False
        path = self._persist / PERSISTED_BUNDLE
        try:
            self._store.activate_path(str(path))
        except BundleError:
            log.error("persisted %s at %s is not usable; waiting for %s", self._name, path,
                      self._url)
            return False
        meta = self._read_meta()
        if meta.get("url") == self._url and isinstance(meta.get("etag"), str):
            self._etag = meta["etag"]
        return True

    def poll(self) -> bool:
        """One request; True when it did not fail (200 activated or rejected, or 304)."""
        try:
            status, body, etag = self._fetch()
        except FetchError as exc:
            self.counters.failures += 1
            self.counters.consecutive_failures += 1
            log.warning("%s poll of %s failed (%d in a row): %s", self._name, self._url,
                        self.counters.consecutive_failures, exc)
            return False
        self.counters.consecutive_failures = 0
        if status == 304:
            self.counters.not_modified += 1
            return True
        self.counters.downloads += 1
        self._etag = etag
        try:
            self._store.activate_archive(body, self._url)
        except BundleError:
            self.counters.rejected += 1  # the reason is in the store's status and log
            return True
        self.counters.activations += 1
        self._save(body, etag)
        return True

    def next_delay(self) -> float:
        """Seconds until the next poll: the interval with jitter, doubled per failure."""
        options, failures = self._options, self.counters.consecutive_failures
        delay = options.poll_interval_seconds
        if failures:
            delay = min(delay * 2 ** min(failures, 30), options.backoff_max_seconds)
        return delay * (1 + options.poll_jitter * (2 * self._rand() - 1))

    def _run(self) -> None:
        while not self._stop.wait(self.next_delay()):
            try:
                self.poll()
            except Exception:  # the poller must survive anything; the store keeps serving
                log.exception("%s poller: unexpected error", self._name)

    def _fetch(self) -> tuple[int, bytes, str]:
        request = urllib.request.Request(self._url, headers={"Accept": "application/gzip"})
        if self._etag:
            request.add_header("If-None-Match", self._etag)
        token = self._bearer_token()
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        limit = self._store.max_total_bytes
        try:
            with urllib.request.urlopen(request, timeout=self._options.timeout_seconds,
                                        context=self._context) as response:
                body = response.read(limit + 1)
                if len(body) > limit:
                    raise FetchError(f"response larger than {limit} bytes")
                return response.status, body, response.headers.get("ETag", "")
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                return 304, b"", self._etag
            raise FetchError(f"HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise FetchError(str(getattr(exc, "reason", exc))) from exc

    def _bearer_token(self) -> str:
        if self._options.bearer_token_file:
            try:
                return Path(self._options.bearer_token_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise FetchError(f"bearer_token_file: cannot read: {exc.strerror}") from exc
        if self._options.bearer_token_env:
            return os.environ.get(self._options.bearer_token_env, "").strip()
        return ""

    def _save(self, body: bytes, etag: str) -> None:
        """Persist atomically: a crash mid-write leaves the previous file whole."""
        if self._persist is None:
            return
        try:
            self._persist.mkdir(parents=True, exist_ok=True)
            _write_atomic(self._persist / PERSISTED_BUNDLE, body)
            meta = {"url": self._url, "etag": etag,
                    "revision": self._store.status().active_revision}
            _write_atomic(self._persist / PERSISTED_META, json.dumps(meta).encode())
        except OSError as exc:
            log.warning("cannot persist %s to %s: %s", self._name, self._persist, exc.strerror)

    def _read_meta(self) -> dict[str, object]:
        assert self._persist is not None
        try:
            meta = json.loads((self._persist / PERSISTED_META).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return meta if isinstance(meta, dict) else {}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class LocalBundleSource:
    """A directory or tarball: activated at start, then watched for changes when ``watch``."""

    def __init__(self, store: PolicyStore, path: str, watch: bool, interval: float,
                 name: str = "bundle"):
        self._store = store
        self._path = path
        self._name = name
        self._watcher = BundleWatcher(store, path, interval) if watch else None

    def start(self) -> None:
        try:
            self._store.activate_path(self._path)
        except BundleError:
            log.error("no %s revision is active yet (%s); the reason is in the policy status",
                      self._name, self._path)
        if self._watcher is not None:
            self._watcher.start()

    def stop(self, grace: float = 1.0) -> None:
        if self._watcher is not None:
            self._watcher.stop(grace)


def policy_store(config: Config) -> PolicyStore:
    """A store with the configured entrypoint, size limits and signing key."""
    policy = config.policy
    verification = None
    if policy.signing is not None:
        signing = policy.signing
        try:
            verification = Verification.from_config(
                config.path(signing.public_key_file), config.path(signing.secret_file),
                signing.key_id, signing.algorithm, signing.scope)
        except BundleError as exc:
            raise ConfigError([f"policy.signing: {exc}"]) from exc
    return PolicyStore(policy.entrypoint, verification=verification,
                       max_file_bytes=policy.max_file_bytes,
                       max_total_bytes=policy.max_total_bytes,
                       precheck_timeout=policy.precheck_timeout_seconds or None)


def bundle_source(store: PolicyStore, location: str, config: Config, persist: bool = True,
                  name: str = "bundle") -> LocalBundleSource | HttpBundleSource:
    """The component that feeds ``store`` from ``location`` (a path or an http(s) URL)."""
    policy = config.policy
    if "://" not in location:
        return LocalBundleSource(store, config.path(location), policy.watch,
                                 policy.watch_interval_seconds, name)
    options = dataclasses.replace(policy, bearer_token_file=config.path(policy.bearer_token_file),
                                  ca_file=config.path(policy.ca_file))
    persist_dir = config.path(policy.persist_dir) if persist else ""
    return HttpBundleSource(store, location, options, persist_dir, name)
