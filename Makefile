# mcp-authz: two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PB     := service/mcp_authz/_pb/__init__.py
DEV    := .dev/config.yaml
LISTEN ?= 127.0.0.1:50051

.PHONY: install proto dev-config run test lint bench clean mcp-servers demo soak

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# OPA's Go engine for `mcp-authz test --compare-opa`: its metadata asks for Python 3.14 but
	# it runs on 3.11, which pip can only be told here, not in pyproject.toml.
	$(PY) -m pip install -q --ignore-requires-python 'opa-golib-python-bindings==0.4.*'
	touch $(STAMP)

install: $(STAMP) $(PB)

$(PB): $(STAMP) $(wildcard proto/*/*/*/*.proto) scripts/gen_proto.py
	$(PY) scripts/gen_proto.py

proto: $(STAMP)
	$(PY) scripts/gen_proto.py

$(DEV): | install
	$(VENV)/bin/mcp-authz dev-init --dir .dev

dev-config: install $(DEV)

run: install $(DEV)
	$(VENV)/bin/mcp-authz serve --config $(DEV) --listen $(LISTEN)

lint: install
	$(VENV)/bin/ruff check service tests scripts

test: install mcp-servers
	$(VENV)/bin/ruff check service tests scripts
	$(VENV)/bin/mcp-authz check policies
	$(VENV)/bin/mcp-authz test policies --compare-opa
	$(VENV)/bin/pytest -q

# Sustained load on `serve --workers 2` with bundle changes and key/token rotation for
# SOAK_SECONDS (default 600): errors, false allows (must be 0; exit 1 otherwise), memory growth
# per worker. Not part of `make test`.
SOAK_SECONDS ?= 600
soak: install
	$(PY) -m mcp_authz.soak --seconds $(SOAK_SECONDS)

bench: install
	$(PY) -m mcp_authz.bench --out bench-results.json

# Real MCP servers the end-to-end tests put behind the gateway (mcp-server-git comes with the
# venv's dev extra). Pinned: the tests assert on their tool lists.
NPM_PREFIX := .npm-prefix
MCP_FS     := $(NPM_PREFIX)/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js

MCP_EVERYTHING := $(NPM_PREFIX)/node_modules/@modelcontextprotocol/server-everything/dist/index.js

$(MCP_FS):
	npm install --prefix $(NPM_PREFIX) --no-audit --no-fund --save-exact \
		@modelcontextprotocol/server-filesystem@2026.8.31

# The gateway's resources and prompts tests put the everything server behind it.
$(MCP_EVERYTHING):
	npm install --prefix $(NPM_PREFIX) --no-audit --no-fund --save-exact \
		@modelcontextprotocol/server-everything@2026.8.31

mcp-servers: $(MCP_FS) $(MCP_EVERYTHING)

# The decision service, the example MCP server and the gateway in front of the filesystem
# server, then a scripted client session: allowed, denied and approval-required calls.
demo: install mcp-servers
	$(PY) examples/demo.py

clean:
	rm -rf $(VENV) service/mcp_authz/_pb .dev
