//! Why a pod fits nowhere, worded as kube-scheduler words it: a histogram of per-node reasons
//! (`0/3 nodes are available: 1 node(s) had untolerated taint {k: v}, 2 Insufficient cpu.`)
//! followed by what preemption could do about it.
//!
//! Berth does not preempt. Nodes that failed for a reason preemption could remove (resources,
//! ports, pod anti-affinity, spread skew) are reported as kube-scheduler reports them when no
//! lower-priority victims exist ("No preemption victims found for incoming pod"); the others
//! as "Preemption is not helpful for scheduling".

use std::collections::BTreeMap;
use std::fmt;

/// Why one node was filtered out. `Copy` and small, so the filter loop allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fail {
    /// `spec.unschedulable` without a toleration of `node.kubernetes.io/unschedulable`.
    Unschedulable,
    /// The node's taint at this index is NoSchedule/NoExecute and not tolerated.
    Taint(u16),
    /// nodeSelector or required node affinity.
    NodeAffinity,
    /// A requested host port is taken.
    Ports,
    /// Requests do not fit (the reasons are listed by [`Fail`]'s diagnosis).
    Resources,
    /// A DoNotSchedule spread constraint would be skewed beyond maxSkew.
    Spread,
    /// The node lacks a DoNotSchedule constraint's topology key.
    SpreadMissingLabel,
    /// A required pod affinity term has no match in the node's domain.
    PodAffinity,
    /// A required pod anti-affinity term has a match in the node's domain.
    PodAntiAffinity,
    /// A pod already placed has required anti-affinity against this pod in the node's domain.
    ExistingAntiAffinity,
}

impl Fail {
    /// Whether removing pods (preemption) could make the node fit: kube-scheduler's
    /// `Unschedulable` as opposed to `UnschedulableAndUnresolvable`.
    pub fn resolvable(self) -> bool {
        matches!(
            self,
            Fail::Ports
                | Fail::Resources
                | Fail::Spread
                | Fail::PodAntiAffinity
                | Fail::ExistingAntiAffinity
        )
    }
}

pub const REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const REASON_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
pub const REASON_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
pub const REASON_SPREAD: &str = "node(s) didn't match pod topology spread constraints";
pub const REASON_SPREAD_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const REASON_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
pub const REASON_TOO_MANY_PODS: &str = "Too many pods";

/// The outcome of a pod that fits on no node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unschedulable {
    /// Nodes considered.
    pub nodes: usize,
    /// Reason → number of nodes that failed for it (a node may count under several, e.g.
    /// `Insufficient cpu` and `Insufficient memory`).
    pub reasons: BTreeMap<String, usize>,
    /// Nodes where preemption could help, were there lower-priority pods to evict.
    pub resolvable: usize,
    /// Nodes where it could not.
    pub unresolvable: usize,
    /// The pod has `preemptionPolicy: Never`.
    pub preempt_never: bool,
}

impl Unschedulable {
    /// Counts one more node that failed for `reasons`.
    pub fn add(&mut self, reasons: &[String], resolvable: bool) {
        for r in reasons {
            *self.reasons.entry(r.clone()).or_default() += 1;
        }
        if resolvable {
            self.resolvable += 1;
        } else {
            self.unresolvable += 1;
        }
    }
}

impl fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nodes == 0 {
            return f.write_str("no nodes available to schedule pods");
        }
        // kube-scheduler sorts "<count> <reason>" as strings, count included.
        let mut items: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, c)| format!("{c} {r}"))
            .collect();
        items.sort();
        write!(f, "0/{} nodes are available:", self.nodes)?;
        if !items.is_empty() {
            write!(f, " {}.", items.join(", "))?;
        }
        if self.preempt_never {
            return f.write_str(" preemption: not eligible due to preemptionPolicy=Never.");
        }
        let mut pre = Vec::new();
        if self.resolvable > 0 {
            pre.push(format!(
                "{} No preemption victims found for incoming pod",
                self.resolvable
            ));
        }
        if self.unresolvable > 0 {
            pre.push(format!(
                "{} Preemption is not helpful for scheduling",
                self.unresolvable
            ));
        }
        pre.sort();
        write!(
            f,
            " preemption: 0/{} nodes are available: {}.",
            self.nodes,
            pre.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_reads_as_kube_schedulers() {
        let mut u = Unschedulable {
            nodes: 3,
            ..Default::default()
        };
        u.add(&["Insufficient cpu".into()], true);
        u.add(&["Insufficient cpu".into()], true);
        u.add(
            &["node(s) had untolerated taint {node.kubernetes.io/unreachable: }".into()],
            false,
        );
        assert_eq!(
            u.to_string(),
            "0/3 nodes are available: 1 node(s) had untolerated taint \
             {node.kubernetes.io/unreachable: }, 2 Insufficient cpu. preemption: 0/3 nodes are \
             available: 1 Preemption is not helpful for scheduling, 2 No preemption victims \
             found for incoming pod."
        );
    }

    #[test]
    fn all_unresolvable() {
        let mut u = Unschedulable {
            nodes: 3,
            ..Default::default()
        };
        for _ in 0..3 {
            u.add(&[REASON_NODE_AFFINITY.into()], false);
        }
        assert_eq!(
            u.to_string(),
            "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. \
             preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn no_nodes_and_no_preemption() {
        assert_eq!(
            Unschedulable::default().to_string(),
            "no nodes available to schedule pods"
        );
        let mut u = Unschedulable {
            nodes: 1,
            preempt_never: true,
            ..Default::default()
        };
        u.add(&["Insufficient memory".into()], true);
        assert_eq!(
            u.to_string(),
            "0/1 nodes are available: 1 Insufficient memory. preemption: not eligible due to \
             preemptionPolicy=Never."
        );
    }
}
