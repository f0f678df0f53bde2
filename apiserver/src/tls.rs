//! The cluster's PKI: a CA generated at bootstrap, the serving certificate, client
//! certificates (CN = user, O = groups), the rustls server configuration (client certificates
//! optional, verified against the CA), and the admin kubeconfig.
//!
//! Files live in `<data-dir>/pki/`: `ca.crt`, `ca.key`, `server.crt`, `server.key`,
//! `admin.crt`, `admin.key`, and `apiserver-kubelet-client.crt` / `.key` (CN
//! `berth-apiserver-kubelet-client`, O `system:masters`), the identity the API server presents
//! to node agents. A second start reuses them. [`Pki::sign_request`] signs certificate
//! requests (CSRs) with the CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pki file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("generating certificate {what}: {source}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("pki {what}: {reason}")]
    Invalid { what: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The cluster CA and the certificates issued from it.
pub struct Pki {
    pub dir: PathBuf,
    pub ca_pem: String,
    ca_key_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    /// The client identity for calls to node agents.
    pub kubelet_client_cert_pem: String,
    pub kubelet_client_key_pem: String,
}

/// The CN node agents accept from the API server.
pub const KUBELET_CLIENT_CN: &str = "berth-apiserver-kubelet-client";

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

fn write(path: &Path, contents: &str, secret: bool) -> Result<()> {
    let err = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    std::fs::write(path, contents).map_err(err)?;
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    Ok(())
}

fn gen(what: &str) -> impl Fn(rcgen::Error) -> Error + '_ {
    move |source| Error::Generate {
        what: what.to_string(),
        source,
    }
}

impl Pki {
    /// Loads the PKI from `<data_dir>/pki`, creating what is missing. `hosts` are the names
    /// and addresses the serving certificate must be valid for.
    pub fn bootstrap(data_dir: &Path, hosts: &[String]) -> Result<Self> {
        let dir = data_dir.join("pki");
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let ca_path = dir.join("ca.crt");
        let ca_key_path = dir.join("ca.key");
        if !ca_path.exists() {
            let key = KeyPair::generate().map_err(gen("ca key"))?;
            let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen("ca"))?;
            params.distinguished_name = dn("berth-ca", &[]);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            params.not_after = rcgen::date_time_ymd(2036, 1, 1);
            let cert = params.self_signed(&key).map_err(gen("ca"))?;
            write(&ca_key_path, &key.serialize_pem(), true)?;
            write(&ca_path, &cert.pem(), false)?;
        }
        let mut pki = Self {
            ca_pem: read(&ca_path)?,
            ca_key_pem: read(&ca_key_path)?,
            dir: dir.clone(),
            server_cert_pem: String::new(),
            server_key_pem: String::new(),
            admin_cert_pem: String::new(),
            admin_key_pem: String::new(),
            kubelet_client_cert_pem: String::new(),
            kubelet_client_key_pem: String::new(),
        };
        let (server_crt, server_key) = (dir.join("server.crt"), dir.join("server.key"));
        if !server_crt.exists() || !covers(&read(&server_crt)?, hosts) {
            let (cert, key) = pki.issue("berth-apiserver", &[], hosts, true)?;
            write(&server_key, &key, true)?;
            write(&server_crt, &cert, false)?;
        }
        pki.server_cert_pem = read(&server_crt)?;
        pki.server_key_pem = read(&server_key)?;
        let (admin_crt, admin_key) = (dir.join("admin.crt"), dir.join("admin.key"));
        if !admin_crt.exists() {
            let (cert, key) = pki.issue("admin", &["system:masters"], &[], false)?;
            write(&admin_key, &key, true)?;
            write(&admin_crt, &cert, false)?;
        }
        pki.admin_cert_pem = read(&admin_crt)?;
        pki.admin_key_pem = read(&admin_key)?;
        let (kc_crt, kc_key) = (
            dir.join("apiserver-kubelet-client.crt"),
            dir.join("apiserver-kubelet-client.key"),
        );
        if !kc_crt.exists() {
            let (cert, key) = pki.issue(KUBELET_CLIENT_CN, &["system:masters"], &[], false)?;
            write(&kc_key, &key, true)?;
            write(&kc_crt, &cert, false)?;
        }
        pki.kubelet_client_cert_pem = read(&kc_crt)?;
        pki.kubelet_client_key_pem = read(&kc_key)?;
        Ok(pki)
    }

    /// Signs a PEM certificate request with the CA: the subject and subject alternative
    /// names come from the request, the key usages from `usages` (Kubernetes' names, e.g.
    /// `client auth`), and the certificate is valid from five minutes ago (for clock skew,
    /// as Kubernetes' signer backdates) for `validity`. Returns the certificate in PEM.
    pub fn sign_request(
        &self,
        request_pem: &str,
        usages: &[String],
        validity: std::time::Duration,
    ) -> Result<String> {
        let what = "certificate request";
        let mut csr =
            rcgen::CertificateSigningRequestParams::from_pem(request_pem).map_err(gen(what))?;
        let p = &mut csr.params;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = Vec::new();
        p.extended_key_usages = Vec::new();
        for u in usages {
            match u.as_str() {
                "digital signature" => p.key_usages.push(KeyUsagePurpose::DigitalSignature),
                "key encipherment" => p.key_usages.push(KeyUsagePurpose::KeyEncipherment),
                "content commitment" => p.key_usages.push(KeyUsagePurpose::ContentCommitment),
                "key agreement" => p.key_usages.push(KeyUsagePurpose::KeyAgreement),
                "data encipherment" => p.key_usages.push(KeyUsagePurpose::DataEncipherment),
                "server auth" => p
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::ServerAuth),
                "client auth" => p
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::ClientAuth),
                other => {
                    return Err(invalid(what, format!("usage {other:?} is not supported")));
                }
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        p.not_before = epoch + now.saturating_sub(std::time::Duration::from_secs(300));
        p.not_after = epoch + now + validity;
        let mut serial = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut serial);
        serial[0] &= 0x7f;
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        p.use_authority_key_identifier_extension = true;
        let ca_key = KeyPair::from_pem(&self.ca_key_pem).map_err(gen("ca key"))?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_pem, ca_key).map_err(gen("ca"))?;
        Ok(csr.signed_by(&issuer).map_err(gen(what))?.pem())
    }

    /// A rustls client configuration trusting only the cluster CA and presenting the API
    /// server's kubelet-client identity: what every call to a node agent uses.
    pub fn kubelet_client_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in certs(&self.ca_pem, "ca.crt")? {
            roots.add(c).map_err(|e| invalid("ca.crt", e))?;
        }
        let key = private_key(&self.kubelet_client_key_pem, "apiserver-kubelet-client.key")?;
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("tls versions", e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(
                certs(
                    &self.kubelet_client_cert_pem,
                    "apiserver-kubelet-client.crt",
                )?,
                key,
            )
            .map_err(|e| invalid("apiserver-kubelet-client.crt", e))?;
        // Upgrades (exec, attach, port-forward) exist only in HTTP/1.1.
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// Issues a certificate signed by the CA: a client certificate for `cn` in `groups`, or
    /// a serving certificate for `hosts`. Returns (certificate, key) in PEM.
    pub fn issue(
        &self,
        cn: &str,
        groups: &[&str],
        hosts: &[String],
        server: bool,
    ) -> Result<(String, String)> {
        let ca_key = KeyPair::from_pem(&self.ca_key_pem).map_err(gen("ca key"))?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_pem, ca_key).map_err(gen("ca"))?;
        let key = KeyPair::generate().map_err(gen(cn))?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen(cn))?;
        params.distinguished_name = dn(cn, groups);
        params.not_after = rcgen::date_time_ymd(2035, 1, 1);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if server {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            for h in hosts {
                params.subject_alt_names.push(match h.parse() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => {
                        SanType::DnsName(h.clone().try_into().map_err(|e: rcgen::Error| gen(h)(e))?)
                    }
                });
            }
        } else {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        let cert = params.signed_by(&key, &issuer).map_err(gen(cn))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// The rustls configuration: our serving certificate; client certificates are optional
    /// and, when sent, must chain to the CA.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in certs(&self.ca_pem, "ca.crt")? {
            roots.add(c).map_err(|e| invalid("ca.crt", e))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| invalid("client verifier", e))?;
        let key = private_key(&self.server_key_pem, "server.key")?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("tls versions", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&self.server_cert_pem, "server.crt")?, key)
            .map_err(|e| invalid("server.crt", e))?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// A kubeconfig for `user` authenticating with a bearer token.
    pub fn token_kubeconfig(&self, server: &str, user: &str, token: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: berth\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\ncontexts:\n- name: {user}@berth\n  context:\n    cluster: berth\n    user: {user}\ncurrent-context: {user}@berth\nusers:\n- name: {user}\n  user:\n    token: {token}\npreferences: {{}}\n",
            ca = b64(&self.ca_pem),
        )
    }

    /// A kubeconfig for `user` with an embedded client certificate.
    pub fn kubeconfig(&self, server: &str, user: &str, cert_pem: &str, key_pem: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: berth\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\ncontexts:\n- name: {user}@berth\n  context:\n    cluster: berth\n    user: {user}\n    namespace: default\ncurrent-context: {user}@berth\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\npreferences: {{}}\n",
            ca = b64(&self.ca_pem),
            cert = b64(cert_pem),
            key = b64(key_pem),
        )
    }
}

fn dn(cn: &str, orgs: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    dn.push(DnType::CommonName, cn);
    dn
}

fn invalid(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Invalid {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

/// Whether a serving certificate already names every host.
fn covers(cert_pem: &str, hosts: &[String]) -> bool {
    let Ok(ders) = certs(cert_pem, "server.crt") else {
        return false;
    };
    let Some(der) = ders.first() else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => d.to_string(),
            x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                4 => std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string(),
                16 => {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(ip);
                    std::net::Ipv6Addr::from(b).to_string()
                }
                _ => String::new(),
            },
            _ => String::new(),
        })
        .collect();
    hosts.iter().all(|h| names.contains(h))
}

pub fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| invalid(what, e))
}

pub fn private_key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| invalid(what, e))?
        .ok_or_else(|| invalid(what, "no private key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_is_stable_and_issues_verifiable_identities() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let a = Pki::bootstrap(dir.path(), &hosts).unwrap();
        let b = Pki::bootstrap(dir.path(), &hosts).unwrap();
        assert_eq!(a.ca_pem, b.ca_pem);
        assert_eq!(a.admin_cert_pem, b.admin_cert_pem);
        assert!(a.server_config().is_ok());
        let der = &certs(&a.admin_cert_pem, "admin").unwrap()[0];
        let user = crate::auth::user_from_cert(der).unwrap();
        assert_eq!(user.name, "admin");
        assert!(user.in_group("system:masters"));
        // A new host name reissues the serving certificate, the CA stays.
        let more = vec!["localhost".into(), "127.0.0.1".into(), "10.0.0.9".into()];
        let c = Pki::bootstrap(dir.path(), &more).unwrap();
        assert_eq!(a.ca_pem, c.ca_pem);
        assert_ne!(a.server_cert_pem, c.server_cert_pem);
        let der = &certs(&a.kubelet_client_cert_pem, "kc").unwrap()[0];
        let user = crate::auth::user_from_cert(der).unwrap();
        assert_eq!(user.name, KUBELET_CLIENT_CN);
        assert_eq!(a.kubelet_client_cert_pem, c.kubelet_client_cert_pem);
        assert!(a.kubelet_client_config().is_ok());
    }

    #[test]
    fn requests_are_signed_with_the_requested_usages() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::bootstrap(dir.path(), &["localhost".to_string()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["n1.example".to_string()]).unwrap();
        params.distinguished_name = dn("system:node:n1", &["system:nodes"]);
        let request = params.serialize_request(&key).unwrap().pem().unwrap();
        let usages = vec!["digital signature".to_string(), "server auth".to_string()];
        let day = std::time::Duration::from_secs(86400);
        let pem = pki.sign_request(&request, &usages, day).unwrap();
        let der = &certs(&pem, "signed").unwrap()[0];
        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        let user = crate::auth::user_from_cert(der).unwrap();
        assert_eq!(user.name, "system:node:n1");
        assert!(user.in_group("system:nodes"));
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        assert!(cert.key_usage().unwrap().unwrap().value.digital_signature());
        let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(life, 86400 + 300);
        let ca = &certs(&pki.ca_pem, "ca").unwrap()[0];
        let (_, ca) = x509_parser::parse_x509_certificate(ca).unwrap();
        cert.verify_signature(Some(ca.public_key())).unwrap();
        let refused = pki.sign_request(&request, &["cert sign".to_string()], day);
        assert!(refused.is_err());
    }
}
