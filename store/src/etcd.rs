//! The etcd v3 gRPC API: KV, Watch, Lease, Cluster and Maintenance, so `etcdctl` and any
//! etcd client library work against a Berth store. The services are plain structs over a
//! [`StoreNode`], usable in process as well as over the network.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{Error, Result};
use crate::mvcc::{event_revision, KeyRange};
use crate::node::{MembershipOp, StoreNode};
use crate::pb::etcdserverpb::cluster_server::{Cluster, ClusterServer};
use crate::pb::etcdserverpb::kv_server::{Kv, KvServer};
use crate::pb::etcdserverpb::lease_server::{Lease, LeaseServer};
use crate::pb::etcdserverpb::maintenance_server::{Maintenance, MaintenanceServer};
use crate::pb::etcdserverpb::watch_server::{Watch, WatchServer};
use crate::pb::etcdserverpb::*;
use crate::pb::mvccpb::{event::EventType, Event};
use crate::types::{member_id, MemberNode, Request as StoreRequest};

/// The etcd version reported by Status. Clients gate features on it; Berth implements
/// the 3.5 API surface it reports.
pub const ETCD_VERSION: &str = "3.5.0";

/// Serves the etcd API on `listener` until the task is aborted.
pub async fn serve(node: Arc<StoreNode>, listener: tokio::net::TcpListener) {
    let api = EtcdApi { node: node.clone() };
    let stop_node = node.clone();
    // tonic's own limit sits above etcd's, so an oversized request gets etcd's error text.
    let max = node.config.max_request_bytes * 2 + 64 * 1024;
    // Nagle off on accepted sockets: `Server::tcp_nodelay` only covers sockets tonic binds.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let r = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(
            KvServer::new(api.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(WatchServer::new(api.clone()).max_decoding_message_size(max))
        .add_service(LeaseServer::new(api.clone()).max_decoding_message_size(max))
        .add_service(ClusterServer::new(api.clone()))
        .add_service(MaintenanceServer::new(api))
        .serve_with_incoming_shutdown(incoming, async move { stop_node.stopped().await })
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "etcd API server stopped");
    }
}

/// The etcd API over one member.
#[derive(Clone)]
pub struct EtcdApi {
    pub node: Arc<StoreNode>,
}

impl EtcdApi {
    pub fn new(node: Arc<StoreNode>) -> Self {
        Self { node }
    }

    fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.node.cluster_id(),
            member_id: self.node.id,
            revision,
            raft_term: self.node.current_term(),
        }
    }

    fn check_size(&self, len: usize) -> Result<()> {
        let max = self.node.config.max_request_bytes;
        if len > max {
            return Err(Error::RequestTooLarge { size: len, max });
        }
        Ok(())
    }

    async fn write<M: Message + Default>(&self, req: StoreRequest) -> Result<(M, i64)> {
        self.check_size(req.encoded_len())?;
        let resp = self.node.write(req).await?;
        let body =
            M::decode(resp.body.as_slice()).map_err(|e| Error::corrupt("apply response", e))?;
        Ok((body, resp.revision))
    }

    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        if req.key.is_empty() {
            return Err(Error::EmptyKey);
        }
        if !req.serializable {
            self.node.read_barrier().await?;
        }
        let (mut resp, rev) = self.node.mvcc.range_with_revision(&req)?;
        resp.header = Some(self.header(rev));
        Ok(resp)
    }

    pub async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        if req.key.is_empty() {
            return Err(Error::EmptyKey);
        }
        let (mut resp, rev): (PutResponse, i64) =
            self.write(StoreRequest::Put(req.encode_to_vec())).await?;
        resp.header = Some(self.header(rev));
        Ok(resp)
    }

    pub async fn delete_range(&self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        if req.key.is_empty() {
            return Err(Error::EmptyKey);
        }
        let (mut resp, rev): (DeleteRangeResponse, i64) = self
            .write(StoreRequest::DeleteRange(req.encode_to_vec()))
            .await?;
        resp.header = Some(self.header(rev));
        Ok(resp)
    }

    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse> {
        check_txn(&req)?;
        let (mut resp, rev): (TxnResponse, i64) =
            self.write(StoreRequest::Txn(req.encode_to_vec())).await?;
        fill_txn_headers(&mut resp, &self.header(rev));
        Ok(resp)
    }

    pub async fn compact(&self, req: CompactionRequest) -> Result<CompactionResponse> {
        let (mut resp, rev): (CompactionResponse, i64) = self
            .write(StoreRequest::Compact(req.encode_to_vec()))
            .await?;
        resp.header = Some(self.header(rev));
        Ok(resp)
    }

    async fn members(&self) -> Result<Vec<Member>> {
        let membership = self.node.raft.metrics().borrow().membership_config.clone();
        let voters: HashSet<u64> = membership.membership().voter_ids().collect();
        let mut out = Vec::new();
        for (id, node) in membership.membership().nodes() {
            let published = self
                .node
                .backend
                .get(
                    crate::backend::Tree::StateMachine,
                    &crate::mvcc::member_key(*id),
                )?
                .and_then(|b| Member::decode(b.as_slice()).ok());
            let (name, client_urls) = match published {
                Some(p) => (p.name, p.client_ur_ls),
                None => (node.name.clone(), Vec::new()),
            };
            out.push(Member {
                id: *id,
                name,
                peer_ur_ls: node.peer_urls.clone(),
                client_ur_ls: client_urls,
                is_learner: !voters.contains(id),
            });
        }
        Ok(out)
    }
}

/// etcd's checks on a txn: at most 128 ops a branch, and no key written twice in one.
fn check_txn(req: &TxnRequest) -> Result<()> {
    const MAX_OPS: usize = 128;
    if req.compare.len() > MAX_OPS || req.success.len() > MAX_OPS || req.failure.len() > MAX_OPS {
        return Err(Error::TooManyOps);
    }
    for c in &req.compare {
        if c.key.is_empty() {
            return Err(Error::EmptyKey);
        }
    }
    for branch in [&req.success, &req.failure] {
        let mut puts: HashSet<&[u8]> = HashSet::new();
        let mut deletes: Vec<KeyRange> = Vec::new();
        for op in branch.iter() {
            match &op.request {
                Some(request_op::Request::RequestPut(p)) => {
                    if p.key.is_empty() {
                        return Err(Error::EmptyKey);
                    }
                    if !puts.insert(p.key.as_slice()) {
                        return Err(Error::DuplicateKey);
                    }
                }
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    if d.key.is_empty() {
                        return Err(Error::EmptyKey);
                    }
                    deletes.push(KeyRange::new(&d.key, &d.range_end));
                }
                Some(request_op::Request::RequestRange(r)) if r.key.is_empty() => {
                    return Err(Error::EmptyKey)
                }
                Some(request_op::Request::RequestTxn(t)) => check_txn(t)?,
                _ => {}
            }
        }
        if puts.iter().any(|k| deletes.iter().any(|d| d.contains(k))) {
            return Err(Error::DuplicateKey);
        }
    }
    Ok(())
}

fn fill_txn_headers(resp: &mut TxnResponse, h: &ResponseHeader) {
    resp.header = Some(*h);
    for r in &mut resp.responses {
        match &mut r.response {
            Some(response_op::Response::ResponseRange(x)) => x.header = Some(*h),
            Some(response_op::Response::ResponsePut(x)) => x.header = Some(*h),
            Some(response_op::Response::ResponseDeleteRange(x)) => x.header = Some(*h),
            Some(response_op::Response::ResponseTxn(x)) => fill_txn_headers(x, h),
            None => {}
        }
    }
}

type GrpcResult<T> = std::result::Result<Response<T>, Status>;
type BoxStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Kv for EtcdApi {
    async fn range(&self, r: Request<RangeRequest>) -> GrpcResult<RangeResponse> {
        Ok(Response::new(EtcdApi::range(self, r.into_inner()).await?))
    }
    async fn put(&self, r: Request<PutRequest>) -> GrpcResult<PutResponse> {
        Ok(Response::new(EtcdApi::put(self, r.into_inner()).await?))
    }
    async fn delete_range(
        &self,
        r: Request<DeleteRangeRequest>,
    ) -> GrpcResult<DeleteRangeResponse> {
        Ok(Response::new(
            EtcdApi::delete_range(self, r.into_inner()).await?,
        ))
    }
    async fn txn(&self, r: Request<TxnRequest>) -> GrpcResult<TxnResponse> {
        Ok(Response::new(EtcdApi::txn(self, r.into_inner()).await?))
    }
    async fn compact(&self, r: Request<CompactionRequest>) -> GrpcResult<CompactionResponse> {
        Ok(Response::new(EtcdApi::compact(self, r.into_inner()).await?))
    }
}

// ---------------------------------------------------------------------------------------
// Watch

/// One watcher's parameters.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    pub range: KeyRange,
    pub start_revision: i64,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
}

impl WatchSpec {
    pub fn from_request(c: &WatchCreateRequest) -> Self {
        use watch_create_request::FilterType;
        Self {
            range: KeyRange::new(&c.key, &c.range_end),
            start_revision: c.start_revision,
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
            prev_kv: c.prev_kv,
        }
    }

    fn wants(&self, ev: &Event) -> bool {
        let key = ev.kv.as_ref().map(|k| k.key.as_slice()).unwrap_or_default();
        if !self.range.contains(key) {
            return false;
        }
        let put = ev.r#type == EventType::Put as i32;
        !(put && self.no_put || !put && self.no_delete)
    }

    fn shape(&self, ev: &Event) -> Event {
        let mut e = ev.clone();
        if !self.prev_kv {
            e.prev_kv = None;
        }
        e
    }
}

/// What a watcher delivers: events in revision order, or the end of the watch.
#[derive(Debug)]
pub enum WatchItem {
    Events(Vec<Event>),
    Compacted { compact_revision: i64 },
}

/// Streams the events matching `spec` from its start revision on, each exactly once and in
/// order: first from history, then live, re-reading history whenever the live channel
/// overflows. Ends when `tx` closes.
pub async fn run_watcher(node: Arc<StoreNode>, spec: WatchSpec, tx: mpsc::Sender<WatchItem>) {
    let mvcc = node.mvcc.clone();
    let mut live = mvcc.subscribe();
    let mut next = if spec.start_revision <= 0 {
        mvcc.current_revision() + 1
    } else {
        spec.start_revision
    };
    'catch_up: loop {
        // History first: everything from `next` up to the current revision.
        loop {
            let current = mvcc.current_revision();
            if next > current {
                break;
            }
            match mvcc.history(next, current, 1000) {
                Err(Error::Compacted { compacted, .. }) => {
                    let _ = tx
                        .send(WatchItem::Compacted {
                            compact_revision: compacted,
                        })
                        .await;
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "watch: reading history");
                    return;
                }
                Ok(evs) => {
                    let Some(last) = evs.last().map(event_revision) else {
                        next = current + 1;
                        continue;
                    };
                    let mine: Vec<Event> = evs
                        .iter()
                        .filter(|e| spec.wants(e))
                        .map(|e| spec.shape(e))
                        .collect();
                    next = last + 1;
                    if !mine.is_empty() && tx.send(WatchItem::Events(mine)).await.is_err() {
                        return;
                    }
                }
            }
        }
        // Then live events, skipping what history already gave; the watch ends when its
        // receiver goes away or the member stops.
        loop {
            let received = tokio::select! {
                r = live.recv() => r,
                _ = tx.closed() => return,
                _ = node.stopped() => return,
            };
            match received {
                Ok(batch) => {
                    let mine: Vec<Event> = batch
                        .iter()
                        .filter(|e| event_revision(e) >= next && spec.wants(e))
                        .map(|e| spec.shape(e))
                        .collect();
                    if let Some(last) = batch.last() {
                        next = next.max(event_revision(last) + 1);
                    }
                    if !mine.is_empty() && tx.send(WatchItem::Events(mine)).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(skipped = n, "watcher lagged, catching up from history");
                    continue 'catch_up;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

#[tonic::async_trait]
impl Watch for EtcdApi {
    type WatchStream = BoxStream<WatchResponse>;

    async fn watch(&self, r: Request<Streaming<WatchRequest>>) -> GrpcResult<Self::WatchStream> {
        let mut inbound = r.into_inner();
        let (out_tx, out_rx) = mpsc::channel::<std::result::Result<WatchResponse, Status>>(256);
        let api = self.clone();
        tokio::spawn(async move {
            let mut watchers: HashMap<i64, tokio::task::JoinHandle<()>> = HashMap::new();
            let mut next_id: i64 = 0;
            loop {
                let msg = tokio::select! {
                    m = inbound.next() => m,
                    _ = api.node.stopped() => None,
                };
                let Some(Ok(msg)) = msg else { break };
                match msg.request_union {
                    Some(watch_request::RequestUnion::CreateRequest(c)) => {
                        let id = if c.watch_id != 0 {
                            c.watch_id
                        } else {
                            while watchers.contains_key(&next_id) {
                                next_id += 1;
                            }
                            next_id
                        };
                        if watchers.contains_key(&id) {
                            let resp = WatchResponse {
                                header: Some(api.header(api.node.mvcc.current_revision())),
                                watch_id: id,
                                created: true,
                                canceled: true,
                                cancel_reason: "etcdserver: duplicate watch ID".into(),
                                ..Default::default()
                            };
                            if out_tx.send(Ok(resp)).await.is_err() {
                                break;
                            }
                            continue;
                        }
                        let created = WatchResponse {
                            header: Some(api.header(api.node.mvcc.current_revision())),
                            watch_id: id,
                            created: true,
                            ..Default::default()
                        };
                        if out_tx.send(Ok(created)).await.is_err() {
                            break;
                        }
                        watchers.insert(
                            id,
                            tokio::spawn(forward_watch(
                                api.clone(),
                                id,
                                WatchSpec::from_request(&c),
                                out_tx.clone(),
                            )),
                        );
                    }
                    Some(watch_request::RequestUnion::CancelRequest(c)) => {
                        if let Some(h) = watchers.remove(&c.watch_id) {
                            h.abort();
                        }
                        let resp = WatchResponse {
                            header: Some(api.header(api.node.mvcc.current_revision())),
                            watch_id: c.watch_id,
                            canceled: true,
                            ..Default::default()
                        };
                        if out_tx.send(Ok(resp)).await.is_err() {
                            break;
                        }
                    }
                    Some(watch_request::RequestUnion::ProgressRequest(_)) => {
                        let resp = WatchResponse {
                            header: Some(api.header(api.node.mvcc.current_revision())),
                            watch_id: -1,
                            ..Default::default()
                        };
                        if out_tx.send(Ok(resp)).await.is_err() {
                            break;
                        }
                    }
                    None => {}
                }
            }
            for (_, h) in watchers {
                h.abort();
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }
}

async fn forward_watch(
    api: EtcdApi,
    id: i64,
    spec: WatchSpec,
    out: mpsc::Sender<std::result::Result<WatchResponse, Status>>,
) {
    let (tx, mut rx) = mpsc::channel(64);
    let w = tokio::spawn(run_watcher(api.node.clone(), spec, tx));
    loop {
        let item = tokio::select! {
            i = rx.recv() => i,
            _ = api.node.stopped() => None,
        };
        let Some(item) = item else { break };
        let resp = match item {
            WatchItem::Events(events) => {
                let rev = events.last().map(event_revision).unwrap_or_default();
                WatchResponse {
                    header: Some(api.header(rev.max(api.node.mvcc.current_revision()))),
                    watch_id: id,
                    events,
                    ..Default::default()
                }
            }
            WatchItem::Compacted { compact_revision } => WatchResponse {
                header: Some(api.header(api.node.mvcc.current_revision())),
                watch_id: id,
                canceled: true,
                compact_revision,
                cancel_reason: Error::Compacted {
                    requested: 0,
                    compacted: compact_revision,
                }
                .to_string(),
                ..Default::default()
            },
        };
        if out.send(Ok(resp)).await.is_err() {
            break;
        }
    }
    w.abort();
}

// ---------------------------------------------------------------------------------------
// Lease

#[tonic::async_trait]
impl Lease for EtcdApi {
    async fn lease_grant(&self, r: Request<LeaseGrantRequest>) -> GrpcResult<LeaseGrantResponse> {
        let (mut resp, rev): (LeaseGrantResponse, i64) = self
            .write(StoreRequest::LeaseGrant(r.into_inner().encode_to_vec()))
            .await?;
        // The leader's clock starts at grant.
        let _ = self.node.lease_keep_alive(resp.id).await;
        resp.header = Some(self.header(rev));
        Ok(Response::new(resp))
    }

    async fn lease_revoke(
        &self,
        r: Request<LeaseRevokeRequest>,
    ) -> GrpcResult<LeaseRevokeResponse> {
        let (mut resp, rev): (LeaseRevokeResponse, i64) = self
            .write(StoreRequest::LeaseRevoke(r.into_inner().encode_to_vec()))
            .await?;
        resp.header = Some(self.header(rev));
        Ok(Response::new(resp))
    }

    type LeaseKeepAliveStream = BoxStream<LeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        r: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> GrpcResult<Self::LeaseKeepAliveStream> {
        let mut inbound = r.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let api = self.clone();
        tokio::spawn(async move {
            loop {
                let req = tokio::select! {
                    m = inbound.next() => m,
                    _ = api.node.stopped() => None,
                };
                let Some(Ok(req)) = req else { break };
                let ttl = match api.node.lease_keep_alive(req.id).await {
                    Ok(ttl) => ttl,
                    // etcd answers a keep-alive of an unknown lease with TTL 0.
                    Err(Error::LeaseNotFound(_)) => 0,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        break;
                    }
                };
                let resp = LeaseKeepAliveResponse {
                    header: Some(api.header(api.node.mvcc.current_revision())),
                    id: req.id,
                    ttl,
                };
                if tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        r: Request<LeaseTimeToLiveRequest>,
    ) -> GrpcResult<LeaseTimeToLiveResponse> {
        let req = r.into_inner();
        let header = Some(self.header(self.node.mvcc.current_revision()));
        match self.node.lease_time_to_live(req.id).await {
            Ok((ttl, granted)) => {
                let keys = if req.keys {
                    self.node
                        .mvcc
                        .lease(req.id)
                        .map_err(Status::from)?
                        .map(|(_, k)| k)
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                Ok(Response::new(LeaseTimeToLiveResponse {
                    header,
                    id: req.id,
                    ttl,
                    granted_ttl: granted,
                    keys,
                }))
            }
            Err(Error::LeaseNotFound(_)) => Ok(Response::new(LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            })),
            Err(e) => Err(e.into()),
        }
    }

    async fn lease_leases(
        &self,
        _r: Request<LeaseLeasesRequest>,
    ) -> GrpcResult<LeaseLeasesResponse> {
        let leases = self
            .node
            .mvcc
            .leases()
            .map_err(Status::from)?
            .into_iter()
            .map(|(id, _)| LeaseStatus { id })
            .collect();
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.header(self.node.mvcc.current_revision())),
            leases,
        }))
    }
}

// ---------------------------------------------------------------------------------------
// Cluster

#[tonic::async_trait]
impl Cluster for EtcdApi {
    async fn member_add(&self, r: Request<MemberAddRequest>) -> GrpcResult<MemberAddResponse> {
        let req = r.into_inner();
        if req.peer_ur_ls.is_empty() {
            return Err(Status::invalid_argument(
                "etcdserver: member add needs at least one peer URL",
            ));
        }
        let token = self.node.config.initial_cluster_token.clone();
        let id = member_id(&req.peer_ur_ls, &token);
        let node = MemberNode {
            name: String::new(),
            peer_urls: req.peer_ur_ls.clone(),
        };
        self.node
            .change_membership(MembershipOp::Add {
                id,
                node,
                learner: req.is_learner,
            })
            .await?;
        let member = Member {
            id,
            name: String::new(),
            peer_ur_ls: req.peer_ur_ls,
            client_ur_ls: Vec::new(),
            is_learner: req.is_learner,
        };
        Ok(Response::new(MemberAddResponse {
            header: Some(self.header(self.node.mvcc.current_revision())),
            member: Some(member),
            members: self.members().await?,
        }))
    }

    async fn member_remove(
        &self,
        r: Request<MemberRemoveRequest>,
    ) -> GrpcResult<MemberRemoveResponse> {
        self.node
            .change_membership(MembershipOp::Remove {
                id: r.into_inner().id,
            })
            .await?;
        Ok(Response::new(MemberRemoveResponse {
            header: Some(self.header(self.node.mvcc.current_revision())),
            members: self.members().await?,
        }))
    }

    async fn member_update(
        &self,
        _r: Request<MemberUpdateRequest>,
    ) -> GrpcResult<MemberUpdateResponse> {
        Err(Status::unimplemented("berth: changing a member's peer URLs is not supported; remove the member and add it again"))
    }

    async fn member_list(&self, _r: Request<MemberListRequest>) -> GrpcResult<MemberListResponse> {
        Ok(Response::new(MemberListResponse {
            header: Some(self.header(self.node.mvcc.current_revision())),
            members: self.members().await?,
        }))
    }

    async fn member_promote(
        &self,
        r: Request<MemberPromoteRequest>,
    ) -> GrpcResult<MemberPromoteResponse> {
        self.node
            .change_membership(MembershipOp::Promote {
                id: r.into_inner().id,
            })
            .await?;
        Ok(Response::new(MemberPromoteResponse {
            header: Some(self.header(self.node.mvcc.current_revision())),
            members: self.members().await?,
        }))
    }
}

// ---------------------------------------------------------------------------------------
// Maintenance

#[tonic::async_trait]
impl Maintenance for EtcdApi {
    async fn alarm(&self, _r: Request<AlarmRequest>) -> GrpcResult<AlarmResponse> {
        Ok(Response::new(AlarmResponse {
            header: Some(self.header(self.node.mvcc.current_revision())),
            alarms: Vec::new(),
        }))
    }

    async fn status(&self, _r: Request<StatusRequest>) -> GrpcResult<StatusResponse> {
        let m = self.node.raft.metrics().borrow().clone();
        let size = self.node.backend.size_on_disk() as i64;
        Ok(Response::new(StatusResponse {
            header: Some(self.header(self.node.mvcc.current_revision())),
            version: ETCD_VERSION.into(),
            db_size: size,
            leader: m.current_leader.unwrap_or(0),
            raft_index: m.last_log_index.unwrap_or(0),
            raft_term: m.current_term,
            raft_applied_index: m.last_applied.map_or(0, |l| l.index),
            errors: Vec::new(),
            db_size_in_use: size,
            is_learner: !m
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == self.node.id),
        }))
    }

    async fn defragment(&self, _r: Request<DefragmentRequest>) -> GrpcResult<DefragmentResponse> {
        self.node.backend.flush().map_err(Status::from)?;
        Ok(Response::new(DefragmentResponse {
            header: Some(self.header(self.node.mvcc.current_revision())),
        }))
    }

    async fn hash(&self, _r: Request<HashRequest>) -> GrpcResult<HashResponse> {
        let (hash, rev) = self.node.mvcc.hash_kv(0).map_err(Status::from)?;
        Ok(Response::new(HashResponse {
            header: Some(self.header(rev)),
            hash,
        }))
    }

    async fn hash_kv(&self, r: Request<HashKvRequest>) -> GrpcResult<HashKvResponse> {
        let (hash, rev) = self
            .node
            .mvcc
            .hash_kv(r.into_inner().revision)
            .map_err(Status::from)?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.header(rev)),
            hash,
            compact_revision: self.node.mvcc.compact_revision(),
        }))
    }

    type SnapshotStream = BoxStream<SnapshotResponse>;

    async fn snapshot(&self, _r: Request<SnapshotRequest>) -> GrpcResult<Self::SnapshotStream> {
        Err(Status::unimplemented("berth: etcd-format snapshots are not supported; copy a stopped member's data directory"))
    }

    async fn move_leader(&self, _r: Request<MoveLeaderRequest>) -> GrpcResult<MoveLeaderResponse> {
        Err(Status::unimplemented(
            "berth: leader transfer is not supported",
        ))
    }
}
