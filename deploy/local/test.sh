#!/usr/bin/env bash
# `make test`: everything a fresh machine needs to run the whole suite, in one command.
#
# 1. installs the build prerequisites (Debian packages, the Rust components),
# 2. starts the native stack (deploy/local/infra.sh), remembering which parts it started itself,
# 3. in the background: a Docker engine (deploy/local/docker.sh: the machine's, or dockerd started
#    here), the stand-ins for the images no registry gives here, the compose deployment's images,
# 4. runs rustfmt, clippy (warnings are errors) and every test of the workspace against the real stack,
# 5. then the compose deployment end to end (deploy/checks/tests/compose_up.rs), once its images are
#    built,
# 6. stops what it started, whatever the outcome, so nothing is left running.
#
# A stack or an engine that was already up (`make infra-up`, a Docker daemon) is used as is and left
# running.
#
# Why the images are built beside the workspace's tests: the build compiles the workspace in release
# inside a container (the longest single step of a cold run), and the tests spend much of their time
# waiting on brokers, deadlines and restarts. The build runs at a lower CPU priority (`nice`, and
# dockerd itself runs niced, docker.sh), so it takes what the tests leave and never starves a test
# waiting on a deadline. The compose test itself comes last, alone: it runs a load scenario and wants
# the CPU. It publishes host ports of its own, so it never collides with the native stack.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
INFRA="$ROOT/deploy/local/infra.sh"
DOCKER="$ROOT/deploy/local/docker.sh"
STARTED=()
DOCKER_STARTED=
BUILD_PID=
TAG=test
RUN=${PIZZA_RUN_DIR:-$ROOT/.run}
# shellcheck source=deploy/local/lib.sh
. "$ROOT/deploy/local/lib.sh"

# Prints, from a `cargo test` log, each failing test's section ("---- name stdout ----" up to the next
# section or "failures:") without its stack backtraces, cut to its last 40 lines: the panic message
# and what the test printed before it.
failed_test_output() {
  awk '
    function flush(   i, from) {
      if (name == "") return
      from = n > 40 ? n - 40 + 1 : 1
      print "==== " name " (" n " lines, the last " (n - from + 1) ") ===="
      for (i = from; i <= n; i++) print buf[i]
      name = ""; n = 0
    }
    /^---- .* stdout ----$/ { flush(); name = $2; next }
    /^failures:$/ { flush(); next }
    name != "" && /^stack backtrace:$/ { skip = 1; next }
    skip && (/^ +[0-9]+: / || /^ +at / || /^note: .*backtrace/) { next }
    { skip = 0 }
    name != "" { buf[++n] = $0 }
    /^error: [0-9]+ targets? failed:$/ { flush(); tail = 1 }
    tail { print }
    END { flush() }
  ' "$1"
}

cleanup() {
  local rc=$?
  if [ -n "$BUILD_PID" ] && kill -0 "$BUILD_PID" 2>/dev/null; then
    say "stopping the image build (pid $BUILD_PID)"
    kill "$BUILD_PID" 2>/dev/null || true
    wait "$BUILD_PID" 2>/dev/null || true
  fi
  if [ -n "$DOCKER_STARTED" ]; then
    say "stopping the Docker engine this run started"
    "$DOCKER" down || rc=1
  fi
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

# The compose deployment: a Docker engine and compose (the machine's, or dockerd started here and
# stopped at the end, and a Compose plugin built from the Go module proxy), the stand-ins for the images
# no registry gives here, then the compose file's own images. All of it runs in the background, at a
# low CPU priority, beside clippy and the workspace's tests; the compose test at the end waits for it.
"$DOCKER" status >/dev/null 2>&1 || DOCKER_STARTED=1
# The documented way to build behind a TLS-intercepting proxy (deploy/ca-certificates/README.md): the
# machine's CA bundle, which trusts the proxy CI's HTTPS goes through, becomes an extra CA of the build.
HOST_CA=/etc/ssl/certs/ca-certificates.crt
BUILD_CA="$ROOT/deploy/ca-certificates/host-ca-bundle.crt"
if [ -f "$HOST_CA" ] && ! cmp -s "$HOST_CA" "$BUILD_CA"; then
  install -m 0644 "$HOST_CA" "$BUILD_CA"
fi
mkdir -p "$RUN/compose"
say "compose: engine, stand-in images and the compose images, in the background (log: $RUN/compose/build.log)"
BUILD_STARTED=$SECONDS
# shellcheck disable=SC2016 # expanded by the inner shell
nice -n 10 bash -c 'set -euo pipefail
  "$1" up
  eval "$("$1" env)"
  "$1" images
  echo "[compose] docker compose build"
  # One image at a time: without BuildKit, parallel builds of the four targets would each compile the
  # workspace (their shared stages are only cached once one of them has finished).
  COMPOSE_PARALLEL_LIMIT=1 docker compose -f deploy/docker-compose.yml build' _ "$DOCKER" >"$RUN/compose/build.log" 2>&1 </dev/null &
BUILD_PID=$!

# The Collector binary the stack runs is the one the tests use to validate otel-collector/config.yaml.
PIZZA_OTELCOL_BIN=$("$INFRA" path collector)
export PIZZA_OTELCOL_BIN

say "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "cargo test (against the native stack)"
# Default targets: libraries, binaries, integration tests and doc tests; benches are `make bench`.
# The output is kept: when tests fail, what each failing test printed is repeated at the end (a CI
# log is often read from its tail, and a failure in the middle of 40 minutes of output gets lost).
TEST_LOG="$RUN/cargo-test.log"
if ! cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$TEST_LOG"; then
  say "cargo test failed; what each failing test printed (the end of it; whole log: $TEST_LOG):"
  failed_test_output "$TEST_LOG" >&2
  exit 101
fi

# The crate docs carry much of the explanation; a broken intra-doc link is a bug.
say "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

# The compose end-to-end test is a feature of its own (it needs the engine): lint it, then run it.
say "cargo clippy of the compose test (warnings are errors)"
cargo clippy -p pizza-deploy-checks --features compose-e2e --all-targets --locked -- -D warnings
say "compose: waiting for the engine and the images (started ${BUILD_STARTED}s into the run)"
if ! wait "$BUILD_PID"; then
  BUILD_PID=
  tail -n 40 "$RUN/compose/build.log" >&2
  say "compose: preparing the engine or the images failed; full log: $RUN/compose/build.log"
  exit 1
fi
BUILD_PID=
say "compose: engine and images ready, $((SECONDS - BUILD_STARTED))s after they were started"
DOCKER_ENV=$("$DOCKER" env)
eval "$DOCKER_ENV"
say "cargo test: the compose deployment end to end"
cargo test -p pizza-deploy-checks --features compose-e2e --locked --test compose_up -- --nocapture
"$INFRA" status
