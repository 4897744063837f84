# Two commands set everything up on a fresh machine: `make test` and `make demo`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# One thread per process in tests: with the other core busy, two OpenMP threads ran
# 5-13x slower than one on these machines.
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

.PHONY: setup test test-slow demo bench clean-venv

setup: $(STAMP)

# torch 2.13.0 first, from local wheels only (--no-index): where the CPU wheel lies on
# disk it installs in seconds; elsewhere this step is skipped and pip resolves torch
# from the open range in pyproject.toml.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --no-index torch==2.13.0 2>/dev/null \
	  || echo "note: no local torch 2.13.0 wheel; pip will resolve torch from pyproject.toml"
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -q -m slow

demo: $(STAMP)
	$(BIN)/python -m disentangle.demo

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
