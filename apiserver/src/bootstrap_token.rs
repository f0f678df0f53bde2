//! Bootstrap tokens, as Kubernetes' TLS bootstrapping uses them: a bearer token
//! `<id>.<secret>` (`[a-z0-9]{6}.[a-z0-9]{16}`) authenticates when the Secret
//! `kube-system/bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token` holds the same
//! `token-id` and `token-secret`, has `usage-bootstrap-authentication: "true"`, has not
//! passed its `expiration` (RFC 3339) and is not being deleted. The user is
//! `system:bootstrap:<id>` in `system:bootstrappers` plus the Secret's `auth-extra-groups`
//! (comma-separated, each `system:bootstrappers:...`).
//!
//! `berth server` creates one such token on its first start (no expiration, extra group
//! [`DEFAULT_NODE_GROUP`]) and writes it into `<data-dir>/bootstrap-kubeconfig.yaml` for node
//! agents to join with.

use std::collections::BTreeMap;

use base64::Engine;
use rand::Rng;
use serde_json::{json, Value};

use crate::auth::User;
use crate::cache::WatchCache;

/// The Secret type of bootstrap tokens.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The group every bootstrap token user is in.
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";
/// The extra group of the token `berth server` creates.
pub const DEFAULT_NODE_GROUP: &str = "system:bootstrappers:berth:default-node-token";

/// Splits a token into its id and secret when it has the bootstrap token form.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// Compares two byte strings in time independent of where they differ (the length, fixed
/// for token secrets, is not hidden).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn data_field(secret: &Value, key: &str) -> Option<String> {
    let b64 = secret.pointer(&format!("/data/{key}"))?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

fn valid_extra_group(g: &str) -> bool {
    let Some(rest) = g.strip_prefix("system:bootstrappers:") else {
        return false;
    };
    !rest.is_empty()
        && rest.len() <= 256
        && rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'-')
        && rest
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The user a bootstrap token names, checked against its Secret (`secret`) at `now`.
pub fn user_for(token: &str, secret: &Value, now: jiff::Timestamp) -> Option<User> {
    let (id, token_secret) = parse(token)?;
    if secret.get("type").and_then(Value::as_str) != Some(SECRET_TYPE) {
        return None;
    }
    if secret.pointer("/metadata/deletionTimestamp").is_some() {
        return None;
    }
    let stored_secret = data_field(secret, "token-secret")?;
    if !constant_time_eq(stored_secret.as_bytes(), token_secret.as_bytes()) {
        return None;
    }
    if data_field(secret, "token-id").as_deref() != Some(id) {
        return None;
    }
    if data_field(secret, "usage-bootstrap-authentication").as_deref() != Some("true") {
        return None;
    }
    if let Some(exp) = data_field(secret, "expiration") {
        let exp: jiff::Timestamp = exp.parse().ok()?;
        if now >= exp {
            tracing::debug!(token_id = id, "bootstrap token expired");
            return None;
        }
    }
    let mut groups = vec![BOOTSTRAPPERS.to_string()];
    if let Some(extra) = data_field(secret, "auth-extra-groups") {
        for g in extra.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            if !valid_extra_group(g) {
                tracing::debug!(
                    token_id = id,
                    group = g,
                    "bootstrap token has a bad extra group"
                );
                return None;
            }
            if !groups.iter().any(|have| have == g) {
                groups.push(g.to_string());
            }
        }
    }
    let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
    Some(User::new(&format!("system:bootstrap:{id}"), &refs))
}

/// Authenticates a bearer token as a bootstrap token, reading its Secret from the cache.
pub fn authenticate(token: &str, cache: &WatchCache) -> Option<User> {
    let (id, _) = parse(token)?;
    let secret = cache.get(&format!(
        "/registry/core/secrets/kube-system/bootstrap-token-{id}"
    ))?;
    user_for(token, &secret.object, jiff::Timestamp::now())
}

/// A new random token.
pub fn generate() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let mut pick = |n: usize| -> String {
        (0..n)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect()
    };
    let id = pick(6);
    format!("{id}.{}", pick(16))
}

/// The Secret holding `token` for authentication, with `extra_groups` and an optional
/// RFC 3339 `expiration`.
pub fn secret(token: &str, extra_groups: &[&str], expiration: Option<&str>) -> Value {
    let (id, token_secret) = parse(token).expect("a generated token has the bootstrap form");
    let mut data = BTreeMap::from([
        ("token-id".to_string(), id.to_string()),
        ("token-secret".to_string(), token_secret.to_string()),
        (
            "usage-bootstrap-authentication".to_string(),
            "true".to_string(),
        ),
        (
            "description".to_string(),
            "created by berth server".to_string(),
        ),
    ]);
    if !extra_groups.is_empty() {
        data.insert("auth-extra-groups".into(), extra_groups.join(","));
    }
    if let Some(exp) = expiration {
        data.insert("expiration".into(), exp.to_string());
    }
    json!({"apiVersion": "v1", "kind": "Secret", "type": SECRET_TYPE,
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
        "stringData": data})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Secret as the store holds it (`stringData` folded into base64 `data`).
    fn stored(token: &str, extra: &[&str], exp: Option<&str>) -> Value {
        let mut s = secret(token, extra, exp);
        let b64 = base64::engine::general_purpose::STANDARD;
        let data: serde_json::Map<String, Value> = s["stringData"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), json!(b64.encode(v.as_str().unwrap()))))
            .collect();
        s["data"] = Value::Object(data);
        s.as_object_mut().unwrap().remove("stringData");
        s
    }

    #[test]
    fn token_form() {
        assert_eq!(
            parse("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        assert!(parse("abcde.0123456789abcdef").is_none());
        assert!(parse("ABCDEF.0123456789abcdef").is_none());
        assert!(parse("abcdef.0123456789abcde").is_none());
        assert!(parse("abcdef0123456789abcdef").is_none());
        let t = generate();
        assert!(parse(&t).is_some(), "{t}");
        assert_ne!(generate(), t);
    }

    #[test]
    fn tokens_authenticate_only_as_their_secret_allows() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let token = "abcdef.0123456789abcdef";
        let s = stored(token, &[DEFAULT_NODE_GROUP], None);
        let user = user_for(token, &s, now).unwrap();
        assert_eq!(user.name, "system:bootstrap:abcdef");
        assert!(user.in_group(BOOTSTRAPPERS) && user.in_group(DEFAULT_NODE_GROUP));
        assert!(user.in_group("system:authenticated"));

        assert!(user_for("abcdef.0123456789abcdee", &s, now).is_none());
        let expired = stored(token, &[], Some("2025-12-31T23:59:59Z"));
        assert!(user_for(token, &expired, now).is_none());
        let later = stored(token, &[], Some("2026-01-02T00:00:00Z"));
        assert!(user_for(token, &later, now).is_some());
        let mut no_usage = s.clone();
        no_usage["data"]["usage-bootstrap-authentication"] = json!("ZmFsc2U="); // "false"
        assert!(user_for(token, &no_usage, now).is_none());
        let mut wrong_type = s.clone();
        wrong_type["type"] = json!("Opaque");
        assert!(user_for(token, &wrong_type, now).is_none());
        let bad_group = stored(token, &["system:masters"], None);
        assert!(user_for(token, &bad_group, now).is_none());
        let mut deleting = s.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert!(user_for(token, &deleting, now).is_none());
    }
}
