//! The ServiceAccount controller: every active Namespace has the ServiceAccount `default`,
//! created again if deleted. Namespaces being deleted are left alone. (Tokens come from the
//! API server's TokenRequest; no token Secrets are made.)
//!
//! [`plan`] decides from the Namespace and the accounts the cache holds; [`reconcile`]
//! creates what is missing.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::Api;

use crate::runtime::{self, Action, Change, Informer, Key, Queue, Synced};
use crate::{Ctx, Error, Result};

/// The accounts every namespace has (kube-controller-manager: `default`).
pub const MANAGED: &[&str] = &["default"];

/// Whether a Namespace is being deleted.
pub fn is_terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

/// The accounts to create in `ns`, given whether each name already exists.
pub fn plan(ns: &Namespace, exists: impl Fn(&str) -> bool) -> Vec<ServiceAccount> {
    if is_terminating(ns) {
        return Vec::new();
    }
    let namespace = ns.metadata.name.clone().unwrap_or_default();
    MANAGED
        .iter()
        .filter(|name| !exists(name))
        .map(|name| ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            ..Default::default()
        })
        .collect()
}

/// One pass over one Namespace.
pub async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action> {
    let name = ns.metadata.name.clone().unwrap_or_default();
    let missing = plan(&ns, |sa| {
        ctx.serviceaccounts.get(&Key::new(&name, sa)).is_some()
    });
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &name);
    for sa in missing {
        let key = Key::of(&sa);
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => tracing::info!(serviceaccount = %key, "created"),
            // Already there (the cache lags), or the namespace began terminating meanwhile.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 || s.code == 404 => {
                tracing::debug!(serviceaccount = %key, reason = %s.reason, "not created");
            }
            Err(e) => return Err(Error::api("creating service account", &key, e)),
        }
    }
    Ok(Action::AwaitChange)
}

/// Wires the loop: Namespace changes, and deletions of the accounts it keeps.
pub fn register(
    ctx: &Arc<Ctx>,
    namespaces: &Informer<Namespace>,
    serviceaccounts: &Informer<ServiceAccount>,
) -> Vec<BoxFuture<'static, ()>> {
    let queue = Queue::new("serviceaccount");
    namespaces.on_change(runtime::enqueue_self(&queue));
    {
        let queue = queue.clone();
        serviceaccounts.on_change(move |c| {
            if let Change::Deleted(sa) = c {
                let name = sa.metadata.name.as_deref().unwrap_or_default();
                if MANAGED.contains(&name) {
                    if let Some(ns) = sa.metadata.namespace.as_deref() {
                        queue.add(Key::new("", ns));
                    }
                }
            }
        });
    }
    let synced: Vec<Arc<dyn Synced>> = vec![ctx.serviceaccounts.clone()];
    vec![runtime::run(
        queue,
        ctx.namespaces.clone(),
        synced,
        ctx.config.workers,
        ctx.clone(),
        reconcile,
    )
    .boxed()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn namespace(name: &str) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn names(v: &[ServiceAccount]) -> Vec<String> {
        v.iter().map(|s| Key::of(s).to_string()).collect::<Vec<_>>()
    }

    #[test]
    fn an_active_namespace_without_default_gets_one() {
        assert_eq!(names(&plan(&namespace("dev"), |_| false)), ["dev/default"]);
        assert!(plan(&namespace("dev"), |n| n == "default").is_empty());
    }

    #[test]
    fn a_terminating_namespace_gets_nothing() {
        let mut by_phase = namespace("old");
        by_phase.status = Some(NamespaceStatus {
            phase: Some("Terminating".into()),
            ..Default::default()
        });
        assert!(plan(&by_phase, |_| false).is_empty());
        let mut by_mark = namespace("old");
        by_mark.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert!(plan(&by_mark, |_| false).is_empty());
    }
}
