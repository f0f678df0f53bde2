//! The seam between the proxy's model and the kernel: one [`Dataplane`] trait, implemented by
//! [`crate::nft::Nftables`] (nftables verdict maps), by the IPVS back end, and by
//! [`FakeDataplane`] in tests.
//!
//! Contract, for implementers:
//! - Calls come from one thread at a time and may block (the caller runs them on a blocking
//!   thread); the proxy batches events, so each call covers everything since the last one.
//! - [`Dataplane::sync_full`] makes the kernel hold exactly `state` and nothing else this back
//!   end programmed before, including leftovers of an earlier process. It is called first,
//!   after every watch (re)list, and after any failed call.
//! - [`Dataplane::apply`] applies changes to the state the last successful call left, and
//!   touches only the entries of the service ports named in them. It should be all-or-nothing
//!   where the kernel allows; if it fails, the next call is a `sync_full`.
//! - Stale UDP conntrack entries of removed endpoints are the back end's to clear (see
//!   [`crate::conntrack`]); failing to clear them is a warning, not an error.
//! - [`Dataplane::cleanup`] removes everything the back end ever programmed, whatever this
//!   instance remembers (a mode switch or uninstall runs it on a fresh instance).

use crate::model::{Change, State};

/// A data plane error: which back end, and its own error as the source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{backend} back end failed: {source}")]
    Backend {
        backend: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl Error {
    /// Wraps a back end's own error.
    pub fn backend(
        backend: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error::Backend {
            backend,
            source: source.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Programs service ports into the kernel. Object-safe: the proxy holds a
/// `Box<dyn Dataplane>` chosen at start.
pub trait Dataplane: Send {
    /// Short name for logs: `"nftables"`, `"ipvs"`, `"fake"`.
    fn name(&self) -> &'static str;

    /// Replaces everything this back end programmed with `state`.
    fn sync_full(&mut self, state: &State) -> Result<()>;

    /// Applies `changes` (in order) to what the last successful call programmed.
    fn apply(&mut self, changes: &[Change]) -> Result<()>;

    /// Removes everything this back end ever programmed.
    fn cleanup(&mut self) -> Result<()>;
}

#[cfg(any(test, feature = "test-util"))]
pub use fake::{Call, FakeDataplane};

#[cfg(any(test, feature = "test-util"))]
mod fake {
    use std::sync::{Arc, Mutex};

    use super::{Dataplane, Error, Result};
    use crate::model::{Change, State};

    /// One call a [`FakeDataplane`] got.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Call {
        SyncFull(State),
        Apply(Vec<Change>),
        Cleanup,
    }

    #[derive(Debug, Default)]
    struct Inner {
        calls: Vec<Call>,
        state: State,
        fail: usize,
    }

    /// Records its calls and keeps the state they add up to. Clones share the record, so a
    /// test keeps one clone and hands the other to the proxy.
    #[derive(Debug, Clone, Default)]
    pub struct FakeDataplane {
        inner: Arc<Mutex<Inner>>,
    }

    impl FakeDataplane {
        pub fn new() -> Self {
            Self::default()
        }

        /// The calls so far, oldest first.
        pub fn calls(&self) -> Vec<Call> {
            self.lock().calls.clone()
        }

        /// The state the successful calls add up to.
        pub fn state(&self) -> State {
            self.lock().state.clone()
        }

        /// Makes the next `n` calls fail (they are still recorded).
        pub fn fail_next(&self, n: usize) {
            self.lock().fail = n;
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
            self.inner.lock().unwrap_or_else(|e| e.into_inner())
        }

        fn record(&self, call: Call) -> Result<()> {
            let mut inner = self.lock();
            inner.calls.push(call.clone());
            if inner.fail > 0 {
                inner.fail -= 1;
                return Err(Error::backend("fake", "injected failure"));
            }
            match call {
                Call::SyncFull(state) => inner.state = state,
                Call::Apply(changes) => {
                    for c in changes {
                        match c.after() {
                            Some(new) => inner.state.insert(c.name().clone(), new.clone()),
                            None => inner.state.remove(c.name()),
                        };
                    }
                }
                Call::Cleanup => inner.state.clear(),
            }
            Ok(())
        }
    }

    impl Dataplane for FakeDataplane {
        fn name(&self) -> &'static str {
            "fake"
        }

        fn sync_full(&mut self, state: &State) -> Result<()> {
            self.record(Call::SyncFull(state.clone()))
        }

        fn apply(&mut self, changes: &[Change]) -> Result<()> {
            self.record(Call::Apply(changes.to_vec()))
        }

        fn cleanup(&mut self) -> Result<()> {
            self.record(Call::Cleanup)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Protocol, ServicePortInfo, ServicePortName};

    #[test]
    fn the_fake_records_calls_and_adds_them_up() {
        let mut fake = FakeDataplane::new();
        let handle = fake.clone();
        let name = ServicePortName::new("ns", "a", "");
        let info = ServicePortInfo {
            cluster_ip: "10.96.0.1".parse().unwrap(),
            port: 80,
            protocol: Protocol::Tcp,
            node_port: None,
            affinity_timeout: None,
            endpoints: Vec::new(),
        };
        let dp: &mut dyn Dataplane = &mut fake;
        dp.sync_full(&State::new()).unwrap();
        dp.apply(&[Change::Add {
            name: name.clone(),
            new: info.clone(),
        }])
        .unwrap();
        assert_eq!(handle.state().get(&name), Some(&info));
        handle.fail_next(1);
        assert!(dp.cleanup().is_err());
        assert_eq!(handle.state().len(), 1);
        dp.cleanup().unwrap();
        assert!(handle.state().is_empty());
        assert_eq!(handle.calls().len(), 4);
        assert_eq!(handle.calls()[3], Call::Cleanup);
    }
}
