//! Writing a controller's pods and owner references, as Kubernetes' `PodControl` does:
//! expectations are recorded before the writes, each write gets its event, and a write that
//! will never be seen (it failed, or the pod was already gone) is marked observed at once.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::events::Kind;
use crate::runtime::Key;
use crate::{Ctx, Error, Result};

/// Creates `pods` for `owner` in slow-start batches (1, 2, 4...), stopping after the first
/// batch with a failure, so a quota or a webhook that refuses every pod costs one request,
/// not hundreds.
pub async fn create<K: Resource<DynamicType = ()>>(
    ctx: &Ctx,
    owner: &K,
    pods: Vec<Pod>,
) -> Result<()> {
    let key = Key::of(owner);
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let pp = PostParams::default();
    ctx.expectations.expect_creates(&uid, pods.len());
    let mut rest = pods.as_slice();
    let mut batch = 1;
    while !rest.is_empty() {
        let (now, later) = rest.split_at(batch.min(rest.len()));
        rest = later;
        let results = futures::future::join_all(now.iter().map(|p| api.create(&pp, p))).await;
        let mut failed = None;
        for r in results {
            match r {
                Ok(p) => ctx.events.object(
                    crate::reference(owner),
                    Kind::Normal,
                    "SuccessfulCreate",
                    format!(
                        "Created pod: {}",
                        p.metadata.name.as_deref().unwrap_or_default()
                    ),
                ),
                Err(e) => {
                    ctx.expectations.create_observed(&uid);
                    failed = Some(e);
                }
            }
        }
        if let Some(e) = failed {
            for _ in rest {
                ctx.expectations.create_observed(&uid);
            }
            ctx.events.object(
                crate::reference(owner),
                Kind::Warning,
                "FailedCreate",
                format!("Error creating: {e}"),
            );
            return Err(Error::api("creating pods for", &key, e));
        }
        batch *= 2;
    }
    Ok(())
}

/// Deletes `victims` of `owner` (each by uid, so a namesake is never hit).
pub async fn delete<K: Resource<DynamicType = ()>>(
    ctx: &Ctx,
    owner: &K,
    victims: &[Arc<Pod>],
) -> Result<()> {
    let key = Key::of(owner);
    let uid = owner.meta().uid.clone().unwrap_or_default();
    ctx.expectations.expect_deletes(
        &uid,
        victims
            .iter()
            .map(|p| p.metadata.uid.clone().unwrap_or_default()),
    );
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let results = futures::future::join_all(victims.iter().map(|p| {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: p.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        let api = api.clone();
        async move {
            let name = p.metadata.name.clone().unwrap_or_default();
            (p, name.clone(), api.delete(&name, &dp).await)
        }
    }))
    .await;
    let mut failed = None;
    for (p, name, r) in results {
        match r {
            Ok(_) => ctx.events.object(
                crate::reference(owner),
                Kind::Normal,
                "SuccessfulDelete",
                format!("Deleted pod: {name}"),
            ),
            Err(e) => {
                ctx.expectations
                    .delete_observed(&uid, p.metadata.uid.as_deref().unwrap_or_default());
                if !matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 409) {
                    failed = Some(e);
                }
            }
        }
    }
    match failed {
        Some(e) => Err(Error::api("deleting pods of", &key, e)),
        None => Ok(()),
    }
}

/// Replaces `obj`'s owner references, if it has not changed since the cache saw it (its
/// resourceVersion is the patch's precondition). Gone or changed: the next pass decides again.
pub async fn set_owners<K>(api: &Api<K>, obj: &K, refs: Vec<OwnerReference>) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": obj.meta().resource_version,
    }});
    let name = obj.meta().name.clone().unwrap_or_default();
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(Error::api("setting owner references of", &Key::of(obj), e)),
    }
}
