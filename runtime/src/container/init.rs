//! The container's first process, between `clone` and `execve`.
//!
//! It runs in the cloned child of a single-threaded parent (the CLI or a shim), so plain Rust
//! is safe here. Every failure is written to the sync socket as `E<message>` and ends the
//! child; the parent turns it into an error naming the step.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use oci_spec::runtime::Spec;
use seccompiler::BpfProgram;

use super::mounts::{self, HostFacts, Rootfs};
use super::security;
use super::{Error, Result};

/// Everything the child needs, prepared by the parent before `clone`.
pub(crate) struct InitContext {
    pub spec: Spec,
    pub rootfs: Option<Rootfs>,
    pub facts: HostFacts,
    pub clone_flags: CloneFlags,
    /// Namespaces to join by path (not pid: the parent joins that before cloning; not
    /// user: see `join_user`).
    pub join: Vec<(CloneFlags, PathBuf)>,
    /// A user namespace to join, after the root filesystem is built: our mount namespace
    /// belongs to the host's user namespace, so mounting needs the host's privileges.
    pub join_user: Option<PathBuf>,
    /// Make a new user namespace, likewise after the root filesystem is built.
    pub new_userns: bool,
    pub new_cgroupns: bool,
    pub seccomp: Vec<BpfProgram>,
    /// Descriptors to become 0, 1, 2; `None` inherits the parent's.
    pub stdio: Option<[RawFd; 3]>,
    /// The exec fifo to wait on before exec (`create`), or none (`run`).
    pub fifo: Option<PathBuf>,
}

/// The child's body. Never returns.
pub(crate) fn run(ctx: &InitContext, sync: &mut UnixStream) -> ! {
    let code = match setup_and_exec(ctx, sync) {
        Ok(never) => match never {},
        Err(e) => {
            let msg = format!("E{e}");
            let _ = sync.write_all(msg.as_bytes());
            if matches!(e, Error::Exec { .. }) {
                127
            } else {
                1
            }
        }
    };
    // SAFETY: _exit ends the child without running the parent's atexit handlers or
    // flushing buffers it copied from the parent.
    unsafe { libc::_exit(code) }
}

pub(crate) enum Never {}

fn setup_and_exec(ctx: &InitContext, sync: &mut UnixStream) -> Result<Never> {
    // Die with the parent until it has seen us ready.
    set_pdeathsig(libc::SIGKILL)?;
    for (flag, path) in &ctx.join {
        let fd = open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| {
            Error::Sys {
                what: "open namespace".into(),
                path: path.clone(),
                source: e.into(),
            }
        })?;
        nix::sched::setns(&fd, *flag).map_err(|e| Error::Sys {
            what: "join namespace".into(),
            path: path.clone(),
            source: e.into(),
        })?;
    }
    let in_userns = ctx.clone_flags.contains(CloneFlags::CLONE_NEWUSER);
    if in_userns {
        become_root()?;
    }
    if ctx.clone_flags.contains(CloneFlags::CLONE_NEWNET) {
        // A new network namespace starts with `lo` down; every pod expects it up.
        loopback_up()?;
    }
    let own_uts = ctx.clone_flags.contains(CloneFlags::CLONE_NEWUTS);
    if own_uts {
        if let Some(h) = ctx.spec.hostname() {
            nix::unistd::sethostname(h).map_err(|e| Error::Process {
                what: format!("set hostname {h}"),
                source: e.into(),
            })?;
        }
        if let Some(d) = ctx.spec.domainname() {
            let c = CString::new(d.as_str())
                .map_err(|_| Error::Invalid("domainname has a NUL byte".into()))?;
            // SAFETY: setdomainname reads `len` bytes of the valid C string.
            if unsafe { libc::setdomainname(c.as_ptr(), d.len()) } != 0 {
                return Err(Error::Process {
                    what: format!("set domainname {d}"),
                    source: std::io::Error::last_os_error(),
                });
            }
        }
    }

    let process = ctx
        .spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Invalid("config has no process".into()))?;
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string()).map_err(|e| Error::Sys {
            what: "set oom_score_adj".into(),
            path: "/proc/self/oom_score_adj".into(),
            source: e,
        })?;
    }

    // Opened now: after pivot_root, /proc is the container's own and the path is gone.
    let user_ns_fd: Option<OwnedFd> = match &ctx.join_user {
        Some(path) => Some(
            open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| {
                Error::Sys {
                    what: "open user namespace".into(),
                    path: path.clone(),
                    source: e.into(),
                }
            })?,
        ),
        None => None,
    };
    // The fifo must be opened before pivot_root hides its path.
    let fifo_path_fd: Option<OwnedFd> = match &ctx.fifo {
        Some(p) => Some(
            open(p, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| Error::Sys {
                what: "open exec fifo".into(),
                path: p.clone(),
                source: e.into(),
            })?,
        ),
        None => None,
    };

    // The parent moves us into our cgroup meanwhile: on cgroup v1 the first move waits for
    // an RCU grace period (milliseconds), so the mounts that do not need it go on in
    // parallel, and we wait for "placed" only before our cgroup matters.
    let mut placed = false;
    let mut wait_placed = || -> Result<()> {
        if placed {
            return Ok(());
        }
        placed = true;
        let mut go = [0u8; 1];
        if sync.read(&mut go).map_err(|e| Error::Process {
            what: "wait for parent".into(),
            source: e,
        })? != 1
        {
            // The parent went away before placing us: nothing to do.
            // SAFETY: see `run`.
            unsafe { libc::_exit(1) }
        }
        if ctx.new_cgroupns {
            // After the parent put us in our cgroup, so that it becomes our cgroup root.
            nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).map_err(|e| Error::Process {
                what: "unshare cgroup namespace".into(),
                source: e.into(),
            })?;
        }
        Ok(())
    };
    if let Some(rootfs) = &ctx.rootfs {
        mounts::setup_rootfs(
            &ctx.spec,
            rootfs,
            &ctx.facts,
            ctx.new_cgroupns,
            in_userns,
            &mut wait_placed,
        )?;
    }
    wait_placed()?;
    if let Some(linux) = ctx.spec.linux() {
        for (key, value) in linux.sysctl().iter().flatten() {
            let path = Path::new("/proc/sys").join(key.replace('.', "/"));
            std::fs::write(&path, value).map_err(|e| Error::Sys {
                what: "set sysctl".into(),
                path,
                source: e,
            })?;
        }
    }
    security::set_rlimits(process.rlimits().as_deref().unwrap_or_default())?;
    if let Some(fd) = &user_ns_fd {
        nix::sched::setns(fd, CloneFlags::CLONE_NEWUSER).map_err(|e| Error::Process {
            what: "join the pod's user namespace".into(),
            source: e.into(),
        })?;
        become_root()?;
    }
    if ctx.new_userns {
        // Last, after everything that needs the host's privileges (mounts, sysctls): our
        // other namespaces stay owned by the host's user namespace, and the workload's root
        // is an unprivileged uid on the host.
        nix::sched::unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| Error::Process {
            what: "unshare user namespace".into(),
            source: e.into(),
        })?;
        let mut m = [0u8; 1];
        sync.write_all(b"U")
            .and_then(|()| sync.read_exact(&mut m))
            .map_err(|e| Error::Process {
                what: "wait for id maps".into(),
                source: e,
            })?;
        become_root()?;
    }

    if let Some([i, o, e]) = ctx.stdio {
        for (from, to) in [(i, 0), (o, 1), (e, 2)] {
            if from != to {
                // SAFETY: dup2 onto the standard descriptors; `from` is open in this process.
                if unsafe { libc::dup2(from, to) } < 0 {
                    return Err(Error::Process {
                        what: format!("dup2 {from} to {to}"),
                        source: std::io::Error::last_os_error(),
                    });
                }
            }
        }
    }

    // Ready: from here the parent may leave, so stop dying with it.
    set_pdeathsig(0)?;
    sync.write_all(b"R").map_err(|e| Error::Process {
        what: "report ready".into(),
        source: e,
    })?;

    if let Some(fd) = fifo_path_fd {
        // Blocks until `start` opens the fifo for reading.
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let w = open(
            path.as_str(),
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::Sys {
            what: "wait on exec fifo (is /proc mounted?)".into(),
            path: PathBuf::from(&path),
            source: e.into(),
        })?;
        let mut w = std::fs::File::from(w);
        let _ = w.write_all(b"0");
        drop(w);
        drop(fd);
    }

    exec_process(ctx.spec.process().as_ref(), &ctx.seccomp)
}

/// Switch user and capabilities, install seccomp and exec `process.args`. Shared with
/// `exec` into a running container.
pub(crate) fn exec_process(
    process: Option<&oci_spec::runtime::Process>,
    seccomp: &[BpfProgram],
) -> Result<Never> {
    let process = process.ok_or_else(|| Error::Invalid("config has no process".into()))?;
    let args = process.args().as_deref().unwrap_or_default();
    let env: Vec<CString> = process
        .env()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| CString::new(e.as_str()).ok())
        .collect();
    let program = args
        .first()
        .ok_or_else(|| Error::Invalid("process.args is empty".into()))?;
    let nnp = process.no_new_privileges().unwrap_or(false);
    if nnp {
        security::set_no_new_privs()?;
    } else {
        // Without no_new_privs the filter needs CAP_SYS_ADMIN: install it while we have it.
        security::apply_seccomp(seccomp)?;
    }
    security::finalize_user_and_caps(process)?;
    let cwd = process.cwd();
    nix::unistd::chdir(cwd).map_err(|e| Error::Sys {
        what: "chdir".into(),
        path: cwd.clone(),
        source: e.into(),
    })?;
    let path_var = process
        .env()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .to_string();
    let resolved = resolve_program(program, &path_var).ok_or_else(|| Error::Exec {
        program: program.clone(),
        source: std::io::Error::from_raw_os_error(libc::ENOENT),
    })?;
    let argv: Vec<CString> = args
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()
        .map_err(|_| Error::Invalid("process.args has a NUL byte".into()))?;
    let path_c = mounts::cpath(&resolved)?;
    // Nothing the runtime held open may leak into the workload.
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on our descriptors.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if nnp {
        // Last, so nothing between here and execve is filtered.
        security::apply_seccomp(seccomp)?;
    }
    let err = nix::unistd::execve(&path_c, &argv, &env).unwrap_err();
    Err(Error::Exec {
        program: program.clone(),
        source: err.into(),
    })
}

fn resolve_program(program: &str, path_var: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok() && p.is_file())
}

/// Bring `lo` up in our network namespace.
fn loopback_up() -> Result<()> {
    let err = |what: &str| Error::Process {
        what: what.into(),
        source: std::io::Error::last_os_error(),
    };
    // SAFETY: a plain socket used only for the interface ioctls below; closed at the end.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(err("socket for lo"));
    }
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    let result = unsafe {
        if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) < 0 {
            Err(err("get lo flags"))
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) < 0 {
                Err(err("bring lo up"))
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: closing the socket we opened.
    unsafe { libc::close(sock) };
    result
}

/// uid and gid 0 inside a user namespace we just entered.
pub(crate) fn become_root() -> Result<()> {
    let root_uid = nix::unistd::Uid::from_raw(0);
    let root_gid = nix::unistd::Gid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid).map_err(|e| Error::Process {
        what: "become root in the user namespace (gid)".into(),
        source: e.into(),
    })?;
    nix::unistd::setresuid(root_uid, root_uid, root_uid).map_err(|e| Error::Process {
        what: "become root in the user namespace (uid)".into(),
        source: e.into(),
    })
}

fn set_pdeathsig(sig: libc::c_int) -> Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(Error::Process {
            what: "set parent death signal".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Wrap a raw descriptor the child inherited.
///
/// # Safety
/// `fd` must be open and owned by nobody else in this process.
pub(crate) unsafe fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: guaranteed by the caller.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
