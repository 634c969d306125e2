"""`mcp-authz test` and `mcp-authz check` on small bundles written per test: real regopy in real
child processes, real tokens minted and verified, OPA's real engine for --compare-opa."""

from __future__ import annotations

import json
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mcp_authz.cli import main
from support import POLICIES

POLICY = """\
package mcp.authz

import rego.v1

default decision := {"allow": false, "obligations": [],
    "reasons": [{"code": "scope_missing", "message": "needs files:read"}]}

decision := {"allow": true, "reasons": [],
    "obligations": [{"type": "audit", "params": {"level": "low", "who": input.subject.id}}]} if {
    "files:read" in input.subject.scopes
}

shout(s) := upper(s)
"""

TESTS = """\
package mcp.authz_test

import rego.v1

import data.mcp.authz

test_shout if authz.shout("a") == "A"

test_shout_wrong if authz.shout("a") == "a"

test_crash if {
    authz.loud with input as {"s": "x"}
}
"""

CASES = """\
defaults:
  request:
    tenant: acme
    method: tools/call
    server: {id: files, resource: https://mcp.example.com/files}
    tool: {name: read_file, arguments: {path: /a}}
cases:
  - name: reader may read
    subject: {sub: alice, tenant: acme, scope: files:read}
    expect:
      allow: true
      reasons: []
      obligations: [{type: audit, params: {level: low}}]
  - name: no scope no read
    subject: {sub: bob, tenant: acme}
    expect: {allow: false, reasons: [scope_missing], obligations: []}
  - name: no token
    expect: {allow: false, reasons: [token_missing]}
  - name: expired token
    subject: {sub: alice, exp: 1000, iat: 900}
    expect: {allow: false, reasons: [token_expired]}
"""


def bundle(root: Path, policy: str = POLICY, tests: str | None = None,
           cases: str | None = None) -> Path:
    (root / "mcp" / "authz").mkdir(parents=True)
    (root / ".manifest").write_text('{"revision": "t1", "roots": ["mcp"]}')
    (root / "mcp" / "authz" / "policy.rego").write_text(policy)
    if tests is not None:
        (root / "mcp" / "authz" / "policy_test.rego").write_text(tests)
    if cases is not None:
        (root / "tests").mkdir()
        (root / "tests" / "decisions.yaml").write_text(cases)
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def crashing_policy() -> str:
    return POLICY + '\nloud if upper(input.s) == "X"\n'


def test_unit_tests_pass_fail_and_crash_is_an_error_while_the_run_goes_on(tmp_path, capsys):
    root = bundle(tmp_path / "b", crashing_policy(), TESTS)
    code, out, _ = run(capsys, "test", str(root), "--format", "json")
    results = {r["name"]: r for r in json.loads(out)["results"]}
    assert code == 1
    assert results["data.mcp.authz_test.test_shout"]["status"] == "pass"
    assert results["data.mcp.authz_test.test_shout_wrong"]["status"] == "fail"
    crash = results["data.mcp.authz_test.test_crash"]
    assert crash["status"] == "error"
    assert "regopy crashed (signal" in crash["message"]
    assert "`with input as` on rules that call builtins" in crash["message"]
    assert crash["file"].endswith("mcp/authz/policy_test.rego") and crash["line"] == 11


def test_run_filter_selects_by_name(tmp_path, capsys):
    root = bundle(tmp_path / "b", tests=TESTS.split("test_crash")[0], cases=CASES)
    code, out, _ = run(capsys, "test", str(root), "--run", "shout$|no token", "--format", "json")
    names = [r["name"] for r in json.loads(out)["results"]]
    assert code == 0
    assert names == ["data.mcp.authz_test.test_shout", "no token"]


def test_fixtures_pass_on_the_service_path_with_real_tokens(tmp_path, capsys):
    root = bundle(tmp_path / "b", cases=CASES)
    code, out, _ = run(capsys, "test", str(root), "--verbose")
    assert code == 0, out
    assert "PASS: 4/4" in out
    assert "reader may read" in out  # --verbose lists passing cases too


def test_wrong_fixture_fails_with_a_diff_naming_the_case_and_line(tmp_path, capsys):
    wrong = CASES.replace("reasons: [scope_missing]", "reasons: [role_missing]")
    root = bundle(tmp_path / "b", cases=wrong)
    code, out, _ = run(capsys, "test", str(root))
    assert code == 1
    assert f"FAIL {root / 'tests' / 'decisions.yaml'}:14: no scope no read" in out
    assert "-reasons: [role_missing]" in out and "+reasons: [scope_missing]" in out
    assert "scope_missing: needs files:read" in out


def test_junit_report_parses_and_marks_failures_and_errors(tmp_path, capsys):
    wrong = CASES.replace("allow: true", "allow: false")
    root = bundle(tmp_path / "b", crashing_policy(), TESTS, wrong)
    report = tmp_path / "report.xml"
    code, _, err = run(capsys, "test", str(root), "--format", "junit", "--output", str(report))
    assert code == 1
    assert "FAIL: 2" in err and "ERROR: 1" in err
    tree = ET.parse(report).getroot()
    assert tree.tag == "testsuites" and tree.get("tests") == "7"
    cases = {c.get("name"): c for c in tree.iter("testcase")}
    assert cases["reader may read"].find("failure") is not None
    assert cases["data.mcp.authz_test.test_crash"].find("error") is not None
    assert cases["data.mcp.authz_test.test_shout"].find("failure") is None
    assert {s.get("name") for s in tree.iter("testsuite")} == {
        str(root / "mcp/authz/policy_test.rego"), str(root / "tests/decisions.yaml")}


def test_syntax_error_is_reported_with_file_line_col_and_exit_2(tmp_path, capsys):
    broken = POLICY.replace('"files:read" in input.subject.scopes', "input.x ==")
    root = bundle(tmp_path / "b", broken, cases=CASES)
    code, _, err = run(capsys, "test", str(root))
    assert code == 2
    assert f"{root / 'mcp/authz/policy.rego'}:10:13: Invalid boolean operator" in err
    code, out, _ = run(capsys, "check", str(root))
    assert code == 2
    assert f"{root / 'mcp/authz/policy.rego'}:10:13: error: Invalid boolean operator" in out


@pytest.mark.parametrize(("text", "message"), [
    (CASES.replace("    expect: {allow: false, reasons: [token_missing]}",
                   "    expct: {allow: false}"),
     "decisions.yaml:18: unknown field 'expct' in case 'no token'"),
    (CASES.replace("reasons: [token_expired]", "reasons: [token_expired], why: x"),
     "decisions.yaml:21: unknown field 'why' in case 'expired token' expect"),
    (CASES + "  - name: bad\n    expect: {allow: false\n",
     "decisions.yaml:24:1: invalid YAML"),
    (CASES.replace("tool: {name: read_file", "tool: {nme: read_file"),
     "decisions.yaml:8: case 'reader may read': request.tool: unknown field(s): nme"),
])
def test_bad_fixture_files_name_file_and_line_and_exit_2(tmp_path, capsys, text, message):
    root = bundle(tmp_path / "b", cases=text)
    code, out, err = run(capsys, "test", str(root))
    assert code == 2 and out == ""
    assert message in err
    assert "Traceback" not in err


def test_unreadable_paths_exit_2(tmp_path, capsys):
    code, _, err = run(capsys, "test", str(tmp_path / "nope"))
    assert code == 2 and "nope: no such file or directory" in err
    binary = tmp_path / "x.yaml"
    binary.write_bytes(b"\xff\xfe")
    code, _, err = run(capsys, "test", str(binary), "--bundle", str(POLICIES))
    assert code == 2 and "x.yaml: cannot read" in err


def test_check_warns_on_divergent_builtins_and_errors_on_unknown_functions(tmp_path, capsys):
    policy = POLICY + textwrap.dedent("""\

        merged := object.union({"a": {"b": 1}}, {"a": {"c": 2}})

        # mcp-authz: ignore=divergent-builtin
        quiet := lower("X")

        inside if net.cidr_contains("10.0.0.0/8", input.ip)
        """)
    root = bundle(tmp_path / "b", policy)
    code, out, _ = run(capsys, "check", str(root))
    where = root / "mcp/authz/policy.rego"
    assert code == 2
    assert f"{where}:15:11: warning: object.union: regopy's object.union is not recursive" in out
    assert f"{where}:20:11: error: net.cidr_contains: an OPA builtin regopy does not have" in out
    assert "lower" not in out  # silenced on the line above
    (root / "mcp/authz/policy.rego").write_text(policy.split("inside if")[0])
    assert run(capsys, "check", str(root))[0] == 0
    assert run(capsys, "check", str(root), "--strict")[0] == 1


DIVERGENT_TESTS = """\
package mcp.authz_test

import rego.v1

test_union_is_recursive if {
    object.union({"a": {"b": 1}}, {"a": {"c": 2}}) == {"a": {"b": 1, "c": 2}}
}

test_plain if 1 + 1 == 2
"""


def test_compare_opa_reports_a_divergence(tmp_path, capsys):
    pytest.importorskip("opa_bindings")
    root = bundle(tmp_path / "b", tests=DIVERGENT_TESTS)
    code, out, _ = run(capsys, "test", str(root), "--compare-opa", "--format", "json")
    results = {r["name"]: r for r in json.loads(out)["results"]}
    assert code == 1
    union = results["data.mcp.authz_test.test_union_is_recursive"]
    assert union["status"] == "fail"
    assert union["divergence"].startswith("regopy: fail (") and "OPA: pass" in union["divergence"]
    assert results["data.mcp.authz_test.test_plain"]["divergence"] == ""


def test_compare_opa_reports_a_decision_divergence(tmp_path, capsys):
    pytest.importorskip("opa_bindings")
    policy = POLICY.replace('"params": {"level": "low", "who": input.subject.id}',
                            '"params": object.union({"x": {"a": 1}}, {"x": {"b": 2}})')
    cases = CASES.replace("params: {level: low}", "params: {}")
    root = bundle(tmp_path / "b", policy, cases=cases)
    code, out, _ = run(capsys, "test", str(root), "--compare-opa")
    assert code == 1
    assert "DIVERGE" in out and "reader may read" in out
    assert '"x": {"b": 2}' in out and '"x": {"a": 1, "b": 2}' in out


def test_compare_opa_without_the_package_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "opa_bindings", None)  # what a missing package looks like
    root = bundle(tmp_path / "b", tests=DIVERGENT_TESTS)
    code, out, err = run(capsys, "test", str(root), "--compare-opa")
    assert code == 2 and out == ""
    assert "pip install --ignore-requires-python opa-golib-python-bindings" in err


def test_eval_prints_the_decision_and_input_and_names_bad_files(tmp_path, capsys):
    root = bundle(tmp_path / "b")
    request = tmp_path / "request.yaml"
    request.write_text("tenant: acme\nmethod: tools/call\n"
                       "server: {id: files, resource: https://mcp.example.com/files}\n"
                       "tool: {name: read_file, arguments: {path: /a}}\n")
    claims = tmp_path / "claims.json"
    claims.write_text('{"sub": "alice", "tenant": "acme", "scope": "files:read"}')
    code, out, _ = run(capsys, "eval", "--bundle", str(root), "--request", str(request),
                       "--claims", str(claims), "--explain")
    shown = json.loads(out)
    assert code == 0 and shown["decision"]["allow"] is True
    assert shown["decision"]["obligations"] == [
        {"type": "audit", "params": {"level": "low", "who": "alice"}}]
    assert shown["input"]["subject"]["scopes"] == ["files:read"]
    claims.write_text('{"sub": "alice",\n "tenant": }')
    code, _, err = run(capsys, "eval", "--bundle", str(root), "--request", str(request),
                       "--claims", str(claims))
    assert code == 2 and f"{claims}:2:12: invalid JSON" in err
    request.write_text("tenant: acme\nmethod: tools/call\ntool: {name: x, nam: y}\n")
    code, _, err = run(capsys, "eval", "--bundle", str(root), "--request", str(request))
    assert code == 2 and f"{request}: request.tool: unknown field(s): nam" in err


def test_default_bundle_fixtures_cover_every_reason_code_and_obligation():
    from mcp_authz.model import REASON_CODES
    from mcp_authz.policytest.fixtures import load_fixture_file

    cases = load_fixture_file(str(POLICIES / "tests" / "decisions.yaml"))
    reasons = {code for c in cases for code in c.expect.get("reasons", [])}
    obligations = {o["type"] for c in cases for o in c.expect.get("obligations", [])}
    assert len(cases) >= 40
    # policy_error and no_policy come from the service (a broken policy, none loaded).
    assert reasons == set(REASON_CODES) - {"policy_error", "no_policy"}
    assert obligations == {"require_approval", "redact", "max_result_bytes", "audit"}


def test_default_bundle_passes_on_regopy_and_opa_alike(capsys):
    pytest.importorskip("opa_bindings")
    code, out, _ = run(capsys, "test", str(POLICIES), "--compare-opa")
    assert code == 0, out
    assert "FAIL: 0  ERROR: 0  DIVERGE: 0" in out
