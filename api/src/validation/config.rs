//! ConfigMaps, Secrets and ServiceAccounts.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};

use super::field::{ErrorList, FieldError, Path};
use super::meta::{validate_object_meta, NameRule};
use super::names;

/// The most a ConfigMap's or Secret's data may hold, keys and values together.
pub const MAX_DATA_SIZE: usize = 1024 * 1024;

fn validate_keys<'a>(keys: impl Iterator<Item = &'a String>, path: &Path, errs: &mut ErrorList) {
    for key in keys {
        for msg in names::is_config_map_key(key) {
            errs.push(FieldError::invalid(&path.key(key), key, msg));
        }
    }
}

pub fn validate_config_map(cm: &ConfigMap) -> ErrorList {
    let mut errs = validate_object_meta(
        &cm.metadata,
        true,
        NameRule::Dns1123Subdomain,
        &Path::new("metadata"),
    );
    let data = cm.data.as_ref();
    let binary = cm.binary_data.as_ref();
    validate_keys(
        data.into_iter().flat_map(BTreeMap::keys),
        &Path::new("data"),
        &mut errs,
    );
    validate_keys(
        binary.into_iter().flat_map(BTreeMap::keys),
        &Path::new("binaryData"),
        &mut errs,
    );
    let mut total = 0;
    for (key, value) in data.into_iter().flatten() {
        total += key.len() + value.len();
    }
    for (key, value) in binary.into_iter().flatten() {
        total += key.len() + value.0.len();
        if data.is_some_and(|d| d.contains_key(key)) {
            errs.push(FieldError::duplicate(&Path::new("data").key(key), key));
        }
    }
    if total > MAX_DATA_SIZE {
        errs.push(FieldError::too_long(&Path::new("data"), MAX_DATA_SIZE));
    }
    errs
}

/// Secret types with required keys, and the keys they require.
const SECRET_TYPE_KEYS: &[(&str, &[&str])] = &[
    ("kubernetes.io/dockercfg", &[".dockercfg"]),
    ("kubernetes.io/dockerconfigjson", &[".dockerconfigjson"]),
    ("kubernetes.io/ssh-auth", &["ssh-privatekey"]),
    ("kubernetes.io/tls", &["tls.crt", "tls.key"]),
];

/// Secrets: key names, total size, and the keys or annotations their type requires. `stringData`
/// counts as data (defaulting merges it in).
pub fn validate_secret(secret: &Secret) -> ErrorList {
    let mut errs = validate_object_meta(
        &secret.metadata,
        true,
        NameRule::Dns1123Subdomain,
        &Path::new("metadata"),
    );
    let data = secret.data.as_ref();
    let string_data = secret.string_data.as_ref();
    validate_keys(
        data.into_iter().flat_map(BTreeMap::keys),
        &Path::new("data"),
        &mut errs,
    );
    validate_keys(
        string_data.into_iter().flat_map(BTreeMap::keys),
        &Path::new("stringData"),
        &mut errs,
    );
    let mut total = 0;
    for (key, value) in data.into_iter().flatten() {
        total += key.len() + value.0.len();
    }
    for (key, value) in string_data.into_iter().flatten() {
        total += key.len() + value.len();
    }
    if total > MAX_DATA_SIZE {
        errs.push(FieldError::too_long(&Path::new("data"), MAX_DATA_SIZE));
    }

    let has_key = |k: &str| {
        data.is_some_and(|d| d.contains_key(k)) || string_data.is_some_and(|d| d.contains_key(k))
    };
    let type_ = secret.type_.as_deref().unwrap_or("Opaque");
    if let Some((_, keys)) = SECRET_TYPE_KEYS.iter().find(|(t, _)| *t == type_) {
        for key in *keys {
            if !has_key(key) {
                errs.push(FieldError::required(&Path::new("data").key(key), ""));
            }
        }
    }
    match type_ {
        "kubernetes.io/service-account-token" => {
            let annotation = "kubernetes.io/service-account.name";
            let named = secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(annotation))
                .is_some_and(|v| !v.is_empty());
            if !named {
                errs.push(FieldError::required(
                    &Path::new("metadata").child("annotations").key(annotation),
                    "",
                ));
            }
        }
        "kubernetes.io/basic-auth" if !has_key("username") && !has_key("password") => {
            errs.push(FieldError::required(
                &Path::new("data").key("username"),
                "either username or password or both must be provided",
            ));
        }
        "" => errs.push(FieldError::required(&Path::new("type"), "")),
        _ => {}
    }
    errs
}

pub fn validate_service_account(sa: &ServiceAccount) -> ErrorList {
    let mut errs = validate_object_meta(
        &sa.metadata,
        true,
        NameRule::Dns1123Subdomain,
        &Path::new("metadata"),
    );
    for (i, secret) in sa.secrets.iter().flatten().enumerate() {
        if let Some(name) = secret.name.as_deref().filter(|n| !n.is_empty()) {
            for msg in names::is_dns1123_subdomain(name) {
                errs.push(FieldError::invalid(
                    &Path::new("secrets").index(i).child("name"),
                    name,
                    msg,
                ));
            }
        }
    }
    for (i, secret) in sa.image_pull_secrets.iter().flatten().enumerate() {
        if !secret.name.is_empty() {
            for msg in names::is_dns1123_subdomain(&secret.name) {
                errs.push(FieldError::invalid(
                    &Path::new("imagePullSecrets").index(i).child("name"),
                    &secret.name,
                    msg,
                ));
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::testing::{assert_clean, assert_has, patched, typed};
    use crate::validation::ErrorType::*;
    use serde_json::{json, Value};

    fn config_map() -> Value {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "app-config", "namespace": "default"},
            "data": {"app.properties": "a=b", "LOG_LEVEL": "debug"},
            "binaryData": {"logo.png": "iVBORw0KGgo="}
        })
    }

    #[test]
    fn config_map_rules() {
        let errs = |p: &str, v: Value| validate_config_map(&typed(patched(config_map(), p, v)));
        assert_clean(&validate_config_map(&typed(config_map())));
        assert_has(&errs("/data/bad key", json!("x")), Invalid, "data[bad key]");
        assert_has(&errs("/data/..", json!("x")), Invalid, "data[..]");
        assert_has(
            &errs("/binaryData/a~1b", json!("eA==")),
            Invalid,
            "binaryData[a/b]",
        );
        assert_has(
            &errs("/data/logo.png", json!("x")),
            Duplicate,
            "data[logo.png]",
        );
        let big = "x".repeat(MAX_DATA_SIZE);
        assert_has(&errs("/data/big", json!(big)), TooLong, "data");
        assert_has(
            &errs("/metadata/name", json!("App")),
            Invalid,
            "metadata.name",
        );
    }

    fn secret() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "creds", "namespace": "default"},
            "type": "Opaque",
            "data": {"password": "aHVudGVyMg=="},
            "stringData": {"username": "admin"}
        })
    }

    #[test]
    fn secret_rules() {
        let errs = |p: &str, v: Value| validate_secret(&typed(patched(secret(), p, v)));
        assert_clean(&validate_secret(&typed(secret())));
        assert_has(
            &errs("/data/bad key", json!("eA==")),
            Invalid,
            "data[bad key]",
        );
        assert_has(
            &errs("/stringData/a~1b", json!("x")),
            Invalid,
            "stringData[a/b]",
        );
        assert_has(
            &errs("/stringData/big", json!("x".repeat(MAX_DATA_SIZE))),
            TooLong,
            "data",
        );
        assert_has(&errs("/type", json!("")), Required, "type");
        assert_clean(&errs("/type", json!("example.com/custom")));
    }

    #[test]
    fn secret_types_require_their_keys() {
        let errs = |p: &str, v: Value| validate_secret(&typed(patched(secret(), p, v)));
        let tls = errs("/type", json!("kubernetes.io/tls"));
        assert_has(&tls, Required, "data[tls.crt]");
        assert_has(&tls, Required, "data[tls.key]");
        let mut good_tls = patched(secret(), "/type", json!("kubernetes.io/tls"));
        good_tls = patched(
            good_tls,
            "/data",
            json!({"tls.crt": "eA==", "tls.key": "eA=="}),
        );
        assert_clean(&validate_secret(&typed(good_tls)));
        assert_has(
            &errs("/type", json!("kubernetes.io/dockerconfigjson")),
            Required,
            "data[.dockerconfigjson]",
        );
        assert_has(
            &errs("/type", json!("kubernetes.io/ssh-auth")),
            Required,
            "data[ssh-privatekey]",
        );
        assert_clean(&errs("/type", json!("kubernetes.io/basic-auth")));
        let mut basic = patched(secret(), "/type", json!("kubernetes.io/basic-auth"));
        basic = patched(basic, "/data", json!({}));
        basic = patched(basic, "/stringData", json!({}));
        assert_has(&validate_secret(&typed(basic)), Required, "data[username]");
        let sa = errs("/type", json!("kubernetes.io/service-account-token"));
        assert_has(
            &sa,
            Required,
            "metadata.annotations[kubernetes.io/service-account.name]",
        );
        let mut good_sa = patched(
            secret(),
            "/type",
            json!("kubernetes.io/service-account-token"),
        );
        good_sa = patched(
            good_sa,
            "/metadata/annotations",
            json!({"kubernetes.io/service-account.name": "default"}),
        );
        assert_clean(&validate_secret(&typed(good_sa)));
    }

    #[test]
    fn service_account_rules() {
        let sa = json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "builder", "namespace": "ci"},
            "secrets": [{"name": "builder-token"}],
            "imagePullSecrets": [{"name": "registry"}]
        });
        assert_clean(&validate_service_account(&typed(sa.clone())));
        let errs =
            validate_service_account(&typed(patched(sa.clone(), "/secrets/0/name", json!("Bad"))));
        assert_has(&errs, Invalid, "secrets[0].name");
        let errs = validate_service_account(&typed(patched(
            sa.clone(),
            "/imagePullSecrets/0/name",
            json!("a_b"),
        )));
        assert_has(&errs, Invalid, "imagePullSecrets[0].name");
        let errs =
            validate_service_account(&typed(patched(sa, "/metadata/namespace", Value::Null)));
        assert_has(&errs, Required, "metadata.namespace");
    }
}
