//! The controller-manager: Berth's reconcile loops, and the pieces every control loop in
//! Berth shares.
//!
//! Start reading at [`run`]: it opens one watch per kind ([`runtime::Informer`]), hands the
//! caches to each controller in a [`Ctx`], and runs every loop on [`runtime::run`]. Each
//! controller module has a pure `plan` (observed state in, wanted changes out, tested
//! exactly) and a thin async `reconcile` that applies it:
//!
//! - [`replicaset`], [`deployment`]: replicas, rolling updates, history and rollback;
//! - [`daemonset`]: one pod per node, rolling updates;
//! - [`job`]: completions, parallelism, back-off, deadlines, TTL;
//! - [`hpa`]: horizontal pod autoscaling on CPU utilisation;
//! - [`gc`]: owner references, foreground and orphan deletion;
//! - [`nodelifecycle`]: unreachable nodes, taint-based eviction, fencing;
//! - [`endpoints`]: Endpoints and EndpointSlices of Services with selectors;
//! - [`ipam`]: pod CIDRs of Nodes;
//! - [`serviceaccount`]: the `default` ServiceAccount of every Namespace.
//!
//! Shared with the other components: [`leader`] (leader election on a Lease) and
//! [`events`] (the event recorder).
#![forbid(unsafe_code)]

pub mod cli;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod events;
pub mod expectations;
pub mod gc;
pub mod hpa;
pub mod ipam;
pub mod job;
pub mod leader;
pub mod nodelifecycle;
pub mod podcontrol;
pub mod pods;
pub mod replicaset;
pub mod runtime;
pub mod serviceaccount;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Endpoints, Namespace, Node, ObjectReference, Pod, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use kube::{Api, Resource};

use crate::expectations::Expectations;
use crate::runtime::{Cache, Informer, Key, Queue, Synced};

/// Errors of one reconcile pass.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {key}: {source}")]
    Api {
        what: &'static str,
        key: String,
        source: kube::Error,
    },
}

impl Error {
    pub fn api(what: &'static str, key: &Key, source: kube::Error) -> Self {
        Error::Api {
            what,
            key: key.to_string(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Settings of the loops.
#[derive(Debug, Clone)]
pub struct Config {
    /// Workers per controller.
    pub workers: usize,
    /// A node not heard from for this long is unreachable.
    pub node_monitor_grace_period: Duration,
    /// How often each node's health is looked at.
    pub node_monitor_period: Duration,
    /// How long a pod without a toleration of its own stays on an unreachable or not-ready
    /// node.
    pub default_unreachable_toleration: Duration,
    /// Node agents fence themselves; evictions from unreachable nodes are forced.
    pub fencing: bool,
    /// The first delay before a Job replaces a failed pod (doubling, at most 6 minutes).
    pub job_backoff: Duration,
    /// How often each autoscaler looks at its metrics.
    pub hpa_sync_period: Duration,
    /// How far back an autoscaler looks for a higher recommendation before scaling down.
    pub hpa_downscale_stabilization: Duration,
    /// Give each Node a pod CIDR from `cluster_cidr`.
    pub allocate_node_cidrs: bool,
    /// The pod network that node CIDRs are cut from.
    pub cluster_cidr: ipam::Cidr,
    /// Prefix length of each node's pod CIDR.
    pub node_cidr_mask_size: u8,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            workers: 4,
            node_monitor_grace_period: Duration::from_secs(40),
            node_monitor_period: Duration::from_secs(5),
            default_unreachable_toleration: Duration::from_secs(300),
            fencing: true,
            job_backoff: Duration::from_secs(10),
            hpa_sync_period: Duration::from_secs(15),
            hpa_downscale_stabilization: Duration::from_secs(300),
            allocate_node_cidrs: true,
            cluster_cidr: ipam::Cidr::new(std::net::Ipv4Addr::new(10, 244, 0, 0), 16)
                .expect("a valid prefix"),
            node_cidr_mask_size: 24,
        }
    }
}

/// What every reconcile reads and writes through.
pub struct Ctx {
    pub client: kube::Client,
    pub config: Config,
    pub events: events::Recorder,
    pub expectations: Expectations,
    pub pods: Arc<Cache<Pod>>,
    pub replicasets: Arc<Cache<ReplicaSet>>,
    pub deployments: Arc<Cache<Deployment>>,
    pub jobs: Arc<Cache<Job>>,
    pub daemonsets: Arc<Cache<DaemonSet>>,
    pub hpas: Arc<Cache<HorizontalPodAutoscaler>>,
    pub metrics: Arc<dyn hpa::Metrics>,
    pub recommendations: hpa::Recommendations,
    pub heartbeats: nodelifecycle::Heartbeats,
    pub services: Arc<Cache<Service>>,
    pub endpoints: Arc<Cache<Endpoints>>,
    pub endpointslices: Arc<Cache<EndpointSlice>>,
    pub nodes: Arc<Cache<Node>>,
    pub namespaces: Arc<Cache<Namespace>>,
    pub serviceaccounts: Arc<Cache<ServiceAccount>>,
}

/// A reference to `obj` for events.
pub fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).to_string()),
        kind: Some(K::kind(&()).to_string()),
        name: obj.meta().name.clone(),
        namespace: obj.meta().namespace.clone(),
        uid: obj.meta().uid.clone(),
        resource_version: obj.meta().resource_version.clone(),
        field_path: None,
    }
}

/// Runs every controller until the process stops (or the future is dropped, as leader
/// election does when leadership is lost). Each call starts from fresh watches.
pub async fn run(client: kube::Client, config: Config) {
    let metrics = Arc::new(hpa::MetricsApi(client.clone()));
    run_with_metrics(client, config, metrics).await
}

/// [`run`] with another source of pod metrics for the autoscaler (tests).
pub async fn run_with_metrics(
    client: kube::Client,
    config: Config,
    metrics: Arc<dyn hpa::Metrics>,
) {
    let pods = Informer::indexed(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        Some(nodelifecycle::pod_node),
    );
    let nodes = Informer::new(Api::<Node>::all(client.clone()));
    let jobs = Informer::new(Api::<Job>::all(client.clone()));
    let daemonsets = Informer::new(Api::<DaemonSet>::all(client.clone()));
    let hpas = Informer::new(Api::<HorizontalPodAutoscaler>::all(client.clone()));
    let leases = Informer::new(Api::<Lease>::namespaced(client.clone(), "kube-node-lease"));
    let replicasets = Informer::new(Api::<ReplicaSet>::all(client.clone()));
    let deployments = Informer::new(Api::<Deployment>::all(client.clone()));
    let services = Informer::new(Api::<Service>::all(client.clone()));
    let endpoints = Informer::new(Api::<Endpoints>::all(client.clone()));
    let endpointslices = Informer::new(Api::<EndpointSlice>::all(client.clone()));
    let namespaces = Informer::new(Api::<Namespace>::all(client.clone()));
    let serviceaccounts = Informer::new(Api::<ServiceAccount>::all(client.clone()));
    let ctx = Arc::new(Ctx {
        events: events::Recorder::start(client.clone(), "berth-controller-manager", None),
        client: client.clone(),
        config: config.clone(),
        expectations: Expectations::default(),
        pods: pods.cache(),
        replicasets: replicasets.cache(),
        deployments: deployments.cache(),
        jobs: jobs.cache(),
        daemonsets: daemonsets.cache(),
        hpas: hpas.cache(),
        metrics,
        recommendations: hpa::Recommendations::default(),
        heartbeats: nodelifecycle::Heartbeats::default(),
        services: services.cache(),
        endpoints: endpoints.cache(),
        endpointslices: endpointslices.cache(),
        nodes: nodes.cache(),
        namespaces: namespaces.cache(),
        serviceaccounts: serviceaccounts.cache(),
    });
    let mut tasks: Vec<BoxFuture<'static, ()>> = Vec::new();

    // ReplicaSets: their own changes, their pods' changes, and orphans that may match.
    let rs_queue = Queue::new("replicaset");
    replicasets.on_change(runtime::enqueue_self(&rs_queue));
    {
        let ctx2 = ctx.clone();
        let q = rs_queue.clone();
        let rs_cache = ctx.replicasets.clone();
        pods.on_change(move |c| {
            ctx2.expectations.observe(c);
            let pod = c.object();
            if runtime::controller_uid(pod).is_some() {
                runtime::enqueue_owner(&q, "ReplicaSet")(c);
            } else if let Some(ns) = pod.metadata.namespace.as_deref() {
                // An orphan: every ReplicaSet in its namespace whose selector matches.
                for rs in rs_cache.in_namespace(ns) {
                    let sel = rs.spec.as_ref().map(|s| &s.selector);
                    if pods::selector_matches(sel, pod.metadata.labels.as_ref()) {
                        q.add(Key::of(rs.as_ref()));
                    }
                }
            }
        });
    }
    let synced: Vec<Arc<dyn Synced>> = vec![ctx.pods.clone()];
    tasks.push(
        runtime::run(
            rs_queue,
            ctx.replicasets.clone(),
            synced,
            config.workers,
            ctx.clone(),
            replicaset::reconcile,
        )
        .boxed(),
    );

    tasks.extend(deployment::register(
        &ctx,
        &deployments,
        &replicasets,
        &pods,
    ));
    tasks.extend(job::register(&ctx, &jobs, &pods));
    tasks.extend(daemonset::register(&ctx, &daemonsets, &pods, &nodes));
    tasks.extend(hpa::register(&ctx, &hpas));

    tasks.extend(nodelifecycle::register(&ctx, &nodes, &leases));
    tasks.extend(endpoints::register(
        &ctx,
        &services,
        &pods,
        &endpoints,
        &endpointslices,
    ));
    tasks.extend(ipam::register(&ctx, &nodes));
    tasks.extend(serviceaccount::register(
        &ctx,
        &namespaces,
        &serviceaccounts,
    ));
    // The collector also tracks Services and their EndpointSlices, so a Service's slices go
    // with it.
    let mut collector = gc::Builder::new(client.clone());
    collector.track(&pods);
    collector.track(&replicasets);
    collector.track(&deployments);
    collector.track(&jobs);
    collector.track(&daemonsets);
    collector.track(&services);
    collector.track(&endpointslices);
    tasks.extend(collector.build(&ctx));

    tasks.push(pods.run().boxed());
    tasks.push(nodes.run().boxed());
    tasks.push(leases.run().boxed());
    tasks.push(jobs.run().boxed());
    tasks.push(daemonsets.run().boxed());
    tasks.push(hpas.run().boxed());
    tasks.push(replicasets.run().boxed());
    tasks.push(deployments.run().boxed());
    tasks.push(services.run().boxed());
    tasks.push(endpoints.run().boxed());
    tasks.push(endpointslices.run().boxed());
    tasks.push(namespaces.run().boxed());
    tasks.push(serviceaccounts.run().boxed());
    runtime::run_all(tasks).await;
}
