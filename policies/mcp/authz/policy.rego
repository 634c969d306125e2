# mcp-authz default policy: may this MCP request run?
#
# Entry points:
#   data.mcp.authz.decision       {"allow", "reasons", "obligations"} for one request
#   data.mcp.authz.list_decision  the same shape for tools/list filtering: who may SEE a
#                                 tool (tenant, catalog, roles, scopes; no argument or
#                                 approval checks, since a listing has no arguments)
#   data.mcp.authz.log_mask       input paths the decision log must mask
#
# Data (this bundle's data.json files):
#   mcp.catalog.tools[name]    {scopes, risk, destructive, open_world, roles?, args?,
#                               approval? {roles, ttl_seconds, when? {arg, above}},
#                               redact?, max_result_bytes?, sensitive?}
#   mcp.catalog.prompts[name]  the same fields
#   mcp.catalog.resources      [{prefix, exact?, scopes, roles?, max_result_bytes?}]
#   mcp.tenants[tenant]        {path_prefixes, allowed_hosts, max_payment}
# The policy reads tools, prompts and tenants only through input.lookup (see below).
#
# How to read this file:
# - Everything is a function of the input document (`inp`), so unit tests call
#   `decide({...})` directly: regopy crashes on `with input as` for rules that call builtins.
# - Deny by default. A request is allowed only when a catalog entry for it exists AND no
#   check produced a violation. Checks are written as "find what is wrong" (sets of
#   violations), and every check that reads caller data treats a missing or mistyped field
#   as a violation, never as "nothing to check".
# - Catalog entries come from `inp.lookup` (resolved by the service, see .manifest
#   metadata), never from `data.mcp.catalog.tools[<caller key>]`: a miss on a large object is
#   linear in its size in regopy, so a caller could slow the service down with unknown names.
# - Tool annotations in the request are caller hints. Nothing here reads them: what decides
#   access (scopes, risk, destructive, approval) is the bundle's catalog.
# - Messages never echo caller values except short names that pass `show` (ASCII
#   identifier characters, at most 64).
# - Portability (the same answer in regopy and OPA): no `sprintf("%s")` on strings (regopy
#   emits invalid JSON for strings produced by builtins), no `(?i)` or `\x` in regexes
#   (regopy rejects them), lower() only on ASCII text. regopy keeps JSON escapes of input
#   strings as written (`\n`, `\u0000`, `\"` stay a backslash and a character), so control
#   characters, backslashes and double quotes are rejected together (`unsafe_chars_re`).
# - regopy quirks kept out of this file: a user function called in a comprehension head can
#   yield an empty result (heads here are plain variables, computed in the body); `some k, v
#   in` inside a comprehension does not parse (iterate keys); comparing a number with null is
#   undefined instead of true (numbers are type-checked before comparing); sort() of a set
#   returns a set (sets are sorted through an array, see `sorted`).
package mcp.authz

import rego.v1

decision := decide(input)

list_decision := decide_listing(input)

log_mask := mask_paths(input)

# Reason codes in precedence order; the first reason of a deny is its primary reason.
reason_precedence := [
	"tenant_mismatch",
	"tool_unknown",
	"role_missing",
	"scope_missing",
	"argument_violation",
	"approval_invalid",
	"approval_required",
]

default_approval_ttl_seconds := 300

default_approver_roles := ["approver"]

#############################################################################
# The decision
#############################################################################

# Total: if anything below were undefined, the request is denied with policy_error.
decide(inp) := result if {
	result := outcome(inp, violations(inp))
} else := {
	"allow": false,
	"reasons": [violation("policy_error", "the policy could not evaluate this request")],
	"obligations": [],
}

# The only path to allow: the request's target is in the catalog and nothing is wrong.
outcome(inp, vs) := {"allow": true, "reasons": [], "obligations": allow_obligations(inp)} if {
	count(vs) == 0
	target_resolved(inp)
} else := {"allow": false, "reasons": deny_reasons(vs), "obligations": deny_obligations(inp, vs)}

target_resolved(inp) if {
	method_of(inp) == "tools/call"
	is_object(tool_entry(inp))
}

target_resolved(inp) if {
	method_of(inp) == "resources/read"
	count(matched_resource_rules(inp)) > 0
}

target_resolved(inp) if {
	method_of(inp) == "prompts/get"
	is_object(prompt_entry(inp))
}

# Every violation of the request: a set of {"code", "message"}.
violations(inp) := tenant_violations(inp) | target_violations(inp)

# One reason per code, in precedence order; several findings of one code are joined.
deny_reasons(vs) := reasons if {
	reasons := [reason |
		some code in reason_precedence
		msgs := {v.message | some v in vs; v.code == code}
		count(msgs) > 0
		reason := {"code": code, "message": concat("; ", sorted(msgs))}
	]
	count(reasons) > 0
} else := [violation("policy_error", "no rule allowed this request (deny by default)")]

violation(code, message) := {"code": code, "message": message}

#############################################################################
# Tenant isolation
#############################################################################

tenant_violations(inp) := {v |
	some msg in tenant_problems(inp)
	v := violation("tenant_mismatch", msg)
}

tenant_problems(inp) := {msg |
	not subject_in_server_tenant(inp)
	msg := concat("", [
		"subject tenant ", show(object.get(inp, ["subject", "tenant"], null)),
		" does not match the tenant this server serves, ", show(object.get(inp, "tenant", null)),
	])
} | {msg |
	not is_object(tenant_entry(inp))
	msg := concat("", ["tenant ", show(object.get(inp, "tenant", null)), " is not configured in the policy data"])
}

subject_in_server_tenant(inp) if {
	tenant := inp.tenant
	is_string(tenant)
	tenant != ""
	inp.subject.tenant == tenant
}

#############################################################################
# Dispatch by method
#############################################################################

target_violations(inp) := tool_violations(inp) if {
	method_of(inp) == "tools/call"
} else := resource_violations(inp) if {
	method_of(inp) == "resources/read"
} else := prompt_violations(inp) if {
	method_of(inp) == "prompts/get"
} else := {violation("tool_unknown", concat("", ["method ", show(method_of(inp)), " is not authorized"]))}

method_of(inp) := object.get(inp, "method", null)

tool_entry(inp) := object.get(inp, ["lookup", "tool"], null)

prompt_entry(inp) := object.get(inp, ["lookup", "prompt"], null)

tenant_entry(inp) := object.get(inp, ["lookup", "tenant"], null)

tool_name(inp) := object.get(inp, ["tool", "name"], null)

prompt_name(inp) := object.get(inp, ["prompt", "name"], null)

tool_args(inp) := as_object(object.get(inp, ["tool", "arguments"], {}))

prompt_args(inp) := as_object(object.get(inp, ["prompt", "arguments"], {}))

#############################################################################
# tools/call and prompts/get: catalog entry, roles, scopes, arguments, approval
#############################################################################

tool_violations(inp) := {violation("tool_unknown", msg)} if {
	not is_object(tool_entry(inp))
	msg := concat("", ["tool ", show(tool_name(inp)), " is not in the catalog"])
} else := entry_violations(inp, concat("", ["tool ", show(tool_name(inp))]), tool_entry(inp), tool_args(inp))

prompt_violations(inp) := {violation("tool_unknown", msg)} if {
	not is_object(prompt_entry(inp))
	msg := concat("", ["prompt ", show(prompt_name(inp)), " is not in the catalog"])
} else := entry_violations(inp, concat("", ["prompt ", show(prompt_name(inp))]), prompt_entry(inp), prompt_args(inp))

entry_violations(inp, label, entry, args) := (((
	role_violations(inp, label, entry)
	| scope_violations(inp, label, entry))
	| argument_violations(inp, entry, args))
	| approval_violations(inp, label, entry, args))

# The catalog's `roles`, when present, lists the roles allowed to use the entry (any one of
# them). An empty list allows nobody.
role_violations(inp, label, entry) := {v |
	required := object.get(entry, "roles", null)
	required != null
	not has_any_role(inp, required)
	msg := concat("", [label, " requires one of the roles: ", concat(", ", sort(strings_of(required)))])
	v := violation("role_missing", msg)
}

has_any_role(inp, required) if {
	held := subject_roles(inp)
	some role in as_array(required)
	role in held
}

# Every scope in the catalog's `scopes` is required.
scope_violations(inp, label, entry) := {v |
	missing := missing_scopes(inp, object.get(entry, "scopes", []))
	count(missing) > 0
	msg := concat("", [label, " requires scope(s) the token lacks: ", concat(", ", sorted(missing))])
	v := violation("scope_missing", msg)
}

missing_scopes(inp, required) := {s |
	granted := subject_scopes(inp)
	some s in as_array(required)
	not s in granted
}

subject_scopes(inp) := {s | some s in as_array(object.get(inp, ["subject", "scopes"], [])); is_string(s)}

subject_roles(inp) := {r | some r in as_array(object.get(inp, ["subject", "roles"], [])); is_string(r)}

subject_id(inp) := object.get(inp, ["subject", "id"], null)

#############################################################################
# Argument constraints
#
# The catalog's `args` maps an argument name to a descriptor:
#   {"kind": K, "required": bool, "nullable": bool, ...kind options}
# Kinds: path, path_list, relpath_list, glob, glob_list, git_ref, safe_text, sql, url,
# amount, number. An unknown kind is a violation (a catalog mistake fails closed).
#############################################################################

argument_violations(inp, entry, args) := {v |
	# (regopy misparses `some k, v in` inside a comprehension: iterate keys instead)
	descriptors := as_object(object.get(entry, "args", {}))
	some name
	descriptor := descriptors[name]
	some msg in argument_problems(inp, name, descriptor, args)
	v := violation("argument_violation", msg)
}

argument_problems(inp, name, descriptor, args) := {arg_msg(name, "is required")} if {
	not name in object.keys(args)
	object.get(descriptor, "required", false) == true
} else := set() if {
	not name in object.keys(args)
} else := set() if {
	args[name] == null
	object.get(descriptor, "nullable", false) == true
} else := value_problems(inp, name, descriptor, args[name])

value_problems(inp, name, d, v) := path_problems(name, v, tenant_path_prefixes(inp)) if {
	d.kind == "path"
} else := list_problems(name, v, d, "path", tenant_path_prefixes(inp)) if {
	d.kind == "path_list"
} else := list_problems(name, v, d, "relpath", []) if {
	d.kind == "relpath_list"
} else := glob_problems(name, v) if {
	d.kind == "glob"
} else := list_problems(name, v, d, "glob", []) if {
	d.kind == "glob_list"
} else := git_ref_problems(name, v) if {
	d.kind == "git_ref"
} else := safe_text_problems(name, v, d) if {
	d.kind == "safe_text"
} else := sql_problems(inp, name, v, d) if {
	d.kind == "sql"
} else := url_problems(name, v, d, tenant_allowed_hosts(inp)) if {
	d.kind == "url"
} else := amount_problems(inp, name, v, d) if {
	d.kind == "amount"
} else := number_problems(name, v, d) if {
	d.kind == "number"
} else := {arg_msg(name, "has a constraint of unknown kind in the catalog")}

arg_msg(name, why) := concat("", ["argument '", name, "' ", why])

#############################################################################
# Paths, globs, git names, text
#############################################################################

# Control characters, backslashes and double quotes are one defect with one message:
# regopy sees "\n" or "\"" in an input string as a backslash and a letter, OPA as the
# character itself; both engines reject all three and say the same thing.
unsafe_chars_re := `[[:cntrl:]]|\\|"`

unsafe_chars_why := "must not contain control characters, backslashes or double quotes"

# Defects of any path-like value, relative or absolute.
path_defect_patterns := [
	{"re": unsafe_chars_re, "why": unsafe_chars_why},
	{"re": `%`, "why": "must not contain percent-encoding"},
	{"re": `~`, "why": "must not contain '~'"},
	{"re": `(^|/)\.\.(/|$)`, "why": "must not contain '..' segments"},
]

# A path argument: confined to the tenant's path prefixes (data: tenants.<t>.path_prefixes).
path_problems(name, v, prefixes) := {arg_msg(name, "must be a non-empty string")} if {
	not non_empty_string(v)
} else := {arg_msg(name, "is too long")} if {
	count(v) > 4096
} else := {msg |
	some why in path_defects(v, prefixes)
	msg := arg_msg(name, why)
}

path_defects(p, prefixes) := {c.why |
	some c in path_defect_patterns
	regex.match(c.re, p)
} | {"is outside the tenant's allowed directories" | not under_any_prefix(p, prefixes)}

# A prefix names a directory: "/srv/mcp/acme/" admits "/srv/mcp/acme" and everything below
# it, never "/srv/mcp/acme-evil". `..` segments are rejected separately.
under_any_prefix(p, prefixes) if {
	some prefix in prefixes
	startswith(p, directory_form(prefix))
}

under_any_prefix(p, prefixes) if {
	some prefix in prefixes
	p == trim_suffix(prefix, "/")
	p != ""
}

directory_form(prefix) := prefix if endswith(prefix, "/") else := concat("", [prefix, "/"])

tenant_path_prefixes(inp) := [p |
	some p in as_array(object.get(as_object(tenant_entry(inp)), "path_prefixes", []))
	non_empty_string(p)
]

# A list argument: every item is checked with the item kind and named `name[i]`.
list_problems(name, v, d, kind, prefixes) := {arg_msg(name, "must be a list")} if {
	not is_array(v)
} else := {arg_msg(name, "has too many items")} if {
	count(v) > object.get(d, "max_items", 256)
} else := {msg |
	some i
	item := v[i]
	some msg in item_problems(concat("", [name, "[", format_int(i, 10), "]"]), item, kind, prefixes)
}

item_problems(item_name, item, kind, prefixes) := path_problems(item_name, item, prefixes) if {
	kind == "path"
} else := relpath_problems(item_name, item) if {
	kind == "relpath"
} else := glob_problems(item_name, item) if {
	kind == "glob"
} else := {arg_msg(item_name, "has a list constraint of unknown kind in the catalog")}

# A path relative to the server's root (git_add files): no absolute paths, no option-like
# values ("--output=..."), nothing that climbs out.
relpath_problems(name, v) := {arg_msg(name, "must be a non-empty string")} if {
	not non_empty_string(v)
} else := {msg |
	some why in relpath_defects(v)
	msg := arg_msg(name, why)
}

relpath_defects(p) := ({c.why |
	some c in path_defect_patterns
	regex.match(c.re, p)
} | {"must be a relative path" | startswith(p, "/")}) | {"must not start with '-'" | startswith(p, "-")}

# A glob pattern evaluated below an already-checked path: it must not climb out of it.
glob_problems(name, v) := {arg_msg(name, "must be a non-empty string")} if {
	not non_empty_string(v)
} else := {msg |
	some why in glob_defects(v)
	msg := arg_msg(name, why)
}

glob_defects(g) := {c.why |
	some c in path_defect_patterns
	c.why != "must not contain percent-encoding"
	c.why != "must not contain '~'"
	regex.match(c.re, g)
} | {"must be a relative pattern" | startswith(g, "/")} | {"must not start with '~'" | startswith(g, "~")}

# A git revision, range or branch name: never an option ("--output=/etc/x"), no spaces.
git_ref_problems(name, v) := set() if {
	is_string(v)
	regex.match(`^[A-Za-z0-9_@][A-Za-z0-9._/~^@{}:+-]{0,254}$`, v)
} else := {arg_msg(name, "must be a git revision or branch name (letters, digits, ._/~^@{}:+-; not starting with '-')")}

# Short free text handed to a command line (git log --since): no options, no controls.
safe_text_problems(name, v, d) := {arg_msg(name, "must be a string")} if {
	not is_string(v)
} else := {arg_msg(name, "is too long")} if {
	count(v) > object.get(d, "max_length", 256)
} else := {arg_msg(name, unsafe_chars_why)} if {
	regex.match(unsafe_chars_re, v)
} else := {arg_msg(name, "must not start with '-'")} if {
	startswith(v, "-")
} else := set()

#############################################################################
# SQL: read-only unless the subject holds the descriptor's write scope
#############################################################################

sql_problems(inp, name, v, d) := {arg_msg(name, "must be a non-empty string")} if {
	not non_empty_string(v)
} else := {arg_msg(name, "is too long")} if {
	count(v) > object.get(d, "max_length", 10000)
} else := set() if {
	sql_write_granted(inp, d)
} else := {msg |
	some why in sql_read_only_defects(v, d)
	msg := arg_msg(name, why)
}

sql_write_granted(inp, d) if {
	scope := d.write_scope
	is_string(scope)
	scope in subject_scopes(inp)
}

# The write scope was needed and used: the call is privileged (audited).
sql_write_used(inp, d, v) if {
	sql_write_granted(inp, d)
	non_empty_string(v)
	count(sql_read_only_defects(v, d)) > 0
}

sql_read_only_defects(q, d) := {why |
	text := sql_scan_text(q)
	some check in sql_checks(d)
	check.bad == regex.match(check.re, text)
	why := check.why
}

sql_checks(d) := [
	{"re": sql_read_start_re, "bad": false, "why": concat("", ["must start with SELECT or WITH", sql_write_hint(d)])},
	{"re": `;\s*\S`, "bad": true, "why": "must be a single statement"},
	{"re": sql_write_keyword_re, "bad": true, "why": concat("", ["must not contain data-changing keywords (", upper(concat(", ", sql_write_keywords)), ")", sql_write_hint(d)])},
]

sql_write_hint(d) := concat("", [" unless the token has scope ", d.write_scope]) if is_string(d.write_scope) else := ""

# The text the checks scan: escapes and everything outside printable ASCII become spaces,
# then ASCII is lowercased. regopy keeps "\n" in input strings as a backslash and an "n",
# which would glue the next keyword to a word character and hide it from \b; a space can
# only separate words, never join them, so nothing is hidden this way. Only ASCII reaches
# lower() (it differs between engines on other characters), and the regexes stay small
# (regopy has no (?i), and a letter-class pattern for every keyword is slow to compile).
sql_scan_text(q) := lower(regex.replace(regex.replace(q, `\\(u[0-9A-Fa-f]{4}|.)`, " "), `[^ -~]`, " "))

sql_write_keywords := [
	"insert", "update", "delete", "drop", "alter", "create", "attach", "detach", "pragma",
	"replace", "truncate", "grant", "revoke", "merge", "upsert", "into", "vacuum", "reindex",
	"load_extension",
]

sql_write_keyword_re := concat("", [`\b(`, concat("|", sql_write_keywords), `)\b`])

sql_read_start_re := `^\s*(select|with)\b`

#############################################################################
# URLs: http(s) to a host the tenant allows, nothing clever in the authority
#############################################################################

url_problems(name, v, d, hosts) := {arg_msg(name, "must be a non-empty string")} if {
	not non_empty_string(v)
} else := set() if {
	object.get(d, "allow_data_uri", false) == true
	startswith(v, "data:")
} else := {arg_msg(name, "is too long")} if {
	count(v) > 2048
} else := {msg |
	some why in url_defects(v, hosts)
	msg := arg_msg(name, why)
}

url_defects(u, hosts) := {unsafe_chars_why} if {
	regex.match(unsafe_chars_re, u)
} else := {"must not contain whitespace"} if {
	regex.match(`\s`, u)
} else := {"must be an http or https URL"} if {
	not regex.match(`^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]*([/?#].*)?$`, u)
} else := {"must not contain user information ('@') before the host"} if {
	contains(url_authority(u), "@")
} else := {"must name a DNS host or IPv4 address, with an optional port"} if {
	not regex.match(`^[A-Za-z0-9.-]+(:[0-9]{1,5})?$`, url_authority(u))
} else := {"names a host the tenant does not allow"} if {
	not host_allowed(lower(url_authority(u)), hosts)
} else := set()

url_authority(u) := regex.find_all_string_submatch_n(`^[A-Za-z]+://([^/?#]*)`, u, 1)[0][1]

# Entries of tenants.<t>.allowed_hosts: "host" (no port), "host:port", or "*.domain"
# (any subdomain, no port). A port must be listed to be allowed.
host_allowed(authority, hosts) if {
	some h in hosts
	authority == h
}

host_allowed(authority, hosts) if {
	some h in hosts
	startswith(h, "*.")
	not contains(authority, ":")
	endswith(authority, trim_prefix(h, "*"))
}

tenant_allowed_hosts(inp) := [host |
	some h in as_array(object.get(as_object(tenant_entry(inp)), "allowed_hosts", []))
	is_string(h)
	regex.match(`^[*A-Za-z0-9.:-]+$`, h)
	host := lower(h)
]

#############################################################################
# Numbers
#############################################################################

# An amount: a number from 0 to the tenant's limit (the descriptor's tenant_limit names the
# tenant field, max_payment by default). No limit configured = no payment.
amount_problems(inp, name, v, d) := {arg_msg(name, "must be a number")} if {
	not is_number(v)
} else := {arg_msg(name, "must not be negative")} if {
	v < 0
} else := {arg_msg(name, "has no limit configured for this tenant")} if {
	not is_number(tenant_limit(inp, d))
} else := {arg_msg(name, concat("", ["exceeds the tenant's limit of ", sprintf("%v", [tenant_limit(inp, d)])]))} if {
	v > tenant_limit(inp, d)
} else := set()

tenant_limit(inp, d) := object.get(as_object(tenant_entry(inp)), object.get(d, "tenant_limit", "max_payment"), null)

number_problems(name, v, d) := {arg_msg(name, "must be a number")} if {
	not is_number(v)
} else := {arg_msg(name, concat("", ["must be at least ", sprintf("%v", [d.min])]))} if {
	is_number(d.min)
	v < d.min
} else := {arg_msg(name, concat("", ["must be at most ", sprintf("%v", [d.max])]))} if {
	is_number(d.max)
	v > d.max
} else := set()

#############################################################################
# Human approval (stateless): the service verified signature, expiry and digest of every
# token in input.approvals; the policy decides whether that approver may approve.
#############################################################################

approval_violations(inp, label, entry, args) := set() if {
	not approval_needed(entry, args)
} else := set() if {
	approved(inp, entry)
} else := {v |
	msg := concat("", [label, " requires approval by one of the roles: ", concat(", ", approver_roles(entry))])
	v := violation("approval_required", msg)
} | {v |
	some msg in approval_problems(inp, entry)
	v := violation("approval_invalid", msg)
}

# Any approval spec other than null/false means approval is needed, unless its `when`
# threshold is provably not reached: {"when": {"arg": "amount", "above": 1000}}.
approval_needed(entry, args) if {
	spec := object.get(entry, "approval", null)
	spec != null
	spec != false
	not approval_waived(spec, args)
}

approval_waived(spec, args) if {
	when := spec.when
	is_string(when.arg)
	is_number(when.above)
	v := object.get(args, when.arg, null)
	is_number(v)
	v <= when.above
}

approver_roles(entry) := roles if {
	roles := sort(strings_of(entry.approval.roles))
	count(roles) > 0
} else := default_approver_roles

approval_ttl(entry) := ttl if {
	ttl := entry.approval.ttl_seconds
	is_number(ttl)
	ttl > 0
} else := default_approval_ttl_seconds

approvals(inp) := as_array(object.get(inp, "approvals", []))

approval_errors(inp) := as_array(object.get(inp, "approval_errors", []))

approved(inp, entry) if {
	some approval in approvals(inp)
	approval_acceptable(inp, approval, approver_roles(entry))
}

# Someone else, holding an approver role, approved this very request.
approval_acceptable(inp, approval, roles) if {
	approver_is_other(inp, approval)
	approval_matches_request(inp, approval)
	some role in as_array(object.get(approval, "roles", []))
	role in roles
}

approver_is_other(inp, approval) if {
	approver := approval.approver
	non_empty_string(approver)
	approver != subject_id(inp)
}

# Defence in depth: the service already compared digests.
approval_matches_request(inp, approval) if {
	digest := inp.request_digest
	non_empty_string(digest)
	approval.digest == digest
}

# Why the approvals that came with the request do not count.
approval_problems(inp, entry) := {msg |
	some approval in approvals(inp)
	is_object(approval)
	approval.approver == subject_id(inp)
	non_empty_string(approval.approver)
	msg := "the requesting subject cannot approve its own request"
} | {msg |
	some approval in approvals(inp)
	approver_is_other(inp, approval)
	not approval_has_role(approval, approver_roles(entry))
	msg := concat("", [
		"approver ", show(approval.approver), " holds none of the roles that may approve: ",
		concat(", ", approver_roles(entry)),
	])
} | {msg |
	some approval in approvals(inp)
	not approval_matches_request(inp, approval)
	msg := "an approval was issued for a different request"
} | {msg |
	some approval in approvals(inp)
	not non_empty_string(object.get(as_object(approval), "approver", null))
	msg := "an approval names no approver"
} | {msg |
	errors := approval_errors(inp)
	count(errors) > 0
	codes := sorted({code |
		some e in errors
		code := show(object.get(as_object(e), "code", null))
	})
	msg := concat("", [
		format_int(count(errors), 10), " approval token(s) were rejected: ", concat(", ", codes),
	])
}

approval_has_role(approval, roles) if {
	some role in as_array(object.get(approval, "roles", []))
	role in roles
}

# The entry whose approval a deny asks for (tools and prompts; resources have none).
approval_target(inp) := [tool_entry(inp), tool_args(inp)] if {
	method_of(inp) == "tools/call"
} else := [prompt_entry(inp), prompt_args(inp)] if {
	method_of(inp) == "prompts/get"
}

#############################################################################
# Obligations
#############################################################################

# On deny, ask for approval only when approval is all that is missing: asking a human to
# approve a call that would still be denied wastes their attention.
deny_obligations(inp, vs) := [{"type": "require_approval", "params": {
	"digest": object.get(inp, "request_digest", ""),
	"approver_roles": approver_roles(entry),
	"expires_in_seconds": approval_ttl(entry),
}}] if {
	codes := {v.code | some v in vs}
	"approval_required" in codes
	count(codes - {"approval_required", "approval_invalid"}) == 0
	entry := approval_target(inp)[0]
} else := []

allow_obligations(inp) := obligations_for(target_entries(inp), is_privileged(inp))

obligations_for(entries, privileged) := array.concat(
	array.concat(redact_obligations(entries), size_obligations(entries)),
	audit_obligations(entries, privileged),
)

target_entries(inp) := [tool_entry(inp)] if {
	method_of(inp) == "tools/call"
} else := [prompt_entry(inp)] if {
	method_of(inp) == "prompts/get"
} else := matched_resource_rules(inp)

redact_obligations(entries) := [{"type": "redact", "params": {"paths": paths}}] if {
	paths := sorted({p | some e in entries; some p in as_array(object.get(e, "redact", [])); is_string(p)})
	count(paths) > 0
} else := []

# Several matching resource rules: the smallest limit wins.
size_obligations(entries) := [{"type": "max_result_bytes", "params": {"bytes": min(limits)}}] if {
	limits := [n | some e in entries; n := object.get(e, "max_result_bytes", null); is_number(n)]
	count(limits) > 0
} else := []

audit_obligations(entries, privileged) := [{"type": "audit", "params": {"level": "high"}}] if {
	privileged == true
} else := [{"type": "audit", "params": {"level": "high"}}] if {
	some e in entries
	high_risk(e)
} else := []

high_risk(e) if object.get(e, "risk", "") in {"high", "critical"}

high_risk(e) if object.get(e, "destructive", false) == true

is_privileged(inp) := true if privileged(inp) else := false

# A call that needed a human approval, or used a write scope to get past a read-only check.
privileged(inp) if {
	target := approval_target(inp)
	is_object(target[0])
	approval_needed(target[0], target[1])
}

privileged(inp) if {
	method_of(inp) == "tools/call"
	args := tool_args(inp)
	some name, d in as_object(object.get(as_object(tool_entry(inp)), "args", {}))
	d.kind == "sql"
	sql_write_used(inp, d, object.get(args, name, null))
}

#############################################################################
# resources/read: rules from data.mcp.catalog.resources, matched by prefix
#############################################################################

resource_uri(inp) := object.get(inp, ["resource", "uri"], null)

# The rule list is small and bundle-defined: iterating it costs nothing a caller controls.
matched_resource_rules(inp) := [rule |
	uri := resource_uri(inp)
	non_empty_string(uri)
	some rule in as_array(object.get(data.mcp.catalog, "resources", []))
	resource_rule_matches(rule, uri)
]

resource_rule_matches(rule, uri) if {
	object.get(rule, "exact", false) == true
	uri == rule.prefix
}

resource_rule_matches(rule, uri) if {
	object.get(rule, "exact", false) != true
	non_empty_string(rule.prefix)
	startswith(uri, rule.prefix)
}

resource_violations(inp) := {violation("tool_unknown", "the resource URI matches no resource rule")} if {
	count(matched_resource_rules(inp)) == 0
} else := uri_violations(inp) | {v |
	some rule in matched_resource_rules(inp)
	some v in role_violations(inp, "this resource", rule) | scope_violations(inp, "this resource", rule)
}

uri_violations(inp) := {v |
	some why in uri_defects(resource_uri(inp), tenant_path_prefixes(inp))
	v := violation("argument_violation", concat("", ["resource URI ", why]))
}

uri_defects(uri, prefixes) := {"is too long"} if {
	count(uri) > 2048
} else := {unsafe_chars_why} if {
	regex.match(unsafe_chars_re, uri)
} else := {"must not contain whitespace"} if {
	regex.match(`\s`, uri)
} else := file_uri_defects(uri, prefixes) if {
	startswith(uri, "file://")
} else := set()

# file:// URIs name local files: the same confinement as path arguments.
file_uri_defects(uri, prefixes) := {"must be a file URI with an empty host (file:///path)"} if {
	not startswith(uri, "file:///")
} else := path_defects(trim_prefix(uri, "file://"), prefixes)

#############################################################################
# tools/list filtering: who may see a tool (no arguments, no approvals yet)
#############################################################################

decide_listing(inp) := {"allow": true, "reasons": [], "obligations": []} if {
	count(listing_violations(inp)) == 0
	is_object(tool_entry(inp))
} else := {"allow": false, "reasons": deny_reasons(listing_violations(inp)), "obligations": []}

listing_violations(inp) := tenant_violations(inp) | listing_tool_violations(inp)

listing_tool_violations(inp) := {violation("tool_unknown", msg)} if {
	not is_object(tool_entry(inp))
	msg := concat("", ["tool ", show(tool_name(inp)), " is not in the catalog"])
} else := role_violations(inp, label, tool_entry(inp)) | scope_violations(inp, label, tool_entry(inp)) if {
	label := concat("", ["tool ", show(tool_name(inp))])
}

#############################################################################
# Decision-log masking: input paths whose values must not be written to the log
#############################################################################

mask_paths(inp) := sorted(sensitive_input_paths(inp))

sensitive_input_paths(inp) := {"tool.arguments" |
	method_of(inp) == "tools/call"
	object.get(as_object(tool_entry(inp)), "sensitive", false) == true
} | {"prompt.arguments" |
	method_of(inp) == "prompts/get"
	object.get(as_object(prompt_entry(inp)), "sensitive", false) == true
}

#############################################################################
# Helpers
#############################################################################

non_empty_string(x) if {
	is_string(x)
	x != ""
}

as_array(x) := x if is_array(x) else := []

# A set as a sorted array. (regopy's sort() of a set returns a set, which prints like an
# array but never equals one.)
sorted(s) := sort([x | some x in s])

as_object(x) := x if is_object(x) else := {}

strings_of(xs) := [x | some x in as_array(xs); is_string(x)]

# A caller-supplied name, quoted, only when it is short and made of safe characters.
show(x) := concat("", ["'", x, "'"]) if {
	is_string(x)
	regex.match(`^[A-Za-z0-9._:/@+-]{1,64}$`, x)
} else := "(missing)" if {
	x == null
} else := "(unprintable value)"
