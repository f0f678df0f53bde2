//! The `berth-cni` plugin (CNI specification 1.0): a bridge on the node, a veth pair into
//! the pod's network namespace, an address from the node's pod range (host-local
//! [`ipam`](crate::ipam)), a default route through the bridge and hairpin on the port.
//!
//! The runtime passes `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME` and
//! the network configuration on stdin; results and errors go to stdout as the spec's JSON.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::ipam;
use crate::netlink::{self, mac_string, Link, Netlink, Route};
use crate::netns;
use crate::subnet::Subnet;

/// The CNI versions this plugin speaks.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// A plugin failure with the spec's error code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("incompatible CNI version {0}")]
    Version(String),
    #[error("invalid environment: {0}")]
    Env(String),
    #[error("invalid network configuration: {0}")]
    Config(String),
    #[error("network namespace {0} does not exist")]
    NoNetns(String),
    #[error(transparent)]
    Ipam(#[from] ipam::Error),
    #[error(transparent)]
    Netlink(#[from] netlink::Error),
    #[error(transparent)]
    Netns(#[from] netns::Error),
    #[error("check failed: {0}")]
    Check(String),
}

impl Error {
    /// The code of the spec's error result.
    pub fn code(&self) -> u32 {
        match self {
            Error::Version(_) => 1,
            Error::Env(_) => 4,
            Error::Config(_) => 7,
            Error::NoNetns(_) => 4,
            Error::Ipam(ipam::Error::Exhausted(_)) => 100,
            Error::Ipam(_) | Error::Netlink(_) | Error::Netns(_) => 5,
            Error::Check(_) => 101,
        }
    }

    /// The error as the spec's JSON.
    pub fn to_json(&self, version: &str) -> Value {
        let details = match self {
            Error::Ipam(e) => std::error::Error::source(e).map(|s| s.to_string()),
            _ => None,
        };
        json!({
            "cniVersion": version,
            "code": self.code(),
            "msg": self.to_string(),
            "details": details.unwrap_or_default(),
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The network configuration. Unknown fields are refused, so a typo is not silently
/// ignored; the fields the spec lets a runtime add are accepted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The node's bridge.
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// The node's pod range; the bridge holds its first address, the pods' gateway.
    pub subnet: Subnet,
    /// MTU of the bridge and the pods' interfaces (less than the node's for VXLAN).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Where reservations are kept.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    // Fields the specification defines for every plugin.
    #[serde(default)]
    pub prev_result: Option<Value>,
    #[serde(default)]
    pub runtime_config: Option<Value>,
    #[serde(default)]
    pub capabilities: Option<Value>,
    #[serde(default)]
    pub args: Option<Value>,
    #[serde(default)]
    pub dns: Option<Value>,
    #[serde(default)]
    pub ip_masq: Option<bool>,
    #[serde(default)]
    pub disable_check: Option<bool>,
}

fn default_bridge() -> String {
    "berth0".into()
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/cni/networks")
}

impl NetConf {
    pub fn parse(text: &[u8]) -> Result<NetConf> {
        let conf: NetConf =
            serde_json::from_slice(text).map_err(|e| Error::Config(e.to_string()))?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(Error::Version(conf.cni_version));
        }
        if conf.bridge.is_empty() || conf.bridge.len() > 15 {
            return Err(Error::Config(format!(
                "bridge name {:?} must be 1 to 15 characters",
                conf.bridge
            )));
        }
        if conf.name.is_empty() || conf.name.contains('/') {
            return Err(Error::Config(format!(
                "network name {:?} is empty or has a '/'",
                conf.name
            )));
        }
        Ok(conf)
    }
}

/// The `CNI_*` variables.
#[derive(Debug, Clone)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
}

impl Env {
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Env> {
        let get = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
        let command =
            get("CNI_COMMAND").ok_or_else(|| Error::Env("CNI_COMMAND is not set".into()))?;
        let need = command != "VERSION";
        let container_id = get("CNI_CONTAINERID").unwrap_or_default();
        if need && container_id.is_empty() {
            return Err(Error::Env("CNI_CONTAINERID is not set".into()));
        }
        let ifname = get("CNI_IFNAME").unwrap_or_default();
        if need && (ifname.is_empty() || ifname.len() > 15 || ifname.contains('/')) {
            return Err(Error::Env(format!(
                "CNI_IFNAME {ifname:?} is not an interface name"
            )));
        }
        Ok(Env {
            command,
            container_id,
            netns: get("CNI_NETNS").map(PathBuf::from),
            ifname,
        })
    }
}

/// The host end of a pod's veth pair: named after the container, so DEL finds it
/// without state.
pub fn host_veth(container_id: &str, ifname: &str) -> String {
    // FNV-1a: stable across releases, unlike std's hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in container_id.bytes().chain([b'/']).chain(ifname.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("veth{h:08x}")
}

/// Run one command; the JSON to print on success (nothing for DEL and CHECK).
pub fn run(env: &Env, stdin: &[u8]) -> Result<Option<Value>> {
    if env.command == "VERSION" {
        return Ok(Some(json!({
            "cniVersion": "1.0.0",
            "supportedVersions": SUPPORTED_VERSIONS,
        })));
    }
    let conf = NetConf::parse(stdin)?;
    let store = ipam::Store::new(&conf.data_dir, &conf.name, conf.subnet)?;
    match env.command.as_str() {
        "ADD" => add(env, &conf, &store).map(Some),
        "DEL" => del(env, &conf, &store).map(|()| None),
        "CHECK" => check(env, &conf, &store).map(|()| None),
        other => Err(Error::Env(format!("unknown CNI_COMMAND {other:?}"))),
    }
}

fn netns_path(env: &Env) -> Result<&Path> {
    env.netns
        .as_deref()
        .ok_or_else(|| Error::Env("CNI_NETNS is not set".into()))
}

fn open_netns(path: &Path) -> Result<std::fs::File> {
    match netns::open(path) {
        Err(netns::Error::Open { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::NoNetns(path.display().to_string()))
        }
        r => Ok(r?),
    }
}

/// The node's bridge `name`, created and given the gateway address of `subnet` on first
/// use (the node agent makes it at start, so its DNS server can listen there).
pub fn ensure_bridge(
    nl: &mut Netlink,
    name: &str,
    subnet: &Subnet,
    mtu: Option<u32>,
) -> Result<Link> {
    let link = match nl.link(name)? {
        Some(l) => l,
        None => {
            match nl.add_bridge(name, mtu) {
                Err(e) if e.is_exists() => {} // a concurrent ADD made it
                r => r?,
            }
            nl.must_link(name)?
        }
    };
    if link.kind.as_deref().is_some_and(|k| k != "bridge") {
        return Err(Error::Config(format!(
            "{name} exists and is a {}, not a bridge",
            link.kind.as_deref().unwrap_or("?")
        )));
    }
    // The bridge must not already serve another range: that would be another network's.
    for (ip, prefix) in nl.addrs(&link)? {
        let theirs = Subnet::new(ip, prefix).expect("prefix from the kernel");
        if theirs != *subnet && theirs.overlaps(subnet) {
            return Err(Error::Config(format!(
                "bridge {name} holds {ip}/{prefix}, which overlaps subnet {subnet} differently"
            )));
        }
    }
    nl.add_addr(&link, subnet.gateway(), subnet.prefix())?;
    if !link.up {
        nl.set_up(&link)?;
    }
    Ok(link)
}

fn add(env: &Env, conf: &NetConf, store: &ipam::Store) -> Result<Value> {
    let path = netns_path(env)?;
    let ns = open_netns(path)?;
    let ip = store.allocate(&env.container_id, &env.ifname)?;
    match attach(env, conf, path, &ns, ip) {
        Ok(v) => Ok(v),
        Err(e) => {
            // Leave nothing behind: the runtime may never call DEL for a failed ADD.
            let _ = store.release(&env.container_id, &env.ifname);
            if let Ok(mut nl) = Netlink::open() {
                let _ = nl.del_link(&host_veth(&env.container_id, &env.ifname));
            }
            Err(e)
        }
    }
}

fn attach(
    env: &Env,
    conf: &NetConf,
    path: &Path,
    ns: &std::fs::File,
    ip: Ipv4Addr,
) -> Result<Value> {
    let mut nl = Netlink::open()?;
    let bridge = ensure_bridge(&mut nl, &conf.bridge, &conf.subnet, conf.mtu)?;
    let host = host_veth(&env.container_id, &env.ifname);
    // A retried ADD: start again from a clean pair.
    nl.del_link(&host)?;
    nl.add_veth(&host, &env.ifname, ns.as_fd(), conf.mtu)?;
    let hl = nl.must_link(&host)?;
    nl.set_master(&hl, bridge.index)?;
    nl.set_hairpin(&hl)?;
    nl.set_up(&hl)?;
    let gateway = conf.subnet.gateway();
    let prefix = conf.subnet.prefix();
    let ifname = env.ifname.clone();
    let pod_mac = netns::run_in(ns, path, move || -> Result<Option<netlink::Mac>> {
        let mut nl = Netlink::open()?;
        if let Some(lo) = nl.link("lo")? {
            nl.set_up(&lo)?;
        }
        let link = nl.must_link(&ifname)?;
        nl.add_addr(&link, ip, prefix)?;
        nl.set_up(&link)?;
        nl.replace_route(&Route {
            dst: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
            gateway: Some(gateway),
            oif: Some(link.index),
            onlink: false,
            protocol: 3, // RTPROT_BOOT, as `ip route add` does
        })?;
        Ok(link.mac)
    })?;
    let mac = |m: Option<netlink::Mac>| m.map(|m| mac_string(&m)).unwrap_or_default();
    Ok(json!({
        "cniVersion": conf.cni_version,
        "interfaces": [
            {"name": host, "mac": mac(hl.mac)},
            {"name": env.ifname, "mac": mac(pod_mac), "sandbox": path},
        ],
        "ips": [{
            "address": format!("{ip}/{prefix}"),
            "gateway": gateway.to_string(),
            "interface": 1,
        }],
        "routes": [{"dst": "0.0.0.0/0", "gw": gateway.to_string()}],
        "dns": {},
    }))
}

/// Release the address and remove the pair; everything already gone is fine.
fn del(env: &Env, _conf: &NetConf, store: &ipam::Store) -> Result<()> {
    store.release(&env.container_id, &env.ifname)?;
    let mut nl = Netlink::open()?;
    // Deleting the host end takes the pod's end with it.
    nl.del_link(&host_veth(&env.container_id, &env.ifname))?;
    Ok(())
}

fn check(env: &Env, conf: &NetConf, store: &ipam::Store) -> Result<()> {
    let ip = store
        .lookup(&env.container_id, &env.ifname)?
        .ok_or_else(|| Error::Check(format!("no address reserved for {}", env.container_id)))?;
    let mut nl = Netlink::open()?;
    let bridge = nl
        .link(&conf.bridge)?
        .ok_or_else(|| Error::Check(format!("bridge {} is missing", conf.bridge)))?;
    let host = host_veth(&env.container_id, &env.ifname);
    let hl = nl
        .link(&host)?
        .ok_or_else(|| Error::Check(format!("{host} is missing")))?;
    if hl.master != Some(bridge.index) {
        return Err(Error::Check(format!(
            "{host} is not on bridge {}",
            conf.bridge
        )));
    }
    let path = netns_path(env)?;
    let ns = open_netns(path)?;
    let ifname = env.ifname.clone();
    let addrs = netns::run_in(&ns, path, move || -> Result<Vec<(Ipv4Addr, u8)>> {
        let mut nl = Netlink::open()?;
        let link = nl
            .link(&ifname)?
            .ok_or_else(|| Error::Check(format!("{ifname} is missing in the pod")))?;
        Ok(nl.addrs(&link)?)
    })?;
    if !addrs.contains(&(ip, conf.subnet.prefix())) {
        return Err(Error::Check(format!("{} does not hold {ip}", env.ifname)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(cmd: &str) -> HashMap<String, String> {
        [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/run/netns/x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn configuration_refuses_unknown_fields_and_versions() {
        let ok = br#"{"cniVersion":"1.0.0","name":"berth","type":"berth-cni","subnet":"10.244.1.0/24","runtimeConfig":{}}"#;
        let c = NetConf::parse(ok).unwrap();
        assert_eq!(c.bridge, "berth0");
        let typo = br#"{"cniVersion":"1.0.0","name":"berth","type":"berth-cni","subnet":"10.244.1.0/24","brdge":"x"}"#;
        let e = NetConf::parse(typo).unwrap_err();
        assert_eq!(e.code(), 7);
        assert!(e.to_string().contains("unknown field `brdge`"), "{e}");
        let old =
            br#"{"cniVersion":"0.2.0","name":"berth","type":"berth-cni","subnet":"10.244.1.0/24"}"#;
        assert_eq!(NetConf::parse(old).unwrap_err().code(), 1);
        let bad =
            br#"{"cniVersion":"1.0.0","name":"berth","type":"berth-cni","subnet":"10.244.1.3/24"}"#;
        assert!(NetConf::parse(bad)
            .unwrap_err()
            .to_string()
            .contains("host bits"));
    }

    #[test]
    fn environment_is_checked() {
        assert!(Env::from_vars(&env("ADD")).is_ok());
        let mut v = env("ADD");
        v.remove("CNI_CONTAINERID");
        assert_eq!(Env::from_vars(&v).unwrap_err().code(), 4);
        let mut v = env("VERSION");
        v.remove("CNI_CONTAINERID");
        assert!(Env::from_vars(&v).is_ok());
    }

    #[test]
    fn version_lists_what_is_supported() {
        let e = Env::from_vars(&env("VERSION")).unwrap();
        let v = run(&e, b"").unwrap().unwrap();
        assert_eq!(
            v["supportedVersions"].as_array().unwrap().len(),
            SUPPORTED_VERSIONS.len()
        );
    }

    #[test]
    fn host_veth_names_are_stable_and_short() {
        let a = host_veth("0123456789abcdef", "eth0");
        assert_eq!(a, host_veth("0123456789abcdef", "eth0"));
        assert_ne!(a, host_veth("0123456789abcdef", "eth1"));
        assert!(a.len() <= 15 && a.starts_with("veth"));
    }

    #[test]
    fn errors_are_the_specs_json() {
        let j = Error::NoNetns("/proc/1/ns/none".into()).to_json("1.0.0");
        assert_eq!(j["code"], 4);
        assert_eq!(j["msg"], "network namespace /proc/1/ns/none does not exist");
    }
}
