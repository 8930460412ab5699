# The commands of the pizza tracing platform. `make test` is what CI runs (.ci/run).
#
# Reserved for later work: `make demo` (native stack plus the three services, printing the URLs) and
# `make down` (stop everything `make demo` started).
SHELL := /usr/bin/env bash
INFRA := deploy/local/infra.sh

.PHONY: help infra-up infra-down infra-status infra-install test lint bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

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

bench: ## benchmarks (printed, not asserted) against the native stack: messaging traced vs untraced, workflow engine vs raw PostgreSQL
	@$(INFRA) up
	cargo bench -p pizza-messaging --bench throughput
	cargo bench -p pizza-workflow --bench throughput
