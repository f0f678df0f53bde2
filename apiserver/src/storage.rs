//! The seam between the API server and the replicated store: [`Storage`] speaks keys,
//! byte values and revisions (the store holds bytes, not kinds). [`LocalStore`] drives the
//! store member running in this process; reads are linearizable unless asked otherwise, and
//! every write is a compare-and-swap on the key's mod revision.

use std::sync::Arc;

use async_trait::async_trait;
use berth_store::etcd::{run_watcher, EtcdApi, WatchItem, WatchSpec};
use berth_store::mvcc::KeyRange;
use berth_store::node::StoreNode;
use berth_store::pb::etcdserverpb::{
    compare, request_op, response_op, Compare, DeleteRangeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use berth_store::pb::mvccpb::{event::EventType, KeyValue};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    #[error("key {key} not found")]
    NotFound { key: String },
    /// The key's mod revision is not the expected one; carries what is stored now.
    #[error("key {key} was modified: expected revision {expected}")]
    Conflict {
        key: String,
        expected: i64,
        current: Option<Box<Item>>,
    },
    #[error("revision {requested} has been compacted (oldest kept: {compacted})")]
    Compacted { requested: i64, compacted: i64 },
    #[error("revision {requested} is in the future")]
    FutureRevision { requested: i64 },
    #[error("request too large: {size} bytes (max {max})")]
    TooLarge { size: usize, max: usize },
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One stored value and its revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub create_revision: i64,
}

/// A page of a range read.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<Item>,
    /// The store revision the page was read at.
    pub revision: i64,
    /// More keys follow the last item.
    pub more: bool,
}

/// A change seen by a watch.
#[derive(Debug, Clone)]
pub enum Change {
    Put { item: Item },
    Delete { key: String, revision: i64 },
}

impl Change {
    pub fn revision(&self) -> i64 {
        match self {
            Change::Put { item } => item.mod_revision,
            Change::Delete { revision, .. } => *revision,
        }
    }
}

/// What a store watch delivers.
#[derive(Debug)]
pub enum WatchBatch {
    Changes(Vec<Change>),
    Compacted { compact_revision: i64 },
}

/// The store as the API server sees it.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// The revision every write acknowledged before the call is visible at (a linearizable
    /// read point).
    async fn linearizable_revision(&self) -> Result<i64>;
    /// The newest revision this member has applied, without a round to the leader.
    fn local_revision(&self) -> i64;
    /// The oldest revision still kept in history.
    fn compact_revision(&self) -> i64;
    async fn get(&self, key: &str) -> Result<Option<Item>>;
    /// Keys in `[start, end)` at `revision` (0 = newest), at most `limit` (0 = all).
    async fn range(&self, start: &str, end: &str, revision: i64, limit: i64) -> Result<Page>;
    /// Creates `key`; fails when it exists. Returns the new mod revision.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64>;
    /// Replaces `key` if its mod revision is still `expected`. Returns the new mod revision.
    async fn update(&self, key: &str, value: Vec<u8>, expected: i64) -> Result<i64>;
    /// Deletes `key` if its mod revision is still `expected`. Returns the delete's revision.
    async fn delete(&self, key: &str, expected: i64) -> Result<i64>;
    /// Streams every change under `[start, end)` from `from` (inclusive) on.
    fn watch(&self, start: &str, end: &str, from: i64) -> mpsc::Receiver<WatchBatch>;
    /// The Raft state of this process's store member, when there is one.
    fn member_status(&self) -> Option<MemberStatus> {
        None
    }
}

/// What `/metrics` reports about the store member beside the API server.
#[derive(Debug, Clone)]
pub struct MemberStatus {
    pub name: String,
    pub is_leader: bool,
    pub has_leader: bool,
    pub term: u64,
}

/// The end of the range of every key starting with `prefix`.
pub fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return String::from_utf8_lossy(&end).into_owned();
        }
    }
    "\0".to_string()
}

/// The store member in this process.
#[derive(Clone)]
pub struct LocalStore {
    api: EtcdApi,
}

impl LocalStore {
    pub fn new(node: Arc<StoreNode>) -> Self {
        Self {
            api: EtcdApi::new(node),
        }
    }

    fn node(&self) -> &Arc<StoreNode> {
        &self.api.node
    }
}

fn item(kv: KeyValue) -> Item {
    Item {
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        value: kv.value,
        mod_revision: kv.mod_revision,
        create_revision: kv.create_revision,
    }
}

fn store_err(e: berth_store::Error) -> Error {
    match e {
        berth_store::Error::Compacted {
            requested,
            compacted,
        } => Error::Compacted {
            requested,
            compacted,
        },
        berth_store::Error::FutureRevision { requested, .. } => Error::FutureRevision { requested },
        berth_store::Error::RequestTooLarge { size, max } => Error::TooLarge { size, max },
        other => Error::Unavailable(other.to_string()),
    }
}

fn mod_equals(key: &str, revision: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Mod as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(compare::TargetUnion::ModRevision(revision)),
        range_end: Vec::new(),
    }
}

fn get_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })),
    }
}

impl LocalStore {
    /// A compare-and-swap: `then` runs if the key's mod revision is `expected` (0: absent).
    /// On failure the current value (if any) is returned.
    async fn cas(
        &self,
        key: &str,
        expected: i64,
        then: RequestOp,
    ) -> Result<std::result::Result<i64, Option<Item>>> {
        let resp = self
            .api
            .txn(TxnRequest {
                compare: vec![mod_equals(key, expected)],
                success: vec![then],
                failure: vec![get_op(key)],
            })
            .await
            .map_err(store_err)?;
        let revision = resp.header.as_ref().map_or(0, |h| h.revision);
        if resp.succeeded {
            return Ok(Ok(revision));
        }
        let current = resp
            .responses
            .into_iter()
            .find_map(|r| match r.response {
                Some(response_op::Response::ResponseRange(r)) => r.kvs.into_iter().next(),
                _ => None,
            })
            .map(item);
        Ok(Err(current))
    }
}

#[async_trait]
impl Storage for LocalStore {
    fn member_status(&self) -> Option<MemberStatus> {
        let node = self.node();
        Some(MemberStatus {
            name: node.name.clone(),
            is_leader: node.is_leader(),
            has_leader: node.current_leader().is_some(),
            term: node.current_term(),
        })
    }

    async fn linearizable_revision(&self) -> Result<i64> {
        self.node().read_barrier().await.map_err(store_err)?;
        Ok(self.node().mvcc.current_revision())
    }

    fn local_revision(&self) -> i64 {
        self.node().mvcc.current_revision()
    }

    fn compact_revision(&self) -> i64 {
        self.node().mvcc.compact_revision()
    }

    async fn get(&self, key: &str) -> Result<Option<Item>> {
        let resp = self
            .api
            .range(RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })
            .await
            .map_err(store_err)?;
        Ok(resp.kvs.into_iter().next().map(item))
    }

    async fn range(&self, start: &str, end: &str, revision: i64, limit: i64) -> Result<Page> {
        let resp = self
            .api
            .range(RangeRequest {
                key: start.as_bytes().to_vec(),
                range_end: end.as_bytes().to_vec(),
                revision,
                limit,
                // The caller picked the revision; a read at the local revision is enough.
                serializable: revision > 0,
                ..Default::default()
            })
            .await
            .map_err(store_err)?;
        let at = resp.header.as_ref().map_or(0, |h| h.revision);
        Ok(Page {
            revision: if revision > 0 { revision } else { at },
            more: resp.more,
            items: resp.kvs.into_iter().map(item).collect(),
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64> {
        let put = RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.as_bytes().to_vec(),
                value,
                ..Default::default()
            })),
        };
        match self.cas(key, 0, put).await? {
            Ok(rev) => Ok(rev),
            Err(_) => Err(Error::AlreadyExists {
                key: key.to_string(),
            }),
        }
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: i64) -> Result<i64> {
        let put = RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.as_bytes().to_vec(),
                value,
                ..Default::default()
            })),
        };
        match self.cas(key, expected, put).await? {
            Ok(rev) => Ok(rev),
            Err(None) => Err(Error::NotFound {
                key: key.to_string(),
            }),
            Err(current) => Err(Error::Conflict {
                key: key.to_string(),
                expected,
                current: current.map(Box::new),
            }),
        }
    }

    async fn delete(&self, key: &str, expected: i64) -> Result<i64> {
        let del = RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: key.as_bytes().to_vec(),
                    ..Default::default()
                },
            )),
        };
        match self.cas(key, expected, del).await? {
            Ok(rev) => Ok(rev),
            Err(None) => Err(Error::NotFound {
                key: key.to_string(),
            }),
            Err(current) => Err(Error::Conflict {
                key: key.to_string(),
                expected,
                current: current.map(Box::new),
            }),
        }
    }

    fn watch(&self, start: &str, end: &str, from: i64) -> mpsc::Receiver<WatchBatch> {
        let (raw_tx, mut raw_rx) = mpsc::channel(64);
        let (tx, rx) = mpsc::channel(64);
        let spec = WatchSpec {
            range: KeyRange::new(start.as_bytes(), end.as_bytes()),
            start_revision: from,
            no_put: false,
            no_delete: false,
            prev_kv: false,
        };
        tokio::spawn(run_watcher(self.node().clone(), spec, raw_tx));
        tokio::spawn(async move {
            loop {
                let batch = tokio::select! {
                    b = raw_rx.recv() => b,
                    _ = tx.closed() => return,
                };
                let Some(batch) = batch else { return };
                let out = match batch {
                    WatchItem::Events(evs) => WatchBatch::Changes(
                        evs.into_iter()
                            .filter_map(|ev| {
                                let put = ev.r#type == EventType::Put as i32;
                                let kv = ev.kv?;
                                Some(if put {
                                    Change::Put { item: item(kv) }
                                } else {
                                    Change::Delete {
                                        key: String::from_utf8_lossy(&kv.key).into_owned(),
                                        revision: kv.mod_revision,
                                    }
                                })
                            })
                            .collect(),
                    ),
                    WatchItem::Compacted { compact_revision } => {
                        WatchBatch::Compacted { compact_revision }
                    }
                };
                if tx.send(out).await.is_err() {
                    return;
                }
            }
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end("/registry/core/pods/"), "/registry/core/pods0");
        assert_eq!(prefix_end("a"), "b");
    }
}
