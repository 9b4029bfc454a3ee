# The two commands of the README, and a few helpers. Each sets up .venv itself.
VENV ?= .venv
BIN := $(VENV)/bin
# One process on whatever device is there; accelerate's own defaults, stated so it does not warn.
# Unless told, accelerate launch sets OMP_NUM_THREADS=1, and CPU training would use one core.
CORES := $(shell getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
LAUNCH := $(BIN)/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no --num_cpu_threads_per_process $(CORES)

.PHONY: demo test bench setup setup-dev clean

## demo: set up, then train the tiny model on the built-in synthetic dataset (runs/demo)
demo: setup
	$(LAUNCH) cvae_dist/train.py

## test: set up (with the test extras and a local Slurm), lint and check the formatting (ruff), then run the whole test suite
test: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

## bench: set up, then compare cvae_dist with a plain course-style loop on this machine (see docs/benchmarks.md)
bench: setup
	$(BIN)/python benchmarks/bench.py --json bench.json

setup:
	scripts/setup.sh runtime

setup-dev:
	scripts/setup.sh dev

clean:
	rm -rf $(VENV) runs data .pytest_cache
