# Two commands: `make test` and `make demo`. Both build .venv themselves when it is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch on machines without a GPU; override e.g. TORCH="torch" for CUDA.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: test demo lint install system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

system-deps:
	bash scripts/ensure-system-deps.sh

lint: install
	$(BIN)/ruff check cgs_engine napari_cgs tests scripts bench
	$(BIN)/ruff format --check cgs_engine napari_cgs tests scripts bench
	$(BIN)/lint-imports

test: install system-deps lint
	$(BIN)/python -m pytest -q

demo: install system-deps
	$(BIN)/python -m napari_cgs.demo

clean:
	rm -rf $(VENV) build dist *.egg-info demo-output
