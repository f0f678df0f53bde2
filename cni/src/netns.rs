//! Running code inside another network namespace: on a thread of its own that joins the
//! namespace and ends with the work, so no other thread ever changes namespace.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use nix::sched::{setns, CloneFlags};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("network namespace {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("joining network namespace {path}: {source}")]
    Join {
        path: String,
        #[source]
        source: nix::errno::Errno,
    },
}

/// Open a network namespace file (`/proc/PID/ns/net`, `/run/netns/NAME`).
pub fn open(path: &Path) -> Result<File, Error> {
    File::open(path).map_err(|source| Error::Open {
        path: path.display().to_string(),
        source,
    })
}

/// Run `f` in the network namespace `ns` and return what it returns.
pub fn run_in<T, E>(ns: &File, path: &Path, f: impl FnOnce() -> Result<T, E> + Send) -> Result<T, E>
where
    T: Send,
    E: From<Error> + Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| Error::Join {
                path: path.display().to_string(),
                source,
            })?;
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
