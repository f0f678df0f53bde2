//! Unpacking one layer blob into an empty directory, safely, in overlayfs form.
//!
//! Every entry is created relative to a directory file descriptor reached by walking the
//! entry's parent components with `O_NOFOLLOW`, so nothing is ever written through a
//! symlink: an entry whose parent is a symlink is rejected (tar writers walk real
//! directories, so a well-formed layer never has one), as are `..` components and absolute
//! paths, for entries and hardlink targets alike. A final component that already exists
//! (a duplicate entry) is removed first and the new one created with `O_EXCL`.
//!
//! Whiteouts become what overlayfs reads: `.wh.name` a 0/0 character device `name`,
//! `.wh..wh..opq` the xattr `trusted.overlay.opaque=y` on its directory. Other `.wh..wh.`
//! entries (aufs metadata) are skipped, and so are `trusted.overlay.*` xattrs in the tar:
//! only the store decides what overlayfs sees.
//!
//! The caller hashes the blob and the uncompressed stream (the diff id) while this reads.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstatat, futimens, makedev, mkdirat, mknodat, utimensat, FchmodatFlags, Mode,
    SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use tracing::{debug, warn};

use super::digest::HashingReader;
use super::{Error, Result};

const WHITEOUT_PREFIX: &str = ".wh.";
const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
pub(crate) const OVERLAY_OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";
const COPY_BUF: usize = 128 * 1024;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub(crate) fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// What a media type declares: `Ok(None)` when it says nothing (empty, as legacy
    /// archives have), an error when it is not a layer type this store can unpack.
    pub(crate) fn from_media_type(media_type: &str) -> Result<Option<Self>, String> {
        let m = media_type;
        if m.is_empty() {
            return Ok(None);
        }
        if m.contains("encrypted") {
            return Err(format!("encrypted layers are not supported ({m})"));
        }
        let layer_type = m.starts_with("application/vnd.oci.image.layer.")
            || m.starts_with("application/vnd.docker.image.rootfs.");
        if !layer_type {
            return Err(format!("media type {m} is not a layer"));
        }
        if m.ends_with("+gzip") || m.ends_with(".tar.gzip") {
            Ok(Some(Compression::Gzip))
        } else if m.ends_with("+zstd") {
            Ok(Some(Compression::Zstd))
        } else if m.ends_with(".tar") {
            Ok(Some(Compression::None))
        } else {
            Err(format!("unsupported layer media type {m}"))
        }
    }

    /// Detect from the first bytes of a blob.
    pub(crate) fn sniff(head: &[u8]) -> Result<Self, String> {
        match head {
            [0x1f, 0x8b, ..] => Ok(Compression::Gzip),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Ok(Compression::Zstd),
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => {
                Err("xz compression is not supported".into())
            }
            [b'B', b'Z', b'h', ..] => Err("bzip2 compression is not supported".into()),
            _ => Ok(Compression::None),
        }
    }
}

/// What [`unpack_layer`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unpacked {
    /// `sha256:` of the blob as stored (compressed).
    pub blob_digest: String,
    pub blob_size: u64,
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
}

/// Read up to `buf.len()` bytes, fewer only at end of stream.
fn read_head(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Decompress `blob` (by its magic bytes, checked against `media_type`) and unpack the tar
/// into `dest`, an existing empty directory; with no `dest`, only hash it. Reads the blob
/// to its end so the digests cover all of it; the caller compares them with what the
/// manifest and config promise.
pub(crate) fn unpack_layer(
    blob: impl Read,
    media_type: &str,
    layer: &str,
    dest: Option<&Path>,
) -> Result<Unpacked> {
    let unsupported = |reason: String| Error::UnsupportedLayer {
        layer: layer.to_string(),
        reason,
    };
    let corrupt = |source: io::Error| Error::CorruptLayer {
        layer: layer.to_string(),
        source,
    };
    let declared = Compression::from_media_type(media_type).map_err(unsupported)?;
    let mut compressed = HashingReader::new(blob);
    let mut head = [0u8; 6];
    let n = read_head(&mut compressed, &mut head).map_err(corrupt)?;
    let sniffed = Compression::sniff(&head[..n]).map_err(unsupported)?;
    let compression = match (declared, sniffed) {
        (Some(d @ (Compression::Gzip | Compression::Zstd)), Compression::None) => {
            return Err(corrupt(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("media type {media_type} declares {d:?} but the data has no {d:?} header"),
            )));
        }
        (Some(d), s) if d != s => {
            warn!(layer, media_type, detected = ?s, "layer compression differs from its media type; using the detected one");
            s
        }
        (_, s) => s,
    };
    let diff_id = {
        let stream = io::Cursor::new(&head[..n]).chain(&mut compressed);
        let decoder: Box<dyn Read + '_> = match compression {
            Compression::None => Box::new(stream),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
                io::BufReader::with_capacity(COPY_BUF, stream),
            )),
            Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::new(stream).map_err(corrupt)?)
            }
        };
        let mut tar_stream = HashingReader::new(decoder);
        if let Some(dest) = dest {
            extract(&mut tar_stream, layer, dest)?;
        }
        tar_stream.drain_and_finish().map_err(corrupt)?.0
    };
    let (blob_digest, blob_size) = compressed.drain_and_finish().map_err(corrupt)?;
    Ok(Unpacked {
        blob_digest,
        blob_size,
        diff_id,
    })
}

/// Ownership, mode, times and xattrs of one entry.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: TimeSpec,
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// Counts of things skipped because the process lacks the privilege, reported once.
#[derive(Default)]
struct Skipped {
    chown: u64,
    xattrs: u64,
    devices: u64,
}

struct Extractor<'a> {
    layer: &'a str,
    dest: &'a Path,
    root: OwnedFd,
    /// Directories whose mtime is set after all entries, since creating children changes it.
    dir_times: Vec<(Vec<OsString>, TimeSpec)>,
    skipped: Skipped,
}

fn extract(stream: impl Read, layer: &str, dest: &Path) -> Result<()> {
    let root = openat(
        nix::fcntl::AT_FDCWD,
        dest,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::Unpack {
        layer: layer.to_string(),
        path: dest.display().to_string(),
        source: e.into(),
    })?;
    let mut x = Extractor {
        layer,
        dest,
        root,
        dir_times: Vec::new(),
        skipped: Skipped::default(),
    };
    let corrupt = |source: io::Error| Error::CorruptLayer {
        layer: layer.to_string(),
        source,
    };
    let mut archive = tar::Archive::new(stream);
    let mut entries = 0u64;
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        entries += 1;
        x.entry(&mut entry)?;
    }
    // Innermost first, so a parent's time is set after its children's.
    for (comps, mtime) in std::mem::take(&mut x.dir_times).into_iter().rev() {
        x.set_dir_time(&comps, mtime)?;
    }
    nix::unistd::syncfs(&x.root).map_err(|e| x.io_err(&[], e.into()))?;
    let Skipped {
        chown,
        xattrs,
        devices,
    } = x.skipped;
    if chown + xattrs + devices > 0 {
        warn!(
            layer,
            chown,
            xattrs,
            devices,
            "layer unpacked without some ownership, xattrs or device nodes (not permitted)"
        );
    }
    debug!(layer, entries, "layer unpacked");
    Ok(())
}

/// Split a tar path into normal components, rejecting `..` and absolute paths.
fn clean_path(layer: &str, raw: &[u8]) -> Result<Vec<OsString>> {
    let path = Path::new(OsStr::from_bytes(raw));
    let unsafe_path = |reason: &str| Error::UnsafePath {
        layer: layer.to_string(),
        path: String::from_utf8_lossy(raw).into_owned(),
        reason: reason.to_string(),
    };
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => out.push(s.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_path("'..' component escapes the layer")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_path("absolute path"));
            }
        }
    }
    Ok(out)
}

fn show_path(comps: &[OsString]) -> String {
    let mut p = PathBuf::new();
    for c in comps {
        p.push(c);
    }
    p.display().to_string()
}

fn parse_pax_time(v: &str) -> Option<TimeSpec> {
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    if secs >= 0 && !frac.is_empty() {
        let digits: String = frac.chars().take(9).collect();
        nanos = format!("{digits:0<9}").parse().ok()?;
    }
    Some(TimeSpec::new(secs, nanos))
}

impl Extractor<'_> {
    fn io_err(&self, comps: &[OsString], source: io::Error) -> Error {
        Error::Unpack {
            layer: self.layer.to_string(),
            path: show_path(comps),
            source,
        }
    }

    fn unsafe_path(&self, comps: &[OsString], reason: impl Into<String>) -> Error {
        Error::UnsafePath {
            layer: self.layer.to_string(),
            path: show_path(comps),
            reason: reason.into(),
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let header = entry.header().clone();
        let kind = header.entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            return Ok(());
        }
        let comps = clean_path(self.layer, &entry.path_bytes())?;
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let meta = self.meta(entry, &header, &comps)?;

        let Some((name, parents)) = comps.split_last() else {
            // The layer root itself (`./`).
            if !kind.is_dir() {
                return Err(self.unsafe_path(&comps, "the layer root must be a directory"));
            }
            let root = self.root.try_clone().map_err(|e| self.io_err(&comps, e))?;
            return self.apply_dir_meta(root.as_fd(), &comps, meta);
        };
        let name_str = name.to_string_lossy();
        if name_str == WHITEOUT_OPAQUE {
            let dir = self.walk(parents, true)?;
            return set_xattr_fd(dir.as_fd(), OVERLAY_OPAQUE_XATTR, b"y")
                .map_err(|e| self.io_err(parents, e));
        }
        if name_str.starts_with(WHITEOUT_META_PREFIX) {
            debug!(layer = self.layer, path = %show_path(&comps), "skipping aufs metadata entry");
            return Ok(());
        }
        if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if hidden.is_empty() {
                return Err(self.unsafe_path(&comps, "whiteout with an empty name"));
            }
            let hidden = OsStr::from_bytes(hidden);
            let mut target = parents.to_vec();
            target.push(hidden.to_os_string());
            let parent = self.walk(parents, true)?;
            self.remove_existing(&parent, hidden, &target, false)?;
            return self.make_whiteout(&parent, hidden, &target, &meta);
        }

        let parent = self.walk(parents, true)?;
        if kind.is_dir() {
            let keep = self.remove_existing(&parent, name, &comps, true)?;
            if !keep {
                mkdirat(&parent, name.as_os_str(), Mode::from_bits_truncate(0o700))
                    .map_err(|e| self.io_err(&comps, e.into()))?;
            }
            let dir = open_dir(&parent, name).map_err(|e| self.io_err(&comps, e.into()))?;
            return self.apply_dir_meta(dir.as_fd(), &comps, meta);
        }
        if kind.is_hard_link() {
            let Some(link) = link else {
                return Err(self.unsafe_path(&comps, "hardlink without a target"));
            };
            return self.hardlink(&parent, name, &comps, &link);
        }
        self.remove_existing(&parent, name, &comps, false)?;
        if kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse() {
            self.regular(entry, &parent, name, &comps, &meta)
        } else if kind.is_symlink() {
            let Some(link) = link else {
                return Err(self.unsafe_path(&comps, "symlink without a target"));
            };
            symlinkat(OsStr::from_bytes(&link), &parent, name.as_os_str())
                .map_err(|e| self.io_err(&comps, e.into()))?;
            self.apply_at_meta(&parent, name, &comps, &meta)
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            let (sflag, dev) = if kind.is_fifo() {
                (SFlag::S_IFIFO, 0)
            } else {
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let kind = if kind.is_character_special() {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                (kind, makedev(major.into(), minor.into()))
            };
            match mknodat(
                &parent,
                name.as_os_str(),
                sflag,
                Mode::from_bits_truncate(0o600),
                dev,
            ) {
                Ok(()) => {}
                Err(Errno::EPERM) if sflag != SFlag::S_IFIFO => {
                    self.skipped.devices += 1;
                    return Ok(());
                }
                Err(e) => return Err(self.io_err(&comps, e.into())),
            }
            self.apply_at_meta(&parent, name, &comps, &meta)?;
            fchmodat(
                &parent,
                name.as_os_str(),
                Mode::from_bits_truncate(meta.mode),
                FchmodatFlags::FollowSymlink, // just made by mknodat: not a symlink
            )
            .map_err(|e| self.io_err(&comps, e.into()))
        } else {
            Err(Error::UnsupportedLayer {
                layer: self.layer.to_string(),
                reason: format!("{}: unsupported tar entry type {kind:?}", show_path(&comps)),
            })
        }
    }

    fn meta<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        header: &tar::Header,
        comps: &[OsString],
    ) -> Result<Meta> {
        let bad = |what: &str, e: io::Error| Error::CorruptLayer {
            layer: self.layer.to_string(),
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: bad {what}: {e}", show_path(comps)),
            ),
        };
        let id = |v: u64, what: &str| {
            u32::try_from(v).map_err(|_| {
                bad(
                    what,
                    io::Error::new(io::ErrorKind::InvalidData, "out of range"),
                )
            })
        };
        // The tar crate already applies PAX uid/gid to the header. An empty numeric field
        // reads as 0, as Go's archive/tar (and so Docker and containerd) reads it.
        let old = header.as_old();
        let num = |v: io::Result<u64>, raw: &[u8], what: &str| match v {
            Ok(v) => Ok(v),
            Err(_) if raw.iter().all(|b| matches!(b, 0 | b' ')) => Ok(0),
            Err(e) => Err(bad(what, e)),
        };
        let uid = id(num(header.uid(), &old.uid, "uid")?, "uid")?;
        let gid = id(num(header.gid(), &old.gid, "gid")?, "gid")?;
        let mode = num(header.mode().map(u64::from), &old.mode, "mode")? as u32 & 0o7777;
        let mtime_secs = num(header.mtime(), &old.mtime, "mtime")?;
        let mut mtime = TimeSpec::new(i64::try_from(mtime_secs).unwrap_or(i64::MAX), 0);
        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions().map_err(|e| bad("pax header", e))? {
            for ext in pax {
                let ext = ext.map_err(|e| bad("pax header", e))?;
                let Ok(key) = ext.key() else { continue };
                if key == "mtime" {
                    if let Some(t) = ext.value().ok().and_then(parse_pax_time) {
                        mtime = t;
                    }
                } else if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                    if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
                        debug!(layer = self.layer, path = %show_path(comps), xattr = name, "ignoring overlay xattr from layer");
                        continue;
                    }
                    if let Ok(name) = CString::new(name) {
                        xattrs.push((name, ext.value_bytes().to_vec()));
                    }
                }
            }
        }
        Ok(Meta {
            uid,
            gid,
            mode,
            mtime,
            xattrs,
        })
    }

    /// Open the directory `comps` under the layer root, never following a symlink.
    /// Missing components are made (0755, root-owned) when `create` is set.
    fn walk(&self, comps: &[OsString], create: bool) -> Result<OwnedFd> {
        let mut cur = self.root.try_clone().map_err(|e| self.io_err(&[], e))?;
        for (i, c) in comps.iter().enumerate() {
            let so_far = &comps[..=i];
            let next = match open_dir(&cur, c) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create => {
                    mkdirat(&cur, c.as_os_str(), Mode::from_bits_truncate(0o755))
                        .map_err(|e| self.io_err(so_far, e.into()))?;
                    open_dir(&cur, c).map_err(|e| self.io_err(so_far, e.into()))?
                }
                Err(e @ (Errno::ELOOP | Errno::ENOTDIR)) => {
                    let is_link = fstatat(&cur, c.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK);
                    if is_link {
                        return Err(self.unsafe_path(
                            so_far,
                            "path goes through a symlink (refusing to write through it)",
                        ));
                    }
                    return Err(self.io_err(so_far, e.into()));
                }
                Err(e) => return Err(self.io_err(so_far, e.into())),
            };
            cur = next;
        }
        Ok(cur)
    }

    /// Remove whatever is at `parent/name`. With `keep_dir`, an existing directory stays
    /// (returns true) so a repeated directory entry only updates its metadata.
    fn remove_existing(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        comps: &[OsString],
        keep_dir: bool,
    ) -> Result<bool> {
        let st = match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(self.io_err(comps, e.into())),
        };
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            if keep_dir {
                return Ok(true);
            }
            // Every parent was opened with O_NOFOLLOW, and remove_dir_all does not follow
            // symlinks inside, so this stays within the layer.
            let mut path = self.dest.to_path_buf();
            path.extend(comps);
            std::fs::remove_dir_all(&path).map_err(|e| self.io_err(comps, e))?;
        } else {
            unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| self.io_err(comps, e.into()))?;
        }
        Ok(false)
    }

    fn make_whiteout(
        &mut self,
        parent: &OwnedFd,
        name: &OsStr,
        comps: &[OsString],
        meta: &Meta,
    ) -> Result<()> {
        mknodat(parent, name, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).map_err(|e| {
            if e == Errno::EPERM {
                Error::UnsupportedLayer {
                    layer: self.layer.to_string(),
                    reason: format!(
                        "{}: cannot make the whiteout device (needs CAP_MKNOD)",
                        show_path(comps)
                    ),
                }
            } else {
                self.io_err(comps, e.into())
            }
        })?;
        let meta = Meta {
            xattrs: Vec::new(),
            mode: 0,
            ..*meta
        };
        self.apply_at_meta(parent, name, comps, &meta)
    }

    fn regular<R: Read>(
        &mut self,
        data: &mut R,
        parent: &OwnedFd,
        name: &OsStr,
        comps: &[OsString],
        meta: &Meta,
    ) -> Result<()> {
        let fd = openat(
            parent,
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| self.io_err(comps, e.into()))?;
        let mut file = File::from(fd);
        let mut buf = vec![0u8; COPY_BUF];
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(Error::CorruptLayer {
                        layer: self.layer.to_string(),
                        source,
                    })
                }
            };
            file.write_all(&buf[..n])
                .map_err(|e| self.io_err(comps, e))?;
        }
        self.chown_fd(file.as_fd(), meta, comps)?;
        fchmod(&file, Mode::from_bits_truncate(meta.mode))
            .map_err(|e| self.io_err(comps, e.into()))?;
        for (k, v) in &meta.xattrs {
            self.xattr_result(set_xattr_fd(file.as_fd(), k, v), comps)?;
        }
        futimens(&file, &meta.mtime, &meta.mtime).map_err(|e| self.io_err(comps, e.into()))
    }

    fn hardlink(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        comps: &[OsString],
        link: &[u8],
    ) -> Result<()> {
        let target = clean_path(self.layer, link).map_err(|e| match e {
            Error::UnsafePath { reason, .. } => self.unsafe_path(
                comps,
                format!(
                    "hardlink target {}: {reason}",
                    String::from_utf8_lossy(link)
                ),
            ),
            other => other,
        })?;
        let Some((tname, tparents)) = target.split_last() else {
            return Err(self.unsafe_path(comps, "hardlink to the layer root"));
        };
        if target == comps {
            return Ok(());
        }
        let tparent = self.walk(tparents, false).map_err(|e| match e {
            Error::UnsafePath { reason, .. } => self.unsafe_path(
                comps,
                format!("hardlink target {}: {reason}", show_path(&target)),
            ),
            other => other,
        })?;
        self.remove_existing(parent, name, comps, false)?;
        linkat(&tparent, tname.as_os_str(), parent, name, AtFlags::empty()).map_err(|e| {
            let msg = match e {
                Errno::ENOENT => format!(
                    "hardlink target {} is not in this layer",
                    show_path(&target)
                ),
                e => format!("hardlink to {}: {e}", show_path(&target)),
            };
            self.io_err(comps, io::Error::other(msg))
        })
    }

    fn apply_dir_meta(
        &mut self,
        dir: BorrowedFd<'_>,
        comps: &[OsString],
        meta: Meta,
    ) -> Result<()> {
        self.chown_fd(dir, &meta, comps)?;
        fchmod(dir, Mode::from_bits_truncate(meta.mode))
            .map_err(|e| self.io_err(comps, e.into()))?;
        for (k, v) in &meta.xattrs {
            self.xattr_result(set_xattr_fd(dir, k, v), comps)?;
        }
        self.dir_times.push((comps.to_vec(), meta.mtime));
        Ok(())
    }

    /// Owner, xattrs and times for an entry that cannot be opened (symlink, device, fifo).
    fn apply_at_meta(
        &mut self,
        parent: &OwnedFd,
        name: &OsStr,
        comps: &[OsString],
        meta: &Meta,
    ) -> Result<()> {
        match fchownat(
            parent,
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(()) => {}
            Err(Errno::EPERM | Errno::EINVAL) => self.skipped.chown += 1,
            Err(e) => return Err(self.io_err(comps, e.into())),
        }
        if !meta.xattrs.is_empty() {
            // /proc/self/fd/N names the verified parent directory; lsetxattr does not
            // follow the final component.
            let path = PathBuf::from(format!("/proc/self/fd/{}", parent.as_raw_fd())).join(name);
            for (k, v) in &meta.xattrs {
                self.xattr_result(set_xattr_path(&path, k, v), comps)?;
            }
        }
        utimensat(
            parent,
            name,
            &meta.mtime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| self.io_err(comps, e.into()))
    }

    fn chown_fd(&mut self, fd: BorrowedFd<'_>, meta: &Meta, comps: &[OsString]) -> Result<()> {
        match fchown(
            fd,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        ) {
            Ok(()) => Ok(()),
            Err(Errno::EPERM | Errno::EINVAL) => {
                self.skipped.chown += 1;
                Ok(())
            }
            Err(e) => Err(self.io_err(comps, e.into())),
        }
    }

    /// Xattrs are kept where the filesystem and privileges allow.
    fn xattr_result(&mut self, r: io::Result<()>, comps: &[OsString]) -> Result<()> {
        match r {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOTSUP)) => {
                self.skipped.xattrs += 1;
                Ok(())
            }
            Err(e) => Err(self.io_err(comps, e)),
        }
    }

    fn set_dir_time(&self, comps: &[OsString], mtime: TimeSpec) -> Result<()> {
        let dir = match comps.split_last() {
            None => self.root.try_clone().map_err(|e| self.io_err(comps, e))?,
            Some((name, parents)) => {
                // A later entry may have replaced the directory; then there is nothing to do.
                let Ok(parent) = self.walk(parents, false) else {
                    return Ok(());
                };
                match open_dir(&parent, name) {
                    Ok(fd) => fd,
                    Err(_) => return Ok(()),
                }
            }
        };
        futimens(&dir, &mtime, &mtime).map_err(|e| self.io_err(comps, e.into()))
    }
}

fn open_dir(parent: &impl AsFd, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(
        parent,
        name,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

pub(crate) fn set_xattr_fd(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `fd` is open for the duration of the call, `name` is NUL-terminated and
    // `value` points to `value.len()` initialised bytes.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_xattr_path(path: &Path, name: &CStr, value: &[u8]) -> io::Result<()> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `path` and `name` are NUL-terminated C strings that outlive the call and
    // `value` points to `value.len()` initialised bytes; lsetxattr does not follow a final
    // symlink.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Read an xattr without following a final symlink; `None` when it is not set.
#[cfg(test)]
pub(crate) fn get_xattr(path: &Path, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: `cpath` and `name` are NUL-terminated, `buf` is writable for `buf.len()` bytes.
    let n = unsafe {
        libc::lgetxattr(
            cpath.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) => Ok(None),
            _ => Err(e),
        };
    }
    buf.truncate(n as usize);
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    use tar::EntryType;

    use super::*;
    use crate::image::digest::sha256_of;
    use crate::image::testutil::{compress, TarBuilder};

    /// A scratch dir with an empty `layer/` to unpack into and a `victim/` beside it that
    /// no layer may touch.
    struct Scratch {
        _tmp: tempfile::TempDir,
        layer: PathBuf,
        victim: PathBuf,
    }

    impl Scratch {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let layer = tmp.path().join("layer");
            let victim = tmp.path().join("victim");
            fs::create_dir(&layer).unwrap();
            fs::create_dir(&victim).unwrap();
            fs::write(victim.join("secret"), "keep me").unwrap();
            Self {
                _tmp: tmp,
                layer,
                victim,
            }
        }

        fn unpack(&self, tar: &[u8]) -> Result<Unpacked> {
            unpack_layer(tar, "", "sha256:test", Some(&self.layer))
        }

        /// Everything under `victim/` (and next to it): names, kinds, contents, xattrs.
        fn victim_state(&self) -> BTreeMap<String, String> {
            let mut out = BTreeMap::new();
            let top = self.victim.parent().unwrap();
            for e in fs::read_dir(top).unwrap() {
                out.insert(
                    format!("top:{}", e.unwrap().file_name().to_string_lossy()),
                    String::new(),
                );
            }
            for e in fs::read_dir(&self.victim).unwrap() {
                let e = e.unwrap();
                let meta = fs::symlink_metadata(e.path()).unwrap();
                let content = if meta.is_file() {
                    fs::read_to_string(e.path()).unwrap()
                } else {
                    format!("{:?}", meta.file_type())
                };
                let opaque = get_xattr(&e.path(), OVERLAY_OPAQUE_XATTR).unwrap();
                out.insert(
                    e.file_name().to_string_lossy().into_owned(),
                    format!("{content} {:o} {opaque:?}", meta.mode()),
                );
            }
            let opaque = get_xattr(&self.victim, OVERLAY_OPAQUE_XATTR).unwrap();
            out.insert(".".into(), format!("{opaque:?}"));
            out
        }
    }

    fn is_whiteout(path: &Path) -> bool {
        let meta = fs::symlink_metadata(path).unwrap();
        meta.file_type().is_char_device() && meta.rdev() == 0
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        let s = Scratch::new();
        let tar = TarBuilder::new()
            .dir("etc", 0o755)
            .file("etc/keep", b"k")
            .file(".wh.gone", b"")
            .file("etc/.wh.passwd", b"")
            .dir("opq", 0o755)
            .file("opq/.wh..wh..opq", b"")
            .file("opq/new", b"n")
            .file(".wh..wh.plnk", b"")
            .file("deep/er/.wh.x", b"")
            .finish();
        s.unpack(&tar).unwrap();
        assert!(is_whiteout(&s.layer.join("gone")));
        assert!(is_whiteout(&s.layer.join("etc/passwd")));
        assert!(is_whiteout(&s.layer.join("deep/er/x")));
        assert_eq!(fs::read(s.layer.join("etc/keep")).unwrap(), b"k");
        assert_eq!(fs::read(s.layer.join("opq/new")).unwrap(), b"n");
        assert_eq!(
            get_xattr(&s.layer.join("opq"), OVERLAY_OPAQUE_XATTR).unwrap(),
            Some(b"y".to_vec())
        );
        assert_eq!(
            get_xattr(&s.layer.join("etc"), OVERLAY_OPAQUE_XATTR).unwrap(),
            None
        );
        // No `.wh.` names survive.
        let mut stack = vec![s.layer.clone()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).unwrap() {
                let e = e.unwrap();
                assert!(
                    !e.file_name().to_string_lossy().starts_with(".wh."),
                    "{:?}",
                    e.path()
                );
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                }
            }
        }
    }

    #[test]
    fn overlay_xattrs_in_the_tar_are_ignored() {
        let s = Scratch::new();
        let tar = TarBuilder::new()
            .file_with_xattrs(
                "f",
                b"x",
                &[("trusted.overlay.redirect", b"/etc"), ("user.keep", b"v")],
            )
            .finish();
        s.unpack(&tar).unwrap();
        assert_eq!(
            get_xattr(&s.layer.join("f"), c"trusted.overlay.redirect").unwrap(),
            None
        );
        assert_eq!(
            get_xattr(&s.layer.join("f"), c"user.keep").unwrap(),
            Some(b"v".to_vec())
        );
    }

    #[test]
    fn preserves_metadata_links_and_devices() {
        let s = Scratch::new();
        let tar = TarBuilder::new()
            .entry(
                EntryType::Directory,
                ".",
                None,
                b"",
                0o751,
                (0, 0),
                1_300_000_000,
            )
            .entry(
                EntryType::Directory,
                "d",
                None,
                b"",
                0o750,
                (11, 12),
                1_400_000_000,
            )
            .entry(
                EntryType::Regular,
                "d/suid",
                None,
                b"#!/bin/sh\n",
                0o4755,
                (1234, 5678),
                1_500_000_000,
            )
            .entry(
                EntryType::Symlink,
                "d/sh",
                Some("/bin/busybox"),
                b"",
                0o777,
                (7, 8),
                1_200_000_000,
            )
            .hardlink("d/suid-again", "d/suid")
            .device(EntryType::Char, "null", 1, 3)
            .device(EntryType::Block, "loop9", 7, 9)
            .device(EntryType::Fifo, "pipe", 0, 0)
            .file_with_xattrs("attr", b"a", &[("user.berth", b"yes")])
            .finish();
        let u = s.unpack(&tar).unwrap();
        assert_eq!(u.diff_id, sha256_of(&tar));
        assert_eq!(u.blob_digest, u.diff_id);

        let root = fs::metadata(&s.layer).unwrap();
        assert_eq!(root.mode() & 0o7777, 0o751);
        assert_eq!(root.mtime(), 1_300_000_000);
        let d = fs::metadata(s.layer.join("d")).unwrap();
        assert_eq!((d.uid(), d.gid(), d.mode() & 0o7777), (11, 12, 0o750));
        assert_eq!(
            d.mtime(),
            1_400_000_000,
            "directory mtime set after its children"
        );
        let f = fs::metadata(s.layer.join("d/suid")).unwrap();
        assert_eq!((f.uid(), f.gid(), f.mode() & 0o7777), (1234, 5678, 0o4755));
        assert_eq!(f.mtime(), 1_500_000_000);
        assert_eq!(f.nlink(), 2);
        assert_eq!(
            fs::metadata(s.layer.join("d/suid-again")).unwrap().ino(),
            f.ino()
        );
        let l = fs::symlink_metadata(s.layer.join("d/sh")).unwrap();
        assert!(l.file_type().is_symlink());
        assert_eq!((l.uid(), l.gid(), l.mtime()), (7, 8, 1_200_000_000));
        assert_eq!(
            fs::read_link(s.layer.join("d/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
        let null = fs::symlink_metadata(s.layer.join("null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), makedev(1, 3));
        assert_eq!(null.mode() & 0o7777, 0o620);
        let lp = fs::symlink_metadata(s.layer.join("loop9")).unwrap();
        assert!(lp.file_type().is_block_device());
        assert_eq!(lp.rdev(), makedev(7, 9));
        assert!(fs::symlink_metadata(s.layer.join("pipe"))
            .unwrap()
            .file_type()
            .is_fifo());
        assert_eq!(
            get_xattr(&s.layer.join("attr"), c"user.berth").unwrap(),
            Some(b"yes".to_vec())
        );
    }

    #[test]
    fn later_entries_replace_earlier_ones_without_following_links() {
        let s = Scratch::new();
        let secret = s.victim.join("secret");
        let tar = TarBuilder::new()
            .symlink("x", secret.to_str().unwrap())
            .file("x", b"replaced") // must replace the link, not write through it
            .file("a", b"file")
            .dir("a", 0o755) // a directory replaces a file
            .file("a/b", b"b")
            .dir("d", 0o755)
            .file("d/child", b"c")
            .file("d", b"now a file") // a file replaces a directory tree
            .dir("k", 0o700)
            .file("k/one", b"1")
            .dir("k", 0o755) // a repeated directory keeps its contents
            .finish();
        s.unpack(&tar).unwrap();
        assert_eq!(fs::read_to_string(&secret).unwrap(), "keep me");
        assert!(fs::symlink_metadata(s.layer.join("x")).unwrap().is_file());
        assert_eq!(fs::read(s.layer.join("x")).unwrap(), b"replaced");
        assert_eq!(fs::read(s.layer.join("a/b")).unwrap(), b"b");
        assert_eq!(fs::read(s.layer.join("d")).unwrap(), b"now a file");
        assert_eq!(fs::read(s.layer.join("k/one")).unwrap(), b"1");
        assert_eq!(
            fs::metadata(s.layer.join("k")).unwrap().mode() & 0o7777,
            0o755
        );
    }

    #[test]
    fn path_escapes_are_refused_and_touch_nothing_outside() {
        let s = Scratch::new();
        let victim = s.victim.to_str().unwrap().to_string();
        let before = s.victim_state();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "dotdot",
                TarBuilder::new()
                    .raw(EntryType::Regular, "../victim/pwned", "", b"x")
                    .finish(),
            ),
            (
                "dotdot-deep",
                TarBuilder::new()
                    .raw(EntryType::Regular, "a/../../victim/secret", "", b"x")
                    .finish(),
            ),
            (
                "absolute",
                TarBuilder::new()
                    .raw(EntryType::Regular, &format!("{victim}/pwned"), "", b"x")
                    .finish(),
            ),
            (
                "absolute-dir",
                TarBuilder::new()
                    .raw(EntryType::Directory, &format!("{victim}/newdir"), "", b"")
                    .finish(),
            ),
            (
                "symlink-abs-then-write-through",
                TarBuilder::new()
                    .symlink("x", &victim)
                    .file("x/secret", b"pwned")
                    .finish(),
            ),
            (
                "symlink-like-etc-passwd",
                TarBuilder::new()
                    .symlink("etc", &victim)
                    .file("etc/passwd", b"root::0:0")
                    .finish(),
            ),
            (
                "symlink-relative-escape",
                TarBuilder::new()
                    .symlink("x", "../victim")
                    .file("x/pwned", b"x")
                    .finish(),
            ),
            (
                "nested-symlink",
                TarBuilder::new()
                    .dir("a", 0o755)
                    .symlink("a/b", "../../victim")
                    .file("a/b/c", b"x")
                    .finish(),
            ),
            (
                "symlink-to-dir-then-mkdir",
                TarBuilder::new()
                    .symlink("x", &victim)
                    .dir("x/sub", 0o755)
                    .finish(),
            ),
            (
                "whiteout-through-symlink",
                TarBuilder::new()
                    .symlink("x", &victim)
                    .file("x/.wh.secret", b"")
                    .finish(),
            ),
            (
                "opaque-through-symlink",
                TarBuilder::new()
                    .symlink("x", &victim)
                    .file("x/.wh..wh..opq", b"")
                    .finish(),
            ),
            (
                "hardlink-dotdot",
                TarBuilder::new()
                    .raw(EntryType::Link, "h", "../victim/secret", b"")
                    .finish(),
            ),
            (
                "hardlink-absolute",
                TarBuilder::new()
                    .raw(EntryType::Link, "h", &format!("{victim}/secret"), b"")
                    .finish(),
            ),
            (
                "hardlink-through-symlink",
                TarBuilder::new()
                    .symlink("x", &victim)
                    .hardlink("h", "x/secret")
                    .finish(),
            ),
            (
                "symlink-inside-then-write-through",
                TarBuilder::new()
                    .dir("d", 0o755)
                    .symlink("x", "d")
                    .file("x/f", b"x")
                    .finish(),
            ),
        ];
        for (name, tar) in cases {
            let err = s.unpack(&tar).expect_err(name);
            assert!(matches!(err, Error::UnsafePath { .. }), "{name}: {err}");
            assert!(err.to_string().contains("unsafe path"), "{name}: {err}");
            assert_eq!(s.victim_state(), before, "{name} touched the victim");
            fs::remove_dir_all(&s.layer).unwrap();
            fs::create_dir(&s.layer).unwrap();
        }
    }

    #[test]
    fn hardlink_target_must_be_in_the_layer() {
        let s = Scratch::new();
        let tar = TarBuilder::new().hardlink("h", "missing").finish();
        let err = s.unpack(&tar).unwrap_err();
        assert!(err.to_string().contains("not in this layer"), "{err}");
    }

    #[test]
    fn decompresses_by_magic_and_checks_the_media_type() {
        let tar = TarBuilder::new().file("hello", b"world").finish();
        let diff_id = sha256_of(&tar);
        for (c, media_type) in [
            (Compression::None, "application/vnd.oci.image.layer.v1.tar"),
            (
                Compression::Gzip,
                "application/vnd.oci.image.layer.v1.tar+gzip",
            ),
            (
                Compression::Gzip,
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            ),
            (
                Compression::Zstd,
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
            // Legacy archives say "tar" but may hold gzip; the magic decides.
            (Compression::Gzip, "application/vnd.oci.image.layer.v1.tar"),
            (Compression::Zstd, ""),
        ] {
            let s = Scratch::new();
            let blob = compress(&tar, c);
            let u = unpack_layer(&blob[..], media_type, "sha256:t", Some(&s.layer)).unwrap();
            assert_eq!(u.diff_id, diff_id, "{c:?} {media_type}");
            assert_eq!(u.blob_digest, sha256_of(&blob));
            assert_eq!(u.blob_size, blob.len() as u64);
            assert_eq!(fs::read(s.layer.join("hello")).unwrap(), b"world");
        }
    }

    #[test]
    fn corrupt_and_unsupported_layers_are_clear_errors() {
        let tar = TarBuilder::new().file("big", &[7u8; 100_000]).finish();
        let gz = compress(&tar, Compression::Gzip);
        let s = Scratch::new();

        // gzip declared, plain data.
        let err = unpack_layer(
            &tar[..],
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "sha256:t",
            Some(&s.layer),
        )
        .unwrap_err();
        assert!(matches!(err, Error::CorruptLayer { .. }), "{err}");
        assert!(err.to_string().contains("no Gzip header"), "{err}");

        // Truncated gzip stream.
        let err = unpack_layer(&gz[..gz.len() / 2], "", "sha256:t", Some(&s.layer)).unwrap_err();
        assert!(matches!(err, Error::CorruptLayer { .. }), "{err}");

        // Damaged gzip body.
        let mut bad = gz.clone();
        let mid = bad.len() / 2;
        bad[mid..mid + 16].fill(0xff);
        let err = unpack_layer(&bad[..], "", "sha256:t", Some(&s.layer)).unwrap_err();
        assert!(matches!(err, Error::CorruptLayer { .. }), "{err}");

        // Tar cut off in the middle of a file's data.
        let err = unpack_layer(&tar[..2048], "", "sha256:t", Some(&s.layer)).unwrap_err();
        assert!(matches!(err, Error::CorruptLayer { .. }), "{err}");

        for (blob, media_type) in [
            (vec![0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2], ""),
            (
                tar.clone(),
                "application/vnd.oci.image.layer.v1.tar+encrypted",
            ),
            (tar.clone(), "application/vnd.oci.image.config.v1+json"),
            (tar.clone(), "application/vnd.oci.image.layer.v1.tar+bzip2"),
        ] {
            let err = unpack_layer(&blob[..], media_type, "sha256:t", Some(&s.layer)).unwrap_err();
            assert!(
                matches!(err, Error::UnsupportedLayer { .. }),
                "{media_type}: {err}"
            );
        }
    }

    #[test]
    fn empty_numeric_header_fields_read_as_zero() {
        let s = Scratch::new();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_size(2);
        h.set_mode(0o640);
        h.set_path("f").unwrap();
        h.set_cksum(); // uid, gid and mtime left empty, as some hand-made tars have them
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, &b"hi"[..]).unwrap();
        s.unpack(&b.into_inner().unwrap()).unwrap();
        let m = fs::metadata(s.layer.join("f")).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mtime(), m.mode() & 0o7777),
            (0, 0, 0, 0o640)
        );
        // Garbage (not empty) is still an error.
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_size(0);
        h.set_path("g").unwrap();
        h.as_old_mut().uid.copy_from_slice(b"zzzzzzz\0");
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, &b""[..]).unwrap();
        let err = s.unpack(&b.into_inner().unwrap()).unwrap_err();
        assert!(err.to_string().contains("bad uid"), "{err}");
    }

    #[test]
    fn pax_times_parse() {
        assert_eq!(
            parse_pax_time("1700000000.5"),
            Some(TimeSpec::new(1_700_000_000, 500_000_000))
        );
        assert_eq!(parse_pax_time("12"), Some(TimeSpec::new(12, 0)));
        assert_eq!(parse_pax_time("x"), None);
    }
}
