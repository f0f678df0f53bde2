//! The runtime behind the streaming endpoint: exec runs `runtime exec` in the container
//! (with a terminal handed over through a console socket when asked for one); port-forward
//! connects to the port from inside the pod's network namespace, so ports bound to the
//! pod's loopback work too, as with kubelet. Attach follows the container's own output
//! (from its log, stream by stream) until it ends; its stdin is not kept open by the
//! runtime, so attaching with stdin is refused.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_runtime::container::ExecOptions as RtExec;
use berth_runtime::pod::Runtime;

use crate::stream::{
    ExecBackend, ExecOptions, PodStream, PortForwardDialer, Process, ResizeSink, TerminalSize,
};

/// Exec into (or attach to) one container.
pub struct ContainerExec {
    pub rt: Arc<Runtime>,
    pub container_id: String,
    /// Where console sockets go.
    pub tmp: std::path::PathBuf,
}

struct PtyResize(std::os::fd::OwnedFd);

impl ResizeSink for PtyResize {
    fn resize(&self, size: TerminalSize) -> io::Result<()> {
        berth_runtime::console::resize(self.0.as_fd(), size.height, size.width)
    }
}

fn exit_of(status: io::Result<std::process::ExitStatus>) -> io::Result<i32> {
    use std::os::unix::process::ExitStatusExt;
    let s = status?;
    Ok(s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)))
}

#[async_trait]
impl ExecBackend for ContainerExec {
    async fn exec(&self, opts: &ExecOptions) -> io::Result<Process> {
        let mut rt_opts = RtExec {
            args: opts.command.clone(),
            tty: opts.tty,
            ..Default::default()
        };
        if !opts.tty {
            let cmd = self.rt.exec_command(&self.container_id, &rt_opts);
            let mut cmd = tokio::process::Command::from(cmd);
            let piped = |on: bool| {
                if on {
                    std::process::Stdio::piped()
                } else {
                    std::process::Stdio::null()
                }
            };
            cmd.stdin(piped(opts.stdin))
                .stdout(piped(opts.stdout))
                .stderr(piped(opts.stderr))
                .kill_on_drop(true);
            let mut child = cmd.spawn()?;
            let stdin = child.stdin.take().map(|s| Box::new(s) as _);
            let stdout = child.stdout.take().map(|s| Box::new(s) as _);
            let stderr = child.stderr.take().map(|s| Box::new(s) as _);
            return Ok(Process {
                stdin,
                stdout,
                stderr,
                resize: None,
                exit: Box::pin(async move { exit_of(child.wait().await) }),
            });
        }
        // A terminal: the runtime hands its master to our console socket.
        std::fs::create_dir_all(&self.tmp)?;
        let sock = self.tmp.join(format!(
            "console-{}-{}.sock",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        ));
        let listener = std::os::unix::net::UnixListener::bind(&sock)?;
        rt_opts.console_socket = Some(sock.clone());
        let cmd = self.rt.exec_command(&self.container_id, &rt_opts);
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::task::spawn_blocking(move || berth_runtime::console::receive_master(&listener)),
        )
        .await;
        let _ = std::fs::remove_file(&sock);
        let master = match got {
            Ok(Ok(Ok(fd))) => fd,
            other => {
                let _ = child.start_kill();
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), e.read_to_string(&mut err))
                            .await;
                }
                return Err(io::Error::other(format!(
                    "no terminal from the runtime ({}): {}",
                    match other {
                        Ok(Ok(Err(e))) => e.to_string(),
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => "timed out".into(),
                        Ok(Ok(Ok(_))) => unreachable!(),
                    },
                    err.trim()
                )));
            }
        };
        // Reads and writes go through separate handles: tokio's File runs one operation at
        // a time, and a pending read must not hold up stdin.
        let reader = tokio::fs::File::from_std(std::fs::File::from(master.try_clone()?));
        let writer = tokio::fs::File::from_std(std::fs::File::from(master.try_clone()?));
        Ok(Process {
            stdin: Some(Box::new(writer)),
            stdout: Some(Box::new(reader)),
            stderr: None,
            resize: Some(Box::new(PtyResize(master))),
            exit: Box::pin(async move { exit_of(child.wait().await) }),
        })
    }

    async fn attach(&self, opts: &ExecOptions) -> io::Result<Process> {
        if opts.stdin || opts.tty {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "attaching with stdin or a terminal is not supported: Berth containers do not keep stdin open (attach without -i/-t to follow the output)",
            ));
        }
        let rt = self.rt.clone();
        let id = self.container_id.clone();
        let status = tokio::task::spawn_blocking(move || rt.container_status(&id))
            .await
            .map_err(io::Error::other)?
            .map_err(io::Error::other)?;
        let log = status
            .log_path
            .ok_or_else(|| io::Error::other("the container has no log to attach to"))?;
        let (out_w, out_r) = tokio::io::duplex(64 * 1024);
        let (err_w, err_r) = tokio::io::duplex(64 * 1024);
        let rt = self.rt.clone();
        let id = self.container_id.clone();
        let want = (opts.stdout, opts.stderr);
        let follow = tokio::spawn(follow_output(
            rt.clone(),
            id.clone(),
            log,
            out_w,
            err_w,
            want,
        ));
        let exit = Box::pin(async move {
            let _ = follow.await;
            let code = tokio::task::spawn_blocking(move || rt.container_status(&id))
                .await
                .map_err(io::Error::other)?
                .map_err(io::Error::other)?
                .exit_code
                .unwrap_or(0);
            Ok(code)
        });
        Ok(Process {
            stdin: None,
            stdout: opts.stdout.then(|| Box::new(out_r) as _),
            stderr: opts.stderr.then(|| Box::new(err_r) as _),
            resize: None,
            exit,
        })
    }
}

/// Connects to ports inside one pod's network namespace.
pub struct PodDialer {
    /// `/proc/<pause pid>/ns/net`.
    pub netns: std::path::PathBuf,
}

#[async_trait]
impl PortForwardDialer for PodDialer {
    async fn dial(&self, port: u16) -> io::Result<Box<dyn PodStream>> {
        let netns = self.netns.clone();
        // A thread of our own joins the namespace; the socket keeps it after the thread ends.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let r = (|| {
                let ns = std::fs::File::open(&netns)?;
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)?;
                let s = std::net::TcpStream::connect_timeout(
                    &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                    Duration::from_secs(10),
                )?;
                s.set_nonblocking(true)?;
                Ok::<_, io::Error>(s)
            })();
            let _ = tx.send(r);
        });
        let s = rx
            .await
            .map_err(|_| io::Error::other("dialer thread died"))??;
        Ok(Box::new(tokio::net::TcpStream::from_std(s)?))
    }
}

/// Copy what the container writes from now on (its CRI log, by stream) until it has ended
/// and the log is drained, or the reader went away.
async fn follow_output(
    rt: Arc<Runtime>,
    id: String,
    log: std::path::PathBuf,
    mut out: tokio::io::DuplexStream,
    mut err: tokio::io::DuplexStream,
    want: (bool, bool),
) {
    use berth_runtime::logs::Stream;
    use tokio::io::AsyncWriteExt;
    let offset = tokio::fs::metadata(&log)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    let mut lines = crate::server::follow_log(rt, id, log, offset);
    while let Some(l) = lines.recv().await {
        let mut bytes = l.content;
        if !l.partial {
            bytes.push(b'\n');
        }
        let r = match l.stream {
            Stream::Stdout if want.0 => out.write_all(&bytes).await,
            Stream::Stderr if want.1 => err.write_all(&bytes).await,
            _ => Ok(()),
        };
        if r.is_err() {
            return;
        }
    }
}
