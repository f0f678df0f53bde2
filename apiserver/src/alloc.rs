//! Service address allocation, as kube-apiserver does it at admission: a cluster IP from the
//! service range for every Service that is not headless or `ExternalName`, and a node port
//! (30000-32767) for each port of a `NodePort` or `LoadBalancer` Service. Each allocation is
//! a key in the store (`/berth/allocations/...`) created with a compare-and-swap, so two API
//! servers can never hand out the same address; deleting the Service releases its keys.

use std::net::Ipv4Addr;

use rand::Rng;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::server::ApiServer;
use crate::storage;

const IP_PREFIX: &str = "/berth/allocations/serviceips/";
const PORT_PREFIX: &str = "/berth/allocations/nodeports/";
pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// An IPv4 range such as `10.96.0.0/12`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub base: u32,
    pub bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (ip, bits) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (a.b.c.d/n)"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let bits: u8 = bits.parse().map_err(|e| format!("{s:?}: {e}"))?;
        if !(8..=30).contains(&bits) {
            return Err(format!("{s:?}: prefix length must be between 8 and 30"));
        }
        let mask = u32::MAX << (32 - bits);
        Ok(Self {
            base: u32::from(ip) & mask,
            bits,
        })
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.bits);
        u32::from(ip) & mask == self.base
    }

    fn size(&self) -> u32 {
        1 << (32 - self.bits)
    }

    /// The first usable address (`.1`), reserved for the `kubernetes` Service.
    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }
}

fn needs_cluster_ip(svc: &Value) -> bool {
    svc.pointer("/spec/type").and_then(Value::as_str) != Some("ExternalName")
}

impl ApiServer {
    async fn claim(&self, key: String, owner: &str) -> ApiResult<bool> {
        match self.storage.create(&key, owner.as_bytes().to_vec()).await {
            Ok(_) => Ok(true),
            Err(storage::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(ApiError::unavailable(e.to_string())),
        }
    }

    async fn release(&self, key: &str) {
        if let Ok(Some(item)) = self.storage.get(key).await {
            let _ = self.storage.delete(key, item.mod_revision).await;
        }
    }

    /// Fills in `spec.clusterIP(s)` and node ports of a new Service. Returns the keys
    /// claimed, to release if the create fails.
    pub async fn allocate_service(&self, svc: &mut Value) -> ApiResult<Vec<String>> {
        let owner = format!(
            "{}/{}",
            svc.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or(""),
            svc.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
        );
        let info = berth_api::registry::by_kind("Service").expect("registered");
        let name = svc["metadata"]["name"].as_str().unwrap_or("").to_string();
        let mut claimed = Vec::new();
        let result = async {
            if needs_cluster_ip(svc) {
                let asked = svc
                    .pointer("/spec/clusterIP")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let ip = match asked.as_str() {
                    "None" => None,
                    "" => Some(self.allocate_ip(&owner, &mut claimed).await?),
                    s => {
                        let ip: Ipv4Addr = s.parse().map_err(|_| {
                            ApiError::invalid_field(info, &name, "spec.clusterIP", "FieldValueInvalid",
                                &format!("Invalid value: {s:?}: must be a valid IP address or \"None\""))
                        })?;
                        if !self.service_cidr.contains(ip) {
                            return Err(ApiError::invalid_field(info, &name, "spec.clusterIPs",
                                "FieldValueInvalid", &format!("Invalid value: [\"{ip}\"]: failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}/{}", Ipv4Addr::from(self.service_cidr.base), self.service_cidr.bits)));
                        }
                        let key = format!("{IP_PREFIX}{ip}");
                        if !self.claim(key.clone(), &owner).await? {
                            return Err(ApiError::invalid_field(info, &name, "spec.clusterIPs",
                                "FieldValueInvalid", &format!("Invalid value: [\"{ip}\"]: failed to allocate IP {ip}: provided IP is already allocated")));
                        }
                        claimed.push(key);
                        Some(ip.to_string())
                    }
                };
                if let Some(ip) = ip {
                    svc["spec"]["clusterIP"] = json!(ip);
                    svc["spec"]["clusterIPs"] = json!([ip]);
                } else {
                    svc["spec"]["clusterIPs"] = json!(["None"]);
                }
            }
            let ty = svc.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
            if matches!(ty, "NodePort" | "LoadBalancer") {
                let n = svc.pointer("/spec/ports").and_then(Value::as_array).map_or(0, Vec::len);
                for i in 0..n {
                    let asked = svc["spec"]["ports"][i]["nodePort"].as_u64().unwrap_or(0) as u16;
                    let port = if asked == 0 {
                        self.allocate_port(&owner, &mut claimed).await?
                    } else {
                        if !NODE_PORTS.contains(&asked) {
                            return Err(ApiError::invalid_field(info, &name, &format!("spec.ports[{i}].nodePort"),
                                "FieldValueInvalid", &format!("Invalid value: {asked}: provided port is not in the valid range. The range of valid ports is 30000-32767")));
                        }
                        let key = format!("{PORT_PREFIX}{asked}");
                        if !self.claim(key.clone(), &owner).await? {
                            return Err(ApiError::invalid_field(info, &name, &format!("spec.ports[{i}].nodePort"),
                                "FieldValueInvalid", &format!("Invalid value: {asked}: provided port is already allocated")));
                        }
                        claimed.push(key);
                        asked
                    };
                    svc["spec"]["ports"][i]["nodePort"] = json!(port);
                }
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => Ok(claimed),
            Err(e) => {
                self.release_all(&claimed).await;
                Err(e)
            }
        }
    }

    async fn allocate_ip(&self, owner: &str, claimed: &mut Vec<String>) -> ApiResult<String> {
        let cidr = self.service_cidr;
        // Random probes first (cheap while the range is sparse), then a sweep.
        let size = cidr.size();
        let candidates = (0..64)
            .map(|_| rand::thread_rng().gen_range(2..size - 1))
            .chain(2..size - 1);
        for off in candidates {
            let ip = Ipv4Addr::from(cidr.base + off);
            let key = format!("{IP_PREFIX}{ip}");
            if self.claim(key.clone(), owner).await? {
                claimed.push(key);
                return Ok(ip.to_string());
            }
        }
        Err(ApiError::internal("the service IP range is exhausted"))
    }

    async fn allocate_port(&self, owner: &str, claimed: &mut Vec<String>) -> ApiResult<u16> {
        let candidates = (0..64)
            .map(|_| rand::thread_rng().gen_range(NODE_PORTS))
            .chain(NODE_PORTS);
        for port in candidates {
            let key = format!("{PORT_PREFIX}{port}");
            if self.claim(key.clone(), owner).await? {
                claimed.push(key);
                return Ok(port);
            }
        }
        Err(ApiError::internal("the node port range is exhausted"))
    }

    pub async fn release_all(&self, keys: &[String]) {
        for k in keys {
            self.release(k).await;
        }
    }

    /// Releases what a deleted Service held.
    pub async fn release_service(&self, svc: &Value) {
        let mut keys = Vec::new();
        for ip in svc
            .pointer("/spec/clusterIPs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|ip| *ip != "None")
        {
            keys.push(format!("{IP_PREFIX}{ip}"));
        }
        for p in svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = p.get("nodePort").and_then(Value::as_u64) {
                keys.push(format!("{PORT_PREFIX}{n}"));
            }
        }
        self.release_all(&keys).await;
    }
}

/// Carries a Service's allocated addresses into an update that left them out, and refuses
/// to change them (they are immutable, as in Kubernetes).
pub fn keep_service_addresses(old: &Value, new: &mut Value) -> Result<(), String> {
    for field in ["clusterIP", "clusterIPs"] {
        let before = old.pointer(&format!("/spec/{field}")).cloned();
        let after = new.pointer(&format!("/spec/{field}")).cloned();
        match (before, after) {
            (Some(b), None) => new["spec"][field] = b,
            (Some(b), Some(a)) if a == json!("") || a == json!([]) => new["spec"][field] = b,
            (Some(b), Some(a)) if a != b => {
                return Err(format!(
                    "spec.{field}: Invalid value: {a}: field is immutable"
                ))
            }
            _ => {}
        }
    }
    // Node ports the update did not set keep their allocation.
    let old_ports = old
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut() {
            if p.get("nodePort").is_some() {
                continue;
            }
            let same = old_ports
                .iter()
                .find(|o| o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol"));
            if let Some(n) = same.and_then(|o| o.get("nodePort")) {
                p["nodePort"] = n.clone();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.96.0.0/12").unwrap();
        assert!(c.contains("10.96.0.1".parse().unwrap()));
        assert!(c.contains("10.111.255.254".parse().unwrap()));
        assert!(!c.contains("10.112.0.1".parse().unwrap()));
        assert_eq!(c.first(), "10.96.0.1".parse::<Ipv4Addr>().unwrap());
        assert!(Cidr::parse("10.96.0.0").is_err());
        assert!(Cidr::parse("10.96.0.0/40").is_err());
    }

    #[test]
    fn updates_keep_allocations_and_refuse_changes() {
        let old = json!({"spec": {"clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9"],
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30001}]}});
        let mut new = json!({"spec": {"ports": [{"port": 80, "protocol": "TCP"}]}});
        keep_service_addresses(&old, &mut new).unwrap();
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.9");
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30001);
        let mut changed = json!({"spec": {"clusterIP": "10.96.0.10"}});
        assert!(keep_service_addresses(&old, &mut changed)
            .unwrap_err()
            .contains("immutable"));
    }
}
