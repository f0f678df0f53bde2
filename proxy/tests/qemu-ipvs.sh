#!/usr/bin/env bash
# The IPVS back end against a kernel that has ip_vs: boots Debian's kernel in QEMU (TCG)
# from an initramfs holding busybox, the ip_vs and nf_tables modules and the static test
# binaries of proxy/tests/ipvs_kernel.rs (the netlink layer and executor) and
# proxy/tests/ipvs_dataplane.rs (the IPVS Dataplane with its nft table and real traffic),
# runs them with BERTH_REQUIRE_IPVS=1 (so nothing is skipped), and prints PASS or FAIL
# from the serial console. Exit 0 on PASS, 1 on FAIL, 2 when a prerequisite is missing.
#
# Needs, from Debian: linux-image-amd64 (kernel in /boot, modules in /lib/modules),
# qemu-system-x86, busybox-static, iproute2 and nftables (`ip` and `nft` and their
# libraries go into the guest: busybox's ip cannot move a veth end to another namespace).
# BERTH_GUEST_KERNEL picks a kernel version; the newest one under /lib/modules with ip_vs
# is the default. Honors CARGO_TARGET_DIR.
#
# This is the seed of the QEMU cluster: one guest, no network.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
boot_timeout=${BERTH_QEMU_TIMEOUT:-240}
tests=(ipvs_kernel ipvs_dataplane)
target=x86_64-unknown-linux-gnu

die() { echo "qemu-ipvs: $*" >&2; exit 2; }

guest_kernel() {
    if [[ -n ${BERTH_GUEST_KERNEL:-} ]]; then
        echo "$BERTH_GUEST_KERNEL"
        return
    fi
    local v
    for v in $(ls /lib/modules 2>/dev/null | sort -rV); do
        if [[ -f /boot/vmlinuz-$v && -f /lib/modules/$v/kernel/net/netfilter/ipvs/ip_vs.ko ]]; then
            echo "$v"
            return
        fi
    done
}

kver=$(guest_kernel)
[[ -n $kver ]] || die "no kernel with ip_vs under /boot and /lib/modules (apt-get install -y linux-image-amd64)"
kernel=/boot/vmlinuz-$kver
moddir=/lib/modules/$kver
[[ -r $kernel ]] || die "cannot read $kernel"
command -v qemu-system-x86_64 >/dev/null || die "no qemu-system-x86_64 (apt-get install -y qemu-system-x86)"
busybox=$(command -v busybox) || die "no busybox (apt-get install -y busybox-static)"
iproute=$(command -v ip) || die "no ip (apt-get install -y iproute2)"
[[ -x /usr/sbin/nft ]] || die "no /usr/sbin/nft (apt-get install -y nftables)"
file -L "$busybox" | grep -q 'statically linked' || die "$busybox is not static (apt-get install -y busybox-static)"

work=$(mktemp -d /tmp/bt-qemu-ipvs.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "qemu-ipvs: building the static test binaries (${tests[*]})"
(
    cd "$repo" &&
        RUSTFLAGS='-C target-feature=+crt-static' cargo test -p berth-proxy \
            $(printf -- '--test %s ' "${tests[@]}") \
            --no-run --target "$target" --message-format=json >"$work/build.json" 2>"$work/build.log"
) || true

root=$work/root
mkdir -p "$root"/{bin,sbin,usr/sbin,etc,proc,sys,dev,tmp,modules}
for t in "${tests[@]}"; do
    executable=$(grep "\"name\":\"$t\"" "$work/build.json" 2>/dev/null |
        grep -o '"executable":"[^"]*"' | tail -n1 | cut -d'"' -f4) || true
    if [[ -z $executable || ! -x $executable ]]; then
        tail -n 30 "$work/build.log" >&2
        echo "qemu-ipvs: FAIL (build of $t)"
        exit 1
    fi
    cp "$executable" "$root/bin/$t"
done
cp "$busybox" "$root/bin/busybox"
cp "$iproute" "$root/sbin/ip"
cp /usr/sbin/nft "$root/usr/sbin/nft"
cp /etc/protocols /etc/services "$root/etc/" 2>/dev/null || true
for lib in $(for b in "$iproute" /usr/sbin/nft; do ldd "$b"; done |
    awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u); do
    cp --parents -L "$lib" "$root"
done

# Modules in load order: each target's dependencies from modules.dep, deepest first.
# libcrc32c asks the crypto API for "crc32c" at load time; with no modprobe in the
# guest, crc32c_generic must already be loaded.
order=()
add_module() {
    local rel=$1 dep
    for seen in "${order[@]}"; do [[ $seen == "$rel" ]] && return; done
    for dep in $(awk -v m="$rel:" '$1 == m { $1 = ""; print }' "$moddir/modules.dep"); do
        add_module "$dep"
    done
    order+=("$rel")
}
add_module kernel/crypto/crc32c_generic.ko
# nf_tables and the expressions IPVS mode's table uses (ct, masquerade, nat chains,
# reject): the guest has no modprobe to load them on demand.
for m in kernel/net/netfilter/ipvs/ip_vs_rr.ko kernel/drivers/net/dummy.ko kernel/drivers/net/veth.ko \
    kernel/net/netfilter/nft_ct.ko kernel/net/netfilter/nft_chain_nat.ko kernel/net/netfilter/nft_masq.ko \
    kernel/net/ipv4/netfilter/nft_reject_ipv4.ko; do
    grep -q "^$m:" "$moddir/modules.dep" || die "$moddir has no $m"
    add_module "$m"
done
for rel in "${order[@]}"; do
    case $rel in
        *.ko) cp "$moddir/$rel" "$root/modules/" ;;
        *.ko.xz) xz -dc "$moddir/$rel" >"$root/modules/$(basename "$rel" .xz)" ;;
        *.ko.zst) zstd -qdc "$moddir/$rel" >"$root/modules/$(basename "$rel" .zst)" ;;
        *) die "cannot unpack module $rel" ;;
    esac
    basename "${rel%.xz}" | sed 's/\.zst$//' >>"$root/modules/order"
done

cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules/order); do
    insmod "/modules/$m" || echo "qemu-ipvs guest: insmod $m failed"
done
echo "qemu-ipvs guest: kernel $(uname -r), ip_vs: $(head -n1 /proc/net/ip_vs 2>/dev/null)"
failed=""
for t in TESTS; do
    echo "qemu-ipvs guest: running $t"
    BERTH_REQUIRE_IPVS=1 RUST_BACKTRACE=1 /bin/$t --test-threads=1 || failed="$failed $t"
done
if [ -z "$failed" ]; then
    echo "BERTH-QEMU-RESULT: PASS"
else
    echo "BERTH-QEMU-RESULT: FAIL ($failed )"
fi
poweroff -f
EOF
sed -i "s/TESTS/${tests[*]}/" "$root/init"
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.gz"

echo "qemu-ipvs: booting $kernel (timeout ${boot_timeout}s)"
start=$(date +%s)
set +e
timeout "$boot_timeout" qemu-system-x86_64 -accel tcg -m 512 -smp 1 -no-reboot -nographic \
    -kernel "$kernel" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 panic=-1 quiet" </dev/null >"$work/console.log" 2>&1
qemu_rc=$?
set -e
elapsed=$(($(date +%s) - start))

if grep -aq 'BERTH-QEMU-RESULT: PASS' "$work/console.log"; then
    tr -d '\r' <"$work/console.log" | grep -aoE '(qemu-ipvs guest: .*|^test .*)'
    echo "qemu-ipvs: PASS (${elapsed}s in the guest)"
    exit 0
fi
tr -d '\r' <"$work/console.log" | tail -n 60
if [[ $qemu_rc == 124 ]]; then
    echo "qemu-ipvs: FAIL (no result within ${boot_timeout}s)"
else
    echo "qemu-ipvs: FAIL (qemu exit $qemu_rc after ${elapsed}s)"
fi
exit 1
