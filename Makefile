# heatgw build. Every target bootstraps its own virtual environment from requirements.txt.
PYTHON3 ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
MPLIBS  := build/mplibs/.fetched
PYTEST_ARGS ?=

.PHONY: all venv mplibs test bench mpy lint clean scenario

all: test

$(STAMP): requirements.txt
	$(PYTHON3) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

venv: $(STAMP)

$(MPLIBS): mplibs.lock $(STAMP)
	$(PY) -m host_tools.fetch_mplibs
	touch $@

mplibs: $(MPLIBS)

# Cross-compile firmware/ and lib/ for every board architecture; fails on any error.
mpy: $(STAMP) $(MPLIBS)
	$(PY) -m host_tools.build_mpy

test: $(STAMP) $(MPLIBS)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP) $(MPLIBS)
	$(PY) -m host_tools.bench

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf build .pytest_cache
