//! Pod networking: a CNI 1.0 plugin (ADD, DEL, CHECK, VERSION) with host-local
//! style IPAM, and the VXLAN or direct-routing overlay between nodes.
//! Empty until issue "Pod networking (cni), the service proxy, and cluster DNS".
//! This crate may use `unsafe`, each block with a `// SAFETY:` comment.
