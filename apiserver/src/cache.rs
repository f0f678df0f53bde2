//! The watch cache: every object under `/registry/` held in memory, kept current by one watch
//! on the store, plus a window of recent events. LISTs and WATCHes are served from it, so a
//! thousand watchers cost one store watch.
//!
//! Objects are kept decoded (`serde_json::Value`) with `metadata.resourceVersion` set to their
//! mod revision. A deleted object's last state is kept in its `Deleted` event, whose
//! resourceVersion is the delete's revision, as Kubernetes reports it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{broadcast, watch};

use crate::storage::{self, Change, Item, Storage, WatchBatch};

/// Events are kept for watchers that resume from a past revision: those of the last `FRESH`
/// (Kubernetes' watch cache keeps 75 s of events too), never fewer than `MIN_EVENTS` nor more
/// than `MAX_EVENTS`. A watcher older than that gets "too old resource version" (410) and lists
/// again, as it would from Kubernetes.
const MAX_EVENTS: usize = 20_000;
const MIN_EVENTS: usize = 500;
const FRESH: Duration = Duration::from_secs(75);
/// How often the window is trimmed when no change arrives.
const TRIM_EVERY: Duration = Duration::from_secs(15);
/// Registry keys live under this prefix; other keys only advance the revision.
pub const REGISTRY: &str = "/registry/";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("too old resource version: {requested} ({oldest})")]
    TooOld { requested: i64, oldest: i64 },
    #[error("timed out waiting for resource version {requested} (cache is at {current})")]
    TooLarge { requested: i64, current: i64 },
    #[error(transparent)]
    Storage(#[from] storage::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One object as the cache holds it.
#[derive(Debug)]
pub struct Cached {
    pub key: String,
    pub mod_revision: i64,
    pub object: Arc<Value>,
}

/// One change to one object.
#[derive(Debug)]
pub struct Event {
    pub revision: i64,
    pub key: String,
    pub kind: EventType,
    /// The new state (the last state for a delete).
    pub object: Arc<Value>,
    /// The state before, for selector transitions.
    pub prev: Option<Arc<Value>>,
}

struct Inner {
    objects: BTreeMap<String, Arc<Cached>>,
    /// Each with the time it arrived.
    events: VecDeque<(Instant, Arc<Event>)>,
    revision: i64,
    /// Watchers may resume from any revision at or after this one.
    oldest: i64,
}

impl Inner {
    /// Drops the events the window no longer keeps; returns how many.
    fn trim(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        while self.events.len() > MAX_EVENTS
            || (self.events.len() > MIN_EVENTS
                && self
                    .events
                    .front()
                    .is_some_and(|(at, _)| now.saturating_duration_since(*at) > FRESH))
        {
            let Some((_, event)) = self.events.pop_front() else {
                break;
            };
            self.oldest = event.revision;
            dropped += 1;
        }
        dropped
    }
}

/// A receiver of every event after the point it was taken.
pub type Subscription = broadcast::Receiver<Arc<Event>>;

pub struct WatchCache {
    /// The task following the store; aborted when the cache is stopped.
    follower: std::sync::Mutex<Option<tokio::task::AbortHandle>>,
    inner: RwLock<Inner>,
    live: broadcast::Sender<Arc<Event>>,
    revision: watch::Sender<i64>,
}

/// Decodes a stored value and stamps its resource version.
pub fn decode(value: &[u8], revision: i64) -> Option<Value> {
    let mut v: Value = serde_json::from_slice(value).ok()?;
    set_resource_version(&mut v, revision);
    Some(v)
}

pub fn set_resource_version(v: &mut Value, revision: i64) {
    if let Some(obj) = v.as_object_mut() {
        let meta = obj
            .entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert(
                "resourceVersion".into(),
                Value::String(revision.to_string()),
            );
        }
    }
}

impl WatchCache {
    /// Loads every registry object and starts following the store.
    pub async fn start(storage: Arc<dyn Storage>) -> Result<Arc<Self>> {
        let end = storage::prefix_end(REGISTRY);
        let page = storage.range(REGISTRY, &end, 0, 0).await?;
        let mut objects = BTreeMap::new();
        for it in page.items {
            if let Some(cached) = cached(&it) {
                objects.insert(it.key.clone(), Arc::new(cached));
            }
        }
        let (live, _) = broadcast::channel(4096);
        let (revision, _) = watch::channel(page.revision);
        let cache = Arc::new(Self {
            follower: std::sync::Mutex::new(None),
            inner: RwLock::new(Inner {
                objects,
                events: VecDeque::new(),
                revision: page.revision,
                oldest: page.revision,
            }),
            live,
            revision,
        });
        let mut changes = storage.watch("\0", "\0", page.revision + 1);
        let weak = Arc::downgrade(&cache);
        let follower = tokio::spawn(async move {
            let mut trim = tokio::time::interval(TRIM_EVERY);
            trim.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let batch = tokio::select! {
                    batch = changes.recv() => batch,
                    _ = trim.tick() => {
                        let Some(cache) = weak.upgrade() else { return };
                        let dropped = cache.inner.write().expect("watch cache lock").trim(Instant::now());
                        if dropped > 0 {
                            tracing::debug!(dropped, "watch cache: events left the window");
                        }
                        continue;
                    }
                };
                let Some(batch) = batch else { return };
                let Some(cache) = weak.upgrade() else { return };
                match batch {
                    WatchBatch::Changes(changes) => cache.apply(changes),
                    WatchBatch::Compacted { compact_revision } => {
                        // The cache never lags the local member by a compaction window; if it
                        // does, serving stale data would be worse than stopping.
                        tracing::error!(compact_revision, "watch cache fell behind compaction");
                        return;
                    }
                }
            }
        });
        *cache.follower.lock().expect("follower lock") = Some(follower.abort_handle());
        Ok(cache)
    }

    /// Stops following the store (the store watch ends with it).
    pub fn stop(&self) {
        if let Some(h) = self.follower.lock().expect("follower lock").take() {
            h.abort();
        }
    }

    fn apply(&self, changes: Vec<Change>) {
        let mut inner = self.inner.write().expect("watch cache lock");
        let mut last = inner.revision;
        // One arrival time for the whole batch.
        let now = Instant::now();
        for change in changes {
            let rev = change.revision();
            last = last.max(rev);
            let event = match change {
                Change::Put { item } => {
                    if !item.key.starts_with(REGISTRY) {
                        continue;
                    }
                    let Some(c) = cached(&item) else {
                        tracing::warn!(key = %item.key, "watch cache: undecodable value");
                        continue;
                    };
                    let c = Arc::new(c);
                    let prev = inner.objects.insert(item.key.clone(), c.clone());
                    let kind = if prev.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    };
                    Event {
                        revision: rev,
                        key: item.key.clone(),
                        kind,
                        object: c.object.clone(),
                        prev: prev.map(|p| p.object.clone()),
                    }
                }
                Change::Delete { key, revision } => {
                    let Some(prev) = inner.objects.remove(&key) else {
                        continue;
                    };
                    let mut last_state = (*prev.object).clone();
                    set_resource_version(&mut last_state, revision);
                    Event {
                        revision,
                        key: key.clone(),
                        kind: EventType::Deleted,
                        object: Arc::new(last_state),
                        prev: Some(prev.object.clone()),
                    }
                }
            };
            let event = Arc::new(event);
            inner.events.push_back((now, event.clone()));
            let _ = self.live.send(event);
        }
        inner.trim(now);
        inner.revision = last;
        drop(inner);
        self.revision.send_replace(last);
    }

    pub fn revision(&self) -> i64 {
        *self.revision.borrow()
    }

    /// Waits until the cache has seen `revision`.
    pub async fn wait_for(&self, revision: i64) -> Result<()> {
        let mut rx = self.revision.subscribe();
        let reached = tokio::time::timeout(Duration::from_secs(3), async {
            rx.wait_for(|r| *r >= revision).await.is_ok()
        })
        .await;
        match reached {
            Ok(true) => Ok(()),
            _ => Err(Error::TooLarge {
                requested: revision,
                current: self.revision(),
            }),
        }
    }

    pub fn get(&self, key: &str) -> Option<Arc<Cached>> {
        self.inner
            .read()
            .expect("watch cache lock")
            .objects
            .get(key)
            .cloned()
    }

    /// Objects whose keys start with `prefix` and sort after `after` (exclusive), in key order,
    /// and the cache revision they were read at.
    pub fn list(&self, prefix: &str, after: Option<&str>) -> (Vec<Arc<Cached>>, i64) {
        let inner = self.inner.read().expect("watch cache lock");
        let end = storage::prefix_end(prefix);
        let start = match after {
            Some(a) => std::ops::Bound::Excluded(a.to_string()),
            None => std::ops::Bound::Included(prefix.to_string()),
        };
        let items = inner
            .objects
            .range((start, std::ops::Bound::Excluded(end)))
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.revision)
    }

    /// Events under `prefix` after `revision`, then a receiver for everything later.
    pub fn watch_from(
        &self,
        prefix: &str,
        revision: i64,
    ) -> Result<(Vec<Arc<Event>>, Subscription)> {
        let inner = self.inner.read().expect("watch cache lock");
        if revision < inner.oldest {
            return Err(Error::TooOld {
                requested: revision,
                oldest: inner.oldest,
            });
        }
        let backlog = inner
            .events
            .iter()
            .map(|(_, e)| e)
            .filter(|e| e.revision > revision && e.key.starts_with(prefix))
            .cloned()
            .collect();
        // Subscribing under the lock: `apply` sends under the write lock, so nothing is
        // missed or repeated between the backlog and the live stream.
        Ok((backlog, self.live.subscribe()))
    }

    /// The current objects under `prefix` and a receiver for every later change.
    pub fn snapshot_and_watch(
        &self,
        prefix: &str,
    ) -> (Vec<Arc<Cached>>, i64, broadcast::Receiver<Arc<Event>>) {
        let inner = self.inner.read().expect("watch cache lock");
        let end = storage::prefix_end(prefix);
        let items = inner
            .objects
            .range(prefix.to_string()..end)
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.revision, self.live.subscribe())
    }
}

fn cached(item: &Item) -> Option<Cached> {
    Some(Cached {
        key: item.key.clone(),
        mod_revision: item.mod_revision,
        object: Arc::new(decode(&item.value, item.mod_revision)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inner_with(ages_secs: &[u64], now: Instant) -> Inner {
        let events = ages_secs
            .iter()
            .enumerate()
            .map(|(i, age)| {
                let event = Event {
                    revision: i as i64 + 1,
                    key: format!("/registry/pods/default/p{i}"),
                    kind: EventType::Added,
                    object: Arc::new(Value::Null),
                    prev: None,
                };
                (now - Duration::from_secs(*age), Arc::new(event))
            })
            .collect();
        Inner {
            objects: BTreeMap::new(),
            events,
            revision: ages_secs.len() as i64,
            oldest: 0,
        }
    }

    #[test]
    fn window_keeps_fresh_events_and_at_least_the_floor() {
        let now = Instant::now() + Duration::from_secs(1000);
        // MIN_EVENTS + 300 events: the first 400 are stale, the rest fresh.
        let ages: Vec<u64> = (0..MIN_EVENTS + 300)
            .map(|i| if i < 400 { 200 } else { 10 })
            .collect();
        let mut inner = inner_with(&ages, now);
        // Stale events go down to the floor only: 300 leave, 100 stale ones stay.
        assert_eq!(inner.trim(now), 300);
        assert_eq!(inner.events.len(), MIN_EVENTS);
        assert_eq!(inner.oldest, 300);
        assert_eq!(inner.events.front().unwrap().1.revision, 301);
        // Nothing stale above the floor: nothing leaves.
        assert_eq!(inner.trim(now), 0);

        let mut fresh = inner_with(&vec![1; MIN_EVENTS + 50], now);
        assert_eq!(fresh.trim(now), 0);
        assert_eq!(fresh.oldest, 0);
    }

    #[test]
    fn window_never_exceeds_the_cap() {
        let now = Instant::now();
        let mut inner = inner_with(&vec![0; MAX_EVENTS + 7], now);
        assert_eq!(inner.trim(now), 7);
        assert_eq!(inner.events.len(), MAX_EVENTS);
        assert_eq!(inner.oldest, 7);
    }
}
