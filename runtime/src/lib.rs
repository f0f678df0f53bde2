//! The bundled container runtime, used as a library by the node agent.
//!
//! It owns the content-addressed image store (OCI layouts, `docker save` archives and
//! pulls from registries, [`image`]), cgroups v1 and v2 behind one trait ([`cgroups`]), the
//! container process itself (namespaces, overlayfs root, capabilities, seccomp:
//! [`container`]), the per-container monitor that outlives its caller ([`shim`]), pods (a
//! pause container plus members: [`pod`]), CRI-format logs ([`logs`]) and the
//! runc-compatible command line ([`cli`]).
//! It speaks OCI (the `oci-spec` crate), never Kubernetes types: the node agent translates
//! a Pod into [`pod::SandboxConfig`] and [`pod::ContainerConfig`], as kubelet does for CRI.
//!
//! Start reading at [`container`]: `create` runs in a single-threaded process (the CLI or a
//! shim), clones the container's init into its namespaces, and records state on disk.
//!
//! This crate may use `unsafe`, each block with a `// SAFETY:` comment.

pub mod cgroups;
pub mod cli;
pub mod console;
pub mod container;
pub mod image;
pub mod logs;
pub mod pause;
pub mod pod;
pub mod shim;
