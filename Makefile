# The commands of the pizza tracing platform. `make test` is what CI runs (.ci/run).
#
SHELL := /usr/bin/env bash
INFRA := deploy/local/infra.sh

.PHONY: help demo down load scenarios bench-load compose-up compose-test docker-up docker-down kind-up kind-down infra-up infra-down infra-status infra-install test lint bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

demo: ## start the native stack and the three services, then print the URLs (the shop on :8080)
	@$(INFRA) up
	@deploy/local/services.sh up

down: ## stop the services and the native stack
	@deploy/local/services.sh down
	@$(INFRA) down

# The workshop's admin token is the default on the native platform only (it listens on loopback); compose
# has none (PIZZA_ADMIN_TOKEN passes through from the environment, as `up` was given it) and the managed
# shop uses its own.
load: ## one load scenario against `make demo`: SCENARIO=baseline PLATFORM=native|compose|managed RATE= DURATION=
	$(if $(filter native,$(or $(PLATFORM),native)),PIZZA_ADMIN_TOKEN=$${PIZZA_ADMIN_TOKEN:-pizza-workshop}) $(if $(filter compose,$(PLATFORM)),DATABASE_URL=$${DATABASE_URL:-postgres://pizza:pizza@127.0.0.1:$${PIZZA_POSTGRES_PORT:-55433}/pizza}) cargo run --release -p pizza-load -- run --scenario $(or $(SCENARIO),baseline) --platform $(or $(PLATFORM),native) $(if $(RATE),--rate $(RATE)) $(if $(DURATION),--duration $(DURATION))

scenarios: ## the trace-integrity matrix: all ten scenarios x (continuous, linked, 10% sampled), private Collector and broker (~10 min)
	@$(INFRA) up
	cargo run -p pizza-load -- matrix $(if $(SCENARIOS),--scenarios $(SCENARIOS)) $(if $(RATE),--rate $(RATE)) $(if $(DURATION),--duration $(DURATION))

bench-load: ## load benchmarks on a shop of the tester's own (printed, not asserted)
	@$(INFRA) up
	DATABASE_URL=$${DATABASE_URL:-$$($(INFRA) database-url)} cargo run --release -p pizza-load -- bench

compose-up: ## the shop in containers (needs Docker): the shop on localhost:8080, Jaeger on localhost:16686
	docker compose -f deploy/docker-compose.yml up --build

compose-test: ## the compose deployment end to end, as make test runs it (make docker-up first where no Docker runs)
	@eval "$$(deploy/local/docker.sh env)" && deploy/local/docker.sh images && \
		cargo test -p pizza-deploy-checks --features compose-e2e --test compose_up -- --nocapture

docker-up: ## a Docker engine and compose where none answers (dockerd by pid, compose built from the Go module proxy)
	@deploy/local/docker.sh up

docker-down: ## stop the dockerd docker-up started (an engine it did not start is left alone)
	@deploy/local/docker.sh down

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

bench: ## every benchmark in one run (printed, not asserted): messaging traced vs untraced, the engine vs raw PostgreSQL and DBOS, the shop's load ladder and what an order costs
	@$(INFRA) up
	cargo bench -p pizza-messaging --bench throughput
	cargo bench -p pizza-workflow --bench throughput
	DATABASE_URL=$${DATABASE_URL:-$$($(INFRA) database-url)} cargo run --release -p pizza-load -- bench
