//! Expectations, as in Kubernetes' controllers: a controller that just created or deleted
//! pods must not act again on a cache that does not show those writes yet, or it would
//! create (or delete) twice. It records what it expects; the pod informer's events satisfy
//! the record; until then (or until the record expires) the controller leaves counts alone.
//!
//! Nothing here survives a restart, and nothing needs to: a restarted controller's caches
//! come from a fresh list, which holds every write acknowledged before it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::time::Instant;

use crate::runtime::{controller_uid, Change};

/// How long an unmet expectation holds a controller back (Kubernetes: 5 minutes). A create
/// whose pod never shows up (deleted again at once) costs at most this much delay.
pub const TTL: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Record {
    adds: i64,
    deletes: HashSet<String>,
    since: Instant,
}

/// Outstanding creates and deletes per controller uid.
#[derive(Debug, Default)]
pub struct Expectations {
    records: Mutex<HashMap<String, Record>>,
}

impl Expectations {
    /// True when the controller `uid` may trust the cache.
    pub fn satisfied(&self, uid: &str) -> bool {
        let mut r = self.records.lock().expect("expectations lock");
        match r.get(uid) {
            None => true,
            Some(rec) if (rec.adds <= 0 && rec.deletes.is_empty()) || rec.since.elapsed() > TTL => {
                r.remove(uid);
                true
            }
            Some(_) => false,
        }
    }

    pub fn expect_creates(&self, uid: &str, n: usize) {
        let mut r = self.records.lock().expect("expectations lock");
        let rec = r.entry(uid.to_string()).or_insert_with(|| Record {
            adds: 0,
            deletes: HashSet::new(),
            since: Instant::now(),
        });
        rec.adds += n as i64;
        rec.since = Instant::now();
    }

    pub fn expect_deletes(&self, uid: &str, pods: impl IntoIterator<Item = String>) {
        let mut r = self.records.lock().expect("expectations lock");
        let rec = r.entry(uid.to_string()).or_insert_with(|| Record {
            adds: 0,
            deletes: HashSet::new(),
            since: Instant::now(),
        });
        rec.deletes.extend(pods);
        rec.since = Instant::now();
    }

    /// A create that will never be seen (it failed).
    pub fn create_observed(&self, uid: &str) {
        if let Some(rec) = self.records.lock().expect("expectations lock").get_mut(uid) {
            rec.adds -= 1;
        }
    }

    /// A delete that will never be seen (it failed, or the pod was already gone).
    pub fn delete_observed(&self, uid: &str, pod_uid: &str) {
        if let Some(rec) = self.records.lock().expect("expectations lock").get_mut(uid) {
            rec.deletes.remove(pod_uid);
        }
    }

    /// Forgets a controller that is gone.
    pub fn forget(&self, uid: &str) {
        self.records.lock().expect("expectations lock").remove(uid);
    }

    /// Feeds a pod informer's change in: creations of owned pods and their deletions (or
    /// the start of a graceful one) satisfy the owner's record.
    pub fn observe(&self, change: &Change<'_, Pod>) {
        let pod = change.object();
        let Some(owner) = controller_uid(pod) else {
            return;
        };
        let pod_uid = pod.metadata.uid.as_deref().unwrap_or_default();
        match change {
            Change::Applied { old: None, new } => {
                if new.metadata.deletion_timestamp.is_none() {
                    self.create_observed(owner);
                } else {
                    self.delete_observed(owner, pod_uid);
                }
            }
            Change::Applied { old: Some(_), new } => {
                if new.metadata.deletion_timestamp.is_some() {
                    self.delete_observed(owner, pod_uid);
                }
            }
            Change::Deleted(_) => self.delete_observed(owner, pod_uid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::fixtures::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owned(name: &str) -> Pod {
        pod(name).owner(OwnerReference {
            uid: "rs".into(),
            controller: Some(true),
            ..Default::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn creates_and_deletes_are_waited_for_until_seen_or_expired() {
        let e = Expectations::default();
        assert!(e.satisfied("rs"));
        e.expect_creates("rs", 2);
        e.expect_deletes("rs", ["uid-x".to_string()]);
        assert!(!e.satisfied("rs"));
        e.observe(&Change::Applied {
            old: None,
            new: &owned("a"),
        });
        e.observe(&Change::Applied {
            old: None,
            new: &owned("b"),
        });
        assert!(!e.satisfied("rs"), "the delete is still outstanding");
        let x = owned("x");
        e.observe(&Change::Applied {
            old: Some(&x),
            new: &owned("x").deleting(),
        });
        assert!(e.satisfied("rs"));

        e.expect_creates("rs", 1);
        assert!(!e.satisfied("rs"));
        tokio::time::advance(TTL + Duration::from_secs(1)).await;
        assert!(e.satisfied("rs"), "an expectation expires");
    }
}
