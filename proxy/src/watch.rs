//! The thin async part: Service and EndpointSlice watches feed a [`Syncer`]; after a short
//! batching interval it hands the data plane either the changes since the last call or,
//! after a (re)list or a failure, the whole state.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio::time::Instant;
use tracing::Instrument;

use crate::dataplane::{self, Dataplane};
use crate::model::{Model, SERVICE_NAME_LABEL};
use crate::{Config, Error, Result};

/// What one [`Syncer::sync`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// The whole state of this many service ports.
    Full(usize),
    /// This many changes.
    Changes(usize),
    Nothing,
}

/// The model plus what the watches have said: when both lists are in, and whether the next
/// call must be a full sync. Plain methods, no I/O but the data plane call.
#[derive(Debug)]
pub struct Syncer {
    model: Model,
    services_relist: Option<Vec<Service>>,
    slices_relist: Option<Vec<EndpointSlice>>,
    services_synced: bool,
    slices_synced: bool,
    need_full: bool,
}

impl Default for Syncer {
    fn default() -> Self {
        Self::new()
    }
}

impl Syncer {
    pub fn new() -> Self {
        Self {
            model: Model::new(),
            services_relist: None,
            slices_relist: None,
            services_synced: false,
            slices_synced: false,
            need_full: true,
        }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn on_service(&mut self, ev: watcher::Event<Service>) {
        match ev {
            watcher::Event::Init => self.services_relist = Some(Vec::new()),
            watcher::Event::InitApply(s) => match &mut self.services_relist {
                Some(list) => list.push(s),
                None => self.model.apply_service(s),
            },
            watcher::Event::InitDone => {
                let list = self.services_relist.take().unwrap_or_default();
                self.model.replace_services(list);
                self.services_synced = true;
                self.need_full = true;
            }
            watcher::Event::Apply(s) => self.model.apply_service(s),
            watcher::Event::Delete(s) => self.model.delete_service(&s),
        }
    }

    pub fn on_slice(&mut self, ev: watcher::Event<EndpointSlice>) {
        match ev {
            watcher::Event::Init => self.slices_relist = Some(Vec::new()),
            watcher::Event::InitApply(s) => match &mut self.slices_relist {
                Some(list) => list.push(s),
                None => self.model.apply_slice(s),
            },
            watcher::Event::InitDone => {
                let list = self.slices_relist.take().unwrap_or_default();
                self.model.replace_slices(list);
                self.slices_synced = true;
                self.need_full = true;
            }
            watcher::Event::Apply(s) => self.model.apply_slice(s),
            watcher::Event::Delete(s) => self.model.delete_slice(&s),
        }
    }

    /// Both lists have been received at least once.
    pub fn synced(&self) -> bool {
        self.services_synced && self.slices_synced
    }

    /// Whether a [`Syncer::sync`] would do something.
    pub fn has_work(&self) -> bool {
        self.synced() && (self.need_full || self.model.has_pending())
    }

    /// Programs what changed (or everything, after a relist or a failed call).
    pub fn sync(&mut self, dp: &mut dyn Dataplane) -> dataplane::Result<Synced> {
        let changes = self.model.take_changes();
        if self.need_full {
            dp.sync_full(self.model.state())?;
            self.need_full = false;
            return Ok(Synced::Full(self.model.state().len()));
        }
        if changes.is_empty() {
            return Ok(Synced::Nothing);
        }
        if let Err(err) = dp.apply(&changes) {
            self.need_full = true;
            return Err(err);
        }
        Ok(Synced::Changes(changes.len()))
    }
}

/// Watches Services and EndpointSlices and keeps `dataplane` programmed until a watch ends
/// (with kube-runtime's back-off they do not) or the future is dropped. Rules stay in place
/// when it stops, so traffic keeps flowing across a restart; [`Dataplane::cleanup`] on a
/// fresh back end removes them. Failed data plane calls are logged and retried as full syncs
/// with back-off.
pub async fn run(
    client: kube::Client,
    config: Config,
    dataplane: Box<dyn Dataplane>,
) -> Result<()> {
    let span = tracing::info_span!("proxy", node = %config.node_name, dataplane = dataplane.name());
    run_inner(client, config, dataplane).instrument(span).await
}

async fn run_inner(
    client: kube::Client,
    config: Config,
    dataplane: Box<dyn Dataplane>,
) -> Result<()> {
    let services = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff();
    let slices = watcher(
        Api::<EndpointSlice>::all(client),
        watcher::Config::default().labels(SERVICE_NAME_LABEL),
    )
    .default_backoff();
    futures::pin_mut!(services);
    futures::pin_mut!(slices);
    let mut syncer = Syncer::new();
    let mut dp = dataplane;
    let mut deadline: Option<Instant> = None;
    let mut retry = config.min_retry;
    tracing::info!(mode = %config.mode, "service proxy starting");
    loop {
        let wait = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = services.next() => match ev {
                Some(Ok(ev)) => syncer.on_service(ev),
                Some(Err(err)) => tracing::warn!(error = %err, "service watch failed; retrying"),
                None => return Err(Error::WatchEnded("service")),
            },
            ev = slices.next() => match ev {
                Some(Ok(ev)) => syncer.on_slice(ev),
                Some(Err(err)) => tracing::warn!(error = %err, "endpointslice watch failed; retrying"),
                None => return Err(Error::WatchEnded("endpointslice")),
            },
            () = wait => {
                deadline = None;
                let started = std::time::Instant::now();
                let (s, d, result) = tokio::task::spawn_blocking(move || {
                    let mut syncer = syncer;
                    let mut dp = dp;
                    let result = syncer.sync(&mut *dp);
                    (syncer, dp, result)
                })
                .await?;
                syncer = s;
                dp = d;
                let took = started.elapsed();
                match result {
                    Ok(Synced::Full(n)) => {
                        retry = config.min_retry;
                        tracing::info!(service_ports = n, took_ms = took.as_millis() as u64, "full sync done");
                    }
                    Ok(Synced::Changes(n)) => {
                        retry = config.min_retry;
                        tracing::debug!(changes = n, took_ms = took.as_millis() as u64, "changes applied");
                    }
                    Ok(Synced::Nothing) => {}
                    Err(err) => {
                        tracing::error!(error = %err, retry_in_ms = retry.as_millis() as u64, "programming the data plane failed; a full sync follows");
                        deadline = Some(Instant::now() + retry);
                        retry = (retry * 2).min(config.max_retry.max(Duration::from_millis(1)));
                    }
                }
            }
        }
        if deadline.is_none() && syncer.has_work() {
            deadline = Some(Instant::now() + config.sync_interval);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{Call, FakeDataplane};
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn service(name: &str, ip: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(vec![ServicePort {
                    port: 80,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn slice(svc: &str, ips: &[&str]) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: ips
                .iter()
                .map(|ip| Endpoint {
                    addresses: vec![ip.to_string()],
                    ..Default::default()
                })
                .collect(),
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some(format!("{svc}-1")),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), svc.to_string())].into()),
                ..Default::default()
            },
            ports: Some(vec![EndpointPort {
                port: Some(8080),
                ..Default::default()
            }]),
        }
    }

    fn list<K>(s: &mut Syncer, on: fn(&mut Syncer, watcher::Event<K>), items: Vec<K>) {
        on(s, watcher::Event::Init);
        for i in items {
            on(s, watcher::Event::InitApply(i));
        }
        on(s, watcher::Event::InitDone);
    }

    #[test]
    fn nothing_is_programmed_before_both_lists_then_a_full_sync_then_changes() {
        let fake = FakeDataplane::new();
        let mut dp = fake.clone();
        let mut s = Syncer::new();
        list(&mut s, Syncer::on_service, vec![service("a", "10.96.0.1")]);
        assert!(!s.has_work(), "slices not listed yet");
        list(&mut s, Syncer::on_slice, vec![slice("a", &["10.244.0.1"])]);
        assert!(s.has_work());
        assert_eq!(s.sync(&mut dp).unwrap(), Synced::Full(1));
        assert!(!s.has_work());
        s.on_slice(watcher::Event::Apply(slice(
            "a",
            &["10.244.0.1", "10.244.0.2"],
        )));
        s.on_service(watcher::Event::Apply(service("b", "10.96.0.2")));
        assert_eq!(s.sync(&mut dp).unwrap(), Synced::Changes(2));
        let calls = fake.calls();
        assert!(matches!(&calls[0], Call::SyncFull(st) if st.len() == 1));
        assert!(matches!(&calls[1], Call::Apply(c) if c.len() == 2));
        assert_eq!(fake.state(), s.model().state().clone());
        assert_eq!(fake.state().values().next().unwrap().endpoints.len(), 2);
    }

    #[test]
    fn a_failed_apply_is_followed_by_a_full_sync_and_a_relist_forces_one() {
        let fake = FakeDataplane::new();
        let mut dp = fake.clone();
        let mut s = Syncer::new();
        list(&mut s, Syncer::on_service, vec![service("a", "10.96.0.1")]);
        list(&mut s, Syncer::on_slice, vec![]);
        s.sync(&mut dp).unwrap();
        s.on_service(watcher::Event::Delete(service("a", "10.96.0.1")));
        fake.fail_next(1);
        assert!(s.sync(&mut dp).is_err());
        assert!(s.has_work());
        assert_eq!(s.sync(&mut dp).unwrap(), Synced::Full(0));
        assert!(fake.state().is_empty());
        // A relist of services that drops nothing still resyncs in full.
        list(&mut s, Syncer::on_service, vec![service("b", "10.96.0.2")]);
        assert_eq!(s.sync(&mut dp).unwrap(), Synced::Full(1));
        assert_eq!(fake.state().len(), 1);
    }
}
