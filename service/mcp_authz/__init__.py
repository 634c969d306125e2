"""mcp-authz: authorization decisions for every MCP request."""

__version__ = "0.1.0"
