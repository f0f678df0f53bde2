//! A safe client for the kernel's IPVS table over generic netlink (family "IPVS",
//! version 1), the interface `ipvsadm` and moby's `ipvs` package use.
//!
//! [`IpvsNetlink`] resolves the family through `nlctrl`, then adds, changes, deletes and
//! dumps virtual services ([`Service`]) and their real servers ([`Destination`]). The wire
//! format lives in [`message`]; this module maps it to typed values.
//!
//! Everything is per network namespace: the client programs the namespace of the thread
//! that called [`IpvsNetlink::connect`]. The kernel wants `CAP_NET_ADMIN`.

pub mod message;

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use netlink_packet_core::NetlinkMessage;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::GenlMessage;
use netlink_sys::protocols::NETLINK_GENERIC;
use tracing::debug;

use self::message::{
    DestAttr, IpvsAttr, IpvsCmd, IpvsMessage, SvcAttr, SvcFlags, IPVS_GENL_NAME,
    IP_VS_SCHEDNAME_MAXLEN, IP_VS_SVC_F_HASHED, IP_VS_SVC_F_PERSISTENT,
};
use super::socket::{Conn, Kind};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the netlink clients (IPVS here, and the dummy interface in `ipvs::dummy`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op}: netlink socket: {source}")]
    Socket {
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("{op}: {source}")]
    Kernel {
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("{op}: malformed netlink reply: {reason}")]
    Decode { op: String, reason: String },
    #[error("the kernel has no \"IPVS\" generic netlink family (is the ip_vs module loaded?)")]
    FamilyNotFound,
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
}

impl Error {
    /// The errno the kernel answered with, if it was the kernel that refused
    /// (`EEXIST` for a service added twice, `ESRCH` for a missing service, ...).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// The transport protocol of a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The `IPPROTO_*` number.
    pub fn number(self) -> u16 {
        match self {
            Protocol::Tcp => libc::IPPROTO_TCP as u16,
            Protocol::Udp => libc::IPPROTO_UDP as u16,
            Protocol::Sctp => libc::IPPROTO_SCTP as u16,
        }
    }

    pub fn from_number(number: u16) -> Option<Self> {
        [Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
            .into_iter()
            .find(|p| p.number() == number)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// What identifies a virtual service: protocol, address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub protocol: Protocol,
    pub addr: SocketAddr,
}

impl ServiceKey {
    pub fn new(protocol: Protocol, addr: SocketAddr) -> Self {
        ServiceKey { protocol, addr }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.protocol, self.addr)
    }
}

/// A virtual service as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub key: ServiceKey,
    /// Scheduler module name ("rr", "wrr", "lc", ...); the kernel loads `ip_vs_<name>`.
    pub scheduler: String,
    /// `IP_VS_SVC_F_*`, without `IP_VS_SVC_F_HASHED`, which only the kernel sets.
    pub flags: u32,
    /// Persistence timeout in seconds (used with [`IP_VS_SVC_F_PERSISTENT`]).
    pub timeout: u32,
    /// Persistence granularity as the kernel stores it: for IPv4 the mask's bytes
    /// read in host order (`u32::MAX` is /32, one client address), for IPv6 a prefix
    /// length.
    pub netmask: u32,
}

impl Service {
    /// A service without persistence, with a per-client-address netmask (as
    /// kube-proxy sets it), so turning persistence on later changes only the flags.
    pub fn new(key: ServiceKey, scheduler: &str) -> Self {
        let netmask = match key.addr {
            SocketAddr::V4(_) => u32::MAX,
            SocketAddr::V6(_) => 128,
        };
        Service {
            key,
            scheduler: scheduler.to_owned(),
            flags: 0,
            timeout: 0,
            netmask,
        }
    }

    /// Send each client to the same real server for `timeout` seconds after its last
    /// connection (Kubernetes' `sessionAffinity: ClientIP`).
    pub fn persistent(mut self, timeout: u32) -> Self {
        self.flags |= IP_VS_SVC_F_PERSISTENT;
        self.timeout = timeout;
        self
    }

    pub fn is_persistent(&self) -> bool {
        self.flags & IP_VS_SVC_F_PERSISTENT != 0
    }
}

/// How IPVS forwards to a real server (`IP_VS_CONN_F_*` forwarding methods).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ForwardMethod {
    /// NAT: the destination address is rewritten (the only one Berth uses).
    Masquerade,
    Local,
    Tunnel,
    DirectRoute,
}

impl ForwardMethod {
    pub fn number(self) -> u32 {
        match self {
            ForwardMethod::Masquerade => 0,
            ForwardMethod::Local => 1,
            ForwardMethod::Tunnel => 2,
            ForwardMethod::DirectRoute => 3,
        }
    }

    pub fn from_number(number: u32) -> Option<Self> {
        [
            ForwardMethod::Masquerade,
            ForwardMethod::Local,
            ForwardMethod::Tunnel,
            ForwardMethod::DirectRoute,
        ]
        .into_iter()
        .find(|m| m.number() == number)
    }
}

/// A real server behind a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Destination {
    pub addr: SocketAddr,
    pub forward: ForwardMethod,
    /// 0 takes the server out of scheduling while its connections finish.
    pub weight: u32,
    /// Connection thresholds; 0 is unlimited.
    pub upper_threshold: u32,
    pub lower_threshold: u32,
}

impl Destination {
    /// A NAT-forwarded real server without thresholds.
    pub fn masquerade(addr: SocketAddr, weight: u32) -> Self {
        Destination {
            addr,
            forward: ForwardMethod::Masquerade,
            weight,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }
}

/// The kernel's IPVS version and connection table size (`IPVS_CMD_GET_INFO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// `IP_VS_VERSION_CODE`, 0x010201 for 1.2.1.
    pub version: u32,
    pub conn_tab_size: u32,
}

impl Info {
    pub fn version_string(&self) -> String {
        let v = self.version;
        format!("{}.{}.{}", (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff)
    }
}

impl IpvsMessage {
    /// `IPVS_CMD_NEW_SERVICE` with the full service.
    pub fn new_service(service: &Service) -> Self {
        Self::with(
            IpvsCmd::NewService,
            vec![IpvsAttr::Service(full_service(service))],
        )
    }

    /// `IPVS_CMD_SET_SERVICE` with the full service.
    pub fn set_service(service: &Service) -> Self {
        Self::with(
            IpvsCmd::SetService,
            vec![IpvsAttr::Service(full_service(service))],
        )
    }

    /// `IPVS_CMD_DEL_SERVICE` with the identifying attributes only.
    pub fn del_service(key: &ServiceKey) -> Self {
        Self::with(
            IpvsCmd::DelService,
            vec![IpvsAttr::Service(service_id(key))],
        )
    }

    /// `IPVS_CMD_GET_SERVICE`, sent as a dump.
    pub fn get_services() -> Self {
        Self::with(IpvsCmd::GetService, Vec::new())
    }

    /// `IPVS_CMD_NEW_DEST`: the service's identifying attributes and the full destination.
    pub fn new_dest(key: &ServiceKey, dest: &Destination) -> Self {
        Self::with(
            IpvsCmd::NewDest,
            vec![
                IpvsAttr::Service(service_id(key)),
                IpvsAttr::Dest(full_dest(dest)),
            ],
        )
    }

    /// `IPVS_CMD_SET_DEST`: the service's identifying attributes and the full destination.
    pub fn set_dest(key: &ServiceKey, dest: &Destination) -> Self {
        Self::with(
            IpvsCmd::SetDest,
            vec![
                IpvsAttr::Service(service_id(key)),
                IpvsAttr::Dest(full_dest(dest)),
            ],
        )
    }

    /// `IPVS_CMD_DEL_DEST`: the service's and the destination's identifying attributes.
    pub fn del_dest(key: &ServiceKey, addr: SocketAddr) -> Self {
        Self::with(
            IpvsCmd::DelDest,
            vec![
                IpvsAttr::Service(service_id(key)),
                IpvsAttr::Dest(dest_id(addr)),
            ],
        )
    }

    /// `IPVS_CMD_GET_DEST` for one service, sent as a dump.
    pub fn get_dests(key: &ServiceKey) -> Self {
        Self::with(IpvsCmd::GetDest, vec![IpvsAttr::Service(service_id(key))])
    }

    pub fn flush() -> Self {
        Self::with(IpvsCmd::Flush, Vec::new())
    }

    pub fn get_info() -> Self {
        Self::with(IpvsCmd::GetInfo, Vec::new())
    }

    fn with(cmd: IpvsCmd, attrs: Vec<IpvsAttr>) -> Self {
        IpvsMessage { cmd, attrs }
    }

    /// The nested service attributes, if the message carries them.
    pub fn service_attrs(&self) -> Option<&[SvcAttr]> {
        self.attrs.iter().find_map(|a| match a {
            IpvsAttr::Service(attrs) => Some(attrs.as_slice()),
            _ => None,
        })
    }

    /// The nested destination attributes, if the message carries them.
    pub fn dest_attrs(&self) -> Option<&[DestAttr]> {
        self.attrs.iter().find_map(|a| match a {
            IpvsAttr::Dest(attrs) => Some(attrs.as_slice()),
            _ => None,
        })
    }
}

fn family(addr: IpAddr) -> u16 {
    match addr {
        IpAddr::V4(_) => libc::AF_INET as u16,
        IpAddr::V6(_) => libc::AF_INET6 as u16,
    }
}

/// `union nf_inet_addr`: 16 bytes, an IPv4 address in the first 4.
fn inet_addr(addr: IpAddr) -> Vec<u8> {
    let mut bytes = vec![0; 16];
    match addr {
        IpAddr::V4(a) => bytes[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => bytes.copy_from_slice(&a.octets()),
    }
    bytes
}

fn service_id(key: &ServiceKey) -> Vec<SvcAttr> {
    vec![
        SvcAttr::AddressFamily(family(key.addr.ip())),
        SvcAttr::Protocol(key.protocol.number()),
        SvcAttr::Address(inet_addr(key.addr.ip())),
        SvcAttr::Port(key.addr.port()),
    ]
}

fn full_service(service: &Service) -> Vec<SvcAttr> {
    let mut attrs = service_id(&service.key);
    attrs.extend([
        SvcAttr::SchedName(service.scheduler.clone()),
        // Mask all bits: the service ends up with exactly these flags.
        SvcAttr::Flags(SvcFlags {
            flags: service.flags,
            mask: u32::MAX,
        }),
        SvcAttr::Timeout(service.timeout),
        SvcAttr::Netmask(service.netmask),
    ]);
    attrs
}

fn dest_id(addr: SocketAddr) -> Vec<DestAttr> {
    vec![
        DestAttr::Address(inet_addr(addr.ip())),
        DestAttr::Port(addr.port()),
        DestAttr::AddressFamily(family(addr.ip())),
    ]
}

fn full_dest(dest: &Destination) -> Vec<DestAttr> {
    let mut attrs = dest_id(dest.addr);
    attrs.extend([
        DestAttr::FwdMethod(dest.forward.number()),
        DestAttr::Weight(dest.weight),
        DestAttr::UpperThreshold(dest.upper_threshold),
        DestAttr::LowerThreshold(dest.lower_threshold),
    ]);
    attrs
}

fn decode_addr(af: u16, bytes: &[u8]) -> std::result::Result<IpAddr, String> {
    if af == libc::AF_INET as u16 && bytes.len() >= 4 {
        Ok(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        )))
    } else if af == libc::AF_INET6 as u16 && bytes.len() == 16 {
        let octets: [u8; 16] = bytes.try_into().map_err(|_| "bad IPv6 address")?;
        Ok(IpAddr::V6(Ipv6Addr::from(octets)))
    } else {
        Err(format!(
            "address of {} bytes for address family {af}",
            bytes.len()
        ))
    }
}

/// How a service from a dump decodes: ours to manage, or a kind Berth never creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Service(Service),
    /// A firewall-mark service (no protocol, address and port): not modelled.
    Fwmark(u32),
}

/// Decode the nested attributes of one service from a dump.
pub fn decode_service(attrs: &[SvcAttr]) -> std::result::Result<Decoded, String> {
    let (mut af, mut proto, mut addr, mut port, mut fwmark) = (None, None, None, None, None);
    let (mut sched, mut flags, mut timeout, mut netmask) = (None, 0, 0, 0);
    for attr in attrs {
        match attr {
            SvcAttr::AddressFamily(v) => af = Some(*v),
            SvcAttr::Protocol(v) => proto = Some(*v),
            SvcAttr::Address(v) => addr = Some(v.as_slice()),
            SvcAttr::Port(v) => port = Some(*v),
            SvcAttr::Fwmark(v) => fwmark = Some(*v),
            SvcAttr::SchedName(v) => sched = Some(v.clone()),
            SvcAttr::Flags(f) => flags = f.flags & !IP_VS_SVC_F_HASHED,
            SvcAttr::Timeout(v) => timeout = *v,
            SvcAttr::Netmask(v) => netmask = *v,
            SvcAttr::PeName(_) | SvcAttr::Other(_) => {}
        }
    }
    if let Some(mark) = fwmark.filter(|&m| m != 0) {
        return Ok(Decoded::Fwmark(mark));
    }
    let af = af.ok_or("service without IPVS_SVC_ATTR_AF")?;
    let proto = proto.ok_or("service without IPVS_SVC_ATTR_PROTOCOL")?;
    let protocol =
        Protocol::from_number(proto).ok_or_else(|| format!("unknown protocol number {proto}"))?;
    let ip = decode_addr(af, addr.ok_or("service without IPVS_SVC_ATTR_ADDR")?)?;
    let port = port.ok_or("service without IPVS_SVC_ATTR_PORT")?;
    Ok(Decoded::Service(Service {
        key: ServiceKey::new(protocol, SocketAddr::new(ip, port)),
        scheduler: sched.ok_or("service without IPVS_SVC_ATTR_SCHED_NAME")?,
        flags,
        timeout,
        netmask,
    }))
}

/// Decode the nested attributes of one destination from a dump. `service_af` stands in
/// for the destination's family on kernels older than 3.18, which do not send it.
pub fn decode_destination(
    attrs: &[DestAttr],
    service_af: u16,
) -> std::result::Result<Destination, String> {
    let (mut af, mut addr, mut port, mut fwd) = (service_af, None, None, 0);
    let (mut weight, mut upper, mut lower) = (0, 0, 0);
    for attr in attrs {
        match attr {
            DestAttr::Address(v) => addr = Some(v.as_slice()),
            DestAttr::Port(v) => port = Some(*v),
            DestAttr::FwdMethod(v) => fwd = *v,
            DestAttr::Weight(v) => weight = *v,
            DestAttr::UpperThreshold(v) => upper = *v,
            DestAttr::LowerThreshold(v) => lower = *v,
            DestAttr::AddressFamily(v) => af = *v,
            DestAttr::ActiveConns(_)
            | DestAttr::InactiveConns(_)
            | DestAttr::PersistConns(_)
            | DestAttr::Other(_) => {}
        }
    }
    let ip = decode_addr(af, addr.ok_or("destination without IPVS_DEST_ATTR_ADDR")?)?;
    let port = port.ok_or("destination without IPVS_DEST_ATTR_PORT")?;
    Ok(Destination {
        addr: SocketAddr::new(ip, port),
        forward: ForwardMethod::from_number(fwd)
            .ok_or_else(|| format!("unknown forwarding method {fwd}"))?,
        weight,
        upper_threshold: upper,
        lower_threshold: lower,
    })
}

/// A netlink socket talking to the kernel's IPVS family.
pub struct IpvsNetlink {
    conn: Conn,
    family: u16,
}

impl fmt::Debug for IpvsNetlink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpvsNetlink")
            .field("family", &self.family)
            .finish()
    }
}

impl IpvsNetlink {
    /// Open a generic netlink socket and resolve the "IPVS" family. Fails with
    /// [`Error::FamilyNotFound`] where `ip_vs` is not loaded.
    pub fn connect() -> Result<Self> {
        let mut conn = Conn::open(NETLINK_GENERIC)
            .map_err(|f| f.during(|| "open generic netlink socket".to_owned()))?;
        let request = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(IPVS_GENL_NAME.to_owned())],
        });
        let op = || "resolve generic netlink family IPVS".to_owned();
        let replies = match conn.request(NetlinkMessage::from(request), Kind::Ack(0)) {
            Ok(replies) => replies,
            Err(f) => {
                let err = f.during(op);
                return Err(if err.raw_os_error() == Some(libc::ENOENT) {
                    Error::FamilyNotFound
                } else {
                    err
                });
            }
        };
        let family = replies
            .iter()
            .flat_map(|r| r.payload.nlas.iter())
            .find_map(|a| match a {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
            .ok_or_else(|| Error::Decode {
                op: op(),
                reason: "no CTRL_ATTR_FAMILY_ID in the reply".to_owned(),
            })?;
        debug!(family, "resolved the IPVS generic netlink family");
        Ok(IpvsNetlink { conn, family })
    }

    /// The family id the kernel gave "IPVS".
    pub fn family_id(&self) -> u16 {
        self.family
    }

    pub fn info(&mut self) -> Result<Info> {
        let op = || "get ipvs info".to_owned();
        let replies = self.call(IpvsMessage::get_info(), Kind::Ack(0), op)?;
        let (mut version, mut conn_tab_size) = (None, None);
        for attr in replies.iter().flat_map(|m| m.attrs.iter()) {
            match attr {
                IpvsAttr::InfoVersion(v) => version = Some(*v),
                IpvsAttr::InfoConnTabSize(v) => conn_tab_size = Some(*v),
                _ => {}
            }
        }
        match (version, conn_tab_size) {
            (Some(version), Some(conn_tab_size)) => Ok(Info {
                version,
                conn_tab_size,
            }),
            _ => Err(Error::Decode {
                op: op(),
                reason: "reply without IPVS_INFO_ATTR_VERSION and CONN_TAB_SIZE".to_owned(),
            }),
        }
    }

    pub fn add_service(&mut self, service: &Service) -> Result<()> {
        check_scheduler(service)?;
        debug!(service = %service.key, scheduler = %service.scheduler, flags = service.flags, timeout = service.timeout, "ipvs add service");
        self.call(IpvsMessage::new_service(service), Kind::Ack(0), || {
            format!("add ipvs service {}", service.key)
        })
        .map(drop)
    }

    pub fn update_service(&mut self, service: &Service) -> Result<()> {
        check_scheduler(service)?;
        debug!(service = %service.key, scheduler = %service.scheduler, flags = service.flags, timeout = service.timeout, "ipvs update service");
        self.call(IpvsMessage::set_service(service), Kind::Ack(0), || {
            format!("update ipvs service {}", service.key)
        })
        .map(drop)
    }

    /// Delete a service and, with it, its destinations.
    pub fn delete_service(&mut self, key: &ServiceKey) -> Result<()> {
        debug!(service = %key, "ipvs delete service");
        self.call(IpvsMessage::del_service(key), Kind::Ack(0), || {
            format!("delete ipvs service {key}")
        })
        .map(drop)
    }

    /// Every protocol/address/port service in the namespace. Firewall-mark services,
    /// which Berth never creates, are left out.
    pub fn services(&mut self) -> Result<Vec<Service>> {
        let op = || "list ipvs services".to_owned();
        let replies = self.call(IpvsMessage::get_services(), Kind::Dump, op)?;
        let mut services = Vec::with_capacity(replies.len());
        for reply in &replies {
            let attrs = reply.service_attrs().ok_or_else(|| Error::Decode {
                op: op(),
                reason: "reply without IPVS_CMD_ATTR_SERVICE".to_owned(),
            })?;
            match decode_service(attrs).map_err(|reason| Error::Decode { op: op(), reason })? {
                Decoded::Service(service) => services.push(service),
                Decoded::Fwmark(mark) => debug!(mark, "skipping firewall-mark ipvs service"),
            }
        }
        Ok(services)
    }

    pub fn add_destination(&mut self, key: &ServiceKey, dest: &Destination) -> Result<()> {
        debug!(service = %key, dest = %dest.addr, weight = dest.weight, "ipvs add destination");
        self.call(IpvsMessage::new_dest(key, dest), Kind::Ack(0), || {
            format!("add ipvs destination {} to {key}", dest.addr)
        })
        .map(drop)
    }

    pub fn update_destination(&mut self, key: &ServiceKey, dest: &Destination) -> Result<()> {
        debug!(service = %key, dest = %dest.addr, weight = dest.weight, "ipvs update destination");
        self.call(IpvsMessage::set_dest(key, dest), Kind::Ack(0), || {
            format!("update ipvs destination {} of {key}", dest.addr)
        })
        .map(drop)
    }

    pub fn delete_destination(&mut self, key: &ServiceKey, addr: SocketAddr) -> Result<()> {
        debug!(service = %key, dest = %addr, "ipvs delete destination");
        self.call(IpvsMessage::del_dest(key, addr), Kind::Ack(0), || {
            format!("delete ipvs destination {addr} of {key}")
        })
        .map(drop)
    }

    /// The destinations of one service (none if the service does not exist).
    pub fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<Destination>> {
        let op = || format!("list ipvs destinations of {key}");
        let replies = self.call(IpvsMessage::get_dests(key), Kind::Dump, op)?;
        let af = family(key.addr.ip());
        replies
            .iter()
            .map(|reply| {
                let attrs = reply
                    .dest_attrs()
                    .ok_or("reply without IPVS_CMD_ATTR_DEST")?;
                decode_destination(attrs, af)
            })
            .collect::<std::result::Result<_, _>>()
            .map_err(|reason: String| Error::Decode { op: op(), reason })
    }

    /// Delete every service and destination in the namespace.
    pub fn flush(&mut self) -> Result<()> {
        debug!("ipvs flush");
        self.call(IpvsMessage::flush(), Kind::Ack(0), || {
            "flush ipvs".to_owned()
        })
        .map(drop)
    }

    fn call(
        &mut self,
        msg: IpvsMessage,
        kind: Kind,
        op: impl FnOnce() -> String,
    ) -> Result<Vec<IpvsMessage>> {
        let mut genl = GenlMessage::from_payload(msg);
        genl.set_resolved_family_id(self.family);
        let replies = self
            .conn
            .request(NetlinkMessage::from(genl), kind)
            .map_err(|f| f.during(op))?;
        Ok(replies.into_iter().map(|r| r.payload).collect())
    }
}

fn check_scheduler(service: &Service) -> Result<()> {
    let name = &service.scheduler;
    if name.is_empty() || name.len() > IP_VS_SCHEDNAME_MAXLEN || name.contains('\0') {
        return Err(Error::Invalid {
            what: format!("ipvs service {}", service.key),
            reason: format!(
                "scheduler name {name:?} must be 1 to {IP_VS_SCHEDNAME_MAXLEN} bytes without NUL"
            ),
        });
    }
    Ok(())
}

// The expected bytes are laid out by hand from include/uapi/linux/ip_vs.h and the kernel's
// attribute policy (ip_vs_svc_policy, ip_vs_dest_policy in ip_vs_ctl.c): struct nlmsghdr
// (16 bytes), struct genlmsghdr (4), then attributes of a 4-byte header (u16 length
// including the header, u16 type) padded to 4 bytes. Host-order fields are little-endian.
#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;
    use crate::ipvs::socket::{encode, read_datagram};
    use netlink_packet_core::NetlinkMessage;

    const FAMILY: u16 = 0x22;

    fn key() -> ServiceKey {
        ServiceKey::new(Protocol::Tcp, "10.96.0.1:80".parse().unwrap())
    }

    fn request(msg: IpvsMessage, kind: Kind, seq: u32) -> Vec<u8> {
        let mut genl = GenlMessage::from_payload(msg);
        genl.set_resolved_family_id(FAMILY);
        encode(&mut NetlinkMessage::from(genl), kind, seq)
    }

    /// A kernel-side attribute: header, value, zero padding.
    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(((value.len() + 4) as u16).to_le_bytes());
        out.extend(kind.to_le_bytes());
        out.extend(value);
        out.resize((out.len() + 3) & !3, 0);
        out
    }

    /// A kernel-side message: nlmsghdr, genlmsghdr, attributes.
    fn kernel_msg(msg_type: u16, flags: u16, seq: u32, cmd: u8, attrs: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(((16 + 4 + attrs.len()) as u32).to_le_bytes());
        out.extend(msg_type.to_le_bytes());
        out.extend(flags.to_le_bytes());
        out.extend(seq.to_le_bytes());
        out.extend(4242u32.to_le_bytes()); // our port id
        out.extend([cmd, 1, 0, 0]);
        out.extend(attrs);
        out
    }

    fn done(seq: u32, code: i32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(20u32.to_le_bytes());
        out.extend(3u16.to_le_bytes()); // NLMSG_DONE
        out.extend(2u16.to_le_bytes()); // NLM_F_MULTI
        out.extend(seq.to_le_bytes());
        out.extend(4242u32.to_le_bytes());
        out.extend(code.to_le_bytes());
        out
    }

    fn ack(seq: u32, code: i32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(36u32.to_le_bytes());
        out.extend(2u16.to_le_bytes()); // NLMSG_ERROR
        out.extend(0u16.to_le_bytes());
        out.extend(seq.to_le_bytes());
        out.extend(4242u32.to_le_bytes());
        out.extend(code.to_le_bytes());
        out.extend([0u8; 16]); // the request's header, echoed
        out
    }

    #[test]
    fn new_service_with_persistence_is_laid_out_as_the_kernel_reads_it() {
        let service = Service::new(key(), "rr").persistent(10800);
        let bytes = request(IpvsMessage::new_service(&service), Kind::Ack(0), 7);
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            // nlmsghdr: length 104, type = family id, flags REQUEST|ACK, seq 7, port 0
            104, 0, 0, 0,  0x22, 0,  0x05, 0,  7, 0, 0, 0,  0, 0, 0, 0,
            // genlmsghdr: IPVS_CMD_NEW_SERVICE, version 1, reserved
            1, 1, 0, 0,
            // IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED, 84 bytes
            84, 0,  0x01, 0x80,
            // IPVS_SVC_ATTR_AF: u16 AF_INET, 2 bytes padding
            6, 0,  1, 0,  2, 0,  0, 0,
            // IPVS_SVC_ATTR_PROTOCOL: u16 IPPROTO_TCP
            6, 0,  2, 0,  6, 0,  0, 0,
            // IPVS_SVC_ATTR_ADDR: union nf_inet_addr, IPv4 in the first 4 bytes
            20, 0,  3, 0,  10, 96, 0, 1,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
            // IPVS_SVC_ATTR_PORT: __be16 80
            6, 0,  4, 0,  0, 80,  0, 0,
            // IPVS_SVC_ATTR_SCHED_NAME: "rr\0", 1 byte padding
            7, 0,  6, 0,  b'r', b'r', 0,  0,
            // IPVS_SVC_ATTR_FLAGS: struct ip_vs_flags { IP_VS_SVC_F_PERSISTENT, mask ~0 }
            12, 0,  7, 0,  1, 0, 0, 0,  0xff, 0xff, 0xff, 0xff,
            // IPVS_SVC_ATTR_TIMEOUT: u32 10800 seconds (0x2a30)
            8, 0,  8, 0,  0x30, 0x2a, 0, 0,
            // IPVS_SVC_ATTR_NETMASK: __be32 255.255.255.255
            8, 0,  9, 0,  0xff, 0xff, 0xff, 0xff,
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn set_service_without_persistence_clears_the_flags() {
        let service = Service::new(key(), "rr");
        let bytes = request(IpvsMessage::set_service(&service), Kind::Ack(0), 1);
        assert_eq!(bytes[16], 2, "IPVS_CMD_SET_SERVICE");
        // FLAGS attribute: flags 0 under a full mask, so the kernel drops PERSISTENT.
        let flags_at = 16 + 4 + 4 + 8 + 8 + 20 + 8 + 8;
        assert_eq!(
            bytes[flags_at..flags_at + 12],
            [12, 0, 7, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(
            bytes[flags_at + 12..flags_at + 20],
            [8, 0, 8, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn delete_service_sends_only_the_identifying_attributes() {
        let bytes = request(IpvsMessage::del_service(&key()), Kind::Ack(0), 3);
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            68, 0, 0, 0,  0x22, 0,  0x05, 0,  3, 0, 0, 0,  0, 0, 0, 0,
            3, 1, 0, 0, // IPVS_CMD_DEL_SERVICE
            48, 0,  0x01, 0x80,
            6, 0,  1, 0,  2, 0,  0, 0,
            6, 0,  2, 0,  6, 0,  0, 0,
            20, 0,  3, 0,  10, 96, 0, 1,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
            6, 0,  4, 0,  0, 80,  0, 0,
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn new_dest_carries_the_service_id_and_the_full_masq_destination() {
        let udp = ServiceKey::new(Protocol::Udp, "10.96.0.10:53".parse().unwrap());
        let dest = Destination::masquerade("10.244.1.7:5353".parse().unwrap(), 1);
        let bytes = request(IpvsMessage::new_dest(&udp, &dest), Kind::Ack(0), 9);
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            // 16 + 4 + 48 (service) + 72 (destination) = 140
            140, 0, 0, 0,  0x22, 0,  0x05, 0,  9, 0, 0, 0,  0, 0, 0, 0,
            5, 1, 0, 0, // IPVS_CMD_NEW_DEST
            48, 0,  0x01, 0x80,
            6, 0,  1, 0,  2, 0,  0, 0,
            6, 0,  2, 0,  17, 0,  0, 0, // IPPROTO_UDP
            20, 0,  3, 0,  10, 96, 0, 10,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
            6, 0,  4, 0,  0, 53,  0, 0,
            // IPVS_CMD_ATTR_DEST | NLA_F_NESTED, 72 bytes
            72, 0,  0x02, 0x80,
            // IPVS_DEST_ATTR_ADDR
            20, 0,  1, 0,  10, 244, 1, 7,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
            // IPVS_DEST_ATTR_PORT: __be16 5353 (0x14e9)
            6, 0,  2, 0,  0x14, 0xe9,  0, 0,
            // IPVS_DEST_ATTR_ADDR_FAMILY: u16 AF_INET
            6, 0,  11, 0,  2, 0,  0, 0,
            // IPVS_DEST_ATTR_FWD_METHOD: IP_VS_CONN_F_MASQ
            8, 0,  3, 0,  0, 0, 0, 0,
            // IPVS_DEST_ATTR_WEIGHT 1, U_THRESH 0, L_THRESH 0
            8, 0,  4, 0,  1, 0, 0, 0,
            8, 0,  5, 0,  0, 0, 0, 0,
            8, 0,  6, 0,  0, 0, 0, 0,
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn del_dest_sends_identifying_attributes_of_both() {
        let bytes = request(
            IpvsMessage::del_dest(&key(), "10.244.1.7:8080".parse().unwrap()),
            Kind::Ack(0),
            4,
        );
        assert_eq!(bytes.len(), 16 + 4 + 48 + 40);
        assert_eq!(bytes[16], 7, "IPVS_CMD_DEL_DEST");
        #[rustfmt::skip]
        let dest: Vec<u8> = vec![
            40, 0,  0x02, 0x80,
            20, 0,  1, 0,  10, 244, 1, 7,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
            6, 0,  2, 0,  0x1f, 0x90,  0, 0,
            6, 0,  11, 0,  2, 0,  0, 0,
        ];
        assert_eq!(bytes[68..], dest[..]);
    }

    #[test]
    fn dumps_and_flush_are_bare_commands() {
        let dump = request(IpvsMessage::get_services(), Kind::Dump, 5);
        #[rustfmt::skip]
        assert_eq!(
            dump,
            // flags NLM_F_REQUEST | NLM_F_DUMP (0x301), IPVS_CMD_GET_SERVICE
            [20, 0, 0, 0,  0x22, 0,  0x01, 0x03,  5, 0, 0, 0,  0, 0, 0, 0,  4, 1, 0, 0]
        );
        let flush = request(IpvsMessage::flush(), Kind::Ack(0), 6);
        assert_eq!(flush[16..], [17, 1, 0, 0]);
        let info = request(IpvsMessage::get_info(), Kind::Ack(0), 6);
        assert_eq!(info[16..], [15, 1, 0, 0]);
    }

    #[test]
    fn ipv6_service_uses_all_sixteen_address_bytes_and_a_prefix_netmask() {
        let v6 = ServiceKey::new(Protocol::Tcp, "[fd00::a]:443".parse().unwrap());
        let service = Service::new(v6, "rr");
        assert_eq!(service.netmask, 128);
        let attrs = full_service(&service);
        assert_eq!(attrs[0], SvcAttr::AddressFamily(10));
        let mut addr = vec![0u8; 16];
        addr[0] = 0xfd;
        addr[15] = 0x0a;
        assert_eq!(attrs[2], SvcAttr::Address(addr));
    }

    /// The attributes the kernel's ip_vs_genl_fill_service() sends for one service.
    fn kernel_service_attrs(
        addr: [u8; 4],
        port: u16,
        proto: u16,
        flags: u32,
        timeout: u32,
    ) -> Vec<u8> {
        let mut inet = addr.to_vec();
        inet.resize(16, 0);
        let mut flags_value = flags.to_le_bytes().to_vec();
        flags_value.extend(u32::MAX.to_le_bytes());
        let stats = [nla(1, &7u32.to_le_bytes()), nla(2, &9u32.to_le_bytes())].concat();
        let stats64 = [nla(1, &7u64.to_le_bytes()), nla(2, &9u64.to_le_bytes())].concat();
        let inner = [
            nla(1, &2u16.to_le_bytes()),
            nla(2, &proto.to_le_bytes()),
            nla(3, &inet),
            nla(4, &port.to_be_bytes()),
            nla(6, b"rr\0"),
            nla(7, &flags_value),
            nla(8, &timeout.to_le_bytes()),
            nla(9, &[0xff; 4]),
            nla(10, &stats),   // IPVS_SVC_ATTR_STATS, nested, not modelled
            nla(12, &stats64), // IPVS_SVC_ATTR_STATS64
        ]
        .concat();
        // The kernel nests without NLA_F_NESTED (nla_nest_start_noflag).
        nla(1, &inner)
    }

    #[test]
    fn a_service_dump_decodes_and_drops_the_hashed_flag() {
        let seq = 11;
        let datagram = [
            kernel_msg(
                FAMILY,
                2,
                seq,
                1,
                &kernel_service_attrs([10, 96, 0, 1], 80, 6, 0x3, 10800),
            ),
            kernel_msg(
                FAMILY,
                2,
                seq,
                1,
                &kernel_service_attrs([10, 96, 0, 10], 53, 17, 0x2, 0),
            ),
            done(seq, 0),
        ]
        .concat();
        let mut replies: Vec<GenlMessage<IpvsMessage>> = Vec::new();
        assert!(
            read_datagram(&datagram, seq, &mut replies).unwrap(),
            "NLMSG_DONE ends the dump"
        );
        let decoded: Vec<Decoded> = replies
            .iter()
            .map(|r| {
                assert_eq!(r.payload.cmd, IpvsCmd::NewService);
                decode_service(r.payload.service_attrs().unwrap()).unwrap()
            })
            .collect();
        assert_eq!(
            decoded,
            vec![
                Decoded::Service(Service::new(key(), "rr").persistent(10800)),
                Decoded::Service(Service::new(
                    ServiceKey::new(Protocol::Udp, "10.96.0.10:53".parse().unwrap()),
                    "rr"
                )),
            ]
        );
    }

    #[test]
    fn a_destination_dump_decodes_with_counters_and_stats_ignored() {
        let seq = 12;
        let mut inet = vec![10, 244, 2, 9];
        inet.resize(16, 0);
        let inner = [
            nla(1, &inet),
            nla(2, &8080u16.to_be_bytes()),
            nla(3, &0u32.to_le_bytes()),
            nla(4, &1u32.to_le_bytes()),
            nla(5, &0u32.to_le_bytes()),
            nla(6, &0u32.to_le_bytes()),
            nla(7, &3u32.to_le_bytes()),
            nla(8, &4u32.to_le_bytes()),
            nla(9, &0u32.to_le_bytes()),
            nla(11, &2u16.to_le_bytes()),
            nla(10, &nla(1, &5u32.to_le_bytes())),
        ]
        .concat();
        let datagram = [kernel_msg(FAMILY, 2, seq, 5, &nla(2, &inner)), done(seq, 0)].concat();
        let mut replies: Vec<GenlMessage<IpvsMessage>> = Vec::new();
        assert!(read_datagram(&datagram, seq, &mut replies).unwrap());
        assert_eq!(replies.len(), 1);
        let msg = &replies[0].payload;
        assert_eq!(msg.cmd, IpvsCmd::NewDest);
        let attrs = msg.dest_attrs().unwrap();
        assert!(attrs.contains(&DestAttr::ActiveConns(3)));
        assert!(attrs.contains(&DestAttr::InactiveConns(4)));
        assert_eq!(
            decode_destination(attrs, 2).unwrap(),
            Destination::masquerade("10.244.2.9:8080".parse().unwrap(), 1)
        );
    }

    #[test]
    fn old_kernels_without_dest_address_family_use_the_services() {
        let mut inet = vec![0u8; 16];
        inet[0] = 0xfd;
        inet[15] = 7;
        let attrs = vec![
            DestAttr::Address(inet),
            DestAttr::Port(80),
            DestAttr::FwdMethod(0),
            DestAttr::Weight(1),
        ];
        let dest = decode_destination(&attrs, libc::AF_INET6 as u16).unwrap();
        assert_eq!(dest.addr, "[fd00::7]:80".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn malformed_attributes_are_named_in_the_error() {
        let inner = [nla(1, &2u16.to_le_bytes()), nla(4, &[0, 80, 0])].concat();
        let datagram = kernel_msg(FAMILY, 2, 1, 1, &nla(1, &inner));
        let mut replies: Vec<GenlMessage<IpvsMessage>> = Vec::new();
        let err = read_datagram(&datagram, 1, &mut replies).unwrap_err();
        let text = format!("{:?}", err.during(|| "list ipvs services".to_owned()));
        assert!(text.contains("IPVS_SVC_ATTR_PORT"), "{text}");

        let missing = decode_service(&[SvcAttr::AddressFamily(2), SvcAttr::Protocol(6)]);
        assert_eq!(missing.unwrap_err(), "service without IPVS_SVC_ATTR_ADDR");
    }

    #[test]
    fn firewall_mark_services_are_reported_apart() {
        let attrs = [
            SvcAttr::AddressFamily(2),
            SvcAttr::Fwmark(7),
            SvcAttr::SchedName("rr".into()),
        ];
        assert_eq!(decode_service(&attrs).unwrap(), Decoded::Fwmark(7));
    }

    #[test]
    fn kernel_errors_and_acks_end_a_request() {
        let mut replies: Vec<GenlMessage<IpvsMessage>> = Vec::new();
        // A stale reply to request 4 is skipped; the ACK of request 5 ends it.
        let datagram = [ack(4, -libc::EEXIST), ack(5, 0)].concat();
        assert!(read_datagram(&datagram, 5, &mut replies).unwrap());
        assert!(replies.is_empty());

        let err = read_datagram(&ack(6, -libc::ESRCH), 6, &mut replies)
            .unwrap_err()
            .during(|| "delete ipvs service TCP 10.96.0.1:80".to_owned());
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
        assert!(
            err.to_string()
                .starts_with("delete ipvs service TCP 10.96.0.1:80: "),
            "{err}"
        );

        // A dump cut short by an error reports it through NLMSG_DONE.
        let err = read_datagram(&done(7, -libc::EINVAL), 7, &mut replies).unwrap_err();
        assert!(
            matches!(err, crate::ipvs::socket::Failure::Kernel(e) if e.raw_os_error() == Some(libc::EINVAL))
        );

        // A dump the kernel marks as interrupted is not trusted.
        let intr = kernel_msg(
            FAMILY,
            2 | 0x10,
            9,
            1,
            &kernel_service_attrs([10, 0, 0, 1], 1, 6, 2, 0),
        );
        let err = read_datagram(&intr, 9, &mut replies).unwrap_err();
        assert!(format!("{err:?}").contains("NLM_F_DUMP_INTR"), "{err:?}");

        // Messages without the end: not finished yet.
        let partial = kernel_msg(
            FAMILY,
            2,
            8,
            1,
            &kernel_service_attrs([10, 0, 0, 1], 1, 6, 2, 0),
        );
        assert!(!read_datagram(&partial, 8, &mut replies).unwrap());
        assert_eq!(replies.len(), 1);
    }

    #[test]
    fn info_reply_decodes_its_own_attribute_numbers() {
        let attrs = [
            nla(1, &0x010201u32.to_le_bytes()),
            nla(2, &4096u32.to_le_bytes()),
        ]
        .concat();
        let datagram = [kernel_msg(FAMILY, 0, 2, 14, &attrs), ack(2, 0)].concat();
        let mut replies: Vec<GenlMessage<IpvsMessage>> = Vec::new();
        assert!(read_datagram(&datagram, 2, &mut replies).unwrap());
        assert_eq!(
            replies[0].payload.attrs,
            vec![
                IpvsAttr::InfoVersion(0x010201),
                IpvsAttr::InfoConnTabSize(4096)
            ]
        );
        let info = Info {
            version: 0x010201,
            conn_tab_size: 4096,
        };
        assert_eq!(info.version_string(), "1.2.1");
    }

    #[test]
    fn every_request_decodes_back_to_itself() {
        let service = Service::new(key(), "wrr").persistent(60);
        let dest = Destination::masquerade("10.244.0.2:80".parse().unwrap(), 3);
        for msg in [
            IpvsMessage::new_service(&service),
            IpvsMessage::set_service(&service),
            IpvsMessage::del_service(&key()),
            IpvsMessage::new_dest(&key(), &dest),
            IpvsMessage::set_dest(&key(), &dest),
            IpvsMessage::del_dest(&key(), dest.addr),
            IpvsMessage::get_dests(&key()),
        ] {
            let bytes = request(msg.clone(), Kind::Ack(0), 1);
            let back = NetlinkMessage::<GenlMessage<IpvsMessage>>::deserialize(&bytes).unwrap();
            let netlink_packet_core::NetlinkPayload::InnerMessage(genl) = back.payload else {
                panic!("not an inner message");
            };
            assert_eq!(genl.payload, msg);
        }
        let back = decode_service(IpvsMessage::new_service(&service).service_attrs().unwrap());
        assert_eq!(back.unwrap(), Decoded::Service(service));
        let back = decode_destination(
            IpvsMessage::new_dest(&key(), &dest).dest_attrs().unwrap(),
            2,
        );
        assert_eq!(back.unwrap(), dest);
    }

    #[test]
    fn scheduler_names_the_kernel_would_refuse_are_caught_first() {
        for name in ["", "a-scheduler-name-too-long", "r\0r"] {
            let err = check_scheduler(&Service::new(key(), name)).unwrap_err();
            assert!(
                err.to_string().contains("ipvs service TCP 10.96.0.1:80"),
                "{err}"
            );
        }
        check_scheduler(&Service::new(key(), "rr")).unwrap();
    }
}
