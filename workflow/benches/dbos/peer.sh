#!/usr/bin/env bash
# The engine benchmark's peer: DBOS Transact (PyPI `dbos`), a durable workflow library on PostgreSQL,
# running a three-step workflow against the same PostgreSQL server as our engine.
#
#   peer.sh DATABASE_URL RUNS    install DBOS if missing (cached by version), run RUNS workflows with
#                                1 and with 4 callers, print one JSON line of results on stdout
#
# DBOS and every one of its dependencies are pinned (constraints below), into a virtualenv at
# $PIZZA_CACHE/dbos-<version> (default ~/.cache/pizza-infra), the way deploy/local/tools.sh installs
# schemathesis: a fresh machine benchmarks the same peer as this one. Install output goes to
# $PIZZA_CACHE/dbos-<version>.log; a failure names the command and what to try.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${PIZZA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pizza-infra}
DBOS_VERSION=3.4.0
# DBOS's whole dependency set as resolved when the pin was chosen. Change together with the pin.
DBOS_CONSTRAINTS="click==8.5.1
croniter==7.0.0
dbos==$DBOS_VERSION
greenlet==3.5.6
psycopg==3.3.9
psycopg-binary==3.3.9
python-dateutil==4.0.0
PyYAML==6.0.4
SQLAlchemy==2.1.9
typing_extensions==4.16.0
tzdata==2026.6"
VENV="$CACHE/dbos-$DBOS_VERSION"
LOG="$CACHE/dbos-$DBOS_VERSION.log"
MARK=.pizza-installed

fail() {
  printf '[dbos] FAILED: %s\n[dbos]   try: %s (log: %s)\n' "$1" "$2" "$LOG" >&2
  exit 1
}

install() {
  local want
  want=$(printf '%s' "$DBOS_CONSTRAINTS" | sha256sum | cut -c1-16)
  [ "$(cat "$VENV/$MARK" 2>/dev/null || true)" = "$want" ] && return
  command -v python3 >/dev/null || fail "python3 --version" "install Python 3.10 or later (Debian: python3 python3-venv)"
  mkdir -p "$CACHE"
  echo "[dbos] installing DBOS Transact $DBOS_VERSION into $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV" >>"$LOG" 2>&1 || fail "python3 -m venv $VENV" "apt-get install python3-venv"
  printf '%s\n' "$DBOS_CONSTRAINTS" >"$VENV/constraints.txt"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/pip" install --no-input -q \
    --constraint "$VENV/constraints.txt" "dbos==$DBOS_VERSION" </dev/null >>"$LOG" 2>&1 ||
    fail "pip install dbos==$DBOS_VERSION" "check that pip reaches its package index, then run again"
  "$VENV/bin/python" -c 'import dbos' >>"$LOG" 2>&1 || fail "python -c 'import dbos'" "rm -rf $VENV and run again"
  echo "$want" >"$VENV/$MARK"
}

[ $# -eq 2 ] || { echo "usage: $0 DATABASE_URL RUNS" >&2; exit 2; }
install
exec "$VENV/bin/python" "$HERE/peer.py" "$1" "$2"
