# The two commands a newcomer needs:  make run  (serve on http://127.0.0.1:8080)  and  make test.
# Everything lives in .venv (python3.11 -m venv); the install steps re-run only when pyproject.toml
# changes (stamp files in .venv), so a second `make run` starts in seconds.

PYTHON      ?= python3.11
VENV        := .venv
BIN         := $(VENV)/bin
STAMP       := $(VENV)/.installed
TEST_STAMP  := $(VENV)/.installed-test
HOST        ?= 127.0.0.1
PORT        ?= 8080
# pytest-xdist: each worker gets its own SQLite file and its own PostgreSQL database (conftest.py)
PYTEST_ARGS ?= -n 2
# bench/*.py files that are libraries used by the benchmarks, not benchmarks themselves
BENCH_HELPERS := __init__ synthetic harness
# the quick variants take minutes; `make bench BENCH_ARGS=` runs the full ones (bench/README.md)
BENCH_ARGS  ?= --quick

.PHONY: run serve test migrate demo-data bench install clean help
.DEFAULT_GOAL := help

help:
	@echo "make run      install into .venv, migrate the database, serve on http://$(HOST):$(PORT)/fhir (dev tokens on)"
	@echo "make test     install the test extras and run the whole suite (pytest $(PYTEST_ARGS))"
	@echo "make migrate  create or upgrade the database schema (FHIR_DATABASE_URL, default var/fhir.db)"
	@echo "make bench    run the benchmarks in bench/ (BENCH_ARGS=$(BENCH_ARGS); needs PostgreSQL)"
	@echo "make clean    remove .venv and caches (the database in var/ is kept)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	@touch $@

# the test extras include the project itself: one pip run, both stamps
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP) $@

install: $(STAMP)

migrate: $(STAMP)
	$(BIN)/fhir-server migrate

# Synthetic agency files (no real personal data), written once into var/demo, then loaded through
# the real import path on every run: a second load changes nothing (imports are idempotent).
DEMO_DIR      := var/demo
DEMO_FAMILIES ?= 200

demo-data: migrate
	@[ -f $(DEMO_DIR)/manifest.json ] || $(BIN)/fhir-server synth --families $(DEMO_FAMILIES) --seed 2026 \
	    --out $(DEMO_DIR) --quiet
	$(BIN)/fhir-server import --manifest $(DEMO_DIR)/manifest.json

# Authentication is on; `make run` (only) also enables the development token issuer and prints how
# to mint a demo token with it (docs/security.md). Production never sets FHIR_AUTH_DEV_ISSUER.
run: export FHIR_AUTH_DEV_ISSUER = 1
run: demo-data
	@echo "Authentication is on. Get a demo token (development issuer, enabled by make run only):"
	@echo "  export TOKEN=\$$(FHIR_AUTH_DEV_ISSUER=1 $(BIN)/fhir-server dev-token --client demo \\"
	@echo "      --scope 'user/*.cruds' --practitioner demo --agency la:201 --role mash-practitioner)"
	@echo "  curl -H \"Authorization: Bearer \$$TOKEN\" http://$(HOST):$(PORT)/fhir/Patient"
	exec $(BIN)/fhir-server serve --host $(HOST) --port $(PORT)

serve: $(STAMP)
	exec $(BIN)/fhir-server serve --host $(HOST) --port $(PORT)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	@found=0; for f in bench/*.py; do \
	  [ -e "$$f" ] || continue; name=$$(basename "$$f" .py); \
	  case " $(BENCH_HELPERS) " in *" $$name "*) continue;; esac; \
	  found=1; echo "== bench/$$name.py $(BENCH_ARGS)"; $(BIN)/python -m bench.$$name $(BENCH_ARGS) || exit 1; \
	done; [ $$found = 1 ] || echo "No benchmarks in bench/ yet."

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
