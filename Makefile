# The two commands a newcomer needs: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DURATION ?=
MINERS ?= 240

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/wattshift demo --miners $(MINERS) $(if $(DURATION),--duration $(DURATION))

# Debian packages the tests run for real: promtool and prometheus (alert rules, dashboards),
# systemd-analyze (the unit file). Installed once; the stamp says so.
$(VENV)/.debs-prometheus: | $(VENV)/.installed
	command -v promtool >/dev/null && command -v prometheus >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus)
	touch $@

$(VENV)/.debs-systemd: | $(VENV)/.installed
	command -v systemd-analyze >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd)
	touch $@

# The Slurm job runner's tests start a real munged, slurmctld and slurmd (tests/slurmctl.py).
$(VENV)/.debs-slurm: | $(VENV)/.installed
	command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge)
	touch $@

# The MQTT tests start their own Mosquitto broker (tests/mosquitto.py); it lives in /usr/sbin.
$(VENV)/.debs-mosquitto: | $(VENV)/.installed
	(command -v mosquitto || test -x /usr/sbin/mosquitto) >/dev/null && command -v mosquitto_passwd >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mosquitto mosquitto-clients)
	touch $@

# Lint and types first (seconds), then the tests (minutes); all configured in pyproject.toml.
test: $(VENV)/.installed $(VENV)/.debs-prometheus $(VENV)/.debs-systemd $(VENV)/.debs-slurm $(VENV)/.debs-mosquitto
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) benchmarks/telemetry_cycle.py
	$(PY) benchmarks/decide_scale.py
	$(PY) benchmarks/site_scale.py
	$(PY) benchmarks/backtest_30d.py
	$(PY) benchmarks/policies_vs_optimum.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
