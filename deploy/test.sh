#!/usr/bin/env bash
# Berth's test command (the README's second command, and what .ci/run calls).
# Installs what the tests need, checks formatting and lints, runs every test, and runs
# the benchmarks briefly so they are known to work. Run as root on a Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== [%4ss] %s\n' "$SECONDS" "$*"; }

step "installing test dependencies (Debian packages)"
need=()
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v etcd >/dev/null || need+=(etcd-server)
# The runtime's tests and benchmark: the reference runtimes, image tools, busybox for images.
for tool in runc crun umoci skopeo curl; do command -v "$tool" >/dev/null || need+=("$tool"); done
# The image puller's tests: a real registry, and htpasswd for its basic auth.
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v htpasswd >/dev/null || need+=(apache2-utils)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
# The node agent's tests wire pods with the reference CNI plugins (bridge, host-local).
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
# The service proxy: nftables, and conntrack to clear stale UDP flows.
command -v nft >/dev/null || need+=(nftables)
command -v conntrack >/dev/null || need+=(conntrack)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
etcdctl version | head -1
command -v kubectl >/dev/null || { echo "kubectl 1.32 is required (preinstalled on these machines)" >&2; exit 1; }

step "installing the Python Kubernetes client (API compatibility tests)"
python3 -c 'import kubernetes' 2>/dev/null || python3 -m pip install -q kubernetes
python3 -c 'import kubernetes; print("kubernetes", kubernetes.__version__)'

# A cold build gains nothing from incremental compilation and pays for it.
[ "${CI:-}" = true ] && export CARGO_INCREMENTAL=0

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -q -- -D warnings

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi

step "store-bench smoke run (debug build, 1 s per phase: proves it runs, not how fast)"
store/bench/run.sh --debug --duration 1

step "engine-bench smoke run (debug build, few writes: proves it runs, not how fast)"
cargo run -q -p berth-store --bin engine-bench -- --writes 200 --flush-every 10

step "test images and the test server (deploy/images/test.sh)"
deploy/images/test.sh

step "runtime benchmark smoke run (10 runs each of Berth, runc, crun: proves it runs, not how fast)"
deploy/bench-runtime.sh --quick --debug

step "api_bench smoke run (debug build, few ops: proves it runs, not how fast)"
cargo bench -q --profile dev -p berth-apiserver --bench api_bench -- --ops 100 --watchers 4

step "scheduler benchmark smoke run (debug build, 200 nodes and 500 pods: proves it runs, not how fast)"
cargo bench -q --profile dev -p berth-scheduler --bench scheduler -- --nodes 200 --pods 500

step "proxy sync benchmark smoke run (debug build, 100 Services: proves it runs, not how fast)"
cargo bench -q --profile dev -p berth-proxy --bench sync -- --services 100 --connects 200 --updates 5

step "pod start benchmark smoke run (debug build, few pods: proves it runs, not how fast)"
cargo bench -q --profile dev -p berth --bench pod_start -- --pods 5 --burst 5 --anchor 3
