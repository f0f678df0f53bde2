//! IPv4 prefixes (`10.244.1.0/24`): parsing, membership, overlap and the addresses
//! Berth derives from a node's pod range.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network: the address with its host bits cleared, and the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnet {
    base: Ipv4Addr,
    prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid IPv4 prefix {text:?}: {reason}")]
pub struct ParseError {
    text: String,
    reason: &'static str,
}

impl Subnet {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Subnet> {
        (prefix <= 32).then(|| Subnet {
            base: Ipv4Addr::from(u32::from(addr) & Self::mask_of(prefix)),
            prefix,
        })
    }

    fn mask_of(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        }
    }

    pub fn base(&self) -> Ipv4Addr {
        self.base
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask_of(self.prefix) == u32::from(self.base)
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.base) || other.contains(self.base)
    }

    /// The address at `offset` from the base, if inside.
    pub fn nth(&self, offset: u64) -> Option<Ipv4Addr> {
        (offset < self.size()).then(|| Ipv4Addr::from(u32::from(self.base) + offset as u32))
    }

    pub fn offset_of(&self, ip: Ipv4Addr) -> Option<u64> {
        self.contains(ip)
            .then(|| u64::from(u32::from(ip) - u32::from(self.base)))
    }

    /// The gateway pods use: the first address.
    pub fn gateway(&self) -> Ipv4Addr {
        self.nth(1).unwrap_or(self.base)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) | !Self::mask_of(self.prefix))
    }
}

impl FromStr for Subnet {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let err = |reason| ParseError {
            text: s.to_string(),
            reason,
        };
        let (ip, prefix) = s.split_once('/').ok_or_else(|| err("no /prefix"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| err("not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| err("bad prefix length"))?;
        let net = Subnet::new(ip, prefix).ok_or_else(|| err("prefix longer than 32"))?;
        if net.base != ip {
            return Err(err("host bits set"));
        }
        Ok(net)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl serde::Serialize for Subnet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Subnet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let n: Subnet = "10.244.1.0/24".parse().unwrap();
        assert_eq!(n.to_string(), "10.244.1.0/24");
        assert_eq!(n.gateway(), Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 244, 1, 255));
        assert_eq!(n.size(), 256);
        assert!("10.244.1.1/24"
            .parse::<Subnet>()
            .unwrap_err()
            .to_string()
            .contains("host bits"));
        assert!("10.244.1.0".parse::<Subnet>().is_err());
        assert!("10.244.1.0/33".parse::<Subnet>().is_err());
        assert!("0.0.0.0/0"
            .parse::<Subnet>()
            .unwrap()
            .contains(Ipv4Addr::new(1, 2, 3, 4)));
    }

    #[test]
    fn overlap_and_membership() {
        let a: Subnet = "10.244.0.0/16".parse().unwrap();
        let b: Subnet = "10.244.7.0/24".parse().unwrap();
        let c: Subnet = "10.245.0.0/24".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert_eq!(b.offset_of(Ipv4Addr::new(10, 244, 7, 9)), Some(9));
        assert_eq!(b.nth(256), None);
    }
}
