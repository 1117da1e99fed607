# wasmhive: `make run` runs the main job, `make test` runs the tests.
# Both create .venv and install what they need into it on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

## run: the daemon on 127.0.0.1:8080 with the bundled examples (examples/wasmhive.toml)
run: $(VENV)/.installed
	$(BIN)/wasmhive serve --config examples/wasmhive.toml

## demo: the embedding demo (deploys the example modules in-process and calls them)
demo: $(VENV)/.installed
	$(BIN)/python examples/demo.py

## test: the whole test suite
test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

## bench: the benchmarks (see bench/README.md)
bench: $(VENV)/.installed-bench
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
