#!/usr/bin/env bash
# Resident memory of `berth up` (store, API server, scheduler, controllers, node agent,
# pod network, proxy and DNS: one process): idle once its node is Ready, then with N pods
# of the test server running. The pods' own processes (pause, the test servers, and the
# runtime's per-container processes) are reported apart: they are not Berth's footprint.
#
#   deploy/bench-up-memory.sh [--pods N] [--debug]
#
# Release build unless --debug. Runs as root on this machine, in a temporary data
# directory, on free loopback ports; stops everything and runs `berth reset` at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
pods=100
profile=release
while [ $# -gt 0 ]; do
  case $1 in
    --pods) pods=$2; shift 2 ;;
    --debug) profile=debug; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ "$profile" = release ]; then cargo build -q --release -p berth -p berth-cni; else cargo build -q -p berth -p berth-cni; fi
bin=${CARGO_TARGET_DIR:-target}/$profile

work=$(mktemp -d /tmp/berth-mem.XXXXXX)
data=$work/data
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  "$bin/berth" reset --data-dir "$data/agent" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

deploy/images/build.sh --out "$data/agent/images" >/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
api=$(free_port) agent=$(free_port)
"$bin/berth" up --data-dir "$data" --listen "127.0.0.1:$api" --agent-port "$agent" \
  --cni-conf-dir "$work/no-cni" >/dev/null 2>"$work/berth.log" &
pid=$!
export KUBECONFIG=$data/kubeconfig.yaml
k() { kubectl --cache-dir "$work/kube-cache" "$@"; }
node=$(hostname | tr 'A-Z' 'a-z')
for _ in $(seq 600); do
  [ -s "$KUBECONFIG" ] && k get node "$node" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { tail -20 "$work/berth.log" >&2; exit 1; }
  sleep 0.2
done
k wait --for=condition=Ready "node/$node" --timeout=120s >/dev/null

rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
pss_kib() { awk '/^Pss:/ { print $2 }' "/proc/$1/smaps_rollup"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
# Every process of the pods: those in the agent's cgroup tree, in any hierarchy.
pods_kib() {
  local p total=0
  for p in $(cat /sys/fs/cgroup/*/berth/*/cgroup.procs /sys/fs/cgroup/*/berth/*/*/cgroup.procs \
      /sys/fs/cgroup/berth/*/cgroup.procs /sys/fs/cgroup/berth/*/*/cgroup.procs 2>/dev/null | sort -u); do
    total=$((total + $(awk '/^VmRSS/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
anon_kib() { awk '/^RssAnon/ { print $2 }' "/proc/$1/status"; }
# The runtime's per-container monitors beside the pods (children of berth up that are not in
# a pod): their PSS, since most of each one's RSS is the berth binary's pages, shared.
shims_kib() {
  local p total=0 n=0
  for p in $(pgrep -f "$bin/berth runtime" || true); do
    total=$((total + $(pss_kib "$p" 2>/dev/null || echo 0))); n=$((n + 1))
  done
  echo "$total $n"
}
report() { # label
  local shims; shims=$(shims_kib)
  printf '%-22s berth up RSS %6s MiB (PSS %6s, anonymous %6s) | pods %6s MiB RSS | %s monitors: PSS %s MiB\n' \
    "$1" "$(mib "$(rss_kib "$pid")")" "$(mib "$(pss_kib "$pid")")" "$(mib "$(anon_kib "$pid")")" \
    "$(mib "$(pods_kib)")" "${shims#* }" "$(mib "${shims% *}")"
}

sleep 20
report "idle ($profile)"
cat >"$work/pods.yaml" <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: mem}
spec:
  replicas: $pods
  selector: {matchLabels: {app: mem}}
  template:
    metadata: {labels: {app: mem}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: c, image: berth-testserver:latest, imagePullPolicy: Never}
EOF
start=$SECONDS
k apply -f "$work/pods.yaml" >/dev/null
k rollout status deployment/mem --timeout=900s >/dev/null
echo "$pods pods ready in $((SECONDS - start)) s"
sleep 20
report "$pods pods, +20 s"
# The watch cache keeps 75 s of events; free heap pages go back every 30 s.
sleep 90
report "$pods pods, +110 s"
k delete deployment mem --wait=true --timeout=300s >/dev/null
k wait --for=delete pod -l app=mem --timeout=300s >/dev/null 2>&1 || true
sleep 10
report "deleted, +10 s"
sleep 110
report "deleted, +120 s"
