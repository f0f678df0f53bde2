//! A small synchronous rtnetlink client: the link, address, route and neighbour requests
//! the plugin and the overlay need, encoded by hand against the kernel's uapi headers
//! (`linux/rtnetlink.h`, `if_link.h`, `neighbour.h`). Requests are acknowledged one at a
//! time; errors carry the operation, the object and the kernel's errno.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("netlink socket: {0}")]
    Socket(#[source] Errno),
    #[error("netlink {op} {what}: {errno}")]
    Kernel {
        op: &'static str,
        what: String,
        errno: Errno,
    },
    #[error("netlink {op}: malformed reply")]
    Malformed { op: &'static str },
}

impl Error {
    /// The kernel said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::Kernel {
                errno: Errno::ENODEV | Errno::ENOENT | Errno::ESRCH | Errno::EADDRNOTAVAIL,
                ..
            }
        )
    }
    pub fn is_exists(&self) -> bool {
        matches!(
            self,
            Error::Kernel {
                errno: Errno::EEXIST,
                ..
            }
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
const RTM_GETNEIGH: u16 = 30;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;

const AF_INET: u8 = 2;
const AF_BRIDGE: u8 = 7;
const AF_UNSPEC: u8 = 0;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_PROTINFO: u16 = 12;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_BRPORT_MODE: u16 = 4;
const VETH_INFO_PEER: u16 = 1;
const IFLA_VXLAN_ID: u16 = 1;
const IFLA_VXLAN_LINK: u16 = 3;
const IFLA_VXLAN_LOCAL: u16 = 4;
const IFLA_VXLAN_LEARNING: u16 = 7;
const IFLA_VXLAN_PORT: u16 = 15;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTN_UNICAST: u8 = 1;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTNH_F_ONLINK: u32 = 4;

const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NUD_PERMANENT: u16 = 0x80;
const NTF_SELF: u8 = 0x02;

const IFF_UP: u32 = 0x1;

/// The route protocol Berth's routes carry, so they can be told from everybody else's.
pub const RTPROT_BERTH: u8 = 99;

/// A MAC address.
pub type Mac = [u8; 6];

/// Format a MAC the usual way.
pub fn mac_string(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// One netlink message under construction.
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(ty: u16, flags: u16) -> Self {
        let mut buf = vec![0u8; 16];
        buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        Msg {
            buf,
            nests: Vec::new(),
        }
    }

    /// `struct ifinfomsg`.
    fn ifinfo(mut self, family: u8, index: u32, flags: u32, change: u32) -> Self {
        self.buf.extend_from_slice(&[family, 0, 0, 0]);
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&change.to_ne_bytes());
        self
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    fn attr_u32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_ne_bytes());
    }

    fn attr_str(&mut self, ty: u16, s: &str) {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.attr(ty, &b);
    }

    fn begin(&mut self, ty: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    }

    fn end(&mut self) {
        let start = self.nests.pop().expect("balanced nests");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        debug_assert!(self.nests.is_empty());
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// Attributes of a message, by type (nested flag stripped).
fn attrs(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let ty = u16::from_ne_bytes([data[2], data[3]]) & 0x3fff;
        if len < 4 || len > data.len() {
            break;
        }
        out.push((ty, &data[4..len]));
        let next = (len + 3) & !3;
        data = &data[next.min(data.len())..];
    }
    out
}

fn ipv4(b: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(b).ok().map(Ipv4Addr::from)
}

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub up: bool,
    pub mtu: u32,
    pub mac: Option<Mac>,
    pub master: Option<u32>,
    pub kind: Option<String>,
}

impl Link {
    fn parse(payload: &[u8]) -> Option<Link> {
        if payload.len() < 16 {
            return None;
        }
        let index = u32::from_ne_bytes(payload[4..8].try_into().ok()?);
        let flags = u32::from_ne_bytes(payload[8..12].try_into().ok()?);
        let mut link = Link {
            index,
            name: String::new(),
            up: flags & IFF_UP != 0,
            mtu: 0,
            mac: None,
            master: None,
            kind: None,
        };
        for (ty, v) in attrs(&payload[16..]) {
            match ty {
                IFLA_IFNAME => {
                    link.name = String::from_utf8_lossy(v)
                        .trim_end_matches('\0')
                        .to_string()
                }
                IFLA_MTU => link.mtu = u32::from_ne_bytes(v.try_into().ok()?),
                IFLA_ADDRESS => link.mac = v.try_into().ok(),
                IFLA_MASTER => link.master = Some(u32::from_ne_bytes(v.try_into().ok()?)),
                IFLA_LINKINFO => {
                    for (t, k) in attrs(v) {
                        if t == IFLA_INFO_KIND {
                            link.kind = Some(
                                String::from_utf8_lossy(k)
                                    .trim_end_matches('\0')
                                    .to_string(),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
        Some(link)
    }
}

/// An IPv4 route in the main table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    /// The gateway is reachable on `oif` even without a route to it (VXLAN peers).
    pub onlink: bool,
    pub protocol: u8,
}

impl Route {
    fn parse(payload: &[u8]) -> Option<Route> {
        if payload.len() < 12 || payload[0] != AF_INET || payload[4] != RT_TABLE_MAIN {
            return None;
        }
        let flags = u32::from_ne_bytes(payload[8..12].try_into().ok()?);
        let mut r = Route {
            dst: Ipv4Addr::UNSPECIFIED,
            prefix: payload[1],
            gateway: None,
            oif: None,
            onlink: flags & RTNH_F_ONLINK != 0,
            protocol: payload[5],
        };
        for (ty, v) in attrs(&payload[12..]) {
            match ty {
                RTA_DST => r.dst = ipv4(v)?,
                RTA_GATEWAY => r.gateway = ipv4(v),
                RTA_OIF => r.oif = Some(u32::from_ne_bytes(v.try_into().ok()?)),
                _ => {}
            }
        }
        Some(r)
    }
}

/// A permanent neighbour (`ip neigh`) or forwarding (`bridge fdb`) entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Neighbour {
    pub ip: Ipv4Addr,
    pub mac: Mac,
}

/// A route-family netlink socket in the network namespace of the thread that opened it.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    pub fn open() -> Result<Self> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(Error::Socket)?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(Error::Socket)?;
        // The kernel answers at once; a reply that never comes is a bug, not a wait.
        let timeout = nix::sys::time::TimeVal::new(10, 0);
        socket::setsockopt(&fd, socket::sockopt::ReceiveTimeout, &timeout)
            .map_err(Error::Socket)?;
        Ok(Netlink { fd, seq: 1 })
    }

    fn send(&mut self, msg: Msg) -> Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let buf = msg.finish(self.seq);
        socket::send(self.fd.as_raw_fd(), &buf, MsgFlags::empty()).map_err(Error::Socket)?;
        Ok(self.seq)
    }

    /// Send and collect replies until the ack (or the end of a dump). Returns each
    /// reply's (type, payload).
    fn exchange(&mut self, op: &'static str, what: &str, msg: Msg) -> Result<Vec<(u16, Vec<u8>)>> {
        let seq = self.send(msg)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())
                .map_err(Error::Socket)?;
            let mut data = &buf[..n];
            while data.len() >= 16 {
                let len = u32::from_ne_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
                let ty = u16::from_ne_bytes([data[4], data[5]]);
                let rseq = u32::from_ne_bytes(data[8..12].try_into().expect("4 bytes"));
                if len < 16 || len > data.len() {
                    return Err(Error::Malformed { op });
                }
                let payload = &data[16..len];
                data = &data[((len + 3) & !3).min(data.len())..];
                if rseq != seq {
                    continue;
                }
                match ty {
                    NLMSG_ERROR => {
                        let code = i32::from_ne_bytes(
                            payload
                                .get(0..4)
                                .ok_or(Error::Malformed { op })?
                                .try_into()
                                .expect("4 bytes"),
                        );
                        if code == 0 {
                            return Ok(out);
                        }
                        return Err(Error::Kernel {
                            op,
                            what: what.to_string(),
                            errno: Errno::from_raw(-code),
                        });
                    }
                    NLMSG_DONE => return Ok(out),
                    _ => out.push((ty, payload.to_vec())),
                }
            }
        }
    }

    fn ack(&mut self, op: &'static str, what: &str, msg: Msg) -> Result<()> {
        self.exchange(op, what, msg).map(drop)
    }

    /// The link called `name`, if there is one.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>> {
        let mut m = Msg::new(RTM_GETLINK, NLM_F_ACK).ifinfo(AF_UNSPEC, 0, 0, 0);
        m.attr_str(IFLA_IFNAME, name);
        match self.exchange("get link", name, m) {
            Ok(replies) => Ok(replies
                .iter()
                .find(|(t, _)| *t == RTM_NEWLINK)
                .and_then(|(_, p)| Link::parse(p))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The link called `name`, which must exist.
    pub fn must_link(&mut self, name: &str) -> Result<Link> {
        self.link(name)?.ok_or_else(|| Error::Kernel {
            op: "get link",
            what: name.to_string(),
            errno: Errno::ENODEV,
        })
    }

    fn new_link(
        &mut self,
        name: &str,
        kind: &str,
        mtu: Option<u32>,
        data: impl FnOnce(&mut Msg),
    ) -> Result<()> {
        let mut m =
            Msg::new(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL).ifinfo(AF_UNSPEC, 0, 0, 0);
        m.attr_str(IFLA_IFNAME, name);
        if let Some(mtu) = mtu {
            m.attr_u32(IFLA_MTU, mtu);
        }
        m.begin(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, kind);
        data(&mut m);
        m.end();
        self.ack("add link", name, m)
    }

    /// Create a bridge.
    pub fn add_bridge(&mut self, name: &str, mtu: Option<u32>) -> Result<()> {
        self.new_link(name, "bridge", mtu, |_| {})
    }

    /// Create a veth pair whose `peer` end is created directly in the network namespace
    /// `peer_netns`.
    pub fn add_veth(
        &mut self,
        name: &str,
        peer: &str,
        peer_netns: BorrowedFd<'_>,
        mtu: Option<u32>,
    ) -> Result<()> {
        let fd = peer_netns.as_raw_fd() as u32;
        self.new_link(name, "veth", mtu, |m| {
            m.begin(IFLA_INFO_DATA);
            m.begin(VETH_INFO_PEER);
            // struct ifinfomsg of the peer, then its attributes.
            m.raw(&[0u8; 16]);
            m.attr_str(IFLA_IFNAME, peer);
            if let Some(mtu) = mtu {
                m.attr_u32(IFLA_MTU, mtu);
            }
            m.attr_u32(IFLA_NET_NS_FD, fd);
            m.end();
            m.end();
        })
    }

    /// Create a VXLAN device without learning: its forwarding entries are programmed.
    pub fn add_vxlan(
        &mut self,
        name: &str,
        vni: u32,
        local: Ipv4Addr,
        port: u16,
        parent: Option<u32>,
        mtu: Option<u32>,
    ) -> Result<()> {
        self.new_link(name, "vxlan", mtu, |m| {
            m.begin(IFLA_INFO_DATA);
            m.attr_u32(IFLA_VXLAN_ID, vni);
            m.attr(IFLA_VXLAN_LOCAL, &local.octets());
            if let Some(p) = parent {
                m.attr_u32(IFLA_VXLAN_LINK, p);
            }
            m.attr(IFLA_VXLAN_LEARNING, &[0]);
            m.attr(IFLA_VXLAN_PORT, &port.to_be_bytes());
            m.end();
        })
    }

    fn set_link(
        &mut self,
        what: &str,
        index: u32,
        flags: u32,
        change: u32,
        attrs: impl FnOnce(&mut Msg),
    ) -> Result<()> {
        let mut m = Msg::new(RTM_SETLINK, NLM_F_ACK).ifinfo(AF_UNSPEC, index, flags, change);
        attrs(&mut m);
        self.ack("set link", what, m)
    }

    pub fn set_up(&mut self, link: &Link) -> Result<()> {
        self.set_link(&link.name, link.index, IFF_UP, IFF_UP, |_| {})
    }

    pub fn set_master(&mut self, link: &Link, master: u32) -> Result<()> {
        self.set_link(&link.name, link.index, 0, 0, |m| {
            m.attr_u32(IFLA_MASTER, master)
        })
    }

    pub fn set_mac(&mut self, link: &Link, mac: Mac) -> Result<()> {
        self.set_link(&link.name, link.index, 0, 0, |m| m.attr(IFLA_ADDRESS, &mac))
    }

    /// Let a bridge port send frames back out the port they came in on, so a pod can
    /// reach itself through a Service address.
    pub fn set_hairpin(&mut self, link: &Link) -> Result<()> {
        let mut m = Msg::new(RTM_SETLINK, NLM_F_ACK).ifinfo(AF_BRIDGE, link.index, 0, 0);
        m.begin(IFLA_PROTINFO);
        m.attr(IFLA_BRPORT_MODE, &[1]);
        m.end();
        self.ack("set hairpin", &link.name, m)
    }

    /// Delete a link; false when it did not exist.
    pub fn del_link(&mut self, name: &str) -> Result<bool> {
        let mut m = Msg::new(RTM_DELLINK, NLM_F_ACK).ifinfo(AF_UNSPEC, 0, 0, 0);
        m.attr_str(IFLA_IFNAME, name);
        match self.ack("delete link", name, m) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every link (`ip link`).
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let m = Msg::new(RTM_GETLINK, NLM_F_DUMP).ifinfo(AF_UNSPEC, 0, 0, 0);
        Ok(self
            .exchange("list links", "", m)?
            .iter()
            .filter(|(t, _)| *t == RTM_NEWLINK)
            .filter_map(|(_, p)| Link::parse(p))
            .collect())
    }

    /// Add an IPv4 address; an existing identical address is fine.
    pub fn add_addr(&mut self, link: &Link, ip: Ipv4Addr, prefix: u8) -> Result<()> {
        let mut m = Msg::new(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
        m.raw(&[AF_INET, prefix, 0, RT_SCOPE_UNIVERSE]);
        m.raw(&link.index.to_ne_bytes());
        m.attr(IFA_LOCAL, &ip.octets());
        m.attr(IFA_ADDRESS, &ip.octets());
        match self.ack("add address", &format!("{ip}/{prefix} on {}", link.name), m) {
            Err(e) if e.is_exists() => Ok(()),
            r => r,
        }
    }

    /// The IPv4 addresses of a link.
    pub fn addrs(&mut self, link: &Link) -> Result<Vec<(Ipv4Addr, u8)>> {
        let mut m = Msg::new(RTM_GETADDR, NLM_F_DUMP);
        m.raw(&[AF_INET, 0, 0, 0, 0, 0, 0, 0]);
        let replies = self.exchange("list addresses", &link.name, m)?;
        Ok(replies
            .iter()
            .filter(|(_, p)| {
                p.len() >= 8 && u32::from_ne_bytes(p[4..8].try_into().expect("4")) == link.index
            })
            .filter_map(|(_, p)| {
                let prefix = p[1];
                attrs(&p[8..])
                    .into_iter()
                    .find(|(t, _)| *t == IFA_LOCAL)
                    .and_then(|(_, v)| ipv4(v))
                    .map(|ip| (ip, prefix))
            })
            .collect())
    }

    fn route_msg(ty: u16, flags: u16, r: &Route) -> Msg {
        let mut m = Msg::new(ty, flags);
        let scope = if r.gateway.is_none() && r.oif.is_some() {
            RT_SCOPE_LINK
        } else {
            RT_SCOPE_UNIVERSE
        };
        m.raw(&[
            AF_INET,
            r.prefix,
            0,
            0,
            RT_TABLE_MAIN,
            r.protocol,
            scope,
            RTN_UNICAST,
        ]);
        m.raw(&(if r.onlink { RTNH_F_ONLINK } else { 0 }).to_ne_bytes());
        if r.prefix > 0 {
            m.attr(RTA_DST, &r.dst.octets());
        }
        if let Some(gw) = r.gateway {
            m.attr(RTA_GATEWAY, &gw.octets());
        }
        if let Some(oif) = r.oif {
            m.attr_u32(RTA_OIF, oif);
        }
        m
    }

    /// Add or replace a route.
    pub fn replace_route(&mut self, r: &Route) -> Result<()> {
        let m = Self::route_msg(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, r);
        self.ack("replace route", &format!("{}/{}", r.dst, r.prefix), m)
    }

    /// Delete a route; false when it did not exist.
    pub fn del_route(&mut self, r: &Route) -> Result<bool> {
        let m = Self::route_msg(RTM_DELROUTE, NLM_F_ACK, r);
        match self.ack("delete route", &format!("{}/{}", r.dst, r.prefix), m) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The IPv4 routes of the main table.
    pub fn routes(&mut self) -> Result<Vec<Route>> {
        let mut m = Msg::new(RTM_GETROUTE, NLM_F_DUMP);
        m.raw(&[AF_INET, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        Ok(self
            .exchange("list routes", "", m)?
            .iter()
            .filter_map(|(_, p)| Route::parse(p))
            .collect())
    }

    fn neigh_msg(ty: u16, flags: u16, family: u8, link: &Link, state: u16, ntf: u8) -> Msg {
        let mut m = Msg::new(ty, flags);
        m.raw(&[family, 0, 0, 0]);
        m.raw(&link.index.to_ne_bytes());
        m.raw(&state.to_ne_bytes());
        m.raw(&[ntf, 0]);
        m
    }

    /// A permanent ARP entry: `ip` is at `mac` on `link`.
    pub fn replace_neigh(&mut self, link: &Link, n: &Neighbour) -> Result<()> {
        let mut m = Self::neigh_msg(
            RTM_NEWNEIGH,
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            AF_INET,
            link,
            NUD_PERMANENT,
            0,
        );
        m.attr(NDA_DST, &n.ip.octets());
        m.attr(NDA_LLADDR, &n.mac);
        self.ack(
            "replace neighbour",
            &format!("{} on {}", n.ip, link.name),
            m,
        )
    }

    pub fn del_neigh(&mut self, link: &Link, n: &Neighbour) -> Result<bool> {
        let mut m = Self::neigh_msg(RTM_DELNEIGH, NLM_F_ACK, AF_INET, link, 0, 0);
        m.attr(NDA_DST, &n.ip.octets());
        match self.ack("delete neighbour", &format!("{} on {}", n.ip, link.name), m) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A forwarding entry of a VXLAN device: frames for `mac` go to the host `ip`.
    pub fn replace_fdb(&mut self, link: &Link, n: &Neighbour) -> Result<()> {
        let mut m = Self::neigh_msg(
            RTM_NEWNEIGH,
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            AF_BRIDGE,
            link,
            NUD_PERMANENT,
            NTF_SELF,
        );
        m.attr(NDA_LLADDR, &n.mac);
        m.attr(NDA_DST, &n.ip.octets());
        self.ack(
            "replace fdb entry",
            &format!("{} on {}", mac_string(&n.mac), link.name),
            m,
        )
    }

    pub fn del_fdb(&mut self, link: &Link, n: &Neighbour) -> Result<bool> {
        let mut m = Self::neigh_msg(RTM_DELNEIGH, NLM_F_ACK, AF_BRIDGE, link, 0, NTF_SELF);
        m.attr(NDA_LLADDR, &n.mac);
        m.attr(NDA_DST, &n.ip.octets());
        match self.ack(
            "delete fdb entry",
            &format!("{} on {}", mac_string(&n.mac), link.name),
            m,
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn neighbours(&mut self, family: u8, link: &Link) -> Result<Vec<Neighbour>> {
        let mut m = Self::neigh_msg(RTM_GETNEIGH, NLM_F_DUMP, family, link, 0, 0);
        // Ask the kernel to filter by device (NDA_IFINDEX).
        m.attr_u32(8, link.index);
        let replies = self.exchange("list neighbours", &link.name, m)?;
        Ok(replies
            .iter()
            .filter(|(_, p)| p.len() >= 12)
            .filter(|(_, p)| u32::from_ne_bytes(p[4..8].try_into().expect("4")) == link.index)
            .filter(|(_, p)| u16::from_ne_bytes([p[8], p[9]]) & NUD_PERMANENT != 0)
            .filter_map(|(_, p)| {
                let mut ip = None;
                let mut mac = None;
                for (t, v) in attrs(&p[12..]) {
                    match t {
                        NDA_DST => ip = ipv4(v),
                        NDA_LLADDR => mac = v.try_into().ok(),
                        _ => {}
                    }
                }
                Some(Neighbour { ip: ip?, mac: mac? })
            })
            .collect())
    }

    /// The permanent ARP entries of a link.
    pub fn neighs(&mut self, link: &Link) -> Result<Vec<Neighbour>> {
        self.neighbours(AF_INET, link)
    }

    /// The forwarding entries of a VXLAN device that point at a remote host.
    pub fn fdbs(&mut self, link: &Link) -> Result<Vec<Neighbour>> {
        self.neighbours(AF_BRIDGE, link)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_framed_and_padded() {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_ACK).ifinfo(AF_UNSPEC, 7, IFF_UP, IFF_UP);
        m.attr_str(IFLA_IFNAME, "eth0");
        m.begin(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "veth");
        m.end();
        let b = m.finish(42);
        assert_eq!(b.len(), 16 + 16 + 12 + 4 + 12);
        assert_eq!(
            u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), RTM_NEWLINK);
        assert_eq!(u16::from_ne_bytes([b[6], b[7]]), NLM_F_ACK | NLM_F_REQUEST);
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 42);
        assert_eq!(u32::from_ne_bytes(b[20..24].try_into().unwrap()), 7);
        // "eth0\0" is 9 bytes with its header, padded to 12.
        assert_eq!(u16::from_ne_bytes([b[32], b[33]]), 9);
        assert_eq!(&b[36..41], b"eth0\0");
        // The nest covers its header and the padded kind attribute.
        assert_eq!(u16::from_ne_bytes([b[44], b[45]]), 16);
        assert_eq!(
            u16::from_ne_bytes([b[46], b[47]]),
            IFLA_LINKINFO | NLA_F_NESTED
        );
        assert_eq!(&b[52..57], b"veth\0");
    }

    #[test]
    fn attributes_parse_back_and_stop_at_garbage() {
        let mut m = Msg::new(0, 0);
        m.attr(RTA_DST, &[10, 244, 1, 0]);
        m.attr_u32(RTA_OIF, 3);
        let b = m.finish(1);
        let a = attrs(&b[16..]);
        assert_eq!(
            a,
            vec![
                (RTA_DST, &[10u8, 244, 1, 0][..]),
                (RTA_OIF, &3u32.to_ne_bytes()[..])
            ]
        );
        assert!(attrs(&[200, 0, 1, 0, 1]).is_empty());
    }

    #[test]
    fn a_route_round_trips_through_its_encoding() {
        let r = Route {
            dst: Ipv4Addr::new(10, 244, 2, 0),
            prefix: 24,
            gateway: Some(Ipv4Addr::new(10, 244, 2, 0)),
            oif: Some(9),
            onlink: true,
            protocol: RTPROT_BERTH,
        };
        let b = Netlink::route_msg(RTM_NEWROUTE, 0, &r).finish(1);
        assert_eq!(Route::parse(&b[16..]), Some(r));
    }

    #[test]
    fn macs_print_in_colon_form() {
        assert_eq!(
            mac_string(&[0x0e, 0xb0, 10, 244, 1, 0]),
            "0e:b0:0a:f4:01:00"
        );
    }
}
