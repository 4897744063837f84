# Two commands set everything up on a fresh machine: `make test` and `make demo`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# One thread per process in tests: on a loaded machine oversubscribed OpenMP threads are
# slower than one (docs/performance.md, "Elsewhere").
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

.PHONY: setup test demo bench clean-venv

setup: $(STAMP)

# torch 2.13.0 first, where its wheel is on local disk (a find-links folder): the
# --no-index --no-deps probe installs only from there, then a normal install adds torch's
# own dependencies from the index. Elsewhere the probe fails, is skipped, and pip resolves
# torch from the open range in pyproject.toml.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	if $(BIN)/pip install -q --no-index --no-deps torch==2.13.0 2>/dev/null; then \
	  $(BIN)/pip install -q torch==2.13.0; \
	else echo "note: no local torch 2.13.0 wheel; pip resolves torch from pyproject.toml"; fi
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m disentangle.demo

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
