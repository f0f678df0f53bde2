#!/usr/bin/env bash
# store-bench: 3-member Berth stores (on sled, the default engine, and on fjall) and a
# 3-member etcd 3.4 (Debian's etcd-server), all on loopback on this machine, driven by the
# same client and workload in one run; etcd is the anchor the ratios are against.
#
#   store/bench/run.sh [--duration SECONDS] [--debug] [--no-build]
#
# Installs etcd-server if it is missing, builds berth and store-bench (release unless
# --debug), starts both clusters in a temporary directory, runs store-bench, and stops
# everything on exit, whatever happened. --no-build takes the binaries in target/PROFILE as
# they are: deploy/test.sh builds them with the whole workspace's features beforehand, which
# a build of these two packages alone would not share.
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=10
profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --debug) profile=debug; shift ;;
    --no-build) build=no; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

if ! command -v etcd >/dev/null; then
  echo "== installing etcd-server (Debian)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq etcd-server >/dev/null || { apt-get update -qq && apt-get install -y -qq etcd-server >/dev/null; }
fi

if [ "${build:-yes}" = yes ]; then
  echo "== building berth and store-bench ($profile)" >&2
  if [ "$profile" = release ]; then
    cargo build -q --release -p berth -p berth-store --bins
  else
    cargo build -q -p berth -p berth-store --bins
  fi
fi
bin=${CARGO_TARGET_DIR:-target}/$profile

work=$(mktemp -d /tmp/store-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# Three 3-member clusters: Berth on sled (the default engine), Berth on fjall, etcd.
cluster_args() { # base-port prefix -> sets $cluster and $eps
  cluster=""; eps=""
  for i in 1 2 3; do
    cluster+="$2$i=http://127.0.0.1:$(($1 + i*10 + 1)),"
    eps+="http://127.0.0.1:$(($1 + i*10)),"
  done
  cluster=${cluster%,}; eps=${eps%,}
}
start_berth() { # base-port prefix engine
  cluster_args "$1" "$2"
  for i in 1 2 3; do
    c=$(($1 + i*10)); p=$((c + 1))
    RUST_LOG=warn "$bin/berth" store --name "$2$i" --data-dir "$work/$2$i" --backend "$3" \
      --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
      --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
      --initial-cluster "$cluster" --initial-cluster-state new --auto-compaction-retention 0 \
      >"$work/$2$i.log" 2>&1 &
    pids+=($!)
  done
}
start_berth 41000 s sled; sled_eps=$eps
start_berth 43000 f fjall; fjall_eps=$eps
cluster_args 42000 e; etcd_eps=$eps
for i in 1 2 3; do
  c=$((42000 + i*10)); p=$((c + 1))
  etcd --name "e$i" --data-dir "$work/e$i" \
    --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
    --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token bench \
    >"$work/e$i.log" 2>&1 &
  pids+=($!)
done

export ETCDCTL_API=3
for eps in "$sled_eps" "$fjall_eps" "$etcd_eps"; do
  for _ in $(seq 1 100); do
    etcdctl --endpoints="$eps" put bench/ready 1 >/dev/null 2>&1 && break
    sleep 0.2
  done
  etcdctl --endpoints="$eps" put bench/ready 1 >/dev/null
done
echo "== etcd: $(etcd --version | head -1)" >&2
"$bin/store-bench" --target "berth-sled=$sled_eps" --target "berth-fjall=$fjall_eps" \
  --target "etcd=$etcd_eps" --duration "$duration"
