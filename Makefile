# wasmhive: `make run` runs the main job, `make test` runs the tests.
# Both create .venv and install what they need into it on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

## run: the demo that deploys the bundled example modules and calls them
run: $(VENV)/.installed
	$(BIN)/python examples/demo.py

## test: the whole test suite
test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

## bench: the benchmarks (see bench/README.md)
bench: $(VENV)/.installed-bench
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
