#!/usr/bin/env bash
# Checks the test images: builds them into deploy/images/out and once more elsewhere (the two
# builds must be byte-identical), then runs the test server on a free loopback port and checks
# its endpoints and flags with curl. Run as root.
#
# usage: deploy/images/test.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/out"
tmp="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

echo "== building twice"
"$here/build.sh" | tee "$tmp/build1.log"
"$here/build.sh" --out "$tmp/again" >"$tmp/build2.log"
for f in busybox.tar testserver.tar testserver; do
  cmp -s "$out/$f" "$tmp/again/$f" || fail "$f differs between two builds"
done
[ "$(grep -o 'sha256:[0-9a-f]*' "$tmp/build1.log")" = "$(grep -o 'sha256:[0-9a-f]*' "$tmp/build2.log")" ] ||
  fail "digests differ between two builds"
ok "two builds give identical archives and digests"
[ -x "$out/bundle-busybox/rootfs/bin/true" ] || [ -L "$out/bundle-busybox/rootfs/bin/true" ] ||
  fail "bundle rootfs has no /bin/true"
python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["process"]; assert p["args"]==["/bin/true"] and p["terminal"] is False' \
  "$out/bundle-busybox/config.json" || fail "bundle config.json"
ok "bundle-busybox has a rootfs and runs /bin/true"

ts="$out/testserver"

# start NAME ARGS...: runs the test server in the background; sets pid.
start() {
  local name=$1
  shift
  "$ts" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  pid=$!
  pids+=("$pid")
}

# wait_line FILE PATTERN: waits up to 10s for a line matching PATTERN in FILE.
wait_line() {
  for _ in $(seq 100); do
    grep -q -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  fail "no line matching '$2' in $1: $(cat "$1")"
}

# serve NAME ARGS...: starts the server on 127.0.0.1:0 and sets url from its first line.
serve() {
  local name=$1
  shift
  start "$name" --listen 127.0.0.1:0 "$@"
  wait_line "$tmp/$name.out" 'listening on'
  url="http://$(sed -n 's/^testserver: listening on //p' "$tmp/$name.out")"
}

# expect_exit CODE: waits for the server started last and checks its exit code.
expect_exit() {
  local rc=0
  wait "$pid" || rc=$?
  [ "$rc" = "$1" ] || fail "exit code $rc, want $1"
}

# status PATH: the HTTP status code of GET PATH.
status() { curl -s -o /dev/null -w '%{http_code}' "$url$1"; }

echo "== endpoints"
TESTSERVER_MARK=here-i-am serve main
body=$(curl -fsS "$url/")
[[ "$body" =~ ^hostname=$(hostname)\ ip=[0-9.]+\ path=/$ ]] || fail "GET / said: $body"
ok "GET / -> $body"
[ "$(status /some/where)" = 404 ] || fail "unknown path is not 404"
[ "$(curl -fsS "$url/healthz")" = ok ] || fail "healthz is not ok"
ok "GET /healthz -> 200 ok"
curl -fsS "$url/env" | grep -qx 'TESTSERVER_MARK=here-i-am' || fail "GET /env lacks the environment"
ok "GET /env shows the environment"
# Two requests over one kept-alive connection.
[ "$(curl -fsS "$url/healthz" "$url/healthz")" = okok ] || fail "keep-alive"
ok "keep-alive"
[ "$(curl -fsS "$url/exit?code=3")" = "exiting with code 3" ] || fail "GET /exit answer"
expect_exit 3
ok "GET /exit?code=3 -> exit code 3"

echo "== flags"
serve unhealthy --fail-health
[ "$(status /healthz)" = 500 ] || fail "--fail-health: healthz is not 500"
kill -TERM "$pid"
expect_exit 0
ok "--fail-health -> 500; SIGTERM -> exit 0"

start code --print one --print two --exit-code 7
expect_exit 7
[ "$(cat "$tmp/code.err")" = "$(printf 'one\ntwo')" ] || fail "--print on stderr: $(cat "$tmp/code.err")"
[ "$(head -2 "$tmp/code.out")" = "$(printf 'one\ntwo')" ] || fail "--print on stdout: $(cat "$tmp/code.out")"
grep -q 'exiting with code 7' "$tmp/code.out" || fail "--exit-code prints no line"
ok "--print to both streams, --exit-code 7"

start crash --crash-after 1 --listen 127.0.0.1:0
SECONDS=0
expect_exit 1
[ "$SECONDS" -le 5 ] || fail "--crash-after 1 took ${SECONDS}s"
ok "--crash-after 1 -> exit 1"

serve alloc --alloc-mb 32
grep -q 'allocated 32 MiB' "$tmp/alloc.out" || fail "--alloc-mb prints no line"
rss_kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
[ "$rss_kb" -ge $((32 * 1024)) ] || fail "--alloc-mb 32: resident ${rss_kb} KiB"
[ "$(curl -fsS "$url/healthz")" = ok ] || fail "--alloc-mb: not serving"
kill -INT "$pid"
expect_exit 0
ok "--alloc-mb 32 -> ${rss_kb} KiB resident, still serving; SIGINT -> exit 0"

PORT=0 start port
wait_line "$tmp/port.out" 'listening on 0.0.0.0:'
kill -TERM "$pid"
expect_exit 0
ok "PORT picks the port on 0.0.0.0"

if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
  # As PID 1 of a PID namespace, signals without a handler are ignored: SIGTERM must still
  # end it, with status 0 (unshare --fork passes the child's status on).
  unshare --pid --fork --mount-proc "$ts" --sleep >"$tmp/pid1.out" 2>&1 &
  pid=$!
  pids+=("$pid")
  wait_line "$tmp/pid1.out" sleeping
  read -r inner _ <"/proc/$pid/task/$pid/children" || true
  [ -n "$inner" ] || fail "no child of unshare"
  grep -q 'NSpid:.*[[:space:]]1$' "/proc/$inner/status" || fail "testserver is not PID 1 in its namespace"
  kill -TERM "$inner"
  expect_exit 0
  ok "--sleep as PID 1 of a PID namespace; SIGTERM -> exit 0"
fi

echo "all test image checks passed"
