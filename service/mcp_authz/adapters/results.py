"""Enforce a decision's result obligations on an MCP result: ``redact`` and ``max_result_bytes``.

``redact`` params ``paths`` are JSON paths into the JSON-RPC ``result`` (``$.structuredContent.
card_number``, ``$.content[*].annotations``, ``$['odd key'][0]``); each match is removed. MCP
tools SHOULD repeat structured content as JSON text, so a text block that serializes the original
structured content is rewritten from the redacted one, and any remaining string that still
contains a removed value is replaced: a redaction is never undone by a second copy.

Anything this module cannot enforce faithfully (a malformed path, a non-positive size) is a
``PolicyError``: the adapter denies rather than pass an unredacted result.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import PolicyError
from ..model import Obligation

# Obligations an adapter that sees the result (ExtMcp) enforces; ``audit`` is the decision log.
ENFORCED_OBLIGATIONS = frozenset({"audit", "redact", "max_result_bytes"})
RESULT_OBLIGATIONS = frozenset({"redact", "max_result_bytes"})
REDACTED = "[redacted by policy]"
_MIN_LEAK_CHARS = 4
_STEP = re.compile(r"""\.(?P<name>[A-Za-z_][\w-]*)|\.\*|\[(?P<index>\d+)\]|\[\*\]"""
                   r"""|\[(?P<quote>['"])(?P<key>(?:(?!(?P=quote)).)*)(?P=quote)\]""")
_ALL = object()


@dataclass(frozen=True)
class Enforced:
    result: dict[str, Any]
    changed: bool
    over_limit: int | None = None


def unenforceable(obligations: Iterable[Obligation]) -> list[str]:
    """Obligation types this gateway path cannot carry out (a correct gateway denies)."""
    return sorted({o.type for o in obligations if o.type not in ENFORCED_OBLIGATIONS})


def needs_result(obligations: Iterable[Obligation]) -> bool:
    return any(o.type in RESULT_OBLIGATIONS for o in obligations)


def enforce(result: Mapping[str, Any], obligations: Iterable[Obligation]) -> Enforced:
    """The result with every redaction applied, and whether it is over a size limit."""
    obligations = list(obligations)
    paths = [p for o in obligations if o.type == "redact" for p in _paths(o)]
    limits = [_limit(o) for o in obligations if o.type == "max_result_bytes"]
    redacted, removed = redact(result, paths)
    size = len(json.dumps(redacted, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    over = min(limits) if limits and size > min(limits) else None
    return Enforced(redacted, bool(removed), over)


def redact(result: Mapping[str, Any], paths: Iterable[str]) -> tuple[dict[str, Any], list[Any]]:
    """A copy of ``result`` without the values at ``paths``; also returns what was removed."""
    original = dict(result)
    document = copy.deepcopy(original)
    removed: list[Any] = []
    for path in paths:
        removed.extend(_remove(document, parse_path(path)))
    if removed:
        _rewrite_structured_copies(original, document)
        leaks = {text for value in removed for text in _leaf_texts(value)}
        document = _scrub(document, leaks)
    return document, removed


def parse_path(path: str) -> list[Any]:
    """``$.a[0]['b c'][*]`` -> ['a', 0, 'b c', ALL]; PolicyError for anything else."""
    if not isinstance(path, str) or not path.startswith("$"):
        raise PolicyError(f"redact path {str(path)[:80]!r} must start with '$'")
    steps: list[Any] = []
    position = 1
    while position < len(path):
        match = _STEP.match(path, position)
        if match is None:
            raise PolicyError(f"redact path {path[:80]!r}: cannot parse at offset {position}")
        if match.group("name") is not None:
            steps.append(match.group("name"))
        elif match.group("index") is not None:
            steps.append(int(match.group("index")))
        elif match.group("key") is not None:
            steps.append(match.group("key"))
        else:
            steps.append(_ALL)
        position = match.end()
    if not steps:
        raise PolicyError("redact path '$' would remove the whole result")
    return steps


def _paths(obligation: Obligation) -> list[str]:
    paths = obligation.params.get("paths")
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise PolicyError("redact obligation needs params.paths: a list of JSON paths")
    return paths


def _limit(obligation: Obligation) -> int:
    value = obligation.params.get("bytes")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise PolicyError("max_result_bytes obligation needs params.bytes: a positive integer")
    return value


def _remove(node: Any, steps: list[Any]) -> list[Any]:
    step, rest = steps[0], steps[1:]
    if isinstance(node, dict):
        keys = list(node) if step is _ALL else [step] if isinstance(step, str) else []
        targets = [k for k in keys if k in node]
    elif isinstance(node, list):
        indexes = range(len(node)) if step is _ALL else [step] if isinstance(step, int) else []
        targets = [i for i in indexes if 0 <= i < len(node)]
    else:
        return []
    if rest:
        return [v for t in targets for v in _remove(node[t], rest)]
    removed = [node[t] for t in targets]
    for target in sorted(targets, reverse=True) if isinstance(node, list) else targets:
        del node[target]
    return removed


def _rewrite_structured_copies(original: dict[str, Any], document: dict[str, Any]) -> None:
    """A text block that is the JSON of the original structuredContent gets the redacted one."""
    before = original.get("structuredContent")
    if before is None or not isinstance(document.get("content"), list):
        return
    for block in document["content"]:
        if isinstance(block, dict) and block.get("type") == "text" and isinstance(
                block.get("text"), str):
            try:
                parsed = json.loads(block["text"])
            except (json.JSONDecodeError, RecursionError):
                continue
            if parsed == before:
                block["text"] = json.dumps(document.get("structuredContent"),
                                           ensure_ascii=False)


def _leaf_texts(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [t for v in value.values() for t in _leaf_texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in _leaf_texts(v)]
    if isinstance(value, bool) or value is None:
        return []
    text = value if isinstance(value, str) else json.dumps(value)
    return [text] if len(text) >= _MIN_LEAK_CHARS else []


def _scrub(node: Any, leaks: set[str]) -> Any:
    if isinstance(node, dict):
        return {k: _scrub(v, leaks) for k, v in node.items()}
    if isinstance(node, list):
        return [_scrub(v, leaks) for v in node]
    if isinstance(node, str) and any(leak in node for leak in leaks):
        return REDACTED
    return node
