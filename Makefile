# lionk — two commands do all set-up on a fresh machine:
#   make conformance   the conformance suite over every backend this machine has, with its report
#   make test          the whole pytest suite (tests/ and conformance/)
#   make docs          the documentation site in site/ (mkdocs, strict)
#   make bench         benchmarks against the memory floor and peers (benchmarks/results.md)
#   make lint          ruff, the import contract (lint-imports) and the type checker (mypy)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: all test conformance lint venv clean docs bench

all: test

$(STAMP): pyproject.toml requirements/dev.txt requirements/docs.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

conformance: $(STAMP)
	$(PY) -m conformance --report conformance-report

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

bench: $(STAMP)
	$(PY) -m benchmarks

lint: $(STAMP)
	$(PY) -m ruff check lionk tests conformance examples benchmarks docs
	$(VENV)/bin/lint-imports
	$(PY) -m mypy

clean:
	rm -rf $(VENV) conformance-report site .pytest_cache .hypothesis
