"""Obligation enforcement on MCP results (shared by the middleware and the gateway)."""

from __future__ import annotations

import pytest

from mcp_authz.integrations.mcp import missing_scopes
from mcp_authz.integrations.obligations import (
    REDACTED,
    ObligationFailed,
    enforce,
    parse_path,
    redact,
    unknown_obligations,
)
from mcp_authz.model import Obligation, Reason

SCHEMA = {"type": "object", "required": ["card", "amount"],
          "properties": {"card": {"type": "string"}, "amount": {"type": "number"},
                         "pin": {"type": "integer"},
                         "items": {"type": "array", "items": {
                             "type": "object", "properties": {"secret": {"type": "string"}}}}}}


def payment() -> dict:
    structured = {"card": "4111", "amount": 5, "pin": 1234,
                  "items": [{"secret": "a"}, {"secret": "b"}]}
    return {"content": [{"type": "text", "text": '{"card": "4111", "pin": 1234}'}],
            "structuredContent": structured, "isError": False}


def test_parse_path_accepts_the_documented_forms() -> None:
    assert parse_path("$.a['b c'][2][*].*") == ["a", "b c", 2, None, None]
    with pytest.raises(ValueError):
        parse_path("a.b")
    with pytest.raises(ValueError):
        parse_path("$.a..b")


@pytest.mark.requirement("redact")
def test_redact_replaces_strings_removes_optional_non_strings_and_rewrites_content() -> None:
    result = redact(payment(), ["$.structuredContent.card", "$.structuredContent.pin",
                                "$.structuredContent.items[*].secret"], SCHEMA)
    assert result["structuredContent"]["card"] == REDACTED
    assert "pin" not in result["structuredContent"]
    assert [i["secret"] for i in result["structuredContent"]["items"]] == [REDACTED] * 2
    assert "4111" not in str(result["content"]) and "1234" not in str(result["content"])
    assert payment()["structuredContent"]["card"] == "4111"  # the input is not modified


def test_redact_refuses_what_the_schema_requires_as_a_non_string() -> None:
    with pytest.raises(ObligationFailed) as caught:
        redact(payment(), ["$.structuredContent.amount"], SCHEMA)
    assert caught.value.code == "redaction_failed"


def test_redact_without_schema_replaces_and_missing_paths_change_nothing() -> None:
    assert redact(payment(), ["$.structuredContent.amount"], None)["structuredContent"][
        "amount"] == REDACTED
    assert redact(payment(), ["$.nothing.here"], SCHEMA) == payment()


def test_max_result_bytes_refuses_a_larger_result() -> None:
    small = [Obligation("max_result_bytes", {"bytes": 10_000})]
    assert enforce(payment(), small, SCHEMA, "t", "d") == payment()
    with pytest.raises(ObligationFailed) as caught:
        enforce(payment(), [Obligation("max_result_bytes", {"bytes": 20})], SCHEMA, "t", "d")
    assert caught.value.code == "result_too_large"


def test_redaction_happens_before_the_size_check_and_audit_logs_no_content(
        caplog: pytest.LogCaptureFixture) -> None:
    obligations = [Obligation("audit", {"level": "high"}),
                   Obligation("redact", {"paths": ["$.structuredContent.card"]})]
    with caplog.at_level("INFO", logger="mcp_authz.audit"):
        result = enforce(payment(), obligations, SCHEMA, "tools/call 'pay'", "dec-1")
    assert result["structuredContent"]["card"] == REDACTED
    assert "dec-1" in caplog.text and "4111" not in caplog.text


@pytest.mark.requirement("unknown-obligation-denies")
def test_unknown_obligation_types_are_reported() -> None:
    obligations = [Obligation("redact", {}), Obligation("encrypt", {}), Obligation("notify", {})]
    assert unknown_obligations(obligations) == ["encrypt", "notify"]


def test_missing_scopes_come_from_scope_missing_reasons() -> None:
    reasons = (Reason("scope_missing",
                      "tool 'write_file' requires scope(s) the token lacks: files:write, x:y"),
               Reason("role_missing", "lacks: admin"))
    assert missing_scopes(reasons) == "files:write x:y"
