# Two commands: `make test` and `make demo`. Both build .venv themselves when it is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch on machines without a GPU; override e.g. TORCH="torch" for CUDA.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: test demo lint wheel-check install system-deps clean

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

# The wheel installed in a fresh venv (scripts/wheel_check.sh): packaging mistakes (a file left out
# of the wheel, a broken entry point) fail here in about a minute, before the long test suite.
wheel-check: install system-deps
	BUILD_PYTHON=$(BIN)/python PYTHON="$(PYTHON)" TORCH="$(TORCH)" bash scripts/wheel_check.sh

test: install system-deps lint wheel-check
	$(BIN)/python -m pytest -q

demo: install system-deps
	$(BIN)/python -m napari_cgs.demo

clean:
	rm -rf $(VENV) build dist *.egg-info demo-output
