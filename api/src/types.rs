//! The Kubernetes types Berth serves, re-exported from k8s-openapi (API version 1.32), plus the
//! metadata and status types every component handles alongside them.

pub use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
pub use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
pub use k8s_openapi::api::batch::v1::Job;
pub use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
pub use k8s_openapi::api::coordination::v1::Lease;
pub use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, Node, Pod, Secret, Service, ServiceAccount,
};
pub use k8s_openapi::api::discovery::v1::EndpointSlice;
pub use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};

/// Served as subresources: `pods/binding` and `deployments/scale`, `replicasets/scale`.
pub use k8s_openapi::api::autoscaling::v1::Scale;
pub use k8s_openapi::api::core::v1::Binding;

pub use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
pub use k8s_openapi::apimachinery::pkg::api::resource::Quantity as QuantityString;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference, Status, StatusCause,
    StatusDetails,
};
pub use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
pub use k8s_openapi::{List, Metadata, Resource};
