//! Deletion as Kubernetes does it: preconditions, finalizers that hold an object until they
//! are cleared, graceful pod deletion (the node agent finishes it), propagation policies
//! recorded as the `orphan` / `foregroundDeletion` finalizers for the garbage collector, and
//! namespaces that terminate with their content.

use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::objects::{meta_mut, meta_str, now, Update, WriteOptions};
use crate::read::Filter;
use crate::request::{decode_json_or_yaml, Query, Target};
use crate::server::ApiServer;
use crate::storage;

#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    pub grace_period: Option<i64>,
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    /// Options from the body (`DeleteOptions`) and the query string, the query winning.
    pub fn parse(q: &Query, body: &[u8]) -> ApiResult<Self> {
        let mut o = Self::default();
        if !body.iter().all(u8::is_ascii_whitespace) {
            let v = decode_json_or_yaml(body, false)?;
            o.grace_period = v.get("gracePeriodSeconds").and_then(Value::as_i64);
            o.propagation = v
                .get("propagationPolicy")
                .and_then(Value::as_str)
                .map(str::to_string);
            if v.get("orphanDependents") == Some(&json!(true)) && o.propagation.is_none() {
                o.propagation = Some("Orphan".into());
            }
            o.uid = v
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_string);
            o.resource_version = v
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
            o.dry_run = v
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|d| d.iter().any(|x| x == "All"));
        }
        if let Some(g) = q.int("gracePeriodSeconds")? {
            o.grace_period = Some(g);
        }
        if let Some(p) = q.get("propagationPolicy") {
            o.propagation = Some(p.to_string());
        }
        if q.get("dryRun") == Some("All") {
            o.dry_run = true;
        }
        o.check()?;
        Ok(o)
    }

    /// Rejects values Kubernetes rejects.
    pub fn check(&self) -> ApiResult<()> {
        let o = self;
        if let Some(p) = &o.propagation {
            if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
                return Err(ApiError::bad_request(format!(
                    "propagationPolicy must be one of Orphan, Background, Foreground (got {p:?})"
                )));
            }
        }
        if o.grace_period.is_some_and(|g| g < 0) {
            return Err(ApiError::bad_request("gracePeriodSeconds must be >= 0"));
        }
        Ok(())
    }
}

/// An object's finalizers, in their stored order.
fn finalizers(v: &Value) -> Vec<String> {
    v.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

impl ApiServer {
    /// Deletes one object. Returns its last state and whether it is gone now (false: it is
    /// marked for deletion and waits for finalizers or its node).
    pub async fn delete(&self, target: &Target, opts: &DeleteOptions) -> ApiResult<(Value, bool)> {
        let info = target.info;
        let name = target.name().to_string();
        for _ in 0..16 {
            let Some((item, obj)) = self.current(target).await? else {
                return Err(ApiError::not_found(info, &name));
            };
            if let Some(uid) = &opts.uid {
                if meta_str(&obj, "uid") != Some(uid.as_str()) {
                    return Err(ApiError::conflict(
                        info,
                        &name,
                        &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta_str(&obj, "uid").unwrap_or("")
                    ),
                    ));
                }
            }
            if let Some(rv) = &opts.resource_version {
                if *rv != item.mod_revision.to_string() {
                    return Err(ApiError::conflict(info, &name, &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        item.mod_revision
                    )));
                }
            }
            let mut marked = obj.clone();
            let mut fins = finalizers(&obj);
            let already = meta_str(&obj, "deletionTimestamp").is_some();
            let mut hold = false;
            if info.kind == "Namespace" {
                if !already {
                    marked["status"]["phase"] = json!("Terminating");
                    let spec_fins = marked
                        .pointer("/spec/finalizers")
                        .cloned()
                        .unwrap_or(json!(["kubernetes"]));
                    marked["spec"]["finalizers"] = spec_fins;
                    hold = true;
                } else {
                    hold = obj
                        .pointer("/spec/finalizers")
                        .and_then(Value::as_array)
                        .is_some_and(|f| !f.is_empty());
                }
            }
            match opts.propagation.as_deref() {
                Some("Orphan") if !fins.iter().any(|f| f == "orphan") => {
                    fins.push("orphan".into());
                }
                Some("Foreground") if !fins.iter().any(|f| f == "foregroundDeletion") => {
                    fins.push("foregroundDeletion".into());
                }
                _ => {}
            }
            if !fins.is_empty() {
                hold = true;
            }
            let mut grace = None;
            if info.kind == "Pod" {
                let bound = obj
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .is_some_and(|n| !n.is_empty());
                let terminal = matches!(
                    obj.pointer("/status/phase").and_then(Value::as_str),
                    Some("Succeeded" | "Failed")
                );
                let g = opts.grace_period.unwrap_or_else(|| {
                    obj.pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                        .unwrap_or(30)
                });
                if bound && !terminal && g > 0 {
                    // The node agent stops the containers, then deletes with grace 0.
                    hold = true;
                    grace = Some(g);
                }
            }
            if !hold {
                if opts.dry_run {
                    return Ok((obj, true));
                }
                match self.storage.delete(&item.key, item.mod_revision).await {
                    Ok(_) => {
                        if info.kind == "Service" {
                            self.release_service(&obj).await;
                        }
                        return Ok((obj, true));
                    }
                    Err(storage::Error::Conflict { .. }) => continue,
                    Err(storage::Error::NotFound { .. }) => {
                        return Err(ApiError::not_found(info, &name))
                    }
                    Err(e) => return Err(ApiError::from_storage(e, info, &name)),
                }
            }
            {
                let meta = meta_mut(&mut marked);
                if !already {
                    meta.insert("deletionTimestamp".into(), json!(now()));
                }
                if let Some(g) = grace {
                    let shorter = meta
                        .get("deletionGracePeriodSeconds")
                        .and_then(Value::as_i64)
                        .is_none_or(|cur| g < cur);
                    if shorter {
                        meta.insert("deletionGracePeriodSeconds".into(), json!(g));
                    }
                } else if !already {
                    meta.insert("deletionGracePeriodSeconds".into(), json!(0));
                }
                meta.insert("finalizers".into(), json!(fins));
                if fins.is_empty() {
                    meta.remove("finalizers");
                }
                meta.remove("resourceVersion");
            }
            if opts.dry_run {
                return Ok((marked, false));
            }
            let bytes =
                serde_json::to_vec(&marked).map_err(|e| ApiError::internal(e.to_string()))?;
            match self
                .storage
                .update(&item.key, bytes, item.mod_revision)
                .await
            {
                Ok(rev) => {
                    crate::cache::set_resource_version(&mut marked, rev);
                    return Ok((marked, false));
                }
                Err(storage::Error::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_storage(e, info, &name)),
            }
        }
        Err(ApiError::modified(info, &name))
    }

    pub async fn delete_collection(
        &self,
        target: &Target,
        q: &Query,
        opts: &DeleteOptions,
    ) -> ApiResult<Value> {
        let filter = Filter::from_query(target.info, q)?;
        let (items, rev) = self.cache.list(&target.prefix()?, None);
        let mut deleted = Vec::new();
        for c in items {
            if !filter.matches(&c.object) {
                continue;
            }
            let one = Target {
                namespace: meta_str(&c.object, "namespace").map(str::to_string),
                name: meta_str(&c.object, "name").map(str::to_string),
                ..target.clone()
            };
            match self.delete(&one, opts).await {
                Ok((obj, _)) => deleted.push(obj),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(
            json!({"kind": target.info.list_kind(), "apiVersion": target.info.api_version(),
            "metadata": {"resourceVersion": rev.to_string()}, "items": deleted}),
        )
    }

    /// Empties a terminating namespace, then releases it: every namespaced object in it is
    /// deleted, and once none is left the `kubernetes` finalizer is removed and the namespace
    /// goes. Returns whether the namespace is gone.
    pub async fn finalize_namespace(&self, ns: &str) -> ApiResult<bool> {
        let opts = DeleteOptions {
            grace_period: Some(0),
            ..Default::default()
        };
        let mut remaining = 0;
        for info in berth_api::registry::all().iter().filter(|r| r.namespaced()) {
            let target = Target {
                info,
                namespace: Some(ns.to_string()),
                name: None,
                subresource: None,
            };
            let (items, _) = self.cache.list(&target.prefix()?, None);
            for c in items {
                remaining += 1;
                let one = Target {
                    name: meta_str(&c.object, "name").map(str::to_string),
                    ..target.clone()
                };
                if meta_str(&c.object, "deletionTimestamp").is_some() {
                    continue;
                }
                match self.delete(&one, &opts).await {
                    Ok(_) => {}
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if remaining > 0 {
            return Ok(false);
        }
        let ns_info = berth_api::registry::by_kind("Namespace").expect("registered");
        let target = Target {
            info: ns_info,
            namespace: None,
            name: Some(ns.to_string()),
            subresource: Some("finalize".into()),
        };
        let wopts = WriteOptions {
            dry_run: false,
            field_manager: "berth-namespace-controller".into(),
            validation: crate::objects::FieldValidation::Ignore,
            apply: false,
            requester: None,
        };
        self.guaranteed_update(&target, &wopts, |old| {
            let Some(old) = old else {
                return Err(ApiError::not_found(ns_info, ns));
            };
            let mut new = old.clone();
            new["spec"]["finalizers"] = json!([]);
            Ok(Update::Replace {
                object: new,
                warnings: Vec::new(),
                precondition: None,
            })
        })
        .await?;
        // With its finalizers gone the namespace can be deleted outright.
        match self
            .delete(
                &Target {
                    subresource: None,
                    ..target
                },
                &DeleteOptions::default(),
            )
            .await
        {
            Ok((_, gone)) => Ok(gone),
            Err(e) if e.code == 404 => Ok(true),
            Err(e) => Err(e),
        }
    }
}
