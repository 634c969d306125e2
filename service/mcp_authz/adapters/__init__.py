"""Gateway protocol adapters: Envoy ext_authz v3, agentgateway ExtMcp, AuthZEN 1.0 over HTTP.

Each adapter only translates its protocol into ``DecisionRequest`` and a ``Decision`` back; the
decision itself (identity, policy, obligations, decision log, metrics) is ``DecisionPath``'s.

    mcp_messages.py   JSON-RPC / MCP request bodies -> DecisionRequest fields (shared)
    outcomes.py       Decision -> reason codes, JSON-RPC errors, WWW-Authenticate (shared)
    results.py        apply redact / max_result_bytes obligations to a result (ExtMcp)
    ext_authz.py      envoy.service.auth.v3.Authorization/Check
    ext_mcp.py        agentgateway.dev.ext_mcp.ExtMcp
    authzen.py        AuthZEN requests <-> DecisionRequest, batch semantics
    authzen_http.py   the AuthZEN HTTP server and PEP authentication
    components.py     the adapters as App components (own listener or the native server)
"""
