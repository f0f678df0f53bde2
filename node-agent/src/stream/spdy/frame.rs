//! SPDY/3.1 frames: their wire layout, an encoder and an incremental decoder.
//!
//! ```text
//! control: |1| version (15) | type (16) | flags (8) | length (24) | payload
//! data:    |0| stream id (31)           | flags (8) | length (24) | payload
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{Error, HeaderCompressor, HeaderDecompressor, Headers, Result};

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;
/// The FIN flag, on DATA, SYN_STREAM, SYN_REPLY and HEADERS.
pub const FLAG_FIN: u8 = 0x01;
/// The UNIDIRECTIONAL flag of SYN_STREAM.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// The largest payload a frame's 24-bit length can describe.
pub const MAX_FRAME_PAYLOAD: usize = 0x00ff_ffff;

/// RST_STREAM status codes (SPDY/3 section 2.6.3).
pub mod rst {
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// INVALID_STREAM.
    pub const INVALID_STREAM: u32 = 2;
    /// REFUSED_STREAM.
    pub const REFUSED_STREAM: u32 = 3;
    /// CANCEL.
    pub const CANCEL: u32 = 5;
    /// INTERNAL_ERROR.
    pub const INTERNAL_ERROR: u32 = 6;
}

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// One SPDY/3.1 frame, header blocks decompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Opens a stream.
    SynStream {
        /// The new stream's id: odd from the client, even from the server.
        stream_id: u32,
        /// The stream this one is associated with, 0 for none.
        associated_to: u32,
        /// 0 (highest) to 7.
        priority: u8,
        /// FIN and UNIDIRECTIONAL bits.
        flags: u8,
        /// The stream's headers (`streamtype`, `port`, `requestid` for Kubernetes).
        headers: Headers,
    },
    /// Accepts a stream the peer opened.
    SynReply {
        /// The accepted stream.
        stream_id: u32,
        /// FIN bit.
        flags: u8,
        /// Reply headers (empty from the kubelet).
        headers: Headers,
    },
    /// Aborts a stream.
    RstStream {
        /// The aborted stream.
        stream_id: u32,
        /// Why, one of [`rst`].
        status: u32,
    },
    /// Connection settings: (flags, id, value) triples.
    Settings {
        /// CLEAR_SETTINGS bit.
        flags: u8,
        /// The entries.
        entries: Vec<(u8, u32, u32)>,
    },
    /// A ping; the receiver echoes the peer's pings.
    Ping {
        /// Odd from the client, even from the server.
        id: u32,
    },
    /// The sender opens no more streams.
    GoAway {
        /// The last stream the sender accepted.
        last_good_stream_id: u32,
        /// 0 OK, 1 PROTOCOL_ERROR, 2 INTERNAL_ERROR.
        status: u32,
    },
    /// More headers for an open stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// FIN bit.
        flags: u8,
        /// The headers.
        headers: Headers,
    },
    /// Flow-control credit (which the Kubernetes peers neither send nor honour).
    WindowUpdate {
        /// The stream, 0 for the whole connection.
        stream_id: u32,
        /// The credit in bytes.
        delta: u32,
    },
    /// A control frame of a type SPDY/3.1 does not define; ignored.
    Unknown {
        /// Its type.
        frame_type: u16,
    },
    /// Stream bytes.
    Data {
        /// The stream.
        stream_id: u32,
        /// FIN bit: the sender is done writing to this stream.
        flags: u8,
        /// The bytes, possibly empty.
        data: Bytes,
    },
}

impl Frame {
    /// A DATA frame.
    pub fn data(stream_id: u32, data: impl Into<Bytes>, fin: bool) -> Self {
        Frame::Data {
            stream_id,
            flags: if fin { FLAG_FIN } else { 0 },
            data: data.into(),
        }
    }

    /// Whether the frame carries FIN.
    pub fn is_fin(&self) -> bool {
        match self {
            Frame::SynStream { flags, .. }
            | Frame::SynReply { flags, .. }
            | Frame::Headers { flags, .. }
            | Frame::Data { flags, .. } => flags & FLAG_FIN != 0,
            _ => false,
        }
    }
}

/// Writes frames, compressing header blocks through this end's one context.
#[derive(Debug, Default)]
pub struct FrameEncoder {
    compressor: HeaderCompressor,
}

impl FrameEncoder {
    /// A fresh encoder for one connection direction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `frame`'s wire form to `dst`.
    pub fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<()> {
        match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                check_len(data.len())?;
                dst.put_u32(stream_id & 0x7fff_ffff);
                dst.put_u32(((*flags as u32) << 24) | data.len() as u32);
                dst.put_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                let block = self.compressor.compress(headers)?;
                control(dst, SYN_STREAM, *flags, 10 + block.len())?;
                dst.put_u32(stream_id & 0x7fff_ffff);
                dst.put_u32(associated_to & 0x7fff_ffff);
                dst.put_u8((priority & 0x7) << 5);
                dst.put_u8(0); // slot
                dst.put_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                let block = self.compressor.compress(headers)?;
                control(dst, SYN_REPLY, *flags, 4 + block.len())?;
                dst.put_u32(stream_id & 0x7fff_ffff);
                dst.put_slice(&block);
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let block = self.compressor.compress(headers)?;
                control(dst, HEADERS, *flags, 4 + block.len())?;
                dst.put_u32(stream_id & 0x7fff_ffff);
                dst.put_slice(&block);
            }
            Frame::RstStream { stream_id, status } => {
                control(dst, RST_STREAM, 0, 8)?;
                dst.put_u32(stream_id & 0x7fff_ffff);
                dst.put_u32(*status);
            }
            Frame::Settings { flags, entries } => {
                control(dst, SETTINGS, *flags, 4 + 8 * entries.len())?;
                dst.put_u32(entries.len() as u32);
                for (flag, id, value) in entries {
                    dst.put_u32(((*flag as u32) << 24) | (id & 0x00ff_ffff));
                    dst.put_u32(*value);
                }
            }
            Frame::Ping { id } => {
                control(dst, PING, 0, 4)?;
                dst.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control(dst, GOAWAY, 0, 8)?;
                dst.put_u32(last_good_stream_id & 0x7fff_ffff);
                dst.put_u32(*status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control(dst, WINDOW_UPDATE, 0, 8)?;
                dst.put_u32(stream_id & 0x7fff_ffff);
                dst.put_u32(delta & 0x7fff_ffff);
            }
            Frame::Unknown { frame_type } => {
                return Err(Error::InvalidFrame(format!(
                    "cannot encode unknown control frame type {frame_type}"
                )))
            }
        }
        Ok(())
    }
}

fn check_len(len: usize) -> Result<()> {
    if len > MAX_FRAME_PAYLOAD {
        return Err(Error::InvalidFrame(format!(
            "frame payload of {len} bytes exceeds {MAX_FRAME_PAYLOAD}"
        )));
    }
    Ok(())
}

fn control(dst: &mut BytesMut, frame_type: u16, flags: u8, len: usize) -> Result<()> {
    check_len(len)?;
    dst.reserve(8 + len);
    dst.put_u16(0x8000 | VERSION);
    dst.put_u16(frame_type);
    dst.put_u32(((flags as u32) << 24) | len as u32);
    Ok(())
}

/// Parses frames out of a byte buffer, decompressing header blocks through the peer's
/// one context.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    decompressor: HeaderDecompressor,
}

impl FrameDecoder {
    /// A fresh decoder for one connection direction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one whole frame off the front of `src`, or returns `None` (leaving `src`
    /// alone) when it does not hold a whole frame yet.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>> {
        if src.len() < 8 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([0, src[5], src[6], src[7]]) as usize;
        if src.len() < 8 + len {
            src.reserve(8 + len - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(8 + len).freeze();
        let first = frame.get_u32();
        let flags_len = frame.get_u32();
        let flags = (flags_len >> 24) as u8;
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: first & 0x7fff_ffff,
                flags,
                data: frame,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(Error::InvalidFrame(format!(
                "control frame of SPDY version {version}, want {VERSION}"
            )));
        }
        let frame_type = (first & 0xffff) as u16;
        let need = |n: usize| -> Result<()> {
            if len < n {
                return Err(Error::InvalidFrame(format!(
                    "control frame type {frame_type} is {len} bytes, needs {n}"
                )));
            }
            Ok(())
        };
        Ok(Some(match frame_type {
            SYN_STREAM => {
                need(10)?;
                let stream_id = frame.get_u32() & 0x7fff_ffff;
                let associated_to = frame.get_u32() & 0x7fff_ffff;
                let priority = frame.get_u8() >> 5;
                let _slot = frame.get_u8();
                let headers = self.decompressor.decompress(&frame)?;
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    flags,
                    headers,
                }
            }
            SYN_REPLY | HEADERS => {
                need(4)?;
                let stream_id = frame.get_u32() & 0x7fff_ffff;
                let headers = self.decompressor.decompress(&frame)?;
                if frame_type == SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            RST_STREAM => {
                need(8)?;
                Frame::RstStream {
                    stream_id: frame.get_u32() & 0x7fff_ffff,
                    status: frame.get_u32(),
                }
            }
            SETTINGS => {
                need(4)?;
                let n = frame.get_u32() as usize;
                if frame.remaining() < n.saturating_mul(8) {
                    return Err(Error::InvalidFrame(format!(
                        "SETTINGS claims {n} entries in {len} bytes"
                    )));
                }
                let entries = (0..n)
                    .map(|_| {
                        let id = frame.get_u32();
                        ((id >> 24) as u8, id & 0x00ff_ffff, frame.get_u32())
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            PING => {
                need(4)?;
                Frame::Ping {
                    id: frame.get_u32(),
                }
            }
            GOAWAY => {
                need(4)?;
                let last_good_stream_id = frame.get_u32() & 0x7fff_ffff;
                // SPDY/2 peers send no status.
                let status = if frame.remaining() >= 4 {
                    frame.get_u32()
                } else {
                    0
                };
                Frame::GoAway {
                    last_good_stream_id,
                    status,
                }
            }
            WINDOW_UPDATE => {
                need(8)?;
                Frame::WindowUpdate {
                    stream_id: frame.get_u32() & 0x7fff_ffff,
                    delta: frame.get_u32() & 0x7fff_ffff,
                }
            }
            other => Frame::Unknown { frame_type: other },
        }))
    }
}

/// Reads whole frames from a byte stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    reader: R,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads from `reader`, which carries nothing but frames from here on.
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            buf: BytesMut::with_capacity(16 * 1024),
            decoder: FrameDecoder::new(),
        }
    }

    /// The next frame, or `None` at a clean end of stream between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf)? {
                return Ok(Some(frame));
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            if self.reader.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(Error::InvalidFrame(format!(
                    "connection ended inside a frame ({} bytes pending)",
                    self.buf.len()
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frames: &[Frame]) -> Vec<Frame> {
        let mut enc = FrameEncoder::new();
        let mut wire = BytesMut::new();
        for f in frames {
            enc.encode(f, &mut wire).unwrap();
        }
        let mut dec = FrameDecoder::new();
        let mut out = vec![];
        // Feed one byte at a time: the decoder must wait for whole frames.
        let mut buf = BytesMut::new();
        for b in wire {
            buf.put_u8(b);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        assert!(buf.is_empty());
        out
    }

    #[test]
    fn every_frame_type_round_trips() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 3,
                flags: 0,
                headers: Headers::new().with("streamtype", "error"),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: Headers::new(),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 1,
                priority: 7,
                flags: FLAG_FIN | FLAG_UNIDIRECTIONAL,
                headers: Headers::new().with("streamtype", "data").with("port", "80"),
            },
            Frame::data(3, &b"hello"[..], false),
            Frame::data(3, Bytes::new(), true),
            Frame::RstStream {
                stream_id: 3,
                status: rst::CANCEL,
            },
            Frame::Settings {
                flags: 1,
                entries: vec![(0, 7, 65536), (1, 4, 100)],
            },
            Frame::Ping { id: 1 },
            Frame::GoAway {
                last_good_stream_id: 3,
                status: 0,
            },
            Frame::Headers {
                stream_id: 1,
                flags: FLAG_FIN,
                headers: Headers::new().with("a", "b"),
            },
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 1 << 20,
            },
        ];
        assert_eq!(round_trip(&frames), frames);
    }

    #[test]
    fn wire_layout_matches_the_spec() {
        let mut wire = BytesMut::new();
        let mut enc = FrameEncoder::new();
        enc.encode(&Frame::data(5, &b"xy"[..], true), &mut wire)
            .unwrap();
        assert_eq!(&wire[..], &[0, 0, 0, 5, 1, 0, 0, 2, b'x', b'y']);
        wire.clear();
        enc.encode(&Frame::Ping { id: 7 }, &mut wire).unwrap();
        assert_eq!(&wire[..], &[0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 7]);
        wire.clear();
        enc.encode(
            &Frame::RstStream {
                stream_id: 3,
                status: rst::CANCEL,
            },
            &mut wire,
        )
        .unwrap();
        assert_eq!(
            &wire[..],
            &[0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 5]
        );
        wire.clear();
        enc.encode(
            &Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: Headers::new(),
            },
            &mut wire,
        )
        .unwrap();
        assert_eq!(&wire[..4], &[0x80, 3, 0, 2]);
        let len = u32::from_be_bytes([0, wire[5], wire[6], wire[7]]) as usize;
        // The compressed block exactly fills the frame.
        assert_eq!(wire.len(), 8 + len);
    }

    #[test]
    fn rejects_bad_frames() {
        let mut dec = FrameDecoder::new();
        // SPDY/2 control frame.
        let mut buf = BytesMut::from(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(dec.decode(&mut buf).is_err());
        // RST_STREAM too short.
        let mut buf = BytesMut::from(&[0x80, 3, 0, 3, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(dec.decode(&mut buf).is_err());
        // Unknown control types are passed up, not fatal.
        let mut buf = BytesMut::from(&[0x80, 3, 0, 0x40, 0, 0, 0, 0][..]);
        assert_eq!(
            dec.decode(&mut buf).unwrap(),
            Some(Frame::Unknown { frame_type: 0x40 })
        );
        let mut wire = BytesMut::new();
        let big = Bytes::from(vec![0u8; MAX_FRAME_PAYLOAD + 1]);
        assert!(FrameEncoder::new()
            .encode(&Frame::data(1, big, false), &mut wire)
            .is_err());
    }

    #[tokio::test]
    async fn reader_reports_truncation() {
        let mut wire = BytesMut::new();
        FrameEncoder::new()
            .encode(&Frame::data(1, &b"abcdef"[..], false), &mut wire)
            .unwrap();
        let whole = wire.clone().freeze();
        let mut r = FrameReader::new(&whole[..]);
        assert_eq!(
            r.next().await.unwrap(),
            Some(Frame::data(1, &b"abcdef"[..], false))
        );
        assert_eq!(r.next().await.unwrap(), None);
        let cut = whole.slice(..10);
        let mut r = FrameReader::new(&cut[..]);
        assert!(r.next().await.is_err());
    }
}
