"""Median engine time of the default policy, per decision case, on the service's own wrapper.

Times ``CompiledPolicy.evaluate`` (and ``evaluate_log_mask``) from mcp_authz.engine on a bundle
compiled WITHOUT its ``*_test.rego`` modules, as the service serves it. Inputs are shaped as
``DecisionPath.input_document`` builds them (``lookup`` resolved by the policy's own lookups).

Columns, medians in µs:
  decision  a new input every time (``now_ns`` differs), as in the service: regopy parses the
            input term (~17 µs per JSON value) and evaluates the policy;
  policy    the same input again: the engine skips the parse, so this is the evaluation alone;
  log_mask  ``log_mask`` right after the decision, on the input the thread already holds (what
            the decision log does).

    .venv/bin/python scripts/bench_policy.py [--bundle policies] [--baseline OLD_BUNDLE]
                                             [--runs 300] [--json]

With ``--baseline``, both bundles are timed in the same process, samples interleaved, and the
decision ratio baseline/bundle is printed: the machine is shared and noisy, so compare within
one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mcp_authz.bundles import load_bundle
from mcp_authz.decisions import encode_input
from mcp_authz.engine import CompiledPolicy, compile_bundle

ALL_SCOPES = ["files:read", "files:write", "git:read", "git:write", "sql:read", "web:fetch",
              "memory:read", "memory:write", "demo:read", "demo:write", "payments:write"]


def subject(sub: str, tenant: str, scopes: list[str], roles: list[str]) -> dict[str, Any]:
    return {"id": sub, "tenant": tenant, "issuer": "https://idp.example", "client_id": "agent",
            "scopes": scopes, "roles": roles, "groups": [], "claims": {},
            "token": {"iat": 0, "exp": 0, "jti": "j"}}


ALICE = subject("alice", "acme", ALL_SCOPES, ["analyst", "finance"])
RITA = subject("rita", "acme", ["files:read"], [])


def document(policy: CompiledPolicy, *, sub: dict[str, Any] = ALICE, tenant: str = "acme",
             method: str = "tools/call", tool: str = "", args: dict[str, Any] | None = None,
             uri: str = "", prompt: str = "") -> dict[str, Any]:
    doc: dict[str, Any] = {
        "subject": sub, "tenant": tenant,
        "server": {"id": "files", "resource": "https://mcp.example.com/files"},
        "client": {"id": "agent", "name": "bench", "version": "1"},
        "method": method,
        "tool": {"name": tool, "arguments": args or {}, "annotations": {}},
        "resource": {"uri": uri}, "prompt": {"name": prompt, "arguments": {}},
        "approvals": [], "approval_errors": [], "request_digest": "0" * 64,
        "context": {}, "now_ns": 0,
    }
    doc["lookup"] = policy.lookups(doc)
    return doc


def cases(policy: CompiledPolicy) -> dict[str, dict[str, Any]]:
    def call(tool: str, args: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return document(policy, tool=tool, args=args, **kw)
    return {
        "allow read_file": call("read_file", {"path": "/srv/mcp/acme/reports/q3.txt"}),
        "deny unknown tool": call("rm_rf", {"path": "/"}),
        "deny scope missing": call("create_directory", {"path": "/srv/mcp/acme/new"}, sub=RITA),
        "deny path escape": call("read_file", {"path": "/srv/mcp/acme/../globex/secret"}),
        "deny tenant mismatch": call("read_file", {"path": "/srv/mcp/globex/a.txt"},
                                     tenant="globex"),
        "deny approval required": call("write_file", {"path": "/srv/mcp/acme/o.txt",
                                                      "content": "hi"}),
        "allow sql select": call("sql_query", {"query": "SELECT id FROM invoices"}),
        "allow fetch": call("fetch", {"url": "https://api.acme.example/v1/items"}),
        "allow pay_invoice": call("pay_invoice", {"amount": 500}),
        "allow resources/read": document(policy, method="resources/read",
                                         uri="file:///srv/mcp/acme/a.txt"),
        "allow prompts/get": document(policy, method="prompts/get", prompt="simple-prompt"),
        "tools/list read_file": document(policy, method="tools/list", tool="read_file"),
        "tools/list unknown": document(policy, method="tools/list", tool="rm_rf"),
    }


def served_policy(path: str) -> CompiledPolicy:
    """The bundle as the service compiles it: without its ``*_test.rego`` modules."""
    contents = load_bundle(path)
    served = {k: v for k, v in contents.modules.items() if not k.endswith("_test.rego")}
    return compile_bundle(dataclasses.replace(contents, modules=served))


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(policies: list[CompiledPolicy], name: str, runs: int) -> list[dict[str, Any]]:
    """Decision (fresh input), policy (same input) and log_mask medians of case ``name`` for
    each policy. Samples of the policies are interleaved so that load bursts hit all alike, and
    each policy runs on its own thread: the engine keeps one interpreter per thread, and a query
    on an interpreter that last ran another bundle costs more."""
    docs = [cases(policy)[name] for policy in policies]
    texts = [[encode_input(dict(doc, now_ns=i)) for i in range(runs)] for doc in docs]
    samples: list[dict[str, list[float]]] = [
        {"decision": [], "policy": [], "log_mask": []} for _ in policies]

    def sample(policy: CompiledPolicy, text: str) -> tuple[float, float, float]:
        decision = timed(lambda: policy.evaluate(text))
        # the decision left this input in the thread's interpreter, as in the service
        log_mask = timed(lambda: policy.evaluate_log_mask(text))
        return decision, timed(lambda: policy.evaluate(text)), log_mask

    workers = [ThreadPoolExecutor(max_workers=1) for _ in policies]
    try:
        for i in range(-10, runs):  # ten warm-up rounds
            for worker, policy, text, found in zip(workers, policies, texts, samples, strict=True):
                decision, again, log_mask = worker.submit(sample, policy, text[i]).result()
                if i >= 0:
                    found["decision"].append(decision)
                    found["policy"].append(again)
                    found["log_mask"].append(log_mask)
        outcomes = [worker.submit(policy.evaluate, text[0]).result()
                    for worker, policy, text in zip(workers, policies, texts, strict=True)]
    finally:
        for worker in workers:
            worker.shutdown()
    rows = []
    for outcome, found in zip(outcomes, samples, strict=True):
        row: dict[str, Any] = {f"{k}_us": round(statistics.median(v) * 1e6, 1)
                               for k, v in found.items()}
        row.update(allow=outcome.allow, reasons=[r.code for r in outcome.reasons])
        rows.append(row)
    return rows


def columns(row: dict[str, Any]) -> str:
    return f"{row['decision_us']:9.0f} {row['policy_us']:8.0f} {row['log_mask_us']:8.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="policies")
    parser.add_argument("--baseline", help="another bundle to time alongside, for ratios")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    policy = served_policy(args.bundle)
    baseline = served_policy(args.baseline) if args.baseline else None
    policies = [policy] if baseline is None else [policy, baseline]
    results: dict[str, dict[str, Any]] = {}
    for name in cases(policy):
        rows = measure(policies, name, args.runs)
        results[name] = rows[0]
        if baseline is not None:
            results[name]["baseline"] = rows[1]
    if args.json:
        json.dump({"revision": policy.revision, "results": results}, sys.stdout, indent=1)
        print()
        return 0
    header = f"{'case':24s} {'decision':>9s} {'policy':>8s} {'log_mask':>8s}"
    if baseline is not None:
        header += f" | {'baseline':>9s} {'policy':>8s} {'log_mask':>8s} | {'ratio':>5s}"
    print(header + "  outcome")
    for name, row in results.items():
        line = f"{name:24s} {columns(row)}"
        if baseline is not None:
            ratio = row["baseline"]["decision_us"] / row["decision_us"]
            line += f" | {columns(row['baseline'])} | {ratio:5.1f}"
        verdict = "allow" if row["allow"] else "deny"
        print(f"{line}  {verdict} {' '.join(row['reasons'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
