//! ServiceAccount tokens: `POST .../serviceaccounts/{name}/token` (a `TokenRequest`) issues a
//! signed, expiring token naming the account and its uid; a bearer token of that form
//! authenticates as `system:serviceaccount:<ns>:<name>` (groups `system:serviceaccounts` and
//! `system:serviceaccounts:<ns>`) while the account exists with the same uid.
//!
//! Tokens are JWTs signed with HMAC-SHA256. The key lives in the store
//! (`/berth/secrets/serviceaccount-signing-key`), created once by whichever API server starts
//! first, so every API server of the cluster accepts every token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use rand::RngCore;
use ring::hmac;
use serde_json::{json, Value};

use crate::auth::User;
use crate::cache::WatchCache;
use crate::error::{ApiError, ApiResult};
use crate::storage::{self, Storage};

const KEY: &str = "/berth/secrets/serviceaccount-signing-key";
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Signs and verifies ServiceAccount tokens.
pub struct TokenSigner {
    key: hmac::Key,
}

impl TokenSigner {
    /// Loads the cluster's signing key, creating it if this is the first API server.
    pub async fn load(storage: &dyn Storage) -> Result<Self, storage::Error> {
        loop {
            if let Some(item) = storage.get(KEY).await? {
                return Ok(Self::from_secret(&item.value));
            }
            let mut secret = vec![0u8; 32];
            rand::thread_rng().fill_bytes(&mut secret);
            match storage.create(KEY, secret).await {
                Ok(_) | Err(storage::Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn from_secret(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// A token for the account `namespace/name` with `uid`, valid for `ttl` seconds.
    pub fn issue(&self, namespace: &str, name: &str, uid: &str, ttl: i64, now: i64) -> String {
        let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = json!({
            "iss": ISSUER,
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
            "aud": ["https://kubernetes.default.svc.cluster.local"],
            "iat": now, "nbf": now, "exp": now + ttl,
            "kubernetes.io": {"namespace": namespace,
                "serviceaccount": {"name": name, "uid": uid}},
        });
        let payload = B64.encode(claims.to_string());
        let signing_input = format!("{header}.{payload}");
        let sig = hmac::sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(sig.as_ref()))
    }

    /// The claims of a token this cluster signed and that has not expired.
    pub fn verify(&self, token: &str, now: i64) -> Option<Value> {
        let mut parts = token.split('.');
        let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let sig = B64.decode(s).ok()?;
        hmac::verify(&self.key, format!("{h}.{p}").as_bytes(), &sig).ok()?;
        let claims: Value = serde_json::from_slice(&B64.decode(p).ok()?).ok()?;
        let exp = claims.get("exp")?.as_i64()?;
        (now < exp).then_some(claims)
    }

    /// The user a token names, if it verifies and its account still exists with the same uid.
    pub fn authenticate(&self, token: &str, cache: &WatchCache) -> Option<User> {
        let claims = self.verify(token, jiff::Timestamp::now().as_second())?;
        let k8s = claims.get("kubernetes.io")?;
        let ns = k8s.get("namespace")?.as_str()?;
        let name = k8s.pointer("/serviceaccount/name")?.as_str()?;
        let uid = k8s.pointer("/serviceaccount/uid")?.as_str()?;
        let sa = cache.get(&format!("/registry/core/serviceaccounts/{ns}/{name}"))?;
        if sa.object.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid) {
            return None;
        }
        let mut user = User::new(
            &format!("system:serviceaccount:{ns}:{name}"),
            &[
                "system:serviceaccounts",
                &format!("system:serviceaccounts:{ns}"),
            ],
        );
        user.uid = uid.to_string();
        Some(user)
    }
}

/// Answers a `TokenRequest` for the account `sa` (its stored JSON).
pub fn token_response(signer: &TokenSigner, sa: &Value, request: &Value) -> ApiResult<Value> {
    let ns = sa
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = sa
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let uid = sa
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    let ttl = request
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    if !(600..=86400 * 365).contains(&ttl) {
        return Err(ApiError::new(
            422,
            "Invalid",
            format!("TokenRequest.authentication.k8s.io \"{name}\" is invalid: spec.expirationSeconds: Invalid value: {ttl}: may not specify a duration less than 10 minutes"),
        ));
    }
    let now = jiff::Timestamp::now();
    let token = signer.issue(ns, name, uid, ttl, now.as_second());
    let expires = jiff::Timestamp::from_second(now.as_second() + ttl)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
        "spec": {"audiences": request.pointer("/spec/audiences").cloned()
                    .unwrap_or(json!(["https://kubernetes.default.svc.cluster.local"])),
                 "expirationSeconds": ttl},
        "status": {"token": token, "expirationTimestamp": expires},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_until_they_expire_and_only_with_the_key() {
        let s = TokenSigner::from_secret(b"k1");
        let t = s.issue("ns", "robot", "uid-1", 600, 1000);
        let claims = s.verify(&t, 1500).unwrap();
        assert_eq!(claims["sub"], "system:serviceaccount:ns:robot");
        assert!(s.verify(&t, 1600).is_none(), "expired");
        assert!(TokenSigner::from_secret(b"k2").verify(&t, 1500).is_none());
        let mut forged: Vec<&str> = t.split('.').collect();
        let other = B64.encode(r#"{"exp":99999999999,"kubernetes.io":{}}"#);
        forged[1] = &other;
        assert!(s.verify(&forged.join("."), 1500).is_none());
        assert!(s.verify("not-a-token", 1500).is_none());
    }
}
