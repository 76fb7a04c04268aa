# Two promises on a fresh machine: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test

.PHONY: demo test lint typecheck unit bench stress clean wheel example

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

$(VENV)/.installed-bench: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	touch $@

demo: $(STAMP)
	$(PY) tools/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest -q

# unit includes tests/packaging: the wheel built and installed in fresh venvs, action.yml run as a runner
# runs it, and examples/dice's own suite run as its CI would (the line "examples/dice, as a user's CI runs
# it" near the end gives that suite's count).
test: lint typecheck unit

# The wheel users install, in dist/. setuptools builds in build/: cleared first, its stale files would be packed.
wheel: $(STAMP)
	rm -rf build dist
	$(PY) -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir dist .

# examples/dice as a user's CI runs it (the part of make test that does it, with the inner run's output).
example: $(STAMP)
	$(VENV)/bin/pytest -q -rP tests/packaging/test_example.py

# socat is scenario 5's reference relay (Debian's package).
bench: $(VENV)/.installed-bench
	command -v socat >/dev/null || (apt-get update && apt-get install -y socat)
	$(PY) -m bench

# The whole stack under load and faults (stress/): 16 enclave clients x 500 attested calls while services are
# killed and restarted, hostile clients connect and the audit log's disk is full; exit 1 if a zero-target is missed.
stress: $(STAMP)
	$(PY) -m stress

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist
