# avfusion: two commands do everything on a machine that has only python3 (with venv and pip).
#   make demo   create .venv, install avfusion, run the main job on sample_data/
#   make test   create .venv, install the test extras, lint, type-check and run the whole suite
#   make bench  run every benchmark side by side with its peers and print one table of ratios

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
# One stamp per extras set; reinstall when pyproject.toml changes.
STAMP_BASE := $(VENV)/.stamp-base
STAMP_TEST := $(VENV)/.stamp-test

.PHONY: demo test bench lint typecheck pytest system-deps clean help

help:
	@echo "make demo   - install and run the end-to-end demo on sample_data/"
	@echo "make test   - install test extras, run ruff, mypy and pytest"
	@echo "make bench  - run all benchmarks and print avfusion/peer ratios"

$(PY):
	$(PYTHON) -m venv $(VENV) || { echo "error: '$(PYTHON) -m venv' failed; install python3-venv (Debian: apt-get install python3-venv)"; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP_BASE): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	@touch $@

$(STAMP_TEST): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test,bench,distributed,torch,viz]'
	@touch $@ $(STAMP_BASE)

# Open3D's wheel links libusb-1.0 (Debian package libusb-1.0-0); Chromium is for the report's
# browser test. Installed when missing and we are root; otherwise a clear hint.
system-deps:
	@sh scripts/system-deps.sh

demo: $(STAMP_BASE) system-deps
	$(BIN)/avfusion demo --data sample_data

lint: $(STAMP_TEST)
	$(BIN)/ruff check avfusion tests benchmarks
	$(BIN)/ruff format --check avfusion tests benchmarks

typecheck: $(STAMP_TEST)
	$(BIN)/mypy

pytest: $(STAMP_TEST) system-deps
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: $(STAMP_TEST) system-deps
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
