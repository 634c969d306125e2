"""The decision log: one JSON line per decision, written off the request path.

``DecisionLog`` is a ``DecisionObserver``. ``observe`` only puts the record on a bounded queue;
when the queue is full the line is dropped and counted, so logging never blocks or fails a
decision (Cerbos ``audit/log.go``, OPA's decision logs). One writer thread formats, masks and
writes the lines; a write error (disk full) is counted and warned about, never raised.

Masking, applied to every line, in this order:

1. tokens: any string (value or key, anywhere in the line) that contains the request's bearer
   token or one of its approval tokens, or anything shaped like a JWT, has it replaced by
   ``<token>``. The input document never holds a token, but a caller can copy one into tool
   arguments, context or any other field, and the policy then sees that string;
2. paths from the config (``decision_log.mask`` / ``drop``), the arguments of catalog entries
   marked ``sensitive: true`` (``input.lookup.tool.sensitive``), and paths the policy names
   for this decision with the optional rule ``data.mcp.authz.log_mask`` (a list of paths to
   mask, or ``{"mask": [...], "drop": [...]}``). If that rule fails, or the revision that
   decided is no longer active, every caller-supplied value (arguments, context) is masked.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import select
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from . import engine
from .config import Config, DecisionLogConfig
from .decisions import DecisionRecord, PolicySource, encode_input
from .errors import PolicyError

log = logging.getLogger(__name__)

MASKED = "<masked>"
TOKEN = "<token>"
#: What is masked when the policy's ``log_mask`` cannot be read: everything a caller supplied.
FAIL_CLOSED_PATHS = ("tool.arguments", "prompt.arguments", "context")
SENSITIVE_PATHS = (("tool", "tool.arguments"), ("prompt", "prompt.arguments"))
JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]*){2,4}")
MIN_SECRET_CHARS = 8
BATCH = 256
WARN_EVERY_SECONDS = 10.0


class Sink(Protocol):
    """Where lines go. ``write`` may raise OSError; the writer counts it."""

    def write(self, lines: Sequence[str]) -> None: ...

    def close(self) -> None: ...


class LogCounters(Protocol):
    """What the metrics need to know about the log (metrics.py implements it)."""

    def log_written(self, lines: int) -> None: ...

    def log_dropped(self, reason: str, lines: int) -> None: ...


class StreamSink:
    """A text stream; by default whatever ``sys.stdout`` is at write time (``serve`` swaps it
    so the engine's C++ prints never mix with the log)."""

    def __init__(self, stream: TextIO | None = None):
        self._stream = stream

    def write(self, lines: Sequence[str]) -> None:
        """Whole lines, at most ``PIPE_BUF`` bytes per flush (a longer line alone): each flush
        is one write(2), which a pipe keeps whole, so the lines of several worker processes
        sharing one stdout never interleave mid-line."""
        stream = self._stream or sys.stdout
        for chunk in line_chunks(lines, select.PIPE_BUF):
            stream.write(chunk)
            stream.flush()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()


def line_chunks(lines: Sequence[str], limit: int) -> Iterator[str]:
    """``lines`` joined into chunks of at most ``limit`` UTF-8 bytes, never splitting a line."""
    chunk: list[str] = []
    size = 0
    for line in lines:
        length = len(line.encode("utf-8"))
        if chunk and size + length > limit:
            yield "".join(chunk)
            chunk, size = [], 0
        chunk.append(line)
        size += length
    if chunk:
        yield "".join(chunk)


class RotatingFileSink:
    """Appends to ``path``; past ``max_bytes`` it is renamed ``path.1`` (older ones shift up to
    ``path.<backups>``, the oldest is removed) and a new file starts."""

    def __init__(self, path: str, max_bytes: int, backups: int):
        self._path = path
        self._max_bytes = max_bytes
        self._backups = backups
        self._file: Any = None
        self._size = 0

    def write(self, lines: Sequence[str]) -> None:
        try:
            if self._file is None:
                self._open()
            for line in lines:
                data = line.encode("utf-8")
                if self._size and self._size + len(data) > self._max_bytes:
                    self._rotate()
                self._file.write(data)
                self._size += len(data)
            self._file.flush()
        except OSError:
            self.close()  # reopen on the next write: the file may be gone or half-written
            raise

    def _open(self) -> None:
        self._file = open(self._path, "ab")  # kept open across writes
        self._size = self._file.tell()

    def _rotate(self) -> None:
        self._file.close()
        self._file = None
        if self._backups == 0:
            os.remove(self._path)
        else:
            for i in range(self._backups - 1, 0, -1):
                if os.path.exists(f"{self._path}.{i}"):
                    os.replace(f"{self._path}.{i}", f"{self._path}.{i + 1}")
            os.replace(self._path, f"{self._path}.1")
        self._open()

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None


class _NoCounters:
    def log_written(self, lines: int) -> None:
        pass

    def log_dropped(self, reason: str, lines: int) -> None:
        pass


_STOP = object()


class DecisionLog:
    """A ``DecisionObserver`` and a lifecycle component (``start``/``stop``)."""

    def __init__(self, config: DecisionLogConfig, policies: PolicySource, sink: Sink,
                 counters: LogCounters | None = None):
        self._config = config
        self._policies = policies
        self._sink = sink
        self._counters = counters or _NoCounters()
        self._queue: queue.Queue[Any] = queue.Queue(config.queue_size)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._last_warning = 0.0
        self.dropped = 0
        self.written = 0
        self.write_errors = 0

    @classmethod
    def from_config(cls, config: Config, policies: PolicySource,
                    counters: LogCounters | None = None, worker: int | None = None) -> DecisionLog:
        """``worker``: the index of this process in a worker group, which writes its own file
        (``decisions.log`` -> ``decisions.w1.log``) so rotation never races another process."""
        settings = config.decision_log
        sink: Sink = StreamSink()
        if settings.sink == "file":
            path = config.path(settings.path)
            if worker is not None:
                stem, dot, suffix = path.rpartition(".")
                path = (f"{stem}.w{worker}.{suffix}" if dot and "/" not in suffix
                        else f"{path}.w{worker}")
            sink = RotatingFileSink(path, settings.max_bytes, settings.backups)
        return cls(settings, policies, sink, counters)

    def observe(self, record: DecisionRecord) -> None:
        """Called on the request path: never blocks, never raises.

        The policy's ``log_mask`` is read here, on the thread that just decided: the engine
        evaluated it in the same task as the decision (``engine.prefetch_log_masks``), so the
        input was parsed once (regopy parses an input at ~17 us per JSON value: over 1 ms of
        CPU per line saved). Everything else about the line is done by the writer thread."""
        if self._closed:
            self._drop("stopped", 1)
            return
        policy_paths = None
        if self._config.policy_masks and record.input is not None:
            policy_paths = self._policy_paths(record)
        try:
            self._queue.put_nowait((record, policy_paths))
        except queue.Full:
            self._drop("queue_full", 1)

    def start(self) -> None:
        if self._config.policy_masks:
            engine.prefetch_log_masks(True)
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    def stop(self, grace: float = 5.0) -> None:
        """Write what is queued (up to ``grace`` seconds), then close the sink."""
        self._closed = True
        if self._config.policy_masks:
            engine.prefetch_log_masks(False)
        if self._thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=max(grace, 0.1))
        except queue.Full:
            log.warning("decision log: writer is stuck; %d queued lines are lost",
                        self._queue.qsize())
        self._thread.join(max(grace, 0.1))
        if not self._thread.is_alive():
            self._sink.close()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            records = [item for item in batch if item is not _STOP]
            if records:
                self._write([self._line(*item) for item in records])
            if len(records) < len(batch):
                return

    def _line(self, record: DecisionRecord,
              policy_paths: tuple[list[str], list[str]] | None = None) -> str:
        try:
            return encode_input(self.entry(record, policy_paths)) + "\n"
        except Exception:  # a line that cannot be built is still accounted for
            log.exception("decision log: cannot format decision %s", record.decision.decision_id)
            return encode_input({"decision_id": record.decision.decision_id,
                                 "error": "this decision could not be logged"}) + "\n"

    def _write(self, lines: list[str]) -> None:
        try:
            self._sink.write(lines)
        except OSError as exc:
            self.write_errors += 1
            self._drop("write_error", len(lines))
            now = time.monotonic()
            if now - self._last_warning >= WARN_EVERY_SECONDS:
                self._last_warning = now
                log.warning("decision log: write failed (%s); %d lines dropped so far",
                            exc.strerror or exc, self.dropped)
            return
        self.written += len(lines)
        self._counters.log_written(len(lines))

    def _drop(self, reason: str, lines: int) -> None:
        self.dropped += lines
        self._counters.log_dropped(reason, lines)

    def entry(self, record: DecisionRecord,
              policy_paths: tuple[list[str], list[str]] | None = None) -> dict[str, Any]:
        """The log line for one decision, masked, as a JSON-ready mapping.

        ``policy_paths``: the policy's (mask, drop) paths when already evaluated."""
        request, decision, subject = record.request, record.decision, record.subject
        entry: dict[str, Any] = {
            "decision_id": decision.decision_id,
            "timestamp": _rfc3339(decision.decided_at_ns),
            "request_id": request.request_id,
            "session_id": request.session_id,
            "policy_revision": decision.policy_revision,
            "tenant": request.tenant,
            "subject_id": subject.id if subject else "",
            "client_id": request.client_id,
            "server": {"id": request.server_id, "resource": request.server_resource},
            "method": request.method,
            "tool": request.tool_name,
            "resource_uri": request.resource_uri,
            "prompt": request.prompt_name,
            "input": record.input,
            "result": {
                "allow": decision.allow,
                "reasons": [{"code": r.code, "message": r.message} for r in decision.reasons],
                "obligations": [{"type": o.type, "params": o.params}
                                for o in decision.obligations],
            },
            "latency_ms": {"engine": round(record.engine_seconds * 1000, 3),
                           "total": round(record.total_seconds * 1000, 3)},
            "masked": [],
        }
        secrets = [request.bearer_token, *request.approval_tokens]
        entry = scrub(entry, [s for s in secrets if s])
        if record.input is not None:
            masks, drops = self._paths(record, policy_paths)
            apply_paths(entry["input"], drops, drop=True)
            apply_paths(entry["input"], masks, drop=False)
            entry["masked"] = sorted(set(masks) | set(drops))
        return entry

    def _paths(self, record: DecisionRecord, policy_paths: tuple[list[str], list[str]] | None
               ) -> tuple[list[str], list[str]]:
        """(paths to mask, paths to drop) for this decision."""
        document = record.input or {}
        masks, drops = list(self._config.mask), list(self._config.drop)
        if self._config.mask_sensitive_tools:
            lookup = document.get("lookup")
            for name, path in SENSITIVE_PATHS:
                entry = lookup.get(name) if isinstance(lookup, Mapping) else None
                if isinstance(entry, Mapping) and entry.get("sensitive") is True:
                    masks.append(path)
        if not self._config.policy_masks:
            return masks, drops
        policy_masks, policy_drops = policy_paths or self._policy_paths(record)
        return masks + policy_masks, drops + policy_drops

    def _policy_paths(self, record: DecisionRecord) -> tuple[list[str], list[str]]:
        policy = self._policies.active()
        if policy is None or policy.revision != record.decision.policy_revision:
            return list(FAIL_CLOSED_PATHS), []
        try:
            value = policy.evaluate_log_mask(record.input_json or encode_input(record.input or {}))
            return parse_log_mask(value)
        except (PolicyError, ValueError, TypeError) as exc:
            log.warning("decision log: log_mask on revision %s failed (%s); masking every "
                        "caller-supplied value", policy.revision, exc)
            return list(FAIL_CLOSED_PATHS), []


def parse_log_mask(value: Any) -> tuple[list[str], list[str]]:
    """The policy's ``log_mask`` value: a list of paths to mask, or ``{"mask", "drop"}``.

    None (no such rule) names nothing; any other shape is a ValueError."""
    if value is None:
        return [], []
    if isinstance(value, list):
        value = {"mask": value}
    if not isinstance(value, dict) or set(value) - {"mask", "drop"}:
        raise ValueError("log_mask must be a list of paths or {mask: [...], drop: [...]}")
    masks, drops = value.get("mask", []), value.get("drop", [])
    for paths in (masks, drops):
        if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
            raise ValueError("log_mask paths must be non-empty strings")
    return masks, drops


def scrub(value: Any, secrets: Sequence[str]) -> Any:
    """A copy of ``value`` with every secret and JWT-shaped string replaced by ``<token>``."""
    if isinstance(value, str):
        return _scrub_text(value, secrets)
    if isinstance(value, Mapping):
        return {_scrub_text(str(k), secrets): scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, secrets) for v in value]
    return value


def _scrub_text(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if len(secret) >= MIN_SECRET_CHARS and secret in text:
            text = text.replace(secret, TOKEN)
        elif text == secret:
            return TOKEN
    if "eyJ" in text:
        text = JWT_RE.sub(TOKEN, text)
    return text


def apply_paths(document: Any, paths: Iterable[str], drop: bool) -> None:
    """Mask (replace with ``<masked>``) or drop each dotted path in ``document``, in place.

    ``*`` matches every key of an object or item of an array; an ``input.`` prefix is
    allowed; paths that name nothing are ignored."""
    for path in paths:
        parts = path.split(".")
        if parts[0] == "input":
            parts = parts[1:]
        if parts:
            _apply(document, parts, drop)


def _apply(node: Any, parts: list[str], drop: bool) -> None:
    head, rest = parts[0], parts[1:]
    keys: list[Any]
    if isinstance(node, dict):
        keys = list(node) if head == "*" else [head] if head in node else []
    elif isinstance(node, list):
        indices = range(len(node))
        keys = list(indices) if head == "*" else (
            [int(head)] if head.isdigit() and int(head) in indices else [])
    else:
        return
    for key in reversed(keys):  # reversed: dropping list items keeps earlier indices valid
        if rest:
            _apply(node[key], rest, drop)
        elif drop:
            del node[key]
        else:
            node[key] = MASKED


def _rfc3339(ns: int) -> str:
    moment = datetime.fromtimestamp(ns / 1e9, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
