//! `berth store` as real processes, driven by Debian's `etcdctl` and killed with SIGKILL:
//! etcd compatibility, crash recovery, catch-up by snapshot, and bad input.

use berth_testkit::free_port;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_store::pb::etcdserverpb::kv_client::KvClient;
use berth_store::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use berth_store::pb::etcdserverpb::{HashKvRequest, PutRequest, RangeRequest};

/// A `berth store` process, killed when dropped.
struct Member {
    name: String,
    client: u16,
    peer: u16,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn new(name: &str, root: &Path) -> Self {
        Self {
            name: name.into(),
            client: free_port(),
            peer: free_port(),
            dir: root.join(name),
            log: root.join(format!("{name}.log")),
            child: None,
        }
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer)
    }

    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    fn args(&self, initial_cluster: &str, state: &str, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "store".into(),
            format!("--name={}", self.name),
            format!("--data-dir={}", self.dir.display()),
            format!("--listen-client-urls={}", self.client_url()),
            format!("--advertise-client-urls={}", self.client_url()),
            format!("--listen-peer-urls={}", self.peer_url()),
            format!("--initial-advertise-peer-urls={}", self.peer_url()),
            format!("--initial-cluster={initial_cluster}"),
            format!("--initial-cluster-state={state}"),
            "--heartbeat-interval=50".into(),
            "--election-timeout=500".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    fn start(&mut self, initial_cluster: &str, state: &str, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(self.args(initial_cluster, state, extra))
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn berth store");
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn cluster_string(ms: &[&Member]) -> String {
    ms.iter()
        .map(|m| format!("{}={}", m.name, m.peer_url()))
        .collect::<Vec<_>>()
        .join(",")
}

fn etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=10s")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd
        .spawn()
        .expect("etcdctl is installed (Debian package etcd-client)");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn ok_stdout(o: Output) -> String {
    assert!(
        o.status.success(),
        "etcdctl failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn wait_healthy(endpoints: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = etcdctl(endpoints, &["put", "health-probe", "1"], None);
        if o.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "cluster never became writable: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn three(root: &Path, extra: &[&str]) -> Vec<Member> {
    let mut ms: Vec<Member> = ["a", "b", "c"]
        .iter()
        .map(|n| Member::new(n, root))
        .collect();
    let ic = cluster_string(&ms.iter().collect::<Vec<_>>());
    for m in &mut ms {
        m.start(&ic, "new", extra);
    }
    ms
}

fn endpoints(ms: &[&Member]) -> String {
    ms.iter()
        .map(|m| format!("127.0.0.1:{}", m.client))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn etcdctl_drives_a_three_member_store() {
    let root = tempfile::tempdir().unwrap();
    let ms = three(root.path(), &[]);
    let eps = endpoints(&ms.iter().collect::<Vec<_>>());
    wait_healthy(&eps);
    let one = format!("127.0.0.1:{}", ms[1].client);

    // put / get (on a follower or leader alike) / del
    assert_eq!(
        ok_stdout(etcdctl(&eps, &["put", "/k/a", "alpha"], None)).trim(),
        "OK"
    );
    assert_eq!(
        ok_stdout(etcdctl(&one, &["get", "/k/a"], None)),
        "/k/a\nalpha\n"
    );
    ok_stdout(etcdctl(&eps, &["put", "/k/b", "beta"], None));
    assert_eq!(
        ok_stdout(etcdctl(
            &one,
            &["get", "/k/", "--prefix", "--keys-only"],
            None
        ))
        .split_whitespace()
        .collect::<Vec<_>>(),
        ["/k/a", "/k/b"]
    );
    let json = ok_stdout(etcdctl(&one, &["get", "/k/a", "-w", "json"], None));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let rev_a = v["kvs"][0]["mod_revision"].as_i64().unwrap();
    assert!(v["header"]["cluster_id"].as_u64().unwrap() != 0);

    // watch from a past revision sees the history, then live events
    let mut watch = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            format!("--endpoints={one}"),
            "watch".into(),
            "/k/".into(),
            "--prefix".into(),
            format!("--rev={rev_a}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ok_stdout(etcdctl(&eps, &["del", "/k/a"], None)).trim(), "1");
    std::thread::sleep(Duration::from_millis(800));
    let _ = watch.kill();
    let mut out = String::new();
    watch
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let _ = watch.wait();
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["PUT", "/k/a", "alpha", "PUT", "/k/b", "beta", "DELETE", "/k/a", ""],
        "watch output: {out}"
    );

    // txn: compare fails, the failure branch runs
    let txn = ok_stdout(etcdctl(
        &eps,
        &["txn"],
        Some("value(\"/k/b\") = \"nope\"\n\nput /k/c yes\n\nput /k/c no\n\n"),
    ));
    assert!(txn.starts_with("FAILURE"), "txn output: {txn}");
    assert_eq!(
        ok_stdout(etcdctl(&one, &["get", "/k/c", "--print-value-only"], None)).trim(),
        "no"
    );
    let txn = ok_stdout(etcdctl(
        &eps,
        &["txn"],
        Some("value(\"/k/b\") = \"beta\"\n\nput /k/c yes\n\n\n"),
    ));
    assert!(txn.starts_with("SUCCESS"), "txn output: {txn}");

    // member list and endpoint status
    let list = ok_stdout(etcdctl(&eps, &["member", "list"], None));
    for m in &ms {
        let line = list
            .lines()
            .find(|l| l.contains(&format!(", {}, ", m.name)))
            .unwrap_or_else(|| panic!("{} in member list: {list}", m.name));
        assert!(
            line.contains(&m.peer_url())
                && line.contains(&m.client_url())
                && line.contains("started"),
            "{line}"
        );
    }
    let status = ok_stdout(etcdctl(&eps, &["endpoint", "status", "-w", "json"], None));
    let st: serde_json::Value = serde_json::from_str(&status).unwrap();
    let st = st.as_array().unwrap();
    assert_eq!(st.len(), 3);
    let leaders: Vec<_> = st
        .iter()
        .map(|s| s["Status"]["leader"].as_u64().unwrap())
        .collect();
    assert!(
        leaders.iter().all(|l| *l == leaders[0] && *l != 0),
        "all agree on one leader: {leaders:?}"
    );

    // compaction: reads and watches below the compacted revision fail with etcd's error
    let rev_now = {
        let v: serde_json::Value = serde_json::from_str(&ok_stdout(etcdctl(
            &eps,
            &["get", "/k/b", "-w", "json"],
            None,
        )))
        .unwrap();
        v["header"]["revision"].as_i64().unwrap()
    };
    assert!(
        ok_stdout(etcdctl(&eps, &["compaction", &rev_now.to_string()], None))
            .contains("compacted revision")
    );
    let o = etcdctl(&one, &["get", "/k/a", &format!("--rev={rev_a}")], None);
    assert!(
        !o.status.success()
            && String::from_utf8_lossy(&o.stderr).contains("required revision has been compacted"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        ok_stdout(etcdctl(
            &one,
            &[
                "get",
                "/k/b",
                "--print-value-only",
                &format!("--rev={rev_now}")
            ],
            None
        ))
        .trim(),
        "beta"
    );

    // leases: a key attached to a 2 s lease goes when the lease expires; keep-alive and
    // time-to-live answer on any member; revoke deletes at once
    let grant = ok_stdout(etcdctl(&eps, &["lease", "grant", "2"], None));
    let lease = grant.split_whitespace().nth(1).unwrap().to_string();
    ok_stdout(etcdctl(
        &eps,
        &["put", "/lease/short", "x", &format!("--lease={lease}")],
        None,
    ));
    let ttl = ok_stdout(etcdctl(
        &one,
        &["lease", "timetolive", &lease, "--keys"],
        None,
    ));
    assert!(
        ttl.contains("granted with TTL(2s)") && ttl.contains("/lease/short"),
        "{ttl}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok_stdout(etcdctl(&one, &["get", "/lease/short"], None)).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the leased key outlived its lease"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let grant = ok_stdout(etcdctl(&eps, &["lease", "grant", "60"], None));
    let long = grant.split_whitespace().nth(1).unwrap().to_string();
    ok_stdout(etcdctl(
        &eps,
        &["put", "/lease/long", "y", &format!("--lease={long}")],
        None,
    ));
    assert!(ok_stdout(etcdctl(
        &one,
        &["lease", "keep-alive", "--once", &long],
        None
    ))
    .contains("keepalived with TTL(60)"));
    let leases = ok_stdout(etcdctl(&one, &["lease", "list"], None));
    assert!(leases.contains(&long), "{leases}");
    ok_stdout(etcdctl(&eps, &["lease", "revoke", &long], None));
    assert!(ok_stdout(etcdctl(&one, &["get", "/lease/long"], None)).is_empty());
    let o = etcdctl(&eps, &["put", "/lease/none", "z", "--lease=1234abcd"], None);
    assert!(
        !o.status.success()
            && String::from_utf8_lossy(&o.stderr).contains("requested lease not found")
    );

    // an oversized value is refused with etcd's error, and nothing stored is damaged
    // Over the server's 1.5 MiB limit, under etcdctl's own 2 MiB send limit.
    let big = "x".repeat(1600 * 1024);
    let o = etcdctl(&eps, &["put", "/k/b"], Some(&big));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("etcdserver: request is too large"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        ok_stdout(etcdctl(&one, &["get", "/k/b", "--print-value-only"], None)).trim(),
        "beta"
    );
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn hash_at(url: &str, rev: i64) -> u32 {
    let mut c = MaintenanceClient::connect(url.to_string()).await.unwrap();
    c.hash_kv(HashKvRequest { revision: rev })
        .await
        .unwrap()
        .into_inner()
        .hash
}

/// The number of keys a member holds, or `None` while it does not answer.
async fn count(url: &str, serializable: bool) -> Option<i64> {
    let mut c = KvClient::connect(url.to_string()).await.ok()?;
    let req = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        count_only: true,
        serializable,
        ..Default::default()
    };
    Some(c.range(req).await.ok()?.into_inner().count)
}

/// Puts `n` keys through `url`; returns how many were acknowledged.
async fn write_keys(url: String, from: usize, n: usize) -> usize {
    let mut c = KvClient::new(
        tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect_lazy(),
    );
    let mut ok = 0;
    for i in from..from + n {
        let req = PutRequest {
            key: format!("/load/{i:06}").into_bytes(),
            value: vec![b'v'; 256],
            ..Default::default()
        };
        if c.put(req).await.is_ok() {
            ok += 1;
        }
    }
    ok
}

#[test]
fn member_killed_mid_write_rejoins_and_a_new_member_catches_up_by_snapshot_on_sled() {
    killed_member_rejoins_and_new_member_catches_up("sled");
}

#[test]
fn member_killed_mid_write_rejoins_and_a_new_member_catches_up_by_snapshot_on_fjall() {
    killed_member_rejoins_and_new_member_catches_up("fjall");
}

fn killed_member_rejoins_and_new_member_catches_up(engine: &str) {
    let root = tempfile::tempdir().unwrap();
    let backend = format!("--backend={engine}");
    let extra = [
        "--snapshot-count=200",
        "--snapshot-catchup-entries=20",
        backend.as_str(),
    ];
    let mut ms = three(root.path(), &extra);
    let eps = endpoints(&ms.iter().collect::<Vec<_>>());
    wait_healthy(&eps);
    let rt = rt();
    let url0 = ms[0].client_url();
    // Kill member c with SIGKILL while writes are in flight, keep writing, restart it.
    let writes = rt.spawn(write_keys(url0.clone(), 0, 1500));
    std::thread::sleep(Duration::from_millis(700));
    ms[2].kill9();
    let acked = rt.block_on(writes).unwrap();
    assert_eq!(
        acked, 1500,
        "the two remaining members keep accepting writes"
    );
    let ic = cluster_string(&ms.iter().collect::<Vec<_>>());
    ms[2].start(&ic, "new", &extra);
    let url2 = ms[2].client_url();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(2), count(&url2, true))
                .await
                .ok()
                .flatten()
                == Some(1501)
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted member did not converge; log:\n{}",
            ms[2].log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let rev = rt.block_on(async {
        let mut c = KvClient::connect(url0.clone()).await.unwrap();
        c.range(RangeRequest {
            key: b"x".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision
    });
    let h0 = rt.block_on(hash_at(&url0, rev));
    assert_eq!(h0, rt.block_on(hash_at(&ms[1].client_url(), rev)));
    assert_eq!(
        h0,
        rt.block_on(hash_at(&url2, rev)),
        "restarted member holds the same data"
    );

    // A fresh member, added with etcdctl, catches up by snapshot: the log behind the last
    // snapshot has been purged, so no other way exists.
    let mut d = Member::new("d", root.path());
    let add = ok_stdout(etcdctl(
        &eps,
        &[
            "member",
            "add",
            "d",
            &format!("--peer-urls={}", d.peer_url()),
        ],
        None,
    ));
    assert!(add.contains("Member") && add.contains("added"), "{add}");
    let all: Vec<&Member> = ms.iter().chain(std::iter::once(&d)).collect();
    let ic4 = cluster_string(&all);
    d.start(&ic4, "existing", &extra);
    let url_d = d.client_url();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(2), count(&url_d, true))
                .await
                .ok()
                .flatten()
        });
        if n == Some(1501) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new member did not catch up (count {n:?}); log:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        d.log_text().contains("installed snapshot"),
        "new member caught up by snapshot; log:\n{}",
        d.log_text()
    );
    assert_eq!(
        h0,
        rt.block_on(hash_at(&url_d, rev)),
        "new member holds the same data"
    );
    // The new member publishes its name and client URL through Raft once it runs.
    let want = format!("started, d, {}, {}, false", d.peer_url(), d.client_url());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = ok_stdout(etcdctl(&eps, &["member", "list"], None));
        if list.contains(&want) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "member list never showed d started: {list}\nlog:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Linearizable reads served by the new member see a write made through another one.
    ok_stdout(etcdctl(&eps, &["put", "/after", "join"], None));
    assert_eq!(
        ok_stdout(etcdctl(
            &url_d.replace("http://", ""),
            &["get", "/after", "--print-value-only"],
            None
        ))
        .trim(),
        "join"
    );
}

fn run_berth(args: &[String]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("berth {args:?} did not exit on bad input");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tree_digest(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn bad_data_dirs_are_refused_and_left_untouched() {
    let root = tempfile::tempdir().unwrap();
    // A foreign directory: it has files, but is no Berth store.
    let foreign = root.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("member.wal"), b"someone else's data").unwrap();
    let m = Member::new("x", root.path());
    let mut args = m.args(&format!("x={}", m.peer_url()), "new", &[]);
    args[2] = format!("--data-dir={}", foreign.display());
    let before = tree_digest(&foreign);
    let o = run_berth(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("not a Berth store"),
        "{err}"
    );
    assert_eq!(before, tree_digest(&foreign), "foreign directory untouched");

    // A real store whose marker is corrupt, then whose database is corrupt.
    let mut good = Member::new("g", root.path());
    let ic = format!("g={}", good.peer_url());
    good.start(&ic, "new", &[]);
    wait_healthy(&format!("127.0.0.1:{}", good.client));
    ok_stdout(etcdctl(
        &format!("127.0.0.1:{}", good.client),
        &["put", "keep", "me"],
        None,
    ));
    good.kill9();
    let marker = good.dir.join("berth-store.json");
    let marker_text = std::fs::read(&marker).unwrap();
    std::fs::write(&marker, b"{ not json").unwrap();
    let before = tree_digest(&good.dir);
    let o = run_berth(&good.args(&ic, "new", &[]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("berth-store.json is corrupt"),
        "{err}"
    );
    assert_eq!(before, tree_digest(&good.dir));
    std::fs::write(&marker, &marker_text).unwrap();

    // A marker of another member.
    let mut other = good.args(&ic, "new", &[]);
    other[1] = "--name=h".into();
    other[7] = format!("--initial-cluster=h={}", good.peer_url());
    let o = run_berth(&other);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("belongs to member \"g\""),
        "{err}"
    );

    // The same directory opened with the other storage engine.
    let o = run_berth(&good.args(&ic, "new", &["--backend=fjall"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("start it with --backend sled"),
        "{err}"
    );

    // The store still opens and holds its data after all that.
    good.start(&ic, "new", &[]);
    wait_healthy(&format!("127.0.0.1:{}", good.client));
    assert_eq!(
        ok_stdout(etcdctl(
            &format!("127.0.0.1:{}", good.client),
            &["get", "keep", "--print-value-only"],
            None
        ))
        .trim(),
        "me"
    );
    good.kill9();

    // A damaged database: the engine's files overwritten with garbage.
    let db = good.dir.join("db");
    for (p, _) in tree_digest(&db) {
        if p.file_name().is_some_and(|n| n == "conf" || n == "db") {
            std::fs::write(&p, vec![0xa5u8; 4096]).unwrap();
        }
    }
    let before = tree_digest(&good.dir);
    let o = run_berth(&good.args(&ic, "new", &[]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("cannot open the sled database"),
        "{err}"
    );
    assert_eq!(
        before,
        tree_digest(&good.dir),
        "a damaged store is not written to"
    );
}

#[test]
fn a_member_of_another_cluster_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let mut x = Member::new("x", root.path());
    let icx = format!("x={}", x.peer_url());
    x.start(&icx, "new", &[]);
    let ep = format!("127.0.0.1:{}", x.client);
    wait_healthy(&ep);
    ok_stdout(etcdctl(&ep, &["put", "mine", "1"], None));
    // y believes it is in a cluster with x, under another token: another cluster id.
    let mut y = Member::new("y", root.path());
    let icy = format!("x={},y={}", x.peer_url(), y.peer_url());
    y.start(&icy, "new", &["--initial-cluster-token=another"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !x.log_text().contains("cluster id mismatch") {
        assert!(
            Instant::now() < deadline,
            "x never refused y; log:\n{}",
            x.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // x is unharmed: still the leader of its own one-member cluster, data intact.
    ok_stdout(etcdctl(&ep, &["put", "mine", "2"], None));
    assert_eq!(
        ok_stdout(etcdctl(&ep, &["get", "mine", "--print-value-only"], None)).trim(),
        "2"
    );
    let list = ok_stdout(etcdctl(&ep, &["member", "list"], None));
    assert_eq!(list.lines().count(), 1, "{list}");
}

#[test]
fn learners_are_added_promoted_and_removed_with_etcdctl() {
    let root = tempfile::tempdir().unwrap();
    let mut ms = three(root.path(), &[]);
    let eps = endpoints(&ms.iter().collect::<Vec<_>>());
    wait_healthy(&eps);
    ok_stdout(etcdctl(&eps, &["put", "/before", "learner"], None));
    let mut d = Member::new("d", root.path());
    let add = ok_stdout(etcdctl(
        &eps,
        &[
            "member",
            "add",
            "d",
            &format!("--peer-urls={}", d.peer_url()),
            "--learner",
        ],
        None,
    ));
    let id = add.split_whitespace().nth(1).unwrap().to_string();
    let all: Vec<&Member> = ms.iter().chain(std::iter::once(&d)).collect();
    let ic = cluster_string(&all);
    d.start(&ic, "existing", &[]);
    let line = |list: &str| {
        list.lines()
            .find(|l| l.starts_with(&id))
            .map(str::to_string)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = ok_stdout(etcdctl(&eps, &["member", "list"], None));
        if line(&list).is_some_and(|l| l.contains(", d, ") && l.ends_with(", true")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "learner d never started: {list}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A learner serves serializable reads of replicated data.
    let d_ep = format!("127.0.0.1:{}", d.client);
    let deadline = Instant::now() + Duration::from_secs(20);
    while ok_stdout(etcdctl(
        &d_ep,
        &["get", "/before", "--print-value-only", "--consistency=s"],
        None,
    ))
    .trim()
        != "learner"
    {
        assert!(Instant::now() < deadline, "learner never caught up");
        std::thread::sleep(Duration::from_millis(200));
    }
    ok_stdout(etcdctl(&eps, &["member", "promote", &id], None));
    let list = ok_stdout(etcdctl(&eps, &["member", "list"], None));
    assert!(
        line(&list).is_some_and(|l| l.ends_with(", false")),
        "promoted: {list}"
    );
    ok_stdout(etcdctl(&eps, &["member", "remove", &id], None));
    let list = ok_stdout(etcdctl(&eps, &["member", "list"], None));
    assert!(
        line(&list).is_none() && list.lines().count() == 3,
        "removed: {list}"
    );
    let o = etcdctl(&eps, &["member", "remove", &id], None);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("member not found"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The three remaining members still take writes.
    d.kill9();
    ms[0].kill9();
    let eps2 = endpoints(&[&ms[1], &ms[2]]);
    ok_stdout(etcdctl(&eps2, &["put", "/after", "removal"], None));
}
