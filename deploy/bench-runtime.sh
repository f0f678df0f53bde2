#!/usr/bin/env bash
# Benchmarks container start-up: create + start + wait + delete of /bin/true in the busybox
# bundle (deploy/images/build.sh), with Berth's runtime, runc and crun, N times each, plus a
# bare `unshare --fork --pid --mount --uts --ipc --net --cgroup /bin/true` floor.
#
# usage: deploy/bench-runtime.sh [--runs N | --quick] [--bundle DIR]
#   --runs N      measured iterations per runtime (default 100)
#   --quick       10 iterations (CI smoke)
#   --debug       time the debug build (the one the tests build; for smoke runs, not figures)
#   --no-build    use target/PROFILE/berth-runtime as it is (deploy/test.sh builds it with the
#                 workspace's features beforehand; a build of one package would differ)
#   --bundle DIR  the OCI bundle (default deploy/images/out/bundle-busybox, built if missing)
#
# Method (one Python driver timing with time.perf_counter_ns, one process for all runtimes):
#   * interleaved: each iteration runs every runtime once, the order rotating each iteration,
#     so drift (other builds on the box) spreads evenly; 3 unmeasured warm-up rounds first;
#   * per runtime and iteration: `R --root ROOT create --bundle B --pid-file F ID`,
#     `R --root ROOT start ID`, wait, `R --root ROOT delete ID`, timed end to end (and by phase);
#   * wait: pidfd_open(the pid in F) and poll() until the kernel reports the process exited;
#     the driver is a child subreaper, so the orphaned container init is its child and is reaped
#     right after (no zombie for the host's init to collect). The same for every runtime;
#   * every command is spawned the same way (fork, a pre-exec hook, exec) with output to a file;
#     the hook enters, for crun only, a private mount namespace made once with `unshare -m` in
#     which an empty file is bind-mounted over /sys/fs/cgroup/unified/cgroup.controllers
#     (crun 1.8 refuses a hybrid cgroup host otherwise);
#   * each runtime gets its own --root under a temp dir; everything is deleted on exit.
# Needs root. Installs runc, crun and python3 with apt when missing; builds
# target/release/berth-runtime through cargo (a no-op when current).
set -euo pipefail
export LC_ALL=C NO_COLOR=1

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
runs=100
bundle=""
profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="${2:?--runs needs a number}"; shift 2 ;;
    --runs=*) runs="${1#--runs=}"; shift ;;
    --quick) runs=10; shift ;;
    --debug) profile=debug; shift ;;
    --no-build) build=no; shift ;;
    --bundle) bundle="${2:?--bundle needs a directory}"; shift 2 ;;
    --bundle=*) bundle="${1#--bundle=}"; shift ;;
    -h | --help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "bench-runtime.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$runs" in '' | *[!0-9]* | 0) echo "bench-runtime.sh: --runs wants a positive number" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "bench-runtime.sh: run as root" >&2; exit 1; }

need=()
command -v runc >/dev/null || need+=(runc)
command -v crun >/dev/null || need+=(crun)
command -v python3 >/dev/null || need+=(python3)
command -v unshare >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
py=/usr/bin/python3
[ -x "$py" ] || py="$(command -v python3)"

# Through cargo unless told not to, so the binary is never stale (a no-op when current).
if [ "${build:-yes}" = no ]; then
  :
elif [ "$profile" = debug ]; then
  (cd "$repo" && cargo build -q -p berth-runtime --bin berth-runtime)
else
  (cd "$repo" && cargo build -q --release -p berth-runtime --bin berth-runtime)
fi
berth="${CARGO_TARGET_DIR:-$repo/target}/$profile/berth-runtime"

work="$(mktemp -d /tmp/berth-bench.XXXXXX)"
holder=""
cleanup() {
  local rc=$? rt root ids id
  trap - EXIT INT TERM
  for rt in berth runc crun; do
    root="$work/root-$rt"
    [ -d "$root" ] || continue
    case "$rt" in
      berth) cmd=("$berth") ;;
      crun) cmd=(crun)
        # crun deletes its cgroups only where it was able to create them: in the namespace.
        if [ -n "$holder" ] && kill -0 "$holder" 2>/dev/null; then
          cmd=(nsenter "--mount=/proc/$holder/ns/mnt" crun)
        fi ;;
      *) cmd=("$rt") ;;
    esac
    ids="$("${cmd[@]}" --root "$root" list -q 2>/dev/null || true)"
    for id in $ids; do
      "${cmd[@]}" --root "$root" delete --force "$id" >/dev/null 2>&1 || true
    done
  done
  if [ -n "$holder" ]; then
    kill "$holder" 2>/dev/null || true
    wait "$holder" 2>/dev/null || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -z "$bundle" ]; then
  bundle="$here/images/out/bundle-busybox"
  if [ ! -f "$bundle/config.json" ]; then
    "$here/images/build.sh" --out "$work/images" >/dev/null
    bundle="$work/images/bundle-busybox"
  fi
fi
bundle="$(cd "$bundle" && pwd)"
[ -f "$bundle/config.json" ] || { echo "bench-runtime.sh: no config.json in $bundle" >&2; exit 1; }

# crun's private mount namespace, held open by a sleeping process for the whole run.
controllers=/sys/fs/cgroup/unified/cgroup.controllers
: >"$work/empty"
unshare -m --propagation private sh -c '
  if [ -e "$1" ]; then mount --bind "$2" "$1" || exit 1; fi
  : >"$3"
  exec sleep infinity' sh "$controllers" "$work/empty" "$work/crun-ns-ready" &
holder=$!
for _ in $(seq 200); do
  [ -e "$work/crun-ns-ready" ] && break
  kill -0 "$holder" 2>/dev/null || { echo "bench-runtime.sh: could not make crun's mount namespace" >&2; exit 1; }
  sleep 0.05
done
[ -e "$work/crun-ns-ready" ] || { echo "bench-runtime.sh: crun's mount namespace never came up" >&2; exit 1; }

echo "bundle  $bundle (args $("$py" -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))["process"]["args"]))' "$bundle/config.json"))"
echo "berth   $berth"
echo "runc    $(runc --version | head -1)"
echo "crun    $(crun --version | head -1)"
echo "kernel  $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "runs    $runs per runtime, interleaved (order rotating), after 3 warm-up rounds"
echo

"$py" - "$work" "$bundle" "$runs" "$berth" "/proc/$holder/ns/mnt" <<'EOF'
import ctypes, math, os, select, subprocess, sys, time

work, bundle, runs, berth, crun_ns = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_CHILD_SUBREAPER, CLONE_NEWNS = 36, 0x00020000
if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    sys.exit(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")
crun_ns_fd = os.open(crun_ns, os.O_RDONLY | os.O_CLOEXEC)

def enter(ns_fd):
    # Runs in the forked child before exec; every command goes through here, so each is
    # spawned the same way whether or not it changes namespace.
    def hook():
        if ns_fd is not None and libc.setns(ns_fd, CLONE_NEWNS) != 0:
            os.write(2, f"setns: {os.strerror(ctypes.get_errno())}\n".encode())
            os._exit(126)
    return hook

class Runtime:
    def __init__(self, name, argv0, ns_fd=None):
        self.name, self.argv0, self.hook = name, argv0, enter(ns_fd)
        self.root = os.path.join(work, f"root-{name}")
        os.makedirs(self.root, exist_ok=True)
        self.log = open(os.path.join(work, f"{name}.log"), "ab")
        self.samples = {k: [] for k in ("total", "create", "start", "wait", "delete")}

    def cmd(self, *args):
        argv = [self.argv0, "--root", self.root, *args]
        rc = subprocess.call(argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                             preexec_fn=self.hook, close_fds=True)
        if rc != 0:
            self.log.flush()
            tail = open(self.log.name, "rb").read()[-2000:].decode(errors="replace")
            raise RuntimeError(f"{self.name}: {' '.join(argv)} exited {rc}\n{tail}")

    def once(self, i, record):
        cid, pidfile = f"bench-{i}", os.path.join(work, f"{self.name}-{i}.pid")
        t0 = time.perf_counter_ns()
        try:
            self.cmd("create", "--bundle", bundle, "--pid-file", pidfile, cid)
            t1 = time.perf_counter_ns()
            pid = int(open(pidfile).read().strip())
            pidfd = os.pidfd_open(pid)
            self.cmd("start", cid)
            t2 = time.perf_counter_ns()
            p = select.poll()
            p.register(pidfd, select.POLLIN)
            if not p.poll(10_000):
                raise RuntimeError(f"{self.name}: container {cid} (pid {pid}) still running after 10s")
            t3 = time.perf_counter_ns()
            os.close(pidfd)
            reap(pid)
            self.cmd("delete", cid)
            t4 = time.perf_counter_ns()
        except BaseException:
            try:
                self.cmd("delete", "--force", cid)
            except Exception:
                pass
            raise
        finally:
            if os.path.exists(pidfile):
                os.unlink(pidfile)
        if record:
            for k, v in (("total", t4 - t0), ("create", t1 - t0), ("start", t2 - t1),
                         ("wait", t3 - t2), ("delete", t4 - t3)):
                self.samples[k].append(v)

def reap(pid):
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass  # not reparented to us (an intermediate process still holds it): it reaps it

class Floor(Runtime):
    def once(self, i, record):
        t0 = time.perf_counter_ns()
        rc = subprocess.call(["unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--net",
                              "--cgroup", "/bin/true"], stdin=subprocess.DEVNULL,
                             stdout=self.log, stderr=self.log, preexec_fn=self.hook, close_fds=True)
        t1 = time.perf_counter_ns()
        if rc != 0:
            raise RuntimeError(f"unshare floor exited {rc}")
        if record:
            self.samples["total"].append(t1 - t0)

class Spawn(Runtime):
    """The driver's own cost of spawning and waiting for one command, for reference."""
    def once(self, i, record):
        t0 = time.perf_counter_ns()
        subprocess.call(["/bin/true"], stdin=subprocess.DEVNULL, stdout=self.log,
                        stderr=self.log, preexec_fn=self.hook, close_fds=True)
        t1 = time.perf_counter_ns()
        if record:
            self.samples["total"].append(t1 - t0)

runtimes = [Runtime("berth", berth), Runtime("runc", "runc"), Runtime("crun", "crun", crun_ns_fd)]
extras = [Floor("unshare", "unshare"), Spawn("spawn", "/bin/true")]
everyone = runtimes + extras
try:
    for w in range(3):
        for r in everyone:
            r.once(f"warm-{w}", False)
    for i in range(runs):
        k = i % len(everyone)
        for r in everyone[k:] + everyone[:k]:
            r.once(i, True)
except KeyboardInterrupt:
    sys.exit("interrupted")
except RuntimeError as e:
    sys.exit(f"bench-runtime.sh: {e}")

def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2

def p99(xs):
    s = sorted(xs)
    return s[max(0, math.ceil(0.99 * len(s)) - 1)]

ms = lambda ns: ns / 1e6
med = {r.name: median(r.samples["total"]) for r in everyone}
names = {"berth": "berth-runtime", "runc": "runc", "crun": "crun",
         "unshare": "unshare floor", "spawn": "spawn /bin/true"}
print(f"{'runtime':<16} {'median ms':>10} {'p99 ms':>8} {'vs crun':>8} {'vs runc':>8}"
      f"   {'create':>7} {'start':>7} {'wait':>7} {'delete':>7}  (phase medians, ms)")
for r in everyone:
    t = r.samples["total"]
    line = (f"{names[r.name]:<16} {ms(med[r.name]):>10.2f} {ms(p99(t)):>8.2f}"
            f" {med[r.name] / med['crun']:>7.2f}x {med[r.name] / med['runc']:>7.2f}x")
    if r in runtimes:
        line += "   " + " ".join(f"{ms(median(r.samples[k])):>7.2f}"
                                 for k in ("create", "start", "wait", "delete"))
    print(line)
print()
print("total = create + start + wait + delete, each a separate command (3 spawns);"
      " the floor is one spawn of unshare; 'spawn /bin/true' is the driver's cost of one spawn")
EOF
