"""An example MCP server with realistic tools, authorized by mcp-authz in a few lines.

Tools: read_file, write_file, list_dir and delete_file under ``ROOT/sandbox``; sql_query over a
SQLite database created at start from ``seed.sql``; http_fetch; pay_invoice. The server does only
light checks of its own (paths must stay under the sandbox): what a caller may do is the policy's
call (the default bundle's catalog: tenant path prefixes, scopes, read-only SQL unless the token
has ``sql:write``, allowed hosts, approval for destructive calls, redaction of payment details).

    python examples/mcp_server/server.py --root /tmp/example --authz 127.0.0.1:50051 \
        --tenant acme --resource https://mcp.example.com/files --listen 127.0.0.1:8001

The MCP endpoint is ``/mcp``; a request without a bearer token gets 401 with the RFC 9728
metadata pointer (``/.well-known/oauth-protected-resource/...``).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sqlite3
import urllib.request
from pathlib import Path
from typing import Any

from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations
from pydantic import BaseModel

from mcp_authz.client import AsyncDecisionClient, ClientOptions
from mcp_authz.integrations.mcp import AuthorizationMiddleware, DeferredTokenVerifier
from mcp_authz.integrations.serving import run_app

HERE = Path(__file__).resolve().parent
SEED_FILES = {
    "sandbox/acme/notes.txt": "Quarterly planning notes for acme.\n",
    "sandbox/acme/reports/q3.txt": "Q3 revenue: 1.2M\n",
    "sandbox/acme/scratch.txt": "temporary file\n",
    "sandbox/globex/secrets.txt": "globex internal data\n",
}
READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False)


class Payment(BaseModel):
    invoice_id: str
    amount: float
    status: str
    account_number: str
    card_number: str


class QueryResult(BaseModel):
    columns: list[str]
    rows: list[list[Any]]


def prepare(root: Path) -> Path:
    """Seed the sandbox (files that are missing) and create the database afresh."""
    for relative, text in SEED_FILES.items():
        path = root / relative
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    database = root / "example.db"
    database.unlink(missing_ok=True)
    with sqlite3.connect(database) as connection:
        connection.executescript((HERE / "seed.sql").read_text())
    return database


def build_server(root: Path, authz: AuthorizationMiddleware | None, issuer: str) -> MCPServer:
    sandbox = (root / "sandbox").resolve()
    database = prepare(root)

    def inside(path: str) -> Path:
        """The server's own guard: never outside ``ROOT/sandbox`` (the policy narrows further)."""
        resolved = (root / path).resolve()
        if not resolved.is_relative_to(sandbox):
            raise ValueError("path is outside the sandbox")
        return resolved

    if authz is None:
        server = MCPServer("mcp-authz-example-unprotected")
    else:
        server = MCPServer(
            "mcp-authz-example", token_verifier=DeferredTokenVerifier(),
            auth=AuthSettings(issuer_url=issuer, resource_server_url=authz.resource,
                              validate_token_resource=False),
            middleware=[authz])

    @server.tool(annotations=READ)
    def read_file(path: str) -> str:
        """Read a text file, e.g. sandbox/acme/notes.txt."""
        return inside(path).read_text()

    @server.tool(annotations=READ)
    def list_dir(path: str) -> list[str]:
        """List a directory under the sandbox."""
        return sorted(p.name + ("/" if p.is_dir() else "") for p in inside(path).iterdir())

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True,
                                             idempotent_hint=True, open_world_hint=False))
    def write_file(path: str, content: str) -> str:
        """Create or replace a text file."""
        target = inside(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        return f"wrote {len(content)} characters to {path}"

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True,
                                             idempotent_hint=True, open_world_hint=False))
    def delete_file(path: str) -> str:
        """Delete a file or a directory tree. Destructive: the policy asks for approval."""
        target = inside(path)
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
        return f"deleted {path}"

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    def sql_query(query: str) -> QueryResult:
        """Run one SQL statement on the example database. Read-only unless the policy grants
        the caller sql:write: the policy, not this server, is what keeps it read-only."""
        with sqlite3.connect(database) as connection:
            cursor = connection.execute(query)
            columns = [c[0] for c in cursor.description or []]
            return QueryResult(columns=columns, rows=[list(r) for r in cursor.fetchall()])

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=True))
    def http_fetch(url: str) -> str:
        """Fetch a URL (the policy limits hosts per tenant); at most 64 KiB of text."""
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (policy-checked)
            return response.read(65536).decode("utf-8", "replace")

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True,
                                             open_world_hint=False))
    def pay_invoice(invoice_id: str, amount: float) -> Payment:
        """Pay an invoice. The result carries account details the policy redacts."""
        with sqlite3.connect(database) as connection:
            connection.execute("UPDATE invoices SET status = 'paid' WHERE id = ?", (invoice_id,))
        return Payment(invoice_id=invoice_id, amount=amount, status="paid",
                       account_number="DE89370400440532013000", card_number="4111111111111111")

    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="working directory: sandbox + database")
    parser.add_argument("--authz", default="127.0.0.1:50051", help="decision service HOST:PORT")
    parser.add_argument("--tenant", default="acme", help="the tenant this server serves")
    parser.add_argument("--resource", default="https://mcp.example.com/files",
                        help="this server's canonical URI (the audience of its tokens)")
    parser.add_argument("--issuer", default="https://dev-issuer.mcp-authz.local",
                        help="authorization server named in the protected resource metadata")
    parser.add_argument("--listen", default="127.0.0.1:8001")
    parser.add_argument("--no-authz", action="store_true",
                        help="serve WITHOUT authorization: only a baseline for benchmarks")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    authz = AuthorizationMiddleware(AsyncDecisionClient(args.authz, ClientOptions()),
                                    tenant=args.tenant, resource=args.resource,
                                    server_id="example")
    server = build_server(root, None if args.no_authz else authz, args.issuer)
    run_app(server.streamable_http_app(json_response=True), args.listen)


if __name__ == "__main__":
    main()
