//! [`ImageStore`]: blobs, unpacked layers, image records and names on disk.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, info_span, warn};

use super::digest::{is_sha256_hex, sha256_hex, verify, HashingReader};
use super::reference::Reference;
use super::unpack::unpack_layer;
use super::{Error, GcReport, Image, ImageConfig, Platform, Result};

const BLOBS_DIR: &str = "blobs/sha256";
const LAYERS_DIR: &str = "layers";
const IMAGES_DIR: &str = "images";
const TMP_DIR: &str = "tmp";
const NAMES_FILE: &str = "names.json";
const LOCK_FILE: &str = "lock";
const NAMES_LOCK_FILE: &str = "names.lock";

/// Manifests, configs, indexes and archive metadata larger than this are refused.
pub(crate) const MAX_METADATA_BYTES: u64 = 32 << 20;

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The image store rooted at one directory. Cheap to clone; every method reads or writes
/// the disk, so clones (and other processes) see each other's changes. Safe to use from
/// many threads and processes at once (see the module docs for the locking).
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    platform: Platform,
}

/// One layer of a stored image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LayerRef {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

/// What `images/<hex>.json` holds: everything about an image except its names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub id: String,
    pub manifest_digest: String,
    pub manifest_size: u64,
    pub config_size: u64,
    pub os: String,
    pub architecture: String,
    pub config: ImageConfig,
    pub layers: Vec<LayerRef>,
    pub diff_ids: Vec<String>,
}

impl Record {
    fn image(&self, names: &BTreeMap<String, String>) -> Image {
        Image {
            id: self.id.clone(),
            names: names
                .iter()
                .filter(|(n, id)| **id == self.id && !is_digest_name(n))
                .map(|(n, _)| n.clone())
                .collect(),
            repo_digests: names
                .iter()
                .filter(|(n, id)| **id == self.id && is_digest_name(n))
                .map(|(n, _)| n.clone())
                .collect(),
            manifest_digest: self.manifest_digest.clone(),
            config: self.config.clone(),
            layers: self.layers.iter().map(|l| l.digest.clone()).collect(),
            diff_ids: self.diff_ids.clone(),
            size: self.manifest_size
                + self.config_size
                + self.layers.iter().map(|l| l.size).sum::<u64>(),
        }
    }
}

/// How a reference matched in [`ImageStore::get`].
enum Match {
    Name(String),
    Digest,
    Id,
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl ImageStore {
    /// Open (creating if needed) the store at `root`. Clears what a crashed writer left in
    /// `tmp/`, unless another process holds the store's lock right now. Imports pick the
    /// host's platform from multi-platform indexes; see [`ImageStore::with_platform`].
    pub fn open(root: &Path) -> Result<ImageStore> {
        let store = ImageStore {
            root: root.to_path_buf(),
            platform: Platform::host(),
        };
        for dir in [BLOBS_DIR, LAYERS_DIR, IMAGES_DIR, TMP_DIR] {
            let path = root.join(dir);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&path)
                .map_err(io_err(&path))?;
        }
        // Layer directories must be reachable for overlay mounts done on behalf of
        // containers that drop privileges.
        for dir in [root.to_path_buf(), root.join(LAYERS_DIR)] {
            fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o711))
                .map_err(io_err(&dir))?;
        }
        if let Some(_lock) = store.try_lock_exclusive()? {
            store.clear_tmp()?;
        } else {
            debug!(root = %root.display(), "store busy; leaving tmp/ alone");
        }
        Ok(store)
    }

    /// Pick `platform` instead of the host's from multi-platform indexes.
    pub fn with_platform(mut self, platform: Platform) -> ImageStore {
        self.platform = platform;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    // ---- blobs ----

    /// Store a blob, hashing it as it is written; with `expected` (`sha256:<hex>`), a
    /// different digest is an error and nothing is stored. Returns the digest.
    ///
    /// A blob no image refers to is removed by the next [`ImageStore::gc`]; a puller should
    /// add an image's blobs and then call [`ImageStore::create_image`].
    pub fn add_blob(&self, data: impl Read, expected: Option<&str>) -> Result<String> {
        let _lock = self.lock_shared()?;
        Ok(self.put_blob(data, expected, None)?.0)
    }

    /// A blob's content, verified against its digest.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        self.read_blob_limited(digest, u64::MAX)
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    /// Where the blob `digest` is (or would be) stored.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join(BLOBS_DIR).join(sha256_hex(digest)?))
    }

    pub(crate) fn read_blob_limited(&self, digest: &str, limit: u64) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let file = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::MissingBlob {
                digest: digest.to_string(),
                path: self.root.clone(),
            },
            _ => Error::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        let mut reader = HashingReader::new(file.take(limit.saturating_add(1)));
        let mut data = Vec::new();
        reader.read_to_end(&mut data).map_err(io_err(&path))?;
        if data.len() as u64 > limit {
            return Err(Error::Format {
                path,
                reason: format!("blob larger than {limit} bytes"),
            });
        }
        let (actual, _) = reader.finish();
        verify(|| format!("blob {}", path.display()), digest, &actual)?;
        Ok(data)
    }

    /// Write a blob through `tmp/` (the caller holds the shared lock).
    pub(crate) fn put_blob(
        &self,
        data: impl Read,
        expected: Option<&str>,
        expected_size: Option<u64>,
    ) -> Result<(String, u64)> {
        if let Some(e) = expected {
            sha256_hex(e)?;
        }
        let (tmp, file) = self.tmp_file("blob")?;
        let result = (|| {
            let mut reader = HashingReader::new(data);
            let mut out = io::BufWriter::new(file);
            io::copy(&mut reader, &mut out).map_err(io_err(&tmp))?;
            let file = out.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
            file.sync_all().map_err(io_err(&tmp))?;
            let (digest, size) = reader.finish();
            if let Some(e) = expected {
                verify(|| "blob".to_string(), e, &digest)?;
            }
            if let Some(want) = expected_size {
                if want != size {
                    return Err(Error::SizeMismatch {
                        what: format!("blob {digest}"),
                        expected: want,
                        actual: size,
                    });
                }
            }
            Ok((digest, size))
        })();
        match result {
            Ok((digest, size)) => {
                self.install_blob(&tmp, &digest)?;
                Ok((digest, size))
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Rename a verified file (on the store's filesystem) into `blobs/`. Replacing an
    /// existing blob is harmless: the content is the same, and open readers keep theirs.
    pub(crate) fn install_blob(&self, from: &Path, digest: &str) -> Result<()> {
        let dest = self.blob_path(digest)?;
        fs::set_permissions(from, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .map_err(io_err(from))?;
        fs::rename(from, &dest).map_err(io_err(&dest))?;
        sync_dir(dest.parent().unwrap_or(&self.root))?;
        debug!(digest, "blob stored");
        Ok(())
    }

    // ---- images ----

    /// Find an image by name (`busybox`, `busybox:1.36`, `docker.io/library/busybox:latest`),
    /// by `name@sha256:<manifest digest>`, by id (`sha256:<config digest>`) or by a unique
    /// prefix of the id's hex, with or without `sha256:`.
    pub fn get(&self, reference: &str) -> Result<Image> {
        let names = self.load_names()?;
        let records = self.load_records()?;
        let (record, _) = resolve(reference, &names, &records)?;
        Ok(record.image(&names))
    }

    /// Every image, sorted by first name (unnamed last), then id.
    pub fn list(&self) -> Result<Vec<Image>> {
        let names = self.load_names()?;
        let mut images: Vec<Image> = self
            .load_records()?
            .values()
            .map(|r| r.image(&names))
            .collect();
        images.sort_by(|a, b| {
            (a.names.is_empty(), a.names.first(), &a.id).cmp(&(
                b.names.is_empty(),
                b.names.first(),
                &b.id,
            ))
        });
        Ok(images)
    }

    /// Give the image `reference` (usually an id) the name `name`, moving the name if
    /// another image had it (that image stays, perhaps without a name, until gc).
    pub fn tag(&self, reference: &str, name: &str) -> Result<()> {
        let parsed = Reference::parse(name)?;
        let Some(tagged) = parsed.tagged_name().filter(|_| parsed.digest.is_none()) else {
            return Err(Error::InvalidReference {
                reference: name.to_string(),
                reason: "a name to tag with cannot have a digest".into(),
            });
        };
        // Shared: the new names.json is written through tmp/, which open() may clear.
        let _shared = self.lock_shared()?;
        let _lock = self.lock_names()?;
        let mut names = self.load_names()?;
        let records = self.load_records()?;
        let (record, _) = resolve(reference, &names, &records)?;
        let id = record.id.clone();
        if names.insert(tagged.clone(), id.clone()).as_ref() != Some(&id) {
            self.write_names(&names)?;
        }
        info!(image = %id, name = %tagged, "tagged");
        Ok(())
    }

    /// Remove a name; an image left without names is removed. By id (or digest), remove
    /// the image and all its names. Blobs and layers stay until [`ImageStore::gc`].
    pub fn remove(&self, reference: &str) -> Result<()> {
        let _shared = self.lock_shared()?;
        let _lock = self.lock_names()?;
        let mut names = self.load_names()?;
        let records = self.load_records()?;
        let (record, how) = resolve(reference, &names, &records)?;
        let id = record.id.clone();
        let drop_image = match how {
            Match::Name(name) => {
                names.remove(&name);
                info!(image = %id, %name, "untagged");
                // Pulled digests are not tags: an image left with only those goes.
                let tagged = names.iter().any(|(n, v)| *v == id && !is_digest_name(n));
                if !tagged {
                    names.retain(|_, v| *v != id);
                }
                !tagged
            }
            Match::Id | Match::Digest => {
                names.retain(|_, v| *v != id);
                true
            }
        };
        self.write_names(&names)?;
        if drop_image {
            let path = self.record_path(&id)?;
            fs::remove_file(&path).map_err(io_err(&path))?;
            info!(image = %id, "image removed");
        }
        Ok(())
    }

    /// The unpacked layer directories of `image`, bottom layer first, ready to be
    /// overlayfs lowerdirs (which list the top layer first: reverse this). Layers are
    /// unpacked at import; one missing here (say, after a crash) is unpacked now.
    pub fn layer_dirs(&self, image: &Image) -> Result<Vec<PathBuf>> {
        let record = self
            .load_record(&image.id)?
            .ok_or_else(|| Error::NotFound {
                reference: image.id.clone(),
            })?;
        let _lock = self.lock_shared()?;
        record
            .layers
            .iter()
            .zip(&record.diff_ids)
            .map(|(layer, diff_id)| self.ensure_layer(layer, diff_id, false))
            .collect()
    }

    /// Make an image from a manifest whose blobs (manifest, config, layers) are already
    /// in the store, as a registry puller would after [`ImageStore::add_blob`]; unpack its
    /// layers and give it `names`.
    pub fn create_image(&self, manifest_digest: &str, names: &[&str]) -> Result<Image> {
        let _lock = self.lock_shared()?;
        let names = names
            .iter()
            .map(|n| {
                Reference::parse(n)?
                    .tagged_name()
                    .ok_or_else(|| Error::InvalidReference {
                        reference: n.to_string(),
                        reason: "an image name needs a tag, not a digest".into(),
                    })
            })
            .collect::<Result<BTreeSet<_>>>()?;
        let record = self.record_from_store(manifest_digest)?;
        self.prepare_layers([&record])?;
        let mut images = self.commit(vec![(record, names)])?;
        Ok(images.remove(0))
    }

    /// Remove every image whose id is not in `in_use`, then every blob and unpacked layer
    /// that no remaining image refers to, and whatever is left in `tmp/`. Entries of
    /// `in_use` that are not ids (`sha256:<hex>` or bare hex) are resolved as references,
    /// so passing a name by mistake keeps that image rather than deleting it. Waits for
    /// imports in progress to finish and blocks new ones while it runs.
    pub fn gc(&self, in_use: &HashSet<String>) -> Result<GcReport> {
        let span = info_span!("image_gc", root = %self.root.display());
        let _span = span.enter();
        let _lock = self.lock_exclusive()?;
        let _names_lock = self.lock_names()?;
        let mut names = self.load_names()?;
        let records = self.load_records()?;
        let mut keep: HashSet<String> = HashSet::new();
        for entry in in_use {
            let id = entry.strip_prefix("sha256:").unwrap_or(entry);
            if is_sha256_hex(id) {
                keep.insert(format!("sha256:{id}"));
            } else if let Ok((record, _)) = resolve(entry, &names, &records) {
                keep.insert(record.id.clone());
            }
        }
        let mut report = GcReport::default();
        let mut kept_blobs = HashSet::new();
        let mut kept_layers = HashSet::new();
        for record in records.values() {
            if keep.contains(&record.id) {
                kept_blobs.insert(record.manifest_digest.clone());
                kept_blobs.insert(record.id.clone());
                kept_blobs.extend(record.layers.iter().map(|l| l.digest.clone()));
                kept_layers.extend(record.diff_ids.iter().cloned());
                continue;
            }
            names.retain(|_, v| *v != record.id);
            let path = self.record_path(&record.id)?;
            fs::remove_file(&path).map_err(io_err(&path))?;
            report.images_removed += 1;
            info!(image = %record.id, "image removed by gc");
        }
        self.write_names(&names)?;

        let blobs = self.root.join(BLOBS_DIR);
        for entry in fs::read_dir(&blobs).map_err(io_err(&blobs))? {
            let entry = entry.map_err(io_err(&blobs))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if kept_blobs.contains(&format!("sha256:{name}")) {
                continue;
            }
            let path = entry.path();
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&path).map_err(io_err(&path))?;
            report.blobs_removed += 1;
            report.bytes_freed += size;
            debug!(blob = %name, size, "blob removed by gc");
        }

        let layers = self.root.join(LAYERS_DIR);
        for entry in fs::read_dir(&layers).map_err(io_err(&layers))? {
            let entry = entry.map_err(io_err(&layers))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if kept_layers.contains(&format!("sha256:{name}")) {
                continue;
            }
            // Out of layers/ first, so a crash mid-delete leaves no partial layer there.
            let doomed = self.tmp_path("gc-layer");
            fs::rename(entry.path(), &doomed).map_err(io_err(&entry.path()))?;
            report.bytes_freed += tree_size(&doomed);
            remove_tree(&doomed)?;
            report.layers_removed += 1;
            debug!(diff_id = %name, "layer removed by gc");
        }
        self.clear_tmp()?;
        info!(
            images = report.images_removed,
            layers = report.layers_removed,
            blobs = report.blobs_removed,
            bytes = report.bytes_freed,
            "image gc done"
        );
        Ok(report)
    }

    // ---- internals shared with import ----

    /// The directory of an unpacked layer, unpacking it first if needed (the caller holds
    /// the shared lock). The blob must match `layer.digest` and its tar `diff_id`. With
    /// `check_existing`, a blob whose layer is already unpacked (from another blob with
    /// the same diff id) is still read and checked, so no image refers to a bad blob.
    pub(crate) fn ensure_layer(
        &self,
        layer: &LayerRef,
        diff_id: &str,
        check_existing: bool,
    ) -> Result<PathBuf> {
        let dest = self.root.join(LAYERS_DIR).join(sha256_hex(diff_id)?);
        let span = info_span!("layer", layer = %layer.digest, %diff_id);
        let _span = span.enter();
        if dest.is_dir() {
            // A blob named by the diff id is the uncompressed tar itself, verified on write.
            if check_existing && layer.digest != diff_id {
                self.read_layer(layer, diff_id, None)?;
                debug!("layer blob checked against the unpacked layer's diff id");
            }
            return Ok(dest);
        }
        let tmp = self.tmp_path("layer");
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&tmp)
            .map_err(io_err(&tmp))?;
        if let Err(e) = self.read_layer(layer, diff_id, Some(&tmp)) {
            if let Err(rm) = remove_tree(&tmp) {
                warn!(error = %rm, path = %tmp.display(), "could not remove a failed unpack");
            }
            return Err(e);
        }
        match fs::rename(&tmp, &dest) {
            Ok(()) => {
                sync_dir(dest.parent().unwrap_or(&self.root))?;
                info!("layer unpacked");
                Ok(dest)
            }
            // Another process or thread unpacked the same layer first.
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOTEMPTY))
                    && dest.is_dir() =>
            {
                debug!("layer unpacked concurrently; using the other copy");
                remove_tree(&tmp)?;
                Ok(dest)
            }
            Err(e) => {
                let _ = remove_tree(&tmp);
                Err(io_err(&dest)(e))
            }
        }
    }

    /// Read a layer blob, unpacking it into `dest` if given, and check its digest, size
    /// and diff id.
    fn read_layer(&self, layer: &LayerRef, diff_id: &str, dest: Option<&Path>) -> Result<()> {
        let blob = self.blob_path(&layer.digest)?;
        let file = File::open(&blob).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::MissingBlob {
                digest: layer.digest.clone(),
                path: self.root.clone(),
            },
            _ => io_err(&blob)(e),
        })?;
        let u = unpack_layer(
            BufReader::with_capacity(128 * 1024, file),
            &layer.media_type,
            &layer.digest,
            dest,
        )
        .map_err(|e| self.explain_unpack_error(e, &layer.digest, &blob))?;
        verify(
            || format!("layer blob {}", blob.display()),
            &layer.digest,
            &u.blob_digest,
        )?;
        if layer.size != u.blob_size {
            return Err(Error::SizeMismatch {
                what: format!("layer {}", layer.digest),
                expected: layer.size,
                actual: u.blob_size,
            });
        }
        verify(
            || format!("diff id of layer {}", layer.digest),
            diff_id,
            &u.diff_id,
        )
    }

    /// `(blob digest, diff id)` pairs of stored images: checked when they were added.
    pub(crate) fn known_layers(&self) -> Result<HashSet<(String, String)>> {
        Ok(self
            .load_records()?
            .values()
            .flat_map(|r| {
                r.layers
                    .iter()
                    .zip(&r.diff_ids)
                    .map(|(l, d)| (l.digest.clone(), d.clone()))
            })
            .collect())
    }

    /// Unpack (or check) the layers of records about to be added.
    pub(crate) fn prepare_layers<'a>(
        &self,
        records: impl IntoIterator<Item = &'a Record>,
    ) -> Result<()> {
        let mut known = self.known_layers()?;
        for record in records {
            for (layer, diff_id) in record.layers.iter().zip(&record.diff_ids) {
                let pair = (layer.digest.clone(), diff_id.clone());
                self.ensure_layer(layer, diff_id, !known.contains(&pair))?;
                known.insert(pair);
            }
        }
        Ok(())
    }

    /// A blob that was corrupted on disk makes the tar reader fail before the digest can
    /// be compared; report the mismatch, which says what is actually wrong.
    fn explain_unpack_error(&self, err: Error, digest: &str, blob: &Path) -> Error {
        if !matches!(
            err,
            Error::CorruptLayer { .. } | Error::UnsupportedLayer { .. }
        ) {
            return err;
        }
        let actual =
            File::open(blob).and_then(|f| HashingReader::new(BufReader::new(f)).drain_and_finish());
        match actual {
            Ok((actual, _)) if actual != digest => Error::DigestMismatch {
                what: format!("layer blob {}", blob.display()),
                expected: digest.to_string(),
                actual,
            },
            _ => err,
        }
    }

    /// Build a record from a manifest and config in the store (verifying both).
    pub(crate) fn record_from_store(&self, manifest_digest: &str) -> Result<Record> {
        let bytes = self.read_blob_limited(manifest_digest, MAX_METADATA_BYTES)?;
        let what = || format!("manifest {manifest_digest}");
        let manifest: oci_spec::image::ImageManifest =
            serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                what: what(),
                source,
            })?;
        let config_digest = manifest.config().digest().to_string();
        let config_bytes = self.read_blob_limited(&config_digest, MAX_METADATA_BYTES)?;
        let raw: super::config::RawImageConfig =
            serde_json::from_slice(&config_bytes).map_err(|source| Error::Json {
                what: format!("config {config_digest}"),
                source,
            })?;
        let layers = manifest
            .layers()
            .iter()
            .map(|l| LayerRef {
                digest: l.digest().to_string(),
                media_type: l.media_type().to_string(),
                size: l.size(),
            })
            .collect();
        build_record(
            manifest_digest,
            bytes.len() as u64,
            &config_digest,
            config_bytes.len() as u64,
            &raw,
            layers,
            &self.root,
        )
    }

    /// Write new image records and names, under the names lock. An image already in the
    /// store keeps its record and gains the names.
    pub(crate) fn commit(&self, found: Vec<(Record, BTreeSet<String>)>) -> Result<Vec<Image>> {
        let _lock = self.lock_names()?;
        let mut names = self.load_names()?;
        let mut changed = false;
        let mut ids = Vec::new();
        for (record, new_names) in &found {
            let path = self.record_path(&record.id)?;
            if !path.exists() {
                self.write_json_atomic(&path, record)?;
                info!(image = %record.id, manifest = %record.manifest_digest, "image added");
            }
            for name in new_names {
                if names.insert(name.clone(), record.id.clone()).as_ref() != Some(&record.id) {
                    changed = true;
                    info!(image = %record.id, %name, "tagged");
                }
            }
            ids.push(record.id.clone());
        }
        if changed {
            self.write_names(&names)?;
        }
        let records = self.load_records()?;
        ids.iter()
            .map(|id| {
                records
                    .get(id)
                    .map(|r| r.image(&names))
                    .ok_or_else(|| Error::NotFound {
                        reference: id.clone(),
                    })
            })
            .collect()
    }

    pub(crate) fn lock_shared(&self) -> Result<Flock<File>> {
        self.lock(LOCK_FILE, FlockArg::LockShared)
    }

    fn lock_exclusive(&self) -> Result<Flock<File>> {
        self.lock(LOCK_FILE, FlockArg::LockExclusive)
    }

    fn try_lock_exclusive(&self) -> Result<Option<Flock<File>>> {
        match self.lock(LOCK_FILE, FlockArg::LockExclusiveNonblock) {
            Ok(l) => Ok(Some(l)),
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn lock_names(&self) -> Result<Flock<File>> {
        self.lock(NAMES_LOCK_FILE, FlockArg::LockExclusive)
    }

    fn lock(&self, file: &str, arg: FlockArg) -> Result<Flock<File>> {
        let path = self.root.join(file);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        Flock::lock(f, arg).map_err(|(_, errno)| io_err(&path)(errno.into()))
    }

    /// A fresh path under `tmp/`; unique within the store across processes.
    pub(crate) fn tmp_path(&self, kind: &str) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        self.root
            .join(TMP_DIR)
            .join(format!("{kind}-{}-{n}-{nanos}", std::process::id()))
    }

    pub(crate) fn tmp_file(&self, kind: &str) -> Result<(PathBuf, File)> {
        loop {
            let path = self.tmp_path(kind);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => return Ok((path, f)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
    }

    fn clear_tmp(&self) -> Result<()> {
        let tmp = self.root.join(TMP_DIR);
        for entry in fs::read_dir(&tmp).map_err(io_err(&tmp))? {
            let entry = entry.map_err(io_err(&tmp))?;
            debug!(path = %entry.path().display(), "removing leftover temporary");
            remove_tree(&entry.path())?;
        }
        Ok(())
    }

    fn record_path(&self, id: &str) -> Result<PathBuf> {
        Ok(self
            .root
            .join(IMAGES_DIR)
            .join(format!("{}.json", sha256_hex(id)?)))
    }

    fn load_record(&self, id: &str) -> Result<Option<Record>> {
        let path = self.record_path(id)?;
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| Error::Json {
                    what: path.display().to_string(),
                    source,
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn load_records(&self) -> Result<BTreeMap<String, Record>> {
        let dir = self.root.join(IMAGES_DIR);
        let mut out = BTreeMap::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(hex) = name.strip_suffix(".json").filter(|h| is_sha256_hex(h)) else {
                continue;
            };
            // Removed since the directory was read: not an error.
            if let Some(record) = self.load_record(&format!("sha256:{hex}"))? {
                out.insert(record.id.clone(), record);
            }
        }
        Ok(out)
    }

    fn load_names(&self) -> Result<BTreeMap<String, String>> {
        let path = self.root.join(NAMES_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                what: path.display().to_string(),
                source,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn write_names(&self, names: &BTreeMap<String, String>) -> Result<()> {
        self.write_json_atomic(&self.root.join(NAMES_FILE), names)
    }

    fn write_json_atomic(&self, dest: &Path, value: &impl Serialize) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|source| Error::Json {
            what: dest.display().to_string(),
            source,
        })?;
        let (tmp, mut file) = self.tmp_file("meta")?;
        let result = file
            .write_all(&bytes)
            .and_then(|()| file.sync_all())
            .and_then(|()| fs::rename(&tmp, dest));
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(dest)(e));
        }
        sync_dir(dest.parent().unwrap_or(&self.root))
    }
}

/// Check a config against its manifest's layers and make the record.
pub(crate) fn build_record(
    manifest_digest: &str,
    manifest_size: u64,
    config_digest: &str,
    config_size: u64,
    raw: &super::config::RawImageConfig,
    layers: Vec<LayerRef>,
    root: &Path,
) -> Result<Record> {
    let bad = |reason: String| Error::Format {
        path: root.to_path_buf(),
        reason: format!("image {config_digest}: {reason}"),
    };
    if let Some(kind) = raw.rootfs.kind.as_deref() {
        if kind != "layers" {
            return Err(bad(format!("rootfs type {kind:?}, want \"layers\"")));
        }
    }
    let diff_ids = raw.rootfs.diff_ids.clone().unwrap_or_default();
    if diff_ids.len() != layers.len() {
        return Err(bad(format!(
            "manifest {manifest_digest} has {} layers but the config has {} diff ids",
            layers.len(),
            diff_ids.len()
        )));
    }
    for d in diff_ids.iter().chain(layers.iter().map(|l| &l.digest)) {
        sha256_hex(d)?;
    }
    sha256_hex(config_digest)?;
    sha256_hex(manifest_digest)?;
    Ok(Record {
        id: config_digest.to_string(),
        manifest_digest: manifest_digest.to_string(),
        manifest_size,
        config_size,
        os: raw.os.clone().unwrap_or_default(),
        architecture: raw.architecture.clone().unwrap_or_default(),
        config: raw.image_config(),
        layers,
        diff_ids,
    })
}

/// Resolve a reference against names and records; see [`ImageStore::get`].
fn resolve<'r>(
    reference: &str,
    names: &BTreeMap<String, String>,
    records: &'r BTreeMap<String, Record>,
) -> Result<(&'r Record, Match)> {
    let not_found = || Error::NotFound {
        reference: reference.to_string(),
    };
    let by_prefix = |prefix: &str| -> Result<&'r Record> {
        let hits: Vec<&Record> = records
            .values()
            .filter(|r| r.id["sha256:".len()..].starts_with(prefix))
            .collect();
        match hits.as_slice() {
            [] => Err(not_found()),
            [one] => Ok(one),
            many => Err(Error::Ambiguous {
                reference: reference.to_string(),
                candidates: many.iter().map(|r| r.id.clone()).collect(),
            }),
        }
    };
    let is_hex = |s: &str| {
        !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if let Some(hex) = reference.strip_prefix("sha256:") {
        if !is_hex(hex) {
            return Err(Error::InvalidReference {
                reference: reference.to_string(),
                reason: "an id is sha256: and lowercase hex".into(),
            });
        }
        return by_prefix(hex).map(|r| (r, Match::Id));
    }
    match Reference::parse(reference) {
        Ok(parsed) => {
            if let Some(digest) = &parsed.digest {
                // A digest the image was pulled by (an index's), else its manifest's.
                let pulled = names
                    .get(&format!("{}@{digest}", parsed.repository))
                    .and_then(|id| records.get(id));
                if let Some(record) = pulled {
                    return Ok((record, Match::Digest));
                }
                return records
                    .values()
                    .find(|r| r.manifest_digest == *digest)
                    .map(|r| (r, Match::Digest))
                    .ok_or_else(not_found);
            }
            if let Some(name) = parsed.tagged_name() {
                if let Some(record) = names.get(&name).and_then(|id| records.get(id)) {
                    return Ok((record, Match::Name(name)));
                }
            }
        }
        Err(e) if !is_hex(reference) => return Err(e),
        Err(_) => {}
    }
    if is_hex(reference) {
        return by_prefix(reference).map(|r| (r, Match::Id));
    }
    Err(not_found())
}

/// A `repository@sha256:<hex>` entry of names.json (a pulled digest), not a tag.
fn is_digest_name(name: &str) -> bool {
    name.contains('@')
}

/// Make a rename into `dir` durable, so a record never survives a crash that its blobs
/// or layers do not.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Remove a file or directory tree (never following symlinks); missing is fine.
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path)(e)),
    };
    let result = if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Bytes of regular files under `path`, each inode once.
fn tree_size(path: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if meta.is_file() && seen.insert((meta.dev(), meta.ino())) {
            total += meta.len();
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileTypeExt;

    use serde_json::json;

    use super::*;
    use crate::image::digest::sha256_of;
    use crate::image::testutil::{compress, tar_dir, Built, LayoutBuilder, TarBuilder};
    use crate::image::unpack::{get_xattr, Compression, OVERLAY_OPAQUE_XATTR};

    fn amd64() -> Platform {
        Platform::new("linux", "amd64")
    }

    struct Fixture {
        tmp: tempfile::TempDir,
        store: ImageStore,
    }

    impl Fixture {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let store = ImageStore::open(&tmp.path().join("store"))
                .unwrap()
                .with_platform(amd64());
            Self { tmp, store }
        }

        fn layout(&self, name: &str) -> LayoutBuilder {
            LayoutBuilder::new(&self.tmp.path().join(name))
        }

        fn count(&self, dir: &str) -> usize {
            fs::read_dir(self.store.root().join(dir)).unwrap().count()
        }
    }

    fn base_layer() -> Vec<u8> {
        TarBuilder::new()
            .dir("bin", 0o755)
            .entry(
                tar::EntryType::Regular,
                "bin/tool",
                None,
                b"#!tool",
                0o755,
                (0, 0),
                1,
            )
            .dir("etc", 0o755)
            .file("etc/motd", b"hello")
            .dir("data", 0o755)
            .file("data/old", b"old")
            .finish()
    }

    fn app_layer() -> Vec<u8> {
        TarBuilder::new()
            .file("etc/.wh.motd", b"")
            .dir("data", 0o755)
            .file("data/.wh..wh..opq", b"")
            .file("data/new", b"new")
            .finish()
    }

    fn other_layer() -> Vec<u8> {
        TarBuilder::new().file("other", b"other").finish()
    }

    fn runtime_config(cmd: &str) -> serde_json::Value {
        json!({"Entrypoint": ["/bin/tool"], "Cmd": [cmd], "Env": ["PATH=/bin"],
               "WorkingDir": "/data", "User": "1000:1000", "Labels": {"a": "b"},
               "ExposedPorts": {"80/tcp": {}}, "StopSignal": "SIGTERM"})
    }

    /// A layout with `app` (base + app layers, named `app:1` in full and `latest` as a
    /// bare tag) and `other` (base + other layer, named `quay.io/x/other:2`).
    fn two_images(f: &Fixture) -> (LayoutBuilder, Built, Built) {
        let mut l = f.layout("layout");
        let app = l.image(
            &[
                (base_layer(), Compression::Gzip),
                (app_layer(), Compression::Zstd),
            ],
            runtime_config("serve"),
            "amd64",
        );
        let other = l.image(
            &[
                (base_layer(), Compression::Gzip),
                (other_layer(), Compression::None),
            ],
            runtime_config("other"),
            "amd64",
        );
        l.add(&app.desc, Some("docker.io/library/app:1"))
            .add(&app.desc, Some("latest"))
            .add(&other.desc, Some("quay.io/x/other:2"));
        l.write_index();
        (l, app, other)
    }

    #[test]
    fn blobs_are_verified_on_write_and_read() {
        let f = Fixture::new();
        let s = &f.store;
        let wrong = sha256_of(b"something else");
        let err = s.add_blob(&b"data"[..], Some(&wrong)).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert_eq!(f.count(BLOBS_DIR), 0);
        assert_eq!(f.count(TMP_DIR), 0, "failed write left a temporary");
        assert!(matches!(
            s.add_blob(&b"x"[..], Some("sha256:nothex")),
            Err(Error::InvalidDigest { .. })
        ));

        let digest = s.add_blob(&b"data"[..], Some(&sha256_of(b"data"))).unwrap();
        assert_eq!(digest, sha256_of(b"data"));
        assert!(s.has_blob(&digest));
        assert_eq!(s.read_blob(&digest).unwrap(), b"data");
        assert_eq!(
            s.add_blob(&b"data"[..], None).unwrap(),
            digest,
            "adding twice is fine"
        );

        // Corrupt it on disk: reads must notice.
        fs::write(s.blob_path(&digest).unwrap(), b"dada").unwrap();
        let err = s.read_blob(&digest).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&digest[7..]), "{err}");
        assert!(matches!(
            s.read_blob(&wrong),
            Err(Error::MissingBlob { .. })
        ));
    }

    #[test]
    fn imports_a_layout_and_finds_images_every_way() {
        let f = Fixture::new();
        let (l, app, other) = two_images(&f);
        let imported = f.store.import_as(&l.dir, "example.com/app").unwrap();
        assert_eq!(imported.len(), 2);
        let s = &f.store;

        let img = s.get("app:1").unwrap();
        assert_eq!(img.id, app.id);
        assert_eq!(
            img.names,
            vec!["docker.io/library/app:1", "example.com/app:latest"]
        );
        assert_eq!(img.manifest_digest, app.desc["digest"].as_str().unwrap());
        assert_eq!(img.diff_ids, app.diff_ids);
        assert_eq!(img.layers, app.layer_digests);
        assert_eq!(img.config.entrypoint, vec!["/bin/tool"]);
        assert_eq!(img.config.cmd, vec!["serve"]);
        assert_eq!(img.config.working_dir, "/data");
        assert_eq!(img.config.user, "1000:1000");
        assert_eq!(img.config.exposed_ports, vec!["80/tcp"]);
        assert_eq!(img.config.labels.get("a").map(String::as_str), Some("b"));
        assert!(img.size > 0);

        for reference in [
            "docker.io/library/app:1".to_string(),
            "library/app:1".into(),
            "example.com/app".into(),
            app.id.clone(),
            app.id[7..19].to_string(),
            app.id[..19].to_string(),
            format!("app@{}", app.desc["digest"].as_str().unwrap()),
        ] {
            assert_eq!(s.get(&reference).unwrap().id, app.id, "{reference}");
        }
        assert_eq!(s.get("quay.io/x/other:2").unwrap().id, other.id);
        assert!(
            matches!(s.get("app"), Err(Error::NotFound { .. })),
            "app means app:latest"
        );
        assert!(matches!(s.get("nope:1"), Err(Error::NotFound { .. })));
        assert!(matches!(
            s.get("Bad Name"),
            Err(Error::InvalidReference { .. })
        ));
        assert!(matches!(
            s.get("sha256:xyz"),
            Err(Error::InvalidReference { .. })
        ));
        assert_eq!(s.list().unwrap().len(), 2);

        // Layers: bottom first, the shared base unpacked once, whiteouts in overlay form.
        let app_dirs = s.layer_dirs(&img).unwrap();
        let other_dirs = s.layer_dirs(&s.get(&other.id).unwrap()).unwrap();
        assert_eq!(app_dirs.len(), 2);
        assert_eq!(app_dirs[0], other_dirs[0]);
        assert_eq!(
            app_dirs[0],
            s.root().join(LAYERS_DIR).join(&app.diff_ids[0][7..])
        );
        assert_eq!(f.count(LAYERS_DIR), 3);
        assert_eq!(fs::read(app_dirs[0].join("etc/motd")).unwrap(), b"hello");
        let motd = fs::symlink_metadata(app_dirs[1].join("etc/motd")).unwrap();
        assert!(motd.file_type().is_char_device() && motd.rdev() == 0);
        assert_eq!(
            get_xattr(&app_dirs[1].join("data"), OVERLAY_OPAQUE_XATTR).unwrap(),
            Some(b"y".to_vec())
        );
        assert_eq!(f.count(TMP_DIR), 0);
    }

    #[test]
    fn layers_are_unpacked_once_and_reimport_is_idempotent() {
        let f = Fixture::new();
        let (l, app, _) = two_images(&f);
        f.store.import(&l.dir).unwrap();
        let base = f.store.root().join(LAYERS_DIR).join(&app.diff_ids[0][7..]);
        let marker = base.join("etc/motd");
        let ino = fs::metadata(&marker).unwrap().ino();
        let again = f.store.import(&l.dir).unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(
            fs::metadata(&marker).unwrap().ino(),
            ino,
            "layer was unpacked again"
        );
        assert_eq!(f.store.list().unwrap().len(), 2);

        // A layer directory lost (say, removed by hand) is unpacked again on use.
        fs::remove_dir_all(&base).unwrap();
        let dirs = f.store.layer_dirs(&f.store.get(&app.id).unwrap()).unwrap();
        assert_eq!(fs::read(dirs[0].join("etc/motd")).unwrap(), b"hello");
    }

    #[test]
    fn bare_tags_need_a_repository() {
        let f = Fixture::new();
        let (l, app, _) = two_images(&f);
        let imported = f.store.import(&l.dir).unwrap();
        let app_img = imported.iter().find(|i| i.id == app.id).unwrap();
        assert_eq!(app_img.names, vec!["docker.io/library/app:1"]);
        assert!(f.store.get("latest").is_err());
    }

    #[test]
    fn tag_and_remove() {
        let f = Fixture::new();
        let (l, app, other) = two_images(&f);
        f.store.import(&l.dir).unwrap();
        let s = &f.store;
        s.tag(&app.id, "mine:v1").unwrap();
        assert_eq!(s.get("docker.io/library/mine:v1").unwrap().id, app.id);
        // Tagging moves a name.
        s.tag(&other.id[7..20], "mine:v1").unwrap();
        assert_eq!(s.get("mine:v1").unwrap().id, other.id);
        assert!(matches!(
            s.tag(&app.id, &format!("x@{}", app.id)),
            Err(Error::InvalidReference { .. })
        ));
        assert!(matches!(
            s.tag("missing:1", "y:1"),
            Err(Error::NotFound { .. })
        ));

        // Removing one of two names keeps the image; removing the last removes it.
        s.remove("mine:v1").unwrap();
        assert_eq!(s.get(&other.id).unwrap().names, vec!["quay.io/x/other:2"]);
        s.remove("quay.io/x/other:2").unwrap();
        assert!(matches!(s.get(&other.id), Err(Error::NotFound { .. })));
        // By id: the image and all its names go. Its layers stay for gc.
        s.tag(&app.id, "second:1").unwrap();
        s.remove(&app.id).unwrap();
        assert!(s.list().unwrap().is_empty());
        assert!(matches!(s.get("second:1"), Err(Error::NotFound { .. })));
        assert_eq!(f.count(LAYERS_DIR), 3);
        assert!(matches!(s.remove("gone:1"), Err(Error::NotFound { .. })));
    }

    #[test]
    fn id_prefixes_must_be_unique() {
        let f = Fixture::new();
        let mut l = f.layout("many");
        // 17 images without layers: two ids must share a first hex digit.
        let ids: Vec<String> = (0..17)
            .map(|i| {
                let b = l.image(&[], json!({"Cmd": [format!("{i}")]}), "amd64");
                l.add(&b.desc, None);
                b.id
            })
            .collect();
        l.write_index();
        f.store.import(&l.dir).unwrap();
        let first = ids
            .iter()
            .map(|id| &id[7..8])
            .find(|c| ids.iter().filter(|id| &id[7..8] == *c).count() > 1)
            .unwrap();
        let err = f.store.get(first).unwrap_err();
        assert!(matches!(err, Error::Ambiguous { .. }), "{err}");
        let err = f.store.get(&format!("sha256:{first}")).unwrap_err();
        assert!(
            matches!(err, Error::Ambiguous { ref candidates, .. } if candidates.len() >= 2),
            "{err}"
        );
    }

    #[test]
    fn a_corrupt_import_changes_nothing_already_stored() {
        let f = Fixture::new();
        let (l, app, _) = two_images(&f);
        f.store.import(&l.dir).unwrap();
        let before = f.store.list().unwrap();
        let layers_before = f.count(LAYERS_DIR);

        type Case = (&'static str, Box<dyn Fn(&mut LayoutBuilder)>);
        let cases: Vec<Case> = vec![
            (
                "bad gzip",
                Box::new(|l: &mut LayoutBuilder| {
                    let mut gz = compress(&other_layer(), Compression::Gzip);
                    let n = gz.len();
                    gz.truncate(n - 20);
                    let (digest, size) = l.blob(&gz);
                    // Build an image whose manifest names the truncated blob.
                    let b = l.image(&[(other_layer(), Compression::Gzip)], json!({}), "amd64");
                    let mut m: serde_json::Value = serde_json::from_slice(
                        &fs::read(
                            l.dir
                                .join("blobs/sha256")
                                .join(&b.desc["digest"].as_str().unwrap()[7..]),
                        )
                        .unwrap(),
                    )
                    .unwrap();
                    m["layers"][0]["digest"] = json!(digest);
                    m["layers"][0]["size"] = json!(size);
                    let (md, ms) = l.blob(&serde_json::to_vec(&m).unwrap());
                    l.add(&json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms}), Some("bad:gzip"));
                }),
            ),
            (
                "diff id mismatch",
                Box::new(|l: &mut LayoutBuilder| {
                    // A config whose diff id is of another tar.
                    let b = l.image(&[(other_layer(), Compression::Gzip)], json!({}), "amd64");
                    let mut m: serde_json::Value = serde_json::from_slice(
                        &fs::read(
                            l.dir
                                .join("blobs/sha256")
                                .join(&b.desc["digest"].as_str().unwrap()[7..]),
                        )
                        .unwrap(),
                    )
                    .unwrap();
                    let cfg = json!({"architecture": "amd64", "os": "linux",
                        "rootfs": {"type": "layers", "diff_ids": [sha256_of(b"not the tar")]}});
                    let (cd, cs) = l.blob(&serde_json::to_vec(&cfg).unwrap());
                    m["config"]["digest"] = json!(cd);
                    m["config"]["size"] = json!(cs);
                    let (md, ms) = l.blob(&serde_json::to_vec(&m).unwrap());
                    l.add(&json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms}), Some("bad:diff"));
                }),
            ),
            (
                "blob digest mismatch",
                Box::new(|l: &mut LayoutBuilder| {
                    let b = l.image(
                        &[(
                            TarBuilder::new().file("z", b"z").finish(),
                            Compression::None,
                        )],
                        json!({}),
                        "amd64",
                    );
                    let path = l.dir.join("blobs/sha256").join(&b.layer_digests[0][7..]);
                    let mut data = fs::read(&path).unwrap();
                    data[600] ^= 1;
                    fs::write(&path, data).unwrap();
                    l.add(&b.desc, Some("bad:digest"));
                }),
            ),
            (
                "missing blob",
                Box::new(|l: &mut LayoutBuilder| {
                    let b = l.image(
                        &[(
                            TarBuilder::new().file("m", b"m").finish(),
                            Compression::Gzip,
                        )],
                        json!({}),
                        "amd64",
                    );
                    fs::remove_file(l.dir.join("blobs/sha256").join(&b.layer_digests[0][7..]))
                        .unwrap();
                    l.add(&b.desc, Some("bad:missing"));
                }),
            ),
            (
                "path escape",
                Box::new(|l: &mut LayoutBuilder| {
                    let tar = TarBuilder::new()
                        .raw(tar::EntryType::Regular, "../../../../pwned", "", b"x")
                        .finish();
                    let b = l.image(&[(tar, Compression::Gzip)], json!({}), "amd64");
                    l.add(&b.desc, Some("bad:escape"));
                }),
            ),
        ];
        for (i, (name, build)) in cases.into_iter().enumerate() {
            let mut bad = f.layout(&format!("bad{i}"));
            build(&mut bad);
            bad.write_index();
            let err = f.store.import(&bad.dir).unwrap_err();
            match name {
                "bad gzip" => assert!(matches!(err, Error::CorruptLayer { .. }), "{name}: {err}"),
                "diff id mismatch" => {
                    assert!(matches!(err, Error::DigestMismatch { .. }), "{name}: {err}");
                    assert!(err.to_string().contains("diff id"), "{name}: {err}");
                }
                "blob digest mismatch" => {
                    assert!(matches!(err, Error::DigestMismatch { .. }), "{name}: {err}")
                }
                "missing blob" => {
                    assert!(matches!(err, Error::MissingBlob { .. }), "{name}: {err}")
                }
                "path escape" => assert!(matches!(err, Error::UnsafePath { .. }), "{name}: {err}"),
                _ => unreachable!(),
            }
            assert_eq!(f.store.list().unwrap(), before, "{name}");
            assert_eq!(f.count(LAYERS_DIR), layers_before, "{name} left a layer");
            assert_eq!(f.count(TMP_DIR), 0, "{name} left a temporary");
        }
        assert!(!f.tmp.path().join("pwned").exists());
        // What was there still reads and verifies.
        let img = f.store.get(&app.id).unwrap();
        for d in img.layers.iter().chain([&img.manifest_digest, &img.id]) {
            f.store.read_blob(d).unwrap();
        }
        assert_eq!(f.store.layer_dirs(&img).unwrap().len(), 2);
    }

    #[test]
    fn a_layer_blob_corrupted_on_disk_is_caught_when_unpacking() {
        let f = Fixture::new();
        let (l, app, _) = two_images(&f);
        f.store.import(&l.dir).unwrap();
        let img = f.store.get(&app.id).unwrap();
        let dir = f.store.root().join(LAYERS_DIR).join(&app.diff_ids[1][7..]);
        fs::remove_dir_all(&dir).unwrap();
        let blob = f.store.blob_path(&app.layer_digests[1]).unwrap();
        let mut data = fs::read(&blob).unwrap();
        let n = data.len();
        data[n / 2] ^= 0x55;
        fs::write(&blob, data).unwrap();
        let err = f.store.layer_dirs(&img).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!dir.exists());
        assert_eq!(f.count(TMP_DIR), 0);
    }

    #[test]
    fn picks_the_platform_from_an_index() {
        let f = Fixture::new();
        let mut l = f.layout("multi");
        let arm = l.image(
            &[(other_layer(), Compression::Gzip)],
            json!({"Cmd": ["arm"]}),
            "arm64",
        );
        let amd = l.image(
            &[(base_layer(), Compression::Gzip)],
            json!({"Cmd": ["amd"]}),
            "amd64",
        );
        let index = l.platform_index(&[(&arm, "arm64"), (&amd, "amd64")]);
        l.add(&index, Some("docker.io/library/multi:1"));
        l.write_index();
        let imported = f.store.import(&l.dir).unwrap();
        assert_eq!(imported.len(), 1);
        assert_eq!(imported[0].id, amd.id);
        assert_eq!(imported[0].config.cmd, vec!["amd"]);
        assert_eq!(f.count(LAYERS_DIR), 1, "only the chosen platform's layers");

        let mut only_arm = f.layout("arm");
        let index = only_arm.platform_index(&[(&only_arm.image(&[], json!({}), "arm64"), "arm64")]);
        only_arm.add(&index, Some("docker.io/library/arm:1"));
        only_arm.write_index();
        let err = f.store.import(&only_arm.dir).unwrap_err();
        assert!(
            matches!(err, Error::Platform { ref found, .. } if found == &["linux/arm64"]),
            "{err}"
        );
        assert!(err.to_string().contains("linux/amd64"), "{err}");

        // A plain manifest whose config is for another platform.
        let mut single = f.layout("single");
        let b = single.image(&[], json!({}), "s390x");
        single.add(&b.desc, Some("docker.io/library/s390x:1"));
        single.write_index();
        let err = f.store.import(&single.dir).unwrap_err();
        assert!(matches!(err, Error::Platform { .. }), "{err}");
        assert_eq!(f.store.list().unwrap().len(), 1);
    }

    #[test]
    fn gc_removes_what_no_remaining_image_uses() {
        let f = Fixture::new();
        let (l, app, other) = two_images(&f);
        f.store.import(&l.dir).unwrap();
        let s = &f.store;
        let other_only_layer = s.root().join(LAYERS_DIR).join(&other.diff_ids[1][7..]);
        assert!(other_only_layer.is_dir());
        let stray = s.add_blob(&b"stray"[..], None).unwrap();

        let report = s.gc(&HashSet::from([app.id.clone()])).unwrap();
        assert_eq!(report.images_removed, 1);
        assert_eq!(report.layers_removed, 1);
        // other's manifest, config and its own layer, plus the stray blob.
        assert_eq!(report.blobs_removed, 4);
        assert!(report.bytes_freed >= 5 + "other".len() as u64);
        assert!(!other_only_layer.exists());
        assert!(!s.has_blob(&stray));
        assert!(!s.has_blob(&other.id));
        assert!(matches!(
            s.get("quay.io/x/other:2"),
            Err(Error::NotFound { .. })
        ));
        // The survivor is intact, shared base included.
        let img = s.get("app:1").unwrap();
        for d in img.layers.iter().chain([&img.manifest_digest, &img.id]) {
            s.read_blob(d).unwrap();
        }
        let dirs = s.layer_dirs(&img).unwrap();
        assert_eq!(fs::read(dirs[0].join("etc/motd")).unwrap(), b"hello");
        assert_eq!(
            s.gc(&HashSet::from([app.id.clone()])).unwrap(),
            GcReport::default()
        );

        // A name in in_use (a caller's mistake) keeps the image rather than deleting it.
        assert_eq!(
            s.gc(&HashSet::from(["app:1".to_string()]))
                .unwrap()
                .images_removed,
            0
        );

        let report = s.gc(&HashSet::new()).unwrap();
        assert_eq!(
            (
                report.images_removed,
                report.layers_removed,
                report.blobs_removed
            ),
            (1, 2, 4)
        );
        assert_eq!(f.count(LAYERS_DIR), 0);
        assert_eq!(f.count(BLOBS_DIR), 0);
        assert_eq!(f.count(IMAGES_DIR), 0);
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn reopening_clears_crash_leftovers() {
        let f = Fixture::new();
        let tmp = f.store.root().join(TMP_DIR);
        // What a crash mid-unpack and mid-blob-write leaves behind.
        fs::create_dir_all(tmp.join("layer-1-2-3/usr/bin")).unwrap();
        fs::write(tmp.join("layer-1-2-3/usr/bin/half"), b"x").unwrap();
        fs::write(tmp.join("blob-1-2-3"), b"partial").unwrap();
        assert_eq!(f.count(LAYERS_DIR), 0, "a half layer is never in layers/");
        let reopened = ImageStore::open(f.store.root()).unwrap();
        assert_eq!(
            fs::read_dir(reopened.root().join(TMP_DIR)).unwrap().count(),
            0
        );

        // While another holder has the lock (an import in progress), tmp/ is left alone.
        fs::write(tmp.join("blob-busy"), b"in progress").unwrap();
        let held = f.store.lock_shared().unwrap();
        ImageStore::open(f.store.root()).unwrap();
        assert!(tmp.join("blob-busy").exists());
        drop(held);
    }

    #[test]
    fn concurrent_imports_of_the_same_layout_both_succeed() {
        let f = Fixture::new();
        let (l, app, _) = two_images(&f);
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    let store = f.store.clone();
                    let dir = l.dir.clone();
                    scope.spawn(move || store.import(&dir))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in results {
            assert_eq!(r.unwrap().len(), 2);
        }
        assert_eq!(f.count(LAYERS_DIR), 3);
        assert_eq!(f.count(TMP_DIR), 0);
        assert_eq!(f.store.get("app:1").unwrap().id, app.id);
    }

    #[test]
    fn gc_and_imports_running_together_stay_consistent() {
        let f = Fixture::new();
        let (l, _, _) = two_images(&f);
        std::thread::scope(|scope| {
            let importer = scope.spawn(|| {
                for _ in 0..10 {
                    let store = ImageStore::open(f.store.root())
                        .unwrap()
                        .with_platform(amd64());
                    let images = store.import(&l.dir).unwrap();
                    assert_eq!(images.len(), 2);
                }
            });
            let collector = scope.spawn(|| {
                for _ in 0..10 {
                    f.store.gc(&HashSet::new()).unwrap();
                }
            });
            importer.join().unwrap();
            collector.join().unwrap();
        });
        // Whatever survived is whole.
        for img in f.store.list().unwrap() {
            for d in img.layers.iter().chain([&img.manifest_digest, &img.id]) {
                f.store.read_blob(d).unwrap();
            }
            for dir in f.store.layer_dirs(&img).unwrap() {
                assert!(
                    dir.join("etc").is_dir()
                        || dir.join("data").is_dir()
                        || dir.join("other").exists()
                );
            }
        }
        assert_eq!(f.count(TMP_DIR), 0);
    }

    #[test]
    fn imports_archives_of_layouts_plain_and_compressed() {
        let f = Fixture::new();
        let (l, app, _) = two_images(&f);
        let tar = tar_dir(&l.dir);
        let path = f.tmp.path().join("layout.tar");
        fs::write(&path, &tar).unwrap();
        assert_eq!(f.store.import(&path).unwrap().len(), 2);
        assert_eq!(f.store.get("app:1").unwrap().id, app.id);

        let f2 = Fixture::new();
        let images = f2
            .store
            .import_reader(&compress(&tar, Compression::Gzip)[..])
            .unwrap();
        assert_eq!(images.len(), 2);
        assert_eq!(f2.count(TMP_DIR), 0, "the extraction is removed");
        let img = f2.store.get("quay.io/x/other:2").unwrap();
        assert_eq!(f2.store.layer_dirs(&img).unwrap().len(), 2);
    }

    #[test]
    fn archive_entries_that_escape_are_refused() {
        let f = Fixture::new();
        let tar = TarBuilder::new()
            .file("index.json", br#"{"schemaVersion":2,"manifests":[]}"#)
            .raw(tar::EntryType::Regular, "../../escaped", "", b"x")
            .finish();
        let err = f.store.import_reader(&tar[..]).unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{err}");
        assert!(err.to_string().contains("escapes"), "{err}");
        assert!(!f.tmp.path().join("escaped").exists());
        assert!(!f.store.root().join("escaped").exists());
        assert_eq!(f.count(TMP_DIR), 0);

        let err = f.store.import_reader(&b"not a tar at all"[..]).unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{err}");
        let err = f
            .store
            .import(&f.tmp.path().join("missing.tar"))
            .unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
    }

    /// `docker save` before Docker 25: manifest.json, `<hex>.json` configs and
    /// `<id>/layer.tar` (uncompressed), a shared layer stored once behind a symlink.
    #[test]
    fn imports_legacy_docker_save() {
        let f = Fixture::new();
        let base = base_layer();
        let app = app_layer();
        let cfg = |cmd: &str, layers: &[&[u8]]| {
            serde_json::to_vec(&json!({
                "architecture": "amd64", "os": "linux",
                "config": {"Cmd": [cmd], "Entrypoint": null, "Env": null},
                "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| sha256_of(l)).collect::<Vec<_>>()},
            }))
            .unwrap()
        };
        let c1 = cfg("one", &[&base, &app]);
        let c2 = cfg("two", &[&base]);
        let (h1, h2) = (
            sha256_of(&c1)[7..].to_string(),
            sha256_of(&c2)[7..].to_string(),
        );
        let manifest = json!([
            {"Config": format!("{h1}.json"), "RepoTags": ["one:latest", "docker.io/library/one:alias"],
             "Layers": ["aaa/layer.tar", "bbb/layer.tar"]},
            {"Config": format!("{h2}.json"), "RepoTags": ["two"], "Layers": ["ccc/layer.tar"]},
        ]);
        let tar = TarBuilder::new()
            .file("manifest.json", &serde_json::to_vec(&manifest).unwrap())
            .file(&format!("{h1}.json"), &c1)
            .file(&format!("{h2}.json"), &c2)
            .file("repositories", b"{}")
            .dir("aaa", 0o755)
            .file("aaa/layer.tar", &base)
            .dir("bbb", 0o755)
            .file("bbb/layer.tar", &app)
            .dir("ccc", 0o755)
            .symlink("ccc/layer.tar", "../aaa/layer.tar")
            .finish();
        let path = f.tmp.path().join("save.tar");
        fs::write(&path, tar).unwrap();
        let images = f.store.import(&path).unwrap();
        assert_eq!(images.len(), 2);
        let one = f.store.get("one").unwrap();
        assert_eq!(
            one.names,
            vec![
                "docker.io/library/one:alias",
                "docker.io/library/one:latest"
            ]
        );
        assert_eq!(one.config.cmd, vec!["one"]);
        assert_eq!(one.layers, vec![sha256_of(&base), sha256_of(&app)]);
        // The store wrote a manifest for it.
        let m: serde_json::Value =
            serde_json::from_slice(&f.store.read_blob(&one.manifest_digest).unwrap()).unwrap();
        assert_eq!(m["config"]["digest"], json!(one.id));
        assert_eq!(
            m["layers"][0]["mediaType"],
            json!("application/vnd.oci.image.layer.v1.tar")
        );
        let two = f.store.get("two:latest").unwrap();
        assert_eq!(
            f.store.layer_dirs(&two).unwrap()[0],
            f.store.layer_dirs(&one).unwrap()[0]
        );
        assert_eq!(f.count(LAYERS_DIR), 2);
        let dirs = f.store.layer_dirs(&one).unwrap();
        assert!(fs::symlink_metadata(dirs[1].join("etc/motd"))
            .unwrap()
            .file_type()
            .is_char_device());
    }

    /// Docker 25+: an OCI layout plus manifest.json with RepoTags pointing into blobs/.
    #[test]
    fn imports_docker_25_save() {
        let f = Fixture::new();
        let mut l = f.layout("d25");
        let b = l.image(
            &[(base_layer(), Compression::None)],
            runtime_config("x"),
            "amd64",
        );
        let mut desc = b.desc.clone();
        desc["annotations"] = json!({
            "io.containerd.image.name": "docker.io/library/web:1.0",
            "org.opencontainers.image.ref.name": "1.0",
        });
        l.add(&desc, None);
        l.write_index();
        let manifest = json!([{
            "Config": format!("blobs/sha256/{}", &b.id[7..]),
            "RepoTags": ["web:1.0", "web:stable"],
            "Layers": [format!("blobs/sha256/{}", &b.layer_digests[0][7..])],
        }]);
        fs::write(
            l.dir.join("manifest.json"),
            serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
        let path = f.tmp.path().join("d25.tar");
        fs::write(&path, tar_dir(&l.dir)).unwrap();
        let images = f.store.import(&path).unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].id, b.id);
        assert_eq!(
            images[0].manifest_digest,
            b.desc["digest"].as_str().unwrap()
        );
        assert_eq!(
            images[0].names,
            vec!["docker.io/library/web:1.0", "docker.io/library/web:stable"]
        );
    }

    #[test]
    fn create_image_from_blobs_already_stored() {
        let f = Fixture::new();
        let l = f.layout("pull");
        let b = l.image(
            &[(base_layer(), Compression::Gzip)],
            runtime_config("p"),
            "amd64",
        );
        for d in b
            .layer_digests
            .iter()
            .chain([&b.id, &b.desc["digest"].as_str().unwrap().to_string()])
        {
            let data = fs::read(l.dir.join("blobs/sha256").join(&d[7..])).unwrap();
            f.store.add_blob(&data[..], Some(d)).unwrap();
        }
        let img = f
            .store
            .create_image(b.desc["digest"].as_str().unwrap(), &["pulled:1"])
            .unwrap();
        assert_eq!(img.id, b.id);
        assert_eq!(img.names, vec!["docker.io/library/pulled:1"]);
        assert_eq!(f.count(LAYERS_DIR), 1);
        assert!(matches!(
            f.store.create_image(&sha256_of(b"nope"), &[]),
            Err(Error::MissingBlob { .. })
        ));
    }
}
