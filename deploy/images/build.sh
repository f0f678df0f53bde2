#!/usr/bin/env bash
# Builds Berth's test images as OCI image layouts in tar archives, with nothing but shell, tar,
# gzip and sha256sum (no umoci, skopeo or registry):
#   busybox.tar     busybox:latest, one layer (static busybox and its applet links)
#   testserver.tar  berth-testserver:latest, the same busybox layer plus /testserver
#   testserver      the test server binary itself, for tests that run it on the host
#   bundle-busybox/ an OCI runtime bundle (busybox rootfs, `runc spec` running /bin/true)
# Layers are deterministic tars compressed with `gzip -n`, so building twice gives the same
# digests. Installs busybox-static and runc if missing. Run as root.
#
# usage: deploy/images/build.sh [--out DIR]   (default: deploy/images/out)
set -euo pipefail
export LC_ALL=C
umask 022

here="$(cd "$(dirname "$0")" && pwd)"
out="$here/out"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --out=*) out="${1#--out=}"; shift ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
out="$(cd "$out" && pwd)"
# Keep generated files out of git, wherever the output goes.
printf '*\n' >"$out/.gitignore"

need=()
{ [ -x /bin/busybox ] && dpkg -s busybox-static >/dev/null 2>&1; } || need+=(busybox-static)
command -v runc >/dev/null || need+=(runc)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v rustc >/dev/null || { echo "build.sh: rustc is required" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Deterministic archives: fixed order, times, owners and format (GNU tar stores no atime).
det_tar() { tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu "$@"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

# make_layer DIR NAME: archives DIR's contents (no "./" prefix) into $work/NAME.tar.gz and sets
# layer_diff_id (sha256 of the tar), layer_digest and layer_size (of the compressed blob).
make_layer() {
  local dir=$1 name=$2
  (cd "$dir" && det_tar -cf "$work/$name.tar" $(ls -A))
  gzip -n -9 -c "$work/$name.tar" >"$work/$name.tar.gz"
  layer_diff_id=$(sha "$work/$name.tar")
  layer_digest=$(sha "$work/$name.tar.gz")
  layer_size=$(size "$work/$name.tar.gz")
}

# put_blob LAYOUT FILE: stores FILE under its digest; sets blob_digest and blob_size.
put_blob() {
  blob_digest=$(sha "$2")
  blob_size=$(size "$2")
  mkdir -p "$1/blobs/sha256"
  cp "$2" "$1/blobs/sha256/$blob_digest"
}

# ---- the busybox layer
bb="$work/busybox-root"
mkdir -p "$bb/bin" "$bb/etc" "$bb/root" "$bb/tmp"
cp /bin/busybox "$bb/bin/busybox"
chmod 0755 "$bb/bin/busybox"
if [ "$(id -u)" = 0 ]; then
  # In a chroot /proc/self/exe is unreadable, so the links point at /bin/busybox, where the
  # binary is inside the image, rather than at the host's path.
  chroot "$bb" /bin/busybox --install -s /bin
else
  for applet in $(/bin/busybox --list); do
    [ -e "$bb/bin/$applet" ] || ln -s /bin/busybox "$bb/bin/$applet"
  done
fi
printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' \
  'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$bb/etc/passwd"
printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$bb/etc/group"
chmod 0644 "$bb/etc/passwd" "$bb/etc/group"
chmod 0700 "$bb/root"
chmod 1777 "$bb/tmp"
make_layer "$bb" busybox
bb_diff_id=$layer_diff_id bb_digest=$layer_digest bb_size=$layer_size

# ---- the test server layer
ts="$work/testserver-root"
mkdir -p "$ts"
rustc --edition 2021 -O -C panic=abort -C target-feature=+crt-static -C strip=symbols \
  --remap-path-prefix "$here=deploy/images" -o "$ts/testserver" "$here/testserver/main.rs"
chmod 0755 "$ts/testserver"
make_layer "$ts" testserver
ts_diff_id=$layer_diff_id ts_digest=$layer_digest ts_size=$layer_size

path_env='PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
epoch='1970-01-01T00:00:00Z'
layer_json() { printf '{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}' "$1" "$2"; }
history_json() { printf '{"created":"%s","created_by":"deploy/images/build.sh: %s"}' "$epoch" "$1"; }

# write_image NAME REF CONFIG_JSON LAYER_NAMES...: an OCI layout archived as $out/NAME.tar.
write_image() {
  local name=$1 ref=$2 config=$3
  shift 3
  local layout="$work/layout-$name" layers="" l digest
  mkdir -p "$layout"
  for l in "$@"; do
    put_blob "$layout" "$work/$l.tar.gz"
    layers="$layers${layers:+,}$(layer_json "$blob_digest" "$blob_size")"
  done
  printf '%s' "$config" >"$work/$name-config.json"
  put_blob "$layout" "$work/$name-config.json"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
    "$blob_digest" "$blob_size" "$layers" >"$work/$name-manifest.json"
  put_blob "$layout" "$work/$name-manifest.json"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
    "$blob_digest" "$blob_size" "$ref" >"$layout/index.json"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
  # Every blob must be stored under its own digest.
  for digest in "$layout"/blobs/sha256/*; do
    [ "$(sha "$digest")" = "$(basename "$digest")" ] || { echo "build.sh: bad blob $digest" >&2; exit 1; }
  done
  det_tar -C "$layout" -cf "$out/.$name.tar.tmp" oci-layout index.json blobs
  mv "$out/.$name.tar.tmp" "$out/$name.tar"
  printf '%-15s %-24s manifest sha256:%s  %s bytes\n' "$name.tar" "$ref" "$blob_digest" "$(size "$out/$name.tar")"
}

write_image busybox busybox:latest \
  "$(printf '{"architecture":"amd64","os":"linux","created":"%s","config":{"Env":["%s"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[%s]}' \
    "$epoch" "$path_env" "$bb_diff_id" "$(history_json 'busybox layer')")" \
  busybox
write_image testserver berth-testserver:latest \
  "$(printf '{"architecture":"amd64","os":"linux","created":"%s","config":{"Env":["%s"],"Entrypoint":["/testserver"],"ExposedPorts":{"8080/tcp":{}}},"rootfs":{"type":"layers","diff_ids":["sha256:%s","sha256:%s"]},"history":[%s,%s]}' \
    "$epoch" "$path_env" "$bb_diff_id" "$ts_diff_id" "$(history_json 'busybox layer')" "$(history_json 'testserver layer')")" \
  busybox testserver
printf '%-15s sha256:%s  %s bytes (gzip)\n' "layer busybox" "$bb_digest" "$bb_size"
printf '%-15s sha256:%s  %s bytes (gzip)\n' "layer testsrv" "$ts_digest" "$ts_size"

cp "$ts/testserver" "$out/.testserver.tmp"
mv "$out/.testserver.tmp" "$out/testserver"
printf '%-15s %s bytes (static)\n' testserver "$(size "$out/testserver")"

# ---- the runtime bundle: busybox rootfs and runc's default spec running /bin/true
bundle="$out/bundle-busybox"
rm -rf "$bundle"
mkdir -p "$bundle/rootfs"
tar -xzf "$work/busybox.tar.gz" -C "$bundle/rootfs" --numeric-owner
runc spec --bundle "$bundle"
python3 - "$bundle/config.json" <<'EOF'
import json, sys
path = sys.argv[1]
with open(path) as f:
    spec = json.load(f)
spec["process"]["args"] = ["/bin/true"]
spec["process"]["terminal"] = False
with open(path, "w") as f:
    json.dump(spec, f, indent="\t")
    f.write("\n")
EOF
printf '%-15s %s (args ["/bin/true"], no terminal)\n' bundle-busybox/ "$bundle"

# ---- check the archives with independent tools, where installed
if command -v skopeo >/dev/null; then
  for name in busybox testserver; do
    skopeo inspect --raw "oci-archive:$out/$name.tar" >"$work/$name.raw"
    skopeo inspect "oci-archive:$out/$name.tar" >"$work/$name.inspect"
  done
  python3 - "$work" "$bb_digest" "$ts_digest" <<'EOF'
import json, sys
work, bb, ts = sys.argv[1:]
busybox = json.load(open(f"{work}/busybox.inspect"))
testserver = json.load(open(f"{work}/testserver.inspect"))
assert busybox["Layers"] == [f"sha256:{bb}"], busybox["Layers"]
assert testserver["Layers"] == [f"sha256:{bb}", f"sha256:{ts}"], testserver["Layers"]
assert busybox["Architecture"] == "amd64" and busybox["Os"] == "linux"
EOF
  echo "skopeo: both archives inspect, and they share the busybox layer"
fi
if command -v umoci >/dev/null; then
  for name in busybox testserver; do
    mkdir -p "$work/check-$name"
    tar -xf "$out/$name.tar" -C "$work/check-$name"
    umoci ls --layout "$work/check-$name" >"$work/$name.tags"
  done
  [ "$(cat "$work/busybox.tags")" = busybox:latest ] || { echo "build.sh: umoci ls busybox: $(cat "$work/busybox.tags")" >&2; exit 1; }
  [ "$(cat "$work/testserver.tags")" = berth-testserver:latest ] || { echo "build.sh: umoci ls testserver: $(cat "$work/testserver.tags")" >&2; exit 1; }
  echo "umoci: layouts list busybox:latest and berth-testserver:latest"
fi
