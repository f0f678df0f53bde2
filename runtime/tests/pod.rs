//! Root tests of pods through the runtime's library face (`pod::Runtime`), with the test
//! images from `deploy/images/`. Each test runs in its own scratch root and cgroup parent
//! and removes everything it made, even when it fails.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use berth_runtime::container::ExecOptions;
use berth_runtime::pod::{ContainerConfig, ContainerState, SandboxConfig};
use support::TestRuntime;

fn sandbox(id: &str) -> SandboxConfig {
    SandboxConfig {
        id: id.into(),
        name: format!("{id}-name"),
        namespace: "default".into(),
        hostname: format!("host-{id}"),
        ..Default::default()
    }
}

fn busybox(name: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        name: name.into(),
        image: "busybox:latest".into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

/// Wait until the container has exited; its status then.
fn wait_exit(t: &TestRuntime, id: &str, limit: Duration) -> berth_runtime::pod::ContainerStatus {
    let deadline = Instant::now() + limit;
    loop {
        let s = t.rt.container_status(id).unwrap();
        if s.state == ContainerState::Exited && s.exit_code.is_some() && s.reason.is_some() {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} still {:?}",
            s.state
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_to_exit(
    t: &TestRuntime,
    pod: &str,
    cfg: ContainerConfig,
) -> (berth_runtime::pod::ContainerStatus, String) {
    let log = t.dir.path().join("logs").join(format!("{}.log", cfg.name));
    let cfg = ContainerConfig {
        log_path: Some(log.clone()),
        ..cfg
    };
    let id = t.rt.create_container(pod, &cfg).unwrap();
    t.rt.start_container(&id).unwrap();
    let status = wait_exit(t, &id, Duration::from_secs(20));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    (status, text)
}

fn exec(t: &TestRuntime, id: &str, args: &[&str]) -> (i32, String) {
    let out =
        t.rt.exec_command(
            id,
            &ExecOptions {
                args: args.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        )
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn exit_codes_and_logs_come_back() {
    let t = TestRuntime::new();
    t.import("busybox.tar");
    t.rt.run_sandbox(&sandbox("exit")).unwrap();
    let (s, log) = run_to_exit(
        &t,
        "exit",
        busybox("c", "echo to-out; echo to-err >&2; exit 7"),
    );
    assert_eq!(s.exit_code, Some(7));
    assert_eq!(s.reason.as_deref(), Some("Error"));
    assert!(log.contains(" stdout F to-out\n"), "{log}");
    assert!(log.contains(" stderr F to-err\n"), "{log}");
    let (s, _) = run_to_exit(&t, "exit", busybox("ok", "true"));
    assert_eq!(
        (s.exit_code, s.reason.as_deref()),
        (Some(0), Some("Completed"))
    );
}

#[test]
fn a_container_sees_pid_1_its_hostname_only_lo_and_no_host_mounts() {
    let t = TestRuntime::new();
    t.import("busybox.tar");
    t.rt.run_sandbox(&sandbox("iso")).unwrap();
    let (s, log) = run_to_exit(
        &t,
        "iso",
        busybox(
            "c",
            "echo pid=$$; echo host=$(hostname); cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' | sed 's/^/if=/'; cut -d' ' -f5 /proc/self/mountinfo | sed 's/^/mnt=/'",
        ),
    );
    assert_eq!(s.exit_code, Some(0), "{log}");
    assert!(log.contains("F pid=1\n"), "{log}");
    assert!(log.contains("F host=host-iso\n"), "{log}");
    let ifs: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("F if=").nth(1))
        .collect();
    assert_eq!(ifs, ["lo"], "{log}");
    let mounts: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("F mnt=").nth(1))
        .collect();
    assert!(mounts.contains(&"/"), "{log}");
    let host_dir = t.dir.path().to_string_lossy().to_string();
    for m in &mounts {
        assert!(
            !m.starts_with("/work") && !m.starts_with("/tmp/") && !m.contains(&host_dir),
            "host mount {m} visible in the container"
        );
    }
}

#[test]
fn writes_land_in_the_upperdir_and_leave_the_layers_untouched() {
    let t = TestRuntime::new();
    t.import("busybox.tar");
    t.rt.run_sandbox(&sandbox("cow")).unwrap();
    let (s, log) = run_to_exit(
        &t,
        "cow",
        busybox("w", "echo hello > /etc/written && rm /bin/ls && echo done"),
    );
    assert_eq!(s.exit_code, Some(0), "{log}");
    let upper = t.dir.path().join("containers").join(&s.id).join("upper");
    assert_eq!(
        std::fs::read_to_string(upper.join("etc/written")).unwrap(),
        "hello\n"
    );
    // The deletion is a whiteout in the upperdir.
    let wh = std::fs::symlink_metadata(upper.join("bin/ls")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &wh.file_type()
    ));
    let image = t.rt.images().get("busybox:latest").unwrap();
    for layer in t.rt.images().layer_dirs(&image).unwrap() {
        assert!(!layer.join("etc/written").exists());
        if layer.join("bin/busybox").exists() {
            assert!(
                std::fs::symlink_metadata(layer.join("bin/ls")).is_ok(),
                "layer lost bin/ls"
            );
        }
    }
    // A second container from the same image sees the pristine image.
    let (s, log) = run_to_exit(
        &t,
        "cow",
        busybox("r", "test ! -e /etc/written && test -e /bin/ls"),
    );
    assert_eq!(s.exit_code, Some(0), "{log}");
}

#[test]
fn members_share_localhost_ipc_shm_and_hostname() {
    let t = TestRuntime::new();
    t.import("testserver.tar");
    t.import("busybox.tar");
    t.rt.run_sandbox(&sandbox("share")).unwrap();
    let server = ContainerConfig {
        name: "server".into(),
        image: "berth-testserver:latest".into(),
        args: vec!["--listen".into(), "127.0.0.1:8080".into()],
        ..Default::default()
    };
    let sid = t.rt.create_container("share", &server).unwrap();
    t.rt.start_container(&sid).unwrap();
    let writer = busybox(
        "writer",
        "touch /dev/mqueue/berth-q && echo shared > /dev/shm/note && sleep 30",
    );
    let wid = t.rt.create_container("share", &writer).unwrap();
    t.rt.start_container(&wid).unwrap();
    let (s, log) = run_to_exit(
        &t,
        "share",
        busybox(
            "client",
            "for i in $(seq 100); do test -e /dev/shm/note && wget -qO- http://127.0.0.1:8080/ && break; sleep 0.1; done; echo; ls /dev/mqueue; cat /dev/shm/note; hostname",
        ),
    );
    assert_eq!(s.exit_code, Some(0), "{log}");
    assert!(log.contains("hostname=host-share"), "{log}");
    assert!(
        log.contains("F berth-q\n"),
        "no shared ipc namespace: {log}"
    );
    assert!(log.contains("F shared\n"), "no shared /dev/shm: {log}");
    assert!(log.contains("F host-share\n"), "{log}");
}

#[test]
fn a_memory_hog_is_oom_killed() {
    let t = TestRuntime::new();
    t.import("busybox.tar");
    t.rt.run_sandbox(&sandbox("oom")).unwrap();
    let cfg = ContainerConfig {
        memory_limit: Some(32 << 20),
        ..busybox("hog", "tail /dev/zero")
    };
    let (s, log) = run_to_exit(&t, "oom", cfg);
    assert_eq!(s.exit_code, Some(137), "{log}");
    assert_eq!(s.reason.as_deref(), Some("OOMKilled"));
}

#[test]
fn a_fork_bomb_stops_at_the_pids_limit() {
    let t = TestRuntime::new();
    t.import("busybox.tar");
    t.rt.run_sandbox(&sandbox("fork")).unwrap();
    let cfg = ContainerConfig {
        pids_limit: Some(20),
        ..busybox(
            "bomb",
            // ash exits when a fork fails: the bomb runs in an inner shell, the count (a glob
            // and a builtin: no fork) in the outer one.
            "sh -c 'i=0; while [ $i -lt 60 ]; do sleep 5 & i=$((i+1)); done' 2>/dev/null; set -- /proc/[0-9]*; echo procs=$#",
        )
    };
    let (s, log) = run_to_exit(&t, "fork", cfg);
    let procs: usize = log
        .lines()
        .find_map(|l| l.split("F procs=").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count: {log}"));
    assert!(procs <= 20, "{procs} processes over a limit of 20: {log}");
    assert!(procs >= 10, "{procs}: the loop did not fork: {log}");
    let _ = s;
}

#[test]
fn exec_runs_inside_the_container() {
    let t = TestRuntime::new();
    t.import("busybox.tar");
    t.rt.run_sandbox(&sandbox("exec")).unwrap();
    let id =
        t.rt.create_container("exec", &busybox("c", "echo marker > /tmp/m; sleep 60"))
            .unwrap();
    t.rt.start_container(&id).unwrap();
    let pid = t.rt.container_status(&id).unwrap().pid;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (code, out) = loop {
        let r = exec(&t, &id, &["sh", "-c", "cat /tmp/m && hostname && for n in net pid mnt; do readlink /proc/self/ns/$n; done && cat /proc/1/cmdline"]);
        if r.0 == 0 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "marker");
    assert_eq!(lines[1], "host-exec");
    for (i, ns) in ["net", "pid", "mnt"].iter().enumerate() {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_eq!(
            lines[2 + i],
            theirs.to_string_lossy(),
            "{ns} namespace differs"
        );
    }
    // sh execs its last command: the container's pid 1 is that sleep.
    assert!(lines[5].starts_with("sleep"), "pid 1 is {:?}", lines[5]);
    let (code, out) = exec(&t, &id, &["sh", "-c", "exit 5"]);
    assert_eq!(code, 5, "{out}");
    let (code, _) = exec(&t, &id, &["/no/such/program"]);
    assert_eq!(code, 127);
}

#[test]
fn stop_sends_sigterm_then_sigkill_after_the_grace_period() {
    let t = TestRuntime::new();
    t.import("busybox.tar");
    t.rt.run_sandbox(&sandbox("stop")).unwrap();
    let polite =
        t.rt.create_container(
            "stop",
            &busybox(
                "polite",
                "trap 'exit 0' TERM; while true; do sleep 0.1; done",
            ),
        )
        .unwrap();
    let stubborn =
        t.rt.create_container(
            "stop",
            &busybox("stubborn", "trap '' TERM; while true; do sleep 0.1; done"),
        )
        .unwrap();
    t.rt.start_container(&polite).unwrap();
    t.rt.start_container(&stubborn).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    t.rt.stop_container(&polite, Duration::from_secs(10))
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5));
    let s = t.rt.container_status(&polite).unwrap();
    assert_eq!(
        (s.exit_code, s.reason.as_deref()),
        (Some(0), Some("Completed"))
    );
    let t0 = Instant::now();
    t.rt.stop_container(&stubborn, Duration::from_secs(1))
        .unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(1));
    let s = t.rt.container_status(&stubborn).unwrap();
    assert_eq!(s.exit_code, Some(137));
}

#[test]
fn share_process_namespace_shows_pause_as_pid_1() {
    let t = TestRuntime::new();
    t.import("busybox.tar");
    let mut cfg = sandbox("spn");
    cfg.share_process_namespace = true;
    t.rt.run_sandbox(&cfg).unwrap();
    let (s, log) = run_to_exit(&t, "spn", busybox("c", "cat /proc/1/cmdline; echo"));
    assert_eq!(s.exit_code, Some(0), "{log}");
    assert!(log.contains("berth-pause"), "{log}");
}

#[test]
fn removing_a_pod_leaves_no_mount_cgroup_or_process() {
    let t = TestRuntime::new();
    t.import("busybox.tar");
    t.rt.run_sandbox(&sandbox("gone")).unwrap();
    let id =
        t.rt.create_container("gone", &busybox("c", "sleep 1000 # berth-leak-marker-gone"))
            .unwrap();
    t.rt.start_container(&id).unwrap();
    assert!(
        !support::mounts_under(t.dir.path()).is_empty(),
        "the pod's shm is mounted"
    );
    let pause = t.rt.sandbox("gone").unwrap().pid;
    t.rt.stop_sandbox("gone", Duration::from_secs(1)).unwrap();
    t.rt.remove_sandbox("gone").unwrap();
    assert_eq!(support::mounts_under(t.dir.path()), Vec::<String>::new());
    assert!(!t
        .rt
        .cgroups()
        .exists(&format!("{}/pod-gone", t.cgroup_parent)));
    assert!(support::processes_mentioning("berth-leak-marker-gone").is_empty());
    assert!(!Path::new(&format!("/proc/{pause}/ns/net")).exists());
    assert!(std::fs::read_dir(t.dir.path().join("containers"))
        .unwrap()
        .next()
        .is_none());
    assert!(std::fs::read_dir(t.dir.path().join("state"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let t = TestRuntime::new();
    t.import("busybox.tar");
    t.rt.run_sandbox(&sandbox("bad")).unwrap();
    let err =
        t.rt.create_container(
            "bad",
            &ContainerConfig {
                image: "nope:1".into(),
                ..busybox("c", "true")
            },
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
    let err =
        t.rt.create_container("nosuchpod", &busybox("c", "true"))
            .unwrap_err()
            .to_string();
    assert!(err.contains("nosuchpod"), "{err}");
    let bad_mount = ContainerConfig {
        mounts: vec![berth_runtime::pod::VolumeMount {
            host_path: "/no/such/dir".into(),
            container_path: "/data".into(),
            readonly: false,
        }],
        ..busybox("m", "true")
    };
    let err =
        t.rt.create_container("bad", &bad_mount)
            .unwrap_err()
            .to_string();
    assert!(err.contains("/no/such/dir"), "{err}");
    // Nothing half-made is left: only the pause container exists.
    let names: Vec<String> = std::fs::read_dir(t.dir.path().join("containers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["bad-pause"]);
    let err = t.rt.run_sandbox(&sandbox("bad")).unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
}

/// The driver the crash test kills: creates, starts, stops and removes pods in a loop.
/// Runs only when the crash test starts it.
#[test]
fn crash_driver_entry() {
    let Ok(spec) = std::env::var("BERTH_CRASH_DRIVER") else {
        return;
    };
    let (root, cgroup) = spec.split_once(',').unwrap();
    let rt = berth_runtime::pod::Runtime::open(support::config(Path::new(root), cgroup)).unwrap();
    for i in 0.. {
        let pod = format!("p{i}");
        rt.run_sandbox(&sandbox(&pod)).unwrap();
        let a = rt
            .create_container(&pod, &busybox("a", "sleep 1000 # berth-crash-marker"))
            .unwrap();
        rt.start_container(&a).unwrap();
        let b = rt
            .create_container(&pod, &busybox("b", "sleep 1000 # berth-crash-marker"))
            .unwrap();
        rt.start_container(&b).unwrap();
        rt.stop_sandbox(&pod, Duration::from_millis(100)).unwrap();
        rt.remove_sandbox(&pod).unwrap();
    }
}

#[test]
fn killing_the_driver_at_random_points_leaks_nothing() {
    use rand::Rng;
    let mut t = TestRuntime::new();
    t.import("busybox.tar");
    let root = t.dir.path().to_path_buf();
    let mut rng = rand::thread_rng();
    for round in 0..20 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_driver_entry", "--nocapture"])
            .env(
                "BERTH_CRASH_DRIVER",
                format!("{},{}", root.display(), t.cgroup_parent),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..600)));
        child.kill().unwrap();
        child.wait().unwrap();
        // The agent comes back: recover, then remove what it does not want (everything).
        t.reopen();
        for s in t.rt.list_sandboxes().unwrap() {
            t.rt.remove_sandbox(&s.id).unwrap();
        }
        // Shims that were mid-create finish on their own; give them a moment, then recover again.
        std::thread::sleep(Duration::from_millis(100));
        t.reopen();
        for s in t.rt.list_sandboxes().unwrap() {
            t.rt.remove_sandbox(&s.id).unwrap();
        }
        let wait = Instant::now() + Duration::from_secs(5);
        while !support::processes_mentioning("berth-crash-marker").is_empty()
            && Instant::now() < wait
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            support::mounts_under(&root),
            Vec::<String>::new(),
            "round {round}: mounts leaked"
        );
        assert_eq!(
            support::processes_mentioning("berth-crash-marker"),
            Vec::<i32>::new(),
            "round {round}: processes leaked"
        );
        let cg = t.rt.cgroups();
        let children = if cg.exists(&t.cgroup_parent) {
            cg.children(&t.cgroup_parent).unwrap()
        } else {
            vec![]
        };
        assert_eq!(
            children,
            Vec::<String>::new(),
            "round {round}: cgroups leaked"
        );
        assert_eq!(
            processes_in_cgroups_under(&t.cgroup_parent),
            Vec::<i32>::new(),
            "round {round}: processes (and the network namespaces they hold) leaked"
        );
        assert!(
            std::fs::read_dir(root.join("containers"))
                .unwrap()
                .next()
                .is_none(),
            "round {round}: container dirs leaked"
        );
        assert!(
            std::fs::read_dir(root.join("state"))
                .unwrap()
                .next()
                .is_none(),
            "round {round}: state leaked"
        );
    }
}

/// Processes in any cgroup under `parent`: a container's processes (and the network
/// namespace its pause holds) cannot outlive its cgroup unnoticed.
fn processes_in_cgroups_under(parent: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() {
            let cg = std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
            if cg.contains(&format!("/{parent}/")) {
                out.push(pid);
            }
        }
    }
    out
}

#[test]
fn exec_with_a_tty_gets_a_terminal_from_the_container() {
    use std::io::Write;
    let t = TestRuntime::new();
    t.import("busybox.tar");
    t.rt.run_sandbox(&sandbox("tty")).unwrap();
    let id =
        t.rt.create_container("tty", &busybox("c", "sleep 60"))
            .unwrap();
    t.rt.start_container(&id).unwrap();
    let mut child =
        t.rt.exec_command(
            &id,
            &ExecOptions {
                args: vec!["sh".into()],
                tty: true,
                ..Default::default()
            },
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"tty; test -t 0 && echo is-a-tty; exit 3\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("/dev/pts/0"), "{text}");
    assert!(text.contains("is-a-tty"), "{text}");
}

#[test]
fn host_users_false_maps_root_to_an_unprivileged_range() {
    let t = TestRuntime::new();
    t.import("busybox.tar");
    let mut cfg = sandbox("userns");
    cfg.user_namespace = true;
    t.rt.run_sandbox(&cfg).unwrap();
    let (s, log) = run_to_exit(
        &t,
        "userns",
        busybox(
            "c",
            "id -u; cat /proc/self/uid_map; echo x > /tmp/w && echo wrote",
        ),
    );
    assert_eq!(s.exit_code, Some(0), "{log}");
    assert!(log.contains("stdout F 0\n"), "{log}");
    let map: Vec<u64> = log
        .lines()
        .find_map(|l| {
            l.split("stdout F ")
                .nth(1)
                .filter(|r| r.split_whitespace().count() == 3)
        })
        .unwrap_or_else(|| panic!("no uid_map: {log}"))
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(map[0], 0);
    assert!(map[1] >= 65536, "root is mapped to host uid {}", map[1]);
    assert_eq!(map[2], 65536);
    assert!(log.contains("F wrote"), "{log}");
}

#[test]
fn image_gc_keeps_what_containers_use_and_removes_the_rest() {
    let t = TestRuntime::new();
    t.import("busybox.tar");
    t.import("testserver.tar");
    t.rt.run_sandbox(&sandbox("gc")).unwrap();
    let id =
        t.rt.create_container("gc", &busybox("c", "sleep 60"))
            .unwrap();
    let report = t.rt.gc_images().unwrap();
    assert_eq!(report.images_removed, 1, "{report:?}");
    assert!(t.rt.images().get("busybox:latest").is_ok());
    assert!(t.rt.images().get("berth-testserver:latest").is_err());
    // The busybox layer is shared with the removed image and still in use: it stays.
    let image = t.rt.images().get("busybox:latest").unwrap();
    for d in t.rt.images().layer_dirs(&image).unwrap() {
        assert!(d.join("bin/busybox").exists());
    }
    t.rt.remove_container(&id).unwrap();
    let report = t.rt.gc_images().unwrap();
    assert_eq!(report.images_removed, 1, "{report:?}");
    assert!(t.rt.images().list().unwrap().is_empty());
}
