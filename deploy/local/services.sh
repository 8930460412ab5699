#!/usr/bin/env bash
# The three services of the pizza shop as plain processes on 127.0.0.1, beside the native stack
# (infra.sh). This is what `make demo` runs, and what the load tester's process faults act on.
#
#   services.sh build                 cargo build the three binaries ($PIZZA_PROFILE: dev or release)
#   services.sh up   [NAME...]        build, start and wait for /readyz (idempotent); prints the URLs
#   services.sh down [NAME...]        SIGTERM by saved pid, SIGKILL after 30 s (reverse order)
#   services.sh start NAME            start one (same settings as `up`)
#   services.sh stop NAME             stop one gracefully
#   services.sh kill NAME             SIGKILL one, as a crash would (no flush, no commit)
#   services.sh restart [NAME] [--hard]  stop (or kill, with --hard) and start again (default: all)
#   services.sh status                pid, port and readiness of each
#   services.sh pid NAME | logs NAME  print the saved pid / the log file's path
#
# NAME is one of: kitchen delivery order (default: all, started in that order so each one's peers
# answer when it starts). Settings come from the environment, with the native stack's defaults below;
# anything a service reads (PIZZA_*, OTEL_*, DATABASE_URL) can be overridden by exporting it first.
# Pids and logs live in $PIZZA_RUN_DIR/services (default .run/services, git-ignored), or in
# $PIZZA_SERVICES_RUN_DIR when set (the workshop's check keeps its shop's pids apart from a demo's).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUN=${PIZZA_SERVICES_RUN_DIR:-${PIZZA_RUN_DIR:-$ROOT/.run}/services}
PROFILE=${PIZZA_PROFILE:-dev}
ALL=(kitchen delivery order)

say() { printf '[services %4ss] %s\n' "$SECONDS" "$*" >&2; }
fail() {
  say "FAILED: $*"
  exit 1
}

# ---- settings -----------------------------------------------------------------------------------------
# The demo's defaults: the native stack's ports, a readable pace (an order takes about 40 s), the
# workshop's admin token. Exported so every child process sees the same values.
# PostgreSQL through its Unix socket when the native stack's server is up (infra.sh database-url).
export DATABASE_URL=${DATABASE_URL:-$("$ROOT/deploy/local/infra.sh" database-url)}
export PIZZA_KAFKA_BOOTSTRAP=${PIZZA_KAFKA_BOOTSTRAP:-127.0.0.1:9092}
export PIZZA_TIME_SCALE=${PIZZA_TIME_SCALE:-1.0}
# The workshop's published admin token: the services accept it only while they listen on loopback, as
# the addresses below do (one set beyond loopback needs a token of your own, 12 characters or more).
export PIZZA_ADMIN_TOKEN=${PIZZA_ADMIN_TOKEN:-pizza-workshop}
export PIZZA_ORDER_ADDR=${PIZZA_ORDER_ADDR:-127.0.0.1:8080}
export PIZZA_KITCHEN_ADDR=${PIZZA_KITCHEN_ADDR:-127.0.0.1:8081}
export PIZZA_DELIVERY_ADDR=${PIZZA_DELIVERY_ADDR:-127.0.0.1:8082}
export PIZZA_KITCHEN_URL=${PIZZA_KITCHEN_URL:-http://${PIZZA_KITCHEN_ADDR}}
export PIZZA_DELIVERY_URL=${PIZZA_DELIVERY_URL:-http://${PIZZA_DELIVERY_ADDR}}
export PIZZA_JAEGER_UI_URL=${PIZZA_JAEGER_UI_URL:-http://127.0.0.1:16686}
export OTEL_EXPORTER_OTLP_ENDPOINT=${OTEL_EXPORTER_OTLP_ENDPOINT:-http://127.0.0.1:4317}
export PIZZA_TRACE_TOPOLOGY=${PIZZA_TRACE_TOPOLOGY:-continuous}

addr_of() {
  case $1 in
    order) echo "$PIZZA_ORDER_ADDR" ;;
    kitchen) echo "$PIZZA_KITCHEN_ADDR" ;;
    delivery) echo "$PIZZA_DELIVERY_ADDR" ;;
    *) fail "unknown service $1 (one of: ${ALL[*]})" ;;
  esac
}

target_dir() {
  if [ -n "${CARGO_TARGET_DIR:-}" ]; then echo "$CARGO_TARGET_DIR"; else echo "$ROOT/target"; fi
}

binary_of() {
  local dir
  case $PROFILE in
    dev) dir=debug ;;
    *) dir=$PROFILE ;;
  esac
  echo "$(target_dir)/$dir/pizza-$1"
}

# ---- processes ----------------------------------------------------------------------------------------
pidfile() { echo "$RUN/$1.pid"; }
logfile() { echo "$RUN/$1.log"; }

# alive NAME: the saved pid runs our binary (not a pid the kernel recycled for something else).
alive() {
  local f pid
  f=$(pidfile "$1")
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  grep -q -- "pizza-$1" "/proc/$pid/cmdline" 2>/dev/null
}

ready() { curl -fsS --max-time 2 "http://$(addr_of "$1")/readyz" >/dev/null 2>&1; }

build() {
  say "building the services (cargo build --profile $PROFILE)"
  (cd "$ROOT" && cargo build --profile "$PROFILE" -p pizza-kitchen -p pizza-delivery -p pizza-order) ||
    fail "cargo build failed; run it by hand: cargo build -p pizza-kitchen -p pizza-delivery -p pizza-order"
}

start_one() {
  local name=$1 bin pid i
  if alive "$name"; then
    say "$name: already running (pid $(cat "$(pidfile "$name")"))"
    return 0
  fi
  bin=$(binary_of "$name")
  [ -x "$bin" ] || fail "$name: no binary at $bin; run: deploy/local/services.sh build"
  # Something else answering on the port would pass the readiness check for a process that failed to
  # bind; refuse instead of saving a pid that does not serve.
  if ready "$name"; then
    fail "$name: $(addr_of "$name") already answers, but not from a process this script started; stop it first (another make demo, or a shop with another PIZZA_SERVICES_RUN_DIR)"
  fi
  mkdir -p "$RUN"
  # A stable name per service (static Kafka group membership, the relay's claims, the workflow's
  # leases): restarted after a crash, the service resumes at once instead of waiting for its dead
  # self's session and leases to expire.
  PIZZA_INSTANCE_ID=${PIZZA_INSTANCE_ID:-$name-0} setsid "$bin" >>"$(logfile "$name")" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$(pidfile "$name")"
  for i in $(seq 1 120); do
    if ready "$name" && [ -d "/proc/$pid" ]; then
      say "$name: ready on http://$(addr_of "$name") (pid $pid)"
      return 0
    fi
    if [ ! -d "/proc/$pid" ]; then
      tail -n 20 "$(logfile "$name")" >&2 || true
      fail "$name: exited during start; read $(logfile "$name") (is the native stack up? make infra-up)"
    fi
    sleep 0.5
  done
  tail -n 20 "$(logfile "$name")" >&2 || true
  fail "$name: not ready after 60 s; read $(logfile "$name")"
}

stop_one() {
  local name=$1 signal=${2:-TERM} pid i
  if ! alive "$name"; then
    rm -f "$(pidfile "$name")"
    return 0
  fi
  pid=$(cat "$(pidfile "$name")")
  if [ "$signal" = KILL ]; then
    say "$name: SIGKILL pid $pid"
    kill -KILL "$pid" 2>/dev/null || true
  else
    say "$name: stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 60); do
      [ -d "/proc/$pid" ] || break
      sleep 0.5
    done
    if [ -d "/proc/$pid" ]; then
      say "$name: pid $pid ignored SIGTERM for 30 s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  for i in $(seq 1 20); do
    [ -d "/proc/$pid" ] || break
    sleep 0.1
  done
  rm -f "$(pidfile "$name")"
}

names() {
  if [ $# -eq 0 ]; then printf '%s\n' "${ALL[@]}"; else printf '%s\n' "$@"; fi
}

status() {
  printf '%-10s %-8s %-22s %s\n' service pid address ready
  local name pid
  for name in "${ALL[@]}"; do
    pid=-
    alive "$name" && pid=$(cat "$(pidfile "$name")")
    printf '%-10s %-8s %-22s %s\n' "$name" "$pid" "$(addr_of "$name")" "$(ready "$name" && echo yes || echo no)"
  done
}

cmd=${1:-}
shift || true
case $cmd in
  build) build ;;
  up)
    build
    for name in $(names "$@"); do start_one "$name"; done
    say "the shop: http://$PIZZA_ORDER_ADDR  (API docs: http://$PIZZA_ORDER_ADDR/openapi.json)"
    say "traces:   $PIZZA_JAEGER_UI_URL  (topology: $PIZZA_TRACE_TOPOLOGY)"
    say "faults:   admin token '$PIZZA_ADMIN_TOKEN' (the shop's faults panel, or PUT /admin/faults)"
    ;;
  down)
    mapfile -t list < <(names "$@")
    for ((i = ${#list[@]} - 1; i >= 0; i--)); do stop_one "${list[i]}"; done
    ;;
  start) start_one "${1:?service name}" ;;
  stop) stop_one "${1:?service name}" ;;
  kill) stop_one "${1:?service name}" KILL ;;
  restart)
    # `restart [NAME...] [--hard]`: with no NAME, all three (stopped in reverse order, started in order),
    # so a setting exported first (PIZZA_TRACE_TOPOLOGY, OTEL_TRACES_SAMPLER, ...) reaches every one.
    hard=
    list=()
    for arg in "$@"; do
      if [ "$arg" = --hard ]; then hard=1; else list+=("$arg"); fi
    done
    mapfile -t list < <(names "${list[@]}")
    for ((i = ${#list[@]} - 1; i >= 0; i--)); do
      if [ -n "$hard" ]; then stop_one "${list[i]}" KILL; else stop_one "${list[i]}"; fi
    done
    for name in "${list[@]}"; do start_one "$name"; done
    ;;
  status) status ;;
  pid)
    alive "${1:?service name}" || fail "${1} is not running"
    cat "$(pidfile "$1")"
    ;;
  logs) logfile "${1:?service name}" ;;
  *) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' ;;
esac
