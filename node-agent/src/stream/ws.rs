//! The websocket side: the channel framing of `*.channel.k8s.io` (a channel byte, or a
//! channel digit and base64 for the `base64.` variants), the writer task every websocket
//! session uses, and a byte-stream view of a websocket for SPDY tunnelled through it.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use base64::Engine as _;
use bytes::{Buf, Bytes};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

/// How channel messages are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// Binary messages: the channel byte, then the data.
    Binary,
    /// Text messages: the channel as an ASCII digit, then the data in base64.
    Base64,
}

/// One channel message.
pub(crate) fn encode(encoding: Encoding, channel: u8, data: &[u8]) -> Message {
    match encoding {
        Encoding::Binary => {
            let mut frame = Vec::with_capacity(data.len() + 1);
            frame.push(channel);
            frame.extend_from_slice(data);
            Message::Binary(frame.into())
        }
        Encoding::Base64 => {
            let mut text = String::with_capacity(1 + data.len().div_ceil(3) * 4);
            text.push(char::from(b'0'.wrapping_add(channel)));
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
            Message::text(text)
        }
    }
}

/// The channel and data of a data message; `None` for control messages, empty messages
/// and undecodable base64.
pub(crate) fn decode(encoding: Encoding, msg: Message) -> Option<(u8, Bytes)> {
    let mut raw: Bytes = match msg {
        Message::Binary(b) => b,
        Message::Text(t) => Bytes::from(t),
        _ => return None,
    };
    if raw.is_empty() {
        return None;
    }
    let channel = raw.get_u8();
    match encoding {
        Encoding::Binary => Some((channel, raw)),
        Encoding::Base64 => {
            let data = base64::engine::general_purpose::STANDARD
                .decode(&raw)
                .map_err(|err| debug!(%err, "dropping a message with bad base64"))
                .ok()?;
            Some((channel.wrapping_sub(b'0'), data.into()))
        }
    }
}

/// What a session asks the websocket writer to do.
pub(crate) enum WsOut {
    /// Send data on a channel.
    Data(u8, Bytes),
    /// Send a normal close and stop.
    Close,
}

/// Owns the write half: sends channel messages in order, then a close frame.
pub(crate) async fn write_loop<S>(
    mut sink: SplitSink<WebSocketStream<S>, Message>,
    mut rx: mpsc::Receiver<WsOut>,
    encoding: Encoding,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(out) = rx.recv().await {
        match out {
            WsOut::Data(channel, data) => {
                if let Err(err) = sink.send(encode(encoding, channel, &data)).await {
                    debug!(%err, "websocket write failed");
                    return;
                }
            }
            WsOut::Close => break,
        }
    }
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(close))).await;
}

/// A channel's writer: data for one channel of a session's websocket.
#[derive(Clone)]
pub(crate) struct ChannelWriter {
    pub channel: u8,
    pub tx: mpsc::Sender<WsOut>,
}

impl ChannelWriter {
    pub async fn send(&self, data: Bytes) -> io::Result<()> {
        self.tx
            .send(WsOut::Data(self.channel, data))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "websocket is closed"))
    }
}

/// The read half of a websocket as a byte stream: binary message payloads back to back
/// (client-go's `TunnelingConnection` writes each SPDY write as one message, and frames
/// may straddle messages). A close or the end of the connection reads as EOF.
pub(crate) struct WsByteReader<S> {
    pub stream: SplitStream<WebSocketStream<S>>,
    pub buf: Bytes,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsByteReader<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.buf.is_empty() {
                let n = out.remaining().min(self.buf.len());
                let chunk = self.buf.split_to(n);
                out.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            match ready!(self.stream.poll_next_unpin(cx)) {
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(b))) => self.buf = b,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text message in a binary tunnel",
                    )))
                }
                Some(Ok(_)) => {}
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    return Poll::Ready(Ok(()))
                }
                Some(Err(err)) => return Poll::Ready(Err(io::Error::other(err))),
            }
        }
    }
}

/// The write half of a websocket as a byte stream: each write is one binary message;
/// shutdown sends the close frame.
pub(crate) struct WsByteWriter<S> {
    pub sink: SplitSink<WebSocketStream<S>, Message>,
}

fn ws_io(err: WsError) -> io::Error {
    match err {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "websocket is closed")
        }
        other => io::Error::other(other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsByteWriter<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.sink.poll_ready_unpin(cx)).map_err(ws_io)?;
        self.sink
            .start_send_unpin(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(ws_io)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.sink.poll_flush_unpin(cx).map_err(ws_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(self.sink.poll_close_unpin(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(err) => Poll::Ready(Err(ws_io(err))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_channel_framing() {
        let m = encode(Encoding::Binary, 1, b"hello");
        assert_eq!(m, Message::Binary(Bytes::from_static(b"\x01hello")));
        assert_eq!(
            decode(Encoding::Binary, m),
            Some((1, Bytes::from_static(b"hello")))
        );
        assert_eq!(
            decode(
                Encoding::Binary,
                Message::Binary(Bytes::from_static(&[255, 0]))
            ),
            Some((255, Bytes::from_static(&[0])))
        );
        assert_eq!(
            decode(Encoding::Binary, Message::Binary(Bytes::new())),
            None
        );
        assert_eq!(decode(Encoding::Binary, Message::Ping(Bytes::new())), None);
    }

    #[test]
    fn base64_channel_framing() {
        // The example of k8s.io/apiserver wsstream: "foo\n" on stdin.
        let m = encode(Encoding::Base64, 0, b"foo\n");
        assert_eq!(m, Message::text("0Zm9vCg=="));
        assert_eq!(
            decode(Encoding::Base64, Message::text("1Cg==")),
            Some((1, Bytes::from_static(b"\n")))
        );
        assert_eq!(decode(Encoding::Base64, Message::text("0!!!")), None);
    }
}
