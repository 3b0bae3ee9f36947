# TMSP - Threat Management Services Portal. `make` alone prints this help.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.8
TOOLS := .local/tools
UV := $(TOOLS)/bin/uv
PY := .venv/bin/python
INFRA := python3 deploy/local/infra.py
SERVICES := auth ingest correlator reporter notifier
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/.venv

.PHONY: help setup proto lint test test-unit test-integration infra-up infra-down infra-status \
        up down demo bench k8s-validate fuzz clean

help: ## show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN{FS=":.*## "}{printf "  \033[1m%-18s\033[0m %s\n", $$1, $$2}'

$(UV):
	@echo "==> installing uv $(UV_VERSION) into $(TOOLS)"
	@python3 -m venv $(TOOLS) && $(TOOLS)/bin/pip install -q "uv==$(UV_VERSION)"

setup: $(UV) ## install system tools, Python deps (uv, locked) and generate protobuf code
	@bash scripts/ensure_system_tools.sh
	@echo "==> uv sync (locked)"
	@$(UV) sync --frozen --all-packages --python 3.11 -q
	@$(MAKE) --no-print-directory proto

proto: ## generate Python code from proto/
	@$(PY) scripts/gen_protos.py

lint: setup ## ruff, mypy --strict, buf lint and the Kubernetes manifests
	@echo "==> ruff"
	@$(UV) run --frozen ruff check .
	@$(UV) run --frozen ruff format --check .
	@echo "==> mypy --strict"
	@$(UV) run --frozen mypy libs/common/src libs/client/src $(foreach s,$(SERVICES),$(if $(wildcard services/$(s)/src),services/$(s)/src)) scripts deploy/local
	@echo "==> buf lint"
	@$(INFRA) install-buf
	@.local/bin/buf lint
	@echo "==> deploy/k8s (schemas, settings names, probes)"
	@$(PY) scripts/k8s_validate.py

test: setup ## unit and integration tests (fetches and starts Kafka and FerretDB itself)
	@set -o pipefail; eval "$$($(INFRA) up)" || exit 1; \
	  export TMSP_KAFKA_BOOTSTRAP TMSP_MONGO_URL; \
	  $(UV) run --frozen pytest -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	  if [ -z "$$KEEP_INFRA" ]; then $(INFRA) down; fi; exit $$rc

test-unit: setup ## unit tests only (no infrastructure)
	@$(UV) run --frozen pytest -m "not integration" $(PYTEST_ARGS)

test-integration: setup ## integration tests only (the local stack stays up)
	@eval "$$($(INFRA) up)" || exit 1; export TMSP_KAFKA_BOOTSTRAP TMSP_MONGO_URL; \
	  $(UV) run --frozen pytest -m integration $(PYTEST_ARGS)

infra-up: ## start the local Kafka (KRaft) and FerretDB (idempotent)
	@$(INFRA) up

infra-down: ## stop the local Kafka and FerretDB (idempotent)
	@$(INFRA) down

infra-status: ## show what the local stack is running
	@$(INFRA) status

up: setup ## start the local stack and every service in the background
	@eval "$$($(INFRA) up)" || exit 1; export TMSP_KAFKA_BOOTSTRAP TMSP_MONGO_URL; \
	  $(PY) scripts/stack.py up

down: ## stop every service and the local stack
	@-$(PY) scripts/stack.py down
	@$(INFRA) down

demo: setup ## the main job: simulated appliances -> incidents -> emails, shown step by step
	@eval "$$($(INFRA) up)" || exit 1; export TMSP_KAFKA_BOOTSTRAP TMSP_MONGO_URL; \
	  $(PY) scripts/stack.py up && $(PY) scripts/demo.py

bench: setup ## benchmarks, as ratios to a reference measured in the same run
	@eval "$$($(INFRA) up)" || exit 1; export TMSP_KAFKA_BOOTSTRAP TMSP_MONGO_URL; \
	  $(PY) bench/run.py $(BENCH_ARGS)

fuzz: setup ## run the atheris fuzz targets of every parser for a short while
	@$(PY) services/ingest/fuzz/run.py $(FUZZ_ARGS)

k8s-validate: setup ## validate the Kubernetes manifests under deploy/k8s
	@$(PY) scripts/k8s_validate.py

clean: ## remove the venv, generated code and local data
	@-$(INFRA) down --purge
	@rm -rf .venv .local libs/protos/src/tmsp/*/
