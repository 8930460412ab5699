#!/usr/bin/env bash
# Deletes the kind cluster deploy/kind/up.sh created, and with it everything in it (traces and data
# included). Other clusters and the images in the local Docker engine are left alone.
set -euo pipefail

CLUSTER=${PIZZA_KIND_CLUSTER:-pizza}
command -v kind >/dev/null || {
  echo "kind is not installed: nothing to delete" >&2
  exit 1
}
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind delete cluster --name "$CLUSTER"
else
  echo "no kind cluster named $CLUSTER" >&2
fi
