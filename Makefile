# alr: set-up, demo and tests. `make demo` and `make test` work on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export ALR_DATA ?= $(abspath ../shared/data)

.PHONY: install demo test test-all test-deepinv bench clean

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
	$(BIN)/python -m pytest -q --durations=12 tests

test-all: install
	$(BIN)/python -m pytest -q -m "slow or not slow" tests

# DeepInverse interop (tests/interop/) in its own environment: deepinv needs torchvision, whose
# wheels pin torch 2.14.1 (alr's main .venv pins 2.13.0); it runs on the CPU too. About 1.5 minutes
# and 5.8 GB (docs/deepinverse.md).
# alr is installed without its torch pin (--no-deps), then its other dependencies from pyproject.toml.
DVENV := .venv-deepinv
DBIN := $(DVENV)/bin

$(DBIN)/.ready: pyproject.toml
	$(PY) -m venv $(DVENV)
	$(DBIN)/pip install -q --upgrade pip
	$(DBIN)/pip install -q torch==2.14.1 torchvision==0.29.1 deepinv==0.5.0
	$(DBIN)/pip install -q --no-deps -e .
	$(DBIN)/pip install -q $$($(DBIN)/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print(" ".join(d for d in p["dependencies"] + p["optional-dependencies"]["test"] if not d.startswith("torch")))')
	touch $@

test-deepinv: $(DBIN)/.ready
	$(DBIN)/python -m pytest -q tests/interop

bench: install
	$(BIN)/python benchmarks/restore_speed.py
	$(BIN)/python benchmarks/color_speed.py
	$(BIN)/python benchmarks/restore_folder.py
	$(BIN)/python benchmarks/restore_scale.py
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/batched_energy.py

clean:
	rm -rf $(VENV) $(DVENV) demo_out .pytest_cache src/*.egg-info
