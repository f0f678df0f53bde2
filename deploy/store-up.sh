#!/usr/bin/env bash
# Berth's main job, for now: a single-member Berth store on this machine, checked with
# etcdctl, with an example workload written and read back. (The API server, agent and
# `berth up` replace this as their issues land.) Runs until Ctrl-C; the data stays in
# .berth/store and is there again on the next start.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n== %s\n' "$*" >&2; }

if ! command -v etcdctl >/dev/null; then
  step "installing etcdctl (Debian package etcd-client)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq etcd-client >/dev/null
fi

step "building berth (release)"
cargo build --release -p berth

data=.berth/store
mkdir -p .berth
client=http://127.0.0.1:2379
step "starting a single-member store in $data (client URL $client)"
"${CARGO_TARGET_DIR:-target}"/release/berth store --name berth-0 --data-dir "$data" \
  --listen-client-urls "$client" --advertise-client-urls "$client" \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster berth-0=http://127.0.0.1:2380 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT INT TERM

export ETCDCTL_API=3
# etcdctl takes host:port: with an http:// prefix, etcdctl 3.4's `endpoint status` sends
# an invalid HTTP/2 :authority, which Berth's HTTP/2 layer (h2) refuses.
ep=127.0.0.1:2379
for _ in $(seq 1 100); do
  etcdctl --endpoints=$ep endpoint health >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || { echo "berth store exited; see the log above" >&2; exit 1; }
  sleep 0.1
done

step "health"
etcdctl --endpoints=$ep endpoint health
etcdctl --endpoints=$ep endpoint status -w table
etcdctl --endpoints=$ep member list -w table

step "example workload: a put, a txn, a read, a watch"
etcdctl --endpoints=$ep put /example/greeting "hello from berth"
printf 'version("/example/greeting") > "0"\n\nput /example/seen yes\n\n\n' | etcdctl --endpoints=$ep txn
etcdctl --endpoints=$ep get /example/ --prefix
etcdctl --endpoints=$ep watch /example/ --prefix --rev=1 & wpid=$!
sleep 1; kill $wpid 2>/dev/null || true

step "the store is running (pid $pid); try: ETCDCTL_API=3 etcdctl --endpoints=$ep get / --prefix. Ctrl-C stops it"
wait $pid
