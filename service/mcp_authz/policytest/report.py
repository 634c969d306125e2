"""Test reports: ``pretty`` for people, ``json`` for tools, ``junit`` for CI systems."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from .results import ERROR, FAIL, PASS, Result

FORMATS = ("pretty", "json", "junit")


def summary(results: Sequence[Result], seconds: float) -> dict[str, Any]:
    return {
        "total": len(results),
        "passed": sum(r.ok for r in results),
        "failed": sum(r.status == FAIL for r in results),
        "errors": sum(r.status == ERROR for r in results),
        "divergences": sum(bool(r.divergence) for r in results),
        "rego_tests": sum(r.kind == "rego" for r in results),
        "fixture_cases": sum(r.kind == "fixture" for r in results),
        "seconds": round(seconds, 3),
    }


def render(fmt: str, results: Sequence[Result], seconds: float, verbose: bool = False) -> str:
    if fmt == "json":
        return json.dumps({"results": [_record(r) for r in results],
                           "summary": summary(results, seconds)}, indent=2, ensure_ascii=False)
    if fmt == "junit":
        return junit(results, seconds)
    return pretty(results, seconds, verbose)


def _record(result: Result) -> dict[str, Any]:
    record = asdict(result)
    record["seconds"] = round(result.seconds, 6)
    return record


def pretty(results: Sequence[Result], seconds: float, verbose: bool = False) -> str:
    lines = []
    for result in results:
        if result.ok and not verbose:
            continue
        label = "DIVERGE" if result.status == PASS and result.divergence else result.status.upper()
        timing = f" ({result.seconds * 1000:.1f} ms)" if verbose else ""
        lines.append(f"{label} {result.location}: {result.name}{timing}")
        if result.message and result.status != PASS:
            lines.append(f"  {result.message}")
        lines.extend(f"  {line}" for line in result.detail.splitlines() if line.strip())
        if result.divergence:
            lines.append(f"  engines differ: {result.divergence}")
    total = summary(results, seconds)
    if lines:
        lines.append("-" * 80)
    lines.append(
        f"PASS: {total['passed']}/{total['total']}  FAIL: {total['failed']}  "
        f"ERROR: {total['errors']}  DIVERGE: {total['divergences']}  "
        f"({total['rego_tests']} rego tests, {total['fixture_cases']} fixture cases, "
        f"{seconds:.2f} s)")
    return "\n".join(lines)


def junit(results: Sequence[Result], seconds: float) -> str:
    """JUnit XML: one ``testsuite`` per source file, one ``testcase`` per test or case."""
    total = summary(results, seconds)
    root = ET.Element("testsuites", name="mcp-authz test", tests=str(total["total"]),
                      failures=str(total["failed"] + _divergent_passes(results)),
                      errors=str(total["errors"]), time=f"{seconds:.3f}")
    suites: dict[str, list[Result]] = {}
    for result in results:
        suites.setdefault(result.file, []).append(result)
    for file, members in suites.items():
        suite = ET.SubElement(
            root, "testsuite", name=file, tests=str(len(members)),
            failures=str(sum(r.status == FAIL for r in members) + _divergent_passes(members)),
            errors=str(sum(r.status == ERROR for r in members)),
            time=f"{sum(r.seconds for r in members):.3f}")
        for result in members:
            case = ET.SubElement(suite, "testcase", name=result.name, classname=file,
                                 file=file, line=str(result.line), time=f"{result.seconds:.6f}")
            _outcome(case, result)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")


def _divergent_passes(results: Sequence[Result]) -> int:
    return sum(r.status == PASS and bool(r.divergence) for r in results)


def _outcome(case: ET.Element, result: Result) -> None:
    text = "\n".join(part for part in (result.detail, result.divergence and
                                       f"engines differ: {result.divergence}") if part)
    if result.status == ERROR:
        node = ET.SubElement(case, "error", message=result.message, type="error")
    elif result.status == FAIL:
        node = ET.SubElement(case, "failure", message=result.message, type="failure")
    elif result.divergence:
        node = ET.SubElement(case, "failure", message="regopy and OPA disagree",
                             type="opa-divergence")
    else:
        return
    node.text = f"{result.location}\n{text}" if text else result.location
