//! Joining a cluster, as kubelet's TLS bootstrap does. With only a bootstrap kubeconfig (a
//! token), the agent makes a key, asks for a client certificate for `system:node:<name>`
//! with a CertificateSigningRequest (signer `kubernetes.io/kube-apiserver-client-kubelet`),
//! waits for the cluster to sign it, and writes its own kubeconfig. Then, as the node, it
//! asks for a serving certificate for its address (`kubernetes.io/kubelet-serving`) for its
//! HTTPS endpoint. Certificates and keys live in `DATA_DIR/pki/`; a later start reuses them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine;
use futures::StreamExt;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::runtime::{watcher, WatchStreamExt};

pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// The cluster as a kubeconfig names it.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    pub server: String,
    pub ca_pem: String,
}

/// The server and CA of the current context of a kubeconfig.
pub fn cluster_of(path: &Path) -> anyhow::Result<ClusterInfo> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let ctx_name = kc.current_context.clone().unwrap_or_default();
    let cluster_name = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .or_else(|| kc.clusters.first().map(|c| c.name.clone()))
        .with_context(|| format!("{}: no cluster", path.display()))?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_ref())
        .with_context(|| format!("{}: cluster {cluster_name:?} not found", path.display()))?;
    let server = cluster
        .server
        .clone()
        .with_context(|| format!("{}: cluster {cluster_name:?} has no server", path.display()))?;
    let ca_pem = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(d), _) => String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(d)
                .with_context(|| format!("{}: certificate-authority-data", path.display()))?,
        )?,
        (None, Some(f)) => std::fs::read_to_string(f).with_context(|| format!("reading {f}"))?,
        (None, None) => bail!(
            "{}: cluster {cluster_name:?} has no certificate authority",
            path.display()
        ),
    };
    Ok(ClusterInfo { server, ca_pem })
}

/// A kubeconfig with an embedded client certificate.
pub fn kubeconfig_text(cluster: &ClusterInfo, user: &str, cert_pem: &str, key_pem: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: berth\n  cluster:\n    server: {}\n    certificate-authority-data: {}\ncontexts:\n- name: {user}@berth\n  context:\n    cluster: berth\n    user: {user}\ncurrent-context: {user}@berth\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        cluster.server,
        b64(&cluster.ca_pem),
        b64(cert_pem),
        b64(key_pem)
    )
}

/// A bootstrap kubeconfig: `token` as the credentials (`berth agent --server --token`).
pub fn token_kubeconfig_text(cluster: &ClusterInfo, token: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: berth\n  cluster:\n    server: {}\n    certificate-authority-data: {}\ncontexts:\n- name: bootstrap@berth\n  context:\n    cluster: berth\n    user: bootstrap\ncurrent-context: bootstrap@berth\nusers:\n- name: bootstrap\n  user:\n    token: {token}\n",
        cluster.server,
        b64(&cluster.ca_pem),
    )
}

/// Writes `path` readable by root only, atomically.
pub fn write_private(path: &Path, data: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A key and a PEM CSR for the node's identity, with `sans` (IPs or DNS names) if any.
fn request(node: &str, sans: &[String]) -> anyhow::Result<(String, String)> {
    let key = rcgen::KeyPair::generate().context("generating a key")?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).context("csr")?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "system:nodes");
    dn.push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    params.distinguished_name = dn;
    for s in sans {
        params
            .subject_alt_names
            .push(match s.parse::<std::net::IpAddr>() {
                Ok(ip) => rcgen::SanType::IpAddress(ip),
                Err(_) => rcgen::SanType::DnsName(s.clone().try_into().context("a DNS name")?),
            });
    }
    let csr = params
        .serialize_request(&key)
        .context("signing the request")?;
    Ok((
        csr.pem().context("encoding the request")?,
        key.serialize_pem(),
    ))
}

/// Create a CSR and wait (up to `timeout`) for its certificate.
async fn sign(
    client: &kube::Client,
    node: &str,
    signer: &str,
    usages: &[&str],
    sans: &[String],
    timeout: Duration,
) -> anyhow::Result<(String, String)> {
    let (csr_pem, key_pem) = request(node, sans)?;
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let kind = if signer == CLIENT_SIGNER {
        "client"
    } else {
        "serving"
    };
    let name = format!(
        "node-{kind}-{node}-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
    );
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(csr_pem.into_bytes()),
            signer_name: signer.into(),
            usages: Some(usages.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        status: None,
    };
    api.create(&PostParams::default(), &csr)
        .await
        .with_context(|| format!("creating CertificateSigningRequest {name}"))?;
    tracing::info!(csr = %name, %signer, "waiting for the certificate to be signed");
    let stream = watcher(
        api.clone(),
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .applied_objects()
    .default_backoff();
    futures::pin_mut!(stream);
    let wait = async {
        while let Some(ev) = stream.next().await {
            let Ok(csr) = ev else { continue };
            let status = csr.status.unwrap_or_default();
            for c in status.conditions.iter().flatten() {
                if c.type_ == "Denied" || c.type_ == "Failed" {
                    bail!(
                        "CertificateSigningRequest {name} was {}: {} {}",
                        c.type_.to_lowercase(),
                        c.reason.clone().unwrap_or_default(),
                        c.message.clone().unwrap_or_default()
                    );
                }
            }
            if let Some(cert) = status.certificate {
                return Ok(String::from_utf8(cert.0)?);
            }
        }
        bail!("the watch of CertificateSigningRequest {name} ended")
    };
    let cert = tokio::time::timeout(timeout, wait)
        .await
        .with_context(|| format!("CertificateSigningRequest {name} was not signed within {timeout:?} (is it waiting for approval? `kubectl certificate approve {name}`)"))??;
    Ok((cert, key_pem))
}

/// Whether a PEM certificate is valid for at least another day.
fn fresh(cert_pem: &str) -> bool {
    let Ok(ders) = rustls_pemfile::certs(&mut cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()
    else {
        return false;
    };
    let Some(der) = ders.first() else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    let now = jiff::Timestamp::now().as_second();
    cert.validity().not_after.timestamp() > now + 86400
}

/// Make sure `kubeconfig` exists, bootstrapping it from `bootstrap` if needed.
pub async fn ensure_kubeconfig(
    kubeconfig: &Path,
    bootstrap: Option<&Path>,
    pki: &Path,
    node: &str,
) -> anyhow::Result<()> {
    if kubeconfig.exists() {
        return Ok(());
    }
    let Some(bootstrap) = bootstrap else {
        bail!(
            "no kubeconfig at {} and no --bootstrap-kubeconfig to get one with",
            kubeconfig.display()
        );
    };
    let cluster = cluster_of(bootstrap)?;
    let (client, _) = crate::cli::client_from(bootstrap).await?;
    let (cert, key) = sign(
        &client,
        node,
        CLIENT_SIGNER,
        &["digital signature", "key encipherment", "client auth"],
        &[],
        Duration::from_secs(120),
    )
    .await?;
    write_private(&pki.join("kubelet-client.key"), &key)?;
    write_private(&pki.join("kubelet-client.crt"), &cert)?;
    write_private(
        kubeconfig,
        &kubeconfig_text(&cluster, &format!("system:node:{node}"), &cert, &key),
    )?;
    tracing::info!(node, kubeconfig = %kubeconfig.display(), "joined the cluster");
    Ok(())
}

/// The serving certificate and key for the node's endpoint, from `pki` or newly signed.
pub async fn serving_cert(
    client: &kube::Client,
    pki: &Path,
    node: &str,
    sans: &[String],
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (crt, key) = (
        pki.join("kubelet-serving.crt"),
        pki.join("kubelet-serving.key"),
    );
    let names = pki.join("kubelet-serving.names");
    let wanted = sans.join(",");
    let reuse = std::fs::read_to_string(&crt).is_ok_and(|c| fresh(&c))
        && key.exists()
        && std::fs::read_to_string(&names).is_ok_and(|n| n == wanted);
    if !reuse {
        let (c, k) = sign(
            client,
            node,
            SERVING_SIGNER,
            &["digital signature", "key encipherment", "server auth"],
            sans,
            Duration::from_secs(120),
        )
        .await?;
        write_private(&key, &k)?;
        write_private(&crt, &c)?;
        write_private(&names, &wanted)?;
    }
    Ok((crt, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_the_node_and_its_addresses() {
        let (pem, key) = request("n1", &["10.0.0.1".into(), "n1.local".into()]).unwrap();
        assert!(key.contains("PRIVATE KEY"));
        use x509_parser::prelude::FromDer;
        let der = rustls_pemfile::csr(&mut pem.as_bytes()).unwrap().unwrap();
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
                .unwrap();
        let subject = csr.certification_request_info.subject.to_string();
        assert!(subject.contains("CN=system:node:n1"), "{subject}");
        assert!(subject.contains("O=system:nodes"), "{subject}");
    }
}
