"""AuthZEN Authorization API 1.0 requests as DecisionRequests, and decisions back.

Two ways to read an evaluation (``subject``, ``action``, ``resource``, ``context``):

- MCP mapping (the draft COAZ MCP profile): ``action.name`` is ``tools/call`` with
  ``resource {type: "tool", id: <tool name>, properties: <arguments>}``; likewise
  ``resources/read`` (``type: "resource"``, ``id``: the URI) and ``prompts/get``
  (``type: "prompt"``). Any other action is decided as a tool named after the action, with
  ``resource.properties`` as its arguments.
- Where the subject comes from (``subject_mode``): ``token`` verifies the end user's access
  token from ``subject.properties.token`` (``subject.id`` is informational); ``trusted_id`` takes
  ``subject.id`` as the authenticated PEP asserts it, through ``TrustedSubjectVerifier``, and is
  only ever wired to its own bundle (docs/gateways.md).

The whole AuthZEN request (without tokens) is handed to the policy as
``input.context.authzen``; ``context.tenant``, ``context.server`` and
``context.approval_tokens`` name the tenant, the MCP server and approvals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..decisions import DecisionPath
from ..errors import IdentityError, LimitExceeded, RequestError
from ..model import Decision, DecisionRequest, Subject
from . import outcomes

SEMANTICS = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")
MCP_RESOURCE_TYPES = {"tools/call": "tool", "resources/read": "resource", "prompts/get": "prompt"}
TRUSTED_ISSUER = "urn:mcp-authz:authzen-pep"
_ENTITIES = ("subject", "action", "resource", "context")


@dataclass(frozen=True)
class Target:
    """Defaults for what an AuthZEN request does not say, and where its subject comes from."""

    subject_mode: str
    tenant: str
    server_id: str
    server_resource: str


class TrustedSubjectVerifier:
    """``trusted_id`` mode: the subject is the id an authenticated PEP asserts, nothing more.

    No scopes, roles or claims come from the request: the policy of the trusted bundle looks the
    subject up in its own data. The "token" handed in is the AuthZEN ``subject.id``."""

    def __init__(self, tenant: str):
        self._tenant = tenant

    def verify(self, token: str, audience: str, now: float) -> Subject:
        if not token:
            raise IdentityError("token_missing", "subject.id is required")
        return Subject(id=token, tenant=self._tenant, issuer=TRUSTED_ISSUER, client_id="",
                       scopes=(), roles=(), groups=(), claims={}, issued_at=int(now),
                       expires_at=int(now), jti="")


def to_request(evaluation: Mapping[str, Any], target: Target, request_id: str = "",
               where: str = "") -> DecisionRequest:
    """One AuthZEN evaluation (defaults already applied) as a DecisionRequest."""
    subject = _entity(evaluation, "subject", where, ("type", "id"))
    action = _entity(evaluation, "action", where, ("name",))
    resource = _entity(evaluation, "resource", where, ("type", "id"))
    context = evaluation.get("context", {})
    if not isinstance(context, dict):
        raise RequestError(f"{where}context", "must be an object")
    subject_properties = _properties(subject, f"{where}subject")
    if target.subject_mode == "trusted_id":
        credential = subject["id"]
    else:
        credential = subject_properties.get("token", "")
        if not isinstance(credential, str):
            raise RequestError(f"{where}subject.properties.token", "must be a string")
    server = context.get("server", {})
    if not isinstance(server, dict):
        raise RequestError(f"{where}context.server", "must be an object")
    approvals = context.get("approval_tokens", [])
    if not isinstance(approvals, list) or not all(isinstance(a, str) for a in approvals):
        raise RequestError(f"{where}context.approval_tokens", "must be a list of strings")
    visible_subject = {**subject, "properties": {k: v for k, v in subject_properties.items()
                                                 if k != "token"}}
    return DecisionRequest(
        tenant=_text(context, "tenant", f"{where}context.") or target.tenant,
        server_resource=_text(server, "resource", f"{where}context.server.")
        or target.server_resource,
        server_id=_text(server, "id", f"{where}context.server.") or target.server_id,
        bearer_token=credential, request_id=request_id, approval_tokens=tuple(approvals),
        context={"authzen": {"subject": visible_subject, "action": action, "resource": resource,
                             "context": {k: v for k, v in context.items()
                                         if k != "approval_tokens"}}},
        **_target_fields(action["name"], resource, where))


def evaluate(path: DecisionPath, document: Any, request_id: str = "", *,
             target: Target) -> dict[str, Any]:
    """POST /access/v1/evaluation: one decision; RequestError (400) for a malformed request."""
    if not isinstance(document, dict):
        raise RequestError("request", "must be a JSON object")
    return response(path.decide(to_request(document, target, request_id)))


def evaluate_many(path: DecisionPath, document: Any, request_id: str = "", *, target: Target,
                  max_batch: int) -> dict[str, Any]:
    """POST /access/v1/evaluations: defaults, ``evaluations[]`` and the three semantics."""
    if not isinstance(document, dict):
        raise RequestError("request", "must be a JSON object")
    items = document.get("evaluations")
    if items is None or items == []:
        return evaluate(path, {k: document[k] for k in _ENTITIES if k in document}, request_id,
                        target=target)
    if not isinstance(items, list):
        raise RequestError("evaluations", "must be an array")
    if len(items) > max_batch:
        raise LimitExceeded("evaluations", "max_batch", max_batch)
    semantic = _semantic(document.get("options", {}))
    defaults = {k: document[k] for k in _ENTITIES if k in document}
    answers = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise RequestError(f"evaluations[{i}]", "must be an object")
        answer = _one(path, {**defaults, **item}, target, request_id, f"evaluations[{i}].")
        answers.append(answer)
        if (semantic == "deny_on_first_deny" and not answer["decision"]) or (
                semantic == "permit_on_first_permit" and answer["decision"]):
            break
    return {"evaluations": answers}


def response(decision: Decision) -> dict[str, Any]:
    """An AuthZEN decision with reasons and obligations in ``context``."""
    context: dict[str, Any] = {"decision_id": decision.decision_id,
                               "policy_revision": decision.policy_revision,
                               "obligations": outcomes.obligations_json(decision.obligations)}
    if not decision.allow:
        context["reasons"] = outcomes.reasons_json(decision.reasons)
        if decision.reasons:
            first = decision.reasons[0]
            context["reason_admin"] = {"en": f"{first.code}: {first.message}"}
    return {"decision": decision.allow, "context": context}


def _one(path: DecisionPath, evaluation: dict[str, Any], target: Target, request_id: str,
         where: str) -> dict[str, Any]:
    """One item of a batch: a malformed item is a deny carrying its error, per the spec."""
    try:
        return response(path.decide(to_request(evaluation, target, request_id, where)))
    except RequestError as exc:
        return {"decision": False, "context": {"error": {"status": 400, "message": str(exc)}}}


def _semantic(options: Any) -> str:
    if not isinstance(options, dict):
        raise RequestError("options", "must be an object")
    semantic = options.get("evaluations_semantic", "execute_all")
    if semantic not in SEMANTICS:
        raise RequestError("options.evaluations_semantic", f"must be one of {', '.join(SEMANTICS)}")
    return semantic


def _target_fields(action: str, resource: Mapping[str, Any], where: str) -> dict[str, Any]:
    properties = _properties(resource, f"{where}resource")
    expected = MCP_RESOURCE_TYPES.get(action)
    if expected is None:
        return {"method": "tools/call", "tool_name": action, "tool_arguments": properties}
    if resource["type"] != expected:
        raise RequestError(f"{where}resource.type", f"must be {expected!r} for action {action!r}")
    if action == "resources/read":
        return {"method": action, "resource_uri": resource["id"]}
    if action == "prompts/get":
        return {"method": action, "prompt_name": resource["id"], "prompt_arguments": properties}
    return {"method": action, "tool_name": resource["id"], "tool_arguments": properties}


def _entity(document: Mapping[str, Any], name: str, where: str,
            required: tuple[str, ...]) -> dict[str, Any]:
    value = document.get(name)
    if not isinstance(value, dict):
        raise RequestError(f"{where}{name}", "required (an object)")
    for key in required:
        if not isinstance(value.get(key), str) or not value[key]:
            raise RequestError(f"{where}{name}.{key}", "required (a non-empty string)")
    return value


def _properties(entity: Mapping[str, Any], where: str) -> dict[str, Any]:
    properties = entity.get("properties", {})
    if not isinstance(properties, dict):
        raise RequestError(f"{where}.properties", "must be an object")
    return properties


def _text(document: Mapping[str, Any], key: str, where: str) -> str:
    value = document.get(key, "")
    if not isinstance(value, str):
        raise RequestError(f"{where}{key}", "must be a string")
    return value
