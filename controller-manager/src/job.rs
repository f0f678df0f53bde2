//! The Job controller: runs pods until `completions` succeed (or, without `completions`, until
//! one succeeds and the rest finish), at most `parallelism` at once; retries failures with an
//! exponential delay until `backoffLimit` is passed; fails the Job after
//! `activeDeadlineSeconds`; honours `suspend`; and deletes a finished Job
//! `ttlSecondsAfterFinished` after it finished (with its pods, in the foreground).
//!
//! Failures count failed pods, plus container restarts under `restartPolicy: OnFailure`, as
//! Kubernetes counts them. [`plan`] decides; [`reconcile`] applies.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use serde_json::json;

use crate::events::Kind;
use crate::pods::{self, controller_ref, is_active};
use crate::runtime::{self, Action, Informer, Key, Queue, Synced};
use crate::{podcontrol, Ctx, Error, Result};

/// What one pass wants.
#[derive(Debug, Default)]
pub struct Plan {
    pub create: usize,
    pub delete: Vec<Arc<Pod>>,
    pub status: JobStatus,
    /// Delete the Job itself (its TTL after finishing ran out).
    pub delete_job: bool,
    pub events: Vec<(Kind, &'static str, String)>,
    pub requeue: Option<Duration>,
}

fn condition_true(s: Option<&JobStatus>, type_: &str) -> bool {
    s.and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

fn finished_at(s: Option<&JobStatus>) -> Option<Timestamp> {
    let s = s?;
    s.completion_time.as_ref().map(|t| t.0).or_else(|| {
        s.conditions
            .iter()
            .flatten()
            .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0)
    })
}

fn last_failure(pods: &[Arc<Pod>]) -> Option<Timestamp> {
    pods.iter()
        .filter(|p| pods::phase(p) == "Failed")
        .filter_map(|p| {
            p.status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .iter()
                .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
                .map(|t| t.0)
                .max()
                .or_else(|| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
        })
        .max()
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::from_millis((at.as_millisecond() - now.as_millisecond()).max(0) as u64)
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(jiff::SignedDuration::try_from(d).unwrap_or_default())
        .unwrap_or(t)
}

fn soonest(a: Option<Duration>, b: Duration) -> Option<Duration> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// Decides for `job` over the pods it owns. `trust_counts` is false while earlier creates or
/// deletes are not in the cache yet; `backoff` is the first retry delay.
pub fn plan(
    job: &Job,
    owned: &[Arc<Pod>],
    trust_counts: bool,
    now: Timestamp,
    backoff: Duration,
) -> Plan {
    let mut plan = Plan::default();
    let spec = job.spec.clone().unwrap_or_default();
    let old = job.status.clone().unwrap_or_default();
    let active: Vec<Arc<Pod>> = owned.iter().filter(|p| is_active(p)).cloned().collect();
    let succeeded = owned
        .iter()
        .filter(|p| pods::phase(p) == "Succeeded")
        .count() as i32;
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    let restarts: i32 = if on_failure {
        active
            .iter()
            .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
            .flatten()
            .map(|c| c.restart_count)
            .sum()
    } else {
        0
    };
    let failed_pods = owned.iter().filter(|p| pods::phase(p) == "Failed").count() as i32;
    let failed = failed_pods.max(old.failed.unwrap_or(0));
    let ready = active.iter().filter(|p| pods::is_ready(p)).count() as i32;
    let mut status = JobStatus {
        active: Some(active.len() as i32),
        succeeded: Some(succeeded.max(old.succeeded.unwrap_or(0))),
        failed: Some(failed),
        ready: Some(ready),
        start_time: old.start_time.clone(),
        completion_time: old.completion_time.clone(),
        conditions: old.conditions.clone(),
        ..Default::default()
    };
    let now_t = Time(now);
    let finished = condition_true(Some(&old), "Complete") || condition_true(Some(&old), "Failed");
    let suspended = spec.suspend.unwrap_or(false);
    if status.start_time.is_none() && !suspended {
        status.start_time = Some(now_t.clone());
    }

    if finished {
        // Leftover pods go; then the TTL.
        plan.delete = active;
        if let (Some(ttl), Some(at)) = (spec.ttl_seconds_after_finished, finished_at(Some(&old))) {
            let due = add(at, Duration::from_secs(ttl.max(0) as u64));
            if due <= now {
                plan.delete_job = true;
            } else {
                plan.requeue = Some(until(now, due));
            }
        }
        plan.status = status;
        return plan;
    }

    let mut fail = |status: &mut JobStatus, reason: &'static str, message: &str| {
        let c = status.conditions.get_or_insert_with(Vec::new);
        for t in ["FailureTarget", "Failed"] {
            c.push(JobCondition {
                type_: t.into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(message.into()),
                last_probe_time: Some(now_t.clone()),
                last_transition_time: Some(now_t.clone()),
            });
        }
        plan.events
            .push((Kind::Warning, reason, message.to_string()));
    };
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    if failed + restarts > backoff_limit {
        fail(
            &mut status,
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        );
        plan.delete = active;
        plan.status = status;
        return plan;
    }
    if let (Some(ads), Some(start)) = (spec.active_deadline_seconds, status.start_time.clone()) {
        let due = add(start.0, Duration::from_secs(ads.max(0) as u64));
        if due <= now && !suspended {
            fail(
                &mut status,
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            );
            plan.delete = active;
            plan.status = status;
            return plan;
        }
        plan.requeue = soonest(plan.requeue, until(now, due));
    }

    let parallelism = spec.parallelism.unwrap_or(1).max(0) as usize;
    let complete = match spec.completions {
        Some(c) => succeeded >= c,
        None => succeeded > 0 && active.is_empty(),
    };
    if complete {
        let c = status.conditions.get_or_insert_with(Vec::new);
        for t in ["SuccessCriteriaMet", "Complete"] {
            c.push(JobCondition {
                type_: t.into(),
                status: "True".into(),
                last_probe_time: Some(now_t.clone()),
                last_transition_time: Some(now_t.clone()),
                ..Default::default()
            });
        }
        status.completion_time = Some(now_t.clone());
        plan.events
            .push((Kind::Normal, "Completed", "Job completed".to_string()));
        if let Some(ttl) = spec.ttl_seconds_after_finished {
            plan.requeue = Some(Duration::from_secs(ttl.max(0) as u64));
        }
        plan.status = status;
        return plan;
    }

    let want = if suspended {
        0
    } else {
        match spec.completions {
            Some(c) => parallelism.min((c - succeeded).max(0) as usize),
            None if succeeded > 0 => 0,
            None => parallelism,
        }
    };
    if trust_counts {
        if active.len() > want {
            let mut victims = active.clone();
            victims.sort_by(|a, b| pods::deletion_order(a, b));
            plan.delete = victims[..active.len() - want].to_vec();
        } else if active.len() < want {
            // After failures, new pods wait 10 s, 20 s, 40 s... (at most 6 minutes).
            let wait = if failed > 0 {
                let factor = 1u32 << (failed - 1).clamp(0, 16) as u32;
                (backoff * factor).min(Duration::from_secs(360))
            } else {
                Duration::ZERO
            };
            let due = last_failure(owned).map_or(now, |t| add(t, wait));
            if due <= now {
                plan.create = want - active.len();
            } else {
                plan.requeue = soonest(plan.requeue, until(now, due));
            }
        }
    }
    if suspended && !condition_true(Some(&old), "Suspended") {
        status
            .conditions
            .get_or_insert_with(Vec::new)
            .push(JobCondition {
                type_: "Suspended".into(),
                status: "True".into(),
                reason: Some("JobSuspended".into()),
                message: Some("Job suspended".into()),
                last_probe_time: Some(now_t.clone()),
                last_transition_time: Some(now_t),
            });
    }
    plan.status = status;
    plan
}

fn status_changed(old: Option<&JobStatus>, new: &JobStatus) -> bool {
    let Some(old) = old else { return true };
    let z = |v: Option<i32>| v.unwrap_or(0);
    z(old.active) != z(new.active)
        || z(old.succeeded) != z(new.succeeded)
        || z(old.failed) != z(new.failed)
        || z(old.ready) != z(new.ready)
        || old.start_time != new.start_time
        || old.completion_time != new.completion_time
        || old.conditions.as_ref().map_or(0, |c| c.len())
            != new.conditions.as_ref().map_or(0, |c| c.len())
}

/// One pass over one Job.
pub async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action> {
    let key = Key::of(job.as_ref());
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let owned: Vec<Arc<Pod>> = ctx
        .pods
        .owned_by(&uid)
        .into_iter()
        .filter(|p| runtime::controller_uid(p.as_ref()) == Some(uid.as_str()))
        .collect();
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::AwaitChange);
    }
    let trust = ctx.expectations.satisfied(&uid);
    let plan = plan(
        &job,
        &owned,
        trust,
        Timestamp::now(),
        ctx.config.job_backoff,
    );
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &key.namespace);
    if plan.delete_job {
        tracing::info!(job = %key, "deleting finished job: its TTL ran out");
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::foreground()
        };
        return match jobs.delete(&key.name, &dp).await {
            Ok(_) => Ok(Action::AwaitChange),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Action::AwaitChange),
            Err(e) => Err(Error::api("deleting finished job", &key, e)),
        };
    }
    if plan.create > 0 {
        let template = &job.spec.as_ref().expect("a job has a spec").template;
        let mut pod = pods::from_template(
            template,
            &key.namespace,
            &format!("{}-", key.name),
            controller_ref(job.as_ref()),
        );
        let labels = pod.metadata.labels.get_or_insert_with(Default::default);
        labels.insert("batch.kubernetes.io/job-name".into(), key.name.clone());
        labels.insert("job-name".into(), key.name.clone());
        labels.insert("batch.kubernetes.io/controller-uid".into(), uid.clone());
        labels.insert("controller-uid".into(), uid.clone());
        podcontrol::create(&ctx, job.as_ref(), vec![pod; plan.create]).await?;
    }
    if !plan.delete.is_empty() {
        podcontrol::delete(&ctx, job.as_ref(), &plan.delete).await?;
    }
    for (kind, reason, message) in &plan.events {
        ctx.events.object(
            crate::reference(job.as_ref()),
            *kind,
            reason,
            message.clone(),
        );
    }
    if status_changed(job.status.as_ref(), &plan.status) {
        match jobs
            .patch_status(
                &key.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": plan.status})),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::api("updating status of job", &key, e)),
        }
    }
    Ok(plan
        .requeue
        .map(|d| Action::Requeue(d + Duration::from_millis(20)))
        .unwrap_or(Action::AwaitChange))
}

/// Wires the controller: a Job is looked at when it or one of its pods changes.
pub fn register(
    ctx: &Arc<Ctx>,
    jobs: &Informer<Job>,
    pods: &Informer<Pod>,
) -> Vec<BoxFuture<'static, ()>> {
    let queue = Queue::new("job");
    jobs.on_change(runtime::enqueue_self(&queue));
    pods.on_change(runtime::enqueue_owner(&queue, "Job"));
    let synced: Vec<Arc<dyn Synced>> = vec![ctx.pods.clone()];
    vec![runtime::run(
        queue,
        ctx.jobs.clone(),
        synced,
        ctx.config.workers,
        ctx.clone(),
        reconcile,
    )
    .boxed()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::fixtures::*;
    use k8s_openapi::api::batch::v1::JobSpec;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodSpec, PodTemplateSpec,
    };
    use kube::api::ObjectMeta;

    fn job(completions: Option<i32>, parallelism: i32, backoff_limit: i32) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("j".into()),
                namespace: Some("default".into()),
                uid: Some("job-uid".into()),
                ..Default::default()
            },
            spec: Some(JobSpec {
                completions,
                parallelism: Some(parallelism),
                backoff_limit: Some(backoff_limit),
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        restart_policy: Some("Never".into()),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    fn failed_at(name: &str, secs: i64) -> Arc<Pod> {
        let mut p = pod(name).on("n").phase("Failed");
        p.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
            name: "main".into(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 1,
                    finished_at: Some(Time(at(secs))),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        Arc::new(p)
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    const B: Duration = Duration::from_secs(10);

    #[test]
    fn runs_parallelism_pods_until_completions_succeed() {
        let j = job(Some(5), 2, 6);
        let p = plan(&j, &[], true, at(0), B);
        assert_eq!(p.create, 2);
        let done = |n: &str| Arc::new(pod(n).on("n").phase("Succeeded"));
        let running = |n: &str| Arc::new(pod(n).on("n").running());
        // 4 succeeded, 1 running: nothing more to start.
        let pods = vec![done("a"), done("b"), done("c"), done("d"), running("e")];
        let p = plan(&j, &pods, true, at(0), B);
        assert_eq!(p.create, 0);
        assert_eq!(p.status.succeeded, Some(4));
        assert_eq!(p.status.active, Some(1));
        let pods = vec![done("a"), done("b"), done("c"), done("d"), done("e")];
        let p = plan(&j, &pods, true, at(0), B);
        assert!(condition_true(Some(&p.status), "Complete"));
        assert!(p.status.completion_time.is_some());
    }

    #[test]
    fn failures_are_retried_with_growing_delays_up_to_the_backoff_limit() {
        let j = job(Some(1), 1, 2);
        // One failure at t=100: the retry waits 10 s.
        let p = plan(&j, &[failed_at("a", 100)], true, at(105), B);
        assert_eq!(p.create, 0);
        assert_eq!(p.requeue, Some(Duration::from_secs(5)));
        let p = plan(&j, &[failed_at("a", 100)], true, at(110), B);
        assert_eq!(p.create, 1);
        // Two failures: 20 s after the last.
        let two = [failed_at("a", 100), failed_at("b", 200)];
        assert_eq!(plan(&j, &two, true, at(219), B).create, 0);
        assert_eq!(plan(&j, &two, true, at(220), B).create, 1);
        // A third failure passes backoffLimit 2: the job fails.
        let three = [
            failed_at("a", 100),
            failed_at("b", 200),
            failed_at("c", 300),
        ];
        let p = plan(&j, &three, true, at(300), B);
        assert_eq!(p.create, 0);
        assert!(condition_true(Some(&p.status), "Failed"));
        assert_eq!(p.status.failed, Some(3));
        assert_eq!(p.events[0].1, "BackoffLimitExceeded");
    }

    #[test]
    fn the_active_deadline_fails_the_job_and_stops_its_pods() {
        let mut j = job(Some(1), 1, 6);
        j.spec.as_mut().unwrap().active_deadline_seconds = Some(30);
        j.status = Some(JobStatus {
            start_time: Some(Time(at(0))),
            ..Default::default()
        });
        let running = vec![Arc::new(pod("a").on("n").running())];
        let p = plan(&j, &running, true, at(10), B);
        assert_eq!(p.requeue, Some(Duration::from_secs(20)));
        let p = plan(&j, &running, true, at(30), B);
        assert!(condition_true(Some(&p.status), "Failed"));
        assert_eq!(p.delete.len(), 1);
    }

    #[test]
    fn a_finished_job_is_deleted_after_its_ttl() {
        let mut j = job(Some(1), 1, 6);
        j.spec.as_mut().unwrap().ttl_seconds_after_finished = Some(60);
        j.status = Some(JobStatus {
            completion_time: Some(Time(at(100))),
            conditions: Some(vec![JobCondition {
                type_: "Complete".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let p = plan(&j, &[], true, at(130), B);
        assert!(!p.delete_job);
        assert_eq!(p.requeue, Some(Duration::from_secs(30)));
        assert!(plan(&j, &[], true, at(160), B).delete_job);
    }

    #[test]
    fn a_suspended_job_stops_its_pods_and_starts_none() {
        let mut j = job(Some(3), 2, 6);
        j.spec.as_mut().unwrap().suspend = Some(true);
        let running = vec![Arc::new(pod("a").on("n").running())];
        let p = plan(&j, &running, true, at(0), B);
        assert_eq!(p.create, 0);
        assert_eq!(p.delete.len(), 1);
        assert!(condition_true(Some(&p.status), "Suspended"));
    }
}
