"""``mcp-authz check``'s static findings: where regopy and OPA part ways, and calls to functions
that exist nowhere (regopy accepts those at load time and fails only when they are evaluated).

A finding on a line can be silenced, after review, with a comment on that line or the one
above: ``# mcp-authz: ignore`` (everything) or ``# mcp-authz: ignore=with-input,lower-upper``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .source import KEYWORDS, Statement, Token, imports_of, package_of, statements

ERROR, WARNING = "error", "warning"

#: Builtins regopy has but evaluates differently from OPA (DESIGN.md, measured).
DIVERGENT = {
    "time.parse_rfc3339_ns": "regopy differs from OPA on RFC 3339 times (e.g. with `Z`)",
    "time.format": "regopy formats times differently from OPA",
    "object.union": "regopy's object.union is not recursive; OPA merges nested objects",
    "urlquery.encode": "regopy encodes differently from OPA",
    "strings.render_template": "regopy renders templates differently from OPA",
    "opa.runtime": "regopy has no OPA runtime information",
    "lower": "regopy differs from OPA on non-ASCII letters: check the string is ASCII first",
    "upper": "regopy differs from OPA on non-ASCII letters: check the string is ASCII first",
    "print": "regopy writes print() to the process's C++ stdout, not to test reports or logs",
}
#: OPA builtins regopy lacks: a call fails at evaluation ("Function not found").
OPA_ONLY = ("http.send", "net.lookup_ip_addr", "trace", "rego.metadata.rule",
            "rego.metadata.chain", "net.cidr_")
_NOT_CALLS = KEYWORDS | {"set"}  # `set()` is the empty-set literal
_SILENCE_RE = re.compile(r"#\s*mcp-authz:\s*ignore(?:=([\w,-]+))?")


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    col: int
    severity: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.severity}: {self.message} [{self.rule}]"


def lint(modules: Mapping[str, str], is_builtin: Callable[[str], bool]) -> list[Finding]:
    """Every finding in the bundle's modules, sorted by place; silenced ones left out."""
    defined = _defined_functions(modules)
    findings = []
    for name, source in sorted(modules.items()):
        package, aliases = package_of(source), imports_of(source)
        for statement in statements(source):
            if statement.name in ("package", "import"):
                continue
            findings += _statement_findings(name, statement, package, aliases, defined,
                                            is_builtin)
        findings = [f for f in findings if f.file != name or not _silenced(source, f)]
    return sorted(findings, key=lambda f: (f.file, f.line, f.col))


def _defined_functions(modules: Mapping[str, str]) -> set[str]:
    """``data.<package>.<name>`` of every function the bundle defines."""
    defined = set()
    for source in modules.values():
        package = package_of(source)
        for statement in statements(source):
            if statement.is_function:
                defined.add(f"data.{package}.{statement.name}")
    return defined


def _statement_findings(file: str, statement: Statement, package: str,
                        aliases: Mapping[str, str], defined: set[str],
                        is_builtin: Callable[[str], bool]) -> list[Finding]:
    tokens = statement.tokens
    found = []
    for i, token in enumerate(tokens):
        after = tokens[i + 1] if i + 1 < len(tokens) else None
        if token.kind == "ref" and after is not None and after.text == "(" and i > 0 \
                and after.line == token.line and token.text not in _NOT_CALLS:
            found += _call_findings(file, token, package, aliases, defined, is_builtin)
        elif token.text == "with" and after is not None and after.text.split(".")[0] == "input":
            found.append(_at(file, token, WARNING, "with-input",
                             "`with input as` on rules that call builtins crashes regopy: call "
                             "a function taking the input instead"))
        elif token.text == "if" and after is not None and after.text == "every":
            found.append(_at(file, after, WARNING, "every-if",
                             "regopy differs from OPA on `if every ...` rule bodies: wrap the "
                             "`every` in braces"))
        elif token.text == "not" and _indexes_data_with_input(tokens[i + 1:i + 4]):
            found.append(_at(file, token, WARNING, "not-missing-key",
                             "regopy differs from OPA on `not data.x[input.y]` when the key is "
                             "missing: test membership explicitly"))
    return found


def _call_findings(file: str, token: Token, package: str, aliases: Mapping[str, str],
                   defined: set[str], is_builtin: Callable[[str], bool]) -> list[Finding]:
    name = token.text
    if name in DIVERGENT:
        return [_at(file, token, WARNING, "divergent-builtin", f"{name}: {DIVERGENT[name]}")]
    if is_builtin(name) or _resolve(name, package, aliases) in defined:
        return []
    opa = any(name == o or (o.endswith("_") and name.startswith(o)) for o in OPA_ONLY)
    why = ("an OPA builtin regopy does not have" if opa
           else "neither a regopy builtin nor a function defined in this bundle")
    return [_at(file, token, ERROR, "unknown-function",
                f"{name}: {why}; regopy fails only when it is evaluated")]


def _resolve(name: str, package: str, aliases: Mapping[str, str]) -> str:
    head, _, rest = name.partition(".")
    if head == "data":
        return name
    if head in aliases and rest:
        return f"{aliases[head]}.{rest}"
    return f"data.{package}.{name}"


def _indexes_data_with_input(tokens: tuple[Token, ...]) -> bool:
    texts = [t.text for t in tokens]
    return (len(texts) == 3 and texts[0].startswith("data.") and texts[1] == "["
            and texts[2].startswith("input."))


def _at(file: str, token: Token, severity: str, rule: str, message: str) -> Finding:
    return Finding(file, token.line, token.col, severity, rule, message)


def _silenced(source: str, finding: Finding) -> bool:
    lines = source.split("\n")
    for number in (finding.line, finding.line - 1):
        if 1 <= number <= len(lines):
            match = _SILENCE_RE.search(lines[number - 1])
            if match and (match.group(1) is None or finding.rule in match.group(1).split(",")):
                return True
    return False
