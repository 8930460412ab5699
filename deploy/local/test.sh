#!/usr/bin/env bash
# `make test`: everything a fresh machine needs to run the whole suite, in one command.
#
# 1. installs the build prerequisites (Debian packages, the Rust components),
# 2. starts the native stack (deploy/local/infra.sh), remembering which parts it started itself,
# 3. runs rustfmt, clippy (warnings are errors) and every test of the workspace against the real stack,
# 4. stops what it started, whatever the outcome, so nothing is left running.
#
# A stack that was already up (`make infra-up`) is used as is and left running.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
INFRA="$ROOT/deploy/local/infra.sh"
STARTED=()

say() { printf '[test %4ss] %s\n' "$SECONDS" "$*" >&2; }

cleanup() {
  local rc=$?
  if [ ${#STARTED[@]} -gt 0 ]; then
    say "stopping what this run started: ${STARTED[*]}"
    "$INFRA" down "${STARTED[@]}" || rc=1
    # Nothing this run started may outlive it.
    local left
    left=$("$INFRA" status 2>/dev/null | awk 'NR > 1 && $2 != "-" { print $1 " (pid " $2 ")" }' |
      grep -wF -f <(printf '%s\n' "${STARTED[@]}") || true)
    if [ -n "$left" ]; then
      say "still running after stop: $left"
      rc=1
    fi
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null; then
    # -n: never prompt (CI has no terminal); a sudo that wants a password fails with its own message.
    sudo -n "$@"
  else
    say "installing needs root: run as root, or install sudo, or install by hand: $*"
    exit 1
  fi
}

# Build prerequisites: rdkafka builds librdkafka from source with cmake; psql answers readiness checks.
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v c++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
command -v psql >/dev/null || need+=(postgresql-client)
command -v curl >/dev/null || need+=(curl)
command -v pkg-config >/dev/null || need+=(pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  say "installing build prerequisites: ${need[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi
command -v cargo >/dev/null || {
  say "cargo not found: install Rust with rustup (the toolchain is pinned in rust-toolchain.toml)"
  exit 1
}
say "$(cargo --version), $(rustc --version)"

# CI builds a fresh clone every time: keep compiled dependencies outside the work tree so a second run
# reuses them (cargo rebuilds only what changed; the workspace's own crates, whose paths differ).
if [ -n "${CI:-}" ] && [ -z "${CARGO_TARGET_DIR:-}" ]; then
  export CARGO_TARGET_DIR="${PIZZA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pizza-infra}/cargo-target"
  say "CI: cargo builds into $CARGO_TARGET_DIR"
fi

# Fast checks first: a formatting slip should not wait for a 10-minute infrastructure build.
say "cargo fmt --check"
cargo fmt --all -- --check

# Which components were already running (and healthy) before us? Those are left running at the end.
before=$("$INFRA" status 2>/dev/null || true)
for c in postgres kafka jaeger collector; do
  if ! awk -v c="$c" '$1 == c && $NF == "healthy" { found = 1 } END { exit !found }' <<<"$before"; then
    STARTED+=("$c")
  fi
done
"$INFRA" up
# Tools the deployment checks need (kustomize, built from the Go module proxy; cached by version).
"$ROOT/deploy/local/deploy-tools.sh" install
say "test tools: deploy/local/tools.sh install (Chromium, playwright-core, schemathesis)"
"$ROOT/deploy/local/tools.sh" install
TOOLS_ENV=$("$ROOT/deploy/local/tools.sh" env) # an assignment, so set -e catches a failure
eval "$TOOLS_ENV"

# The Collector binary the stack runs is the one the tests use to validate otel-collector/config.yaml.
PIZZA_OTELCOL_BIN=$("$INFRA" path collector)
export PIZZA_OTELCOL_BIN

say "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "cargo test (against the native stack)"
# Default targets: libraries, binaries, integration tests and doc tests; benches are `make bench`.
cargo test --workspace --locked --no-fail-fast

# The crate docs carry much of the explanation; a broken intra-doc link is a bug.
say "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
"$INFRA" status
