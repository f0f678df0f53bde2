//! Port-forward: SPDY streams paired by `requestid` (raw after `Upgrade: SPDY/3.1`, or
//! tunnelled in websocket messages under `SPDY/3.1+portforward.k8s.io`), and the
//! websocket channel protocol (`v4.channel.k8s.io`: ports in the query, channel 2i for
//! the data of the i-th port and 2i+1 for its errors, each opened by the port number as
//! two little-endian bytes). Every data stream is one new connection from the dialer.

use std::collections::HashMap;
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
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info_span, warn, Instrument};

use super::backend::{PodStream, PortForwardDialer};
use super::options::parse_port;
use super::spdy::frame::rst;
use super::spdy::session::{IncomingStream, Input, Session, StreamOutput};
use super::upgrade::{self, Transport};
use super::ws::{self, ChannelWriter, Encoding, WsByteReader, WsByteWriter, WsOut};
use super::{Error, PortForwardOptions, STREAM_CREATION_TIMEOUT};

/// The SPDY protocol version of port-forward.
pub(crate) const SPDY_PORT_FORWARD: &str = "portforward.k8s.io";
/// kubectl 1.30+'s websocket subprotocol: SPDY inside binary messages.
pub(crate) const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
/// How long a finished websocket session waits for the client to answer its close.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// After the pod closes a forwarded connection, how long the client's half may still
/// drain into it (containerd's one second).
const DRAIN_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WsMode {
    /// SPDY frames in binary messages.
    Tunnel,
    /// The channel protocol.
    Channels(Encoding),
}

const WS_PROTOCOLS: &[(&str, WsMode)] = &[
    (SPDY_TUNNEL, WsMode::Tunnel),
    ("v4.channel.k8s.io", WsMode::Channels(Encoding::Binary)),
    (
        "v4.base64.channel.k8s.io",
        WsMode::Channels(Encoding::Base64),
    ),
    ("portforward.k8s.io", WsMode::Channels(Encoding::Binary)),
    ("channel.k8s.io", WsMode::Channels(Encoding::Binary)),
    ("base64.channel.k8s.io", WsMode::Channels(Encoding::Base64)),
    ("", WsMode::Channels(Encoding::Binary)),
];

const SPDY_PROTOCOLS: &[(&str, ())] = &[(SPDY_PORT_FORWARD, ())];

/// Answers a port-forward upgrade request and runs the session in a spawned task.
pub(crate) fn serve(
    mut req: Request,
    opts: PortForwardOptions,
    dialer: Arc<dyn PortForwardDialer>,
) -> Response {
    let transport = match upgrade::classify(req.headers()) {
        Ok(t) => t,
        Err(err) => return err.into_response(),
    };
    let span = info_span!("port_forward", pod = %opts.pod);
    let opts = Arc::new(opts);
    match transport {
        Transport::WebSocket { key, offered } => {
            let offered = if offered.is_empty() {
                vec![String::new()]
            } else {
                offered
            };
            let Some((protocol, mode)) = upgrade::negotiate(&offered, WS_PROTOCOLS) else {
                return Error::NoProtocol {
                    offered: offered.join(", "),
                    supported: names(WS_PROTOCOLS),
                    spdy: false,
                }
                .into_response();
            };
            if matches!(mode, WsMode::Channels(_)) && opts.ports.is_empty() {
                return Error::NoPorts.into_response();
            }
            let on_upgrade = match upgrade::take_upgrade(&mut req) {
                Ok(u) => u,
                Err(err) => return err.into_response(),
            };
            tokio::spawn(
                async move {
                    let io = match on_upgrade.await {
                        Ok(io) => TokioIo::new(io),
                        Err(err) => return warn!(%err, "port-forward upgrade failed"),
                    };
                    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                    match mode {
                        WsMode::Tunnel => {
                            debug!("spdy-over-websocket session started");
                            let (sink, stream) = ws.split();
                            let reader = WsByteReader {
                                stream,
                                buf: Bytes::new(),
                            };
                            over_spdy(reader, WsByteWriter { sink }, opts, dialer).await
                        }
                        WsMode::Channels(encoding) => {
                            over_channels(ws, encoding, opts, dialer).await
                        }
                    }
                }
                .instrument(span),
            );
            upgrade::websocket_101(&key, protocol)
        }
        Transport::Spdy { offered } => {
            let offered = if offered.is_empty() {
                vec![SPDY_PORT_FORWARD.to_string()]
            } else {
                offered
            };
            if upgrade::negotiate(&offered, SPDY_PROTOCOLS).is_none() {
                return Error::NoProtocol {
                    offered: offered.join(", "),
                    supported: names(SPDY_PROTOCOLS),
                    spdy: true,
                }
                .into_response();
            }
            let on_upgrade = match upgrade::take_upgrade(&mut req) {
                Ok(u) => u,
                Err(err) => return err.into_response(),
            };
            tokio::spawn(
                async move {
                    match on_upgrade.await {
                        Ok(io) => {
                            debug!("spdy session started");
                            let (r, w) = tokio::io::split(TokioIo::new(io));
                            over_spdy(r, w, opts, dialer).await
                        }
                        Err(err) => warn!(%err, "port-forward upgrade failed"),
                    }
                }
                .instrument(span),
            );
            upgrade::spdy_101(SPDY_PORT_FORWARD)
        }
    }
}

fn names<P>(protocols: &[(&str, P)]) -> String {
    protocols
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !n.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

fn forward_error(port: u16, pod: &str, err: &io::Error) -> Bytes {
    Bytes::from(format!("error forwarding port {port} to pod {pod}: {err}"))
}

/// The error and data streams of one forwarded connection, as they arrive.
struct Pair {
    error: Option<IncomingStream>,
    data: Option<IncomingStream>,
    deadline: Instant,
}

/// Checks a port-forward stream's headers (the kubelet's `httpStreamReceived`).
fn validate(s: &IncomingStream) -> Result<u16, String> {
    let port = s
        .headers
        .get("port")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| "\"port\" header is required".to_string())?;
    let port = parse_port(port).map_err(|e| e.to_string())?;
    match s.stream_type() {
        "error" | "data" => Ok(port),
        "" => Err("\"streamType\" header is required".into()),
        other => Err(format!("invalid stream type {other:?}")),
    }
}

/// The pair a stream belongs to: its `requestid`, or for clients too old to send one,
/// derived from the stream id (error streams precede their data streams by 2).
fn request_id(s: &IncomingStream) -> String {
    match s.headers.get("requestid") {
        Some(id) if !id.is_empty() => id.to_string(),
        _ if s.stream_type() == "data" => s.id.saturating_sub(2).to_string(),
        _ => s.id.to_string(),
    }
}

async fn over_spdy<R, W>(
    r: R,
    w: W,
    opts: Arc<PortForwardOptions>,
    dialer: Arc<dyn PortForwardDialer>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut session = Session::start(r, w);
    let mut pending: HashMap<String, Pair> = HashMap::new();
    let mut forwards = JoinSet::new();
    loop {
        let next_deadline = pending.values().map(|p| p.deadline).min();
        tokio::select! {
            s = session.incoming.recv() => {
                let Some(s) = s else { break };
                if let Err(msg) = validate(&s) {
                    debug!(id = s.id, %msg, "resetting an invalid port-forward stream");
                    let _ = s.output.reset(rst::PROTOCOL_ERROR).await;
                    continue;
                }
                let _ = s.output.reply().await;
                let id = request_id(&s);
                let pair = pending.entry(id.clone()).or_insert_with(|| Pair {
                    error: None,
                    data: None,
                    deadline: Instant::now() + STREAM_CREATION_TIMEOUT,
                });
                let slot = if s.stream_type() == "error" { &mut pair.error } else { &mut pair.data };
                if slot.is_some() {
                    let msg = format!(
                        "error processing stream for request {id}: {} stream already assigned",
                        s.stream_type()
                    );
                    warn!(%msg);
                    if let Some(e) = &pair.error {
                        let _ = e.output.send(msg.into()).await;
                    }
                    let _ = s.output.reset(rst::PROTOCOL_ERROR).await;
                    continue;
                }
                *slot = Some(s);
                if pair.error.is_some() && pair.data.is_some() {
                    let pair = pending.remove(&id).expect("pair is pending");
                    let (Some(error), Some(data)) = (pair.error, pair.data) else { continue };
                    forwards.spawn(forward_pair(error, data, opts.clone(), dialer.clone()));
                }
            }
            _ = tokio::time::sleep_until(next_deadline.unwrap_or_else(Instant::now)), if next_deadline.is_some() => {
                let now = Instant::now();
                let expired: Vec<String> = pending
                    .iter()
                    .filter(|(_, p)| p.deadline <= now)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in expired {
                    let pair = pending.remove(&id).expect("expired pair is pending");
                    warn!(request = %id, "timed out waiting for the other stream of a port-forward");
                    for s in [pair.error, pair.data].into_iter().flatten() {
                        if s.stream_type() == "error" {
                            let msg = format!("timed out waiting for streams of request {id}");
                            let _ = s.output.send(msg.into()).await;
                        }
                        let _ = s.output.finish().await;
                    }
                }
            }
            Some(_) = forwards.join_next(), if !forwards.is_empty() => {}
        }
    }
    debug!("port-forward connection ended");
    forwards.abort_all();
    session.close().await;
}

/// Forwards one client connection: dial, then copy both ways with half-closes, until
/// the pod hangs up or the client resets the stream.
async fn forward_pair(
    error: IncomingStream,
    data: IncomingStream,
    opts: Arc<PortForwardOptions>,
    dialer: Arc<dyn PortForwardDialer>,
) {
    let port = data
        .headers
        .get("port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let IncomingStream {
        input: mut data_in,
        output: data_out,
        ..
    } = data;
    let conn = match dialer.dial(port).await {
        Ok(conn) => conn,
        Err(err) => {
            warn!(port, %err, "port-forward dial failed");
            let _ = error
                .output
                .send(forward_error(port, &opts.pod, &err))
                .await;
            let _ = data_out.finish().await;
            let _ = error.output.finish().await;
            return;
        }
    };
    let (pod_r, mut pod_w) = tokio::io::split(conn);
    // Client to pod: returns only when the stream is reset or the connection ends; a FIN
    // half-closes the pod connection.
    let to_pod = async move {
        let mut writable = true;
        loop {
            match data_in.recv().await {
                Input::Data(bytes) => {
                    if writable && pod_w.write_all(&bytes).await.is_err() {
                        writable = false;
                    }
                }
                Input::End => {
                    if writable {
                        let _ = pod_w.shutdown().await;
                        writable = false;
                    }
                }
                Input::Gone => return,
            }
        }
    };
    let from_pod = copy_to_stream(pod_r, data_out.clone());
    tokio::pin!(to_pod, from_pod);
    tokio::select! {
        res = &mut from_pod => {
            if let Err(err) = res {
                let _ = error.output.send(forward_error(port, &opts.pod, &err)).await;
            }
            let _ = data_out.finish().await;
            let _ = error.output.finish().await;
            // kubectl resets the data stream once it has our FIN, which ends `to_pod`.
            let _ = tokio::time::timeout(DRAIN_GRACE, to_pod).await;
        }
        () = &mut to_pod => {
            let _ = error.output.finish().await;
        }
    }
}

async fn copy_to_stream(
    mut r: tokio::io::ReadHalf<Box<dyn PodStream>>,
    out: StreamOutput,
) -> io::Result<()> {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        if out.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
            return Ok(());
        }
    }
}

async fn over_channels<S>(
    ws: WebSocketStream<S>,
    encoding: Encoding,
    opts: Arc<PortForwardOptions>,
    dialer: Arc<dyn PortForwardDialer>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    debug!(ports = ?opts.ports, "websocket channel session started");
    let (sink, mut stream) = ws.split();
    let (out, out_rx) = mpsc::channel(64);
    let writer = tokio::spawn(ws::write_loop(sink, out_rx, encoding));
    let mut inbound = Vec::with_capacity(opts.ports.len());
    let mut ports = JoinSet::new();
    for (i, &port) in opts.ports.iter().enumerate() {
        // Channels are bytes: 128 ports at most (channels 0 to 255).
        let Ok(data_channel) = u8::try_from(2 * i) else {
            break;
        };
        let prefix = Bytes::copy_from_slice(&port.to_le_bytes());
        let _ = out.send(WsOut::Data(data_channel, prefix.clone())).await;
        let _ = out.send(WsOut::Data(data_channel + 1, prefix)).await;
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        inbound.push(tx);
        let data = ChannelWriter {
            channel: data_channel,
            tx: out.clone(),
        };
        let error = ChannelWriter {
            channel: data_channel + 1,
            tx: out.clone(),
        };
        ports.spawn(forward_channel(
            port,
            rx,
            data,
            error,
            opts.clone(),
            dialer.clone(),
        ));
    }
    let mut reader = tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            let msg = match msg {
                Ok(m) => m,
                Err(err) => {
                    debug!(%err, "websocket read failed");
                    break;
                }
            };
            let Some((channel, data)) = ws::decode(encoding, msg) else {
                continue;
            };
            // Even channels carry data to the pod; the client writes no errors.
            if channel % 2 == 0 {
                if let Some(tx) = inbound.get(usize::from(channel / 2)) {
                    let _ = tx.send(data).await;
                }
            }
        }
    });
    tokio::select! {
        _ = async { while ports.join_next().await.is_some() {} } => {
            debug!("every forwarded port closed");
        }
        _ = &mut reader => {
            debug!("client closed the websocket");
            ports.abort_all();
        }
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

/// One port of the channel protocol: one connection for the life of the websocket.
async fn forward_channel(
    port: u16,
    mut rx: mpsc::Receiver<Bytes>,
    data: ChannelWriter,
    error: ChannelWriter,
    opts: Arc<PortForwardOptions>,
    dialer: Arc<dyn PortForwardDialer>,
) {
    let conn = match dialer.dial(port).await {
        Ok(conn) => conn,
        Err(err) => {
            warn!(port, %err, "port-forward dial failed");
            let _ = error.send(forward_error(port, &opts.pod, &err)).await;
            return;
        }
    };
    let (mut pod_r, mut pod_w) = tokio::io::split(conn);
    let to_pod = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if pod_w.write_all(&bytes).await.is_err() {
                while rx.recv().await.is_some() {}
                return;
            }
        }
        let _ = pod_w.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match pod_r.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if data.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    break;
                }
            }
            Err(err) => {
                let _ = error.send(forward_error(port, &opts.pod, &err)).await;
                break;
            }
        }
    }
    to_pod.abort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::spdy::Headers;

    #[test]
    fn websocket_modes() {
        let offered = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            upgrade::negotiate(&offered(&[SPDY_TUNNEL]), WS_PROTOCOLS),
            Some((SPDY_TUNNEL, WsMode::Tunnel))
        );
        assert_eq!(
            upgrade::negotiate(&offered(&["x", "v4.channel.k8s.io"]), WS_PROTOCOLS),
            Some(("v4.channel.k8s.io", WsMode::Channels(Encoding::Binary)))
        );
        assert_eq!(
            upgrade::negotiate(&offered(&["v4.base64.channel.k8s.io"]), WS_PROTOCOLS).map(|p| p.1),
            Some(WsMode::Channels(Encoding::Base64))
        );
        assert_eq!(
            upgrade::negotiate(&offered(&["v5.channel.k8s.io"]), WS_PROTOCOLS),
            None
        );
    }

    #[tokio::test]
    async fn stream_validation_and_request_ids() {
        // Real IncomingStreams come from a session fed SYN_STREAMs by a client.
        let (server_io, client_io) = tokio::io::duplex(4096);
        let (r, w) = tokio::io::split(server_io);
        let mut session = Session::start(r, w);
        let (_client_r, mut cw) = tokio::io::split(client_io);
        let mut enc = crate::stream::spdy::FrameEncoder::new();
        let syns = [
            (
                1,
                Headers::new()
                    .with("streamtype", "error")
                    .with("port", "80"),
            ),
            (
                3,
                Headers::new().with("streamtype", "data").with("port", "80"),
            ),
            (
                5,
                Headers::new()
                    .with("streamtype", "data")
                    .with("port", "0")
                    .with("requestid", "7"),
            ),
            (
                7,
                Headers::new()
                    .with("streamtype", "stdin")
                    .with("port", "80"),
            ),
            (9, Headers::new().with("streamtype", "data")),
        ];
        let mut wire = bytes::BytesMut::new();
        for (id, headers) in syns {
            enc.encode(
                &crate::stream::spdy::Frame::SynStream {
                    stream_id: id,
                    associated_to: 0,
                    priority: 0,
                    flags: 0,
                    headers,
                },
                &mut wire,
            )
            .unwrap();
        }
        cw.write_all(&wire).await.unwrap();
        let mut got = vec![];
        for _ in 0..5 {
            let s = session.incoming.recv().await.unwrap();
            got.push((request_id(&s), validate(&s)));
        }
        assert_eq!(got[0], ("1".into(), Ok(80)));
        assert_eq!(got[1], ("1".into(), Ok(80)), "old clients: data id - 2");
        assert_eq!(got[2].0, "7");
        assert!(got[2].1.as_ref().unwrap_err().contains("as a port"));
        assert_eq!(got[3].1, Err("invalid stream type \"stdin\"".into()));
        assert_eq!(got[4].1, Err("\"port\" header is required".into()));
    }
}
