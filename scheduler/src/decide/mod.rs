//! The decision: from a pod and a [`Snapshot`], the node it should go to or why it fits
//! nowhere. No I/O, no clock; the only state is where the next search starts.
//!
//! It runs kube-scheduler's default profile:
//!
//! - **Filters**, in kube-scheduler's order, the first failing one naming the node's reason:
//!   NodeUnschedulable, TaintToleration (NoSchedule and NoExecute), NodeAffinity (nodeSelector
//!   and required node affinity), NodePorts, NodeResourcesFit (pods, cpu, memory,
//!   ephemeral-storage, extended resources), PodTopologySpread (DoNotSchedule), and
//!   InterPodAffinity (required affinity, anti-affinity, and existing pods' anti-affinity).
//! - **Scores**, each normalised to 0..100 and weighted as the default profile weighs them:
//!   TaintToleration ×3 (PreferNoSchedule), NodeAffinity ×2 (preferred terms),
//!   NodeResourcesFit ×1 (LeastAllocated over cpu and memory), NodeResourcesBalancedAllocation
//!   ×1, PodTopologySpread ×2 (ScheduleAnyway constraints, or spreading the pods of one
//!   controller over nodes when the pod has no constraints: kube-scheduler's system default
//!   constraint on the hostname, maxSkew 3, with the controller owner standing in for the
//!   selectors of the Services and ReplicaSets that select the pod), InterPodAffinity ×2
//!   (preferred terms both ways, and existing pods' required affinity at weight 1).
//!
//! **Sampling**, as kube-scheduler's `percentageOfNodesToScore`: the filter stops once it has
//! found `max(100, n × p%)` feasible nodes, with `p` adaptive (`max(5, 50 − n/125)`) unless
//! configured, and the next pod's search starts where this one stopped, so the whole cluster
//! is covered in turn. Only the nodes found are scored. With 5,000 nodes that is 500 of them.
//! When nothing is feasible every node was looked at, and a second pass collects every node's
//! reasons for the message.
//!
//! Ties between best-scored nodes go to the first found (kube-scheduler picks one at random;
//! the rotating start spreads them as well, and keeps decisions reproducible).

use std::collections::{HashMap, HashSet};

use crate::info::{
    tolerated, AffinityTerm, NodeExpr, NodeOp, NodeTerm, PodInfo, TAINT_UNSCHEDULABLE,
};
use crate::snapshot::{NodeInfo, Snapshot, Sym, Symbols, NO_SYM};
use crate::unschedulable::{self as u, Fail, Unschedulable};

/// kube-scheduler's `minFeasibleNodesToFind`.
const MIN_FEASIBLE: usize = 100;
/// kube-scheduler's `minFeasibleNodesPercentageToFind`.
const MIN_PERCENTAGE: i64 = 5;
const MAX_SCORE: i64 = 100;

const WEIGHT_TAINT: i64 = 3;
const WEIGHT_NODE_AFFINITY: i64 = 2;
const WEIGHT_FIT: i64 = 1;
const WEIGHT_BALANCED: i64 = 1;
const WEIGHT_SPREAD: i64 = 2;
const WEIGHT_INTER_POD: i64 = 2;
/// The weight of an existing pod's required affinity term that matches the incoming pod
/// (kube-scheduler's `hardPodAffinityWeight`).
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;
/// maxSkew of the system default hostname constraint.
const DEFAULT_SPREAD_SKEW: i32 = 3;

/// How many feasible nodes to find before scoring, out of `all` (kube-scheduler's
/// `numFeasibleNodesToFind`): every node below 100, else `all × p%` but at least 100, where
/// `p` is `percentage` or, when unset, `max(5, 50 − all/125)`.
pub fn feasible_to_find(all: usize, percentage: Option<u32>) -> usize {
    if all < MIN_FEASIBLE {
        return all;
    }
    let pct = match percentage {
        Some(p) if p > 0 => i64::from(p.min(100)),
        _ => (50 - all as i64 / 125).max(MIN_PERCENTAGE),
    };
    ((all as i64 * pct / 100) as usize).max(MIN_FEASIBLE)
}

/// Decides pod after pod, keeping where the next search starts and buffers for the scores.
#[derive(Debug, Default)]
pub struct Decider {
    next_start: usize,
    percentage: Option<u32>,
    feasible: Vec<usize>,
    rows: Vec<Row>,
}

/// Raw scores of one feasible node.
#[derive(Debug, Clone, Copy, Default)]
struct Row {
    node: usize,
    /// Weighted resource scores (already 0..100 each).
    base: i64,
    taint: i64,
    node_affinity: i64,
    /// `None`: ignored by the spread score (lacks a topology key).
    spread: Option<i64>,
    inter_pod: i64,
}

/// Decides one pod on a fresh [`Decider`]: the pure form, for tests and one-off use. Makes sure
/// the pod's spread counts exist first.
pub fn schedule(pod: &PodInfo, snap: &mut Snapshot) -> Result<String, Unschedulable> {
    snap.ensure_groups(pod);
    Decider::new(None)
        .decide(pod, snap)
        .map(|i| snap.nodes[i].name.clone())
}

impl Decider {
    /// `percentage`: percentageOfNodesToScore (None: adaptive).
    pub fn new(percentage: Option<u32>) -> Decider {
        Decider {
            percentage,
            ..Default::default()
        }
    }

    /// The node slot `pod` should go to, or why it fits nowhere. The pod's spread groups
    /// must exist ([`Snapshot::ensure_groups`]).
    pub fn decide(&mut self, pod: &PodInfo, snap: &Snapshot) -> Result<usize, Unschedulable> {
        let live = snap.live_nodes();
        if live == 0 {
            return Err(Unschedulable::default());
        }
        let pre = Pre::new(pod, snap);
        let slots = snap.nodes.len();
        let to_find = feasible_to_find(live, self.percentage);
        self.feasible.clear();
        let start = self.next_start % slots;
        let mut advanced = slots;
        for k in 0..slots {
            let i = if start + k >= slots {
                start + k - slots
            } else {
                start + k
            };
            let n = &snap.nodes[i];
            if !n.live {
                continue;
            }
            if pre.filter(i, n, snap).is_ok() {
                self.feasible.push(i);
                if self.feasible.len() >= to_find {
                    advanced = k + 1;
                    break;
                }
            }
        }
        self.next_start = (start + advanced) % slots;
        if self.feasible.is_empty() {
            return Err(pre.diagnose(snap));
        }
        if self.feasible.len() == 1 {
            return Ok(self.feasible[0]);
        }
        Ok(self.score(&pre, snap))
    }

    fn score(&mut self, pre: &Pre<'_>, snap: &Snapshot) -> usize {
        let pod = pre.pod;
        self.rows.clear();
        let spread = pre.soft_spread(&self.feasible, snap);
        let (mut max_taint, mut max_aff) = (0i64, 0i64);
        for &i in &self.feasible {
            let n = &snap.nodes[i];
            let base = WEIGHT_FIT * least_allocated(pod, n) + WEIGHT_BALANCED * balanced(pod, n);
            let taint = if n.prefer_no_schedule {
                untolerated_prefer_no_schedule(pod, n)
            } else {
                0
            };
            let node_affinity = pre
                .preferred
                .iter()
                .filter(|(_, t)| t.matches(n, &snap.syms))
                .map(|(w, _)| i64::from(*w))
                .sum::<i64>();
            max_taint = max_taint.max(taint);
            max_aff = max_aff.max(node_affinity);
            self.rows.push(Row {
                node: i,
                base,
                taint,
                node_affinity,
                spread: spread.as_ref().and_then(|s| s.raw(i, n, snap)),
                inter_pod: pre.inter_pod_raw(n),
            });
        }
        // Normalise: TaintToleration reversed over the max; NodeAffinity over the max;
        // PodTopologySpread as (max + min − s) / max; InterPodAffinity over (max − min).
        let (mut smin, mut smax) = (i64::MAX, 0i64);
        let (mut imin, mut imax) = (i64::MAX, i64::MIN);
        for r in &self.rows {
            if let Some(s) = r.spread {
                smin = smin.min(s);
                smax = smax.max(s);
            }
            imin = imin.min(r.inter_pod);
            imax = imax.max(r.inter_pod);
        }
        let mut best = (i64::MIN, 0usize);
        for r in &self.rows {
            let taint = if max_taint == 0 {
                MAX_SCORE
            } else {
                MAX_SCORE - MAX_SCORE * r.taint / max_taint
            };
            let node_affinity = if max_aff == 0 {
                0
            } else {
                MAX_SCORE * r.node_affinity / max_aff
            };
            let spread_score = match (spread.is_some(), r.spread) {
                (false, _) | (true, None) => 0,
                (true, Some(_)) if smax == 0 => MAX_SCORE,
                (true, Some(s)) => MAX_SCORE * (smax + smin - s) / smax,
            };
            let inter_pod = if imax > imin {
                (MAX_SCORE as f64 * ((r.inter_pod - imin) as f64 / (imax - imin) as f64)) as i64
            } else {
                0
            };
            let total = r.base
                + WEIGHT_TAINT * taint
                + WEIGHT_NODE_AFFINITY * node_affinity
                + WEIGHT_SPREAD * spread_score
                + WEIGHT_INTER_POD * inter_pod;
            if total > best.0 {
                best = (total, r.node);
            }
        }
        best.1
    }
}

/// NodeResourcesFit's LeastAllocated over cpu and memory (weight 1 each), on requests with
/// unset container requests counted as defaults.
fn least_allocated(pod: &PodInfo, n: &NodeInfo) -> i64 {
    fn one(requested: i64, capacity: i64) -> i64 {
        if capacity == 0 || requested > capacity {
            0
        } else {
            (capacity - requested) * MAX_SCORE / capacity
        }
    }
    (one(n.nonzero_cpu + pod.nonzero_cpu, n.alloc_cpu)
        + one(n.nonzero_memory + pod.nonzero_memory, n.alloc_memory))
        / 2
}

/// NodeResourcesBalancedAllocation over cpu and memory: 100 × (1 − the standard deviation of
/// the requested fractions), on actual requests.
fn balanced(pod: &PodInfo, n: &NodeInfo) -> i64 {
    let frac = |req: i64, alloc: i64| (alloc > 0).then(|| (req as f64 / alloc as f64).min(1.0));
    let cpu = frac(n.req_cpu + pod.requests.milli_cpu, n.alloc_cpu);
    let mem = frac(n.req_memory + pod.requests.memory, n.alloc_memory);
    let std = match (cpu, mem) {
        (Some(a), Some(b)) => ((a - b) / 2.0).abs(),
        _ => 0.0,
    };
    ((1.0 - std) * MAX_SCORE as f64) as i64
}

/// PreferNoSchedule taints of `n` the pod does not tolerate (through tolerations of effect
/// PreferNoSchedule or of any effect).
fn untolerated_prefer_no_schedule(pod: &PodInfo, n: &NodeInfo) -> i64 {
    n.facts
        .taints
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule")
        .filter(|t| {
            !pod.tolerations.iter().any(|tol| {
                matches!(
                    tol.effect.as_deref(),
                    None | Some("") | Some("PreferNoSchedule")
                ) && crate::info::tolerates(tol, t)
            })
        })
        .count() as i64
}

/// A node-selector requirement compiled against the snapshot's symbols.
#[derive(Debug)]
struct CExpr {
    key: Sym,
    op: NodeOp,
    values: Vec<Sym>,
    /// The bound of Gt and Lt (`None`: not one integer, matches nothing).
    bound: Option<i64>,
}

#[derive(Debug)]
struct CTerm {
    exprs: Vec<CExpr>,
    fields: Vec<NodeExpr>,
    empty: bool,
}

impl CTerm {
    fn compile(t: &NodeTerm, syms: &Symbols) -> CTerm {
        CTerm {
            exprs: t
                .exprs
                .iter()
                .map(|e| CExpr {
                    key: syms.get(&e.key),
                    op: e.op,
                    values: e.values.iter().map(|v| syms.get(v)).collect(),
                    bound: match e.values.as_slice() {
                        [v] => v.parse().ok(),
                        _ => None,
                    },
                })
                .collect(),
            fields: t.fields.clone(),
            empty: t.exprs.is_empty() && t.fields.is_empty(),
        }
    }

    #[inline]
    fn matches(&self, n: &NodeInfo, syms: &Symbols) -> bool {
        if self.empty {
            return false;
        }
        self.exprs.iter().all(|e| {
            let v = n.label(e.key);
            match e.op {
                NodeOp::In => v.is_some_and(|v| e.values.contains(&v)),
                NodeOp::NotIn => v.is_none_or(|v| !e.values.contains(&v)),
                NodeOp::Exists => v.is_some(),
                NodeOp::DoesNotExist => v.is_none(),
                NodeOp::Gt | NodeOp::Lt => {
                    let (Some(v), Some(bound)) = (v, e.bound) else {
                        return false;
                    };
                    let Ok(x) = syms.name(v).parse::<i64>() else {
                        return false;
                    };
                    if e.op == NodeOp::Gt {
                        x > bound
                    } else {
                        x < bound
                    }
                }
                NodeOp::Invalid => false,
            }
        }) && self.fields.iter().all(|f| {
            f.key == "metadata.name"
                && match f.op {
                    NodeOp::In => f.values.contains(&n.name),
                    NodeOp::NotIn => !f.values.contains(&n.name),
                    _ => false,
                }
        })
    }
}

/// nodeSelector and required node affinity, compiled.
#[derive(Debug)]
struct Matcher {
    selector: Vec<(Sym, Sym)>,
    required: Option<Vec<CTerm>>,
}

impl Matcher {
    fn compile(pod: &PodInfo, syms: &Symbols) -> Matcher {
        Matcher {
            selector: pod
                .node_selector
                .iter()
                .map(|(k, v)| (syms.get(k), syms.get(v)))
                .collect(),
            required: pod
                .required_terms
                .as_ref()
                .map(|ts| ts.iter().map(|t| CTerm::compile(t, syms)).collect()),
        }
    }

    #[inline]
    fn matches(&self, n: &NodeInfo, syms: &Symbols) -> bool {
        self.selector.iter().all(|&(k, v)| n.label(k) == Some(v))
            && self
                .required
                .as_ref()
                .is_none_or(|ts| ts.iter().any(|t| t.matches(n, syms)))
    }
}

/// How a spread constraint counts pods on a node.
#[derive(Debug, Clone, Copy)]
enum Counter {
    Group(usize),
    Owner(Sym),
}

impl Counter {
    #[inline]
    fn count(self, i: usize, n: &NodeInfo, snap: &Snapshot) -> u32 {
        match self {
            Counter::Group(g) => snap.groups[g].counts[i],
            Counter::Owner(o) => n.owner_count(o),
        }
    }
}

/// A DoNotSchedule constraint with its global minimum over eligible domains.
#[derive(Debug)]
struct Hard {
    key: Sym,
    counter: Counter,
    max_skew: i64,
    self_match: i64,
    /// `None`: no eligible domain (every node passes the skew check).
    min: Option<i64>,
    /// Counts per domain, for keys other than the hostname.
    domains: Option<HashMap<Sym, u32>>,
}

impl Hard {
    #[inline]
    fn count(&self, i: usize, n: &NodeInfo, value: Sym, snap: &Snapshot) -> i64 {
        match &self.domains {
            None => i64::from(self.counter.count(i, n, snap)),
            Some(d) => i64::from(d.get(&value).copied().unwrap_or(0)),
        }
    }
}

/// A ScheduleAnyway constraint (or the default owner constraint).
#[derive(Debug)]
struct Soft {
    key: Sym,
    counter: Counter,
    max_skew: i32,
    domains: Option<HashMap<Sym, u32>>,
}

/// The soft spread constraints of one decision, with their normalising weights.
#[derive(Debug)]
struct SoftSpread<'p> {
    soft: &'p [Soft],
    weights: Vec<f64>,
    /// Nodes lacking a key are ignored (explicit constraints) rather than counted as 0.
    require_all: bool,
}

impl SoftSpread<'_> {
    fn raw(&self, i: usize, n: &NodeInfo, snap: &Snapshot) -> Option<i64> {
        let mut score = 0.0;
        for (c, w) in self.soft.iter().zip(&self.weights) {
            let Some(v) = n.label(c.key) else {
                if self.require_all {
                    return None;
                }
                continue;
            };
            let cnt = match &c.domains {
                None => c.counter.count(i, n, snap),
                Some(d) => d.get(&v).copied().unwrap_or(0),
            };
            score += f64::from(cnt) * w + f64::from(c.max_skew - 1);
        }
        Some(score.round() as i64)
    }
}

/// What one decision precomputes: kube-scheduler's PreFilter and PreScore state.
struct Pre<'a> {
    pod: &'a PodInfo,
    matcher: Matcher,
    trivial_matcher: bool,
    tolerates_unschedulable: bool,
    hard: Vec<Hard>,
    soft: Vec<Soft>,
    soft_explicit: bool,
    preferred: Vec<(i32, CTerm)>,
    /// Required affinity: (key, value) pairs whose domain holds a pod matching every term.
    affinity: Option<HashSet<(Sym, Sym)>>,
    affinity_keys: Vec<Sym>,
    affinity_self: bool,
    /// Required anti-affinity: (key, value) pairs whose domain holds a matching pod.
    anti: Vec<(Sym, HashSet<Sym>)>,
    /// Domains where a placed pod's required anti-affinity matches this pod.
    existing_anti: Vec<(Sym, Sym)>,
    /// Preferred inter-pod scores by (key, value), and the keys.
    inter_pod: HashMap<(Sym, Sym), i64>,
    inter_pod_keys: Vec<Sym>,
}

impl<'a> Pre<'a> {
    fn new(pod: &'a PodInfo, snap: &Snapshot) -> Pre<'a> {
        let syms = &snap.syms;
        let matcher = Matcher::compile(pod, syms);
        let trivial_matcher = matcher.selector.is_empty() && matcher.required.is_none();
        let unschedulable_taint = k8s_openapi::api::core::v1::Taint {
            key: TAINT_UNSCHEDULABLE.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let mut pre = Pre {
            pod,
            matcher,
            trivial_matcher,
            tolerates_unschedulable: tolerated(&pod.tolerations, &unschedulable_taint),
            hard: Vec::new(),
            soft: Vec::new(),
            soft_explicit: !pod.spread.is_empty(),
            preferred: pod
                .preferred_terms
                .iter()
                .map(|(w, t)| (*w, CTerm::compile(t, syms)))
                .collect(),
            affinity: None,
            affinity_keys: Vec::new(),
            affinity_self: false,
            anti: Vec::new(),
            existing_anti: Vec::new(),
            inter_pod: HashMap::new(),
            inter_pod_keys: Vec::new(),
        };
        pre.spread(snap);
        pre.pod_affinity(snap);
        pre
    }

    /// Whether node `n` counts as a domain of a spread constraint (the node inclusion
    /// policies).
    fn eligible(
        &self,
        n: &NodeInfo,
        key: Sym,
        honor_affinity: bool,
        honor_taints: bool,
        snap: &Snapshot,
    ) -> Option<Sym> {
        if !n.live {
            return None;
        }
        let v = n.label(key)?;
        if honor_affinity && !self.trivial_matcher && !self.matcher.matches(n, &snap.syms) {
            return None;
        }
        if honor_taints && self.untolerated_taint(n).is_some() {
            return None;
        }
        Some(v)
    }

    fn spread(&mut self, snap: &Snapshot) {
        let pod = self.pod;
        for c in &pod.spread {
            let key = snap.syms.get(&c.topology_key);
            let counter = match &c.selector {
                Some(sel) => match snap.find_group(&pod.namespace, sel) {
                    Some(g) => Some(Counter::Group(g)),
                    None => {
                        debug_assert!(false, "spread group not prepared");
                        None
                    }
                },
                None => None,
            };
            let hostname = key == snap.hostname;
            // Per-domain counts (keys other than the hostname), over eligible nodes.
            let domains = (!hostname).then(|| {
                let mut d: HashMap<Sym, u32> = HashMap::new();
                for (i, n) in snap.nodes.iter().enumerate() {
                    if let Some(v) = self.eligible(n, key, c.honor_affinity, c.honor_taints, snap) {
                        let cnt = counter.map_or(0, |ct| ct.count(i, n, snap));
                        *d.entry(v).or_default() += cnt;
                    }
                }
                d
            });
            if c.hard {
                let min_domains = c.min_domains.unwrap_or(1).max(1) as usize;
                let min = match &domains {
                    Some(d) => {
                        let m = d.values().min().map(|m| i64::from(*m));
                        if d.len() < min_domains {
                            m.map(|_| 0)
                        } else {
                            m
                        }
                    }
                    None => {
                        // The hostname: stop at the first eligible node with none.
                        let mut min: Option<i64> = None;
                        let mut seen = 0usize;
                        for (i, n) in snap.nodes.iter().enumerate() {
                            if self
                                .eligible(n, key, c.honor_affinity, c.honor_taints, snap)
                                .is_none()
                            {
                                continue;
                            }
                            seen += 1;
                            let cnt = i64::from(counter.map_or(0, |ct| ct.count(i, n, snap)));
                            min = Some(min.map_or(cnt, |m: i64| m.min(cnt)));
                            if cnt == 0 {
                                break;
                            }
                        }
                        if min.is_some() && min != Some(0) && seen < min_domains {
                            Some(0)
                        } else {
                            min
                        }
                    }
                };
                self.hard.push(Hard {
                    key,
                    counter: counter.unwrap_or(Counter::Owner(NO_SYM)),
                    max_skew: i64::from(c.max_skew),
                    self_match: i64::from(c.self_match),
                    min,
                    domains,
                });
            } else {
                self.soft.push(Soft {
                    key,
                    counter: counter.unwrap_or(Counter::Owner(NO_SYM)),
                    max_skew: c.max_skew,
                    domains,
                });
            }
        }
        if pod.spread.is_empty() {
            if let Some(owner) = &pod.owner {
                let o = snap.syms.get(owner);
                // No pod of this owner is placed: every node would score the same.
                if o != NO_SYM {
                    self.soft.push(Soft {
                        key: snap.hostname,
                        counter: Counter::Owner(o),
                        max_skew: DEFAULT_SPREAD_SKEW,
                        domains: None,
                    });
                }
            }
        }
    }

    fn pod_affinity(&mut self, snap: &Snapshot) {
        let pod = self.pod;
        let syms = &snap.syms;
        let node_value = |slot: usize, key: &str| snap.nodes[slot].label(syms.get(key));
        if !pod.affinity.is_empty() || !pod.anti_affinity.is_empty() {
            let mut aff = HashSet::new();
            let mut anti: Vec<(Sym, HashSet<Sym>)> = pod
                .anti_affinity
                .iter()
                .map(|t| (syms.get(&t.topology_key), HashSet::new()))
                .collect();
            for (p, slot) in snap.placed_pods() {
                if !pod.affinity.is_empty() && pod.affinity.iter().all(|t| t.matches(p)) {
                    for t in &pod.affinity {
                        if let Some(v) = node_value(slot, &t.topology_key) {
                            aff.insert((syms.get(&t.topology_key), v));
                        }
                    }
                }
                for (t, (_, set)) in pod.anti_affinity.iter().zip(anti.iter_mut()) {
                    if t.matches(p) {
                        if let Some(v) = node_value(slot, &t.topology_key) {
                            set.insert(v);
                        }
                    }
                }
            }
            if !pod.affinity.is_empty() {
                self.affinity_keys = pod
                    .affinity
                    .iter()
                    .map(|t| syms.get(&t.topology_key))
                    .collect();
                self.affinity_self = pod.affinity.iter().all(|t| t.matches(pod));
                self.affinity = Some(aff);
            }
            self.anti = anti;
        }
        // Placed pods' terms about this pod: required anti-affinity (a filter), and preferred
        // terms and required affinity (scores).
        let add = |map: &mut HashMap<(Sym, Sym), i64>, slot: usize, t: &AffinityTerm, w: i64| {
            if let Some(v) = node_value(slot, &t.topology_key) {
                *map.entry((syms.get(&t.topology_key), v)).or_default() += w;
            }
        };
        let mut scores = HashMap::new();
        for (uid, &slot) in &snap.affinity_pods {
            let Some(p) = snap.pod(uid) else { continue };
            for t in &p.anti_affinity {
                if t.matches(pod) {
                    if let Some(v) = node_value(slot, &t.topology_key) {
                        self.existing_anti.push((syms.get(&t.topology_key), v));
                    }
                }
            }
            for t in &p.affinity {
                if t.matches(pod) {
                    add(&mut scores, slot, t, HARD_POD_AFFINITY_WEIGHT);
                }
            }
            for (w, t) in &p.preferred_affinity {
                if t.matches(pod) {
                    add(&mut scores, slot, t, i64::from(*w));
                }
            }
            for (w, t) in &p.preferred_anti_affinity {
                if t.matches(pod) {
                    add(&mut scores, slot, t, -i64::from(*w));
                }
            }
        }
        if !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty() {
            for (p, slot) in snap.placed_pods() {
                for (w, t) in &pod.preferred_affinity {
                    if t.matches(p) {
                        add(&mut scores, slot, t, i64::from(*w));
                    }
                }
                for (w, t) in &pod.preferred_anti_affinity {
                    if t.matches(p) {
                        add(&mut scores, slot, t, -i64::from(*w));
                    }
                }
            }
        }
        let mut keys: Vec<Sym> = scores.keys().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        keys.dedup();
        self.inter_pod = scores;
        self.inter_pod_keys = keys;
    }

    #[inline]
    fn untolerated_taint(&self, n: &NodeInfo) -> Option<usize> {
        n.facts.taints.iter().position(|t| {
            (t.effect == "NoSchedule" || t.effect == "NoExecute")
                && !tolerated(&self.pod.tolerations, t)
        })
    }

    /// kube-scheduler's filters on one node, in its order; the first failure.
    #[inline]
    fn filter(&self, i: usize, n: &NodeInfo, snap: &Snapshot) -> Result<(), Fail> {
        let pod = self.pod;
        if n.facts.unschedulable && !self.tolerates_unschedulable {
            return Err(Fail::Unschedulable);
        }
        if !n.facts.taints.is_empty() {
            if let Some(j) = self.untolerated_taint(n) {
                return Err(Fail::Taint(j as u16));
            }
        }
        if !self.trivial_matcher && !self.matcher.matches(n, &snap.syms) {
            return Err(Fail::NodeAffinity);
        }
        if !pod.host_ports.is_empty()
            && pod
                .host_ports
                .iter()
                .any(|p| n.ports.iter().any(|q| p.conflicts(q)))
        {
            return Err(Fail::Ports);
        }
        if !fits(pod, n) {
            return Err(Fail::Resources);
        }
        for h in &self.hard {
            let Some(v) = n.label(h.key) else {
                return Err(Fail::SpreadMissingLabel);
            };
            if let Some(min) = h.min {
                if h.count(i, n, v, snap) + h.self_match - min > h.max_skew {
                    return Err(Fail::Spread);
                }
            }
        }
        if let Some(aff) = &self.affinity {
            let mut all = true;
            for &k in &self.affinity_keys {
                match n.label(k) {
                    None => return Err(Fail::PodAffinity),
                    Some(v) => all &= aff.contains(&(k, v)),
                }
            }
            // The first of pods with affinity to themselves may go anywhere.
            if !(all || aff.is_empty() && self.affinity_self) {
                return Err(Fail::PodAffinity);
            }
        }
        for (k, set) in &self.anti {
            if n.label(*k).is_some_and(|v| set.contains(&v)) {
                return Err(Fail::PodAntiAffinity);
            }
        }
        for &(k, v) in &self.existing_anti {
            if n.label(k) == Some(v) {
                return Err(Fail::ExistingAntiAffinity);
            }
        }
        Ok(())
    }

    /// Every node's reasons, for the message of a pod that fits nowhere.
    fn diagnose(&self, snap: &Snapshot) -> Unschedulable {
        let mut out = Unschedulable {
            nodes: snap.live_nodes(),
            preempt_never: self.pod.preempt_never,
            ..Default::default()
        };
        for (i, n) in snap.nodes.iter().enumerate() {
            if !n.live {
                continue;
            }
            let Err(f) = self.filter(i, n, snap) else {
                continue;
            };
            let reasons: Vec<String> = match f {
                Fail::Unschedulable => vec![u::REASON_UNSCHEDULABLE.into()],
                Fail::Taint(j) => {
                    let t = &n.facts.taints[j as usize];
                    vec![format!(
                        "node(s) had untolerated taint {{{}: {}}}",
                        t.key,
                        t.value.as_deref().unwrap_or("")
                    )]
                }
                Fail::NodeAffinity => vec![u::REASON_NODE_AFFINITY.into()],
                Fail::Ports => vec![u::REASON_PORTS.into()],
                Fail::Resources => insufficient(self.pod, n),
                Fail::Spread => vec![u::REASON_SPREAD.into()],
                Fail::SpreadMissingLabel => vec![u::REASON_SPREAD_LABEL.into()],
                Fail::PodAffinity => vec![u::REASON_AFFINITY.into()],
                Fail::PodAntiAffinity => vec![u::REASON_ANTI_AFFINITY.into()],
                Fail::ExistingAntiAffinity => vec![u::REASON_EXISTING_ANTI_AFFINITY.into()],
            };
            out.add(&reasons, f.resolvable());
        }
        out
    }

    fn soft_spread(&self, feasible: &[usize], snap: &Snapshot) -> Option<SoftSpread<'_>> {
        if self.soft.is_empty() {
            return None;
        }
        // The normalising weight of each constraint: ln(domains among the feasible nodes + 2).
        let weights = self
            .soft
            .iter()
            .map(|c| {
                let size = if c.key == snap.hostname {
                    feasible
                        .iter()
                        .filter(|&&i| {
                            let n = &snap.nodes[i];
                            !self.soft_explicit
                                || self.soft.iter().all(|s| n.label(s.key).is_some())
                        })
                        .count()
                } else {
                    let mut vals: Vec<Sym> = feasible
                        .iter()
                        .filter_map(|&i| snap.nodes[i].label(c.key))
                        .collect();
                    vals.sort_unstable();
                    vals.dedup();
                    vals.len()
                };
                ((size + 2) as f64).ln()
            })
            .collect();
        Some(SoftSpread {
            soft: &self.soft,
            weights,
            require_all: self.soft_explicit,
        })
    }

    fn inter_pod_raw(&self, n: &NodeInfo) -> i64 {
        let mut s = 0;
        for &k in &self.inter_pod_keys {
            if let Some(v) = n.label(k) {
                s += self.inter_pod.get(&(k, v)).copied().unwrap_or(0);
            }
        }
        s
    }
}

/// NodeResourcesFit's filter.
#[inline]
fn fits(pod: &PodInfo, n: &NodeInfo) -> bool {
    if n.pod_count + 1 > n.alloc_pods {
        return false;
    }
    let r = &pod.requests;
    if r.milli_cpu > 0 && r.milli_cpu > n.alloc_cpu - n.req_cpu {
        return false;
    }
    if r.memory > 0 && r.memory > n.alloc_memory - n.req_memory {
        return false;
    }
    if r.ephemeral > 0 && r.ephemeral > n.alloc_ephemeral - n.req_ephemeral {
        return false;
    }
    r.scalar
        .iter()
        .all(|(name, v)| *v <= n.facts.allocatable.scalar(name) - n.req_scalar(name))
}

/// The resources that do not fit, worded as kube-scheduler words them.
fn insufficient(pod: &PodInfo, n: &NodeInfo) -> Vec<String> {
    let mut out = Vec::new();
    if n.pod_count + 1 > n.alloc_pods {
        out.push(u::REASON_TOO_MANY_PODS.to_string());
    }
    let r = &pod.requests;
    if r.milli_cpu > 0 && r.milli_cpu > n.alloc_cpu - n.req_cpu {
        out.push("Insufficient cpu".into());
    }
    if r.memory > 0 && r.memory > n.alloc_memory - n.req_memory {
        out.push("Insufficient memory".into());
    }
    if r.ephemeral > 0 && r.ephemeral > n.alloc_ephemeral - n.req_ephemeral {
        out.push("Insufficient ephemeral-storage".into());
    }
    for (name, v) in &r.scalar {
        if *v > n.facts.allocatable.scalar(name) - n.req_scalar(name) {
            out.push(format!("Insufficient {name}"));
        }
    }
    out
}

/// The bare resource-fit check alone, for the benchmark's anchor.
#[doc(hidden)]
pub fn fits_only(pod: &PodInfo, n: &NodeInfo) -> bool {
    fits(pod, n)
}

#[cfg(test)]
mod tests;
