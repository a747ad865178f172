# asrpipe: every target calls the CLI; the stage engine (not Make) decides what is fresh.
#   make demo                  install, then download → … → submit on the embedded demo-hw3p2 competition
#   make test                  install, then the whole test suite
#   make submit TASK=hw3p2     any stage target takes TASK= (and BEAM= for decode, SET="k=v k=v" for overrides,
#                              CONFIG=<recipe name or yaml>, DATA=<zip or folder> for download)
#   make submissions TASK=hw3p2 / make leaderboard TASK=hw3p2   Kaggle listings (also saved under submissions/)
#   make rerun TASK=hw3p2      bring the pipeline up to date and submit only if it helps (asrpipe rerun)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
TASK ?= demo-hw3p2
BEAM ?=
SET ?=
CONFIG ?=
DATA ?=
# With no GPU, pin the version these machines hold as a local CPU wheel (pip's find-links); elsewhere point pip at
# a CPU wheel index yourself or set TORCH_SPEC. An existing torch in the venv is never replaced.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)
PYTEST_ARGS ?=

BIN := $(VENV)/bin
ASRPIPE := $(BIN)/asrpipe
STAMP := $(VENV)/.installed
STAGES := download normalize train select decode csv submit
STAGE_ARGS = --task $(TASK) $(if $(CONFIG),--config $(CONFIG)) $(if $(and $(BEAM),$(filter decode,$@)),--beam $(BEAM)) \
             $(if $(and $(DATA),$(filter download,$@)),--data $(DATA)) $(foreach s,$(SET),--set $(s))

.PHONY: help install demo test test-services test-fast status run rerun history $(STAGES) submissions leaderboard bench-loader clean-artifacts

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'
	@echo "  stage targets: $(STAGES)  (TASK=$(TASK) CONFIG= BEAM= DATA= SET=\"key=value ...\")"
	@echo "  Kaggle listings: submissions leaderboard  (TASK=)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	@touch $@

install: $(STAMP) ## create .venv and install asrpipe (CPU torch unless a GPU is present)

demo: $(STAMP) ## install, then run the whole pipeline on demo-hw3p2
	$(ASRPIPE) run --task demo-hw3p2 --to submit

test: $(STAMP) test-services ## install, then run the whole test suite (slow end-to-end tests included)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Debian packages some tests need, installed here when missing and root (otherwise those tests are skipped, and fail
# under CI=true): postgresql (a real server for the sweep storage test, run by initdb/pg_ctl in a temp dir) and
# systemd (systemd-analyze verifies the units `asrpipe schedule` writes).
test-services:
	@missing=""; \
	  ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1 || missing=" postgresql"; \
	  command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      echo "installing Debian packages for the tests:$$missing"; \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	    else echo "not installed and not root:$$missing; the tests that need it will be skipped"; fi; \
	  fi

test-fast: $(STAMP) ## the suite without the slow end-to-end tests
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

status: $(STAMP) ## fresh / stale / missing per stage, and why
	$(ASRPIPE) status --task $(TASK)

run: $(STAMP) ## the whole pipeline for TASK (FROM= TO= to narrow it)
	$(ASRPIPE) run --task $(TASK) $(if $(CONFIG),--config $(CONFIG)) $(if $(FROM),--from $(FROM)) $(if $(TO),--to $(TO)) \
		$(foreach s,$(SET),--set $(s))

$(STAGES): $(STAMP)
	$(ASRPIPE) $@ $(STAGE_ARGS)

submissions leaderboard history: $(STAMP)
	$(ASRPIPE) $@ --task $(TASK)

rerun: $(STAMP) ## up to date, then submit only when it helps (exit 0 submitted, 3 skipped, 4 locked)
	$(ASRPIPE) rerun $(STAGE_ARGS)

bench-loader: $(STAMP) ## hw1p2 frame loader vs a starter-style Dataset: frames/s, peak memory, ratio
	$(BIN)/python tools/bench_loader.py

clean-artifacts: ## delete every stage output (the ledger in submissions/ is kept)
	rm -rf "$${ASRPIPE_ARTIFACTS:-artifacts}"/*/
