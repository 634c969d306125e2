"""A bundle that crashes the engine is refused; the service and its revision survive."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mcp_authz.activation import PolicyStore
from mcp_authz.bundles import load_bundle
from mcp_authz.errors import BundleError

ECHO = Path(__file__).parent / "data" / "echo_bundle"
CRASHING_RULE = """package mcp.authz

import rego.v1

# regopy aborts on `with input as` over a rule that calls a builtin
crash := {"allow": false, "reasons": [], "obligations": []} if {
	shout with input as {"x": "a"}
}

shout if upper(input.x) == "A"
"""


def _bundle(tmp_path: Path, revision: str, extra: dict[str, str]) -> Path:
    root = tmp_path / revision
    shutil.copytree(ECHO, root)
    manifest = json.loads((root / ".manifest").read_text())
    manifest["revision"] = revision
    (root / ".manifest").write_text(json.dumps(manifest))
    for name, text in extra.items():
        (root / name).write_text(text)
    return root


@pytest.mark.requirement("engine-crash-never-kills-the-service")
def test_crashing_bundle_is_refused_and_the_previous_revision_serves(tmp_path: Path) -> None:
    store = PolicyStore("mcp/authz/decision", precheck_timeout=120)
    store.activate_path(str(_bundle(tmp_path, "good", {})))
    bad = _bundle(tmp_path, "bad", {"mcp/authz/crash.rego": CRASHING_RULE})
    echo = bad / "mcp" / "authz" / "echo.rego"
    echo.write_text(echo.read_text().replace("decision := decide(input)", "decision := crash"))
    with pytest.raises(BundleError, match="engine died"):
        store.activate_path(str(bad))
    assert store.active().revision == "good"
    assert "engine died" in store.status().last_error


def test_test_modules_are_not_served(tmp_path: Path) -> None:
    """A crashing *_test.rego is the author's business (mcp-authz test reports it); the served
    bundle leaves test modules out, so it activates even without the child precheck."""
    bundle = _bundle(tmp_path, "with-tests", {"mcp/authz/crash_test.rego": CRASHING_RULE.replace(
        "package mcp.authz", "package mcp.authz_test")})
    policy = PolicyStore("mcp/authz/decision").activate(load_bundle(bundle))
    assert policy.revision == "with-tests"
    assert not any(name.endswith("_test.rego") for name in policy.contents.modules)
