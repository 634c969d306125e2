"""The active policy: load, compile, smoke-test and swap bundles atomically; report status.

A request takes one reference to the active ``CompiledPolicy`` and is evaluated wholly on it, so a
swap never mixes revisions. A bundle that fails any step leaves the previous one serving and is
recorded as the last error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from .bundles import (
    MAX_FILE_BYTES,
    MAX_TOTAL_BYTES,
    BundleContents,
    parse_bundle,
    read_archive,
    read_files,
)
from .engine import CompiledPolicy, compile_bundle
from .engine_worker import run_worker
from .errors import BundleError, PolicyError
from .signing import Verification

log = logging.getLogger(__name__)

SMOKE_INPUT = (
    '{"subject":{"id":"smoke","tenant":"smoke","issuer":"","client_id":"","scopes":[],'
    '"roles":[],"groups":[],"claims":{},"token":{"iat":0,"exp":0,"jti":""}},"tenant":"smoke",'
    '"server":{"id":"","resource":""},"client":{"id":"","name":"","version":""},'
    '"method":"tools/call","tool":{"name":"","arguments":{},"annotations":{}},'
    '"resource":{"uri":""},"prompt":{"name":"","arguments":{}},"approvals":[],'
    '"approval_errors":[],"request_digest":"","context":{},"now_ns":0,"lookup":{}}'
)


@dataclass(frozen=True)
class PolicyStatus:
    active_revision: str = ""
    activated_at_ns: int = 0
    previous_revision: str = ""
    last_error: str = ""
    last_error_at_ns: int = 0
    source: str = ""
    entrypoint: str = ""


class PolicyStore:
    """Holds the active compiled policy; ``activate`` is the only way to change it.

    Bundles from files go read (size-checked) -> signature-verified (when ``verification`` is
    set) -> parsed -> compiled -> smoke-evaluated -> swapped; a failure at any step leaves the
    previous revision serving and becomes ``status().last_error``."""

    def __init__(self, entrypoint: str, clock: Callable[[], int] = time.time_ns, *,
                 verification: Verification | None = None,
                 max_file_bytes: int = MAX_FILE_BYTES, max_total_bytes: int = MAX_TOTAL_BYTES,
                 precheck_timeout: float | None = None):
        self._entrypoint = entrypoint
        self._precheck_timeout = precheck_timeout
        self._clock = clock
        self._verification = verification
        self.max_file_bytes = max_file_bytes
        self.max_total_bytes = max_total_bytes
        self._lock = threading.Lock()
        self._active: CompiledPolicy | None = None
        self._status = PolicyStatus(entrypoint=entrypoint)
        self._listeners: list[Callable[[PolicyStatus, bool], None]] = []

    def active(self) -> CompiledPolicy | None:
        return self._active

    def status(self) -> PolicyStatus:
        return self._status

    def on_change(self, listener: Callable[[PolicyStatus, bool], None]) -> None:
        """``listener(status, activated)`` after every activation attempt."""
        self._listeners.append(listener)

    def activate(self, contents: BundleContents) -> CompiledPolicy:
        """Compile and smoke-evaluate ``contents`` (without its test modules), then swap it in.

        With ``precheck_timeout`` set, the bundle is first compiled and smoke-evaluated in a
        child process, so a bundle that crashes regopy is refused instead of killing the
        service. Raises BundleError."""
        contents = contents.for_serving()
        try:
            if self._precheck_timeout is not None:
                self._precheck(contents, self._precheck_timeout)
            policy = compile_bundle(contents, self._entrypoint)
            try:
                policy.evaluate(SMOKE_INPUT)
            except PolicyError as exc:
                raise BundleError(f"smoke evaluation of {self._entrypoint} failed: {exc}") from exc
        except BundleError as exc:
            self._fail(str(exc), contents.source)
            raise
        with self._lock:
            previous = self._active
            self._active = policy
            self._status = replace(
                self._status, active_revision=policy.revision, activated_at_ns=self._clock(),
                previous_revision=previous.revision if previous else "",
                source=contents.source)
        log.info("activated policy revision %r from %s", policy.revision, contents.source)
        self._emit(True)
        return policy

    def _precheck(self, contents: BundleContents, timeout: float) -> None:
        job = {"op": "compile", "modules": dict(contents.modules), "data": contents.data,
               "entrypoint": self._entrypoint, "smoke": SMOKE_INPUT}
        records, crash = run_worker(job, timeout)
        if crash:
            raise BundleError(f"the engine died compiling or smoke-evaluating this bundle "
                              f"({crash.partition(chr(10))[0]}); it was not activated")
        if not records or records[0].get("error"):
            raise BundleError(records[0]["error"] if records else "no result from the engine")

    def activate_path(self, path: str) -> CompiledPolicy:
        try:
            files = read_files(path, max_file_bytes=self.max_file_bytes,
                               max_total_bytes=self.max_total_bytes)
        except BundleError as exc:
            self._fail(str(exc), path)
            raise
        return self.activate_files(files, path)

    def activate_archive(self, data: bytes, source: str) -> CompiledPolicy:
        """A tarball held in memory (a download): the same checks as ``activate_path``."""
        try:
            files = read_archive(data, source, max_file_bytes=self.max_file_bytes,
                                 max_total_bytes=self.max_total_bytes)
        except BundleError as exc:
            self._fail(str(exc), source)
            raise
        return self.activate_files(files, source)

    def activate_files(self, files: Mapping[str, bytes], source: str) -> CompiledPolicy:
        """Verify the signature (before parsing anything), parse, then ``activate``."""
        try:
            if self._verification is not None:
                verified = self._verification.verify(files)
                log.info("bundle from %s: signature verified (key %r, %s, %d files)", source,
                         verified.key_id, verified.algorithm, len(verified.files))
            contents = parse_bundle(files, source=source)
        except BundleError as exc:
            self._fail(str(exc), source)
            raise
        return self.activate(contents)

    def _fail(self, message: str, source: str) -> None:
        with self._lock:
            self._status = replace(self._status, last_error=f"{source}: {message}",
                                   last_error_at_ns=self._clock())
        log.error("bundle from %s rejected: %s", source, message)
        self._emit(False)

    def _emit(self, activated: bool) -> None:
        for listener in self._listeners:
            try:
                listener(self._status, activated)
            except Exception:
                log.exception("policy status listener failed")


class BundleWatcher:
    """Polls a local bundle path (directory or tarball) and activates it when it changes."""

    def __init__(self, store: PolicyStore, path: str, interval: float):
        self._store = store
        self._path = path
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fingerprint = self._scan()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bundle-watcher", daemon=True)
        self._thread.start()

    def stop(self, grace: float = 1.0) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(grace)

    def _scan(self) -> tuple[tuple[str, int, int], ...]:
        root = Path(self._path)
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        result = []
        for p in paths:
            try:
                st = p.stat()
            except OSError:
                continue
            result.append((str(p), st.st_mtime_ns, st.st_size))
        return tuple(result)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            fingerprint = self._scan()
            if fingerprint == self._fingerprint:
                continue
            self._fingerprint = fingerprint
            try:
                self._store.activate_path(self._path)
            except BundleError:
                pass  # recorded in the store's status; the previous revision keeps serving
