# mcp-authz: two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PB     := service/mcp_authz/_pb/__init__.py
DEV    := .dev/config.yaml
LISTEN ?= 127.0.0.1:50051

.PHONY: install proto dev-config run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
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

test: install
	$(VENV)/bin/ruff check service tests scripts
	$(VENV)/bin/mcp-authz check policies
	$(VENV)/bin/pytest -q

bench: install
	$(PY) -m mcp_authz.bench --out bench-results.json

clean:
	rm -rf $(VENV) service/mcp_authz/_pb .dev
