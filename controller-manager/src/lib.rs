//! The controller-manager: Berth's reconcile loops.
//!
//! It will own the shared controller runtime (queueing, back-off, cache sync) and one
//! level-triggered `reconcile` per kind: ReplicaSet, Deployment, DaemonSet, Job, node
//! lifecycle, endpoints, garbage collection, namespaces and node IPAM.
//! Empty until issue "The scheduler and the controller-manager".
#![forbid(unsafe_code)]
