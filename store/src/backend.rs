//! The storage engine seam: an ordered key-value engine with a few named trees.
//!
//! The Raft log, the vote and the state machine are all written through [`KvBackend`], so
//! the engine can be replaced without touching Raft or MVCC code. [`SledBackend`] (sled
//! 0.34) is the default; [`FjallBackend`] (fjall, an LSM tree) is the alternative, chosen
//! per data directory with `berth store --backend`. Each write costs sled 0.34 several
//! times the CPU it costs fjall (see `store/bench`), which bounds write throughput on small
//! machines. A [`Batch`] is applied atomically within one tree, and
//! [`KvBackend::flush`] makes every write made before it durable.

use std::ops::{Bound, ControlFlow};
use std::path::Path;

use crate::error::{Error, Result};

/// The trees a backend keeps. Atomicity is per tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tree {
    /// Raft log entries.
    Log,
    /// Raft vote, purge point, committed id and the current snapshot.
    RaftMeta,
    /// The MVCC state machine: keys, history, leases, and its own meta.
    StateMachine,
}

impl Tree {
    fn name(self) -> &'static str {
        match self {
            Tree::Log => "log",
            Tree::RaftMeta => "raft-meta",
            Tree::StateMachine => "sm",
        }
    }
}

/// Puts and removes applied together, atomically, to one tree.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Some(value.into())));
    }
    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// A visitor over key-value pairs; return `ControlFlow::Break` to stop early.
pub type Visitor<'a> = dyn FnMut(&[u8], &[u8]) -> ControlFlow<()> + 'a;

/// An ordered, durable key-value engine.
pub trait KvBackend: Send + Sync + 'static {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Visits pairs with keys in `(start, end)` in ascending order, or descending if `reverse`.
    fn scan(
        &self,
        tree: Tree,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
        visit: &mut Visitor<'_>,
    ) -> Result<()>;
    /// Applies every operation of `batch` atomically.
    fn write(&self, tree: Tree, batch: Batch) -> Result<()>;
    /// Makes every write made so far durable (fsync).
    fn flush(&self) -> Result<()>;
    /// Bytes the engine occupies on disk.
    fn size_on_disk(&self) -> u64;
}

/// [`KvBackend`] on sled 0.34: one sled tree per [`Tree`].
///
/// sled 0.34's own `flush` is not enough for durability on Linux: it ends its log writes
/// with `sync_file_range`, which flushes neither the file's metadata nor the disk's write
/// cache, and it never syncs the blob files it writes for large values (nor their
/// directory). [`SledBackend::flush`] therefore follows sled's flush with `fdatasync` on
/// the data file, and `fsync` on every blob file not yet synced and on the blob
/// directory, so a flushed write survives power loss, not only a process crash.
pub struct SledBackend {
    db: sled::Db,
    log: sled::Tree,
    raft_meta: sled::Tree,
    sm: sled::Tree,
    data_file: std::fs::File,
    blobs_dir: std::path::PathBuf,
    synced_blobs: std::sync::Mutex<std::collections::HashSet<std::ffi::OsString>>,
}

impl SledBackend {
    pub fn open(dir: &Path) -> Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(256 * 1024 * 1024)
            .open()
            .map_err(|e| Error::DataDir {
                path: dir.display().to_string(),
                reason: format!("cannot open the sled database: {e}"),
            })?;
        let tree = |t: Tree| {
            db.open_tree(t.name()).map_err(|e| Error::DataDir {
                path: dir.display().to_string(),
                reason: format!("cannot open tree {}: {e}", t.name()),
            })
        };
        let io = |what: &Path, e: std::io::Error| Error::Io {
            path: what.display().to_string(),
            source: e,
        };
        let data_path = dir.join("db");
        let data_file = std::fs::File::open(&data_path).map_err(|e| io(&data_path, e))?;
        // The files sled created at open, and their directory entries, made durable once.
        db.flush()?;
        data_file.sync_all().map_err(|e| io(&data_path, e))?;
        fsync_dir(dir).map_err(|e| io(dir, e))?;
        Ok(Self {
            log: tree(Tree::Log)?,
            raft_meta: tree(Tree::RaftMeta)?,
            sm: tree(Tree::StateMachine)?,
            db,
            data_file,
            blobs_dir: dir.join("blobs"),
            synced_blobs: Default::default(),
        })
    }

    /// fsyncs blob files written since the last flush, and then their directory.
    fn sync_new_blobs(&self) -> std::io::Result<()> {
        let entries = match std::fs::read_dir(&self.blobs_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = std::collections::HashSet::new();
        let mut any_new = false;
        for e in entries {
            let e = e?;
            let name = e.file_name();
            if !synced.contains(&name) {
                match std::fs::File::open(e.path()) {
                    Ok(f) => f.sync_all()?,
                    // sled may remove a blob it no longer needs at any time.
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(err),
                }
                any_new = true;
            }
            present.insert(name);
        }
        if any_new {
            fsync_dir(&self.blobs_dir)?;
        }
        *synced = present;
        Ok(())
    }

    fn tree(&self, t: Tree) -> &sled::Tree {
        match t {
            Tree::Log => &self.log,
            Tree::RaftMeta => &self.raft_meta,
            Tree::StateMachine => &self.sm,
        }
    }
}

impl KvBackend for SledBackend {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree(tree).get(key)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        tree: Tree,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        visit_all(
            self.tree(tree).range::<&[u8], _>((start, end)),
            reverse,
            visit,
        )
    }

    fn write(&self, tree: Tree, batch: Batch) -> Result<()> {
        let mut b = sled::Batch::default();
        for (k, v) in batch.ops {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        self.tree(tree).apply_batch(b)?;
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        let io = |what: &Path, e: std::io::Error| Error::Io {
            path: what.display().to_string(),
            source: e,
        };
        self.data_file
            .sync_data()
            .map_err(|e| io(Path::new("db"), e))?;
        self.sync_new_blobs().map_err(|e| io(&self.blobs_dir, e))?;
        Ok(())
    }

    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

/// Which engine a data directory uses.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    #[default]
    Sled,
    Fjall,
}

impl Engine {
    /// Opens the engine's files in `dir`.
    pub fn open(self, dir: &Path) -> Result<std::sync::Arc<dyn KvBackend>> {
        Ok(match self {
            Engine::Sled => std::sync::Arc::new(SledBackend::open(dir)?),
            Engine::Fjall => std::sync::Arc::new(FjallBackend::open(dir)?),
        })
    }
}

/// [`KvBackend`] on fjall 2: one partition per [`Tree`] in one keyspace. A batch is one
/// fjall batch (atomic); [`KvBackend::flush`] persists the journal with `fsync`.
pub struct FjallBackend {
    keyspace: fjall::Keyspace,
    log: fjall::PartitionHandle,
    raft_meta: fjall::PartitionHandle,
    sm: fjall::PartitionHandle,
}

impl FjallBackend {
    pub fn open(dir: &Path) -> Result<Self> {
        let keyspace = fjall::Config::new(dir)
            .cache_size(256 * 1024 * 1024)
            .open()
            .map_err(|e| Error::DataDir {
                path: dir.display().to_string(),
                reason: format!("cannot open the fjall keyspace: {e}"),
            })?;
        let part = |t: Tree| {
            keyspace
                .open_partition(t.name(), fjall::PartitionCreateOptions::default())
                .map_err(|e| Error::DataDir {
                    path: dir.display().to_string(),
                    reason: format!("cannot open partition {}: {e}", t.name()),
                })
        };
        let b = Self {
            log: part(Tree::Log)?,
            raft_meta: part(Tree::RaftMeta)?,
            sm: part(Tree::StateMachine)?,
            keyspace,
        };
        b.keyspace.persist(fjall::PersistMode::SyncAll)?;
        fsync_dir(dir).map_err(|e| Error::Io {
            path: dir.display().to_string(),
            source: e,
        })?;
        Ok(b)
    }

    fn part(&self, t: Tree) -> &fjall::PartitionHandle {
        match t {
            Tree::Log => &self.log,
            Tree::RaftMeta => &self.raft_meta,
            Tree::StateMachine => &self.sm,
        }
    }
}

impl KvBackend for FjallBackend {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.part(tree).get(key)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        tree: Tree,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        visit_all(
            self.part(tree).range::<&[u8], _>((start, end)),
            reverse,
            visit,
        )
    }

    fn write(&self, tree: Tree, batch: Batch) -> Result<()> {
        let part = self.part(tree);
        let mut b = self.keyspace.batch();
        for (k, v) in batch.ops {
            match v {
                Some(v) => b.insert(part, k, v),
                None => b.remove(part, k),
            }
        }
        b.commit()?;
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.keyspace.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }

    fn size_on_disk(&self) -> u64 {
        self.keyspace.disk_space()
    }
}

/// Feeds an engine's range iterator to a visitor, in either direction, until it breaks.
fn visit_all<I, K, V, E>(iter: I, reverse: bool, visit: &mut Visitor<'_>) -> Result<()>
where
    I: DoubleEndedIterator<Item = std::result::Result<(K, V), E>>,
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
    Error: From<E>,
{
    let mut step = |item: std::result::Result<(K, V), E>| -> Result<bool> {
        let (k, v) = item?;
        Ok(visit(k.as_ref(), v.as_ref()).is_continue())
    };
    if reverse {
        for item in iter.rev() {
            if !step(item)? {
                break;
            }
        }
    } else {
        for item in iter {
            if !step(item)? {
                break;
            }
        }
    }
    Ok(())
}

/// fsyncs a directory, making the creation, removal and renaming of its entries durable.
pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Collects every pair of `tree` whose key starts with `prefix`.
pub fn scan_prefix(
    backend: &dyn KvBackend,
    tree: Tree,
    prefix: &[u8],
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let end = prefix_end(prefix);
    let end_bound = match &end {
        Some(e) => Bound::Excluded(e.as_slice()),
        None => Bound::Unbounded,
    };
    backend.scan(
        tree,
        Bound::Included(prefix),
        end_bound,
        false,
        &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            ControlFlow::Continue(())
        },
    )?;
    Ok(out)
}

/// The smallest key greater than every key starting with `prefix`, or `None` if there is
/// none (the prefix is empty or all `0xff`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte_and_carries() {
        assert_eq!(prefix_end(b"abc"), Some(b"abd".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn batches_are_applied_and_scanned_in_order_both_ways_on_every_engine() {
        for engine in [Engine::Sled, Engine::Fjall] {
            batch_and_scan(engine);
        }
    }

    fn batch_and_scan(engine: Engine) {
        let dir = tempfile::tempdir().unwrap();
        let b = engine.open(dir.path()).unwrap();
        let b = b.as_ref();
        let mut batch = Batch::default();
        for k in ["a1", "a2", "b1", "a3"] {
            batch.put(k.as_bytes(), k.as_bytes());
        }
        batch.remove(b"a2".to_vec());
        b.write(Tree::StateMachine, batch).unwrap();
        b.flush().unwrap();
        let keys: Vec<_> = scan_prefix(b, Tree::StateMachine, b"a")
            .unwrap()
            .into_iter()
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect();
        assert_eq!(keys, ["a1", "a3"]);
        let mut rev = Vec::new();
        b.scan(
            Tree::StateMachine,
            Bound::Unbounded,
            Bound::Unbounded,
            true,
            &mut |k, _| {
                rev.push(k.to_vec());
                ControlFlow::Continue(())
            },
        )
        .unwrap();
        assert_eq!(rev, [b"b1".to_vec(), b"a3".to_vec(), b"a1".to_vec()]);
        assert!(
            b.get(Tree::Log, b"a1").unwrap().is_none(),
            "trees are separate"
        );
    }
}
