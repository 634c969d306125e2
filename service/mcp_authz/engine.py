"""The Rego engine: compile a bundle once with regopy, evaluate it per request, fail closed.

regopy is called here and nowhere else (STYLE: translate a library's errors where it is called).
Its sharp edges (DESIGN.md) and how this module meets them:

- a shared Interpreter races: each thread evaluates on its own Interpreter, sharing the compiled
  Bundle, which is immutable;
- ``set_input(dict)`` does not escape strings: the input is handed over as JSON text
  (``set_input_term``) made by ``json.dumps``, which escapes quotes, backslashes and control
  characters, so no caller string is ever read as Rego or JSON structure;
- querying a Bundle whose ``ok()`` is False crashes: a bundle is only kept when ``ok()``;
- ``Output()`` can raise ``JSONDecodeError`` and error results bypass ``default`` rules: the output
  is read through the low-level calls, and any error or unexpected shape is a ``PolicyError``;
- compile errors are S-expressions with byte offsets: they are translated to ``file:line:col``.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import regopy
from regopy import rego_shared as _rego

from . import evalguard
from .bundles import BundleContents
from .errors import BundleError, DeadlineExceeded, PolicyError
from .evalguard import EvaluationTimeout
from .model import Obligation, Reason

DEFAULT_ENTRYPOINT = "mcp/authz/decision"
#: Optional rule naming input paths the decision log masks or drops (audit.py). Built only when
#: the bundle defines it: querying an entrypoint that was not built crashes regopy.
LOG_MASK_ENTRYPOINT = "mcp/authz/log_mask"
MAX_OUTPUT_BYTES = 4 * 1024 * 1024
_ERROR_RE = re.compile(r"\(error (\d+):")
_MSG_RE = re.compile(r"\(errormsg (\d+):")
_POSITION_RE = re.compile(r"\|\d+\|\d+")


@dataclass(frozen=True)
class PolicyResult:
    """A policy output that passed the contract check."""

    allow: bool
    reasons: tuple[Reason, ...]
    obligations: tuple[Obligation, ...]


class CompiledPolicy:
    """One bundle revision, compiled; safe to evaluate from many threads at once."""

    def __init__(self, contents: BundleContents, bundle: regopy.Bundle, entrypoint: str,
                 log_mask_entrypoint: str | None = None):
        self.contents = contents
        self.revision = contents.revision
        self.entrypoint = entrypoint
        self.log_mask_entrypoint = log_mask_entrypoint
        self._bundle = bundle
        self._tables = {lk.name: _data_at(contents.data, lk.data) for lk in contents.lookups}

    def lookups(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """Resolve the bundle's declared keyed lookups against an input document in Python."""
        found = {}
        for lookup in self.contents.lookups:
            key: Any = document
            for part in lookup.key:
                key = key.get(part) if isinstance(key, Mapping) else None
            table = self._tables.get(lookup.name)
            if isinstance(key, str) and isinstance(table, Mapping) and key in table:
                found[lookup.name] = table[key]
        return found

    def evaluate(self, input_json: str) -> PolicyResult:
        """Evaluate the entry point on an input given as JSON text; errors are PolicyError."""
        return validate_output(self.evaluate_raw(input_json))

    def evaluate_log_mask(self, input_json: str) -> Any:
        """The value of ``log_mask`` for this input, or None when the bundle has no such rule.

        Evaluated through the same wrapper as decisions; errors are PolicyError."""
        if self.log_mask_entrypoint is None:
            return None
        return self.evaluate_raw(input_json, self.log_mask_entrypoint)

    def evaluate_raw(self, input_json: str, entrypoint: str | None = None) -> Any:
        """The entry point's value, or PolicyError when undefined or on any engine error.

        ``entrypoint`` must be one this policy was built with (the decision entry point when
        omitted). With log masks prefetched (``prefetch_log_masks``), a decision also evaluates
        ``log_mask`` in the same engine task, and the ``log_mask`` asked for next on this
        thread, for this policy and input text, is that answer."""
        entrypoint = entrypoint or self.entrypoint
        if entrypoint == self.log_mask_entrypoint:
            prefetched = _take_prefetched(self, input_json)
            if prefetched is not None:
                return self._value(prefetched, entrypoint)
        entrypoints = [entrypoint]
        if _prefetch["enabled"] and entrypoint == self.entrypoint and self.log_mask_entrypoint:
            entrypoints.append(self.log_mask_entrypoint)
        try:  # bounded in time by the process's evaluation guard (evalguard.py)
            outputs = evalguard.run(_queries, self._bundle, entrypoints, input_json)
        except (EvaluationTimeout, DeadlineExceeded):  # each names the bound it hit
            raise
        except Exception as exc:  # regopy raises RegoError, ValueError, UnicodeError...
            raise PolicyError(f"evaluation failed: {_one_line(str(exc))}") from exc
        if len(outputs) > 1:
            _requests.prefetched = (self, input_json, outputs[1])
        return self._value(outputs[0], entrypoint)

    def _value(self, output: tuple[bool, str], entrypoint: str) -> Any:
        """An engine output (ok, text) read as the entry point's value; PolicyError otherwise."""
        ok, text = output
        if not ok or text.startswith("(error"):  # an error term can come with ok() true
            raise PolicyError(f"evaluation failed: {translate_errors(text, self.contents.modules)}")
        if text == "undefined":
            raise PolicyError(f"{entrypoint} is undefined for this input")
        if len(text) > MAX_OUTPUT_BYTES:
            raise PolicyError("policy output too large")
        try:
            output = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise PolicyError("policy output is not valid JSON") from exc
        if isinstance(output, list):
            output = output[0] if len(output) == 1 else None
        expressions = output.get("expressions") if isinstance(output, dict) else None
        if not isinstance(expressions, list) or len(expressions) != 1:
            raise PolicyError(f"{entrypoint} is undefined for this input")
        return expressions[0]


_local = threading.local()  # the engine thread's interpreter and the input it holds
_requests = threading.local()  # the requesting thread's prefetched log_mask
_prefetch = {"enabled": False}


def prefetch_log_masks(enabled: bool) -> None:
    """Evaluate ``log_mask`` with every decision, in the same engine task (the decision log
    turns this on when it reads the policy's masks). Asked for separately, the mask query
    would queue behind other requests' decisions and parse its input a second time."""
    _prefetch["enabled"] = enabled


def _take_prefetched(policy: CompiledPolicy, input_json: str) -> tuple[bool, str] | None:
    found = getattr(_requests, "prefetched", None)
    _requests.prefetched = None
    if found is None or found[0] is not policy or found[1] != input_json:
        return None
    return found[2]  # type: ignore[no-any-return]


def _queries(bundle: regopy.Bundle, entrypoints: Sequence[str],
             input_json: str) -> list[tuple[bool, str]]:
    """The first entry point's output, then the others' (an error in one of those is its
    output, not the decision's)."""
    outputs = [_query(bundle, entrypoints[0], input_json)]
    for entrypoint in entrypoints[1:]:
        try:
            outputs.append(_query(bundle, entrypoint, input_json))
        except Exception as exc:  # regopy raises RegoError, ValueError, UnicodeError...
            outputs.append((False, _one_line(str(exc))))
    return outputs


def _query(bundle: regopy.Bundle, entrypoint: str, input_json: str) -> tuple[bool, str]:
    """One engine query on this thread's interpreter: (ok, output text)."""
    interpreter = _thread_interpreter()
    handle = None
    try:
        _set_input(interpreter, input_json)
        handle = _rego.rego_bundle_query_entrypoint(interpreter._impl, bundle._impl, entrypoint)
        return bool(_rego.rego_output_ok(handle)), _rego.rego_output_string(handle)
    finally:
        if handle:
            _rego.rego_free_output(handle)


def _thread_interpreter() -> regopy.Interpreter:
    interpreter = getattr(_local, "interpreter", None)
    if interpreter is None:
        interpreter = _local.interpreter = regopy.Interpreter()
    return interpreter


def _set_input(interpreter: regopy.Interpreter, input_json: str) -> None:
    """Hand the input to this thread's interpreter, unless it already holds exactly this text.

    regopy parses an input term at ~17 us per JSON value (about 1 ms for a typical decision
    input, as much as the evaluation), and a second query on the same input (the decision
    log's ``log_mask`` right after the decision) needs no second parse. The text is
    remembered only after regopy accepted it."""
    if getattr(_local, "input_json", None) == input_json:
        return
    _local.input_json = None
    interpreter.set_input_term(input_json)
    _local.input_json = input_json


def is_builtin(name: str) -> bool:
    """Whether regopy knows ``name`` as a builtin function (``mcp-authz check`` uses this)."""
    return bool(_thread_interpreter().is_builtin(name))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} in policy output")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]


def _data_at(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = data
    for part in path:
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def validate_output(value: Any) -> PolicyResult:
    """Check a policy output against the contract; anything else is a PolicyError.

    ``allow`` counts only when it is exactly ``true``.
    """
    if not isinstance(value, dict):
        raise PolicyError(f"decision must be an object, got {type(value).__name__}")
    unknown = set(value) - {"allow", "reasons", "obligations"}
    if unknown:
        raise PolicyError(f"decision has unknown fields: {', '.join(sorted(unknown))}")
    allow = value.get("allow")
    if not isinstance(allow, bool):
        raise PolicyError("decision.allow must be a boolean")
    reasons = value.get("reasons", [])
    obligations = value.get("obligations", [])
    if not isinstance(reasons, list) or not isinstance(obligations, list):
        raise PolicyError("decision.reasons and decision.obligations must be arrays")
    parsed_reasons = []
    for i, reason in enumerate(reasons):
        if (not isinstance(reason, dict) or not isinstance(reason.get("code"), str)
                or not isinstance(reason.get("message", ""), str)):
            raise PolicyError(f"decision.reasons[{i}] must be {{code: string, message: string}}")
        parsed_reasons.append(Reason(reason["code"], reason.get("message", "")))
    parsed_obligations = []
    for i, obligation in enumerate(obligations):
        if (not isinstance(obligation, dict) or not isinstance(obligation.get("type"), str)
                or not isinstance(obligation.get("params", {}), dict)):
            raise PolicyError(f"decision.obligations[{i}] must be {{type: string, params: object}}")
        parsed_obligations.append(Obligation(obligation["type"], obligation.get("params", {})))
    return PolicyResult(allow is True, tuple(parsed_reasons), tuple(parsed_obligations))


def compile_bundle(contents: BundleContents, entrypoint: str = DEFAULT_ENTRYPOINT,
                   extra_entrypoints: Sequence[str] = ()) -> CompiledPolicy:
    """Compile every module and the merged data; BundleError (file:line:col) on any problem.

    ``extra_entrypoints`` are built too, for ``evaluate_raw(..., entrypoint)`` (the test runner
    builds every test rule in one compile)."""
    interpreter = regopy.Interpreter()
    for name, source in sorted(contents.modules.items()):
        try:
            interpreter.add_module(name, source)
        except regopy.RegoError as exc:
            raise BundleError(translate_errors(str(exc), contents.modules)) from exc
    try:
        interpreter.add_data_json(json.dumps(contents.data, ensure_ascii=False, allow_nan=False))
    except (regopy.RegoError, ValueError) as exc:
        raise BundleError(f"data: rejected by the engine: {_one_line(str(exc))}") from exc
    _check_entrypoint(contents, entrypoint)
    entrypoints = [entrypoint, *extra_entrypoints]
    log_mask = None
    if _undefined_rule(contents, LOG_MASK_ENTRYPOINT) is None:
        log_mask = LOG_MASK_ENTRYPOINT
        if log_mask not in entrypoints:
            entrypoints.append(log_mask)
    try:
        bundle = interpreter.build(None, entrypoints)
    except regopy.RegoError as exc:
        raise BundleError(translate_errors(str(exc), contents.modules)) from exc
    if not bundle.ok():
        raise BundleError(translate_errors(str(bundle.node().json()), contents.modules))
    return CompiledPolicy(contents, bundle, entrypoint, log_mask)


def _check_entrypoint(contents: BundleContents, entrypoint: str) -> None:
    problem = _undefined_rule(contents, entrypoint)
    if problem is not None:
        raise BundleError(f"entrypoint {entrypoint}: {problem}")


def _undefined_rule(contents: BundleContents, entrypoint: str) -> str | None:
    """Why no module defines ``entrypoint``'s rule, or None when one does."""
    package, _, rule = entrypoint.replace("/", ".").rpartition(".")
    if package not in contents.packages().values():
        return f"no module declares package {package}"
    rule_re = re.compile(rf"^\s*(default\s+)?{re.escape(rule)}\b", re.MULTILINE)
    if not any(rule_re.search(text) for name, text in contents.modules.items()
               if contents.packages()[name] == package):
        return f"package {package} defines no rule {rule}"
    return None


def translate_errors(sexpr: str, modules: Mapping[str, str]) -> str:
    """regopy's ``(error N:file|offset|len (errormsg N:message) ...)`` as
    ``file:line:col: message``.

    Falls back to the raw text, on one line, when it has no such structure.
    """
    found = []
    for match in _ERROR_RE.finditer(sexpr):
        start = match.end()
        end = start + int(match.group(1))  # the length prefix counts the file name only
        position = _POSITION_RE.match(sexpr, end)
        location = sexpr[start:end] + (position.group() if position else "")
        msg_match = _MSG_RE.search(sexpr, start)
        message = ""
        if msg_match:
            message = sexpr[msg_match.end():msg_match.end() + int(msg_match.group(1))]
        found.append(_locate(location, modules) + ": " + (message or "error"))
    if not found:  # evaluation errors carry a message but no location
        found = [sexpr[m.end():m.end() + int(m.group(1))] for m in _MSG_RE.finditer(sexpr)]
    return "\n".join(dict.fromkeys(found)) if found else _one_line(sexpr)


def _locate(location: str, modules: Mapping[str, str]) -> str:
    name, _, rest = location.partition("|")
    offset = rest.partition("|")[0]
    source = modules.get(name)
    if source is None or not offset.isdigit():
        return name or "<unknown>"
    prefix = source.encode("utf-8")[:int(offset)].decode("utf-8", errors="ignore")
    line = prefix.count("\n") + 1
    column = len(prefix) - (prefix.rfind("\n") + 1) + 1
    return f"{name}:{line}:{column}"
