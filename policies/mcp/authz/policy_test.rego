# Unit tests of the default policy. They call authz.decide({...}) directly and never use
# `with input as`: regopy crashes on `with` for rules that call builtins.
# Inputs are shaped as the service builds them, including input.lookup (the catalog and
# tenant entries the service resolves from this bundle's data).
package mcp.authz_test

import rego.v1

import data.mcp.authz

#############################################################################
# Fixtures
#############################################################################

digest := "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

# Paths under acme's sandbox, built from the data so that a changed prefix keeps the tests
# meaningful.
acme_root := directory(data.mcp.tenants.acme.path_prefixes[0])

globex_root := directory(data.mcp.tenants.globex.path_prefixes[0])

directory(prefix) := prefix if endswith(prefix, "/") else := concat("", [prefix, "/"])

acme_path(rel) := concat("", [acme_root, rel])

globex_path(rel) := concat("", [globex_root, rel])

all_scopes := [
	"files:read", "files:write", "git:read", "git:write", "sql:read", "web:fetch",
	"memory:read", "memory:write", "demo:read", "demo:write", "payments:write", "time:read",
]

user(id, tenant, scopes, roles) := {
	"id": id, "tenant": tenant, "issuer": "https://idp.example", "client_id": "agent",
	"scopes": scopes, "roles": roles, "groups": [], "claims": {},
	"token": {"iat": 0, "exp": 0, "jti": "t-1"},
}

alice := user("alice", "acme", all_scopes, ["analyst", "finance"])

reader := user("rita", "acme", ["files:read"], [])

gina := user("gina", "globex", all_scopes, ["finance"])

approval_by(approver, roles) := {"approver": approver, "roles": roles, "issued_at": 0, "digest": digest}

bob_ok := approval_by("bob", ["approver"])

# What the service puts into input.lookup: only the entries that exist.
lookup(kind, name, tenant) := {k: v |
	some k in [kind, "tenant"]
	v := lookup_value(k, name, tenant)
}

lookup_value("tool", name, _) := data.mcp.catalog.tools[name]

lookup_value("prompt", name, _) := data.mcp.catalog.prompts[name]

lookup_value("tenant", _, tenant) := data.mcp.tenants[tenant]

# A request as the service builds it; `key` names the method's own field (tool, resource,
# prompt) and `value` fills it.
request(sub, tenant, method, key, value, lookups, approvals, errors) := {
	"subject": sub, "tenant": tenant,
	"server": {"id": "files", "resource": "https://mcp.example.com/files"},
	"client": {"id": "agent", "name": "test-agent", "version": "1.0"},
	"method": method, key: value, "lookup": lookups,
	"approvals": approvals, "approval_errors": errors,
	"request_digest": digest, "context": {}, "now_ns": 0,
}

tool_call(sub, tenant, name, args, annotations, approvals, errors) := request(
	sub, tenant, "tools/call",
	"tool", {"name": name, "arguments": args, "annotations": annotations},
	lookup("tool", name, tenant), approvals, errors,
)

call(name, args) := tool_call(alice, "acme", name, args, {}, [], [])

call_as(sub, name, args) := tool_call(sub, "acme", name, args, {}, [], [])

call_approved(name, args, approvals, errors) := tool_call(alice, "acme", name, args, {}, approvals, errors)

resource_read(sub, uri) := request(
	sub, "acme", "resources/read",
	"resource", {"uri": uri},
	lookup("resource", "", "acme"), [], [],
)

prompt_get(sub, name, args) := request(
	sub, "acme", "prompts/get",
	"prompt", {"name": name, "arguments": args},
	lookup("prompt", name, "acme"), [], [],
)

codes(d) := [code | some r in d.reasons; code := r.code]

allowed(d) if {
	d.allow == true
	d.reasons == []
}

# Denied, and `code` is among the reasons.
denied(d, code) if {
	d.allow == false
	code in codes(d)
}

# Denied with `code` as the primary (first) reason.
denied_first(d, code) if {
	d.allow == false
	d.reasons[0].code == code
}

reason_message(d, code) := msg if {
	some r in d.reasons
	r.code == code
	msg := r.message
}

obligation(d, type) := o if {
	some o in d.obligations
	o.type == type
}

obligation_types(d) := [t | some o in d.obligations; t := o.type]

#############################################################################
# Path confinement
#############################################################################

test_read_file_in_sandbox_allowed if {
	d := authz.decide(call("read_file", {"path": acme_path("reports/q3.txt")}))
	allowed(d)
	obligation(d, "max_result_bytes").params.bytes == data.mcp.catalog.tools.read_file.max_result_bytes
}

test_relative_sandbox_allowed if {
	d := authz.decide(call("list_dir", {"path": "sandbox/acme/notes"}))
	allowed(d)
}

test_sandbox_root_itself_allowed if {
	d := authz.decide(call("list_directory", {"path": trim_suffix(acme_root, "/")}))
	allowed(d)
}

test_sibling_directory_with_same_prefix_denied if {
	d := authz.decide(call("read_file", {"path": concat("", [trim_suffix(acme_root, "/"), "-evil/x"])}))
	denied_first(d, "argument_violation")
}

test_dotdot_segment_denied if {
	d := authz.decide(call("read_file", {"path": acme_path("../globex/secret.txt")}))
	denied_first(d, "argument_violation")
	contains(reason_message(d, "argument_violation"), "'..'")
	contains(reason_message(d, "argument_violation"), "argument 'path'")
}

test_relative_dotdot_denied if {
	d := authz.decide(call("read_file", {"path": "sandbox/acme/../../etc/passwd"}))
	denied_first(d, "argument_violation")
}

test_percent_encoded_dotdot_denied if {
	d := authz.decide(call("read_file", {"path": acme_path("%2e%2e/%2e%2e/etc/passwd")}))
	denied_first(d, "argument_violation")
	contains(reason_message(d, "argument_violation"), "percent")
}

test_percent_encoded_slash_denied if {
	d := authz.decide(call("read_file", {"path": acme_path("..%2f..%5cetc")}))
	denied_first(d, "argument_violation")
}

test_backslash_denied if {
	d := authz.decide(call("read_file", {"path": acme_path("..\\..\\etc\\passwd")}))
	denied_first(d, "argument_violation")
	contains(reason_message(d, "argument_violation"), "backslash")
}

test_absolute_path_outside_prefixes_denied if {
	d := authz.decide(call("read_file", {"path": "/etc/passwd"}))
	denied_first(d, "argument_violation")
	contains(reason_message(d, "argument_violation"), "outside")
}

test_nul_byte_denied if {
	d := authz.decide(call("read_file", {"path": acme_path("a.txt\u0000.png")}))
	denied_first(d, "argument_violation")
}

test_control_character_denied if {
	d := authz.decide(call("write_file", {"path": acme_path("a\nb"), "content": "x"}))
	denied(d, "argument_violation")
}

test_tilde_denied if {
	d := authz.decide(call("read_file", {"path": "~/.ssh/id_rsa"}))
	denied_first(d, "argument_violation")
}

test_path_of_wrong_type_denied if {
	d := authz.decide(call("read_file", {"path": ["/srv"]}))
	denied_first(d, "argument_violation")
	contains(reason_message(d, "argument_violation"), "string")
}

test_missing_required_path_denied if {
	d := authz.decide(call("read_file", {}))
	denied_first(d, "argument_violation")
	contains(reason_message(d, "argument_violation"), "is required")
}

test_move_file_checks_both_ends if {
	d := authz.decide(call_approved("move_file", {"source": acme_path("a.txt"), "destination": "/etc/cron.d/x"}, [bob_ok], []))
	codes(d) == ["argument_violation"]
	contains(reason_message(d, "argument_violation"), "argument 'destination'")
	not contains(reason_message(d, "argument_violation"), "argument 'source'")
}

test_list_argument_checks_every_item if {
	d := authz.decide(call("read_multiple_files", {"paths": [acme_path("a.txt"), "/etc/shadow"]}))
	denied_first(d, "argument_violation")
	contains(reason_message(d, "argument_violation"), "paths[1]")
	not contains(reason_message(d, "argument_violation"), "paths[0]")
}

test_list_argument_in_sandbox_allowed if {
	d := authz.decide(call("read_multiple_files", {"paths": [acme_path("a.txt"), "sandbox/acme/b.txt"]}))
	allowed(d)
}

test_glob_cannot_climb_out if {
	d := authz.decide(call("search_files", {"path": acme_path(""), "pattern": "../../**/id_rsa"}))
	denied_first(d, "argument_violation")
	contains(reason_message(d, "argument_violation"), "argument 'pattern'")
}

test_git_repo_path_confined if {
	d := authz.decide(call("git_status", {"repo_path": "/home/alice/project"}))
	denied_first(d, "argument_violation")
}

test_git_option_injection_denied if {
	d := authz.decide(call("git_diff", {"repo_path": acme_path("repo"), "target": "--output=/tmp/pwned"}))
	denied_first(d, "argument_violation")
	contains(reason_message(d, "argument_violation"), "argument 'target'")
}

test_git_revision_allowed if {
	d := authz.decide(call("git_diff", {"repo_path": acme_path("repo"), "target": "HEAD~1"}))
	allowed(d)
}

test_git_add_absolute_file_denied if {
	d := authz.decide(call("git_add", {"repo_path": acme_path("repo"), "files": ["src/a.py", "/etc/passwd"]}))
	denied_first(d, "argument_violation")
	contains(reason_message(d, "argument_violation"), "files[1]")
}

test_cross_tenant_path_denied if {
	# acme's subject on acme's server, pointing at globex's directory.
	d := authz.decide(call("read_file", {"path": globex_path("ledger.csv")}))
	denied_first(d, "argument_violation")
}

test_globex_subject_in_globex_sandbox_allowed if {
	d := authz.decide(tool_call(gina, "globex", "read_file", {"path": globex_path("ledger.csv")}, {}, [], []))
	allowed(d)
}

# The fast path of path arguments (one regex, no per-defect scan) must answer exactly what the
# full check answers, for clean and for every kind of defective path.
test_path_fast_path_agrees_with_the_full_check if {
	prefixes := data.mcp.tenants.acme.path_prefixes
	paths := [
		acme_path("a.txt"), trim_suffix(acme_root, "/"), "sandbox/acme/x", acme_path("a..b"),
		"/etc/passwd", acme_path("../x"), acme_path("x/.."), acme_path("a%2e"), acme_path("~x"),
		acme_path("a\\b"), acme_path("a\"b"), acme_path("a\u0001b"), concat("", [trim_suffix(acme_root, "/"), "-evil/x"]),
		"", 42, null, ["/srv"],
	]
	disagree := [p |
		some p in paths
		authz.path_problems("path", p, prefixes) != authz.named("path", authz.path_whys(p, prefixes))
	]
	disagree == []
	count(authz.path_problems("path", acme_path("a.txt"), prefixes)) == 0
	count(authz.path_problems("path", acme_path("../x"), prefixes)) > 0
}

test_empty_or_mistyped_prefix_admits_nothing if {
	authz.under_any_prefix("/etc/passwd", ["", 42, null, "/srv/mcp/acme/"]) == false
	authz.under_any_prefix("/srv/mcp/acme/a", ["", "/srv/mcp/acme/"]) == true
}

test_url_checks_name_the_first_defect if {
	hosts := data.mcp.tenants.acme.allowed_hosts
	authz.url_defects("https://api.acme.example/v1", hosts) == set()
	authz.url_defects("https://api.acme.example/a b", hosts) == {"must not contain whitespace"}
	authz.url_defects("ftp://api.acme.example/", hosts) == {"must be an http or https URL"}
	authz.url_defects("https://bob@api.acme.example/", hosts) == {"must not contain user information ('@') before the host"}
	authz.url_defects("https://api.acme.example:8443/", hosts) == {"names a host the tenant does not allow"}
}

#############################################################################
# Tenant, catalog, roles, scopes, methods
#############################################################################

test_cross_tenant_subject_denied if {
	d := authz.decide(call_as(gina, "read_file", {"path": acme_path("a.txt")}))
	denied_first(d, "tenant_mismatch")
}

test_unknown_tenant_denied if {
	d := authz.decide(tool_call(user("ivan", "initech", all_scopes, []), "initech", "read_file", {"path": "/srv/mcp/initech/a"}, {}, [], []))
	denied_first(d, "tenant_mismatch")
	contains(reason_message(d, "tenant_mismatch"), "not configured")
}

test_unknown_tool_denied if {
	d := authz.decide(call("rm_rf", {"path": acme_path("")}))
	codes(d) == ["tool_unknown"]
	contains(reason_message(d, "tool_unknown"), "'rm_rf'")
}

test_scope_missing_names_the_scope if {
	d := authz.decide(call_as(reader, "create_directory", {"path": acme_path("new")}))
	codes(d) == ["scope_missing"]
	contains(reason_message(d, "scope_missing"), "files:write")
	d.obligations == []
}

test_scope_present_allows if {
	d := authz.decide(call_as(reader, "get_file_info", {"path": acme_path("a.txt")}))
	allowed(d)
}

test_role_missing_denied if {
	d := authz.decide(call_as(user("carl", "acme", all_scopes, ["analyst"]), "pay_invoice", {"amount": 10}))
	codes(d) == ["role_missing"]
	contains(reason_message(d, "role_missing"), "finance")
}

test_admin_only_tool_denied_to_others if {
	d := authz.decide(call("get-env", {}))
	denied_first(d, "role_missing")
}

test_admin_only_tool_allowed_to_admin_with_audit if {
	d := authz.decide(call_as(user("ada", "acme", ["demo:read"], ["admin"]), "get-env", {}))
	allowed(d)
	obligation(d, "audit").params.level == "high"
}

test_unsupported_method_denied if {
	inp := request(alice, "acme", "completion/complete", "tool", {"name": "read_file", "arguments": {}}, lookup("tool", "read_file", "acme"), [], [])
	d := authz.decide(inp)
	denied_first(d, "tool_unknown")
	contains(reason_message(d, "tool_unknown"), "completion/complete")
}

test_missing_method_denied if {
	d := authz.decide({"subject": alice, "tenant": "acme", "lookup": lookup("tool", "read_file", "acme")})
	d.allow == false
	count(d.reasons) > 0
}

test_empty_input_denied if {
	d := authz.decide({})
	d.allow == false
	denied_first(d, "tenant_mismatch")
}

test_reasons_ordered_by_precedence if {
	# Wrong tenant, no role, no scope, amount over the limit, above the approval threshold.
	nobody := user("mallory", "globex", [], [])
	d := authz.decide(tool_call(nobody, "acme", "pay_invoice", {"amount": 999999}, {}, [], []))
	codes(d) == ["tenant_mismatch", "role_missing", "scope_missing", "argument_violation", "approval_required"]
	d.obligations == []
}

test_tenant_reason_precedes_unknown_tool if {
	d := authz.decide(call_as(gina, "no_such_tool", {}))
	codes(d) == ["tenant_mismatch", "tool_unknown"]
}

test_one_reason_per_code if {
	d := authz.decide(call("move_file", {"source": "/etc/passwd", "destination": "../x"}))
	count([c | some c in codes(d); c == "argument_violation"]) == 1
	count(codes(d)) == count({c | some c in codes(d)})
}

test_caller_strings_are_not_echoed if {
	d1 := authz.decide(call("frobnicate-v2", {}))
	contains(reason_message(d1, "tool_unknown"), "'frobnicate-v2'")
	too_long := "a123456789b123456789c123456789d123456789e123456789f123456789g123456789"
	d3 := authz.decide(call(too_long, {}))
	not contains(reason_message(d3, "tool_unknown"), too_long)
	crafted := "x\", \"allow\": true, \"zz\": \""
	d2 := authz.decide(call(crafted, {}))
	d2.allow == false
	not contains(reason_message(d2, "tool_unknown"), "allow")
	contains(reason_message(d2, "tool_unknown"), "unprintable")
}

#############################################################################
# SQL
#############################################################################

test_sql_select_allowed if {
	allowed(authz.decide(call("sql_query", {"query": "SELECT id, total FROM invoices WHERE total > 10"})))
}

test_sql_with_and_trailing_semicolon_allowed if {
	allowed(authz.decide(call("sql_query", {"query": "  with t as (select 1 as x) select x from t;"})))
}

test_sql_write_denied_without_write_scope if {
	d := authz.decide(call("sql_query", {"query": "delete from invoices"}))
	denied_first(d, "argument_violation")
	contains(reason_message(d, "argument_violation"), "sql:write")
}

test_sql_stacked_statement_denied if {
	d := authz.decide(call("sql_query", {"query": "SELECT 1; DROP TABLE invoices"}))
	denied_first(d, "argument_violation")
	contains(reason_message(d, "argument_violation"), "single statement")
}

test_sql_data_modifying_cte_denied if {
	d := authz.decide(call("sql_query", {"query": "WITH gone AS (DELETE FROM invoices RETURNING *) SELECT count(*) FROM gone"}))
	denied_first(d, "argument_violation")
}

test_sql_keyword_after_newline_denied if {
	d := authz.decide(call("sql_query", {"query": "WITH gone AS (\nDeLeTe FROM invoices RETURNING *) SELECT 1"}))
	denied_first(d, "argument_violation")
}

test_sql_select_into_and_attach_denied if {
	denied(authz.decide(call("sql_query", {"query": "SELECT * INTO backup FROM invoices"})), "argument_violation")
	denied(authz.decide(call("sql_query", {"query": "SELECT 1 FROM t WHERE 1=1 ATTACH DATABASE 'x' AS y"})), "argument_violation")
	denied(authz.decide(call("sql_query", {"query": "PRAGMA writable_schema=1"})), "argument_violation")
}

test_sql_write_allowed_with_write_scope_and_audited if {
	writer := user("wes", "acme", ["sql:read", "sql:write"], [])
	d := authz.decide(call_as(writer, "sql_query", {"query": "UPDATE invoices SET paid = true WHERE id = 7"}))
	allowed(d)
	obligation(d, "audit").params.level == "high"
}

test_sql_read_with_write_scope_not_audited if {
	writer := user("wes", "acme", ["sql:read", "sql:write"], [])
	d := authz.decide(call_as(writer, "sql_query", {"query": "SELECT 1"}))
	allowed(d)
	not "audit" in obligation_types(d)
}

test_sql_query_must_be_a_string if {
	denied_first(authz.decide(call("sql_query", {"query": 42})), "argument_violation")
}

#############################################################################
# URLs
#############################################################################

test_url_allowed_host if {
	allowed(authz.decide(call("http_fetch", {"url": "https://api.acme.example/v1/status?x=1"})))
	allowed(authz.decide(call("fetch", {"url": "http://example.com/"})))
}

test_url_host_case_insensitive if {
	allowed(authz.decide(call("http_fetch", {"url": "HTTPS://API.Acme.Example/v1"})))
}

test_url_unlisted_host_denied if {
	d := authz.decide(call("http_fetch", {"url": "https://evil.example.net/"}))
	denied_first(d, "argument_violation")
	contains(reason_message(d, "argument_violation"), "argument 'url'")
}

test_url_userinfo_trick_denied if {
	d := authz.decide(call("http_fetch", {"url": "https://api.acme.example@evil.example.net/"}))
	denied_first(d, "argument_violation")
	contains(reason_message(d, "argument_violation"), "user information")
}

test_url_suffix_trick_denied if {
	denied_first(authz.decide(call("http_fetch", {"url": "https://api.acme.example.evil.net/"})), "argument_violation")
	denied_first(authz.decide(call("http_fetch", {"url": "https://evilapi.acme.example/"})), "argument_violation")
}

test_url_backslash_and_encoding_tricks_denied if {
	denied_first(authz.decide(call("http_fetch", {"url": "https://evil.net\\@api.acme.example/"})), "argument_violation")
	denied_first(authz.decide(call("http_fetch", {"url": "https://api.acme.example%2eevil.net/"})), "argument_violation")
	denied_first(authz.decide(call("http_fetch", {"url": "https://api.acme.example\t.evil.net/"})), "argument_violation")
}

test_url_non_http_scheme_denied if {
	denied_first(authz.decide(call("http_fetch", {"url": "file:///etc/passwd"})), "argument_violation")
	denied_first(authz.decide(call("http_fetch", {"url": "gopher://api.acme.example/"})), "argument_violation")
	denied_first(authz.decide(call("http_fetch", {"url": "//api.acme.example/"})), "argument_violation")
}

test_url_unlisted_port_denied if {
	denied_first(authz.decide(call("http_fetch", {"url": "https://api.acme.example:8443/"})), "argument_violation")
}

test_url_wildcard_matches_subdomains_only if {
	allowed(authz.decide(call("http_fetch", {"url": "https://v2.docs.acme.example/guide"})))
	denied_first(authz.decide(call("http_fetch", {"url": "https://docs.acme.example/guide"})), "argument_violation")
}

test_url_hosts_are_per_tenant if {
	d := authz.decide(tool_call(gina, "globex", "http_fetch", {"url": "https://api.acme.example/"}, {}, [], []))
	denied_first(d, "argument_violation")
}

#############################################################################
# Amounts and payment approval
#############################################################################

test_small_payment_allowed_with_obligations if {
	d := authz.decide(call("pay_invoice", {"amount": 250}))
	allowed(d)
	obligation_types(d) == ["redact", "audit"]
	obligation(d, "redact").params.paths == data.mcp.catalog.tools.pay_invoice.redact
	obligation(d, "audit").params.level == "high"
}

test_amount_over_tenant_limit_denied if {
	d := authz.decide(call_approved("pay_invoice", {"amount": data.mcp.tenants.acme.max_payment + 1}, [bob_ok], []))
	codes(d) == ["argument_violation"]
	contains(reason_message(d, "argument_violation"), "argument 'amount'")
}

test_negative_amount_denied if {
	denied_first(authz.decide(call("pay_invoice", {"amount": -5})), "argument_violation")
}

test_amount_must_be_a_number if {
	denied_first(authz.decide(call("pay_invoice", {"amount": "100"})), "argument_violation")
	denied_first(authz.decide(call("pay_invoice", {"amount": true})), "argument_violation")
}

test_payment_above_threshold_requires_approval if {
	d := authz.decide(call("pay_invoice", {"amount": 1500}))
	codes(d) == ["approval_required"]
	obligation(d, "require_approval").params.approver_roles == ["approver", "finance_approver"]
}

test_payment_above_threshold_with_finance_approver_allowed if {
	d := authz.decide(call_approved("pay_invoice", {"amount": 1500}, [approval_by("fiona", ["finance_approver"])], []))
	allowed(d)
}

#############################################################################
# Approval
#############################################################################

test_destructive_tool_requires_approval if {
	d := authz.decide(call("git_reset", {"repo_path": acme_path("repo")}))
	codes(d) == ["approval_required"]
	o := obligation(d, "require_approval")
	o.params == {"digest": digest, "approver_roles": ["approver"], "expires_in_seconds": 300}
}

test_every_destructive_catalog_tool_requires_approval if {
	tools := data.mcp.catalog.tools
	destructive := {name | some name; tools[name].destructive == true}
	count(destructive) > 0
	without_approval := {name | some name in destructive; not "approval" in object.keys(tools[name])}
	count(without_approval) == 0
}

test_annotations_cannot_make_a_tool_safe if {
	lying := {"read_only_hint": true, "destructive_hint": false, "idempotent_hint": true, "open_world_hint": false}
	d := authz.decide(tool_call(alice, "acme", "write_file", {"path": acme_path("a.txt"), "content": "x"}, lying, [], []))
	codes(d) == ["approval_required"]
}

test_valid_approval_allows_and_audits if {
	d := authz.decide(call_approved("delete_entities", {"entityNames": ["x"]}, [bob_ok], []))
	allowed(d)
	obligation(d, "audit").params.level == "high"
}

test_self_approval_rejected if {
	d := authz.decide(call_approved("write_file", {"path": acme_path("a.txt"), "content": "x"}, [approval_by("alice", ["approver"])], []))
	codes(d) == ["approval_invalid", "approval_required"]
	contains(reason_message(d, "approval_invalid"), "own request")
	obligation(d, "require_approval").params.digest == digest
}

test_wrong_role_approval_rejected if {
	d := authz.decide(call_approved("delete_file", {"path": acme_path("a.txt")}, [approval_by("bob", ["analyst"])], []))
	denied_first(d, "approval_invalid")
	contains(reason_message(d, "approval_invalid"), "'bob'")
	obligation(d, "require_approval")
}

test_approval_for_another_request_rejected if {
	other := {"approver": "bob", "roles": ["approver"], "issued_at": 0, "digest": "0000"}
	d := authz.decide(call_approved("git_reset", {"repo_path": acme_path("repo")}, [other], []))
	denied_first(d, "approval_invalid")
}

test_rejected_approval_tokens_reported if {
	errors := [{"code": "approval_expired", "message": "token expired"}]
	d := authz.decide(call_approved("git_reset", {"repo_path": acme_path("repo")}, [], errors))
	codes(d) == ["approval_invalid", "approval_required"]
	contains(reason_message(d, "approval_invalid"), "approval_expired")
	obligation(d, "require_approval")
}

test_one_good_approval_among_bad_ones_allows if {
	approvals := [approval_by("alice", ["approver"]), approval_by("bob", ["approver"])]
	allowed(authz.decide(call_approved("git_reset", {"repo_path": acme_path("repo")}, approvals, [])))
}

test_no_approval_requested_when_other_checks_fail if {
	d := authz.decide(call_as(reader, "write_file", {"path": acme_path("a.txt"), "content": "x"}))
	codes(d) == ["scope_missing", "approval_required"]
	d.obligations == []
}

test_approval_does_not_override_argument_checks if {
	d := authz.decide(call_approved("write_file", {"path": "/etc/passwd", "content": "x"}, [bob_ok], []))
	codes(d) == ["argument_violation"]
}

#############################################################################
# resources/read
#############################################################################

test_resource_file_in_sandbox_allowed if {
	d := authz.decide(resource_read(reader, concat("", ["file://", acme_path("docs/readme.md")])))
	allowed(d)
	obligation(d, "max_result_bytes")
}

test_resource_file_outside_sandbox_denied if {
	d := authz.decide(resource_read(reader, "file:///etc/passwd"))
	codes(d) == ["argument_violation"]
}

test_resource_file_dotdot_denied if {
	d := authz.decide(resource_read(reader, concat("", ["file://", acme_path("../globex/x")])))
	denied_first(d, "argument_violation")
}

test_resource_file_with_host_denied if {
	d := authz.decide(resource_read(reader, "file://fileserver/srv/mcp/acme/x"))
	denied_first(d, "argument_violation")
}

test_resource_without_rule_denied if {
	d := authz.decide(resource_read(alice, "s3://bucket/key"))
	codes(d) == ["tool_unknown"]
}

test_resource_scope_missing if {
	d := authz.decide(resource_read(reader, "memory://knowledge-graph"))
	codes(d) == ["scope_missing"]
	contains(reason_message(d, "scope_missing"), "memory:read")
}

test_resource_exact_rule if {
	allowed(authz.decide(resource_read(alice, "memory://knowledge-graph")))
	denied_first(authz.decide(resource_read(alice, "memory://knowledge-graph/../x")), "tool_unknown")
}

test_resource_cross_tenant_denied if {
	d := authz.decide(resource_read(gina, "demo://resource/static/document/architecture.md"))
	denied_first(d, "tenant_mismatch")
}

#############################################################################
# prompts/get
#############################################################################

test_prompt_allowed if {
	allowed(authz.decide(prompt_get(alice, "args-prompt", {"city": "Paris"})))
}

test_prompt_unknown_denied if {
	d := authz.decide(prompt_get(alice, "jailbreak", {}))
	codes(d) == ["tool_unknown"]
	contains(reason_message(d, "tool_unknown"), "prompt")
}

test_prompt_scope_missing if {
	d := authz.decide(prompt_get(reader, "simple-prompt", {}))
	codes(d) == ["scope_missing"]
}

test_prompt_arguments_checked if {
	d := authz.decide(prompt_get(alice, "fetch", {"url": "http://169.254.169.254/latest/meta-data/"}))
	codes(d) == ["argument_violation"]
}

#############################################################################
# tools/list filtering and decision-log masking
#############################################################################

# What FilterTools sends: one tools/list request per tool, without arguments.
listing(sub, tenant, name) := request(
	sub, tenant, "tools/list",
	"tool", {"name": name, "arguments": {}, "annotations": {}},
	lookup("tool", name, tenant), [], [],
)

test_listing_ignores_arguments_and_approval if {
	d := authz.decide(listing(alice, "acme", "write_file"))
	d == {"allow": true, "reasons": [], "obligations": []}
}

test_listing_never_checks_arguments_even_when_sent if {
	inp := request(alice, "acme", "tools/list", "tool", {"name": "read_file", "arguments": {"path": "/etc/passwd"}}, lookup("tool", "read_file", "acme"), [], [])
	allowed(authz.decide(inp))
}

test_listing_checks_scopes_roles_and_tenant if {
	denied_first(authz.decide(listing(reader, "acme", "write_file")), "scope_missing")
	denied_first(authz.decide(listing(alice, "acme", "get-env")), "role_missing")
	denied_first(authz.decide(listing(gina, "acme", "read_file")), "tenant_mismatch")
	denied_first(authz.decide(listing(alice, "acme", "nope")), "tool_unknown")
}

test_list_decision_is_the_decision if {
	authz.list_decision == authz.decision
}

test_log_mask_for_sensitive_tool if {
	authz.mask_paths(call("write_file", {"path": acme_path("a"), "content": "secret"})) == ["tool.arguments"]
}

test_log_mask_empty_for_plain_tool if {
	authz.mask_paths(call("read_file", {"path": acme_path("a")})) == []
}

#############################################################################
# The catalog itself
#############################################################################

test_catalog_entries_are_well_formed if {
	risks := {"low", "medium", "high", "critical"}
	tools := data.mcp.catalog.tools
	bad := {name |
		some name
		e := tools[name]
		not well_formed(e, risks)
	}
	bad == set()
}

well_formed(e, risks) if {
	count(e.scopes) > 0
	e.risk in risks
	is_boolean(e.destructive)
	is_boolean(e.open_world)
}
