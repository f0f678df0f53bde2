//! The Raft log and vote on a [`KvBackend`], with group commit.
//!
//! `append` writes entries to the engine at once (so the replicator can read them back)
//! and hands the flush to one flusher thread. The flusher takes every append queued while
//! the previous fsync ran, makes them durable with one `flush`, then reports each to Raft.
//! Under load many appends share one fsync; acknowledgements never precede durability.

// The error type is openraft's `StorageError`, which its storage traits require.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, ControlFlow, RangeBounds};
use std::sync::{mpsc, Arc};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader};

use crate::backend::{Batch, KvBackend, Tree};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";

fn entry_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn io_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(subject, verb, std::io::Error::other(e.to_string()))
}

fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    subject: ErrorSubject<u64>,
) -> Result<T, StorageError> {
    postcard::from_bytes(bytes).map_err(|e| io_err(subject, ErrorVerb::Read, e))
}

fn encode<T: serde::Serialize>(v: &T, subject: ErrorSubject<u64>) -> Result<Vec<u8>, StorageError> {
    postcard::to_allocvec(v).map_err(|e| io_err(subject, ErrorVerb::Write, e))
}

/// The Raft log storage. Cheap to clone; clones share the engine and the flusher.
#[derive(Clone)]
pub struct LogStore {
    backend: Arc<dyn KvBackend>,
    flusher: mpsc::Sender<LogFlushed<TypeConfig>>,
}

impl LogStore {
    pub fn new(backend: Arc<dyn KvBackend>) -> Self {
        let (tx, rx) = mpsc::channel::<LogFlushed<TypeConfig>>();
        let b = backend.clone();
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || flusher(b, rx))
            .expect("spawn the raft log flusher thread");
        Self {
            backend,
            flusher: tx,
        }
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        let subject = ErrorSubject::Store;
        match self
            .backend
            .get(Tree::RaftMeta, key)
            .map_err(|e| io_err(subject.clone(), ErrorVerb::Read, e))?
        {
            Some(b) => Ok(Some(decode(&b, subject)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], v: &T) -> Result<(), StorageError> {
        let mut b = Batch::default();
        b.put(key, encode(v, ErrorSubject::Store)?);
        self.backend
            .write(Tree::RaftMeta, b)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    fn last_entry(&self) -> Result<Option<LogId>, StorageError> {
        let mut last = None;
        let mut err = None;
        self.backend
            .scan(
                Tree::Log,
                Bound::Unbounded,
                Bound::Unbounded,
                true,
                &mut |_, v| {
                    match decode::<Entry>(v, ErrorSubject::Logs) {
                        Ok(e) => last = Some(e.log_id),
                        Err(e) => err = Some(e),
                    }
                    ControlFlow::Break(())
                },
            )
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        match err {
            Some(e) => Err(e),
            None => Ok(last),
        }
    }

    fn remove_range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<(), StorageError> {
        let mut batch = Batch::default();
        self.backend
            .scan(Tree::Log, start, end, false, &mut |k, _| {
                batch.remove(k.to_vec());
                ControlFlow::Continue(())
            })
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        self.backend
            .write(Tree::Log, batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    fn flush_now(&self) -> Result<(), StorageError> {
        self.backend
            .flush()
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))
    }
}

fn flusher(backend: Arc<dyn KvBackend>, rx: mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        waiting.extend(rx.try_iter());
        let result = backend
            .flush()
            .map_err(|e| std::io::Error::other(e.to_string()));
        for cb in waiting {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            cb.log_io_completed(r);
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(entry_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(entry_key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(entry_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(entry_key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut out = Vec::new();
        let mut err = None;
        self.backend
            .scan(
                Tree::Log,
                start.as_ref().map(|k| k.as_slice()),
                end.as_ref().map(|k| k.as_slice()),
                false,
                &mut |_, v| match decode::<Entry>(v, ErrorSubject::Logs) {
                    Ok(e) => {
                        out.push(e);
                        ControlFlow::Continue(())
                    }
                    Err(e) => {
                        err = Some(e);
                        ControlFlow::Break(())
                    }
                },
            )
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(KEY_PURGED)?;
        let last = self.last_entry()?.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta(KEY_VOTE, vote)?;
        self.flush_now()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed: losing it only means re-learning the commit point from the leader.
        self.put_meta(KEY_COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = Batch::default();
        for e in entries {
            batch.put(
                entry_key(e.log_id.index),
                encode(&e, ErrorSubject::Log(e.log_id))?,
            );
        }
        self.backend
            .write(Tree::Log, batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        self.flusher.send(callback).map_err(|_| {
            io_err(
                ErrorSubject::Logs,
                ErrorVerb::Write,
                "the log flusher has stopped",
            )
        })
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let from = entry_key(log_id.index);
        self.remove_range(Bound::Included(&from), Bound::Unbounded)?;
        // Truncated entries must not come back after a crash.
        self.flush_now()
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: a crash between the two steps leaves extra
        // entries, never a hole.
        self.put_meta(KEY_PURGED, &log_id)?;
        let to = entry_key(log_id.index);
        self.remove_range(Bound::Unbounded, Bound::Included(&to))
    }
}
