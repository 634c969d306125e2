"""MCP JSON-RPC messages as gateways see them, turned into the fields of a DecisionRequest.

Shared by the ext_authz adapter (an HTTP body) and the ExtMcp adapter (``params`` as a Struct).
Every problem is a ``RequestError`` naming the field, so each adapter answers it the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import LimitExceeded, RequestError
from ..model import SUPPORTED_METHODS

RESPONSE_MESSAGE = "(response)"


@dataclass(frozen=True)
class McpMessage:
    """One JSON-RPC message: a request, a notification, or a client's response."""

    method: str
    id: Any = None
    params: Mapping[str, Any] = field(default_factory=dict)


def parse_body(body: bytes, max_bytes: int) -> McpMessage:
    """One JSON-RPC message from an HTTP body; batches and non-JSON bodies are refused."""
    if len(body) > max_bytes:
        raise LimitExceeded("body", "max_body_bytes", max_bytes)
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise RequestError("body", "is not a JSON-RPC message (invalid JSON)") from exc
    if isinstance(document, list):
        raise RequestError("body", "JSON-RPC batches are not supported; send one message")
    if not isinstance(document, dict):
        raise RequestError("body", "must be a JSON-RPC object")
    if document.get("jsonrpc") != "2.0":
        raise RequestError("body.jsonrpc", "must be \"2.0\"")
    if "method" not in document:
        if "result" in document or "error" in document:
            return McpMessage(RESPONSE_MESSAGE, document.get("id"))
        raise RequestError("body.method", "required")
    method = document["method"]
    if not isinstance(method, str) or not method:
        raise RequestError("body.method", "must be a non-empty string")
    params = document.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RequestError("body.params", "must be an object")
    return McpMessage(method, document.get("id"), params)


def call_fields(method: str, params: Mapping[str, Any], where: str = "params") -> dict[str, Any]:
    """DecisionRequest keyword fields for a decided MCP method's ``params``."""
    if method == "tools/call":
        return {"tool_name": _string(params, "name", where),
                "tool_arguments": _object(params, "arguments", where)}
    if method == "prompts/get":
        return {"prompt_name": _string(params, "name", where),
                "prompt_arguments": _object(params, "arguments", where)}
    if method == "resources/read":
        return {"resource_uri": _string(params, "uri", where)}
    raise RequestError("method", f"must be one of {', '.join(SUPPORTED_METHODS)}")


def target_name(method: str, params: Mapping[str, Any]) -> str | None:
    """What the ``Mcp-Name`` header mirrors: params.name, or params.uri for resources."""
    key = "uri" if method.startswith("resources/") else "name"
    value = params.get(key)
    return value if isinstance(value, str) else None


def is_decided(method: str) -> bool:
    return method in SUPPORTED_METHODS


def matches_any(method: str, patterns: Iterable[str]) -> bool:
    """``tools/list`` matches ``tools/list``, ``tools/*``, ``*/list`` and ``*``."""
    for pattern in patterns:
        if pattern == "*" or pattern == method:
            return True
        if pattern.endswith("/*") and method.startswith(pattern[:-1]):
            return True
        if pattern.startswith("*/") and method.endswith(pattern[1:]):
            return True
    return False


def bearer(value: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` value ('' when absent or not Bearer)."""
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _string(params: Mapping[str, Any], key: str, where: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise RequestError(f"{where}.{key}", "required (a non-empty string)")
    return value


def _object(params: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = params.get(key, {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError(f"{where}.{key}", "must be an object")
    return value


_ANNOTATION_HINTS = {"readOnlyHint": "read_only_hint", "destructiveHint": "destructive_hint",
                     "idempotentHint": "idempotent_hint", "openWorldHint": "open_world_hint"}


def annotation_hints(tool: Mapping[str, Any]) -> dict[str, bool]:
    """An MCP Tool's ``annotations`` (camelCase) as the internal hint names; hints only."""
    annotations = tool.get("annotations")
    if not isinstance(annotations, dict):
        return {}
    return {name: annotations[key] for key, name in _ANNOTATION_HINTS.items()
            if isinstance(annotations.get(key), bool)}
