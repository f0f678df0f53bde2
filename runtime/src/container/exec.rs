//! `exec`: a new process inside a running container, in all its namespaces and its cgroup,
//! with its capabilities, seccomp profile and user (unless overridden).

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::{init, security, Error, Result, Root, Status};
use crate::cgroups::Cgroups;

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub args: Vec<String>,
    /// Added to (and overriding) the container's environment.
    pub env: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// `(uid, gid)`; the container's user when `None`.
    pub user: Option<(u32, u32)>,
    /// Give the process a new pseudo-terminal (from the container's own devpts) and relay
    /// it to our stdin and stdout, or hand its master to `console_socket`.
    pub tty: bool,
    /// A unix socket to send the terminal's master to (SCM_RIGHTS), as runc's
    /// `--console-socket`: the receiver relays and resizes; we only wait.
    pub console_socket: Option<PathBuf>,
}

/// A terminal pair from the container's devpts, so `tty` inside names a device it can see;
/// the host's when the container has none.
fn container_pty(pid: i32) -> Result<(OwnedFd, OwnedFd)> {
    let ptmx = format!("/proc/{pid}/root/dev/ptmx");
    let from_container = (|| -> std::io::Result<(OwnedFd, OwnedFd)> {
        let master: OwnedFd = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(&ptmx)?
            .into();
        let unlock: libc::c_int = 0;
        // SAFETY: TIOCSPTLCK reads an int; TIOCGPTPEER returns a new descriptor for the
        // slave of the master we own.
        let slave = unsafe {
            if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::ioctl(
                master.as_raw_fd(),
                libc::TIOCGPTPEER,
                libc::O_RDWR | libc::O_NOCTTY,
            )
        };
        if slave < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the ioctl returned a fresh descriptor we now own.
        Ok((master, unsafe { OwnedFd::from_raw_fd(slave) }))
    })();
    match from_container {
        Ok(pair) => Ok(pair),
        Err(_) => {
            let p = nix::pty::openpty(None, None).map_err(|e| Error::Process {
                what: "open a pseudo-terminal".into(),
                source: e.into(),
            })?;
            Ok((p.master, p.slave))
        }
    }
}

/// Send `fd` over the unix socket at `path`.
fn send_fd(path: &std::path::Path, fd: &OwnedFd) -> Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let sock = std::os::unix::net::UnixStream::connect(path).map_err(|e| Error::Sys {
        what: "connect console socket".into(),
        path: path.to_path_buf(),
        source: e,
    })?;
    let fds = [fd.as_raw_fd()];
    let name = b"berth-exec-tty";
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[std::io::IoSlice::new(name)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| Error::Sys {
        what: "send terminal to console socket".into(),
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    Ok(())
}

const NAMESPACES: [(&str, CloneFlags); 6] = [
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

fn same_ns(pid: i32, name: &str) -> bool {
    let theirs = fs::metadata(format!("/proc/{pid}/ns/{name}")).map(|m| m.ino());
    let ours = fs::metadata(format!("/proc/self/ns/{name}")).map(|m| m.ino());
    matches!((theirs, ours), (Ok(a), Ok(b)) if a == b)
}

/// Run `opts.args` in container `id` and wait for it; returns its exit code (128 + signal
/// when killed). Must run in a single-threaded process: it joins the container's pid
/// namespace and forks.
pub fn exec(root: &Root, id: &str, opts: &ExecOptions, cg: &dyn Cgroups) -> Result<i32> {
    if opts.args.is_empty() {
        return Err(Error::Invalid("exec needs a command".into()));
    }
    let rec = root.load(id)?;
    let status = root.status(&rec);
    if status != Status::Running {
        return Err(Error::WrongState {
            id: id.into(),
            status,
            wanted: "exec needs a running container",
        });
    }
    let pid = rec.init.pid;
    let spec = super::load_spec(&rec.bundle)?;
    let mut process = spec
        .process()
        .clone()
        .ok_or_else(|| Error::Invalid("config has no process".into()))?;
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    for e in &opts.env {
        let key = e.split('=').next().unwrap_or_default();
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    process.set_args(Some(opts.args.clone()));
    process.set_env(Some(env));
    process.set_terminal(Some(opts.tty));
    if let Some(cwd) = &opts.cwd {
        process.set_cwd(cwd.clone());
    }
    if let Some((uid, gid)) = opts.user {
        let mut user = process.user().clone();
        user.set_uid(uid);
        user.set_gid(gid);
        user.set_additional_gids(None);
        process.set_user(user);
    }
    let seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(p) => security::compile_seccomp(p)?,
        None => Vec::new(),
    };

    // Open every namespace first: once we are in the pid namespace, /proc/<pid> still
    // resolves through our (host) /proc, but nothing else will change under us.
    let user_ns = if same_ns(pid, "user") {
        None
    } else {
        Some(open_ns(pid, "user")?)
    };
    let mut joins: Vec<(OwnedFd, CloneFlags)> = Vec::new();
    for (name, flag) in NAMESPACES {
        if !same_ns(pid, name) {
            joins.push((open_ns(pid, name)?, flag));
        }
    }
    if let Some(i) = joins
        .iter()
        .position(|(_, f)| *f == CloneFlags::CLONE_NEWPID)
    {
        let (fd, flag) = joins.remove(i);
        nix::sched::setns(&fd, flag).map_err(|e| Error::Process {
            what: format!("join pid namespace of container {id}"),
            source: e.into(),
        })?;
    }

    let pty = if opts.tty {
        Some(container_pty(pid)?)
    } else {
        None
    };
    let (go_r, go_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::Process {
            what: "pipe".into(),
            source: e.into(),
        })?;

    // SAFETY: single-threaded by this function's contract.
    match unsafe { fork() }.map_err(|e| Error::Process {
        what: "fork exec process".into(),
        source: e.into(),
    })? {
        ForkResult::Child => {
            drop(go_w);
            let code = match child(
                go_r,
                user_ns,
                joins,
                pty.as_ref().map(|p| p.1.as_raw_fd()),
                &process,
                &seccomp,
            ) {
                Ok(never) => match never {},
                Err(e) => {
                    let _ = writeln!(std::io::stderr(), "berth exec: {e}");
                    if matches!(e, Error::Exec { .. }) {
                        127
                    } else {
                        126
                    }
                }
            };
            // SAFETY: leave without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(go_r);
            let placed = cg.add_process(&rec.cgroup, child.as_raw());
            if let Err(e) = placed {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                let _ = waitpid(child, None);
                return Err(e.into());
            }
            let mut go = fs::File::from(go_w);
            let _ = go.write_all(b"G");
            drop(go);
            let mut reaped = None;
            if let Some((master, slave)) = pty {
                drop(slave);
                match &opts.console_socket {
                    Some(path) => {
                        if let Err(e) = send_fd(path, &master) {
                            let _ =
                                nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                            let _ = waitpid(child, None);
                            return Err(e);
                        }
                    }
                    None => reaped = relay(master, child),
                }
            }
            loop {
                match reaped
                    .take()
                    .map(Ok)
                    .unwrap_or_else(|| waitpid(child, None))
                {
                    Ok(WaitStatus::Exited(_, c)) => return Ok(c),
                    Ok(WaitStatus::Signaled(_, s, _)) => return Ok(128 + s as i32),
                    Ok(_) | Err(nix::Error::EINTR) => continue,
                    Err(e) => {
                        return Err(Error::Process {
                            what: "wait for exec process".into(),
                            source: e.into(),
                        })
                    }
                }
            }
        }
    }
}

fn open_ns(pid: i32, name: &str) -> Result<OwnedFd> {
    let path = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
    fs::File::open(&path)
        .map(OwnedFd::from)
        .map_err(|e| Error::Sys {
            what: "open namespace".into(),
            path,
            source: e,
        })
}

fn child(
    go: OwnedFd,
    user_ns: Option<OwnedFd>,
    joins: Vec<(OwnedFd, CloneFlags)>,
    tty: Option<i32>,
    process: &oci_spec::runtime::Process,
    seccomp: &[seccompiler::BpfProgram],
) -> Result<init::Never> {
    let mut b = [0u8; 1];
    if fs::File::from(go).read(&mut b).unwrap_or(0) != 1 {
        return Err(Error::Invalid("exec parent went away".into()));
    }
    for (fd, flag) in &joins {
        nix::sched::setns(fd, *flag).map_err(|e| Error::Process {
            what: format!("join namespace {flag:?}"),
            source: e.into(),
        })?;
    }
    // The user namespace last: the others belong to the host's (see container init).
    if let Some(fd) = user_ns {
        nix::sched::setns(&fd, CloneFlags::CLONE_NEWUSER).map_err(|e| Error::Process {
            what: "join user namespace".into(),
            source: e.into(),
        })?;
        init::become_root()?;
    }
    if let Some(slave) = tty {
        nix::unistd::setsid().map_err(|e| Error::Process {
            what: "setsid".into(),
            source: e.into(),
        })?;
        // SAFETY: TIOCSCTTY on the slave we own makes it our controlling terminal.
        if unsafe { libc::ioctl(slave, libc::TIOCSCTTY, 0) } < 0 {
            return Err(Error::Process {
                what: "set controlling terminal".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        for to in 0..3 {
            // SAFETY: dup2 of an open descriptor onto a standard one.
            unsafe { libc::dup2(slave, to) };
        }
    }
    init::exec_process(Some(process), seccomp)
}

/// Copy our stdin to the terminal and the terminal to our stdout until the process exits;
/// returns its status if it was reaped here.
fn relay(master: OwnedFd, child: Pid) -> Option<WaitStatus> {
    let stdin = std::io::stdin();
    let mut stdin_open = true;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        if poll(&mut fds, PollTimeout::from(200u8)).is_err() {
            continue;
        }
        let m = fds[0].revents().unwrap_or(PollFlags::empty());
        let i = fds
            .get(1)
            .and_then(|f| f.revents())
            .unwrap_or(PollFlags::empty());
        drop(fds);
        if m.intersects(PollFlags::POLLIN | PollFlags::POLLHUP) {
            match nix::unistd::read(&master, &mut buf) {
                Ok(n) if n > 0 => {
                    let mut out = std::io::stdout();
                    let _ = out.write_all(&buf[..n]);
                    let _ = out.flush();
                }
                // EIO: the terminal's last user closed it.
                _ => return None,
            }
        }
        if i.intersects(PollFlags::POLLIN | PollFlags::POLLHUP) {
            match nix::unistd::read(&stdin, &mut buf) {
                Ok(n) if n > 0 => {
                    let _ = nix::unistd::write(&master, &buf[..n]);
                }
                _ => stdin_open = false,
            }
        }
        if let Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) =
            waitpid(child, Some(nix::sys::wait::WaitPidFlag::WNOHANG))
        {
            if let Ok(n) = nix::unistd::read(&master, &mut buf) {
                let _ = std::io::stdout().write_all(&buf[..n]);
                let _ = std::io::stdout().flush();
            }
            return Some(s);
        }
    }
}
