//! A blocking netlink request/reply loop shared by the IPVS (generic netlink) client and
//! the dummy interface (rtnetlink): send one request, collect the replies that carry its
//! sequence number until the kernel's ACK (or `NLMSG_DONE` for a dump).
//!
//! The operations are short kernel round trips (tens of microseconds), so they are plain
//! blocking calls; an async caller runs them on a blocking thread.

use std::fmt::Debug;
use std::io;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkDeserializable, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_sys::{Socket, SocketAddr};

use super::netlink::Error;

/// Big enough for any one datagram the kernel sends: dump replies are capped at 32 KiB.
const RECV_BUF: usize = 64 * 1024;

/// What a request is: one change or query answered by an ACK, or a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `NLM_F_REQUEST | NLM_F_ACK`, plus these extra flags (`NLM_F_CREATE`, ...).
    Ack(u16),
    /// `NLM_F_REQUEST | NLM_F_DUMP`.
    Dump,
}

impl Kind {
    pub(crate) fn flags(self) -> u16 {
        match self {
            Kind::Ack(extra) => NLM_F_REQUEST | NLM_F_ACK | extra,
            Kind::Dump => NLM_F_REQUEST | NLM_F_DUMP,
        }
    }
}

/// Why a request failed, before the caller names the operation.
#[derive(Debug)]
pub(crate) enum Failure {
    Socket(io::Error),
    Kernel(io::Error),
    Decode(String),
}

impl Failure {
    /// Attach the operation that failed, as the caller words it.
    pub(crate) fn during(self, op: impl FnOnce() -> String) -> Error {
        match self {
            Failure::Socket(source) => Error::Socket { op: op(), source },
            Failure::Kernel(source) => Error::Kernel { op: op(), source },
            Failure::Decode(reason) => Error::Decode { op: op(), reason },
        }
    }
}

/// One netlink socket bound to the kernel, with its own sequence numbers.
pub(crate) struct Conn {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Conn {
    /// Open a socket of one netlink protocol (`NETLINK_GENERIC`, `NETLINK_ROUTE`) in the
    /// calling thread's network namespace.
    pub(crate) fn open(protocol: isize) -> Result<Self, Failure> {
        let mut socket = Socket::new(protocol).map_err(Failure::Socket)?;
        socket.bind_auto().map_err(Failure::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(Failure::Socket)?;
        Ok(Conn {
            socket,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Send `msg` and return the inner messages of its replies, in order.
    pub(crate) fn request<T>(
        &mut self,
        mut msg: NetlinkMessage<T>,
        kind: Kind,
    ) -> Result<Vec<T>, Failure>
    where
        T: NetlinkSerializable + NetlinkDeserializable + Debug,
    {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = encode(&mut msg, kind, seq);
        self.socket.send(&bytes, 0).map_err(Failure::Socket)?;

        let mut replies = Vec::new();
        loop {
            self.buf.clear();
            self.buf.reserve(RECV_BUF);
            // MSG_TRUNC makes recv return the datagram's real length, so a reply that did
            // not fit is reported instead of silently cut.
            let len = loop {
                match self.socket.recv(&mut self.buf, libc::MSG_TRUNC) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other.map_err(Failure::Socket)?,
                }
            };
            if len > self.buf.len() {
                return Err(Failure::Decode(format!(
                    "reply of {len} bytes exceeds the {} byte receive buffer",
                    self.buf.len()
                )));
            }
            if read_datagram(&self.buf[..len], seq, &mut replies)? {
                return Ok(replies);
            }
        }
    }
}

/// Take the messages of one received datagram that answer request `seq` into `replies`.
/// True once the request is finished (ACK or `NLMSG_DONE`); a kernel error ends it too.
pub(crate) fn read_datagram<T>(
    mut datagram: &[u8],
    seq: u32,
    replies: &mut Vec<T>,
) -> Result<bool, Failure>
where
    T: NetlinkDeserializable + Debug,
{
    while !datagram.is_empty() {
        let frame =
            NetlinkBuffer::new_checked(datagram).map_err(|e| Failure::Decode(e.to_string()))?;
        let frame_len = frame.length() as usize;
        let reply = NetlinkMessage::<T>::deserialize(&datagram[..frame_len])
            .map_err(|e| Failure::Decode(e.to_string()))?;
        datagram = &datagram[align4(frame_len).min(datagram.len())..];
        if reply.header.sequence_number != seq {
            // A late reply to an earlier request that failed half way; not ours.
            continue;
        }
        if reply.header.flags & NLM_F_DUMP_INTR != 0 {
            // The table changed while the kernel dumped it: the dump may miss entries.
            return Err(Failure::Decode(
                "dump interrupted by a concurrent change (NLM_F_DUMP_INTR)".to_owned(),
            ));
        }
        match reply.payload {
            NetlinkPayload::InnerMessage(inner) => replies.push(inner),
            NetlinkPayload::Error(err) => {
                return match err.code {
                    None => Ok(true),
                    Some(_) => Err(Failure::Kernel(err.to_io())),
                }
            }
            NetlinkPayload::Done(done) => {
                return if done.code == 0 {
                    Ok(true)
                } else {
                    Err(Failure::Kernel(io::Error::from_raw_os_error(
                        done.code.abs(),
                    )))
                };
            }
            NetlinkPayload::Overrun(_) => {
                return Err(Failure::Decode("netlink overrun".to_owned()))
            }
            _ => {}
        }
    }
    Ok(false)
}

/// The bytes of `msg` as sent: flags for `kind`, sequence number `seq`, port 0 (the
/// kernel fills in ours).
pub(crate) fn encode<T>(msg: &mut NetlinkMessage<T>, kind: Kind, seq: u32) -> Vec<u8>
where
    T: NetlinkSerializable + Debug,
{
    msg.header.flags = kind.flags();
    msg.header.sequence_number = seq;
    msg.header.port_number = 0;
    msg.finalize();
    let mut bytes = vec![0; msg.buffer_len()];
    msg.serialize(&mut bytes);
    bytes
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}
