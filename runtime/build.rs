//! Compiles the pause binary (`pause/pause.rs`) with `rustc` directly into
//! `$OUT_DIR/berth-pause`, which `src/pause.rs` embeds.
//!
//! Beyond the usual static-binary flags, pause has no std and no libc (see its doc), so it is
//! linked without the C start files and without position independence.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=pause/pause.rs");
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out_dir = env::var_os("OUT_DIR").expect("cargo sets OUT_DIR");
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let out = PathBuf::from(out_dir).join("berth-pause");
    let src = PathBuf::from(manifest_dir).join("pause/pause.rs");
    let mut cmd = Command::new(&rustc);
    cmd.args([
        "--edition",
        "2021",
        "--crate-type",
        "bin",
        "--crate-name",
        "berth_pause",
    ])
    .args([
        "-O",
        "-C",
        "panic=abort",
        "-C",
        "target-feature=+crt-static",
    ])
    .args(["-C", "strip=symbols", "-C", "relocation-model=static"])
    .args(["-C", "link-arg=-nostartfiles"]);
    if let Some(target) = env::var_os("TARGET") {
        cmd.arg("--target").arg(target);
    }
    cmd.arg("-o").arg(&out).arg(&src);
    let status = cmd
        .status()
        .unwrap_or_else(|err| panic!("running {} failed: {err}", rustc.to_string_lossy()));
    assert!(
        status.success(),
        "compiling {} failed: {status}",
        src.display()
    );
}
