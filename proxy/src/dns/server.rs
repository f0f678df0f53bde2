//! The index on the wire: hickory-server's UDP and TCP listeners with a request handler that
//! asks the [`Index`](super::Index) and writes its [`Answer`](super::Answer).
//!
//! Responses over UDP are cut to the client's EDNS payload size (at most 1232 bytes, the DNS
//! flag day 2020 figure, so nothing is fragmented), or 512 bytes without EDNS, with the TC bit
//! set; the client then asks again over TCP.

use std::net::SocketAddr;
use std::sync::PoisonError;
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::DNSClass;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

use super::{Error, Result, SharedIndex};

/// The largest UDP response we send.
const MAX_UDP_PAYLOAD: u16 = 1232;
/// An idle TCP connection is closed after this long.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 16;
/// Attempts to find a port free for both UDP and TCP when asked for port 0.
const PORT_ATTEMPTS: usize = 20;

/// A bound DNS server: UDP and TCP on the same port of each listen address.
pub struct DnsServer {
    server: Server<Handler>,
    addrs: Vec<SocketAddr>,
}

impl DnsServer {
    /// Binds UDP and TCP on each address. For port 0 one free port serves both.
    pub async fn bind(index: SharedIndex, listen: &[SocketAddr]) -> Result<Self> {
        if listen.is_empty() {
            return Err(Error::NoListen);
        }
        let mut server = Server::new(Handler { index });
        let mut addrs = Vec::with_capacity(listen.len());
        for addr in listen {
            let (udp, tcp) = bind_pair(*addr).await?;
            let local = udp.local_addr().map_err(|source| Error::Bind {
                proto: "udp",
                addr: *addr,
                source,
            })?;
            server.register_socket(udp);
            server.register_listener(tcp, TCP_IDLE, TCP_RESPONSE_BUFFER);
            addrs.push(local);
        }
        Ok(Self { server, addrs })
    }

    /// The addresses bound, with the ports chosen for port 0.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Answers until the future is dropped (which closes the sockets) or a listener fails.
    pub async fn run(mut self) -> Result<()> {
        self.server
            .block_until_done()
            .await
            .map_err(|e| Error::Server(e.to_string()))
    }
}

async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener)> {
    let bind_err = |proto, source| Error::Bind {
        proto,
        addr,
        source,
    };
    let mut last = None;
    for _ in 0..PORT_ATTEMPTS {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|e| bind_err("udp", e))?;
        let port = udp.local_addr().map_err(|e| bind_err("udp", e))?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            // Port 0 gave a UDP port whose TCP twin is taken: try another.
            Err(e) if addr.port() == 0 => last = Some(e),
            Err(e) => return Err(bind_err("tcp", e)),
        }
    }
    Err(bind_err(
        "tcp",
        last.unwrap_or_else(|| std::io::Error::other("no free port")),
    ))
}

struct Handler {
    index: SharedIndex,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let mut meta = Metadata::response_from_request(&request.metadata);
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            e.set_version(0);
            e
        });
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let query = match request.queries.queries() {
            [q] => Some(q),
            _ => None,
        };
        let code = match query {
            _ if request.edns.as_ref().is_some_and(|e| e.version() > 0) => {
                Some(ResponseCode::BADVERS)
            }
            _ if request.metadata.op_code != OpCode::Query => Some(ResponseCode::NotImp),
            None => Some(ResponseCode::FormErr),
            Some(q) if q.query_class() != DNSClass::IN => Some(ResponseCode::Refused),
            Some(_) => None,
        };
        let answer = match (code, query) {
            (None, Some(q)) => {
                let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
                index.lookup(q.original().name(), q.query_type())
            }
            (code, _) => super::Answer {
                code: code.unwrap_or(ResponseCode::ServFail),
                ..super::Answer::default()
            },
        };
        meta.response_code = answer.code;
        meta.authoritative = answer.authoritative;
        let message = builder.build(
            meta,
            answer.answers.iter(),
            [],
            answer.authorities.iter(),
            answer.additionals.iter(),
        );
        match response.send_response(message).await {
            Ok(info) => info,
            Err(err) => {
                tracing::warn!(%err, src = %request.src(), "sending dns response failed");
                meta.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata: meta,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}
