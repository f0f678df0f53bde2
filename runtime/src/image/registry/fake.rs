//! A small in-process registry for unit tests: serves an OCI layout's blobs over plain
//! HTTP on loopback, with the auth schemes, redirects and misbehaviour a test asks for,
//! and records every request. The real registry (Debian's `docker-registry`) is driven
//! by `tests/registry.rs`; this one covers what that cannot be made to do (token
//! service, redirects to another host, lying headers).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use base64::Engine as _;

#[derive(Debug, Clone, Default)]
pub(crate) enum FakeAuth {
    #[default]
    Anonymous,
    Basic {
        user: String,
        password: String,
    },
    /// A token service at `/token`; `field` is `token` or `access_token`.
    Bearer {
        user: Option<(String, String)>,
        field: &'static str,
    },
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    /// The listener's port: the registry's or the storage's.
    pub port: u16,
    pub path: String,
    pub authorization: Option<String>,
    pub accept: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Behaviour {
    pub auth: FakeAuth,
    /// `repository:tag` → manifest digest.
    pub tags: HashMap<String, String>,
    /// Blobs are answered with a 307 to a second listener (another host, for ureq).
    pub redirect_blobs: bool,
    /// Bytes served instead of a blob's (or manifest's) real content.
    pub tamper: HashMap<String, Vec<u8>>,
    /// A `Docker-Content-Digest` header to send with every manifest.
    pub claim_digest: Option<String>,
    /// `Content-Type` to send for a manifest instead of its body's `mediaType`.
    pub content_type: HashMap<String, String>,
}

const TOKEN: &str = "fake-token-1";

pub(crate) struct FakeRegistry {
    pub port: u16,
    pub storage_port: u16,
    state: Arc<State>,
    threads: Vec<JoinHandle<()>>,
}

struct State {
    blobs: PathBuf,
    behaviour: Mutex<Behaviour>,
    seen: Mutex<Vec<Seen>>,
    stop: AtomicBool,
    port: u16,
    storage_port: u16,
}

impl FakeRegistry {
    /// Serve the blobs of the OCI layout at `layout`.
    pub(crate) fn start(layout: PathBuf, behaviour: Behaviour) -> FakeRegistry {
        let main = TcpListener::bind("127.0.0.1:0").unwrap();
        let storage = TcpListener::bind("127.0.0.1:0").unwrap();
        let state = Arc::new(State {
            blobs: layout.join("blobs/sha256"),
            behaviour: Mutex::new(behaviour),
            seen: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            port: main.local_addr().unwrap().port(),
            storage_port: storage.local_addr().unwrap().port(),
        });
        let threads = [main, storage]
            .into_iter()
            .map(|l| {
                let state = state.clone();
                std::thread::spawn(move || {
                    for conn in l.incoming() {
                        if state.stop.load(Ordering::SeqCst) {
                            break;
                        }
                        if let Ok(conn) = conn {
                            let port = conn.local_addr().map(|a| a.port()).unwrap_or(0);
                            let _ = state.serve(conn, port);
                        }
                    }
                })
            })
            .collect();
        FakeRegistry {
            port: state.port,
            storage_port: state.storage_port,
            state,
            threads,
        }
    }

    pub(crate) fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub(crate) fn clear_seen(&self) {
        self.state.seen.lock().unwrap().clear();
    }

    pub(crate) fn behaviour(&self) -> std::sync::MutexGuard<'_, Behaviour> {
        self.state.behaviour.lock().unwrap()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        for port in [self.port, self.storage_port] {
            let _ = TcpStream::connect(("127.0.0.1", port));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn reply(status: u16, body: impl Into<Vec<u8>>) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: body.into(),
    }
}

fn oci_error(status: u16, code: &str, message: &str) -> Reply {
    let mut r = reply(
        status,
        format!(r#"{{"errors":[{{"code":"{code}","message":"{message}"}}]}}"#),
    );
    r.headers
        .push(("Content-Type".into(), "application/json".into()));
    r
}

impl State {
    fn serve(&self, conn: TcpStream, port: u16) -> std::io::Result<()> {
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let path = line.split(' ').nth(1).unwrap_or("/").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let seen = Seen {
            port,
            path: path.clone(),
            authorization: headers.get("authorization").cloned(),
            accept: headers.get("accept").cloned(),
        };
        self.seen.lock().unwrap().push(seen.clone());
        let r = self.answer(&seen);
        let mut out = conn;
        write!(out, "HTTP/1.1 {} X\r\n", r.status)?;
        for (k, v) in &r.headers {
            write!(out, "{k}: {v}\r\n")?;
        }
        write!(
            out,
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            r.body.len()
        )?;
        out.write_all(&r.body)?;
        out.flush()
    }

    fn answer(&self, req: &Seen) -> Reply {
        let b = self.behaviour.lock().unwrap();
        if req.port == self.storage_port {
            // Storage trusts its signed URL and refuses extra credentials, as S3 does.
            if req.authorization.is_some() {
                return reply(400, "storage got an Authorization header");
            }
            let hex = req.path.trim_start_matches("/storage/");
            return self.blob(&b, &format!("sha256:{hex}"));
        }
        let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
        if path == "/token" {
            return self.token(&b, req, query);
        }
        if let Some(denied) = self.check_auth(&b, req) {
            return denied;
        }
        if path == "/v2/" {
            return reply(200, "{}");
        }
        let Some(rest) = path.strip_prefix("/v2/") else {
            return reply(404, "");
        };
        if let Some((repo, reference)) = rest.split_once("/manifests/") {
            let digest = if reference.starts_with("sha256:") {
                reference.to_string()
            } else {
                match b.tags.get(&format!("{repo}:{reference}")) {
                    Some(d) => d.clone(),
                    None => return oci_error(404, "MANIFEST_UNKNOWN", "manifest unknown"),
                }
            };
            let mut r = self.blob(&b, &digest);
            if r.status != 200 {
                return oci_error(404, "MANIFEST_UNKNOWN", "manifest unknown");
            }
            let media_type = b.content_type.get(&digest).cloned().unwrap_or_else(|| {
                serde_json::from_slice::<serde_json::Value>(&r.body)
                    .ok()
                    .and_then(|v| v["mediaType"].as_str().map(str::to_string))
                    .unwrap_or_default()
            });
            r.headers.push(("Content-Type".into(), media_type));
            let claimed = b.claim_digest.clone().unwrap_or(digest);
            r.headers.push(("Docker-Content-Digest".into(), claimed));
            return r;
        }
        if let Some((_, digest)) = rest.split_once("/blobs/") {
            if b.redirect_blobs {
                let mut r = reply(307, "");
                r.headers.push((
                    "Location".into(),
                    format!(
                        "http://127.0.0.1:{}/storage/{}",
                        self.storage_port,
                        digest.trim_start_matches("sha256:")
                    ),
                ));
                return r;
            }
            return self.blob(&b, digest);
        }
        reply(404, "")
    }

    fn blob(&self, b: &Behaviour, digest: &str) -> Reply {
        if let Some(data) = b.tamper.get(digest) {
            return reply(200, data.clone());
        }
        let Some(hex) = digest.strip_prefix("sha256:").filter(|h| !h.contains('/')) else {
            return oci_error(404, "BLOB_UNKNOWN", "blob unknown");
        };
        match std::fs::read(self.blobs.join(hex)) {
            Ok(data) => reply(200, data),
            Err(_) => oci_error(404, "BLOB_UNKNOWN", "blob unknown to registry"),
        }
    }

    fn check_auth(&self, b: &Behaviour, req: &Seen) -> Option<Reply> {
        let got = req.authorization.as_deref();
        let (ok, challenge) = match &b.auth {
            FakeAuth::Anonymous => return None,
            FakeAuth::Basic { user, password } => (
                got == Some(&basic(user, password)),
                r#"Basic realm="fake""#.to_string(),
            ),
            FakeAuth::Bearer { .. } => (
                got == Some(&format!("Bearer {TOKEN}")),
                format!(
                    r#"Bearer realm="http://127.0.0.1:{}/token",service="fake-registry""#,
                    self.port
                ),
            ),
        };
        if ok {
            return None;
        }
        let mut r = oci_error(401, "UNAUTHORIZED", "authentication required");
        r.headers.push(("WWW-Authenticate".into(), challenge));
        Some(r)
    }

    fn token(&self, b: &Behaviour, req: &Seen, query: &str) -> Reply {
        let FakeAuth::Bearer { user, field } = &b.auth else {
            return reply(404, "");
        };
        if let Some((u, p)) = user {
            if req.authorization.as_deref() != Some(&basic(u, p)) {
                return reply(401, r#"{"details":"incorrect username or password"}"#);
            }
        }
        if !query.contains("service=fake-registry") || !query.contains("scope=repository") {
            return reply(400, format!("bad token query {query}"));
        }
        reply(200, format!(r#"{{"{field}":"{TOKEN}","expires_in":300}}"#))
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}
