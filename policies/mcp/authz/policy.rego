# mcp-authz default policy: may this MCP request run?
#
# Entry points:
#   data.mcp.authz.decision       {"allow", "reasons", "obligations"} for one request. For
#                                 method "tools/list" (FilterTools, one evaluation per tool) it
#                                 answers who may SEE a tool: tenant, catalog, roles, scopes; no
#                                 argument or approval checks, since a listing has no arguments.
#   data.mcp.authz.list_decision  the same value (kept for entry points written before
#                                 `decision` answered tools/list; costs nothing unless queried)
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
# - `decide(inp)` is the whole decision as a function of the input document, so unit tests
#   call `decide({...})` directly: regopy crashes on `with input as` for rules that call
#   builtins. The `decision` rule evaluates it once per query.
# - Speed (regopy, measured): a user function call costs ~1-5 µs, an else branch ~2 µs, an
#   input reference ~15 µs, a comprehension or `in` ~20-25 µs, an object literal ~8 µs per
#   field, a regex ~20-60 µs; function calls are NOT memoized. So each fact is read from the
#   input once, where it is needed, and handed down as an argument (the catalog entry, the
#   arguments, the target kind); no fact object is built. A check that passes answers
#   `set()` from an else branch without building anything; messages, labels and reason
#   objects are built only for violations, which exist only on a deny. Path, URL and URI
#   checks have a fast path (one combined regex instead of one per defect) whose answer is
#   the same as the detailed check's.
# - Deny by default. A request is allowed only when a catalog entry for it exists AND no
#   check produced a violation. Checks are written as "find what is wrong" (sets of
#   violations), and every check that reads caller data treats a missing or mistyped field
#   as a violation, never as "nothing to check". Every category is checked, so a deny lists
#   all of its reasons, in precedence order.
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
#   undefined instead of true (`is_null` instead of `!= null` on caller values); sort() of a
#   set returns a set (sets are sorted through an array, see `sorted`).
package mcp.authz

import rego.v1

decision := decide(input)

list_decision := decision

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
	result := decide_method(inp, object.get(inp, "method", null))
} else := {
	"allow": false,
	"reasons": [violation("policy_error", "the policy could not evaluate this request")],
	"obligations": [],
}

# The target's kind ("tool", "prompt", "resource"), its catalog entry (looked up by the
# service) and its arguments are read here, once, and handed down.
decide_method(inp, method) := call_outcome(inp, "tool", entry, args) if {
	method == "tools/call"
	entry := object.get(inp, ["lookup", "tool"], null)
	args := as_object(object.get(inp, ["tool", "arguments"], {}))
} else := listing_outcome(inp, object.get(inp, ["lookup", "tool"], null)) if {
	method == "tools/list"
} else := call_outcome(inp, "prompt", entry, args) if {
	method == "prompts/get"
	entry := object.get(inp, ["lookup", "prompt"], null)
	args := as_object(object.get(inp, ["prompt", "arguments"], {}))
} else := resource_outcome(inp, rules) if {
	method == "resources/read"
	rules := matched_resource_rules(object.get(inp, ["resource", "uri"], null))
} else := denied(tenant_violations(inp) | {violation("tool_unknown", msg)}, []) if {
	msg := concat("", ["method ", show(method), " is not authorized"])
}

# tools/call and prompts/get. The only path to allow: the entry exists and nothing is wrong.
call_outcome(inp, kind, entry, args) := outcome_of(inp, kind, entry, args, vs) if {
	vs := tenant_violations(inp) | entry_violations(inp, kind, entry, args)
}

outcome_of(inp, kind, entry, args, vs) := allowed(call_obligations(inp, kind, entry, args)) if {
	count(vs) == 0
} else := denied(vs, approval_obligations(inp, entry, vs))

entry_violations(inp, kind, entry, args) := {unknown_target(inp, kind)} if {
	not is_object(entry)
} else := (((
	role_violations(inp, kind, entry)
	| scope_violations(inp, kind, entry))
	| argument_violations(inp, entry, args))
	| approval_violations(inp, kind, entry, args))

# tools/list (FilterTools, one evaluation per tool): who may SEE the tool. A listing has no
# arguments, needs no approval and carries no obligations.
listing_outcome(inp, entry) := plain_outcome(tenant_violations(inp) | listing_violations(inp, entry))

plain_outcome(vs) := allowed([]) if {
	count(vs) == 0
} else := denied(vs, [])

listing_violations(inp, entry) := {unknown_target(inp, "tool")} if {
	not is_object(entry)
} else := role_violations(inp, "tool", entry) | scope_violations(inp, "tool", entry)

allowed(obligations) := {"allow": true, "reasons": [], "obligations": obligations}

denied(vs, obligations) := {"allow": false, "reasons": deny_reasons(vs), "obligations": obligations}

unknown_target(inp, kind) := violation("tool_unknown", concat("", [target_label(inp, kind), " is not in the catalog"]))

# How messages name the target: "tool 'read_file'", "prompt 'fetch'", "this resource".
target_label(inp, kind) := "this resource" if {
	kind == "resource"
} else := concat("", [kind, " ", show(object.get(inp, [kind, "name"], null))])

# One reason per code, in precedence order; several findings of one code are joined.
# (One finding, the common deny, is its own reason; otherwise only the codes present are
# visited, sorted into precedence order by rank.)
deny_reasons(vs) := [v | some v in vs] if {
	count(vs) == 1
} else := reasons if {
	present := sorted({[reason_rank[v.code], v.code] | some v in vs})
	reasons := [reason |
		some pair in present
		code := pair[1]
		msgs := {v.message | some v in vs; v.code == code}
		reason := {"code": code, "message": concat("; ", sorted(msgs))}
	]
	count(reasons) > 0
} else := [violation("policy_error", "no rule allowed this request (deny by default)")]

reason_rank := {
	"tenant_mismatch": 0, "tool_unknown": 1, "role_missing": 2, "scope_missing": 3,
	"argument_violation": 4, "approval_invalid": 5, "approval_required": 6,
}

violation(code, message) := {"code": code, "message": message}

#############################################################################
# Tenant isolation
#############################################################################

tenant_violations(inp) := set() if {
	is_object(inp.lookup.tenant)
	subject_in_server_tenant(inp)
} else := {v |
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
	not is_object(object.get(inp, ["lookup", "tenant"], null))
	msg := concat("", ["tenant ", show(object.get(inp, "tenant", null)), " is not configured in the policy data"])
}

subject_in_server_tenant(inp) if {
	tenant := inp.tenant
	is_string(tenant)
	tenant != ""
	inp.subject.tenant == tenant
}

# The tenant's entry in the policy data (looked up by the service), {} when there is none.
tenant_entry(inp) := as_object(object.get(inp, ["lookup", "tenant"], null))

#############################################################################
# Roles and scopes (tools, prompts, resource rules)
#############################################################################

# The catalog's `roles`, when present, lists the roles allowed to use the entry (any one of
# them). An empty list allows nobody.
role_violations(inp, kind, entry) := set() if {
	not requires_roles(entry)
} else := set() if {
	held := as_array(object.get(inp, ["subject", "roles"], []))
	some role in as_array(entry.roles)
	role in held
} else := {violation("role_missing", msg)} if {
	msg := concat("", [target_label(inp, kind), " requires one of the roles: ", concat(", ", sort(strings_of(entry.roles)))])
}

requires_roles(entry) if {
	roles := entry.roles
	not is_null(roles)
}

# Every scope in the catalog's `scopes` is required.
scope_violations(inp, kind, entry) := set() if {
	not lacks_scope(subject_scopes(inp), entry)
} else := {violation("scope_missing", msg)} if {
	msg := concat("", [target_label(inp, kind), " requires scope(s) the token lacks: ", concat(", ", sorted(missing_scopes(inp, entry)))])
}

lacks_scope(granted, entry) if {
	some s in as_array(entry.scopes)
	not s in granted
}

missing_scopes(inp, entry) := {s |
	granted := subject_scopes(inp)
	some s in as_array(object.get(entry, "scopes", []))
	not s in granted
}

# The token's scopes (an array: a required scope, a string, can only equal a string in it).
subject_scopes(inp) := scopes if {
	scopes := inp.subject.scopes
	is_array(scopes)
} else := []

#############################################################################
# Argument constraints
#
# The catalog's `args` maps an argument name to a descriptor:
#   {"kind": K, "required": bool, "nullable": bool, ...kind options}
# Kinds: path, path_list, relpath_list, glob, glob_list, git_ref, safe_text, sql, url,
# amount, number. An unknown kind is a violation (a catalog mistake fails closed).
# The value checkers below take plain values (no input), so unit tests call them directly.
#############################################################################

argument_violations(inp, entry, args) := set() if {
	not entry.args
} else := {v |
	# (regopy misparses `some k, v in` inside a comprehension: iterate keys instead)
	descriptors := as_object(entry.args)
	some name
	descriptor := descriptors[name]
	some msg in argument_problems(inp, name, descriptor, args)
	v := violation("argument_violation", msg)
}

argument_problems(inp, name, descriptor, args) := value_problems(inp, name, descriptor, value) if {
	value := args[name]
	not is_null(value)
} else := {arg_msg(name, "is required")} if {
	not name in object.keys(args)
	object.get(descriptor, "required", false) == true
} else := set() if {
	not name in object.keys(args)
} else := set() if {
	object.get(descriptor, "nullable", false) == true
} else := value_problems(inp, name, descriptor, null)

# By kind, the most common first.
value_problems(inp, name, d, v) := path_problems(name, v, tenant_prefixes(inp)) if {
	d.kind == "path"
} else := url_problems(name, v, d, object.get(tenant_entry(inp), "allowed_hosts", [])) if {
	d.kind == "url"
} else := list_problems(name, v, d, "path", tenant_prefixes(inp)) if {
	d.kind == "path_list"
} else := git_ref_problems(name, v) if {
	d.kind == "git_ref"
} else := sql_problems(name, v, d, subject_scopes(inp)) if {
	d.kind == "sql"
} else := amount_problems(name, v, d, tenant_entry(inp)) if {
	d.kind == "amount"
} else := number_problems(name, v, d) if {
	d.kind == "number"
} else := safe_text_problems(name, v, d) if {
	d.kind == "safe_text"
} else := list_problems(name, v, d, "relpath", []) if {
	d.kind == "relpath_list"
} else := named(name, glob_whys(v)) if {
	d.kind == "glob"
} else := list_problems(name, v, d, "glob", []) if {
	d.kind == "glob_list"
} else := {arg_msg(name, "has a constraint of unknown kind in the catalog")}

arg_msg(name, why) := concat("", ["argument '", name, "' ", why])

# Messages for an argument from the reasons its value is wrong.
named(name, whys) := {msg |
	some why in whys
	msg := arg_msg(name, why)
}

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

# Fast path (one regex instead of four): a value without any character the patterns look for
# and without ".." has none of their defects.
path_suspect_re := `[[:cntrl:]\\"%~]`

pattern_defects(p) := set() if {
	not regex.match(path_suspect_re, p)
	not contains(p, "..")
} else := {c.why |
	some c in path_defect_patterns
	regex.match(c.re, p)
}

# A path argument: confined to the tenant's path prefixes (data: tenants.<t>.path_prefixes).
# The fast path answers the common case, a clean path under a prefix, with the same result as
# `path_whys` (which finds every defect) and a third of its work.
path_problems(name, v, prefixes) := set() if {
	is_string(v)
	v != ""
	count(v) <= 4096
	not regex.match(path_suspect_re, v)
	not contains(v, "..")
	under_any_prefix(v, prefixes) == true
} else := named(name, path_whys(v, prefixes))

path_whys(v, prefixes) := {"must be a non-empty string"} if {
	not non_empty_string(v)
} else := {"is too long"} if {
	count(v) > 4096
} else := path_defects(v, prefixes)

path_defects(p, prefixes) := pattern_defects(p) | {"is outside the tenant's allowed directories" |
	under_any_prefix(p, prefixes) == false
}

# A prefix names a directory: "/srv/mcp/acme/" admits "/srv/mcp/acme" and everything below
# it, never "/srv/mcp/acme-evil". `..` segments are rejected separately.
# Only non-empty string prefixes count (a data mistake must not admit everything).
under_any_prefix(p, prefixes) := true if {
	some prefix in prefixes
	non_empty_string(prefix)
	startswith(p, directory_form(prefix))
} else := true if {
	some prefix in prefixes
	non_empty_string(prefix)
	p == trim_suffix(prefix, "/")
	p != ""
} else := false

directory_form(prefix) := prefix if endswith(prefix, "/") else := concat("", [prefix, "/"])

# The tenant's path prefixes as its data lists them ([] when none); `under_any_prefix`
# skips anything that is not a non-empty string.
tenant_prefixes(inp) := prefixes if {
	prefixes := inp.lookup.tenant.path_prefixes
	is_array(prefixes)
} else := []

# A list argument: every item is checked with the item kind and named `name[i]` (the name is
# built only for an item that has a problem).
list_problems(name, v, d, kind, prefixes) := {arg_msg(name, "must be a list")} if {
	not is_array(v)
} else := {arg_msg(name, "has too many items")} if {
	count(v) > object.get(d, "max_items", 256)
} else := {msg |
	some i
	item := v[i]
	some why in item_whys(item, kind, prefixes)
	msg := arg_msg(concat("", [name, "[", format_int(i, 10), "]"]), why)
}

item_whys(item, kind, prefixes) := path_whys(item, prefixes) if {
	kind == "path"
} else := relpath_whys(item) if {
	kind == "relpath"
} else := glob_whys(item) if {
	kind == "glob"
} else := {"has a list constraint of unknown kind in the catalog"}

# A path relative to the server's root (git_add files): no absolute paths, no option-like
# values ("--output=..."), nothing that climbs out.
relpath_whys(v) := {"must be a non-empty string"} if {
	not non_empty_string(v)
} else := relpath_defects(v)

relpath_defects(p) := (pattern_defects(p) | {"must be a relative path" | startswith(p, "/")}) | {"must not start with '-'" | startswith(p, "-")}

# A glob pattern evaluated below an already-checked path: it must not climb out of it.
# Percent signs and a '~' inside a pattern are literal characters, not defects.
glob_whys(v) := {"must be a non-empty string"} if {
	not non_empty_string(v)
} else := glob_defects(v)

glob_defects(g) := (({why |
	some why in pattern_defects(g)
	not why in {"must not contain percent-encoding", "must not contain '~'"}
} | {"must be a relative pattern" | startswith(g, "/")}) | {"must not start with '~'" | startswith(g, "~")})

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

sql_problems(name, v, d, scopes) := {arg_msg(name, "must be a non-empty string")} if {
	not non_empty_string(v)
} else := {arg_msg(name, "is too long")} if {
	count(v) > object.get(d, "max_length", 10000)
} else := set() if {
	sql_write_granted(d, scopes)
} else := named(name, sql_read_only_defects(v, d))

sql_write_granted(d, scopes) if {
	scope := d.write_scope
	is_string(scope)
	scope in scopes
}

# The write scope was needed and used: the call is privileged (audited).
sql_write_used(d, v, scopes) if {
	sql_write_granted(d, scopes)
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
	# mcp-authz: ignore=divergent-builtin (upper() of the ASCII keyword list)
	{"re": sql_write_keyword_re, "bad": true, "why": concat("", ["must not contain data-changing keywords (", upper(concat(", ", sql_write_keywords)), ")", sql_write_hint(d)])},
]

sql_write_hint(d) := concat("", [" unless the token has scope ", d.write_scope]) if is_string(d.write_scope) else := ""

# The text the checks scan: escapes and everything outside printable ASCII become spaces,
# then ASCII is lowercased. regopy keeps "\n" in input strings as a backslash and an "n",
# which would glue the next keyword to a word character and hide it from \b; a space can
# only separate words, never join them, so nothing is hidden this way. Only ASCII reaches
# lower() (it differs between engines on other characters), and the regexes stay small
# (regopy has no (?i), and a letter-class pattern for every keyword is slow to compile).
# mcp-authz: ignore=divergent-builtin (only printable ASCII is left when lower() runs)
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
} else := named(name, url_defects(v, hosts))

url_defects(u, hosts) := text_defects(u) if {
	regex.match(unsafe_or_space_re, u)
} else := authority_defects(http_authority(u), hosts)

# One regex for the common case (nothing unsafe, no whitespace); `text_defects` says which.
unsafe_or_space_re := `[[:cntrl:]\\"\s]`

text_defects(u) := {unsafe_chars_why} if {
	regex.match(unsafe_chars_re, u)
} else := {"must not contain whitespace"}

# The authority of an http(s) URL, or null when `u` is not one.
http_authority(u) := found[0][1] if {
	found := regex.find_all_string_submatch_n(`^[Hh][Tt][Tt][Pp][Ss]?://([^/?#]*)([/?#].*)?$`, u, 1)
	count(found) == 1
} else := null

authority_defects(authority, hosts) := {"must be an http or https URL"} if {
	is_null(authority)
} else := {"must not contain user information ('@') before the host"} if {
	contains(authority, "@")
} else := {"must name a DNS host or IPv4 address, with an optional port"} if {
	not regex.match(`^[A-Za-z0-9.-]+(:[0-9]{1,5})?$`, authority)
} else := {"names a host the tenant does not allow"} if {
	# mcp-authz: ignore=divergent-builtin (the authority matched an ASCII-only regex above)
	not host_allowed(lower(authority), hosts)
} else := set()

# Entries of tenants.<t>.allowed_hosts: "host" (no port), "host:port", or "*.domain"
# (any subdomain, no port). A port must be listed to be allowed. Only an entry that matches
# is checked for well-formedness (one regex, not one per entry); the authority is ASCII, so
# an entry lower() could fold differently in the two engines never matches in either.
host_allowed(authority, hosts) if {
	some h in as_array(hosts)
	is_string(h)
	# mcp-authz: ignore=divergent-builtin (a non-ASCII entry fails host_entry_valid in both)
	authority == lower(h)
	host_entry_valid(h)
}

host_allowed(authority, hosts) if {
	some h in as_array(hosts)
	is_string(h)
	startswith(h, "*.")
	not contains(authority, ":")
	# mcp-authz: ignore=divergent-builtin (a non-ASCII entry fails host_entry_valid in both)
	endswith(authority, lower(trim_prefix(h, "*")))
	host_entry_valid(h)
}

host_entry_valid(h) if regex.match(`^[*A-Za-z0-9.:-]+$`, h)

#############################################################################
# Numbers
#############################################################################

# An amount: a number from 0 to the tenant's limit (the descriptor's tenant_limit names the
# tenant field, max_payment by default). No limit configured = no payment.
amount_problems(name, v, d, tenant) := named(name, amount_whys(v, limit)) if {
	limit := object.get(tenant, object.get(d, "tenant_limit", "max_payment"), null)
}

amount_whys(v, limit) := {"must be a number"} if {
	not is_number(v)
} else := {"must not be negative"} if {
	v < 0
} else := {"has no limit configured for this tenant"} if {
	not is_number(limit)
} else := {concat("", ["exceeds the tenant's limit of ", sprintf("%v", [limit])])} if {
	v > limit
} else := set()

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

approval_violations(inp, kind, entry, args) := set() if {
	not approval_needed(entry, args)
} else := approval_denial(inp, kind, approver_roles(entry)) if {
	not approved(inp, approver_roles(entry))
} else := set()

approval_denial(inp, kind, roles) := {v |
	msg := concat("", [target_label(inp, kind), " requires approval by one of the roles: ", concat(", ", roles)])
	v := violation("approval_required", msg)
} | {v |
	some msg in approval_problems(inp, roles)
	v := violation("approval_invalid", msg)
}

# Any approval spec other than null/false means approval is needed, unless its `when`
# threshold is provably not reached: {"when": {"arg": "amount", "above": 1000}}.
approval_needed(entry, args) if {
	spec := entry.approval
	approval_spec_active(spec) == true
	not approval_waived(spec, args)
}

approval_spec_active(spec) := false if {
	is_null(spec)
} else := false if {
	spec == false
} else := true

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

approved(inp, roles) if {
	some approval in approvals(inp)
	approval_acceptable(inp, approval, roles)
}

# Someone else, holding an approver role, approved this very request.
approval_acceptable(inp, approval, roles) if {
	approver_is_other(inp, approval)
	approval_matches_request(inp, approval)
	approval_has_role(approval, roles)
}

approver_is_other(inp, approval) if {
	approver := approval.approver
	non_empty_string(approver)
	approver != object.get(inp, ["subject", "id"], null)
}

# Defence in depth: the service already compared digests.
approval_matches_request(inp, approval) if {
	digest := inp.request_digest
	non_empty_string(digest)
	approval.digest == digest
}

approval_has_role(approval, roles) if {
	some role in as_array(object.get(approval, "roles", []))
	role in roles
}

# Why the approvals that came with the request do not count.
approval_problems(inp, roles) := {msg |
	some approval in approvals(inp)
	is_object(approval)
	approval.approver == object.get(inp, ["subject", "id"], null)
	non_empty_string(approval.approver)
	msg := "the requesting subject cannot approve its own request"
} | {msg |
	some approval in approvals(inp)
	approver_is_other(inp, approval)
	not approval_has_role(approval, roles)
	msg := concat("", [
		"approver ", show(approval.approver), " holds none of the roles that may approve: ",
		concat(", ", roles),
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
	errors := as_array(object.get(inp, "approval_errors", []))
	count(errors) > 0
	codes := sorted({code |
		some e in errors
		code := show(object.get(as_object(e), "code", null))
	})
	msg := concat("", [
		format_int(count(errors), 10), " approval token(s) were rejected: ", concat(", ", codes),
	])
}

#############################################################################
# Obligations
#############################################################################

# On deny, ask for approval only when approval is all that is missing: asking a human to
# approve a call that would still be denied wastes their attention.
approval_obligations(inp, entry, vs) := [{"type": "require_approval", "params": {
	"digest": object.get(inp, "request_digest", ""),
	"approver_roles": approver_roles(entry),
	"expires_in_seconds": approval_ttl(entry),
}}] if {
	codes := {v.code | some v in vs}
	"approval_required" in codes
	count(codes - {"approval_required", "approval_invalid"}) == 0
} else := []

# An allowed tool or prompt call: one catalog entry.
call_obligations(inp, kind, entry, args) := array.concat(
	array.concat(entry_redact_obligations(entry), entry_size_obligations(entry)),
	call_audit_obligations(inp, kind, entry, args),
)

entry_redact_obligations(entry) := [] if {
	not entry.redact
} else := redact_obligations([entry])

entry_size_obligations(entry) := [{"type": "max_result_bytes", "params": {"bytes": n}}] if {
	n := entry.max_result_bytes
	is_number(n)
} else := []

redact_obligations(entries) := [{"type": "redact", "params": {"paths": paths}}] if {
	paths := sorted({p | some e in entries; some p in as_array(object.get(e, "redact", [])); is_string(p)})
	count(paths) > 0
} else := []

# Several matching resource rules: the smallest limit wins.
size_obligations(entries) := [{"type": "max_result_bytes", "params": {"bytes": min(limits)}}] if {
	limits := [n | some e in entries; n := object.get(e, "max_result_bytes", null); is_number(n)]
	count(limits) > 0
} else := []

audit_high := [{"type": "audit", "params": {"level": "high"}}]

# High-risk targets and privileged calls are audited (the cheap catalog check first).
call_audit_obligations(inp, kind, entry, args) := audit_high if {
	high_risk(entry) == true
} else := audit_high if {
	privileged(inp, kind, entry, args)
} else := []

high_risk(e) := true if {
	e.risk == "high"
} else := true if {
	e.risk == "critical"
} else := true if {
	e.destructive == true
} else := false

# A call that needed a human approval, or used a write scope to get past a read-only check.
privileged(_, _, entry, args) if approval_needed(entry, args)

privileged(inp, "tool", entry, args) if {
	descriptors := as_object(entry.args)
	some name
	d := descriptors[name]
	d.kind == "sql"
	sql_write_used(d, object.get(args, name, null), subject_scopes(inp))
}

#############################################################################
# resources/read: rules from data.mcp.catalog.resources, matched by prefix
#############################################################################

# The rule list is small and bundle-defined: iterating it costs nothing a caller controls.
matched_resource_rules(uri) := [rule |
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

resource_outcome(inp, rules) := resource_verdict(inp, rules, tenant_violations(inp) | resource_violations(inp, rules))

resource_verdict(inp, rules, vs) := allowed(array.concat(
	array.concat(redact_obligations(rules), size_obligations(rules)),
	resource_audit_obligations(rules),
)) if {
	count(vs) == 0
} else := denied(vs, [])

resource_audit_obligations(rules) := audit_high if {
	some rule in rules
	high_risk(rule) == true
} else := []

resource_violations(inp, rules) := {violation("tool_unknown", "the resource URI matches no resource rule")} if {
	count(rules) == 0
} else := uri_violations(inp) | {v |
	some rule in rules
	some v in role_violations(inp, "resource", rule) | scope_violations(inp, "resource", rule)
}

uri_violations(inp) := {v |
	some why in uri_defects(inp.resource.uri, tenant_prefixes(inp))
	v := violation("argument_violation", concat("", ["resource URI ", why]))
}

uri_defects(uri, prefixes) := {"is too long"} if {
	count(uri) > 2048
} else := text_defects(uri) if {
	regex.match(unsafe_or_space_re, uri)
} else := file_uri_defects(uri, prefixes) if {
	startswith(uri, "file://")
} else := set()

# file:// URIs name local files: the same confinement as path arguments.
file_uri_defects(uri, prefixes) := {"must be a file URI with an empty host (file:///path)"} if {
	not startswith(uri, "file:///")
} else := path_defects(trim_prefix(uri, "file://"), prefixes)

#############################################################################
# Decision-log masking: input paths whose values must not be written to the log
#############################################################################

mask_paths(inp) := ["tool.arguments"] if {
	inp.method == "tools/call"
	object.get(inp, ["lookup", "tool", "sensitive"], false) == true
} else := ["prompt.arguments"] if {
	inp.method == "prompts/get"
	object.get(inp, ["lookup", "prompt", "sensitive"], false) == true
} else := []

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
# (The length is checked apart: a bounded repetition like {1,64} makes a regex slow to compile,
# and regopy compiles it on every call.)
show(x) := concat("", ["'", x, "'"]) if {
	is_string(x)
	count(x) <= 64
	regex.match(`^[A-Za-z0-9._:/@+-]+$`, x)
} else := "(missing)" if {
	x == null
} else := "(unprintable value)"
