# WinCert Orchestrator — the two commands a user needs:
#   make demo   run the main job end to end on embedded defaults
#   make test   lint, type-check and run the whole test suite
# Both create .venv and install everything they need on a fresh machine.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit venv redis-server redis-sentinel kubectl prometheus rules bench clean system-packages node node-deps schemas

# apt before pip: the gssapi and krb5 wheels build against libkrb5-dev (krb5-config).
$(STAMP): pyproject.toml | system-packages
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' || { \
	  echo "pip install failed; retrying once (gssapi/krb5 build against libkrb5-dev)" >&2; \
	  $(PY) -m pip install --quiet -e '.[dev]'; }
	@touch $(STAMP)

venv: $(STAMP)

# Tests and the demo start their own redis-server on a free loopback port; they need the binary.
redis-server:
	@if ! command -v redis-server >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "redis-server not found: installing it with apt-get"; \
	    apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq redis-server >/dev/null; \
	  else \
	    echo "redis-server is required. Install it: sudo apt-get install redis-server (Debian/Ubuntu)," \
	         "brew install redis (macOS), then run make again." >&2; exit 1; \
	  fi; \
	fi

# Prometheus and promtool (Debian's prometheus package): alert-rule unit tests and the test that
# evaluates every dashboard panel and alert on a real Prometheus. Tests start their own server.
prometheus:
	@if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "prometheus not found: installing it with apt-get"; \
	    apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else \
	    echo "prometheus and promtool are required. Install them: sudo apt-get install prometheus" \
	         "(Debian/Ubuntu), then run make again." >&2; exit 1; \
	  fi; \
	fi

# Alert rules: syntax and a unit test for every alert (deploy/prometheus/tests/)
rules: prometheus
	promtool check rules deploy/prometheus/wincert-alerts.yml
	cd deploy/prometheus && promtool test rules tests/wincert-alerts.test.yml

# Sentinel tests (tests/deploy/test_redis_sentinel.py) run real redis-sentinel processes.
redis-sentinel: redis-server
	@if ! command -v redis-sentinel >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "redis-sentinel not found: installing it with apt-get"; \
	    apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq redis-sentinel >/dev/null; \
	  else \
	    echo "redis-sentinel is required. Install it: sudo apt-get install redis-sentinel (Debian/Ubuntu)," \
	         "then run make again." >&2; exit 1; \
	  fi; \
	fi

# The Kubernetes manifest tests render deploy/kubernetes with `kubectl kustomize` (offline).
kubectl:
	@command -v kubectl >/dev/null 2>&1 || { echo "kubectl is required for the deploy/kubernetes tests:" \
	  "install kubectl (>= 1.27, with kustomize built in) and run make again." >&2; exit 1; }

# Kerberos (a real MIT KDC in tests, gssapi builds against libkrb5-dev) and OpenSSH (sshd in the
# SSH transport tests). Debian package names; apt only when something is missing, as root.
KRB5_PACKAGES := krb5-kdc krb5-admin-server krb5-user libkrb5-dev
SSH_PACKAGES := openssh-server
system-packages:
	@missing=""; \
	for tool in /usr/sbin/krb5kdc /usr/sbin/kadmin.local /usr/bin/kinit /usr/bin/krb5-config; do \
	  test -x $$tool || missing="$(KRB5_PACKAGES)"; done; \
	test -x /usr/sbin/sshd || missing="$$missing $(SSH_PACKAGES)"; \
	command -v cc >/dev/null 2>&1 || missing="$$missing gcc"; \
	$(PYTHON) -c 'import os,sysconfig,sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
	  || missing="$$missing python3-dev"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing with apt-get:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing system packages:$$missing (Kerberos: MIT KDC + libkrb5-dev, gcc and Python headers" \
	         "to build the gssapi/krb5 wheels; SSH: sshd). Install them: sudo apt-get install$$missing," \
	         "then run make again." >&2; exit 1; \
	  fi; \
	fi

# Node runs the schema tests (Ajv) and the Node producer example (examples/node).
node:
	@if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "node/npm not found: installing nodejs and npm with apt-get"; \
	    apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq nodejs npm >/dev/null; \
	  else \
	    echo "node and npm are required (schema tests, Node example). Install them: sudo apt-get install" \
	         "nodejs npm (Debian/Ubuntu), then run make again." >&2; exit 1; \
	  fi; \
	fi

# npm ci of the pinned package-lock.json, when node_modules is missing or older than the lock file
tests/node/node_modules/.package-lock.json: tests/node/package-lock.json | node
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error

examples/node/node_modules/.package-lock.json: examples/node/package-lock.json | node
	cd examples/node && npm ci --no-audit --no-fund --loglevel=error

node-deps: tests/node/node_modules/.package-lock.json examples/node/node_modules/.package-lock.json

# Regenerate the committed schemas after changing the job/result models (tests keep them in step;
# a changed job rule also needs producer/schema_store.py or schema_jobs.py and the corpus in
# tests/fixtures/schema-corpus)
schemas: $(STAMP)
	$(VENV)/bin/wincert schema > schema/job.schema.json
	$(VENV)/bin/wincert schema result > schema/result.schema.json
	$(VENV)/bin/wincert intake --openapi > schema/intake.openapi.json

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy producer worker

test: $(STAMP) system-packages redis-server redis-sentinel kubectl prometheus node-deps lint typecheck rules
	$(PY) -m pytest -q -p no:cacheprovider

unit: $(STAMP) node-deps
	$(PY) -m pytest -q -p no:cacheprovider tests/unit tests/contract

demo: $(STAMP) redis-server
	$(PY) scripts/demo.py

# End-to-end benchmark (BENCHMARKS.md): real Redis, a celery worker subprocess, simulated hosts;
# quick sizes by default (a few minutes); `make bench BENCH_ARGS=--full` is the 1,000-host run.
# Writes bench/results/<date>.json (untracked).
BENCH_ARGS ?=
bench: $(STAMP) redis-server
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .demo .mypy_cache .ruff_cache
