//! The scheduler's picture of the cluster: every node with what is free on it, every pod bound
//! or assumed bound, kept up to date incrementally from watch events and from the scheduler's
//! own decisions.
//!
//! Built for the decision loop: node labels are interned ([`Sym`]) so selector checks compare
//! integers; each node's requested totals are integers (milli-CPU, bytes) updated as pods come
//! and go; topology spread counts per (namespace, selector) are kept per node
//! ([`SpreadGroup`]) and bumped on every pod add and remove, so a spread filter is an index.
//!
//! A node slot is never reused for another node: a deleted node stays as a dead slot (pods may
//! still name it) and comes back to life if a node of that name returns.

use std::collections::HashMap;
use std::sync::Arc;

use berth_api::labels::Selector;
use k8s_openapi::api::core::v1::{Node, Taint};

use crate::info::{HostPort, NodeFacts, PodInfo, Resources, HOSTNAME};

/// An interned string (a label key or value, an owner uid).
pub type Sym = u32;

/// A symbol no string has: lookups of unknown strings return it, and it matches nothing.
pub const NO_SYM: Sym = Sym::MAX;

/// The string interner.
#[derive(Debug, Default)]
pub struct Symbols {
    map: HashMap<Box<str>, Sym>,
    names: Vec<Box<str>>,
}

impl Symbols {
    pub fn intern(&mut self, s: &str) -> Sym {
        if let Some(&id) = self.map.get(s) {
            return id;
        }
        let id = self.names.len() as Sym;
        self.names.push(s.into());
        self.map.insert(s.into(), id);
        id
    }

    /// The symbol of `s`, or [`NO_SYM`] if no node or pod ever had it.
    pub fn get(&self, s: &str) -> Sym {
        self.map.get(s).copied().unwrap_or(NO_SYM)
    }

    pub fn name(&self, id: Sym) -> &str {
        self.names.get(id as usize).map_or("", |s| s)
    }
}

/// One node: its facts and what the pods placed on it use.
#[derive(Debug)]
pub struct NodeInfo {
    pub name: String,
    /// A node the API server has (false: deleted, kept for the pods that still name it).
    pub live: bool,
    /// Labels as (key, value) symbols, sorted by key.
    pub labels: Vec<(Sym, Sym)>,
    pub facts: NodeFacts,
    /// Whether any taint is PreferNoSchedule (the TaintToleration score only looks then).
    pub prefer_no_schedule: bool,
    /// The allocatable amounts (cpu in millis, bytes), and pods.
    pub alloc_cpu: i64,
    pub alloc_memory: i64,
    pub alloc_ephemeral: i64,
    pub alloc_pods: i64,
    /// What the pods here request.
    pub req_cpu: i64,
    pub req_memory: i64,
    pub req_ephemeral: i64,
    pub req_scalar: Vec<(String, i64)>,
    /// Requests with unset container requests counted as defaults (for scoring).
    pub nonzero_cpu: i64,
    pub nonzero_memory: i64,
    pub pod_count: i64,
    pub ports: Vec<HostPort>,
    pub pods: Vec<Arc<PodInfo>>,
    /// Pods per controlling owner (owner uid symbol, count), not counting terminating pods.
    pub owners: Vec<(Sym, u32)>,
}

impl NodeInfo {
    fn empty(name: &str) -> NodeInfo {
        NodeInfo {
            name: name.to_string(),
            live: false,
            labels: Vec::new(),
            facts: NodeFacts {
                name: name.to_string(),
                ..Default::default()
            },
            prefer_no_schedule: false,
            alloc_cpu: 0,
            alloc_memory: 0,
            alloc_ephemeral: 0,
            alloc_pods: 0,
            req_cpu: 0,
            req_memory: 0,
            req_ephemeral: 0,
            req_scalar: Vec::new(),
            nonzero_cpu: 0,
            nonzero_memory: 0,
            pod_count: 0,
            ports: Vec::new(),
            pods: Vec::new(),
            owners: Vec::new(),
        }
    }

    /// The value of label `key`, or `None`.
    #[inline]
    pub fn label(&self, key: Sym) -> Option<Sym> {
        self.labels.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// Pods of the controller `owner` on this node.
    #[inline]
    pub fn owner_count(&self, owner: Sym) -> u32 {
        self.owners
            .iter()
            .find(|(o, _)| *o == owner)
            .map_or(0, |(_, c)| *c)
    }

    /// The amount of extended resource `name` requested here.
    pub fn req_scalar(&self, name: &str) -> i64 {
        self.req_scalar
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v)
    }

    fn account(&mut self, pod: &PodInfo, owner: Sym, sign: i64) {
        let r: &Resources = &pod.requests;
        self.req_cpu += sign * r.milli_cpu;
        self.req_memory += sign * r.memory;
        self.req_ephemeral += sign * r.ephemeral;
        for (name, v) in &r.scalar {
            match self.req_scalar.iter_mut().find(|(n, _)| n == name) {
                Some((_, x)) => *x += sign * v,
                None => self.req_scalar.push((name.clone(), sign * v)),
            }
        }
        self.nonzero_cpu += sign * pod.nonzero_cpu;
        self.nonzero_memory += sign * pod.nonzero_memory;
        self.pod_count += sign;
        if owner != NO_SYM && !pod.terminating {
            match self.owners.iter().position(|(o, _)| *o == owner) {
                Some(i) => {
                    if sign > 0 {
                        self.owners[i].1 += 1;
                    } else {
                        self.owners[i].1 -= 1;
                        if self.owners[i].1 == 0 {
                            self.owners.swap_remove(i);
                        }
                    }
                }
                None if sign > 0 => self.owners.push((owner, 1)),
                None => {}
            }
        }
    }
}

/// Counts of the pods one topology spread selector matches, per node: the pods of
/// `namespace` whose labels `selector` matches, not terminating.
#[derive(Debug)]
pub struct SpreadGroup {
    pub namespace: String,
    pub selector: Selector,
    /// By node slot.
    pub counts: Vec<u32>,
}

impl SpreadGroup {
    fn matches(&self, pod: &PodInfo) -> bool {
        !pod.terminating && pod.namespace == self.namespace && self.selector.matches(&pod.labels)
    }
}

#[derive(Debug, Clone)]
struct Placed {
    node: usize,
    info: Arc<PodInfo>,
    assumed: bool,
}

/// The cluster as the scheduler sees it.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub syms: Symbols,
    pub nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    live: usize,
    pods: HashMap<String, Placed>,
    /// Placed pods that carry pod (anti-)affinity terms: uid → node slot.
    pub affinity_pods: HashMap<String, usize>,
    pub groups: Vec<SpreadGroup>,
    group_index: HashMap<(String, Selector), usize>,
    /// The symbol of the `kubernetes.io/hostname` key.
    pub hostname: Sym,
}

impl Snapshot {
    pub fn new() -> Snapshot {
        let mut s = Snapshot::default();
        s.hostname = s.syms.intern(HOSTNAME);
        s
    }

    /// Nodes the API server has.
    pub fn live_nodes(&self) -> usize {
        self.live
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }

    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The slot of `name`, created (dead) if new.
    fn slot(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.nodes.len();
        self.nodes.push(NodeInfo::empty(name));
        self.index.insert(name.to_string(), i);
        for g in &mut self.groups {
            g.counts.push(0);
        }
        i
    }

    /// Adds or updates a node; true when something scheduling depends on changed (new node,
    /// labels, taints, allocatable, cordon), which is when unschedulable pods get another try.
    pub fn upsert_node(&mut self, node: &Node) -> bool {
        self.upsert_facts(NodeFacts::from_node(node))
    }

    pub fn upsert_facts(&mut self, facts: NodeFacts) -> bool {
        let i = self.slot(&facts.name);
        let mut labels: Vec<(Sym, Sym)> = facts
            .labels
            .iter()
            .map(|(k, v)| (self.syms.intern(k), self.syms.intern(v)))
            .collect();
        labels.sort_unstable();
        let n = &mut self.nodes[i];
        if n.live && n.facts == facts {
            return false;
        }
        if !n.live {
            self.live += 1;
        }
        n.live = true;
        n.labels = labels;
        n.prefer_no_schedule = facts.taints.iter().any(|t| t.effect == "PreferNoSchedule");
        n.alloc_cpu = facts.allocatable.milli_cpu;
        n.alloc_memory = facts.allocatable.memory;
        n.alloc_ephemeral = facts.allocatable.ephemeral;
        n.alloc_pods = facts.pods;
        n.facts = facts;
        true
    }

    /// Removes a node (its slot stays, dead, while pods name it).
    pub fn remove_node(&mut self, name: &str) {
        if let Some(&i) = self.index.get(name) {
            let n = &mut self.nodes[i];
            if n.live {
                n.live = false;
                self.live -= 1;
            }
        }
    }

    /// Where pod `uid` is placed, and whether only assumed.
    pub fn placed(&self, uid: &str) -> Option<(&str, bool)> {
        self.pods
            .get(uid)
            .map(|p| (self.nodes[p.node].name.as_str(), p.assumed))
    }

    /// Pods placed (bound or assumed).
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// Accounts a bound pod on its node (replacing what was known of it).
    pub fn add_pod(&mut self, info: Arc<PodInfo>) {
        let Some(node) = info.node_name.clone() else {
            return;
        };
        let i = self.slot(&node);
        self.place(info, i, false);
    }

    /// Accounts `info` on node slot `node` before its binding is confirmed, so the next
    /// decision sees it.
    pub fn assume(&mut self, info: Arc<PodInfo>, node: usize) {
        self.place(info, node, true);
    }

    /// Drops an assumption that did not come true (the binding failed). A pod the watch has
    /// meanwhile shown bound is left alone.
    pub fn forget(&mut self, uid: &str) {
        if self.pods.get(uid).is_some_and(|p| p.assumed) {
            self.remove_pod(uid);
        }
    }

    fn place(&mut self, info: Arc<PodInfo>, node: usize, assumed: bool) {
        self.remove_pod(&info.uid);
        let owner = match &info.owner {
            Some(o) => self.syms.intern(o),
            None => NO_SYM,
        };
        for g in &mut self.groups {
            if g.matches(&info) {
                g.counts[node] += 1;
            }
        }
        if info.has_pod_affinity() {
            self.affinity_pods.insert(info.uid.clone(), node);
        }
        let n = &mut self.nodes[node];
        n.account(&info, owner, 1);
        n.ports.extend(info.host_ports.iter().copied());
        n.pods.push(info.clone());
        self.pods.insert(
            info.uid.clone(),
            Placed {
                node,
                info,
                assumed,
            },
        );
    }

    /// Removes a pod (deleted, finished, or re-placed).
    pub fn remove_pod(&mut self, uid: &str) {
        let Some(p) = self.pods.remove(uid) else {
            return;
        };
        let owner = match &p.info.owner {
            Some(o) => self.syms.get(o),
            None => NO_SYM,
        };
        for g in &mut self.groups {
            if g.matches(&p.info) {
                g.counts[p.node] -= 1;
            }
        }
        self.affinity_pods.remove(uid);
        let n = &mut self.nodes[p.node];
        n.account(&p.info, owner, -1);
        for hp in &p.info.host_ports {
            if let Some(j) = n.ports.iter().position(|x| x == hp) {
                n.ports.swap_remove(j);
            }
        }
        if let Some(j) = n.pods.iter().position(|x| x.uid == uid) {
            n.pods.swap_remove(j);
        }
    }

    /// The pod placed under `uid`.
    pub fn pod(&self, uid: &str) -> Option<&Arc<PodInfo>> {
        self.pods.get(uid).map(|p| &p.info)
    }

    /// Makes sure every spread constraint of `pod` has its counts (a new selector is counted
    /// once over all placed pods, then kept up to date).
    pub fn ensure_groups(&mut self, pod: &PodInfo) {
        for c in &pod.spread {
            if let Some(sel) = &c.selector {
                self.group(&pod.namespace, sel);
            }
        }
    }

    /// The index of the spread group of (`namespace`, `selector`), created if new.
    pub fn group(&mut self, namespace: &str, selector: &Selector) -> usize {
        let key = (namespace.to_string(), selector.clone());
        if let Some(&g) = self.group_index.get(&key) {
            return g;
        }
        let mut g = SpreadGroup {
            namespace: namespace.to_string(),
            selector: selector.clone(),
            counts: vec![0; self.nodes.len()],
        };
        for p in self.pods.values() {
            if g.matches(&p.info) {
                g.counts[p.node] += 1;
            }
        }
        let i = self.groups.len();
        self.groups.push(g);
        self.group_index.insert(key, i);
        i
    }

    /// The spread group of (`namespace`, `selector`), if counted.
    pub fn find_group(&self, namespace: &str, selector: &Selector) -> Option<usize> {
        // Avoid building a key for the common miss: groups are few.
        self.groups
            .iter()
            .position(|g| g.namespace == namespace && g.selector == *selector)
    }

    /// Every placed pod with its node slot.
    pub fn placed_pods(&self) -> impl Iterator<Item = (&PodInfo, usize)> {
        self.pods.values().map(|p| (&*p.info, p.node))
    }

    /// Taints of node slot `i`.
    pub fn taints(&self, i: usize) -> &[Taint] {
        &self.nodes[i].facts.taints
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod};

    #[test]
    fn pods_are_accounted_and_unaccounted() {
        let mut s = Snapshot::new();
        s.upsert_node(&node("n1").cpu("4").memory("8Gi").build());
        let p = Arc::new(pod("a").requests("500m", "1Gi").on_node("n1").info());
        s.add_pod(p.clone());
        let n = s.node("n1").unwrap();
        assert_eq!((n.req_cpu, n.req_memory, n.pod_count), (500, 1 << 30, 1));
        // The same pod again replaces, never double counts.
        s.add_pod(p);
        assert_eq!(s.node("n1").unwrap().req_cpu, 500);
        s.remove_pod("a-uid");
        let n = s.node("n1").unwrap();
        assert_eq!((n.req_cpu, n.req_memory, n.pod_count), (0, 0, 0));
    }

    #[test]
    fn forgetting_an_assumption_leaves_a_confirmed_pod() {
        let mut s = Snapshot::new();
        s.upsert_node(&node("n1").build());
        let p = Arc::new(pod("a").requests("1", "1Gi").info());
        s.assume(p.clone(), 0);
        assert_eq!(s.placed("a-uid"), Some(("n1", true)));
        s.forget("a-uid");
        assert_eq!(s.placed("a-uid"), None);
        s.assume(p, 0);
        s.add_pod(Arc::new(pod("a").requests("1", "1Gi").on_node("n1").info()));
        s.forget("a-uid");
        assert_eq!(s.placed("a-uid"), Some(("n1", false)));
    }

    #[test]
    fn spread_groups_count_existing_and_new_pods() {
        let mut s = Snapshot::new();
        s.upsert_node(&node("n1").build());
        s.upsert_node(&node("n2").build());
        s.add_pod(Arc::new(pod("a").label("app", "web").on_node("n1").info()));
        s.add_pod(Arc::new(pod("b").label("app", "db").on_node("n1").info()));
        let g = s.group("default", &Selector::parse("app=web").unwrap());
        assert_eq!(s.groups[g].counts, vec![1, 0]);
        s.add_pod(Arc::new(pod("c").label("app", "web").on_node("n2").info()));
        s.add_pod(Arc::new(
            pod("d")
                .label("app", "web")
                .namespace("other")
                .on_node("n2")
                .info(),
        ));
        assert_eq!(s.groups[g].counts, vec![1, 1]);
        s.remove_pod("a-uid");
        assert_eq!(s.groups[g].counts, vec![0, 1]);
    }

    #[test]
    fn node_updates_report_relevant_changes_only() {
        let mut s = Snapshot::new();
        assert!(s.upsert_node(&node("n1").cpu("4").build()));
        assert!(!s.upsert_node(&node("n1").cpu("4").build()));
        assert!(s.upsert_node(&node("n1").cpu("8").build()));
        assert!(s.upsert_node(&node("n1").cpu("8").label("zone", "a").build()));
        s.remove_node("n1");
        assert_eq!(s.live_nodes(), 0);
        assert!(s.upsert_node(&node("n1").cpu("8").label("zone", "a").build()));
        assert_eq!(s.live_nodes(), 1);
    }
}
