#!/usr/bin/env bash
# The tool the deployment checks (deploy/checks) need beyond the native stack: kustomize, to render
# deploy/k8s/overlays/kind exactly as `kubectl kustomize` does (kubectl embeds this same library).
#
#   deploy-tools.sh install          build what is missing (cached by version)
#   deploy-tools.sh path kustomize   print the cached binary (exit 1 if not built yet)
#
# kustomize comes from the Go module proxy, `go install sigs.k8s.io/kustomize/kustomize/v5@<version>`
# (a release tag with no replace directives, so plain `go install` works), built once into
# $PIZZA_CACHE/kustomize-<version> (default ~/.cache/pizza-infra). Debian's kubernetes-client is 1.20,
# whose embedded kustomize v2 cannot read this repository's kustomizations; a standalone binary from
# an ordinary Go build is the route every machine here has. Needs Go >= 1.24 (as infra.sh does).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${PIZZA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pizza-infra}
RUN=${PIZZA_RUN_DIR:-$ROOT/.run}
KUSTOMIZE_VERSION=v5.8.1

TAG=deploy-tools
# shellcheck source=deploy/local/lib.sh
. "$ROOT/deploy/local/lib.sh"

kustomize_bin() { echo "$CACHE/kustomize-$KUSTOMIZE_VERSION/bin/kustomize"; }

install_kustomize() {
  local bin
  bin=$(kustomize_bin)
  [ -x "$bin" ] && return 0
  require_go kustomize
  mkdir -p "$(dirname "$bin")"
  say "kustomize: building $KUSTOMIZE_VERSION with go install (first run only, about a minute)"
  run_step deploy-tools "check the Go module proxy is reachable (go env GOPROXY)" \
    env GOBIN="$(dirname "$bin")" CGO_ENABLED=0 \
    go install -trimpath "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
  "$bin" version >/dev/null 2>&1 || fail kustomize "$bin version" "the built binary does not run; delete $(dirname "$bin") and retry"
  say "kustomize: $("$bin" version)"
}

case ${1:-} in
  install) install_kustomize ;;
  path)
    case ${2:-} in
      kustomize) [ -x "$(kustomize_bin)" ] && kustomize_bin ;;
      *) fail path "deploy-tools.sh path ${2:-}" "use: deploy-tools.sh path kustomize" ;;
    esac
    ;;
  *)
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
