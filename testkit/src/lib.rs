//! Support shared by the workspace's tests and benchmarks.
//!
//! [`free_port`] hands out loopback ports that no other test process on this machine is
//! handed at the same time. Checking that a port is free and binding it later is a race:
//! nextest runs tests as separate processes, and two of them could pick the same free port
//! before either binds it (CI failed so: "binding 127.0.0.1:21064: Address already in use").
//! So each port handed out is also claimed with an advisory lock on a file named after it,
//! held until the process exits; every caller of [`free_port`] skips ports locked by others.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::Mutex;

use rand::Rng;

/// Ports handed out by this process, with the files whose locks claim them.
static CLAIMED: Mutex<Vec<(u16, File)>> = Mutex::new(Vec::new());

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
    let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
    let mine: HashSet<u16> = claimed.iter().map(|(p, _)| *p).collect();
    let mut rng = rand::thread_rng();
    for _ in 0..10_000 {
        let port = rng.gen_range(RANGE);
        if mine.contains(&port) {
            continue;
        }
        let path = dir.join(port.to_string());
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        if file.try_lock().is_err() {
            continue; // another test process holds it
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            claimed.push((port, file));
            return port;
        }
    }
    panic!("no free loopback port in {RANGE:?} after 10,000 tries")
}

#[cfg(test)]
mod tests {
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
