#!/usr/bin/env bash
# Berth's main job: a single-node control plane on this machine (`berth server`: the embedded
# Raft store and the Kubernetes API over HTTPS on 127.0.0.1:6443), with an example workload
# applied through the real kubectl. Runs until Ctrl-C; everything stays in .berth/server and
# is there again on the next start.
#
# Until the node agent and controllers land (issues 5 and 6) the workload is stored and
# served (kubectl get/describe/scale/delete work) but no container runs.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n== %s\n' "$*" >&2; }

step "building berth and kctl (release)"
cargo build --release -p berth -p kctl

data=.berth/server
mkdir -p "$data"
target="${CARGO_TARGET_DIR:-target}"
step "starting berth server (data in $data, API on https://127.0.0.1:6443)"
"$target"/release/berth server --data-dir "$data" --listen 127.0.0.1:6443 \
  --store-client-url http://127.0.0.1:2379 --store-peer-url http://127.0.0.1:2380 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT INT TERM

export KUBECONFIG="$PWD/$data/kubeconfig.yaml"
for _ in $(seq 1 100); do
  [ -s "$KUBECONFIG" ] && kubectl get --raw /readyz >/dev/null 2>&1 && break
  sleep 0.2
done

step "kubectl get namespaces"
kubectl get namespaces

step "applying the example workload (deploy/examples/web.yaml)"
kubectl apply -f deploy/examples/web.yaml

step "kubectl get deployments,services,configmaps -o wide"
kubectl get deployments,services,configmaps -o wide

step "the same through kctl: kctl get deploy,svc"
"$target"/release/kctl get deploy,svc

cat >&2 <<MSG

Berth is running. In another shell:
  export KUBECONFIG=$KUBECONFIG
  kubectl get all
Ctrl-C stops it; the data stays in $data.
MSG
wait $pid
