//! One store member: opens (or creates) its data directory, starts Raft, serves the peer
//! protocol and the etcd v3 API, and runs the leader's duties (lease expiry,
//! auto-compaction).
//!
//! Writes go through [`StoreNode::write`]: on the leader into Raft, on a follower
//! forwarded to the leader. Linearizable reads first pass [`StoreNode::read_barrier`],
//! which batches concurrent readers into one read-index round.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::backend::{Engine, KvBackend};
use crate::error::{Error, Result};
use crate::log_store::LogStore;
use crate::mvcc::Mvcc;
use crate::network::{CallError, NetworkFactory, PeerClients, PeerMethod, WireError};
use crate::pb::etcdserverpb::{CompactionRequest, LeaseRevokeRequest, Member};
use crate::state_machine::StateMachine;
use crate::types::{fnv1a, member_id, MemberId, MemberNode, Raft, Request, Response};

/// The marker file that makes a directory a Berth store data directory.
pub const MARKER: &str = "berth-store.json";
const FORMAT: u32 = 1;

/// How a member is configured; `berth store` builds it from etcd's flag names.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client: Vec<SocketAddr>,
    pub advertise_client_urls: Vec<String>,
    pub listen_peer: SocketAddr,
    pub advertise_peer_urls: Vec<String>,
    /// Every initial member as `(name, peer URL)`.
    pub initial_cluster: Vec<(String, String)>,
    pub initial_cluster_state_new: bool,
    pub initial_cluster_token: String,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    /// Applied entries between snapshots.
    pub snapshot_count: u64,
    /// Entries kept behind a snapshot for slow followers.
    pub snapshot_catchup_entries: u64,
    /// Revisions of history kept by automatic compaction; 0 turns it off.
    pub auto_compaction_retention: i64,
    pub max_request_bytes: usize,
    /// The storage engine for a new data directory (an existing one keeps its own).
    pub engine: Engine,
}

impl NodeConfig {
    /// A single-member configuration on the given addresses, for embedded use and tests.
    pub fn single(name: &str, data_dir: &Path, client: SocketAddr, peer: SocketAddr) -> Self {
        let peer_url = format!("http://{peer}");
        Self {
            name: name.to_string(),
            data_dir: data_dir.to_path_buf(),
            listen_client: vec![client],
            advertise_client_urls: vec![format!("http://{client}")],
            listen_peer: peer,
            advertise_peer_urls: vec![peer_url.clone()],
            initial_cluster: vec![(name.to_string(), peer_url)],
            initial_cluster_state_new: true,
            initial_cluster_token: "berth-cluster".into(),
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            snapshot_count: 100_000,
            snapshot_catchup_entries: 5_000,
            auto_compaction_retention: 10_000,
            max_request_bytes: 1536 * 1024,
            engine: Engine::default(),
        }
    }

    pub fn member_id(&self) -> MemberId {
        member_id(&self.advertise_peer_urls, &self.initial_cluster_token)
    }
}

/// What the data directory records about its member, checked on every start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Marker {
    pub format: u32,
    pub name: String,
    pub member_id: MemberId,
    pub cluster_token: String,
    /// 0 until a member that joined an existing cluster hears from it.
    pub cluster_id: u64,
    /// The storage engine the directory's database was made with.
    #[serde(default)]
    pub engine: Engine,
}

fn dir_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::DataDir {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Opens or creates the data directory, refusing anything that is not this member's.
/// Returns the marker and whether the directory was fresh.
pub fn prepare_data_dir(cfg: &NodeConfig, initial_cluster_id: u64) -> Result<(Marker, bool)> {
    let dir = &cfg.data_dir;
    let marker_path = dir.join(MARKER);
    let existing: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(dir_err(dir, format!("cannot read it: {e}"))),
    };
    if existing.is_empty() {
        std::fs::create_dir_all(dir).map_err(|e| dir_err(dir, format!("cannot create it: {e}")))?;
        let marker = Marker {
            format: FORMAT,
            name: cfg.name.clone(),
            member_id: cfg.member_id(),
            cluster_token: cfg.initial_cluster_token.clone(),
            cluster_id: initial_cluster_id,
            engine: cfg.engine,
        };
        write_marker(dir, &marker)?;
        return Ok((marker, true));
    }
    let raw = std::fs::read(&marker_path).map_err(|_| {
        let names: Vec<String> = existing
            .iter()
            .take(5)
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        dir_err(
            dir,
            format!(
                "not a Berth store: it is not empty ({}) and has no {MARKER}; refusing to touch it",
                names.join(", ")
            ),
        )
    })?;
    let marker: Marker = serde_json::from_slice(&raw).map_err(|e| {
        dir_err(
            dir,
            format!("{MARKER} is corrupt: {e}; refusing to touch the directory"),
        )
    })?;
    if marker.format != FORMAT {
        return Err(dir_err(
            dir,
            format!(
                "data format {} is not supported (this build reads {FORMAT})",
                marker.format
            ),
        ));
    }
    if marker.name != cfg.name {
        return Err(dir_err(
            dir,
            format!("it belongs to member {:?}, not {:?}", marker.name, cfg.name),
        ));
    }
    if marker.engine != cfg.engine {
        return Err(dir_err(
            dir,
            format!(
                "its database uses the {:?} engine, not {:?}; start it with --backend {}",
                marker.engine,
                cfg.engine,
                format!("{:?}", marker.engine).to_lowercase()
            ),
        ));
    }
    if !dir.join("db").exists() {
        return Err(dir_err(dir, "the database directory db/ is missing"));
    }
    Ok((marker, false))
}

pub fn write_marker(dir: &Path, marker: &Marker) -> Result<()> {
    let tmp = dir.join(format!("{MARKER}.tmp"));
    let body = serde_json::to_vec_pretty(marker).map_err(|e| dir_err(dir, e.to_string()))?;
    std::fs::write(&tmp, body).map_err(|e| Error::Io {
        path: tmp.display().to_string(),
        source: e,
    })?;
    std::fs::rename(&tmp, dir.join(MARKER)).map_err(|e| Error::Io {
        path: dir.join(MARKER).display().to_string(),
        source: e,
    })
}

/// The cluster id of a new cluster: the token and every initial member.
pub fn initial_cluster_id(cfg: &NodeConfig) -> u64 {
    let mut ids: Vec<u64> = cfg
        .initial_cluster
        .iter()
        .map(|(_, url)| member_id(std::slice::from_ref(url), &cfg.initial_cluster_token))
        .collect();
    ids.sort_unstable();
    let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_be_bytes()).collect();
    fnv1a(&[&bytes, cfg.initial_cluster_token.as_bytes()]).max(1)
}

/// A membership change performed by the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembershipOp {
    Add {
        id: MemberId,
        node: MemberNode,
        learner: bool,
    },
    Promote {
        id: MemberId,
    },
    Remove {
        id: MemberId,
    },
}

type ReadWaiter = oneshot::Sender<Result<u64, String>>;

/// A write waiting for the proposer.
struct Proposal {
    req: Request,
    tx: oneshot::Sender<Result<Response>>,
}

/// Most requests one batched entry carries, and most bytes.
const MAX_BATCH: usize = 512;
const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;
/// Batched entries in flight at once; writes arriving meanwhile form the next batch.
const MAX_PROPOSALS_IN_FLIGHT: usize = 2;

/// A running member.
pub struct StoreNode {
    pub id: MemberId,
    pub name: String,
    pub raft: Raft,
    pub mvcc: Arc<Mvcc>,
    pub backend: Arc<dyn KvBackend>,
    pub peers: PeerClients,
    pub cluster_id: Arc<AtomicU64>,
    pub config: NodeConfig,
    marker: Mutex<Marker>,
    read_tx: mpsc::UnboundedSender<ReadWaiter>,
    proposals: mpsc::UnboundedSender<Proposal>,
    forwards: mpsc::UnboundedSender<Proposal>,
    /// The leader's lease clock: when each lease expires unless kept alive.
    lease_deadlines: Mutex<HashMap<i64, Instant>>,
    /// Flips to true when the member stops; servers and streams end on it.
    stop: tokio::sync::watch::Sender<bool>,
}

/// A started member and its tasks; [`StoreHandle::shutdown`] stops all of it and
/// releases the data directory.
pub struct StoreHandle {
    pub node: Arc<StoreNode>,
    tasks: Vec<JoinHandle<()>>,
    servers: Vec<JoinHandle<()>>,
    /// The addresses actually bound (useful when a port 0 was asked for).
    pub client_addrs: Vec<SocketAddr>,
    pub peer_addr: SocketAddr,
}

impl StoreHandle {
    /// Stops the member as a crash would, from the cluster's point of view: servers close
    /// their connections, streams end, Raft stops. Returns once the data directory is
    /// released, so the member can be started again from it.
    pub async fn shutdown(self) {
        let StoreHandle {
            node,
            tasks,
            servers,
            ..
        } = self;
        let _ = node.stop.send(true);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        if let Err(e) = node.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        for s in servers {
            let abort = s.abort_handle();
            if tokio::time::timeout(Duration::from_secs(3), s)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        let _ = node.backend.flush();
        let backend = node.backend.clone();
        drop(node);
        // Raft's storage tasks and the log flusher thread let go of the engine shortly
        // after Raft stops.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&backend) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if Arc::strong_count(&backend) > 1 {
            tracing::warn!(
                refs = Arc::strong_count(&backend),
                "store engine still referenced after shutdown"
            );
        }
    }
}

impl StoreNode {
    /// Opens the data directory and starts the member: Raft, the peer server on
    /// `listen_peer` and the etcd API on every `listen_client` address.
    pub async fn start(cfg: NodeConfig) -> Result<StoreHandle> {
        let cluster_id0 = if cfg.initial_cluster_state_new {
            initial_cluster_id(&cfg)
        } else {
            0
        };
        let (marker, fresh) = prepare_data_dir(&cfg, cluster_id0)?;
        let id = marker.member_id;
        let backend: Arc<dyn KvBackend> = marker.engine.open(&cfg.data_dir.join("db"))?;
        let mvcc = Arc::new(Mvcc::open(backend.clone())?);
        let cluster_id = Arc::new(AtomicU64::new(marker.cluster_id));
        let peers = PeerClients::new(id, cluster_id.clone());

        let raft_config = openraft::Config {
            cluster_name: cfg.initial_cluster_token.clone(),
            heartbeat_interval: cfg.heartbeat_interval.as_millis() as u64,
            election_timeout_min: cfg.election_timeout.as_millis() as u64,
            election_timeout_max: cfg.election_timeout.as_millis() as u64 * 2,
            max_payload_entries: 1024,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_count),
            max_in_snapshot_log_to_keep: cfg.snapshot_catchup_entries,
            snapshot_max_chunk_size: 4 * 1024 * 1024,
            install_snapshot_timeout: 10_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::InvalidArgument(format!("raft config: {e}")))?;
        let raft = Raft::new(
            id,
            Arc::new(raft_config),
            NetworkFactory {
                clients: peers.clone(),
            },
            LogStore::new(backend.clone()),
            StateMachine::new(
                mvcc.clone(),
                crate::state_machine::SnapshotFile::new(cfg.data_dir.join("snap")),
            ),
        )
        .await
        .map_err(|e| Error::Raft(e.to_string()))?;

        let (read_tx, read_rx) = mpsc::unbounded_channel();
        let (proposals, proposals_rx) = mpsc::unbounded_channel();
        let (forwards, forwards_rx) = mpsc::unbounded_channel();
        let node = Arc::new(StoreNode {
            id,
            name: cfg.name.clone(),
            raft,
            mvcc,
            backend,
            peers,
            cluster_id,
            marker: Mutex::new(marker),
            config: cfg.clone(),
            read_tx,
            proposals,
            forwards,
            lease_deadlines: Mutex::default(),
            stop: tokio::sync::watch::channel(false).0,
        });

        let mut tasks = Vec::new();
        let peer_listener = tokio::net::TcpListener::bind(cfg.listen_peer)
            .await
            .map_err(|e| Error::Io {
                path: format!("peer listener {}", cfg.listen_peer),
                source: e,
            })?;
        let peer_addr = peer_listener.local_addr().map_err(|e| Error::Io {
            path: "peer listener".into(),
            source: e,
        })?;
        let mut servers = vec![tokio::spawn(crate::peer::serve(
            node.clone(),
            peer_listener,
        ))];
        let mut client_addrs = Vec::new();
        for addr in &cfg.listen_client {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Error::Io {
                    path: format!("client listener {addr}"),
                    source: e,
                })?;
            client_addrs.push(l.local_addr().map_err(|e| Error::Io {
                path: "client listener".into(),
                source: e,
            })?);
            servers.push(tokio::spawn(crate::etcd::serve(node.clone(), l)));
        }

        if fresh && cfg.initial_cluster_state_new {
            let members: BTreeMap<MemberId, MemberNode> = cfg
                .initial_cluster
                .iter()
                .map(|(name, url)| {
                    let urls = vec![url.clone()];
                    (
                        member_id(&urls, &cfg.initial_cluster_token),
                        MemberNode {
                            name: name.clone(),
                            peer_urls: urls,
                        },
                    )
                })
                .collect();
            if !members.contains_key(&id) {
                return Err(Error::InvalidArgument(format!(
                    "--initial-cluster does not name this member ({}) with its advertised peer URL {:?}",
                    cfg.name, cfg.advertise_peer_urls
                )));
            }
            match node.raft.initialize(members).await {
                Ok(()) => {}
                Err(RaftError::APIError(e)) => {
                    tracing::debug!(error = %e, "initialize: already initialized")
                }
                Err(e) => return Err(Error::Raft(e.to_string())),
            }
        }

        tasks.push(tokio::spawn(read_index_loop(node.clone(), read_rx)));
        tasks.push(tokio::spawn(proposer_loop(node.clone(), proposals_rx)));
        tasks.push(tokio::spawn(forwarder_loop(node.clone(), forwards_rx)));
        tasks.push(tokio::spawn(leader_duties(node.clone())));
        tasks.push(tokio::spawn(publish_self(node.clone())));
        tracing::info!(member = %format_args!("{id:016x}"), name = %cfg.name, %peer_addr, ?client_addrs, "store member started");
        Ok(StoreHandle {
            node,
            tasks,
            servers,
            client_addrs,
            peer_addr,
        })
    }

    /// Resolves when the member is stopping.
    pub async fn stopped(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id.load(Ordering::SeqCst)
    }

    /// Checks a peer's cluster id; a member that joined an existing cluster adopts the
    /// first one it hears.
    pub fn check_cluster(&self, remote: u64) -> Result<()> {
        let local = self.cluster_id();
        if local == remote {
            return Ok(());
        }
        if local == 0 && remote != 0 {
            let mut m = self.marker.lock().unwrap_or_else(|p| p.into_inner());
            m.cluster_id = remote;
            write_marker(&self.config.data_dir, &m)?;
            self.cluster_id.store(remote, Ordering::SeqCst);
            tracing::info!(cluster = %format_args!("{remote:016x}"), "joined cluster");
            return Ok(());
        }
        if remote == 0 {
            // A joining member that has not yet heard from the cluster.
            return Ok(());
        }
        Err(Error::ClusterMismatch { local, remote })
    }

    pub fn current_term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    pub fn current_leader(&self) -> Option<MemberId> {
        self.raft.metrics().borrow().current_leader
    }

    fn node_of(&self, id: MemberId) -> Option<MemberNode> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership().get_node(&id).cloned()
    }

    fn election_wait(&self) -> Duration {
        self.config.election_timeout * 4 + Duration::from_secs(1)
    }

    /// Waits until some member is known as leader, up to a few election timeouts.
    async fn leader(&self) -> Result<MemberId> {
        let deadline = Instant::now() + self.election_wait();
        let mut rx = self.raft.metrics();
        loop {
            if let Some(l) = rx.borrow().current_leader {
                return Ok(l);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::NoLeader);
            }
            if tokio::time::timeout(left, rx.changed()).await.is_err() {
                return Err(Error::NoLeader);
            }
        }
    }

    /// Calls `method` on the leader (self included, via `local`), retrying while
    /// leadership moves.
    async fn on_leader<Q, R, F, Fut>(&self, method: PeerMethod, req: &Q, local: F) -> Result<R>
    where
        Q: Serialize,
        R: serde::de::DeserializeOwned,
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<R>>,
    {
        let deadline = Instant::now() + self.election_wait();
        loop {
            let leader = self.leader().await?;
            let res = if leader == self.id {
                local().await
            } else {
                let node = self.node_of(leader).ok_or(Error::NoLeader)?;
                match self
                    .peers
                    .call::<Q, Result<R, WireError>>(
                        leader,
                        &node,
                        method,
                        req,
                        Some(Duration::from_secs(30)),
                    )
                    .await
                {
                    Ok(Ok(r)) => Ok(r),
                    Ok(Err(w)) => Err(w.into_error()),
                    Err(CallError::Transport(m)) if Instant::now() < deadline => {
                        tracing::debug!(leader, error = %m, "leader unreachable, retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    Err(e) => Err(Error::Peer {
                        peer: format!("{leader:016x}"),
                        reason: e.to_string(),
                    }),
                }
            };
            match res {
                Err(Error::NotLeader { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
    }

    /// Replicates a write and returns what applying it produced.
    pub async fn write(&self, req: Request) -> Result<Response> {
        let resp = if self.is_leader() {
            match self.write_local(req.clone()).await {
                Err(Error::NotLeader { .. }) => self.forward(req).await?,
                other => other?,
            }
        } else {
            self.forward(req).await?
        };
        match resp.error {
            Some(e) => Err(e.into()),
            None => Ok(resp),
        }
    }

    /// Sends a write to the leader through the forwarder, which batches concurrent ones.
    async fn forward(&self, req: Request) -> Result<Response> {
        let (tx, rx) = oneshot::channel();
        self.forwards
            .send(Proposal { req, tx })
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Proposes a write on this member, which must be the leader. Concurrent writes are
    /// batched into one Raft entry by the proposer (see [`proposer_loop`]).
    pub async fn write_local(&self, req: Request) -> Result<Response> {
        let (tx, rx) = oneshot::channel();
        self.proposals
            .send(Proposal { req, tx })
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Proposes one entry to Raft and waits until it is applied.
    async fn propose(&self, req: Request) -> Result<Response> {
        match self.raft.client_write(req).await {
            Ok(r) => Ok(r.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(Error::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(RaftError::APIError(e)) => Err(Error::Raft(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(Error::Raft(e.to_string())),
        }
    }

    /// Waits until this member's state machine reflects every write acknowledged before
    /// the call: the read index of the leader, applied here.
    pub async fn read_barrier(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.read_tx.send(tx).map_err(|_| Error::Stopped)?;
        let index = rx.await.map_err(|_| Error::Stopped)?.map_err(Error::Raft)?;
        self.raft
            .wait(Some(self.election_wait()))
            .applied_index_at_least(Some(index), "read barrier")
            .await
            .map_err(|_| Error::Timeout)?;
        Ok(())
    }

    /// One read-index round on the leader: confirms leadership with a quorum and returns
    /// the index reads must wait for.
    ///
    /// A round that misses a quorum (a follower slow to answer one heartbeat, as on a
    /// loaded or emulated machine) is tried again, for up to an election timeout, before
    /// the read fails: a later round vouches for every read that arrived before it.
    pub async fn read_index_local(&self) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + self.config.election_timeout;
        loop {
            match self.raft.get_read_log_id().await {
                Ok((read, _applied)) => return Ok(read.map_or(0, |l| l.index)),
                Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(
                    f,
                ))) => {
                    return Err(Error::NotLeader {
                        leader: f.leader_id,
                    })
                }
                Err(RaftError::APIError(openraft::error::CheckIsLeaderError::QuorumNotEnough(
                    e,
                ))) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "a read-index round missed a quorum; again");
                    tokio::time::sleep(self.config.heartbeat_interval).await;
                }
                Err(e) => return Err(Error::Raft(e.to_string())),
            }
        }
    }

    async fn read_index(&self) -> Result<u64> {
        self.on_leader(PeerMethod::ReadIndex, &(), || self.read_index_local())
            .await
    }

    /// Renews a lease on the leader; returns its TTL.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64> {
        self.on_leader(PeerMethod::LeaseKeepAlive, &id, || async move {
            self.lease_keep_alive_local(id)
        })
        .await
    }

    pub fn lease_keep_alive_local(&self, id: i64) -> Result<i64> {
        if !self.is_leader() {
            return Err(Error::NotLeader {
                leader: self.current_leader(),
            });
        }
        let Some((ttl, _)) = self.mvcc.lease(id)? else {
            return Err(Error::LeaseNotFound(id));
        };
        self.lease_deadlines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Instant::now() + Duration::from_secs(ttl as u64));
        Ok(ttl)
    }

    /// Seconds left on a lease by the leader's clock, and its granted TTL.
    pub async fn lease_time_to_live(&self, id: i64) -> Result<(i64, i64)> {
        self.on_leader(PeerMethod::LeaseTimeToLive, &id, || async move {
            self.lease_time_to_live_local(id)
        })
        .await
    }

    pub fn lease_time_to_live_local(&self, id: i64) -> Result<(i64, i64)> {
        if !self.is_leader() {
            return Err(Error::NotLeader {
                leader: self.current_leader(),
            });
        }
        let Some((ttl, _)) = self.mvcc.lease(id)? else {
            return Err(Error::LeaseNotFound(id));
        };
        let now = Instant::now();
        let deadline = *self
            .lease_deadlines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id)
            .or_insert(now + Duration::from_secs(ttl as u64));
        let left = deadline.saturating_duration_since(now).as_secs_f64().ceil() as i64;
        Ok((left, ttl))
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Performs a membership change on the leader.
    pub async fn change_membership(&self, op: MembershipOp) -> Result<()> {
        self.on_leader(PeerMethod::ChangeMembership, &op, || {
            self.change_membership_local(op.clone())
        })
        .await
    }

    pub async fn change_membership_local(&self, op: MembershipOp) -> Result<()> {
        if !self.is_leader() {
            return Err(Error::NotLeader {
                leader: self.current_leader(),
            });
        }
        let map = |e: RaftError<MemberId, ClientWriteError<MemberId, MemberNode>>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => Error::NotLeader {
                leader: f.leader_id,
            },
            other => Error::Raft(other.to_string()),
        };
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let voters: BTreeSet<MemberId> = membership.membership().voter_ids().collect();
        let known = |id: &MemberId| membership.membership().get_node(id).is_some();
        match op {
            MembershipOp::Add { id, node, learner } => {
                if known(&id) {
                    return Err(Error::InvalidArgument(format!(
                        "member {id:016x} already exists (peer URLs {:?})",
                        node.peer_urls
                    )));
                }
                self.raft.add_learner(id, node, false).await.map_err(map)?;
                if !learner {
                    self.raft
                        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                        .await
                        .map_err(map)?;
                }
            }
            MembershipOp::Promote { id } => {
                if !known(&id) {
                    return Err(Error::MemberNotFound(id));
                }
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map_err(map)?;
            }
            MembershipOp::Remove { id } => {
                if !known(&id) {
                    return Err(Error::MemberNotFound(id));
                }
                if voters.contains(&id) {
                    self.raft
                        .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                        .await
                        .map_err(map)?;
                } else {
                    self.raft
                        .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                        .await
                        .map_err(map)?;
                }
            }
        }
        Ok(())
    }
}

/// Group proposal: while up to [`MAX_PROPOSALS_IN_FLIGHT`] entries are being replicated,
/// new writes queue; the next entry carries all of them as one [`Request::Batch`]. Each
/// request in a batch is still applied on its own, in order, with its own revision, so
/// batching changes cost, not meaning. Under load this divides Raft's per-entry work
/// (log append, replication, fsync, apply) among many writes.
async fn proposer_loop(node: Arc<StoreNode>, rx: mpsc::UnboundedReceiver<Proposal>) {
    batch_loop(rx, move |req| {
        let node = node.clone();
        async move { node.propose(req).await }
    })
    .await
}

/// On a follower: writes forwarded to the leader travel as batches too, one peer call
/// for all the writes that queued while the previous call was in flight.
async fn forwarder_loop(node: Arc<StoreNode>, rx: mpsc::UnboundedReceiver<Proposal>) {
    batch_loop(rx, move |req| {
        let node = node.clone();
        async move {
            node.on_leader(PeerMethod::ClientWrite, &req, || {
                node.write_local(req.clone())
            })
            .await
        }
    })
    .await
}

/// Takes proposals off `rx` in batches (whatever queued while up to
/// [`MAX_PROPOSALS_IN_FLIGHT`] earlier batches were in flight) and sends each batch with
/// `send`.
async fn batch_loop<F, Fut>(mut rx: mpsc::UnboundedReceiver<Proposal>, send: F)
where
    F: Fn(Request) -> Fut,
    Fut: std::future::Future<Output = Result<Response>> + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_PROPOSALS_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.req.encoded_len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.req.encoded_len();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let fut = run_batch(batch, &send);
        tokio::spawn(async move {
            let _permit = permit;
            fut.await;
        });
    }
}

/// Sends one batch of proposals as a single request and answers each proposal from its
/// part of the response. Proposals that are batches themselves (forwarded by a follower)
/// are flattened into this one, and answered with their slice.
fn run_batch<F, Fut>(
    mut batch: Vec<Proposal>,
    send: &F,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    F: Fn(Request) -> Fut,
    Fut: std::future::Future<Output = Result<Response>> + Send + 'static,
{
    enum Plan {
        One(oneshot::Sender<Result<Response>>, Fut2),
        Many(
            Vec<(oneshot::Sender<Result<Response>>, usize, usize, bool)>,
            usize,
            Fut2,
        ),
    }
    type Fut2 = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response>> + Send>>;
    let plan = if batch.len() == 1 && !matches!(batch[0].req, Request::Batch(_)) {
        let Proposal { req, tx } = batch.pop().expect("one proposal");
        let fut: Fut2 = Box::pin(send(req));
        Plan::One(tx, fut)
    } else {
        let mut spans = Vec::with_capacity(batch.len());
        let mut flat = Vec::with_capacity(batch.len());
        for p in batch {
            match p.req {
                Request::Batch(rs) => {
                    spans.push((p.tx, flat.len(), rs.len(), true));
                    flat.extend(rs);
                }
                r => {
                    spans.push((p.tx, flat.len(), 1, false));
                    flat.push(r);
                }
            }
        }
        let n = flat.len();
        let fut: Fut2 = Box::pin(send(Request::Batch(flat)));
        Plan::Many(spans, n, fut)
    };
    async move {
        match plan {
            Plan::One(tx, fut) => {
                let _ = tx.send(fut.await);
            }
            Plan::Many(spans, n, fut) => {
                let subs = fut.await.and_then(|resp| {
                    let subs: Vec<Response> = postcard::from_bytes(&resp.body)
                        .map_err(|e| Error::corrupt("batch response", e))?;
                    if subs.len() != n {
                        return Err(Error::corrupt(
                            "batch response",
                            format!("{} responses for {n} requests", subs.len()),
                        ));
                    }
                    Ok(subs)
                });
                match subs {
                    Ok(subs) => {
                        for (tx, start, len, is_batch) in spans {
                            let part = &subs[start..start + len];
                            let r = if is_batch {
                                postcard::to_allocvec(part)
                                    .map(|body| Response {
                                        revision: part.last().map_or(0, |r| r.revision),
                                        body,
                                        error: None,
                                    })
                                    .map_err(|e| Error::corrupt("batch response", e))
                            } else {
                                Ok(part[0].clone())
                            };
                            let _ = tx.send(r);
                        }
                    }
                    Err(e) => {
                        let w = WireError::from_error(&e);
                        for (tx, ..) in spans {
                            let _ = tx.send(Err(w.clone().into_error()));
                        }
                    }
                }
            }
        }
    }
}

/// Serves read-index requests in rounds: every reader waiting when a round starts shares
/// it; readers who arrive during a round wait for the next one (a round that began
/// before a read arrived cannot vouch for it).
async fn read_index_loop(node: Arc<StoreNode>, mut rx: mpsc::UnboundedReceiver<ReadWaiter>) {
    while let Some(first) = rx.recv().await {
        let mut waiters = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        let r = node.read_index().await.map_err(|e| e.to_string());
        for w in waiters {
            let _ = w.send(r.clone());
        }
    }
}

/// While this member leads: expire leases by the leader's clock and compact history.
async fn leader_duties(node: Arc<StoreNode>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut was_leader = false;
    let mut last_compact_check = Instant::now();
    loop {
        tick.tick().await;
        let leader = node.is_leader();
        if leader && !was_leader {
            // A new leader gives every lease a full TTL, as etcd does.
            node.lease_deadlines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        was_leader = leader;
        if !leader {
            continue;
        }
        if let Err(e) = expire_leases(&node).await {
            tracing::warn!(error = %e, "lease expiry");
        }
        if node.config.auto_compaction_retention > 0
            && last_compact_check.elapsed() >= Duration::from_secs(5)
        {
            last_compact_check = Instant::now();
            let current = node.mvcc.current_revision();
            let keep = node.config.auto_compaction_retention;
            let target = current - keep;
            if target > node.mvcc.compact_revision() + keep / 10 {
                let req = CompactionRequest {
                    revision: target,
                    physical: false,
                };
                match node
                    .write(Request::Compact(prost::Message::encode_to_vec(&req)))
                    .await
                {
                    Ok(_) => tracing::info!(revision = target, "auto-compacted history"),
                    Err(e) => tracing::warn!(error = %e, revision = target, "auto-compaction"),
                }
            }
        }
    }
}

async fn expire_leases(node: &StoreNode) -> Result<()> {
    let now = Instant::now();
    let mut expired = Vec::new();
    {
        let leases = node.mvcc.leases()?;
        let mut dl = node
            .lease_deadlines
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let live: BTreeSet<i64> = leases.iter().map(|(id, _)| *id).collect();
        dl.retain(|id, _| live.contains(id));
        for (id, ttl) in leases {
            let d = *dl
                .entry(id)
                .or_insert(now + Duration::from_secs(ttl as u64));
            if d <= now {
                expired.push(id);
            }
        }
    }
    for id in expired {
        let req = LeaseRevokeRequest { id };
        match node
            .write(Request::LeaseRevoke(prost::Message::encode_to_vec(&req)))
            .await
        {
            Ok(_) | Err(Error::LeaseNotFound(_)) => {
                tracing::info!(lease = %format_args!("{id:x}"), "lease expired");
                node.lease_deadlines
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Publishes this member's name and client URLs through Raft, so MemberList shows them
/// on every member.
async fn publish_self(node: Arc<StoreNode>) {
    let me = Member {
        id: node.id,
        name: node.name.clone(),
        peer_ur_ls: node.config.advertise_peer_urls.clone(),
        client_ur_ls: node.config.advertise_client_urls.clone(),
        is_learner: false,
    };
    let body = prost::Message::encode_to_vec(&me);
    loop {
        if let Ok(Some(b)) = node.backend.get(
            crate::backend::Tree::StateMachine,
            &crate::mvcc::member_key(node.id),
        ) {
            if b == body {
                return;
            }
        }
        match node.write(Request::PublishMember(body.clone())).await {
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(error = %e, "publishing member attributes, will retry");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
