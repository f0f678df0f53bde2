//! Every filter, each score's ordering, sampling, and the messages, decided exactly.

use std::sync::Arc;

use super::*;
use crate::testing::{node, pod, NodeBuilder, PodBuilder};

fn cluster(nodes: Vec<NodeBuilder>, pods: Vec<PodBuilder>) -> Snapshot {
    let mut s = Snapshot::new();
    for n in nodes {
        s.upsert_node(&n.build());
    }
    for p in pods {
        s.add_pod(Arc::new(p.info()));
    }
    s
}

fn place(p: PodBuilder, s: &mut Snapshot) -> Result<String, String> {
    schedule(&p.info(), s).map_err(|u| u.to_string())
}

/// "0/N nodes are available: <reasons>. preemption: ..." → "<reasons>".
fn reasons(msg: &str) -> &str {
    let start = msg.find(": ").unwrap() + 2;
    let end = msg.find(". preemption").unwrap();
    &msg[start..end]
}

// Filters.

#[test]
fn node_selector() {
    let mut s = cluster(
        vec![
            node("n1").label("disk", "hdd"),
            node("n2").label("disk", "ssd"),
        ],
        vec![],
    );
    assert_eq!(
        place(pod("web").selector("disk", "ssd"), &mut s).unwrap(),
        "n2"
    );
    let msg = place(pod("web").selector("disk", "nvme"), &mut s).unwrap_err();
    assert_eq!(
        msg,
        "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector. \
         preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );
    // A hostname selector pins the pod to one node.
    assert_eq!(
        place(pod("web").selector("kubernetes.io/hostname", "n2"), &mut s).unwrap(),
        "n2"
    );
}

#[test]
fn required_node_affinity_operators() {
    let mut s = cluster(
        vec![
            node("n1").label("zone", "a").label("gen", "3"),
            node("n2")
                .label("zone", "b")
                .label("gen", "5")
                .label("gpu", "yes"),
            node("n3").label("zone", "c").label("gen", "7"),
        ],
        vec![],
    );
    let on = |p: PodBuilder, s: &mut Snapshot| place(p, s).unwrap();
    assert_eq!(
        on(pod("p").require("zone", "In", &["b", "c"]), &mut s),
        "n2"
    );
    assert_eq!(
        on(pod("p").require("zone", "NotIn", &["a", "b"]), &mut s),
        "n3"
    );
    assert_eq!(on(pod("p").require("gpu", "Exists", &[]), &mut s), "n2");
    assert_eq!(on(pod("p").require("gen", "Gt", &["6"]), &mut s), "n3");
    assert_eq!(on(pod("p").require("gen", "Lt", &["4"]), &mut s), "n1");
    assert_eq!(
        on(
            pod("p")
                .require("gpu", "DoesNotExist", &[])
                .require("zone", "In", &["zz"]),
            &mut s
        ),
        "n1"
    );
    // Terms are ORed: the second one matches n3.
    assert_eq!(
        on(
            pod("p")
                .require("zone", "In", &["zz"])
                .require("gen", "Gt", &["6"]),
            &mut s
        ),
        "n3"
    );
    assert_eq!(on(pod("p").require_name("In", &["n2"]), &mut s), "n2");
    assert_eq!(
        on(pod("p").require_name("NotIn", &["n1", "n2"]), &mut s),
        "n3"
    );
    // nodeSelector and affinity must both hold.
    let msg = place(
        pod("p").selector("zone", "a").require("gpu", "Exists", &[]),
        &mut s,
    )
    .unwrap_err();
    assert_eq!(
        reasons(&msg),
        "3 node(s) didn't match Pod's node affinity/selector"
    );
}

#[test]
fn taints_and_tolerations() {
    let mut s = cluster(
        vec![
            node("n1").taint("dedicated", "db", "NoSchedule"),
            node("n2").taint("maint", "", "NoExecute"),
        ],
        vec![],
    );
    let msg = place(pod("web"), &mut s).unwrap_err();
    assert_eq!(
        msg,
        "0/2 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 1 node(s) \
         had untolerated taint {maint: }. preemption: 0/2 nodes are available: 2 Preemption is \
         not helpful for scheduling."
    );
    assert_eq!(
        place(
            pod("web").tolerate("dedicated", "Equal", "db", "NoSchedule"),
            &mut s
        )
        .unwrap(),
        "n1"
    );
    assert_eq!(
        place(pod("web").tolerate("maint", "Exists", "", ""), &mut s).unwrap(),
        "n2"
    );
    // A toleration of another value, or of another effect, does not do.
    assert!(place(pod("web").tolerate("dedicated", "Equal", "web", ""), &mut s).is_err());
    assert!(place(
        pod("web").tolerate("maint", "Exists", "", "NoSchedule"),
        &mut s
    )
    .is_err());
}

#[test]
fn prefer_no_schedule_only_scores() {
    let mut s = cluster(
        vec![
            node("n1").taint("spot", "true", "PreferNoSchedule"),
            node("n2"),
        ],
        vec![],
    );
    assert_eq!(place(pod("web"), &mut s).unwrap(), "n2");
    // Alone, the tainted node is still used.
    let mut s = cluster(
        vec![node("n1").taint("spot", "true", "PreferNoSchedule")],
        vec![],
    );
    assert_eq!(place(pod("web"), &mut s).unwrap(), "n1");
    // Tolerated, it is as good as any (ties go to the first node).
    let mut s = cluster(
        vec![
            node("n1").taint("spot", "true", "PreferNoSchedule"),
            node("n2"),
        ],
        vec![],
    );
    assert_eq!(
        place(
            pod("web").tolerate("spot", "Exists", "", "PreferNoSchedule"),
            &mut s
        )
        .unwrap(),
        "n1"
    );
}

#[test]
fn cordoned_nodes() {
    let mut s = cluster(
        vec![node("n1").unschedulable(), node("n2").unschedulable()],
        vec![],
    );
    let msg = place(pod("web"), &mut s).unwrap_err();
    assert_eq!(reasons(&msg), "2 node(s) were unschedulable");
    let tolerant = pod("ds").tolerate("node.kubernetes.io/unschedulable", "Exists", "", "");
    assert_eq!(place(tolerant, &mut s).unwrap(), "n1");
}

#[test]
fn nodes_that_are_not_ready_are_avoided_through_their_taints() {
    let mut s = cluster(
        vec![
            node("n1").not_ready(),
            node("n2").ready_unknown(),
            node("n3"),
        ],
        vec![],
    );
    assert_eq!(place(pod("web"), &mut s).unwrap(), "n3");
    s.remove_node("n3");
    let msg = place(pod("web"), &mut s).unwrap_err();
    assert_eq!(
        reasons(&msg),
        "1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, 1 node(s) had \
         untolerated taint {node.kubernetes.io/unreachable: }"
    );
    let tolerant = pod("web").tolerate("node.kubernetes.io/unreachable", "Exists", "", "");
    assert_eq!(place(tolerant, &mut s).unwrap(), "n2");
}

#[test]
fn resource_fit() {
    let mut s = cluster(
        vec![
            node("n1").cpu("2").memory("4Gi"),
            node("n2").cpu("4").memory("2Gi"),
            node("n3").cpu("8").memory("16Gi").pods(1),
        ],
        vec![
            pod("a").requests("1500m", "1Gi").on_node("n1"),
            pod("b").requests("0", "0").on_node("n3"),
        ],
    );
    // n1 has 500m left, n2 2Gi, n3 no room for another pod.
    assert_eq!(
        place(pod("web").requests("600m", "2Gi"), &mut s).unwrap(),
        "n2"
    );
    assert_eq!(
        place(pod("web").requests("500m", "3Gi"), &mut s).unwrap(),
        "n1"
    );
    let msg = place(pod("web").requests("1", "3Gi"), &mut s).unwrap_err();
    assert_eq!(
        msg,
        "0/3 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 1 Too many pods. \
         preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
    );
    // A node short of both counts under both.
    let msg = place(pod("web").requests("5", "3Gi"), &mut s).unwrap_err();
    assert_eq!(
        reasons(&msg),
        "1 Insufficient memory, 1 Too many pods, 2 Insufficient cpu"
    );
}

#[test]
fn ephemeral_storage_and_extended_resources() {
    let mut s = cluster(
        vec![
            node("n1").ephemeral("10Gi"),
            node("n2")
                .ephemeral("50Gi")
                .resource("example.com/gpu", "2"),
        ],
        vec![],
    );
    assert_eq!(
        place(pod("web").request("ephemeral-storage", "20Gi"), &mut s).unwrap(),
        "n2"
    );
    assert_eq!(
        place(pod("web").request("example.com/gpu", "1"), &mut s).unwrap(),
        "n2"
    );
    let msg = place(pod("web").request("example.com/gpu", "3"), &mut s).unwrap_err();
    assert_eq!(reasons(&msg), "2 Insufficient example.com/gpu");
    let msg = place(pod("web").request("ephemeral-storage", "60Gi"), &mut s).unwrap_err();
    assert_eq!(reasons(&msg), "2 Insufficient ephemeral-storage");
}

#[test]
fn init_containers_and_overhead_count() {
    use crate::testing::container;
    let mut s = cluster(vec![node("n1").cpu("1")], vec![]);
    let big_init = pod("web")
        .container(container("a").requests("100m", "1Mi"))
        .init_container(container("init").requests("1100m", "1Mi"));
    assert_eq!(
        reasons(&place(big_init, &mut s).unwrap_err()),
        "1 Insufficient cpu"
    );
    let overhead = pod("web").requests("950m", "1Mi").overhead("100m", "0");
    assert_eq!(
        reasons(&place(overhead, &mut s).unwrap_err()),
        "1 Insufficient cpu"
    );
    assert_eq!(
        place(
            pod("web").requests("900m", "1Mi").overhead("100m", "0"),
            &mut s
        )
        .unwrap(),
        "n1"
    );
}

#[test]
fn host_ports() {
    let mut s = cluster(
        vec![node("n1"), node("n2"), node("n3")],
        vec![
            pod("a").host_port(8080).on_node("n1"),
            pod("b").host_port_on(8080, "TCP", "10.0.0.2").on_node("n2"),
            pod("c").host_port_on(8080, "UDP", "").on_node("n3"),
        ],
    );
    // Any address conflicts with every address; another protocol does not conflict.
    assert_eq!(place(pod("web").host_port(8080), &mut s).unwrap(), "n3");
    // Distinct specific addresses do not conflict (n1 holds 0.0.0.0, so it does).
    assert_eq!(
        place(
            pod("web")
                .host_port_on(8080, "TCP", "10.0.0.3")
                .host_port_on(8080, "UDP", ""),
            &mut s
        )
        .unwrap(),
        "n2"
    );
    let msg = place(
        pod("web")
            .host_port(8080)
            .host_port_on(8080, "UDP", "10.0.0.9"),
        &mut s,
    )
    .unwrap_err();
    assert_eq!(
        msg,
        "0/3 nodes are available: 3 node(s) didn't have free ports for the requested pod \
         ports. preemption: 0/3 nodes are available: 3 No preemption victims found for \
         incoming pod."
    );
}

#[test]
fn required_pod_anti_affinity_on_the_hostname() {
    let mut s = cluster(
        vec![node("n1"), node("n2")],
        vec![
            pod("web-1").label("app", "web").on_node("n1"),
            pod("db-1")
                .label("app", "web")
                .namespace("other")
                .on_node("n2"),
        ],
    );
    let web = || {
        pod("web-2")
            .label("app", "web")
            .anti_affinity("kubernetes.io/hostname", &[("app", "web")])
    };
    // Pods of another namespace do not count.
    assert_eq!(place(web(), &mut s).unwrap(), "n2");
    s.add_pod(Arc::new(
        pod("web-3").label("app", "web").on_node("n2").info(),
    ));
    let msg = place(web(), &mut s).unwrap_err();
    assert_eq!(
        msg,
        "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules. preemption: \
         0/2 nodes are available: 2 No preemption victims found for incoming pod."
    );
}

#[test]
fn placed_pods_anti_affinity_keeps_others_away() {
    let mut s = cluster(
        vec![node("n1"), node("n2")],
        vec![pod("loner")
            .label("app", "loner")
            .anti_affinity("kubernetes.io/hostname", &[("app", "web")])
            .on_node("n1")],
    );
    assert_eq!(place(pod("web").label("app", "web"), &mut s).unwrap(), "n2");
    s.remove_node("n2");
    assert_eq!(place(pod("db").label("app", "db"), &mut s).unwrap(), "n1");
    let msg = place(pod("web").label("app", "web"), &mut s).unwrap_err();
    assert_eq!(
        reasons(&msg),
        "1 node(s) didn't satisfy existing pods anti-affinity rules"
    );
}

#[test]
fn required_pod_affinity() {
    let mut s = cluster(
        vec![
            node("n1"),
            node("n2").label("zone", "b"),
            node("n3").label("zone", "b"),
        ],
        vec![pod("cache").label("app", "cache").on_node("n2")],
    );
    let near_cache = || pod("web").affinity("kubernetes.io/hostname", &[("app", "cache")]);
    assert_eq!(place(near_cache(), &mut s).unwrap(), "n2");
    // Same zone: n2 or n3, and n1 has no zone at all.
    let zone = pod("web")
        .affinity("zone", &[("app", "cache")])
        .selector("kubernetes.io/hostname", "n3");
    assert_eq!(place(zone, &mut s).unwrap(), "n3");
    let msg = place(
        pod("web").affinity("kubernetes.io/hostname", &[("app", "nothing")]),
        &mut s,
    )
    .unwrap_err();
    assert_eq!(
        msg,
        "0/3 nodes are available: 3 node(s) didn't match pod affinity rules. preemption: 0/3 \
         nodes are available: 3 Preemption is not helpful for scheduling."
    );
    // The first of a group with affinity to itself may go anywhere.
    let first = pod("db-0")
        .label("app", "db")
        .affinity("kubernetes.io/hostname", &[("app", "db")]);
    assert_eq!(place(first, &mut s).unwrap(), "n1");
}

#[test]
fn topology_spread_do_not_schedule() {
    let mut s = cluster(
        vec![node("n1").cpu("8"), node("n2").cpu("1")],
        vec![
            pod("web-1").label("app", "web").on_node("n1"),
            pod("web-2").label("app", "web").on_node("n1"),
            pod("web-3").label("app", "web").on_node("n2"),
        ],
    );
    let web = |cpu: &str| {
        pod("web-4").label("app", "web").requests(cpu, "").spread(
            "kubernetes.io/hostname",
            1,
            true,
            &[("app", "web")],
        )
    };
    // n1 would be 3 against 1: skew 2.
    assert_eq!(place(web("100m"), &mut s).unwrap(), "n2");
    let msg = place(web("2"), &mut s).unwrap_err();
    assert_eq!(
        msg,
        "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match pod topology \
         spread constraints. preemption: 0/2 nodes are available: 2 No preemption victims \
         found for incoming pod."
    );
    // maxSkew 2 lets n1 take it.
    let relaxed = pod("web-4").label("app", "web").requests("2", "").spread(
        "kubernetes.io/hostname",
        2,
        true,
        &[("app", "web")],
    );
    assert_eq!(place(relaxed, &mut s).unwrap(), "n1");
}

#[test]
fn topology_spread_counts_only_eligible_nodes_and_needs_the_key() {
    let mut s = cluster(
        vec![
            node("n1").label("pool", "a"),
            node("n2").label("pool", "a"),
            node("n3").label("pool", "b"),
        ],
        vec![
            pod("web-1").label("app", "web").on_node("n1"),
            pod("web-2").label("app", "web").on_node("n2"),
        ],
    );
    // n3 is not in pool a, so its zero does not count: the minimum is 1, n1 is fine.
    let web = pod("web-3")
        .label("app", "web")
        .selector("pool", "a")
        .spread("kubernetes.io/hostname", 1, true, &[("app", "web")]);
    assert_eq!(place(web, &mut s).unwrap(), "n1");
}

#[test]
fn topology_spread_zone_domains() {
    let mut s = cluster(
        vec![
            node("n1").label("zone", "a"),
            node("n2").label("zone", "a"),
            node("n3").label("zone", "b"),
            node("n4"),
        ],
        vec![
            pod("web-1").label("app", "web").on_node("n1"),
            pod("web-2").label("app", "web").on_node("n3"),
            pod("web-3").label("app", "web").on_node("n3"),
        ],
    );
    let web = pod("web-4")
        .label("app", "web")
        .spread("zone", 1, true, &[("app", "web")]);
    // Zone a holds 1, zone b 2: only zone a keeps the skew at 1 (n4 has no zone); n2 is
    // the emptier of its two nodes.
    assert_eq!(place(web.clone(), &mut s).unwrap(), "n2");
    // Cordoned, zone a still counts as a domain: n3 would make zone b 3 against 1.
    s.upsert_node(&node("n1").label("zone", "a").unschedulable().build());
    s.upsert_node(&node("n2").label("zone", "a").unschedulable().build());
    let msg = place(web, &mut s).unwrap_err();
    assert_eq!(
        reasons(&msg),
        "1 node(s) didn't match pod topology spread constraints, 1 node(s) didn't match pod \
         topology spread constraints (missing required label), 2 node(s) were unschedulable"
    );
}

// Scores.

#[test]
fn least_allocated_prefers_the_emptier_node() {
    let mut s = cluster(
        vec![node("n1"), node("n2")],
        vec![pod("a").requests("2", "4Gi").on_node("n1")],
    );
    assert_eq!(
        place(pod("web").requests("500m", "512Mi"), &mut s).unwrap(),
        "n2"
    );
    // Pods without requests count as 100m and 200Mi.
    let mut s = cluster(vec![node("n1"), node("n2")], vec![pod("a").on_node("n1")]);
    assert_eq!(place(pod("web"), &mut s).unwrap(), "n2");
}

#[test]
fn balanced_allocation_breaks_a_least_allocated_tie() {
    // Both nodes end at 50 least-allocated; n2 ends balanced (cpu and memory half used).
    let mut s = cluster(
        vec![node("n1"), node("n2")],
        vec![
            pod("a").requests("2", "0").on_node("n1"),
            pod("b").requests("1", "2Gi").on_node("n2"),
        ],
    );
    assert_eq!(
        place(pod("web").requests("1", "2Gi"), &mut s).unwrap(),
        "n2"
    );
    assert_eq!(
        least_allocated(
            &pod("web").requests("1", "2Gi").info(),
            s.node("n1").unwrap()
        ),
        50
    );
    assert_eq!(
        least_allocated(
            &pod("web").requests("1", "2Gi").info(),
            s.node("n2").unwrap()
        ),
        50
    );
    assert_eq!(
        balanced(
            &pod("web").requests("1", "2Gi").info(),
            s.node("n1").unwrap()
        ),
        75
    );
    assert_eq!(
        balanced(
            &pod("web").requests("1", "2Gi").info(),
            s.node("n2").unwrap()
        ),
        100
    );
}

#[test]
fn preferred_node_affinity() {
    let mut s = cluster(
        vec![
            node("n1").label("zone", "a"),
            node("n2").label("zone", "b"),
            node("n3").label("zone", "c"),
        ],
        vec![],
    );
    let p = pod("web")
        .prefer(10, "zone", "In", &["b"])
        .prefer(50, "zone", "In", &["c"]);
    assert_eq!(place(p, &mut s).unwrap(), "n3");
    // A preference (×2 after normalising to 100) outweighs a little load.
    s.add_pod(Arc::new(
        pod("x").requests("100m", "100Mi").on_node("n2").info(),
    ));
    assert_eq!(
        place(pod("web").prefer(1, "zone", "In", &["b"]), &mut s).unwrap(),
        "n2"
    );
}

#[test]
fn pods_of_one_owner_spread_over_nodes() {
    let mut s = cluster(
        vec![node("n1"), node("n2")],
        vec![
            pod("web-1")
                .owner("rs-web")
                .requests("1", "1Gi")
                .on_node("n1"),
            pod("db-1")
                .owner("rs-db")
                .requests("1", "1Gi")
                .on_node("n2"),
        ],
    );
    assert_eq!(place(pod("web-2").owner("rs-web"), &mut s).unwrap(), "n2");
    assert_eq!(place(pod("db-2").owner("rs-db"), &mut s).unwrap(), "n1");
    // Without an owner it is a tie, the first node.
    assert_eq!(place(pod("solo"), &mut s).unwrap(), "n1");
}

#[test]
fn schedule_anyway_spread_scores() {
    let mut s = cluster(
        vec![node("n1"), node("n2"), node("n3")],
        vec![
            pod("web-1")
                .label("app", "web")
                .requests("1", "1Gi")
                .on_node("n1"),
            pod("web-2")
                .label("app", "web")
                .requests("1", "1Gi")
                .on_node("n1"),
            pod("db-1")
                .label("app", "db")
                .requests("1", "1Gi")
                .on_node("n2"),
            pod("db-2")
                .label("app", "db")
                .requests("1", "1Gi")
                .on_node("n2"),
            pod("web-3")
                .label("app", "web")
                .requests("1", "1Gi")
                .on_node("n3"),
            pod("db-3")
                .label("app", "db")
                .requests("1", "1Gi")
                .on_node("n3"),
        ],
    );
    let web = pod("web-4").label("app", "web").spread(
        "kubernetes.io/hostname",
        1,
        false,
        &[("app", "web")],
    );
    assert_eq!(place(web, &mut s).unwrap(), "n2");
}

#[test]
fn preferred_pod_affinity_and_anti_affinity() {
    let mut s = cluster(
        vec![node("n1"), node("n2")],
        vec![
            pod("other")
                .label("app", "other")
                .requests("1", "1Gi")
                .on_node("n1"),
            pod("cache")
                .label("app", "cache")
                .requests("1", "1Gi")
                .on_node("n2"),
        ],
    );
    let near = pod("web").prefer_pods(false, 50, "kubernetes.io/hostname", &[("app", "cache")]);
    assert_eq!(place(near, &mut s).unwrap(), "n2");
    let away = pod("web").prefer_pods(true, 50, "kubernetes.io/hostname", &[("app", "other")]);
    assert_eq!(place(away, &mut s).unwrap(), "n2");
    let away = pod("web").prefer_pods(true, 50, "kubernetes.io/hostname", &[("app", "cache")]);
    assert_eq!(place(away, &mut s).unwrap(), "n1");
    // A placed pod's preference for this pod attracts it too.
    let mut s = cluster(
        vec![node("n1"), node("n2")],
        vec![
            pod("x").requests("1", "1Gi").on_node("n1"),
            pod("fan")
                .requests("1", "1Gi")
                .prefer_pods(false, 80, "kubernetes.io/hostname", &[("app", "web")])
                .on_node("n2"),
        ],
    );
    assert_eq!(place(pod("web").label("app", "web"), &mut s).unwrap(), "n2");
}

// Filter order, sampling, messages.

#[test]
fn the_first_failing_filter_names_the_reason() {
    let mut s = cluster(
        vec![node("n1")
            .cpu("1")
            .taint("k", "v", "NoSchedule")
            .unschedulable()],
        vec![],
    );
    let msg = place(pod("web").requests("2", ""), &mut s).unwrap_err();
    assert_eq!(reasons(&msg), "1 node(s) were unschedulable");
    let tolerant =
        pod("web")
            .requests("2", "")
            .tolerate("node.kubernetes.io/unschedulable", "Exists", "", "");
    let msg = place(tolerant, &mut s).unwrap_err();
    assert_eq!(reasons(&msg), "1 node(s) had untolerated taint {k: v}");
}

#[test]
fn the_message_of_the_issue() {
    let mut s = cluster(
        vec![
            node("n1").cpu("1"),
            node("n2").cpu("1"),
            node("n3").cpu("8").ready_unknown(),
        ],
        vec![],
    );
    assert_eq!(
        place(pod("web").requests("2", "1Gi"), &mut s).unwrap_err(),
        "0/3 nodes are available: 1 node(s) had untolerated taint \
         {node.kubernetes.io/unreachable: }, 2 Insufficient cpu. preemption: 0/3 nodes are \
         available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found \
         for incoming pod."
    );
    assert_eq!(
        place(pod("web").requests("2", "1Gi").preempt_never(), &mut s).unwrap_err(),
        "0/3 nodes are available: 1 node(s) had untolerated taint \
         {node.kubernetes.io/unreachable: }, 2 Insufficient cpu. preemption: not eligible due to \
         preemptionPolicy=Never."
    );
    let mut empty = Snapshot::new();
    assert_eq!(
        place(pod("web"), &mut empty).unwrap_err(),
        "no nodes available to schedule pods"
    );
}

#[test]
fn nodes_to_find() {
    assert_eq!(feasible_to_find(50, None), 50);
    assert_eq!(feasible_to_find(100, None), 100);
    assert_eq!(feasible_to_find(200, None), 100);
    assert_eq!(feasible_to_find(1000, None), 420);
    assert_eq!(feasible_to_find(5000, None), 500);
    assert_eq!(feasible_to_find(10000, None), 500);
    assert_eq!(feasible_to_find(5000, Some(100)), 5000);
    assert_eq!(feasible_to_find(5000, Some(1)), 100);
}

#[test]
fn the_search_rotates_over_the_cluster() {
    let nodes: Vec<NodeBuilder> = (0..300).map(|i| node(&format!("n{i:03}"))).collect();
    let mut s = cluster(nodes, vec![]);
    let mut d = Decider::new(None);
    // 300 nodes: 48% is 144 nodes per search; ties go to the first found.
    let p = pod("web").info();
    let mut next = |s: &Snapshot| d.decide(&p, s).map(|i| s.nodes[i].name.clone()).unwrap();
    assert_eq!(next(&s), "n000");
    assert_eq!(next(&s), "n144");
    // Wraps around: 288..299, then 0..131.
    assert_eq!(next(&s), "n288");
    // Starts at 132; an infeasible node is passed over.
    s.upsert_node(&node("n132").cpu("0").pods(0).build());
    assert_eq!(next(&s), "n133");
}

#[test]
fn assumed_pods_count_for_the_next_decision() {
    let mut s = cluster(vec![node("n1").cpu("1"), node("n2").cpu("1")], vec![]);
    let mut d = Decider::new(None);
    let a = pod("a").requests("800m", "").arc();
    let i = d.decide(&a, &s).unwrap();
    s.assume(a, i);
    let b = pod("b").requests("800m", "").arc();
    let j = d.decide(&b, &s).unwrap();
    assert_ne!(i, j);
    s.assume(b, j);
    let c = pod("c").requests("800m", "").info();
    assert_eq!(
        reasons(&d.decide(&c, &s).unwrap_err().to_string()),
        "2 Insufficient cpu"
    );
    s.forget("a-uid");
    assert_eq!(d.decide(&c, &s).unwrap(), i);
}
