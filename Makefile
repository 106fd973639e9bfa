# One command sets up and runs the demo; one sets up and runs the tests.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint clean

$(BIN)/regnet: pyproject.toml
	@command -v $(PY) >/dev/null || { echo "python3.11 not found"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,elastix]"
	@touch $@

setup: $(BIN)/regnet

demo: setup
	$(BIN)/regnet demo --out demo_out

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) demo_out
