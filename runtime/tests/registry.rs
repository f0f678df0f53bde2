//! Pulling from a real registry: Debian's `docker-registry` (the CNCF distribution
//! registry), one instance per test on 127.0.0.1 with a free port, its own storage
//! directory and a generated config; images pushed with `skopeo` from the test images
//! `deploy/images/build.sh` makes. Every instance is killed when its test ends, passed or
//! failed. Missing tools are installed with apt-get (CI runs as root), else the test fails
//! saying which.

mod support;

use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use berth_runtime::image::registry::{Credentials, HostConfig};
use berth_runtime::image::{ImageStore, Platform, PullError, RegistryConfig};
use berth_runtime::pod::{ContainerConfig, ContainerState, SandboxConfig};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

// ---- tools

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// Install the Debian packages of the tools that are missing (once, under a lock shared
/// by the tests of this run), or fail saying what could not be had.
fn ensure_tools() {
    let wanted = [
        ("docker-registry", "docker-registry"),
        ("skopeo", "skopeo"),
        ("htpasswd", "apache2-utils"),
    ];
    let lock_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("registry-tools.lock");
    let lock = fs::File::create(&lock_path).unwrap();
    // SAFETY: flock on a descriptor we own; released when `lock` is dropped.
    let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    assert_eq!(rc, 0);
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(tool, _)| !on_path(tool))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return;
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut install = vec!["install", "-y", "-qq"];
    install.extend(&missing);
    if !apt(&install) {
        assert!(apt(&["update", "-qq"]), "apt-get update failed");
        assert!(
            apt(&install),
            "these tests need {missing:?} and apt-get could not install them"
        );
    }
    for (tool, pkg) in wanted {
        assert!(on_path(tool), "{tool} (package {pkg}) is still missing");
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

// ---- the registry

#[derive(Default)]
struct Options {
    /// Users, with htpasswd (bcrypt) auth unless `token`.
    users: Vec<(&'static str, &'static str)>,
    /// Serve HTTPS with a certificate from a CA made for the test.
    tls: bool,
    /// Bearer token auth, with a token service (ours) that checks `users`.
    token: bool,
}

/// A `docker-registry` process; killed and reaped on drop.
struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    /// PEM of the CA that signed the serving certificate, with `tls`.
    ca_file: Option<PathBuf>,
    creds: Option<(&'static str, &'static str)>,
    token_server: Option<TokenServer>,
}

impl Registry {
    fn start(opts: Options) -> Registry {
        ensure_tools();
        let dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()
            .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let storage = dir.path().join("storage");
        fs::create_dir(&storage).unwrap();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        let mut ca_file = None;
        if opts.tls {
            let (ca, cert, key) = test_pki();
            for (name, pem) in [("ca.pem", &ca), ("cert.pem", &cert), ("key.pem", &key)] {
                fs::write(dir.path().join(name), pem).unwrap();
            }
            config += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("cert.pem").display(),
                dir.path().join("key.pem").display()
            );
            ca_file = Some(dir.path().join("ca.pem"));
        }
        let mut token_server = None;
        if opts.token {
            let ts = TokenServer::start(opts.users.clone());
            fs::write(dir.path().join("token-signer.pem"), &ts.cert_pem).unwrap();
            config += &format!(
                "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                ts.port,
                dir.path().join("token-signer.pem").display()
            );
            token_server = Some(ts);
        } else if !opts.users.is_empty() {
            let htpasswd = dir.path().join("htpasswd");
            let mut lines = String::new();
            for (user, password) in &opts.users {
                lines += &run(Command::new("htpasswd").args(["-Bbn", user, password]));
            }
            fs::write(&htpasswd, lines).unwrap();
            config += &format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).unwrap();
        let log = fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut reg = Registry {
            child,
            dir,
            port,
            ca_file,
            creds: opts.users.first().copied(),
            token_server,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = reg.child.try_wait() {
                panic!("docker-registry exited ({status}):\n{}", reg.log());
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry not listening:\n{}",
                reg.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `skopeo copy [--all] SRC docker://host/dest`.
    fn push(&self, src: &str, dest: &str, all: bool) {
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
        ]);
        if all {
            cmd.arg("--all");
        }
        if let Some((u, p)) = self.creds {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        cmd.arg(src).arg(format!("docker://{}/{dest}", self.host()));
        run(&mut cmd);
    }

    /// Blob digests GET by berth (from the access log), in order.
    fn blob_gets(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("berth/"))
            .filter_map(|l| {
                let path = l.split('"').nth(1)?.split(' ').nth(1)?;
                let (_, digest) = path.split_once("/blobs/")?;
                Some(digest.to_string())
            })
            .collect()
    }

    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Plain HTTP to this registry (unless TLS), with its credentials.
    fn config(&self) -> RegistryConfig {
        let mut c = RegistryConfig::default();
        c.hosts.insert(
            self.host(),
            HostConfig {
                insecure: self.ca_file.is_none(),
                ca_file: self.ca_file.clone(),
                credentials: self.creds.map(|(u, p)| Credentials {
                    username: u.into(),
                    password: p.into(),
                }),
                ..HostConfig::default()
            },
        );
        c
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request to the token service: its path (with query) and Authorization header.
type TokenRequest = (String, Option<String>);

const TOKEN_SERVICE: &str = "berth-test-registry";
const TOKEN_ISSUER: &str = "berth-test-issuer";

/// A token service as the distribution registry's `auth: token:` expects (its
/// docs/spec/auth/token.md): `GET /token?service=…&scope=repository:NAME:ACTIONS` with
/// Basic credentials answers `{"token": JWT}`, the JWT signed (ES256) by a key whose
/// self-signed certificate the registry trusts (`rootcertbundle`) and which the token
/// carries in its `x5c` header. Records each request's path and Authorization.
struct TokenServer {
    port: u16,
    cert_pem: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<TokenRequest>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenServer {
    fn start(users: Vec<(&'static str, &'static str)>) -> TokenServer {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};

        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "berth token signer");
        let cert = params.self_signed(&key).unwrap();
        let rng = ring::rand::SystemRandom::new();
        let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &rng,
        )
        .unwrap();
        let x5c = base64::engine::general_purpose::STANDARD.encode(cert.der());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let path = line.split(' ').nth(1).unwrap_or("").to_string();
                let mut authorization = None;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            authorization = Some(v.trim().to_string());
                        }
                    }
                }
                seen2
                    .lock()
                    .unwrap()
                    .push((path.clone(), authorization.clone()));
                let user = users.iter().find(|(u, p)| {
                    authorization.as_deref()
                        == Some(&format!(
                            "Basic {}",
                            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                        ))
                });
                let (status, body) = match user {
                    None => (
                        "401 Unauthorized",
                        r#"{"details":"bad credentials"}"#.to_string(),
                    ),
                    Some((u, _)) => {
                        let jwt = sign_token(&signer, &rng, &x5c, u, &path);
                        (
                            "200 OK",
                            json!({"token": jwt, "expires_in": 300}).to_string(),
                        )
                    }
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenServer {
            port,
            cert_pem: cert.pem(),
            seen,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An ES256 JWT granting the actions of every `scope` in the query of `path`.
fn sign_token(
    signer: &ring::signature::EcdsaKeyPair,
    rng: &ring::rand::SystemRandom,
    x5c: &str,
    user: &str,
    path: &str,
) -> String {
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let query = path.split_once('?').map(|(_, q)| q).unwrap_or("");
    let access: Vec<Value> = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("scope="))
        .map(|s| s.replace("%3A", ":").replace("%2F", "/").replace("%2C", ","))
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = json!({"typ": "JWT", "alg": "ES256", "x5c": [x5c]});
    let claims = json!({
        "iss": TOKEN_ISSUER, "sub": user, "aud": TOKEN_SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{user}"),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = signer.sign(rng, signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", b64(sig.as_ref()))
}

/// (CA, server certificate for 127.0.0.1, server key), PEM.
fn test_pki() -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, SanType,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "berth registry test ca");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_cert.pem(), ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

// ---- images

fn busybox_tar() -> PathBuf {
    support::images().join("busybox.tar")
}

/// The busybox test image's OCI layout, extracted into `dir`; its manifest's descriptor.
fn busybox_layout(dir: &Path) -> Value {
    let file = fs::File::open(busybox_tar()).unwrap();
    tar::Archive::new(file).unpack(dir).unwrap();
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["manifests"][0].clone()
}

fn read_blob(layout: &Path, digest: &str) -> Vec<u8> {
    fs::read(layout.join("blobs/sha256").join(&digest[7..])).unwrap()
}

fn write_blob(layout: &Path, data: &[u8]) -> (String, usize) {
    let d = sha256(data);
    fs::write(layout.join("blobs/sha256").join(&d[7..]), data).unwrap();
    (d, data.len())
}

struct Store {
    _dir: tempfile::TempDir,
    store: ImageStore,
}

fn store() -> Store {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("images"))
        .unwrap()
        .with_platform(Platform::new("linux", "amd64"));
    Store { _dir: dir, store }
}

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

// ---- tests

/// Anonymous pull over plain HTTP into a runtime; the image runs; pulling it again, or
/// another tag of it, downloads no blob.
#[test]
fn anonymous_pull_runs_and_repull_fetches_nothing() {
    let reg = Registry::start(Options::default());
    let src = format!("oci-archive:{}", busybox_tar().display());
    reg.push(&src, "library/busybox:latest", false);
    reg.push(&src, "library/busybox:again", false);
    let cfg = reg.config();
    let t = support::TestRuntime::new();
    let images = t.rt.images();

    let reference = format!("{}/library/busybox:latest", reg.host());
    let img = images.pull(&reference, &cfg).unwrap();
    assert_eq!(img.names, vec![reference.clone()]);
    assert_eq!(images.get(&reference).unwrap(), img);
    let dirs = images.layer_dirs(&img).unwrap();
    assert_eq!(dirs.len(), 1);
    assert!(dirs[0].join("bin/busybox").is_file());
    let first = reg.blob_gets();
    assert_eq!(first.len(), 2, "config and the layer: {first:?}");
    assert!(first.contains(&img.id) && first.contains(&img.layers[0]));

    let again = images.pull(&reference, &cfg).unwrap();
    assert_eq!(again, img);
    let other = images
        .pull(&format!("{}/library/busybox:again", reg.host()), &cfg)
        .unwrap();
    assert_eq!(other.id, img.id);
    assert_eq!(reg.blob_gets(), first, "a blob was downloaded twice");

    // Run it: the pulled image is what the container's root is made of.
    t.rt.run_sandbox(&SandboxConfig {
        id: "pulled".into(),
        name: "pulled".into(),
        namespace: "default".into(),
        hostname: "pulled".into(),
        ..Default::default()
    })
    .unwrap();
    let log = t.dir.path().join("c.log");
    let id =
        t.rt.create_container(
            "pulled",
            &ContainerConfig {
                name: "c".into(),
                image: reference.clone(),
                command: vec!["sh".into(), "-c".into(), "echo pulled-and-running".into()],
                log_path: Some(log.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    t.rt.start_container(&id).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = t.rt.container_status(&id).unwrap();
        if s.state == ContainerState::Exited && s.exit_code.is_some() {
            assert_eq!(s.exit_code, Some(0));
            break;
        }
        assert!(Instant::now() < deadline, "container still {:?}", s.state);
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains(" stdout F pulled-and-running"), "{text}");
}

#[test]
fn pull_by_digest() {
    let reg = Registry::start(Options::default());
    reg.push(
        &format!("oci-archive:{}", busybox_tar().display()),
        "tools/busybox:1",
        false,
    );
    let dir = tempfile::tempdir().unwrap();
    let manifest = busybox_layout(dir.path());
    let digest = manifest["digest"].as_str().unwrap();
    let s = store();
    let reference = format!("{}/tools/busybox@{digest}", reg.host());
    let img = s.store.pull(&reference, &reg.config()).unwrap();
    assert_eq!(img.manifest_digest, digest);
    assert!(
        img.names.is_empty(),
        "a digest names no tag: {:?}",
        img.names
    );
    assert_eq!(img.repo_digests, vec![reference.clone()]);
    assert_eq!(s.store.get(&reference).unwrap().id, img.id);
    assert_eq!(s.store.layer_dirs(&img).unwrap().len(), 1);

    let unknown = format!("{}/tools/busybox@{}", reg.host(), sha256(b"nothing"));
    let err = s.store.pull(&unknown, &reg.config()).unwrap_err();
    assert!(matches!(err, PullError::NotFound { .. }), "{err}");
}

/// An index with arm64 first and amd64 second, pushed whole: the amd64 image is pulled,
/// and nothing of the arm64 one.
#[test]
fn multi_arch_index_selects_amd64() {
    let reg = Registry::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path();
    let amd = busybox_layout(layout);
    let amd_manifest: Value =
        serde_json::from_slice(&read_blob(layout, amd["digest"].as_str().unwrap())).unwrap();
    let mut config: Value = serde_json::from_slice(&read_blob(
        layout,
        amd_manifest["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    config["architecture"] = json!("arm64");
    config["variant"] = json!("v8");
    let (arm_config, arm_config_size) = write_blob(layout, &serde_json::to_vec(&config).unwrap());
    let mut arm_manifest = amd_manifest.clone();
    arm_manifest["config"]["digest"] = json!(arm_config);
    arm_manifest["config"]["size"] = json!(arm_config_size);
    let (arm_digest, arm_size) = write_blob(layout, &serde_json::to_vec(&arm_manifest).unwrap());
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm_digest,
             "size": arm_size, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd["digest"],
             "size": amd["size"], "platform": {"os": "linux", "architecture": "amd64"}},
        ],
    });
    let (index_digest, index_size) = write_blob(layout, &serde_json::to_vec(&index).unwrap());
    let top = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest,
        "size": index_size, "annotations": {"org.opencontainers.image.ref.name": "multi"}}]});
    fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    reg.push(&format!("oci:{}:multi", layout.display()), "multi:1", true);

    let s = store();
    let reference = format!("{}/multi:1", reg.host());
    let img = s.store.pull(&reference, &reg.config()).unwrap();
    assert_eq!(img.id, amd_manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(img.manifest_digest, amd["digest"].as_str().unwrap());
    let by_index = format!("{}/multi@{index_digest}", reg.host());
    assert_eq!(img.repo_digests, vec![by_index.clone()]);
    assert_eq!(s.store.get(&by_index).unwrap().id, img.id);
    assert_eq!(s.store.get(&reference).unwrap().id, img.id);
    let gets = reg.blob_gets();
    assert!(!gets.contains(&arm_config), "{gets:?}");
    assert_eq!(gets.len(), 2, "{gets:?}");

    // Asked for arm64, the same index gives that image, found by the index digest too.
    let arm_store = ImageStore::open(&s._dir.path().join("arm"))
        .unwrap()
        .with_platform(Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: Some("v8".into()),
        });
    let arm = arm_store.pull(&by_index, &reg.config()).unwrap();
    assert_eq!(arm.id, arm_config);
    assert!(arm.names.is_empty());
}

#[test]
fn basic_auth_with_htpasswd() {
    let reg = Registry::start(Options {
        users: vec![("alice", "s3cret")],
        ..Options::default()
    });
    reg.push(
        &format!("oci-archive:{}", busybox_tar().display()),
        "private/busybox:1",
        false,
    );
    let reference = format!("{}/private/busybox:1", reg.host());
    let s = store();

    let mut wrong = reg.config();
    wrong.hosts.get_mut(&reg.host()).unwrap().credentials = Some(Credentials {
        username: "alice".into(),
        password: "wrong".into(),
    });
    let err = s.store.pull(&reference, &wrong).unwrap_err();
    assert!(matches!(err, PullError::Unauthorized { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "pulling {reference}: unauthorized by {}: ",
            reg.host()
        )),
        "{msg}"
    );
    assert!(msg.contains("\"alice\""), "{msg}");

    let mut anonymous = reg.config();
    anonymous.hosts.get_mut(&reg.host()).unwrap().credentials = None;
    let err = s.store.pull(&reference, &anonymous).unwrap_err();
    assert!(matches!(err, PullError::Unauthorized { .. }), "{err}");
    assert!(s.store.list().unwrap().is_empty());

    let img = s.store.pull(&reference, &reg.config()).unwrap();
    assert_eq!(s.store.get(&reference).unwrap().id, img.id);
}

/// The registry's token auth, with the token service above: the pull gets a token with
/// Basic credentials and uses it; wrong or no credentials are refused by the service.
#[test]
fn bearer_token_auth() {
    let reg = Registry::start(Options {
        users: vec![("carol", "t0ken-pw")],
        token: true,
        ..Options::default()
    });
    reg.push(
        &format!("oci-archive:{}", busybox_tar().display()),
        "team/busybox:1",
        false,
    );
    let reference = format!("{}/team/busybox:1", reg.host());
    let s = store();
    let ts = reg.token_server.as_ref().unwrap();
    ts.seen.lock().unwrap().clear();
    let img = s.store.pull(&reference, &reg.config()).unwrap();
    assert_eq!(s.store.get(&reference).unwrap().id, img.id);
    let seen = ts.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "one token for the whole pull: {seen:?}");
    let (path, auth) = &seen[0];
    assert!(path.contains(&format!("service={TOKEN_SERVICE}")), "{path}");
    assert!(path.contains("scope=repository"), "{path}");
    assert!(
        path.contains("team") && path.contains("busybox") && path.contains("pull"),
        "{path}"
    );
    assert!(auth.as_deref().is_some_and(|a| a.starts_with("Basic ")));

    for creds in [
        Some(Credentials {
            username: "carol".into(),
            password: "wrong".into(),
        }),
        None,
    ] {
        let mut cfg = reg.config();
        cfg.hosts.get_mut(&reg.host()).unwrap().credentials = creds;
        let err = store().store.pull(&reference, &cfg).unwrap_err();
        assert!(matches!(err, PullError::Unauthorized { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("unauthorized by {}", reg.host())),
            "{msg}"
        );
        assert!(msg.contains("the token service http://127.0.0.1:"), "{msg}");
    }
}

/// HTTPS with a certificate from a CA made here: refused until the registries file
/// trusts the CA (or, separately, skips verification).
#[test]
fn tls_with_a_ca_from_the_registries_file() {
    let reg = Registry::start(Options {
        tls: true,
        ..Options::default()
    });
    reg.push(
        &format!("oci-archive:{}", busybox_tar().display()),
        "secure/busybox:1",
        false,
    );
    let reference = format!("{}/secure/busybox:1", reg.host());
    let s = store();

    let err = s
        .store
        .pull(&reference, &RegistryConfig::default())
        .unwrap_err();
    assert!(matches!(err, PullError::Tls { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("pulling {reference}: tls with {}: ", reg.host())),
        "{err}"
    );
    assert!(err.to_string().contains("tls.ca_file"), "{err}");

    let file = reg.dir.path().join("registries.yaml");
    fs::write(
        &file,
        format!(
            "configs:\n  \"{}\":\n    tls:\n      ca_file: ca.pem\n",
            reg.host()
        ),
    )
    .unwrap();
    let cfg = RegistryConfig::load(&file).unwrap();
    let img = s.store.pull(&reference, &cfg).unwrap();
    assert_eq!(s.store.get(&reference).unwrap().id, img.id);

    let skip = format!(
        "configs:\n  \"{}\":\n    tls: {{insecure_skip_verify: true}}\n",
        reg.host()
    );
    let cfg = RegistryConfig::parse(&skip, &file).unwrap();
    let s2 = store();
    assert_eq!(s2.store.pull(&reference, &cfg).unwrap().id, img.id);
}

/// A layer blob changed in the registry's storage: refused as a digest mismatch, and the
/// store holds no part of it.
#[test]
fn corrupted_blob_is_refused_and_nothing_half_written_stays() {
    let reg = Registry::start(Options::default());
    reg.push(
        &format!("oci-archive:{}", busybox_tar().display()),
        "library/busybox:latest",
        false,
    );
    let dir = tempfile::tempdir().unwrap();
    let desc = busybox_layout(dir.path());
    let manifest: Value =
        serde_json::from_slice(&read_blob(dir.path(), desc["digest"].as_str().unwrap())).unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let path = reg.blob_file(&layer);
    let mut data = Vec::new();
    fs::File::open(&path)
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x5a;
    fs::write(&path, &data).unwrap();

    let s = store();
    let reference = format!("{}/library/busybox:latest", reg.host());
    let err = s.store.pull(&reference, &reg.config()).unwrap_err();
    let PullError::DigestMismatch {
        ref expected,
        ref actual,
        ..
    } = err
    else {
        panic!("{err}");
    };
    assert_eq!(expected, &layer);
    assert_eq!(actual, &sha256(&data));
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "pulling {reference}: layer {layer} from {}: digest mismatch",
            reg.host()
        )),
        "{msg}"
    );
    let root = s.store.root();
    assert!(!s.store.has_blob(&layer));
    assert_eq!(count(&root.join("tmp")), 0, "something left in tmp/");
    assert_eq!(count(&root.join("layers")), 0);
    assert_eq!(count(&root.join("images")), 0);
    assert!(s.store.list().unwrap().is_empty());
    assert!(s.store.get(&reference).is_err());
}

#[test]
fn unknown_tags_and_repositories_are_not_found() {
    let reg = Registry::start(Options::default());
    reg.push(
        &format!("oci-archive:{}", busybox_tar().display()),
        "library/busybox:latest",
        false,
    );
    let s = store();
    let reference = format!("{}/library/busybox:nope", reg.host());
    let err = s.store.pull(&reference, &reg.config()).unwrap_err();
    assert!(matches!(err, PullError::NotFound { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "pulling {reference}: not found on {}: MANIFEST_UNKNOWN: manifest unknown",
            reg.host()
        )
    );
    let err = s
        .store
        .pull(&format!("{}/no/such:1", reg.host()), &reg.config())
        .unwrap_err();
    assert!(matches!(err, PullError::NotFound { .. }), "{err}");
    // distribution answers MANIFEST_UNKNOWN for a repository it has never seen, too.
    assert!(
        err.to_string().contains("/no/such:1: not found on"),
        "{err}"
    );
}
