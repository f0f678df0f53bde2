//! `berth-api` owns what Berth knows about the Kubernetes API, as pure types and logic with no
//! I/O (it sits under the API server the way kube-core sits under kube-client):
//!
//! - [`types`]: the Kubernetes objects Berth serves, re-exported from k8s-openapi.
//! - [`registry`]: one [`ResourceInfo`] per served kind (group, version, kind, plural, short names,
//!   scope, subresources), look-ups by path, kind or command-line name, and the store keys
//!   `/registry/<group>/<resource>/<namespace>/<name>`.
//! - [`object`]: [`Object`], a typed enum over every served kind, decoded from JSON by
//!   `apiVersion` and `kind`; the API server's way in.
//! - [`defaults`]: defaulting as Kubernetes does it (restartPolicy, imagePullPolicy, replicas...).
//! - [`validation`]: create-time validation returning every failing field with its path and a
//!   Kubernetes `field.ErrorType`, ready to become a `Status` with `details.causes`.
//! - [`labels`] and [`fields`]: label selectors (`LabelSelector` and the `?labelSelector=`
//!   string form) and field selectors (`?fieldSelector=`), with per-kind supported fields.
//! - [`quantity`]: the Kubernetes resource quantity (`100m`, `1.5Gi`, `2e3`).
//! - [`decode`]: multi-document YAML and JSON manifests, with errors naming document and line.
//! - [`patch`]: JSON patch, merge patch, strategic merge patch and server-side apply with
//!   `metadata.managedFields`, for the API server's PATCH and write paths.
//!
//! Start with [`object::Object::prepare_create`]: it is the whole create path an API server runs
//! on a request body (decode, default, validate), and each step links to its module.
#![forbid(unsafe_code)]

pub mod decode;
pub mod defaults;
pub mod fields;
pub mod labels;
pub mod object;
pub mod patch;
pub mod quantity;
pub mod registry;
pub mod types;
pub mod validation;

pub use k8s_openapi;
pub use object::Object;
pub use quantity::Quantity;
pub use registry::{ResourceInfo, Scope, Subresource};
