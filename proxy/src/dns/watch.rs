//! Keeps the index current from watches on Services and EndpointSlices (those with the
//! `kubernetes.io/service-name` label). Each event updates only its object's entry; after a
//! (re-)list, objects the list no longer has are removed.

use std::collections::HashSet;
use std::sync::PoisonError;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource, ResourceExt};

use super::index::SERVICE_NAME_LABEL;
use super::{Error, Index, Result, SharedIndex};

pub(crate) async fn run(client: kube::Client, index: SharedIndex) -> Result<()> {
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
    let mut feed = Feed::default();
    let write = || index.write().unwrap_or_else(PoisonError::into_inner);
    loop {
        tokio::select! {
            ev = services.next() => match ev {
                Some(Ok(ev)) => feed.on_service(&mut write(), ev),
                Some(Err(err)) => tracing::warn!(%err, "service watch failed; retrying"),
                None => return Err(Error::WatchEnded("service")),
            },
            ev = slices.next() => match ev {
                Some(Ok(ev)) => feed.on_slice(&mut write(), ev),
                Some(Err(err)) => tracing::warn!(%err, "endpointslice watch failed; retrying"),
                None => return Err(Error::WatchEnded("endpointslice")),
            },
        }
    }
}

type Key = (String, String);

/// Watch events into index updates, with the bookkeeping of (re-)lists.
#[derive(Default)]
struct Feed {
    /// The keys seen since the current list of each kind began.
    listing_services: Option<HashSet<Key>>,
    listing_slices: Option<HashSet<Key>>,
    services_listed: bool,
    slices_listed: bool,
}

fn key<K: Resource>(o: &K) -> Key {
    (o.namespace().unwrap_or_default(), o.name_any())
}

impl Feed {
    fn on_service(&mut self, index: &mut Index, ev: watcher::Event<Service>) {
        match ev {
            watcher::Event::Init => self.listing_services = Some(HashSet::new()),
            watcher::Event::InitApply(s) | watcher::Event::Apply(s) => {
                if let Some(seen) = &mut self.listing_services {
                    seen.insert(key(&s));
                }
                tracing::debug!(service = %format_args!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()), "service updated");
                index.apply_service(&s);
            }
            watcher::Event::Delete(s) => {
                let (ns, name) = key(&s);
                index.delete_service(&ns, &name);
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.listing_services.take() {
                    index.retain_services(|ns, n| seen.contains(&(ns.into(), n.into())));
                }
                self.services_listed = true;
                self.mark_synced(index);
            }
        }
    }

    fn on_slice(&mut self, index: &mut Index, ev: watcher::Event<EndpointSlice>) {
        match ev {
            watcher::Event::Init => self.listing_slices = Some(HashSet::new()),
            watcher::Event::InitApply(s) | watcher::Event::Apply(s) => {
                if let Some(seen) = &mut self.listing_slices {
                    seen.insert(key(&s));
                }
                index.apply_slice(&s);
            }
            watcher::Event::Delete(s) => {
                let (ns, name) = key(&s);
                index.delete_slice(&ns, &name);
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.listing_slices.take() {
                    index.retain_slices(|ns, n| seen.contains(&(ns.into(), n.into())));
                }
                self.slices_listed = true;
                self.mark_synced(index);
            }
        }
    }

    fn mark_synced(&self, index: &mut Index) {
        if self.services_listed && self.slices_listed && !index.synced() {
            tracing::info!(services = index.services(), "cluster dns synced");
            index.set_synced(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::{Name, RecordType};
    use k8s_openapi::api::core::v1::ServiceSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use watcher::Event;

    use super::*;

    fn service(name: &str, ip: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    fn slice(name: &str, service: &str) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some(name.into()),
                labels: Some(BTreeMap::from([(
                    SERVICE_NAME_LABEL.into(),
                    service.into(),
                )])),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            endpoints: Vec::new(),
            ports: None,
        }
    }

    fn code(index: &Index, name: &str) -> ResponseCode {
        let q = Name::from_ascii(format!("{name}.ns.svc.cluster.local.")).unwrap();
        index.lookup(&q, RecordType::A).code
    }

    #[test]
    fn lists_sync_the_index_and_relists_drop_what_went_away() {
        let mut index = Index::new("cluster.local").unwrap();
        index.set_synced(false);
        let mut feed = Feed::default();
        feed.on_service(&mut index, Event::Init);
        feed.on_service(&mut index, Event::InitApply(service("a", "10.96.0.1")));
        feed.on_service(&mut index, Event::InitApply(service("b", "10.96.0.2")));
        feed.on_service(&mut index, Event::InitDone);
        // Services are in, slices not yet: still loading.
        assert!(!index.synced());
        assert_eq!(code(&index, "a"), ResponseCode::ServFail);
        feed.on_slice(&mut index, Event::Init);
        feed.on_slice(&mut index, Event::InitApply(slice("b-1", "b")));
        feed.on_slice(&mut index, Event::InitDone);
        assert!(index.synced());
        assert_eq!(code(&index, "a"), ResponseCode::NoError);

        feed.on_service(&mut index, Event::Apply(service("c", "10.96.0.3")));
        feed.on_service(&mut index, Event::Delete(service("a", "10.96.0.1")));
        assert_eq!(code(&index, "a"), ResponseCode::NXDomain);
        assert_eq!(code(&index, "c"), ResponseCode::NoError);

        // The watch restarts and re-lists: `b` and its slice were deleted meanwhile.
        feed.on_service(&mut index, Event::Init);
        feed.on_service(&mut index, Event::InitApply(service("c", "10.96.0.3")));
        // Until the list is done, what it has not repeated yet still answers.
        assert_eq!(code(&index, "b"), ResponseCode::NoError);
        feed.on_service(&mut index, Event::InitDone);
        feed.on_slice(&mut index, Event::Init);
        feed.on_slice(&mut index, Event::InitDone);
        assert_eq!(code(&index, "b"), ResponseCode::NXDomain);
        assert_eq!(code(&index, "c"), ResponseCode::NoError);
        assert_eq!(index.services(), 1);
        assert!(index.synced());
    }
}
