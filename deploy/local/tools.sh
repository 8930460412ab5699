#!/usr/bin/env bash
# The test tools the order service's tests drive from outside the Rust build: a headless browser for
# the web UI's end-to-end test and an API fuzzer for the public HTTP API.
#
#   tools.sh install   install what is missing (cached by version), then prove each tool runs here
#   tools.sh env       print `export NAME=...` lines for the tests (eval "$(deploy/local/tools.sh env)")
#   tools.sh check     prove each installed tool runs, install nothing
#
# What arrives, and from where:
#   chromium         Debian's package `chromium` (apt; the system owns it, so it is not in the cache).
#                    A headless run is checked here, because a browser that installs but cannot start
#                    (no sandbox as root, a missing library) would otherwise fail deep inside a test.
#   playwright-core  pinned from the npm registry into $PIZZA_CACHE/playwright-core-<version>. Only the
#                    driver library: it downloads no browser of its own and drives Debian's chromium.
#   schemathesis     pinned from PyPI, with every dependency pinned too (constraints below), into a
#                    virtualenv $PIZZA_CACHE/schemathesis-<version>.
#
# $PIZZA_CACHE defaults to ~/.cache/pizza-infra, as for deploy/local/infra.sh. Runs without a terminal
# (CI=true, no stdin). Every step that fails names the tool, the command and what to try; full output
# goes to $PIZZA_RUN_DIR/tools/install.log (default .run/tools/).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${PIZZA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pizza-infra}
RUN=${PIZZA_RUN_DIR:-$ROOT/.run}
LOG="$RUN/tools/install.log"
STEP_LOG=$LOG # every tool's steps in one log

# ---- versions (the cache key of each tool) -------------------------------------------------------------
PLAYWRIGHT_CORE_VERSION=1.65.1
SCHEMATHESIS_VERSION=4.32.5
# schemathesis's whole dependency set, as resolved when the pin was chosen: a fresh machine installs the
# same fuzzer as this one, not whatever its dependencies released since. Change together with the pin.
SCHEMATHESIS_CONSTRAINTS="anyio==4.16.0
certifi==2026.10.18
charset-normalizer==3.5.2
click==8.5.1
graphql-core==3.3.2
harfile==0.6.0
hypothesis==6.170.15
hypothesis-graphql==0.13.5
idna==3.20
iniconfig==2.3.1
jsonschema_rs==0.60.3
markdown-it-py==4.3.0
MarkupSafe==3.0.4
mdurl==0.1.2
packaging==26.3
pluggy==1.7.0
Pygments==2.21.0
pyrate-limiter==4.5.1
pytest==9.2.0
PyYAML==6.0.3
requests==2.34.2
rich==15.0.0
schemathesis==$SCHEMATHESIS_VERSION
sortedcontainers==2.4.0
typing_extensions==4.16.0
urllib3==2.8.0
Werkzeug==3.1.9"

PLAYWRIGHT_PREFIX="$CACHE/playwright-core-$PLAYWRIGHT_CORE_VERSION"
PLAYWRIGHT_DIR="$PLAYWRIGHT_PREFIX/node_modules/playwright-core"
SCHEMATHESIS_VENV="$CACHE/schemathesis-$SCHEMATHESIS_VERSION"
SCHEMATHESIS_BIN="$SCHEMATHESIS_VENV/bin/schemathesis"
# A marker written only after a tool was installed and ran: a half-finished install is redone.
MARK=.pizza-installed

TAG=tools
# shellcheck source=deploy/local/lib.sh
. "$ROOT/deploy/local/lib.sh"

# ---- chromium -----------------------------------------------------------------------------------------
chromium_bin() { command -v chromium 2>/dev/null || true; }

# Renders a page headless and reads the DOM back: proves the browser starts here, not only that it is
# installed. --no-sandbox because CI runs as root, where Chromium's sandbox refuses to start.
check_chromium() {
  local bin=$1 out
  local profile
  profile=$(mktemp -d)
  out=$(timeout 120 "$bin" --headless --no-sandbox --disable-gpu --no-first-run \
    --user-data-dir="$profile" --dump-dom 'data:text/html,<p id="probe">pizza-probe</p>' \
    </dev/null 2>>"$LOG") || {
    rm -rf "$profile"
    tail -n 5 "$LOG" >&2
    fail chromium "$bin --headless --no-sandbox --dump-dom data:..." \
      "run that command by hand; a missing shared library or no /dev/shm are the usual causes (log: $LOG)"
  }
  rm -rf "$profile"
  grep -q 'pizza-probe' <<<"$out" ||
    fail chromium "$bin --headless --dump-dom" "the browser started but rendered nothing; run it by hand"
  say "chromium: $("$bin" --version 2>/dev/null | head -n1 | sed 's/ built on.*//') renders headless ($bin)"
}

install_chromium() {
  if [ -z "$(chromium_bin)" ]; then
    # Debian's package is `chromium`; Ubuntu's of that name is only a shim for a snap, which does not
    # run in CI containers, so the check below says so instead of failing later.
    apt_install chromium chromium
  fi
  local bin
  bin=$(chromium_bin)
  [ -n "$bin" ] || fail chromium "command -v chromium" \
    "the package installed no 'chromium' command; on Debian install the package 'chromium'"
  check_chromium "$bin"
}

# ---- playwright-core ------------------------------------------------------------------------------------
check_playwright() {
  run_step playwright-core "reinstall: rm -rf $PLAYWRIGHT_PREFIX && $0 install" \
    node -e "const pw = require(process.argv[1]); if (!pw.chromium) process.exit(3);" "$PLAYWRIGHT_DIR"
  local version
  version=$(node -p "require(process.argv[1] + '/package.json').version" "$PLAYWRIGHT_DIR")
  [ "$version" = "$PLAYWRIGHT_CORE_VERSION" ] ||
    fail playwright-core "read $PLAYWRIGHT_DIR/package.json" \
      "found $version, want $PLAYWRIGHT_CORE_VERSION: rm -rf $PLAYWRIGHT_PREFIX and install again"
  say "playwright-core: $version loads ($PLAYWRIGHT_DIR)"
}

install_playwright() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    fail playwright-core "command -v node npm" "install Node.js 18 or later with npm (Debian: nodejs npm)"
  fi
  if [ ! -f "$PLAYWRIGHT_PREFIX/$MARK" ]; then
    say "playwright-core: npm install playwright-core@$PLAYWRIGHT_CORE_VERSION into $PLAYWRIGHT_PREFIX"
    rm -rf "$PLAYWRIGHT_PREFIX"
    mkdir -p "$PLAYWRIGHT_PREFIX"
    printf '{ "name": "pizza-test-tools", "private": true }\n' >"$PLAYWRIGHT_PREFIX/package.json"
    # playwright-core has no dependencies and no install script; it never downloads a browser.
    run_step playwright-core "check that npm reaches its registry ('npm ping'), then run again" \
      npm install --prefix "$PLAYWRIGHT_PREFIX" --save-exact --no-audit --no-fund --ignore-scripts \
      "playwright-core@$PLAYWRIGHT_CORE_VERSION"
    check_playwright
    touch "$PLAYWRIGHT_PREFIX/$MARK"
  else
    check_playwright
  fi
}

# ---- schemathesis ---------------------------------------------------------------------------------------
constraints_hash() { printf '%s\n' "$SCHEMATHESIS_CONSTRAINTS" | sha256sum | cut -c1-16; }

check_schemathesis() {
  local out
  out=$("$SCHEMATHESIS_BIN" --version 2>>"$LOG") ||
    fail schemathesis "$SCHEMATHESIS_BIN --version" "reinstall: rm -rf $SCHEMATHESIS_VENV && $0 install"
  grep -qF "$SCHEMATHESIS_VERSION" <<<"$out" ||
    fail schemathesis "$SCHEMATHESIS_BIN --version" "printed '$out', want $SCHEMATHESIS_VERSION: rm -rf $SCHEMATHESIS_VENV"
  say "schemathesis: $out ($SCHEMATHESIS_BIN)"
}

python_bin() {
  local py
  for py in python3 python; do
    if command -v "$py" >/dev/null &&
      "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
      command -v "$py"
      return
    fi
  done
}

install_schemathesis() {
  local want
  want=$(constraints_hash)
  if [ "$(cat "$SCHEMATHESIS_VENV/$MARK" 2>/dev/null || true)" = "$want" ]; then
    check_schemathesis
    return
  fi
  local py
  py=$(python_bin)
  if [ -z "$py" ]; then
    apt_install schemathesis python3 python3-venv
    py=$(python_bin)
  fi
  [ -n "$py" ] || fail schemathesis "python3 --version" "install Python 3.10 or later (Debian: python3 python3-venv)"
  # Debian splits venv and ensurepip out of python3: a system python without them gets python3-venv.
  if ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
    apt_install schemathesis python3-venv
  fi
  say "schemathesis: $("$py" --version) -m venv $SCHEMATHESIS_VENV; pip install schemathesis==$SCHEMATHESIS_VERSION"
  rm -rf "$SCHEMATHESIS_VENV"
  run_step schemathesis "check that '$py -m venv' works (Debian: apt-get install python3-venv)" \
    "$py" -m venv "$SCHEMATHESIS_VENV"
  local constraints="$SCHEMATHESIS_VENV/constraints.txt"
  printf '%s\n' "$SCHEMATHESIS_CONSTRAINTS" >"$constraints"
  run_step schemathesis "check that pip reaches its package index, then run again" \
    env PIP_DISABLE_PIP_VERSION_CHECK=1 "$SCHEMATHESIS_VENV/bin/pip" install --no-input -q \
    --constraint "$constraints" "schemathesis==$SCHEMATHESIS_VERSION"
  check_schemathesis
  echo "$want" >"$SCHEMATHESIS_VENV/$MARK"
}

# ---- commands -------------------------------------------------------------------------------------------
print_env() {
  local bin
  bin=$(chromium_bin)
  [ -n "$bin" ] || fail chromium "command -v chromium" "run: deploy/local/tools.sh install"
  [ -f "$PLAYWRIGHT_PREFIX/$MARK" ] ||
    fail playwright-core "test -f $PLAYWRIGHT_PREFIX/$MARK" "run: deploy/local/tools.sh install"
  [ -f "$SCHEMATHESIS_VENV/$MARK" ] ||
    fail schemathesis "test -f $SCHEMATHESIS_VENV/$MARK" "run: deploy/local/tools.sh install"
  printf 'export PIZZA_CHROMIUM_BIN=%q\n' "$bin"
  printf 'export PIZZA_PLAYWRIGHT_DIR=%q\n' "$PLAYWRIGHT_DIR"
  printf 'export PIZZA_SCHEMATHESIS_BIN=%q\n' "$SCHEMATHESIS_BIN"
}

mkdir -p "$(dirname "$LOG")"
case "${1:-}" in
install)
  : >"$LOG" # the log of this install only
  mkdir -p "$CACHE"
  install_chromium
  install_playwright
  install_schemathesis
  say "test tools ready; for the tests: eval \"\$($0 env)\""
  ;;
check)
  bin=$(chromium_bin)
  [ -n "$bin" ] || fail chromium "command -v chromium" "run: deploy/local/tools.sh install"
  check_chromium "$bin"
  check_playwright
  check_schemathesis
  ;;
env)
  print_env
  ;;
*)
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
  ;;
esac
