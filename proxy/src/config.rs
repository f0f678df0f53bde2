//! The proxy's settings, and the choice of back end.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// An IPv4 network, `10.244.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// The network `addr/prefix` (host bits are cleared). `None` if `prefix > 32`.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then(|| {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            Self {
                addr: Ipv4Addr::from(u32::from(addr) & mask),
                prefix,
            }
        })
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.addr)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid IPv4 CIDR {0:?}: want address/prefix, e.g. 10.244.0.0/16")]
pub struct ParseCidrError(String);

impl FromStr for Ipv4Cidr {
    type Err = ParseCidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseCidrError(s.to_string());
        let (addr, prefix) = s.split_once('/').ok_or_else(err)?;
        let addr = addr.parse().map_err(|_| err())?;
        let prefix = prefix.parse().map_err(|_| err())?;
        Ipv4Cidr::new(addr, prefix).ok_or_else(err)
    }
}

/// Which back end programs Services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// IPVS where the kernel has it, else nftables.
    #[default]
    Auto,
    Nftables,
    Ipvs,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Auto => "auto",
            Mode::Nftables => "nftables",
            Mode::Ipvs => "ipvs",
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown proxy mode {0:?}: want auto, nftables or ipvs")]
pub struct ParseModeError(String);

impl FromStr for Mode {
    type Err = ParseModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Mode::Auto),
            "nftables" => Ok(Mode::Nftables),
            "ipvs" => Ok(Mode::Ipvs),
            other => Err(ParseModeError(other.to_string())),
        }
    }
}

/// Settings for [`crate::run`].
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's name (for logs).
    pub node_name: String,
    /// The pod network of the whole cluster: traffic to a ClusterIP from outside it is
    /// masqueraded. `None`: no such masquerade.
    pub cluster_cidr: Option<Ipv4Cidr>,
    /// The back end asked for; [`select_mode`] resolves `Auto`. [`crate::run`] uses the data
    /// plane it is given and only logs this.
    pub mode: Mode,
    /// How long events are gathered before the data plane is called.
    pub sync_interval: Duration,
    /// The first wait after a failed data plane call (doubling up to [`Config::max_retry`]).
    pub min_retry: Duration,
    pub max_retry: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_name: String::new(),
            cluster_cidr: None,
            mode: Mode::Auto,
            sync_interval: Duration::from_millis(50),
            min_retry: Duration::from_secs(1),
            max_retry: Duration::from_secs(30),
        }
    }
}

/// Resolves `Auto` to [`Mode::Ipvs`] when the kernel has IPVS (after trying
/// `modprobe ip_vs`), else [`Mode::Nftables`]; other modes are returned as asked.
pub fn select_mode(requested: Mode) -> Mode {
    choose_mode(requested, ipvs_available)
}

fn choose_mode(requested: Mode, ipvs: impl FnOnce() -> bool) -> Mode {
    match requested {
        Mode::Auto if ipvs() => Mode::Ipvs,
        Mode::Auto => Mode::Nftables,
        other => other,
    }
}

/// Whether the kernel has IPVS: `/proc/net/ip_vs` exists (in this network namespace), if
/// need be after `modprobe ip_vs`.
pub fn ipvs_available() -> bool {
    let proc = Path::new("/proc/net/ip_vs");
    if proc.exists() {
        return true;
    }
    match std::process::Command::new("modprobe")
        .arg("ip_vs")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(status) if status.success() => proc.exists(),
        Ok(_) => false,
        Err(err) => {
            tracing::debug!(error = %err, "modprobe ip_vs could not run");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_normalise_and_match() {
        let c: Ipv4Cidr = "10.244.3.7/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.244.0.0/16");
        assert!(c.contains("10.244.255.1".parse().unwrap()));
        assert!(!c.contains("10.245.0.1".parse().unwrap()));
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.168.1.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Ipv4Cidr>().is_err());
        assert!("10.0.0.0".parse::<Ipv4Cidr>().is_err());
    }

    #[test]
    fn auto_picks_ipvs_only_when_the_kernel_has_it() {
        assert_eq!(choose_mode(Mode::Auto, || true), Mode::Ipvs);
        assert_eq!(choose_mode(Mode::Auto, || false), Mode::Nftables);
        assert_eq!(choose_mode(Mode::Nftables, || true), Mode::Nftables);
        assert_eq!(choose_mode(Mode::Ipvs, || false), Mode::Ipvs);
        assert_eq!("ipvs".parse::<Mode>().unwrap(), Mode::Ipvs);
        assert!("iptables".parse::<Mode>().is_err());
    }
}
