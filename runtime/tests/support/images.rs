//! The test images (`busybox.tar`, `testserver.tar`), built once per target directory
//! under a lock by `deploy/images/build.sh`; shared by the runtime's tests and the root
//! package's e2e scenarios and benchmark (through `#[path]`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory holding `busybox.tar` and `testserver.tar`.
pub fn images() -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-images");
    std::fs::create_dir_all(&out).unwrap();
    let lock = std::fs::File::create(out.with_extension("lock")).unwrap();
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = [
        manifest.join("deploy/images/build.sh"),
        manifest.join("../deploy/images/build.sh"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .expect("deploy/images/build.sh");
    let stamp = out.join(".built");
    let fresh = std::fs::metadata(&stamp)
        .and_then(|m| m.modified())
        .ok()
        .zip(std::fs::metadata(&script).and_then(|m| m.modified()).ok())
        .is_some_and(|(s, b)| s >= b);
    if !fresh || !out.join("testserver.tar").exists() {
        let st = Command::new("bash")
            .arg(&script)
            .arg("--out")
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "deploy/images/build.sh failed");
        std::fs::write(&stamp, b"").unwrap();
    }
    out
}
