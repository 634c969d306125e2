# A small policy for the observability tests: tenant check, catalog membership, and a log_mask
# rule that masks the subject's claims and drops context.internal from the decision log.
package mcp.authz

import rego.v1

decision := {"allow": false, "reasons": [{"code": "tenant_mismatch", "message": "tenant"}], "obligations": []} if {
	input.subject.tenant != input.tenant
} else := {"allow": false, "reasons": [{"code": "tool_unknown", "message": "unknown tool"}], "obligations": []} if {
	not input.lookup.tool
} else := {"allow": true, "reasons": [], "obligations": [{"type": "audit", "params": {"level": "info"}}]}

log_mask := {"mask": ["subject.claims"], "drop": ["context.internal"]}
