//! What a pod needs next, decided purely from the Pod, what the runtime holds for it, the
//! probe results and the back-off state (kubelet's `computePodActions`). The worker carries
//! the actions out and asks again; given the same inputs the answer is the same.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_runtime::pod::{ContainerState, ContainerStatus};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod};

use crate::backoff::Backoff;

/// The pod's sandbox as the runtime has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxObs {
    pub id: String,
    pub attempt: u32,
    /// The pause container runs (and the network is set up).
    pub ready: bool,
}

/// What the runtime holds for one pod.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The newest sandbox.
    pub sandbox: Option<SandboxObs>,
    /// Older sandboxes of the pod, to remove.
    pub stale_sandboxes: Vec<String>,
    /// Member containers of the newest sandbox, every attempt still on the node.
    pub containers: Vec<ContainerStatus>,
}

impl Observed {
    /// The newest attempt of container `name`.
    pub fn latest(&self, name: &str) -> Option<&ContainerStatus> {
        self.containers
            .iter()
            .filter(|c| c.name == name)
            .max_by_key(|c| c.attempt)
    }

    /// The attempt before the newest one (for `lastState` and `logs --previous`).
    pub fn previous(&self, name: &str) -> Option<&ContainerStatus> {
        let latest = self.latest(name)?;
        self.containers
            .iter()
            .filter(|c| c.name == name && c.attempt < latest.attempt)
            .max_by_key(|c| c.attempt)
    }

    pub fn anything_running(&self) -> bool {
        self.sandbox.as_ref().is_some_and(|s| s.ready)
            || self
                .containers
                .iter()
                .any(|c| matches!(c.state, ContainerState::Running | ContainerState::Created))
    }
}

/// Probe results of one running container (by container id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProbeState {
    /// The readiness probe passed last (true without a readiness probe).
    pub ready: bool,
    /// The startup probe has passed (true without a startup probe).
    pub started: bool,
    /// The liveness or startup probe has failed `failureThreshold` times in a row.
    pub failed: Option<ProbeFailure>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeFailure {
    Liveness,
    Startup,
}

/// Why a container cannot start yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
}

/// The inputs besides the pod and the runtime.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub now: Timestamp,
    pub backoff: &'a Backoff,
    /// By container id.
    pub probes: &'a BTreeMap<String, ProbeState>,
    /// Containers (by name) that could not be created, and until when to wait before trying
    /// again: image pull errors, missing ConfigMaps.
    pub failures: &'a BTreeMap<String, (Waiting, Option<Timestamp>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop every container and the pause container, and release the network. Containers
    /// stay on the node (for logs) until the pod goes.
    StopPod,
    /// Remove an old sandbox of the pod and everything in it.
    RemoveSandbox {
        id: String,
    },
    CreateSandbox {
        attempt: u32,
    },
    /// Create and start attempt `attempt` of a container. `restart` names the back-off key
    /// and how long the previous attempt ran, when this is a restart.
    StartContainer {
        name: String,
        init: bool,
        attempt: u32,
        restart: Option<Duration>,
    },
    KillContainer {
        id: String,
        name: String,
        message: String,
    },
    RemoveContainer {
        id: String,
    },
}

/// The worker's next steps for a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Containers held back, by name, with the reason shown in their status.
    pub waiting: BTreeMap<String, Waiting>,
    /// When to look again even if nothing happens (a back-off ends).
    pub wake_at: Option<Timestamp>,
    /// The pod has run to completion (`Succeeded` or `Failed`) under its restart policy.
    pub finished: Option<&'static str>,
}

impl Plan {
    fn wake(&mut self, at: Timestamp) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

pub fn init_containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
}

pub fn containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
}

/// The back-off key of a container of a pod.
pub fn backoff_key(pod: &Pod, name: &str) -> String {
    format!("{}/{name}", pod.metadata.uid.as_deref().unwrap_or_default())
}

fn parse_ts(s: Option<&str>) -> Option<Timestamp> {
    s.and_then(|s| s.parse().ok())
}

/// How long an ended container ran.
pub fn ran_for(c: &ContainerStatus) -> Duration {
    match (
        parse_ts(c.started_at.as_deref()),
        parse_ts(c.finished_at.as_deref()),
    ) {
        (Some(s), Some(f)) if f > s => {
            Duration::from_nanos(f.duration_since(s).as_nanos().max(0) as u64)
        }
        _ => Duration::ZERO,
    }
}

pub fn exited_ok(c: &ContainerStatus) -> bool {
    c.state == ContainerState::Exited && c.exit_code == Some(0)
}

/// A container's phase in the pod's life, for the status too.
pub fn all_init_done(pod: &Pod, obs: &Observed, probes: &BTreeMap<String, ProbeState>) -> bool {
    init_containers(pod).iter().all(|c| {
        let Some(latest) = obs.latest(&c.name) else {
            return false;
        };
        if is_sidecar(c) {
            // Started once is enough: it restarts on its own from then on.
            latest.state == ContainerState::Running
                && probes.get(&latest.id).is_none_or(|p| p.started)
                || latest.state == ContainerState::Exited
        } else {
            exited_ok(latest)
        }
    })
}

/// Decide the pod's next actions.
pub fn plan(pod: &Pod, obs: &Observed, ctx: Ctx<'_>) -> Plan {
    let mut plan = Plan::default();
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    for id in &obs.stale_sandboxes {
        plan.actions.push(Action::RemoveSandbox { id: id.clone() });
    }
    if deleting || phase == "Succeeded" || phase == "Failed" {
        if obs.anything_running() {
            plan.actions.push(Action::StopPod);
        }
        if !deleting {
            plan.finished = Some(if phase == "Succeeded" {
                "Succeeded"
            } else {
                "Failed"
            });
        }
        return plan;
    }
    let policy = restart_policy(pod);
    let sandbox = match &obs.sandbox {
        None => {
            plan.actions.push(Action::CreateSandbox { attempt: 0 });
            return plan;
        }
        Some(sb) if !sb.ready => {
            // The pause container died: the pod's namespaces are gone and every container
            // starts again in a new sandbox, as kubelet does. A pod that had finished its
            // work under a restart policy that forbids restarts stays finished.
            if let Some(done) = finished(pod, obs, policy) {
                plan.finished = Some(done);
                if obs.anything_running() {
                    plan.actions.push(Action::StopPod);
                }
                return plan;
            }
            plan.actions.push(Action::StopPod);
            plan.actions
                .push(Action::RemoveSandbox { id: sb.id.clone() });
            plan.actions.push(Action::CreateSandbox {
                attempt: sb.attempt + 1,
            });
            return plan;
        }
        Some(sb) => sb,
    };
    let _ = sandbox;

    gc_old_attempts(pod, obs, &mut plan);

    // Init containers, in order. Regular ones must each succeed before the next starts;
    // sidecars (restartPolicy Always) must have started.
    for c in init_containers(pod) {
        let sidecar = is_sidecar(c);
        match obs.latest(&c.name) {
            None => {
                start(pod, c, true, 0, None, &ctx, &mut plan);
                return plan;
            }
            Some(s) => match s.state {
                ContainerState::Running => {
                    if let Some(kill) = probe_kill(s, &ctx) {
                        plan.actions.push(kill);
                        return plan;
                    }
                    let started = ctx.probes.get(&s.id).is_none_or(|p| p.started);
                    if !(sidecar && started) {
                        return plan;
                    }
                }
                ContainerState::Exited => {
                    if sidecar {
                        let prev = s.clone();
                        start(pod, c, true, prev.attempt + 1, Some(&prev), &ctx, &mut plan);
                        // It has started before; later init containers need not wait.
                        continue;
                    }
                    if exited_ok(s) {
                        continue;
                    }
                    if policy == "Never" {
                        plan.finished = Some("Failed");
                        plan.actions.push(Action::StopPod);
                        return plan;
                    }
                    let prev = s.clone();
                    start(pod, c, true, prev.attempt + 1, Some(&prev), &ctx, &mut plan);
                    return plan;
                }
                ContainerState::Created | ContainerState::Unknown => {
                    // Made but never started (we were killed in between): make it again.
                    plan.actions
                        .push(Action::RemoveContainer { id: s.id.clone() });
                    start(pod, c, true, s.attempt, None, &ctx, &mut plan);
                    return plan;
                }
            },
        }
    }

    for c in containers(pod) {
        match obs.latest(&c.name) {
            None => start(pod, c, false, 0, None, &ctx, &mut plan),
            Some(s) => match s.state {
                ContainerState::Running => {
                    if let Some(kill) = probe_kill(s, &ctx) {
                        plan.actions.push(kill);
                    }
                }
                ContainerState::Exited => {
                    let restart = match policy {
                        "Never" => false,
                        "OnFailure" => !exited_ok(s),
                        _ => true,
                    };
                    if restart {
                        let prev = s.clone();
                        start(
                            pod,
                            c,
                            false,
                            prev.attempt + 1,
                            Some(&prev),
                            &ctx,
                            &mut plan,
                        );
                    }
                }
                ContainerState::Created | ContainerState::Unknown => {
                    plan.actions
                        .push(Action::RemoveContainer { id: s.id.clone() });
                    start(pod, c, false, s.attempt, None, &ctx, &mut plan);
                }
            },
        }
    }
    if let Some(done) = finished(pod, obs, policy) {
        plan.finished = Some(done);
        // Sidecars and the pause container have nothing left to serve.
        plan.actions
            .retain(|a| !matches!(a, Action::StartContainer { .. }));
        plan.waiting.clear();
        plan.wake_at = None;
        plan.actions.push(Action::StopPod);
    }
    plan
}

/// `Succeeded` or `Failed` once every regular container has ended for good under the
/// pod's restart policy.
pub fn finished(pod: &Pod, obs: &Observed, policy: &str) -> Option<&'static str> {
    if policy == "Always" {
        return None;
    }
    let mut failed = false;
    for c in containers(pod) {
        let s = obs.latest(&c.name)?;
        if s.state != ContainerState::Exited {
            return None;
        }
        if !exited_ok(s) {
            if policy == "OnFailure" {
                return None;
            }
            failed = true;
        }
    }
    Some(if failed { "Failed" } else { "Succeeded" })
}

fn probe_kill(s: &ContainerStatus, ctx: &Ctx<'_>) -> Option<Action> {
    let failure = ctx.probes.get(&s.id)?.failed?;
    let message = match failure {
        ProbeFailure::Liveness => "failed liveness probe, will be restarted",
        ProbeFailure::Startup => "failed startup probe, will be restarted",
    };
    Some(Action::KillContainer {
        id: s.id.clone(),
        name: s.name.clone(),
        message: format!("Container {} {message}", s.name),
    })
}

/// Start attempt `attempt` of `c` unless it must wait (back-off, an earlier failure).
fn start(
    pod: &Pod,
    c: &Container,
    init: bool,
    attempt: u32,
    prev: Option<&ContainerStatus>,
    ctx: &Ctx<'_>,
    plan: &mut Plan,
) {
    if let Some((waiting, until)) = ctx.failures.get(&c.name) {
        match until {
            Some(t) if *t > ctx.now => {
                plan.waiting.insert(c.name.clone(), waiting.clone());
                plan.wake(*t);
                return;
            }
            _ => {}
        }
    }
    let mut restart = None;
    if let Some(prev) = prev {
        let finished = parse_ts(prev.finished_at.as_deref()).unwrap_or(ctx.now);
        let ran = ran_for(prev);
        let key = backoff_key(pod, &c.name);
        if let Err(w) = ctx.backoff.check(&key, finished, ran, ctx.now) {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            let uid = pod.metadata.uid.as_deref().unwrap_or_default();
            plan.waiting.insert(
                c.name.clone(),
                Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: format!(
                        "back-off {} restarting failed container={} pod={name}_{ns}({uid})",
                        human(w.delay),
                        c.name
                    ),
                },
            );
            plan.wake(w.until);
            return;
        }
        restart = Some(ran);
    }
    plan.actions.push(Action::StartContainer {
        name: c.name.clone(),
        init,
        attempt,
        restart,
    });
}

/// Go's `time.Duration` style, as kubelet's messages print it: `10s`, `2m40s`, `5m0s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else if d.subsec_millis() != 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{s}s")
    }
}

/// Keep the newest two attempts of each container (the second for `logs --previous`).
fn gc_old_attempts(pod: &Pod, obs: &Observed, plan: &mut Plan) {
    let _ = pod;
    for c in &obs.containers {
        let Some(latest) = obs.latest(&c.name) else {
            continue;
        };
        if c.attempt + 1 < latest.attempt && c.state != ContainerState::Running {
            plan.actions
                .push(Action::RemoveContainer { id: c.id.clone() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::BackoffPolicy;
    use crate::pod::testing::{ctr, pod};

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    struct World {
        backoff: Backoff,
        probes: BTreeMap<String, ProbeState>,
        failures: BTreeMap<String, (Waiting, Option<Timestamp>)>,
        now: Timestamp,
    }

    impl World {
        fn new() -> Self {
            Self {
                backoff: Backoff::new(BackoffPolicy::default()),
                probes: BTreeMap::new(),
                failures: BTreeMap::new(),
                now: ts(1000),
            }
        }
        fn plan(&self, p: &Pod, obs: &Observed) -> Plan {
            plan(
                p,
                obs,
                Ctx {
                    now: self.now,
                    backoff: &self.backoff,
                    probes: &self.probes,
                    failures: &self.failures,
                },
            )
        }
    }

    fn with_sandbox(containers: Vec<ContainerStatus>) -> Observed {
        Observed {
            sandbox: Some(SandboxObs {
                id: "sb".into(),
                attempt: 0,
                ready: true,
            }),
            stale_sandboxes: vec![],
            containers,
        }
    }

    fn starts(plan: &Plan) -> Vec<(String, u32)> {
        plan.actions
            .iter()
            .filter_map(|a| match a {
                Action::StartContainer { name, attempt, .. } => Some((name.clone(), *attempt)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_new_pod_gets_a_sandbox_then_its_containers() {
        let w = World::new();
        let p = pod("web").container("app", "busybox").build();
        assert_eq!(
            w.plan(&p, &Observed::default()).actions,
            [Action::CreateSandbox { attempt: 0 }]
        );
        let plan = w.plan(&p, &with_sandbox(vec![]));
        assert_eq!(starts(&plan), [("app".to_string(), 0)]);
        let plan = w.plan(&p, &with_sandbox(vec![ctr("app", 0).running()]));
        assert!(plan.actions.is_empty(), "{plan:?}");
    }

    #[test]
    fn init_containers_run_one_at_a_time_before_the_members() {
        let w = World::new();
        let p = pod("web")
            .init_container("one", "busybox")
            .init_container("two", "busybox")
            .container("app", "busybox")
            .build();
        assert_eq!(
            starts(&w.plan(&p, &with_sandbox(vec![]))),
            [("one".into(), 0)]
        );
        let running = with_sandbox(vec![ctr("one", 0).running()]);
        assert!(w.plan(&p, &running).actions.is_empty());
        let one_done = with_sandbox(vec![ctr("one", 0).exited(0)]);
        assert_eq!(starts(&w.plan(&p, &one_done)), [("two".into(), 0)]);
        let both = with_sandbox(vec![ctr("one", 0).exited(0), ctr("two", 0).exited(0)]);
        assert_eq!(starts(&w.plan(&p, &both)), [("app".into(), 0)]);
    }

    #[test]
    fn a_failed_init_container_fails_a_never_pod_and_restarts_otherwise() {
        let w = World::new();
        let obs = with_sandbox(vec![ctr("one", 0).exited(1)]);
        let never = pod("web")
            .restart_policy("Never")
            .init_container("one", "busybox")
            .container("app", "busybox")
            .build();
        let plan = w.plan(&never, &obs);
        assert_eq!(plan.finished, Some("Failed"));
        assert!(starts(&plan).is_empty());
        let always = pod("web")
            .init_container("one", "busybox")
            .container("app", "busybox")
            .build();
        assert_eq!(starts(&w.plan(&always, &obs)), [("one".into(), 1)]);
    }

    #[test]
    fn a_sidecar_lets_the_next_container_start_once_started_and_keeps_restarting() {
        let mut w = World::new();
        let p = pod("web")
            .sidecar("proxy", "busybox")
            .container("app", "busybox")
            .build();
        let obs = with_sandbox(vec![ctr("proxy", 0).running()]);
        w.probes.insert(
            obs.containers[0].id.clone(),
            ProbeState {
                ready: false,
                started: false,
                failed: None,
            },
        );
        assert!(
            starts(&w.plan(&p, &obs)).is_empty(),
            "startup probe pending"
        );
        w.probes.clear();
        assert_eq!(starts(&w.plan(&p, &obs)), [("app".into(), 0)]);
        let obs = with_sandbox(vec![ctr("proxy", 0).exited(1), ctr("app", 0).running()]);
        assert_eq!(starts(&w.plan(&p, &obs)), [("proxy".into(), 1)]);
    }

    #[test]
    fn restart_policy_decides_what_restarts_and_when_the_pod_is_done() {
        let w = World::new();
        let ok = with_sandbox(vec![ctr("app", 0).exited(0)]);
        let bad = with_sandbox(vec![ctr("app", 0).exited(2)]);
        let p = |policy: &str| {
            pod("job")
                .restart_policy(policy)
                .container("app", "busybox")
                .build()
        };
        assert_eq!(starts(&w.plan(&p("Always"), &ok)), [("app".into(), 1)]);
        assert_eq!(w.plan(&p("Always"), &ok).finished, None);
        let plan = w.plan(&p("OnFailure"), &ok);
        assert_eq!((starts(&plan).len(), plan.finished), (0, Some("Succeeded")));
        assert!(plan.actions.contains(&Action::StopPod));
        assert_eq!(starts(&w.plan(&p("OnFailure"), &bad)), [("app".into(), 1)]);
        let plan = w.plan(&p("Never"), &bad);
        assert_eq!((starts(&plan).len(), plan.finished), (0, Some("Failed")));
    }

    #[test]
    fn crash_loops_wait_out_the_back_off() {
        let mut w = World::new();
        let p = pod("web").container("app", "busybox").build();
        let crashed = |attempt: u32, at: i64| {
            with_sandbox(vec![ctr("app", attempt)
                .started(at - 1)
                .finished(at)
                .exited(1)])
        };
        // The first restart is immediate.
        let plan = w.plan(&p, &crashed(0, 990));
        assert_eq!(starts(&plan), [("app".into(), 1)]);
        w.backoff
            .restarted(&backoff_key(&p, "app"), Duration::from_secs(1));
        // The second waits 10 s from the end of the first.
        let plan = w.plan(&p, &crashed(1, 995));
        assert!(starts(&plan).is_empty());
        assert_eq!(plan.waiting["app"].reason, "CrashLoopBackOff");
        assert!(plan.waiting["app"]
            .message
            .starts_with("back-off 10s restarting failed container=app pod=web_default("));
        assert_eq!(plan.wake_at, Some(ts(1005)));
        w.now = ts(1005);
        assert_eq!(starts(&w.plan(&p, &crashed(1, 995))), [("app".into(), 2)]);
    }

    #[test]
    fn failing_probes_kill_the_container_and_an_earlier_failure_holds_a_start() {
        let mut w = World::new();
        let p = pod("web").container("app", "busybox").build();
        let obs = with_sandbox(vec![ctr("app", 0).running()]);
        w.probes.insert(
            obs.containers[0].id.clone(),
            ProbeState {
                ready: true,
                started: true,
                failed: Some(ProbeFailure::Liveness),
            },
        );
        assert!(matches!(
            &w.plan(&p, &obs).actions[..],
            [Action::KillContainer { message, .. }] if message.contains("liveness")
        ));
        w.failures.insert(
            "app".into(),
            (
                Waiting {
                    reason: "ErrImageNeverPull".into(),
                    message: "not present".into(),
                },
                Some(ts(2000)),
            ),
        );
        let plan = w.plan(&p, &with_sandbox(vec![]));
        assert!(starts(&plan).is_empty());
        assert_eq!(plan.waiting["app"].reason, "ErrImageNeverPull");
        assert_eq!(plan.wake_at, Some(ts(2000)));
    }

    #[test]
    fn a_dead_sandbox_is_replaced_and_deletion_stops_everything() {
        let w = World::new();
        let p = pod("web").container("app", "busybox").build();
        let mut obs = with_sandbox(vec![ctr("app", 3).exited(137)]);
        obs.sandbox.as_mut().unwrap().ready = false;
        assert_eq!(
            w.plan(&p, &obs).actions,
            [
                Action::StopPod,
                Action::RemoveSandbox { id: "sb".into() },
                Action::CreateSandbox { attempt: 1 }
            ]
        );
        let deleting = pod("web").container("app", "busybox").deleting().build();
        let running = with_sandbox(vec![ctr("app", 0).running()]);
        assert_eq!(w.plan(&deleting, &running).actions, [Action::StopPod]);
        assert!(w.plan(&deleting, &Observed::default()).actions.is_empty());
    }

    #[test]
    fn only_the_newest_two_attempts_are_kept() {
        let w = World::new();
        let p = pod("web").container("app", "busybox").build();
        let obs = with_sandbox(vec![
            ctr("app", 0).exited(1),
            ctr("app", 1).exited(1),
            ctr("app", 2).running(),
        ]);
        assert_eq!(
            w.plan(&p, &obs).actions,
            [Action::RemoveContainer {
                id: obs.containers[0].id.clone()
            }]
        );
    }
}
