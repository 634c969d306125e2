"""The one decision path: request -> verified identity -> input document -> policy -> decision.

Every adapter (native gRPC, ext_authz, ExtMcp, AuthZEN, the CLI, the policy test runner) calls
``DecisionPath.decide``. It never raises for a token or policy problem: those are denies with a
reason code. It raises ``RequestError`` for a malformed request and ``NoPolicyError`` when no
policy is active, which adapters map to their protocol's status.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from . import evalguard
from .config import LimitsConfig
from .decision_cache import DecisionCache
from .engine import CompiledPolicy, PolicyResult
from .errors import IdentityError, LimitExceeded, NoPolicyError, PolicyError, RequestError
from .evalguard import EvaluationTimeout
from .identity import ApprovalVerifier, TokenVerifier, request_digest
from .model import SUPPORTED_METHODS, Decision, DecisionRequest, Reason, Subject
from .values import check_string, normalize

log = logging.getLogger(__name__)

TOOLS_LIST = "tools/list"


class PolicySource(Protocol):
    def active(self) -> CompiledPolicy | None: ...


@dataclass(frozen=True)
class DecisionRecord:
    """Everything observers (decision log, metrics) may see about one decision. No tokens."""

    request: DecisionRequest
    decision: Decision
    input: Mapping[str, Any] | None
    subject: Subject | None
    engine_seconds: float
    total_seconds: float
    #: the decision cache's part: "hit", "miss", "bypass", or "" (no cache, or no evaluation)
    cache: str = ""
    #: the exact JSON text the engine was given for ``input`` ("" when nothing was evaluated)
    input_json: str = ""
    #: CPU time the engine spent on this decision (0 on a cache hit or with no evaluation)
    engine_cpu_seconds: float = 0.0


class DecisionObserver(Protocol):
    def observe(self, record: DecisionRecord) -> None: ...


@dataclass(frozen=True)
class ToolVisibility:
    name: str
    allowed: bool
    reasons: tuple[Reason, ...]


class DecisionPath:
    """Decides requests on whichever policy revision is active when each request starts."""

    def __init__(self, policies: PolicySource, verifier: TokenVerifier,
                 approvals: ApprovalVerifier | None, limits: LimitsConfig,
                 clock: Callable[[], int] = time.time_ns,
                 observers: Sequence[DecisionObserver] = (), cache: DecisionCache | None = None):
        self._policies = policies
        self._cache = cache
        self._verifier = verifier
        self._approvals = approvals
        self._limits = limits
        self._clock = clock
        self._observers = list(observers)

    def add_observer(self, observer: DecisionObserver) -> None:
        self._observers.append(observer)

    def decide(self, request: DecisionRequest) -> Decision:
        started = time.perf_counter()
        request = validate_request(request, self._limits)
        policy = self._require_policy()
        now_ns = self._clock()
        subject, problem = self._identify(request, now_ns)
        return self._decide_identified(request, policy, now_ns, subject, problem, started)

    def _decide_identified(self, request: DecisionRequest, policy: CompiledPolicy, now_ns: int,
                           subject: Subject | None, problem: Reason | None,
                           started: float) -> Decision:
        """Evaluate (unless identity already failed), then tell the observers."""
        document: dict[str, Any] | None = None
        engine_seconds = engine_cpu = 0.0
        cached = input_json = ""
        if problem is not None:
            result = _deny(problem)
        else:
            assert subject is not None
            document = self.input_document(request, subject, policy, now_ns)
            evalguard.engine_cpu_taken()  # what an earlier call on this thread left uncounted
            engine_started = time.perf_counter()
            result, cached, input_json = self._evaluate(policy, document, subject, bool(
                request.approval_tokens))
            engine_seconds = time.perf_counter() - engine_started
            engine_cpu = evalguard.engine_cpu_taken()
        decision = _decision(request.request_id, result, policy.revision, now_ns)
        self._notify(DecisionRecord(request, decision, document, subject, engine_seconds,
                                    time.perf_counter() - started, cached, input_json,
                                    engine_cpu))
        return decision

    def filter_tools(self, request: DecisionRequest,
                     tools: Sequence[tuple[str, Mapping[str, bool]]]) -> tuple[
                         list[ToolVisibility], str]:
        """Which of ``tools`` (name, annotations) the caller may see: one decision per tool
        with method ``tools/list`` (the policy decides visibility without arguments), each
        logged and counted like any other decision."""
        if len(tools) > self._limits.max_tools:
            raise LimitExceeded("tools", "max_tools", self._limits.max_tools)
        for i, (name, _) in enumerate(tools):
            if not name:
                raise RequestError(f"tools[{i}].name", "required")
            check_string(name, f"tools[{i}].name", self._limits)
        base = validate_request(request, self._limits, method=TOOLS_LIST)
        policy = self._require_policy()
        now_ns = self._clock()
        subject, problem = self._identify(base, now_ns)
        result = []
        for name, hints in tools:
            one = dataclasses.replace(base, tool_name=name, tool_annotations=dict(hints),
                                      approval_tokens=())
            decision = self._decide_identified(one, policy, now_ns, subject, problem,
                                               time.perf_counter())
            result.append(ToolVisibility(name, decision.allow, decision.reasons))
        return result, policy.revision

    def _require_policy(self) -> CompiledPolicy:
        policy = self._policies.active()
        if policy is None:
            raise NoPolicyError("no active policy")
        return policy

    def _identify(self, request: DecisionRequest,
                  now_ns: int) -> tuple[Subject | None, Reason | None]:
        try:
            return self._verifier.verify(request.bearer_token, request.server_resource,
                                         now_ns / 1e9), None
        except IdentityError as exc:
            return None, Reason(exc.code, str(exc))

    def input_document(self, request: DecisionRequest, subject: Subject,
                       policy: CompiledPolicy, now_ns: int) -> dict[str, Any]:
        """The input the policy sees: verified identity plus the request's data, never a token."""
        target, target_args = digest_target(request)
        digest = request_digest(request.tenant, subject.id, request.server_resource,
                                request.method, target, target_args)
        approvals, approval_errors = [], []
        if request.approval_tokens:
            if self._approvals is None:
                approval_errors = [{"code": "approval_invalid",
                                    "message": "no approval key is configured"}]
            else:
                verified, approval_errors = self._approvals.verify_all(
                    request.approval_tokens, digest, now_ns / 1e9)
                approvals = [a.to_input() for a in verified]
        document: dict[str, Any] = {
            "subject": subject.to_input(),
            "tenant": request.tenant,
            "server": {"id": request.server_id, "resource": request.server_resource},
            "client": {"id": request.client_id, "name": request.client_name,
                       "version": request.client_version},
            "method": request.method,
            "tool": {"name": request.tool_name, "arguments": dict(request.tool_arguments),
                     "annotations": dict(request.tool_annotations)},
            "resource": {"uri": request.resource_uri},
            "prompt": {"name": request.prompt_name, "arguments": dict(request.prompt_arguments)},
            "approvals": approvals,
            "approval_errors": approval_errors,
            "request_digest": digest,
            "context": dict(request.context),
            "now_ns": now_ns,
        }
        document["lookup"] = policy.lookups(document)
        return document

    def _evaluate(self, policy: CompiledPolicy, document: dict[str, Any], subject: Subject,
                  approvals: bool) -> tuple[PolicyResult, str, str]:
        """The policy's result for ``document`` (through the decision cache when it is on and
        the request carries no approval tokens), the cache's part in it, and the input text."""
        if self._cache is None or approvals:
            input_json = encode_input(document)
            return _evaluate(policy, input_json), "", input_json
        now_ns = document["now_ns"]
        key_json = encode_input({k: v for k, v in document.items() if k != "now_ns"})
        input_json = f'{key_json[:-1]},"now_ns":{now_ns}}}'
        try:
            result, cached = self._cache.decide(policy, key_json, input_json, now_ns,
                                                subject.expires_at * 1_000_000_000,
                                                policy.evaluate)
        except PolicyError as exc:
            return _policy_error(policy, exc), "", input_json
        return result, cached, input_json

    def _notify(self, record: DecisionRecord) -> None:
        for observer in self._observers:
            try:
                observer.observe(record)
            except Exception:  # an observer never fails a decision
                log.exception("decision observer %s failed", type(observer).__name__)


def digest_target(request: DecisionRequest) -> tuple[str, Mapping[str, Any]]:
    """What an approval names: the tool, the prompt or the resource, with its arguments."""
    if request.method == "prompts/get":
        return request.prompt_name, request.prompt_arguments
    if request.method == "resources/read":
        return request.resource_uri, {}
    return request.tool_name, request.tool_arguments


def _evaluate(policy: CompiledPolicy, input_json: str) -> PolicyResult:
    try:
        return policy.evaluate(input_json)
    except PolicyError as exc:
        return _policy_error(policy, exc)


def _policy_error(policy: CompiledPolicy, error: PolicyError) -> PolicyResult:
    log.warning("policy error on revision %s: %s", policy.revision, error)
    if isinstance(error, EvaluationTimeout):  # names the limit that was hit
        return _deny(Reason("policy_error", str(error)))
    return _deny(Reason("policy_error", "the policy could not decide this request"))


def encode_input(document: Mapping[str, Any]) -> str:
    """JSON text for the engine. ``json.dumps`` escapes quotes, backslashes and control
    characters, so caller strings stay strings; non-ASCII is kept as UTF-8 (DESIGN.md)."""
    return json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _deny(reason: Reason) -> PolicyResult:
    return PolicyResult(False, (reason,), ())


def _decision(request_id: str, result: PolicyResult, revision: str, now_ns: int) -> Decision:
    return Decision(decision_id=str(uuid.uuid4()), request_id=request_id, allow=result.allow,
                    reasons=result.reasons, obligations=result.obligations,
                    policy_revision=revision, decided_at_ns=now_ns)


_REQUIRED_BY_METHOD = {
    "tools/call": ("tool_name", "tool.name"),
    "resources/read": ("resource_uri", "resource_uri"),
    "prompts/get": ("prompt_name", "prompt.name"),
}


def validate_request(request: DecisionRequest, limits: LimitsConfig,
                     method: str | None = None) -> DecisionRequest:
    """Check every field and limit; returns the request with normalized values.

    Raises RequestError naming the field. ``method`` overrides the request's (FilterTools).
    """
    allowed = SUPPORTED_METHODS if method is None else (method,)
    method = method or request.method
    if not method:
        raise RequestError("method", "required")
    if method not in allowed:
        raise RequestError("method", f"must be one of {', '.join(allowed)}")
    if method in _REQUIRED_BY_METHOD:
        attribute, field = _REQUIRED_BY_METHOD[method]
        if not getattr(request, attribute):
            raise RequestError(field, f"required for {method}")
    if not request.tenant:
        raise RequestError("tenant", "required")
    if not request.server_resource:
        raise RequestError("server.resource", "required (the audience tokens must carry)")
    for name in ("request_id", "tenant", "server_id", "server_resource", "client_id",
                 "client_name", "client_version", "tool_name", "resource_uri", "prompt_name",
                 "session_id"):
        check_string(getattr(request, name), name, limits)
    if len(request.approval_tokens) > limits.max_approval_tokens:
        raise LimitExceeded("approval_tokens", "max_approval_tokens", limits.max_approval_tokens)
    arguments = normalize(dict(request.tool_arguments), "tool.arguments", limits)
    prompt_arguments = normalize(dict(request.prompt_arguments), "prompt.arguments", limits)
    context = normalize(dict(request.context), "context", limits)
    size = len(encode_input([arguments, prompt_arguments, context]).encode("utf-8"))
    if size > limits.max_arguments_bytes:
        raise LimitExceeded("tool.arguments", "max_arguments_bytes", limits.max_arguments_bytes)
    annotations = {k: v for k, v in request.tool_annotations.items() if isinstance(v, bool)}
    return dataclasses.replace(request, method=method, tool_arguments=arguments,
                    prompt_arguments=prompt_arguments, context=context,
                    tool_annotations=annotations)


