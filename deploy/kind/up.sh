#!/usr/bin/env bash
# The pizza shop on a local kind cluster: create the cluster (deploy/kind/kind-config.yaml), build the
# three service images from deploy/Dockerfile, load them into the cluster's node, make the fault admin
# API's token, apply deploy/k8s/overlays/kind, and wait until every part is ready. Then the shop answers
# on http://localhost:8080 and Jaeger on http://localhost:16686.
#
#   deploy/kind/up.sh        idempotent: an existing cluster is reused, images rebuilt, manifests re-applied
#   PIZZA_ADMIN_TOKEN=... deploy/kind/up.sh    the same, with an admin token of your own (else the one
#                            the cluster has, or a new random one; never the workshop's published token)
#   deploy/kind/down.sh      delete the cluster
#
# Needs docker (with a running engine), kind and kubectl on the PATH. Every kubectl call names the
# cluster's context, so a kubeconfig pointing elsewhere is never touched.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
CLUSTER=${PIZZA_KIND_CLUSTER:-pizza}
CONTEXT="kind-$CLUSTER"
NS=pizza
TIMEOUT=${PIZZA_KIND_TIMEOUT:-600s}

say() { printf '[kind %4ss] %s\n' "$SECONDS" "$*" >&2; }
fail() {
  printf '\n[kind] FAILED: %s\n[kind]   try: %s\n' "$1" "$2" >&2
  exit 1
}

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || fail "$tool is not installed" "install $tool and run this script again"
done
docker info >/dev/null 2>&1 || fail "docker has no engine to talk to" "start the Docker engine (docker info must answer)"

# The images are tagged with the workspace's version, as deploy/k8s/base names them.
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version = "\(.*\)"/\1/p' Cargo.toml)
[ -n "$VERSION" ] || fail "no version in Cargo.toml's [workspace.package]" "check Cargo.toml"

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  say "cluster $CLUSTER exists, reusing it"
else
  say "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --config deploy/kind/kind-config.yaml --wait 120s
fi

for svc in order kitchen delivery; do
  say "building pizza/$svc:$VERSION (the first build compiles the workspace: several minutes)"
  docker build -f deploy/Dockerfile --target "$svc" -t "pizza/$svc:$VERSION" .
  say "loading pizza/$svc:$VERSION into $CLUSTER"
  kind load docker-image --name "$CLUSTER" "pizza/$svc:$VERSION"
done

# A Job's pod template cannot change in place; the topic Job is idempotent, so run it afresh.
kubectl --context "$CONTEXT" -n "$NS" delete job kafka-topics --ignore-not-found >/dev/null 2>&1 || true

# The fault admin API's token: the Secret admin-token (key PIZZA_ADMIN_TOKEN) the three services share,
# made here rather than rendered by kustomize, so no cluster runs with a published credential. The pods
# listen beyond loopback and refuse the workshop's token or one shorter than 12 characters: say so now
# rather than in a crash loop.
ADMIN_SECRET=admin-token
kubectl --context "$CONTEXT" create namespace "$NS" --dry-run=client -o yaml |
  kubectl --context "$CONTEXT" apply -f - >/dev/null
current=$(kubectl --context "$CONTEXT" -n "$NS" get secret "$ADMIN_SECRET" --ignore-not-found \
  -o jsonpath='{.data.PIZZA_ADMIN_TOKEN}')
token=
if [ -n "${PIZZA_ADMIN_TOKEN:-}" ]; then
  if [ "$PIZZA_ADMIN_TOKEN" = pizza-workshop ] || [ "${#PIZZA_ADMIN_TOKEN}" -lt 12 ]; then
    fail "PIZZA_ADMIN_TOKEN is the workshop's published token or shorter than 12 characters: pods reachable beyond loopback refuse it" \
      'PIZZA_ADMIN_TOKEN=$(openssl rand -hex 16) deploy/kind/up.sh, or leave it unset for a random one'
  fi
  token=$PIZZA_ADMIN_TOKEN
elif [ -z "$current" ]; then
  token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
fi
if [ -n "$token" ] && [ "$(printf %s "$token" | base64 | tr -d '\n')" != "$current" ]; then
  say "setting the fault admin API's token (Secret $NS/$ADMIN_SECRET)"
  kubectl --context "$CONTEXT" -n "$NS" create secret generic "$ADMIN_SECRET" \
    --from-literal=PIZZA_ADMIN_TOKEN="$token" --dry-run=client -o yaml |
    kubectl --context "$CONTEXT" apply -f - >/dev/null
  # A container reads a Secret's value into its environment when it starts.
  [ -z "$current" ] || restart_services=1
fi

say "applying deploy/k8s/overlays/kind"
# The base reads the configuration files compose and the native stack use, outside its folder.
kubectl --context "$CONTEXT" kustomize --load-restrictor LoadRestrictionsNone deploy/k8s/overlays/kind |
  kubectl --context "$CONTEXT" apply -f -

if [ -n "${restart_services:-}" ]; then
  say "restarting order, kitchen and delivery for the new admin token"
  kubectl --context "$CONTEXT" -n "$NS" rollout restart deployment/order deployment/kitchen deployment/delivery
fi

say "waiting for PostgreSQL and Kafka"
kubectl --context "$CONTEXT" -n "$NS" rollout status statefulset/postgres --timeout "$TIMEOUT"
kubectl --context "$CONTEXT" -n "$NS" rollout status statefulset/kafka --timeout "$TIMEOUT"
say "waiting for the topics"
kubectl --context "$CONTEXT" -n "$NS" wait --for=condition=complete job/kafka-topics --timeout "$TIMEOUT"
for d in jaeger prometheus otel-collector kitchen delivery order; do
  say "waiting for $d"
  kubectl --context "$CONTEXT" -n "$NS" rollout status "deployment/$d" --timeout "$TIMEOUT"
done

say "ready: the shop on http://localhost:8080, Jaeger on http://localhost:16686"
say "faults panel's admin token: kubectl --context $CONTEXT -n $NS get secret $ADMIN_SECRET -o jsonpath='{.data.PIZZA_ADMIN_TOKEN}' | base64 -d"
say "pods: kubectl --context $CONTEXT -n $NS get pods; stop: deploy/kind/down.sh"
