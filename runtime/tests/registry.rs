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
    /// htpasswd users (bcrypt).
    users: Vec<(&'static str, &'static str)>,
    /// Serve HTTPS with a certificate from a CA made for the test.
    tls: bool,
}

/// A `docker-registry` process; killed and reaped on drop.
struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    /// PEM of the CA that signed the serving certificate, with `tls`.
    ca_file: Option<PathBuf>,
    creds: Option<(&'static str, &'static str)>,
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
        if !opts.users.is_empty() {
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
        tls: false,
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

/// HTTPS with a certificate from a CA made here: refused until the registries file
/// trusts the CA (or, separately, skips verification).
#[test]
fn tls_with_a_ca_from_the_registries_file() {
    let reg = Registry::start(Options {
        users: vec![],
        tls: true,
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
