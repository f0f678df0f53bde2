//! The controller-manager: Berth's reconcile loops, and the pieces every control loop in
//! Berth shares.
//!
//! Start reading at [`run`]: it opens one watch per kind ([`runtime::Informer`]), hands the
//! caches to each controller in a [`Ctx`], and runs every loop on [`runtime::run`]. Each
//! controller module has a pure `plan` (observed state in, wanted changes out, tested
//! exactly) and a thin async `reconcile` that applies it:
//!
//! - [`replicaset`], [`deployment`]: replicas, rolling updates, history and rollback;
//! - [`gc`]: owner references, foreground and orphan deletion;
//! - [`endpoints`]: Endpoints and EndpointSlices of Services with selectors;
//! - [`ipam`]: pod CIDRs of Nodes;
//! - [`serviceaccount`]: the `default` ServiceAccount of every Namespace.
//!
//! Shared with the other components: [`leader`] (leader election on a Lease) and
//! [`events`] (the event recorder).
#![forbid(unsafe_code)]

pub mod cli;
pub mod deployment;
pub mod endpoints;
pub mod events;
pub mod expectations;
pub mod gc;
pub mod ipam;
pub mod leader;
pub mod pods;
pub mod replicaset;
pub mod runtime;
pub mod serviceaccount;

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{
    Endpoints, Namespace, Node, ObjectReference, Pod, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
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
    let pods = Informer::new(Api::<Pod>::all(client.clone()));
    let replicasets = Informer::new(Api::<ReplicaSet>::all(client.clone()));
    let deployments = Informer::new(Api::<Deployment>::all(client.clone()));
    let services = Informer::new(Api::<Service>::all(client.clone()));
    let endpoints = Informer::new(Api::<Endpoints>::all(client.clone()));
    let endpointslices = Informer::new(Api::<EndpointSlice>::all(client.clone()));
    let nodes = Informer::new(Api::<Node>::all(client.clone()));
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
    collector.track(&services);
    collector.track(&endpointslices);
    tasks.extend(collector.build(&ctx));

    tasks.push(pods.run().boxed());
    tasks.push(replicasets.run().boxed());
    tasks.push(deployments.run().boxed());
    tasks.push(services.run().boxed());
    tasks.push(endpoints.run().boxed());
    tasks.push(endpointslices.run().boxed());
    tasks.push(nodes.run().boxed());
    tasks.push(namespaces.run().boxed());
    tasks.push(serviceaccounts.run().boxed());
    runtime::run_all(tasks).await;
}
