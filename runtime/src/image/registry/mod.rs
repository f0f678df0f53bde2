//! Pulling images from an OCI distribution (Docker Registry v2) registry into the store.
//!
//! [`ImageStore::pull`] normalises the reference as Docker does, then tries the endpoints
//! [`RegistryConfig`] gives for its registry (mirrors first, then the registry itself).
//! On each: `GET /v2/` and answer its challenge (anonymous, Basic with configured
//! credentials, or a Bearer token fetched from the realm, with those credentials if any);
//! `GET` the manifest with an `Accept` for OCI and Docker indexes and manifests; from an
//! index pick the store's platform (the host's: `linux/amd64` here); then fetch the config
//! and the layers the store does not have yet, following redirects to blob storage.
//!
//! Nothing from the network is trusted before it is hashed: manifests are checked against
//! the digest they were asked by (or the `Docker-Content-Digest` the registry claims, which
//! must match what it sent), and blobs are hashed as they stream into the store's `tmp/`
//! and renamed into `blobs/` only when their digest and size match the manifest's. The
//! image is then made by the store's own path ([`ImageStore::create_image`]'s): layers
//! are unpacked by the same code as imports and checked against the config's diff ids.
//!
//! The pull is synchronous, like the rest of the store: the agent calls it from a
//! blocking thread. It holds the store's shared lock throughout, so a gc cannot remove
//! the blobs of an image still being pulled (and waits for pulls to finish).

mod client;
mod config;

#[cfg(test)]
mod fake;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::{self, Read};
use std::rc::Rc;

use oci_spec::image::{ImageIndex, ImageManifest};
use tracing::{debug, info, info_span, warn};

pub use config::{ConfigError, Credentials, Endpoint, HostConfig, RegistryConfig, Timeouts};

use self::client::{content_type, Client};
use super::config::RawImageConfig;
use super::digest::{sha256_hex, sha256_of};
use super::reference::Reference;
use super::store::MAX_METADATA_BYTES;
use super::unpack::Compression;
use super::{Error as StoreError, Image, ImageStore};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const CONFIG_TYPES: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
/// Nested indexes deeper than this are refused.
const MAX_INDEX_DEPTH: usize = 4;

/// Why a pull failed. Every message names the reference and the registry host, to be
/// shown as a pod's `ErrImagePull` reason.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    InvalidReference(StoreError),
    #[error("pulling {reference}: not found on {host}: {detail}")]
    NotFound {
        reference: String,
        host: String,
        detail: String,
    },
    #[error("pulling {reference}: unauthorized by {host}: {detail}")]
    Unauthorized {
        reference: String,
        host: String,
        detail: String,
    },
    #[error(
        "pulling {reference}: {what} from {host}: digest mismatch: expected {expected}, got {actual}"
    )]
    DigestMismatch {
        reference: String,
        host: String,
        what: String,
        expected: String,
        actual: String,
    },
    #[error(
        "pulling {reference}: {what} from {host}: size mismatch: expected {expected} bytes, got {actual}"
    )]
    SizeMismatch {
        reference: String,
        host: String,
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("pulling {reference}: no {wanted} image on {host} (it has {found:?})")]
    NoPlatform {
        reference: String,
        host: String,
        wanted: String,
        found: Vec<String>,
    },
    #[error("pulling {reference}: unsupported media type {media_type} from {host}: {detail}")]
    UnsupportedMediaType {
        reference: String,
        host: String,
        media_type: String,
        detail: String,
    },
    #[error("pulling {reference}: cannot connect to {host}: {detail}")]
    Connect {
        reference: String,
        host: String,
        detail: String,
    },
    #[error("pulling {reference}: tls with {host}: {detail}")]
    Tls {
        reference: String,
        host: String,
        detail: String,
    },
    #[error("pulling {reference}: {host} answered {status} for {url}{detail}")]
    Status {
        reference: String,
        host: String,
        url: String,
        status: u16,
        detail: String,
    },
    #[error("pulling {reference}: invalid response from {host}: {detail}")]
    InvalidResponse {
        reference: String,
        host: String,
        detail: String,
    },
    #[error("pulling {reference}: image store: {source}")]
    Store {
        reference: String,
        #[source]
        source: StoreError,
    },
}

impl ImageStore {
    /// Pull `reference` (`busybox`, `host:port/repo:tag`, `repo@sha256:…`) from its
    /// registry, or a mirror of it, into the store, and return the image. It is named by
    /// the reference's normalised `repository:tag` (when it has a tag) and by
    /// `repository@<digest>` (the digest pulled: the index's for a multi-platform image),
    /// so [`ImageStore::get`] finds it by the same reference. Blobs already in the store
    /// are not downloaded again.
    ///
    /// With several endpoints (mirrors), each is tried in turn and the last one's error is
    /// returned. On error no image is added or renamed; blobs fully downloaded and verified
    /// stay until the next gc, and nothing partial is left.
    pub fn pull(&self, reference: &str, cfg: &RegistryConfig) -> Result<Image, PullError> {
        let parsed = Reference::parse(reference).map_err(PullError::InvalidReference)?;
        let full = parsed.to_string();
        let span = info_span!("pull", reference = %full);
        let _span = span.enter();
        let (registry, repository) = parsed
            .repository
            .split_once('/')
            .expect("a parsed repository has a domain");
        let _lock = self.lock_shared().map_err(|source| PullError::Store {
            reference: full.clone(),
            source,
        })?;
        let endpoints = cfg.endpoints(registry);
        let mut last = None;
        for (i, endpoint) in endpoints.iter().enumerate() {
            let host = cfg.for_endpoint(registry, endpoint);
            let result = Client::new(endpoint.clone(), &host, &cfg.timeouts, &full, repository)
                .and_then(|client| {
                    Puller {
                        store: self,
                        client: &client,
                        reference: &full,
                    }
                    .pull(&parsed)
                });
            match result {
                Ok(image) => {
                    info!(image = %image.id, endpoint = %endpoint, "image pulled");
                    return Ok(image);
                }
                Err(e) if i + 1 < endpoints.len() => {
                    warn!(endpoint = %endpoint, error = %e, "pull from endpoint failed; trying the next");
                    last = Some(e);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("there is always the registry's own endpoint"))
    }
}

/// One pull from one endpoint.
struct Puller<'a> {
    store: &'a ImageStore,
    client: &'a Client,
    /// The normalised reference, for messages.
    reference: &'a str,
}

/// A manifest or index as fetched, verified against its digest.
struct Fetched {
    digest: String,
    media_type: String,
    bytes: Vec<u8>,
}

impl Puller<'_> {
    fn pull(&self, parsed: &Reference) -> Result<Image, PullError> {
        self.client.probe()?;
        let wanted = parsed.digest.as_deref();
        let tag_or_digest = wanted
            .or(parsed.tag.as_deref())
            .expect("a reference has a tag or digest");
        let top = self.fetch_manifest(tag_or_digest, wanted, None)?;
        let manifest = self.resolve_platform(top.clone_meta(), top.bytes, 0)?;
        let record = self.fetch_image(&manifest)?;

        let mut names = BTreeSet::new();
        if parsed.digest.is_none() {
            names.extend(parsed.tagged_name());
        }
        names.insert(format!("{}@{}", parsed.repository, top.digest));
        self.store
            .prepare_layers([&record])
            .map_err(|e| self.store_error(e))?;
        let mut images = self
            .store
            .commit(vec![(record, names)])
            .map_err(|e| self.store_error(e))?;
        Ok(images.remove(0))
    }

    /// `GET manifests/<tag or digest>`, verified: against `expected` when given (a digest
    /// reference, or an index entry), else the sha256 of what was sent, which a
    /// `Docker-Content-Digest` header must agree with. A manifest already in the store
    /// is read from there when asked by digest.
    fn fetch_manifest(
        &self,
        tag_or_digest: &str,
        expected: Option<&str>,
        size: Option<u64>,
    ) -> Result<Fetched, PullError> {
        let what = || match expected {
            Some(d) => format!("manifest {d}"),
            None => format!("manifest for tag {tag_or_digest}"),
        };
        if let Some(d) = expected {
            if let Ok(bytes) = self.store.read_blob_limited(d, MAX_METADATA_BYTES) {
                debug!(digest = d, "manifest already in the store");
                let media_type = body_media_type(&bytes).unwrap_or_default();
                return Ok(Fetched {
                    digest: d.to_string(),
                    media_type,
                    bytes,
                });
            }
        }
        let accept = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST].join(", ");
        let mut resp = self
            .client
            .get(&format!("manifests/{tag_or_digest}"), Some(&accept))?;
        let header_type = content_type(&resp);
        let claimed = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_METADATA_BYTES)
            .read_to_vec()
            .map_err(|e| self.client.transport_error(&what(), e))?;
        let actual = sha256_of(&bytes);
        for want in expected.into_iter().chain(claimed.as_deref()) {
            if want != actual {
                return Err(self.mismatch(what(), want, &actual));
            }
        }
        if let Some(want) = size {
            if want != bytes.len() as u64 {
                return Err(PullError::SizeMismatch {
                    reference: self.reference.to_string(),
                    host: self.client.host().to_string(),
                    what: what(),
                    expected: want,
                    actual: bytes.len() as u64,
                });
            }
        }
        let media_type = body_media_type(&bytes).or(header_type).unwrap_or_default();
        debug!(digest = %actual, media_type, "manifest fetched");
        Ok(Fetched {
            digest: actual,
            media_type,
            bytes,
        })
    }

    /// Follow indexes down to the image manifest for the store's platform.
    fn resolve_platform(
        &self,
        meta: (String, String),
        bytes: Vec<u8>,
        depth: usize,
    ) -> Result<Fetched, PullError> {
        let (digest, media_type) = meta;
        match media_type.as_str() {
            OCI_MANIFEST | DOCKER_MANIFEST => {
                return Ok(Fetched {
                    digest,
                    media_type,
                    bytes,
                })
            }
            OCI_INDEX | DOCKER_LIST if depth < MAX_INDEX_DEPTH => {}
            OCI_INDEX | DOCKER_LIST => {
                return Err(self.unsupported(&media_type, "indexes nested too deeply"))
            }
            other => {
                return Err(self.unsupported(
                    other,
                    if other.contains("manifest.v1") {
                        "docker schema 1 manifests are not supported"
                    } else {
                        "not an image manifest or index"
                    },
                ))
            }
        }
        let index: ImageIndex = self.parse_json(&bytes, &format!("index {digest}"))?;
        let platform = self.store.platform();
        let mut found = Vec::new();
        for child in index.manifests() {
            let child_type = child.media_type().to_string();
            let Some(p) = child.platform() else {
                continue;
            };
            let (os, arch) = (p.os().to_string(), p.architecture().to_string());
            let is_image = matches!(
                child_type.as_str(),
                OCI_MANIFEST | DOCKER_MANIFEST | OCI_INDEX | DOCKER_LIST
            );
            if is_image && platform.matches(&os, &arch, p.variant().as_deref()) {
                let d = child.digest().to_string();
                debug!(index = %digest, manifest = %d, "picked the platform's manifest");
                let f = self.fetch_manifest(&d, Some(&d), Some(child.size()))?;
                let media_type = if f.media_type.is_empty() {
                    child_type
                } else {
                    f.media_type
                };
                return self.resolve_platform((f.digest, media_type), f.bytes, depth + 1);
            }
            found.push(match p.variant() {
                Some(v) => format!("{os}/{arch}/{v}"),
                None => format!("{os}/{arch}"),
            });
        }
        Err(PullError::NoPlatform {
            reference: self.reference.to_string(),
            host: self.client.host().to_string(),
            wanted: platform.to_string(),
            found,
        })
    }

    /// Fetch the config and missing layers of an image manifest into the store, then
    /// the manifest itself; return the image's record (not yet committed).
    fn fetch_image(&self, m: &Fetched) -> Result<super::store::Record, PullError> {
        let manifest: ImageManifest =
            self.parse_json(&m.bytes, &format!("manifest {}", m.digest))?;
        let config = manifest.config();
        let config_type = config.media_type().to_string();
        if !CONFIG_TYPES.contains(&config_type.as_str()) {
            return Err(self.unsupported(
                &config_type,
                "the manifest's config is not a container image config",
            ));
        }
        let config_digest = config.digest().to_string();
        self.check_digest(&config_digest)?;
        if config.size() > MAX_METADATA_BYTES {
            return Err(self.invalid(format!(
                "config {config_digest} is larger than {MAX_METADATA_BYTES} bytes"
            )));
        }
        self.fetch_blob("config", &config_digest, config.size())?;
        let config_bytes = self
            .store
            .read_blob_limited(&config_digest, MAX_METADATA_BYTES)
            .map_err(|e| self.store_error(e))?;
        let raw: RawImageConfig =
            self.parse_json(&config_bytes, &format!("config {config_digest}"))?;
        let (os, arch) = (
            raw.os.as_deref().unwrap_or_default(),
            raw.architecture.as_deref().unwrap_or_default(),
        );
        if !self
            .store
            .platform()
            .matches(os, arch, raw.variant.as_deref())
        {
            return Err(PullError::NoPlatform {
                reference: self.reference.to_string(),
                host: self.client.host().to_string(),
                wanted: self.store.platform().to_string(),
                found: vec![format!("{os}/{arch}")],
            });
        }
        for layer in manifest.layers() {
            let media_type = layer.media_type().to_string();
            Compression::from_media_type(&media_type)
                .map_err(|reason| self.unsupported(&media_type, &reason))?;
            if layer.urls().as_ref().is_some_and(|u| !u.is_empty()) {
                return Err(self.unsupported(
                    &media_type,
                    "foreign layers (fetched from urls) are not supported",
                ));
            }
            let digest = layer.digest().to_string();
            self.check_digest(&digest)?;
            self.fetch_blob("layer", &digest, layer.size())?;
        }
        self.store
            .put_blob(&m.bytes[..], Some(&m.digest), None)
            .map_err(|e| self.store_error(e))?;
        self.store
            .record_from_store(&m.digest)
            .map_err(|e| self.store_error(e))
    }

    /// Download a blob into the store unless it is there, hashing it as it streams.
    fn fetch_blob(&self, kind: &str, digest: &str, size: u64) -> Result<(), PullError> {
        if self.store.has_blob(digest) {
            debug!(kind, digest, "blob already in the store");
            return Ok(());
        }
        let resp = self.client.get(&format!("blobs/{digest}"), None)?;
        let network_error = Rc::new(RefCell::new(None));
        let reader = WatchedReader {
            // One byte past the declared size is enough to know it is too long.
            inner: resp.into_body().into_reader().take(size.saturating_add(1)),
            error: network_error.clone(),
        };
        match self.store.put_blob(reader, Some(digest), Some(size)) {
            Ok(_) => {
                debug!(kind, digest, size, "blob downloaded");
                Ok(())
            }
            Err(e) => {
                if let Some(detail) = network_error.borrow_mut().take() {
                    return Err(PullError::Connect {
                        reference: self.reference.to_string(),
                        host: self.client.host().to_string(),
                        detail: format!("reading {kind} {digest}: {detail}"),
                    });
                }
                Err(match e {
                    StoreError::DigestMismatch { actual, .. } => {
                        self.mismatch(format!("{kind} {digest}"), digest, &actual)
                    }
                    e => self.store_error(e),
                })
            }
        }
    }

    fn check_digest(&self, digest: &str) -> Result<(), PullError> {
        sha256_hex(digest)
            .map(|_| ())
            .map_err(|e| self.invalid(e.to_string()))
    }

    fn parse_json<T: serde::de::DeserializeOwned>(
        &self,
        bytes: &[u8],
        what: &str,
    ) -> Result<T, PullError> {
        serde_json::from_slice(bytes).map_err(|e| self.invalid(format!("{what}: {e}")))
    }

    fn mismatch(&self, what: String, expected: &str, actual: &str) -> PullError {
        PullError::DigestMismatch {
            reference: self.reference.to_string(),
            host: self.client.host().to_string(),
            what,
            expected: expected.to_string(),
            actual: actual.to_string(),
        }
    }

    fn unsupported(&self, media_type: &str, detail: &str) -> PullError {
        PullError::UnsupportedMediaType {
            reference: self.reference.to_string(),
            host: self.client.host().to_string(),
            media_type: if media_type.is_empty() {
                "(none)".to_string()
            } else {
                media_type.to_string()
            },
            detail: detail.to_string(),
        }
    }

    fn invalid(&self, detail: String) -> PullError {
        PullError::InvalidResponse {
            reference: self.reference.to_string(),
            host: self.client.host().to_string(),
            detail,
        }
    }

    fn store_error(&self, e: StoreError) -> PullError {
        match e {
            StoreError::DigestMismatch {
                what,
                expected,
                actual,
            } => PullError::DigestMismatch {
                reference: self.reference.to_string(),
                host: self.client.host().to_string(),
                what,
                expected,
                actual,
            },
            StoreError::SizeMismatch {
                what,
                expected,
                actual,
            } => PullError::SizeMismatch {
                reference: self.reference.to_string(),
                host: self.client.host().to_string(),
                what,
                expected,
                actual,
            },
            source => PullError::Store {
                reference: self.reference.to_string(),
                source,
            },
        }
    }
}

impl Fetched {
    fn clone_meta(&self) -> (String, String) {
        (self.digest.clone(), self.media_type.clone())
    }
}

/// The `mediaType` a manifest or index declares in its body; for an OCI one without it
/// (the field is optional), what its fields show it to be.
fn body_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        layers: Option<serde_json::Value>,
    }
    let head = serde_json::from_slice::<Head>(bytes).ok()?;
    match head.media_type.filter(|m| !m.is_empty()) {
        Some(m) => Some(m),
        None if head.manifests.is_some() => Some(OCI_INDEX.to_string()),
        None if head.layers.is_some() => Some(OCI_MANIFEST.to_string()),
        None => None,
    }
}

/// Remembers a read error from the network, so a failed download is reported as the
/// network's fault rather than the store's.
struct WatchedReader<R> {
    inner: R,
    error: Rc<RefCell<Option<String>>>,
}

impl<R: Read> Read for WatchedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner
            .read(buf)
            .inspect_err(|e| *self.error.borrow_mut() = Some(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use serde_json::json;

    use super::fake::{Behaviour, FakeAuth, FakeRegistry};
    use super::*;
    use crate::image::testutil::{Built, LayoutBuilder, TarBuilder};
    use crate::image::unpack::Compression;
    use crate::image::Platform;

    struct Fixture {
        tmp: tempfile::TempDir,
        store: ImageStore,
        layout: LayoutBuilder,
    }

    impl Fixture {
        fn new() -> Fixture {
            let tmp = tempfile::tempdir().unwrap();
            let store = ImageStore::open(&tmp.path().join("store"))
                .unwrap()
                .with_platform(Platform::new("linux", "amd64"));
            let layout = LayoutBuilder::new(&tmp.path().join("layout"));
            Fixture { tmp, store, layout }
        }

        fn image(&self, arch: &str, marker: &str) -> Built {
            let base = TarBuilder::new()
                .dir("etc", 0o755)
                .file("etc/motd", b"hello")
                .finish();
            let top = TarBuilder::new().file(marker, marker.as_bytes()).finish();
            self.layout.image(
                &[(base, Compression::Gzip), (top, Compression::Zstd)],
                json!({"Cmd": [marker]}),
                arch,
            )
        }

        fn serve(&self, behaviour: Behaviour) -> FakeRegistry {
            FakeRegistry::start(self.layout.dir.clone(), behaviour)
        }

        fn tmp_entries(&self) -> usize {
            fs::read_dir(self.store.root().join("tmp")).unwrap().count()
        }
    }

    fn digest(b: &Built) -> String {
        b.desc["digest"].as_str().unwrap().to_string()
    }

    fn tags(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Plain HTTP to the fake, with optional credentials.
    fn config(reg: &FakeRegistry, creds: Option<(&str, &str)>) -> RegistryConfig {
        let mut c = RegistryConfig::default();
        c.hosts.insert(
            reg.host(),
            HostConfig {
                insecure: true,
                credentials: creds.map(|(u, p)| Credentials {
                    username: u.into(),
                    password: p.into(),
                }),
                ..HostConfig::default()
            },
        );
        c
    }

    use std::collections::HashMap;

    #[test]
    fn bearer_token_flow_and_redirected_blobs() {
        let f = Fixture::new();
        let img = f.image("amd64", "app");
        let reg = f.serve(Behaviour {
            auth: FakeAuth::Bearer {
                user: Some(("alice".into(), "pw".into())),
                field: "access_token",
            },
            tags: tags(&[("team/app:v1", &digest(&img))]),
            redirect_blobs: true,
            ..Behaviour::default()
        });
        let reference = format!("{}/team/app:v1", reg.host());
        let pulled = f
            .store
            .pull(&reference, &config(&reg, Some(("alice", "pw"))))
            .unwrap();
        assert_eq!(pulled.id, img.id);
        assert_eq!(pulled.names, vec![reference.clone()]);
        assert_eq!(
            pulled.repo_digests,
            vec![format!("{}/team/app@{}", reg.host(), digest(&img))]
        );
        assert_eq!(pulled.config.cmd, vec!["app"]);
        let got = f.store.get(&reference).unwrap();
        assert_eq!(got, pulled);
        assert_eq!(f.store.get(&pulled.repo_digests[0]).unwrap().id, img.id);
        let dirs = f.store.layer_dirs(&got).unwrap();
        assert_eq!(fs::read(dirs[0].join("etc/motd")).unwrap(), b"hello");
        assert!(dirs[1].join("app").is_file());

        let seen = reg.seen();
        let token_asks: Vec<_> = seen
            .iter()
            .filter(|s| s.path.starts_with("/token"))
            .collect();
        assert_eq!(token_asks.len(), 1, "{seen:#?}");
        assert!(
            token_asks[0].path.contains("team%2Fapp") || token_asks[0].path.contains("team/app")
        );
        let manifest_req = seen
            .iter()
            .find(|s| s.path.contains("/manifests/v1"))
            .unwrap();
        assert_eq!(
            manifest_req.authorization.as_deref(),
            Some("Bearer fake-token-1")
        );
        let accept = manifest_req.accept.as_deref().unwrap();
        for t in [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST] {
            assert!(accept.contains(t), "{accept}");
        }
        // Config and both layers came from storage, without credentials.
        let from_storage: Vec<_> = seen.iter().filter(|s| s.port == reg.storage_port).collect();
        assert_eq!(from_storage.len(), 3, "{seen:#?}");
        assert!(from_storage.iter().all(|s| s.authorization.is_none()));

        // Pulled again: only the probe, the token and the manifest; no blob.
        reg.clear_seen();
        f.store
            .pull(&reference, &config(&reg, Some(("alice", "pw"))))
            .unwrap();
        let seen = reg.seen();
        assert!(
            seen.iter()
                .all(|s| !s.path.contains("/blobs/") && s.port == reg.port),
            "{seen:#?}"
        );

        // Wrong password: the token service refuses, and the error says who and where.
        let err = f
            .store
            .pull(&reference, &config(&reg, Some(("alice", "nope"))))
            .unwrap_err();
        assert!(matches!(err, PullError::Unauthorized { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&reference) && msg.contains(&reg.host()),
            "{msg}"
        );
        assert!(msg.contains("\"alice\""), "{msg}");
    }

    #[test]
    fn anonymous_token_with_token_field() {
        let f = Fixture::new();
        let img = f.image("amd64", "anon");
        let reg = f.serve(Behaviour {
            auth: FakeAuth::Bearer {
                user: None,
                field: "token",
            },
            tags: tags(&[("anon:latest", &digest(&img))]),
            ..Behaviour::default()
        });
        let pulled = f
            .store
            .pull(&format!("{}/anon", reg.host()), &config(&reg, None))
            .unwrap();
        assert_eq!(pulled.id, img.id);
        assert_eq!(pulled.names, vec![format!("{}/anon:latest", reg.host())]);
    }

    #[test]
    fn basic_auth_right_wrong_and_missing() {
        let f = Fixture::new();
        let img = f.image("amd64", "b");
        let reg = f.serve(Behaviour {
            auth: FakeAuth::Basic {
                user: "bob".into(),
                password: "secret".into(),
            },
            tags: tags(&[("b:1", &digest(&img))]),
            ..Behaviour::default()
        });
        let r = format!("{}/b:1", reg.host());
        for (creds, want) in [
            (None, "none are configured"),
            (
                Some(("bob", "wrong")),
                "refused the credentials of user \"bob\"",
            ),
        ] {
            let err = f.store.pull(&r, &config(&reg, creds)).unwrap_err();
            assert!(matches!(err, PullError::Unauthorized { .. }), "{err}");
            assert!(err.to_string().contains(want), "{err}");
        }
        assert!(f.store.list().unwrap().is_empty());
        let pulled = f
            .store
            .pull(&r, &config(&reg, Some(("bob", "secret"))))
            .unwrap();
        assert_eq!(pulled.id, img.id);
    }

    #[test]
    fn docker_manifest_list_picks_amd64() {
        let f = Fixture::new();
        let arm = f.image("arm64", "arm");
        let amd = f.image("amd64", "amd");
        // The same index, in Docker's media types.
        let list = json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_LIST,
            "manifests": [
                {"mediaType": DOCKER_MANIFEST, "digest": digest(&arm), "size": arm.desc["size"],
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": DOCKER_MANIFEST, "digest": digest(&amd), "size": amd.desc["size"],
                 "platform": {"os": "linux", "architecture": "amd64"}},
            ],
        });
        let (list_digest, _) = f.layout.blob(&serde_json::to_vec(&list).unwrap());
        let arm_only = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [list["manifests"][0].clone(),
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(&amd),
                 "size": amd.desc["size"], "platform": {"os": "windows", "architecture": "amd64"}}],
        });
        let (arm_digest, _) = f.layout.blob(&serde_json::to_vec(&arm_only).unwrap());
        let reg = f.serve(Behaviour {
            tags: tags(&[("multi:1", &list_digest), ("multi:arm", &arm_digest)]),
            ..Behaviour::default()
        });
        let cfg = config(&reg, None);
        let pulled = f
            .store
            .pull(&format!("{}/multi:1", reg.host()), &cfg)
            .unwrap();
        assert_eq!(pulled.id, amd.id);
        assert_eq!(pulled.config.cmd, vec!["amd"]);
        assert_eq!(pulled.manifest_digest, digest(&amd));
        // Findable by the index's digest, as the reference a pod would give.
        let by_index = format!("{}/multi@{list_digest}", reg.host());
        assert_eq!(f.store.get(&by_index).unwrap().id, amd.id);
        assert!(
            !f.store.has_blob(&arm.id),
            "the other platform's config was fetched"
        );

        let err = f
            .store
            .pull(&format!("{}/multi:arm", reg.host()), &cfg)
            .unwrap_err();
        let PullError::NoPlatform { ref found, .. } = err else {
            panic!("{err}");
        };
        assert_eq!(found, &["linux/arm64/v8", "windows/amd64"]);
        assert!(
            err.to_string()
                .contains("no linux/amd64 image on 127.0.0.1:"),
            "{err}"
        );
    }

    #[test]
    fn lies_and_corruption_are_refused_leaving_nothing_partial() {
        let f = Fixture::new();
        let img = f.image("amd64", "x");
        let reg = f.serve(Behaviour {
            tags: tags(&[("x:1", &digest(&img))]),
            claim_digest: Some(format!("sha256:{}", "0".repeat(64))),
            ..Behaviour::default()
        });
        let r = format!("{}/x:1", reg.host());
        let cfg = config(&reg, None);
        let err = f.store.pull(&r, &cfg).unwrap_err();
        assert!(matches!(err, PullError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains("manifest for tag 1 from"), "{err}");

        // A layer whose bytes differ from its digest (same length).
        reg.behaviour().claim_digest = None;
        let layer = &img.layer_digests[1];
        let mut bad = fs::read(f.layout.dir.join("blobs/sha256").join(&layer[7..])).unwrap();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        reg.behaviour().tamper.insert(layer.clone(), bad);
        let err = f.store.pull(&r, &cfg).unwrap_err();
        let PullError::DigestMismatch { ref expected, .. } = err else {
            panic!("{err}");
        };
        assert_eq!(expected, layer);
        assert!(err.to_string().contains(&format!("layer {layer}")), "{err}");
        assert!(!f.store.has_blob(layer));
        assert!(
            !f.store.has_blob(&digest(&img)),
            "manifest stored before its layers"
        );
        assert_eq!(f.tmp_entries(), 0);
        assert!(f.store.list().unwrap().is_empty());

        // A blob longer than its descriptor says.
        let mut long = fs::read(f.layout.dir.join("blobs/sha256").join(&layer[7..])).unwrap();
        long.extend_from_slice(b"trailing");
        reg.behaviour().tamper.insert(layer.clone(), long);
        let err = f.store.pull(&r, &cfg).unwrap_err();
        assert!(matches!(err, PullError::DigestMismatch { .. }), "{err}");
        assert_eq!(f.tmp_entries(), 0);

        // Served honestly, the pull completes (the config and first layer are reused).
        reg.behaviour().tamper.clear();
        reg.clear_seen();
        f.store.pull(&r, &cfg).unwrap();
        let blobs: Vec<_> = reg
            .seen()
            .into_iter()
            .filter(|s| s.path.contains("/blobs/"))
            .collect();
        assert_eq!(blobs.len(), 1, "{blobs:#?}");
    }

    #[test]
    fn not_found_unsupported_and_unreachable() {
        let f = Fixture::new();
        let img = f.image("amd64", "y");
        let reg = f.serve(Behaviour {
            tags: tags(&[("y:1", &digest(&img)), ("y:old", &digest(&img))]),
            ..Behaviour::default()
        });
        let cfg = config(&reg, None);
        let err = f
            .store
            .pull(&format!("{}/y:nope", reg.host()), &cfg)
            .unwrap_err();
        assert!(matches!(err, PullError::NotFound { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "pulling {}/y:nope: not found on {}: MANIFEST_UNKNOWN: manifest unknown",
                reg.host(),
                reg.host()
            )
        );

        // A schema 1 manifest (say the registry) is refused by media type.
        let schema1 = json!({"schemaVersion": 1, "name": "y", "tag": "old", "fsLayers": []});
        let (d, _) = f.layout.blob(&serde_json::to_vec(&schema1).unwrap());
        reg.behaviour().tags.insert("y:old".into(), d.clone());
        reg.behaviour().content_type.insert(
            d,
            "application/vnd.docker.distribution.manifest.v1+prettyjws".into(),
        );
        let err = f
            .store
            .pull(&format!("{}/y:old", reg.host()), &cfg)
            .unwrap_err();
        assert!(
            matches!(err, PullError::UnsupportedMediaType { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("schema 1"), "{err}");

        // Plain HTTP is not tried for a host that is not configured insecure.
        let err = f
            .store
            .pull(&format!("{}/y:1", reg.host()), &RegistryConfig::default())
            .unwrap_err();
        assert!(
            matches!(err, PullError::Tls { .. } | PullError::Connect { .. }),
            "{err}"
        );

        // Nothing listening.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let mut cfg = RegistryConfig::default();
        cfg.hosts.insert(
            host.clone(),
            HostConfig {
                insecure: true,
                ..HostConfig::default()
            },
        );
        let err = f.store.pull(&format!("{host}/y:1"), &cfg).unwrap_err();
        assert!(matches!(err, PullError::Connect { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("pulling {host}/y:1: cannot connect to {host}: ")),
            "{err}"
        );
        assert!(matches!(
            f.store.pull("Bad:Ref", &cfg),
            Err(PullError::InvalidReference(_))
        ));
    }

    #[test]
    fn pulled_digests_name_the_image_but_do_not_keep_it() {
        let f = Fixture::new();
        let img = f.image("amd64", "d");
        let reg = f.serve(Behaviour {
            tags: tags(&[("d:1", &digest(&img))]),
            ..Behaviour::default()
        });
        let cfg = config(&reg, None);
        let tagged = format!("{}/d:1", reg.host());
        let by_digest = format!("{}/d@{}", reg.host(), digest(&img));
        f.store.pull(&tagged, &cfg).unwrap();
        let listed = f.store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].names, vec![tagged.clone()]);
        assert_eq!(listed[0].repo_digests, vec![by_digest.clone()]);
        // Removing the only tag removes the image and its digest names.
        f.store.remove(&tagged).unwrap();
        assert!(f.store.list().unwrap().is_empty());
        assert!(matches!(
            f.store.get(&by_digest),
            Err(StoreError::NotFound { .. })
        ));
        // Pulled by digest only, it stays until removed by that digest.
        let img2 = f.store.pull(&by_digest, &cfg).unwrap();
        assert!(img2.names.is_empty());
        f.store.tag(&by_digest, "local/d:x").unwrap();
        f.store.remove("local/d:x").unwrap();
        assert!(
            f.store.list().unwrap().is_empty(),
            "a digest name is not a tag"
        );
        f.store.pull(&by_digest, &cfg).unwrap();
        f.store.remove(&by_digest).unwrap();
        assert!(f.store.list().unwrap().is_empty());
    }

    #[test]
    fn mirrors_are_tried_first_then_the_registry() {
        let f = Fixture::new();
        let img = f.image("amd64", "m");
        let upstream = f.serve(Behaviour {
            tags: tags(&[("lib/m:1", &digest(&img))]),
            ..Behaviour::default()
        });
        // A mirror that does not have it.
        let empty = f.serve(Behaviour::default());
        let mut cfg = config(&upstream, None);
        cfg.mirrors.insert(
            upstream.host(),
            vec![Endpoint::parse(&format!("http://{}", empty.host())).unwrap()],
        );
        let r = format!("{}/lib/m:1", upstream.host());
        let pulled = f.store.pull(&r, &cfg).unwrap();
        assert_eq!(pulled.id, img.id);
        assert!(empty
            .seen()
            .iter()
            .any(|s| s.path == "/v2/lib/m/manifests/1"));

        // A mirror that has it serves everything; the registry is not asked.
        let f2 = Fixture::new();
        let img2 = f2.image("amd64", "m");
        let mirror = f2.serve(Behaviour {
            tags: tags(&[("lib/m:1", &digest(&img2))]),
            ..Behaviour::default()
        });
        upstream.clear_seen();
        let mut cfg = config(&upstream, None);
        cfg.mirrors.insert(
            "*".into(),
            vec![Endpoint::parse(&format!("http://{}/v2", mirror.host())).unwrap()],
        );
        let pulled = f2.store.pull(&r, &cfg).unwrap();
        assert_eq!(pulled.id, img2.id);
        assert_eq!(
            pulled.names,
            vec![r.clone()],
            "named as asked, not by mirror"
        );
        assert!(upstream.seen().is_empty());
        let _ = &f.tmp;
    }
}
