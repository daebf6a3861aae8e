# kubetasks developer entry points. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export KUBECONFIG ?= $(CURDIR)/.cluster/kubeconfig

.PHONY: help venv cluster-up cluster-down images image crds lint unit browser test demo bench

help:  ## This list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[operator,test]'
	touch $@

venv: $(VENV)/.installed  ## Python environment with kubetasks and its test tools

cluster-up:  ## Build (cached) and start the local Kubernetes cluster; prints how to use it
	hack/cluster/up.sh

cluster-down:  ## Stop the local cluster and remove its state
	hack/cluster/down.sh

images:  ## Build the base images and the kubetasks image, and import them into the cluster
	hack/images/build.sh all
	hack/images/import.sh all

crds: venv  ## Regenerate crds/ (and the chart's copy) from the pydantic models, admission policies included
	$(PY) -m kubetasks.api.crd crds charts/kubetasks/crds

lint: venv  ## Pyflakes checks (ruff), types (mypy), the architecture's import contracts (import-linter)
	$(PY) -m ruff check operator tests bench examples
	$(PY) -m mypy
	PYTHONPATH=operator $(VENV)/bin/lint-imports --no-cache

unit: venv  ## Unit tests only (no cluster)
	$(PY) -m pytest tests/unit -q

browser:  ## Debian's chromium, which the dashboard's browser tests drive (installed when missing)
	hack/chromium.sh

# TEST_WORKERS sessions share the cluster, each with an operator instance of its own, and a module
# stays on one worker (its module fixtures are made once). Those marked serial disturb every
# session (kube-apiserver paused or restarted, the one real node's 2 CPUs filled), so they run
# after, alone. Both parts always run. A cluster that breaks mid-suite fails each test only at its
# deadline: after TEST_MAXFAIL failures a part stops rather than wait out every one.
TEST_WORKERS ?= 2
TEST_MAXFAIL ?= 20
test: venv lint images browser  ## The whole test suite: lint, unit tests and integration tests on the local cluster
	status=0; \
	$(PY) -m pytest tests -q -m "not serial" -n $(TEST_WORKERS) --dist loadfile --durations=30 --maxfail=$(TEST_MAXFAIL) || status=$$?; \
	$(PY) -m pytest tests -q -m serial --durations=10 --maxfail=$(TEST_MAXFAIL) || status=$$?; \
	exit $$status

demo: venv  ## Fresh machine to a finished sample TaskRun: cluster, image, helm install, run
	hack/demo.sh

bench: venv  ## kubetasks beside plain Jobs, and issue 17 item 10's targets; SIZES="50 300 1000" by default; then flow control, FLOW_RUNS=1000; then durable waits, WAIT_PARENTS=200 (needs the cluster)
	$(PY) bench/side_by_side.py $(SIZES)
	$(PY) bench/flow_control.py $(FLOW_RUNS)
	$(PY) bench/durable_waits.py $(WAIT_PARENTS)
