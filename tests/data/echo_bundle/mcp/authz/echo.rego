# A test policy that echoes every caller string into its output, so tests can prove that no
# caller string changes the decision however it is encoded. Allows only safe_tool, only for a
# subject of the request's tenant holding the tool's scopes.
package mcp.authz

import rego.v1

decision := decide(input)

decide(inp) := {"allow": allowed(inp), "reasons": echo_reasons(inp), "obligations": [
	{"type": "audit", "params": {"echo": inp.tool.arguments, "context": inp.context}},
]}

allowed(inp) if {
	inp.lookup.tool
	inp.tool.name == "safe_tool"
	inp.subject.tenant == inp.tenant
	every scope in inp.lookup.tool.scopes {
		scope in inp.subject.scopes
	}
}

default allowed(_) := false

echo_reasons(inp) := [
	{"code": "echo", "message": sprintf("%v|%v|%v|%v", [inp.tool.name, inp.tenant, inp.resource.uri, inp.client.name])},
	{"code": "echo_args", "message": json.marshal(inp.tool.arguments)},
]
