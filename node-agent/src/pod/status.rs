//! A pod's status, computed purely from the pod, what the runtime holds and the plan: the
//! phase, the conditions, and one `containerStatuses` entry per container with its state,
//! last state, restart count and readiness.

use std::collections::BTreeMap;

use berth_runtime::pod::{ContainerState as RtState, ContainerStatus as RtStatus};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::plan::{self, Observed, Plan, ProbeState};

/// What the status needs besides the pod, the runtime and the plan.
#[derive(Debug, Clone, Copy)]
pub struct StatusCtx<'a> {
    pub now: Timestamp,
    pub host_ip: &'a str,
    pub pod_ips: &'a [String],
    pub probes: &'a BTreeMap<String, ProbeState>,
}

/// The containerID as Kubernetes shows it: `<runtime>://<id>`.
pub fn container_id(id: &str) -> String {
    format!("berth://{id}")
}

fn time(s: Option<&str>) -> Option<Time> {
    s.and_then(|s| s.parse().ok()).map(Time)
}

fn terminated(c: &RtStatus) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: c.exit_code.unwrap_or(0),
        reason: c.reason.clone(),
        started_at: time(c.started_at.as_deref()),
        finished_at: time(c.finished_at.as_deref()),
        container_id: Some(container_id(&c.id)),
        ..Default::default()
    }
}

fn waiting(reason: &str, message: Option<&str>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: message.map(str::to_string),
        }),
        ..Default::default()
    }
}

fn container_status(
    spec: &k8s_openapi::api::core::v1::Container,
    obs: &Observed,
    plan: &Plan,
    ctx: &StatusCtx<'_>,
    blocked_reason: &str,
) -> ContainerStatus {
    let latest = obs.latest(&spec.name);
    let previous = obs.previous(&spec.name);
    let probe = latest.and_then(|l| ctx.probes.get(&l.id)).copied();
    let mut status = ContainerStatus {
        name: spec.name.clone(),
        image: spec.image.clone().unwrap_or_default(),
        image_id: latest.map(|l| l.image_id.clone()).unwrap_or_default(),
        container_id: latest.map(|l| container_id(&l.id)),
        restart_count: latest.map_or(0, |l| l.attempt as i32),
        ready: false,
        started: Some(false),
        ..Default::default()
    };
    let held = plan.waiting.get(&spec.name);
    match latest {
        None => {
            status.state = Some(match held {
                Some(w) => waiting(&w.reason, Some(&w.message)),
                None => waiting(blocked_reason, None),
            });
        }
        Some(l) => match l.state {
            RtState::Running => {
                // Probes not yet started: what they begin with.
                let p = probe.unwrap_or(ProbeState {
                    ready: spec.readiness_probe.is_none(),
                    started: spec.startup_probe.is_none(),
                    failed: None,
                });
                status.state = Some(ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: time(l.started_at.as_deref()),
                    }),
                    ..Default::default()
                });
                status.started = Some(p.started);
                status.ready = p.started && p.ready;
                status.last_state = previous.map(|p| ContainerState {
                    terminated: Some(terminated(p)),
                    ..Default::default()
                });
            }
            RtState::Exited => match held {
                // Ended, waiting to be started again: the end is the last state.
                Some(w) => {
                    status.state = Some(waiting(&w.reason, Some(&w.message)));
                    status.last_state = Some(ContainerState {
                        terminated: Some(terminated(l)),
                        ..Default::default()
                    });
                }
                None => {
                    status.state = Some(ContainerState {
                        terminated: Some(terminated(l)),
                        ..Default::default()
                    });
                    status.last_state = previous.map(|p| ContainerState {
                        terminated: Some(terminated(p)),
                        ..Default::default()
                    });
                }
            },
            RtState::Created | RtState::Unknown => {
                status.state = Some(waiting("ContainerCreating", None));
            }
        },
    }
    status
}

/// The pod's phase (Kubernetes' `getPhase`).
fn phase(pod: &Pod, obs: &Observed, plan: &Plan, init_done: bool) -> &'static str {
    if let Some(done) = plan.finished {
        return done;
    }
    if !init_done {
        return "Pending";
    }
    let policy = plan::restart_policy(pod);
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in plan::containers(pod) {
        match obs.latest(&c.name).map(|l| l.state) {
            Some(RtState::Running) => running += 1,
            Some(RtState::Exited) => {
                stopped += 1;
                if obs.latest(&c.name).is_some_and(plan::exited_ok) {
                    succeeded += 1;
                }
            }
            _ => waiting += 1,
        }
    }
    if waiting > 0 && running == 0 && stopped == 0 {
        return "Pending";
    }
    if running > 0 || waiting > 0 {
        return "Running";
    }
    // Everything has stopped.
    match policy {
        "Always" => "Running",
        "OnFailure" if succeeded == stopped => "Succeeded",
        "OnFailure" => "Running",
        _ if succeeded == stopped => "Succeeded",
        _ => "Failed",
    }
}

/// The status to report for `pod`.
pub fn pod_status(pod: &Pod, obs: &Observed, plan: &Plan, ctx: StatusCtx<'_>) -> PodStatus {
    let old = pod.status.clone().unwrap_or_default();
    let init_done = plan::all_init_done(pod, obs, ctx.probes);
    let mut status = PodStatus {
        phase: Some(phase(pod, obs, plan, init_done).into()),
        host_ip: Some(ctx.host_ip.into()),
        host_ips: Some(vec![k8s_openapi::api::core::v1::HostIP {
            ip: ctx.host_ip.into(),
        }]),
        start_time: old.start_time.clone().or(Some(Time(ctx.now))),
        qos_class: old.qos_class.clone(),
        nominated_node_name: old.nominated_node_name.clone(),
        ..Default::default()
    };
    if let Some(ip) = ctx.pod_ips.first() {
        status.pod_ip = Some(ip.clone());
        status.pod_ips = Some(
            ctx.pod_ips
                .iter()
                .map(|ip| PodIP { ip: ip.clone() })
                .collect(),
        );
    }
    let inits: Vec<ContainerStatus> = plan::init_containers(pod)
        .iter()
        .map(|c| container_status(c, obs, plan, &ctx, "PodInitializing"))
        .collect();
    let members: Vec<ContainerStatus> = plan::containers(pod)
        .iter()
        .map(|c| {
            container_status(
                c,
                obs,
                plan,
                &ctx,
                if init_done {
                    "ContainerCreating"
                } else {
                    "PodInitializing"
                },
            )
        })
        .collect();
    let sandbox_ready = obs.sandbox.as_ref().is_some_and(|s| s.ready);
    let containers_ready = !members.is_empty()
        && members.iter().all(|c| c.ready)
        && inits
            .iter()
            .zip(plan::init_containers(pod))
            .filter(|(_, spec)| spec.restart_policy.as_deref() == Some("Always"))
            .all(|(c, _)| c.ready);
    let finished = plan.finished.is_some();
    let mut conditions = vec![
        ("PodReadyToStartContainers", sandbox_ready && !finished, ""),
        (
            "Initialized",
            init_done || finished,
            if init_done || finished {
                ""
            } else {
                "ContainersNotInitialized"
            },
        ),
        (
            "Ready",
            containers_ready && !finished,
            if finished {
                "PodCompleted"
            } else if containers_ready {
                ""
            } else {
                "ContainersNotReady"
            },
        ),
        (
            "ContainersReady",
            containers_ready && !finished,
            if finished {
                "PodCompleted"
            } else if containers_ready {
                ""
            } else {
                "ContainersNotReady"
            },
        ),
    ]
    .into_iter()
    .map(|(kind, ok, reason)| {
        let value = if ok { "True" } else { "False" };
        let old = old.conditions.iter().flatten().find(|c| c.type_ == kind);
        // The transition time moves only when the value does.
        let since = match old {
            Some(o) if o.status == value => o.last_transition_time.clone(),
            _ => Some(Time(ctx.now)),
        };
        let message = (!ok && reason == "ContainersNotReady").then(|| {
            let names: Vec<&str> = members
                .iter()
                .filter(|c| !c.ready)
                .map(|c| c.name.as_str())
                .collect();
            format!("containers with unready status: [{}]", names.join(" "))
        });
        PodCondition {
            type_: kind.into(),
            status: value.into(),
            reason: (!reason.is_empty()).then(|| reason.to_string()),
            message,
            last_transition_time: since,
            ..Default::default()
        }
    })
    .collect::<Vec<_>>();
    // The scheduler's condition is the scheduler's.
    if let Some(s) = old
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled")
    {
        conditions.insert(0, s.clone());
    } else {
        conditions.insert(
            0,
            PodCondition {
                type_: "PodScheduled".into(),
                status: "True".into(),
                last_transition_time: Some(Time(ctx.now)),
                ..Default::default()
            },
        );
    }
    status.conditions = Some(conditions);
    status.init_container_statuses = (!inits.is_empty()).then_some(inits);
    status.container_statuses = Some(members);
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::plan::{SandboxObs, Waiting};
    use crate::pod::testing::{ctr, pod};

    fn obs(containers: Vec<RtStatus>) -> Observed {
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

    fn status(
        p: &Pod,
        o: &Observed,
        plan: &Plan,
        probes: &BTreeMap<String, ProbeState>,
    ) -> PodStatus {
        pod_status(
            p,
            o,
            plan,
            StatusCtx {
                now: Timestamp::from_second(1_700_001_000).unwrap(),
                host_ip: "10.0.0.1",
                pod_ips: &["10.88.0.5".to_string()],
                probes,
            },
        )
    }

    fn condition(s: &PodStatus, kind: &str) -> String {
        s.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == kind)
            .map(|c| c.status.clone())
            .unwrap()
    }

    #[test]
    fn running_and_ready_with_ips_and_conditions() {
        let p = pod("web").container("app", "busybox").build();
        let s = status(
            &p,
            &obs(vec![ctr("app", 0).running()]),
            &Plan::default(),
            &BTreeMap::new(),
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.88.0.5"));
        assert_eq!(s.host_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(condition(&s, "Ready"), "True");
        assert_eq!(condition(&s, "Initialized"), "True");
        let c = &s.container_statuses.unwrap()[0];
        assert!(c.ready);
        assert_eq!(c.container_id.as_deref(), Some("berth://sb-app-0"));
        assert!(c.state.as_ref().unwrap().running.is_some());
    }

    #[test]
    fn a_crash_loop_shows_waiting_with_the_last_termination_and_restarts() {
        let p = pod("web").container("app", "busybox").build();
        let mut plan = Plan::default();
        plan.waiting.insert(
            "app".into(),
            Waiting {
                reason: "CrashLoopBackOff".into(),
                message: "back-off 10s".into(),
            },
        );
        let o = obs(vec![ctr("app", 1).exited(1), ctr("app", 2).exited(3)]);
        let s = status(&p, &o, &plan, &BTreeMap::new());
        let c = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(c.restart_count, 2);
        let w = c.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(w.reason.as_deref(), Some("CrashLoopBackOff"));
        let last = c.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
        assert_eq!(condition(&s, "Ready"), "False");
        assert_eq!(s.phase.as_deref(), Some("Running"));
    }

    #[test]
    fn readiness_probe_failure_makes_the_pod_unready_and_keeps_transition_times() {
        let p = pod("web").container("app", "busybox").build();
        let o = obs(vec![ctr("app", 0).running()]);
        let mut probes = BTreeMap::new();
        probes.insert(
            "sb-app-0".to_string(),
            ProbeState {
                ready: false,
                started: true,
                failed: None,
            },
        );
        let s = status(&p, &o, &Plan::default(), &probes);
        assert_eq!(condition(&s, "Ready"), "False");
        assert_eq!(condition(&s, "ContainersReady"), "False");
        let mut again = p.clone();
        again.status = Some(s.clone());
        let later = pod_status(
            &again,
            &o,
            &Plan::default(),
            StatusCtx {
                now: Timestamp::from_second(1_700_009_999).unwrap(),
                host_ip: "10.0.0.1",
                pod_ips: &[],
                probes: &probes,
            },
        );
        assert_eq!(
            later.conditions, s.conditions,
            "unchanged values keep their times"
        );
    }

    #[test]
    fn phases_follow_kubernetes() {
        let never = pod("job")
            .restart_policy("Never")
            .container("a", "busybox")
            .container("b", "busybox")
            .build();
        let empty = BTreeMap::new();
        let phase = |o: &Observed, plan: &Plan| status(&never, o, plan, &empty).phase.unwrap();
        assert_eq!(phase(&obs(vec![]), &Plan::default()), "Pending");
        assert_eq!(
            phase(&obs(vec![ctr("a", 0).running()]), &Plan::default()),
            "Running"
        );
        let done = Plan {
            finished: Some("Succeeded"),
            ..Plan::default()
        };
        let s = status(
            &never,
            &obs(vec![ctr("a", 0).exited(0), ctr("b", 0).exited(0)]),
            &done,
            &empty,
        );
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        assert_eq!(condition(&s, "Ready"), "False");
        let init = pod("web")
            .init_container("setup", "busybox")
            .container("app", "busybox")
            .build();
        let s = status(
            &init,
            &obs(vec![ctr("setup", 0).running()]),
            &Plan::default(),
            &empty,
        );
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(condition(&s, "Initialized"), "False");
        let w = s.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .waiting
            .unwrap();
        assert_eq!(w.reason.as_deref(), Some("PodInitializing"));
    }
}
