//! Writes to objects: create, update, patch, apply, delete, and the subresources that write
//! (`status`, `scale`, `binding`). Each write is admitted (decoded, defaulted, validated), gets
//! the fields the server owns (`uid`, `creationTimestamp`, `generation`, `managedFields`),
//! and is stored with a compare-and-swap on the revision it was computed from; a lost race is
//! retried from fresh state unless the client named the revision it expected.

use std::collections::BTreeSet;

use berth_api::registry::ResourceInfo;
use berth_api::{defaults, validation, Object};
use rand::Rng;
use serde_json::{json, Map, Value};

use crate::cache::set_resource_version;
use crate::error::{ApiError, ApiResult};
use crate::request::{Query, Target};
use crate::server::ApiServer;
use crate::storage::{self, Item};

/// Kinds whose `metadata.generation` counts spec changes.
fn uses_generation(kind: &str) -> bool {
    matches!(
        kind,
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" | "Job"
    )
}

/// The current time as Kubernetes writes timestamps.
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    v["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

pub fn meta_str<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get("metadata")?.get(field)?.as_str()
}

/// The fields of `input` the typed decoding did not keep: unknown to the schema.
pub fn unknown_fields(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(tv) => unknown_fields(v, tv, &p, out),
                    None if !v.is_null() => out.push(p),
                    None => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, tv)) in a.iter().zip(b).enumerate() {
                unknown_fields(v, tv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// How a request wants unknown fields treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn from_query(q: &Query) -> ApiResult<Self> {
        match q.get("fieldValidation").unwrap_or("Warn") {
            "Ignore" => Ok(Self::Ignore),
            "Warn" | "" => Ok(Self::Warn),
            "Strict" => Ok(Self::Strict),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn, Strict (got {other:?})"
            ))),
        }
    }
}

/// Decodes, defaults and validates an object for `info`; returns its normalised JSON and the
/// unknown fields seen (an error under `Strict`).
pub fn admit(
    info: &'static ResourceInfo,
    value: Value,
    validation_mode: FieldValidation,
    warnings: &mut Vec<String>,
) -> ApiResult<Value> {
    let input = value.clone();
    let mut obj = Object::from_value_as(info, value).map_err(|e| match e {
        berth_api::object::Error::Mismatch {
            field,
            expected,
            found,
        } => ApiError::bad_request(format!(
            "the {field} of the provided object ({found}) does not match the {field} of the request ({expected})"
        )),
        other => ApiError::bad_request(other.to_string()),
    })?;
    let typed = obj
        .to_value()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut unknown = Vec::new();
    unknown_fields(&input, &typed, "", &mut unknown);
    if !unknown.is_empty() {
        match validation_mode {
            FieldValidation::Strict => {
                let list: Vec<String> = unknown
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "strict decoding error: {}",
                    list.join(", ")
                )));
            }
            FieldValidation::Warn => {
                warnings.extend(unknown.iter().map(|f| format!("unknown field \"{f}\"")))
            }
            FieldValidation::Ignore => {}
        }
    }
    defaults::apply(&mut obj);
    validation::validate_create(&obj).map_err(|e| ApiError::invalid(&e))?;
    obj.to_value()
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Random suffix for `generateName`, from Kubernetes' alphabet (no vowels, no look-alikes).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..5)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

fn uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Kubernetes' QoS class of a pod.
fn qos_class(pod: &Value) -> &'static str {
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let req = c.pointer("/resources/requests");
        let lim = c.pointer("/resources/limits");
        for r in ["cpu", "memory"] {
            let q = req.and_then(|x| x.get(r));
            let l = lim.and_then(|x| x.get(r));
            if q.is_some() || l.is_some() {
                any = true;
            }
            if l.is_none() || (q.is_some() && q != l) {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Status a new object starts with: what clients sent is dropped for kinds whose status the
/// system writes.
fn initial_status(kind: &str, obj: &Value) -> Option<Value> {
    match kind {
        "Pod" => Some(json!({"phase": "Pending", "qosClass": qos_class(obj)})),
        "Namespace" => Some(json!({"phase": "Active"})),
        "Deployment"
        | "ReplicaSet"
        | "DaemonSet"
        | "StatefulSet"
        | "Job"
        | "Service"
        | "CertificateSigningRequest" => Some(json!({})),
        _ => None,
    }
}

/// Everything but metadata and status: a change here bumps the generation.
fn spec_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
    }
    v
}

/// Drops empty status objects and nulls so stored objects stay compact.
fn tidy(v: &mut Value) {
    if let Some(o) = v.as_object_mut() {
        if o.get("status").is_some_and(|s| s == &json!({})) {
            o.remove("status");
        }
    }
}

pub struct WriteOptions {
    pub dry_run: bool,
    pub field_manager: String,
    pub validation: FieldValidation,
    /// A server-side apply: managed fields are computed by the apply itself.
    pub apply: bool,
    /// Who asks, when a kind records it (a CertificateSigningRequest's `spec.username`).
    pub requester: Option<crate::auth::User>,
}

impl WriteOptions {
    pub fn from_query(q: &Query, default_manager: &str) -> ApiResult<Self> {
        let dry_run = match q.all("dryRun").as_slice() {
            [] => false,
            ["All"] => true,
            other => {
                return Err(ApiError::bad_request(format!(
                    "dryRun must be All (got {other:?})"
                )))
            }
        };
        let field_manager = q
            .get("fieldManager")
            .filter(|m| !m.is_empty())
            .unwrap_or(default_manager)
            .to_string();
        if field_manager.len() > 128 {
            return Err(ApiError::bad_request(
                "fieldManager: must be at most 128 characters",
            ));
        }
        Ok(Self {
            dry_run,
            field_manager,
            validation: FieldValidation::from_query(q)?,
            apply: false,
            requester: None,
        })
    }
}

/// The outcome of a write: the object as stored and whether it was created.
pub struct Written {
    pub object: Value,
    pub created: bool,
    pub warnings: Vec<String>,
}

impl ApiServer {
    async fn namespace_accepts(&self, target: &Target) -> ApiResult<()> {
        let Some(ns) = target.namespace.as_deref() else {
            return Ok(());
        };
        let key = format!("/registry/core/namespaces/{ns}");
        let found = match self.cache.get(&key) {
            Some(c) => Some((*c.object).clone()),
            None => self
                .storage
                .get(&key)
                .await
                .map_err(|e| ApiError::unavailable(e.to_string()))?
                .and_then(|it| serde_json::from_slice::<Value>(&it.value).ok()),
        };
        let ns_info = berth_api::registry::by_kind("Namespace").expect("namespaces registered");
        match found {
            None => Err(ApiError::not_found(ns_info, ns)),
            Some(v) if meta_str(&v, "deletionTimestamp").is_some() => Err(ApiError::forbidden(
                format!(
                    "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    target.info.plural, target.name()
                ),
            )
            .with_details(json!({"name": target.name(), "kind": target.info.plural,
                "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]}))),
            Some(_) => Ok(()),
        }
    }

    /// POST to a collection.
    pub async fn create(
        &self,
        target: &Target,
        mut body: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        let info = target.info;
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        {
            let meta = meta_mut(&mut body);
            if let Some(ns) = &target.namespace {
                match meta.get("namespace").and_then(Value::as_str) {
                    None | Some("") => {
                        meta.insert("namespace".into(), Value::String(ns.clone()));
                    }
                    Some(found) if found != ns => {
                        return Err(ApiError::bad_request(
                            "the namespace of the provided object does not match the namespace sent on the request",
                        ))
                    }
                    Some(_) => {}
                }
            }
            let name_empty = meta
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty();
            if name_empty {
                if let Some(prefix) = meta.get("generateName").and_then(Value::as_str) {
                    if !prefix.is_empty() {
                        let name = format!("{prefix}{}", random_suffix());
                        meta.insert("name".into(), Value::String(name));
                    }
                }
            }
            for server_owned in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "selfLink",
            ] {
                meta.remove(server_owned);
            }
        }
        if info.kind == "CertificateSigningRequest" {
            crate::certificates::stamp_requester(&mut body, opts.requester.as_ref());
        }
        let mut warnings = Vec::new();
        let mut obj = admit(info, body, opts.validation, &mut warnings)?;
        let name = meta_str(&obj, "name").unwrap_or("").to_string();
        self.namespace_accepts(target).await?;
        if let Some(status) = initial_status(info.kind, &obj) {
            obj["status"] = status;
        }
        {
            let meta = meta_mut(&mut obj);
            meta.insert("uid".into(), Value::String(uid()));
            meta.insert("creationTimestamp".into(), Value::String(now()));
            if uses_generation(info.kind) {
                meta.insert("generation".into(), json!(1));
            }
        }
        if !opts.apply {
            crate::managed::on_write(None, &mut obj, &opts.field_manager, &now());
        }
        tidy(&mut obj);
        let key = info
            .store_key(target.namespace.as_deref(), &name)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        if opts.dry_run {
            if self.storage.get(&key).await.ok().flatten().is_some() {
                return Err(ApiError::already_exists(info, &name));
            }
            return Ok(Written {
                object: obj,
                created: true,
                warnings,
            });
        }
        let claimed = if info.kind == "Service" {
            self.allocate_service(&mut obj).await?
        } else {
            Vec::new()
        };
        let bytes = serde_json::to_vec(&obj).map_err(|e| ApiError::internal(e.to_string()))?;
        let rev = match self.storage.create(&key, bytes).await {
            Ok(rev) => rev,
            Err(e) => {
                self.release_all(&claimed).await;
                return Err(ApiError::from_storage(e, info, &name));
            }
        };
        set_resource_version(&mut obj, rev);
        Ok(Written {
            object: obj,
            created: true,
            warnings,
        })
    }

    /// Reads the current object (linearizable).
    pub async fn current(&self, target: &Target) -> ApiResult<Option<(Item, Value)>> {
        let key = target.key()?;
        let item = self
            .storage
            .get(&key)
            .await
            .map_err(|e| ApiError::from_storage(e, target.info, target.name()))?;
        Ok(match item {
            None => None,
            Some(it) => {
                let v = crate::cache::decode(&it.value, it.mod_revision)
                    .ok_or_else(|| ApiError::internal(format!("stored object {key} is corrupt")))?;
                Some((it, v))
            }
        })
    }

    /// Computes and stores a new version of an object from its current one, retrying from
    /// fresh state on a lost race. `change` returns the desired object (or an error); when the
    /// desired object carries a `resourceVersion`, it must match the current one.
    pub async fn guaranteed_update<F>(
        &self,
        target: &Target,
        opts: &WriteOptions,
        mut change: F,
    ) -> ApiResult<Written>
    where
        F: FnMut(Option<&Value>) -> ApiResult<Update>,
    {
        let info = target.info;
        let name = target.name().to_string();
        for _attempt in 0..16 {
            let current = self.current(target).await?;
            let (item, old) = match current {
                Some((it, v)) => (Some(it), Some(v)),
                None => (None, None),
            };
            let update = change(old.as_ref())?;
            let (mut new, warnings, precondition) = match update {
                Update::Create(body) => {
                    let mut w = self.create(target, body, opts).await?;
                    w.created = true;
                    return Ok(w);
                }
                Update::Replace {
                    object,
                    warnings,
                    precondition,
                } => (object, warnings, precondition),
            };
            let (Some(item), Some(old)) = (item, old) else {
                return Err(ApiError::not_found(info, &name));
            };
            if let Some(rv) = &precondition {
                if *rv != item.mod_revision.to_string() {
                    return Err(ApiError::modified(info, &name));
                }
            }
            self.carry_server_fields(info, &old, &mut new, target.subresource.as_deref())?;
            if !opts.apply {
                crate::managed::on_write(Some(&old), &mut new, &opts.field_manager, &now());
            }
            tidy(&mut new);
            let mut old_cmp = old.clone();
            set_resource_version(&mut old_cmp, item.mod_revision);
            set_resource_version(&mut new, item.mod_revision);
            // The last finalizer gone completes a deletion, unless it is a graceful one
            // (a pod whose node agent is still stopping it): that ends with the agent's
            // delete with grace 0.
            let finalized = meta_str(&new, "deletionTimestamp").is_some()
                && new
                    .pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .is_none_or(|f| f.is_empty())
                && new
                    .pointer("/metadata/deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .is_none_or(|g| g == 0);
            if opts.dry_run {
                return Ok(Written {
                    object: new,
                    created: false,
                    warnings,
                });
            }
            if finalized {
                match self.storage.delete(&item.key, item.mod_revision).await {
                    Ok(rev) => {
                        if info.kind == "Service" {
                            self.release_service(&old).await;
                        }
                        set_resource_version(&mut new, rev);
                        return Ok(Written {
                            object: new,
                            created: false,
                            warnings,
                        });
                    }
                    Err(storage::Error::Conflict { .. }) if precondition.is_none() => continue,
                    Err(e) => return Err(ApiError::from_storage(e, info, &name)),
                }
            }
            if strip_rv(&new) == strip_rv(&old_cmp) {
                // Nothing changed: no write, as Kubernetes skips no-op updates.
                return Ok(Written {
                    object: old_cmp,
                    created: false,
                    warnings,
                });
            }
            let mut stored = new.clone();
            if let Some(m) = stored.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            let bytes =
                serde_json::to_vec(&stored).map_err(|e| ApiError::internal(e.to_string()))?;
            match self
                .storage
                .update(&item.key, bytes, item.mod_revision)
                .await
            {
                Ok(rev) => {
                    set_resource_version(&mut new, rev);
                    return Ok(Written {
                        object: new,
                        created: false,
                        warnings,
                    });
                }
                Err(storage::Error::Conflict { .. }) if precondition.is_none() => continue,
                Err(e) => return Err(ApiError::from_storage(e, info, &name)),
            }
        }
        Err(ApiError::modified(info, &name))
    }

    /// Copies what a client may not change from the stored object onto the new one, and
    /// applies the rules of the endpoint written to (main resource or `status`).
    fn carry_server_fields(
        &self,
        info: &ResourceInfo,
        old: &Value,
        new: &mut Value,
        subresource: Option<&str>,
    ) -> ApiResult<()> {
        let name = meta_str(old, "name").unwrap_or("").to_string();
        if meta_str(new, "name").is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(new, "name").unwrap_or("")
            )));
        }
        match subresource {
            Some("status") => {
                // Only the status changes through /status.
                let status = new.get("status").cloned();
                let mut merged = old.clone();
                match status {
                    Some(s) => merged["status"] = s,
                    None => {
                        if let Some(o) = merged.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
                *new = merged;
            }
            // Only CertificateSigningRequests have it; their rules follow.
            Some("approval") => {}
            // `pods/binding` sets the node and the PodScheduled condition together (the
            // binding computes both from the stored pod).
            Some("binding") => {}
            _ => {
                if info.has_subresource("status") {
                    match old.get("status") {
                        Some(s) => new["status"] = s.clone(),
                        None => {
                            if let Some(o) = new.as_object_mut() {
                                o.remove("status");
                            }
                        }
                    }
                }
            }
        }
        let old_meta = old.get("metadata").cloned().unwrap_or(json!({}));
        let meta = meta_mut(new);
        for kept in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "generation",
        ] {
            match old_meta.get(kept) {
                Some(v) => {
                    meta.insert(kept.into(), v.clone());
                }
                None => {
                    meta.remove(kept);
                }
            }
        }
        meta.insert("name".into(), Value::String(name.clone()));
        if info.kind == "CertificateSigningRequest" {
            crate::certificates::prepare_update(old, new, subresource).map_err(
                |(field, message)| {
                    ApiError::invalid_field(info, &name, &field, "FieldValueInvalid", &message)
                },
            )?;
        }
        if info.kind == "Service" {
            crate::alloc::keep_service_addresses(old, new).map_err(|m| {
                let field = m.split(':').next().unwrap_or("spec").to_string();
                ApiError::invalid_field(info, &name, &field, "FieldValueInvalid", &m)
            })?;
        }
        if meta_str(old, "deletionTimestamp").is_some() {
            // Finalizers may only be removed once deletion started.
            let old_f: BTreeSet<String> = string_list(old.pointer("/metadata/finalizers"));
            let new_f: BTreeSet<String> = string_list(new.pointer("/metadata/finalizers"));
            if !new_f.is_subset(&old_f) {
                return Err(ApiError::forbidden(format!(
                    "{} \"{}\" is forbidden: no new finalizers can be added if the object is being deleted",
                    info.qualified_plural(), meta_str(old, "name").unwrap_or("")
                )));
            }
        }
        if uses_generation(info.kind) && spec_part(old) != spec_part(new) {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(new).insert("generation".into(), json!(g + 1));
        }
        Ok(())
    }
}

fn string_list(v: Option<&Value>) -> BTreeSet<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn strip_rv(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    v
}

/// What a change function wants stored.
pub enum Update {
    /// The object is missing and should be created from this body (apply, update-or-create).
    Create(Value),
    Replace {
        object: Value,
        warnings: Vec<String>,
        /// The resourceVersion the client required, if any.
        precondition: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_found_with_their_paths() {
        let input = json!({"spec": {"replicas": 1, "replicass": 2,
            "containers": [{"name": "a", "imagee": "x"}]}, "x": null});
        let typed = json!({"spec": {"replicas": 1, "containers": [{"name": "a"}]}});
        let mut out = Vec::new();
        unknown_fields(&input, &typed, "", &mut out);
        assert_eq!(out, vec!["spec.containers[0].imagee", "spec.replicass"]);
    }

    #[test]
    fn qos_classes() {
        assert_eq!(
            qos_class(&json!({"spec": {"containers": [{}]}})),
            "BestEffort"
        );
        let g = json!({"spec": {"containers": [{"resources": {
            "limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(qos_class(&b), "Burstable");
    }

    #[test]
    fn generate_name_suffixes_use_the_kubernetes_alphabet() {
        let s = random_suffix();
        assert_eq!(s.len(), 5);
        assert!(s.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }
}
