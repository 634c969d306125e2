"""Caller-supplied values made safe for the policy: bounded, JSON-exact, no encoding tricks.

Every string, number and structure a caller sends passes through ``normalize`` before it reaches
the input document. It enforces the configured limits (each named when hit), rejects what JSON
or the engine cannot carry faithfully (NaN, infinities, integers beyond 64 bits, unpaired
surrogates), and turns integral floats (gRPC's Struct has only doubles) into integers so that
``2`` and ``2.0`` are one value for the policy and for approval digests.
"""

from __future__ import annotations

import math
from typing import Any

from .config import LimitsConfig
from .errors import LimitExceeded, RequestError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EXACT_FLOAT_INT = 2**53
ENGINE_DIGITS = 15


class _Budget:
    __slots__ = ("keys",)

    def __init__(self) -> None:
        self.keys = 0


def normalize(value: Any, field: str, limits: LimitsConfig) -> Any:
    """A checked copy of ``value``; RequestError naming ``field`` (and the limit) otherwise."""
    return _walk(value, field, limits, 0, _Budget())


def check_string(value: str, field: str, limits: LimitsConfig) -> str:
    if not isinstance(value, str):
        raise RequestError(field, f"expected a string, got {type(value).__name__}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise RequestError(field, "contains an unpaired surrogate (not valid UTF-8)") from exc
    if size > limits.max_string_bytes:
        raise LimitExceeded(field, "max_string_bytes", limits.max_string_bytes)
    return value


def _scalar(value: Any, field: str, limits: LimitsConfig) -> Any:
    if isinstance(value, str):
        return check_string(value, field, limits)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise RequestError(field, "integer outside the 64-bit range")
        return value
    if not math.isfinite(value):
        raise RequestError(field, "NaN and infinities are not JSON numbers")
    if value.is_integer() and abs(value) < EXACT_FLOAT_INT:
        return int(value)
    if float(f"{value:.{ENGINE_DIGITS}g}") != value:
        # regopy's number parser is off by an ulp or more (99.99 reads as 99.98999999999999,
        # 1000.0000000000001 as 1000): a number finer than 15 significant digits could sit on
        # the other side of a policy threshold for the engine than for the tool it reaches
        raise RequestError(field, f"a number with more than {ENGINE_DIGITS} significant digits "
                                  "(the policy engine would round it)")
    return value


def _walk(value: Any, field: str, limits: LimitsConfig, depth: int, budget: _Budget) -> Any:
    if depth > limits.max_depth:
        raise LimitExceeded(field, "max_depth", limits.max_depth)
    if value is None or isinstance(value, bool | str | int | float):
        return _scalar(value, field, limits)
    if isinstance(value, dict):
        budget.keys += len(value)
        if budget.keys > limits.max_keys:
            raise LimitExceeded(field, "max_keys", limits.max_keys)
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise RequestError(field, "object keys must be strings")
            check_string(key, f"{field}.<key>", limits)
            result[key] = _walk(item, f"{field}.{key[:64]}", limits, depth + 1, budget)
        return result
    if isinstance(value, list | tuple):
        budget.keys += len(value)
        if budget.keys > limits.max_keys:
            raise LimitExceeded(field, "max_keys", limits.max_keys)
        return [_walk(item, f"{field}[{i}]", limits, depth + 1, budget)
                for i, item in enumerate(value)]
    raise RequestError(field, f"unsupported value type {type(value).__name__}")
