//! The dummy interface that holds every ClusterIP, as kube-proxy's `kube-ipvs0`.
//!
//! IPVS hooks `LOCAL_IN`: it only sees packets the kernel routes to this host, so each
//! virtual address must be a local address. Each one is added as a /32 (/128) to a dummy
//! interface that stays down: the kernel still installs the `local` route for an address
//! on a down device (so traffic to it is accepted), but no prefix route and no neighbour
//! discovery.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use netlink_packet_core::{NetlinkMessage, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use tracing::{debug, info};

use super::netlink::{Error, Result};
use super::socket::{Conn, Kind};

/// The interface Berth's IPVS mode puts its virtual addresses on.
pub const DEFAULT_NAME: &str = "berth-ipvs0";

/// The kind of device to hold the addresses. IPVS mode uses [`LinkKind::Dummy`]; any
/// device kept down serves the same purpose, so tests on kernels built without the
/// dummy driver use [`LinkKind::Ifb`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    Dummy,
    Ifb,
}

impl LinkKind {
    fn info_kind(self) -> InfoKind {
        match self {
            LinkKind::Dummy => InfoKind::Dummy,
            LinkKind::Ifb => InfoKind::Ifb,
        }
    }
}

/// A dummy interface and the addresses on it, over rtnetlink.
pub struct DummyLink {
    conn: Conn,
    name: String,
    index: u32,
}

impl fmt::Debug for DummyLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DummyLink")
            .field("name", &self.name)
            .field("index", &self.index)
            .finish()
    }
}

impl DummyLink {
    /// Find the dummy interface `name` in the calling thread's network namespace, or
    /// create it (left down). Fails if `name` exists but is not a dummy interface.
    pub fn ensure(name: &str) -> Result<Self> {
        Self::ensure_kind(name, LinkKind::Dummy)
    }

    /// [`DummyLink::ensure`] with another kind of device.
    pub fn ensure_kind(name: &str, kind: LinkKind) -> Result<Self> {
        let want = kind.info_kind();
        let mut conn = Conn::open(NETLINK_ROUTE)
            .map_err(|f| f.during(|| "open rtnetlink socket".to_owned()))?;
        let (index, found) = match get_link(&mut conn, name)? {
            Some(found) => found,
            None => {
                create(&mut conn, name, &want)?;
                info!(link = name, kind = ?want, "created interface");
                get_link(&mut conn, name)?.ok_or_else(|| Error::Invalid {
                    what: format!("interface {name}"),
                    reason: "not found right after it was created".to_owned(),
                })?
            }
        };
        if found.as_ref() != Some(&want) {
            return Err(Error::Invalid {
                what: format!("interface {name}"),
                reason: format!("exists as kind {found:?}, not {want:?}"),
            });
        }
        Ok(DummyLink {
            conn,
            name: name.to_owned(),
            index,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    /// The addresses on the interface.
    pub fn addresses(&mut self) -> Result<BTreeSet<IpAddr>> {
        let mut msg = AddressMessage::default();
        msg.header.index = self.index;
        let replies = self
            .conn
            .request(
                NetlinkMessage::from(RouteNetlinkMessage::GetAddress(msg)),
                Kind::Dump,
            )
            .map_err(|f| f.during(|| format!("list addresses of {}", self.name)))?;
        let mut addresses = BTreeSet::new();
        for reply in replies {
            let RouteNetlinkMessage::NewAddress(addr) = reply else {
                continue;
            };
            // Older kernels ignore the index filter of a dump: filter here as well.
            if addr.header.index != self.index {
                continue;
            }
            let local = addr.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let address = addr.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = local.or(address) {
                addresses.insert(ip);
            }
        }
        Ok(addresses)
    }

    /// Add `addr` as a host address (/32 or /128). Adding one that is there is no error.
    pub fn add_address(&mut self, addr: IpAddr) -> Result<()> {
        debug!(link = %self.name, %addr, "add address");
        let msg = self.address_message(addr);
        match self.conn.request(
            NetlinkMessage::from(RouteNetlinkMessage::NewAddress(msg)),
            Kind::Ack(NLM_F_CREATE | NLM_F_EXCL),
        ) {
            Ok(_) => Ok(()),
            Err(f) => {
                let err = f.during(|| format!("add address {addr} to {}", self.name));
                if err.raw_os_error() == Some(libc::EEXIST) {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Remove `addr`. Removing one that is not there is no error.
    pub fn delete_address(&mut self, addr: IpAddr) -> Result<()> {
        debug!(link = %self.name, %addr, "delete address");
        let msg = self.address_message(addr);
        match self.conn.request(
            NetlinkMessage::from(RouteNetlinkMessage::DelAddress(msg)),
            Kind::Ack(0),
        ) {
            Ok(_) => Ok(()),
            Err(f) => {
                let err = f.during(|| format!("delete address {addr} from {}", self.name));
                if err.raw_os_error() == Some(libc::EADDRNOTAVAIL) {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Delete the interface, and with it its addresses.
    pub fn delete(mut self) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = self.index;
        self.conn
            .request(
                NetlinkMessage::from(RouteNetlinkMessage::DelLink(msg)),
                Kind::Ack(0),
            )
            .map_err(|f| f.during(|| format!("delete interface {}", self.name)))?;
        info!(link = %self.name, "deleted interface");
        Ok(())
    }

    fn address_message(&self, addr: IpAddr) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.index = self.index;
        match addr {
            IpAddr::V4(_) => {
                msg.header.family = AddressFamily::Inet;
                msg.header.prefix_len = 32;
                msg.attributes.push(AddressAttribute::Local(addr));
                msg.attributes.push(AddressAttribute::Address(addr));
            }
            IpAddr::V6(_) => {
                msg.header.family = AddressFamily::Inet6;
                msg.header.prefix_len = 128;
                // No duplicate address detection: the address is only ever ours.
                msg.header.flags = AddressHeaderFlags::Nodad;
                msg.attributes.push(AddressAttribute::Address(addr));
                msg.attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
        msg
    }
}

/// Whether an interface called `name` exists in the calling thread's network namespace.
pub fn exists(name: &str) -> Result<bool> {
    let mut conn =
        Conn::open(NETLINK_ROUTE).map_err(|f| f.during(|| "open rtnetlink socket".to_owned()))?;
    Ok(get_link(&mut conn, name)?.is_some())
}

/// Delete the interface called `name`, whatever its kind, if there is one (cleaning up
/// without creating it first, as [`DummyLink::ensure`] would). Returns whether it existed.
pub fn delete_if_exists(name: &str) -> Result<bool> {
    let mut conn =
        Conn::open(NETLINK_ROUTE).map_err(|f| f.during(|| "open rtnetlink socket".to_owned()))?;
    let Some((index, _)) = get_link(&mut conn, name)? else {
        return Ok(false);
    };
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    match conn.request(
        NetlinkMessage::from(RouteNetlinkMessage::DelLink(msg)),
        Kind::Ack(0),
    ) {
        Ok(_) => {
            info!(link = name, "deleted interface");
            Ok(true)
        }
        Err(f) => {
            let err = f.during(|| format!("delete interface {name}"));
            // Gone between the look-up and now.
            if err.raw_os_error() == Some(libc::ENODEV) {
                Ok(false)
            } else {
                Err(err)
            }
        }
    }
}

/// The index and kind of the interface called `name`, if there is one.
fn get_link(conn: &mut Conn, name: &str) -> Result<Option<(u32, Option<InfoKind>)>> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
    let replies = match conn.request(
        NetlinkMessage::from(RouteNetlinkMessage::GetLink(msg)),
        Kind::Ack(0),
    ) {
        Ok(replies) => replies,
        Err(f) => {
            let err = f.during(|| format!("look up interface {name}"));
            return if err.raw_os_error() == Some(libc::ENODEV) {
                Ok(None)
            } else {
                Err(err)
            };
        }
    };
    Ok(replies.into_iter().find_map(|reply| match reply {
        RouteNetlinkMessage::NewLink(link) => {
            let kind = link.attributes.iter().find_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                    LinkInfo::Kind(kind) => Some(kind.clone()),
                    _ => None,
                }),
                _ => None,
            });
            Some((link.header.index, kind))
        }
        _ => None,
    }))
}

fn create(conn: &mut Conn, name: &str, kind: &InfoKind) -> Result<()> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
    msg.attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind.clone())]));
    match conn.request(
        NetlinkMessage::from(RouteNetlinkMessage::NewLink(msg)),
        Kind::Ack(NLM_F_CREATE | NLM_F_EXCL),
    ) {
        Ok(_) => Ok(()),
        Err(f) => {
            let err = f.during(|| format!("create {kind:?} interface {name}"));
            // Created by someone else between our look-up and now: fine, it is checked after.
            if err.raw_os_error() == Some(libc::EEXIST) {
                Ok(())
            } else {
                Err(err)
            }
        }
    }
}
