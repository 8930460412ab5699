# Shared by the scripts of deploy/local (sourced, never run): lines that carry the elapsed seconds,
# failing with the three things an operator needs, root and apt, processes by saved pid, and Go programs
# built from a pinned module. One copy, so every script fails, logs and stops processes the same way.
#
# The sourcing script sets, before `. lib.sh`:
#   TAG    the prefix of its lines (`infra`, `docker`, `tools`, ...)
#   RUN    its run directory ($PIZZA_RUN_DIR, default .run/): pids, logs, state
#   CACHE  the download and build cache ($PIZZA_CACHE, default ~/.cache/pizza-infra)
# Each component COMP keeps its pid in $RUN/COMP/pid, its program's log in $RUN/COMP/COMP.log and the
# output of its install steps in $RUN/COMP/install.log (or all of them in $STEP_LOG, when set).

# ---- output -------------------------------------------------------------------------------------------
# Every line carries the seconds since the script started, so a slow CI run shows where time went.
say() { printf '[%s %4ss] %s\n' "$TAG" "$SECONDS" "$*" >&2; }
warn() { printf '[%s %4ss] WARNING: %s\n' "$TAG" "$SECONDS" "$*" >&2; }
# fail COMPONENT COMMAND HINT: the three things an operator needs when a step breaks.
fail() {
  printf '\n[%s] FAILED: %s\n[%s]   command: %s\n[%s]   try:     %s\n' "$TAG" "$1" "$TAG" "$2" "$TAG" "$3" >&2
  exit 1
}

# run_step COMPONENT HINT COMMAND...: run without stdin, append its output to the component's install
# log, and on failure show the log's tail and fail with the command and the hint.
run_step() {
  local comp=$1 hint=$2
  shift 2
  local log="${STEP_LOG:-$RUN/$comp/install.log}"
  mkdir -p "$(dirname "$log")"
  printf '\n== %s\n' "$*" >>"$log"
  if ! "$@" </dev/null >>"$log" 2>&1; then
    tail -n 25 "$log" >&2 || true
    fail "$comp" "$*" "$hint (full output: $log)"
  fi
}

# ---- root and Debian packages -------------------------------------------------------------------------
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null; then
    # -n: never prompt (CI has no terminal); a sudo that wants a password fails with its own message.
    sudo -n "$@"
  else
    fail system "$*" "this step needs root: run it as root, or install sudo, or run the command by hand"
  fi
}

APT_UPDATED=
# apt_install COMPONENT PACKAGE...
apt_install() {
  local comp=$1
  shift
  command -v apt-get >/dev/null ||
    fail "$comp" "apt-get install $*" "install these packages with your system's package manager: $*"
  if [ -z "$APT_UPDATED" ]; then
    say "$comp: apt-get update"
    run_step "$comp" "check the machine reaches Debian's package mirrors" as_root apt-get update -q
    APT_UPDATED=1
  fi
  say "$comp: apt-get install $*"
  run_step "$comp" "run 'apt-get install -y $*' by hand and read its error" \
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

# ---- processes by saved pid ---------------------------------------------------------------------------
pidfile() { echo "$RUN/$1/pid"; }

# alive COMPONENT: the saved pid exists and still runs the program we started (not a recycled pid).
alive() {
  local f pid
  f=$(pidfile "$1")
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  grep -q -- "$(cat "$RUN/$1/cmdmark" 2>/dev/null || echo __none__)" "/proc/$pid/cmdline" 2>/dev/null
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

require_free_ports() {
  local comp=$1 p
  shift
  for p in "$@"; do
    if port_busy "$p"; then
      fail "$comp" "bind 127.0.0.1:$p" "port $p is taken by another process (see 'ss -ltnp | grep :$p'); stop it, or stop a stack started from another checkout"
    fi
  done
}

# start_bg COMPONENT MARK LOG COMMAND...: start detached in its own session, save the pid.
start_bg() {
  local comp=$1 mark=$2 log=$3
  shift 3
  mkdir -p "$RUN/$comp"
  echo "$mark" >"$RUN/$comp/cmdmark"
  setsid "$@" >>"$log" 2>&1 </dev/null &
  local pid=$! i
  echo "$pid" >"$(pidfile "$comp")"
  # Until the exec, /proc/PID/cmdline still shows this shell; wait for the program to take over so
  # that `alive` (which checks the command line against a recycled pid) sees it.
  for i in $(seq 1 50); do
    grep -q -- "$mark" "/proc/$pid/cmdline" 2>/dev/null && return 0
    [ -d "/proc/$pid" ] || break
    sleep 0.1
  done
}

# wait_until COMPONENT SECONDS DESCRIPTION COMMAND...: poll until the command succeeds.
wait_until() {
  local comp=$1 secs=$2 what=$3
  shift 3
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$comp"; then
      tail -n 30 "$RUN/$comp/$comp.log" >&2 || true
      fail "$comp" "$what" "the process exited during start; read $RUN/$comp/$comp.log"
    fi
    if [ $SECONDS -ge $deadline ]; then
      tail -n 30 "$RUN/$comp/$comp.log" >&2 || true
      fail "$comp" "$what" "not ready after ${secs}s; read $RUN/$comp/$comp.log"
    fi
    sleep 0.5
  done
}

# stop_pid COMPONENT [GRACE_SECONDS]: SIGTERM the saved pid, SIGKILL after the grace (default 30 s).
stop_pid() {
  local comp=$1 grace=${2:-30} f pid i
  f=$(pidfile "$comp")
  if ! alive "$comp"; then
    rm -f "$f"
    return 0
  fi
  pid=$(cat "$f")
  say "$comp: stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 $((grace * 2))); do
    [ -d "/proc/$pid" ] || break
    sleep 0.5
  done
  if [ -d "/proc/$pid" ]; then
    warn "$comp: pid $pid ignored SIGTERM for ${grace}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# ---- Go programs from pinned modules ------------------------------------------------------------------
GO_MIN=${GO_MIN:-1.24}

require_go() {
  local comp=$1 v
  command -v go >/dev/null || fail "$comp" "go version" "install Go >= $GO_MIN (Debian's golang package is too old for Jaeger and the Collector)"
  v=$(go env GOVERSION | sed 's/^go//')
  if [ "$(printf '%s\n%s\n' "$GO_MIN" "$v" | sort -V | head -n 1)" != "$GO_MIN" ]; then
    fail "$comp" "go version" "Go $v is older than $GO_MIN; install a newer Go"
  fi
}
# go_build_pinned COMPONENT MODULE VERSION PACKAGE OUT NAME [LDFLAGS]: builds the main package PACKAGE of
# MODULE@VERSION into OUT/bin/NAME, as MODULE's own go.mod prescribes. LDFLAGS carries what upstream's
# release build stamps in (`-X .../version.Version=...`), so `NAME --version` says what it is.
#
# `go install PACKAGE@VERSION` would be the short way, but Go honours replace and exclude directives
# only in the main module: it refuses a module that has them (Docker Compose, Prometheus) or, where it
# accepts one, builds other dependency versions than upstream tested (Jaeger's sarama replace). So the
# build runs in a throw-away module (OUT/module) that requires MODULE@VERSION and carries MODULE's
# replace and exclude directives, copied from its go.mod; MODULE's go.sum seeds ours, so every
# dependency is checked against the hashes upstream committed.
go_build_pinned() {
  local comp=$1 module=$2 version=$3 pkg=$4 out=$5 name=$6 ldflags=${7:-}
  local mod="$out/module" info src gomod godir
  require_go "$comp"
  rm -rf "$mod"
  mkdir -p "$mod" "$out/bin"
  run_step "$comp" "check the Go module proxy is reachable (go env GOPROXY) and serves $module@$version" \
    env -C "$mod" go mod download -x "$module@$version"
  info=$(cd "$mod" && go mod download -json "$module@$version")
  src=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p' <<<"$info")
  gomod=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p' <<<"$info")
  [ -d "$src" ] && [ -f "$gomod" ] ||
    fail "$comp" "go mod download -json $module@$version" "the module did not download; check the Go proxy"
  # A replace that points into upstream's own tree (`=> ./x`) cannot work from outside it.
  if grep -Eq '=>[[:space:]]*\.{0,2}/' "$gomod"; then
    fail "$comp" "read $gomod" "$module@$version replaces a module with a local directory; it cannot be built from the module proxy"
  fi
  godir=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod" | head -n 1)
  {
    printf 'module pizza.local/%s-build\n\ngo %s\n\nrequire %s %s\n\n' "$name" "${godir:-1.24}" "$module" "$version"
    # Both block (`replace (` ... `)`) and one-line forms, verbatim.
    awk '/^(replace|exclude) \($/ { copy = 1 } copy { print } copy && /^\)$/ { copy = 0; print ""; next }
         /^(replace|exclude) [^(]/ { print }' "$gomod"
  } >"$mod/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$pkg" >"$mod/tools.go"
  install -m 0644 "$src/go.sum" "$mod/go.sum"
  run_step "$comp" "cd $mod && go mod tidy; read the error (a module missing from the proxy?)" \
    env -C "$mod" go mod tidy
  run_step "$comp" "cd $mod && CGO_ENABLED=0 go build -trimpath -o $out/bin/$name $pkg" \
    env -C "$mod" CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/bin/$name" "$pkg"
}
