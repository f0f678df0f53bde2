//! The controller runtime every loop runs on, in client-go's shape (shared informers feeding
//! work queues) with kube-runtime's reconcile signature.
//!
//! - An [`Informer`] per kind lists and watches it once (kube-runtime's `watcher`, which
//!   relists on 410 Gone and backs off on errors) into a [`Cache`] indexed by namespace and by
//!   owner uid, and *then* tells every handler what changed, so a reconcile triggered by an
//!   event always reads a cache that already holds that event. Deletions are told too (the
//!   owner of a deleted pod must hear of it), and a relist tells the objects that vanished
//!   while the watch was down as deletions.
//! - A [`Queue`] per controller holds keys, each at most once, never handed to two workers at
//!   once (a key changed while being reconciled is queued again afterwards), with delayed
//!   requeues and per-key exponential back-off on errors.
//! - [`run`] starts a controller's workers once the caches it reads have synced, and calls
//!   `reconcile(object, ctx) -> Result<Action>` for each key whose object is in the cache.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// An object's place: namespace (empty for cluster-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn of<K: Resource>(obj: &K) -> Self {
        Self {
            namespace: obj.meta().namespace.clone().unwrap_or_default(),
            name: obj.meta().name.clone().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// The uid of an object's controlling owner, if it has one.
pub fn controller_uid<K: Resource>(obj: &K) -> Option<&str> {
    obj.meta()
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

/// A secondary index: the value an object is filed under, if any (a pod's node...).
pub type IndexFn<K> = fn(&K) -> Option<String>;

struct Indexed<K> {
    objects: BTreeMap<Key, Arc<K>>,
    by_owner: HashMap<String, HashSet<Key>>,
    index: Option<IndexFn<K>>,
    by_index: HashMap<String, HashSet<Key>>,
}

fn unfile(map: &mut HashMap<String, HashSet<Key>>, value: &str, key: &Key) {
    if let Some(set) = map.get_mut(value) {
        set.remove(key);
        if set.is_empty() {
            map.remove(value);
        }
    }
}

impl<K: Resource> Indexed<K> {
    fn insert(&mut self, obj: Arc<K>) -> Option<Arc<K>> {
        let key = Key::of(obj.as_ref());
        let old = self.remove(&key);
        for o in obj.meta().owner_references.iter().flatten() {
            self.by_owner
                .entry(o.uid.clone())
                .or_default()
                .insert(key.clone());
        }
        if let Some(v) = self.index.and_then(|f| f(&obj)) {
            self.by_index.entry(v).or_default().insert(key.clone());
        }
        self.objects.insert(key, obj);
        old
    }

    fn remove(&mut self, key: &Key) -> Option<Arc<K>> {
        let old = self.objects.remove(key)?;
        for o in old.meta().owner_references.iter().flatten() {
            unfile(&mut self.by_owner, &o.uid, key);
        }
        if let Some(v) = self.index.and_then(|f| f(&old)) {
            unfile(&mut self.by_index, &v, key);
        }
        Some(old)
    }

    fn clear(&mut self) -> BTreeMap<Key, Arc<K>> {
        self.by_owner.clear();
        self.by_index.clear();
        std::mem::take(&mut self.objects)
    }
}

/// A watch-fed, read-only view of one kind.
pub struct Cache<K> {
    inner: RwLock<Indexed<K>>,
    synced: watch::Sender<bool>,
}

impl<K: Resource> Cache<K> {
    fn new(index: Option<IndexFn<K>>) -> Self {
        Self {
            inner: RwLock::new(Indexed {
                objects: BTreeMap::new(),
                by_owner: HashMap::new(),
                index,
                by_index: HashMap::new(),
            }),
            synced: watch::channel(false).0,
        }
    }

    /// A cache filled by hand (tests and benchmarks), already synced.
    pub fn from_objects(objects: impl IntoIterator<Item = K>) -> Arc<Self> {
        Self::from_objects_indexed(objects, None)
    }

    pub fn from_objects_indexed(
        objects: impl IntoIterator<Item = K>,
        index: Option<IndexFn<K>>,
    ) -> Arc<Self> {
        let c = Self::new(index);
        {
            let mut inner = c.inner.write().expect("cache lock");
            for o in objects {
                inner.insert(Arc::new(o));
            }
        }
        c.synced.send_replace(true);
        Arc::new(c)
    }

    pub fn get(&self, key: &Key) -> Option<Arc<K>> {
        self.inner
            .read()
            .expect("cache lock")
            .objects
            .get(key)
            .cloned()
    }

    pub fn list(&self) -> Vec<Arc<K>> {
        self.inner
            .read()
            .expect("cache lock")
            .objects
            .values()
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.inner.read().expect("cache lock").objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every object in `namespace`.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        let inner = self.inner.read().expect("cache lock");
        let from = Key::new(namespace, "");
        inner
            .objects
            .range(from..)
            .take_while(|(k, _)| k.namespace == namespace)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Every object with an owner reference to `uid` (controller or not).
    pub fn owned_by(&self, uid: &str) -> Vec<Arc<K>> {
        let inner = self.inner.read().expect("cache lock");
        inner
            .by_owner
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|k| inner.objects.get(k).cloned())
            .collect()
    }

    /// Every object the secondary index files under `value`.
    pub fn indexed(&self, value: &str) -> Vec<Arc<K>> {
        let inner = self.inner.read().expect("cache lock");
        inner
            .by_index
            .get(value)
            .into_iter()
            .flatten()
            .filter_map(|k| inner.objects.get(k).cloned())
            .collect()
    }

    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits for the first full list.
    pub async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// What an informer tells its handlers.
#[derive(Debug)]
pub enum Change<'a, K> {
    /// Created or updated; `old` is what the cache held before, if anything.
    Applied {
        old: Option<&'a K>,
        new: &'a K,
    },
    Deleted(&'a K),
}

impl<K> Change<'_, K> {
    /// The object as it is now, or as it was last seen when deleted.
    pub fn object(&self) -> &K {
        match self {
            Change::Applied { new, .. } => new,
            Change::Deleted(o) => o,
        }
    }
}

type Handler<K> = Box<dyn Fn(&Change<'_, K>) + Send + Sync>;

/// One list-and-watch of a kind, shared by every controller that reads it.
pub struct Informer<K> {
    api: Api<K>,
    config: watcher::Config,
    cache: Arc<Cache<K>>,
    handlers: Mutex<Vec<Handler<K>>>,
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    pub fn new(api: Api<K>) -> Arc<Self> {
        Self::with_config(api, watcher::Config::default())
    }

    pub fn with_config(api: Api<K>, config: watcher::Config) -> Arc<Self> {
        Self::indexed(api, config, None)
    }

    /// An informer whose cache also files objects under `index` (see [`Cache::indexed`]).
    pub fn indexed(api: Api<K>, config: watcher::Config, index: Option<IndexFn<K>>) -> Arc<Self> {
        Arc::new(Self {
            api,
            config,
            cache: Arc::new(Cache::new(index)),
            handlers: Mutex::new(Vec::new()),
        })
    }

    pub fn cache(&self) -> Arc<Cache<K>> {
        self.cache.clone()
    }

    /// Calls `handler` after every change is in the cache. Register before [`Informer::run`].
    pub fn on_change(&self, handler: impl Fn(&Change<'_, K>) + Send + Sync + 'static) {
        self.handlers
            .lock()
            .expect("handlers lock")
            .push(Box::new(handler));
    }

    fn tell(&self, change: &Change<'_, K>) {
        for h in self.handlers.lock().expect("handlers lock").iter() {
            h(change);
        }
    }

    /// Lists and watches until the stream ends (it does not, short of a panic).
    pub async fn run(self: Arc<Self>) {
        let kind = K::kind(&Default::default()).to_string();
        let stream = watcher::watcher(self.api.clone(), self.config.clone()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut relist: Option<BTreeMap<Key, Arc<K>>> = None;
        loop {
            let event = match stream.try_next().await {
                Ok(Some(e)) => e,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(kind = %kind, error = %e, "watch failed; retrying");
                    continue;
                }
            };
            match event {
                Event::Apply(obj) => {
                    let new = Arc::new(obj);
                    let old = self
                        .cache
                        .inner
                        .write()
                        .expect("cache lock")
                        .insert(new.clone());
                    self.tell(&Change::Applied {
                        old: old.as_deref(),
                        new: &new,
                    });
                }
                Event::Delete(obj) => {
                    let key = Key::of(&obj);
                    let old = self.cache.inner.write().expect("cache lock").remove(&key);
                    self.tell(&Change::Deleted(old.as_deref().unwrap_or(&obj)));
                }
                Event::Init => relist = Some(BTreeMap::new()),
                Event::InitApply(obj) => {
                    if let Some(r) = relist.as_mut() {
                        r.insert(Key::of(&obj), Arc::new(obj));
                    }
                }
                Event::InitDone => {
                    let fresh = relist.take().unwrap_or_default();
                    let before = {
                        let mut inner = self.cache.inner.write().expect("cache lock");
                        let before = inner.clear();
                        for o in fresh.values() {
                            inner.insert(o.clone());
                        }
                        before
                    };
                    self.cache.synced.send_replace(true);
                    for (key, old) in &before {
                        if !fresh.contains_key(key) {
                            self.tell(&Change::Deleted(old));
                        }
                    }
                    for (key, new) in &fresh {
                        self.tell(&Change::Applied {
                            old: before.get(key).map(|o| o.as_ref()),
                            new,
                        });
                    }
                    tracing::debug!(kind = %kind, objects = fresh.len(), "listed");
                }
            }
        }
    }
}

/// What to do with a key after reconciling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing until something changes.
    AwaitChange,
    /// Look again after this long even if nothing changes.
    Requeue(Duration),
}

impl Action {
    /// The sooner of two requeues.
    pub fn min(self, other: Action) -> Action {
        match (self, other) {
            (Action::Requeue(a), Action::Requeue(b)) => Action::Requeue(a.min(b)),
            (Action::Requeue(a), _) | (_, Action::Requeue(a)) => Action::Requeue(a),
            _ => Action::AwaitChange,
        }
    }
}

struct QueueState<T> {
    ready: VecDeque<T>,
    queued: HashSet<T>,
    active: HashSet<T>,
    /// Keys added while being reconciled: queued again when done.
    dirty: HashSet<T>,
    failures: HashMap<T, u32>,
}

impl<T> Default for QueueState<T> {
    fn default() -> Self {
        Self {
            ready: VecDeque::new(),
            queued: HashSet::new(),
            active: HashSet::new(),
            dirty: HashSet::new(),
            failures: HashMap::new(),
        }
    }
}

/// A controller's work queue of keys (by default an object's [`Key`]).
pub struct Queue<T = Key> {
    pub name: &'static str,
    state: Mutex<QueueState<T>>,
    notify: Notify,
}

impl<T: Clone + Eq + Hash + Send + Sync + 'static> Queue<T> {
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Self {
            name,
            state: Mutex::new(QueueState::default()),
            notify: Notify::new(),
        })
    }

    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: T) {
        let mut s = self.state.lock().expect("queue lock");
        if s.active.contains(&key) {
            s.dirty.insert(key);
            return;
        }
        if s.queued.insert(key.clone()) {
            s.ready.push_back(key);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(self: &Arc<Self>, key: T, delay: Duration) {
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(key);
        });
    }

    pub fn len(&self) -> usize {
        self.state.lock().expect("queue lock").ready.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next key to work on; it is not handed out again until [`Queue::done`].
    pub async fn next(&self) -> T {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.state.lock().expect("queue lock");
                if let Some(k) = s.ready.pop_front() {
                    s.queued.remove(&k);
                    s.active.insert(k.clone());
                    if !s.ready.is_empty() {
                        self.notify.notify_one();
                    }
                    return k;
                }
            }
            notified.await;
        }
    }

    /// Marks `key` done; returns the back-off to wait before retrying after an error.
    pub fn done(self: &Arc<Self>, key: &T, failed: bool) -> Option<Duration> {
        let mut s = self.state.lock().expect("queue lock");
        s.active.remove(key);
        let backoff = if failed {
            let n = s.failures.entry(key.clone()).or_insert(0);
            *n += 1;
            // 100 ms doubling to a minute.
            Some(Duration::from_millis(100u64 << (*n - 1).min(9)).min(Duration::from_secs(60)))
        } else {
            s.failures.remove(key);
            None
        };
        let again = s.dirty.remove(key);
        drop(s);
        if again {
            self.add(key.clone());
        }
        backoff
    }
}

/// Runs `workers` workers over `queue` once every one of `synced` has listed, calling
/// `reconcile` for each key whose object is in `cache`. Never returns.
pub async fn run<K, Ctx, F, Fut, E>(
    queue: Arc<Queue>,
    cache: Arc<Cache<K>>,
    synced: Vec<Arc<dyn Synced>>,
    workers: usize,
    ctx: Arc<Ctx>,
    reconcile: F,
) where
    K: Resource + Send + Sync + 'static,
    Ctx: Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Ctx>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, E>> + Send,
    E: std::fmt::Display + Send,
{
    cache.synced().await;
    for s in &synced {
        s.wait().await;
    }
    let reconcile = Arc::new(reconcile);
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let (queue, cache, ctx, reconcile) =
            (queue.clone(), cache.clone(), ctx.clone(), reconcile.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let key = queue.next().await;
                let Some(obj) = cache.get(&key) else {
                    queue.done(&key, false);
                    continue;
                };
                let started = Instant::now();
                let result = reconcile(obj, ctx.clone()).await;
                let took = started.elapsed();
                match result {
                    Ok(action) => {
                        queue.done(&key, false);
                        if let Action::Requeue(d) = action {
                            queue.add_after(key.clone(), d);
                        }
                        tracing::trace!(controller = queue.name, key = %key, ?took, "reconciled");
                    }
                    Err(e) => {
                        let backoff = queue.done(&key, true).unwrap_or_default();
                        tracing::warn!(controller = queue.name, key = %key, error = %e, ?backoff, "reconcile failed");
                        queue.add_after(key.clone(), backoff);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Something with a first full list to wait for.
pub trait Synced: Send + Sync {
    fn wait(&self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

impl<K: Resource + Send + Sync> Synced for Cache<K> {
    fn wait(&self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.synced())
    }
}

/// Queues the controlling owner of each changed object, when it is of kind `owner_kind`
/// (its name is in the owner reference; its namespace is the object's).
pub fn enqueue_owner<K: Resource>(
    queue: &Arc<Queue>,
    owner_kind: &'static str,
) -> impl Fn(&Change<'_, K>) + Send + Sync + 'static {
    let queue = queue.clone();
    move |c| {
        let obj = c.object();
        let mut owners: Vec<&str> = Vec::new();
        if let Change::Applied { old: Some(old), .. } = c {
            owners.extend(controller_of_kind(*old, owner_kind));
        }
        owners.extend(controller_of_kind(obj, owner_kind));
        owners.dedup();
        for name in owners {
            queue.add(Key::new(
                obj.meta().namespace.as_deref().unwrap_or(""),
                name,
            ));
        }
    }
}

fn controller_of_kind<'a, K: Resource>(obj: &'a K, kind: &str) -> Option<&'a str> {
    obj.meta()
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == kind)
        .map(|o| o.name.as_str())
}

/// Queues each changed object itself.
pub fn enqueue_self<K: Resource>(
    queue: &Arc<Queue>,
) -> impl Fn(&Change<'_, K>) + Send + Sync + 'static {
    let queue = queue.clone();
    move |c| queue.add(Key::of(c.object()))
}

/// Used by tests: an object's name as `ns/name`.
pub fn name_of<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.namespace().unwrap_or_default(),
        obj.meta().name.clone().unwrap_or_default()
    )
}

/// Drives a stream of informers (used by [`crate::run`]).
pub async fn run_all(tasks: Vec<futures::future::BoxFuture<'static, ()>>) {
    let mut set = futures::stream::FuturesUnordered::from_iter(tasks);
    while set.next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn pod(ns: &str, name: &str, owner: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                owner_references: owner.map(|o| {
                    vec![OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: "ReplicaSet".into(),
                        name: o.into(),
                        uid: format!("uid-{o}"),
                        controller: Some(true),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn the_cache_indexes_by_namespace_and_owner() {
        let c = Cache::from_objects([
            pod("a", "p1", Some("rs1")),
            pod("a", "p2", Some("rs2")),
            pod("b", "p3", Some("rs1")),
            pod("ab", "p4", None),
        ]);
        let names = |v: Vec<Arc<Pod>>| v.iter().map(|p| name_of(p.as_ref())).collect::<Vec<_>>();
        assert_eq!(names(c.in_namespace("a")), ["a/p1", "a/p2"]);
        let mut by = names(c.owned_by("uid-rs1"));
        by.sort();
        assert_eq!(by, ["a/p1", "b/p3"]);
        // Re-inserting with another owner moves the index entry.
        c.inner
            .write()
            .unwrap()
            .insert(Arc::new(pod("a", "p1", Some("rs2"))));
        assert_eq!(names(c.owned_by("uid-rs1")), ["b/p3"]);
        assert_eq!(c.owned_by("uid-rs2").len(), 2);
        c.inner.write().unwrap().remove(&Key::new("a", "p2"));
        assert_eq!(names(c.owned_by("uid-rs2")), ["a/p1"]);
    }

    #[tokio::test]
    async fn a_key_is_queued_once_and_never_worked_twice_at_once() {
        let q = Queue::new("t");
        q.add(Key::new("a", "x"));
        q.add(Key::new("a", "x"));
        q.add(Key::new("a", "y"));
        assert_eq!(q.len(), 2);
        let k = q.next().await;
        assert_eq!(k, Key::new("a", "x"));
        // Added while active: held back until done.
        q.add(Key::new("a", "x"));
        assert_eq!(q.len(), 1);
        assert_eq!(q.done(&k, false), None);
        assert_eq!(q.len(), 2);
        assert_eq!(q.next().await, Key::new("a", "y"));
        assert_eq!(q.next().await, Key::new("a", "x"));
    }

    #[tokio::test]
    async fn failures_back_off_exponentially_and_reset_on_success() {
        let q = Queue::new("t");
        let k = Key::new("", "n");
        let mut seen = Vec::new();
        for _ in 0..12 {
            q.add(k.clone());
            let got = q.next().await;
            seen.push(q.done(&got, true).unwrap().as_millis());
        }
        assert_eq!(&seen[..4], [100, 200, 400, 800]);
        assert_eq!(*seen.last().unwrap(), 51200);
        q.add(k.clone());
        let got = q.next().await;
        assert_eq!(q.done(&got, false), None);
        q.add(k.clone());
        let got = q.next().await;
        assert_eq!(q.done(&got, true).unwrap().as_millis(), 100);
    }
}
