//! Test fakes of the two kernel seams: an IPVS table and a dummy interface's addresses
//! with the kernel's answers (`EEXIST`, `ESRCH`, `ENOENT`), recording every call.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use super::netlink::{self, Destination, Service, ServiceKey};
use super::{IpvsKernel, LocalAddresses};

#[derive(Debug, Default)]
pub(crate) struct State {
    pub services: BTreeMap<ServiceKey, (Service, BTreeMap<SocketAddr, Destination>)>,
    pub addresses: BTreeSet<IpAddr>,
    /// Every call, as "verb target".
    pub calls: Vec<String>,
    /// Fail the next call whose record starts with this, with `EIO`.
    pub fail: Option<String>,
}

/// One shared state behind both fakes, so a test sees what the back end did.
#[derive(Debug, Clone, Default)]
pub(crate) struct FakeKernel(Arc<Mutex<State>>);

impl FakeKernel {
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    /// Calls recorded since the last time this was asked.
    pub fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.state().calls)
    }

    fn call(&self, record: String) -> netlink::Result<MutexGuard<'_, State>> {
        let mut state = self.state();
        let fail = state.fail.as_deref().is_some_and(|f| record.starts_with(f));
        state.calls.push(record.clone());
        if fail {
            state.fail = None;
            return Err(errno(&record, libc::EIO));
        }
        Ok(state)
    }
}

fn errno(op: &str, code: i32) -> netlink::Error {
    netlink::Error::Kernel {
        op: op.to_owned(),
        source: io::Error::from_raw_os_error(code),
    }
}

impl IpvsKernel for FakeKernel {
    fn services(&mut self) -> netlink::Result<Vec<Service>> {
        let state = self.call("services".to_owned())?;
        Ok(state.services.values().map(|(s, _)| s.clone()).collect())
    }

    fn destinations(&mut self, key: &ServiceKey) -> netlink::Result<Vec<Destination>> {
        let state = self.call(format!("destinations {key}"))?;
        Ok(state
            .services
            .get(key)
            .map(|(_, d)| d.values().copied().collect())
            .unwrap_or_default())
    }

    fn add_service(&mut self, service: &Service) -> netlink::Result<()> {
        let op = format!("add_service {}", service.key);
        let mut state = self.call(op.clone())?;
        if state.services.contains_key(&service.key) {
            return Err(errno(&op, libc::EEXIST));
        }
        state
            .services
            .insert(service.key, (service.clone(), BTreeMap::new()));
        Ok(())
    }

    fn update_service(&mut self, service: &Service) -> netlink::Result<()> {
        let op = format!("update_service {}", service.key);
        let mut state = self.call(op.clone())?;
        match state.services.get_mut(&service.key) {
            Some((s, _)) => {
                *s = service.clone();
                Ok(())
            }
            None => Err(errno(&op, libc::ESRCH)),
        }
    }

    fn delete_service(&mut self, key: &ServiceKey) -> netlink::Result<()> {
        let op = format!("delete_service {key}");
        let mut state = self.call(op.clone())?;
        match state.services.remove(key) {
            Some(_) => Ok(()),
            None => Err(errno(&op, libc::ESRCH)),
        }
    }

    fn add_destination(&mut self, key: &ServiceKey, dest: &Destination) -> netlink::Result<()> {
        let op = format!("add_destination {key} {}", dest.addr);
        let mut state = self.call(op.clone())?;
        let (_, dests) = state
            .services
            .get_mut(key)
            .ok_or_else(|| errno(&op, libc::ESRCH))?;
        if dests.contains_key(&dest.addr) {
            return Err(errno(&op, libc::EEXIST));
        }
        dests.insert(dest.addr, *dest);
        Ok(())
    }

    fn update_destination(&mut self, key: &ServiceKey, dest: &Destination) -> netlink::Result<()> {
        let op = format!("update_destination {key} {}", dest.addr);
        let mut state = self.call(op.clone())?;
        let (_, dests) = state
            .services
            .get_mut(key)
            .ok_or_else(|| errno(&op, libc::ESRCH))?;
        match dests.get_mut(&dest.addr) {
            Some(d) => {
                *d = *dest;
                Ok(())
            }
            None => Err(errno(&op, libc::ENOENT)),
        }
    }

    fn delete_destination(&mut self, key: &ServiceKey, addr: SocketAddr) -> netlink::Result<()> {
        let op = format!("delete_destination {key} {addr}");
        let mut state = self.call(op.clone())?;
        let (_, dests) = state
            .services
            .get_mut(key)
            .ok_or_else(|| errno(&op, libc::ESRCH))?;
        match dests.remove(&addr) {
            Some(_) => Ok(()),
            None => Err(errno(&op, libc::ENOENT)),
        }
    }
}

impl LocalAddresses for FakeKernel {
    fn addresses(&mut self) -> netlink::Result<BTreeSet<IpAddr>> {
        let state = self.call("addresses".to_owned())?;
        Ok(state.addresses.clone())
    }

    fn add_address(&mut self, addr: IpAddr) -> netlink::Result<()> {
        let mut state = self.call(format!("add_address {addr}"))?;
        state.addresses.insert(addr);
        Ok(())
    }

    fn delete_address(&mut self, addr: IpAddr) -> netlink::Result<()> {
        let mut state = self.call(format!("delete_address {addr}"))?;
        state.addresses.remove(&addr);
        Ok(())
    }
}
