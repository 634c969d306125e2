"""``mcp-authz gateway``: put any MCP server behind the decision service, with no change to it."""

from .app import build_gateway
from .config import GatewayConfig, load_gateway_config

__all__ = ["GatewayConfig", "build_gateway", "load_gateway_config"]
