//! The bundled container runtime, used as a library by the node agent.
//!
//! It will own the content-addressed image store (OCI layouts and `docker save`
//! archives), overlayfs root filesystems, namespaces, cgroups v1 and v2 behind one
//! trait, the pause container, exec and logs. It speaks OCI, never Kubernetes types.
//! Empty until issue "The bundled container runtime". This crate may use `unsafe`,
//! each block with a `// SAFETY:` comment.
