"""Integrations with MCP servers: middleware for `mcp` SDK servers (``integrations.mcp``) and the
obligation enforcement both it and the gateway use (``integrations.obligations``)."""
