//! Builders for layer tars and OCI layouts, for the unit tests.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::digest::sha256_of;
use super::unpack::Compression;

/// Builds a layer tar, including the malformed entries real tools refuse to write.
pub(crate) struct TarBuilder {
    b: tar::Builder<Vec<u8>>,
}

impl TarBuilder {
    pub(crate) fn new() -> Self {
        Self {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h
    }

    /// An entry with `path` and `link` written verbatim into the header (no checks).
    pub(crate) fn raw(mut self, kind: tar::EntryType, path: &str, link: &str, data: &[u8]) -> Self {
        let mut h = Self::header(kind, 0o644, data.len() as u64);
        {
            let old = h.as_old_mut();
            old.name = [0; 100];
            old.name[..path.len()].copy_from_slice(path.as_bytes());
            old.linkname = [0; 100];
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub(crate) fn dir(self, path: &str, mode: u32) -> Self {
        self.entry(
            tar::EntryType::Directory,
            path,
            None,
            b"",
            mode,
            (0, 0),
            1_600_000_000,
        )
    }

    pub(crate) fn file(self, path: &str, data: &[u8]) -> Self {
        self.entry(
            tar::EntryType::Regular,
            path,
            None,
            data,
            0o644,
            (0, 0),
            1_600_000_000,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn entry(
        mut self,
        kind: tar::EntryType,
        path: &str,
        link: Option<&str>,
        data: &[u8],
        mode: u32,
        (uid, gid): (u64, u64),
        mtime: u64,
    ) -> Self {
        let mut h = Self::header(kind, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime);
        if let Some(link) = link {
            h.set_link_name_literal(link).unwrap();
        }
        self.b.append_data(&mut h, path, data).unwrap();
        self
    }

    pub(crate) fn symlink(self, path: &str, target: &str) -> Self {
        self.entry(
            tar::EntryType::Symlink,
            path,
            Some(target),
            b"",
            0o777,
            (0, 0),
            1_600_000_000,
        )
    }

    pub(crate) fn hardlink(self, path: &str, target: &str) -> Self {
        self.entry(
            tar::EntryType::Link,
            path,
            Some(target),
            b"",
            0o644,
            (0, 0),
            1_600_000_000,
        )
    }

    pub(crate) fn device(
        mut self,
        kind: tar::EntryType,
        path: &str,
        major: u32,
        minor: u32,
    ) -> Self {
        let mut h = Self::header(kind, 0o620, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.b.append_data(&mut h, path, &b""[..]).unwrap();
        self
    }

    /// A regular file carrying PAX xattrs (`SCHILY.xattr.<name>`).
    pub(crate) fn file_with_xattrs(
        mut self,
        path: &str,
        data: &[u8],
        xattrs: &[(&str, &[u8])],
    ) -> Self {
        let ext: Vec<(String, &[u8])> = xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
            .collect();
        self.b
            .append_pax_extensions(ext.iter().map(|(k, v)| (k.as_str(), *v)))
            .unwrap();
        self.file(path, data)
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

pub(crate) fn compress(data: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(data, 1).unwrap(),
    }
}

/// A built image: its manifest descriptor, id and diff ids.
#[derive(Debug, Clone)]
pub(crate) struct Built {
    pub desc: Value,
    pub id: String,
    pub diff_ids: Vec<String>,
    pub layer_digests: Vec<String>,
}

/// Writes an OCI image layout directory.
pub(crate) struct LayoutBuilder {
    pub dir: PathBuf,
    index: Vec<Value>,
}

impl LayoutBuilder {
    pub(crate) fn new(dir: &Path) -> Self {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Self {
            dir: dir.to_path_buf(),
            index: Vec::new(),
        }
    }

    pub(crate) fn blob(&self, data: &[u8]) -> (String, u64) {
        let digest = sha256_of(data);
        fs::write(self.dir.join("blobs/sha256").join(&digest[7..]), data).unwrap();
        (digest, data.len() as u64)
    }

    /// An image of `layers` (uncompressed tars, compressed as given) with `config` as the
    /// runtime config and `arch` as its architecture.
    pub(crate) fn image(
        &self,
        layers: &[(Vec<u8>, Compression)],
        config: Value,
        arch: &str,
    ) -> Built {
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        let mut layer_digests = Vec::new();
        for (tar, c) in layers {
            diff_ids.push(sha256_of(tar));
            let (digest, size) = self.blob(&compress(tar, *c));
            layer_digests.push(digest.clone());
            descs.push(json!({"mediaType": c.oci_media_type(), "digest": digest, "size": size}));
        }
        let config = json!({
            "architecture": arch, "os": "linux", "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let (config_digest, config_size) = self.blob(&serde_json::to_vec(&config).unwrap());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config_size},
            "layers": descs,
        });
        let (digest, size) = self.blob(&serde_json::to_vec(&manifest).unwrap());
        Built {
            desc: json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                         "digest": digest, "size": size}),
            id: config_digest,
            diff_ids,
            layer_digests,
        }
    }

    /// A multi-platform index over `(image, arch)` pairs; returns its descriptor.
    pub(crate) fn platform_index(&self, images: &[(&Built, &str)]) -> Value {
        let manifests: Vec<Value> = images
            .iter()
            .map(|(b, arch)| {
                let mut d = b.desc.clone();
                d["platform"] = json!({"os": "linux", "architecture": arch});
                d
            })
            .collect();
        let index = json!({"schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
        let (digest, size) = self.blob(&serde_json::to_vec(&index).unwrap());
        json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest, "size": size})
    }

    /// Add `desc` to index.json, named `name` (as `org.opencontainers.image.ref.name`).
    pub(crate) fn add(&mut self, desc: &Value, name: Option<&str>) -> &mut Self {
        let mut d = desc.clone();
        if let Some(name) = name {
            d["annotations"] = json!({"org.opencontainers.image.ref.name": name});
        }
        self.index.push(d);
        self
    }

    pub(crate) fn write_index(&self) {
        let index = json!({"schemaVersion": 2, "manifests": self.index});
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }
}

/// A tar of the directory `dir` (for archive imports).
pub(crate) fn tar_dir(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap()
}
