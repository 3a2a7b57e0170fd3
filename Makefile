# One-command set-up + run.  Both targets install what they need (GROMACS via apt when `gmx`
# is absent and we are root, the venv, the torch CPU wheel, the package).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# `make demo` copies the shipped heptanol example (package data) here once, then runs it
DEMO ?= demo-run

.PHONY: setup test lint demo gromacs bench clean-demo

gromacs:
	@bash scripts/ensure_gromacs.sh

$(VENV)/.installed: pyproject.toml
	@echo "setup: creating the virtual environment $(VENV) with $(PYTHON)"
	@$(PYTHON) -m venv $(VENV)
	@echo "setup: upgrading pip in $(VENV)"
	@$(PY) -m pip install -q --upgrade pip
	@echo "setup: installing torch 2.13.0 from the package index (a large download on a cold cache: several quiet minutes)"
	@$(PY) -m pip install -q torch==2.13.0
	@echo "setup: installing multiscale (editable, pyproject.toml) and its dependencies: numpy, scipy, MDAnalysis, ParmEd,"
	@echo "       GromacsWrapper, PyYAML, pydantic, matplotlib, rich; test extras: pytest, vermouth, mdtraj, PeptideBuilder, ruff; membrane: insane, rdkit"
	@$(PY) -m pip install -q -e '.[test,membrane]'
	@touch $@
	@echo "setup: done ($(VENV)/bin/multiscale)"

setup: gromacs $(VENV)/.installed

test: setup
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks scripts

demo: setup
	@test -f $(DEMO)/sim.yaml || $(VENV)/bin/multiscale init --example heptanol $(DEMO)
	$(VENV)/bin/multiscale cycle --config $(DEMO)/sim.yaml

clean-demo:
	rm -rf $(DEMO)

bench: setup
	$(PY) benchmarks/bench_backmap.py
	$(PY) benchmarks/bench_water.py
