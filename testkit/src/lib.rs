//! Support shared by the workspace's tests and benchmarks.
//!
//! [`free_port`] hands out loopback ports that no other test process on this machine is
//! handed at the same time. Checking that a port is free and binding it later is a race:
//! nextest runs tests as separate processes, and two of them could pick the same free port
//! before either binds it (CI failed so: "binding 127.0.0.1:21064: Address already in use").
//! So each port handed out is also claimed with an advisory lock on a file named after it,
//! held until the process exits. A lock belongs to one open file description, so the port is
//! refused to every later caller, in this process or another.

use std::fs::{File, OpenOptions, TryLockError};
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::Mutex;

use rand::Rng;

/// The files whose locks claim the ports this process was handed.
static CLAIMED: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// The lowest and one past the highest port handed out: below the kernel's ephemeral range
/// (32768 and up by default), so no outgoing connection takes a port between the check and
/// the caller's bind.
const RANGE: std::ops::Range<u16> = 12_000..30_000;

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("berth-test-ports")
}

/// A loopback port, free now for TCP and UDP, that neither this process nor any other using
/// this function is handed again while this process lives.
pub fn free_port() -> u16 {
    let dir = lock_dir();
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("creating the port lock directory {}: {e}", dir.display()));
    let mut rng = rand::thread_rng();
    for _ in 0..10_000 {
        let port = rng.gen_range(RANGE);
        let path = dir.join(port.to_string());
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        match file.try_lock() {
            Ok(()) => {}
            // Handed out already, here or in another test process.
            Err(TryLockError::WouldBlock) => continue,
            Err(TryLockError::Error(e)) => panic!("locking {}: {e}", path.display()),
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            CLAIMED.lock().unwrap_or_else(|e| e.into_inner()).push(file);
            return port;
        }
    }
    panic!("no free loopback port in {RANGE:?} after 10,000 tries")
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn a_port_is_never_handed_out_twice_and_is_bindable() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(
            unique.len(),
            ports.len(),
            "a port was handed out twice: {ports:?}"
        );
        for p in &ports {
            assert!(RANGE.contains(p));
            TcpListener::bind(("127.0.0.1", *p)).expect("the port handed out binds");
        }
    }

    #[test]
    fn a_port_claimed_by_this_process_is_locked_for_others() {
        let port = free_port();
        // A second open file description stands for another process: flock locks belong to
        // the description, so this one must be refused while ours is held.
        let other = File::open(lock_dir().join(port.to_string())).expect("the lock file exists");
        assert!(other.try_lock().is_err(), "port {port} was not locked");
    }
}
