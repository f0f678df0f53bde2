//! The pause binary: PID 1 of every pod sandbox.
//!
//! It is built from `runtime/pause/pause.rs` by `build.rs` (a static, std-free binary of a
//! few kilobytes) and embedded here, so a node needs no pause image: [`install`] writes it into
//! a directory that the sandbox's root filesystem then includes.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The pause binary's bytes.
pub const PAUSE_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth-pause"));

/// The file name [`install`] writes in its directory.
pub const FILE_NAME: &str = "berth-pause";

const MODE: u32 = 0o755;

/// Writes the pause binary to `dir/berth-pause` with mode 0755 and returns that path.
///
/// The write goes to a temporary file in `dir` that is then renamed over the target, so a
/// reader never sees a half-written binary and a running pause keeps its old inode. When the
/// file already has the same content and mode, nothing is written. `dir` is created if missing.
pub fn install(dir: &Path) -> io::Result<PathBuf> {
    let path = dir.join(FILE_NAME);
    if is_installed(&path)? {
        return Ok(path);
    }
    fs::create_dir_all(dir)?;
    // Unique per process and per call, so concurrent installers never share a temp file.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{FILE_NAME}.{}.{seq}.tmp", std::process::id()));
    let written = write_new(&tmp).and_then(|()| fs::rename(&tmp, &path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map(|()| path)
}

fn write_new(tmp: &Path) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(MODE)
        .open(tmp)?;
    file.write_all(PAUSE_BINARY)?;
    // The umask may have cleared bits that `mode` asked for.
    file.set_permissions(Permissions::from_mode(MODE))?;
    file.sync_all()
}

fn is_installed(path: &Path) -> io::Result<bool> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err),
    };
    if !meta.is_file()
        || meta.permissions().mode() & 0o7777 != MODE
        || meta.len() != PAUSE_BINARY.len() as u64
    {
        return Ok(false);
    }
    Ok(fs::read(path)? == PAUSE_BINARY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command, Stdio};
    use std::thread::sleep;
    use std::time::{Duration, Instant};

    /// A child that is killed and reaped when the test ends, even when it fails.
    struct Running(Child);

    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Spawns `cmd`, retrying on ETXTBSY: another test thread may have forked while a freshly
    /// installed binary was still open for writing, and that child holds the fd until it execs.
    fn spawn(cmd: &mut Command) -> Running {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match cmd.spawn() {
                Err(err)
                    if err.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < deadline =>
                {
                    sleep(Duration::from_millis(10))
                }
                other => return Running(other.expect("spawning failed")),
            }
        }
    }

    fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            sleep(Duration::from_millis(10));
        }
    }

    /// Pause is waiting for signals: its signal mask is set, so one sent now is not lost.
    fn wait_ready(pid: u32) {
        wait_until("pause waits in rt_sigtimedwait", || {
            fs::read_to_string(format!("/proc/{pid}/syscall"))
                .is_ok_and(|s| s.split_whitespace().next() == Some("128"))
        });
    }

    #[test]
    fn binary_is_small_and_static() {
        assert!(PAUSE_BINARY.starts_with(b"\x7fELF"));
        assert!(
            PAUSE_BINARY.len() < 64 * 1024,
            "pause is {} bytes",
            PAUSE_BINARY.len()
        );
    }

    #[test]
    fn install_writes_once_and_repairs() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("bin");
        let path = install(&target).unwrap();
        assert_eq!(path, target.join(FILE_NAME));
        assert_eq!(fs::read(&path).unwrap(), PAUSE_BINARY);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o755);

        // Identical content: left alone (same inode).
        install(&target).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().ino(), meta.ino());

        // Wrong content or mode: replaced.
        fs::write(&path, b"not pause").unwrap();
        install(&target).unwrap();
        assert_eq!(fs::read(&path).unwrap(), PAUSE_BINARY);
        fs::set_permissions(&path, Permissions::from_mode(0o700)).unwrap();
        install(&target).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o755
        );

        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(&target)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE_NAME]);
    }

    #[test]
    fn stays_up_until_sigterm_then_exits_zero() {
        let dir = tempfile::tempdir().unwrap();
        let pause = install(dir.path()).unwrap();
        for signal in [Signal::SIGTERM, Signal::SIGINT] {
            let Running(child) = &mut spawn(&mut Command::new(&pause));
            wait_ready(child.id());
            sleep(Duration::from_millis(100));
            assert!(
                child.try_wait().unwrap().is_none(),
                "pause exited on its own"
            );
            kill(Pid::from_raw(child.id() as i32), signal).unwrap();
            let status = child.wait().unwrap();
            assert_eq!(status.code(), Some(0), "after {signal}: {status:?}");
            assert_eq!(status.signal(), None);
        }
    }

    #[test]
    fn reaps_children_it_inherits() {
        let dir = tempfile::tempdir().unwrap();
        let pause = install(dir.path()).unwrap();
        // The shell starts a short-lived child and then becomes pause, which inherits the
        // child: when it exits, only pause can reap it.
        let script = format!("sleep 0.2 & echo $!; exec {}", pause.display());
        let Running(child) = &mut spawn(
            Command::new("sh")
                .args(["-c", &script])
                .stdout(Stdio::piped()),
        );
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let orphan: u32 = line.trim().parse().unwrap();
        wait_ready(child.id());
        // A zombie keeps its /proc entry (state Z) until it is reaped.
        wait_until("the exited child is reaped", || {
            !Path::new(&format!("/proc/{orphan}")).exists()
        });
        assert!(child.try_wait().unwrap().is_none());
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(0));
    }
}
