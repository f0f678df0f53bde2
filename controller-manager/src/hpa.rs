//! The horizontal pod autoscaler (`autoscaling/v2`, CPU utilisation targets): every
//! `sync_period` it reads the target's `scale` subresource, the CPU usage of its pods from
//! `metrics.k8s.io` (which the API server builds from the node agents' summaries), and
//! scales by Kubernetes' rule:
//!
//! - utilisation = usage / requests over the pods that have metrics;
//! - desired = ceil(current pods * utilisation / target), unchanged within a 10% tolerance;
//! - scale-up is limited per 15 s to the larger of doubling and +4 pods;
//! - scale-down is stabilised: the highest recommendation of the last
//!   `downscale_stabilization` (5 minutes) wins, so a dip does not shrink the workload;
//! - the result is kept within `minReplicas..=maxReplicas`.
//!
//! Recommendations live in memory, as in Kubernetes: a restarted controller starts a new
//! window. [`recommend`] and [`stabilize`] decide purely; [`reconcile`] reads and writes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use jiff::Timestamp;
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus,
    MetricStatus, MetricValueStatus, ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use crate::events::Kind;
use crate::pods;
use crate::runtime::{self, Action, Informer, Key, Queue, Synced};
use crate::{Ctx, Error, Result};

/// Within this ratio of the target, nothing changes.
pub const TOLERANCE: f64 = 0.1;

/// One pod as the autoscaler sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Summed CPU requests of its containers, in millicores.
    pub request_milli: i64,
    /// Measured CPU usage, in millicores; `None` when no metrics came.
    pub usage_milli: Option<i64>,
    pub ready: bool,
}

/// The replica count the metrics ask for, and the utilisation they show (percent), by
/// Kubernetes' rule: the ratio comes from ready pods with metrics; then, conservatively,
/// on a scale-up the pods not ready yet or without metrics count as using nothing, and on a
/// scale-down those without metrics count as using all they requested. If that flips the
/// direction or lands within the tolerance, nothing changes.
pub fn recommend(current: i32, samples: &[Sample], target_utilization: i32) -> Option<(i32, i32)> {
    let with_requests: Vec<&Sample> = samples.iter().filter(|s| s.request_milli > 0).collect();
    let measured: Vec<&Sample> = with_requests
        .iter()
        .copied()
        .filter(|s| s.ready && s.usage_milli.is_some())
        .collect();
    if measured.is_empty() || target_utilization <= 0 {
        return None;
    }
    let target = f64::from(target_utilization);
    let usage: i64 = measured.iter().filter_map(|s| s.usage_milli).sum();
    let requests: i64 = measured.iter().map(|s| s.request_milli).sum();
    let utilization = usage as f64 * 100.0 / requests as f64;
    let shown = utilization.round() as i32;
    let ratio = utilization / target;
    if (ratio - 1.0).abs() <= TOLERANCE {
        return Some((current, shown));
    }
    let others: Vec<&Sample> = with_requests
        .iter()
        .copied()
        .filter(|s| !(s.ready && s.usage_milli.is_some()))
        .collect();
    if others.is_empty() {
        return Some(((ratio * measured.len() as f64).ceil() as i32, shown));
    }
    let (mut u, mut r) = (usage, requests);
    for o in &others {
        r += o.request_milli;
        if ratio < 1.0 && o.usage_milli.is_none() {
            u += o.request_milli;
        } else if ratio < 1.0 {
            u += o.usage_milli.unwrap_or(0);
        }
    }
    let new_ratio = u as f64 * 100.0 / r as f64 / target;
    if (new_ratio - 1.0).abs() <= TOLERANCE || (ratio > 1.0) != (new_ratio > 1.0) {
        return Some((current, shown));
    }
    let desired = (new_ratio * (measured.len() + others.len()) as f64).ceil() as i32;
    Some((desired, shown))
}

/// Applies the scale-up limit and the scale-down stabilisation window to `desired`, given
/// the recent recommendations (newest last) and the bounds.
pub fn stabilize(
    history: &VecDeque<(Instant, i32)>,
    now: Instant,
    current: i32,
    desired: i32,
    window: Duration,
    (min, max): (i32, i32),
) -> i32 {
    let mut out = desired;
    if desired < current {
        // The highest recommendation within the window.
        let highest = history
            .iter()
            .filter(|(t, _)| now.duration_since(*t) <= window)
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(desired);
        out = highest.max(desired).min(current);
    } else if desired > current {
        let limit = (current * 2).max(current + 4);
        out = desired.min(limit);
    }
    out.clamp(min.max(1), max.max(1))
}

/// Recent recommendations per autoscaler.
#[derive(Debug, Default)]
pub struct Recommendations {
    by_hpa: Mutex<HashMap<String, VecDeque<(Instant, i32)>>>,
}

impl Recommendations {
    fn record(&self, uid: &str, rec: i32, keep: Duration) -> VecDeque<(Instant, i32)> {
        let mut all = self.by_hpa.lock().expect("recommendations lock");
        let h = all.entry(uid.to_string()).or_default();
        let now = Instant::now();
        h.push_back((now, rec));
        while h
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > keep)
        {
            h.pop_front();
        }
        h.clone()
    }
}

/// Where CPU usage comes from: `metrics.k8s.io`, or a fake in tests.
pub trait Metrics: Send + Sync {
    /// Millicores used by each pod of `namespace` matching `selector`, by pod name.
    fn pod_cpu<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a str,
    ) -> BoxFuture<'a, kube::Result<HashMap<String, i64>>>;
}

#[derive(Deserialize)]
struct PodMetricsList {
    items: Vec<PodMetrics>,
}

#[derive(Deserialize)]
struct PodMetrics {
    metadata: kube::api::ObjectMeta,
    containers: Vec<ContainerMetrics>,
}

#[derive(Deserialize)]
struct ContainerMetrics {
    usage: HashMap<String, String>,
}

/// `metrics.k8s.io/v1beta1`, as served by Berth's API server.
pub struct MetricsApi(pub kube::Client);

impl Metrics for MetricsApi {
    fn pod_cpu<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a str,
    ) -> BoxFuture<'a, kube::Result<HashMap<String, i64>>> {
        async move {
            let q: String = form_urlencoded_pair("labelSelector", selector);
            let req = http::Request::get(format!(
                "/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods?{q}"
            ))
            .body(Vec::new())
            .map_err(kube::Error::HttpError)?;
            let list: PodMetricsList = self.0.request(req).await?;
            Ok(list
                .items
                .into_iter()
                .map(|p| {
                    let milli = p
                        .containers
                        .iter()
                        .filter_map(|c| c.usage.get("cpu"))
                        .filter_map(|q| berth_api::quantity::Quantity::parse(q).ok())
                        .map(|q| q.milli_value() as i64)
                        .sum();
                    (p.metadata.name.unwrap_or_default(), milli)
                })
                .collect())
        }
        .boxed()
    }
}

fn form_urlencoded_pair(k: &str, v: &str) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    format!("{}={}", enc(k), enc(v))
}

/// The `autoscaling/v1` Scale of a target, as far as the autoscaler needs it.
#[derive(Deserialize)]
struct Scale {
    spec: ScaleSpec,
    status: ScaleStatus,
}

#[derive(Deserialize, Default)]
struct ScaleSpec {
    #[serde(default)]
    replicas: i32,
}

#[derive(Deserialize, Default)]
struct ScaleStatus {
    #[serde(default)]
    selector: String,
}

fn scale_path(hpa: &HorizontalPodAutoscaler, ns: &str) -> Option<String> {
    let t = &hpa.spec.as_ref()?.scale_target_ref;
    let info = berth_api::registry::by_kind(&t.kind)?;
    let prefix = if info.group.is_empty() {
        format!("/api/{}", info.version)
    } else {
        format!("/apis/{}/{}", info.group, info.version)
    };
    Some(format!(
        "{prefix}/namespaces/{ns}/{}/{}/scale",
        info.plural, t.name
    ))
}

fn cpu_target(hpa: &HorizontalPodAutoscaler) -> Option<i32> {
    hpa.spec
        .as_ref()?
        .metrics
        .iter()
        .flatten()
        .filter_map(|m| m.resource.as_ref())
        .find(|r| r.name == "cpu")
        .and_then(|r| r.target.average_utilization)
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
) -> HorizontalPodAutoscalerCondition {
    HorizontalPodAutoscalerCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(Time(Timestamp::now())),
    }
}

/// One pass over one autoscaler.
pub async fn reconcile(hpa: Arc<HorizontalPodAutoscaler>, ctx: Arc<Ctx>) -> Result<Action> {
    let key = Key::of(hpa.as_ref());
    let period = ctx.config.hpa_sync_period;
    let Some(path) = scale_path(&hpa, &key.namespace) else {
        return Ok(Action::Requeue(period));
    };
    let spec = hpa.spec.clone().unwrap_or_default();
    let req = http::Request::get(&path)
        .body(Vec::new())
        .map_err(|e| Error::api("reading scale of", &key, kube::Error::HttpError(e)))?;
    let scale: Scale = match ctx.client.request(req).await {
        Ok(s) => s,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            write_status(
                &ctx,
                &key,
                &hpa,
                0,
                0,
                None,
                vec![condition(
                    "AbleToScale",
                    false,
                    "FailedGetScale",
                    format!("the HPA controller was unable to get the target's current scale: {} not found", spec.scale_target_ref.name),
                )],
                false,
            )
            .await?;
            return Ok(Action::Requeue(period));
        }
        Err(e) => return Err(Error::api("reading scale of", &key, e)),
    };
    let current = scale.spec.replicas;
    let (min, max) = (spec.min_replicas.unwrap_or(1), spec.max_replicas);
    let Some(target) = cpu_target(&hpa) else {
        return Ok(Action::Requeue(period));
    };
    // The target's pods, by its selector, that are running and not being deleted.
    let selector = berth_api::labels::Selector::parse(&scale.status.selector).ok();
    let owned: Vec<Arc<Pod>> = ctx
        .pods
        .in_namespace(&key.namespace)
        .into_iter()
        .filter(|p| pods::is_active(p))
        .filter(|p| {
            selector
                .as_ref()
                .is_some_and(|s| s.matches(&p.metadata.labels.clone().unwrap_or_default()))
        })
        .collect();
    let usage = ctx
        .metrics
        .pod_cpu(&key.namespace, &scale.status.selector)
        .await
        .unwrap_or_else(|e| {
            tracing::debug!(hpa = %key, error = %e, "no pod metrics");
            HashMap::new()
        });
    let samples: Vec<Sample> = owned
        .iter()
        .map(|p| Sample {
            request_milli: cpu_requests(p),
            usage_milli: usage
                .get(p.metadata.name.as_deref().unwrap_or_default())
                .copied(),
            ready: pods::is_ready(p),
        })
        .collect();
    let Some((raw, utilization)) = recommend(current, &samples, target) else {
        write_status(
            &ctx,
            &key,
            &hpa,
            current,
            current,
            None,
            vec![
                condition("AbleToScale", true, "SucceededGetScale", "the HPA controller was able to get the target's current scale".into()),
                condition("ScalingActive", false, "FailedGetResourceMetric", "the HPA was unable to compute the replica count: no CPU metrics (or requests) for the target's pods".into()),
            ],
            false,
        )
        .await?;
        return Ok(Action::Requeue(period));
    };
    let uid = hpa.metadata.uid.clone().unwrap_or_default();
    let window = ctx.config.hpa_downscale_stabilization;
    let history = ctx
        .recommendations
        .record(&uid, raw.clamp(min, max.max(min)), window);
    let desired = if current == 0 {
        // Scaling to zero is the user's: leave it.
        0
    } else {
        stabilize(&history, Instant::now(), current, raw, window, (min, max))
    };
    let scaled = desired != current;
    if scaled {
        let patch = json!({"spec": {"replicas": desired}});
        let req = http::Request::patch(&path)
            .header("Content-Type", "application/merge-patch+json")
            .body(serde_json::to_vec(&patch).unwrap_or_default())
            .map_err(|e| Error::api("scaling", &key, kube::Error::HttpError(e)))?;
        ctx.client
            .request::<serde_json::Value>(req)
            .await
            .map_err(|e| Error::api("scaling target of", &key, e))?;
        ctx.events.object(
            crate::reference(hpa.as_ref()),
            Kind::Normal,
            "SuccessfulRescale",
            format!(
                "New size: {desired}; reason: cpu resource utilization (percentage of request) {} target",
                if desired > current { "above" } else { "below" }
            ),
        );
        tracing::info!(hpa = %key, current, desired, utilization, target, "rescaled");
    }
    let limited = desired != raw.clamp(min, max);
    write_status(
        &ctx,
        &key,
        &hpa,
        current,
        desired,
        Some(utilization),
        vec![
            condition("AbleToScale", true, "SucceededRescale", "the HPA controller was able to update the target scale".into()),
            condition("ScalingActive", true, "ValidMetricFound", "the HPA was able to successfully calculate a replica count from cpu resource utilization (percentage of request)".into()),
            condition(
                "ScalingLimited",
                limited,
                if limited { "ScaleDownStabilized" } else { "DesiredWithinRange" },
                if limited { "recent recommendations were higher than current one, applying the highest recent recommendation or a rate limit".into() } else { "the desired count is within the acceptable range".into() },
            ),
        ],
        scaled,
    )
    .await?;
    Ok(Action::Requeue(period))
}

fn cpu_requests(p: &Pod) -> i64 {
    p.spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .filter_map(|c| c.resources.as_ref()?.requests.as_ref()?.get("cpu"))
                .filter_map(|q| berth_api::quantity::Quantity::parse(&q.0).ok())
                .map(|q| q.milli_value() as i64)
                .sum()
        })
        .unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
async fn write_status(
    ctx: &Ctx,
    key: &Key,
    hpa: &HorizontalPodAutoscaler,
    current: i32,
    desired: i32,
    utilization: Option<i32>,
    mut conditions: Vec<HorizontalPodAutoscalerCondition>,
    scaled: bool,
) -> Result<()> {
    let old = hpa.status.clone().unwrap_or_default();
    // Keep transition times of conditions whose status did not change.
    for c in &mut conditions {
        if let Some(o) = old
            .conditions
            .iter()
            .flatten()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
        {
            c.last_transition_time = o.last_transition_time.clone();
        }
    }
    let status = HorizontalPodAutoscalerStatus {
        current_replicas: Some(current),
        desired_replicas: desired,
        observed_generation: hpa.metadata.generation,
        last_scale_time: if scaled {
            Some(Time(Timestamp::now()))
        } else {
            old.last_scale_time.clone()
        },
        current_metrics: utilization.map(|u| {
            vec![MetricStatus {
                type_: "Resource".into(),
                resource: Some(ResourceMetricStatus {
                    name: "cpu".into(),
                    current: MetricValueStatus {
                        average_utilization: Some(u),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]
        }),
        conditions: Some(conditions),
    };
    if hpa.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), &key.namespace);
    match api
        .patch_status(
            &key.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::api("updating status of autoscaler", key, e)),
    }
}

/// Wires the controller: each autoscaler every sync period, and when it changes.
pub fn register(
    ctx: &Arc<Ctx>,
    hpas: &Informer<HorizontalPodAutoscaler>,
) -> Vec<BoxFuture<'static, ()>> {
    let queue = Queue::new("horizontal-pod-autoscaler");
    // Its own status writes do not count as changes: it looks every sync period.
    {
        let q = queue.clone();
        hpas.on_change(move |c| {
            let spec_changed = match c {
                crate::runtime::Change::Applied { old: Some(o), new } => {
                    o.metadata.generation != new.metadata.generation
                }
                _ => true,
            };
            if spec_changed {
                q.add(Key::of(c.object()));
            }
        });
    }
    let synced: Vec<Arc<dyn Synced>> = vec![ctx.pods.clone()];
    vec![runtime::run(
        queue,
        ctx.hpas.clone(),
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

    fn s(req: i64, usage: Option<i64>) -> Sample {
        Sample {
            request_milli: req,
            usage_milli: usage,
            ready: true,
        }
    }

    #[test]
    fn pods_not_ready_or_unmeasured_are_counted_conservatively() {
        let unready = Sample {
            request_milli: 100,
            usage_milli: Some(100),
            ready: false,
        };
        // 2 ready at 100% (target 50%) and 2 starting: as if 4 pods at 50%: no change.
        assert_eq!(
            recommend(
                4,
                &[s(100, Some(100)), s(100, Some(100)), unready, unready],
                50
            ),
            Some((4, 100))
        );
        // 2 ready at 150% and 2 starting: 4 at 75%: 6.
        assert_eq!(
            recommend(
                4,
                &[s(100, Some(150)), s(100, Some(150)), unready, unready],
                50
            ),
            Some((6, 150))
        );
        // Scale-down with a pod without metrics: it counts as fully used.
        assert_eq!(
            recommend(2, &[s(100, Some(10)), s(100, None)], 50),
            Some((2, 10)),
            "(10 + 100) / 200 = 55%: within the tolerance"
        );
    }

    #[test]
    fn recommends_by_utilization_with_a_tolerance() {
        // 2 pods at 100% of a 50% target: 4.
        assert_eq!(
            recommend(2, &[s(100, Some(100)), s(100, Some(100))], 50),
            Some((4, 100))
        );
        // 54% against 50%: within 10%, unchanged.
        assert_eq!(
            recommend(3, &[s(100, Some(54)), s(100, Some(54))], 50),
            Some((3, 54))
        );
        // 10% of a 50% target over 4 pods: 1.
        assert_eq!(recommend(4, &[s(100, Some(10)); 4], 50), Some((1, 10)));
        // None measured: no recommendation.
        assert_eq!(recommend(2, &[s(100, None)], 50), None);
        assert_eq!(recommend(2, &[s(0, Some(5))], 50), None);
    }

    #[tokio::test(start_paused = true)]
    async fn scale_down_waits_out_the_stabilization_window() {
        let window = Duration::from_secs(300);
        let mut h = VecDeque::new();
        let t0 = Instant::now();
        h.push_back((t0, 8));
        tokio::time::advance(Duration::from_secs(60)).await;
        h.push_back((Instant::now(), 2));
        // 8 was recommended a minute ago: stay at 8.
        assert_eq!(stabilize(&h, Instant::now(), 8, 2, window, (1, 10)), 8);
        tokio::time::advance(Duration::from_secs(241)).await;
        h.push_back((Instant::now(), 2));
        // The 8 left the window: down to 2.
        assert_eq!(stabilize(&h, Instant::now(), 8, 2, window, (1, 10)), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn scale_up_is_rate_limited_and_bounded() {
        let h = VecDeque::new();
        let now = Instant::now();
        assert_eq!(stabilize(&h, now, 2, 20, Duration::ZERO, (1, 50)), 6);
        assert_eq!(stabilize(&h, now, 10, 50, Duration::ZERO, (1, 50)), 20);
        assert_eq!(stabilize(&h, now, 10, 50, Duration::ZERO, (1, 15)), 15);
        assert_eq!(stabilize(&h, now, 3, 1, Duration::ZERO, (2, 15)), 2);
    }
}
