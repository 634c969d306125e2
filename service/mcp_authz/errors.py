"""One error tree for the whole service.

    MCPAuthzError (code)
    ├── ConfigError            the config file or environment is invalid (CLI exit 2)
    ├── RequestError           a malformed request: INVALID_ARGUMENT, names the field
    │   └── LimitExceeded      a configured limit was hit: names the limit
    ├── DeadlineExceeded       the call's deadline passed before a decision: DEADLINE_EXCEEDED
    ├── NoPolicyError          no active policy: UNAVAILABLE
    ├── BundleError            a bundle failed to read, verify or compile (file:line)
    ├── PolicyError            evaluation failed or the output broke the contract
    └── IdentityError          a token was refused; ``code`` is the deny reason code

Callers see ``str(error)``: a message that names what is wrong and never holds a token.
Too many requests in flight is RESOURCE_EXHAUSTED from grpc itself
(``server.max_concurrent_requests``).
``GRPC_STATUS`` maps each class to the status a servicer returns; it is applied in one place
(``server.py``). ``IdentityError`` and ``PolicyError`` never become a status: they become a deny.
"""

from __future__ import annotations

import grpc


class MCPAuthzError(Exception):
    """Base of every error this package raises on purpose."""

    code = "internal"


class ConfigError(MCPAuthzError):
    """The configuration is invalid; ``problems`` lists every problem with its YAML path."""

    code = "config_invalid"

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


class RequestError(MCPAuthzError):
    """A request the service cannot decide because it is malformed."""

    code = "invalid_request"

    def __init__(self, field: str, problem: str):
        self.field = field
        super().__init__(f"{field}: {problem}")


class LimitExceeded(RequestError):
    """A request over one of the configured limits."""

    code = "limit_exceeded"

    def __init__(self, field: str, limit: str, value: int):
        self.limit = limit
        super().__init__(field, f"exceeds limits.{limit} ({value})")


class DeadlineExceeded(MCPAuthzError):
    """The call's deadline (the caller's, or ``limits.default_deadline_ms``) has passed."""

    code = "deadline_exceeded"


class NoPolicyError(MCPAuthzError):
    code = "no_policy"


class BundleError(MCPAuthzError):
    """A bundle that cannot be activated. The message starts with the file it concerns."""

    code = "bundle_invalid"


class PolicyError(MCPAuthzError):
    code = "policy_error"


class IdentityError(MCPAuthzError):
    """A token was refused; ``code`` is one of the stable deny reason codes."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


GRPC_STATUS: dict[type[MCPAuthzError], grpc.StatusCode] = {
    RequestError: grpc.StatusCode.INVALID_ARGUMENT,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    NoPolicyError: grpc.StatusCode.UNAVAILABLE,
}


def grpc_status_for(error: MCPAuthzError) -> grpc.StatusCode:
    """The gRPC status for an error; anything unmapped is INTERNAL."""
    for cls in type(error).__mro__:
        if cls in GRPC_STATUS:
            return GRPC_STATUS[cls]
    return grpc.StatusCode.INTERNAL
