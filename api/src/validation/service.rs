//! Services, Endpoints and EndpointSlices.

use std::collections::HashSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Endpoints, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::field::{ErrorList, FieldError, Path};
use super::meta::{one_of, validate_labels, validate_object_meta, NameRule};
use super::names;
use super::pod::PROTOCOLS;

pub const SERVICE_TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
pub const SESSION_AFFINITIES: &[&str] = &["ClientIP", "None"];
pub const TRAFFIC_POLICIES: &[&str] = &["Cluster", "Local"];
pub const ADDRESS_TYPES: &[&str] = &["IPv4", "IPv6", "FQDN"];
pub const MAX_ENDPOINTS_PER_SLICE: usize = 1000;
pub const MAX_PORTS_PER_SLICE: usize = 100;
pub const MAX_ADDRESSES_PER_ENDPOINT: usize = 100;

pub fn validate_service(svc: &Service) -> ErrorList {
    let mut errs = validate_object_meta(
        &svc.metadata,
        true,
        NameRule::Dns1035Label,
        &Path::new("metadata"),
    );
    let empty = ServiceSpec::default();
    errs.extend(validate_service_spec(
        svc.spec.as_ref().unwrap_or(&empty),
        &Path::new("spec"),
    ));
    errs
}

fn validate_service_spec(spec: &ServiceSpec, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    errs.extend(one_of(Some(type_), SERVICE_TYPES, &path.child("type")));
    let cluster_ip = spec.cluster_ip.as_deref().unwrap_or("");
    let headless = cluster_ip == "None";
    let external_name = type_ == "ExternalName";
    let node_ports_allowed = matches!(type_, "NodePort" | "LoadBalancer");

    let ports = spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() && !headless && !external_name {
        errs.push(FieldError::required(&path.child("ports"), ""));
    }
    let mut port_names = HashSet::new();
    let mut port_keys = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = path.child("ports").index(i);
        errs.extend(validate_service_port(
            port,
            ports.len() > 1,
            node_ports_allowed,
            type_,
            &p,
        ));
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            if !port_names.insert(name) {
                errs.push(FieldError::duplicate(&p.child("name"), name));
            }
        }
        let key = format!(
            "{}/{}",
            port.port,
            port.protocol.as_deref().unwrap_or("TCP")
        );
        if !port_keys.insert(key.clone()) {
            errs.push(FieldError::duplicate(&p, key));
        }
    }

    let ip_path = path.child("clusterIP");
    if external_name {
        if !cluster_ip.is_empty() {
            errs.push(FieldError::forbidden(
                &ip_path,
                "may not be set for ExternalName services",
            ));
        }
        match spec.external_name.as_deref() {
            None | Some("") => errs.push(FieldError::required(&path.child("externalName"), "")),
            Some(name) => {
                let trimmed = name.strip_suffix('.').unwrap_or(name);
                for msg in names::is_dns1123_subdomain(trimmed) {
                    errs.push(FieldError::invalid(&path.child("externalName"), name, msg));
                }
            }
        }
    } else if !cluster_ip.is_empty() && !headless && cluster_ip.parse::<IpAddr>().is_err() {
        errs.push(FieldError::invalid(
            &ip_path,
            cluster_ip,
            "must be empty, 'None', or a valid IP address",
        ));
    }
    if headless && node_ports_allowed {
        errs.push(FieldError::invalid(
            &ip_path,
            cluster_ip,
            format!("may not be set to 'None' for {type_} services"),
        ));
    }
    let cluster_ips = spec.cluster_ips.as_deref().unwrap_or_default();
    if cluster_ips.len() > 2 {
        errs.push(FieldError::too_many(
            &path.child("clusterIPs"),
            cluster_ips.len(),
            2,
        ));
    }
    for (i, ip) in cluster_ips.iter().enumerate() {
        let p = path.child("clusterIPs").index(i);
        if i == 0 && !cluster_ip.is_empty() && ip != cluster_ip {
            errs.push(FieldError::invalid(
                &p,
                ip,
                "first value must match `clusterIP`",
            ));
        } else if !(i == 0 && ip == "None") && ip.parse::<IpAddr>().is_err() {
            errs.push(FieldError::invalid(&p, ip, "must be a valid IP address"));
        }
    }
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        for msg in names::is_valid_ip(ip) {
            errs.push(FieldError::invalid(
                &path.child("externalIPs").index(i),
                ip,
                msg,
            ));
        }
    }

    errs.extend(validate_labels(
        spec.selector.as_ref(),
        &path.child("selector"),
    ));
    errs.extend(one_of(
        spec.session_affinity.as_deref(),
        SESSION_AFFINITIES,
        &path.child("sessionAffinity"),
    ));
    errs.extend(one_of(
        spec.internal_traffic_policy.as_deref(),
        TRAFFIC_POLICIES,
        &path.child("internalTrafficPolicy"),
    ));
    if let Some(policy) = spec
        .external_traffic_policy
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        if !node_ports_allowed {
            errs.push(FieldError::forbidden(
                &path.child("externalTrafficPolicy"),
                "may only be set for NodePort and LoadBalancer services",
            ));
        }
        errs.extend(one_of(
            Some(policy),
            TRAFFIC_POLICIES,
            &path.child("externalTrafficPolicy"),
        ));
    }
    errs
}

fn validate_service_port(
    port: &ServicePort,
    name_required: bool,
    node_ports_allowed: bool,
    type_: &str,
    path: &Path,
) -> ErrorList {
    let mut errs = ErrorList::new();
    match port.name.as_deref().unwrap_or("") {
        "" if name_required => errs.push(FieldError::required(&path.child("name"), "")),
        "" => {}
        name => {
            for msg in names::is_dns1123_label(name) {
                errs.push(FieldError::invalid(&path.child("name"), name, msg));
            }
        }
    }
    for msg in names::is_valid_port_num(port.port) {
        errs.push(FieldError::invalid(&path.child("port"), port.port, msg));
    }
    errs.extend(one_of(
        port.protocol.as_deref(),
        PROTOCOLS,
        &path.child("protocol"),
    ));
    match &port.target_port {
        // Absent or zero: defaulted to `port`.
        None | Some(IntOrString::Int(0)) => {}
        Some(IntOrString::Int(n)) => {
            for msg in names::is_valid_port_num(*n) {
                errs.push(FieldError::invalid(&path.child("targetPort"), n, msg));
            }
        }
        Some(IntOrString::String(s)) if s.is_empty() => {}
        Some(IntOrString::String(s)) => {
            for msg in names::is_valid_port_name(s) {
                errs.push(FieldError::invalid(&path.child("targetPort"), s, msg));
            }
        }
    }
    if let Some(node_port) = port.node_port.filter(|n| *n != 0) {
        if !node_ports_allowed {
            errs.push(FieldError::forbidden(
                &path.child("nodePort"),
                format!("may not be used when `type` is '{type_}'"),
            ));
        }
        for msg in names::is_valid_port_num(node_port) {
            errs.push(FieldError::invalid(&path.child("nodePort"), node_port, msg));
        }
    }
    errs
}

/// Endpoint addresses must be real, unicast, non-loopback IPs.
fn validate_endpoint_ip(ip: &str, path: &Path) -> ErrorList {
    let parsed = match ip.parse::<IpAddr>() {
        Ok(parsed) => parsed,
        Err(_) => {
            return names::is_valid_ip(ip)
                .into_iter()
                .map(|msg| FieldError::invalid(path, ip, msg))
                .collect()
        }
    };
    let special = if parsed.is_unspecified() {
        Some("may not be unspecified (0.0.0.0)")
    } else if parsed.is_loopback() {
        Some("may not be in the loopback range (127.0.0.0/8, ::1/128)")
    } else if match parsed {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    } {
        Some("may not be in the link-local range (169.254.0.0/16, fe80::/10)")
    } else if parsed.is_multicast() {
        Some("may not be in the multicast range")
    } else {
        None
    };
    special
        .map(|msg| FieldError::invalid(path, ip, msg))
        .into_iter()
        .collect()
}

pub fn validate_endpoints(ep: &Endpoints) -> ErrorList {
    let mut errs = validate_object_meta(
        &ep.metadata,
        true,
        NameRule::Dns1123Subdomain,
        &Path::new("metadata"),
    );
    for (i, subset) in ep.subsets.iter().flatten().enumerate() {
        let sp = Path::new("subsets").index(i);
        let addresses = [
            ("addresses", &subset.addresses),
            ("notReadyAddresses", &subset.not_ready_addresses),
        ];
        for (field, list) in addresses {
            for (j, addr) in list.iter().flatten().enumerate() {
                let ap = sp.child(field).index(j);
                errs.extend(validate_endpoint_ip(&addr.ip, &ap.child("ip")));
                if let Some(host) = addr.hostname.as_deref().filter(|h| !h.is_empty()) {
                    for msg in names::is_dns1123_label(host) {
                        errs.push(FieldError::invalid(&ap.child("hostname"), host, msg));
                    }
                }
                if let Some(node) = addr.node_name.as_deref().filter(|n| !n.is_empty()) {
                    for msg in names::is_dns1123_subdomain(node) {
                        errs.push(FieldError::invalid(&ap.child("nodeName"), node, msg));
                    }
                }
            }
        }
        let ports = subset.ports.as_deref().unwrap_or_default();
        let mut seen = HashSet::new();
        for (j, port) in ports.iter().enumerate() {
            let pp = sp.child("ports").index(j);
            match port.name.as_deref().unwrap_or("") {
                "" if ports.len() > 1 => errs.push(FieldError::required(&pp.child("name"), "")),
                "" => {}
                name => {
                    for msg in names::is_dns1123_label(name) {
                        errs.push(FieldError::invalid(&pp.child("name"), name, msg));
                    }
                    if !seen.insert(name) {
                        errs.push(FieldError::duplicate(&pp.child("name"), name));
                    }
                }
            }
            for msg in names::is_valid_port_num(port.port) {
                errs.push(FieldError::invalid(&pp.child("port"), port.port, msg));
            }
            errs.extend(one_of(
                port.protocol.as_deref(),
                PROTOCOLS,
                &pp.child("protocol"),
            ));
        }
    }
    errs
}

pub fn validate_endpoint_slice(slice: &EndpointSlice) -> ErrorList {
    let mut errs = validate_object_meta(
        &slice.metadata,
        true,
        NameRule::Dns1123Subdomain,
        &Path::new("metadata"),
    );
    let address_type = slice.address_type.as_str();
    if address_type.is_empty() {
        errs.push(FieldError::required(&Path::new("addressType"), ""));
    } else {
        errs.extend(one_of(
            Some(address_type),
            ADDRESS_TYPES,
            &Path::new("addressType"),
        ));
    }
    if slice.endpoints.len() > MAX_ENDPOINTS_PER_SLICE {
        errs.push(FieldError::too_many(
            &Path::new("endpoints"),
            slice.endpoints.len(),
            MAX_ENDPOINTS_PER_SLICE,
        ));
    }
    for (i, endpoint) in slice.endpoints.iter().enumerate() {
        let ep = Path::new("endpoints").index(i);
        let ap = ep.child("addresses");
        if endpoint.addresses.is_empty() {
            errs.push(FieldError::required(&ap, "must contain at least 1 address"));
        } else if endpoint.addresses.len() > MAX_ADDRESSES_PER_ENDPOINT {
            errs.push(FieldError::too_many(
                &ap,
                endpoint.addresses.len(),
                MAX_ADDRESSES_PER_ENDPOINT,
            ));
        }
        for (j, address) in endpoint.addresses.iter().enumerate() {
            let p = ap.index(j);
            match address_type {
                "IPv4" | "IPv6" => {
                    let family_ok = match address.parse::<IpAddr>() {
                        Ok(IpAddr::V4(_)) => address_type == "IPv4",
                        Ok(IpAddr::V6(_)) => address_type == "IPv6",
                        Err(_) => false,
                    };
                    if !family_ok {
                        errs.push(FieldError::invalid(
                            &p,
                            address,
                            format!("must be a valid {address_type} address"),
                        ));
                    } else {
                        errs.extend(validate_endpoint_ip(address, &p));
                    }
                }
                "FQDN" => {
                    for msg in names::is_dns1123_subdomain(address) {
                        errs.push(FieldError::invalid(&p, address, msg));
                    }
                }
                _ => {}
            }
        }
        if let Some(host) = endpoint.hostname.as_deref().filter(|h| !h.is_empty()) {
            for msg in names::is_dns1123_label(host) {
                errs.push(FieldError::invalid(&ep.child("hostname"), host, msg));
            }
        }
        if let Some(node) = endpoint.node_name.as_deref().filter(|n| !n.is_empty()) {
            for msg in names::is_dns1123_subdomain(node) {
                errs.push(FieldError::invalid(&ep.child("nodeName"), node, msg));
            }
        }
    }
    let ports = slice.ports.as_deref().unwrap_or_default();
    if ports.len() > MAX_PORTS_PER_SLICE {
        errs.push(FieldError::too_many(
            &Path::new("ports"),
            ports.len(),
            MAX_PORTS_PER_SLICE,
        ));
    }
    let mut seen = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = Path::new("ports").index(i);
        let name = port.name.as_deref().unwrap_or("");
        if !name.is_empty() {
            for msg in names::is_dns1123_label(name) {
                errs.push(FieldError::invalid(&p.child("name"), name, msg));
            }
        }
        if !seen.insert(name) {
            errs.push(FieldError::duplicate(&p.child("name"), name));
        }
        if let Some(n) = port.port {
            for msg in names::is_valid_port_num(n) {
                errs.push(FieldError::invalid(&p.child("port"), n, msg));
            }
        }
        errs.extend(one_of(
            port.protocol.as_deref(),
            PROTOCOLS,
            &p.child("protocol"),
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::testing::{assert_clean, assert_has, patched, typed};
    use crate::validation::ErrorType::*;
    use serde_json::{json, Value};

    fn service() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
                "type": "ClusterIP"
            }
        })
    }

    fn svc_errs(pointer: &str, value: Value) -> ErrorList {
        validate_service(&typed(patched(service(), pointer, value)))
    }

    #[test]
    fn a_valid_service_passes() {
        assert_clean(&validate_service(&typed(service())));
        assert_clean(&svc_errs("/spec/ports/0/targetPort", json!("http-alt")));
        assert_clean(&svc_errs("/spec/clusterIP", json!("10.96.0.10")));
        assert_clean(&svc_errs("/spec/clusterIP", json!("fd00::10")));
    }

    #[test]
    fn names_are_dns1035_labels() {
        assert_has(
            &svc_errs("/metadata/name", json!("1web")),
            Invalid,
            "metadata.name",
        );
        assert_has(
            &svc_errs("/metadata/name", json!("web.a")),
            Invalid,
            "metadata.name",
        );
    }

    #[test]
    fn ports() {
        assert_has(&svc_errs("/spec/ports", json!([])), Required, "spec.ports");
        let mut headless = patched(service(), "/spec/clusterIP", json!("None"));
        headless = patched(headless, "/spec/ports", json!([]));
        assert_clean(&validate_service(&typed(headless)));
        assert_has(
            &svc_errs("/spec/ports/0/port", json!(0)),
            Invalid,
            "spec.ports[0].port",
        );
        assert_has(
            &svc_errs("/spec/ports/0/port", json!(65536)),
            Invalid,
            "spec.ports[0].port",
        );
        assert_has(
            &svc_errs("/spec/ports/0/protocol", json!("HTTP")),
            NotSupported,
            "spec.ports[0].protocol",
        );
        assert_has(
            &svc_errs("/spec/ports/0/targetPort", json!(70000)),
            Invalid,
            "spec.ports[0].targetPort",
        );
        assert_has(
            &svc_errs("/spec/ports/0/targetPort", json!("Not A Name")),
            Invalid,
            "spec.ports[0].targetPort",
        );
        assert_has(
            &svc_errs("/spec/ports/0/name", json!("HTTP")),
            Invalid,
            "spec.ports[0].name",
        );
        let errs = svc_errs("/spec/ports/1", json!({"port": 443}));
        assert_has(&errs, Required, "spec.ports[1].name");
        let errs = svc_errs("/spec/ports/1", json!({"name": "http", "port": 443}));
        assert_has(&errs, Duplicate, "spec.ports[1].name");
        let errs = svc_errs("/spec/ports/1", json!({"name": "other", "port": 80}));
        assert_has(&errs, Duplicate, "spec.ports[1]");
        assert_clean(&svc_errs(
            "/spec/ports/1",
            json!({"name": "dns", "port": 80, "protocol": "UDP"}),
        ));
    }

    #[test]
    fn types_and_node_ports() {
        assert_has(
            &svc_errs("/spec/type", json!("Magic")),
            NotSupported,
            "spec.type",
        );
        assert_has(
            &svc_errs("/spec/ports/0/nodePort", json!(30080)),
            Forbidden,
            "spec.ports[0].nodePort",
        );
        let node_port = patched(service(), "/spec/type", json!("NodePort"));
        assert_clean(&validate_service(&typed(patched(
            node_port.clone(),
            "/spec/ports/0/nodePort",
            json!(30080),
        ))));
        assert_has(
            &validate_service(&typed(patched(
                node_port.clone(),
                "/spec/clusterIP",
                json!("None"),
            ))),
            Invalid,
            "spec.clusterIP",
        );
        assert_has(
            &svc_errs("/spec/externalTrafficPolicy", json!("Local")),
            Forbidden,
            "spec.externalTrafficPolicy",
        );
        assert_has(
            &validate_service(&typed(patched(
                node_port,
                "/spec/externalTrafficPolicy",
                json!("Nearest"),
            ))),
            NotSupported,
            "spec.externalTrafficPolicy",
        );
        assert_has(
            &svc_errs("/spec/internalTrafficPolicy", json!("Nearest")),
            NotSupported,
            "spec.internalTrafficPolicy",
        );
    }

    #[test]
    fn cluster_ips() {
        assert_has(
            &svc_errs("/spec/clusterIP", json!("10.96.0.300")),
            Invalid,
            "spec.clusterIP",
        );
        assert_has(
            &svc_errs(
                "/spec/clusterIPs",
                json!(["10.96.0.1", "fd00::1", "10.96.0.2"]),
            ),
            TooMany,
            "spec.clusterIPs",
        );
        let with_ip = patched(service(), "/spec/clusterIP", json!("10.96.0.1"));
        assert_has(
            &validate_service(&typed(patched(
                with_ip.clone(),
                "/spec/clusterIPs",
                json!(["10.96.0.2"]),
            ))),
            Invalid,
            "spec.clusterIPs[0]",
        );
        assert_clean(&validate_service(&typed(patched(
            with_ip,
            "/spec/clusterIPs",
            json!(["10.96.0.1", "fd00::1"]),
        ))));
        assert_has(
            &svc_errs("/spec/externalIPs", json!(["1.2.3"])),
            Invalid,
            "spec.externalIPs[0]",
        );
    }

    #[test]
    fn external_name_services() {
        let mut ext = patched(service(), "/spec/type", json!("ExternalName"));
        ext = patched(ext, "/spec/externalName", json!("db.example.com."));
        ext = patched(ext, "/spec/ports", json!([]));
        assert_clean(&validate_service(&typed(ext.clone())));
        assert_has(
            &validate_service(&typed(patched(
                ext.clone(),
                "/spec/externalName",
                json!(""),
            ))),
            Required,
            "spec.externalName",
        );
        assert_has(
            &validate_service(&typed(patched(
                ext.clone(),
                "/spec/externalName",
                json!("Bad_Name"),
            ))),
            Invalid,
            "spec.externalName",
        );
        assert_has(
            &validate_service(&typed(patched(ext, "/spec/clusterIP", json!("10.0.0.1")))),
            Forbidden,
            "spec.clusterIP",
        );
    }

    #[test]
    fn selector_and_affinity() {
        assert_has(
            &svc_errs("/spec/selector", json!({"app": "-web"})),
            Invalid,
            "spec.selector",
        );
        assert_has(
            &svc_errs("/spec/sessionAffinity", json!("Sticky")),
            NotSupported,
            "spec.sessionAffinity",
        );
        assert_clean(&svc_errs("/spec/sessionAffinity", json!("ClientIP")));
    }

    fn endpoints() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "web", "namespace": "default"},
            "subsets": [{
                "addresses": [{"ip": "10.244.1.5", "nodeName": "n1", "hostname": "web-0"}],
                "notReadyAddresses": [{"ip": "10.244.1.6"}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
            }]
        })
    }

    fn ep_errs(pointer: &str, value: Value) -> ErrorList {
        validate_endpoints(&typed(patched(endpoints(), pointer, value)))
    }

    #[test]
    fn endpoints_rules() {
        assert_clean(&validate_endpoints(&typed(endpoints())));
        assert_has(
            &ep_errs("/subsets/0/addresses/0/ip", json!("10.244.1")),
            Invalid,
            "subsets[0].addresses[0].ip",
        );
        assert_has(
            &ep_errs("/subsets/0/addresses/0/ip", json!("127.0.0.1")),
            Invalid,
            "subsets[0].addresses[0].ip",
        );
        assert_has(
            &ep_errs("/subsets/0/notReadyAddresses/0/ip", json!("169.254.1.1")),
            Invalid,
            "subsets[0].notReadyAddresses[0].ip",
        );
        assert_has(
            &ep_errs("/subsets/0/addresses/0/ip", json!("0.0.0.0")),
            Invalid,
            "subsets[0].addresses[0].ip",
        );
        assert_has(
            &ep_errs("/subsets/0/addresses/0/hostname", json!("a.b")),
            Invalid,
            "subsets[0].addresses[0].hostname",
        );
        assert_has(
            &ep_errs("/subsets/0/ports/0/port", json!(0)),
            Invalid,
            "subsets[0].ports[0].port",
        );
        assert_has(
            &ep_errs("/subsets/0/ports/0/protocol", json!("X")),
            NotSupported,
            "subsets[0].ports[0].protocol",
        );
        assert_has(
            &ep_errs("/subsets/0/ports/1", json!({"port": 9090})),
            Required,
            "subsets[0].ports[1].name",
        );
        assert_has(
            &ep_errs("/subsets/0/ports/1", json!({"name": "http", "port": 9090})),
            Duplicate,
            "subsets[0].ports[1].name",
        );
    }

    fn slice() -> Value {
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.1.5"], "nodeName": "n1", "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        })
    }

    fn slice_errs(pointer: &str, value: Value) -> ErrorList {
        validate_endpoint_slice(&typed(patched(slice(), pointer, value)))
    }

    #[test]
    fn endpoint_slice_rules() {
        assert_clean(&validate_endpoint_slice(&typed(slice())));
        assert_has(
            &slice_errs("/addressType", json!("")),
            Required,
            "addressType",
        );
        assert_has(
            &slice_errs("/addressType", json!("IPX")),
            NotSupported,
            "addressType",
        );
        assert_has(
            &slice_errs("/addressType", json!("IPv6")),
            Invalid,
            "endpoints[0].addresses[0]",
        );
        let mut v6 = patched(slice(), "/addressType", json!("IPv6"));
        v6 = patched(v6, "/endpoints/0/addresses/0", json!("fd00::5"));
        assert_clean(&validate_endpoint_slice(&typed(v6)));
        let mut fqdn = patched(slice(), "/addressType", json!("FQDN"));
        fqdn = patched(fqdn, "/endpoints/0/addresses/0", json!("web.example.com"));
        assert_clean(&validate_endpoint_slice(&typed(fqdn.clone())));
        assert_has(
            &validate_endpoint_slice(&typed(patched(
                fqdn,
                "/endpoints/0/addresses/0",
                json!("Web_"),
            ))),
            Invalid,
            "endpoints[0].addresses[0]",
        );
        assert_has(
            &slice_errs("/endpoints/0/addresses", json!([])),
            Required,
            "endpoints[0].addresses",
        );
        let many: Vec<String> = (0..101)
            .map(|i| format!("10.0.{}.{}", i / 200, i % 200 + 1))
            .collect();
        assert_has(
            &slice_errs("/endpoints/0/addresses", json!(many)),
            TooMany,
            "endpoints[0].addresses",
        );
        assert_has(
            &slice_errs("/ports/0/port", json!(70000)),
            Invalid,
            "ports[0].port",
        );
        assert_has(
            &slice_errs("/ports/1", json!({"name": "http", "port": 1})),
            Duplicate,
            "ports[1].name",
        );
        assert_has(
            &slice_errs("/ports/0/protocol", json!("HTTP")),
            NotSupported,
            "ports[0].protocol",
        );
        assert_has(
            &slice_errs("/endpoints/0/nodeName", json!("N1")),
            Invalid,
            "endpoints[0].nodeName",
        );
    }
}
