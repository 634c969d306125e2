"""Decision fixtures: YAML or JSON files of requests and the decisions they must get.

Schema (every unknown field is an error naming ``file:line``)::

    defaults:                 # optional, applied to every case
      request: {...}          # merged under each case's request (server/client/tool/prompt
                              # one level deep; arguments, annotations, context are replaced)
      subject: {...}          # token claims, used when a case has no `subject` key
      now: 2026-11-28T12:00:00Z
    cases:
      - name: reader may read            # required, unique in the file
        description: ...                 # optional
        request: {...}                   # DecideRequest shape (mcp-authz eval's request file)
        subject: {sub: alice, ...}       # claims of a token minted and verified on the fly;
                                         # null: no token (use request.bearer_token or nothing)
        approvals: [{approver: bob, roles: [approver], digest: ..., ttl: 300}]
        now: 1700000000                  # epoch seconds or RFC 3339; default: the real clock
        expect:
          allow: false                   # required
          reasons: [scope_missing]       # the exact list of codes, in order (first = primary)
          obligations:                   # each matches one actual obligation of that type whose
            - {type: audit, params: {level: high}}   # params contain these (recursively);
                                         # no other obligation may be present
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from ..errors import RequestError
from ..evaluation import OfflineDecider, Outcome, request_from_mapping
from ..model import Decision, DecisionRequest
from .results import ERROR, FAIL, PASS, FixtureError, Result

FIXTURE_SUFFIXES = (".yaml", ".yml", ".json")
_TOP = {"defaults", "cases", "description"}
_DEFAULTS = {"request", "subject", "now"}
_CASE = {"name", "description", "request", "subject", "approvals", "now", "expect"}
_APPROVAL = {"approver", "roles", "digest", "ttl"}
_EXPECT = {"allow", "reasons", "obligations"}
_OBLIGATION = {"type", "params"}
_MERGED_ONE_LEVEL = ("server", "client", "tool", "prompt")


class Located(dict[str, Any]):
    """A mapping from a fixture file that remembers the line of itself and of each key."""

    line: int = 0
    key_lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    """Safe YAML without timestamp conversion (a date argument stays a string, as in JSON),
    with duplicate keys refused and line numbers kept."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Located:
    loader.flatten_mapping(node)
    result = Located()
    result.line, result.key_lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            raise yaml.MarkedYAMLError(problem=f"key {key!r} is not a string",
                                       problem_mark=key_node.start_mark)
        if key in result:
            raise yaml.MarkedYAMLError(problem=f"duplicate key {key!r}",
                                       problem_mark=key_node.start_mark)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass(frozen=True)
class Case:
    file: str
    line: int
    name: str
    request: DecisionRequest
    subject: Mapping[str, Any] | None
    approvals: tuple[Mapping[str, Any], ...]
    now: float | None
    expect: Mapping[str, Any]


def load_fixture_file(path: str) -> list[Case]:
    """Every case of one fixture file, checked; FixtureError naming file:line otherwise."""
    document = _parse(path)
    if not isinstance(document, Located):
        raise FixtureError(f"{path}:1: a fixture file is a mapping with a `cases` list")
    _known(path, document, _TOP, "the fixture file")
    defaults = document.get("defaults", Located())
    if not isinstance(defaults, Located):
        raise FixtureError(f"{path}:{_line(document, 'defaults')}: defaults must be a mapping")
    _known(path, defaults, _DEFAULTS, "defaults")
    cases = document.get("cases")
    if not isinstance(cases, list) or not cases:
        raise FixtureError(f"{path}:{_line(document, 'cases')}: `cases` must be a non-empty list")
    loaded, names = [], set()
    for i, raw in enumerate(cases):
        case = _case(path, raw, defaults, i)
        if case.name in names:
            raise FixtureError(f"{path}:{case.line}: duplicate case name {case.name!r}")
        names.add(case.name)
        loaded.append(case)
    return loaded


def _parse(path: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FixtureError(f"{path}: cannot read: {exc}") from exc
    if path.endswith(".json"):
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise FixtureError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") \
                from exc
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise FixtureError(f"{where}: invalid YAML: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise FixtureError(f"{path}: invalid YAML: {exc}") from exc


def _known(path: str, mapping: Located, allowed: set[str], what: str) -> None:
    for key in mapping:
        if key not in allowed:
            raise FixtureError(f"{path}:{mapping.key_lines[key]}: unknown field {key!r} in {what} "
                               f"(allowed: {', '.join(sorted(allowed))})")


def _line(mapping: Any, key: str) -> int:
    if isinstance(mapping, Located):
        return mapping.key_lines.get(key, mapping.line)
    return 1


def _case(path: str, raw: Any, defaults: Located, index: int) -> Case:
    if not isinstance(raw, Located):
        raise FixtureError(f"{path}: cases[{index}] must be a mapping")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise FixtureError(f"{path}:{raw.line}: cases[{index}] needs a `name` (a string)")
    what = f"case {name!r}"
    _known(path, raw, _CASE, what)
    request_data = _merge_request(defaults.get("request") or {}, raw.get("request") or {})
    try:
        request = request_from_mapping(_plain(request_data), where="request")
    except RequestError as exc:
        raise FixtureError(f"{path}:{_line(raw, 'request')}: {what}: {exc}") from exc
    subject = raw["subject"] if "subject" in raw else defaults.get("subject")
    if subject is not None and not isinstance(subject, Mapping):
        raise FixtureError(f"{path}:{_line(raw, 'subject')}: {what}: subject must be a mapping "
                           "of token claims, or null")
    if subject is not None and request.bearer_token:
        raise FixtureError(f"{path}:{_line(raw, 'subject')}: {what}: give either subject claims "
                           "or request.bearer_token, not both")
    approvals = _approvals(path, raw, what, subject)
    now = _now(path, raw if "now" in raw else defaults, what)
    expect = _expect(path, raw, what)
    return Case(path, raw.line, name, request, _plain(subject) if subject is not None else None,
                approvals, now, expect)


def _merge_request(base: Mapping[str, Any], case: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in case.items():
        if key in _MERGED_ONE_LEVEL and isinstance(value, Mapping) and isinstance(
                merged.get(key), Mapping):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _approvals(path: str, raw: Located, what: str,
               subject: Any) -> tuple[Mapping[str, Any], ...]:
    approvals = raw.get("approvals", [])
    line = _line(raw, "approvals")
    if not isinstance(approvals, list):
        raise FixtureError(f"{path}:{line}: {what}: approvals must be a list")
    if approvals and subject is None:
        raise FixtureError(f"{path}:{line}: {what}: approvals are minted for the subject: give "
                           "`subject` claims")
    for approval in approvals:
        if not isinstance(approval, Located) or not isinstance(approval.get("approver"), str):
            raise FixtureError(f"{path}:{line}: {what}: each approval needs `approver` (a string)")
        _known(path, approval, _APPROVAL, f"{what} approvals")
        roles = approval.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise FixtureError(f"{path}:{approval.line}: {what}: approval roles must be strings")
        if not isinstance(approval.get("ttl", 300), int):
            raise FixtureError(f"{path}:{approval.line}: {what}: approval ttl must be seconds")
    return tuple(_plain(a) for a in approvals)


def _now(path: str, source: Located, what: str) -> float | None:
    value = source.get("now")
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass
    raise FixtureError(f"{path}:{_line(source, 'now')}: {what}: now must be epoch seconds or an "
                       "RFC 3339 time (2026-11-28T12:00:00Z)")


def _expect(path: str, raw: Located, what: str) -> Mapping[str, Any]:
    expect = raw.get("expect")
    if not isinstance(expect, Located):
        raise FixtureError(f"{path}:{_line(raw, 'expect')}: {what}: needs `expect` (a mapping "
                           "with at least `allow`)")
    _known(path, expect, _EXPECT, f"{what} expect")
    if not isinstance(expect.get("allow"), bool):
        raise FixtureError(f"{path}:{_line(expect, 'allow')}: {what}: expect.allow must be "
                           "true or false")
    reasons = expect.get("reasons", [])
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise FixtureError(f"{path}:{_line(expect, 'reasons')}: {what}: expect.reasons must be "
                           "a list of reason codes")
    obligations = expect.get("obligations", [])
    if not isinstance(obligations, list):
        raise FixtureError(f"{path}:{_line(expect, 'obligations')}: {what}: expect.obligations "
                           "must be a list")
    for obligation in obligations:
        if not isinstance(obligation, Located) or not isinstance(obligation.get("type"), str) \
                or not isinstance(obligation.get("params", {}), Mapping):
            raise FixtureError(f"{path}:{_line(expect, 'obligations')}: {what}: each obligation "
                               "is {type: string, params: mapping}")
        _known(path, obligation, _OBLIGATION, f"{what} obligation")
    return _plain(expect)


def _plain(value: Any) -> Any:
    """Located mappings as plain dicts, recursively (what the decision path receives)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def run_case(decider: OfflineDecider, case: Case, display: str) -> tuple[Result, Outcome | None]:
    """Decide one case on the service's path and compare it with what the case expects."""
    result = Result("fixture", case.name, display, case.line, PASS)
    try:
        outcome = decider.decide(case.request, claims=case.subject,
                                 approvals=list(case.approvals) or None, now=case.now)
    except RequestError as exc:
        result.status, result.message = ERROR, f"request rejected: {exc}"
        return result, None
    diff = decision_diff(case.expect, outcome.decision)
    if diff:
        result.status, result.message, result.detail = FAIL, "decision differs", diff
    return result, outcome


def decision_diff(expect: Mapping[str, Any], decision: Decision) -> str:
    """A unified diff of expected against actual, or "" when the decision matches."""
    actual: dict[str, Any] = {"allow": decision.allow}
    wanted: dict[str, Any] = {"allow": expect["allow"]}
    if "reasons" in expect:
        wanted["reasons"] = list(expect["reasons"])
        actual["reasons"] = [r.code for r in decision.reasons]
    if "obligations" in expect:
        wanted["obligations"] = [
            {"type": o["type"], "params": o.get("params", {})} for o in expect["obligations"]]
        actual["obligations"] = _matched_obligations(wanted["obligations"], decision)
    if wanted == actual:
        return ""
    lines = difflib.unified_diff(_dump(wanted), _dump(actual), "expected", "actual", lineterm="",
                                 n=100)
    messages = [f"  {r.code}: {r.message}" for r in decision.reasons]
    return "\n".join(list(lines) + (["actual reasons:"] + messages if messages else []))


def _matched_obligations(wanted: list[dict[str, Any]], decision: Decision) -> list[Any]:
    """The actual obligations, each shown as the wanted one when it matches (so a match makes
    no diff line), otherwise in full; order follows the wanted list, extras last."""
    remaining = [{"type": o.type, "params": dict(o.params)} for o in decision.obligations]
    shown = []
    for want in wanted:
        match = next((o for o in remaining if o["type"] == want["type"]
                      and _contains(o["params"], want["params"])), None)
        if match is not None:
            remaining.remove(match)
            shown.append(want)
    return shown + remaining


def _contains(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, Mapping):
        return isinstance(actual, Mapping) and all(
            k in actual and _contains(actual[k], v) for k, v in wanted.items())
    return bool(actual == wanted)


def _dump(value: Any) -> list[str]:
    text = yaml.safe_dump(value, sort_keys=False, default_flow_style=None, width=100)
    return text.rstrip("\n").split("\n")


def is_fixture_file(rel: str) -> bool:
    """The bundle layout convention: ``*.fixtures.{yaml,yml,json}`` anywhere, and any YAML or
    JSON file under a ``tests/`` directory (bundle data files excluded)."""
    parts = rel.split("/")
    if not parts[-1].endswith(FIXTURE_SUFFIXES) or re.fullmatch(r"data\.(json|ya?ml)", parts[-1]):
        return False
    return "tests" in parts[:-1] or bool(re.search(r"\.fixtures\.(json|ya?ml)$", parts[-1]))
