# routing-persistence: the two commands that matter are `make run` (the main job) and `make test`.
# Both set up everything they need: a .venv, the Python dependencies, Kafka's jars and a throwaway
# PostgreSQL cluster (deploy/local/stack), with no Docker.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STACK := deploy/local/stack
PYTEST_ARGS ?=
TS := typescript
# npm ci reruns only when the lockfile changes; npm's cache is ~/.npm. Install scripts are not
# run: none of the dependencies needs one here (Prisma's would fetch a schema-engine binary from
# outside the npm registry; esbuild's binary comes as an optional dependency).
TS_STAMP := $(TS)/node_modules/.installed

.PHONY: help venv lint fmt typecheck test test-only ts-deps ts-test promtool run demo stack-up stack-down stack-status bench bench-quick bench-baseline bench-fair fuzz constraints clean

help:
	@echo "make run      set up everything, start the consumer, feed it sample events, show the outcome"
	@echo "make test     venv + local stack + ruff + mypy --strict + pytest + the TypeScript package; stops the stack after"
	@echo "make ts-test  the TypeScript package alone: npm ci, Prisma client, tsc --noEmit, node --test (E2E included)"
	@echo "make bench    the full benchmark (bench/run); make bench-quick for the short one"
	@echo "make bench-baseline bench-fair   issue 16's A/B against a baseline commit (BENCH_BASELINE_COMMIT)"
	@echo "make stack-up / stack-down / stack-status   the local Kafka + PostgreSQL"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

venv: $(STAMP)

$(TS_STAMP): $(TS)/package.json $(TS)/package-lock.json
	cd $(TS) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

ts-deps: $(TS_STAMP)

# The TypeScript package (issue 15): its tests use the stack's Kafka and PostgreSQL and run the
# service from .venv (end-to-end), so both are prerequisites; the stack is started if needed.
ts-test: $(STAMP) $(TS_STAMP)
	@$(STACK) up >/dev/null && eval "$$($(STACK) env)" && cd $(TS) && \
	  npm run -s prisma:generate >/dev/null && npm run -s typecheck && npm run -s build && npm test

# promtool (tests/test_alerts.py unit-tests deploy/prometheus/alerts.yaml) from Debian's prometheus
# package, installed once when missing (root, non-interactive; ~15 s). The package also ships the
# Prometheus server as a service: a policy-rc.d that refuses (101) keeps it from being started, and
# one this recipe put there is removed after.
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "installing promtool (Debian package prometheus)" >&2; \
	  test "$$(id -u)" -eq 0 || { echo "promtool missing: apt-get install prometheus as root" >&2; exit 1; }; \
	  policy=/usr/sbin/policy-rc.d; made=0; \
	  if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' >$$policy; chmod 755 $$policy; made=1; fi; \
	  status=0; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends prometheus >/dev/null; } || status=$$?; \
	  if [ $$made -eq 1 ]; then rm -f $$policy; fi; \
	  exit $$status; }

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy consumer schemas migrations tests bench

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The stack is brought down afterwards only if this run started it (a developer's running stack
# is left alone), and also when lint or a test fails.
test: $(STAMP) promtool
	@started=0; $(STACK) status >/dev/null 2>&1 || started=1; \
	status=0; $(STACK) up >/dev/null || status=$$?; \
	if [ $$status -eq 0 ]; then \
	  eval "$$($(STACK) env)"; \
	  $(MAKE) --no-print-directory lint || status=$$?; \
	  if [ $$status -eq 0 ]; then $(PY) -m pytest $(PYTEST_ARGS) || status=$$?; fi; \
	  if [ $$status -eq 0 ]; then $(MAKE) --no-print-directory ts-test || status=$$?; fi; \
	  if [ $$status -eq 0 ]; then $(PY) -m bench.run --quick || status=$$?; fi; \
	fi; \
	if [ $$started -eq 1 ]; then $(STACK) down; fi; \
	exit $$status

# pytest alone, against a stack you keep running (fast inner loop).
test-only: $(STAMP) promtool
	@$(STACK) up >/dev/null && eval "$$($(STACK) env)" && $(PY) -m pytest $(PYTEST_ARGS)

run: $(STAMP)
	@$(STACK) up >/dev/null
	@eval "$$($(STACK) env)" && $(VENV)/bin/routing-persistence demo $(DEMO_ARGS)

stack-up:
	@$(STACK) up

stack-down:
	@$(STACK) down

stack-status:
	@$(STACK) status

bench: $(STAMP)
	@$(STACK) up >/dev/null && eval "$$($(STACK) env)" && $(PY) -m bench.run $(BENCH_ARGS)

bench-quick: $(STAMP)
	@$(STACK) up >/dev/null && eval "$$($(STACK) env)" && $(PY) -m bench.run --quick

# The fair benchmark of issue 16 (bench/RESULTS.md): 3 interleaved rounds on each workload (300,000
# events: every window holds >= 200,000, two processes' too, whose window opens late), this
# checkout's service A/B against a baseline checkout (make bench-baseline: an exported tree of
# BENCH_BASELINE_COMMIT with its own .venv under .local/). The scale runs on the realistic one.
BENCH_BASELINE_COMMIT ?= main
BENCH_BASELINE ?= .local/baseline-$(shell git rev-parse --short $(BENCH_BASELINE_COMMIT) 2>/dev/null)

bench-baseline:
	rm -rf $(BENCH_BASELINE) && mkdir -p $(BENCH_BASELINE)
	git archive $(BENCH_BASELINE_COMMIT) | tar -x -C $(BENCH_BASELINE)
	git rev-parse $(BENCH_BASELINE_COMMIT) >$(BENCH_BASELINE)/.bench-commit
	$(MAKE) -C $(BENCH_BASELINE) venv

bench-fair: $(STAMP)
	@test -x $(BENCH_BASELINE)/.venv/bin/routing-persistence || { \
	  echo "no baseline at $(BENCH_BASELINE): run make bench-baseline first"; exit 1; }
	@$(STACK) up >/dev/null && eval "$$($(STACK) env)" && \
	  $(PY) -m bench.run --workload realistic --events 300000 --repeat 3 \
	    --baseline $(BENCH_BASELINE) $(BENCH_ARGS) && \
	  $(PY) -m bench.run --workload benchmark --events 300000 --repeat 3 \
	    --baseline $(BENCH_BASELINE) --no-scale $(BENCH_ARGS)

fuzz: $(STAMP)
	$(PY) -m bench.fuzz $(FUZZ_ARGS)

constraints: $(STAMP)
	@{ echo '# Pinned versions that `make test` installs (pip -c): CI resolves the same set every run.'; \
	   echo '# Refresh with: make constraints'; \
	   $(PY) -m pip freeze --exclude-editable | grep -v '^routing-persistence'; } > constraints.txt

clean:
	-$(STACK) down
	rm -rf .local $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info \
	  $(TS)/node_modules $(TS)/dist $(TS)/.prisma-client
