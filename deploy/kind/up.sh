#!/usr/bin/env bash
# The pizza shop on a local kind cluster: create the cluster (deploy/kind/kind-config.yaml), build the
# three service images from deploy/Dockerfile, load them into the cluster's node, apply
# deploy/k8s/overlays/kind, and wait until every part is ready. Then the shop answers on
# http://localhost:8080 and Jaeger on http://localhost:16686.
#
#   deploy/kind/up.sh        idempotent: an existing cluster is reused, images rebuilt, manifests re-applied
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

say "applying deploy/k8s/overlays/kind"
# The base reads the configuration files compose and the native stack use, outside its folder.
kubectl --context "$CONTEXT" kustomize --load-restrictor LoadRestrictionsNone deploy/k8s/overlays/kind |
  kubectl --context "$CONTEXT" apply -f -

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
say "pods: kubectl --context $CONTEXT -n $NS get pods; stop: deploy/kind/down.sh"
