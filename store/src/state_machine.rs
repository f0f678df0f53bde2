//! openraft's state machine over [`Mvcc`]: applies committed entries, builds and installs
//! snapshots.
//!
//! A snapshot is the whole state-machine tree (keys, the history window, leases, members
//! and meta), so a member that catches up by snapshot can serve watches from the same
//! window as the others. The current snapshot lives in a file of its own
//! ([`SnapshotFile`]), not in the engine: one sequential write, fsynced, checksummed.

// The error type is openraft's `StorageError`, which its storage traits require.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::ops::{Bound, ControlFlow};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::backend::{Batch, KvBackend, Tree};
use crate::mvcc::{member_key, Mvcc, M_APPLIED, M_MEMBERSHIP};
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, LeaseGrantRequest,
    LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse, Member, PutRequest, TxnRequest,
};
use crate::types::{
    AppliedError, Entry, LogId, Request, Response, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig,
};

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(
        ErrorSubject::StateMachine,
        verb,
        std::io::Error::other(e.to_string()),
    )
}

/// A snapshot as stored and sent: its meta and every pair of the state-machine tree.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The current snapshot on disk: `<dir>/current.snap`, a postcard [`StoredSnapshot`]
/// followed by its FNV-1a 64 checksum. Written aside, fsynced, renamed into place.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    dir: std::path::PathBuf,
}

impl SnapshotFile {
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.join("current.snap")
    }

    fn save(&self, snap: &StoredSnapshot) -> std::io::Result<()> {
        use std::io::Write;
        std::fs::create_dir_all(&self.dir)?;
        let mut body = postcard::to_allocvec(snap).map_err(std::io::Error::other)?;
        let sum = crate::types::fnv1a(&[&body]);
        body.extend_from_slice(&sum.to_be_bytes());
        let tmp = self.dir.join("current.snap.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.path())?;
        crate::backend::fsync_dir(&self.dir)
    }

    fn load(&self) -> std::io::Result<Option<StoredSnapshot>> {
        let path = self.path();
        let mut body = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let corrupt = |why: &str| {
            std::io::Error::other(format!("snapshot {} is corrupt: {why}", path.display()))
        };
        let Some(split) = body.len().checked_sub(8) else {
            return Err(corrupt("too short"));
        };
        let sum = u64::from_be_bytes(
            body[split..]
                .try_into()
                .map_err(|_| corrupt("no checksum"))?,
        );
        body.truncate(split);
        if crate::types::fnv1a(&[&body]) != sum {
            return Err(corrupt("checksum mismatch"));
        }
        postcard::from_bytes(&body)
            .map(Some)
            .map_err(|e| corrupt(&e.to_string()))
    }
}

/// The Raft state machine. Clones share the state.
#[derive(Clone)]
pub struct StateMachine {
    mvcc: Arc<Mvcc>,
    snapshots: SnapshotFile,
}

impl StateMachine {
    pub fn new(mvcc: Arc<Mvcc>, snapshots: SnapshotFile) -> Self {
        Self { mvcc, snapshots }
    }

    pub fn mvcc(&self) -> &Arc<Mvcc> {
        &self.mvcc
    }

    fn backend(&self) -> &Arc<dyn KvBackend> {
        self.mvcc.backend()
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self
            .backend()
            .get(Tree::StateMachine, key)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?
        {
            Some(b) => postcard::from_bytes(&b)
                .map(Some)
                .map_err(|e| sm_err(ErrorVerb::Read, e)),
            None => Ok(None),
        }
    }

    /// Ids of snapshots: the last log id and a counter, so two snapshots never share one.
    fn snapshot_id(last: Option<LogId>) -> String {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        match last {
            Some(l) => format!("{}-{}-{n}", l.leader_id, l.index),
            None => format!("none-{n}"),
        }
    }
}

/// Applies one request, or each request of a batch in order, into a [`Response`].
fn apply_one(ctx: &mut crate::mvcc::ApplyCtx<'_>, req: &Request) -> Response {
    let result = match req {
        Request::Batch(reqs) => {
            let subs: Vec<Response> = reqs.iter().map(|r| apply_one(ctx, r)).collect();
            postcard::to_allocvec(&subs)
                .map_err(|e| AppliedError::Invalid(format!("encoding batch response: {e}")))
        }
        _ => apply_request(ctx, req),
    };
    let revision = ctx.revision();
    match result {
        Ok(body) => Response {
            revision,
            body,
            error: None,
        },
        Err(e) => Response {
            revision,
            body: Vec::new(),
            error: Some(e),
        },
    }
}

fn apply_request(
    ctx: &mut crate::mvcc::ApplyCtx<'_>,
    req: &Request,
) -> Result<Vec<u8>, AppliedError> {
    fn dec<M: Message + Default>(b: &[u8]) -> Result<M, AppliedError> {
        M::decode(b).map_err(|e| AppliedError::Invalid(format!("undecodable request: {e}")))
    }
    Ok(match req {
        Request::Put(b) => ctx.put(&dec::<PutRequest>(b)?)?.encode_to_vec(),
        Request::DeleteRange(b) => ctx
            .delete_range(&dec::<DeleteRangeRequest>(b)?)?
            .encode_to_vec(),
        Request::Txn(b) => ctx.txn(&dec::<TxnRequest>(b)?)?.encode_to_vec(),
        Request::Compact(b) => {
            let r = dec::<CompactionRequest>(b)?;
            ctx.compact(r.revision)?;
            CompactionResponse { header: None }.encode_to_vec()
        }
        Request::LeaseGrant(b) => {
            let r = dec::<LeaseGrantRequest>(b)?;
            let id = ctx.lease_grant(r.id, r.ttl)?;
            LeaseGrantResponse {
                header: None,
                id,
                ttl: r.ttl.max(1),
                error: String::new(),
            }
            .encode_to_vec()
        }
        Request::LeaseRevoke(b) => {
            let r = dec::<LeaseRevokeRequest>(b)?;
            ctx.lease_revoke(r.id)?;
            LeaseRevokeResponse { header: None }.encode_to_vec()
        }
        Request::Batch(_) => {
            return Err(AppliedError::Invalid("a batch inside a batch".into()));
        }
        Request::PublishMember(b) => {
            let m = dec::<Member>(b)?;
            ctx.put_raw(member_key(m.id), b.clone());
            Vec::new()
        }
    })
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Everything applied so far must be durable before Raft may purge the log behind
        // this snapshot.
        self.backend()
            .flush()
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let (pairs, last_applied, membership) = {
            let _g = self.mvcc.read_guard();
            let mut pairs = Vec::new();
            self.backend()
                .scan(
                    Tree::StateMachine,
                    Bound::Unbounded,
                    Bound::Unbounded,
                    false,
                    &mut |k, v| {
                        pairs.push((k.to_vec(), v.to_vec()));
                        ControlFlow::Continue(())
                    },
                )
                .map_err(|e| sm_err(ErrorVerb::Read, e))?;
            let last_applied = self.meta::<Option<LogId>>(M_APPLIED)?.flatten();
            let membership: StoredMembership = self.meta(M_MEMBERSHIP)?.unwrap_or_default();
            (pairs, last_applied, membership)
        };
        let data = postcard::to_allocvec(&SnapshotBody { pairs })
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id: Self::snapshot_id(last_applied),
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        self.snapshots
            .save(&stored)
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((
            self.meta::<Option<LogId>>(M_APPLIED)?.flatten(),
            self.meta(M_MEMBERSHIP)?.unwrap_or_default(),
        ))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut ctx = self.mvcc.begin();
        let mut out = Vec::new();
        let mut last = None;
        let mut membership = None;
        for entry in entries {
            last = Some(entry.log_id);
            let resp = match &entry.payload {
                EntryPayload::Blank => Response {
                    revision: ctx.revision(),
                    ..Default::default()
                },
                EntryPayload::Normal(req) => apply_one(&mut ctx, req),
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m.clone()));
                    Response {
                        revision: ctx.revision(),
                        ..Default::default()
                    }
                }
            };
            out.push(resp);
        }
        if let Some(l) = last {
            ctx.put_raw(
                M_APPLIED.to_vec(),
                postcard::to_allocvec(&Some(l)).map_err(|e| sm_err(ErrorVerb::Write, e))?,
            );
        }
        if let Some(m) = membership {
            ctx.put_raw(
                M_MEMBERSHIP.to_vec(),
                postcard::to_allocvec(&m).map_err(|e| sm_err(ErrorVerb::Write, e))?,
            );
        }
        ctx.commit().map_err(|e| sm_err(ErrorVerb::Write, e))?;
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let body: SnapshotBody = postcard::from_bytes(&data).map_err(|e| {
            StorageError::from_io_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                std::io::Error::other(e.to_string()),
            )
        })?;
        // Replace the whole tree in one atomic batch.
        let mut batch = Batch::default();
        self.backend()
            .scan(
                Tree::StateMachine,
                Bound::Unbounded,
                Bound::Unbounded,
                false,
                &mut |k, _| {
                    batch.remove(k.to_vec());
                    ControlFlow::Continue(())
                },
            )
            .map_err(|e| sm_err(ErrorVerb::Read, e))?;
        for (k, v) in body.pairs {
            batch.put(k, v);
        }
        {
            let mut ctx_batch = batch;
            ctx_batch.put(
                M_APPLIED,
                postcard::to_allocvec(&meta.last_log_id)
                    .map_err(|e| sm_err(ErrorVerb::Write, e))?,
            );
            ctx_batch.put(
                M_MEMBERSHIP,
                postcard::to_allocvec(&meta.last_membership)
                    .map_err(|e| sm_err(ErrorVerb::Write, e))?,
            );
            self.mvcc
                .install(ctx_batch)
                .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        }
        // The installed state is made durable before the snapshot file claims it.
        self.backend()
            .flush()
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.snapshots
            .save(&stored)
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        tracing::info!(snapshot = %meta.snapshot_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some(s) = self
            .snapshots
            .load()
            .map_err(|e| sm_err(ErrorVerb::Read, e))?
        else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::SledBackend;
    use openraft::{CommittedLeaderId, LogId as RaftLogId};

    fn put(key: &str, lease: i64) -> Request {
        Request::Put(
            PutRequest {
                key: key.into(),
                value: b"v".to_vec(),
                lease,
                ..Default::default()
            }
            .encode_to_vec(),
        )
    }

    #[tokio::test]
    async fn a_batch_applies_each_request_with_its_own_revision_and_error() {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn KvBackend> = Arc::new(SledBackend::open(dir.path()).unwrap());
        let mut sm = StateMachine::new(
            Arc::new(Mvcc::open(backend).unwrap()),
            SnapshotFile::new(dir.path().join("snap")),
        );
        let entry = Entry {
            log_id: RaftLogId::new(CommittedLeaderId::new(1, 1), 1),
            payload: EntryPayload::Normal(Request::Batch(vec![
                put("a", 0),
                put("b", 42),
                put("c", 0),
            ])),
        };
        let out = sm.apply([entry]).await.unwrap();
        assert_eq!(out.len(), 1);
        let subs: Vec<Response> = postcard::from_bytes(&out[0].body).unwrap();
        let revs: Vec<i64> = subs.iter().map(|r| r.revision).collect();
        assert_eq!(revs, [2, 2, 3], "the failed put takes no revision");
        assert_eq!(subs[1].error, Some(AppliedError::LeaseNotFound(42)));
        assert!(subs[0].error.is_none() && subs[2].error.is_none());
        assert_eq!(out[0].revision, 3);
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(1));
    }
}
