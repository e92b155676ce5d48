PY ?= python3.11
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup test lint train
setup:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e ".[dev]"

test:
	$(BIN)/ruff check instaseg tests benchmarks
	$(BIN)/pytest

train:
	$(BIN)/instaseg train
