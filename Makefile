# alr: set-up, demo and tests. `make demo` and `make test` work on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export ALR_DATA ?= $(abspath ../shared/data)

.PHONY: install demo test test-all bench clean

$(BIN)/alr: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]" bm3d
	touch $(BIN)/alr

install: $(BIN)/alr

demo: install
	$(BIN)/alr demo -o demo_out

test: install
	$(BIN)/python -m pytest -q tests

test-all: install
	$(BIN)/python -m pytest -q -m "slow or not slow" tests

bench: install
	$(BIN)/python benchmarks/restore_speed.py
	$(BIN)/python benchmarks/restore_folder.py
	$(BIN)/python benchmarks/restore_scale.py
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/batched_energy.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache src/*.egg-info
