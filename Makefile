# Every target creates .venv on first use, so `make test` and `make demo` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test test-fast bench demo fleet-demo lint clean screenshots soak pi-check pi-check-full \
	install-pi

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Stamp files keep re-runs fast: reinstall only when the packaging metadata changes.
$(VENV)/.dev-installed: $(VENV)/bin/python setup.cfg pyproject.toml
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# `make test` runs the whole suite (CI calls it): the quick tests on 4 pytest-xdist workers
# (most of their time is spent waiting on threads, sockets and child processes, not on the
# CPU), then the tests marked `@pytest.mark.slow` (load, crash, schemathesis, concurrency, the
# fresh-venv import, hostile clients) one at a time, since they measure latency and memory
# under a load of their own. `make test-fast` runs only the first part: the edit-run loop;
# run `make test` before pushing.
test: $(VENV)/.dev-installed
	$(PY) -m pytest -q -n 4 -m "not slow"
	$(PY) -m pytest -q -m slow

test-fast: $(VENV)/.dev-installed
	$(PY) -m pytest -q -n 4 -m "not slow"

bench: $(VENV)/.dev-installed
	@$(PY) -m benchmarks

# The demo needs the api, modbus, serial and mcp extras: the whole cell of examples/cell.toml
# with the REST API on http://127.0.0.1:8080 (the live dashboard: /dashboard, Swagger UI: /apidocs,
# live events: /events/stream), the MCP server for LLM agents on http://127.0.0.1:8081/mcp, a
# Modbus bridge to a simulated PLC on 127.0.0.1:5020 that runs the operations and a serial bridge
# to a simulated panel on 127.0.0.1:7001. Ctrl-C stops it.
$(VENV)/.demo-installed: $(VENV)/bin/python setup.cfg pyproject.toml
	$(PY) -m pip install -q -e '.[api,modbus,serial,mcp]'
	touch $@

demo: $(VENV)/.demo-installed
	$(VENV)/bin/operation-dispatcher serve --demo --config examples/cell.toml --host 127.0.0.1 --port 8080 \
		--mcp-port 8081

# The fleet demo needs the api, modbus and mqtt extras and mosquitto (Debian package
# `mosquitto`): a broker on a free loopback port (config and data in a temp folder), three cells
# (each `serve --demo` with its simulated PLC, REST API and [mqtt] link), a central approver for
# cell-3's requests, and the live fleet table in the foreground. Ctrl-C stops all of it.
$(VENV)/.fleet-installed: $(VENV)/bin/python setup.cfg pyproject.toml
	$(PY) -m pip install -q -e '.[api,modbus,mqtt]'
	touch $@

fleet-demo: $(VENV)/.fleet-installed
	$(PY) examples/fleet/run.py

# The dashboard screenshots of the README: the test suite takes them (desktop and 800x480) into a
# temporary folder named by OPERATION_DISPATCHER_SCREENSHOTS; only this target copies them into
# docs/screenshots/ (tests never write outside temporary folders).
screenshots: $(VENV)/.dev-installed
	mkdir -p docs/screenshots
	dir=$$(mktemp -d) && \
	OPERATION_DISPATCHER_SCREENSHOTS=$$dir $(PY) -m pytest -q tests/test_dashboard_browser.py -k screenshots && \
	cp $$dir/*.png docs/screenshots/ && rm -rf $$dir

# `make pi-check` (as root; needs debootstrap qemu-user-static binfmt-support; CI runs it): the
# package installed and tested in Debian bookworm roots for arm64 and armhf under qemu-user
# emulation, with import time, RSS, idle CPU and operations/s beside this host's
# (tools/pi_check.py). The roots are built once (about 4 min) under $(PI_ROOTS); later runs reuse
# them. PI_CHECK picks the tests: `ci` (the default, a few minutes: the core tests and the bridge
# tests against the simulators, by tools/pi_core.py's rules) or `full` (every test the roots can
# run: 10-15 min; `make pi-check-full`, before a release).
PI_ROOTS ?= /var/cache/operation-dispatcher-pi
PI_CHECK ?= ci
pi-check: $(VENV)/.dev-installed
	PI_ROOTS=$(PI_ROOTS) PI_CHECK=$(PI_CHECK) $(PY) -m tools.pi_check

pi-check-full: $(VENV)/.dev-installed
	PI_ROOTS=$(PI_ROOTS) PI_CHECK=full $(PY) -m tools.pi_check

# `sudo make install-pi` on Raspberry Pi OS bookworm: a venv under /opt/operation-dispatcher, a
# system user, the unit, /var/lib/operation-dispatcher (tools/install_pi.py). DRY_RUN=1 prints
# the steps; DESTDIR=dir stages the files there and prints the commands meant for the Pi;
# EXTRAS=api,serial,modbus,metrics,mqtt picks the pip extras.
install-pi:
	$(PYTHON) -m tools.install_pi $(if $(DRY_RUN),--dry-run) $(if $(DESTDIR),--destdir $(DESTDIR)) \
	  $(if $(EXTRAS),--extras $(EXTRAS))

# mypy checks both packages (both ship py.typed, so a user's mypy reads their hints) and tools
lint: $(VENV)/.dev-installed
	$(PY) -m ruff check operation_dispatcher firmware_bridges tests benchmarks examples tools
	$(PY) -m mypy firmware_bridges operation_dispatcher tools

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache

# The soak (benchmarks/soak.py): `serve` with a simulated PLC and serial device under a steady
# mixed load for DURATION seconds, sampling RSS, descriptors, threads, CPU and the journal's
# size from /proc; one JSON line per sample, the last the verdict; fails when any of them grows.
DURATION ?= 60
soak: $(VENV)/.dev-installed
	$(PY) -m benchmarks.soak --duration $(DURATION)
