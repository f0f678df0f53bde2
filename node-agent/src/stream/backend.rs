//! The seams the agent plugs its runtime into: an [`ExecBackend`] that starts processes
//! in containers, and a [`PortForwardDialer`] that opens TCP connections into pods.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

use super::ExecOptions;

/// A terminal size as the resize channel carries it: `{"Width":80,"Height":24}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    /// Columns.
    #[serde(rename = "Width", alias = "width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height", alias = "height")]
    pub height: u16,
}

/// Applies terminal resizes to a process's terminal.
pub trait ResizeSink: Send + Sync {
    /// Sets the terminal's size; errors are logged, not fatal to the session.
    fn resize(&self, size: TerminalSize) -> io::Result<()>;
}

/// A write half handed to the session.
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;
/// A read half handed to the session.
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// Resolves to the process's exit code once it ends (128 + N for death by signal N).
pub type ExitFuture = Pin<Box<dyn Future<Output = io::Result<i32>> + Send>>;

/// A started process (or an attachment to a container's main process).
///
/// Without a terminal: separate `stdin`, `stdout`, `stderr`. With one ([`Process::tty`]):
/// `stdin` writes to the terminal, `stdout` reads from it, `stderr` is `None`. The
/// session reports the exit only once `stdout` and `stderr` have reached EOF (so no
/// output is lost), so the backend must let both end when the process does (a terminal
/// may end with EIO instead, which counts as EOF).
pub struct Process {
    /// Where the client's stdin goes; shut down at the client's end of input.
    pub stdin: Option<BoxWrite>,
    /// The process's stdout, or its terminal.
    pub stdout: Option<BoxRead>,
    /// The process's stderr; `None` with a terminal.
    pub stderr: Option<BoxRead>,
    /// Where resizes go, with a terminal.
    pub resize: Option<Box<dyn ResizeSink>>,
    /// The exit code.
    pub exit: ExitFuture,
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("resize", &self.resize.is_some())
            .finish_non_exhaustive()
    }
}

impl Process {
    /// A process on a terminal: `pty` is the terminal's master side, read for output and
    /// written for input.
    pub fn tty<T>(pty: T, resize: Box<dyn ResizeSink>, exit: ExitFuture) -> Self
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(pty);
        Self {
            stdin: Some(Box::new(w)),
            stdout: Some(Box::new(r)),
            stderr: None,
            resize: Some(resize),
            exit,
        }
    }
}

/// Starts processes in containers for exec and attaches to containers for attach.
///
/// `opts` says which streams the client asked for; a backend may pass `None` for the
/// ones it was not asked for. Errors become an `InternalError` status to the client.
#[async_trait]
pub trait ExecBackend: Send + Sync {
    /// Runs `opts.command` in `opts.container`.
    async fn exec(&self, opts: &ExecOptions) -> io::Result<Process>;

    /// Attaches to the main process of `opts.container`. The exit code is not reported
    /// to the client (the kubelet reports none for attach).
    async fn attach(&self, opts: &ExecOptions) -> io::Result<Process> {
        let _ = opts;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "attach is not supported by this runtime",
        ))
    }
}

/// A bidirectional byte stream into a pod.
pub trait PodStream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> PodStream for T {}

/// Opens TCP connections to a port of one pod (inside its network namespace).
#[async_trait]
pub trait PortForwardDialer: Send + Sync {
    /// A new connection to `port`; one per forwarded client connection.
    async fn dial(&self, port: u16) -> io::Result<Box<dyn PodStream>>;
}
