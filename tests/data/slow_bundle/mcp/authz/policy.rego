# A policy that takes as long as the caller asks (tool argument `spin`: ~4 us per unit in
# regopy), and allows alice when it finishes: the evaluation-time bounds must deny first.
package mcp.authz

import rego.v1

default decision := {"allow": false, "reasons": [{"code": "not_alice", "message": "only alice"}], "obligations": []}

decision := {"allow": true, "reasons": [], "obligations": []} if {
	n := object.get(input.tool.arguments, "spin", 0)
	count([x | some x in numbers.range(1, n)]) >= 0
	input.subject.id == "alice"
}
