# Two entry points for a fresh machine (see README "Quick start"):
#   make demo   sets up .venv and runs the demo
#   make test   sets up .venv and runs the test suite
# `make setup` alone creates the virtual environment.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.nnunet_synth_installed

.PHONY: setup test test-fast demo clean-venv

$(STAMP): setup.cfg setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# Unpinned torch + torchvision: the resolver picks a matching pair.
	$(PY) -m pip install --quiet --progress-bar off -e ".[test]"
	# Stop here, not in the middle of a training run, if the pair does not import.
	$(PY) -m nnunet_synth.commands.doctor --require-torch
	touch $(STAMP)

setup: $(STAMP)

# Two workers: most of a tiny nnU-Net run is single-threaded start-up, so two tests share 2 cores well.
test: setup
	$(PY) -m pytest -q -n 2 --dist loadgroup --no-loadscope-reorder --timeout=900 --durations=25 tests

test-fast: setup
	$(PY) -m pytest -q -n 2 --dist loadgroup --no-loadscope-reorder --timeout=900 -m "not e2e" tests

demo: setup
	$(VENV)/bin/nnunet-synth demo

clean-venv:
	rm -rf $(VENV)
