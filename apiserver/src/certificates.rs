//! CertificateSigningRequests (`certificates.k8s.io/v1`), as Kubernetes serves them, and the
//! approver and signer for the two kubelet signers, which `berth server` runs because it holds
//! the cluster CA.
//!
//! Writes: on create, `spec.username`, `spec.uid` and `spec.groups` are set from the requester
//! ([`stamp_requester`]), so clients cannot forge them. The main resource then only changes
//! metadata; `status` changes the certificate and conditions other than Approved/Denied;
//! `approval` changes only the conditions ([`prepare_update`]). Approved and Denied exclude
//! each other and are never removed, and a certificate is set once, on an approved request.
//!
//! Approval and signing ([`reconcile`], a pure function from one request to an [`Action`]):
//!
//! - `kubernetes.io/kube-apiserver-client-kubelet`: requested by a bootstrapper (group
//!   `system:bootstrappers`) or by the node itself (`system:node:<name>` in `system:nodes`,
//!   renewing), for exactly CN `system:node:<name>`, O `system:nodes`, no subject alternative
//!   names, usages within {digital signature, key encipherment, client auth} including client
//!   auth.
//! - `kubernetes.io/kubelet-serving`: requested by `system:node:<name>` for exactly CN
//!   `system:node:<name>`, O `system:nodes`, only DNS and IP subject alternative names (at
//!   least one), usages within {digital signature, key encipherment, server auth} including
//!   server auth.
//!
//! A request that fits is approved (condition `Approved`, reason `AutoApproved`) and signed by
//! the cluster CA for a year (or its `spec.expirationSeconds`, if shorter); the PEM goes to
//! `status.certificate`. A subject that does not fit the signer or names another node than
//! the requesting one is Denied with a reason; any other request is left pending for an
//! administrator. A request approved by hand for one of these signers is signed when its
//! certificate fits the signer, else marked Failed.
//!
//! [`run`] drives [`reconcile`] from the watch cache; it needs nothing else from the API
//! server, so it can move to the controller manager as is.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use crate::auth::User;
use crate::cache::EventType;
use crate::error::ApiError;
use crate::objects::{meta_str, now, FieldValidation, Update, WriteOptions};
use crate::request::Target;
use crate::server::ApiServer;
use crate::tls::Pki;

pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// Where requests live in the store.
pub const PREFIX: &str = "/registry/certificates.k8s.io/certificatesigningrequests/";
/// How long signed certificates are valid at most.
pub const MAX_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

fn info() -> &'static berth_api::ResourceInfo {
    berth_api::registry::by_kind("CertificateSigningRequest").expect("CSRs are registered")
}

/// Sets who asked on a request about to be created.
pub fn stamp_requester(obj: &mut Value, requester: Option<&User>) {
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    let spec = obj["spec"].as_object_mut().expect("spec is an object");
    for field in ["username", "uid", "groups", "extra"] {
        spec.remove(field);
    }
    if let Some(user) = requester {
        spec.insert("username".into(), json!(user.name));
        if !user.uid.is_empty() {
            spec.insert("uid".into(), json!(user.uid));
        }
        spec.insert("groups".into(), json!(user.groups));
    }
}

fn conditions(obj: &Value) -> Vec<Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn has_condition(obj: &Value, ty: &str) -> bool {
    conditions(obj).iter().any(|c| c["type"] == ty)
}

fn status_mut(obj: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    obj["status"].as_object_mut().expect("status is an object")
}

/// Applies the rules of the endpoint written to (`None` for the main resource, `status`,
/// `approval`) to a new version of a request, then checks the result against the old one.
/// Errors name the field and say what is wrong.
pub fn prepare_update(
    old: &Value,
    new: &mut Value,
    subresource: Option<&str>,
) -> Result<(), (String, String)> {
    new["spec"] = old.get("spec").cloned().unwrap_or(json!({}));
    let decision = |c: &Value| c["type"] == "Approved" || c["type"] == "Denied";
    match subresource {
        Some("status") => {
            // Approval is not the signer's to change.
            let mut conds: Vec<Value> = conditions(new)
                .into_iter()
                .filter(|c| !decision(c))
                .collect();
            conds.extend(conditions(old).into_iter().filter(decision));
            set_conditions(new, conds);
        }
        Some("approval") => {
            let conds = conditions(new);
            let mut merged = old.clone();
            merged["metadata"] = new.get("metadata").cloned().unwrap_or(json!({}));
            set_conditions(&mut merged, conds);
            *new = merged;
        }
        _ => match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        },
    }
    // Timestamps the writer left out.
    let stamp = now();
    let old_conds = conditions(old);
    let mut conds = conditions(new);
    for c in &mut conds {
        let before = old_conds.iter().find(|o| o["type"] == c["type"]);
        for field in ["lastUpdateTime", "lastTransitionTime"] {
            if c.get(field).is_none_or(Value::is_null) {
                c[field] = match before {
                    Some(b) if b["status"] == c["status"] && b.get(field).is_some() => {
                        b[field].clone()
                    }
                    _ => json!(stamp),
                };
            }
        }
    }
    if !conds.is_empty() {
        set_conditions(new, conds.clone());
    }
    // Checks.
    let mut seen = Vec::new();
    for (i, c) in conds.iter().enumerate() {
        let ty = c["type"].as_str().unwrap_or("");
        let field = format!("status.conditions[{i}].type");
        if ty.is_empty() {
            return Err((field, "Required value".into()));
        }
        if seen.contains(&ty) {
            return Err((field, format!("Duplicate value: \"{ty}\"")));
        }
        seen.push(ty);
        if matches!(ty, "Approved" | "Denied" | "Failed") && c["status"] != "True" {
            return Err((
                format!("status.conditions[{i}].status"),
                format!(
                    "Unsupported value: {}: supported values: \"True\"",
                    c["status"]
                ),
            ));
        }
    }
    if seen.contains(&"Approved") && seen.contains(&"Denied") {
        return Err((
            "status.conditions".into(),
            "Invalid value: Approved and Denied conditions are mutually exclusive".into(),
        ));
    }
    for ty in ["Approved", "Denied"] {
        if has_condition(old, ty) && !seen.contains(&ty) {
            return Err((
                "status.conditions".into(),
                format!("Forbidden: updates may not remove a condition of type \"{ty}\""),
            ));
        }
    }
    let old_cert = old.pointer("/status/certificate").and_then(Value::as_str);
    let new_cert = new.pointer("/status/certificate").and_then(Value::as_str);
    match (old_cert.filter(|c| !c.is_empty()), new_cert) {
        (Some(a), b) if Some(a) != b => {
            return Err((
                "status.certificate".into(),
                "Forbidden: updates may not modify existing certificate content".into(),
            ))
        }
        (None, Some(c)) if !c.is_empty() => {
            if !seen.contains(&"Approved") {
                return Err((
                    "status.certificate".into(),
                    "Forbidden: certificate can only be set on approved requests".into(),
                ));
            }
            let pem = base64::engine::general_purpose::STANDARD
                .decode(c)
                .ok()
                .and_then(|b| crate::tls::certs(&String::from_utf8_lossy(&b), "certificate").ok())
                .filter(|c| !c.is_empty());
            if pem.is_none() {
                return Err((
                    "status.certificate".into(),
                    "Invalid value: must contain at least one PEM CERTIFICATE block".into(),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

fn set_conditions(obj: &mut Value, conds: Vec<Value>) {
    if conds.is_empty() {
        if let Some(s) = obj.get_mut("status").and_then(Value::as_object_mut) {
            s.remove("conditions");
        }
    } else {
        status_mut(obj).insert("conditions".into(), Value::Array(conds));
    }
}

/// What the approver and signer want done with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing: decided, signed, or not ours.
    None,
    Approve {
        message: String,
    },
    Deny {
        reason: String,
        message: String,
    },
    /// Issue the certificate, valid for this long.
    Sign {
        validity: Duration,
    },
    /// Approved, but the certificate cannot be issued by this signer.
    Fail {
        reason: String,
        message: String,
    },
}

/// The parts of a certificate request the signers look at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subject {
    pub common_names: Vec<String>,
    pub organizations: Vec<String>,
    /// Subject attributes other than CN and O.
    pub other_attributes: usize,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<String>,
    /// Subject alternative names other than DNS names and IP addresses.
    pub other_names: usize,
}

/// Decodes the PEM request of a CSR's `spec.request` (base64 in JSON).
pub fn request_pem(csr: &Value) -> Option<String> {
    let b64 = csr.pointer("/spec/request")?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

/// Parses a PEM certificate request's subject and alternative names.
pub fn parse_subject(pem: &str) -> Option<Subject> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
            .ok()?;
    let info = &req.certification_request_info;
    let mut s = Subject::default();
    for attr in info.subject.iter_attributes() {
        let value = attr.as_str().ok().map(str::to_string);
        if attr.attr_type() == &x509_parser::oid_registry::OID_X509_COMMON_NAME {
            s.common_names.push(value?);
        } else if attr.attr_type() == &x509_parser::oid_registry::OID_X509_ORGANIZATION_NAME {
            s.organizations.push(value?);
        } else {
            s.other_attributes += 1;
        }
    }
    for ext in req.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(d) => s.dns_names.push(d.to_string()),
                    GeneralName::IPAddress(ip) => match ip.len() {
                        4 => s
                            .ip_addresses
                            .push(std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string()),
                        16 => {
                            let mut b = [0u8; 16];
                            b.copy_from_slice(ip);
                            s.ip_addresses.push(std::net::Ipv6Addr::from(b).to_string());
                        }
                        _ => s.other_names += 1,
                    },
                    _ => s.other_names += 1,
                }
            }
        }
    }
    Some(s)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Why a subject is not a node identity `system:node:<name>` in `system:nodes` (the node
/// name when it is).
fn node_subject(s: &Subject) -> Result<String, String> {
    let [cn] = s.common_names.as_slice() else {
        return Err("the subject must have exactly one common name".into());
    };
    let Some(node) = cn.strip_prefix("system:node:").filter(|n| !n.is_empty()) else {
        return Err(format!(
            "the common name {cn:?} must be system:node:<node name>"
        ));
    };
    if s.organizations != ["system:nodes"] || s.other_attributes > 0 {
        return Err("the subject must be exactly O=system:nodes and the common name".into());
    }
    Ok(node.to_string())
}

/// Why a request's shape does not fit `signer` (its certificate could not be issued).
fn signer_check(signer: &str, s: &Subject, usages: &[String]) -> Result<String, String> {
    let node = node_subject(s)?;
    let (allowed, required): (&[&str], &str) = match signer {
        KUBELET_CLIENT_SIGNER => {
            if !s.dns_names.is_empty() || !s.ip_addresses.is_empty() || s.other_names > 0 {
                return Err("a kubelet client certificate has no subject alternative names".into());
            }
            (
                &["digital signature", "key encipherment", "client auth"],
                "client auth",
            )
        }
        KUBELET_SERVING_SIGNER => {
            if s.other_names > 0 {
                return Err("only DNS and IP subject alternative names are allowed".into());
            }
            if s.dns_names.is_empty() && s.ip_addresses.is_empty() {
                return Err("at least one DNS or IP subject alternative name is required".into());
            }
            (
                &["digital signature", "key encipherment", "server auth"],
                "server auth",
            )
        }
        _ => return Err(format!("signer {signer:?} is not handled here")),
    };
    if let Some(u) = usages.iter().find(|u| !allowed.contains(&u.as_str())) {
        return Err(format!("usage {u:?} is not allowed for {signer}"));
    }
    if !usages.iter().any(|u| u == required) {
        return Err(format!("usage {required:?} is required for {signer}"));
    }
    Ok(node)
}

/// What to do with one request (its JSON as stored). Pure: the same request always gets
/// the same answer.
pub fn reconcile(csr: &Value) -> Action {
    let signer = csr
        .pointer("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if signer != KUBELET_CLIENT_SIGNER && signer != KUBELET_SERVING_SIGNER {
        return Action::None;
    }
    if has_condition(csr, "Denied") || has_condition(csr, "Failed") {
        return Action::None;
    }
    if csr
        .pointer("/status/certificate")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty())
    {
        return Action::None;
    }
    let Some(subject) = request_pem(csr).as_deref().and_then(parse_subject) else {
        return Action::None;
    };
    let usages = strings(csr.pointer("/spec/usages"));
    let shape = signer_check(signer, &subject, &usages);
    if has_condition(csr, "Approved") {
        return match shape {
            Ok(_) => {
                let requested = csr
                    .pointer("/spec/expirationSeconds")
                    .and_then(Value::as_u64)
                    .map(Duration::from_secs)
                    .unwrap_or(MAX_VALIDITY);
                Action::Sign {
                    validity: requested.min(MAX_VALIDITY),
                }
            }
            Err(message) => Action::Fail {
                reason: "SignerValidationFailure".into(),
                message,
            },
        };
    }
    let username = csr
        .pointer("/spec/username")
        .and_then(Value::as_str)
        .unwrap_or("");
    let groups = strings(csr.pointer("/spec/groups"));
    let requester_node = username
        .strip_prefix("system:node:")
        .filter(|_| groups.iter().any(|g| g == "system:nodes"));
    let bootstrapper = groups
        .iter()
        .any(|g| g == crate::bootstrap_token::BOOTSTRAPPERS);
    let node = match shape {
        Ok(node) => node,
        Err(message) => {
            // A node or bootstrapper asking for a certificate it may not have.
            if requester_node.is_some() || bootstrapper {
                return Action::Deny {
                    reason: "SubjectNotAllowed".into(),
                    message,
                };
            }
            return Action::None;
        }
    };
    if let Some(requester) = requester_node {
        if requester != node {
            return Action::Deny {
                reason: "SubjectMismatch".into(),
                message: format!(
                    "node {requester:?} may not request a certificate for node {node:?}"
                ),
            };
        }
    }
    match signer {
        KUBELET_CLIENT_SIGNER if bootstrapper || requester_node.is_some() => Action::Approve {
            message: "Auto approving kubelet client certificate".into(),
        },
        KUBELET_SERVING_SIGNER if requester_node.is_some() => Action::Approve {
            message: "Auto approving kubelet serving certificate".into(),
        },
        _ => Action::None,
    }
}

fn condition(ty: &str, reason: &str, message: &str) -> Value {
    let t = now();
    json!({"type": ty, "status": "True", "reason": reason, "message": message,
        "lastUpdateTime": t, "lastTransitionTime": t})
}

/// Carries out `action` on the request `name`, re-deciding on the current state (a request
/// changed since it was seen is handled as it is now).
async fn act(api: &ApiServer, pki: &Pki, name: &str) -> Result<(), ApiError> {
    let opts = WriteOptions {
        dry_run: false,
        field_manager: "berth-csr-signer".into(),
        validation: FieldValidation::Ignore,
        apply: false,
        requester: None,
    };
    let target = |sub: &str| Target {
        info: info(),
        namespace: None,
        name: Some(name.to_string()),
        subresource: Some(sub.to_string()),
    };
    // Approve or deny, then sign: at most two writes, each from fresh state.
    for _ in 0..2 {
        let Some((_, current)) = api.current(&target("status")).await? else {
            return Ok(());
        };
        let action = reconcile(&current);
        tracing::debug!(csr = name, ?action, "certificate signing request");
        let (sub, update): (&str, Change) = match action {
            Action::None => return Ok(()),
            Action::Approve { message } => (
                "approval",
                Box::new(move |old| {
                    with_condition(old, condition("Approved", "AutoApproved", &message))
                }),
            ),
            Action::Deny { reason, message } => (
                "approval",
                Box::new(move |old| with_condition(old, condition("Denied", &reason, &message))),
            ),
            Action::Fail { reason, message } => (
                "status",
                Box::new(move |old| with_condition(old, condition("Failed", &reason, &message))),
            ),
            Action::Sign { validity } => {
                let pem = request_pem(&current).unwrap_or_default();
                let usages = strings(current.pointer("/spec/usages"));
                match pki.sign_request(&pem, &usages, validity) {
                    Ok(cert) => {
                        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_bytes());
                        (
                            "status",
                            Box::new(move |old| {
                                let mut new = old.clone();
                                status_mut(&mut new).insert("certificate".into(), json!(b64));
                                new
                            }),
                        )
                    }
                    // A request the CA cannot sign (an extension it does not know, say) would
                    // fail again: it is marked Failed, not retried.
                    Err(e) => {
                        let message = e.to_string();
                        (
                            "status",
                            Box::new(move |old| {
                                with_condition(
                                    old,
                                    condition("Failed", "SignerValidationFailure", &message),
                                )
                            }),
                        )
                    }
                }
            }
        };
        let expected = meta_str(&current, "resourceVersion").map(str::to_string);
        let written = api
            .guaranteed_update(&target(sub), &opts, |old| {
                let Some(old) = old else {
                    return Err(ApiError::not_found(info(), name));
                };
                Ok(Update::Replace {
                    object: update(old),
                    warnings: Vec::new(),
                    precondition: expected.clone(),
                })
            })
            .await;
        match written {
            Ok(_) => tracing::info!(
                csr = name,
                endpoint = sub,
                "certificate signing request updated"
            ),
            // Changed meanwhile: decide again on the new state.
            Err(e) if e.code == 409 => continue,
            Err(e) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A change to a request, from its current state.
type Change = Box<dyn Fn(&Value) -> Value + Send + Sync>;

fn with_condition(old: &Value, c: Value) -> Value {
    let mut new = old.clone();
    let mut conds = conditions(old);
    conds.retain(|have| have["type"] != c["type"]);
    conds.push(c);
    set_conditions(&mut new, conds);
    new
}

/// The approver and signer loop: every request in the watch cache is reconciled when it
/// appears or changes; a failed write is retried a second later.
pub async fn run(api: Arc<ApiServer>, pki: Arc<Pki>) {
    loop {
        let (items, _, mut live) = api.cache.snapshot_and_watch(PREFIX);
        let mut failed = false;
        for c in items {
            failed |= handle(&api, &pki, &c.object).await;
        }
        while !failed {
            match live.recv().await {
                Ok(ev) if ev.key.starts_with(PREFIX) && ev.kind != EventType::Deleted => {
                    failed = handle(&api, &pki, &ev.object).await;
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => break,
                Err(RecvError::Closed) => return,
            }
        }
        if failed {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Reconciles one request; true when it must be retried.
async fn handle(api: &ApiServer, pki: &Pki, csr: &Value) -> bool {
    if reconcile(csr) == Action::None {
        return false;
    }
    let name = meta_str(csr, "name").unwrap_or("").to_string();
    match act(api, pki, &name).await {
        Ok(()) => false,
        Err(e) => {
            tracing::warn!(csr = %name, error = %e, "handling certificate signing request");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cn: &str, orgs: &[&str], sans: &[&str]) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        for o in orgs {
            dn.push(rcgen::DnType::OrganizationName, *o);
        }
        dn.push(rcgen::DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn csr(pem: &str, signer: &str, usages: &[&str], user: &str, groups: &[&str]) -> Value {
        json!({"metadata": {"name": "r"},
            "spec": {"request": base64::engine::general_purpose::STANDARD.encode(pem),
                "signerName": signer, "usages": usages, "username": user, "groups": groups}})
    }

    const CLIENT: &[&str] = &["digital signature", "client auth"];
    const SERVING: &[&str] = &["digital signature", "key encipherment", "server auth"];
    const NODE: &[&str] = &["system:nodes", "system:authenticated"];
    const BOOT: &[&str] = &["system:bootstrappers", "system:authenticated"];

    fn approved(mut v: Value) -> Value {
        v["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}]});
        v
    }

    #[test]
    fn kubelet_client_requests() {
        let n1 = request("system:node:n1", &["system:nodes"], &[]);
        let boot = csr(
            &n1,
            KUBELET_CLIENT_SIGNER,
            CLIENT,
            "system:bootstrap:abc",
            BOOT,
        );
        assert!(matches!(reconcile(&boot), Action::Approve { .. }));
        let renew = csr(&n1, KUBELET_CLIENT_SIGNER, CLIENT, "system:node:n1", NODE);
        assert!(matches!(reconcile(&renew), Action::Approve { .. }));
        let other = csr(&n1, KUBELET_CLIENT_SIGNER, CLIENT, "system:node:n2", NODE);
        assert!(
            matches!(reconcile(&other), Action::Deny { reason, .. } if reason == "SubjectMismatch")
        );
        // Someone else: pending, for an administrator.
        let alice = csr(&n1, KUBELET_CLIENT_SIGNER, CLIENT, "alice", &["dev"]);
        assert_eq!(reconcile(&alice), Action::None);
        let admin = request("admin", &["system:masters"], &[]);
        let forged = csr(
            &admin,
            KUBELET_CLIENT_SIGNER,
            CLIENT,
            "system:bootstrap:abc",
            BOOT,
        );
        assert!(
            matches!(reconcile(&forged), Action::Deny { reason, .. } if reason == "SubjectNotAllowed")
        );
        let two_orgs = request("system:node:n1", &["system:nodes", "system:masters"], &[]);
        let c = csr(
            &two_orgs,
            KUBELET_CLIENT_SIGNER,
            CLIENT,
            "system:bootstrap:abc",
            BOOT,
        );
        assert!(matches!(reconcile(&c), Action::Deny { .. }));
        let server_usage = csr(
            &n1,
            KUBELET_CLIENT_SIGNER,
            SERVING,
            "system:bootstrap:abc",
            BOOT,
        );
        assert!(matches!(reconcile(&server_usage), Action::Deny { .. }));
        let with_san = request("system:node:n1", &["system:nodes"], &["10.0.0.1"]);
        let c = csr(
            &with_san,
            KUBELET_CLIENT_SIGNER,
            CLIENT,
            "system:bootstrap:abc",
            BOOT,
        );
        assert!(matches!(reconcile(&c), Action::Deny { .. }));
    }

    #[test]
    fn kubelet_serving_requests() {
        let n1 = request(
            "system:node:n1",
            &["system:nodes"],
            &["10.0.0.1", "n1.local"],
        );
        let own = csr(&n1, KUBELET_SERVING_SIGNER, SERVING, "system:node:n1", NODE);
        assert!(matches!(reconcile(&own), Action::Approve { .. }));
        // Bootstrappers get client certificates only.
        let boot = csr(
            &n1,
            KUBELET_SERVING_SIGNER,
            SERVING,
            "system:bootstrap:abc",
            BOOT,
        );
        assert_eq!(reconcile(&boot), Action::None);
        let other = csr(&n1, KUBELET_SERVING_SIGNER, SERVING, "system:node:n2", NODE);
        assert!(matches!(reconcile(&other), Action::Deny { .. }));
        let no_san = request("system:node:n1", &["system:nodes"], &[]);
        let c = csr(
            &no_san,
            KUBELET_SERVING_SIGNER,
            SERVING,
            "system:node:n1",
            NODE,
        );
        assert!(matches!(reconcile(&c), Action::Deny { .. }));
    }

    #[test]
    fn approved_requests_are_signed_once() {
        let n1 = request("system:node:n1", &["system:nodes"], &[]);
        let c = approved(csr(&n1, KUBELET_CLIENT_SIGNER, CLIENT, "alice", &[]));
        assert_eq!(
            reconcile(&c),
            Action::Sign {
                validity: MAX_VALIDITY
            }
        );
        let mut short = c.clone();
        short["spec"]["expirationSeconds"] = json!(3600);
        assert_eq!(
            reconcile(&short),
            Action::Sign {
                validity: Duration::from_secs(3600)
            }
        );
        let mut signed = c.clone();
        signed["status"]["certificate"] = json!("Y2VydA==");
        assert_eq!(reconcile(&signed), Action::None);
        let admin = request("admin", &["system:masters"], &[]);
        let c = approved(csr(&admin, KUBELET_CLIENT_SIGNER, CLIENT, "alice", &[]));
        assert!(matches!(reconcile(&c), Action::Fail { .. }));
        let other = approved(csr(&n1, "example.com/x", CLIENT, "alice", &[]));
        assert_eq!(reconcile(&other), Action::None);
    }

    #[test]
    fn requesters_are_set_by_the_server() {
        let mut obj = json!({"spec": {"username": "admin", "groups": ["system:masters"],
            "extra": {"x": ["y"]}}});
        let mut user = User::new("system:bootstrap:abc", &["system:bootstrappers"]);
        user.uid = "u1".into();
        stamp_requester(&mut obj, Some(&user));
        assert_eq!(obj["spec"]["username"], "system:bootstrap:abc");
        assert_eq!(obj["spec"]["uid"], "u1");
        assert_eq!(
            obj["spec"]["groups"],
            json!(["system:bootstrappers", "system:authenticated"])
        );
        assert!(obj["spec"].get("extra").is_none());
    }

    #[test]
    fn updates_keep_decisions_and_certificates() {
        let old = json!({"spec": {"signerName": "a.io/b"},
            "status": {"conditions": [{"type": "Approved", "status": "True"}]}});
        // The main resource changes neither spec nor status.
        let mut new = json!({"spec": {"signerName": "c.io/d"}, "status": {}});
        prepare_update(&old, &mut new, None).unwrap();
        assert_eq!(new["spec"]["signerName"], "a.io/b");
        assert_eq!(new["status"]["conditions"][0]["type"], "Approved");
        // status: the signer's conditions change, the decision does not.
        let mut new = json!({"status": {"conditions": [{"type": "Failed", "status": "True"}]}});
        prepare_update(&old, &mut new, Some("status")).unwrap();
        let types: Vec<&Value> = new["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["type"])
            .collect();
        assert_eq!(types, [&json!("Failed"), &json!("Approved")]);
        // approval: the decision may not be removed or contradicted.
        let mut new = json!({"status": {"conditions": []}});
        assert!(prepare_update(&old, &mut new, Some("approval")).is_err());
        let mut new = json!({"status": {"conditions": [{"type": "Approved", "status": "True"},
            {"type": "Denied", "status": "True"}]}});
        assert!(prepare_update(&old, &mut new, Some("approval")).is_err());
        // A certificate needs approval.
        let pending = json!({"spec": {}});
        let mut new = json!({"status": {"certificate": "eA=="}});
        let err = prepare_update(&pending, &mut new, Some("status")).unwrap_err();
        assert_eq!(err.0, "status.certificate");
    }
}
