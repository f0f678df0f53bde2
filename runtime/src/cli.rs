//! `berth runtime`: runc's command line over Berth's runtime, so the same scripts drive runc,
//! crun and Berth on the same bundle.
//!
//! Runs single-threaded (no async runtime): `create` clones the container's init.

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use nix::sys::signal::Signal;

use crate::cgroups;
use crate::container::{self, CreateOptions, Root, StartMode};

#[derive(Parser, Debug)]
#[command(
    name = "berth runtime",
    about = "Berth's OCI runtime, with runc's verbs and flags"
)]
pub struct Cli {
    /// Directory for container state (runc: /run/runc).
    #[arg(long, default_value = "/run/berth-runtime", global = true)]
    pub root: PathBuf,
    /// Write the runtime's own log here instead of stderr.
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Log format (accepted for runc compatibility; Berth writes text).
    #[arg(long, default_value = "text", global = true)]
    pub log_format: String,
    /// Verbose logging.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Accepted for runc compatibility; Berth drives cgroupfs directly.
    #[arg(long, global = true, hide = true)]
    pub systemd_cgroup: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The bundle directory (holding config.json).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Write the container's init pid here.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// A socket to send the terminal's master to (not supported: use terminal=false).
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub no_pivot: bool,
    #[arg(long, hide = true)]
    pub no_new_keyring: bool,
    pub id: String,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a container that waits for `start`.
    Create(CreateArgs),
    /// Let a created container run its process.
    Start { id: String },
    /// Print the container's OCI state as JSON.
    State { id: String },
    /// Send a signal (default SIGTERM) to the container.
    Kill {
        /// Signal every process in the container.
        #[arg(short, long)]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Remove a stopped container (or any, with --force).
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Create and start a container, wait for it and remove it (or leave it with --detach).
    Run {
        #[command(flatten)]
        create: CreateArgs,
        #[arg(short, long)]
        detach: bool,
        /// Keep the container's state after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Run a new process in a running container and exit with its code.
    Exec {
        /// Allocate a pseudo-terminal.
        #[arg(short, long)]
        tty: bool,
        /// Set an environment variable (KEY=VALUE), repeatable.
        #[arg(short, long)]
        env: Vec<String>,
        /// Working directory inside the container.
        #[arg(long)]
        cwd: Option<PathBuf>,
        /// UID[:GID] to run as.
        #[arg(short, long)]
        user: Option<String>,
        /// With --tty: send the terminal's master here instead of relaying it.
        #[arg(long)]
        console_socket: Option<PathBuf>,
        id: String,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// (internal) Create a container under a monitor that outlives the caller; prints
    /// `ok PID` or `error MESSAGE`.
    #[command(hide = true)]
    Shim {
        #[arg(short, long)]
        bundle: PathBuf,
        /// A JSON file with the root filesystem (overlay layers) when not the bundle's.
        #[arg(long)]
        rootfs: Option<PathBuf>,
        /// CRI log file for the container's stdout and stderr.
        #[arg(long)]
        log_path: Option<PathBuf>,
        #[arg(long, default_value_t = 10 * 1024 * 1024)]
        log_max_size: u64,
        #[arg(long, default_value_t = 5)]
        log_max_files: usize,
        id: String,
    },
    /// List containers.
    List {
        #[arg(short, long, default_value = "table")]
        format: String,
        #[arg(short, long)]
        quiet: bool,
    },
}

/// Parse `UID[:GID]` (numeric).
fn parse_user(s: &str) -> anyhow::Result<(u32, u32)> {
    let (u, g) = s.split_once(':').unwrap_or((s, s));
    let uid = u
        .parse()
        .with_context(|| format!("--user {s}: uid must be numeric"))?;
    let gid = g
        .parse()
        .with_context(|| format!("--user {s}: gid must be numeric"))?;
    Ok((uid, gid))
}

/// Parse `KILL`, `SIGKILL` or `9`.
pub fn parse_signal(s: &str) -> anyhow::Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).with_context(|| format!("unknown signal {s}"));
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    Signal::from_str(&name).with_context(|| format!("unknown signal {s}"))
}

/// Entry point: `args` without the program name's `runtime` word.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let cli = Cli::parse_from(args);
    init_tracing(&cli);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each once: our error types already end their message with
/// their source's, so a cause the previous message ends with is not repeated.
pub fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if out.ends_with(&msg) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&msg);
    }
    out
}

fn init_tracing(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| if cli.debug { "debug" } else { "warn" }.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let file = cli.log.as_ref().and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    let result = match file {
        Some(f) => builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
            .try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
    let _ = result;
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let root = Root::new(&cli.root)?;
    let cg = || cgroups::detect().context("cgroups");
    match cli.command {
        Command::Create(args) => {
            create(&root, &args, StartMode::OnStart, &*cg()?)?;
        }
        Command::Start { id } => container::start(&root, &id)?,
        Command::State { id } => {
            let state = root.state(&id)?;
            print_json(&serde_json::to_string_pretty(&state)?);
        }
        Command::Kill { all, id, signal } => {
            container::kill(&root, &id, parse_signal(&signal)?, all, &*cg()?)?
        }
        Command::Delete { force, id } => match container::delete(&root, &id, force, &*cg()?) {
            Err(container::Error::NotFound(_)) if force => {}
            other => other?,
        },
        Command::Run {
            create: args,
            detach,
            keep,
        } => {
            let cg = cg()?;
            let created = create(&root, &args, StartMode::Now, &*cg)?;
            let pid = created.pid;
            if detach {
                created.wait_exec()?;
                return Ok(ExitCode::SUCCESS);
            }
            forward_signals(pid);
            let exec = created.wait_exec();
            let status = wait_child(pid);
            if !keep {
                container::delete(&root, &args.id, true, &*cg)?;
            }
            exec?;
            return Ok(ExitCode::from(status?));
        }
        Command::List { format, quiet } => list(&root, &format, quiet)?,
        Command::Exec {
            tty,
            env,
            cwd,
            user,
            console_socket,
            id,
            command,
        } => {
            let user = user.map(|u| parse_user(&u)).transpose()?;
            let opts = container::ExecOptions {
                args: command,
                env,
                cwd,
                user,
                tty,
                console_socket,
            };
            let code = container::exec(&root, &id, &opts, &*cg()?)?;
            return Ok(ExitCode::from(code.clamp(0, 255) as u8));
        }
        Command::Shim {
            bundle,
            rootfs,
            log_path,
            log_max_size,
            log_max_files,
            id,
        } => {
            let rootfs = match rootfs {
                Some(p) => Some(
                    serde_json::from_slice(
                        &std::fs::read(&p).with_context(|| format!("read {}", p.display()))?,
                    )
                    .with_context(|| format!("parse {}", p.display()))?,
                ),
                None => None,
            };
            let args = crate::shim::ShimArgs {
                root,
                id,
                bundle,
                rootfs,
                log: log_path.map(|path| crate::shim::LogConfig {
                    path,
                    max_size: log_max_size,
                    max_files: log_max_files,
                }),
            };
            return Ok(crate::shim::run(args, cg()?));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn create(
    root: &Root,
    args: &CreateArgs,
    mode: StartMode,
    cg: &dyn cgroups::Cgroups,
) -> anyhow::Result<container::Created> {
    if args.console_socket.is_some() {
        bail!("--console-socket is not supported yet: set process.terminal to false");
    }
    let spec = container::load_spec(&args.bundle)?;
    let created = container::create(CreateOptions {
        root,
        id: &args.id,
        bundle: &args.bundle,
        spec,
        rootfs: None,
        cgroups: cg,
        mode,
        stdio: None,
        annotations: Default::default(),
    })?;
    if let Some(p) = &args.pid_file {
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, created.pid.to_string())
            .with_context(|| format!("write pid file {}", tmp.display()))?;
        std::fs::rename(&tmp, p).with_context(|| format!("write pid file {}", p.display()))?;
    }
    Ok(created)
}

/// The exit code the shell convention gives: the status, or 128 + the signal.
fn wait_child(pid: i32) -> anyhow::Result<u8> {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code as u8),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as u8),
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(e) => bail!("wait for container init {pid}: {e}"),
        }
    }
}

static CHILD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(std::sync::atomic::Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// While `run` waits, signals sent to it go to the container.
fn forward_signals(pid: i32) {
    CHILD.store(pid, std::sync::atomic::Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: `forward` only reads an atomic and calls kill, both async-signal-safe.
        unsafe { libc::signal(sig, forward as *const () as libc::sighandler_t) };
    }
}

fn list(root: &Root, format: &str, quiet: bool) -> anyhow::Result<()> {
    let mut states = Vec::new();
    for id in root.list()? {
        if let Ok(s) = root.state(&id) {
            states.push(s);
        }
    }
    let out = if format == "json" {
        serde_json::to_string(&states)?
    } else if quiet {
        states
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        let mut t = String::from("ID\tPID\tSTATUS\tBUNDLE\tCREATED\n");
        for s in &states {
            t.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\n",
                s.id,
                s.pid,
                s.status,
                s.bundle.display(),
                s.created
            ));
        }
        t.trim_end().to_string()
    };
    print_json(&out);
    Ok(())
}

#[allow(clippy::print_stdout)]
fn print_json(s: &str) {
    println!("{s}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_name_each_cause_once() {
        let io = std::io::Error::from_raw_os_error(libc::ENOENT);
        let e = crate::container::Error::Sys {
            what: "read".into(),
            path: "/b/config.json".into(),
            source: io,
        };
        let e = anyhow::Error::new(e).context("create c1");
        assert_eq!(
            report(&e),
            "create c1: read /b/config.json: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn signals_parse_in_runc_forms() {
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
    }
}
