//! The thin async part: watches feed the [`Snapshot`] and the [`Queue`]; the loop pops pods,
//! asks the [`Decider`], assumes each decision in the snapshot at once, and hands the writes
//! (bindings, `PodScheduled=False` status patches) to a bounded set of tasks, so no decision
//! ever waits on the network.
//!
//! Everything that changes state on an event or a result is a plain method of [`State`]; the
//! loop in [`run`] only moves events in and writes out.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use berth_controller_manager::events::{Kind, Recorder};
use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::decide::Decider;
use crate::info::PodInfo;
use crate::queue::{Queue, Queued};
use crate::snapshot::Snapshot;
use crate::{Config, Error, Result};

/// Decisions made per turn of the loop before events are looked at again.
const BATCH: usize = 128;
/// Events taken per turn once one is ready.
const EVENT_BATCH: usize = 512;

/// A write to the API server that a decision asks for.
#[derive(Debug, Clone)]
pub enum Write {
    /// Bind the pod to the node.
    Bind { pod: Arc<PodInfo>, node: String },
    /// Set `PodScheduled=False`, reason Unschedulable, with this message.
    Unschedulable { pod: Arc<PodInfo>, message: String },
}

/// What one write came to.
#[derive(Debug)]
pub struct Done {
    pub uid: String,
    pub bind: Option<String>,
    pub result: Result<(), kube::Error>,
}

/// The scheduler's state between events: the snapshot, the queue, the decider, and the
/// bindings in flight.
#[derive(Debug)]
pub struct State {
    pub cfg: Config,
    pub snap: Snapshot,
    pub queue: Queue,
    pub decider: Decider,
    /// Pods whose binding is in flight: not to be queued again meanwhile.
    binding: HashMap<String, Queued>,
    nodes_synced: bool,
    pods_synced: bool,
    relist_nodes: Option<HashSet<String>>,
    relist_pods: Option<HashSet<String>>,
}

impl State {
    pub fn new(cfg: Config) -> State {
        State {
            snap: Snapshot::new(),
            queue: Queue::new(cfg.queue),
            decider: Decider::new(cfg.percentage_of_nodes_to_score),
            binding: HashMap::new(),
            nodes_synced: false,
            pods_synced: false,
            relist_nodes: None,
            relist_pods: None,
            cfg,
        }
    }

    /// Both initial lists are in: decisions may start.
    pub fn synced(&self) -> bool {
        self.nodes_synced && self.pods_synced
    }

    pub fn bindings_in_flight(&self) -> usize {
        self.binding.len()
    }

    pub fn on_node(&mut self, ev: watcher::Event<Node>, now: Instant) {
        match ev {
            watcher::Event::Init => self.relist_nodes = Some(HashSet::new()),
            watcher::Event::InitApply(n) | watcher::Event::Apply(n) => {
                if let Some(seen) = &mut self.relist_nodes {
                    seen.insert(n.metadata.name.clone().unwrap_or_default());
                }
                if self.snap.upsert_node(&n) {
                    self.queue.move_all(now);
                }
            }
            watcher::Event::Delete(n) => {
                self.snap
                    .remove_node(n.metadata.name.as_deref().unwrap_or_default());
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.relist_nodes.take() {
                    let gone: Vec<String> = self
                        .snap
                        .nodes
                        .iter()
                        .filter(|n| n.live && !seen.contains(&n.name))
                        .map(|n| n.name.clone())
                        .collect();
                    for name in gone {
                        self.snap.remove_node(&name);
                    }
                }
                self.nodes_synced = true;
            }
        }
    }

    pub fn on_pod(&mut self, ev: watcher::Event<Pod>, now: Instant) {
        match ev {
            watcher::Event::Init => self.relist_pods = Some(HashSet::new()),
            watcher::Event::InitApply(p) | watcher::Event::Apply(p) => {
                let info = PodInfo::from_pod(&p);
                if let Some(seen) = &mut self.relist_pods {
                    seen.insert(info.uid.clone());
                }
                self.apply_pod(info, now);
            }
            watcher::Event::Delete(p) => {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                self.delete_pod(&uid, now);
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.relist_pods.take() {
                    let gone: Vec<String> = self
                        .snap
                        .placed_pods()
                        .map(|(p, _)| p.uid.clone())
                        .chain(self.queue.uids())
                        .filter(|u| !seen.contains(u) && !self.binding.contains_key(u))
                        .collect();
                    for uid in gone {
                        self.delete_pod(&uid, now);
                    }
                }
                self.pods_synced = true;
            }
        }
    }

    fn delete_pod(&mut self, uid: &str, now: Instant) {
        self.queue.remove(uid);
        if self.snap.placed(uid).is_some() {
            self.snap.remove_pod(uid);
            // Room was freed: parked pods get another try.
            self.queue.move_all(now);
        }
    }

    fn apply_pod(&mut self, info: PodInfo, now: Instant) {
        let uid = info.uid.clone();
        if info.terminal {
            return self.delete_pod(&uid, now);
        }
        if let Some(node) = &info.node_name {
            self.queue.remove(&uid);
            let same = self.snap.pod(&uid).is_some_and(|old| {
                old.node_name.as_deref() == Some(node.as_str())
                    && old.generation == info.generation
                    && old.labels == info.labels
                    && old.terminating == info.terminating
            });
            let confirmed = self.snap.placed(&uid).is_some_and(|(_, assumed)| !assumed);
            if !(same && confirmed) {
                self.snap.add_pod(Arc::new(info));
            }
            return;
        }
        // Bound by us but not yet seen bound: an older version, or the binding in flight.
        if self.binding.contains_key(&uid) || self.snap.placed(&uid).is_some() {
            return;
        }
        if !info.wants_scheduling(&self.cfg.scheduler_name) {
            self.queue.remove(&uid);
            return;
        }
        let changed = self
            .queue
            .get(&uid)
            .is_some_and(|old| old.generation != info.generation || old.labels != info.labels);
        self.queue.add(Arc::new(info), changed, now);
    }

    /// Decides the next pod in the queue, if any. A pod placed is assumed on its node at once
    /// and counted as binding until [`State::on_done`].
    pub fn schedule_one(&mut self, now: Instant) -> Option<Outcome> {
        let q = self.queue.pop()?;
        let info = q.info.clone();
        self.snap.ensure_groups(&info);
        match self.decider.decide(&info, &self.snap) {
            Ok(i) => {
                let node = self.snap.nodes[i].name.clone();
                tracing::debug!(pod = %info.key(), %node, "assumed");
                self.snap.assume(info.clone(), i);
                self.binding.insert(info.uid.clone(), q);
                Some(Outcome::Assumed { pod: info, node })
            }
            Err(u) => {
                let message = u.to_string();
                tracing::debug!(pod = %info.key(), %message, "unschedulable");
                self.queue.unschedulable(q, now);
                let write_status = info.unschedulable_message.as_deref() != Some(&message);
                Some(Outcome::Unschedulable {
                    pod: info,
                    message,
                    write_status,
                })
            }
        }
    }

    /// A write finished. A failed binding is forgotten from the snapshot and the pod retried
    /// after its back-off (unless it is gone or bound already); returns the event to record.
    pub fn on_done(&mut self, done: Done, now: Instant) -> Option<Event> {
        let node = done.bind?;
        let q = self.binding.remove(&done.uid)?;
        match done.result {
            Ok(()) => Some(Event {
                message: format!("Successfully assigned {} to {node}", q.info.key()),
                pod: q.info,
                kind: Kind::Normal,
                reason: "Scheduled",
            }),
            Err(e) => {
                tracing::warn!(pod = %q.info.key(), %node, error = %e, "binding failed");
                if self
                    .snap
                    .placed(&done.uid)
                    .is_some_and(|(_, assumed)| !assumed)
                {
                    // The watch shows it bound after all (the reply was lost, or someone
                    // else bound it): nothing to retry.
                    return None;
                }
                self.snap.forget(&done.uid);
                self.queue.move_all(now);
                let code = match &e {
                    kube::Error::Api(s) => s.code,
                    _ => 0,
                };
                let event = Event {
                    message: format!("Binding rejected: {e}"),
                    pod: q.info.clone(),
                    kind: Kind::Warning,
                    reason: "FailedScheduling",
                };
                // 404: deleted; 409: bound already or being deleted (the watch tells which).
                if code != 404 && code != 409 {
                    self.queue.backoff(q, now);
                }
                Some(event)
            }
        }
    }
}

/// What one decision came to.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Assumed on `node`: bind it.
    Assumed { pod: Arc<PodInfo>, node: String },
    /// Fits nowhere. `write_status`: the pod's condition does not say so yet.
    Unschedulable {
        pod: Arc<PodInfo>,
        message: String,
        write_status: bool,
    },
}

/// An event to record about a pod.
#[derive(Debug, Clone)]
pub struct Event {
    pub pod: Arc<PodInfo>,
    pub kind: Kind,
    pub reason: &'static str,
    pub message: String,
}

fn reference(pod: &PodInfo) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(pod.name.clone()),
        namespace: Some(pod.namespace.clone()),
        uid: Some(pod.uid.clone()),
        resource_version: pod.resource_version.clone(),
        field_path: None,
    }
}

async fn write(client: kube::Client, w: Write) -> Done {
    match w {
        Write::Bind { pod, node } => {
            let api: Api<Pod> = Api::namespaced(client, &pod.namespace);
            let binding = Binding {
                metadata: ObjectMeta {
                    name: Some(pod.name.clone()),
                    namespace: Some(pod.namespace.clone()),
                    uid: Some(pod.uid.clone()),
                    ..Default::default()
                },
                target: ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Node".into()),
                    name: Some(node.clone()),
                    ..Default::default()
                },
            };
            let result = api
                .create_subresource::<_, serde_json::Value>(
                    "binding",
                    &pod.name,
                    &PostParams::default(),
                    &binding,
                )
                .await
                .map(|_| ());
            Done {
                uid: pod.uid.clone(),
                bind: Some(node),
                result,
            }
        }
        Write::Unschedulable { pod, message } => {
            let api: Api<Pod> = Api::namespaced(client, &pod.namespace);
            let patch = serde_json::json!({"status": {"conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastProbeTime": null,
                "lastTransitionTime": Time(Timestamp::now()),
            }]}});
            let result = api
                .patch_status(
                    &pod.name,
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await
                .map(|_| ());
            if let Err(e) = &result {
                tracing::debug!(pod = %pod.key(), error = %e, "writing PodScheduled failed");
            }
            Done {
                uid: pod.uid.clone(),
                bind: None,
                result,
            }
        }
    }
}

/// Writes in flight, at most `max` at once; the rest wait their turn in order.
struct Writer {
    client: kube::Client,
    max: usize,
    running: JoinSet<Done>,
    waiting: VecDeque<Write>,
}

impl Writer {
    fn push(&mut self, w: Write) {
        if self.running.len() < self.max {
            self.running.spawn(write(self.client.clone(), w));
        } else {
            self.waiting.push_back(w);
        }
    }

    fn refill(&mut self) {
        while self.running.len() < self.max {
            let Some(w) = self.waiting.pop_front() else {
                break;
            };
            self.running.spawn(write(self.client.clone(), w));
        }
    }
}

/// Schedules pods until the future is dropped (leader election drops it when leadership is
/// lost). Every call starts from nothing: fresh watches, snapshot and queue.
pub async fn run(client: kube::Client, cfg: Config) -> Result<()> {
    let recorder = Recorder::start(client.clone(), &cfg.scheduler_name, None);
    let nodes =
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()).default_backoff();
    let pods =
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()).default_backoff();
    futures::pin_mut!(nodes);
    futures::pin_mut!(pods);
    let mut writer = Writer {
        client: client.clone(),
        max: cfg.max_writes_in_flight.max(1),
        running: JoinSet::new(),
        waiting: VecDeque::new(),
    };
    let mut st = State::new(cfg);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let record = |e: Event| recorder.object(reference(&e.pod), e.kind, e.reason, e.message);
    tracing::info!(scheduler = %st.cfg.scheduler_name, "scheduler starting");
    loop {
        let work = st.synced() && st.queue.has_active();
        tokio::select! {
            biased;
            ev = nodes.next() => {
                let mut ev = ev;
                for _ in 0..EVENT_BATCH {
                    match ev {
                        Some(Ok(e)) => st.on_node(e, Instant::now()),
                        Some(Err(e)) => tracing::warn!(error = %e, "node watch failed; retrying"),
                        None => return Err(Error::WatchEnded("node")),
                    }
                    match nodes.next().now_or_never() {
                        Some(next) => ev = next,
                        None => break,
                    }
                }
            }
            ev = pods.next() => {
                let mut ev = ev;
                for _ in 0..EVENT_BATCH {
                    match ev {
                        Some(Ok(e)) => st.on_pod(e, Instant::now()),
                        Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                        None => return Err(Error::WatchEnded("pod")),
                    }
                    match pods.next().now_or_never() {
                        Some(next) => ev = next,
                        None => break,
                    }
                }
            }
            Some(done) = writer.running.join_next(), if !writer.running.is_empty() => {
                match done {
                    Ok(done) => {
                        if let Some(e) = st.on_done(done, Instant::now()) {
                            record(e);
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "a write task failed"),
                }
                writer.refill();
            }
            _ = tick.tick() => st.queue.flush(Instant::now()),
            _ = std::future::ready(()), if work => {
                let now = Instant::now();
                for _ in 0..BATCH {
                    let Some(outcome) = st.schedule_one(now) else { break };
                    match outcome {
                        Outcome::Assumed { pod, node } => writer.push(Write::Bind { pod, node }),
                        Outcome::Unschedulable { pod, message, write_status } => {
                            record(Event {
                                pod: pod.clone(),
                                kind: Kind::Warning,
                                reason: "FailedScheduling",
                                message: message.clone(),
                            });
                            if write_status {
                                writer.push(Write::Unschedulable { pod, message });
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod};
    use kube::core::Status;

    fn state() -> State {
        let mut st = State::new(Config::default());
        let now = Instant::now();
        st.on_node(watcher::Event::Init, now);
        st.on_node(watcher::Event::InitApply(node("n1").cpu("1").build()), now);
        st.on_node(watcher::Event::InitDone, now);
        st
    }

    fn synced(mut st: State) -> State {
        st.on_pod(watcher::Event::Init, Instant::now());
        st.on_pod(watcher::Event::InitDone, Instant::now());
        st
    }

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Status::failure("nope", "Reason").with_code(code).boxed())
    }

    fn bound(o: Option<Outcome>) -> (String, String) {
        match o {
            Some(Outcome::Assumed { pod, node }) => (pod.name.clone(), node),
            other => panic!("not assumed: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_decided_before_both_lists_are_in() {
        let mut st = state();
        st.on_pod(watcher::Event::Init, Instant::now());
        st.on_pod(
            watcher::Event::InitApply(pod("web").build()),
            Instant::now(),
        );
        assert!(!st.synced());
        st.on_pod(watcher::Event::InitDone, Instant::now());
        assert!(st.synced());
        assert_eq!(
            bound(st.schedule_one(Instant::now())),
            ("web".into(), "n1".into())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_being_bound_is_not_queued_again_and_is_confirmed_by_the_watch() {
        let mut st = synced(state());
        let now = Instant::now();
        st.on_pod(
            watcher::Event::Apply(pod("web").requests("600m", "").build()),
            now,
        );
        bound(st.schedule_one(now));
        // An older version (still unbound) arrives while the binding is in flight.
        st.on_pod(
            watcher::Event::Apply(pod("web").requests("600m", "").build()),
            now,
        );
        assert!(st.queue.is_empty());
        assert_eq!(st.bindings_in_flight(), 1);
        let e = st
            .on_done(
                Done {
                    uid: "web-uid".into(),
                    bind: Some("n1".into()),
                    result: Ok(()),
                },
                now,
            )
            .unwrap();
        assert_eq!(e.reason, "Scheduled");
        assert_eq!(e.message, "Successfully assigned default/web to n1");
        // Bound, not yet seen bound: still assumed, still not queued.
        st.on_pod(
            watcher::Event::Apply(pod("web").requests("600m", "").build()),
            now,
        );
        assert!(st.queue.is_empty());
        assert_eq!(st.snap.placed("web-uid"), Some(("n1", true)));
        st.on_pod(
            watcher::Event::Apply(pod("web").requests("600m", "").on_node("n1").build()),
            now,
        );
        assert_eq!(st.snap.placed("web-uid"), Some(("n1", false)));
        assert_eq!(st.snap.node("n1").unwrap().req_cpu, 600);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_binding_is_forgotten_and_retried_after_its_back_off() {
        let mut st = synced(state());
        let now = Instant::now();
        st.on_pod(
            watcher::Event::Apply(pod("web").requests("600m", "").build()),
            now,
        );
        bound(st.schedule_one(now));
        let e = st.on_done(
            Done {
                uid: "web-uid".into(),
                bind: Some("n1".into()),
                result: Err(api_error(500)),
            },
            now,
        );
        assert_eq!(e.unwrap().reason, "FailedScheduling");
        assert_eq!(st.snap.placed("web-uid"), None);
        assert_eq!(st.snap.node("n1").unwrap().req_cpu, 0);
        assert_eq!(st.queue.backoff_len(), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        st.queue.flush(Instant::now());
        bound(st.schedule_one(Instant::now()));
        // A conflict (bound elsewhere meanwhile, or being deleted) is not retried.
        st.on_done(
            Done {
                uid: "web-uid".into(),
                bind: Some("n1".into()),
                result: Err(api_error(409)),
            },
            Instant::now(),
        );
        assert!(st.queue.is_empty());
        assert_eq!(st.snap.placed("web-uid"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unschedulable_pod_is_reported_once_and_retried_when_a_node_arrives() {
        let mut st = synced(state());
        let now = Instant::now();
        st.on_pod(
            watcher::Event::Apply(pod("big").requests("2", "").build()),
            now,
        );
        let Some(Outcome::Unschedulable {
            message,
            write_status,
            ..
        }) = st.schedule_one(now)
        else {
            panic!("expected unschedulable");
        };
        assert!(write_status);
        assert_eq!(
            message,
            "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: \
             1 No preemption victims found for incoming pod."
        );
        // Our status write comes back through the watch: the pod stays parked.
        let mut p = pod("big").requests("2", "").build();
        p.status = Some(
            serde_json::from_value(serde_json::json!({"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": message}]}))
            .unwrap(),
        );
        st.on_pod(watcher::Event::Apply(p), now);
        assert_eq!(st.queue.unschedulable_len(), 1);
        // A node update that changes nothing the scheduler looks at does not move it.
        st.on_node(watcher::Event::Apply(node("n1").cpu("1").build()), now);
        assert_eq!(st.queue.unschedulable_len(), 1);
        // A relevant change (a new label) retries it; same message: no second status write.
        tokio::time::advance(Duration::from_secs(2)).await;
        st.on_node(
            watcher::Event::Apply(node("n1").cpu("1").label("zone", "a").build()),
            Instant::now(),
        );
        let Some(Outcome::Unschedulable { write_status, .. }) = st.schedule_one(Instant::now())
        else {
            panic!("expected unschedulable");
        };
        assert!(!write_status);
        // A node that fits: placed.
        tokio::time::advance(Duration::from_secs(2)).await;
        st.on_node(
            watcher::Event::Apply(node("n3").cpu("4").build()),
            Instant::now(),
        );
        assert_eq!(
            bound(st.schedule_one(Instant::now())),
            ("big".into(), "n3".into())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deletions_free_room_and_relists_drop_what_is_gone() {
        let mut st = synced(state());
        let now = Instant::now();
        st.on_pod(
            watcher::Event::Apply(pod("old").requests("800m", "").on_node("n1").build()),
            now,
        );
        st.on_pod(
            watcher::Event::Apply(pod("new").requests("800m", "").build()),
            now,
        );
        assert!(matches!(
            st.schedule_one(now),
            Some(Outcome::Unschedulable { .. })
        ));
        tokio::time::advance(Duration::from_secs(2)).await;
        st.on_pod(
            watcher::Event::Delete(pod("old").on_node("n1").build()),
            Instant::now(),
        );
        assert_eq!(
            bound(st.schedule_one(Instant::now())),
            ("new".into(), "n1".into())
        );
        // A relist that no longer has a pod or a node drops them (the binding in flight stays).
        st.on_pod(
            watcher::Event::Apply(pod("other").on_node("n1").build()),
            Instant::now(),
        );
        st.on_pod(watcher::Event::Init, Instant::now());
        st.on_pod(watcher::Event::InitDone, Instant::now());
        assert_eq!(st.snap.placed("other-uid"), None);
        assert_eq!(st.snap.placed("new-uid"), Some(("n1", true)));
        st.on_node(watcher::Event::Init, Instant::now());
        st.on_node(watcher::Event::InitDone, Instant::now());
        assert_eq!(st.snap.live_nodes(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn pods_not_ours_or_finished_are_left_alone() {
        let mut st = synced(state());
        let now = Instant::now();
        st.on_pod(
            watcher::Event::Apply(pod("theirs").scheduler("other").build()),
            now,
        );
        let mut done = pod("done").on_node("n1").requests("900m", "").build();
        done.status =
            Some(serde_json::from_value(serde_json::json!({"phase": "Succeeded"})).unwrap());
        st.on_pod(watcher::Event::Apply(done), now);
        assert!(st.queue.is_empty());
        assert_eq!(st.snap.node("n1").unwrap().req_cpu, 0);
    }
}
