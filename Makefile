# heatgw build. Every target bootstraps its own virtual environment from requirements.txt.
PYTHON3 ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
MPLIBS  := build/mplibs/.fetched
PYTEST_ARGS ?=
SCENARIO ?= scenarios/day_24h.json
OUT      ?= out/$(basename $(notdir $(SCENARIO))).json
MPY      ?= 1

.PHONY: all venv mplibs test bench mpy lint clean scenario heap sim

all: test

# The pinned dependencies, then the project itself (editable, nothing more: the `heatgw`
# console script; its build uses the pinned setuptools, not a fetched one).
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON3) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps \
	    --no-build-isolation -e .
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

# Run one scenario of the simulated plant against the real firmware (host board) and write
# its JSON summary: `heatgw scenario` (host_tools/harness.py) with the variables below. MPY=1 (default) runs precompiled modules, as a device runs frozen code;
# MICROPYTHON / MICROPYTHON_ARGS pick the binary and its options (e.g. -X heapsize=64wK).
# BROKER=host:port turns telemetry on (MQTT_USER, MQTT_PASSWORD_FILE: the password from that
# file only; CA: TLS verified against it; HA_PREFIX: Home Assistant discovery); ROMFS=1 runs
# the node's code from a ROMFS image; SERIAL=auto (or a path for a symlink) gives the node a
# serial port: console, Ctrl-C, REPL, mpremote.
scenario: $(STAMP) $(MPLIBS)
	@mkdir -p $(dir $(OUT))
	$(PY) -m host_tools.cli scenario $(SCENARIO) --out $(OUT) $(if $(filter 1,$(MPY)),--mpy) \
	    $(if $(BROKER),--broker $(BROKER)) $(if $(MQTT_USER),--mqtt-user $(MQTT_USER)) \
	    $(if $(MQTT_PASSWORD_FILE),--mqtt-password-file $(MQTT_PASSWORD_FILE)) \
	    $(if $(CA),--ca $(CA)) $(if $(HA_PREFIX),--ha-prefix $(HA_PREFIX)) \
	    $(if $(filter 1,$(ROMFS)),--romfs) $(if $(SERIAL),--serial $(SERIAL))

# The gateway on a simulated day (scenarios/sim_day.json: a sink outage, a sensor fault) on
# a broker started for the run (mosquitto if installed, else the embedded amqtt): the live
# view on a terminal (plain lines otherwise), then the run's record and its report.
# SIM_ARGS passes options, e.g. SIM_ARGS="--nodes 3" or SIM_ARGS="scenarios/sink_lost.json".
sim: $(STAMP) $(MPLIBS)
	$(PY) -m host_tools.cli sim $(SIM_ARGS)

bench: $(STAMP) $(MPLIBS)
	$(PY) -m host_tools.bench

# The heap budget on $(MICROPYTHON): each module's import cost (source and .mpy), the ROMFS
# saving, and the 24 h day in the budget heap (160 KB host, 111 KB 32-bit; about 2 min).
# DAY=out/day_24h.json takes the day from a summary instead of running it.
heap: $(STAMP) $(MPLIBS)
	$(PY) -m host_tools.heapbudget $(if $(DAY),--day $(DAY))

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf build .pytest_cache
