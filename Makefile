# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet -c constraints.txt

.PHONY: run test lint typecheck unit bench bench-cockpit docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamp files: reinstall only when the package's declared requirements change.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e ".[dev]"
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/gdlab demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

unit: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

test: lint typecheck unit

docs: $(VENV)/.installed
	bash docs/make_figures.sh

bench: $(VENV)/.installed-dev
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.sweep
	$(BIN)/python -m benchmarks.explore
	$(BIN)/python -m benchmarks.stream
	$(BIN)/python -m benchmarks.parallel
	$(BIN)/python -m benchmarks.watch

# gdlab.watch beside cockpit-for-pytorch's lightest configuration (an optional extra), in a
# venv of its own: BackPACK pulls in a torchvision whose kernels do not load with the CPU torch
# and that breaks Lightning's import in the main venv
COCKPIT := .venv-cockpit
bench-cockpit:
	test -x $(COCKPIT)/bin/python || $(PYTHON) -m venv $(COCKPIT)
	$(COCKPIT)/bin/python -m pip install --quiet -c constraints.txt -e ".[cockpit]"
	$(COCKPIT)/bin/python -m benchmarks.watch --cockpit

clean:
	rm -rf $(VENV) $(COCKPIT) runs build src/*.egg-info
