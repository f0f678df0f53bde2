//! The controller-manager against a real API server with simulated nodes (see `sim/`):
//! rollouts within their bounds, rollback, scaling, garbage collection, namespace deletion,
//! and a controller-manager killed again and again in the middle of a rollout.

mod sim;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use kube::Api;
use serde_json::json;
use sim::{Options, Sim};

fn deployment(
    name: &str,
    replicas: i32,
    image: &str,
    surge: i32,
    unavailable: i32,
) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image}]},
            },
        },
    })
}

fn image_of(p: &Pod) -> String {
    p.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until the deployment's rollout is complete with every pod on `image`.
async fn rolled_out(sim: &Sim, ns: &str, name: &str, replicas: usize, image: &str, secs: u64) {
    let deployments: Api<Deployment> = sim.api(ns);
    let pods = sim.pods(ns);
    sim.eventually(
        secs,
        &format!("{name} on {image} with {replicas} ready"),
        || async {
            let d = deployments.get(name).await.ok()?;
            let s = d.status.clone()?;
            let done = s.observed_generation >= d.metadata.generation
                && s.updated_replicas == Some(replicas as i32)
                && s.replicas == Some(replicas as i32)
                && s.available_replicas == Some(replicas as i32);
            if !done {
                return None;
            }
            let list = pods
                .list(&ListParams::default().labels(&format!("app={name}")))
                .await
                .ok()?;
            let live: Vec<&Pod> = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            (live.len() == replicas && live.iter().all(|p| image_of(p) == image && is_ready(p)))
                .then_some(())
        },
    )
    .await;
}

/// Watches the pods of `app` and records, after every event, the number of pods that are not
/// being deleted and how many of them are ready: the extremes a rollout reached.
struct Watch {
    seen: Arc<Mutex<(usize, usize, usize)>>, // (max pods, min ready, events)
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    fn start(sim: &Sim, ns: &str, app: &str) -> Watch {
        let api = sim.pods(ns);
        let seen = Arc::new(Mutex::new((0usize, usize::MAX, 0usize)));
        let s2 = seen.clone();
        let cfg = watcher::Config::default().labels(&format!("app={app}"));
        let task = tokio::spawn(async move {
            let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
            let mut stream = std::pin::pin!(watcher::watcher(api, cfg));
            let mut listing = false;
            while let Ok(Some(ev)) = stream.try_next().await {
                match ev {
                    watcher::Event::Init => {
                        listing = true;
                        pods.clear();
                    }
                    watcher::Event::InitApply(p) => {
                        pods.insert(p.metadata.name.clone().unwrap(), p);
                    }
                    watcher::Event::InitDone => listing = false,
                    watcher::Event::Apply(p) => {
                        pods.insert(p.metadata.name.clone().unwrap(), p);
                    }
                    watcher::Event::Delete(p) => {
                        pods.remove(p.metadata.name.as_deref().unwrap());
                    }
                }
                if listing {
                    continue;
                }
                let live: Vec<&Pod> = pods
                    .values()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .collect();
                let ready = live.iter().filter(|p| is_ready(p)).count();
                let mut s = s2.lock().unwrap();
                s.0 = s.0.max(live.len());
                s.1 = s.1.min(ready);
                s.2 += 1;
            }
        });
        Watch { seen, task }
    }

    fn stop(self) -> (usize, usize, usize) {
        self.task.abort();
        *self.seen.lock().unwrap()
    }
}

fn kubectl(sim: &Sim, args: &[&str]) -> String {
    let out = std::process::Command::new("kubectl")
        .arg(format!("--kubeconfig={}", sim.kubeconfig().display()))
        .arg(format!(
            "--cache-dir={}",
            sim.dir.path().join("kubectl-cache").display()
        ))
        .args(args)
        .output()
        .expect("running kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_stays_within_its_bounds_and_undo_scale_and_delete_work() {
    let sim = Sim::start(Options::default()).await;
    let ns = "default";
    sim.apply::<Deployment>(ns, deployment("web", 10, "web:1", 3, 2))
        .await;
    rolled_out(&sim, ns, "web", 10, "web:1", 60).await;

    // Roll to web:2, watching every step.
    let watch = Watch::start(&sim, ns, "web");
    tokio::time::sleep(Duration::from_millis(500)).await;
    sim.apply::<Deployment>(ns, deployment("web", 10, "web:2", 3, 2))
        .await;
    rolled_out(&sim, ns, "web", 10, "web:2", 90).await;
    let (max_pods, min_ready, events) = watch.stop();
    tracing::info!(max_pods, min_ready, events, "rollout extremes");
    assert!(events > 20, "the watch saw the rollout ({events} events)");
    assert!(
        max_pods <= 13,
        "never above replicas + maxSurge: saw {max_pods} pods"
    );
    assert!(
        min_ready >= 8,
        "never below replicas - maxUnavailable: saw {min_ready} ready"
    );

    // kubectl sees the rollout as done, and its history has both revisions.
    let status = kubectl(
        &sim,
        &["rollout", "status", "deployment/web", "--timeout=30s"],
    );
    assert!(status.contains("successfully rolled out"), "{status}");
    let history = kubectl(&sim, &["rollout", "history", "deployment/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");

    // Undo returns to web:1, reusing its ReplicaSet under revision 3.
    kubectl(&sim, &["rollout", "undo", "deployment/web"]);
    rolled_out(&sim, ns, "web", 10, "web:1", 90).await;
    let d: Deployment = sim.api::<Deployment>(ns).get("web").await.unwrap();
    assert_eq!(
        d.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"],
        "3"
    );
    let rss = sim
        .api::<ReplicaSet>(ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(rss.items.len(), 2, "undo reused the first ReplicaSet");

    // Scale up and down.
    kubectl(&sim, &["scale", "deployment/web", "--replicas=15"]);
    rolled_out(&sim, ns, "web", 15, "web:1", 60).await;
    kubectl(&sim, &["scale", "deployment/web", "--replicas=4"]);
    rolled_out(&sim, ns, "web", 4, "web:1", 60).await;

    // Deleting the deployment removes its ReplicaSets and pods.
    kubectl(&sim, &["delete", "deployment/web"]);
    sim.eventually(60, "ReplicaSets and pods gone", || async {
        let rs = sim
            .api::<ReplicaSet>(ns)
            .list(&ListParams::default())
            .await
            .ok()?;
        let pods = sim.pods(ns).list(&ListParams::default()).await.ok()?;
        (rs.items.is_empty() && pods.items.is_empty()).then_some(())
    })
    .await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn foreground_and_orphan_deletion_propagate_as_asked() {
    let sim = Sim::start(Options::default()).await;
    let ns = "default";
    let deployments: Api<Deployment> = sim.api(ns);

    // Foreground: the deployment stays until its ReplicaSet and pods are gone.
    sim.apply::<Deployment>(ns, deployment("fg", 3, "a", 1, 0))
        .await;
    rolled_out(&sim, ns, "fg", 3, "a", 60).await;
    deployments
        .delete("fg", &DeleteParams::foreground())
        .await
        .unwrap();
    let d = deployments.get("fg").await.expect("held by its finalizer");
    assert!(d
        .metadata
        .finalizers
        .unwrap_or_default()
        .contains(&"foregroundDeletion".to_string()));
    sim.eventually(60, "the foreground deletion to finish", || async {
        let gone = deployments.get_opt("fg").await.ok()?.is_none();
        let pods = sim
            .pods(ns)
            .list(&ListParams::default().labels("app=fg"))
            .await
            .ok()?;
        gone.then_some(()).filter(|_| pods.items.is_empty())
    })
    .await;

    // Orphan: the ReplicaSet and its pods stay, without the owner reference.
    sim.apply::<Deployment>(ns, deployment("or", 2, "a", 1, 0))
        .await;
    rolled_out(&sim, ns, "or", 2, "a", 60).await;
    deployments
        .delete("or", &DeleteParams::orphan())
        .await
        .unwrap();
    sim.eventually(60, "the orphaning deletion to finish", || async {
        deployments
            .get_opt("or")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let rss = sim
        .api::<ReplicaSet>(ns)
        .list(&ListParams::default().labels("app=or"))
        .await
        .unwrap();
    assert_eq!(rss.items.len(), 1);
    assert!(rss.items[0]
        .metadata
        .owner_references
        .as_ref()
        .is_none_or(|r| r.is_empty()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pods = sim
        .pods(ns)
        .list(&ListParams::default().labels("app=or"))
        .await
        .unwrap();
    assert_eq!(
        pods.items.len(),
        2,
        "the orphaned ReplicaSet keeps its pods"
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_namespace_empties_it() {
    let sim = Sim::start(Options::default()).await;
    let namespaces: Api<Namespace> = Api::all(sim.client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    sim.apply::<Deployment>("doomed", deployment("web", 4, "a", 1, 0))
        .await;
    rolled_out(&sim, "doomed", "web", 4, "a", 60).await;
    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    sim.eventually(60, "the namespace and its content to go", || async {
        let gone = namespaces.get_opt("doomed").await.ok()?.is_none();
        let pods = sim.pods("doomed").list(&ListParams::default()).await.ok()?;
        (gone && pods.items.is_empty()).then_some(())
    })
    .await;
    sim.stop().await;
}

/// The controller-manager killed at random points of rollouts, and started again: the end
/// state is the same as without the kills, with no duplicate and no orphan.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_controller_manager_killed_mid_rollout_converges() {
    use rand::Rng;
    let mut sim = Sim::start(Options::default()).await;
    let ns = "default";
    sim.apply::<Deployment>(ns, deployment("web", 10, "v0", 3, 2))
        .await;
    rolled_out(&sim, ns, "web", 10, "v0", 60).await;
    let mut rng = rand::thread_rng();
    let mut kills = 0;
    for round in 1..=4 {
        let image = format!("v{round}");
        sim.apply::<Deployment>(ns, deployment("web", 10, &image, 3, 2))
            .await;
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(50..900))).await;
            sim.kill_controller_manager();
            kills += 1;
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..500))).await;
            sim.start_controller_manager();
        }
        rolled_out(&sim, ns, "web", 10, &image, 120).await;
    }
    assert_eq!(kills, 12);
    // Nothing extra: exactly 10 pods, each owned by a ReplicaSet the deployment owns, and one
    // ReplicaSet with replicas.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d: Deployment = sim.api::<Deployment>(ns).get("web").await.unwrap();
    let d_uid = d.metadata.uid.clone().unwrap();
    let rss = sim
        .api::<ReplicaSet>(ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    for rs in &rss.items {
        let owner = rs.metadata.owner_references.as_ref().unwrap();
        assert_eq!(
            owner[0].uid, d_uid,
            "every ReplicaSet belongs to the deployment"
        );
    }
    let active: Vec<&ReplicaSet> = rss
        .items
        .iter()
        .filter(|r| r.spec.as_ref().unwrap().replicas.unwrap_or(0) > 0)
        .collect();
    assert_eq!(active.len(), 1);
    let rs_uids: Vec<String> = rss
        .items
        .iter()
        .map(|r| r.metadata.uid.clone().unwrap())
        .collect();
    let pods = sim.pods(ns).list(&ListParams::default()).await.unwrap();
    assert_eq!(pods.items.len(), 10, "no duplicate pods");
    for p in &pods.items {
        let owner = p
            .metadata
            .owner_references
            .as_ref()
            .expect("no orphan pods");
        assert!(rs_uids.contains(&owner[0].uid));
        assert_eq!(image_of(p), "v4");
    }
    sim.stop().await;
}

/// A node that stops renewing its Lease is marked unreachable and tainted, and its pods are
/// replaced on the other nodes once their toleration has run out, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_of_a_silent_node_are_replaced_after_their_toleration() {
    use k8s_openapi::api::core::v1::Node;
    let grace = Duration::from_secs(4);
    let toleration = Duration::from_secs(3);
    let mut opts = Options::default();
    opts.controllers.node_monitor_grace_period = grace;
    opts.controllers.node_monitor_period = Duration::from_millis(500);
    opts.controllers.default_unreachable_toleration = toleration;
    let sim = Sim::start(opts).await;
    let ns = "default";
    sim.apply::<Deployment>(ns, deployment("web", 6, "a", 1, 0))
        .await;
    rolled_out(&sim, ns, "web", 6, "a", 60).await;
    let on_node = |pods: &[Pod], n: &str| {
        pods.iter()
            .filter(|p| p.spec.as_ref().unwrap().node_name.as_deref() == Some(n))
            .count()
    };
    let before = sim
        .pods(ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(
        on_node(&before, "node-0") > 0,
        "the test needs pods on node-0"
    );

    let stopped = tokio::time::Instant::now();
    sim.stop_node("node-0");
    let nodes: Api<Node> = Api::all(sim.client.clone());
    let tainted_after = sim
        .eventually(30, "node-0 to be tainted unreachable", || async {
            let n = nodes.get("node-0").await.ok()?;
            let tainted = n
                .spec?
                .taints?
                .iter()
                .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute");
            let unknown = n
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "Unknown");
            (tainted && unknown).then(|| stopped.elapsed())
        })
        .await;
    let replaced_after = sim
        .eventually(60, "node-0's pods to be replaced elsewhere", || async {
            let pods = sim.pods(ns).list(&ListParams::default()).await.ok()?.items;
            let ready_elsewhere = pods
                .iter()
                .filter(|p| {
                    p.spec.as_ref().unwrap().node_name.as_deref() != Some("node-0") && is_ready(p)
                })
                .count();
            (on_node(&pods, "node-0") == 0 && ready_elsewhere == 6).then(|| stopped.elapsed())
        })
        .await;
    tracing::info!(?tainted_after, ?replaced_after, "silent node");
    // The last renewal came at most 2 s (the simulated renew period) before the stop.
    let renew = Duration::from_secs(2);
    assert!(
        tainted_after + renew >= grace,
        "tainted after {tainted_after:?}"
    );
    assert!(
        replaced_after + renew >= grace + toleration,
        "replaced after {replaced_after:?}, before grace + toleration"
    );
    sim.stop().await;
}

fn job(
    name: &str,
    exit: i32,
    completions: i32,
    parallelism: i32,
    backoff_limit: i32,
) -> serde_json::Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completions": completions, "parallelism": parallelism, "backoffLimit": backoff_limit,
            "ttlSecondsAfterFinished": if exit == 0 { json!(2) } else { json!(null) },
            "template": {
                "metadata": {"annotations": {sim::EXIT_CODE: exit.to_string()}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "job"}]},
            },
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_complete_retry_up_to_their_backoff_limit_and_expire() {
    use k8s_openapi::api::batch::v1::Job;
    let mut opts = Options::default();
    opts.controllers.job_backoff = Duration::from_millis(200);
    let sim = Sim::start(opts).await;
    let ns = "default";
    let jobs: Api<Job> = sim.api(ns);
    let condition = |j: &Job, t: &str| {
        j.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == t && c.status == "True"))
            .map(|c| c.reason.clone().unwrap_or_default())
    };

    // A failing job: one pod, then two retries, then Failed.
    sim.apply::<Job>(ns, job("fails", 1, 1, 1, 2)).await;
    let reason = sim
        .eventually(60, "the failing job to fail", || async {
            condition(&jobs.get("fails").await.ok()?, "Failed")
        })
        .await;
    assert_eq!(reason, "BackoffLimitExceeded");
    let pods = sim
        .pods(ns)
        .list(&ListParams::default().labels("job-name=fails"))
        .await
        .unwrap();
    assert_eq!(
        pods.items.len(),
        3,
        "the first try and backoffLimit (2) retries"
    );
    assert_eq!(
        jobs.get("fails").await.unwrap().status.unwrap().failed,
        Some(3)
    );

    // A succeeding job: 3 completions, 2 at a time; deleted 2 s after it finished.
    sim.apply::<Job>(ns, job("works", 0, 3, 2, 6)).await;
    sim.eventually(60, "the job to complete", || async {
        condition(&jobs.get("works").await.ok()?, "Complete")
    })
    .await;
    let j = jobs.get("works").await.unwrap();
    assert_eq!(j.status.as_ref().unwrap().succeeded, Some(3));
    sim.eventually(30, "the finished job and its pods to expire", || async {
        let gone = jobs.get_opt("works").await.ok()?.is_none();
        let pods = sim
            .pods(ns)
            .list(&ListParams::default().labels("job-name=works"))
            .await
            .ok()?;
        (gone && pods.items.is_empty()).then_some(())
    })
    .await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daemonset_follows_the_nodes_and_rolls_node_by_node() {
    use k8s_openapi::api::apps::v1::DaemonSet;
    let mut sim = Sim::start(Options::default()).await;
    let ns = "default";
    let ds = |image: &str| {
        json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "agent"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {"containers": [{"name": "main", "image": image}]},
                },
            },
        })
    };
    let daemons = |sim: &Sim| {
        let pods = sim.pods(ns);
        async move {
            pods.list(&ListParams::default().labels("app=agent"))
                .await
                .ok()
                .map(|l| {
                    l.items
                        .into_iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .collect::<Vec<Pod>>()
                })
        }
    };
    sim.apply::<DaemonSet>(ns, ds("a")).await;
    sim.eventually(30, "a ready daemon on each of 3 nodes", || async {
        let pods = daemons(&sim).await?;
        let mut nodes: Vec<String> = pods
            .iter()
            .filter(|p| is_ready(p))
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        nodes.sort();
        (nodes == ["node-0", "node-1", "node-2"]).then_some(())
    })
    .await;
    sim.add_node("node-3").await;
    sim.eventually(30, "a daemon on the new node", || async {
        let pods = daemons(&sim).await?;
        (pods.len() == 4 && pods.iter().all(is_ready)).then_some(())
    })
    .await;
    sim.apply::<DaemonSet>(ns, ds("b")).await;
    let watch = Watch::start(&sim, ns, "agent");
    sim.eventually(60, "every daemon on the new image", || async {
        let pods = daemons(&sim).await?;
        (pods.len() == 4 && pods.iter().all(|p| image_of(p) == "b" && is_ready(p))).then_some(())
    })
    .await;
    let (_, min_ready, _) = watch.stop();
    assert!(
        min_ready >= 3,
        "maxUnavailable 1: saw {min_ready} ready of 4"
    );
    let status = sim
        .api::<DaemonSet>(ns)
        .get("agent")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status.desired_number_scheduled, 4);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_autoscaler_scales_up_on_cpu_and_down_after_its_window() {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    let mut opts = Options::default();
    opts.controllers.hpa_sync_period = Duration::from_millis(500);
    opts.controllers.hpa_downscale_stabilization = Duration::from_secs(3);
    let sim = Sim::start(opts).await;
    let ns = "default";
    let mut d = deployment("web", 2, "a", 1, 0);
    d["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "100m"}});
    sim.apply::<Deployment>(ns, d).await;
    rolled_out(&sim, ns, "web", 2, "a", 60).await;
    sim.apply::<HorizontalPodAutoscaler>(
        ns,
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 6,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 50}}}],
            },
        }),
    )
    .await;
    // 100m used of 100m requested: 200% of the target, so twice the pods.
    *sim.metrics.usage.lock().unwrap() = Some(100);
    rolled_out(&sim, ns, "web", 4, "a", 60).await;
    let hpa: HorizontalPodAutoscaler = sim.api(ns).get("web").await.unwrap();
    let status = hpa.status.unwrap();
    assert_eq!(status.desired_replicas, 4);
    let out = kubectl(&sim, &["get", "hpa", "web"]);
    assert!(out.contains("Deployment/web"), "{out}");
    // Idle: down to one, but only once the stabilisation window has passed.
    *sim.metrics.usage.lock().unwrap() = Some(5);
    let idle = tokio::time::Instant::now();
    rolled_out(&sim, ns, "web", 1, "a", 60).await;
    assert!(
        idle.elapsed() >= Duration::from_secs(2),
        "scaled down after {:?}, inside the 3 s window",
        idle.elapsed()
    );
    sim.stop().await;
}
