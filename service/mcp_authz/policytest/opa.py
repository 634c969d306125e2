"""``--compare-opa``: the same unit tests and the same decision inputs on OPA's own Go engine.

OPA comes from PyPI ``opa-golib-python-bindings`` (optional; its metadata asks for Python 3.14
but it runs on 3.11, so it is installed with ``--ignore-requires-python``). Unit tests are
evaluated a package at a time (one prepared query per package: OPA prepares every distinct
query string, ~0.3 s each); fixtures evaluate the entry point on ``Outcome.input``, the exact
document the service built and regopy saw. Only disagreements are reported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..bundles import BundleContents
from ..engine import validate_output
from ..errors import MCPAuthzError, PolicyError
from ..model import Decision
from .results import ERROR, FAIL, PASS, Result
from .units import UnitTest

INSTALL_HINT = ("--compare-opa needs OPA's engine: .venv/bin/pip install "
                "--ignore-requires-python opa-golib-python-bindings (make install does this)")
_TEST_INPUT: dict[str, Any] = {}  # the same empty input the regopy side uses


class OpaUnavailable(MCPAuthzError):
    code = "opa_unavailable"


def require_opa() -> None:
    """Raise OpaUnavailable, saying how to install it, when OPA's engine is not installed."""
    try:
        import opa_bindings  # noqa: F401
    except ImportError as exc:
        raise OpaUnavailable(INSTALL_HINT) from exc


class OpaCrossCheck:
    """One bundle loaded into OPA."""

    def __init__(self, contents: BundleContents, entrypoint: str):
        require_opa()
        from opa_bindings import OpaEngine, OpaError

        self._error_type = OpaError
        self._engine = OpaEngine()
        self._engine.print_handler = lambda message, location: None  # as regopy's, unreported
        self._document = entrypoint.strip("/").replace("/", ".")
        self.load_error = ""
        try:
            for name, source in sorted(contents.modules.items()):
                self._engine.add_policy(name, source)
            self._engine.add_data(dict(contents.data))
        except OpaError as exc:
            self.load_error = f"OPA rejects the bundle: {_one_line(exc.message)}"

    def close(self) -> None:
        self._engine.close()

    def compare_units(self, tests: Sequence[UnitTest], results: Sequence[Result]) -> None:
        """Set ``divergence`` on each result whose outcome on OPA differs."""
        outcomes = self._unit_outcomes(tests)
        for test, result in zip(tests, results, strict=True):
            status, message = outcomes[test.name]
            differs = status != result.status or (status == FAIL and message != result.message)
            if differs:
                result.divergence = (f"regopy: {_said(result.status, result.message)}; "
                                     f"OPA: {_said(status, message)}")

    def _unit_outcomes(self, tests: Sequence[UnitTest]) -> dict[str, tuple[str, str]]:
        if self.load_error:
            return {t.name: (ERROR, self.load_error) for t in tests}
        outcomes: dict[str, tuple[str, str]] = {}
        packages: dict[str, list[UnitTest]] = {}
        for test in tests:
            packages.setdefault(test.package, []).append(test)
        for package, members in packages.items():
            try:
                document = self._engine.eval_document(package, _TEST_INPUT)
            except self._error_type:  # one failing rule spoils the package: go one by one
                for test in members:
                    outcomes[test.name] = self._one_test(test)
                continue
            for test in members:
                present = isinstance(document, Mapping) and test.rule in document
                outcomes[test.name] = _test_outcome(document[test.rule] if present else None,
                                                    present)
        return outcomes

    def _one_test(self, test: UnitTest) -> tuple[str, str]:
        try:
            rows = self._engine.eval_query(f"x := {test.name}", _TEST_INPUT)
        except self._error_type as exc:
            return ERROR, _one_line(exc.message)
        return _test_outcome(rows[0].get("x") if rows else None, bool(rows))

    def compare_decision(self, result: Result, document: Mapping[str, Any],
                         decision: Decision) -> None:
        """Set ``divergence`` when OPA decides ``document`` differently from the service."""
        ours = _view(decision.allow, [(r.code, r.message) for r in decision.reasons],
                     [(o.type, dict(o.params)) for o in decision.obligations])
        theirs = self._decide(document)
        if ours == theirs:
            return
        if theirs.startswith("error") and [r.code for r in decision.reasons] == ["policy_error"]:
            return  # both engines failed to decide; the service denies either way
        result.divergence = f"regopy decided {ours}; OPA decided {theirs}"

    def _decide(self, document: Mapping[str, Any]) -> str:
        if self.load_error:
            return f"error: {self.load_error}"
        try:
            value = self._engine.eval_document(self._document, dict(document))
            output = validate_output(value)
        except self._error_type as exc:
            return f"error: {_one_line(exc.message)}"
        except PolicyError as exc:
            return f"error: {exc}"
        return _view(output.allow, [(r.code, r.message) for r in output.reasons],
                     [(o.type, dict(o.params)) for o in output.obligations])


def _test_outcome(value: Any, defined: bool) -> tuple[str, str]:
    if not defined:
        return FAIL, "undefined"
    if value is True:
        return PASS, ""
    return FAIL, f"evaluated to {json.dumps(value)[:200]}, not true"


def _view(allow: bool, reasons: list[tuple[str, str]], obligations: list[Any]) -> str:
    return json.dumps({"allow": allow, "reasons": reasons, "obligations": obligations},
                      sort_keys=True, ensure_ascii=False)


def _said(status: str, message: str) -> str:
    return f"{status} ({message})" if message else status


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:400]
