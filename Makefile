# nowcast_infill -- run `make help` for the list of targets.
# Both `make demo` and `make test` create .venv/ and install everything they need.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is installed on its own, before the package, so pip never pulls a CUDA
# build on a CPU machine. GPU users: make install TORCH_SPEC="torch==2.13.0 --index-url <cuda index>"
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# what `make lint` checks (ruff and mypy settings: pyproject.toml)
LINT_PATHS ?= nowcast_infill
# test-busy: burner processes beside the suite (each adds ~1 to the load average) and
# the most seconds they may run (they stop with pytest, or by themselves at this limit).
BURN_PROCS ?= 4
BURN_SECONDS ?= 7200

.DEFAULT_GOAL := help

help: ## Show this help
	@# colour only on a terminal: piped or redirected output gets plain text
	@if test -t 1; then on=$$'\033[36m' off=$$'\033[0m'; else on= off=; fi; \
	grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*?## "}; {printf "  %s%-16s%s %s\n", on, $$1, off, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv/ and install the package with its dependencies

demo: $(STAMP) ## Run the main job on the embedded synthetic data (data -> train -> eval)
	WANDB_MODE=$${WANDB_MODE:-offline} $(BIN)/ni-demo

lint: $(STAMP) ## ruff check, ruff format --check and mypy on the package (all three run; fails if any fails)
	@status=0; \
	echo "ruff check $(LINT_PATHS)"; $(BIN)/ruff check $(LINT_PATHS) || status=1; \
	echo "ruff format --check $(LINT_PATHS)"; $(BIN)/ruff format --check $(LINT_PATHS) || status=1; \
	echo "mypy $(LINT_PATHS)"; $(BIN)/mypy $(LINT_PATHS) || status=1; \
	exit $$status

lint-report: $(STAMP) ## Count the lint findings per rule / error code and per file (does not fail)
	tools/lint_report.sh $(LINT_PATHS)

test: $(STAMP) ## Lint (make lint), then run the whole test suite (slurm tests start their own local cluster when root)
	$(MAKE) --no-print-directory lint
	WANDB_MODE=offline $(BIN)/python -m pytest $(PYTEST_ARGS)

test-busy: $(STAMP) ## Run the whole suite beside BURN_PROCS (4) busy processes: it must pass on a loaded machine
	WANDB_MODE=offline $(BIN)/python experiments/cpu_burner.py --procs $(BURN_PROCS) --seconds $(BURN_SECONDS) -- \
		$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## Run the tests not marked slow or slurm
	WANDB_MODE=offline $(BIN)/python -m pytest -m "not slow and not slurm" $(PYTEST_ARGS)

bench-data: $(STAMP) ## Data-plane benchmark (conversion, DataModule throughput)
	$(BIN)/python experiments/bench_data.py

bench-model: $(STAMP) ## Model benchmark (partial conv vs naive, variants)
	$(BIN)/python experiments/bench_model.py

clean: ## Remove run outputs (keeps .venv/)
	rm -rf outputs multirun wandb lightning_logs .pytest_cache .mypy_cache .ruff_cache

distclean: clean ## Remove run outputs and .venv/
	rm -rf $(VENV)

.PHONY: help install demo lint lint-report test test-busy test-fast bench-data bench-model clean distclean
