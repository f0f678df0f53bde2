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
# The QEMU cluster (deploy/cluster --provider qemu): QEMU, Debian's kernel and modules (it has
# ip_vs), and what builds the guests' disks and initramfs.
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
compgen -G '/lib/modules/*/kernel/net/netfilter/ipvs/ip_vs.ko' >/dev/null || need+=(linux-image-amd64)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v cpio >/dev/null || need+=(cpio)
command -v objcopy >/dev/null || need+=(binutils)
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

# Clippy runs as the compiler of Berth's own crates (what `cargo clippy` does, but with code
# generation), so one build serves the lints and the tests: the same as
# `cargo clippy --workspace --all-targets -- -D warnings`, once the benches and examples
# are built below too.
export RUSTC_WORKSPACE_WRAPPER="$(command -v clippy-driver)" CLIPPY_ARGS=-Dwarnings
[ -x "$RUSTC_WORKSPACE_WRAPPER" ] || { echo "clippy-driver is required (rustup component add clippy)" >&2; exit 1; }

step "lints and tests (the netns e2e scenarios among them)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi

step "QEMU cluster scenarios (3 VMs, each a control-plane member and a node: cross-node Service, worker loss, leader loss)"
qlog=$(mktemp /tmp/berth-qemu-e2e.XXXXXX)
if ! BERTH_E2E_PROVIDER=qemu BERTH_E2E_SCENARIOS=cross-node-service,worker-loss,leader-loss \
  cargo nextest run --workspace --no-fail-fast -E 'binary(clusters)' --no-capture >"$qlog" 2>&1; then
  tail -n 150 "$qlog"
  echo "QEMU scenarios failed: the whole output is in $qlog, the nodes' logs in /tmp/berth-e2e-*.log" >&2
  exit 1
fi
grep -E '^(scenario|worker-loss|leader-loss|\[cluster)' "$qlog"
rm -f "$qlog"

step "lints of the benches and examples; every binary with the workspace's features"
# The benchmark scripts below take these binaries as they are (--no-build): building one
# package alone would resolve other features and compile much of the tree again.
cargo build -q --workspace --all-targets
bin=${CARGO_TARGET_DIR:-target}/debug

step "store-bench smoke run (debug build, 1 s per phase: proves it runs, not how fast)"
store/bench/run.sh --debug --no-build --duration 1

step "engine-bench smoke run (debug build, few writes: proves it runs, not how fast)"
"$bin/engine-bench" --writes 200 --flush-every 10

step "test images and the test server (deploy/images/test.sh)"
deploy/images/test.sh

step "runtime benchmark smoke run (10 runs each of Berth, runc, crun: proves it runs, not how fast)"
deploy/bench-runtime.sh --quick --debug --no-build

step "api_bench smoke run (debug build, few ops: proves it runs, not how fast)"
cargo bench -q --workspace --profile dev --bench api_bench -- --ops 100 --watchers 4

step "scheduler benchmark smoke run (debug build, 200 nodes and 500 pods: proves it runs, not how fast)"
cargo bench -q --workspace --profile dev --bench scheduler -- --nodes 200 --pods 500

step "proxy sync benchmark smoke run (debug build, 100 Services: proves it runs, not how fast)"
cargo bench -q --workspace --profile dev --bench sync -- --services 100 --connects 200 --updates 5

step "pod start benchmark smoke run (debug build, few pods: proves it runs, not how fast)"
cargo bench -q --workspace --profile dev --bench pod_start -- --pods 5 --burst 5 --anchor 3
