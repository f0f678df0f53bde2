//! The IPVS generic netlink family's messages, laid out as the kernel's
//! `include/uapi/linux/ip_vs.h` and `net/netfilter/ipvs/ip_vs_ctl.c` define them.
//!
//! A message is a command (the generic netlink header's `cmd`, version 1) and top-level
//! attributes: `IPVS_CMD_ATTR_SERVICE` and `IPVS_CMD_ATTR_DEST`, each a nested list of
//! `IPVS_SVC_ATTR_*` / `IPVS_DEST_ATTR_*`. Byte order follows the kernel's policy:
//! ports (and the IPv4 netmask) are big-endian, every other integer is host order.
//! Attributes this module does not model (statistics, tunnel settings) decode as
//! [`DefaultNla`] and are kept, so nothing the kernel sends is an error.

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, Nla, NlaBuffer, NlasIterator, Parseable,
    ParseableParametrized, NLA_F_NESTED,
};
use netlink_packet_generic::{GenlFamily, GenlHeader};

/// The family's name, resolved to an id through `nlctrl`.
pub const IPVS_GENL_NAME: &str = "IPVS";
/// The family's version, sent in every generic netlink header.
pub const IPVS_GENL_VERSION: u8 = 1;

/// Service flag: persistent (client affinity) scheduling.
pub const IP_VS_SVC_F_PERSISTENT: u32 = 0x0001;
/// Service flag the kernel sets on every service it has hashed; never ours to set.
pub const IP_VS_SVC_F_HASHED: u32 = 0x0002;

/// Longest scheduler name the kernel takes, without its NUL (`IP_VS_SCHEDNAME_MAXLEN - 1`).
pub const IP_VS_SCHEDNAME_MAXLEN: usize = 15;

const IPVS_CMD_NEW_SERVICE: u8 = 1;
const IPVS_CMD_SET_SERVICE: u8 = 2;
const IPVS_CMD_DEL_SERVICE: u8 = 3;
const IPVS_CMD_GET_SERVICE: u8 = 4;
const IPVS_CMD_NEW_DEST: u8 = 5;
const IPVS_CMD_SET_DEST: u8 = 6;
const IPVS_CMD_DEL_DEST: u8 = 7;
const IPVS_CMD_GET_DEST: u8 = 8;
const IPVS_CMD_SET_INFO: u8 = 14;
const IPVS_CMD_GET_INFO: u8 = 15;
const IPVS_CMD_FLUSH: u8 = 17;

const IPVS_CMD_ATTR_SERVICE: u16 = 1;
const IPVS_CMD_ATTR_DEST: u16 = 2;

const IPVS_SVC_ATTR_AF: u16 = 1;
const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
const IPVS_SVC_ATTR_ADDR: u16 = 3;
const IPVS_SVC_ATTR_PORT: u16 = 4;
const IPVS_SVC_ATTR_FWMARK: u16 = 5;
const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
const IPVS_SVC_ATTR_FLAGS: u16 = 7;
const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
const IPVS_SVC_ATTR_NETMASK: u16 = 9;
const IPVS_SVC_ATTR_PE_NAME: u16 = 11;

const IPVS_DEST_ATTR_ADDR: u16 = 1;
const IPVS_DEST_ATTR_PORT: u16 = 2;
const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
const IPVS_DEST_ATTR_ACTIVE_CONNS: u16 = 7;
const IPVS_DEST_ATTR_INACT_CONNS: u16 = 8;
const IPVS_DEST_ATTR_PERSIST_CONNS: u16 = 9;
const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;

const IPVS_INFO_ATTR_VERSION: u16 = 1;
const IPVS_INFO_ATTR_CONN_TAB_SIZE: u16 = 2;

/// An IPVS command (`IPVS_CMD_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpvsCmd {
    /// Add a service; also the command of every service in a dump.
    NewService,
    /// Change a service's scheduler, flags, timeout or netmask.
    SetService,
    /// Delete a service and its destinations.
    DelService,
    /// Dump the services (with `NLM_F_DUMP`).
    GetService,
    /// Add a destination; also the command of every destination in a dump.
    NewDest,
    /// Change a destination's forwarding method, weight or thresholds.
    SetDest,
    /// Delete a destination.
    DelDest,
    /// Dump one service's destinations (with `NLM_F_DUMP`).
    GetDest,
    /// The reply to [`IpvsCmd::GetInfo`].
    SetInfo,
    /// Ask for the IPVS version and connection table size.
    GetInfo,
    /// Delete every service and destination.
    Flush,
    /// A command this module does not model.
    Other(u8),
}

impl From<IpvsCmd> for u8 {
    fn from(cmd: IpvsCmd) -> u8 {
        match cmd {
            IpvsCmd::NewService => IPVS_CMD_NEW_SERVICE,
            IpvsCmd::SetService => IPVS_CMD_SET_SERVICE,
            IpvsCmd::DelService => IPVS_CMD_DEL_SERVICE,
            IpvsCmd::GetService => IPVS_CMD_GET_SERVICE,
            IpvsCmd::NewDest => IPVS_CMD_NEW_DEST,
            IpvsCmd::SetDest => IPVS_CMD_SET_DEST,
            IpvsCmd::DelDest => IPVS_CMD_DEL_DEST,
            IpvsCmd::GetDest => IPVS_CMD_GET_DEST,
            IpvsCmd::SetInfo => IPVS_CMD_SET_INFO,
            IpvsCmd::GetInfo => IPVS_CMD_GET_INFO,
            IpvsCmd::Flush => IPVS_CMD_FLUSH,
            IpvsCmd::Other(cmd) => cmd,
        }
    }
}

impl From<u8> for IpvsCmd {
    fn from(cmd: u8) -> IpvsCmd {
        match cmd {
            IPVS_CMD_NEW_SERVICE => IpvsCmd::NewService,
            IPVS_CMD_SET_SERVICE => IpvsCmd::SetService,
            IPVS_CMD_DEL_SERVICE => IpvsCmd::DelService,
            IPVS_CMD_GET_SERVICE => IpvsCmd::GetService,
            IPVS_CMD_NEW_DEST => IpvsCmd::NewDest,
            IPVS_CMD_SET_DEST => IpvsCmd::SetDest,
            IPVS_CMD_DEL_DEST => IpvsCmd::DelDest,
            IPVS_CMD_GET_DEST => IpvsCmd::GetDest,
            IPVS_CMD_SET_INFO => IpvsCmd::SetInfo,
            IPVS_CMD_GET_INFO => IpvsCmd::GetInfo,
            IPVS_CMD_FLUSH => IpvsCmd::Flush,
            other => IpvsCmd::Other(other),
        }
    }
}

/// `struct ip_vs_flags`: the kernel sets `flags & mask` and keeps the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SvcFlags {
    pub flags: u32,
    pub mask: u32,
}

/// A top-level attribute of an IPVS message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpvsAttr {
    /// `IPVS_CMD_ATTR_SERVICE`: the service the command is about.
    Service(Vec<SvcAttr>),
    /// `IPVS_CMD_ATTR_DEST`: the destination the command is about.
    Dest(Vec<DestAttr>),
    /// `IPVS_INFO_ATTR_VERSION` (only in a [`IpvsCmd::SetInfo`] reply).
    InfoVersion(u32),
    /// `IPVS_INFO_ATTR_CONN_TAB_SIZE` (only in a [`IpvsCmd::SetInfo`] reply).
    InfoConnTabSize(u32),
    Other(DefaultNla),
}

/// An `IPVS_SVC_ATTR_*` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SvcAttr {
    /// `AF_INET` or `AF_INET6`, host order u16.
    AddressFamily(u16),
    /// `IPPROTO_*`, host order u16.
    Protocol(u16),
    /// `union nf_inet_addr`: an IPv4 address in its first 4 bytes, or an IPv6 address.
    /// We send all 16 bytes, as the kernel does in its dumps.
    Address(Vec<u8>),
    /// Big-endian u16.
    Port(u16),
    /// Firewall mark services, instead of protocol, address and port.
    Fwmark(u32),
    /// Scheduler name, sent NUL-terminated.
    SchedName(String),
    Flags(SvcFlags),
    /// Persistence timeout in seconds, host order u32.
    Timeout(u32),
    /// Persistence netmask: the kernel reads the attribute as a `__be32`, so this is the
    /// u32 whose host-order bytes are the mask's bytes (`u32::MAX` for /32), or, for IPv6,
    /// a prefix length in host order.
    Netmask(u32),
    /// Persistence engine name, sent NUL-terminated.
    PeName(String),
    Other(DefaultNla),
}

/// An `IPVS_DEST_ATTR_*` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestAttr {
    /// `union nf_inet_addr`, 16 bytes (IPv4 in the first 4).
    Address(Vec<u8>),
    /// Big-endian u16.
    Port(u16),
    /// `IP_VS_CONN_F_MASQ` (0), `LOCALNODE` (1), `TUNNEL` (2) or `DROUTE` (3).
    FwdMethod(u32),
    Weight(u32),
    UpperThreshold(u32),
    LowerThreshold(u32),
    ActiveConns(u32),
    InactiveConns(u32),
    PersistConns(u32),
    /// The destination's own address family (may differ from the service's for tunnels).
    AddressFamily(u16),
    Other(DefaultNla),
}

/// One IPVS generic netlink message: the [`GenlFamily`] payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsMessage {
    pub cmd: IpvsCmd,
    pub attrs: Vec<IpvsAttr>,
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        IPVS_GENL_NAME
    }

    fn command(&self) -> u8 {
        self.cmd.into()
    }

    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let cmd = IpvsCmd::from(header.cmd);
        let mut attrs = Vec::new();
        for nla in NlasIterator::new(buf) {
            let nla = nla?;
            attrs.push(IpvsAttr::parse_with_param(&nla, cmd)?);
        }
        Ok(IpvsMessage { cmd, attrs })
    }
}

impl Nla for IpvsAttr {
    fn value_len(&self) -> usize {
        match self {
            IpvsAttr::Service(attrs) => attrs.as_slice().buffer_len(),
            IpvsAttr::Dest(attrs) => attrs.as_slice().buffer_len(),
            IpvsAttr::InfoVersion(_) | IpvsAttr::InfoConnTabSize(_) => 4,
            IpvsAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            IpvsAttr::Service(_) => IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED,
            IpvsAttr::Dest(_) => IPVS_CMD_ATTR_DEST | NLA_F_NESTED,
            IpvsAttr::InfoVersion(_) => IPVS_INFO_ATTR_VERSION,
            IpvsAttr::InfoConnTabSize(_) => IPVS_INFO_ATTR_CONN_TAB_SIZE,
            IpvsAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            IpvsAttr::Service(attrs) => attrs.as_slice().emit(buffer),
            IpvsAttr::Dest(attrs) => attrs.as_slice().emit(buffer),
            IpvsAttr::InfoVersion(v) | IpvsAttr::InfoConnTabSize(v) => {
                buffer.copy_from_slice(&v.to_ne_bytes())
            }
            IpvsAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> ParseableParametrized<NlaBuffer<&'a T>, IpvsCmd> for IpvsAttr {
    fn parse_with_param(buf: &NlaBuffer<&'a T>, cmd: IpvsCmd) -> Result<Self, DecodeError> {
        let value = buf.value();
        Ok(match (cmd, buf.kind()) {
            (IpvsCmd::SetInfo, IPVS_INFO_ATTR_VERSION) => {
                IpvsAttr::InfoVersion(u32_ne(value, "IPVS_INFO_ATTR_VERSION")?)
            }
            (IpvsCmd::SetInfo, IPVS_INFO_ATTR_CONN_TAB_SIZE) => {
                IpvsAttr::InfoConnTabSize(u32_ne(value, "IPVS_INFO_ATTR_CONN_TAB_SIZE")?)
            }
            (IpvsCmd::SetInfo, _) => IpvsAttr::Other(DefaultNla::parse(buf)?),
            (_, IPVS_CMD_ATTR_SERVICE) => IpvsAttr::Service(parse_nested(value, SvcAttr::parse)?),
            (_, IPVS_CMD_ATTR_DEST) => IpvsAttr::Dest(parse_nested(value, DestAttr::parse)?),
            _ => IpvsAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

impl Nla for SvcAttr {
    fn value_len(&self) -> usize {
        match self {
            SvcAttr::AddressFamily(_) | SvcAttr::Protocol(_) | SvcAttr::Port(_) => 2,
            SvcAttr::Address(bytes) => bytes.len(),
            SvcAttr::Fwmark(_) | SvcAttr::Timeout(_) | SvcAttr::Netmask(_) => 4,
            SvcAttr::SchedName(s) | SvcAttr::PeName(s) => s.len() + 1,
            SvcAttr::Flags(_) => 8,
            SvcAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            SvcAttr::AddressFamily(_) => IPVS_SVC_ATTR_AF,
            SvcAttr::Protocol(_) => IPVS_SVC_ATTR_PROTOCOL,
            SvcAttr::Address(_) => IPVS_SVC_ATTR_ADDR,
            SvcAttr::Port(_) => IPVS_SVC_ATTR_PORT,
            SvcAttr::Fwmark(_) => IPVS_SVC_ATTR_FWMARK,
            SvcAttr::SchedName(_) => IPVS_SVC_ATTR_SCHED_NAME,
            SvcAttr::Flags(_) => IPVS_SVC_ATTR_FLAGS,
            SvcAttr::Timeout(_) => IPVS_SVC_ATTR_TIMEOUT,
            SvcAttr::Netmask(_) => IPVS_SVC_ATTR_NETMASK,
            SvcAttr::PeName(_) => IPVS_SVC_ATTR_PE_NAME,
            SvcAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            SvcAttr::AddressFamily(v) | SvcAttr::Protocol(v) => {
                buffer.copy_from_slice(&v.to_ne_bytes())
            }
            SvcAttr::Port(v) => buffer.copy_from_slice(&v.to_be_bytes()),
            SvcAttr::Address(bytes) => buffer.copy_from_slice(bytes),
            SvcAttr::Fwmark(v) | SvcAttr::Timeout(v) | SvcAttr::Netmask(v) => {
                buffer.copy_from_slice(&v.to_ne_bytes())
            }
            SvcAttr::SchedName(s) | SvcAttr::PeName(s) => emit_cstr(s, buffer),
            SvcAttr::Flags(f) => {
                buffer[..4].copy_from_slice(&f.flags.to_ne_bytes());
                buffer[4..8].copy_from_slice(&f.mask.to_ne_bytes());
            }
            SvcAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl SvcAttr {
    fn parse(buf: &NlaBuffer<&[u8]>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            IPVS_SVC_ATTR_AF => SvcAttr::AddressFamily(u16_ne(v, "IPVS_SVC_ATTR_AF")?),
            IPVS_SVC_ATTR_PROTOCOL => SvcAttr::Protocol(u16_ne(v, "IPVS_SVC_ATTR_PROTOCOL")?),
            IPVS_SVC_ATTR_ADDR => SvcAttr::Address(address(v, "IPVS_SVC_ATTR_ADDR")?),
            IPVS_SVC_ATTR_PORT => SvcAttr::Port(u16_be(v, "IPVS_SVC_ATTR_PORT")?),
            IPVS_SVC_ATTR_FWMARK => SvcAttr::Fwmark(u32_ne(v, "IPVS_SVC_ATTR_FWMARK")?),
            IPVS_SVC_ATTR_SCHED_NAME => SvcAttr::SchedName(cstr(v, "IPVS_SVC_ATTR_SCHED_NAME")?),
            IPVS_SVC_ATTR_FLAGS => {
                let raw: [u8; 8] = exact(v, "IPVS_SVC_ATTR_FLAGS")?;
                SvcAttr::Flags(SvcFlags {
                    flags: u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]),
                    mask: u32::from_ne_bytes([raw[4], raw[5], raw[6], raw[7]]),
                })
            }
            IPVS_SVC_ATTR_TIMEOUT => SvcAttr::Timeout(u32_ne(v, "IPVS_SVC_ATTR_TIMEOUT")?),
            IPVS_SVC_ATTR_NETMASK => SvcAttr::Netmask(u32_ne(v, "IPVS_SVC_ATTR_NETMASK")?),
            IPVS_SVC_ATTR_PE_NAME => SvcAttr::PeName(cstr(v, "IPVS_SVC_ATTR_PE_NAME")?),
            _ => SvcAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

impl Nla for DestAttr {
    fn value_len(&self) -> usize {
        match self {
            DestAttr::Address(bytes) => bytes.len(),
            DestAttr::Port(_) | DestAttr::AddressFamily(_) => 2,
            DestAttr::FwdMethod(_)
            | DestAttr::Weight(_)
            | DestAttr::UpperThreshold(_)
            | DestAttr::LowerThreshold(_)
            | DestAttr::ActiveConns(_)
            | DestAttr::InactiveConns(_)
            | DestAttr::PersistConns(_) => 4,
            DestAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            DestAttr::Address(_) => IPVS_DEST_ATTR_ADDR,
            DestAttr::Port(_) => IPVS_DEST_ATTR_PORT,
            DestAttr::FwdMethod(_) => IPVS_DEST_ATTR_FWD_METHOD,
            DestAttr::Weight(_) => IPVS_DEST_ATTR_WEIGHT,
            DestAttr::UpperThreshold(_) => IPVS_DEST_ATTR_U_THRESH,
            DestAttr::LowerThreshold(_) => IPVS_DEST_ATTR_L_THRESH,
            DestAttr::ActiveConns(_) => IPVS_DEST_ATTR_ACTIVE_CONNS,
            DestAttr::InactiveConns(_) => IPVS_DEST_ATTR_INACT_CONNS,
            DestAttr::PersistConns(_) => IPVS_DEST_ATTR_PERSIST_CONNS,
            DestAttr::AddressFamily(_) => IPVS_DEST_ATTR_ADDR_FAMILY,
            DestAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            DestAttr::Address(bytes) => buffer.copy_from_slice(bytes),
            DestAttr::Port(v) => buffer.copy_from_slice(&v.to_be_bytes()),
            DestAttr::AddressFamily(v) => buffer.copy_from_slice(&v.to_ne_bytes()),
            DestAttr::FwdMethod(v)
            | DestAttr::Weight(v)
            | DestAttr::UpperThreshold(v)
            | DestAttr::LowerThreshold(v)
            | DestAttr::ActiveConns(v)
            | DestAttr::InactiveConns(v)
            | DestAttr::PersistConns(v) => buffer.copy_from_slice(&v.to_ne_bytes()),
            DestAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl DestAttr {
    fn parse(buf: &NlaBuffer<&[u8]>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            IPVS_DEST_ATTR_ADDR => DestAttr::Address(address(v, "IPVS_DEST_ATTR_ADDR")?),
            IPVS_DEST_ATTR_PORT => DestAttr::Port(u16_be(v, "IPVS_DEST_ATTR_PORT")?),
            IPVS_DEST_ATTR_FWD_METHOD => {
                DestAttr::FwdMethod(u32_ne(v, "IPVS_DEST_ATTR_FWD_METHOD")?)
            }
            IPVS_DEST_ATTR_WEIGHT => DestAttr::Weight(u32_ne(v, "IPVS_DEST_ATTR_WEIGHT")?),
            IPVS_DEST_ATTR_U_THRESH => {
                DestAttr::UpperThreshold(u32_ne(v, "IPVS_DEST_ATTR_U_THRESH")?)
            }
            IPVS_DEST_ATTR_L_THRESH => {
                DestAttr::LowerThreshold(u32_ne(v, "IPVS_DEST_ATTR_L_THRESH")?)
            }
            IPVS_DEST_ATTR_ACTIVE_CONNS => {
                DestAttr::ActiveConns(u32_ne(v, "IPVS_DEST_ATTR_ACTIVE_CONNS")?)
            }
            IPVS_DEST_ATTR_INACT_CONNS => {
                DestAttr::InactiveConns(u32_ne(v, "IPVS_DEST_ATTR_INACT_CONNS")?)
            }
            IPVS_DEST_ATTR_PERSIST_CONNS => {
                DestAttr::PersistConns(u32_ne(v, "IPVS_DEST_ATTR_PERSIST_CONNS")?)
            }
            IPVS_DEST_ATTR_ADDR_FAMILY => {
                DestAttr::AddressFamily(u16_ne(v, "IPVS_DEST_ATTR_ADDR_FAMILY")?)
            }
            _ => DestAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

fn parse_nested<A>(
    buf: &[u8],
    parse: fn(&NlaBuffer<&[u8]>) -> Result<A, DecodeError>,
) -> Result<Vec<A>, DecodeError> {
    NlasIterator::new(buf)
        .map(|nla| nla.and_then(|nla| parse(&nla)))
        .collect()
}

fn exact<const N: usize>(v: &[u8], what: &str) -> Result<[u8; N], DecodeError> {
    v.try_into().map_err(|_| {
        DecodeError::from(format!("{what}: expected {N} bytes, got {} bytes", v.len()))
    })
}

fn u16_ne(v: &[u8], what: &str) -> Result<u16, DecodeError> {
    exact(v, what).map(u16::from_ne_bytes)
}

fn u16_be(v: &[u8], what: &str) -> Result<u16, DecodeError> {
    exact(v, what).map(u16::from_be_bytes)
}

fn u32_ne(v: &[u8], what: &str) -> Result<u32, DecodeError> {
    exact(v, what).map(u32::from_ne_bytes)
}

fn address(v: &[u8], what: &str) -> Result<Vec<u8>, DecodeError> {
    match v.len() {
        4 | 16 => Ok(v.to_vec()),
        n => Err(DecodeError::from(format!(
            "{what}: expected 4 or 16 bytes, got {n} bytes"
        ))),
    }
}

fn cstr(v: &[u8], what: &str) -> Result<String, DecodeError> {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8(v[..end].to_vec())
        .map_err(|e| DecodeError::from(format!("{what}: not UTF-8: {e}")))
}

fn emit_cstr(s: &str, buffer: &mut [u8]) {
    buffer[..s.len()].copy_from_slice(s.as_bytes());
    buffer[s.len()] = 0;
}
