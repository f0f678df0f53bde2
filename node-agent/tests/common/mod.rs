//! Shared test plumbing: the agent's stream endpoints on loopback, stand-ins for pod
//! servers, and small websocket and SPDY clients.
#![allow(dead_code)]

pub mod apiserver;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use axum::extract::Request;
use axum::response::IntoResponse;
use axum::routing::any;
use axum::Router;
use berth_node_agent::stream::spdy::{Frame, FrameDecoder, FrameEncoder, Headers};
use berth_node_agent::stream::{
    serve_attach, serve_exec, serve_port_forward, ExecBackend, ExecOptions, PortForwardDialer,
    PortForwardOptions,
};
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Whether `tool` is an executable file on PATH.
pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Every network wait in the tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(15);

pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> Result<T> {
    tokio::time::timeout(WAIT, f)
        .await
        .map_err(|_| anyhow!("timed out waiting for {what}"))
}

/// Aborts a background task when dropped, so a failing test leaves nothing running.
pub struct Task(pub JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The agent's three endpoints, wired as the agent's router would wire them.
pub fn stream_routes(backend: Arc<dyn ExecBackend>, dialer: Arc<dyn PortForwardDialer>) -> Router {
    let exec_backend = backend.clone();
    Router::new()
        .route(
            "/exec",
            any(move |req: Request| {
                let backend = exec_backend.clone();
                async move {
                    match ExecOptions::from_query(req.uri().query().unwrap_or("")) {
                        Ok(opts) => serve_exec(req, opts, backend).await,
                        Err(err) => err.into_response(),
                    }
                }
            }),
        )
        .route(
            "/attach",
            any(move |req: Request| {
                let backend = backend.clone();
                async move {
                    match ExecOptions::from_query(req.uri().query().unwrap_or("")) {
                        Ok(opts) => serve_attach(req, opts, backend).await,
                        Err(err) => err.into_response(),
                    }
                }
            }),
        )
        .route(
            "/portforward",
            any(move |req: Request| {
                let dialer = dialer.clone();
                async move {
                    let query = req.uri().query().unwrap_or("");
                    match PortForwardOptions::from_query("default/web", query) {
                        Ok(opts) => serve_port_forward(req, opts, dialer).await,
                        Err(err) => err.into_response(),
                    }
                }
            }),
        )
}

/// Serves `router` over plain HTTP on 127.0.0.1.
pub async fn serve(router: Router) -> Result<(SocketAddr, Task)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok((addr, Task(task)))
}

/// A pod's web server: answers one request per connection, then closes it.
pub async fn http_server(body: &'static str) -> Result<(SocketAddr, Task)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Ok((addr, Task(task)))
}

/// A pod's echo server: reads to EOF, answers it upper-cased, closes. Only a client that
/// half-closes gets an answer.
pub async fn upper_to_eof_server() -> Result<(SocketAddr, Task)> {
    echo_server(true).await
}

/// A pod's echo server: answers the first read upper-cased and closes.
pub async fn upper_once_server() -> Result<(SocketAddr, Task)> {
    echo_server(false).await
}

async fn echo_server(to_eof: bool) -> Result<(SocketAddr, Task)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut data = Vec::new();
                if to_eof {
                    if conn.read_to_end(&mut data).await.is_err() {
                        return;
                    }
                } else {
                    let mut buf = [0u8; 4096];
                    match conn.read(&mut buf).await {
                        Ok(n) => data.extend_from_slice(&buf[..n]),
                        Err(_) => return,
                    }
                }
                let _ = conn.write_all(&data.to_ascii_uppercase()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Ok((addr, Task(task)))
}

pub type Ws = WebSocketStream<TcpStream>;

/// Opens a websocket to `path` offering `protocols`; returns it and the chosen protocol.
pub async fn ws_connect(addr: SocketAddr, path: &str, protocols: &[&str]) -> Result<(Ws, String)> {
    let mut req = format!("ws://{addr}{path}").into_client_request()?;
    if !protocols.is_empty() {
        req.headers_mut()
            .insert("sec-websocket-protocol", protocols.join(", ").parse()?);
    }
    let tcp = TcpStream::connect(addr).await?;
    let (ws, resp) = within(
        "websocket handshake",
        tokio_tungstenite::client_async(req, tcp),
    )
    .await?
    .context("websocket handshake")?;
    let proto = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default();
    Ok((ws, proto))
}

/// What a channel-protocol session delivered, by channel, up to the server's close.
#[derive(Debug, Default)]
pub struct Channels {
    pub data: HashMap<u8, Vec<u8>>,
    /// Every message in order, as (channel, payload).
    pub messages: Vec<(u8, Vec<u8>)>,
    pub closed: bool,
}

impl Channels {
    pub fn text(&self, channel: u8) -> String {
        String::from_utf8_lossy(self.data.get(&channel).map(Vec::as_slice).unwrap_or(&[]))
            .into_owned()
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::from_slice(self.data.get(&3).map(Vec::as_slice).unwrap_or(b"null"))
            .unwrap_or(serde_json::Value::Null)
    }
}

/// Reads binary channel messages until the server closes.
pub async fn read_channels(ws: &mut Ws) -> Result<Channels> {
    let mut out = Channels::default();
    loop {
        let msg = within("websocket message", ws.next()).await?;
        match msg {
            None => break,
            Some(Err(err)) => bail!("websocket read: {err}"),
            Some(Ok(Message::Binary(b))) => {
                let (ch, data) = b.split_first().ok_or_else(|| anyhow!("empty message"))?;
                out.data.entry(*ch).or_default().extend_from_slice(data);
                out.messages.push((*ch, data.to_vec()));
            }
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map(|f| u16::from(f.code));
                if code != Some(1000) {
                    bail!("server closed with {code:?}, want 1000");
                }
                out.closed = true;
            }
            Some(Ok(Message::Text(t))) => bail!("unexpected text message {t:?}"),
            Some(Ok(_)) => {}
        }
    }
    Ok(out)
}

pub async fn ws_send(ws: &mut Ws, channel: u8, data: &[u8]) -> Result<()> {
    let mut frame = vec![channel];
    frame.extend_from_slice(data);
    within("websocket send", ws.send(Message::Binary(frame.into()))).await??;
    Ok(())
}

/// Sends an HTTP/1.1 upgrade request to SPDY/3.1 and reads the response head, leaving
/// the connection positioned at the first SPDY byte.
pub async fn spdy_upgrade(
    addr: SocketAddr,
    path: &str,
    versions: &[&str],
) -> Result<(u16, HashMap<String, Vec<String>>, TcpStream)> {
    let mut conn = TcpStream::connect(addr).await?;
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n"
    );
    for v in versions {
        req.push_str(&format!("X-Stream-Protocol-Version: {v}\r\n"));
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes()).await?;
    // Byte by byte, so no SPDY byte is swallowed with the head.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if within("response head", conn.read(&mut b)).await?? == 0 {
            bail!(
                "connection closed in the response head: {:?}",
                String::from_utf8_lossy(&head)
            );
        }
        head.push(b[0]);
    }
    let head = String::from_utf8(head)?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line in {head:?}"))?;
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        if let Some((k, v)) = line.split_once(':') {
            headers
                .entry(k.trim().to_ascii_lowercase())
                .or_default()
                .push(v.trim().to_string());
        }
    }
    Ok((status, headers, conn))
}

/// The byte transport under a test SPDY client.
pub enum Transport {
    Tcp(TcpStream),
    /// SPDY inside websocket binary messages, as kubectl tunnels it.
    Ws(Box<Ws>),
}

/// A sequential SPDY client: the test opens streams and sends frames, then waits for
/// conditions while every frame read updates per-stream state.
pub struct SpdyClient {
    transport: Transport,
    encoder: FrameEncoder,
    decoder: FrameDecoder,
    buf: BytesMut,
    next_id: u32,
    pub replied: HashSet<u32>,
    pub data: HashMap<u32, Vec<u8>>,
    pub fin: HashSet<u32>,
    pub reset: HashSet<u32>,
    pub pings: Vec<u32>,
    pub goaway: bool,
    pub eof: bool,
}

impl SpdyClient {
    pub fn new(transport: Transport) -> Self {
        Self {
            transport,
            encoder: FrameEncoder::new(),
            decoder: FrameDecoder::new(),
            buf: BytesMut::new(),
            next_id: 1,
            replied: HashSet::new(),
            data: HashMap::new(),
            fin: HashSet::new(),
            reset: HashSet::new(),
            pings: Vec::new(),
            goaway: false,
            eof: false,
        }
    }

    pub async fn send(&mut self, frame: Frame) -> Result<()> {
        let mut wire = BytesMut::new();
        self.encoder.encode(&frame, &mut wire)?;
        match &mut self.transport {
            Transport::Tcp(c) => c.write_all(&wire).await?,
            Transport::Ws(ws) => ws.send(Message::Binary(wire.freeze())).await?,
        }
        Ok(())
    }

    /// Opens a stream with these headers and returns its id.
    pub async fn open(&mut self, headers: &[(&str, &str)]) -> Result<u32> {
        let id = self.next_id;
        self.next_id += 2;
        let headers = headers
            .iter()
            .fold(Headers::new(), |h, (k, v)| h.with(k, v));
        self.send(Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers,
        })
        .await?;
        Ok(id)
    }

    /// Opens a stream and waits for the server's SYN_REPLY, as client-go does.
    pub async fn open_and_wait(&mut self, headers: &[(&str, &str)]) -> Result<u32> {
        let id = self.open(headers).await?;
        self.until(&format!("reply to stream {id}"), |c| {
            c.replied.contains(&id)
        })
        .await?;
        Ok(id)
    }

    pub async fn write(&mut self, id: u32, data: &[u8], fin: bool) -> Result<()> {
        self.send(Frame::data(id, Bytes::copy_from_slice(data), fin))
            .await
    }

    async fn read_more(&mut self) -> Result<bool> {
        match &mut self.transport {
            Transport::Tcp(c) => {
                let mut chunk = [0u8; 8192];
                let n = c.read(&mut chunk).await?;
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n > 0)
            }
            Transport::Ws(ws) => loop {
                match ws.next().await {
                    None | Some(Ok(Message::Close(_))) => return Ok(false),
                    Some(Ok(Message::Binary(b))) => {
                        self.buf.extend_from_slice(&b);
                        return Ok(true);
                    }
                    Some(Ok(Message::Text(_))) => bail!("text message in the SPDY tunnel"),
                    Some(Ok(_)) => {}
                    Some(Err(err)) => bail!("websocket read: {err}"),
                }
            },
        }
    }

    /// Reads frames until `done` holds.
    pub async fn until(&mut self, what: &str, done: impl Fn(&Self) -> bool) -> Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(self) {
            if let Some(frame) = self.decoder.decode(&mut self.buf)? {
                self.apply(frame);
                continue;
            }
            if self.eof {
                bail!("connection ended before {what}");
            }
            match tokio::time::timeout_at(deadline, self.read_more()).await {
                Err(_) => bail!("timed out waiting for {what}"),
                Ok(more) => self.eof = !more?,
            }
        }
        Ok(())
    }

    fn apply(&mut self, frame: Frame) {
        let fin = frame.is_fin();
        match frame {
            Frame::SynReply { stream_id, .. } => {
                self.replied.insert(stream_id);
                if fin {
                    self.fin.insert(stream_id);
                }
            }
            Frame::Data {
                stream_id, data, ..
            } => {
                self.data
                    .entry(stream_id)
                    .or_default()
                    .extend_from_slice(&data);
                if fin {
                    self.fin.insert(stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                self.reset.insert(stream_id);
            }
            Frame::Ping { id } => self.pings.push(id),
            Frame::GoAway { .. } => self.goaway = true,
            _ => {}
        }
    }

    pub fn text(&self, id: u32) -> String {
        String::from_utf8_lossy(self.data.get(&id).map(Vec::as_slice).unwrap_or(&[])).into_owned()
    }
}
