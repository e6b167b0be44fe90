# Two entry points: `make demo` and `make test`. Both create .venv on first use.
VENV ?= .venv
PYTHON ?= python3
RUNTIME := $(VENV)/.runtime
DEV := $(VENV)/.installed

.PHONY: demo test deps lint typecheck pytest bench clean

# The runtime alone: what `flow health demo` needs.
$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e .
	touch $(RUNTIME)

# The runtime, every extra, and the test toolchain (pytest, hypothesis, ruff, mypy, moto).
$(DEV): $(RUNTIME)
	$(VENV)/bin/pip install -q -e '.[dev,cloudwatch,otlp,nvml,remote-write]'
	touch $(DEV)

demo: $(RUNTIME)
	$(VENV)/bin/flow health demo

# Every test runs: the real servers they start are installed first (or the run fails naming
# them), and a test skipped for a missing dependency fails the run (tests/skip_policy.py).
test: deps $(DEV) lint typecheck pytest

deps:
	scripts/test-deps.sh

lint: $(DEV)
	$(VENV)/bin/ruff check src tests benchmarks

typecheck: $(DEV)
	$(VENV)/bin/mypy

pytest: $(DEV)
	$(VENV)/bin/pytest -q

bench: $(DEV)
	$(VENV)/bin/python benchmarks/storage.py
	$(VENV)/bin/python benchmarks/sweep.py
	$(VENV)/bin/python benchmarks/collector.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
