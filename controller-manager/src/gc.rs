//! The garbage collector: objects whose owners are gone are deleted; deletion propagates
//! as the deleter asked.
//!
//! - Background (the default): the owner goes at once; its dependents are found ownerless
//!   and deleted afterwards.
//! - Foreground: the API server keeps the owner, marked, with the `foregroundDeletion`
//!   finalizer; the collector deletes its dependents (those that own objects themselves in
//!   the foreground too), and removes the finalizer once no dependent with
//!   `blockOwnerDeletion` is left, which lets the owner go.
//! - Orphan: the owner is kept with the `orphan` finalizer; the collector removes the owner
//!   reference from every dependent, then the finalizer.
//!
//! An owner missing from the caches is confirmed missing with a live GET (by uid) before
//! anything is deleted, so a cache that lags behind a fresh owner cannot cost a dependent.
//! Dependents with several owners are kept while any owner remains; the references to the
//! owners that are gone are removed from them.
//!
//! The collector tracks the kinds whose caches the controller-manager keeps (see
//! [`Tracked`]); owners of other kinds are looked up live through the API registry.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::runtime::{Cache, Change, Informer, Key, Queue};
use crate::{Ctx, Error, Result};

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

/// What the collector works on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Item {
    /// An object's owner references: are its owners still there?
    Dependent { kind: &'static str, key: Key },
    /// An object being deleted with the `orphan` or `foregroundDeletion` finalizer.
    Owner { kind: &'static str, key: Key },
    /// The dependents of an object just deleted (by uid).
    DependentsOf(String),
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Dependent { kind, key } => write!(f, "dependent {kind} {key}"),
            Item::Owner { kind, key } => write!(f, "owner {kind} {key}"),
            Item::DependentsOf(uid) => write!(f, "dependents of {uid}"),
        }
    }
}

fn key_of(m: &ObjectMeta) -> Key {
    Key::new(
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default(),
    )
}

/// One kind the collector can read from a cache and write through the API.
pub trait Tracked: Send + Sync {
    fn kind(&self) -> &'static str;
    fn get(&self, key: &Key) -> Option<ObjectMeta>;
    fn owned_by(&self, uid: &str) -> Vec<ObjectMeta>;
    fn delete<'a>(
        &'a self,
        key: &'a Key,
        uid: &'a str,
        propagation: &'a str,
    ) -> BoxFuture<'a, kube::Result<()>>;
    fn patch_meta<'a>(
        &'a self,
        key: &'a Key,
        patch: serde_json::Value,
    ) -> BoxFuture<'a, kube::Result<()>>;
}

/// A tracked kind backed by a typed cache.
pub struct Typed<K> {
    pub cache: Arc<Cache<K>>,
    pub client: kube::Client,
}

impl<K> Typed<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + fmt::Debug + Send + Sync,
{
    /// Writes go through the dynamic API, which serves either scope.
    fn api(&self, key: &Key) -> Api<DynamicObject> {
        let ar = ApiResource::erase::<K>(&());
        if key.namespace.is_empty() {
            Api::all_with(self.client.clone(), &ar)
        } else {
            Api::namespaced_with(self.client.clone(), &key.namespace, &ar)
        }
    }
}

impl<K> Tracked for Typed<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + fmt::Debug + Send + Sync + 'static,
{
    fn kind(&self) -> &'static str {
        owner_kind(&K::kind(&())).unwrap_or("?")
    }
    fn get(&self, key: &Key) -> Option<ObjectMeta> {
        self.cache.get(key).map(|o| o.meta().clone())
    }
    fn owned_by(&self, uid: &str) -> Vec<ObjectMeta> {
        self.cache
            .owned_by(uid)
            .iter()
            .map(|o| o.meta().clone())
            .collect()
    }
    fn delete<'a>(
        &'a self,
        key: &'a Key,
        uid: &'a str,
        propagation: &'a str,
    ) -> BoxFuture<'a, kube::Result<()>> {
        async move {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.to_string()),
                    resource_version: None,
                }),
                propagation_policy: Some(match propagation {
                    "Foreground" => PropagationPolicy::Foreground,
                    _ => PropagationPolicy::Background,
                }),
                ..Default::default()
            };
            self.api(key).delete(&key.name, &dp).await.map(|_| ())
        }
        .boxed()
    }
    fn patch_meta<'a>(
        &'a self,
        key: &'a Key,
        patch: serde_json::Value,
    ) -> BoxFuture<'a, kube::Result<()>> {
        async move {
            self.api(key)
                .patch(&key.name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map(|_| ())
        }
        .boxed()
    }
}

/// Whether an owner is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    Alive,
    /// Marked for deletion with the `foregroundDeletion` finalizer: its dependents go first.
    DeletingForeground,
    Gone,
}

/// What to do with a dependent, decided from its owners' states.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Some owners are gone: drop the references to them (by uid).
    DropRefs(Vec<String>),
    /// Every owner is gone or going: delete it, in the foreground when an owner waits.
    Delete {
        foreground: bool,
    },
}

/// Decides purely for a dependent with these owner references and owner states.
pub fn verdict(refs: &[(OwnerReference, OwnerState)], has_dependents: bool) -> Verdict {
    if refs.is_empty() {
        return Verdict::Keep;
    }
    let alive = refs.iter().any(|(_, s)| *s == OwnerState::Alive);
    if !alive {
        let waiting = refs
            .iter()
            .any(|(_, s)| *s == OwnerState::DeletingForeground);
        return Verdict::Delete {
            foreground: waiting && has_dependents,
        };
    }
    let gone: Vec<String> = refs
        .iter()
        .filter(|(_, s)| *s == OwnerState::Gone)
        .map(|(r, _)| r.uid.clone())
        .collect();
    if gone.is_empty() {
        Verdict::Keep
    } else {
        Verdict::DropRefs(gone)
    }
}

/// The collector: the tracked kinds and its queue.
pub struct Collector {
    kinds: BTreeMap<&'static str, Arc<dyn Tracked>>,
    client: kube::Client,
    queue: Arc<Queue<Item>>,
}

fn has_finalizer(meta: &ObjectMeta, f: &str) -> bool {
    meta.finalizers.iter().flatten().any(|x| x == f)
}

impl Collector {
    fn tracked(&self, kind: &str) -> Option<&Arc<dyn Tracked>> {
        self.kinds.get(kind)
    }

    /// Every tracked object with an owner reference to `uid`, with its kind.
    fn dependents(&self, uid: &str) -> Vec<(&'static str, ObjectMeta)> {
        self.kinds
            .values()
            .flat_map(|k| {
                let kind = k.kind();
                k.owned_by(uid).into_iter().map(move |m| (kind, m))
            })
            .collect()
    }

    /// The state of the owner `r` of an object in `namespace`; confirmed live when the
    /// cache does not have it.
    async fn owner_state(&self, namespace: &str, r: &OwnerReference) -> Result<OwnerState> {
        let info = berth_api::registry::by_kind(&r.kind);
        let ns = match info {
            Some(i) if !i.namespaced() => "",
            _ => namespace,
        };
        let key = Key::new(ns, &r.name);
        let from_meta = |m: &ObjectMeta| {
            if m.uid.as_deref() != Some(r.uid.as_str()) {
                OwnerState::Gone
            } else if m.deletion_timestamp.is_some() && has_finalizer(m, FOREGROUND) {
                OwnerState::DeletingForeground
            } else {
                OwnerState::Alive
            }
        };
        if let Some(m) = self.tracked(&r.kind).and_then(|t| t.get(&key)) {
            if m.uid.as_deref() == Some(r.uid.as_str()) {
                return Ok(from_meta(&m));
            }
        }
        // Not in the cache (or another object by that name): ask the API server.
        let Some(info) = info else {
            // A kind the server does not serve cannot own anything here.
            return Ok(OwnerState::Gone);
        };
        let (group, version) = match r.api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), r.api_version.clone()),
        };
        let ar = ApiResource {
            group,
            version,
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
            plural: info.plural.to_string(),
        };
        let api: Api<DynamicObject> = if ns.is_empty() {
            Api::all_with(self.client.clone(), &ar)
        } else {
            Api::namespaced_with(self.client.clone(), ns, &ar)
        };
        match api.get_opt(&r.name).await {
            Ok(Some(o)) => Ok(from_meta(&o.metadata)),
            Ok(None) => Ok(OwnerState::Gone),
            Err(e) => Err(Error::api("looking up owner", &key, e)),
        }
    }

    async fn reconcile(&self, item: &Item) -> Result<()> {
        let (kind, key, as_owner) = match item {
            Item::Dependent { kind, key } => (kind, key, false),
            Item::Owner { kind, key } => (kind, key, true),
            Item::DependentsOf(uid) => {
                for (kind, m) in self.dependents(uid) {
                    self.queue.add(Item::Dependent {
                        kind,
                        key: key_of(&m),
                    });
                }
                return Ok(());
            }
        };
        let Some(tracked) = self.tracked(kind) else {
            return Ok(());
        };
        let Some(meta) = tracked.get(key) else {
            return Ok(());
        };
        if as_owner {
            self.finalize_owner(tracked.as_ref(), key, &meta).await
        } else {
            self.check_dependent(tracked.as_ref(), key, &meta).await
        }
    }

    async fn check_dependent(
        &self,
        kind: &dyn Tracked,
        key: &Key,
        meta: &ObjectMeta,
    ) -> Result<()> {
        let refs = meta.owner_references.clone().unwrap_or_default();
        if refs.is_empty() || meta.deletion_timestamp.is_some() {
            return Ok(());
        }
        let mut states = Vec::new();
        for r in refs {
            let s = self.owner_state(&key.namespace, &r).await?;
            states.push((r, s));
        }
        let uid = meta.uid.clone().unwrap_or_default();
        let has_dependents = !self.dependents(&uid).is_empty();
        match verdict(&states, has_dependents) {
            Verdict::Keep => Ok(()),
            Verdict::Delete { foreground } => {
                let policy = if foreground {
                    "Foreground"
                } else {
                    "Background"
                };
                tracing::info!(kind = kind.kind(), object = %key, policy, "deleting: its owners are gone");
                match kind.delete(key, &uid, policy).await {
                    Ok(()) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
                    Err(e) => Err(Error::api("collecting", key, e)),
                }
            }
            Verdict::DropRefs(gone) => {
                let kept: Vec<OwnerReference> = states
                    .into_iter()
                    .map(|(r, _)| r)
                    .filter(|r| !gone.contains(&r.uid))
                    .collect();
                self.set_refs(kind, key, meta, kept).await
            }
        }
    }

    async fn set_refs(
        &self,
        kind: &dyn Tracked,
        key: &Key,
        meta: &ObjectMeta,
        refs: Vec<OwnerReference>,
    ) -> Result<()> {
        let patch = json!({"metadata": {
            "ownerReferences": refs,
            "resourceVersion": meta.resource_version,
        }});
        match kind.patch_meta(key, patch).await {
            Ok(()) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(Error::api("updating owner references of", key, e)),
        }
    }

    async fn finalize_owner(&self, kind: &dyn Tracked, key: &Key, meta: &ObjectMeta) -> Result<()> {
        if meta.deletion_timestamp.is_none() {
            return Ok(());
        }
        let uid = meta.uid.clone().unwrap_or_default();
        let mut remove = None;
        if has_finalizer(meta, ORPHAN) {
            for (dkind, dmeta) in self.dependents(&uid) {
                let Some(t) = self.tracked(dkind) else {
                    continue;
                };
                let dkey = key_of(&dmeta);
                let kept: Vec<OwnerReference> = dmeta
                    .owner_references
                    .iter()
                    .flatten()
                    .filter(|r| r.uid != uid)
                    .cloned()
                    .collect();
                self.set_refs(t.as_ref(), &dkey, &dmeta, kept).await?;
            }
            remove = Some(ORPHAN);
        } else if has_finalizer(meta, FOREGROUND) {
            let mut blocking = 0;
            for (dkind, dmeta) in self.dependents(&uid) {
                let blocks = dmeta
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.uid == uid && r.block_owner_deletion == Some(true));
                if blocks {
                    blocking += 1;
                }
                if dmeta.deletion_timestamp.is_some() {
                    continue;
                }
                self.queue.add(Item::Dependent {
                    kind: dkind,
                    key: key_of(&dmeta),
                });
            }
            if blocking == 0 {
                remove = Some(FOREGROUND);
            }
        }
        let Some(f) = remove else {
            return Ok(());
        };
        let rest: Vec<&String> = meta
            .finalizers
            .iter()
            .flatten()
            .filter(|x| *x != f)
            .collect();
        let patch = json!({"metadata": {
            "finalizers": rest,
            "resourceVersion": meta.resource_version,
        }});
        tracing::debug!(kind = kind.kind(), object = %key, finalizer = f, "removing finalizer");
        match kind.patch_meta(key, patch).await {
            Ok(()) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(Error::api("removing finalizer of", key, e)),
        }
    }
}

/// Makes `informer`'s kind known to the collector and wires its events.
pub struct Builder {
    kinds: BTreeMap<&'static str, Arc<dyn Tracked>>,
    queue: Arc<Queue<Item>>,
    client: kube::Client,
}

impl Builder {
    pub fn new(client: kube::Client) -> Self {
        Self {
            kinds: BTreeMap::new(),
            queue: Queue::new("garbage-collector"),
            client,
        }
    }

    pub fn track<K>(&mut self, informer: &Informer<K>)
    where
        K: Resource<DynamicType = ()>
            + Clone
            + DeserializeOwned
            + fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let typed: Arc<dyn Tracked> = Arc::new(Typed {
            cache: informer.cache(),
            client: self.client.clone(),
        });
        let kind = typed.kind();
        self.kinds.insert(kind, typed);
        let queue = self.queue.clone();
        informer.on_change(move |c: &Change<'_, K>| {
            let meta = c.object().meta();
            let key = Key::of(c.object());
            match c {
                Change::Applied { old, .. } => {
                    let refs_changed =
                        old.is_none_or(|o| o.meta().owner_references != meta.owner_references);
                    if meta
                        .owner_references
                        .as_ref()
                        .is_some_and(|r| !r.is_empty())
                        && refs_changed
                    {
                        queue.add(Item::Dependent {
                            kind,
                            key: key.clone(),
                        });
                    }
                    if meta.deletion_timestamp.is_some()
                        && (has_finalizer(meta, ORPHAN) || has_finalizer(meta, FOREGROUND))
                    {
                        queue.add(Item::Owner { kind, key });
                    }
                }
                Change::Deleted(_) => {
                    // Its dependents may be ownerless now, and owners waiting on it may go.
                    queue.add(Item::DependentsOf(meta.uid.clone().unwrap_or_default()));
                    for r in meta.owner_references.iter().flatten() {
                        if let Some(kind) = owner_kind(&r.kind) {
                            let ns = meta.namespace.as_deref().unwrap_or_default();
                            queue.add(Item::Owner {
                                kind,
                                key: Key::new(ns, &r.name),
                            });
                        }
                    }
                }
            }
        });
    }

    /// Builds the collector and its workers.
    pub fn build(self, ctx: &Arc<Ctx>) -> Vec<BoxFuture<'static, ()>> {
        let collector = Arc::new(Collector {
            kinds: self.kinds,
            client: self.client,
            queue: self.queue.clone(),
        });
        let workers = ctx.config.workers;
        let queue = self.queue;
        let mut tasks: Vec<BoxFuture<'static, ()>> = Vec::new();
        for _ in 0..workers.max(1) {
            let (queue, collector) = (queue.clone(), collector.clone());
            tasks.push(
                async move {
                    loop {
                        let item = queue.next().await;
                        let result = collector.reconcile(&item).await;
                        match result {
                            Ok(()) => {
                                queue.done(&item, false);
                            }
                            Err(e) => {
                                let backoff = queue.done(&item, true).unwrap_or_default();
                                tracing::warn!(item = %item, error = %e, ?backoff, "garbage collection failed");
                                queue.add_after(item, backoff);
                            }
                        }
                    }
                }
                .boxed(),
            );
        }
        tasks
    }
}

/// The static name of an owner kind the collector may track.
fn owner_kind(kind: &str) -> Option<&'static str> {
    berth_api::registry::by_kind(kind).map(|i| i.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(uid: &str) -> OwnerReference {
        OwnerReference {
            uid: uid.into(),
            kind: "ReplicaSet".into(),
            name: uid.into(),
            api_version: "apps/v1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn dependents_go_only_when_every_owner_is_gone_or_going() {
        use OwnerState::*;
        assert_eq!(verdict(&[(r("a"), Alive)], false), Verdict::Keep);
        assert_eq!(
            verdict(&[(r("a"), Gone)], false),
            Verdict::Delete { foreground: false }
        );
        assert_eq!(
            verdict(&[(r("a"), Gone), (r("b"), Alive)], false),
            Verdict::DropRefs(vec!["a".into()])
        );
        assert_eq!(
            verdict(&[(r("a"), DeletingForeground)], true),
            Verdict::Delete { foreground: true }
        );
        assert_eq!(
            verdict(&[(r("a"), DeletingForeground)], false),
            Verdict::Delete { foreground: false }
        );
        assert_eq!(
            verdict(&[(r("a"), DeletingForeground), (r("b"), Alive)], true),
            Verdict::Keep
        );
        assert_eq!(verdict(&[], false), Verdict::Keep);
    }
}
