//! [`RegistryConfig`]: per-host credentials and TLS settings, and mirrors, for pulling.
//!
//! Read from a YAML (or JSON) file shaped like k3s's `registries.yaml`:
//!
//! ```yaml
//! mirrors:
//!   docker.io:                      # a registry as references name it, or "*" for any
//!     endpoint:                     # tried in order, then the registry itself
//!       - "https://mirror.example.com:5000"
//! configs:
//!   "registry.example.com:5000":    # a host[:port] that is pulled from (registry or mirror)
//!     auth:
//!       username: alice
//!       password: s3cret
//!     tls:
//!       ca_file: /etc/berth/registry-ca.pem   # added to the system's roots
//!       insecure_skip_verify: false           # TLS, but any certificate is accepted
//!   "127.0.0.1:5000":
//!     insecure: true                # plain HTTP (Berth's addition to the k3s shape)
//! ```
//!
//! Unknown fields are errors, so a typo, or a k3s feature Berth does not implement
//! (`rewrite`, client certificates, `identity_token`), is reported rather than silently
//! ignored. Relative `ca_file` paths are relative to the file's directory.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::image::reference::valid_domain;

/// Errors reading a registries file; each names the file and, where it can, the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("registries file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("registries file {path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("registries file {path}: {field}: {reason}")]
    Invalid {
        path: PathBuf,
        field: String,
        reason: String,
    },
}

/// How to reach registries: mirrors to try first, and per-host credentials and TLS.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// By registry (`docker.io`, `host:port`, or `*` for registries without an entry of
    /// their own): endpoints tried in order before the registry itself.
    pub mirrors: BTreeMap<String, Vec<Endpoint>>,
    /// By `host[:port]` of a registry or mirror endpoint.
    pub hosts: BTreeMap<String, HostConfig>,
    pub timeouts: Timeouts,
}

/// Settings for one registry host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// Sent as Basic auth when the registry asks for it, and to its token service.
    pub credentials: Option<Credentials>,
    /// Speak plain HTTP to this host (containerd's meaning of "insecure"). Plain HTTP is
    /// never tried on its own: a host is either HTTPS or, when set here, HTTP.
    pub insecure: bool,
    /// PEM file of CA certificates trusted for this host, on top of the system's.
    pub ca_file: Option<PathBuf>,
    /// TLS without verifying the server's certificate (k3s's `insecure_skip_verify`).
    pub insecure_skip_verify: bool,
}

/// A username and password; the password is not shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Time limits for every request. Blob downloads have no total limit, only the idle one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Resolving the host and establishing the connection (TLS handshake included).
    pub connect: Duration,
    /// From sending a request to the end of the response's headers.
    pub response: Duration,
    /// The longest wait for any one read of a response body.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(30),
            response: Duration::from_secs(60),
            idle: Duration::from_secs(60),
        }
    }
}

/// Where a registry (or a mirror of one) is served: `https://host[:port][/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]`.
    pub host: String,
    /// Path before `/v2/`, empty or starting with `/` (some mirrors serve under a prefix).
    pub prefix: String,
}

impl Endpoint {
    /// Parse `http://host[:port][/prefix]` or `https://…`; a trailing `/v2` is dropped, as
    /// k3s and containerd drop it.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or("expected http://host[:port] or https://host[:port]")?;
        if scheme != "http" && scheme != "https" {
            return Err(format!("scheme {scheme:?} is not http or https"));
        }
        let (host, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if !valid_domain(host) {
            return Err(format!("invalid host {host:?}"));
        }
        if path.contains(['?', '#']) {
            return Err("a query or fragment is not allowed".into());
        }
        let prefix = path.trim_end_matches('/');
        let prefix = prefix.strip_suffix("/v2").unwrap_or(prefix);
        Ok(Endpoint {
            scheme: scheme.to_string(),
            host: host.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// The registry's own endpoint: HTTPS unless `insecure`; Docker Hub is served from
    /// `registry-1.docker.io`.
    pub(crate) fn default_for(registry: &str, insecure: bool) -> Endpoint {
        let host = if registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        };
        Endpoint {
            scheme: if insecure { "http" } else { "https" }.to_string(),
            host: host.to_string(),
            prefix: String::new(),
        }
    }

    /// `scheme://host/prefix/v2/`.
    pub(crate) fn v2(&self) -> String {
        format!("{}://{}{}/v2/", self.scheme, self.host, self.prefix)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.host, self.prefix)
    }
}

impl RegistryConfig {
    /// Read a registries file (see the module docs for its shape). The CA files it names
    /// are read now, so a missing or empty one is reported here, naming the field.
    pub fn load(path: &Path) -> Result<RegistryConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parse the text of a registries file; `path` is named in errors and relative
    /// `ca_file`s are resolved against its directory.
    pub fn parse(text: &str, path: &Path) -> Result<RegistryConfig, ConfigError> {
        let file: FileShape = if text.trim().is_empty() {
            FileShape::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })?
        };
        let invalid = |field: String, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            reason,
        };
        let mut config = RegistryConfig::default();
        for (registry, mirror) in file.mirrors {
            if registry != "*" && !valid_domain(&registry) {
                return Err(invalid(
                    format!("mirrors.{registry:?}"),
                    "expected a registry host[:port] or \"*\"".into(),
                ));
            }
            let endpoints = mirror
                .endpoint
                .iter()
                .enumerate()
                .map(|(i, url)| {
                    Endpoint::parse(url)
                        .map_err(|r| invalid(format!("mirrors.{registry:?}.endpoint[{i}]"), r))
                })
                .collect::<Result<Vec<_>, _>>()?;
            config.mirrors.insert(registry, endpoints);
        }
        let base = path.parent().unwrap_or(Path::new("/"));
        for (host, c) in file.configs {
            if !valid_domain(&host) {
                return Err(invalid(
                    format!("configs.{host:?}"),
                    "expected a host[:port] (no scheme or path)".into(),
                ));
            }
            let credentials = match c.auth {
                Some(a) if a.username.is_empty() => {
                    return Err(invalid(
                        format!("configs.{host:?}.auth.username"),
                        "must not be empty".into(),
                    ))
                }
                Some(a) => Some(Credentials {
                    username: a.username,
                    password: a.password,
                }),
                None => None,
            };
            let tls = c.tls.unwrap_or_default();
            let ca_file = tls.ca_file.map(|f| base.join(f));
            if let Some(f) = &ca_file {
                let field = format!("configs.{host:?}.tls.ca_file");
                let pem = std::fs::read(f)
                    .map_err(|e| invalid(field.clone(), format!("{}: {e}", f.display())))?;
                let n = count_certificates(&pem)
                    .map_err(|e| invalid(field.clone(), format!("{}: {e}", f.display())))?;
                if n == 0 {
                    return Err(invalid(
                        field,
                        format!("{}: no PEM certificate in it", f.display()),
                    ));
                }
            }
            config.hosts.insert(
                host,
                HostConfig {
                    credentials,
                    insecure: c.insecure,
                    ca_file,
                    insecure_skip_verify: tls.insecure_skip_verify,
                },
            );
        }
        Ok(config)
    }

    /// Settings for `host` (an endpoint's `host[:port]`), if any.
    pub fn host(&self, host: &str) -> Option<&HostConfig> {
        self.hosts.get(host)
    }

    /// The endpoints to pull `registry`'s images from, in order: its mirrors (or the `*`
    /// mirrors when it has no entry), then the registry itself.
    pub(crate) fn endpoints(&self, registry: &str) -> Vec<Endpoint> {
        let mut out = self
            .mirrors
            .get(registry)
            .or_else(|| self.mirrors.get("*"))
            .cloned()
            .unwrap_or_default();
        let insecure = self.host(registry).is_some_and(|h| h.insecure);
        let own = Endpoint::default_for(registry, insecure);
        if !out.contains(&own) {
            out.push(own);
        }
        out
    }

    /// The settings for an endpoint: by its host, else (for the registry's own endpoint,
    /// as `docker.io` is for `registry-1.docker.io`) by the registry's name.
    pub(crate) fn for_endpoint(&self, registry: &str, endpoint: &Endpoint) -> HostConfig {
        self.host(&endpoint.host)
            .or_else(|| {
                (Endpoint::default_for(registry, endpoint.scheme == "http").host == endpoint.host)
                    .then(|| self.host(registry))
                    .flatten()
            })
            .cloned()
            .unwrap_or_default()
    }
}

/// How many certificates a PEM file holds; an error for malformed PEM.
pub(crate) fn count_certificates(pem: &[u8]) -> Result<usize, String> {
    let mut n = 0;
    for item in ureq::tls::parse_pem(pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(_)) => n += 1,
            Ok(_) => {}
            Err(e) => return Err(format!("invalid PEM: {e}")),
        }
    }
    Ok(n)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    #[serde(default)]
    mirrors: BTreeMap<String, MirrorShape>,
    #[serde(default)]
    configs: BTreeMap<String, HostShape>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MirrorShape {
    #[serde(default)]
    endpoint: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostShape {
    #[serde(default)]
    auth: Option<AuthShape>,
    #[serde(default)]
    tls: Option<TlsShape>,
    #[serde(default)]
    insecure: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthShape {
    username: String,
    #[serde(default)]
    password: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsShape {
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RegistryConfig, ConfigError> {
        RegistryConfig::parse(text, Path::new("/etc/berth/registries.yaml"))
    }

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn parses_the_k3s_shape() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_pem()).unwrap();
        let text = r#"
mirrors:
  docker.io:
    endpoint: ["https://mirror.local:5000/v2/", "http://10.0.0.1:5000"]
  "*":
    endpoint: ["https://all.local"]
configs:
  "registry.local:5000":
    auth: {username: alice, password: "p:w"}
    tls:
      ca_file: ca.pem
  "127.0.0.1:5000":
    insecure: true
  "other.local":
    tls: {insecure_skip_verify: true}
"#;
        let c = RegistryConfig::parse(text, &dir.path().join("registries.yaml")).unwrap();
        assert_eq!(
            c.mirrors["docker.io"],
            vec![
                Endpoint {
                    scheme: "https".into(),
                    host: "mirror.local:5000".into(),
                    prefix: String::new()
                },
                Endpoint::parse("http://10.0.0.1:5000").unwrap(),
            ]
        );
        let h = c.host("registry.local:5000").unwrap();
        assert_eq!(
            h.credentials,
            Some(Credentials {
                username: "alice".into(),
                password: "p:w".into()
            })
        );
        assert_eq!(h.ca_file.as_deref(), Some(&*dir.path().join("ca.pem")));
        assert!(!h.insecure && !h.insecure_skip_verify);
        assert!(c.host("127.0.0.1:5000").unwrap().insecure);
        assert!(c.host("other.local").unwrap().insecure_skip_verify);
        assert!(
            !format!("{h:?}").contains("p:w"),
            "password in Debug output"
        );

        // Endpoint order: the registry's mirrors, then itself; `*` for the rest.
        let hosts =
            |r: &str| -> Vec<String> { c.endpoints(r).iter().map(ToString::to_string).collect() };
        assert_eq!(
            hosts("docker.io"),
            [
                "https://mirror.local:5000",
                "http://10.0.0.1:5000",
                "https://registry-1.docker.io"
            ]
        );
        assert_eq!(
            hosts("127.0.0.1:5000"),
            ["https://all.local", "http://127.0.0.1:5000"]
        );
        // JSON is YAML too, and an empty file is an empty config.
        let j = parse(r#"{"configs": {"a.io": {"auth": {"username": "u"}}}}"#).unwrap();
        assert_eq!(
            j.host("a.io")
                .unwrap()
                .credentials
                .as_ref()
                .unwrap()
                .password,
            ""
        );
        assert!(parse("\n").unwrap().hosts.is_empty());
    }

    #[test]
    fn docker_hub_settings_apply_to_its_endpoint() {
        let c = parse("configs:\n  docker.io:\n    auth: {username: u, password: p}\n").unwrap();
        let ep = Endpoint::default_for("docker.io", false);
        assert_eq!(ep.v2(), "https://registry-1.docker.io/v2/");
        assert!(c.for_endpoint("docker.io", &ep).credentials.is_some());
        let mirror = Endpoint::parse("https://m.local").unwrap();
        assert!(c.for_endpoint("docker.io", &mirror).credentials.is_none());
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let cases = [
            (
                "configs:\n  a.io:\n    auth: {user: x}\n",
                "unknown field `user`",
            ),
            (
                "mirrors:\n  docker.io:\n    endpoint: [\"ftp://x\"]\n",
                "mirrors.\"docker.io\".endpoint[0]: scheme \"ftp\" is not http or https",
            ),
            (
                "mirrors:\n  docker.io:\n    endpoint: [\"mirror.local\"]\n",
                "mirrors.\"docker.io\".endpoint[0]: expected http://host[:port]",
            ),
            (
                "configs:\n  \"https://a.io\": {}\n",
                "configs.\"https://a.io\": expected a host[:port]",
            ),
            (
                "configs:\n  a.io:\n    auth: {username: \"\"}\n",
                "configs.\"a.io\".auth.username: must not be empty",
            ),
            (
                "configs:\n  a.io:\n    tls: {ca_file: /nonexistent/ca.pem}\n",
                "configs.\"a.io\".tls.ca_file: /nonexistent/ca.pem: No such file",
            ),
            (
                "mirrors:\n  docker.io:\n    rewrite: {}\n",
                "unknown field `rewrite`",
            ),
            ("configs: [1, 2]\n", "configs: invalid type"),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(
                err.starts_with("registries file /etc/berth/registries.yaml: "),
                "{err}"
            );
            assert!(err.contains(want), "{text:?}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let text = format!(
            "configs:\n  a.io:\n    tls: {{ca_file: {}}}\n",
            empty.display()
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        let err = RegistryConfig::load(&dir.path().join("missing.yaml")).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
        assert!(err.to_string().contains("missing.yaml"), "{err}");
    }
}
