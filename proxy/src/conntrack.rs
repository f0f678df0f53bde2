//! Stale UDP conntrack entries. UDP has no connection to close, so a client that keeps
//! sending to a Service keeps its conntrack entry, and with it the NAT to an endpoint that
//! is gone (or, for a Service that had no endpoints, no NAT at all). After a data plane
//! change, [`stale_udp_flows`] says which entries to delete and [`Conntrack::clear`] deletes
//! them with the `conntrack` tool (Debian package `conntrack`), as kube-proxy does. A missing
//! tool or a failed deletion is logged, never an error: traffic still recovers when the
//! entries time out.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use crate::model::{Change, Endpoint, Protocol, ServicePortInfo};

/// A set of UDP conntrack entries to delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StaleFlow {
    /// Flows to `vip:port` that were DNATed to `endpoint`.
    ClusterIp {
        vip: Ipv4Addr,
        port: u16,
        endpoint: Endpoint,
    },
    /// Flows to any local address on `node_port` that were DNATed to `endpoint`.
    NodePort { node_port: u16, endpoint: Endpoint },
    /// All flows to `vip:port`: the Service had no endpoints and now has some.
    ClusterIpAll { vip: Ipv4Addr, port: u16 },
    /// All flows to `node_port`: likewise.
    NodePortAll { node_port: u16 },
}

impl StaleFlow {
    /// The `conntrack` arguments that delete these entries.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = ["-D", "-p", "udp"].map(String::from).into();
        let mut push = |k: &str, v: String| {
            a.push(k.to_string());
            a.push(v);
        };
        match *self {
            StaleFlow::ClusterIp {
                vip,
                port,
                endpoint,
            } => {
                push("--orig-dst", vip.to_string());
                push("--orig-port-dst", port.to_string());
                push("--reply-src", endpoint.ip.to_string());
                push("--reply-port-src", endpoint.port.to_string());
            }
            StaleFlow::NodePort {
                node_port,
                endpoint,
            } => {
                push("--orig-port-dst", node_port.to_string());
                push("--reply-src", endpoint.ip.to_string());
                push("--reply-port-src", endpoint.port.to_string());
            }
            StaleFlow::ClusterIpAll { vip, port } => {
                push("--orig-dst", vip.to_string());
                push("--orig-port-dst", port.to_string());
            }
            StaleFlow::NodePortAll { node_port } => {
                push("--orig-port-dst", node_port.to_string());
            }
        }
        a
    }
}

fn flows_of_removed(
    old: &ServicePortInfo,
    new: Option<&ServicePortInfo>,
    out: &mut BTreeSet<StaleFlow>,
) {
    let same_vip = new.is_some_and(|n| (n.cluster_ip, n.port) == (old.cluster_ip, old.port));
    let same_node_port = new.is_some_and(|n| n.node_port == old.node_port);
    let kept: BTreeSet<&Endpoint> = new
        .map(|n| n.endpoints.iter().collect())
        .unwrap_or_default();
    for ep in &old.endpoints {
        if !same_vip || !kept.contains(ep) {
            out.insert(StaleFlow::ClusterIp {
                vip: old.cluster_ip,
                port: old.port,
                endpoint: *ep,
            });
        }
        if let Some(np) = old.node_port {
            if !same_node_port || !kept.contains(ep) {
                out.insert(StaleFlow::NodePort {
                    node_port: np,
                    endpoint: *ep,
                });
            }
        }
    }
}

/// The UDP entries made stale by `changes`: those DNATed to an endpoint that left its
/// service port, and all those to a service port that had no endpoints and now has some.
pub fn stale_udp_flows(changes: &[Change]) -> Vec<StaleFlow> {
    let mut out = BTreeSet::new();
    for c in changes {
        let old = c.before().filter(|o| o.protocol == Protocol::Udp);
        let new = c.after().filter(|n| n.protocol == Protocol::Udp);
        if let Some(old) = old {
            flows_of_removed(old, new, &mut out);
        }
        if let Some(new) = new.filter(|n| !n.endpoints.is_empty()) {
            let had = old.filter(|o| !o.endpoints.is_empty());
            if had.is_none_or(|o| (o.cluster_ip, o.port) != (new.cluster_ip, new.port)) {
                out.insert(StaleFlow::ClusterIpAll {
                    vip: new.cluster_ip,
                    port: new.port,
                });
            }
            if let Some(np) = new.node_port {
                if had.is_none_or(|o| o.node_port != Some(np)) {
                    out.insert(StaleFlow::NodePortAll { node_port: np });
                }
            }
        }
    }
    out.into_iter().collect()
}

/// Runs the `conntrack` tool.
#[derive(Debug)]
pub struct Conntrack {
    path: PathBuf,
    warned_missing: bool,
}

impl Default for Conntrack {
    fn default() -> Self {
        Self::new("conntrack")
    }
}

impl Conntrack {
    /// `path` is the tool (looked up on `PATH` when it has no slash).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            warned_missing: false,
        }
    }

    /// Deletes the entries of `flows`, logging what fails. Runs in the calling thread's
    /// network namespace.
    pub fn clear(&mut self, flows: &[StaleFlow]) {
        for flow in flows {
            let out = match Command::new(&self.path).args(flow.args()).output() {
                Ok(out) => out,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    if !self.warned_missing {
                        tracing::warn!(tool = %self.path.display(), "conntrack tool not found: stale UDP flows stay until they time out (install the conntrack package)");
                        self.warned_missing = true;
                    }
                    return;
                }
                Err(err) => {
                    tracing::warn!(?flow, error = %err, "running conntrack failed");
                    continue;
                }
            };
            let stderr = String::from_utf8_lossy(&out.stderr);
            // conntrack exits 1 when nothing matched; that is not a failure here.
            if !out.status.success() && !stderr.contains("0 flow entries") {
                tracing::warn!(?flow, stderr = %stderr.trim(), "conntrack -D failed");
            } else {
                tracing::debug!(?flow, result = %stderr.trim(), "stale UDP flows deleted");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServicePortName;

    fn ep(ip: &str, port: u16) -> Endpoint {
        Endpoint {
            ip: ip.parse().unwrap(),
            port,
        }
    }

    fn udp(eps: &[Endpoint], node_port: Option<u16>) -> ServicePortInfo {
        ServicePortInfo {
            cluster_ip: "10.96.0.10".parse().unwrap(),
            port: 53,
            protocol: Protocol::Udp,
            node_port,
            affinity_timeout: None,
            endpoints: eps.to_vec(),
        }
    }

    fn name() -> ServicePortName {
        ServicePortName::new("kube-system", "dns", "dns")
    }

    #[test]
    fn removed_endpoints_are_flushed_for_the_vip_and_the_node_port() {
        let c = Change::Update {
            name: name(),
            old: udp(&[ep("10.1.0.1", 53), ep("10.1.0.2", 53)], Some(30053)),
            new: udp(&[ep("10.1.0.2", 53)], Some(30053)),
        };
        let vip = "10.96.0.10".parse().unwrap();
        assert_eq!(
            stale_udp_flows(&[c]),
            vec![
                StaleFlow::ClusterIp {
                    vip,
                    port: 53,
                    endpoint: ep("10.1.0.1", 53)
                },
                StaleFlow::NodePort {
                    node_port: 30053,
                    endpoint: ep("10.1.0.1", 53)
                },
            ]
        );
        assert_eq!(
            StaleFlow::ClusterIp {
                vip,
                port: 53,
                endpoint: ep("10.1.0.1", 53)
            }
            .args()
            .join(" "),
            "-D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src 10.1.0.1 --reply-port-src 53"
        );
    }

    #[test]
    fn a_service_getting_its_first_endpoint_flushes_all_its_flows() {
        let c = Change::Update {
            name: name(),
            old: udp(&[], None),
            new: udp(&[ep("10.1.0.1", 53)], None),
        };
        assert_eq!(
            stale_udp_flows(&[c]),
            vec![StaleFlow::ClusterIpAll {
                vip: "10.96.0.10".parse().unwrap(),
                port: 53
            }]
        );
        let added = Change::Add {
            name: name(),
            new: udp(&[ep("10.1.0.1", 53)], Some(30053)),
        };
        assert_eq!(stale_udp_flows(&[added]).len(), 2);
    }

    #[test]
    fn tcp_changes_and_kept_endpoints_flush_nothing() {
        let mut old = udp(&[ep("10.1.0.1", 53)], None);
        let new = udp(&[ep("10.1.0.1", 53), ep("10.1.0.2", 53)], None);
        let grow = Change::Update {
            name: name(),
            old: old.clone(),
            new,
        };
        assert!(stale_udp_flows(&[grow]).is_empty());
        old.protocol = Protocol::Tcp;
        let gone = Change::Remove { name: name(), old };
        assert!(stale_udp_flows(&[gone]).is_empty());
    }

    #[test]
    fn a_missing_tool_is_only_a_warning() {
        let mut ct = Conntrack::new("/nonexistent/conntrack");
        ct.clear(&[StaleFlow::NodePortAll { node_port: 30000 }]);
        assert!(ct.warned_missing);
    }
}
