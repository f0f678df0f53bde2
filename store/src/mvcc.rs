//! The revisioned key-value state: etcd's MVCC model on a [`KvBackend`] tree.
//!
//! Layout of the state-machine tree (all in one tree so one batch is atomic):
//! - `k<key>`: the current `KeyValue` of a live key (prost, key field left empty);
//! - `h<rev:8><sub:4>`: the event at main revision `rev`, sub-revision `sub`, with the
//!   previous value of the key (always kept: past-revision reads undo events with it);
//! - `l<id:8>`: a lease's TTL; `a<id:8><key>`: a key attached to the lease;
//! - `u<id:8>`: a published member (prost `Member`: name and client URLs);
//! - `m/...`: the applied log id, membership, revision, compacted revision, lease counter.
//!
//! Writes go through [`ApplyCtx`], an overlay over the tree that turns into one batch per
//! Raft `apply`. Reads hold the read side of a lock the writer holds while it writes a
//! batch, so a reader never sees half of a transaction.

use std::collections::BTreeMap;
use std::ops::{Bound, ControlFlow};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use prost::Message;

use crate::backend::{prefix_end, Batch, KvBackend, Tree};
use crate::error::{Error, Result};
use crate::pb::etcdserverpb::{
    compare, range_request, request_op, response_op, Compare, DeleteRangeRequest,
    DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseOp, TxnRequest, TxnResponse,
};
use crate::pb::mvccpb::{event::EventType, Event, KeyValue};
use crate::types::AppliedError;

pub(crate) const P_KEY: u8 = b'k';
pub(crate) const P_HIST: u8 = b'h';
pub(crate) const P_LEASE: u8 = b'l';
pub(crate) const P_ATTACH: u8 = b'a';
pub(crate) const P_MEMBER: u8 = b'u';
pub(crate) const M_APPLIED: &[u8] = b"m/applied";
pub(crate) const M_MEMBERSHIP: &[u8] = b"m/membership";
pub(crate) const M_REV: &[u8] = b"m/rev";
pub(crate) const M_COMPACT: &[u8] = b"m/compact";
pub(crate) const M_LEASE_SEQ: &[u8] = b"m/lease_seq";

pub(crate) fn key_of(user_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(user_key.len() + 1);
    k.push(P_KEY);
    k.extend_from_slice(user_key);
    k
}

pub(crate) fn hist_key(rev: i64, sub: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(13);
    k.push(P_HIST);
    k.extend_from_slice(&(rev as u64).to_be_bytes());
    k.extend_from_slice(&sub.to_be_bytes());
    k
}

fn lease_key(id: i64) -> Vec<u8> {
    let mut k = vec![P_LEASE];
    k.extend_from_slice(&(id as u64).to_be_bytes());
    k
}

fn attach_key(id: i64, user_key: &[u8]) -> Vec<u8> {
    let mut k = vec![P_ATTACH];
    k.extend_from_slice(&(id as u64).to_be_bytes());
    k.extend_from_slice(user_key);
    k
}

pub(crate) fn member_key(id: u64) -> Vec<u8> {
    let mut k = vec![P_MEMBER];
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn i64_bytes(v: i64) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

fn bytes_i64(b: &[u8]) -> Result<i64> {
    let arr: [u8; 8] = b
        .try_into()
        .map_err(|_| Error::corrupt("integer", "not 8 bytes"))?;
    Ok(i64::from_be_bytes(arr))
}

/// A key range as etcd defines it: `range_end` empty means the single key, `"\0"` means
/// every key from `key` on, anything else is the half-open range `[key, range_end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub key: Vec<u8>,
    pub end: Option<Vec<u8>>,
    pub single: bool,
}

impl KeyRange {
    pub fn new(key: &[u8], range_end: &[u8]) -> Self {
        if range_end.is_empty() {
            Self {
                key: key.to_vec(),
                end: None,
                single: true,
            }
        } else if range_end == [0] {
            Self {
                key: key.to_vec(),
                end: None,
                single: false,
            }
        } else {
            Self {
                key: key.to_vec(),
                end: Some(range_end.to_vec()),
                single: false,
            }
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        if self.single {
            return k == self.key.as_slice();
        }
        k >= self.key.as_slice() && self.end.as_deref().is_none_or(|e| k < e)
    }

    /// Bounds over the `k`-prefixed tree keys.
    fn tree_bounds(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        let start = key_of(&self.key);
        if self.single {
            let mut end = start.clone();
            end.push(0);
            return (start, Some(end));
        }
        let end = match &self.end {
            Some(e) => Some(key_of(e)),
            None => prefix_end(&[P_KEY]),
        };
        (start, end)
    }
}

fn decode_kv(user_key: &[u8], v: &[u8]) -> Result<KeyValue> {
    let mut kv = KeyValue::decode(v).map_err(|e| Error::corrupt("key value", e))?;
    kv.key = user_key.to_vec();
    Ok(kv)
}

fn encode_kv_stored(kv: &KeyValue) -> Vec<u8> {
    let stored = KeyValue {
        key: Vec::new(),
        ..kv.clone()
    };
    stored.encode_to_vec()
}

/// The shared MVCC state: the engine, the current and compacted revisions, and the
/// channel on which applied events are published to watchers.
pub struct Mvcc {
    backend: Arc<dyn KvBackend>,
    lock: RwLock<()>,
    rev: AtomicI64,
    compact_rev: AtomicI64,
    events: tokio::sync::broadcast::Sender<Arc<Vec<Event>>>,
}

impl Mvcc {
    pub fn open(backend: Arc<dyn KvBackend>) -> Result<Self> {
        let (events, _) = tokio::sync::broadcast::channel(1024);
        let m = Self {
            backend,
            lock: RwLock::new(()),
            rev: AtomicI64::new(1),
            compact_rev: AtomicI64::new(0),
            events,
        };
        m.reload()?;
        Ok(m)
    }

    /// Re-reads the revisions from the tree (after opening or installing a snapshot).
    pub fn reload(&self) -> Result<()> {
        // etcd starts at revision 1: the first write gets revision 2.
        let rev = match self.backend.get(Tree::StateMachine, M_REV)? {
            Some(b) => bytes_i64(&b)?,
            None => 1,
        };
        let compact = match self.backend.get(Tree::StateMachine, M_COMPACT)? {
            Some(b) => bytes_i64(&b)?,
            None => 0,
        };
        self.rev.store(rev, Ordering::SeqCst);
        self.compact_rev.store(compact, Ordering::SeqCst);
        Ok(())
    }

    pub fn backend(&self) -> &Arc<dyn KvBackend> {
        &self.backend
    }

    pub fn current_revision(&self) -> i64 {
        self.rev.load(Ordering::SeqCst)
    }

    pub fn compact_revision(&self) -> i64 {
        self.compact_rev.load(Ordering::SeqCst)
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Vec<Event>>> {
        self.events.subscribe()
    }

    pub(crate) fn read_guard(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.lock.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves a Range at the current revision or, within the history window, a past one.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let _g = self.read_guard();
        let current = self.current_revision();
        let at = if req.revision <= 0 {
            current
        } else {
            req.revision
        };
        if at > current {
            return Err(Error::FutureRevision {
                requested: at,
                current,
            });
        }
        let compacted = self.compact_revision();
        if at < compacted {
            return Err(Error::Compacted {
                requested: at,
                compacted,
            });
        }
        let range = KeyRange::new(&req.key, &req.range_end);
        let view = TreeView {
            backend: self.backend.as_ref(),
            overlay: None,
        };
        let kvs = if at == current {
            view.range_kvs(&range)?
        } else {
            self.range_at(&view, &range, at, current)?
        };
        let mut resp = shape_range(req, kvs);
        resp.header = Some(crate::pb::etcdserverpb::ResponseHeader {
            revision: at,
            ..Default::default()
        });
        Ok(resp)
    }

    /// The key-values in `range` as of revision `at`: the current ones with every later
    /// event undone, newest first.
    fn range_at(
        &self,
        view: &TreeView<'_>,
        range: &KeyRange,
        at: i64,
        current: i64,
    ) -> Result<Vec<KeyValue>> {
        let mut state: BTreeMap<Vec<u8>, KeyValue> = view
            .range_kvs(range)?
            .into_iter()
            .map(|kv| (kv.key.clone(), kv))
            .collect();
        let start = hist_key(at + 1, 0);
        let end = hist_key(current + 1, 0);
        let mut err = None;
        self.backend.scan(
            Tree::StateMachine,
            Bound::Included(&start),
            Bound::Excluded(&end),
            true,
            &mut |_, v| {
                match Event::decode(v) {
                    Ok(ev) => {
                        let key = ev.kv.as_ref().map(|kv| kv.key.clone()).unwrap_or_default();
                        if range.contains(&key) {
                            match ev.prev_kv {
                                Some(prev) => {
                                    state.insert(key, prev);
                                }
                                None => {
                                    state.remove(&key);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        err = Some(Error::corrupt("history event", e));
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            },
        )?;
        if let Some(e) = err {
            return Err(e);
        }
        Ok(state.into_values().collect())
    }

    /// Events with revision in `[from, to]`, in order, for a watcher catching up: at least
    /// `limit` of them when there are, and never part of a revision. Fails
    /// with [`Error::Compacted`] if `from` is below the history window.
    pub fn history(&self, from: i64, to: i64, limit: usize) -> Result<Vec<Event>> {
        let _g = self.read_guard();
        let compacted = self.compact_revision();
        if from < compacted {
            return Err(Error::Compacted {
                requested: from,
                compacted,
            });
        }
        let start = hist_key(from, 0);
        let end = hist_key(to.saturating_add(1), 0);
        let mut out = Vec::new();
        let mut err = None;
        self.backend.scan(
            Tree::StateMachine,
            Bound::Included(&start),
            Bound::Excluded(&end),
            false,
            &mut |_, v| match Event::decode(v) {
                Ok(ev) => {
                    // Stop only between revisions: a revision's events go out together.
                    if out.len() >= limit
                        && out.last().map(event_revision) != Some(event_revision(&ev))
                    {
                        return ControlFlow::Break(());
                    }
                    out.push(ev);
                    ControlFlow::Continue(())
                }
                Err(e) => {
                    err = Some(Error::corrupt("history event", e));
                    ControlFlow::Break(())
                }
            },
        )?;
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Every lease as `(id, ttl)`.
    pub fn leases(&self) -> Result<Vec<(i64, i64)>> {
        let _g = self.read_guard();
        let mut out = Vec::new();
        for (k, v) in
            crate::backend::scan_prefix(self.backend.as_ref(), Tree::StateMachine, &[P_LEASE])?
        {
            let id = bytes_i64(&k[1..])?;
            out.push((id, bytes_i64(&v)?));
        }
        Ok(out)
    }

    /// The TTL a lease was granted with, and the keys attached to it.
    pub fn lease(&self, id: i64) -> Result<Option<(i64, Vec<Vec<u8>>)>> {
        let _g = self.read_guard();
        let Some(ttl) = self.backend.get(Tree::StateMachine, &lease_key(id))? else {
            return Ok(None);
        };
        let prefix = attach_key(id, b"");
        let keys = crate::backend::scan_prefix(self.backend.as_ref(), Tree::StateMachine, &prefix)?
            .into_iter()
            .map(|(k, _)| k[prefix.len()..].to_vec())
            .collect();
        Ok(Some((bytes_i64(&ttl)?, keys)))
    }

    /// Begins applying a batch of Raft entries. Nothing is visible until
    /// [`ApplyCtx::commit`].
    pub fn begin(&self) -> ApplyCtx<'_> {
        ApplyCtx {
            mvcc: self,
            overlay: BTreeMap::new(),
            undo: None,
            rev: self.current_revision(),
            compact_rev: self.compact_revision(),
            events: Vec::new(),
        }
    }
}

/// Applies `limit`, sort, `count_only`, `keys_only` and the revision filters of a Range to
/// the key-values in its range.
fn shape_range(req: &RangeRequest, mut kvs: Vec<KeyValue>) -> RangeResponse {
    kvs.retain(|kv| {
        (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
            && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
            && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
            && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
    });
    let count = kvs.len() as i64;
    use range_request::{SortOrder, SortTarget};
    let order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    // etcd sorts by key ascending when asked for no order; a descending key sort is a
    // reversal of that.
    if !(order == SortOrder::None || (order == SortOrder::Ascend && target == SortTarget::Key)) {
        let field = |kv: &KeyValue| -> Vec<u8> {
            match target {
                SortTarget::Key => kv.key.clone(),
                SortTarget::Version => (kv.version as u64).to_be_bytes().to_vec(),
                SortTarget::Create => (kv.create_revision as u64).to_be_bytes().to_vec(),
                SortTarget::Mod => (kv.mod_revision as u64).to_be_bytes().to_vec(),
                SortTarget::Value => kv.value.clone(),
            }
        };
        kvs.sort_by_key(field);
        if order == SortOrder::Descend {
            kvs.reverse();
        }
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() as i64 > req.limit {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.count_only {
        kvs.clear();
    } else if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    RangeResponse {
        header: None,
        kvs,
        more,
        count,
    }
}

/// Reads of the tree, through an apply overlay when there is one.
struct TreeView<'a> {
    backend: &'a dyn KvBackend,
    overlay: Option<&'a BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
}

impl TreeView<'_> {
    fn get(&self, k: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.overlay.and_then(|o| o.get(k)) {
            return Ok(v.clone());
        }
        self.backend.get(Tree::StateMachine, k)
    }

    fn get_kv(&self, user_key: &[u8]) -> Result<Option<KeyValue>> {
        match self.get(&key_of(user_key))? {
            Some(v) => Ok(Some(decode_kv(user_key, &v)?)),
            None => Ok(None),
        }
    }

    /// Current key-values in `range`, ascending by key.
    fn range_kvs(&self, range: &KeyRange) -> Result<Vec<KeyValue>> {
        if range.single {
            return Ok(self.get_kv(&range.key)?.into_iter().collect());
        }
        let (start, end) = range.tree_bounds();
        let end_b = match &end {
            Some(e) => Bound::Excluded(e.as_slice()),
            None => Bound::Unbounded,
        };
        let mut found: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        self.backend.scan(
            Tree::StateMachine,
            Bound::Included(&start),
            end_b,
            false,
            &mut |k, v| {
                found.insert(k.to_vec(), v.to_vec());
                ControlFlow::Continue(())
            },
        )?;
        if let Some(o) = self.overlay {
            let end_b = match &end {
                Some(e) => Bound::Excluded(e.clone()),
                None => Bound::Unbounded,
            };
            for (k, v) in o.range((Bound::Included(start.clone()), end_b)) {
                match v {
                    Some(v) => found.insert(k.clone(), v.clone()),
                    None => found.remove(k),
                };
            }
        }
        found
            .into_iter()
            .map(|(k, v)| decode_kv(&k[1..], &v))
            .collect()
    }
}

/// One Raft `apply` call in progress: reads see its own earlier writes; [`commit`] writes
/// everything as one atomic batch and publishes the events.
///
/// [`commit`]: ApplyCtx::commit
pub struct ApplyCtx<'a> {
    mvcc: &'a Mvcc,
    overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// While a txn runs: what each overlay write replaced, to undo them if it fails.
    undo: Option<Undo>,
    rev: i64,
    compact_rev: i64,
    events: Vec<Event>,
}

/// Overlay writes of a running txn: each key with what the overlay held before.
type Undo = Vec<(Vec<u8>, Option<Option<Vec<u8>>>)>;

/// State of one request being applied: its main revision and next sub-revision.
struct Writing {
    rev: i64,
    sub: u32,
}

impl<'a> ApplyCtx<'a> {
    fn view(&self) -> TreeView<'_> {
        TreeView {
            backend: self.mvcc.backend.as_ref(),
            overlay: Some(&self.overlay),
        }
    }

    pub fn put_raw(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.write_raw(key, Some(value));
    }

    fn remove_raw(&mut self, key: Vec<u8>) {
        self.write_raw(key, None);
    }

    fn write_raw(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        match &mut self.undo {
            Some(undo) => {
                let before = self.overlay.insert(key.clone(), value);
                undo.push((key, before));
            }
            None => {
                self.overlay.insert(key, value);
            }
        }
    }

    pub fn revision(&self) -> i64 {
        self.rev
    }

    fn start(&self) -> Writing {
        Writing {
            rev: self.rev + 1,
            sub: 0,
        }
    }

    /// Ends a request: if it wrote anything, the store moves to its revision.
    fn finish(&mut self, w: Writing) {
        if w.sub > 0 {
            self.rev = w.rev;
        }
    }

    fn record(&mut self, w: &mut Writing, ev: Event) {
        self.put_raw(hist_key(w.rev, w.sub), ev.encode_to_vec());
        w.sub += 1;
        self.events.push(ev);
    }

    pub fn put(&mut self, req: &PutRequest) -> Result<PutResponse, AppliedError> {
        let mut w = self.start();
        let r = self.put_in(&mut w, req);
        self.finish(w);
        r
    }

    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, AppliedError> {
        let mut w = self.start();
        let r = self.delete_in(&mut w, req);
        self.finish(w);
        r
    }

    pub fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, AppliedError> {
        // A failing op must leave nothing behind: apply onto a copy of the overlay.
        let events_before = self.events.len();
        self.undo = Some(Vec::new());
        let mut w = self.start();
        let result = self.txn_in(&mut w, req);
        let undo = self.undo.take().unwrap_or_default();
        match result {
            Ok(r) => {
                self.finish(w);
                Ok(r)
            }
            Err(e) => {
                for (key, before) in undo.into_iter().rev() {
                    match before {
                        Some(v) => self.overlay.insert(key, v),
                        None => self.overlay.remove(&key),
                    };
                }
                self.events.truncate(events_before);
                Err(e)
            }
        }
    }

    fn put_in(&mut self, w: &mut Writing, req: &PutRequest) -> Result<PutResponse, AppliedError> {
        let prev = self.view().get_kv(&req.key).map_err(internal)?;
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(AppliedError::KeyNotFound);
        }
        let value = if req.ignore_value {
            prev.as_ref().map(|p| p.value.clone()).unwrap_or_default()
        } else {
            req.value.clone()
        };
        let lease = if req.ignore_lease {
            prev.as_ref().map_or(0, |p| p.lease)
        } else {
            req.lease
        };
        if lease != 0
            && self
                .view()
                .get(&lease_key(lease))
                .map_err(internal)?
                .is_none()
        {
            return Err(AppliedError::LeaseNotFound(lease));
        }
        if let Some(p) = &prev {
            if p.lease != 0 && p.lease != lease {
                self.remove_raw(attach_key(p.lease, &req.key));
            }
        }
        if lease != 0 {
            self.put_raw(attach_key(lease, &req.key), Vec::new());
        }
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: prev.as_ref().map_or(w.rev, |p| p.create_revision),
            mod_revision: w.rev,
            version: prev.as_ref().map_or(0, |p| p.version) + 1,
            value,
            lease,
        };
        self.put_raw(key_of(&req.key), encode_kv_stored(&kv));
        self.record(
            w,
            Event {
                r#type: EventType::Put as i32,
                kv: Some(kv),
                prev_kv: prev.clone(),
            },
        );
        Ok(PutResponse {
            header: None,
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    fn delete_key(&mut self, w: &mut Writing, prev: KeyValue) {
        if prev.lease != 0 {
            self.remove_raw(attach_key(prev.lease, &prev.key));
        }
        self.remove_raw(key_of(&prev.key));
        let tomb = KeyValue {
            key: prev.key.clone(),
            mod_revision: w.rev,
            ..Default::default()
        };
        self.record(
            w,
            Event {
                r#type: EventType::Delete as i32,
                kv: Some(tomb),
                prev_kv: Some(prev),
            },
        );
    }

    fn delete_in(
        &mut self,
        w: &mut Writing,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, AppliedError> {
        let range = KeyRange::new(&req.key, &req.range_end);
        let victims = self.view().range_kvs(&range).map_err(internal)?;
        let deleted = victims.len() as i64;
        let prev_kvs = if req.prev_kv {
            victims.clone()
        } else {
            Vec::new()
        };
        for kv in victims {
            self.delete_key(w, kv);
        }
        Ok(DeleteRangeResponse {
            header: None,
            deleted,
            prev_kvs,
        })
    }

    fn txn_in(&mut self, w: &mut Writing, req: &TxnRequest) -> Result<TxnResponse, AppliedError> {
        let mut succeeded = true;
        for c in &req.compare {
            if !self.compare(c).map_err(internal)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(self.op_in(w, op)?);
        }
        Ok(TxnResponse {
            header: None,
            succeeded,
            responses,
        })
    }

    fn op_in(&mut self, w: &mut Writing, op: &RequestOp) -> Result<ResponseOp, AppliedError> {
        use request_op::Request as Rq;
        use response_op::Response as Rs;
        let resp = match &op.request {
            Some(Rq::RequestRange(r)) => {
                if r.revision > 0 {
                    return Err(AppliedError::Invalid(
                        "a range inside a txn reads the txn's own revision".into(),
                    ));
                }
                let kvs = self
                    .view()
                    .range_kvs(&KeyRange::new(&r.key, &r.range_end))
                    .map_err(internal)?;
                Rs::ResponseRange(shape_range(r, kvs))
            }
            Some(Rq::RequestPut(p)) => Rs::ResponsePut(self.put_in(w, p)?),
            Some(Rq::RequestDeleteRange(d)) => Rs::ResponseDeleteRange(self.delete_in(w, d)?),
            Some(Rq::RequestTxn(t)) => Rs::ResponseTxn(self.txn_in(w, t)?),
            None => return Err(AppliedError::Invalid("txn op without a request".into())),
        };
        Ok(ResponseOp {
            response: Some(resp),
        })
    }

    fn compare(&self, c: &Compare) -> Result<bool> {
        let range = KeyRange::new(&c.key, &c.range_end);
        let kvs = self.view().range_kvs(&range)?;
        let target =
            compare::CompareTarget::try_from(c.target).unwrap_or(compare::CompareTarget::Version);
        if kvs.is_empty() {
            if target == compare::CompareTarget::Value {
                return Ok(false);
            }
            return Ok(compare_one(c, &KeyValue::default()));
        }
        Ok(kvs.iter().all(|kv| compare_one(c, kv)))
    }

    pub fn compact(&mut self, rev: i64) -> Result<(), AppliedError> {
        if rev <= self.compact_rev {
            return Err(AppliedError::Compacted {
                requested: rev,
                compacted: self.compact_rev,
            });
        }
        if rev > self.rev {
            return Err(AppliedError::FutureRevision {
                requested: rev,
                current: self.rev,
            });
        }
        let start = hist_key(self.compact_rev, 0);
        let end = hist_key(rev, 0);
        let mut doomed = Vec::new();
        self.mvcc
            .backend
            .scan(
                Tree::StateMachine,
                Bound::Included(&start),
                Bound::Excluded(&end),
                false,
                &mut |k, _| {
                    doomed.push(k.to_vec());
                    ControlFlow::Continue(())
                },
            )
            .map_err(internal)?;
        for k in doomed {
            self.remove_raw(k);
        }
        self.compact_rev = rev;
        Ok(())
    }

    /// Grants a lease; id 0 asks for a fresh id, assigned the same way on every member.
    pub fn lease_grant(&mut self, id: i64, ttl: i64) -> Result<i64, AppliedError> {
        let id = if id == 0 {
            let seq = match self.view().get(M_LEASE_SEQ).map_err(internal)? {
                Some(b) => bytes_i64(&b).map_err(internal)?,
                None => 0x694d_0000_0000,
            };
            let mut next = seq + 1;
            while self
                .view()
                .get(&lease_key(next))
                .map_err(internal)?
                .is_some()
            {
                next += 1;
            }
            self.put_raw(M_LEASE_SEQ.to_vec(), i64_bytes(next));
            next
        } else {
            id
        };
        if id < 0 {
            return Err(AppliedError::Invalid(format!("lease id {id} is negative")));
        }
        if self.view().get(&lease_key(id)).map_err(internal)?.is_some() {
            return Err(AppliedError::LeaseExists(id));
        }
        self.put_raw(lease_key(id), i64_bytes(ttl.max(1)));
        Ok(id)
    }

    /// Revokes a lease, deleting its keys at one revision.
    pub fn lease_revoke(&mut self, id: i64) -> Result<(), AppliedError> {
        if self.view().get(&lease_key(id)).map_err(internal)?.is_none() {
            return Err(AppliedError::LeaseNotFound(id));
        }
        let prefix = attach_key(id, b"");
        let mut keys: Vec<Vec<u8>> =
            crate::backend::scan_prefix(self.mvcc.backend.as_ref(), Tree::StateMachine, &prefix)
                .map_err(internal)?
                .into_iter()
                .map(|(k, _)| k)
                .collect();
        // Attachments made earlier in this apply batch.
        for (k, v) in self.overlay.range(prefix.clone()..) {
            if !k.starts_with(&prefix) {
                break;
            }
            if v.is_some() && !keys.contains(k) {
                keys.push(k.clone());
            }
        }
        let mut w = self.start();
        for k in keys {
            let user_key = k[prefix.len()..].to_vec();
            self.remove_raw(k);
            if let Some(kv) = self.view().get_kv(&user_key).map_err(internal)? {
                if kv.lease == id {
                    self.delete_key(&mut w, kv);
                }
            }
        }
        self.remove_raw(lease_key(id));
        self.finish(w);
        Ok(())
    }

    /// Writes the batch and the revisions, then publishes the events to watchers.
    pub fn commit(self) -> Result<()> {
        let ApplyCtx {
            mvcc,
            mut overlay,
            rev,
            compact_rev,
            events,
            undo: _,
        } = self;
        overlay.insert(M_REV.to_vec(), Some(i64_bytes(rev)));
        overlay.insert(M_COMPACT.to_vec(), Some(i64_bytes(compact_rev)));
        let mut batch = Batch::default();
        for (k, v) in overlay {
            match v {
                Some(v) => batch.put(k, v),
                None => batch.remove(k),
            }
        }
        let _g = mvcc.lock.write().unwrap_or_else(|p| p.into_inner());
        mvcc.backend.write(Tree::StateMachine, batch)?;
        mvcc.rev.store(rev, Ordering::SeqCst);
        mvcc.compact_rev.store(compact_rev, Ordering::SeqCst);
        drop(_g);
        if !events.is_empty() {
            // No receiver is fine: watchers catch up from history when they subscribe.
            let _ = mvcc.events.send(Arc::new(events));
        }
        Ok(())
    }
}

fn internal(e: Error) -> AppliedError {
    AppliedError::Invalid(format!("internal: {e}"))
}

fn compare_one(c: &Compare, kv: &KeyValue) -> bool {
    use compare::{CompareResult as R, TargetUnion as T};
    let ord = match &c.target_union {
        Some(T::Version(v)) => kv.version.cmp(v),
        Some(T::CreateRevision(v)) => kv.create_revision.cmp(v),
        Some(T::ModRevision(v)) => kv.mod_revision.cmp(v),
        Some(T::Value(v)) => kv.value.as_slice().cmp(v.as_slice()),
        Some(T::Lease(v)) => kv.lease.cmp(v),
        None => return false,
    };
    match R::try_from(c.result).unwrap_or(R::Equal) {
        R::Equal => ord.is_eq(),
        R::Greater => ord.is_gt(),
        R::Less => ord.is_lt(),
        R::NotEqual => !ord.is_eq(),
    }
}

/// Event revision: for PUT and DELETE alike, `kv.mod_revision`.
pub fn event_revision(ev: &Event) -> i64 {
    ev.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

impl Mvcc {
    /// Replaces the state with a snapshot's pairs (one atomic batch) and reloads the
    /// revisions. Watchers are told nothing: a member installs a snapshot only while it
    /// is behind, and watchers that were past the snapshot continue from history.
    pub(crate) fn install(&self, batch: Batch) -> Result<()> {
        let _g = self.lock.write().unwrap_or_else(|p| p.into_inner());
        self.backend.write(Tree::StateMachine, batch)?;
        drop(_g);
        self.reload()
    }
}

impl Mvcc {
    /// A Range and the revision it was served at (the header revision clients resume
    /// watches from).
    pub fn range_with_revision(&self, req: &RangeRequest) -> Result<(RangeResponse, i64)> {
        let resp = self.range(req)?;
        let rev = resp_rev(&resp, self.current_revision());
        Ok((resp, rev))
    }

    /// A hash of every key-value at `revision` (0: current), for comparing members.
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64)> {
        let req = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision,
            ..Default::default()
        };
        let (resp, rev) = self.range_with_revision(&req)?;
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for kv in resp.kvs {
            h = crate::types::fnv1a(&[
                &h.to_be_bytes(),
                &kv.key,
                &kv.value,
                &kv.mod_revision.to_be_bytes(),
            ]);
        }
        Ok(((h ^ (h >> 32)) as u32, rev))
    }
}

fn resp_rev(resp: &RangeResponse, fallback: i64) -> i64 {
    resp.header.as_ref().map_or(fallback, |h| h.revision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::SledBackend;
    use crate::pb::etcdserverpb::{
        compare::CompareResult, compare::CompareTarget, compare::TargetUnion,
    };

    fn store() -> (tempfile::TempDir, Mvcc) {
        let dir = tempfile::tempdir().unwrap();
        let b: Arc<dyn KvBackend> = Arc::new(SledBackend::open(dir.path()).unwrap());
        (dir, Mvcc::open(b).unwrap())
    }

    fn put(m: &Mvcc, k: &str, v: &str) -> i64 {
        let mut c = m.begin();
        c.put(&PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })
        .unwrap();
        let r = c.revision();
        c.commit().unwrap();
        r
    }

    fn get(m: &Mvcc, k: &str, rev: i64) -> Result<Option<KeyValue>> {
        let r = m.range(&RangeRequest {
            key: k.into(),
            revision: rev,
            ..Default::default()
        })?;
        Ok(r.kvs.into_iter().next())
    }

    fn put_op(k: &str, v: &str, lease: i64) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: k.into(),
                value: v.into(),
                lease,
                ..Default::default()
            })),
        }
    }

    #[test]
    fn revisions_versions_and_past_reads_follow_etcd() {
        let (_d, m) = store();
        assert_eq!(m.current_revision(), 1, "etcd starts at revision 1");
        assert_eq!(put(&m, "a", "1"), 2);
        assert_eq!(put(&m, "a", "2"), 3);
        assert_eq!(put(&m, "b", "x"), 4);
        let a = get(&m, "a", 0).unwrap().unwrap();
        assert_eq!(
            (
                a.create_revision,
                a.mod_revision,
                a.version,
                a.value.as_slice()
            ),
            (2, 3, 2, b"2".as_slice())
        );
        let mut c = m.begin();
        let d = c
            .delete_range(&DeleteRangeRequest {
                key: "a".into(),
                prev_kv: true,
                ..Default::default()
            })
            .unwrap();
        c.commit().unwrap();
        assert_eq!(
            (d.deleted, d.prev_kvs[0].value.as_slice()),
            (1, b"2".as_slice())
        );
        assert_eq!(m.current_revision(), 5);
        assert!(get(&m, "a", 0).unwrap().is_none());
        // Reads at past revisions undo later events.
        assert_eq!(get(&m, "a", 2).unwrap().unwrap().value, b"1");
        assert_eq!(get(&m, "a", 4).unwrap().unwrap().value, b"2");
        assert!(get(&m, "b", 3).unwrap().is_none(), "b did not exist at 3");
        let all = m
            .range(&RangeRequest {
                key: vec![0],
                range_end: vec![0],
                revision: 3,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(all.kvs.len(), 1);
        assert_eq!(all.header.unwrap().revision, 3);
        assert!(matches!(
            get(&m, "a", 9),
            Err(Error::FutureRevision {
                requested: 9,
                current: 5
            })
        ));
        // A delete of nothing does not move the revision.
        let mut c = m.begin();
        assert_eq!(
            c.delete_range(&DeleteRangeRequest {
                key: "zz".into(),
                ..Default::default()
            })
            .unwrap()
            .deleted,
            0
        );
        c.commit().unwrap();
        assert_eq!(m.current_revision(), 5);
    }

    #[test]
    fn compaction_drops_history_below_it_and_reports_compacted() {
        let (_d, m) = store();
        for i in 0..5 {
            put(&m, "k", &i.to_string());
        }
        let mut c = m.begin();
        c.compact(4).unwrap();
        c.commit().unwrap();
        assert_eq!(m.compact_revision(), 4);
        assert!(matches!(
            get(&m, "k", 3),
            Err(Error::Compacted {
                requested: 3,
                compacted: 4
            })
        ));
        assert_eq!(get(&m, "k", 4).unwrap().unwrap().value, b"2");
        assert!(matches!(m.history(2, 6, 100), Err(Error::Compacted { .. })));
        let h = m.history(4, 6, 100).unwrap();
        assert_eq!(h.iter().map(event_revision).collect::<Vec<_>>(), [4, 5, 6]);
        let mut c = m.begin();
        assert!(matches!(c.compact(3), Err(AppliedError::Compacted { .. })));
        assert!(matches!(
            c.compact(99),
            Err(AppliedError::FutureRevision { .. })
        ));
    }

    #[test]
    fn txn_compares_choose_a_branch_and_a_failing_op_leaves_nothing() {
        let (_d, m) = store();
        put(&m, "a", "1");
        let cmp = |v: &str| Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            key: "a".into(),
            target_union: Some(TargetUnion::Value(v.into())),
            ..Default::default()
        };
        let mut c = m.begin();
        let r = c
            .txn(&TxnRequest {
                compare: vec![cmp("1")],
                success: vec![put_op("b", "yes", 0)],
                failure: vec![put_op("b", "no", 0)],
            })
            .unwrap();
        assert!(r.succeeded);
        let r = c
            .txn(&TxnRequest {
                compare: vec![cmp("9")],
                success: vec![put_op("c", "yes", 0)],
                failure: vec![put_op("c", "no", 0)],
            })
            .unwrap();
        assert!(!r.succeeded);
        c.commit().unwrap();
        assert_eq!(get(&m, "b", 0).unwrap().unwrap().value, b"yes");
        assert_eq!(get(&m, "c", 0).unwrap().unwrap().value, b"no");
        let rev = m.current_revision();
        // The second op names a lease that does not exist: the whole txn fails.
        let mut c = m.begin();
        let e = c.txn(&TxnRequest {
            compare: vec![],
            success: vec![put_op("d", "1", 0), put_op("e", "1", 77)],
            failure: vec![],
        });
        assert_eq!(e.unwrap_err(), AppliedError::LeaseNotFound(77));
        c.commit().unwrap();
        assert!(get(&m, "d", 0).unwrap().is_none(), "no partial txn");
        assert_eq!(m.current_revision(), rev);
        // A missing key compares as zero on versions and fails value compares.
        let mut c = m.begin();
        let missing = Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Version as i32,
            key: "nope".into(),
            target_union: Some(TargetUnion::Version(0)),
            ..Default::default()
        };
        assert!(
            c.txn(&TxnRequest {
                compare: vec![missing],
                ..Default::default()
            })
            .unwrap()
            .succeeded
        );
    }

    #[test]
    fn lease_revoke_deletes_its_keys_at_one_revision_and_history_keeps_it_whole() {
        let (_d, m) = store();
        let mut c = m.begin();
        let id = c.lease_grant(0, 10).unwrap();
        c.txn(&TxnRequest {
            success: vec![
                put_op("l1", "a", id),
                put_op("l2", "b", id),
                put_op("free", "c", 0),
            ],
            ..Default::default()
        })
        .unwrap();
        c.commit().unwrap();
        let (ttl, keys) = m.lease(id).unwrap().unwrap();
        assert_eq!((ttl, keys.len()), (10, 2));
        let before = m.current_revision();
        let mut c = m.begin();
        c.lease_revoke(id).unwrap();
        c.commit().unwrap();
        assert_eq!(m.current_revision(), before + 1);
        assert!(get(&m, "l1", 0).unwrap().is_none() && get(&m, "l2", 0).unwrap().is_none());
        assert!(get(&m, "free", 0).unwrap().is_some());
        assert!(m.lease(id).unwrap().is_none());
        // A limit of 1 still returns both events of the revoke's revision.
        let h = m.history(before + 1, before + 1, 1).unwrap();
        assert_eq!(h.len(), 2);
        assert!(h
            .iter()
            .all(|e| e.r#type == EventType::Delete as i32 && e.prev_kv.is_some()));
        let mut c = m.begin();
        assert_eq!(
            c.lease_revoke(id).unwrap_err(),
            AppliedError::LeaseNotFound(id)
        );
    }

    #[test]
    fn range_limit_sort_and_count_match_etcd() {
        let (_d, m) = store();
        for k in ["p/c", "p/a", "p/b", "q"] {
            put(&m, k, k);
        }
        let r = m
            .range(&RangeRequest {
                key: "p/".into(),
                range_end: "p0".into(),
                limit: 2,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            r.kvs.iter().map(|k| k.key.clone()).collect::<Vec<_>>(),
            [b"p/a".to_vec(), b"p/b".to_vec()]
        );
        assert!(r.more);
        assert_eq!(r.count, 3);
        let r = m
            .range(&RangeRequest {
                key: "p/".into(),
                range_end: "p0".into(),
                sort_order: 2,
                sort_target: 3,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(r.kvs[0].key, b"p/b", "descending by mod revision");
        let r = m
            .range(&RangeRequest {
                key: "p/".into(),
                range_end: "p0".into(),
                count_only: true,
                ..Default::default()
            })
            .unwrap();
        assert!(r.kvs.is_empty() && r.count == 3);
    }

    #[test]
    fn state_survives_reopening_the_engine() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b: Arc<dyn KvBackend> = Arc::new(SledBackend::open(dir.path()).unwrap());
            let m = Mvcc::open(b.clone()).unwrap();
            put(&m, "a", "1");
            put(&m, "a", "2");
            b.flush().unwrap();
        }
        let b: Arc<dyn KvBackend> = Arc::new(SledBackend::open(dir.path()).unwrap());
        let m = Mvcc::open(b).unwrap();
        assert_eq!(m.current_revision(), 3);
        assert_eq!(get(&m, "a", 2).unwrap().unwrap().value, b"1");
    }
}
