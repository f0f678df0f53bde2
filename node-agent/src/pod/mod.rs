//! The pod loop. Pods bound to this node arrive through a watch (field selector
//! `spec.nodeName=<node>`) feeding a reflector cache; each pod gets a worker task that
//! observes the runtime, asks [`plan::plan`] what to do, does it, and reports the status
//! [`status::pod_status`] computes. Workers wake on pod changes, container exits (a pidfd
//! of each container's monitor), probe results and back-off deadlines, plus a slow resync.
//!
//! Start reading at [`Pods::run`], then [`worker`].

pub mod plan;
pub mod status;
pub mod translate;
mod volumes;
mod worker;

pub use worker::{attempt_of as sandbox_attempt, sandbox_prefix};

#[cfg(test)]
pub(crate) mod testing;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio::sync::Notify;

use crate::Agent;

/// The running workers, by pod uid.
#[derive(Debug, Default)]
pub struct Workers {
    by_uid: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Workers {
    /// Wake the worker of `uid`, or start one.
    fn wake_or_spawn(
        &self,
        agent: &Arc<Agent>,
        store: &Store<Pod>,
        uid: &str,
        ns: &str,
        name: &str,
    ) {
        let mut by_uid = self.by_uid.lock().expect("workers");
        if let Some(n) = by_uid.get(uid) {
            n.notify_one();
            return;
        }
        let wake = Arc::new(Notify::new());
        by_uid.insert(uid.to_string(), wake.clone());
        let key = worker::PodKey {
            uid: uid.to_string(),
            namespace: ns.to_string(),
            name: name.to_string(),
        };
        let agent = agent.clone();
        let store = store.clone();
        tokio::spawn(async move {
            worker::run(agent.clone(), store, key.clone(), wake).await;
            agent
                .workers
                .by_uid
                .lock()
                .expect("workers")
                .remove(&key.uid);
        });
    }

    fn wake_or_spawn_for(&self, agent: &Arc<Agent>, store: &Store<Pod>, p: &Pod) {
        let m = &p.metadata;
        self.wake_or_spawn(
            agent,
            store,
            m.uid.as_deref().unwrap_or_default(),
            m.namespace.as_deref().unwrap_or_default(),
            m.name.as_deref().unwrap_or_default(),
        );
    }

    pub fn count(&self) -> usize {
        self.by_uid.lock().expect("workers").len()
    }
}

/// Label of every sandbox: the pod's uid.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";

/// Watch the node's pods and keep a worker per pod until the task is dropped.
pub async fn run(agent: Arc<Agent>) {
    let api: Api<Pod> = Api::all(agent.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", agent.facts.name));
    let (store, writer) = reflector::store();
    let _ = agent.pods.set(store.clone());
    let stream = reflector::reflector(writer, watcher(api, cfg)).default_backoff();
    futures::pin_mut!(stream);
    let mut synced = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::Delete(p)) => {
                agent.workers.wake_or_spawn_for(&agent, &store, &p);
            }
            // During a (re)list the cache still holds the previous state until the list is
            // complete: workers start or wake at InitDone, when it is swapped in.
            Ok(watcher::Event::Init) | Ok(watcher::Event::InitApply(_)) => {}
            Ok(watcher::Event::InitDone) => {
                for p in store.state() {
                    agent.workers.wake_or_spawn_for(&agent, &store, &p);
                }
                if !synced {
                    synced = true;
                    // Only now, with the full list in hand, is a sandbox without a pod an
                    // orphan (its pod was deleted while we were away).
                    orphans(&agent, &store).await;
                }
                // Pods that vanished during a relist have workers still waiting.
                let wakes: Vec<Arc<Notify>> = agent
                    .workers
                    .by_uid
                    .lock()
                    .expect("workers")
                    .values()
                    .cloned()
                    .collect();
                for n in wakes {
                    n.notify_one();
                }
            }
            Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
        }
    }
}

async fn orphans(agent: &Arc<Agent>, store: &Store<Pod>) {
    let rt = agent.rt.clone();
    let sandboxes = match tokio::task::spawn_blocking(move || rt.list_sandboxes()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "listing sandboxes failed");
            return;
        }
        Err(_) => return,
    };
    let known: std::collections::HashSet<String> = store
        .state()
        .iter()
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    for sb in sandboxes {
        let Some(uid) = sb.config.labels.get(POD_UID_LABEL) else {
            continue;
        };
        if !known.contains(uid) {
            tracing::info!(pod = %format!("{}/{}", sb.config.namespace, sb.config.name), %uid, "removing the sandbox of a pod that no longer exists");
            agent
                .workers
                .wake_or_spawn(agent, store, uid, &sb.config.namespace, &sb.config.name);
        }
    }
}
