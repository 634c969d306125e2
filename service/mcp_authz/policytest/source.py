"""A small Rego lexer: enough structure for test discovery, test isolation and lint.

It does not parse Rego. It splits a module into tokens (skipping comments and strings, so a
``#`` or a quote never confuses it) and into top-level statements: a statement starts where a
token sits in column 1 outside any bracket (``opa fmt`` style, which OPA and regopy both
accept), except ``else``, which continues the rule before it. Positions are 1-based lines and
columns in characters, as ``file:line:col`` messages need.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN_RE = re.compile(r"""
    (?P<space>[ \t\r\n]+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|`[^`]*`)
  | (?P<ref>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<number>[0-9][0-9.eE+-]*)
  | (?P<punct>:=|==|!=|<=|>=|.)
""", re.VERBOSE | re.DOTALL)

_OPEN, _CLOSE = "([{", ")]}"
KEYWORDS = frozenset({"package", "import", "default", "if", "else", "not", "some", "every", "in",
                      "contains", "with", "as", "true", "false", "null"})


@dataclass(frozen=True)
class Token:
    kind: str  # "ref" (a dotted name), "string", "number" or "punct"
    text: str
    line: int
    col: int
    start: int  # character offset
    end: int
    depth: int  # bracket depth before this token


@dataclass(frozen=True)
class Statement:
    """One top-level statement: ``package``, ``import`` or a rule (``name`` is its head name)."""

    name: str
    line: int
    start: int
    end: int
    tokens: tuple[Token, ...]

    @property
    def is_function(self) -> bool:
        head = self.tokens[1:2] if self.tokens and self.tokens[0].text != "default" else ()
        return bool(head) and head[0].text == "("


def tokenize(source: str) -> list[Token]:
    tokens = []
    depth, line, line_start = 0, 1, 0
    for match in _TOKEN_RE.finditer(source):
        kind, text = match.lastgroup or "punct", match.group()
        if kind not in ("space", "comment"):
            if text in _CLOSE:
                depth = max(depth - 1, 0)
            tokens.append(Token(kind, text, line, match.start() - line_start + 1, match.start(),
                                match.end(), depth))
            if text in _OPEN:
                depth += 1
        newlines = text.count("\n")
        if newlines:
            line += newlines
            line_start = match.start() + text.rfind("\n") + 1
    return tokens


def statements(source: str) -> list[Statement]:
    tokens = tokenize(source)
    starts = [i for i, t in enumerate(tokens)
              if t.col == 1 and t.depth == 0 and t.text not in _CLOSE and t.text != "else"]
    found = []
    for n, first in enumerate(starts):
        last = starts[n + 1] if n + 1 < len(starts) else len(tokens)
        body = tuple(tokens[first:last])
        head = body[1] if body[0].text == "default" and len(body) > 1 else body[0]
        found.append(Statement(head.text, body[0].line, body[0].start, body[-1].end, body))
    return found


def package_of(source: str) -> str:
    for statement in statements(source):
        if statement.name == "package" and len(statement.tokens) > 1:
            return statement.tokens[1].text
    return ""


def imports_of(source: str) -> dict[str, str]:
    """Import aliases: ``import data.mcp.authz`` gives ``{"authz": "data.mcp.authz"}``."""
    aliases = {}
    for statement in statements(source):
        texts = [t.text for t in statement.tokens]
        if statement.name == "import" and len(texts) > 1 and texts[1].startswith("data."):
            alias = texts[3] if len(texts) > 3 and texts[2] == "as" else texts[1].split(".")[-1]
            aliases[alias] = texts[1]
    return aliases


def blank(source: str, spans: list[tuple[int, int]]) -> str:
    """``source`` with the character ranges in ``spans`` replaced by spaces (newlines kept), so
    every line and column outside them stays where it was."""
    chars = list(source)
    for start, end in spans:
        for i in range(start, end):
            if chars[i] != "\n":
                chars[i] = " "
    return "".join(chars)
