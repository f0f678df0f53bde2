//! Host-local address management: one file per reserved address under
//! `DATA_DIR/NETWORK/`, holding the container id and interface that own it. A file is
//! created with `O_EXCL`, so an address is never handed out twice, and every change is
//! made under an exclusive lock on `DATA_DIR/NETWORK/lock`. Allocation goes round-robin
//! from the last address handed out, so a freed address is not reused at once.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::subnet::Subnet;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("address store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no free address left in {0}")]
    Exhausted(Subnet),
    #[error("{0} is too small for pods (a /30 or larger is needed)")]
    TooSmall(Subnet),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The reservations of one network.
pub struct Store {
    dir: PathBuf,
    subnet: Subnet,
}

/// Held while the store is being changed.
struct Locked {
    _lock: Flock<File>,
}

const LAST: &str = "last_reserved_ip.0";

impl Store {
    pub fn new(data_dir: &Path, network: &str, subnet: Subnet) -> Result<Store> {
        if subnet.size() < 4 {
            return Err(Error::TooSmall(subnet));
        }
        Ok(Store {
            dir: data_dir.join(network),
            subnet,
        })
    }

    fn io(&self, path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
        let path = path.to_path_buf();
        move |source| Error::Io {
            path: path.clone(),
            source,
        }
    }

    fn lock(&self) -> Result<Locked> {
        std::fs::create_dir_all(&self.dir).map_err(self.io(&self.dir))?;
        let path = self.dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(self.io(&path))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| Error::Io {
            path,
            source: e.into(),
        })?;
        Ok(Locked { _lock: lock })
    }

    fn owner(container: &str, ifname: &str) -> String {
        format!("{container}\r\n{ifname}")
    }

    /// The reservations, as (address, owner text).
    fn reservations(&self) -> Result<Vec<(Ipv4Addr, String)>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(&self.dir)(e)),
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let Some(ip) = e
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let text = std::fs::read_to_string(e.path()).map_err(self.io(&e.path()))?;
            out.push((ip, text));
        }
        Ok(out)
    }

    /// The address of `container`'s `ifname`, if it has one.
    pub fn lookup(&self, container: &str, ifname: &str) -> Result<Option<Ipv4Addr>> {
        let owner = Self::owner(container, ifname);
        Ok(self
            .reservations()?
            .into_iter()
            .find(|(_, o)| o.trim() == owner)
            .map(|(ip, _)| ip))
    }

    /// Reserve an address for `container`'s `ifname`; the same one again if it already
    /// has one (a retried ADD).
    pub fn allocate(&self, container: &str, ifname: &str) -> Result<Ipv4Addr> {
        let _lock = self.lock()?;
        if let Some(ip) = self.lookup(container, ifname)? {
            return Ok(ip);
        }
        // Usable: after the gateway (offset 1), before the broadcast address.
        let first = 2u64;
        let last = self.subnet.size() - 2;
        let last_path = self.dir.join(LAST);
        let start = std::fs::read_to_string(&last_path)
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .and_then(|ip| self.subnet.offset_of(ip))
            .filter(|o| (first..=last).contains(o))
            .map_or(first, |o| if o >= last { first } else { o + 1 });
        let span = last - first + 1;
        for i in 0..span {
            let offset = first + (start - first + i) % span;
            let ip = self.subnet.nth(offset).expect("inside the subnet");
            let path = self.dir.join(ip.to_string());
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(Self::owner(container, ifname).as_bytes())
                        .and_then(|()| f.sync_all())
                        .map_err(self.io(&path))?;
                    std::fs::write(&last_path, ip.to_string()).map_err(self.io(&last_path))?;
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(self.io(&path)(e)),
            }
        }
        Err(Error::Exhausted(self.subnet))
    }

    /// Release what `container`'s `ifname` holds; nothing held is fine.
    pub fn release(&self, container: &str, ifname: &str) -> Result<Option<Ipv4Addr>> {
        let _lock = self.lock()?;
        let Some(ip) = self.lookup(container, ifname)? else {
            return Ok(None);
        };
        let path = self.dir.join(ip.to_string());
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(Some(ip)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(&path)(e)),
        }
    }

    /// Every reserved address.
    pub fn reserved(&self) -> Result<Vec<Ipv4Addr>> {
        let mut v: Vec<_> = self.reservations()?.into_iter().map(|(ip, _)| ip).collect();
        v.sort();
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path, net: &str) -> Store {
        Store::new(dir, "pods", net.parse().unwrap()).unwrap()
    }

    #[test]
    fn allocates_round_robin_never_twice_and_releases() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), "10.1.0.0/29");
        // .2 to .6 are usable: .1 is the gateway and .7 the broadcast.
        let ips: Vec<_> = (0..5)
            .map(|i| s.allocate(&format!("c{i}"), "eth0").unwrap())
            .collect();
        assert_eq!(
            ips.iter().map(|i| i.octets()[3]).collect::<Vec<_>>(),
            [2, 3, 4, 5, 6]
        );
        assert!(matches!(s.allocate("c9", "eth0"), Err(Error::Exhausted(_))));
        // A retried ADD gets the same address.
        assert_eq!(s.allocate("c3", "eth0").unwrap(), ips[3]);
        assert_eq!(s.release("c1", "eth0").unwrap(), Some(ips[1]));
        assert_eq!(s.release("c1", "eth0").unwrap(), None);
        assert_eq!(s.allocate("c10", "eth0").unwrap(), ips[1]);
        assert_eq!(s.reserved().unwrap().len(), 5);
    }

    #[test]
    fn a_freed_address_is_not_reused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), "10.1.0.0/24");
        let a = s.allocate("a", "eth0").unwrap();
        s.release("a", "eth0").unwrap();
        let b = s.allocate("b", "eth0").unwrap();
        assert_ne!(a, b);
        assert_eq!(s.lookup("b", "eth0").unwrap(), Some(b));
        assert_eq!(s.lookup("b", "eth1").unwrap(), None);
    }

    #[test]
    fn concurrent_allocations_get_distinct_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let s = store(&path, "10.1.0.0/24");
                    (0..20)
                        .map(|i| s.allocate(&format!("t{t}-{i}"), "eth0").unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<_> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 160);
    }

    #[test]
    fn tiny_subnets_are_refused() {
        assert!(matches!(
            Store::new(
                Path::new("/nonexistent"),
                "x",
                "10.0.0.0/31".parse().unwrap()
            ),
            Err(Error::TooSmall(_))
        ));
    }
}
