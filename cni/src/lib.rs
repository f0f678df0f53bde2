//! Pod networking: a CNI 1.0 plugin (ADD, DEL, CHECK, VERSION) with host-local
//! style IPAM, and the VXLAN or direct-routing overlay between nodes.
//!
//! Start at [`plugin`] (what `berth-cni` does for one pod), then [`overlay`] (what the
//! node agent programs between nodes). Both talk to the kernel through [`netlink`], a
//! small synchronous rtnetlink client; [`ipam`] keeps address reservations on disk.

pub mod ipam;
pub mod netlink;
pub mod netns;
pub mod overlay;
pub mod plugin;
pub mod subnet;
