//! CertificateSigningRequests (`certificates.k8s.io/v1`): the request must be one PEM
//! `CERTIFICATE REQUEST` block whose signature verifies, the signer a `domain/path` name, the
//! usages known ones without repeats, and a requested duration at least ten minutes.

use std::collections::HashSet;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;

use super::field::{ErrorList, FieldError, Path};
use super::meta::{validate_object_meta, NameRule};
use super::names;

/// The key usages a request may ask for (Kubernetes' `certificates.KeyUsage` values).
pub const KEY_USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

/// Why a PEM certificate request does not parse, in Kubernetes' words where it has them.
pub fn check_certificate_request(pem: &[u8]) -> Result<(), String> {
    use x509_parser::prelude::FromDer;
    let (rest, block) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|_| "PEM block type must be CERTIFICATE REQUEST".to_string())?;
    if block.label != "CERTIFICATE REQUEST" && block.label != "NEW CERTIFICATE REQUEST" {
        return Err("PEM block type must be CERTIFICATE REQUEST".into());
    }
    if rest.iter().any(|b| !b.is_ascii_whitespace()) {
        return Err("must contain exactly one PEM block".into());
    }
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
            .map_err(|e| format!("the certificate request does not parse: {e}"))?;
    csr.verify_signature()
        .map_err(|_| "the certificate request's signature does not verify".to_string())
}

fn check_signer_name(signer: &str) -> Vec<String> {
    let Some((domain, path)) = signer.split_once('/') else {
        return vec![
            "must be a fully qualified domain and path of the form 'example.com/signer-name'"
                .into(),
        ];
    };
    let mut errs: Vec<String> = names::is_dns1123_subdomain(domain)
        .into_iter()
        .map(|m| format!("domain part {m}"))
        .collect();
    if !domain.contains('.') {
        errs.push("should be a domain with at least two segments separated by dots".into());
    }
    if path.is_empty() || path.split('/').any(str::is_empty) {
        errs.push("path part must be non-empty segments separated by '/'".into());
    } else if path.len() > 253 {
        errs.push(names::max_len_message(253));
    }
    errs
}

pub fn validate_certificate_signing_request(csr: &CertificateSigningRequest) -> ErrorList {
    let mut errs = validate_object_meta(
        &csr.metadata,
        false,
        NameRule::PathSegment,
        &Path::new("metadata"),
    );
    let spec = &csr.spec;
    let spec_path = Path::new("spec");
    let request = &spec.request.0;
    if request.is_empty() {
        errs.push(FieldError::required(&spec_path.child("request"), ""));
    } else if let Err(msg) = check_certificate_request(request) {
        errs.push(FieldError::invalid(
            &spec_path.child("request"),
            "<certificate request>",
            msg,
        ));
    }
    if spec.signer_name.is_empty() {
        errs.push(FieldError::required(&spec_path.child("signerName"), ""));
    } else {
        for msg in check_signer_name(&spec.signer_name) {
            errs.push(FieldError::invalid(
                &spec_path.child("signerName"),
                &spec.signer_name,
                msg,
            ));
        }
        if spec.signer_name == "kubernetes.io/legacy-unknown" {
            errs.push(FieldError::invalid(
                &spec_path.child("signerName"),
                &spec.signer_name,
                "the legacy signerName is not allowed via this API version",
            ));
        }
    }
    let usages = spec.usages.as_deref().unwrap_or_default();
    if usages.is_empty() {
        errs.push(FieldError::required(&spec_path.child("usages"), ""));
    }
    let mut seen = HashSet::new();
    for (i, usage) in usages.iter().enumerate() {
        let p = spec_path.child("usages").index(i);
        if !KEY_USAGES.contains(&usage.as_str()) {
            errs.push(FieldError::not_supported(&p, usage, KEY_USAGES));
        } else if !seen.insert(usage.as_str()) {
            errs.push(FieldError::duplicate(&p, usage));
        }
    }
    if let Some(secs) = spec.expiration_seconds {
        if secs < 600 {
            errs.push(FieldError::invalid(
                &spec_path.child("expirationSeconds"),
                secs,
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::validation::testing::{assert_clean, assert_has, patched, typed};
    use crate::validation::ErrorType;

    /// A certificate request made by openssl for CN=system:node:n1, O=system:nodes.
    const CSR_PEM: &str = "-----BEGIN CERTIFICATE REQUEST-----
MIHrMIGSAgEAMDAxFTATBgNVBAoMDHN5c3RlbTpub2RlczEXMBUGA1UEAwwOc3lz
dGVtOm5vZGU6bjEwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQ/w3RxvfGjDqZX
CCjzZVzYNEPUsIdZ10JBBdQYxrdsRYOgq9jJFGPQLLyOLx7v7bniunVtTEbiPVss
CPliRbCpoAAwCgYIKoZIzj0EAwIDSAAwRQIhAKb0neEsvb73f4IwqCgbgEYJKFZw
1d3gd2YN+6sNCzVHAiB7byT/bBcNJ3cEDWlvhZIIqmqaQlVzHZtzsD0RRJim8A==
-----END CERTIFICATE REQUEST-----
";

    fn csr() -> serde_json::Value {
        use k8s_openapi::ByteString;
        let request = serde_json::to_value(ByteString(CSR_PEM.as_bytes().to_vec())).unwrap();
        json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"name": "node-csr-abc"},
            "spec": {"request": request,
                "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                "usages": ["digital signature", "client auth"]}})
    }

    #[test]
    fn a_well_formed_request_passes() {
        assert_clean(&validate_certificate_signing_request(&typed(csr())));
    }

    #[test]
    fn request_signer_and_usages_are_checked() {
        let bad_pem = serde_json::to_value(k8s_openapi::ByteString(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(),
        ))
        .unwrap();
        let errs =
            validate_certificate_signing_request(&typed(patched(csr(), "/spec/request", bad_pem)));
        assert_has(&errs, ErrorType::Invalid, "spec.request");

        let mut tampered = CSR_PEM.as_bytes().to_vec();
        // One changed byte in the signature: the block parses, the signature does not verify.
        let pos = CSR_PEM.find("HZtz").unwrap();
        tampered[pos + 3] = b'y';
        let v = serde_json::to_value(k8s_openapi::ByteString(tampered)).unwrap();
        let errs = validate_certificate_signing_request(&typed(patched(csr(), "/spec/request", v)));
        assert_has(&errs, ErrorType::Invalid, "spec.request");

        let errs = validate_certificate_signing_request(&typed(patched(
            csr(),
            "/spec/signerName",
            json!(""),
        )));
        assert_has(&errs, ErrorType::Required, "spec.signerName");
        let errs = validate_certificate_signing_request(&typed(patched(
            csr(),
            "/spec/signerName",
            json!("nodomain"),
        )));
        assert_has(&errs, ErrorType::Invalid, "spec.signerName");

        let errs = validate_certificate_signing_request(&typed(patched(
            csr(),
            "/spec/usages",
            json!(["client auth", "flying", "client auth"]),
        )));
        assert_has(&errs, ErrorType::NotSupported, "spec.usages[1]");
        assert_has(&errs, ErrorType::Duplicate, "spec.usages[2]");
        let errs =
            validate_certificate_signing_request(&typed(patched(csr(), "/spec/usages", json!([]))));
        assert_has(&errs, ErrorType::Required, "spec.usages");
        let errs = validate_certificate_signing_request(&typed(patched(
            csr(),
            "/spec/expirationSeconds",
            json!(60),
        )));
        assert_has(&errs, ErrorType::Invalid, "spec.expirationSeconds");
    }
}
