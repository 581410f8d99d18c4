# Two entry points for a fresh machine (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch first: an unpinned torch would pull several GB of CUDA wheels.
TORCH ?= torch==2.13.0

.PHONY: setup demo test lint unit clean

$(BIN)/rltransfer: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev,rliable,box2d,mujoco,ray]"
	touch $@

setup: $(BIN)/rltransfer

demo: setup
	$(BIN)/rltransfer run experiments/cartpole.yaml --out runs/cartpole --resume --generalize

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# One worker per core, a test file per worker: the slow tests mostly wait on the
# processes they start (pools, Ray, killed runners), so two workers overlap them.
unit: setup
	$(BIN)/pytest -q -n auto --dist loadfile

test: lint unit

clean:
	rm -rf $(VENV) runs
