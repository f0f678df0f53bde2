//! SPDY/3.1 as Kubernetes uses it: a multiplexed connection whose client opens one
//! stream per role (`streamtype: error|stdin|stdout|stderr|resize` for exec, `error|data`
//! plus `port` and `requestid` for port-forward) and whose server accepts each with a
//! SYN_REPLY.
//!
//! [`frame`] is the codec both ends share (the agent's server here, the tests' client);
//! [`headers`] compresses header blocks with the SPDY/3 [`DICTIONARY`]. The server-side
//! connection that routes frames to streams is crate-private (`session`).
//!
//! Neither peer honours SPDY/3.1 flow control (moby/spdystream, which kubectl and the
//! kubelet use, ignores WINDOW_UPDATE), so neither does this one.

mod dictionary;
pub mod frame;
pub mod headers;
pub(crate) mod session;

pub use dictionary::DICTIONARY;
pub use frame::{Frame, FrameDecoder, FrameEncoder, FrameReader};
pub use headers::{HeaderCompressor, HeaderDecompressor, Headers};

/// Errors of the SPDY codec.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The underlying connection failed.
    #[error("spdy connection i/o failed")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are not a valid frame.
    #[error("invalid spdy frame: {0}")]
    InvalidFrame(String),
    /// A header block did not (de)compress.
    #[error("spdy header compression failed: {0}")]
    Compression(String),
}

/// The codec's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
