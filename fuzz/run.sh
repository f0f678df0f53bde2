#!/usr/bin/env bash
# Fuzzes Berth's manifest decoding and patching: runs each cargo-fuzz target for SECONDS
# (default 600) in turn, one libFuzzer process at a time, at the lowest CPU priority.
#
#   fuzz/run.sh [SECONDS] [extra libFuzzer flags...]
#
# Needs a nightly toolchain (`rustup toolchain install nightly`); installs cargo-fuzz if missing.
# New corpus entries go to fuzz/corpus/<target> (not committed), seeded from fuzz/seeds/<target>;
# crashes go to fuzz/artifacts/<target>.
set -euo pipefail

seconds="${1:-600}"
shift || true
cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    nice -n 19 cargo install cargo-fuzz
fi

status=0
for target in decode_manifest patch; do
    mkdir -p "corpus/$target"
    echo "== $target: ${seconds}s"
    if ! nice -n 19 cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 "$@"; then
        echo "== $target: FAILED (see fuzz/artifacts/$target)"
        status=1
    fi
done
exit "$status"
