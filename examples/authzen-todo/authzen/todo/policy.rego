# The AuthZEN interop "Todo" scenario (OpenID AuthZEN working group) as an mcp-authz bundle.
#
# Served by the AuthZEN adapter in subject_mode: trusted_id: the subject id is the PID the
# authenticated PEP asserts, and this bundle's own data says who that is. The AuthZEN request
# arrives as input.context.authzen (subject, action, resource, context); the action name is
# also input.tool.name. The user entry is resolved by the service (input.lookup.user, see
# .manifest), never by indexing data with the caller's key.
#
# Rules (from the scenario):
#   can_read_user, can_read_todos  any known user
#   can_create_todo                admin or editor
#   can_update_todo                evil_genius, or editor and owner of the todo
#   can_delete_todo                admin, or editor and owner of the todo
# The owner is resource.properties.ownerID (or resource.ownerID in the older payload), an email.
package authzen.todo

import rego.v1

decision := decide(input)

decide(inp) := {"allow": true, "reasons": [], "obligations": []} if {
	is_object(user(inp))
	permitted(inp, action(inp))
} else := {"allow": false, "reasons": [why_not(inp)], "obligations": []}

user(inp) := object.get(inp, ["lookup", "user"], null)

action(inp) := object.get(inp, ["tool", "name"], "")

roles(inp) := {r | some r in object.get(user(inp), "roles", []); is_string(r)}

has_role(inp, wanted) if {
	some r in roles(inp)
	r in wanted
}

resource(inp) := object.get(inp, ["context", "authzen", "resource"], {})

owner(inp) := o if {
	o := object.get(resource(inp), ["properties", "ownerID"], null)
	is_string(o)
} else := o if {
	o := object.get(resource(inp), "ownerID", null)
	is_string(o)
}

is_owner(inp) if {
	email := object.get(user(inp), "email", null)
	is_string(email)
	owner(inp) == email
}

read_actions := {"can_read_user", "can_read_todos"}

permitted(_, name) if name in read_actions

permitted(inp, "can_create_todo") if has_role(inp, {"admin", "editor"})

permitted(inp, "can_update_todo") if has_role(inp, {"evil_genius"})

permitted(inp, "can_update_todo") if {
	has_role(inp, {"editor"})
	is_owner(inp)
}

permitted(inp, "can_delete_todo") if has_role(inp, {"admin"})

permitted(inp, "can_delete_todo") if {
	has_role(inp, {"editor"})
	is_owner(inp)
}

known_actions := read_actions | {"can_create_todo", "can_update_todo", "can_delete_todo"}

why_not(inp) := {"code": "tenant_mismatch", "message": "the subject is not a user of this application"} if {
	not is_object(user(inp))
} else := {"code": "tool_unknown", "message": "the action is not one of this application's"} if {
	not action(inp) in known_actions
} else := {"code": "role_missing", "message": "the subject's roles do not allow this action on this resource"}
