//! Test doubles for the streaming seams (`test-util` feature): an exec backend that runs
//! real local processes and a dialer to loopback servers. Both record the calls they got.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::process::{Child, Command};

use super::{
    ExecBackend, ExecOptions, PodStream, PortForwardDialer, Process, ResizeSink, TerminalSize,
};

/// One call an [`FakeExecBackend`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeExecCall {
    /// `exec` with these options.
    Exec(ExecOptions),
    /// `attach` with these options.
    Attach(ExecOptions),
}

/// Runs `opts.command` as a local process (`tokio::process`), on a real pseudo-terminal
/// when `opts.tty`; attach runs the configured attach command. Records every call and
/// every resize it was asked to apply.
#[derive(Debug, Default)]
pub struct FakeExecBackend {
    attach_command: Vec<String>,
    calls: Mutex<Vec<FakeExecCall>>,
    resizes: Arc<Mutex<Vec<TerminalSize>>>,
}

impl FakeExecBackend {
    /// A backend whose attach fails (no attach command).
    pub fn new() -> Self {
        Self::default()
    }

    /// What attach runs, standing in for a container's main process.
    pub fn with_attach_command(mut self, argv: &[&str]) -> Self {
        self.attach_command = argv.iter().map(|s| s.to_string()).collect();
        self
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<FakeExecCall> {
        self.calls.lock().expect("calls lock").clone()
    }

    /// The resizes applied so far.
    pub fn resizes(&self) -> Vec<TerminalSize> {
        self.resizes.lock().expect("resizes lock").clone()
    }

    fn spawn(&self, argv: &[String], opts: &ExecOptions) -> io::Result<Process> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no command to run"))?;
        let mut cmd = Command::new(program);
        cmd.args(args).kill_on_drop(true);
        let recorder = Recorder {
            resizes: self.resizes.clone(),
            pty: None,
        };
        if opts.tty {
            return spawn_on_pty(cmd, recorder);
        }
        cmd.stdin(if opts.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        Ok(Process {
            stdin: child.stdin.take().map(|s| Box::new(s) as super::BoxWrite),
            stdout: child.stdout.take().map(|s| Box::new(s) as super::BoxRead),
            stderr: child.stderr.take().map(|s| Box::new(s) as super::BoxRead),
            resize: Some(Box::new(recorder)),
            exit: wait(child),
        })
    }
}

fn wait(mut child: Child) -> super::ExitFuture {
    Box::pin(async move { child.wait().await.map(exit_code) })
}

fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Records resizes and applies them to the pseudo-terminal, if any.
struct Recorder {
    resizes: Arc<Mutex<Vec<TerminalSize>>>,
    pty: Option<std::os::fd::OwnedFd>,
}

impl ResizeSink for Recorder {
    fn resize(&self, size: TerminalSize) -> io::Result<()> {
        if let Some(pty) = &self.pty {
            let ws = rustix::termios::Winsize {
                ws_row: size.height,
                ws_col: size.width,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            rustix::termios::tcsetwinsize(pty, ws)?;
        }
        self.resizes.lock().expect("resizes lock").push(size);
        Ok(())
    }
}

/// Starts `cmd` with a new pseudo-terminal as stdin, stdout and stderr. The child gets no
/// controlling terminal (that needs `setsid` in the child), which `stty` and line
/// editing do not need.
fn spawn_on_pty(mut cmd: Command, mut recorder: Recorder) -> io::Result<Process> {
    use rustix::fs::{Mode, OFlags};
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};

    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    cmd.stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    let child = cmd.spawn()?;
    // Our copies of the slave are gone (moved into the spawned Command, dropped with it
    // on return), so reading the master ends with EIO once the child exits.
    drop(cmd);
    recorder.pty = Some(master.try_clone()?);
    // Separate files for the two directions: tokio's File runs one operation at a time,
    // and a read pending on the terminal must not hold up writes to it.
    let reader = tokio::fs::File::from_std(std::fs::File::from(master.try_clone()?));
    let writer = tokio::fs::File::from_std(std::fs::File::from(master));
    Ok(Process {
        stdin: Some(Box::new(writer)),
        stdout: Some(Box::new(reader)),
        stderr: None,
        resize: Some(Box::new(recorder)),
        exit: wait(child),
    })
}

#[async_trait]
impl ExecBackend for FakeExecBackend {
    async fn exec(&self, opts: &ExecOptions) -> io::Result<Process> {
        self.calls
            .lock()
            .expect("calls lock")
            .push(FakeExecCall::Exec(opts.clone()));
        self.spawn(&opts.command, opts)
    }

    async fn attach(&self, opts: &ExecOptions) -> io::Result<Process> {
        self.calls
            .lock()
            .expect("calls lock")
            .push(FakeExecCall::Attach(opts.clone()));
        if self.attach_command.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "container has no attachable process",
            ));
        }
        let argv = self.attach_command.clone();
        self.spawn(&argv, opts)
    }
}

/// Dials loopback addresses standing in for a pod's ports; records every port dialled.
#[derive(Debug, Default)]
pub struct FakeDialer {
    routes: HashMap<u16, SocketAddr>,
    dialed: Mutex<Vec<u16>>,
}

impl FakeDialer {
    /// A dialer with no open ports: every dial is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes the pod's `port` to `addr`.
    pub fn route(mut self, port: u16, addr: SocketAddr) -> Self {
        self.routes.insert(port, addr);
        self
    }

    /// The ports dialled so far, in order.
    pub fn dialed(&self) -> Vec<u16> {
        self.dialed.lock().expect("dialed lock").clone()
    }
}

#[async_trait]
impl PortForwardDialer for FakeDialer {
    async fn dial(&self, port: u16) -> io::Result<Box<dyn PodStream>> {
        self.dialed.lock().expect("dialed lock").push(port);
        let addr = self.routes.get(&port).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("dial tcp4 127.0.0.1:{port}: connect: connection refused"),
            )
        })?;
        let conn = tokio::net::TcpStream::connect(addr).await?;
        Ok(Box::new(conn))
    }
}
