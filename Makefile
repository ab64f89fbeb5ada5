# Two entry points: `make serve` (install + run on embedded defaults) and `make test`.
# torch is installed first and pinned: any other spec pulls a multi-GB CUDA build here.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: serve test install lint bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[server,models,data,sim,bluesky,dev]'

serve: install
	$(BIN)/beamsteer serve

lint: install
	$(BIN)/ruff check .

test: install
	$(BIN)/ruff check .
	OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q

bench: install
	$(BIN)/pip install -q -e '.[bench]'
	OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE $(BIN)/python benchmarks/ask_latency.py
