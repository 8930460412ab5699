# The commands of the pizza tracing platform. `make test` is what CI runs (.ci/run).
#
SHELL := /usr/bin/env bash
INFRA := deploy/local/infra.sh

.PHONY: help demo down load bench-load compose-up kind-up kind-down infra-up infra-down infra-status infra-install test lint bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

demo: ## start the native stack and the three services, then print the URLs (the shop on :8080)
	@$(INFRA) up
	@deploy/local/services.sh up

down: ## stop the services and the native stack
	@deploy/local/services.sh down
	@$(INFRA) down

load: ## one load scenario against `make demo`: SCENARIO=baseline PLATFORM=native|compose|managed RATE= DURATION=
	PIZZA_ADMIN_TOKEN=$${PIZZA_ADMIN_TOKEN:-pizza-workshop} cargo run --release -p pizza-load -- run --scenario $(or $(SCENARIO),baseline) --platform $(or $(PLATFORM),native) $(if $(RATE),--rate $(RATE)) $(if $(DURATION),--duration $(DURATION))

bench-load: ## load benchmarks on a shop of the tester's own (printed, not asserted)
	@$(INFRA) up
	cargo run --release -p pizza-load -- bench

compose-up: ## the shop in containers (needs Docker): the shop on localhost:8080, Jaeger on localhost:16686
	docker compose -f deploy/docker-compose.yml up --build

kind-up: ## the shop on a local kind cluster (needs Docker, kind and kubectl)
	@deploy/kind/up.sh

kind-down: ## delete the kind cluster
	@deploy/kind/down.sh

infra-install: ## download and build PostgreSQL, Kafka, the Collector and Jaeger (cached by version)
	@$(INFRA) install

infra-up: ## start the native stack on 127.0.0.1 and wait until each part answers a real request
	@$(INFRA) up

infra-down: ## stop the native stack by saved pid
	@$(INFRA) down

infra-status: ## pid, ports and health of each component
	@$(INFRA) status

test: ## install and start what the tests need, run every check and test, stop what it started
	@deploy/local/test.sh

lint: ## rustfmt and clippy only (no stack needed)
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

bench: ## benchmarks (printed, not asserted) against the native stack: messaging traced vs untraced, workflow engine vs raw PostgreSQL and DBOS
	@$(INFRA) up
	cargo bench -p pizza-messaging --bench throughput
	cargo bench -p pizza-workflow --bench throughput
