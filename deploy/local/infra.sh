#!/usr/bin/env bash
# The native stack: real PostgreSQL, Apache Kafka (KRaft), the OpenTelemetry Collector and Jaeger v2 as
# plain processes on 127.0.0.1, for machines without Docker. This is what `make test` and CI run on.
#
#   infra.sh install [COMPONENT...]   download or build what is missing (cached by version)
#   infra.sh up      [COMPONENT...]   install, start and readiness-check (idempotent)
#   infra.sh down    [COMPONENT...]   stop by saved pid (reverse order)
#   infra.sh status                   pid, port and health of each component
#   infra.sh path COMPONENT           print the cached binary (collector, jaeger) or lib dir (kafka)
#   infra.sh logs COMPONENT           print the log file's path
#   infra.sh database-url             the URL co-located clients should use: PostgreSQL's Unix socket
#                                     when it is there (cheaper per statement than loopback TCP), else TCP
#
# COMPONENT is one of: postgres kafka jaeger collector (default: all, in that order).
#
# Downloads and builds are cached under $PIZZA_CACHE (default ~/.cache/pizza-infra), one directory per
# component and version, so a second start takes seconds and a fresh machine builds from scratch.
# Pids, logs and data live in $PIZZA_RUN_DIR (default .run/ in the checkout, git-ignored).
# Every step that fails names the component, the command and what to try.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/deploy/local"
CACHE=${PIZZA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pizza-infra}
RUN=${PIZZA_RUN_DIR:-$ROOT/.run}

# ---- versions (the cache key of each component) ------------------------------------------------------
KAFKA_VERSION=4.3.1
OTELCOL_VERSION=0.159.0
# Jaeger v2.12.0 is Go module tag v1.75.0 of github.com/jaegertracing/jaeger (the module has no /v2 path,
# so its v2 releases carry v1 tags): the release the Go module proxy here approves. Compose and
# Kubernetes run the image of the same release, jaegertracing/jaeger:2.12.0 (deploy/checks keeps them equal).
JAEGER_TAG=v1.75.0
JAEGER_VERSION=v2.12.0
JAEGER_UI_CRATE=otlp-embedded
JAEGER_UI_CRATE_VERSION=0.0.2

# ---- ports --------------------------------------------------------------------------------------------
PG_PORT=${PIZZA_PG_PORT:-55432}
KAFKA_PORT=${PIZZA_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${PIZZA_KAFKA_CONTROLLER_PORT:-9093}
OTLP_GRPC_PORT=4317
OTLP_HTTP_PORT=4318
COLLECTOR_HEALTH_PORT=13133
COLLECTOR_METRICS_PORT=8888
COLLECTOR_PROMETHEUS_PORT=8889
JAEGER_QUERY_PORT=16686
JAEGER_QUERY_GRPC_PORT=16685
JAEGER_OTLP_GRPC_PORT=14317
JAEGER_OTLP_HTTP_PORT=14318
JAEGER_HEALTH_PORT=13134

ALL=(postgres kafka jaeger collector)

TAG=infra
# shellcheck source=deploy/local/lib.sh
. "$HERE/lib.sh"

# ---- PostgreSQL ---------------------------------------------------------------------------------------
pg_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

install_postgres() {
  if [ -z "$(pg_bindir)" ]; then
    # Debian's postinst would create and start a `main` cluster on 5432; we only want the binaries.
    as_root mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.conf >/dev/null
    apt_install postgres postgresql postgresql-client
  fi
  [ -n "$(pg_bindir)" ] || fail postgres "ls /usr/lib/postgresql/*/bin/initdb" "install Debian's postgresql package"
}

# PostgreSQL refuses to run as root, so as root it runs as the `postgres` system user.
pg_run() {
  # From / : the postgres user may not be allowed into the current directory.
  if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# Where PostgreSQL keeps its data and socket. Normally .run/postgres; but as root the server runs as
# the `postgres` user, which may not be able to enter the checkout (a clone under /root, mode 0700).
# Then the data moves to a directory of its own under /var/tmp, keyed by the checkout's path, and
# .run/postgres/location records where, so every later command finds it.
pg_home() {
  if [ -f "$RUN/postgres/location" ]; then cat "$RUN/postgres/location"; else echo "$RUN/postgres"; fi
}

# The URL for clients on this machine. Through the server's Unix socket when it is there: a
# statement's round trip then skips loopback TCP (the TCP stack, and netfilter's connection tracking
# on every packet once Docker's rules are loaded): 8% less PostgreSQL CPU for the same orders (see
# docs/decisions.md). The socket's directory goes in the host part, percent-encoded (libpq and sqlx
# both read it so). TCP when the socket is missing (the server is not up), when its path is longer than a
# socket path may be (107 bytes), or when it holds characters the URL would need more care for.
database_url() {
  local dir tcp="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
  dir=$(pg_home)
  if [ -S "$dir/.s.PGSQL.$PG_PORT" ] && [ ${#dir} -le 90 ] && [[ $dir =~ ^/[A-Za-z0-9._/-]+$ ]]; then
    echo "postgres://postgres@${dir//\//%2F}:$PG_PORT/postgres"
  else
    echo "$tcp"
  fi
}

up_postgres() {
  local bin data log home
  bin=$(pg_bindir)
  mkdir -p "$RUN/postgres"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres:postgres "$RUN/postgres"
    if ! pg_run test -x "$RUN/postgres" && [ ! -f "$RUN/postgres/location" ]; then
      home="/var/tmp/pizza-postgres-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"
      warn "postgres: the postgres user cannot enter $RUN; keeping its data in $home instead"
      mkdir -p "$home"
      chown postgres:postgres "$home"
      echo "$home" >"$RUN/postgres/location"
    fi
  fi
  home=$(pg_home)
  data="$home/data"
  log="$home/postgres.log"
  [ "$home" = "$RUN/postgres" ] || ln -sfn "$log" "$RUN/postgres/postgres.log"
  if [ ! -f "$data/PG_VERSION" ]; then
    say "postgres: initdb $data"
    run_step postgres "remove $data and retry" \
      pg_run "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --no-locale
  fi
  # Ours if postmaster.pid names a live postgres; pg_ctl status checks exactly that.
  if pg_run "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    say "postgres: already running"
  else
    require_free_ports postgres "$PG_PORT"
    say "postgres: starting on 127.0.0.1:$PG_PORT"
    # fsync stays on: the crash-and-restart tests depend on it. pg_stat_statements (part of Debian's
    # package) lets `make bench` say which tables an order's writes go to.
    run_step postgres "read $log" pg_run "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $home -c max_connections=300 -c shared_preload_libraries=pg_stat_statements" start
  fi
  head -n 1 "$data/postmaster.pid" >"$(pidfile postgres)"
  echo "postgres" >"$RUN/postgres/cmdmark"
  wait_until postgres 30 "psql -h 127.0.0.1 -p $PG_PORT -U postgres -c 'select 1'" \
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc 'select 1'
  say "postgres: ready ($(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc 'show server_version'))"
}

down_postgres() {
  local bin data
  bin=$(pg_bindir) || true
  data="$(pg_home)/data"
  if [ -n "$bin" ] && [ -f "$data/postmaster.pid" ] && pg_run "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    say "postgres: stopping (pg_ctl stop -m fast)"
    pg_run "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
  fi
  rm -f "$(pidfile postgres)"
}

health_postgres() { psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; }

# ---- Kafka --------------------------------------------------------------------------------------------
kafka_lib() { echo "$CACHE/kafka-$KAFKA_VERSION/lib"; }

install_kafka() {
  command -v java >/dev/null || apt_install kafka openjdk-17-jre-headless
  command -v mvn >/dev/null || apt_install kafka maven
  local lib
  lib=$(kafka_lib)
  if [ ! -f "$lib/.complete" ]; then
    say "kafka: resolving Apache Kafka $KAFKA_VERSION jars with Maven (first run only)"
    rm -rf "$lib"
    mkdir -p "$lib"
    run_step kafka "check Maven can reach its central repository (mvn -v; ~/.m2/settings.xml)" \
      mvn -B -q -f "$HERE/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
      org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
      -DoutputDirectory="$lib" -DincludeScope=runtime
    ls "$lib"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null 2>&1 ||
      fail kafka "ls $lib/kafka_2.13-$KAFKA_VERSION.jar" "Maven resolved no broker jar; delete $lib and retry"
    touch "$lib/.complete"
  fi
}

kafka_admin() {
  java -cp "$(kafka_lib)/*" -Dlog4j2.configurationFile="$HERE/kafka/log4j2-quiet.properties" \
    "$HERE/kafka/KafkaAdmin.java" "$@"
}

up_kafka() {
  local dir="$RUN/kafka" log="$RUN/kafka/kafka.log"
  mkdir -p "$dir/data"
  if alive kafka; then
    say "kafka: already running (pid $(cat "$(pidfile kafka)"))"
  else
    require_free_ports kafka "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"
    sed -e "s#@DATA@#$dir/data#g" -e "s#@PORT@#$KAFKA_PORT#g" -e "s#@CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#g" \
      "$HERE/kafka/server.properties" >"$dir/server.properties"
    if [ ! -f "$dir/data/meta.properties" ]; then
      if [ ! -s "$dir/cluster-id" ]; then
        local id
        id=$(java -cp "$(kafka_lib)/*" -Dlog4j2.configurationFile="$HERE/kafka/log4j2-quiet.properties" \
          kafka.tools.StorageTool random-uuid 2>>"$RUN/kafka/install.log" | tail -n 1) || true
        [ -n "$id" ] || fail kafka "java kafka.tools.StorageTool random-uuid" \
          "check java runs and $(kafka_lib) holds the broker's jars (read $RUN/kafka/install.log)"
        echo "$id" >"$dir/cluster-id"
      fi
      say "kafka: formatting KRaft storage (cluster $(cat "$dir/cluster-id"))"
      run_step kafka "delete $dir and retry" \
        java -cp "$(kafka_lib)/*" -Dlog4j2.configurationFile="$HERE/kafka/log4j2-quiet.properties" \
        kafka.tools.StorageTool format -t "$(cat "$dir/cluster-id")" -c "$dir/server.properties" --ignore-formatted
    fi
    say "kafka: starting Apache Kafka $KAFKA_VERSION (KRaft) on 127.0.0.1:$KAFKA_PORT"
    start_bg kafka "kafka.Kafka" "$log" \
      java -Xms256m -Xmx768m -XX:+UseG1GC -cp "$(kafka_lib)/*" \
      -Dlog4j2.configurationFile="$HERE/kafka/log4j2.properties" \
      kafka.Kafka "$dir/server.properties"
  fi
  # Ready means a client metadata round trip succeeds, not a line in the log.
  wait_until kafka 90 "KafkaAdmin.java ready 127.0.0.1:$KAFKA_PORT" \
    kafka_admin ready "127.0.0.1:$KAFKA_PORT" 5
  run_step kafka "read $RUN/kafka/install.log; check $HERE/kafka/topics.txt" \
    kafka_admin topics "127.0.0.1:$KAFKA_PORT" "$HERE/kafka/topics.txt"
  say "kafka: ready, $(tail -n 1 "$RUN/kafka/install.log")"
}

health_kafka() { kafka_admin ready "127.0.0.1:$KAFKA_PORT" 3 >/dev/null 2>&1; }

# ---- Go builds (Jaeger, Collector) --------------------------------------------------------------------
jaeger_bin() {
  local bin="$CACHE/jaeger-$JAEGER_VERSION/bin/jaeger"
  [ -x "$bin" ] && echo "$bin"
}

jaeger_ui() { echo "$CACHE/jaeger-ui-$JAEGER_UI_CRATE-$JAEGER_UI_CRATE_VERSION"; }

install_jaeger() {
  mkdir -p "$RUN/jaeger"
  if ! jaeger_bin >/dev/null; then
    say "jaeger: building Jaeger $JAEGER_VERSION (module tag $JAEGER_TAG) from the Go module proxy (5-15 min on first run)"
    go_build_pinned jaeger github.com/jaegertracing/jaeger "$JAEGER_TAG" \
      github.com/jaegertracing/jaeger/cmd/jaeger "$CACHE/jaeger-$JAEGER_VERSION" jaeger \
      "-X github.com/jaegertracing/jaeger/internal/version.latestVersion=$JAEGER_VERSION"
    jaeger_bin >/dev/null || fail jaeger "go build .../cmd/jaeger" "no binary was produced; read $RUN/jaeger/install.log"
  fi
  # The Go module has no built UI; a real Jaeger UI build ships inside a crate on the Rust registry.
  local ui
  ui=$(jaeger_ui)
  if [ ! -f "$ui/index.html" ]; then
    say "jaeger: fetching the Jaeger UI build from crate $JAEGER_UI_CRATE $JAEGER_UI_CRATE_VERSION"
    local tmp="$CACHE/jaeger-ui-fetch"
    rm -rf "$tmp"
    mkdir -p "$tmp/src"
    cat >"$tmp/Cargo.toml" <<EOF
[package]
name = "jaeger-ui-fetch"
version = "0.0.0"
edition = "2021"

[dependencies]
$JAEGER_UI_CRATE = "=$JAEGER_UI_CRATE_VERSION"

[workspace]
EOF
    : >"$tmp/src/lib.rs"
    run_step jaeger "cargo fetch --manifest-path $tmp/Cargo.toml" \
      cargo fetch --manifest-path "$tmp/Cargo.toml"
    local crate
    crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$JAEGER_UI_CRATE-$JAEGER_UI_CRATE_VERSION.crate" 2>/dev/null | head -n 1)
    [ -f "$crate" ] || fail jaeger "cargo fetch ($JAEGER_UI_CRATE)" "the crate archive is not in the cargo cache"
    rm -rf "$ui" "$tmp/x"
    mkdir -p "$tmp/x"
    tar -xzf "$crate" -C "$tmp/x" "$JAEGER_UI_CRATE-$JAEGER_UI_CRATE_VERSION/jaeger-ui/build"
    mv "$tmp/x/$JAEGER_UI_CRATE-$JAEGER_UI_CRATE_VERSION/jaeger-ui/build" "$ui"
    rm -rf "$tmp"
  fi
}

up_jaeger() {
  local bin log="$RUN/jaeger/jaeger.log"
  bin=$(jaeger_bin)
  if alive jaeger; then
    say "jaeger: already running (pid $(cat "$(pidfile jaeger)"))"
  else
    require_free_ports jaeger "$JAEGER_QUERY_PORT" "$JAEGER_QUERY_GRPC_PORT" "$JAEGER_OTLP_GRPC_PORT" "$JAEGER_OTLP_HTTP_PORT" "$JAEGER_HEALTH_PORT"
    say "jaeger: starting $(basename "$(dirname "$(dirname "$bin")")") (UI and API on 127.0.0.1:$JAEGER_QUERY_PORT)"
    JAEGER_UI_ASSETS=$(jaeger_ui) JAEGER_QUERY_PORT=$JAEGER_QUERY_PORT JAEGER_QUERY_GRPC_PORT=$JAEGER_QUERY_GRPC_PORT \
      JAEGER_OTLP_GRPC_PORT=$JAEGER_OTLP_GRPC_PORT JAEGER_OTLP_HTTP_PORT=$JAEGER_OTLP_HTTP_PORT \
      JAEGER_HEALTH_PORT=$JAEGER_HEALTH_PORT \
      start_bg jaeger "$bin" "$log" "$bin" --config "$HERE/jaeger/config.yaml"
  fi
  wait_until jaeger 60 "curl http://127.0.0.1:$JAEGER_QUERY_PORT/api/services" health_jaeger
  say "jaeger: ready"
}

health_jaeger() {
  curl -fsS "http://127.0.0.1:$JAEGER_QUERY_PORT/api/services" | grep -q '"data"' &&
    curl -fsS "http://127.0.0.1:$JAEGER_HEALTH_PORT/status" >/dev/null
}

# The Collector distribution is keyed by its version and by the manifest's content, so adding a
# component to builder-config.yaml builds a new binary instead of reusing a stale one.
collector_dir() {
  local sum
  sum=$(sha256sum "$ROOT/otel-collector/builder-config.yaml" | cut -c1-12)
  echo "$CACHE/otelcol-$OTELCOL_VERSION-$sum"
}
collector_bin() { echo "$(collector_dir)/pizza-otelcol"; }

install_collector() {
  local dir builder
  dir=$(collector_dir)
  mkdir -p "$RUN/collector"
  [ -x "$dir/pizza-otelcol" ] && return 0
  require_go collector
  builder="$CACHE/otelcol-builder-$OTELCOL_VERSION/builder"
  if [ ! -x "$builder" ]; then
    say "collector: installing the Collector builder $OTELCOL_VERSION"
    run_step collector "check the Go module proxy is reachable (go env GOPROXY)" \
      env GOBIN="$(dirname "$builder")" go install "go.opentelemetry.io/collector/cmd/builder@v$OTELCOL_VERSION"
  fi
  say "collector: building the distribution from otel-collector/builder-config.yaml (3-8 min on first run)"
  mkdir -p "$dir"
  sed "s#^\(  *output_path:\).*#\1 $dir/src#" "$ROOT/otel-collector/builder-config.yaml" >"$dir/builder-config.yaml"
  run_step collector "$builder --config $dir/builder-config.yaml; read the error" \
    env CGO_ENABLED=0 "$builder" --config "$dir/builder-config.yaml"
  mv "$dir/src/pizza-otelcol" "$dir/pizza-otelcol"
}

# The Collector's environment on the native stack: the only differences from compose and Kubernetes.
collector_env() {
  echo OTELCOL_LISTEN_HOST=127.0.0.1 \
    OTELCOL_OTLP_GRPC_PORT=$OTLP_GRPC_PORT OTELCOL_OTLP_HTTP_PORT=$OTLP_HTTP_PORT \
    OTELCOL_HEALTH_PORT=$COLLECTOR_HEALTH_PORT OTELCOL_METRICS_PORT=$COLLECTOR_METRICS_PORT \
    OTELCOL_PROMETHEUS_PORT=$COLLECTOR_PROMETHEUS_PORT \
    OTELCOL_STORAGE_DIR="$RUN/collector/file_storage" \
    JAEGER_OTLP_ENDPOINT=127.0.0.1:$JAEGER_OTLP_GRPC_PORT
}

up_collector() {
  local log="$RUN/collector/collector.log" bin
  bin=$(collector_bin)
  if alive collector; then
    say "collector: already running (pid $(cat "$(pidfile collector)"))"
  else
    require_free_ports collector "$OTLP_GRPC_PORT" "$OTLP_HTTP_PORT" "$COLLECTOR_HEALTH_PORT" "$COLLECTOR_METRICS_PORT" "$COLLECTOR_PROMETHEUS_PORT"
    # shellcheck disable=SC2046 # word splitting of KEY=VALUE pairs is intended
    run_step collector "$bin validate --config otel-collector/config.yaml" \
      env $(collector_env) "$bin" validate --config "$ROOT/otel-collector/config.yaml"
    say "collector: starting on 127.0.0.1:$OTLP_GRPC_PORT (gRPC) and :$OTLP_HTTP_PORT (HTTP)"
    # shellcheck disable=SC2046
    start_bg collector "$bin" "$log" env $(collector_env) "$bin" --config "$ROOT/otel-collector/config.yaml"
  fi
  wait_until collector 60 "POST http://127.0.0.1:$OTLP_HTTP_PORT/v1/traces" health_collector
  say "collector: ready"
}

# Health is the extension's answer plus a real OTLP/HTTP export of an empty request.
health_collector() {
  curl -fsS "http://127.0.0.1:$COLLECTOR_HEALTH_PORT/" >/dev/null &&
    curl -fsS -X POST -H 'Content-Type: application/json' -d '{}' \
      "http://127.0.0.1:$OTLP_HTTP_PORT/v1/traces" >/dev/null
}

# ---- commands -----------------------------------------------------------------------------------------
components() {
  if [ $# -eq 0 ]; then
    printf '%s\n' "${ALL[@]}"
    return
  fi
  local c
  for c in "$@"; do
    case " ${ALL[*]} " in
      *" $c "*) echo "$c" ;;
      *) fail "$c" "infra.sh $CMD $c" "components are: ${ALL[*]}" ;;
    esac
  done
}

ensure_tools() {
  local missing=()
  command -v curl >/dev/null || missing+=(curl)
  command -v setsid >/dev/null || missing+=(util-linux)
  [ ${#missing[@]} -eq 0 ] || apt_install infra "${missing[@]}"
}

ports_of() {
  case $1 in
    postgres) echo "$PG_PORT" ;;
    kafka) echo "$KAFKA_PORT $KAFKA_CONTROLLER_PORT" ;;
    jaeger) echo "$JAEGER_QUERY_PORT $JAEGER_OTLP_GRPC_PORT $JAEGER_OTLP_HTTP_PORT $JAEGER_HEALTH_PORT" ;;
    collector) echo "$OTLP_GRPC_PORT $OTLP_HTTP_PORT $COLLECTOR_HEALTH_PORT $COLLECTOR_PROMETHEUS_PORT" ;;
  esac
}

CMD=${1:-}
shift || true
mkdir -p "$RUN" "$CACHE"
case "$CMD" in
  install)
    ensure_tools
    for c in $(components "$@"); do "install_$c"; done
    ;;
  up)
    ensure_tools
    for c in $(components "$@"); do "install_$c"; done
    for c in $(components "$@"); do "up_$c"; done
    say "stack is up: Jaeger UI http://127.0.0.1:$JAEGER_QUERY_PORT, OTLP 127.0.0.1:$OTLP_GRPC_PORT/$OTLP_HTTP_PORT, Kafka 127.0.0.1:$KAFKA_PORT, PostgreSQL 127.0.0.1:$PG_PORT"
    ;;
  down)
    # Reverse order: the Collector flushes to Jaeger before Jaeger goes.
    for c in $(components "$@" | tac); do
      if [ "$c" = postgres ]; then down_postgres; else stop_pid "$c"; fi
    done
    ;;
  status)
    rc=0
    printf '%-10s %-8s %-28s %s\n' COMPONENT PID PORTS HEALTH
    for c in "${ALL[@]}"; do
      pid=-
      alive "$c" && pid=$(cat "$(pidfile "$c")")
      if [ "$pid" = - ]; then
        health=stopped
        rc=1
      elif "health_$c"; then
        health=healthy
      else
        health=unhealthy
        rc=1
      fi
      printf '%-10s %-8s %-28s %s\n' "$c" "$pid" "$(ports_of "$c")" "$health"
    done
    exit $rc
    ;;
  path)
    case ${1:-} in
      collector) [ -x "$(collector_bin)" ] && collector_bin ;;
      jaeger) jaeger_bin ;;
      kafka) kafka_lib ;;
      *) fail path "infra.sh path ${1:-}" "use one of: collector jaeger kafka" ;;
    esac
    ;;
  collector-env) collector_env | tr ' ' '\n' ;;
  database-url) database_url ;;
  logs) echo "$RUN/${1:?component}/${1}.log" ;;
  *)
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
