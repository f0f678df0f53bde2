//! Exec and attach: the remote-command protocols over a websocket (`v5.channel.k8s.io`
//! down to `channel.k8s.io`) and over SPDY (`v4.channel.k8s.io` down to
//! `channel.k8s.io`), both ending in [`run_process`], which moves bytes between the
//! session and the [`Process`] the backend started.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info_span, warn, Instrument};

use super::backend::{BoxRead, ExecBackend, Process, TerminalSize};
use super::spdy::session::{IncomingStream, Input, Session, StreamOutput};
use super::status::Outcome;
use super::upgrade::{self, Transport};
use super::ws::{self, ChannelWriter, Encoding, WsOut};
use super::{Error, ExecOptions, STREAM_CREATION_TIMEOUT};

/// How long a finished session waits for the client to answer its close.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Exec,
    Attach,
}

/// A websocket remote-command subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WsProtocol {
    pub name: &'static str,
    pub encoding: Encoding,
    /// v4 and later: the error channel carries a Status JSON, also on success.
    pub json_status: bool,
    /// v5: channel 255 closes a channel (`[255, 0]` ends stdin).
    pub close_channel: bool,
}

const fn ws_proto(
    name: &'static str,
    encoding: Encoding,
    json_status: bool,
    close_channel: bool,
) -> (&'static str, WsProtocol) {
    (
        name,
        WsProtocol {
            name,
            encoding,
            json_status,
            close_channel,
        },
    )
}

/// The websocket subprotocols, with "" for a client that offers none (the kubelet's
/// fallback, the oldest binary protocol).
pub(crate) const WS_PROTOCOLS: &[(&str, WsProtocol)] = &[
    ws_proto("v5.channel.k8s.io", Encoding::Binary, true, true),
    ws_proto("v4.channel.k8s.io", Encoding::Binary, true, false),
    ws_proto("v4.base64.channel.k8s.io", Encoding::Base64, true, false),
    ws_proto("v3.channel.k8s.io", Encoding::Binary, false, false),
    ws_proto("v2.channel.k8s.io", Encoding::Binary, false, false),
    ws_proto("channel.k8s.io", Encoding::Binary, false, false),
    ws_proto("base64.channel.k8s.io", Encoding::Base64, false, false),
    ws_proto("", Encoding::Binary, false, false),
];

/// A SPDY remote-command protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpdyProtocol {
    pub name: &'static str,
    /// v4: the error stream carries a Status JSON.
    pub json_status: bool,
    /// v3 and v4: a tty session has a resize stream.
    pub resize: bool,
}

/// Server preference order is irrelevant (the client's order wins); v4 is what kubectl
/// gets, since it offers v5 (websocket-only) first.
pub(crate) const SPDY_PROTOCOLS: &[(&str, SpdyProtocol)] = &[
    (
        "v4.channel.k8s.io",
        SpdyProtocol {
            name: "v4.channel.k8s.io",
            json_status: true,
            resize: true,
        },
    ),
    (
        "v3.channel.k8s.io",
        SpdyProtocol {
            name: "v3.channel.k8s.io",
            json_status: false,
            resize: true,
        },
    ),
    (
        "v2.channel.k8s.io",
        SpdyProtocol {
            name: "v2.channel.k8s.io",
            json_status: false,
            resize: false,
        },
    ),
    (
        "channel.k8s.io",
        SpdyProtocol {
            name: "channel.k8s.io",
            json_status: false,
            resize: false,
        },
    ),
];

fn names<P>(protocols: &[(&str, P)]) -> String {
    protocols
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !n.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Answers an exec or attach upgrade request and runs the session in a spawned task.
pub(crate) fn serve(
    mut req: Request,
    opts: ExecOptions,
    backend: Arc<dyn ExecBackend>,
    kind: Kind,
) -> Response {
    let transport = match upgrade::classify(req.headers()) {
        Ok(t) => t,
        Err(err) => return err.into_response(),
    };
    let span = info_span!(
        "exec",
        ?kind,
        container = opts.container.as_deref().unwrap_or("")
    );
    match transport {
        Transport::WebSocket { key, offered } => {
            let offered = if offered.is_empty() {
                vec![String::new()]
            } else {
                offered
            };
            let Some((_, proto)) = upgrade::negotiate(&offered, WS_PROTOCOLS) else {
                return Error::NoProtocol {
                    offered: offered.join(", "),
                    supported: names(WS_PROTOCOLS),
                    spdy: false,
                }
                .into_response();
            };
            let on_upgrade = match upgrade::take_upgrade(&mut req) {
                Ok(u) => u,
                Err(err) => return err.into_response(),
            };
            tokio::spawn(
                async move {
                    match on_upgrade.await {
                        Ok(io) => {
                            let ws = WebSocketStream::from_raw_socket(
                                TokioIo::new(io),
                                Role::Server,
                                None,
                            )
                            .await;
                            exec_over_websocket(ws, proto, opts, backend, kind).await;
                        }
                        Err(err) => warn!(%err, "exec upgrade failed"),
                    }
                }
                .instrument(span),
            );
            upgrade::websocket_101(&key, proto.name)
        }
        Transport::Spdy { offered } => {
            // A client that names no version speaks the first one.
            let offered = if offered.is_empty() {
                vec!["channel.k8s.io".to_string()]
            } else {
                offered
            };
            let Some((_, proto)) = upgrade::negotiate(&offered, SPDY_PROTOCOLS) else {
                return Error::NoProtocol {
                    offered: offered.join(", "),
                    supported: names(SPDY_PROTOCOLS),
                    spdy: true,
                }
                .into_response();
            };
            let on_upgrade = match upgrade::take_upgrade(&mut req) {
                Ok(u) => u,
                Err(err) => return err.into_response(),
            };
            tokio::spawn(
                async move {
                    match on_upgrade.await {
                        Ok(io) => {
                            exec_over_spdy(TokioIo::new(io), proto, opts, backend, kind).await
                        }
                        Err(err) => warn!(%err, "exec upgrade failed"),
                    }
                }
                .instrument(span),
            );
            upgrade::spdy_101(proto.name)
        }
    }
}

/// Where a session writes one of the process's outputs.
#[derive(Clone)]
pub(crate) enum Sink {
    Ws(ChannelWriter),
    Spdy(StreamOutput),
}

impl Sink {
    async fn send(&self, data: Bytes) -> io::Result<()> {
        match self {
            Sink::Ws(w) => w.send(data).await,
            Sink::Spdy(s) => s.send(data).await,
        }
    }
}

/// The session's side of the process's streams.
#[derive(Default)]
pub(crate) struct SessionIo {
    /// The client's stdin; the channel closing is the end of input.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
    pub stdout: Option<Sink>,
    pub stderr: Option<Sink>,
}

/// Starts the process and moves bytes until it has exited and its outputs are drained.
pub(crate) async fn run_process(
    backend: &dyn ExecBackend,
    opts: &ExecOptions,
    kind: Kind,
    io: SessionIo,
) -> Outcome {
    let started = match kind {
        Kind::Exec => backend.exec(opts).await,
        Kind::Attach => backend.attach(opts).await,
    };
    let Process {
        stdin,
        stdout,
        stderr,
        resize,
        exit,
    } = match started {
        Ok(p) => p,
        Err(err) => return internal(kind, &err),
    };
    let stdin_task = match (stdin, io.stdin) {
        (Some(mut w), Some(mut rx)) => Some(tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                if w.write_all(&data).await.is_err() || w.flush().await.is_err() {
                    // The process stopped reading; keep draining so the client is not
                    // blocked, as a closed pipe would discard.
                    while rx.recv().await.is_some() {}
                    return;
                }
            }
            let _ = w.shutdown().await;
        })),
        // No stdin asked for: the process sees EOF at once.
        (Some(mut w), None) => {
            let _ = w.shutdown().await;
            None
        }
        (None, _) => None,
    };
    let resize_task = match (resize, io.resize) {
        (Some(sink), Some(mut rx)) => Some(tokio::spawn(async move {
            while let Some(size) = rx.recv().await {
                if let Err(err) = sink.resize(size) {
                    debug!(%err, ?size, "terminal resize failed");
                }
            }
        })),
        _ => None,
    };
    let out_task = stdout.map(|r| tokio::spawn(pump(r, io.stdout)));
    let err_task = stderr.map(|r| tokio::spawn(pump(r, io.stderr)));
    let exit = exit.await;
    for task in [out_task, err_task].into_iter().flatten() {
        let _ = task.await;
    }
    for task in [stdin_task, resize_task].into_iter().flatten() {
        task.abort();
    }
    match (kind, exit) {
        (_, Err(err)) => internal(kind, &err),
        (Kind::Attach, Ok(_)) | (Kind::Exec, Ok(0)) => Outcome::Success,
        (Kind::Exec, Ok(code)) => Outcome::ExitCode(code),
    }
}

fn internal(kind: Kind, err: &io::Error) -> Outcome {
    Outcome::Internal(match kind {
        Kind::Exec => format!("error executing command in container: {err}"),
        Kind::Attach => format!("error attaching to container: {err}"),
    })
}

/// Copies a process output to the client until EOF. A client that went away does not
/// stop the copy: the output is drained so the process never blocks on a full pipe.
async fn pump(mut r: BoxRead, sink: Option<Sink>) {
    let mut sink = sink;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            // EIO is how a terminal's master side reports that the process hung up.
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Some(s) = &sink {
                    if s.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        sink = None;
                    }
                }
            }
        }
    }
}

/// Parses the concatenated JSON objects of a resize stream, which may arrive split
/// across messages or several to a message.
#[derive(Default)]
pub(crate) struct ResizeDecoder {
    buf: Vec<u8>,
}

impl ResizeDecoder {
    pub fn push(&mut self, data: &[u8]) -> Vec<TerminalSize> {
        self.buf.extend_from_slice(data);
        let mut sizes = Vec::new();
        let mut de = serde_json::Deserializer::from_slice(&self.buf).into_iter::<TerminalSize>();
        loop {
            match de.next() {
                Some(Ok(size)) => sizes.push(size),
                Some(Err(err)) if err.is_eof() => break,
                Some(Err(err)) => {
                    debug!(%err, "dropping undecodable resize data");
                    self.buf.clear();
                    return sizes;
                }
                None => break,
            }
        }
        let used = de.byte_offset();
        self.buf.drain(..used);
        sizes
    }
}

async fn exec_over_websocket<S>(
    ws: WebSocketStream<S>,
    proto: WsProtocol,
    opts: ExecOptions,
    backend: Arc<dyn ExecBackend>,
    kind: Kind,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    debug!(protocol = proto.name, "websocket session started");
    let (sink, mut stream) = ws.split();
    let (out, out_rx) = mpsc::channel(64);
    let writer = tokio::spawn(ws::write_loop(sink, out_rx, proto.encoding));
    // As the kubelet does, an empty message on the lowest writable channel tells the
    // client the session is up.
    let first = if opts.stdout {
        STDOUT
    } else if opts.stderr {
        STDERR
    } else {
        ERROR
    };
    let _ = out.send(WsOut::Data(first, Bytes::new())).await;

    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(64);
    let (resize_tx, resize_rx) = mpsc::channel::<TerminalSize>(16);
    let mut stdin_tx = opts.stdin.then_some(stdin_tx);
    let hang_up = out.clone();
    let mut reader = tokio::spawn(async move {
        let mut resize = ResizeDecoder::default();
        while let Some(msg) = stream.next().await {
            let msg = match msg {
                Ok(m) => m,
                Err(err) => {
                    debug!(%err, "websocket read failed");
                    break;
                }
            };
            // Close and ping are answered by the websocket layer; keep reading until the
            // connection ends so those answers go out.
            let Some((channel, data)) = ws::decode(proto.encoding, msg) else {
                continue;
            };
            match channel {
                STDIN => {
                    if let Some(tx) = &stdin_tx {
                        if tx.send(data).await.is_err() {
                            stdin_tx = None;
                        }
                    }
                }
                RESIZE => {
                    for size in resize.push(&data) {
                        let _ = resize_tx.send(size).await;
                    }
                }
                // v5: `[255, 0]` is the client's end of stdin.
                CLOSE if proto.close_channel && data.first() == Some(&STDIN) => {
                    stdin_tx = None;
                }
                _ => {}
            }
        }
        // The client is gone: let the writer go too, which drops the connection (the
        // process runs on, its output drained, as under the kubelet).
        let _ = hang_up.send(WsOut::Close).await;
    });

    let writer_for = |channel| {
        Sink::Ws(ChannelWriter {
            channel,
            tx: out.clone(),
        })
    };
    let io = SessionIo {
        stdin: opts.stdin.then_some(stdin_rx),
        resize: Some(resize_rx),
        stdout: opts.stdout.then(|| writer_for(STDOUT)),
        stderr: opts.stderr.then(|| writer_for(STDERR)),
    };
    let outcome = run_process(&*backend, &opts, kind, io).await;
    debug!(?outcome, "process ended");
    let status = if proto.json_status {
        Some(outcome.to_json())
    } else {
        outcome.to_text()
    };
    if let Some(status) = status {
        let _ = out.send(WsOut::Data(ERROR, status.into())).await;
    }
    let _ = out.send(WsOut::Close).await;
    drop(out);
    let _ = writer.await;
    if tokio::time::timeout(CLOSE_GRACE, &mut reader)
        .await
        .is_err()
    {
        reader.abort();
    }
}

/// The streams of a SPDY remote-command session.
#[derive(Default)]
struct Streams {
    error: Option<IncomingStream>,
    stdin: Option<IncomingStream>,
    stdout: Option<IncomingStream>,
    stderr: Option<IncomingStream>,
    resize: Option<IncomingStream>,
}

impl Streams {
    fn complete(&self, opts: &ExecOptions, proto: SpdyProtocol) -> bool {
        self.error.is_some()
            && (!opts.stdin || self.stdin.is_some())
            && (!opts.stdout || self.stdout.is_some())
            && (!opts.stderr || self.stderr.is_some())
            && (!(opts.tty && proto.resize) || self.resize.is_some())
    }

    fn slot(
        &mut self,
        stream_type: &str,
        proto: SpdyProtocol,
    ) -> Option<&mut Option<IncomingStream>> {
        match stream_type {
            "error" => Some(&mut self.error),
            "stdin" => Some(&mut self.stdin),
            "stdout" => Some(&mut self.stdout),
            "stderr" => Some(&mut self.stderr),
            "resize" if proto.resize => Some(&mut self.resize),
            _ => None,
        }
    }
}

/// Accepts a stream of a known type (SYN_REPLY) into its slot; resets unknown types and
/// duplicates.
async fn accept(streams: &mut Streams, s: IncomingStream, proto: SpdyProtocol) {
    let stream_type = s.stream_type().to_string();
    match streams.slot(&stream_type, proto) {
        Some(slot) if slot.is_none() => {
            let _ = s.output.reply().await;
            *slot = Some(s);
        }
        _ => {
            debug!(stream_type, id = s.id, "resetting an unexpected stream");
            let _ = s
                .output
                .reset(super::spdy::frame::rst::REFUSED_STREAM)
                .await;
        }
    }
}

async fn exec_over_spdy<T>(
    io: T,
    proto: SpdyProtocol,
    opts: ExecOptions,
    backend: Arc<dyn ExecBackend>,
    kind: Kind,
) where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    debug!(protocol = proto.name, "spdy session started");
    let (r, w) = tokio::io::split(io);
    let mut session = Session::start(r, w);
    let mut streams = Streams::default();
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while !streams.complete(&opts, proto) {
        match tokio::time::timeout_at(deadline, session.incoming.recv()).await {
            Ok(Some(s)) => accept(&mut streams, s, proto).await,
            Ok(None) => {
                debug!("client left before opening its streams");
                return session.close().await;
            }
            Err(_) => {
                warn!("timed out waiting for client to create streams");
                return session.close().await;
            }
        }
    }
    // Streams the client opens later (say, a stdin it did not announce) are accepted and
    // ignored, so its stream creation does not hang.
    let mut incoming = std::mem::replace(&mut session.incoming, mpsc::channel(1).1);
    let extras = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(s) = incoming.recv().await {
            let _ = s.output.reply().await;
            held.push(s);
        }
    });

    let Streams {
        error,
        stdin,
        stdout,
        stderr,
        resize,
    } = streams;
    let error = error.expect("complete streams have an error stream");
    let mut outputs: Vec<StreamOutput> = vec![error.output.clone()];
    let mut io = SessionIo::default();
    if let Some(s) = stdin.filter(|_| opts.stdin) {
        outputs.push(s.output.clone());
        let (tx, rx) = mpsc::channel(64);
        let mut input = s.input;
        tokio::spawn(async move {
            while let Input::Data(data) = input.recv().await {
                if tx.send(data).await.is_err() {
                    break;
                }
            }
        });
        io.stdin = Some(rx);
    }
    if let Some(s) = resize {
        outputs.push(s.output.clone());
        let (tx, rx) = mpsc::channel(16);
        let mut input = s.input;
        tokio::spawn(async move {
            let mut decoder = ResizeDecoder::default();
            while let Input::Data(data) = input.recv().await {
                for size in decoder.push(&data) {
                    if tx.send(size).await.is_err() {
                        return;
                    }
                }
            }
        });
        io.resize = Some(rx);
    }
    if let Some(s) = stdout.filter(|_| opts.stdout) {
        outputs.push(s.output.clone());
        io.stdout = Some(Sink::Spdy(s.output));
    }
    if let Some(s) = stderr.filter(|_| opts.stderr) {
        outputs.push(s.output.clone());
        io.stderr = Some(Sink::Spdy(s.output));
    }

    let outcome = run_process(&*backend, &opts, kind, io).await;
    debug!(?outcome, "process ended");
    let status = if proto.json_status {
        Some(outcome.to_json())
    } else {
        outcome.to_text()
    };
    if let Some(status) = status {
        let _ = error.output.send(status.into()).await;
    }
    for output in &outputs {
        let _ = output.finish().await;
    }
    drop(outputs);
    drop(error);
    session.close().await;
    extras.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_decoder_handles_splits_and_batches() {
        let mut d = ResizeDecoder::default();
        assert!(d.push(br#"{"Width":80,"#).is_empty());
        assert_eq!(
            d.push(br#""Height":24}{"Width":100,"Height":40}"#),
            [
                TerminalSize {
                    width: 80,
                    height: 24
                },
                TerminalSize {
                    width: 100,
                    height: 40
                }
            ]
        );
        assert!(d.push(b"garbage").is_empty());
        assert_eq!(
            d.push(b"{\"width\":1,\"height\":2}\n"),
            [TerminalSize {
                width: 1,
                height: 2
            }]
        );
    }

    #[test]
    fn protocol_tables() {
        let offered = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let p = upgrade::negotiate(&offered(&["v5.channel.k8s.io"]), WS_PROTOCOLS)
            .unwrap()
            .1;
        assert!(p.json_status && p.close_channel);
        let p = upgrade::negotiate(&offered(&["v4.base64.channel.k8s.io"]), WS_PROTOCOLS)
            .unwrap()
            .1;
        assert_eq!(p.encoding, Encoding::Base64);
        assert!(p.json_status && !p.close_channel);
        let p = upgrade::negotiate(&offered(&[""]), WS_PROTOCOLS).unwrap().1;
        assert_eq!(p.name, "");
        // kubectl's SPDY offer: v5 is websocket-only, so v4 is chosen.
        let p = upgrade::negotiate(
            &offered(&[
                "v5.channel.k8s.io",
                "v4.channel.k8s.io",
                "v3.channel.k8s.io",
                "v2.channel.k8s.io",
                "channel.k8s.io",
            ]),
            SPDY_PROTOCOLS,
        )
        .unwrap()
        .1;
        assert_eq!(p.name, "v4.channel.k8s.io");
        let p = upgrade::negotiate(&offered(&["v2.channel.k8s.io"]), SPDY_PROTOCOLS)
            .unwrap()
            .1;
        assert!(!p.resize && !p.json_status);
    }
}
