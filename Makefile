# Each target creates .venv and installs the package when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The sweep report (sweep.html, sweep.md, sweep.json, rows.jsonl, plots/) goes to outputs/audit/<time>/,
# printed as the last line; report.json is the name of one audit's report (prune-landscape train).
demo: $(STAMP)
	$(BIN)/prune-landscape audit experiment=demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --durations=15 tests --doctest-modules prune_landscape

bench: $(STAMP)
	$(BIN)/pip install -q pyhessian==0.1 loss-landscapes==3.0.6
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) outputs multirun wandb lightning_logs build dist *.egg-info
