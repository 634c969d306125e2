"""The policy author toolkit: Rego unit tests and decision fixtures (``mcp-authz test``), lint
for regopy's differences from OPA (``mcp-authz check``), and the OPA cross-check.

Modules: ``runner`` (collect and run), ``units`` (Rego tests in child processes, ``engine_worker``),
``fixtures`` (decision cases), ``opa`` (cross-check), ``lint`` (check's warnings), ``report``.
Nothing is imported here: the test child process imports this package and must start fast.
"""
