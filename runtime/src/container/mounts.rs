//! The container's root filesystem, built inside its own mount namespace.
//!
//! Everything here runs in the container's init before `pivot_root`, so every mount it
//! makes lives only in the container's mount namespace and vanishes with it: the host's
//! mount table never holds a container mount, even when the runtime is killed mid-way.

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};

use super::{Error, Result};

/// Where the root filesystem comes from.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Rootfs {
    /// The bundle's `root.path` (a prepared directory), bind-mounted onto itself.
    Path(PathBuf),
    /// Image layers (bottom first) under a per-container copy-on-write upper directory,
    /// mounted at `target`.
    Overlay {
        lower: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
        target: PathBuf,
    },
}

impl Rootfs {
    /// The directory that becomes `/`.
    pub fn target(&self) -> &Path {
        match self {
            Rootfs::Path(p) => p,
            Rootfs::Overlay { target, .. } => target,
        }
    }
}

fn sys(what: impl Into<String>, path: &Path) -> impl FnOnce(nix::Error) -> Error {
    let what = what.into();
    let path = path.to_path_buf();
    move |errno| Error::Sys {
        what,
        path,
        source: std::io::Error::from(errno),
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Sys {
        what: what.into(),
        path: path.to_path_buf(),
        source,
    }
}

/// Resolve `unsafe_path` as if `root` were `/`: symlinks (absolute or relative) and `..`
/// never lead outside `root`. The same contract as runc's securejoin.
pub fn secure_join(root: &Path, unsafe_path: &Path) -> Result<PathBuf> {
    let mut pending: Vec<std::ffi::OsString> = unsafe_path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&part);
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(Error::Invalid(format!(
                        "too many symlinks resolving {} in {}",
                        unsafe_path.display(),
                        root.display()
                    )));
                }
                let target = fs::read_link(&candidate).map_err(io("readlink", &candidate))?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => resolved.push(part),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

/// Mount flags, propagation flags and the leftover data string of an OCI mount's options.
#[derive(Debug, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    pub clear: MsFlags,
    pub propagation: MsFlags,
    pub data: Vec<String>,
}

pub fn parse_options(options: &[String]) -> MountOptions {
    let mut o = MountOptions {
        flags: MsFlags::empty(),
        clear: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: Vec::new(),
    };
    for opt in options {
        let (set, clear) = match opt.as_str() {
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "private" => {
                o.propagation |= MsFlags::MS_PRIVATE;
                continue;
            }
            "rprivate" => {
                o.propagation |= MsFlags::MS_PRIVATE | MsFlags::MS_REC;
                continue;
            }
            "slave" => {
                o.propagation |= MsFlags::MS_SLAVE;
                continue;
            }
            "rslave" => {
                o.propagation |= MsFlags::MS_SLAVE | MsFlags::MS_REC;
                continue;
            }
            "shared" => {
                o.propagation |= MsFlags::MS_SHARED;
                continue;
            }
            "rshared" => {
                o.propagation |= MsFlags::MS_SHARED | MsFlags::MS_REC;
                continue;
            }
            "unbindable" => {
                o.propagation |= MsFlags::MS_UNBINDABLE;
                continue;
            }
            "runbindable" => {
                o.propagation |= MsFlags::MS_UNBINDABLE | MsFlags::MS_REC;
                continue;
            }
            other => {
                o.data.push(other.to_string());
                continue;
            }
        };
        o.flags |= set;
        o.flags &= !clear;
        o.clear |= clear;
    }
    o
}

/// Facts about the host the mounts need, read before anything is changed.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    /// v1 controller mount names (`cpu,cpuacct`, `memory`, ...) and their options, or empty on v2.
    pub cgroup_v1: Vec<(String, String)>,
    pub cgroup_v2: bool,
}

impl HostFacts {
    pub fn read() -> HostFacts {
        let mut facts = HostFacts::default();
        let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
            return facts;
        };
        for line in info.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            if left.len() < 5 || right.len() < 3 {
                continue;
            }
            let mount_point = left[4];
            match right[0] {
                "cgroup2" if mount_point == "/sys/fs/cgroup" => facts.cgroup_v2 = true,
                "cgroup" => {
                    if let Some(name) = mount_point.strip_prefix("/sys/fs/cgroup/") {
                        let ctrl: Vec<&str> = right[2]
                            .split(',')
                            .filter(|o| !matches!(*o, "rw" | "ro"))
                            .collect();
                        facts.cgroup_v1.push((name.to_string(), ctrl.join(",")));
                    }
                }
                _ => {}
            }
        }
        facts
    }
}

/// Build the root filesystem at `rootfs.target()` and make it `/`.
pub fn setup_rootfs(
    spec: &Spec,
    rootfs: &Rootfs,
    facts: &HostFacts,
    new_cgroupns: bool,
    in_userns: bool,
    before_cgroup: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    let linux = spec.linux().as_ref();
    // Nothing we mount below may reach the host.
    let propagation = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .map(|p| parse_options(&[p.to_string()]).propagation)
        .filter(|p| !p.is_empty())
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    mount(None::<&str>, "/", None::<&str>, propagation, None::<&str>)
        .map_err(sys("make / private", Path::new("/")))?;

    let root = rootfs.target();
    match rootfs {
        Rootfs::Path(p) => {
            mount(
                Some(p),
                p,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(sys("bind rootfs", p))?;
        }
        Rootfs::Overlay {
            lower,
            upper,
            work,
            target,
        } => {
            // Top layer first, as overlayfs wants it.
            let lowers: Vec<String> = lower
                .iter()
                .rev()
                .map(|p| escape_overlay(&p.to_string_lossy()))
                .collect();
            let data = format!(
                "lowerdir={},upperdir={},workdir={}",
                lowers.join(":"),
                escape_overlay(&upper.to_string_lossy()),
                escape_overlay(&work.to_string_lossy())
            );
            if data.len() >= 4096 {
                return Err(Error::Invalid(format!(
                    "overlay options for {} exceed a page ({} layers)",
                    target.display(),
                    lower.len()
                )));
            }
            mount(
                Some("overlay"),
                target,
                Some("overlay"),
                MsFlags::empty(),
                Some(data.as_str()),
            )
            .map_err(sys("mount overlay", target))?;
        }
    }

    let mounts = spec.mounts().as_deref().unwrap_or_default();
    for m in mounts {
        if m.typ().as_deref() == Some("cgroup") {
            // The cgroup view depends on the cgroup we are in (and its namespace).
            before_cgroup()?;
        }
        mount_one(root, m, facts, new_cgroupns, in_userns)?;
    }
    if mounts
        .iter()
        .any(|m| m.destination() == Path::new("/dev") && m.typ().as_deref() == Some("tmpfs"))
    {
        populate_dev(root, linux.and_then(|l| l.devices().as_deref()), in_userns)?;
    }

    pivot(root)?;

    if let Some(linux) = linux {
        for p in linux.masked_paths().as_deref().unwrap_or_default() {
            mask(Path::new(p))?;
        }
        for p in linux.readonly_paths().as_deref().unwrap_or_default() {
            readonly(Path::new(p))?;
        }
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(sys("remount / read-only", Path::new("/")))?;
    }
    Ok(())
}

fn escape_overlay(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace(':', "\\:")
        .replace(',', "\\,")
}

fn mount_one(
    root: &Path,
    m: &Mount,
    facts: &HostFacts,
    new_cgroupns: bool,
    in_userns: bool,
) -> Result<()> {
    let dest = secure_join(root, m.destination())?;
    let typ = m.typ().as_deref().unwrap_or("");
    let options = parse_options(m.options().as_deref().unwrap_or_default());
    let is_bind = typ == "bind" || options.flags.contains(MsFlags::MS_BIND);
    let source = m.source().as_deref();

    if is_bind {
        let src = source.ok_or_else(|| {
            Error::Invalid(format!(
                "bind mount to {} has no source",
                m.destination().display()
            ))
        })?;
        let meta = fs::metadata(src).map_err(io("bind source", src))?;
        make_target(&dest, meta.is_dir())?;
        mount(
            Some(src),
            &dest,
            None::<&str>,
            MsFlags::MS_BIND | (options.flags & MsFlags::MS_REC),
            None::<&str>,
        )
        .map_err(sys(format!("bind {}", src.display()), &dest))?;
        let extra = options.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            remount_bind(&dest, extra, in_userns)?;
        }
    } else if typ == "cgroup" {
        mount_cgroup(&dest, &options, facts, new_cgroupns)?;
    } else {
        make_target(&dest, true)?;
        let data = options.data.join(",");
        let result = mount(
            Some(source.unwrap_or(Path::new(typ))),
            &dest,
            Some(typ),
            options.flags,
            (!data.is_empty()).then_some(data.as_str()),
        );
        match result {
            Ok(()) => {}
            // Without its own network namespace a container may not mount sysfs (the
            // kernel ties sysfs to the netns); bind the host's read-only as runc does.
            Err(nix::Error::EPERM) if typ == "sysfs" => {
                mount(
                    Some("/sys"),
                    &dest,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(sys("bind /sys", &dest))?;
                remount_bind(&dest, options.flags | MsFlags::MS_RDONLY, in_userns)?;
            }
            // mqueue needs its ipc namespace owned by our user namespace.
            Err(nix::Error::EPERM) if typ == "mqueue" => {}
            Err(e) => return Err(sys(format!("mount {typ}"), &dest)(e)),
        }
    }
    if !options.propagation.is_empty() {
        mount(
            None::<&str>,
            &dest,
            None::<&str>,
            options.propagation,
            None::<&str>,
        )
        .map_err(sys("set propagation", &dest))?;
    }
    Ok(())
}

fn remount_bind(dest: &Path, flags: MsFlags, in_userns: bool) -> Result<()> {
    let mut flags = flags;
    if in_userns {
        // Flags the kernel locked when the mount was copied into our user namespace
        // must be kept, or the remount is refused.
        if let Ok(st) = nix::sys::statvfs::statvfs(dest) {
            use nix::sys::statvfs::FsFlags;
            let f = st.flags();
            for (fs_flag, ms_flag) in [
                (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
                (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
                (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            ] {
                if f.contains(fs_flag) {
                    flags |= ms_flag;
                }
            }
        }
    }
    mount(
        None::<&str>,
        dest,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
        None::<&str>,
    )
    .map_err(sys("remount bind", dest))
}

fn mount_cgroup(
    dest: &Path,
    options: &MountOptions,
    facts: &HostFacts,
    new_cgroupns: bool,
) -> Result<()> {
    make_target(dest, true)?;
    let flags = options.flags & !MsFlags::MS_RDONLY;
    if facts.cgroup_v2 {
        return mount(
            Some("cgroup2"),
            dest,
            Some("cgroup2"),
            options.flags,
            None::<&str>,
        )
        .map_err(sys("mount cgroup2", dest));
    }
    mount(Some("tmpfs"), dest, Some("tmpfs"), flags, Some("mode=755"))
        .map_err(sys("mount cgroup tmpfs", dest))?;
    for (name, controllers) in &facts.cgroup_v1 {
        if name.contains('/') || name == "unified" {
            continue;
        }
        let dir = dest.join(name);
        make_target(&dir, true)?;
        let result = if new_cgroupns {
            mount(
                Some("cgroup"),
                &dir,
                Some("cgroup"),
                options.flags,
                Some(controllers.as_str()),
            )
        } else {
            // Without a cgroup namespace, show the host's tree read-only.
            let host = Path::new("/sys/fs/cgroup").join(name);
            mount(
                Some(&host),
                &dir,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
        };
        result.map_err(sys(format!("mount cgroup {name}"), &dir))?;
        // cpu,cpuacct is reachable as cpu and cpuacct too.
        if name.contains(',') {
            for part in name.split(',') {
                let _ = symlink(name, dest.join(part));
            }
        }
    }
    if options.flags.contains(MsFlags::MS_RDONLY) {
        mount(
            None::<&str>,
            dest,
            None::<&str>,
            MsFlags::MS_REMOUNT | flags | MsFlags::MS_RDONLY,
            Some("mode=755"),
        )
        .map_err(sys("remount cgroup tmpfs read-only", dest))?;
    }
    Ok(())
}

fn make_target(dest: &Path, dir: bool) -> Result<()> {
    if dir {
        fs::create_dir_all(dest).map_err(io("create mount point", dest))
    } else {
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(io("create mount point", parent))?;
        }
        if fs::symlink_metadata(dest).is_err() {
            fs::File::create(dest).map_err(io("create mount point", dest))?;
        }
        Ok(())
    }
}

const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

fn populate_dev(root: &Path, devices: Option<&[LinuxDevice]>, in_userns: bool) -> Result<()> {
    let dev = root.join("dev");
    // (path, kind, major, minor, mode, uid, gid)
    type Node = (PathBuf, SFlag, u64, u64, u32, Option<u32>, Option<u32>);
    let mut wanted: Vec<Node> = DEFAULT_DEVICES
        .iter()
        .map(|(n, ma, mi)| (dev.join(n), SFlag::S_IFCHR, *ma, *mi, 0o666, None, None))
        .collect();
    for d in devices.unwrap_or_default() {
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => continue,
        };
        let path = secure_join(root, d.path())?;
        wanted.retain(|w| w.0 != path);
        wanted.push((
            path,
            kind,
            d.major() as u64,
            d.minor() as u64,
            d.file_mode().unwrap_or(0o666),
            d.uid(),
            d.gid(),
        ));
    }
    for (path, kind, major, minor, mode, uid, gid) in wanted {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io("create device dir", parent))?;
        }
        let made = !in_userns
            && mknod(
                &path,
                kind,
                Mode::from_bits_truncate(mode),
                makedev(major, minor),
            )
            .is_ok();
        if made {
            // mknod obeys the umask; devices need their exact mode.
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(io("chmod device", &path))?;
            if uid.is_some() || gid.is_some() {
                nix::unistd::chown(
                    &path,
                    uid.map(nix::unistd::Uid::from_raw),
                    gid.map(nix::unistd::Gid::from_raw),
                )
                .map_err(sys("chown device", &path))?;
            }
        } else {
            // In a user namespace mknod is refused: bind the host's node instead.
            let name = path.strip_prefix(root).unwrap_or(&path);
            let host = Path::new("/").join(name);
            make_target(&path, false)?;
            mount(
                Some(&host),
                &path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(sys("bind device", &path))?;
        }
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        let _ = symlink(target, dev.join(link));
    }
    if dev.join("pts").is_dir() && fs::symlink_metadata(dev.join("ptmx")).is_err() {
        let _ = symlink("pts/ptmx", dev.join("ptmx"));
    }
    Ok(())
}

/// Make `root` the root of the mount namespace and detach the old root.
fn pivot(root: &Path) -> Result<()> {
    nix::unistd::chdir(root).map_err(sys("chdir", root))?;
    // pivot_root(".", ".") stacks the old root under the new one; unmounting "." then
    // removes it without needing a directory for it inside the container.
    nix::unistd::pivot_root(".", ".").map_err(sys("pivot_root", root))?;
    // The old root may be shared with the host: make it a slave before detaching so the
    // unmount does not propagate.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(sys("make old root a slave", root))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys("detach old root", root))?;
    nix::unistd::chdir("/").map_err(sys("chdir", Path::new("/")))?;
    Ok(())
}

fn mask(path: &Path) -> Result<()> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    let result = if meta.is_dir() {
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
    } else {
        mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    result.map_err(sys("mask", path))
}

fn readonly(path: &Path) -> Result<()> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(sys("bind read-only path", path))?;
    mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(sys("remount read-only path", path))
}

/// `CString` of a path, for the raw calls that need one.
pub fn cpath(p: &Path) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::Invalid(format!("path {} contains a NUL byte", p.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_join_keeps_symlinks_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../..", root.join("a/b/up")).unwrap();
        symlink("b", root.join("a/rel")).unwrap();
        assert_eq!(
            secure_join(root, Path::new("/abs/passwd")).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            secure_join(root, Path::new("a/b/up/x")).unwrap(),
            root.join("x")
        );
        assert_eq!(
            secure_join(root, Path::new("../../../x")).unwrap(),
            root.join("x")
        );
        assert_eq!(
            secure_join(root, Path::new("/a/rel/c")).unwrap(),
            root.join("a/b/c")
        );
        symlink("loop", root.join("loop")).unwrap();
        assert!(secure_join(root, Path::new("loop/x")).is_err());
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = parse_options(
            &[
                "nosuid",
                "strictatime",
                "mode=755",
                "size=65536k",
                "rprivate",
                "ro",
            ]
            .map(String::from),
        );
        assert_eq!(
            o.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME | MsFlags::MS_RDONLY
        );
        assert_eq!(o.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        assert_eq!(o.data, vec!["mode=755", "size=65536k"]);
        let o = parse_options(&["ro", "rw", "rbind"].map(String::from));
        assert_eq!(o.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
    }

    #[test]
    fn overlay_paths_are_escaped() {
        assert_eq!(escape_overlay("/a:b,c"), "/a\\:b\\,c");
    }
}
