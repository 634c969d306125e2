"""Enforce an allow decision's obligations on an MCP result (the serialized wire dict).

Pure functions, shared by the middleware and the gateway. Known obligations:

- ``redact`` ``{"paths": ["$.structuredContent.card_number", ...]}``: JSON paths into the result
  (``$``, ``.key``, ``['key']``, ``[n]``, ``[*]``, ``.*``). A matched value is replaced by
  ``"[redacted]"`` where the tool's ``outputSchema`` allows a string there (or the tool has no
  schema); otherwise the key is removed when the schema does not require it; otherwise the result
  cannot be redacted and the call is refused. When anything under ``structuredContent`` was
  redacted, ``content`` is replaced by one text block holding the redacted structured JSON, so the
  unstructured copy (which the SDK writes beside structured output) cannot leak the value.
- ``max_result_bytes`` ``{"bytes": N}``: the JSON-serialized result may not exceed N bytes;
  otherwise it is refused (the tool has run, but its output does not reach the caller).
- ``audit`` ``{"level": ...}``: one log line per call (decision id, method, target; no token).

Any other obligation type cannot be enforced, so the call is refused before the handler runs.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..model import Obligation

log = logging.getLogger("mcp_authz.audit")

KNOWN = frozenset({"redact", "max_result_bytes", "audit"})
REDACTED = "[redacted]"
_TOKEN_RE = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\.\*|\[(\d+)\]|\[\*\]|\['([^']*)'\]")


class ObligationFailed(Exception):
    """The result cannot be delivered under the decision's obligations. ``code`` is the reason."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


def unknown_obligations(obligations: Sequence[Obligation]) -> list[str]:
    return sorted({o.type for o in obligations if o.type not in KNOWN})


def parse_path(path: str) -> list[str | int | None]:
    """``$.a['b'][0][*]`` -> ``["a", "b", 0, None]`` (None = every member). ValueError if bad."""
    if not path.startswith("$"):
        raise ValueError(f"JSON path {path!r} must start with '$'")
    parts: list[str | int | None] = []
    position = 1
    while position < len(path):
        match = _TOKEN_RE.match(path, position)
        if match is None:
            raise ValueError(f"JSON path {path!r}: unexpected text at offset {position}")
        name, index, quoted = match.groups()
        if name is not None or quoted is not None:
            parts.append(name if name is not None else quoted)
        elif index is not None:
            parts.append(int(index))
        else:
            parts.append(None)
        position = match.end()
    return parts


def _matches(node: Any, parts: list[str | int | None],
             trail: tuple[str | int, ...] = ()) -> Iterator[tuple[Any, str | int, tuple]]:
    """(container, key, full trail) for every location the path names that exists."""
    if not parts:
        return
    head, rest = parts[0], parts[1:]
    if head is None:
        keys: list[str | int] = (list(node) if isinstance(node, dict)
                                 else list(range(len(node))) if isinstance(node, list) else [])
    elif isinstance(head, int):
        keys = [head] if isinstance(node, list) and head < len(node) else []
    else:
        keys = [head] if isinstance(node, dict) and head in node else []
    for key in keys:
        if rest:
            yield from _matches(node[key], rest, (*trail, key))
        else:
            yield node, key, (*trail, key)


def _schema_at(schema: Any, trail: Sequence[str | int]) -> tuple[Any, bool]:
    """The sub-schema for ``trail`` below ``structuredContent`` and whether its key is required.

    Unknown (no schema, or not describable) is ``(None, False)``."""
    node, required = schema, False
    for key in trail:
        if not isinstance(node, dict):
            return None, False
        if isinstance(key, int):
            node, required = node.get("items"), True
        else:
            required = key in (node.get("required") or [])
            node = (node.get("properties") or {}).get(key, node.get("additionalProperties"))
    return node, required


def _allows_string(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return True
    if "const" in schema or ("enum" in schema and REDACTED not in schema["enum"]):
        return False
    kind = schema.get("type")
    if kind is None:
        return "anyOf" not in schema and "oneOf" not in schema and "allOf" not in schema
    return kind == "string" or (isinstance(kind, list) and "string" in kind)


def redact(result: dict[str, Any], paths: Sequence[str],
           output_schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of ``result`` with every value the paths name removed or replaced (see module)."""
    redacted = copy.deepcopy(result)
    structured_touched = False
    for path in paths:
        try:
            parts = parse_path(path)
        except ValueError as exc:
            raise ObligationFailed("obligation_unsupported", str(exc)) from exc
        if not parts:
            raise ObligationFailed("obligation_unsupported", "redact: '$' names the whole result")
        for container, key, trail in list(_matches(redacted, parts)):
            in_structured = trail[0] == "structuredContent"
            structured_touched |= in_structured
            _redact_one(container, key, trail[1:] if in_structured else None, output_schema)
    if structured_touched and "structuredContent" in redacted:
        text = json.dumps(redacted["structuredContent"], ensure_ascii=False, indent=2)
        redacted["content"] = [{"type": "text", "text": text}]
    return redacted


def _redact_one(container: Any, key: str | int, schema_trail: tuple | None,
                output_schema: Mapping[str, Any] | None) -> None:
    if schema_trail is None or output_schema is None:
        container[key] = REDACTED
        return
    sub_schema, required = _schema_at(output_schema, schema_trail)
    if _allows_string(sub_schema):
        container[key] = REDACTED
    elif isinstance(container, dict) and not required:
        del container[key]
    else:
        where = ".".join(str(k) for k in schema_trail)
        raise ObligationFailed("redaction_failed", f"structuredContent.{where} cannot be "
                               "redacted without breaking the tool's outputSchema")


def result_size(result: Mapping[str, Any]) -> int:
    return len(json.dumps(result, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def enforce(result: dict[str, Any], obligations: Sequence[Obligation],
            output_schema: Mapping[str, Any] | None, what: str, decision_id: str) -> dict[str, Any]:
    """Apply ``redact``, then check ``max_result_bytes``, then write the ``audit`` line.

    Raises ObligationFailed when the result may not be delivered."""
    for obligation in obligations:
        if obligation.type == "redact":
            paths = obligation.params.get("paths", [])
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                raise ObligationFailed("obligation_unsupported", "redact.paths must be strings")
            result = redact(result, paths, output_schema)
    for obligation in obligations:
        if obligation.type == "max_result_bytes":
            limit = obligation.params.get("bytes")
            if not isinstance(limit, int | float) or isinstance(limit, bool):
                raise ObligationFailed("obligation_unsupported", "max_result_bytes.bytes "
                                       "must be a number")
            size = result_size(result)
            if size > limit:
                raise ObligationFailed("result_too_large", f"the result ({size} bytes) exceeds "
                                       f"the {int(limit)} bytes the policy allows")
    for obligation in obligations:
        if obligation.type == "audit":
            log.info("audit level=%s decision=%s %s", obligation.params.get("level", ""),
                     decision_id, what)
    return result
