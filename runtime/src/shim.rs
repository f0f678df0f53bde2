//! The per-container monitor ("shim"), as containerd-shim and conmon are.
//!
//! The node agent is multi-threaded and may be killed at any moment, so it never clones a
//! container itself: it runs `berth runtime shim`, a single-threaded process that forks a
//! detached monitor and exits once the container is created. The monitor is the container
//! init's parent: it copies the container's stdout and stderr into the CRI log file, reaps
//! the init, and records how it ended (`exit.json`) for whoever asks later, so the agent can
//! die and come back without losing an exit code or a log line.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use serde::{Deserialize, Serialize};

use crate::cgroups::Cgroups;
use crate::container::{self, CreateOptions, Root, Rootfs, StartMode};
use crate::logs::{LogWriter, Stream};

/// How a container's init ended, written by its monitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exit {
    /// The exit code, or 128 + signal number when it was killed (137 for SIGKILL).
    pub code: i32,
    pub signal: Option<i32>,
    /// Kubernetes' reason: `Completed`, `Error` or `OOMKilled`.
    pub reason: String,
    /// RFC 3339 with nanoseconds.
    pub finished_at: String,
}

/// The file a monitor writes when the container exits.
pub fn exit_path(root: &Root, id: &str) -> PathBuf {
    root.container_dir(id).join("exit.json")
}

pub fn read_exit(root: &Root, id: &str) -> Option<Exit> {
    let bytes = fs::read(exit_path(root, id)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Where a monitor writes the container's output.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub path: PathBuf,
    pub max_size: u64,
    pub max_files: usize,
}

/// What the shim needs: the container to create and where its output goes.
#[derive(Debug)]
pub struct ShimArgs {
    pub root: Root,
    pub id: String,
    pub bundle: PathBuf,
    /// The root filesystem, when not the bundle's `root.path`.
    pub rootfs: Option<Rootfs>,
    pub log: Option<LogConfig>,
}

/// Run the shim: fork the monitor, relay its "created" report to stdout, exit. Called in a
/// fresh single-threaded process.
pub fn run(args: ShimArgs, cg: Box<dyn Cgroups>) -> std::process::ExitCode {
    let (report_r, report_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => (fs::File::from(p.0), p.1),
        Err(e) => {
            report(&mut std::io::stdout(), &format!("error pipe: {e}"));
            return std::process::ExitCode::FAILURE;
        }
    };
    // SAFETY: the shim is single-threaded (a fresh process that started no threads), so the
    // child may keep running ordinary code.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => {
            drop(report_w);
            // One line: the container's init may hold the pipe open until it execs.
            let mut msg = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(report_r), &mut msg);
            let msg = msg.trim_end().to_string();
            let msg = if msg.is_empty() {
                "error monitor exited without a report".to_string()
            } else {
                msg
            };
            report(&mut std::io::stdout(), &msg);
            if msg.starts_with("ok ") {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Ok(ForkResult::Child) => {
            drop(report_r);
            let _ = nix::unistd::setsid();
            let code = monitor(args, &*cg, fs::File::from(report_w));
            std::process::exit(code)
        }
        Err(e) => {
            report(&mut std::io::stdout(), &format!("error fork monitor: {e}"));
            std::process::ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stdout)]
fn report(out: &mut impl Write, msg: &str) {
    let _ = out.write_all(msg.as_bytes());
    let _ = out.flush();
}

fn monitor(args: ShimArgs, cg: &dyn Cgroups, mut report_w: fs::File) -> i32 {
    // Nothing may keep the caller's stdout pipe open but `report_w`.
    if let Ok(null) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
    }
    // SIGCHLD through a signalfd, so one poll waits for output and exit alike.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    let _ = mask.thread_block();
    let sigfd = match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
        Ok(s) => s,
        Err(e) => {
            let _ = report_w.write_all(format!("error signalfd: {e}\n").as_bytes());
            return 1;
        }
    };

    let pipes = (|| -> std::io::Result<(OwnedFd, OwnedFd, OwnedFd, OwnedFd, fs::File)> {
        let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let null = fs::File::open("/dev/null")?;
        Ok((out_r, out_w, err_r, err_w, null))
    })();
    let (out_r, out_w, err_r, err_w, null) = match pipes {
        Ok(p) => p,
        Err(e) => {
            let _ = report_w.write_all(format!("error pipes: {e}\n").as_bytes());
            return 1;
        }
    };
    let mut log = match &args.log {
        Some(l) => match LogWriter::open(&l.path, l.max_size, l.max_files) {
            Ok(w) => Some(w),
            Err(e) => {
                let _ = report_w.write_all(format!("error open log: {e}\n").as_bytes());
                return 1;
            }
        },
        None => None,
    };

    let spec = match container::load_spec(&args.bundle) {
        Ok(s) => s,
        Err(e) => {
            let _ = report_w.write_all(format!("error {e}\n").as_bytes());
            return 1;
        }
    };
    let created = container::create(CreateOptions {
        root: &args.root,
        id: &args.id,
        bundle: &args.bundle,
        spec,
        rootfs: args.rootfs.clone(),
        cgroups: cg,
        mode: StartMode::OnStart,
        stdio: Some([null.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()]),
        annotations: Default::default(),
    });
    drop((out_w, err_w, null));
    let created = match created {
        Ok(c) => c,
        Err(e) => {
            let _ = report_w.write_all(format!("error {e}\n").as_bytes());
            return 1;
        }
    };
    let pid = created.pid;
    let _ = report_w.write_all(format!("ok {pid}\n").as_bytes());
    drop(report_w);

    let mut exec_error: Option<Vec<u8>> = None;
    let mut sync = Some(created.sync);
    let mut streams = [(out_r, Stream::Stdout, true), (err_r, Stream::Stderr, true)];
    let mut status: Option<WaitStatus> = None;
    let mut buf = vec![0u8; 64 * 1024];
    let mut drain_deadline: Option<std::time::Instant> = None;
    loop {
        if status.is_none() {
            status = reap(pid);
            if status.is_some() {
                // The init is gone; whatever still holds the pipes gets one second.
                drain_deadline =
                    Some(std::time::Instant::now() + std::time::Duration::from_secs(1));
            }
        }
        let open: Vec<usize> = (0..streams.len()).filter(|i| streams[*i].2).collect();
        if status.is_some()
            && (open.is_empty() || drain_deadline.is_some_and(|d| std::time::Instant::now() > d))
        {
            break;
        }
        let mut fds: Vec<PollFd<'_>> = open
            .iter()
            .map(|i| PollFd::new(streams[*i].0.as_fd(), PollFlags::POLLIN))
            .collect();
        fds.push(PollFd::new(sigfd.as_fd(), PollFlags::POLLIN));
        if let Some(s) = &sync {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
        }
        let timeout = if status.is_some() { 100u16 } else { 5000u16 };
        let _ = poll(&mut fds, PollTimeout::from(timeout));
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| {
                f.revents()
                    .is_some_and(|r| !(r & (PollFlags::POLLIN | PollFlags::POLLHUP)).is_empty())
            })
            .collect();
        drop(fds);
        for (slot, i) in open.iter().enumerate() {
            if !ready[slot] {
                continue;
            }
            let (fd, stream, is_open) = &mut streams[*i];
            match nix::unistd::read(&*fd, &mut buf) {
                Ok(0) => {
                    *is_open = false;
                    if let Some(l) = log.as_mut() {
                        let _ = l.flush_partial(*stream);
                    }
                }
                Ok(n) => {
                    if let Some(l) = log.as_mut() {
                        let _ = l.write(*stream, &buf[..n]);
                    }
                }
                Err(nix::Error::EINTR) | Err(nix::Error::EAGAIN) => {}
                Err(_) => *is_open = false,
            }
        }
        if ready[open.len()] {
            while let Ok(Some(_)) = sigfd.read_signal() {}
        }
        if sync.is_some() && ready.get(open.len() + 1).copied().unwrap_or(false) {
            // EOF: the workload exec'd. `E...`: it could not; keep the message for the log.
            let mut msg = Vec::new();
            if let Some(mut s) = sync.take() {
                let _ = s.read_to_end(&mut msg);
            }
            if let Some(m) = msg.strip_prefix(b"E") {
                exec_error = Some(m.to_vec());
            }
        }
    }
    if let Some(l) = log.as_mut() {
        if let Some(msg) = &exec_error {
            let mut line = msg.clone();
            line.push(b'\n');
            let _ = l.write(Stream::Stderr, &line);
        }
        let _ = l.flush_partial(Stream::Stdout);
        let _ = l.flush_partial(Stream::Stderr);
    }

    let (code, signal) = match status {
        Some(WaitStatus::Exited(_, c)) => (c, None),
        Some(WaitStatus::Signaled(_, s, _)) => (128 + s as i32, Some(s as i32)),
        _ => (255, None),
    };
    let oom = cg
        .stats(&container::cgroup_path_of(&args.root, &args.id).unwrap_or_default())
        .map(|s| s.oom_kills > 0)
        .unwrap_or(false);
    let reason = if oom && signal == Some(libc::SIGKILL) {
        "OOMKilled"
    } else if code == 0 {
        "Completed"
    } else {
        "Error"
    };
    let exit = Exit {
        code,
        signal,
        reason: reason.into(),
        finished_at: container::now_rfc3339(),
    };
    let path = exit_path(&args.root, &args.id);
    let tmp = path.with_extension("json.tmp");
    if fs::write(&tmp, serde_json::to_vec(&exit).unwrap_or_default()).is_ok() {
        let _ = fs::rename(&tmp, &path);
    }
    0
}

fn reap(pid: i32) -> Option<WaitStatus> {
    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => Some(s),
        Ok(_) => None,
        // Not our child any more (should not happen): treat as gone.
        Err(nix::Error::ECHILD) => Some(WaitStatus::Exited(Pid::from_raw(pid), 255)),
        Err(_) => None,
    }
}

/// Where a shim's own diagnostics go.
pub fn shim_log_path(root: &Root, id: &str) -> PathBuf {
    root.dir.join(format!("{id}.shim.log"))
}

/// Parse a shim's report: `ok <pid>` or `error <message>`.
pub fn parse_report(report: &str) -> Result<i32, String> {
    match report.trim().split_once(' ') {
        Some(("ok", pid)) => pid
            .parse()
            .map_err(|_| format!("shim reported a bad pid {pid:?}")),
        Some(("error", msg)) => Err(msg.to_string()),
        _ => Err(format!("shim gave no report ({report:?})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_parse() {
        assert_eq!(parse_report("ok 42"), Ok(42));
        assert_eq!(
            parse_report("error exec foo: no such file"),
            Err("exec foo: no such file".into())
        );
        assert!(parse_report("").is_err());
    }
}
