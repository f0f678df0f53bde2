#!/usr/bin/env bash
# Berth's main job: a one-node cluster on this machine (`berth up`: the embedded Raft store,
# the Kubernetes API over HTTPS on 127.0.0.1:6443, the scheduler, the controller-manager, and
# the node agent running pods on the bundled runtime, with Berth's pod network, service proxy
# and cluster DNS), with an example workload applied through the real kubectl: a pod that
# runs, answers on its pod IP and shows its logs, and examples/web.yaml, a Deployment of three
# replicas behind a Service, which rolls out and answers through its ClusterIP and its DNS name.
# `deploy/up.sh --debug` uses a debug build (quicker to build). Runs until Ctrl-C; everything
# stays in .berth/ and is taken over by the next start (pods keep running in between).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n== %s\n' "$*" >&2; }

need=()
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
# The service proxy: nftables, and conntrack to clear stale UDP flows; curl for the checks.
command -v nft >/dev/null || need+=(nftables)
command -v conntrack >/dev/null || need+=(conntrack)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  step "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

profile=release
[ "${1:-}" = --debug ] && profile=debug
step "building berth and kctl ($profile)"
if [ $profile = release ]; then cargo build --release -p berth -p kctl; else cargo build -p berth -p kctl; fi
bin="${CARGO_TARGET_DIR:-target}/$profile"

data="$PWD/.berth"
step "building the example images into $data/agent/images (imported by the agent at start)"
deploy/images/build.sh --out "$data/agent/images" >/dev/null

step "starting berth up (data in $data, API on https://127.0.0.1:6443)"
"$bin"/berth up --data-dir "$data" --listen 127.0.0.1:6443 >/dev/null 2>"$data/berth.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT INT TERM

export KUBECONFIG="$data/kubeconfig.yaml"
node=$(hostname | tr 'A-Z' 'a-z')
for _ in $(seq 1 300); do
  [ -s "$KUBECONFIG" ] && kubectl get node "$node" >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || { tail -20 "$data/berth.log" >&2; exit 1; }
  sleep 0.2
done
kubectl wait --for=condition=Ready "node/$node" --timeout=60s

step "kubectl get nodes -o wide"
kubectl get nodes -o wide

step "applying the example pod (examples/hello-pod.yaml) and the web Deployment (examples/web.yaml)"
kubectl apply -f examples/hello-pod.yaml
kubectl apply -f examples/web.yaml
kubectl wait --for=condition=Ready pod/hello --timeout=60s
kubectl rollout status deployment/web --timeout=120s

step "kubectl get pods -o wide"
kubectl get pods -o wide
ip=$(kubectl get pod hello -o jsonpath='{.status.podIP}')

step "the pod answers on its IP ($ip)"
curl -s "http://$ip:8080/"

step "every web replica answers on its IP"
for wip in $(kubectl get pods -l app=web -o jsonpath='{.items[*].status.podIP}'); do
  curl -s "http://$wip:8080/"
done
kubectl get endpoints web

vip=$(kubectl get svc web -o jsonpath='{.spec.clusterIP}')
port=$(kubectl get svc web -o jsonpath='{.spec.ports[0].port}')
step "the app answers through its Service (ClusterIP $vip:$port, spread over the replicas)"
for _ in $(seq 1 6); do curl -s --max-time 5 "http://$vip:$port/"; done

step "and by name from inside a pod (cluster DNS): web.default.svc.cluster.local"
kubectl exec hello -- /testserver --get "http://web.default.svc.cluster.local:$port/"

step "kubectl logs hello"

kubectl logs hello

step "the same through kctl: kctl get pods,deploy,svc"
"$bin"/kctl get pods,deploy,rs,svc

cat >&2 <<MSG

Berth is running (log: $data/berth.log). In another shell:
  export KUBECONFIG=$KUBECONFIG
  kubectl get pods -o wide; kubectl logs -f hello; kubectl top pod
Ctrl-C stops Berth; its pods keep running and the next start takes them over.
MSG
wait $pid
