# One entry point for people, the nightly job and CI.  Every target that runs
# Python makes the virtualenv first, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# bench knobs (override on the command line: make bench BENCH_SECONDS=30)
BENCH_SECONDS ?= 60
BENCH_USERS ?= 20
BENCH_ARGS ?=
BASE ?= origin/main
ROUNDS ?= 3

.PHONY: install test bench bench-backend bench-client bench-analysis bench-compare ui soak clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m bench.run --seconds $(BENCH_SECONDS) --users $(BENCH_USERS) $(BENCH_ARGS)

bench-backend: $(STAMP)
	$(PY) -m bench.backend

bench-client: $(STAMP)
	$(PY) -m bench.client

bench-analysis: $(STAMP)
	$(PY) -m bench.analysis

bench-compare: $(STAMP)
	$(PY) -m bench.compare --base $(BASE) --rounds $(ROUNDS)

ui: $(STAMP)
	$(PY) -m bench.ui

soak: $(STAMP)
	$(PY) -m bench.soak

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
