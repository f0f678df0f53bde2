//! The image store against images made by real tools: `umoci` builds an OCI layout
//! (busybox-static in a base layer, whiteouts in a second, an opaque directory in a third),
//! `skopeo` converts it to a `docker save` archive, an OCI archive and zstd layers.
//!
//! Needs root (device nodes, `trusted.` xattrs, overlay mounts), as CI has. Skips, saying
//! why, only when a tool is not installed.

#![allow(clippy::print_stderr)]

use std::collections::HashSet;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_runtime::image::{resolve_command, Error, ImageStore, Platform};
use sha2::{Digest, Sha256};

const BUSYBOX: &str = "/bin/busybox";

fn missing_tools(tools: &[&str]) -> Option<String> {
    for tool in tools {
        let found = Command::new(tool).arg("--version").output().is_ok();
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    if !Path::new(BUSYBOX).is_file() {
        return Some(format!("{BUSYBOX} (busybox-static) is not installed"));
    }
    None
}

macro_rules! require {
    ($($tool:expr),*) => {
        if let Some(why) = missing_tools(&[$($tool),*]) {
            eprintln!("skipping: {why}");
            return;
        }
    };
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn umoci(args: &[&str], cwd: &Path) {
    run(Command::new("umoci").args(args).current_dir(cwd));
}

fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: both strings are NUL-terminated and `buf` is writable for its length.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

fn is_whiteout(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

/// An OCI layout `L` built with umoci, tagged:
/// - `base`: /bin/busybox, /bin/sh -> busybox, /etc/motd, /data/old, /gone; config set
///   with `umoci config`;
/// - `app`: base plus a layer removing /gone and /data/old (whiteouts), adding /data/new;
/// - `opq`: app plus a raw layer making /data opaque, with /data/fresh.
struct Fixture {
    tmp: tempfile::TempDir,
    layout: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        umoci(&["init", "--layout", "L"], dir);
        umoci(&["new", "--image", "L:base"], dir);

        umoci(&["unpack", "--image", "L:base", "b1"], dir);
        let root = dir.join("b1/rootfs");
        for d in ["bin", "etc", "data"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
        fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
        std::os::unix::fs::symlink("busybox", root.join("bin/ls")).unwrap();
        std::os::unix::fs::symlink("busybox", root.join("bin/cat")).unwrap();
        fs::write(root.join("etc/motd"), "hello from the base layer\n").unwrap();
        fs::write(root.join("data/old"), "old").unwrap();
        fs::write(root.join("gone"), "soon deleted").unwrap();
        umoci(&["repack", "--image", "L:base", "b1"], dir);
        umoci(
            &[
                "config",
                "--image",
                "L:base",
                "--config.entrypoint",
                "/bin/sh",
                "--config.entrypoint",
                "-c",
                "--config.cmd",
                "echo hello",
                "--config.env",
                "FOO=bar",
                "--config.env",
                "PATH=/bin",
                "--config.workingdir",
                "/data",
                "--config.user",
                "1000:1000",
                "--config.label",
                "app=demo",
                "--config.exposedports",
                "8080/tcp",
                "--config.stopsignal",
                "SIGQUIT",
            ],
            dir,
        );

        umoci(&["unpack", "--image", "L:base", "b2"], dir);
        let root = dir.join("b2/rootfs");
        fs::remove_file(root.join("gone")).unwrap();
        fs::remove_file(root.join("data/old")).unwrap();
        fs::write(root.join("data/new"), "new").unwrap();
        umoci(&["repack", "--image", "L:app", "b2"], dir);

        // umoci writes single whiteouts, never opaque dirs: add that layer verbatim.
        let opq = dir.join("opq.tar");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, "data/", &b""[..]).unwrap();
        for (name, body) in [
            ("data/.wh..wh..opq", &b""[..]),
            ("data/fresh", &b"fresh"[..]),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(body.len() as u64);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            b.append_data(&mut h, name, body).unwrap();
        }
        fs::write(&opq, b.into_inner().unwrap()).unwrap();
        umoci(
            &[
                "raw",
                "add-layer",
                "--image",
                "L:app",
                "--tag",
                "opq",
                "opq.tar",
            ],
            dir,
        );

        Fixture {
            layout: dir.join("L"),
            tmp,
        }
    }

    fn store(&self, name: &str) -> ImageStore {
        ImageStore::open(&self.tmp.path().join(name))
            .unwrap()
            .with_platform(Platform::new("linux", "amd64"))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).unwrap().count()
}

/// An overlay mount of `lower` (bottom first), unmounted on drop.
struct Overlay(PathBuf);

impl Overlay {
    fn mount(lower: &[PathBuf], at: &Path) -> nix::Result<Overlay> {
        fs::create_dir_all(at).unwrap();
        let dirs: Vec<String> = lower
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        let opts = format!("lowerdir={}", dirs.join(":"));
        nix::mount::mount(
            Some("overlay"),
            at,
            Some("overlay"),
            nix::mount::MsFlags::MS_RDONLY,
            Some(opts.as_str()),
        )?;
        Ok(Overlay(at.to_path_buf()))
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn umoci_layout_imports_with_config_whiteouts_and_shared_layers() {
    require!("umoci");
    let f = Fixture::new();
    let store = f.store("store");
    let images = store.import_as(&f.layout, "busybox").unwrap();
    assert_eq!(images.len(), 3);

    let base = store.get("busybox:base").unwrap();
    let app = store.get("docker.io/library/busybox:app").unwrap();
    let opq = store.get("busybox:opq").unwrap();
    assert_eq!(base.names, vec!["docker.io/library/busybox:base"]);

    // Config defaults, as kubelet would use them.
    let c = &app.config;
    assert_eq!(c.entrypoint, vec!["/bin/sh", "-c"]);
    assert_eq!(c.cmd, vec!["echo hello"]);
    assert_eq!(c.env, vec!["FOO=bar", "PATH=/bin"]);
    assert_eq!(c.working_dir, "/data");
    assert_eq!(c.user, "1000:1000");
    assert_eq!(c.labels.get("app").map(String::as_str), Some("demo"));
    assert_eq!(c.exposed_ports, vec!["8080/tcp"]);
    assert_eq!(c.stop_signal.as_deref(), Some("SIGQUIT"));
    assert_eq!(
        resolve_command(c, &[], &[]),
        vec!["/bin/sh", "-c", "echo hello"]
    );
    assert_eq!(
        resolve_command(c, &[], &["date".to_string()]),
        vec!["/bin/sh", "-c", "date"]
    );

    // Layers: bottom first, shared between the three images, each unpacked once.
    let base_dirs = store.layer_dirs(&base).unwrap();
    let app_dirs = store.layer_dirs(&app).unwrap();
    let opq_dirs = store.layer_dirs(&opq).unwrap();
    assert_eq!((base_dirs.len(), app_dirs.len(), opq_dirs.len()), (1, 2, 3));
    assert_eq!(app_dirs[0], base_dirs[0]);
    assert_eq!(opq_dirs[..2], app_dirs[..]);
    assert_eq!(count(&store.root().join("layers")), 3);

    let bottom = &base_dirs[0];
    let busybox = bottom.join("bin/busybox");
    assert_eq!(sha256_file(&busybox), sha256_file(Path::new(BUSYBOX)));
    assert_eq!(fs::metadata(&busybox).unwrap().mode() & 0o7777, 0o755);
    assert_eq!(
        fs::read_link(bottom.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(fs::read_to_string(bottom.join("data/old")).unwrap(), "old");

    // The second layer's deletions are overlayfs whiteouts; the third's opaque dir an xattr.
    assert!(is_whiteout(&app_dirs[1].join("gone")));
    assert!(is_whiteout(&app_dirs[1].join("data/old")));
    assert_eq!(
        fs::read_to_string(app_dirs[1].join("data/new")).unwrap(),
        "new"
    );
    assert!(!app_dirs[1].join(".wh.gone").exists());
    assert_eq!(
        xattr(&opq_dirs[2].join("data"), "trusted.overlay.opaque"),
        Some(b"y".to_vec())
    );
    assert!(!opq_dirs[2].join("data/.wh..wh..opq").exists());

    // Importing again unpacks nothing again.
    let ino = fs::metadata(&busybox).unwrap().ino();
    store.import_as(&f.layout, "busybox").unwrap();
    assert_eq!(fs::metadata(&busybox).unwrap().ino(), ino);
    assert_eq!(count(&store.root().join("layers")), 3);

    // The layers stack in overlayfs as the image means, and busybox runs from them.
    let merged = f.path("merged");
    let _mount = match Overlay::mount(&opq_dirs, &merged) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("skipping the overlay part: mount failed ({e}); needs root");
            return;
        }
    };
    assert!(merged.join("bin/busybox").is_file());
    assert!(!merged.join("gone").exists());
    let data: Vec<_> = fs::read_dir(merged.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        data,
        vec!["fresh"],
        "opaque /data hides the lower layers' files"
    );
    let out = Command::new("chroot")
        .arg(&merged)
        .args(["/bin/sh", "-c", "cat /etc/motd; ls /data"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from the base layer\nfresh\n"
    );
}

#[test]
fn skopeo_conversions_import_as_the_same_image() {
    require!("umoci", "skopeo");
    let f = Fixture::new();
    let layout = format!("oci:{}:app", f.layout.display());
    let docker = f.path("docker.tar");
    let oci = f.path("oci.tar");
    let zstd = f.path("zstd");
    run(Command::new("skopeo")
        .args(["copy", "-q", &layout])
        .arg(format!("docker-archive:{}:busybox:t", docker.display())));
    run(Command::new("skopeo")
        .args(["copy", "-q", &layout])
        .arg(format!("oci-archive:{}", oci.display())));
    run(Command::new("skopeo")
        .args(["copy", "-q", "--dest-compress-format", "zstd", &layout])
        .arg(format!("oci:{}:app", zstd.display())));

    // What the layout itself gives, for reference.
    let reference = f.store("reference");
    reference.import_as(&f.layout, "busybox").unwrap();
    let want = reference.get("busybox:app").unwrap();

    let store = f.store("store");
    let layers = store.root().join("layers");
    let from_docker = store.import(&docker).unwrap();
    assert_eq!(from_docker.len(), 1);
    let img = &from_docker[0];
    assert_eq!(img.names, vec!["docker.io/library/busybox:t"]);
    assert_eq!(img.id, want.id, "the config is carried over unchanged");
    assert_eq!(img.diff_ids, want.diff_ids);
    assert_eq!(img.config, want.config);
    assert_eq!(store.get("busybox:t").unwrap().id, want.id);
    // docker-archive layers are plain tars: the blob digest is the diff id.
    assert_eq!(img.layers, img.diff_ids);
    let dirs = store.layer_dirs(img).unwrap();
    assert_eq!(
        sha256_file(&dirs[0].join("bin/busybox")),
        sha256_file(Path::new(BUSYBOX))
    );
    assert!(is_whiteout(&dirs[1].join("gone")));
    let ino = fs::metadata(dirs[0].join("bin/busybox")).unwrap().ino();

    // The OCI archive (gzip layers) and the zstd layout are the same image, the same
    // layers: nothing is unpacked again.
    let from_oci = store.import(&oci).unwrap();
    assert_eq!(from_oci[0].id, want.id);
    let from_zstd = store.import_as(&zstd, "zstd/busybox").unwrap();
    assert_eq!(from_zstd[0].id, want.id);
    assert_eq!(
        from_zstd[0].names,
        vec!["docker.io/library/busybox:t", "docker.io/zstd/busybox:app"]
    );
    assert_eq!(count(&layers), 2);
    assert_eq!(
        fs::metadata(dirs[0].join("bin/busybox")).unwrap().ino(),
        ino
    );

    // Into a fresh store, the zstd layers unpack to the same content.
    let zstore = f.store("zstore");
    let img = &zstore.import_as(&zstd, "busybox").unwrap()[0];
    let zdirs = zstore.layer_dirs(img).unwrap();
    assert_eq!(
        sha256_file(&zdirs[0].join("bin/busybox")),
        sha256_file(Path::new(BUSYBOX))
    );
    assert!(is_whiteout(&zdirs[1].join("data/old")));
}

#[test]
fn gc_removes_images_no_container_uses() {
    require!("umoci");
    let f = Fixture::new();
    let store = f.store("store");
    store.import_as(&f.layout, "busybox").unwrap();
    let base = store.get("busybox:base").unwrap();
    let app = store.get("busybox:app").unwrap();
    let blobs = store.root().join("blobs/sha256");
    let blobs_before = count(&blobs);

    let report = store.gc(&HashSet::from([base.id.clone()])).unwrap();
    assert_eq!(report.images_removed, 2);
    assert_eq!(report.layers_removed, 2);
    // app and opq: a manifest and a config each, and one layer each.
    assert_eq!(report.blobs_removed, 6);
    assert_eq!(count(&blobs), blobs_before - 6);
    assert!(report.bytes_freed > 0);
    assert!(matches!(
        store.get("busybox:app"),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(store.get(&app.id), Err(Error::NotFound { .. })));

    // The image in use is whole: blobs verify, its layer is unpacked.
    let kept = store.get("busybox:base").unwrap();
    for d in kept.layers.iter().chain([&kept.manifest_digest, &kept.id]) {
        store.read_blob(d).unwrap();
    }
    let dirs = store.layer_dirs(&kept).unwrap();
    assert!(dirs[0].join("bin/busybox").is_file());
    assert_eq!(count(&store.root().join("layers")), 1);

    // Re-importing brings the others back, unpacking only what gc removed.
    store.import_as(&f.layout, "busybox").unwrap();
    assert_eq!(store.list().unwrap().len(), 3);
    assert_eq!(count(&store.root().join("layers")), 3);
}
