"""What every kind of test produces, and the errors that stop a run before it starts."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import MCPAuthzError

PASS, FAIL, ERROR = "pass", "fail", "error"


class FixtureError(MCPAuthzError):
    """A fixture file that cannot be used; the message starts with ``file:line``."""

    code = "fixture_invalid"


@dataclass
class Result:
    """One Rego unit test or one fixture case.

    ``file`` and ``line`` point at the rule or the case. ``detail`` holds a failure's diff or a
    crash's output. ``divergence`` is set by ``--compare-opa`` when OPA's engine disagrees.
    """

    kind: str  # "rego" or "fixture"
    name: str
    file: str
    line: int
    status: str
    message: str = ""
    detail: str = ""
    seconds: float = 0.0
    divergence: str = ""

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def ok(self) -> bool:
        return self.status == PASS and not self.divergence
