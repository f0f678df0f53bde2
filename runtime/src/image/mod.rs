//! The content-addressed image store.
//!
//! [`ImageStore`] imports OCI image layouts (a directory, or a tar of one, as
//! `skopeo copy … oci-archive:` writes) and `docker save` archives (the legacy
//! `manifest.json` format and Docker 25+'s, which also embeds an OCI layout), keeps every
//! blob under its sha256, and unpacks each layer once into its own directory, in the form
//! overlayfs reads as a lowerdir. [`ImageStore::pull`] fetches images from OCI distribution
//! registries into the same store (see [`registry`], and [`RegistryConfig`] for the
//! registries file). Start reading at [`ImageStore`].
//!
//! # On disk
//!
//! ```text
//! root/
//!   blobs/sha256/<hex>      manifests, configs and layer blobs as imported (compressed)
//!   layers/<diff-id hex>/   an unpacked layer, whiteouts in overlayfs form
//!   images/<id hex>.json    one record per image: manifest, config defaults, layers
//!   names.json              {"docker.io/library/busybox:latest": "sha256:<id hex>", …}
//!                           and pulled digests: {"docker.io/library/busybox@sha256:<hex>": …}
//!                           and "docker.io/library/busybox@sha256:<pulled digest>" entries
//!   tmp/                    work in progress; renamed into place when complete
//!   lock                    flock: shared by writers of blobs and layers, exclusive for gc
//!   names.lock              flock: exclusive around changes to images/ and names.json
//! ```
//!
//! Layer directories are keyed by **diff id** (the sha256 of the uncompressed tar), not by
//! chain id: each layer is unpacked on its own, never on top of its parent, so its content
//! depends on the diff alone, and keying by diff id shares a layer between any images that
//! contain it, whatever sits below it. Overlayfs stacks the directories at mount time.
//!
//! An image's id is the digest of its config (`sha256:<hex>`), as Docker's is; names are
//! normalised as Docker normalises them (`busybox` is `docker.io/library/busybox:latest`).
//! A legacy `docker save` archive has no manifest, so the store writes an OCI manifest for
//! it; its digest is the image's `manifest_digest`.
//!
//! # Integrity and crashes
//!
//! Blobs are hashed as they are written (and must match the digest that names them) and
//! again whenever they are read; layers are checked against the manifest's digest and the
//! config's diff id as they are unpacked. Everything is built under `tmp/` and renamed into
//! place, so a crash leaves either nothing or a complete blob, layer or record; opening the
//! store clears what a crash left in `tmp/` (if no other process is at work). Two processes
//! may import at once: renames are atomic and "already there" counts as success.
//!
//! # Unpacking
//!
//! Layer tars are untrusted: see the `unpack` module for how entries that would escape the
//! layer directory (`..`, absolute paths, writing through symlinks, hardlinks to outside)
//! are refused. Ownership, modes, times, symlinks, hardlinks, device nodes and xattrs are
//! kept (the last two as far as the process's privileges allow).

mod config;
mod digest;
mod import;
mod reference;
pub mod registry;
mod store;
mod unpack;

#[cfg(test)]
mod testutil;

use std::path::PathBuf;

pub use config::{resolve_command, ImageConfig};
pub use reference::normalize_reference;
pub use registry::{PullError, RegistryConfig};
pub use store::ImageStore;

/// Errors from the image store; each names the image, blob, layer or path involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("image store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: invalid json: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        digest: String,
        reason: &'static str,
    },
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("image {reference:?} not found")]
    NotFound { reference: String },
    #[error("image reference {reference:?} is ambiguous: it matches {candidates:?}")]
    Ambiguous {
        reference: String,
        candidates: Vec<String>,
    },
    #[error("blob {digest} not found in {path}")]
    MissingBlob { digest: String, path: PathBuf },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: no image for {wanted} (found {found:?})")]
    Platform {
        path: PathBuf,
        wanted: String,
        found: Vec<String>,
    },
    #[error("layer {layer}: unsafe path {path:?}: {reason}")]
    UnsafePath {
        layer: String,
        path: String,
        reason: String,
    },
    #[error("layer {layer}: corrupt: {source}")]
    CorruptLayer {
        layer: String,
        #[source]
        source: std::io::Error,
    },
    #[error("layer {layer}: {reason}")]
    UnsupportedLayer { layer: String, reason: String },
    #[error("layer {layer}: unpacking {path:?}: {source}")]
    Unpack {
        layer: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One image in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `sha256:<hex>` of the image's config blob.
    pub id: String,
    /// Normalised `repository:tag` names, sorted.
    pub names: Vec<String>,
    /// `repository@sha256:<hex>` of each digest the image was pulled by (an index's
    /// digest for a multi-platform image), sorted; as Docker's `RepoDigests`.
    pub repo_digests: Vec<String>,
    pub manifest_digest: String,
    pub config: ImageConfig,
    /// Layer blob digests (as stored, usually compressed), bottom layer first.
    pub layers: Vec<String>,
    /// sha256 of each uncompressed layer, bottom first; these key the layer directories.
    pub diff_ids: Vec<String>,
    /// Bytes of the image's blobs: manifest, config and (compressed) layers.
    pub size: u64,
}

/// What [`ImageStore::gc`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub images_removed: usize,
    pub layers_removed: usize,
    pub blobs_removed: usize,
    /// Bytes of removed blobs plus the file bytes of removed layer directories.
    pub bytes_freed: u64,
}

/// The platform an import picks from a multi-platform index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`
    pub os: String,
    /// GOARCH spelling: `amd64`, `arm64`, …
    pub architecture: String,
    /// `v7` for 32-bit arm; matched only when set.
    pub variant: Option<String>,
}

impl Platform {
    pub fn new(os: &str, architecture: &str) -> Self {
        Self {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: None,
        }
    }

    /// The platform this process runs on (`linux/amd64` on x86-64).
    pub fn host() -> Self {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            "riscv64" => ("riscv64", None),
            "s390x" => ("s390x", None),
            other => (other, None),
        };
        Self {
            os: std::env::consts::OS.to_string(),
            architecture: arch.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Whether an image for `os`/`arch`/`variant` runs here. An empty os or architecture
    /// (some hand-made configs) is taken to match.
    pub(crate) fn matches(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        let os_ok = os.is_empty() || os == self.os;
        let arch_ok = arch.is_empty() || arch == self.architecture;
        let variant_ok = match (&self.variant, variant) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        };
        os_ok && arch_ok && variant_ok
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}
