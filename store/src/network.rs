//! Raft RPC between members over tonic: openraft's network traits on the client side,
//! and [`PeerClients`], the connections this member keeps to the others (also used to
//! forward client writes, read-index requests and lease calls to the leader).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};
use crate::pb::raft::raft_peer_client::RaftPeerClient;
use crate::pb::raft::{PeerReply, PeerRequest};
use crate::types::{MemberId, MemberNode, TypeConfig};

/// The peer methods, named as in `raft.proto`.
#[derive(Debug, Clone, Copy)]
pub enum PeerMethod {
    AppendEntries,
    Vote,
    InstallSnapshot,
    ClientWrite,
    ReadIndex,
    LeaseKeepAlive,
    LeaseTimeToLive,
    ChangeMembership,
}

/// An error carried back across a peer call: the store error's gRPC code and message,
/// and the leader the remote knows of when it was not the leader itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireError {
    pub code: i32,
    pub message: String,
    pub not_leader: bool,
    pub leader: Option<MemberId>,
}

impl WireError {
    pub fn from_error(e: &Error) -> Self {
        let (not_leader, leader) = match e {
            Error::NotLeader { leader } => (true, *leader),
            _ => (false, None),
        };
        Self {
            code: e.code() as i32,
            message: e.to_string(),
            not_leader,
            leader,
        }
    }

    pub fn into_error(self) -> Error {
        if self.not_leader {
            return Error::NotLeader {
                leader: self.leader,
            };
        }
        match tonic::Code::from_i32(self.code) {
            tonic::Code::NotFound if self.message.contains("lease") => Error::LeaseNotFound(0),
            tonic::Code::NotFound => Error::MemberNotFound(0),
            _ => Error::Remote {
                code: self.code,
                message: self.message,
            },
        }
    }
}

/// Connections to the other members, keyed by member id; one HTTP/2 channel each,
/// created lazily and replaced when a member's address changes.
#[derive(Clone)]
pub struct PeerClients {
    inner: Arc<Mutex<HashMap<MemberId, (String, Channel)>>>,
    pub cluster_id: Arc<std::sync::atomic::AtomicU64>,
    pub self_id: MemberId,
}

impl PeerClients {
    pub fn new(self_id: MemberId, cluster_id: Arc<std::sync::atomic::AtomicU64>) -> Self {
        Self {
            inner: Arc::default(),
            cluster_id,
            self_id,
        }
    }

    pub fn channel(&self, id: MemberId, node: &MemberNode) -> Result<Channel> {
        let url = node.peer_urls.first().ok_or_else(|| Error::Peer {
            peer: id.to_string(),
            reason: "member has no peer URL".into(),
        })?;
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((u, ch)) = map.get(&id) {
            if u == url {
                return Ok(ch.clone());
            }
        }
        let ch = Endpoint::from_shared(url.clone())
            .map_err(|e| Error::Peer {
                peer: url.clone(),
                reason: format!("bad peer URL: {e}"),
            })?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .connect_lazy();
        map.insert(id, (url.clone(), ch.clone()));
        Ok(ch)
    }

    fn envelope(&self, payload: Vec<u8>) -> PeerRequest {
        PeerRequest {
            cluster_id: self.cluster_id.load(std::sync::atomic::Ordering::SeqCst),
            from: self.self_id,
            payload,
        }
    }

    /// Calls `method` on member `id`, encoding `req` and decoding the reply as `R`.
    pub async fn call<Q: Serialize, R: DeserializeOwned>(
        &self,
        id: MemberId,
        node: &MemberNode,
        method: PeerMethod,
        req: &Q,
        timeout: Option<Duration>,
    ) -> Result<R, CallError> {
        let payload = postcard::to_allocvec(req).map_err(|e| CallError::Codec(e.to_string()))?;
        let channel = self
            .channel(id, node)
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let mut client = RaftPeerClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let mut request = tonic::Request::new(self.envelope(payload));
        if let Some(t) = timeout {
            request.set_timeout(t);
        }
        let reply: PeerReply = match method {
            PeerMethod::AppendEntries => client.append_entries(request).await,
            PeerMethod::Vote => client.vote(request).await,
            PeerMethod::InstallSnapshot => client.install_snapshot(request).await,
            PeerMethod::ClientWrite => client.client_write(request).await,
            PeerMethod::ReadIndex => client.read_index(request).await,
            PeerMethod::LeaseKeepAlive => client.lease_keep_alive(request).await,
            PeerMethod::LeaseTimeToLive => client.lease_time_to_live(request).await,
            PeerMethod::ChangeMembership => client.change_membership(request).await,
        }
        .map_err(|s| CallError::Transport(format!("{}: {}", s.code(), s.message())))?
        .into_inner();
        if !reply.error.is_empty() {
            return Err(CallError::Refused(reply.error));
        }
        postcard::from_bytes(&reply.payload).map_err(|e| CallError::Codec(e.to_string()))
    }
}

/// Why a peer call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("transport: {0}")]
    Transport(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("codec: {0}")]
    Codec(String),
}

/// openraft's network factory: one [`PeerConnection`] per target.
pub struct NetworkFactory {
    pub clients: PeerClients,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: MemberId, node: &MemberNode) -> Self::Network {
        PeerConnection {
            clients: self.clients.clone(),
            target,
            node: node.clone(),
        }
    }
}

pub struct PeerConnection {
    clients: PeerClients,
    target: MemberId,
    node: MemberNode,
}

impl PeerConnection {
    async fn raft_call<Q, R, E>(
        &self,
        method: PeerMethod,
        req: &Q,
        option: &RPCOption,
    ) -> Result<R, RPCError<MemberId, MemberNode, RaftError<MemberId, E>>>
    where
        Q: Serialize,
        R: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let res: Result<Result<R, RaftError<MemberId, E>>, CallError> = self
            .clients
            .call(
                self.target,
                &self.node,
                method,
                req,
                Some(option.hard_ttl()),
            )
            .await;
        match res {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))),
            Err(CallError::Transport(m)) | Err(CallError::Refused(m)) => Err(
                RPCError::Unreachable(Unreachable::new(&std::io::Error::other(m))),
            ),
            Err(CallError::Codec(m)) => Err(RPCError::Network(NetworkError::new(
                &std::io::Error::other(m),
            ))),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<MemberId>, RPCError<MemberId, MemberNode, RaftError<MemberId>>>
    {
        self.raft_call(PeerMethod::AppendEntries, &rpc, &option)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<MemberId>,
        RPCError<MemberId, MemberNode, RaftError<MemberId, InstallSnapshotError>>,
    > {
        self.raft_call(PeerMethod::InstallSnapshot, &rpc, &option)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<MemberId>,
        option: RPCOption,
    ) -> Result<VoteResponse<MemberId>, RPCError<MemberId, MemberNode, RaftError<MemberId>>> {
        self.raft_call(PeerMethod::Vote, &rpc, &option).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
