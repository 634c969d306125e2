"""A small stdio MCP server whose tool list changes while it runs, for the gateway's tests.

``get_current_time`` answers the time and, on its first call, adds ``convert_time`` and tells
the client the tool list changed (``notifications/tools/list_changed`` on a handshake-era
session, a ``subscriptions/listen`` event on a 2026-07-28 one). The names are the time
reference server's, so the default bundle's catalog covers them.

    python upstream_clock.py                 # stdio
    python upstream_clock.py --http PORT     # streamable HTTP on 127.0.0.1:PORT/mcp
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import ToolAnnotations
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

server = MCPServer("clock")


def convert_time(time: str, target_timezone: str) -> str:
    """Convert a time to another timezone (answers UTC only)."""
    return f"{time} in {target_timezone}: {time} UTC"


@server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
async def get_current_time(timezone: str, ctx: Context) -> str:
    """The current time."""
    if "convert_time" not in {tool.name for tool in await server.list_tools()}:
        server.add_tool(convert_time, annotations=ToolAnnotations(
            read_only_hint=True, idempotent_hint=True, open_world_hint=False))
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            await ctx.notify_tools_changed()
        else:
            await ctx.session.send_tool_list_changed()
    return f"{datetime.now(UTC).isoformat()} ({timezone})"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--http"]:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
