"""AuthZEN Authorization API 1.0 over real HTTP: the 43 interop Todo decisions (trusted_id mode on
examples/authzen-todo), the three evaluations semantics, PEP authentication and bad input."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from adapter_support import (
    PEP_SECRET,
    Running,
    all_adapters,
    authzen_get,
    authzen_post,
    running_app,
)

from mcp_authz.config import load_config
from mcp_authz.errors import ConfigError
from support import JsonServer, write_config

RICK = "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"
MORTY = "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"
BETH = "CiRmZDM2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"


def _interop_file() -> dict[str, Any]:
    """The working group's decisions (tests/data/authzen/README.md says where they come from)."""
    path = Path(__file__).parent / "data" / "authzen" / "todo-decisions-1_0-02.json"
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory,
            jwks_server: JsonServer) -> Iterator[Running]:
    adapters = all_adapters("trusted_id")
    with running_app(tmp_path_factory.mktemp("authzen"), jwks_server,
                     adapters={"authzen": adapters["authzen"]}) as app:
        yield app


@pytest.fixture(scope="module")
def port(running: Running) -> int:
    return running.authzen_port


def _todo(subject: str, action: str, owner: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {"type": "todo", "id": "t-1"}
    if owner:
        resource["properties"] = {"ownerID": owner}
    return {"subject": {"type": "user", "id": subject}, "action": {"name": action},
            "resource": resource}


@pytest.mark.requirement("authzen-interop-todo")
def test_all_interop_decisions_over_http(port: int) -> None:
    cases = _interop_file()
    assert len(cases["evaluation"]) + len(cases["evaluations"]) == 43
    wrong = []
    for i, case in enumerate(cases["evaluation"]):
        status, _, body = authzen_post(port, "/access/v1/evaluation", case["request"])
        if status != 200 or body["decision"] is not case["expected"]:
            wrong.append((i, case["request"], status, body))
    for i, case in enumerate(cases["evaluations"]):
        status, _, body = authzen_post(port, "/access/v1/evaluations", case["request"])
        got = [{"decision": e["decision"]} for e in body["evaluations"]] if status == 200 else None
        if got != case["expected"]:
            wrong.append((f"batch {i}", case["request"], status, body))
    assert wrong == []


def test_deny_carries_reasons_and_decision_id_in_context(port: int) -> None:
    status, _, body = authzen_post(port, "/access/v1/evaluation",
                                   _todo(BETH, "can_create_todo"))
    assert status == 200 and body["decision"] is False
    context = body["context"]
    assert context["reasons"][0]["code"] == "role_missing"
    assert context["reason_admin"]["en"].startswith("role_missing: ")
    assert context["decision_id"] and context["policy_revision"] == "authzen-todo-2026-11-28.1"
    status, _, body = authzen_post(port, "/access/v1/evaluation",
                                   _todo("unknown-pid", "can_read_todos"))
    assert body["decision"] is False
    assert body["context"]["reasons"][0]["code"] == "tenant_mismatch"


def _owned(todo: str, owner: str) -> dict[str, Any]:
    return {"resource": {"type": "todo", "id": todo, "properties": {"ownerID": owner}}}


def _batch(semantic: str | None) -> dict[str, Any]:
    document: dict[str, Any] = {
        "subject": {"type": "user", "id": MORTY}, "action": {"name": "can_update_todo"},
        "evaluations": [_owned("1", "morty@the-citadel.com"), _owned("2", "rick@the-citadel.com"),
                        _owned("3", "morty@the-citadel.com")]}
    if semantic:
        document["options"] = {"evaluations_semantic": semantic}
    return document


@pytest.mark.requirement("authzen-evaluations-semantics")
@pytest.mark.parametrize(("semantic", "decisions"), [
    (None, [True, False, True]),
    ("execute_all", [True, False, True]),
    ("deny_on_first_deny", [True, False]),
    ("permit_on_first_permit", [True]),
])
def test_evaluations_semantics(port: int, semantic: str | None, decisions: list[bool]) -> None:
    status, _, body = authzen_post(port, "/access/v1/evaluations", _batch(semantic))
    assert status == 200
    assert [e["decision"] for e in body["evaluations"]] == decisions


def test_permit_on_first_permit_runs_past_denies(port: int) -> None:
    document = _batch("permit_on_first_permit")
    document["evaluations"] = document["evaluations"][1:]
    status, _, body = authzen_post(port, "/access/v1/evaluations", document)
    assert [e["decision"] for e in body["evaluations"]] == [False, True]


def test_item_values_override_defaults_and_bad_items_deny_alone(port: int) -> None:
    document = {"subject": {"type": "user", "id": BETH}, "action": {"name": "can_read_todos"},
                "resource": {"type": "todo", "id": "x"},
                "evaluations": [{}, {"subject": {"type": "user", "id": RICK},
                                     "action": {"name": "can_delete_todo"}},
                                {"action": {"name": ""}}]}
    status, _, body = authzen_post(port, "/access/v1/evaluations", document)
    assert status == 200
    first, second, third = body["evaluations"]
    assert first["decision"] is True and second["decision"] is True
    assert third["decision"] is False
    assert third["context"]["error"]["status"] == 400
    assert "evaluations[2].action.name" in third["context"]["error"]["message"]


def test_evaluations_without_array_is_a_single_evaluation(port: int) -> None:
    status, _, body = authzen_post(port, "/access/v1/evaluations",
                                   _todo(RICK, "can_create_todo"))
    assert status == 200 and body["decision"] is True


@pytest.mark.requirement("authzen-pep-authenticated")
@pytest.mark.parametrize("secret", [None, "wrong-secret", ""])
def test_pep_must_authenticate(port: int, secret: str | None) -> None:
    status, headers, body = authzen_post(port, "/access/v1/evaluation",
                                         _todo(RICK, "can_read_todos"), secret=secret)
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")
    assert "decision" not in body


def test_request_id_is_echoed(port: int) -> None:
    status, headers, _ = authzen_post(port, "/access/v1/evaluation",
                                      _todo(RICK, "can_read_todos"),
                                      headers={"X-Request-ID": "pep-req-42"})
    assert status == 200 and headers["x-request-id"] == "pep-req-42"
    status, headers, _ = authzen_post(port, "/access/v1/evaluation", b"{",
                                      headers={"X-Request-ID": "pep-req-43"})
    assert status == 400 and headers["x-request-id"] == "pep-req-43"


def test_well_known_configuration(port: int) -> None:
    status, _, body = authzen_get(port, "/.well-known/authzen-configuration")
    assert status == 200
    assert body == {"policy_decision_point": "https://pdp.example.com",
                    "access_evaluation_endpoint": "https://pdp.example.com/access/v1/evaluation",
                    "access_evaluations_endpoint":
                        "https://pdp.example.com/access/v1/evaluations"}


@pytest.mark.requirement("authzen-bad-input-400")
@pytest.mark.parametrize(("path", "document", "status", "says"), [
    ("/access/v1/evaluation", b"{not json", 400, "body: is not valid JSON (line 1"),
    ("/access/v1/evaluation", b"\xff\xfe", 400, "not UTF-8"),
    ("/access/v1/evaluation", [1, 2], 400, "request: must be a JSON object"),
    ("/access/v1/evaluation", {"action": {"name": "can_read_todos"},
                               "resource": {"type": "todo", "id": "1"}}, 400, "subject"),
    ("/access/v1/evaluation", {**_todo(RICK, "can_read_todos"), "context": []}, 400,
     "context: must be an object"),
    ("/access/v1/evaluations", {**_batch(None), "options": {"evaluations_semantic": "any"}},
     400, "options.evaluations_semantic"),
    ("/access/v1/evaluations", {**_batch(None), "evaluations": "all"}, 400, "evaluations"),
    ("/access/v1/evaluations", {**_batch(None), "evaluations": [{}] * 129}, 400,
     "limits.max_batch"),
    ("/access/v1/nope", {}, 404, "no endpoint"),
])
def test_invalid_requests_get_a_clear_error(port: int, path: str, document: Any, status: int,
                                            says: str) -> None:
    got, _, body = authzen_post(port, path, document)
    assert got == status
    assert says in body["message"]


def test_oversized_body_is_413_and_the_server_keeps_serving(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /access/v1/evaluation HTTP/1.1\r\nHost: pdp\r\n"
                     b"Authorization: Bearer " + PEP_SECRET.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 99999999\r\n\r\n")
        head = sock.recv(4096).decode()
    assert head.startswith("HTTP/1.1 413")
    status, _, body = authzen_post(port, "/access/v1/evaluation", _todo(RICK, "can_read_todos"))
    assert status == 200 and body["decision"] is True


def test_trusted_mode_requires_its_own_bundle(tmp_path: Path, jwks_server: JsonServer) -> None:
    adapters = all_adapters("trusted_id")
    del adapters["authzen"]["bundle"]
    path = write_config(tmp_path, jwks_server.url("/jwks.json"),
                        jwks_server.url("/approval-jwks.json"),
                        adapters={"authzen": {**adapters["authzen"],
                                              "pep_token_sha256": ["nothex"]}})
    with pytest.raises(ConfigError) as error:
        load_config(str(path))
    problems = "\n".join(error.value.problems)
    assert "adapters.authzen.bundle: required with subject_mode: trusted_id" in problems
    assert "adapters.authzen.pep_token_sha256[0]: expected 64 hex digits" in problems
