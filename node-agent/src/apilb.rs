//! The agent's way to every control-plane member: a TCP balancer on loopback (as k3s'
//! agent load balancer) that the agent's API client connects to. It passes each connection
//! to a member that answers, preferring the one that answered last, and checks every member
//! each second; when one stops answering, the connections through it are closed, so the
//! client's watches start again at once through another member instead of hanging on a
//! machine that is gone. TLS goes end to end: every member's serving certificate covers
//! `127.0.0.1`, and the client checks it against the cluster's CA as before.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long a member has to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often every member is checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Failed checks in a row after which a member counts as gone.
const FAILS_TO_DOWN: u32 = 2;

struct Member {
    addr: String,
    up: AtomicBool,
    /// Bumped when the member goes down: connections through it end.
    down_epoch: watch::Sender<u64>,
}

struct Shared {
    members: Vec<Member>,
    preferred: AtomicUsize,
}

/// A running balancer; stops when dropped.
pub struct ApiBalancer {
    /// The loopback address to use as the API server's.
    pub addr: std::net::SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for ApiBalancer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// `host:port` of an `https://host:port[/...]` URL.
pub fn authority(url: &str) -> anyhow::Result<String> {
    let u: http::Uri = url
        .parse()
        .with_context(|| format!("API server URL {url:?}"))?;
    if u.scheme_str() != Some("https") {
        anyhow::bail!("API server URL {url:?}: only https is served");
    }
    let host = u
        .host()
        .with_context(|| format!("API server URL {url:?} has no host"))?;
    Ok(format!("{host}:{}", u.port_u16().unwrap_or(443)))
}

impl ApiBalancer {
    /// Listens on an ephemeral loopback port and balances over `members` (`host:port`), in
    /// the order given until one fails.
    pub async fn start(members: Vec<String>) -> anyhow::Result<Self> {
        anyhow::ensure!(!members.is_empty(), "no API server to balance over");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the API balancer on loopback")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            members: members
                .into_iter()
                .map(|addr| Member {
                    addr,
                    up: AtomicBool::new(true),
                    down_epoch: watch::channel(0).0,
                })
                .collect(),
            preferred: AtomicUsize::new(0),
        });
        tracing::info!(%addr, members = ?shared.members.iter().map(|m| &m.addr).collect::<Vec<_>>(), "API balancer");
        let tasks = vec![
            tokio::spawn(accept_loop(listener, shared.clone())),
            tokio::spawn(check_loop(shared)),
        ];
        Ok(Self { addr, tasks })
    }
}

async fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    s.set_nodelay(true)?;
    Ok(s)
}

/// The members to try, best first: the preferred one, then the others that are up in
/// order, then those that are down (a check may be behind).
fn order(shared: &Shared) -> Vec<usize> {
    let n = shared.members.len();
    let first = shared.preferred.load(Ordering::Relaxed) % n;
    let rotated = (0..n).map(|i| (first + i) % n);
    let (up, down): (Vec<usize>, Vec<usize>) =
        rotated.partition(|&i| shared.members[i].up.load(Ordering::Relaxed));
    up.into_iter().chain(down).collect()
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (client, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "API balancer accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            for i in order(&shared) {
                let m = &shared.members[i];
                match connect(&m.addr).await {
                    Ok(upstream) => {
                        shared.preferred.store(i, Ordering::Relaxed);
                        let mut down = m.down_epoch.subscribe();
                        down.mark_unchanged();
                        relay(client, upstream, &mut down).await;
                        return;
                    }
                    Err(e) => {
                        if m.up.swap(false, Ordering::Relaxed) {
                            tracing::warn!(member = %m.addr, error = %e, "API server unreachable; trying the next");
                        }
                    }
                }
            }
            tracing::warn!("no API server reachable");
        });
    }
}

/// Copies both ways until either side closes or the member is declared down.
async fn relay(mut client: TcpStream, mut upstream: TcpStream, down: &mut watch::Receiver<u64>) {
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        _ = down.changed() => {}
    }
}

async fn check_loop(shared: Arc<Shared>) {
    let mut fails = vec![0u32; shared.members.len()];
    loop {
        let checks = shared.members.iter().map(|m| connect(&m.addr));
        let results = futures::future::join_all(checks).await;
        for (i, r) in results.into_iter().enumerate() {
            let m = &shared.members[i];
            match r {
                Ok(_) => {
                    fails[i] = 0;
                    if !m.up.swap(true, Ordering::Relaxed) {
                        tracing::info!(member = %m.addr, "API server reachable again");
                    }
                }
                Err(e) => {
                    fails[i] += 1;
                    if fails[i] == FAILS_TO_DOWN {
                        m.up.store(false, Ordering::Relaxed);
                        tracing::warn!(member = %m.addr, error = %e, "API server down: closing its connections");
                        m.down_epoch.send_modify(|e| *e += 1);
                    }
                }
            }
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An echo server that prefixes every answer with its name.
    async fn named_echo(name: &'static str) -> (String, tokio::task::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let mut out = name.as_bytes().to_vec();
                        out.extend_from_slice(&buf[..n]);
                        if s.write_all(&out).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (addr, task)
    }

    async fn ask(addr: std::net::SocketAddr) -> std::io::Result<String> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"x").await?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    #[test]
    fn authority_of_urls() {
        assert_eq!(authority("https://10.0.0.1:6443").unwrap(), "10.0.0.1:6443");
        assert_eq!(
            authority("https://api.example/").unwrap(),
            "api.example:443"
        );
        assert!(authority("http://10.0.0.1:6443").is_err());
        assert!(authority("not a url").is_err());
    }

    #[tokio::test]
    async fn fails_over_and_closes_connections_through_a_dead_member() {
        let (a, a_task) = named_echo("a").await;
        let (b, _b_task) = named_echo("b").await;
        let lb = ApiBalancer::start(vec![a, b]).await.unwrap();
        assert_eq!(ask(lb.addr).await.unwrap(), "ax");

        // A long-lived connection through a, like a watch.
        let mut held = TcpStream::connect(lb.addr).await.unwrap();
        held.write_all(b"y").await.unwrap();
        let mut buf = [0u8; 8];
        let n = held.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"ay");

        // a goes away (its listener closes; its connection tasks keep running, as on a
        // machine whose network is cut): new connections go to b at once...
        a_task.abort();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(ask(lb.addr).await.unwrap(), "bx");
        // ...and the held connection is closed once the checks declare a down.
        let closed = tokio::time::timeout(Duration::from_secs(10), held.read(&mut buf))
            .await
            .expect("the connection through the dead member was not closed");
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    }

    #[tokio::test]
    async fn refuses_no_members() {
        assert!(ApiBalancer::start(vec![]).await.is_err());
    }
}
