//! The cluster's PKI: a CA generated at bootstrap, the serving certificate, client
//! certificates (CN = user, O = groups), the rustls server configuration (client certificates
//! optional, verified against the CA), and the admin kubeconfig.
//!
//! Files live in `<data-dir>/pki/`: `ca.crt`, `ca.key`, `server.crt`, `server.key`,
//! `admin.crt`, `admin.key`. A second start reuses them.

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
}

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
        Ok(pki)
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
    }
}
