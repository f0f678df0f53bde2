//! Helpers for tests and the benchmark that program real nftables: a throwaway network
//! namespace entered by a thread, addresses on `lo` for backends, and small TCP/UDP servers
//! that answer with their own name.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context};

/// Runs a command, failing with its stderr.
pub fn sh(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!(
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace `bt-<purpose>-<pid>`, deleted on drop (also when the test panics).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(purpose: &str) -> anyhow::Result<Netns> {
        let name = format!("bt-{purpose}-{}", std::process::id());
        let _ = sh(&["ip", "netns", "del", &name]);
        sh(&["ip", "netns", "add", &name])?;
        Ok(Netns { name })
    }

    /// Runs `f` on a thread inside the namespace: sockets it opens and processes it starts
    /// (nft included) live there.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            let handle = s.spawn(|| {
                let file = std::fs::File::open(format!("/var/run/netns/{}", self.name))
                    .expect("open the netns");
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            });
            handle
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}

/// This node's address (on a dummy device that also routes the service range).
pub const NODE_IP: &str = "10.244.0.1";

/// Inside the namespace: `lo` up, a device `d0` with [`NODE_IP`]/24 routing 10.96.0.0/16,
/// and each backend address on `lo`.
pub fn topology(backends: &[&str]) -> anyhow::Result<()> {
    sh(&["ip", "link", "set", "lo", "up"])?;
    // A veth pair stands in for the node's uplink (the kernel may lack the dummy driver).
    sh(&[
        "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1",
    ])?;
    sh(&["ip", "link", "set", "d0", "up"])?;
    sh(&["ip", "link", "set", "d1", "up"])?;
    sh(&["ip", "addr", "add", &format!("{NODE_IP}/24"), "dev", "d0"])?;
    sh(&["ip", "route", "add", "10.96.0.0/16", "dev", "d0"])?;
    for b in backends {
        sh(&["ip", "addr", "add", &format!("{b}/32"), "dev", "lo"])?;
    }
    Ok(())
}

/// A [`TcpBackend`] reply that stands for the client's address as the server sees it.
pub const PEER: &str = "$peer";

/// A TCP server that writes `reply` (or, for [`PEER`], the client's address) to every
/// connection and closes it.
pub struct TcpBackend {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpBackend {
    pub fn start(addr: &str, reply: &str) -> anyhow::Result<TcpBackend> {
        let listener = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let reply = reply.to_string();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(mut c) = conn {
                    let answer = match (reply.as_str(), c.peer_addr()) {
                        (PEER, Ok(peer)) => peer.ip().to_string(),
                        _ => reply.clone(),
                    };
                    let _ = c.write_all(answer.as_bytes());
                }
            }
        });
        Ok(TcpBackend {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for TcpBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A UDP server that answers every datagram with `reply`.
pub struct UdpBackend {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpBackend {
    pub fn start(addr: &str, reply: &str) -> anyhow::Result<UdpBackend> {
        let sock = UdpSocket::bind(addr).with_context(|| format!("bind udp {addr}"))?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let reply = reply.to_string();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::SeqCst) {
                if let Ok((_, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(reply.as_bytes(), from);
                }
            }
        });
        Ok(UdpBackend {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for UdpBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects to `addr` and reads what the server says.
pub fn ask(addr: &str) -> std::io::Result<String> {
    let addr: SocketAddr = addr.parse().expect("socket address");
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    c.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut s = String::new();
    c.read_to_string(&mut s)?;
    Ok(s)
}

/// Sends a datagram on `sock` (connected) and reads the answer.
pub fn ask_udp(sock: &UdpSocket) -> std::io::Result<String> {
    sock.send(b"?")?;
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}
