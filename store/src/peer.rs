//! The server side of the peer protocol: Raft RPCs and requests forwarded to the leader.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response as TResponse, Status};

use crate::network::WireError;
use crate::node::{MembershipOp, StoreNode};
use crate::pb::raft::raft_peer_server::{RaftPeer, RaftPeerServer};
use crate::pb::raft::{PeerReply, PeerRequest};
use crate::types::{Request as StoreRequest, TypeConfig};

pub async fn serve(node: Arc<StoreNode>, listener: tokio::net::TcpListener) {
    let stop_node = node.clone();
    let svc = RaftPeerServer::new(PeerService { node })
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    // Nagle off on accepted sockets: `Server::tcp_nodelay` only covers sockets tonic binds.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    if let Err(e) = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, async move { stop_node.stopped().await })
        .await
    {
        tracing::error!(error = %e, "peer server stopped");
    }
}

struct PeerService {
    node: Arc<StoreNode>,
}

fn ok<T: Serialize>(v: &T) -> Result<TResponse<PeerReply>, Status> {
    let payload =
        postcard::to_allocvec(v).map_err(|e| Status::internal(format!("encode reply: {e}")))?;
    Ok(TResponse::new(PeerReply {
        error: String::new(),
        payload,
    }))
}

impl PeerService {
    fn open<T: DeserializeOwned>(&self, req: Request<PeerRequest>) -> Result<T, PeerReply> {
        let req = req.into_inner();
        if let Err(e) = self.node.check_cluster(req.cluster_id) {
            tracing::warn!(from = %format_args!("{:016x}", req.from), error = %e, "refused a peer request");
            return Err(PeerReply {
                error: e.to_string(),
                payload: Vec::new(),
            });
        }
        postcard::from_bytes(&req.payload).map_err(|e| PeerReply {
            error: format!("undecodable peer request: {e}"),
            payload: Vec::new(),
        })
    }
}

macro_rules! open_or_reply {
    ($self:ident, $req:ident, $t:ty) => {
        match $self.open::<$t>($req) {
            Ok(v) => v,
            Err(reply) => return Ok(TResponse::new(reply)),
        }
    };
}

fn wire<T>(r: crate::Result<T>) -> Result<T, WireError> {
    r.map_err(|e| WireError::from_error(&e))
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(
        &self,
        req: Request<PeerRequest>,
    ) -> Result<TResponse<PeerReply>, Status> {
        let rpc = open_or_reply!(self, req, openraft::raft::AppendEntriesRequest<TypeConfig>);
        ok(&self.node.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<PeerRequest>) -> Result<TResponse<PeerReply>, Status> {
        let rpc = open_or_reply!(self, req, openraft::raft::VoteRequest<u64>);
        ok(&self.node.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<PeerRequest>,
    ) -> Result<TResponse<PeerReply>, Status> {
        let rpc = open_or_reply!(
            self,
            req,
            openraft::raft::InstallSnapshotRequest<TypeConfig>
        );
        ok(&self.node.raft.install_snapshot(rpc).await)
    }

    async fn client_write(
        &self,
        req: Request<PeerRequest>,
    ) -> Result<TResponse<PeerReply>, Status> {
        let r = open_or_reply!(self, req, StoreRequest);
        ok(&wire(self.node.write_local(r).await))
    }

    async fn read_index(&self, req: Request<PeerRequest>) -> Result<TResponse<PeerReply>, Status> {
        open_or_reply!(self, req, ());
        ok(&wire(self.node.read_index_local().await))
    }

    async fn lease_keep_alive(
        &self,
        req: Request<PeerRequest>,
    ) -> Result<TResponse<PeerReply>, Status> {
        let id = open_or_reply!(self, req, i64);
        ok(&wire(self.node.lease_keep_alive_local(id)))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<PeerRequest>,
    ) -> Result<TResponse<PeerReply>, Status> {
        let id = open_or_reply!(self, req, i64);
        ok(&wire(self.node.lease_time_to_live_local(id)))
    }

    async fn change_membership(
        &self,
        req: Request<PeerRequest>,
    ) -> Result<TResponse<PeerReply>, Status> {
        let op = open_or_reply!(self, req, MembershipOp);
        ok(&wire(self.node.change_membership_local(op).await))
    }
}
