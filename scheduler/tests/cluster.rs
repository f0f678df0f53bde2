//! The scheduler against a real in-process Berth API server: pods bound where they should go,
//! a pod that fits nowhere reported (`PodScheduled=False` and a FailedScheduling event), and
//! scheduled once a node that fits arrives.

mod common;

use std::time::Duration;

use berth_scheduler::testing::{node, pod};
use berth_scheduler::Config;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{ListParams, PostParams};
use kube::Api;

async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn node_of(pods: &Api<Pod>, name: &str) -> anyhow::Result<Option<String>> {
    Ok(pods.get(name).await?.spec.and_then(|s| s.node_name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_reports_and_retries_against_the_api_server() -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let cluster = common::Cluster::start().await?;
    let client = cluster.client().await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    nodes
        .create(
            &pp,
            &node("n1").cpu("2").memory("4Gi").label("zone", "a").build(),
        )
        .await?;
    nodes
        .create(
            &pp,
            &node("n2")
                .cpu("2")
                .memory("4Gi")
                .label("zone", "b")
                .taint("dedicated", "db", "NoSchedule")
                .build(),
        )
        .await?;
    let strip = |p: Pod| {
        // The API server assigns uids.
        let mut p = p;
        p.metadata.uid = None;
        p
    };
    pods.create(&pp, &strip(pod("web").requests("500m", "1Gi").build()))
        .await?;
    pods.create(
        &pp,
        &strip(
            pod("db")
                .requests("1", "1Gi")
                .selector("zone", "b")
                .tolerate("dedicated", "Equal", "db", "NoSchedule")
                .build(),
        ),
    )
    .await?;
    pods.create(&pp, &strip(pod("big").requests("4", "1Gi").build()))
        .await?;
    // Not ours: another scheduler's pod stays pending.
    pods.create(&pp, &strip(pod("theirs").scheduler("other").build()))
        .await?;

    let sched = tokio::spawn(berth_scheduler::run(client.clone(), Config::default()));

    let web = wait_for("web bound", || node_of(&pods, "web")).await?;
    assert_eq!(web, "n1");
    let db = wait_for("db bound", || node_of(&pods, "db")).await?;
    assert_eq!(db, "n2");

    let expected = "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated \
                    taint {dedicated: db}. preemption: 0/2 nodes are available: 1 No preemption \
                    victims found for incoming pod, 1 Preemption is not helpful for scheduling.";
    let cond = wait_for("big's PodScheduled=False", || async {
        let p = pods.get("big").await?;
        Ok(p.status
            .and_then(|s| s.conditions)
            .and_then(|cs| cs.into_iter().find(|c| c.type_ == "PodScheduled")))
    })
    .await?;
    assert_eq!(cond.status, "False");
    assert_eq!(cond.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(cond.message.as_deref(), Some(expected));

    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let find = |reason: &'static str, name: &'static str| {
        let events = events.clone();
        move || {
            let events = events.clone();
            async move {
                let list = events.list(&ListParams::default()).await?;
                Ok(list.items.into_iter().find(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.involved_object.name.as_deref() == Some(name)
                }))
            }
        }
    };
    let failed = wait_for("a FailedScheduling event", find("FailedScheduling", "big")).await?;
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    assert_eq!(failed.message.as_deref(), Some(expected));
    assert_eq!(
        failed.source.and_then(|s| s.component).as_deref(),
        Some("default-scheduler")
    );
    let scheduled = wait_for("a Scheduled event", find("Scheduled", "web")).await?;
    assert_eq!(
        scheduled.message.as_deref(),
        Some("Successfully assigned default/web to n1")
    );

    // A node that fits arrives: the parked pod is retried at once and lands there.
    nodes
        .create(&pp, &node("n3").cpu("8").memory("16Gi").build())
        .await?;
    let big = wait_for("big bound", || node_of(&pods, "big")).await?;
    assert_eq!(big, "n3");
    // The binding turned its condition to PodScheduled=True.
    let p = pods.get("big").await?;
    let cond = p
        .status
        .and_then(|s| s.conditions)
        .and_then(|cs| cs.into_iter().find(|c| c.type_ == "PodScheduled"))
        .expect("a PodScheduled condition");
    assert_eq!(cond.status, "True");

    assert_eq!(node_of(&pods, "theirs").await?, None);
    assert!(!sched.is_finished());
    sched.abort();
    cluster.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_scheduler_sees_what_is_bound() -> anyhow::Result<()> {
    let cluster = common::Cluster::start().await?;
    let client = cluster.client().await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    nodes
        .create(&pp, &node("n1").cpu("1").memory("4Gi").build())
        .await?;
    nodes
        .create(&pp, &node("n2").cpu("1").memory("4Gi").build())
        .await?;
    let mk = |name: &str| {
        let mut p = pod(name).requests("600m", "100Mi").build();
        p.metadata.uid = None;
        p
    };
    pods.create(&pp, &mk("a")).await?;
    let sched = tokio::spawn(berth_scheduler::run(client.clone(), Config::default()));
    let a = wait_for("a bound", || node_of(&pods, "a")).await?;
    sched.abort();
    let _ = sched.await;

    // A new run starts from nothing, and must count `a` where it is.
    pods.create(&pp, &mk("b")).await?;
    let sched = tokio::spawn(berth_scheduler::run(client.clone(), Config::default()));
    let b = wait_for("b bound", || node_of(&pods, "b")).await?;
    assert_ne!(a, b);
    sched.abort();
    cluster.stop().await;
    Ok(())
}
