# grpcmesh — every target bootstraps .venv itself, so a fresh clone needs only Python 3.11+.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LINT_DIRS := $(wildcard src tests benchmarks examples scripts)
PROTOS := $(shell find src examples -name '*.proto' 2>/dev/null)

.PHONY: all venv protos test lint typecheck pytest test-newest-grpcio demo bench test-deps wheel clean

all: test

$(STAMP): pyproject.toml Makefile constraints/grpcio-pinned.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "grpcmesh needs Python 3.11+; set PYTHON=python3.11 (or newer)")'
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq python3-venv)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints/grpcio-pinned.txt -e '.[dev,bench]'
	@touch $(STAMP)

venv: $(STAMP) protos

protos: $(STAMP) .protos-stamp
.protos-stamp: $(PROTOS) scripts/gen_protos.py $(STAMP)
	$(PY) scripts/gen_protos.py
	@touch .protos-stamp

test-deps:
	@bash scripts/install-test-deps.sh

lint: venv
	$(VENV)/bin/ruff check $(LINT_DIRS)
	$(VENV)/bin/ruff format --check $(LINT_DIRS)

typecheck: venv
	$(VENV)/bin/mypy --strict src
	MYPYPATH=src:examples/shop $(VENV)/bin/mypy --strict -p shop

pytest: venv test-deps
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The server tests once more against the newest grpcio on the index (skipped, saying so, when
# that is the pinned release): catches a grpcio upgrade that breaks MeshServer.
test-newest-grpcio: venv
	bash scripts/test_newest_grpcio.sh

test: lint typecheck pytest test-newest-grpcio

demo: venv
	$(VENV)/bin/grpcmesh demo

# The wheel a user installs (protobuf code generated and the example shop included by scripts/hatch_build.py).
wheel: venv
	$(PY) -m pip wheel --no-deps -q -w dist .

bench: venv test-deps
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .venv-newest-grpcio .protos-stamp .mypy_cache .ruff_cache .pytest_cache dist
