//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection` does,
//! so that two schedulers or controller-managers can run and only one acts.
//!
//! A candidate takes the Lease when it does not exist, when it is released (no holder), or
//! when its record has not changed for `lease_duration` *as observed by this candidate's own
//! clock* (renew times written by another machine are never compared with ours, so clock skew
//! cannot make two leaders). The leader renews every `retry_period`; if it has not managed to
//! renew for `renew_deadline` it stops its work before anyone else may take over
//! (`renew_deadline < lease_duration`). Every write is a compare-and-swap on the Lease's
//! `resourceVersion`, so of two candidates racing for an expired Lease exactly one wins.
//!
//! [`run`] campaigns, runs the work while it leads, cancels it when leadership is lost, and
//! campaigns again, so a component in a long-lived process (`berth up`) never exits over it.

use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::Api;
use tokio::time::Instant;

/// Where the Lease is and how it is held.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This candidate, unique among candidates (host name plus a random suffix).
    pub identity: String,
    /// How long a Lease unchanged is still held (Kubernetes: 15 s).
    pub lease_duration: Duration,
    /// How long the leader keeps acting without a successful renewal (Kubernetes: 10 s).
    pub renew_deadline: Duration,
    /// How often candidates retry and the leader renews (Kubernetes: 2 s).
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// Kubernetes' defaults for a Lease `kube-system/<name>`.
    pub fn new(name: &str, identity: String) -> Self {
        Self {
            namespace: "kube-system".into(),
            name: name.into(),
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// A unique identity: this host's name and a random suffix.
    pub fn identity() -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        format!("{host}_{}", uuid_like())
    }
}

fn uuid_like() -> String {
    let nanos = Timestamp::now().as_nanosecond() as u64;
    format!("{:x}{:x}", std::process::id(), nanos & 0xffff_ffff)
}

/// What a candidate does with the Lease it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Create the Lease (none exists).
    Create,
    /// Write ourselves in as holder; `transition` when the holder changes.
    Take { transition: bool },
    /// Another candidate holds it; try again later.
    Wait,
}

/// The holder and renew time of a Lease: what must change for it to count as alive.
pub type Record = (Option<String>, Option<String>);

pub fn record(lease: &Lease) -> Record {
    let spec = lease.spec.as_ref();
    (
        spec.and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty()),
        spec.and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0.to_string()),
    )
}

/// Decides purely. `observed` is the record this candidate last saw and when (by its own
/// clock); the Lease is expired when that record is unchanged for the Lease's duration.
pub fn decide(
    lease: Option<&Lease>,
    me: &str,
    observed: Option<&(Record, Instant)>,
    now: Instant,
    default_duration: Duration,
) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let rec = record(lease);
    let holder = rec.0.as_deref();
    if holder == Some(me) {
        return Decision::Take { transition: false };
    }
    if holder.is_none() {
        return Decision::Take { transition: true };
    }
    let duration = lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .map(|s| Duration::from_secs(s.max(1) as u64))
        .unwrap_or(default_duration);
    match observed {
        Some((seen, at)) if *seen == rec && now.duration_since(*at) >= duration => {
            Decision::Take { transition: true }
        }
        _ => Decision::Wait,
    }
}

/// Errors of the election itself (the work's own errors are its business).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One candidate's view of the Lease.
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    observed: Option<(Record, Instant)>,
}

impl Elector {
    pub fn new(client: kube::Client, cfg: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: None,
        }
    }

    fn err(&self, source: kube::Error) -> Error {
        Error::Api {
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.name.clone(),
            source,
        }
    }

    /// One attempt to take or renew the Lease. True when we hold it now.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let current = match self.api.get_opt(&self.cfg.name).await {
            Ok(l) => l,
            Err(e) => return Err(self.err(e)),
        };
        let now = Instant::now();
        if let Some(l) = &current {
            let rec = record(l);
            if self.observed.as_ref().is_none_or(|(r, _)| *r != rec) {
                self.observed = Some((rec, now));
            }
        }
        let decision = decide(
            current.as_ref(),
            &self.cfg.identity,
            self.observed.as_ref(),
            now,
            self.cfg.lease_duration,
        );
        let stamp = MicroTime(Timestamp::now());
        let result = match decision {
            Decision::Wait => return Ok(false),
            Decision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.name.clone()),
                        namespace: Some(self.cfg.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.cfg.identity.clone()),
                        lease_duration_seconds: Some(self.cfg.lease_duration.as_secs() as i32),
                        acquire_time: Some(stamp.clone()),
                        renew_time: Some(stamp),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Decision::Take { transition } => {
                let mut lease = current.expect("a lease to take");
                let spec = lease.spec.get_or_insert_with(Default::default);
                if transition {
                    spec.holder_identity = Some(self.cfg.identity.clone());
                    spec.acquire_time = Some(stamp.clone());
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(self.cfg.lease_duration.as_secs() as i32);
                spec.renew_time = Some(stamp);
                // resourceVersion is kept: the replace is a compare-and-swap.
                self.api
                    .replace(&self.cfg.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(l) => {
                self.observed = Some((record(&l), Instant::now()));
                Ok(true)
            }
            // Someone else wrote first: not ours this round.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Gives the Lease up (on a clean stop) so the next candidate need not wait it out.
    pub async fn release(&mut self) -> Result<()> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.cfg.name)
            .await
            .map_err(|e| self.err(e))?
        else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election: reading the lease failed"),
            }
            tokio::time::sleep(self.cfg.retry_period).await;
        }
    }

    /// Renews until a renewal has not succeeded for `renew_deadline`; returns then.
    pub async fn hold(&mut self) {
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(self.cfg.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = Instant::now(),
                Ok(false) => {
                    tracing::warn!(lease = %self.cfg.name, "leader election: the lease was taken over");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "leader election: renewing failed"),
            }
            if last_ok.elapsed() >= self.cfg.renew_deadline {
                tracing::warn!(lease = %self.cfg.name, "leader election: renew deadline passed");
                return;
            }
        }
    }
}

/// Campaigns for the Lease and runs `work` while leading; when leadership is lost the work
/// is dropped (cancelled) and the campaign starts again. Returns only when `work` returns
/// on its own, with its result (after releasing the Lease).
pub async fn run<F, Fut, T>(client: kube::Client, cfg: LeaseConfig, mut work: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let mut elector = Elector::new(client, cfg.clone());
    loop {
        elector.acquire().await;
        tracing::info!(lease = %format!("{}/{}", cfg.namespace, cfg.name), identity = %cfg.identity, "became leader");
        let done = tokio::select! {
            out = work() => Some(out),
            _ = elector.hold() => None,
        };
        if let Some(out) = done {
            if let Err(e) = elector.release().await {
                tracing::warn!(error = %e, "releasing the lease failed");
            }
            return out;
        }
        tracing::warn!(lease = %cfg.name, identity = %cfg.identity, "lost leadership; work stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renew: &str, secs: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                renew_time: Some(MicroTime(renew.parse().unwrap())),
                lease_duration_seconds: Some(secs),
                ..Default::default()
            }),
        }
    }

    const D: Duration = Duration::from_secs(15);

    #[tokio::test(start_paused = true)]
    async fn a_missing_lease_is_created_and_a_released_one_taken() {
        let now = Instant::now();
        assert_eq!(decide(None, "a", None, now, D), Decision::Create);
        let l = lease(None, "2026-01-01T00:00:00Z", 15);
        assert_eq!(
            decide(Some(&l), "a", None, now, D),
            Decision::Take { transition: true }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_holder_renews_without_a_transition() {
        let l = lease(Some("a"), "2026-01-01T00:00:00Z", 15);
        assert_eq!(
            decide(Some(&l), "a", None, Instant::now(), D),
            Decision::Take { transition: false }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn another_holder_is_waited_out_on_our_own_clock() {
        // The renew time is years old, but we have only just seen it: wait.
        let l = lease(Some("b"), "2001-01-01T00:00:00Z", 15);
        let seen = (record(&l), Instant::now());
        assert_eq!(
            decide(Some(&l), "a", Some(&seen), Instant::now(), D),
            Decision::Wait
        );
        assert_eq!(
            decide(Some(&l), "a", None, Instant::now(), D),
            Decision::Wait
        );
        tokio::time::advance(Duration::from_secs(14)).await;
        assert_eq!(
            decide(Some(&l), "a", Some(&seen), Instant::now(), D),
            Decision::Wait
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            decide(Some(&l), "a", Some(&seen), Instant::now(), D),
            Decision::Take { transition: true }
        );
        // A renewal seen since resets the wait.
        let renewed = lease(Some("b"), "2001-01-01T00:00:02Z", 15);
        assert_eq!(
            decide(Some(&renewed), "a", Some(&seen), Instant::now(), D),
            Decision::Wait
        );
    }
}
