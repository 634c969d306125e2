"""``mcp-authz dev-init`` and ``mcp-authz token``: a development issuer, for trying things out.

``token`` only signs with the development key a ``dev-init`` config names; a production config
has no ``development`` section, and then ``token`` refuses.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import devkeys
from ..config import load_config
from ..errors import ConfigError

DEFAULT_DEV_CONFIG = ".dev/config.yaml"


def register(subparsers: Any) -> None:
    init = subparsers.add_parser("dev-init", help="write development keys and config")
    init.add_argument("--dir", default=".dev")
    init.add_argument("--bundle", default="policies")
    init.set_defaults(run=run_init)

    token = subparsers.add_parser("token", help="mint a development token (dev key only)")
    token.add_argument("--config", default=DEFAULT_DEV_CONFIG)
    token.add_argument("--sub", required=True, help="subject (user id)")
    token.add_argument("--tenant", help="tenant claim (user tokens)")
    token.add_argument("--scope", action="append", default=[], help="repeatable")
    token.add_argument("--role", action="append", default=[], help="repeatable")
    token.add_argument("--audience", help="the MCP server resource (default: the dev audience)")
    token.add_argument("--ttl", type=int, default=900, help="lifetime in seconds")
    token.add_argument("--approval-for", metavar="DIGEST",
                       help="mint an approval token for this request digest instead")
    token.set_defaults(run=run_token)


def run_init(args: argparse.Namespace) -> int:
    path = devkeys.write_dev_setup(args.dir, args.bundle)
    print(f"wrote {path}")
    return 0


def run_token(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    dev = config.development
    if dev is None or not dev.signing_key:
        raise ConfigError([f"{args.config}: no development section: tokens are only minted "
                           "with the development key that `mcp-authz dev-init` writes"])
    if args.approval_for:
        key = devkeys.load_private_key(config.path(dev.approval_signing_key))
        assert config.identity.approval is not None
        claims = devkeys.approval_claims(
            issuer=config.identity.approval.issuer, approver=args.sub,
            digest=args.approval_for, roles=args.role, ttl=min(args.ttl, 300))
        print(devkeys.mint(key, dev.approval_key_id, "ES256", claims))
        return 0
    if not args.tenant:
        print("mcp-authz token: --tenant is required for a user token", file=sys.stderr)
        return 2
    key = devkeys.load_private_key(config.path(dev.signing_key))
    claims = devkeys.user_claims(
        issuer=dev.issuer, audience=args.audience or dev.audience, sub=args.sub,
        tenant=args.tenant, scopes=args.scope, roles=args.role, ttl=args.ttl)
    print(devkeys.mint(key, dev.key_id, "RS256", claims))
    return 0
