//! Importing OCI image layouts and `docker save` archives.
//!
//! A tar (optionally gzip- or zstd-compressed) is first extracted into the store's `tmp/`
//! (regular files and directories only, links remembered as aliases, nothing outside the
//! extraction directory), so both kinds of input are read as a directory. Blobs from an
//! extracted archive are verified and renamed into `blobs/`; from a directory given by the
//! caller they are copied.
//!
//! With `index.json` (an OCI layout, and Docker 25+ archives) each entry is an image: a
//! manifest, or an index from which the store's platform is picked. Names come from the
//! `io.containerd.image.name` annotation and from `org.opencontainers.image.ref.name` when
//! that is a full reference; a bare tag there (`latest`, as skopeo and umoci write) becomes
//! a name only with a repository from [`ImageStore::import_as`]. With `manifest.json`
//! (`docker save`) its `RepoTags` name the images; in the legacy format, without
//! `index.json`, the store writes an OCI manifest for each image.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;
use tracing::{debug, info, info_span, warn};

use super::config::RawImageConfig;
use super::digest::{sha256_hex, sha256_of, verify, HashingReader};
use super::reference::{is_bare_tag, Reference};
use super::store::{build_record, io_err, remove_tree, LayerRef, Record, MAX_METADATA_BYTES};
use super::unpack::Compression;
use super::{Error, Image, ImageStore, Result};

const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
const MANIFEST_TYPES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const CONFIG_TYPES: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
const MAX_ALIAS_HOPS: usize = 32;

impl ImageStore {
    /// Import every image in an OCI layout (directory or tar) or `docker save` archive,
    /// unpacking their layers. Returns the imported images with all their names. On error
    /// no image is added (blobs already copied stay until gc).
    pub fn import(&self, path: &Path) -> Result<Vec<Image>> {
        self.import_inner(path, None)
    }

    /// As [`ImageStore::import`], and a bare tag in `org.opencontainers.image.ref.name`
    /// (as `umoci` and `skopeo copy … oci:dir:tag` write) names the image
    /// `repository:tag`.
    pub fn import_as(&self, path: &Path, repository: &str) -> Result<Vec<Image>> {
        Reference::parse(repository)?;
        self.import_inner(path, Some(repository))
    }

    /// Import an archive (tar of an OCI layout or `docker save` output) from a stream.
    pub fn import_reader(&self, reader: impl Read) -> Result<Vec<Image>> {
        let span = info_span!("import", source = "stream");
        let _span = span.enter();
        let _lock = self.lock_shared()?;
        let source = Source::extract(self, reader, Path::new("<stream>"))?;
        self.import_source(&source, None)
    }

    fn import_inner(&self, path: &Path, base: Option<&str>) -> Result<Vec<Image>> {
        let span = info_span!("import", path = %path.display());
        let _span = span.enter();
        let _lock = self.lock_shared()?;
        let meta = fs::metadata(path).map_err(io_err(path))?;
        let source = if meta.is_dir() {
            Source::dir(path)
        } else {
            let file = File::open(path).map_err(io_err(path))?;
            Source::extract(self, BufReader::with_capacity(256 * 1024, file), path)?
        };
        self.import_source(&source, base)
    }

    fn import_source(&self, src: &Source, base: Option<&str>) -> Result<Vec<Image>> {
        let found = self.discover(src, base)?;
        self.prepare_layers(found.iter().map(|(r, _)| r))?;
        let images = self.commit(found)?;
        for image in &images {
            info!(image = %image.id, names = ?image.names, "image imported");
        }
        Ok(images)
    }

    fn discover(
        &self,
        src: &Source,
        base: Option<&str>,
    ) -> Result<Vec<(Record, BTreeSet<String>)>> {
        let has_index = src.exists("index.json");
        let has_manifest_json = src.exists("manifest.json");
        if !has_index && !has_manifest_json {
            return Err(src.format_err(
                "not an OCI layout or docker-save archive: no index.json or manifest.json",
            ));
        }
        let mut found: Vec<(Record, BTreeSet<String>)> = Vec::new();
        let mut other_platforms = Vec::new();
        let add = |found: &mut Vec<(Record, BTreeSet<String>)>,
                   record: Record,
                   names: BTreeSet<String>| {
            match found.iter_mut().find(|(r, _)| r.id == record.id) {
                Some((_, existing)) => existing.extend(names),
                None => found.push((record, names)),
            }
        };
        if has_index {
            if src.exists("oci-layout") {
                check_layout_version(src)?;
            }
            let bytes = src.read_small("index.json")?;
            let index: ImageIndex = parse_json(&bytes, || src.what("index.json"))?;
            for desc in index.manifests() {
                let names = names_from_annotations(desc, base);
                match self.import_descriptor(src, desc)? {
                    Outcome::Image(record) => add(&mut found, *record, names),
                    Outcome::OtherPlatform(p) => other_platforms.extend(p),
                    Outcome::NotAnImage => {}
                }
            }
        }
        if has_manifest_json {
            let bytes = src.read_small("manifest.json")?;
            let entries: Vec<LegacyEntry> = parse_json(&bytes, || src.what("manifest.json"))?;
            for entry in entries {
                let names: BTreeSet<String> = entry
                    .repo_tags
                    .iter()
                    .flatten()
                    .filter_map(|t| normalized_name(t))
                    .collect();
                let config_digest = src.digest_of(&entry.config)?;
                if let Some((_, existing)) = found.iter_mut().find(|(r, _)| r.id == config_digest) {
                    // Docker 25+: the same image is in index.json; take its RepoTags.
                    existing.extend(names);
                    continue;
                }
                match self.import_legacy(src, &entry)? {
                    Outcome::Image(record) => add(&mut found, *record, names),
                    Outcome::OtherPlatform(p) => other_platforms.extend(p),
                    Outcome::NotAnImage => {}
                }
            }
        }
        if found.is_empty() {
            if !other_platforms.is_empty() {
                return Err(Error::Platform {
                    path: src.display.clone(),
                    wanted: self.platform().to_string(),
                    found: other_platforms,
                });
            }
            return Err(src.format_err("no images found"));
        }
        Ok(found)
    }

    fn import_descriptor(&self, src: &Source, desc: &Descriptor) -> Result<Outcome> {
        let media_type = desc.media_type().to_string();
        if INDEX_TYPES.contains(&media_type.as_str()) {
            let digest = desc.digest().to_string();
            let bytes = src.read_blob(&digest, Some(desc.size()))?;
            let index: ImageIndex = parse_json(&bytes, || format!("index {digest}"))?;
            let mut seen = Vec::new();
            for child in index.manifests() {
                if !MANIFEST_TYPES.contains(&child.media_type().to_string().as_str()) {
                    continue;
                }
                let Some(p) = child.platform() else {
                    continue;
                };
                let (os, arch) = (p.os().to_string(), p.architecture().to_string());
                if self.platform().matches(&os, &arch, p.variant().as_deref()) {
                    debug!(index = %digest, manifest = %child.digest(), "picked platform manifest");
                    return self.import_manifest(src, child);
                }
                seen.push(match p.variant() {
                    Some(v) => format!("{os}/{arch}/{v}"),
                    None => format!("{os}/{arch}"),
                });
            }
            return Ok(Outcome::OtherPlatform(seen));
        }
        if MANIFEST_TYPES.contains(&media_type.as_str()) {
            if let Some(p) = desc.platform() {
                let (os, arch) = (p.os().to_string(), p.architecture().to_string());
                if !self.platform().matches(&os, &arch, p.variant().as_deref()) {
                    return Ok(Outcome::OtherPlatform(vec![format!("{os}/{arch}")]));
                }
            }
            return self.import_manifest(src, desc);
        }
        debug!(media_type, digest = %desc.digest(), "skipping index entry that is not an image");
        Ok(Outcome::NotAnImage)
    }

    fn import_manifest(&self, src: &Source, desc: &Descriptor) -> Result<Outcome> {
        let manifest_digest = desc.digest().to_string();
        let bytes = src.read_blob(&manifest_digest, Some(desc.size()))?;
        let manifest: ImageManifest = parse_json(&bytes, || format!("manifest {manifest_digest}"))?;
        let config_desc = manifest.config();
        let config_type = config_desc.media_type().to_string();
        if !CONFIG_TYPES.contains(&config_type.as_str()) {
            debug!(manifest = %manifest_digest, config_type, "skipping manifest that is not an image");
            return Ok(Outcome::NotAnImage);
        }
        let config_digest = config_desc.digest().to_string();
        let config_bytes = src.read_blob(&config_digest, Some(config_desc.size()))?;
        let raw: RawImageConfig = parse_json(&config_bytes, || format!("config {config_digest}"))?;
        if let Some(other) = self.other_platform(&raw) {
            return Ok(Outcome::OtherPlatform(vec![other]));
        }
        let mut layers = Vec::new();
        for layer in manifest.layers() {
            let digest = layer.digest().to_string();
            let media_type = layer.media_type().to_string();
            Compression::from_media_type(&media_type).map_err(|reason| {
                Error::UnsupportedLayer {
                    layer: digest.clone(),
                    reason,
                }
            })?;
            let (_, size) =
                src.store_blob(self, &blob_rel(&digest)?, Some(&digest), Some(layer.size()))?;
            layers.push(LayerRef {
                digest,
                media_type,
                size,
            });
        }
        let record = build_record(
            &manifest_digest,
            bytes.len() as u64,
            &config_digest,
            config_bytes.len() as u64,
            &raw,
            layers,
            &src.display,
        )?;
        self.put_blob(&config_bytes[..], Some(&config_digest), None)?;
        self.put_blob(&bytes[..], Some(&manifest_digest), None)?;
        Ok(Outcome::Image(Box::new(record)))
    }

    /// A legacy `docker save` image: a config file and uncompressed layer tars, no
    /// manifest; write an OCI manifest for it.
    fn import_legacy(&self, src: &Source, entry: &LegacyEntry) -> Result<Outcome> {
        let config_bytes = src.read_small(&entry.config)?;
        let config_digest = sha256_of(&config_bytes);
        if let Some(named) = digest_from_blob_path(&entry.config) {
            verify(|| src.what(&entry.config), &named, &config_digest)?;
        }
        let raw: RawImageConfig = parse_json(&config_bytes, || src.what(&entry.config))?;
        if let Some(other) = self.other_platform(&raw) {
            return Ok(Outcome::OtherPlatform(vec![other]));
        }
        let mut layers = Vec::new();
        for path in &entry.layers {
            let expected = digest_from_blob_path(path);
            let (digest, size) = src.store_blob(self, path, expected.as_deref(), None)?;
            let mut head = [0u8; 6];
            let n = File::open(self.blob_path(&digest)?)
                .and_then(|mut f| read_up_to(&mut f, &mut head))
                .map_err(io_err(&self.blob_path(&digest)?))?;
            let compression =
                Compression::sniff(&head[..n]).map_err(|reason| Error::UnsupportedLayer {
                    layer: digest.clone(),
                    reason,
                })?;
            layers.push(LayerRef {
                digest,
                media_type: compression.oci_media_type().to_string(),
                size,
            });
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPES[0],
            "config": {
                "mediaType": CONFIG_TYPES[0],
                "digest": config_digest,
                "size": config_bytes.len(),
            },
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": l.media_type,
                "digest": l.digest,
                "size": l.size,
            })).collect::<Vec<_>>(),
        });
        let manifest_bytes = serde_json::to_vec(&manifest).map_err(|source| Error::Json {
            what: src.what("manifest.json"),
            source,
        })?;
        let manifest_digest = sha256_of(&manifest_bytes);
        let record = build_record(
            &manifest_digest,
            manifest_bytes.len() as u64,
            &config_digest,
            config_bytes.len() as u64,
            &raw,
            layers,
            &src.display,
        )?;
        self.put_blob(&config_bytes[..], Some(&config_digest), None)?;
        self.put_blob(&manifest_bytes[..], Some(&manifest_digest), None)?;
        Ok(Outcome::Image(Box::new(record)))
    }

    /// `Some("os/arch")` when the config is for a platform other than the store's.
    fn other_platform(&self, raw: &RawImageConfig) -> Option<String> {
        let os = raw.os.as_deref().unwrap_or_default();
        let arch = raw.architecture.as_deref().unwrap_or_default();
        (!self.platform().matches(os, arch, raw.variant.as_deref())).then(|| format!("{os}/{arch}"))
    }
}

enum Outcome {
    Image(Box<Record>),
    OtherPlatform(Vec<String>),
    NotAnImage,
}

/// One entry of a `docker save` `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LegacyEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::Json {
        what: what(),
        source,
    })
}

fn check_layout_version(src: &Source) -> Result<()> {
    #[derive(Deserialize)]
    struct Layout {
        #[serde(rename = "imageLayoutVersion")]
        version: String,
    }
    let layout: Layout = parse_json(&src.read_small("oci-layout")?, || src.what("oci-layout"))?;
    if !layout.version.starts_with("1.") {
        return Err(src.format_err(&format!(
            "unsupported imageLayoutVersion {:?}",
            layout.version
        )));
    }
    Ok(())
}

fn normalized_name(name: &str) -> Option<String> {
    match Reference::parse(name) {
        Ok(r) if r.digest.is_none() => r.tagged_name(),
        Ok(_) => None,
        Err(e) => {
            warn!(name, error = %e, "ignoring invalid image name");
            None
        }
    }
}

fn names_from_annotations(desc: &Descriptor, base: Option<&str>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let Some(annotations) = desc.annotations() else {
        return names;
    };
    if let Some(n) = annotations.get(ANNOTATION_CONTAINERD_NAME) {
        names.extend(normalized_name(n));
    }
    if let Some(r) = annotations.get(ANNOTATION_REF_NAME) {
        if is_bare_tag(r) {
            match base {
                Some(base) => names.extend(normalized_name(&format!("{base}:{r}"))),
                None => debug!(tag = %r, "bare ref.name without a repository; not a name"),
            }
        } else {
            names.extend(normalized_name(r));
        }
    }
    names
}

/// `blobs/sha256/<hex>` for a digest.
fn blob_rel(digest: &str) -> Result<String> {
    Ok(format!("blobs/sha256/{}", sha256_hex(digest)?))
}

/// The digest a `blobs/sha256/<hex>` path names, if it is one.
fn digest_from_blob_path(path: &str) -> Option<String> {
    let hex = path
        .trim_start_matches("./")
        .strip_prefix("blobs/sha256/")?;
    let digest = format!("sha256:{hex}");
    sha256_hex(&digest).is_ok().then_some(digest)
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Normal components of `path` with `.` and `..` applied; `None` if it climbs above the
/// root or is absolute.
fn lexical_clean(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// An image layout or archive, as a directory.
struct Source {
    /// Where the files are: the caller's directory, or an extraction under `tmp/`.
    dir: PathBuf,
    /// What the caller named, for messages.
    display: PathBuf,
    /// Symlinks and hardlinks of an extracted archive: link path to target path.
    aliases: HashMap<PathBuf, PathBuf>,
    /// True when `dir` is ours to consume (files are moved into the store).
    owned: bool,
    /// Files already moved into the store, by path, with their digest and size.
    moved: RefCell<HashMap<PathBuf, (String, u64)>>,
}

impl Drop for Source {
    fn drop(&mut self) {
        if self.owned {
            if let Err(e) = remove_tree(&self.dir) {
                warn!(error = %e, "could not remove extracted archive");
            }
        }
    }
}

impl Source {
    fn dir(path: &Path) -> Source {
        Source {
            dir: path.to_path_buf(),
            display: path.to_path_buf(),
            aliases: HashMap::new(),
            owned: false,
            moved: RefCell::new(HashMap::new()),
        }
    }

    /// Extract a tar (plain, gzip or zstd) into the store's `tmp/`: directories and
    /// regular files only; symlinks and hardlinks become aliases resolved on lookup.
    fn extract(store: &ImageStore, reader: impl Read, display: &Path) -> Result<Source> {
        let dir = store.tmp_path("import");
        fs::create_dir(&dir).map_err(io_err(&dir))?;
        let mut src = Source {
            dir,
            display: display.to_path_buf(),
            aliases: HashMap::new(),
            owned: true,
            moved: RefCell::new(HashMap::new()),
        };
        src.extract_into(reader)?;
        Ok(src)
    }

    fn extract_into(&mut self, mut reader: impl Read) -> Result<()> {
        let corrupt = |e: io::Error| self.format_err(&format!("reading archive: {e}"));
        let mut head = [0u8; 6];
        let n = read_up_to(&mut reader, &mut head).map_err(corrupt)?;
        let stream = io::Cursor::new(head).take(n as u64).chain(reader);
        let decoded: Box<dyn Read> =
            match Compression::sniff(&head[..n]).map_err(|r| self.format_err(&r))? {
                Compression::None => Box::new(stream),
                Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(stream)),
                Compression::Zstd => {
                    Box::new(zstd::stream::read::Decoder::new(stream).map_err(corrupt)?)
                }
            };
        let mut archive = tar::Archive::new(decoded);
        let mut aliases = HashMap::new();
        for entry in archive.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            let raw = entry.path_bytes().into_owned();
            let Some(rel) = lexical_clean(Path::new(OsStr::from_bytes(&raw))) else {
                return Err(self.format_err(&format!(
                    "archive entry {:?} escapes the archive",
                    String::from_utf8_lossy(&raw)
                )));
            };
            if rel.as_os_str().is_empty() {
                continue;
            }
            let kind = entry.header().entry_type();
            let full = self.dir.join(&rel);
            if kind.is_dir() {
                fs::create_dir_all(&full).map_err(io_err(&full))?;
            } else if kind.is_file() || kind.is_contiguous() {
                if let Some(parent) = full.parent() {
                    fs::create_dir_all(parent).map_err(io_err(parent))?;
                }
                // Only files and directories are ever made here, so this cannot follow a
                // link out of the extraction directory.
                let mut out = File::create(&full).map_err(io_err(&full))?;
                io::copy(&mut entry, &mut out)
                    .map_err(|e| self.format_err(&format!("{}: {e}", rel.display())))?;
            } else if kind.is_symlink() || kind.is_hard_link() {
                let Some(link) = entry.link_name_bytes().map(|l| l.into_owned()) else {
                    continue;
                };
                let link = Path::new(OsStr::from_bytes(&link));
                let target = if kind.is_symlink() {
                    rel.parent().unwrap_or(Path::new("")).join(link)
                } else {
                    link.to_path_buf()
                };
                // Targets outside the archive are left dangling.
                if let Some(target) = lexical_clean(&target) {
                    aliases.insert(rel, target);
                }
            }
        }
        self.aliases = aliases;
        Ok(())
    }

    fn what(&self, rel: &str) -> String {
        format!("{}: {rel}", self.display.display())
    }

    fn format_err(&self, reason: &str) -> Error {
        Error::Format {
            path: self.display.clone(),
            reason: reason.to_string(),
        }
    }

    /// The file a path in the layout refers to, after links; refuses paths that leave it.
    fn resolve(&self, rel: &str) -> Result<PathBuf> {
        let mut path = lexical_clean(Path::new(rel))
            .ok_or_else(|| self.format_err(&format!("path {rel:?} escapes the layout")))?;
        'hops: for _ in 0..MAX_ALIAS_HOPS {
            let mut prefix = PathBuf::new();
            let comps: Vec<_> = path.components().collect();
            for (i, c) in comps.iter().enumerate() {
                prefix.push(c);
                if let Some(target) = self.aliases.get(&prefix) {
                    let mut next = target.clone();
                    next.extend(&comps[i + 1..]);
                    path = lexical_clean(&next).ok_or_else(|| {
                        self.format_err(&format!("path {rel:?} escapes the layout"))
                    })?;
                    continue 'hops;
                }
            }
            return Ok(path);
        }
        Err(self.format_err(&format!("too many links resolving {rel:?}")))
    }

    fn exists(&self, rel: &str) -> bool {
        self.resolve(rel)
            .is_ok_and(|p| self.moved.borrow().contains_key(&p) || self.dir.join(p).is_file())
    }

    /// Open a file of the layout (or, if it was already moved, its blob in the store).
    fn open(&self, store: Option<&ImageStore>, rel: &str) -> Result<(PathBuf, File)> {
        let resolved = self.resolve(rel)?;
        let path = match (self.moved.borrow().get(&resolved), store) {
            (Some((digest, _)), Some(store)) => store.blob_path(digest)?,
            _ => self.dir.join(&resolved),
        };
        let file = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => self.format_err(&format!("{rel} is missing")),
            _ => io_err(&path)(e),
        })?;
        Ok((path, file))
    }

    fn read_small(&self, rel: &str) -> Result<Vec<u8>> {
        let (path, file) = self.open(None, rel)?;
        let mut data = Vec::new();
        file.take(MAX_METADATA_BYTES + 1)
            .read_to_end(&mut data)
            .map_err(io_err(&path))?;
        if data.len() as u64 > MAX_METADATA_BYTES {
            return Err(
                self.format_err(&format!("{rel} is larger than {MAX_METADATA_BYTES} bytes"))
            );
        }
        Ok(data)
    }

    /// A small blob (manifest, index, config) of the layout, verified.
    fn read_blob(&self, digest: &str, size: Option<u64>) -> Result<Vec<u8>> {
        let rel = blob_rel(digest)?;
        if !self.exists(&rel) {
            return Err(Error::MissingBlob {
                digest: digest.to_string(),
                path: self.display.clone(),
            });
        }
        let data = self.read_small(&rel)?;
        verify(|| self.what(&rel), digest, &sha256_of(&data))?;
        if let Some(want) = size {
            if want != data.len() as u64 {
                return Err(Error::SizeMismatch {
                    what: self.what(&rel),
                    expected: want,
                    actual: data.len() as u64,
                });
            }
        }
        Ok(data)
    }

    /// The digest of a file of the layout: from its `blobs/sha256/` name or by hashing.
    fn digest_of(&self, rel: &str) -> Result<String> {
        if let Some(d) = digest_from_blob_path(rel) {
            return Ok(d);
        }
        Ok(sha256_of(&self.read_small(rel)?))
    }

    /// Put a file of the layout into the store's blobs (moving it when the layout is an
    /// extraction of ours), checking the expected digest and size.
    fn store_blob(
        &self,
        store: &ImageStore,
        rel: &str,
        expected: Option<&str>,
        size: Option<u64>,
    ) -> Result<(String, u64)> {
        let resolved = self.resolve(rel)?;
        if let Some((digest, n)) = self.moved.borrow().get(&resolved).cloned() {
            if let Some(e) = expected {
                verify(|| self.what(rel), e, &digest)?;
            }
            return Ok((digest, n));
        }
        if let Some(e) = expected {
            if !self.exists(rel) {
                return Err(Error::MissingBlob {
                    digest: e.to_string(),
                    path: self.display.clone(),
                });
            }
        }
        let (path, file) = self.open(Some(store), rel)?;
        if !self.owned {
            return store.put_blob(BufReader::new(file), expected, size);
        }
        let (digest, n) = HashingReader::new(BufReader::new(file))
            .drain_and_finish()
            .map_err(io_err(&path))?;
        if let Some(e) = expected {
            verify(|| self.what(rel), e, &digest)?;
        }
        if let Some(want) = size {
            if want != n {
                return Err(Error::SizeMismatch {
                    what: self.what(rel),
                    expected: want,
                    actual: n,
                });
            }
        }
        store.install_blob(&path, &digest)?;
        self.moved
            .borrow_mut()
            .insert(resolved, (digest.clone(), n));
        Ok((digest, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_clean_stays_inside() {
        assert_eq!(
            lexical_clean(Path::new("./a/b/../c")),
            Some(PathBuf::from("a/c"))
        );
        assert_eq!(lexical_clean(Path::new("a/..")), Some(PathBuf::new()));
        assert_eq!(lexical_clean(Path::new("../a")), None);
        assert_eq!(lexical_clean(Path::new("a/../../b")), None);
        assert_eq!(lexical_clean(Path::new("/etc/passwd")), None);
    }

    #[test]
    fn blob_paths_name_digests() {
        let hex = "a".repeat(64);
        assert_eq!(
            digest_from_blob_path(&format!("blobs/sha256/{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(digest_from_blob_path(&format!("{hex}.json")), None);
        assert_eq!(digest_from_blob_path("blobs/sha256/../../x"), None);
    }
}
