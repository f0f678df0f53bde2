//! Making a pod's volumes on the node, under `<agent dir>/pods/<uid>/volumes/<name>`.
//! Generated files (configMap, secret, downwardAPI, projected) are written as kubelet's
//! atomic writer does: into a fresh `..<time>` directory, then `..data` is switched to it
//! with one rename, and each top-level name is a symlink through `..data`, so a container
//! reading the volume sees either the old set or the new one, never a mix.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use super::translate::{VolumeFile, VolumePlan};

/// Make volume `name` as `plan` says under `dir`; returns the directory (or file) to mount
/// and whether it must be read-only.
pub fn materialize(dir: &Path, name: &str, plan: &VolumePlan) -> Result<(PathBuf, bool), String> {
    match plan {
        VolumePlan::EmptyDir => {
            let p = dir.join(name);
            fs::create_dir_all(&p).map_err(|e| format!("creating {}: {e}", p.display()))?;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o777))
                .map_err(|e| format!("chmod {}: {e}", p.display()))?;
            Ok((p, false))
        }
        VolumePlan::HostPath { path, kind } => {
            host_path(path, kind)?;
            Ok((path.clone(), false))
        }
        VolumePlan::Files(files) => {
            let p = dir.join(name);
            write_atomic(&p, files).map_err(|e| format!("writing volume {name}: {e}"))?;
            Ok((p, true))
        }
    }
}

fn host_path(path: &Path, kind: &str) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let meta = fs::metadata(path);
    let want = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(format!(
                "hostPath type check failed: {} is not a {what}",
                path.display()
            ))
        }
    };
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => {
            if meta.is_err() {
                fs::create_dir_all(path)
                    .map_err(|e| format!("creating {}: {e}", path.display()))?;
                fs::set_permissions(path, fs::Permissions::from_mode(0o755))
                    .map_err(|e| format!("chmod {}: {e}", path.display()))?;
                return Ok(());
            }
            want(meta.map(|m| m.is_dir()).unwrap_or(false), "directory")
        }
        "FileOrCreate" => {
            if meta.is_err() {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent)
                        .map_err(|e| format!("creating {}: {e}", parent.display()))?;
                }
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("creating {}: {e}", path.display()))?;
                return Ok(());
            }
            want(meta.map(|m| m.is_file()).unwrap_or(false), "file")
        }
        "Directory" => want(meta.map(|m| m.is_dir()).unwrap_or(false), "directory"),
        "File" => want(meta.map(|m| m.is_file()).unwrap_or(false), "file"),
        "Socket" => want(
            meta.map(|m| m.file_type().is_socket()).unwrap_or(false),
            "socket",
        ),
        "CharDevice" => want(
            meta.map(|m| m.file_type().is_char_device())
                .unwrap_or(false),
            "character device",
        ),
        "BlockDevice" => want(
            meta.map(|m| m.file_type().is_block_device())
                .unwrap_or(false),
            "block device",
        ),
        other => Err(format!("unknown hostPath type {other:?}")),
    }
}

/// Replace the files of `dir` with `files` atomically (see the module doc).
pub fn write_atomic(dir: &Path, files: &[VolumeFile]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let fresh = dir.join(&stamp);
    fs::create_dir(&fresh)?;
    for f in files {
        let p = fresh.join(&f.path);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&p, &f.data)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(f.mode & 0o7777))?;
    }
    // Switch ..data with one rename.
    let tmp_link = dir.join("..data_tmp");
    let _ = fs::remove_file(&tmp_link);
    symlink(&stamp, &tmp_link)?;
    let old = fs::read_link(dir.join("..data")).ok();
    fs::rename(&tmp_link, dir.join("..data"))?;
    // Top-level names point through ..data.
    let mut names: Vec<String> = files
        .iter()
        .filter_map(|f| f.path.components().next())
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.dedup();
    for n in &names {
        let link = dir.join(n);
        if fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(n), &link)?;
        }
    }
    for e in fs::read_dir(dir)?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if !n.starts_with("..") && !names.contains(&n) {
            let _ = fs::remove_file(e.path());
        }
    }
    if let Some(old) = old {
        if old != Path::new(&stamp) {
            let _ = fs::remove_dir_all(dir.join(old));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_swapped_atomically_and_stale_names_go() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("cfg");
        let file = |p: &str, data: &str| VolumeFile {
            path: p.into(),
            data: data.as_bytes().to_vec(),
            mode: 0o640,
        };
        write_atomic(&d, &[file("a", "1"), file("sub/b", "2")]).unwrap();
        assert_eq!(fs::read_to_string(d.join("a")).unwrap(), "1");
        assert_eq!(fs::read_to_string(d.join("sub/b")).unwrap(), "2");
        assert_eq!(
            fs::metadata(d.join("a")).unwrap().permissions().mode() & 0o777,
            0o640
        );
        write_atomic(&d, &[file("a", "3")]).unwrap();
        assert_eq!(fs::read_to_string(d.join("a")).unwrap(), "3");
        assert!(fs::symlink_metadata(d.join("sub")).is_err());
        let generations = fs::read_dir(&d)
            .unwrap()
            .filter(|e| {
                let n = e
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .into_owned();
                n.starts_with("..") && n != "..data"
            })
            .count();
        assert_eq!(generations, 1);
    }

    #[test]
    fn host_path_types_are_checked_or_created() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("new/dir");
        host_path(&dir, "DirectoryOrCreate").unwrap();
        assert!(dir.is_dir());
        let file = tmp.path().join("f");
        host_path(&file, "FileOrCreate").unwrap();
        assert!(file.is_file());
        assert!(host_path(&file, "Directory")
            .unwrap_err()
            .contains("is not a directory"));
        assert!(host_path(&tmp.path().join("missing"), "File").is_err());
    }
}
