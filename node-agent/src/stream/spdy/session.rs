//! The server side of one SPDY connection: a reader task that routes the client's frames
//! to its streams and a writer task that owns the connection's write half and header
//! compression context.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::debug;

use super::frame::{rst, FLAG_FIN};
use super::{Frame, FrameEncoder, FrameReader, Headers};

/// Frames queued per stream before the reader waits for the stream's consumer.
const STREAM_QUEUE: usize = 64;
/// The largest DATA payload this end sends in one frame.
const MAX_DATA: usize = 32 * 1024;
/// How long `close` waits for the client to hang up after the GOAWAY.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// A client-opened stream, waiting for the handler to [`StreamOutput::reply`] or reset it.
pub(crate) struct IncomingStream {
    pub id: u32,
    pub headers: Headers,
    pub input: StreamInput,
    pub output: StreamOutput,
}

impl IncomingStream {
    /// The `streamtype` header.
    pub fn stream_type(&self) -> &str {
        self.headers.get("streamtype").unwrap_or("")
    }
}

enum Inbound {
    Data(Bytes),
    Fin,
}

/// What the client sent on a stream next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Input {
    Data(Bytes),
    /// The client half-closed the stream (FIN); `Gone` follows once it is reset or the
    /// connection ends.
    End,
    /// The stream was reset or the connection ended.
    Gone,
}

/// The client-to-server half of a stream.
pub(crate) struct StreamInput {
    rx: mpsc::Receiver<Inbound>,
}

impl StreamInput {
    pub async fn recv(&mut self) -> Input {
        match self.rx.recv().await {
            Some(Inbound::Data(b)) => Input::Data(b),
            Some(Inbound::Fin) => Input::End,
            None => Input::Gone,
        }
    }
}

enum Outgoing {
    Frame(Frame),
    Shutdown,
}

/// The server-to-client half of a stream; clones share the connection's writer.
#[derive(Clone)]
pub(crate) struct StreamOutput {
    id: u32,
    tx: mpsc::Sender<Outgoing>,
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "spdy connection is closed")
}

impl StreamOutput {
    async fn frame(&self, frame: Frame) -> io::Result<()> {
        self.tx
            .send(Outgoing::Frame(frame))
            .await
            .map_err(|_| gone())
    }

    /// Accepts the stream (SYN_REPLY with no headers, as the kubelet sends).
    pub async fn reply(&self) -> io::Result<()> {
        self.frame(Frame::SynReply {
            stream_id: self.id,
            flags: 0,
            headers: Headers::new(),
        })
        .await
    }

    /// Sends bytes, split into frames of at most 32 KiB.
    pub async fn send(&self, mut data: Bytes) -> io::Result<()> {
        while !data.is_empty() {
            let chunk = data.split_to(data.len().min(MAX_DATA));
            self.frame(Frame::data(self.id, chunk, false)).await?;
        }
        Ok(())
    }

    /// Half-closes the stream: an empty DATA frame with FIN.
    pub async fn finish(&self) -> io::Result<()> {
        self.frame(Frame::data(self.id, Bytes::new(), true)).await
    }

    /// Aborts the stream.
    pub async fn reset(&self, status: u32) -> io::Result<()> {
        self.frame(Frame::RstStream {
            stream_id: self.id,
            status,
        })
        .await
    }
}

/// One server-side SPDY connection.
pub(crate) struct Session {
    /// Streams the client opens, in order; ends when the connection does.
    pub incoming: mpsc::Receiver<IncomingStream>,
    out: mpsc::Sender<Outgoing>,
    last_stream: Arc<AtomicU32>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Session {
    /// Starts serving a connection whose halves carry nothing but SPDY frames.
    pub fn start<R, W>(reader: R, writer: W) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (out, out_rx) = mpsc::channel(STREAM_QUEUE);
        let (incoming_tx, incoming) = mpsc::channel(16);
        let last_stream = Arc::new(AtomicU32::new(0));
        let writer = tokio::spawn(write_loop(writer, out_rx));
        let reader = tokio::spawn(read_loop(
            reader,
            incoming_tx,
            out.clone(),
            last_stream.clone(),
        ));
        Self {
            incoming,
            out,
            last_stream,
            reader,
            writer,
        }
    }

    /// Says GOAWAY, flushes and shuts the write half, then gives the client a moment to
    /// hang up before dropping the connection.
    pub async fn close(self) {
        let Session {
            incoming,
            out,
            last_stream,
            mut reader,
            writer,
        } = self;
        drop(incoming);
        let goaway = Frame::GoAway {
            last_good_stream_id: last_stream.load(Ordering::Relaxed),
            status: 0,
        };
        let _ = out.send(Outgoing::Frame(goaway)).await;
        let _ = out.send(Outgoing::Shutdown).await;
        drop(out);
        let _ = writer.await;
        if tokio::time::timeout(CLOSE_GRACE, &mut reader)
            .await
            .is_err()
        {
            reader.abort();
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Outgoing>) {
    let mut encoder = FrameEncoder::new();
    let mut buf = BytesMut::with_capacity(MAX_DATA + 64);
    while let Some(cmd) = rx.recv().await {
        let frame = match cmd {
            Outgoing::Frame(frame) => frame,
            Outgoing::Shutdown => break,
        };
        buf.clear();
        if let Err(err) = encoder.encode(&frame, &mut buf) {
            debug!(?err, "dropping a spdy frame that does not encode");
            continue;
        }
        if let Err(err) = w.write_all(&buf).await {
            debug!(?err, "spdy connection write failed");
            return;
        }
        if rx.is_empty() {
            if let Err(err) = w.flush().await {
                debug!(?err, "spdy connection flush failed");
                return;
            }
        }
    }
    let _ = w.flush().await;
    let _ = w.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    r: R,
    incoming: mpsc::Sender<IncomingStream>,
    out: mpsc::Sender<Outgoing>,
    last_stream: Arc<AtomicU32>,
) {
    let mut frames = FrameReader::new(r);
    let mut streams: HashMap<u32, mpsc::Sender<Inbound>> = HashMap::new();
    loop {
        let frame = match frames.next().await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(err) => {
                debug!(%err, "spdy connection read failed");
                break;
            }
        };
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => {
                // Client streams are odd and increasing (spdystream's validateStreamId).
                if stream_id % 2 == 0 || stream_id <= last_stream.load(Ordering::Relaxed) {
                    debug!(stream_id, "refusing a stream id out of sequence");
                    let reset = Frame::RstStream {
                        stream_id,
                        status: rst::PROTOCOL_ERROR,
                    };
                    let _ = out.send(Outgoing::Frame(reset)).await;
                    continue;
                }
                last_stream.store(stream_id, Ordering::Relaxed);
                streams.retain(|_, tx| !tx.is_closed());
                let (tx, rx) = mpsc::channel(STREAM_QUEUE);
                if flags & FLAG_FIN != 0 {
                    let _ = tx.try_send(Inbound::Fin);
                }
                streams.insert(stream_id, tx);
                let stream = IncomingStream {
                    id: stream_id,
                    headers,
                    input: StreamInput { rx },
                    output: StreamOutput {
                        id: stream_id,
                        tx: out.clone(),
                    },
                };
                if incoming.send(stream).await.is_err() {
                    streams.remove(&stream_id);
                    let reset = Frame::RstStream {
                        stream_id,
                        status: rst::REFUSED_STREAM,
                    };
                    let _ = out.send(Outgoing::Frame(reset)).await;
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if let Some(tx) = streams.get(&stream_id) {
                    if !data.is_empty() {
                        let _ = tx.send(Inbound::Data(data)).await;
                    }
                    if flags & FLAG_FIN != 0 {
                        let _ = tx.send(Inbound::Fin).await;
                    }
                }
            }
            Frame::Headers {
                stream_id, flags, ..
            } => {
                if flags & FLAG_FIN != 0 {
                    if let Some(tx) = streams.get(&stream_id) {
                        let _ = tx.send(Inbound::Fin).await;
                    }
                }
            }
            Frame::RstStream { stream_id, status } => {
                debug!(stream_id, status, "client reset a stream");
                streams.remove(&stream_id);
            }
            Frame::Ping { id } => {
                // Odd ids are the client's own pings; even ones would answer ours.
                if id % 2 == 1 {
                    let _ = out.send(Outgoing::Frame(Frame::Ping { id })).await;
                }
            }
            Frame::GoAway { .. } => debug!("client sent GOAWAY"),
            Frame::SynReply { .. }
            | Frame::Settings { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Unknown { .. } => {}
        }
    }
    // The client is gone: shut the write half too, so handlers see a closed connection.
    let _ = out.send(Outgoing::Shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Client {
        enc: FrameEncoder,
        frames: FrameReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
        w: tokio::io::WriteHalf<tokio::io::DuplexStream>,
    }

    impl Client {
        async fn send(&mut self, f: Frame) {
            let mut buf = BytesMut::new();
            self.enc.encode(&f, &mut buf).unwrap();
            self.w.write_all(&buf).await.unwrap();
        }
        async fn next(&mut self) -> Option<Frame> {
            tokio::time::timeout(Duration::from_secs(5), self.frames.next())
                .await
                .expect("frame in time")
                .unwrap()
        }
    }

    fn pair() -> (Session, Client) {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        let session = Session::start(ar, aw);
        let client = Client {
            enc: FrameEncoder::new(),
            frames: FrameReader::new(br),
            w: bw,
        };
        (session, client)
    }

    fn syn(id: u32, ty: &str) -> Frame {
        Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: Headers::new().with("streamtype", ty),
        }
    }

    #[tokio::test]
    async fn routes_streams_data_and_pings() {
        let (mut session, mut client) = pair();
        client.send(syn(1, "stdin")).await;
        let mut s = session.incoming.recv().await.unwrap();
        assert_eq!((s.id, s.stream_type()), (1, "stdin"));
        s.output.reply().await.unwrap();
        assert!(matches!(
            client.next().await,
            Some(Frame::SynReply { stream_id: 1, .. })
        ));

        client.send(Frame::data(1, &b"abc"[..], false)).await;
        client.send(Frame::data(1, Bytes::new(), true)).await;
        assert_eq!(
            s.input.recv().await,
            Input::Data(Bytes::from_static(b"abc"))
        );
        assert_eq!(s.input.recv().await, Input::End);

        client.send(Frame::Ping { id: 1 }).await;
        assert_eq!(client.next().await, Some(Frame::Ping { id: 1 }));

        // Large writes are split; FIN arrives last.
        s.output.send(Bytes::from(vec![7u8; 70_000])).await.unwrap();
        s.output.finish().await.unwrap();
        let mut got = 0;
        loop {
            match client.next().await.unwrap() {
                Frame::Data { data, flags, .. } => {
                    assert!(data.len() <= MAX_DATA);
                    got += data.len();
                    if flags & FLAG_FIN != 0 {
                        break;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, 70_000);

        // Reset makes the input report Gone.
        client
            .send(Frame::RstStream {
                stream_id: 1,
                status: rst::CANCEL,
            })
            .await;
        assert_eq!(s.input.recv().await, Input::Gone);
    }

    #[tokio::test]
    async fn refuses_out_of_order_ids_and_closes_with_goaway() {
        let (mut session, mut client) = pair();
        client.send(syn(3, "data")).await;
        let s = session.incoming.recv().await.unwrap();
        client.send(syn(1, "data")).await;
        assert_eq!(
            client.next().await,
            Some(Frame::RstStream {
                stream_id: 1,
                status: rst::PROTOCOL_ERROR
            })
        );
        drop(s);
        let close = tokio::spawn(session.close());
        assert_eq!(
            client.next().await,
            Some(Frame::GoAway {
                last_good_stream_id: 3,
                status: 0
            })
        );
        // The server shut its write half: the client reads EOF, hangs up, close returns.
        assert_eq!(client.next().await, None);
        drop(client);
        close.await.unwrap();
    }

    #[tokio::test]
    async fn connection_end_reaches_every_stream() {
        let (mut session, mut client) = pair();
        client.send(syn(1, "data")).await;
        let mut s = session.incoming.recv().await.unwrap();
        drop(client);
        assert_eq!(s.input.recv().await, Input::Gone);
        assert!(session.incoming.recv().await.is_none());
    }
}
