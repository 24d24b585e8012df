# One entry point for people, the nightly job and CI.  Every target that runs
# Python makes the virtualenv first, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HARNESS := $(VENV)/bin/stream-harness
STAMP := $(VENV)/.installed

# bench knobs (override on the command line: make bench BENCH_SECONDS=30)
BENCH_SECONDS ?= 60
BENCH_USERS ?= 20
BENCH_ARGS ?=
BASE ?= origin/main
ROUNDS ?= 3
# soak knobs: make soak SOAK_ARGS="--minutes 5"
SOAK_ARGS ?=
COMPARE_ARGS ?=
NIGHTLY_ARGS ?=

.PHONY: install browser nginx vendor-socketio lint test bench bench-backend bench-client bench-http2 bench-browser bench-analysis bench-memory soak-capacity bench-compare bench-nightly bench-verdicts bench-live ui soak clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP) browser nginx lint
	$(PY) -m pytest

# ruff (lint + format) and mypy: the configuration is in pyproject.toml
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Headless Chromium for the browser users and the web-UI browser test (tests/loadtests/live/test_webui_browser.py):
# Debian's own package, driven by Playwright with executable_path; never a
# downloaded browser build.  Installed with apt-get when missing and root.
browser:
	@if ! test -x /usr/bin/chromium; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser test"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; \
	  else \
	    echo "make browser: /usr/bin/chromium missing and not root: the browser test will be skipped" >&2; \
	  fi; \
	fi

# Debian's nginx for the TLS + HTTP/2 edge the browser-calibration tests put in front of the fake
# backend (tests/support/edge.py starts its own nginx on loopback with a generated config; the
# package's service is not used).  Installed with apt-get when missing and root, like the browser.
nginx:
	@if ! test -x /usr/sbin/nginx; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's nginx for the TLS + HTTP/2 edge tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx >/dev/null; \
	  else \
	    echo "make nginx: /usr/sbin/nginx missing and not root: the edge tests will be skipped" >&2; \
	  fi; \
	fi

# The npm socket.io-client the browser users' pages run, vendored into the package (no CDN, nothing
# fetched at run time): tools/socketio-client pins the version; this refreshes the copy from it.
vendor-socketio:
	cd tools/socketio-client && npm ci --no-audit --no-fund --loglevel=error
	cp tools/socketio-client/node_modules/socket.io-client/dist/socket.io.min.js loadtests/browser/static/
	cp tools/socketio-client/node_modules/socket.io-client/LICENSE loadtests/browser/static/socket.io-client.LICENSE

bench: $(STAMP)
	$(HARNESS) run --seconds $(BENCH_SECONDS) --users $(BENCH_USERS) $(BENCH_ARGS)

bench-backend: $(STAMP)
	$(PY) -m bench.backend

# client CPU per chunk beside bare clients, then how many streams one load process sustains
bench-client: $(STAMP)
	$(PY) -m bench.client
	$(PY) -m bench.client_capacity

# HTTP/2 NDJSON client CPU per chunk beside the HTTP/1.1 client (target: at most 2x), one Hypercorn backend
bench-http2: $(STAMP)
	$(PY) -m bench.http2

# browser users: page CPU per 1,000 chunks per transport, and how many run unsaturated beside the fake backend
bench-browser: $(STAMP) browser
	$(PY) -m bench.browser

# the analysis against DuckDB and Polars (installed for the benchmark only: the [bench] extra)
bench-analysis: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench.analysis_speed

# RSS of every harness process over 150 s, local and master + 2 workers
bench-memory: $(STAMP)
	$(PY) -m bench.memory

# 60 minutes at the load process's capacity (100 NDJSON + 30 Socket.io streams at 333 chunks/s)
soak-capacity: $(STAMP)
	$(PY) -m bench.memory --seconds 3600 --users 130 --modes local --from-s 60 \
	  --section "## Soak at capacity (make soak-capacity)" --name soak-capacity

bench-compare: $(STAMP)
	$(HARNESS) compare-refs --base $(BASE) --rounds $(ROUNDS) $(COMPARE_ARGS)

# the nightly job's gate: tonight's run against the rolling baseline of past nights
bench-nightly: $(STAMP)
	$(HARNESS) nightly $(NIGHTLY_ARGS)

# the buffering detector on real runs: false alarms on clean runs, misses on faulty ones
bench-verdicts: $(STAMP)
	$(PY) -m bench.verdicts

bench-live: $(STAMP)
	$(PY) -m bench.live

ui: $(STAMP)
	$(HARNESS) ui

soak: $(STAMP)
	$(PY) -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
