"""``make demo``: the decision service, the example MCP server and the gateway in front of the real
filesystem reference server, then a scripted client session (the official `mcp` client) showing
allowed, denied and approval-required calls. Everything runs on loopback and stops at the end.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_authz import devstack
from mcp_authz.integrations.mcp import APPROVAL_META_KEY, DECISION_META_KEY

GATEWAY = "https://mcp.example.com/gateway"


async def step(url: str, token: str, title: str, tool: str | None = None,
               arguments: dict[str, Any] | None = None,
               approvals: Sequence[str] = ()) -> dict[str, Any]:
    """One scripted call; prints what happened and returns the deny details (if any)."""
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            tools = [t.name for t in (await client.list_tools()).tools]
            if tool is None:
                print(f"\n== {title}\n   visible tools: {', '.join(tools) or '(none)'}")
                return {}
            meta = {APPROVAL_META_KEY: list(approvals)} if approvals else None
            result = await client.call_tool(tool, arguments or {}, meta=meta)
    print(f"\n== {title}\n   {tool}({arguments})")
    if not result.is_error:
        body = "".join(getattr(block, "text", "") for block in result.content)
        print(f"   ALLOWED: {' '.join(body.split())[:160]}")
        return {}
    details = (result.meta or {}).get(DECISION_META_KEY, {})
    print(f"   DENIED [{details.get('reason')}]: {details.get('message')}")
    if "scope" in details:
        print(f"   step-up: ask the authorization server for scope {details['scope']!r}")
    if "approval" in details:
        print(f"   approval digest: {details['approval']['digest']}")
    return details


async def session(example: str, gateway: str, ids: devstack.DevIdentity) -> None:
    alice = ids.token("alice", "acme", ("files:read", "sql:read"))
    bob = ids.token("bob", "acme", ("files:read", "files:write"))
    await step(example, alice, "alice (acme, read scopes) lists the example server's tools")
    await step(example, alice, "alice reads a file in her sandbox", "read_file",
               {"path": "sandbox/acme/notes.txt"})
    await step(example, alice, "alice tries to escape the sandbox", "read_file",
               {"path": "sandbox/acme/../globex/secrets.txt"})
    await step(example, alice, "alice tries another tenant's data", "read_file",
               {"path": "sandbox/globex/secrets.txt"})
    await step(example, alice, "alice runs a read-only query", "sql_query",
               {"query": "SELECT name, plan FROM customers WHERE tenant = 'acme'"})
    await step(example, alice, "alice tries to change a row", "sql_query",
               {"query": "UPDATE customers SET plan = 'free'"})
    await step(example, alice, "alice tries to write without the write scope", "write_file",
               {"path": "sandbox/acme/notes.txt", "content": "x"})
    arguments = {"path": "sandbox/acme/scratch.txt"}
    details = await step(example, bob, "bob deletes a file: destructive, needs approval",
                         "delete_file", arguments)
    approval = ids.approval("carol", details["approval"]["digest"])
    await step(example, bob, "bob retries with carol's approval (role approver)",
               "delete_file", arguments, [approval])
    await step(example, bob, "bob reuses that approval for another file", "delete_file",
               {"path": "sandbox/acme/notes.txt"}, [approval])
    alice_gw = ids.token("alice", "acme", ("files:read",), audience=GATEWAY)
    await step(gateway, alice_gw, "alice lists the filesystem server's tools via the gateway")
    await step(gateway, alice_gw, "alice reads through the gateway", "read_text_file",
               {"path": "sandbox/acme/readme.txt"})
    await step(gateway, alice_gw, "alice tries another tenant's folder via the gateway",
               "list_directory", {"path": "sandbox/globex"})


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="mcp-authz-demo-") as tmp:
        root = Path(tmp)
        logs = root / "logs"
        logs.mkdir()
        config, ids = devstack.dev_setup(root / "dev")
        files = root / "files"
        for tenant in ("acme", "globex"):
            (files / "sandbox" / tenant).mkdir(parents=True)
            (files / "sandbox" / tenant / "readme.txt").write_text(f"{tenant}'s shared files\n")
        processes: list[devstack.Process] = []
        try:
            service, target = devstack.start_service(config, logs)
            processes.append(service)
            example = devstack.start_example(root / "example", target, logs)
            processes.append(example)
            gateway_config = devstack.write_gateway_config(
                root / "gateway.yaml", authz=target, resource=GATEWAY,
                issuer="https://dev-issuer.mcp-authz.local", tenant="acme",
                upstreams=[devstack.filesystem_upstream("files", files)])
            gateway = devstack.start_gateway(gateway_config, logs)
            processes.append(gateway)
            print(f"decision service {target}, example server {example.url}/mcp, "
                  f"gateway {gateway.url}/mcp (logs in {logs})")
            anyio.run(session, example.url + "/mcp", gateway.url + "/mcp", ids)
        finally:
            for process in reversed(processes):
                process.stop()


if __name__ == "__main__":
    main()
