//! Node IPAM (kube-controller-manager's `nodeipam` with the range allocator): every Node
//! without `spec.podCIDR` gets the lowest free block of `--node-cidr-mask-size` bits from
//! `--cluster-cidr`, as `spec.podCIDR` and `spec.podCIDRs`.
//!
//! A block is held while any Node has it (any podCIDR that overlaps it, inside the cluster
//! CIDR or not), so a block comes back only when its node is gone. A node whose podCIDR
//! is outside the cluster CIDR is left alone. Allocation is serialised in this process and
//! counts the blocks it handed out that the node cache does not show yet ([`Reservations`]),
//! so two nodes reconciled at once never get the same block; the patch carries the node's
//! resourceVersion, so a node changed meanwhile is looked at again rather than overwritten.
//!
//! [`allocate`] is the arithmetic, on `u32`s; [`reconcile`] applies it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;

use crate::events::Kind;
use crate::runtime::{self, Action, Change, Informer, Key, Queue};
use crate::{Ctx, Error, Result};

/// Node blocks one cluster CIDR may be cut into at most (kube-controller-manager: 16 bits).
pub const MAX_CIDR_BITS: u8 = 16;
/// How soon to try again when the cluster CIDR is exhausted.
const EXHAUSTED_RETRY: Duration = Duration::from_secs(30);
/// How soon to look again when the cache lags behind a patch or the node changed meanwhile.
const STALE_RETRY: Duration = Duration::from_millis(500);

/// An IPv4 network: an address with its host bits zero and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    net: u32,
    prefix: u8,
}

/// Why a CIDR or a mask size is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("invalid CIDR {0:?}: want an IPv4 network like 10.244.0.0/16")]
    Syntax(String),
    #[error("invalid prefix length {0} in {1:?}: at most 32")]
    Prefix(u8, String),
    #[error("node CIDR mask size {mask} is invalid: at most 32")]
    MaskTooLong { mask: u8 },
    #[error("node CIDR mask size {mask} is shorter than the prefix of the cluster CIDR {cluster}")]
    MaskTooShort { mask: u8, cluster: Cidr },
    #[error(
        "node CIDR mask size {mask} cuts the cluster CIDR {cluster} into more than 2^16 blocks"
    )]
    TooManyBlocks { mask: u8, cluster: Cidr },
}

impl Cidr {
    /// The network of `addr` with `prefix` bits (host bits are cleared, as Go's ParseCIDR).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then(|| Cidr {
            net: u32::from(addr) & mask_bits(prefix),
            prefix,
        })
    }

    pub fn addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.net)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn first(&self) -> u32 {
        self.net
    }

    pub fn last(&self) -> u32 {
        self.net | !mask_bits(self.prefix)
    }

    /// Whether `other` lies wholly inside this network.
    pub fn contains(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && other.net & mask_bits(self.prefix) == self.net
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.first() <= other.last() && other.first() <= self.last()
    }
}

fn mask_bits(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || CidrError::Syntax(s.to_string());
        let (addr, prefix) = s.split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        let prefix: u8 = prefix.parse().map_err(|_| syntax())?;
        Cidr::new(addr, prefix).ok_or_else(|| CidrError::Prefix(prefix, s.to_string()))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.prefix)
    }
}

/// Checks that `cluster` can be cut into blocks of `mask` bits.
pub fn check_mask(cluster: Cidr, mask: u8) -> Result<(), CidrError> {
    if mask > 32 {
        Err(CidrError::MaskTooLong { mask })
    } else if mask < cluster.prefix {
        Err(CidrError::MaskTooShort { mask, cluster })
    } else if mask - cluster.prefix > MAX_CIDR_BITS {
        Err(CidrError::TooManyBlocks { mask, cluster })
    } else {
        Ok(())
    }
}

/// The lowest block of `mask` bits in `cluster` that overlaps nothing in `used`, or `None`
/// when every block is held (or the mask does not fit the cluster CIDR).
pub fn allocate(used: &BTreeSet<Cidr>, cluster: Cidr, mask: u8) -> Option<Cidr> {
    check_mask(cluster, mask).ok()?;
    // Held ranges in order of their first address.
    let held: Vec<(u64, u64)> = used
        .iter()
        .map(|c| (u64::from(c.first()), u64::from(c.last())))
        .collect();
    let base = u64::from(cluster.first());
    let end = u64::from(cluster.last());
    let step = 1u64 << (32 - u32::from(mask));
    let mut at = base;
    let mut next = 0;
    while at + step - 1 <= end {
        let block_end = at + step - 1;
        // Ranges that end before this block cannot touch it or any later one.
        while next < held.len() && held[next].1 < at {
            next += 1;
        }
        match held.get(next) {
            Some(&(start, last)) if start <= block_end => {
                // Held: go to the first block after that range.
                at = base + (last + 1 - base).div_ceil(step) * step;
            }
            _ => return Cidr::new(Ipv4Addr::from(at as u32), mask),
        }
    }
    None
}

/// The IPv4 networks a node holds (`spec.podCIDRs`, or `spec.podCIDR`).
fn node_cidrs(node: &Node) -> Vec<Cidr> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    spec.pod_cidrs
        .iter()
        .flatten()
        .chain(spec.pod_cidr.iter())
        .filter_map(|c| c.parse().ok())
        .collect()
}

fn has_pod_cidr(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .is_some_and(|c| !c.is_empty())
}

/// Blocks this process handed out that the node cache may not show yet, by node name.
#[derive(Debug, Default)]
pub struct Reservations {
    by_node: BTreeMap<String, (String, Cidr)>,
}

impl Reservations {
    /// Records that the node `name` (with `uid`) was given `cidr`.
    pub fn reserve(&mut self, name: &str, uid: &str, cidr: Cidr) {
        self.by_node
            .insert(name.to_string(), (uid.to_string(), cidr));
    }

    /// Whether a block was handed to `node` that the cache does not show yet.
    pub fn pending_for(&self, node: &Node) -> bool {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        self.by_node
            .get(name)
            .is_some_and(|(uid, _)| node.metadata.uid.as_deref() == Some(uid.as_str()))
    }

    /// Every block held: the nodes' own, and the reservations the cache does not show yet.
    /// Reservations the cache shows, or whose node is gone (or is another node now, or has
    /// another podCIDR), are dropped.
    pub fn held(&mut self, nodes: &[Arc<Node>]) -> BTreeSet<Cidr> {
        let by_name: BTreeMap<&str, &Node> = nodes
            .iter()
            .map(|n| (n.metadata.name.as_deref().unwrap_or_default(), n.as_ref()))
            .collect();
        self.by_node.retain(|name, (uid, _)| {
            by_name.get(name.as_str()).is_some_and(|n| {
                n.metadata.uid.as_deref() == Some(uid.as_str()) && !has_pod_cidr(n)
            })
        });
        let mut held: BTreeSet<Cidr> = nodes.iter().flat_map(|n| node_cidrs(n)).collect();
        held.extend(self.by_node.values().map(|(_, c)| *c));
        held
    }
}

/// The allocator's settings and in-flight state.
pub struct Allocator {
    pub cluster: Cidr,
    pub mask: u8,
    /// Held from computing a block to recording the patch: one allocation at a time.
    reservations: tokio::sync::Mutex<Reservations>,
}

impl Allocator {
    pub fn new(cluster: Cidr, mask: u8) -> Self {
        Self {
            cluster,
            mask,
            reservations: tokio::sync::Mutex::new(Reservations::default()),
        }
    }
}

/// One pass over one Node.
pub async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>, alloc: Arc<Allocator>) -> Result<Action> {
    let key = Key::of(node.as_ref());
    if has_pod_cidr(&node) || node.metadata.deletion_timestamp.is_some() {
        return Ok(Action::AwaitChange);
    }
    let mut reservations = alloc.reservations.lock().await;
    // The cache as it is now, not as it was when this node was queued.
    let nodes = ctx.nodes.list();
    let held = reservations.held(&nodes);
    let Some(node) = ctx.nodes.get(&key) else {
        return Ok(Action::AwaitChange);
    };
    if has_pod_cidr(&node) {
        return Ok(Action::AwaitChange);
    }
    if reservations.pending_for(&node) {
        return Ok(Action::Requeue(STALE_RETRY));
    }
    let Some(cidr) = allocate(&held, alloc.cluster, alloc.mask) else {
        tracing::warn!(node = %key, cluster = %alloc.cluster, "no node CIDR left");
        ctx.events.object(
            crate::reference(node.as_ref()),
            Kind::Warning,
            "CIDRNotAvailable",
            format!("Node {} status is now: CIDRNotAvailable", key.name),
        );
        return Ok(Action::Requeue(EXHAUSTED_RETRY));
    };
    let api: Api<Node> = Api::all(ctx.client.clone());
    let patch = json!({
        "metadata": {"resourceVersion": node.metadata.resource_version},
        "spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]},
    });
    match api
        .patch(&key.name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => {
            reservations.reserve(
                &key.name,
                node.metadata.uid.as_deref().unwrap_or_default(),
                cidr,
            );
            tracing::info!(node = %key, cidr = %cidr, "allocated pod CIDR");
            Ok(Action::AwaitChange)
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::AwaitChange),
        // Changed since the cache saw it: decide again from the newer node.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Action::Requeue(STALE_RETRY)),
        Err(e) => Err(Error::api("setting pod CIDR of node", &key, e)),
    }
}

/// Wires the allocator to the node informer; nothing when `--allocate-node-cidrs` is off
/// or the mask does not fit the cluster CIDR.
pub fn register(ctx: &Arc<Ctx>, nodes: &Informer<Node>) -> Vec<BoxFuture<'static, ()>> {
    let config = &ctx.config;
    if !config.allocate_node_cidrs {
        return Vec::new();
    }
    if let Err(e) = check_mask(config.cluster_cidr, config.node_cidr_mask_size) {
        tracing::error!(error = %e, "node CIDR allocation is off");
        return Vec::new();
    }
    let alloc = Arc::new(Allocator::new(
        config.cluster_cidr,
        config.node_cidr_mask_size,
    ));
    let queue = Queue::new("nodeipam");
    {
        let queue = queue.clone();
        let cache = ctx.nodes.clone();
        nodes.on_change(move |c| match c {
            Change::Applied { new, .. } => {
                if !has_pod_cidr(new) {
                    queue.add(Key::of(*new));
                }
            }
            // Its block is free again: nodes waiting for one may get it.
            Change::Deleted(_) => {
                for n in cache.list() {
                    if !has_pod_cidr(&n) {
                        queue.add(Key::of(n.as_ref()));
                    }
                }
            }
        });
    }
    vec![runtime::run(
        queue,
        ctx.nodes.clone(),
        Vec::new(),
        ctx.config.workers,
        ctx.clone(),
        move |node, ctx| reconcile(node, ctx, alloc.clone()),
    )
    .boxed()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn used(list: &[&str]) -> BTreeSet<Cidr> {
        list.iter().map(|s| cidr(s)).collect()
    }

    fn cluster() -> Cidr {
        cidr("10.244.0.0/16")
    }

    fn next(list: &[&str]) -> Option<String> {
        allocate(&used(list), cluster(), 24).map(|c| c.to_string())
    }

    fn node(name: &str, uid: &str, pod_cidr: Option<&str>) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: pod_cidr.map(String::from),
                pod_cidrs: pod_cidr.map(|c| vec![c.to_string()]),
                ..Default::default()
            }),
            status: None,
        })
    }

    #[test]
    fn cidrs_parse_to_their_network_and_print_back() {
        assert_eq!(cidr("10.244.1.5/16").to_string(), "10.244.0.0/16");
        assert_eq!(cidr("0.0.0.0/0").last(), u32::MAX);
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::Prefix(33, "10.0.0.0/33".into()))
        );
        assert!(matches!(
            "10.0.0.0".parse::<Cidr>(),
            Err(CidrError::Syntax(_))
        ));
        assert!(matches!(
            "fd00::/64".parse::<Cidr>(),
            Err(CidrError::Syntax(_))
        ));
        assert!(cluster().contains(&cidr("10.244.3.0/24")));
        assert!(!cluster().contains(&cidr("10.245.0.0/24")));
        assert!(cidr("10.244.0.0/23").overlaps(&cidr("10.244.1.0/24")));
        assert!(!cidr("10.244.0.0/24").overlaps(&cidr("10.244.1.0/24")));
    }

    #[test]
    fn the_lowest_free_block_is_handed_out_first() {
        assert_eq!(next(&[]).as_deref(), Some("10.244.0.0/24"));
        assert_eq!(
            next(&["10.244.0.0/24", "10.244.1.0/24"]).as_deref(),
            Some("10.244.2.0/24")
        );
        assert_eq!(
            next(&["10.244.0.0/24", "10.244.2.0/24"]).as_deref(),
            Some("10.244.1.0/24")
        );
        // A held network of another size holds every block it overlaps.
        assert_eq!(next(&["10.244.0.0/23"]).as_deref(), Some("10.244.2.0/24"));
        assert_eq!(next(&["10.244.0.128/25"]).as_deref(), Some("10.244.1.0/24"));
        // Networks outside the cluster CIDR hold nothing in it.
        assert_eq!(
            next(&["10.0.0.0/24", "192.168.0.0/16"]).as_deref(),
            Some("10.244.0.0/24")
        );
        // One that covers the whole cluster CIDR holds every block.
        assert_eq!(next(&["10.0.0.0/8"]), None);
    }

    #[test]
    fn a_block_comes_back_only_after_its_node_is_gone() {
        let mut r = Reservations::default();
        let nodes = vec![
            node("a", "ua", Some("10.244.0.0/24")),
            node("b", "ub", Some("10.244.1.0/24")),
        ];
        let held = r.held(&nodes);
        assert_eq!(allocate(&held, cluster(), 24), Some(cidr("10.244.2.0/24")));
        let held = r.held(&nodes[1..]);
        assert_eq!(allocate(&held, cluster(), 24), Some(cidr("10.244.0.0/24")));
    }

    #[test]
    fn a_block_handed_out_is_held_until_the_cache_shows_it() {
        let mut r = Reservations::default();
        r.reserve("a", "ua", cidr("10.244.0.0/24"));
        // The cache still shows `a` without a podCIDR: the block stays held.
        let lagging = vec![node("a", "ua", None)];
        assert_eq!(r.held(&lagging), used(&["10.244.0.0/24"]));
        assert!(r.pending_for(&lagging[0]));
        assert_eq!(
            allocate(&r.held(&lagging), cluster(), 24),
            Some(cidr("10.244.1.0/24"))
        );
        // The cache shows it: the node itself holds it now.
        let shown = vec![node("a", "ua", Some("10.244.0.0/24"))];
        assert_eq!(r.held(&shown), used(&["10.244.0.0/24"]));
        assert!(r.by_node.is_empty());
        // A node of the same name that is another node does not inherit a reservation.
        r.reserve("a", "ua", cidr("10.244.0.0/24"));
        let recreated = vec![node("a", "ua2", None)];
        assert!(r.held(&recreated).is_empty());
        assert!(!r.pending_for(&recreated[0]));
    }

    #[test]
    fn an_exhausted_cluster_cidr_hands_out_nothing() {
        let small = cidr("10.0.0.0/22");
        let all = used(&["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"]);
        assert_eq!(allocate(&all, small, 24), Some(cidr("10.0.3.0/24")));
        let mut all = all;
        all.insert(cidr("10.0.3.0/24"));
        assert_eq!(allocate(&all, small, 24), None);
        // A mask as long as the cluster prefix: one block, the cluster CIDR itself.
        assert_eq!(allocate(&BTreeSet::new(), small, 22), Some(small));
        assert_eq!(allocate(&used(&["10.0.2.0/24"]), small, 22), None);
    }

    #[test]
    fn the_mask_must_fit_the_cluster_cidr() {
        assert_eq!(check_mask(cluster(), 24), Ok(()));
        assert_eq!(check_mask(cluster(), 32), Ok(()));
        assert_eq!(
            check_mask(cluster(), 8),
            Err(CidrError::MaskTooShort {
                mask: 8,
                cluster: cluster()
            })
        );
        assert_eq!(
            check_mask(cluster(), 33),
            Err(CidrError::MaskTooLong { mask: 33 })
        );
        assert_eq!(
            check_mask(cidr("10.0.0.0/8"), 25),
            Err(CidrError::TooManyBlocks {
                mask: 25,
                cluster: cidr("10.0.0.0/8")
            })
        );
        assert_eq!(allocate(&BTreeSet::new(), cluster(), 8), None);
    }
}
