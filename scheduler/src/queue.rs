//! The scheduling queue, after kube-scheduler's `PriorityQueue`:
//!
//! - **active**: pods to try now, highest `spec.priority` first, then in order of arrival;
//! - **backoff**: pods that failed recently, each waiting out its back-off (1 s doubling per
//!   attempt up to 10 s) before going back to active;
//! - **unschedulable**: pods that fit nowhere, parked until the cluster changes (a node added
//!   or updated, a pod deleted: [`Queue::move_all`]) or, at the latest, after five minutes.
//!   A cluster change sends a parked pod to active if its back-off is over, else to backoff.
//!
//! Time comes from `tokio::time::Instant`, so tests run it on a paused clock.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::info::PodInfo;

/// Back-off and parking times.
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// How long a pod stays parked as unschedulable without any cluster change before it is
    /// tried again.
    pub max_unschedulable: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            max_unschedulable: Duration::from_secs(300),
        }
    }
}

/// A pod taken out of the queue to be scheduled; give it back with
/// [`Queue::unschedulable`] or [`Queue::backoff`] when the attempt fails.
#[derive(Debug, Clone)]
pub struct Queued {
    pub info: Arc<PodInfo>,
    /// Scheduling attempts so far, this one included.
    pub attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    Active,
    Backoff,
    Unschedulable,
}

#[derive(Debug)]
struct Entry {
    info: Arc<PodInfo>,
    attempts: u32,
    /// When it last failed (back-off and parking count from here).
    failed_at: Option<Instant>,
    place: Where,
    /// Arrival order (refreshed on every re-queue, as kube-scheduler's timestamp is).
    seq: u64,
    /// Bumped on every move: heap items of an older generation are stale.
    gen: u64,
}

#[derive(Debug, PartialEq, Eq)]
struct ActiveItem {
    priority: i32,
    seq: u64,
    gen: u64,
    uid: Arc<str>,
}

impl Ord for ActiveItem {
    fn cmp(&self, o: &Self) -> Ordering {
        // Max-heap: higher priority first, then lower seq (earlier) first.
        self.priority
            .cmp(&o.priority)
            .then_with(|| o.seq.cmp(&self.seq))
    }
}

impl PartialOrd for ActiveItem {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// The queue of pods waiting for a node.
#[derive(Debug, Default)]
pub struct Queue {
    cfg: QueueConfig,
    entries: HashMap<Arc<str>, Entry>,
    active: BinaryHeap<ActiveItem>,
    backoff: BinaryHeap<Reverse<(Instant, u64, Arc<str>)>>,
    seq: u64,
    gen: u64,
}

impl Queue {
    pub fn new(cfg: QueueConfig) -> Queue {
        Queue {
            cfg,
            ..Default::default()
        }
    }

    /// Pods waiting, in any of the three places.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.entries.contains_key(uid)
    }

    /// Whether a pop may find a pod (cheap; possibly a stale entry).
    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    /// The waiting version of pod `uid`.
    pub fn get(&self, uid: &str) -> Option<&Arc<PodInfo>> {
        self.entries.get(uid).map(|e| &e.info)
    }

    /// The uids of every waiting pod.
    pub fn uids(&self) -> impl Iterator<Item = String> + '_ {
        self.entries.keys().map(|k| k.to_string())
    }

    /// Pods in active (ready to pop).
    pub fn active_len(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.place == Where::Active)
            .count()
    }

    /// Pods parked as unschedulable.
    pub fn unschedulable_len(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.place == Where::Unschedulable)
            .count()
    }

    /// Pods waiting out a back-off.
    pub fn backoff_len(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.place == Where::Backoff)
            .count()
    }

    /// The back-off after `attempts` failed attempts: 1 s, 2 s, 4 s, 8 s, then 10 s.
    pub fn backoff_for(&self, attempts: u32) -> Duration {
        let mut d = self.cfg.initial_backoff;
        for _ in 1..attempts {
            d = d.saturating_mul(2);
            if d >= self.cfg.max_backoff {
                return self.cfg.max_backoff;
            }
        }
        d.min(self.cfg.max_backoff)
    }

    fn next_seq(&mut self) -> (u64, u64) {
        self.seq += 1;
        self.gen += 1;
        (self.seq, self.gen)
    }

    /// A new pod, or a new version of one already waiting. A waiting pod whose spec or labels
    /// changed (`changed`) gets another try, as after a cluster change; otherwise only its
    /// information is refreshed.
    pub fn add(&mut self, info: Arc<PodInfo>, changed: bool, now: Instant) {
        let uid: Arc<str> = info.uid.as_str().into();
        if let Some(e) = self.entries.get_mut(&uid) {
            e.info = info;
            match e.place {
                Where::Unschedulable if changed => self.requeue(&uid, now),
                Where::Active => {
                    // Priority may have changed: push a fresh item, the old one goes stale.
                    self.gen += 1;
                    let gen = self.gen;
                    let e = self.entries.get_mut(&uid).expect("entry");
                    e.gen = gen;
                    let item = ActiveItem {
                        priority: e.info.priority,
                        seq: e.seq,
                        gen,
                        uid,
                    };
                    self.active.push(item);
                }
                _ => {}
            }
            return;
        }
        let (seq, gen) = self.next_seq();
        self.active.push(ActiveItem {
            priority: info.priority,
            seq,
            gen,
            uid: uid.clone(),
        });
        self.entries.insert(
            uid,
            Entry {
                info,
                attempts: 0,
                failed_at: None,
                place: Where::Active,
                seq,
                gen,
            },
        );
    }

    /// Forgets a pod (deleted, bound by someone else, no longer ours).
    pub fn remove(&mut self, uid: &str) {
        self.entries.remove(uid);
    }

    /// The next pod to schedule, if any is active. It leaves the queue.
    pub fn pop(&mut self) -> Option<Queued> {
        while let Some(item) = self.active.pop() {
            let live = self
                .entries
                .get(&item.uid)
                .is_some_and(|e| e.gen == item.gen && e.place == Where::Active);
            if !live {
                continue;
            }
            let e = self.entries.remove(&item.uid).expect("entry");
            return Some(Queued {
                info: e.info,
                attempts: e.attempts + 1,
            });
        }
        None
    }

    /// Parks a pod that fits nowhere until the cluster changes.
    pub fn unschedulable(&mut self, q: Queued, now: Instant) {
        self.put_back(q, Where::Unschedulable, now);
    }

    /// Puts back a pod whose attempt failed for another reason (its binding failed): it is
    /// retried after its back-off.
    pub fn backoff(&mut self, q: Queued, now: Instant) {
        self.put_back(q, Where::Backoff, now);
    }

    fn put_back(&mut self, q: Queued, place: Where, now: Instant) {
        let uid: Arc<str> = q.info.uid.as_str().into();
        let (seq, gen) = self.next_seq();
        let e = Entry {
            info: q.info,
            attempts: q.attempts,
            failed_at: Some(now),
            place,
            seq,
            gen,
        };
        if place == Where::Backoff {
            let until = now + self.backoff_for(e.attempts);
            self.backoff.push(Reverse((until, gen, uid.clone())));
        }
        self.entries.insert(uid, e);
    }

    /// Sends a parked pod to active if its back-off is over, else to backoff.
    fn requeue(&mut self, uid: &Arc<str>, now: Instant) {
        let backoff = {
            let Some(e) = self.entries.get(uid) else {
                return;
            };
            e.failed_at.map(|t| t + self.backoff_for(e.attempts))
        };
        let (seq, gen) = self.next_seq();
        let e = self.entries.get_mut(uid).expect("entry");
        e.seq = seq;
        e.gen = gen;
        match backoff {
            Some(until) if until > now => {
                e.place = Where::Backoff;
                self.backoff.push(Reverse((until, gen, uid.clone())));
            }
            _ => {
                e.place = Where::Active;
                self.active.push(ActiveItem {
                    priority: e.info.priority,
                    seq,
                    gen,
                    uid: uid.clone(),
                });
            }
        }
    }

    /// The cluster changed (a node was added or updated, a pod deleted): every parked pod
    /// gets another try.
    pub fn move_all(&mut self, now: Instant) {
        let parked: Vec<Arc<str>> = self
            .entries
            .iter()
            .filter(|(_, e)| e.place == Where::Unschedulable)
            .map(|(k, _)| k.clone())
            .collect();
        for uid in parked {
            self.requeue(&uid, now);
        }
    }

    /// Moves pods whose back-off is over to active, and pods parked longer than
    /// `max_unschedulable` back into play. Call when [`Queue::next_wake`] comes.
    pub fn flush(&mut self, now: Instant) {
        while let Some(Reverse((until, gen, uid))) = self.backoff.peek().cloned() {
            if until > now {
                break;
            }
            self.backoff.pop();
            let Some(e) = self.entries.get_mut(&uid) else {
                continue;
            };
            if e.gen != gen || e.place != Where::Backoff {
                continue;
            }
            let (seq, g) = {
                self.seq += 1;
                self.gen += 1;
                (self.seq, self.gen)
            };
            e.place = Where::Active;
            e.seq = seq;
            e.gen = g;
            self.active.push(ActiveItem {
                priority: e.info.priority,
                seq,
                gen: g,
                uid,
            });
        }
        let max = self.cfg.max_unschedulable;
        let stale: Vec<Arc<str>> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.place == Where::Unschedulable && e.failed_at.is_some_and(|t| now >= t + max)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for uid in stale {
            self.requeue(&uid, now);
        }
    }

    /// When [`Queue::flush`] next has something to do.
    pub fn next_wake(&self) -> Option<Instant> {
        let backoff = self
            .backoff
            .iter()
            .filter(|Reverse((_, gen, uid))| {
                self.entries
                    .get(uid)
                    .is_some_and(|e| e.gen == *gen && e.place == Where::Backoff)
            })
            .map(|Reverse((t, _, _))| *t)
            .min();
        let parked = self
            .entries
            .values()
            .filter(|e| e.place == Where::Unschedulable)
            .filter_map(|e| e.failed_at.map(|t| t + self.cfg.max_unschedulable))
            .min();
        match (backoff, parked) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pod;

    fn info(name: &str, priority: i32) -> Arc<PodInfo> {
        Arc::new(pod(name).priority(priority).info())
    }

    fn names(q: &mut Queue) -> Vec<String> {
        std::iter::from_fn(|| q.pop().map(|p| p.info.name.clone())).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn pops_by_priority_then_arrival() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.add(info("low", 0), false, now);
        q.add(info("high", 100), false, now);
        q.add(info("low2", 0), false, now);
        q.add(info("mid", 10), false, now);
        assert_eq!(names(&mut q), ["high", "mid", "low", "low2"]);
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn back_off_doubles_to_ten_seconds() {
        let q = Queue::new(QueueConfig::default());
        let secs: Vec<u64> = (1..=6).map(|a| q.backoff_for(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 10, 10]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_binding_waits_out_its_back_off() {
        let mut q = Queue::default();
        q.add(info("web", 0), false, Instant::now());
        let p = q.pop().unwrap();
        assert_eq!(p.attempts, 1);
        q.backoff(p, Instant::now());
        assert!(q.pop().is_none());
        assert_eq!(q.next_wake(), Some(Instant::now() + Duration::from_secs(1)));
        tokio::time::advance(Duration::from_millis(999)).await;
        q.flush(Instant::now());
        assert!(q.pop().is_none());
        tokio::time::advance(Duration::from_millis(1)).await;
        q.flush(Instant::now());
        let p = q.pop().unwrap();
        assert_eq!(p.attempts, 2);
        // The second failure waits two seconds.
        q.backoff(p, Instant::now());
        tokio::time::advance(Duration::from_millis(1999)).await;
        q.flush(Instant::now());
        assert!(q.pop().is_none());
        tokio::time::advance(Duration::from_millis(1)).await;
        q.flush(Instant::now());
        assert_eq!(q.pop().unwrap().attempts, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn unschedulable_pods_wait_for_a_cluster_change() {
        let mut q = Queue::default();
        q.add(info("web", 0), false, Instant::now());
        let p = q.pop().unwrap();
        q.unschedulable(p, Instant::now());
        assert_eq!(q.unschedulable_len(), 1);
        // Back-off long over, no change: still parked.
        tokio::time::advance(Duration::from_secs(60)).await;
        q.flush(Instant::now());
        assert!(q.pop().is_none());
        // A node appears: straight to active.
        q.move_all(Instant::now());
        assert_eq!(q.pop().unwrap().info.name, "web");
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_during_back_off_goes_through_backoff() {
        let mut q = Queue::default();
        q.add(info("web", 0), false, Instant::now());
        let p = q.pop().unwrap();
        q.unschedulable(p, Instant::now());
        tokio::time::advance(Duration::from_millis(300)).await;
        q.move_all(Instant::now());
        assert_eq!(q.backoff_len(), 1);
        assert!(q.pop().is_none());
        tokio::time::advance(Duration::from_millis(700)).await;
        q.flush(Instant::now());
        assert_eq!(q.pop().unwrap().info.name, "web");
    }

    #[tokio::test(start_paused = true)]
    async fn parked_pods_are_retried_after_five_minutes() {
        let mut q = Queue::default();
        q.add(info("web", 0), false, Instant::now());
        let p = q.pop().unwrap();
        q.unschedulable(p, Instant::now());
        assert_eq!(
            q.next_wake(),
            Some(Instant::now() + Duration::from_secs(300))
        );
        tokio::time::advance(Duration::from_secs(300)).await;
        q.flush(Instant::now());
        assert_eq!(q.pop().unwrap().info.name, "web");
    }

    #[tokio::test(start_paused = true)]
    async fn an_update_of_a_parked_pod_retries_it_and_removal_forgets_it() {
        let mut q = Queue::default();
        q.add(info("web", 0), false, Instant::now());
        let p = q.pop().unwrap();
        q.unschedulable(p, Instant::now());
        // Our own status write comes back as an update: no change, stays parked.
        q.add(info("web", 0), false, Instant::now());
        assert_eq!(q.unschedulable_len(), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        q.add(info("web", 0), true, Instant::now());
        assert_eq!(q.active_len(), 1);
        q.remove("web-uid");
        assert!(q.pop().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_priority_change_reorders_active_pods() {
        let mut q = Queue::default();
        q.add(info("a", 0), false, Instant::now());
        q.add(info("b", 0), false, Instant::now());
        q.add(info("b", 5), true, Instant::now());
        assert_eq!(names(&mut q), ["b", "a"]);
    }
}
