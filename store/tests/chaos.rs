//! The leader is killed and restarted 20 times while writers write and a watcher watches.
//! Afterwards every acknowledged write is present with its value, no revision repeats or
//! goes backwards, and the watcher (resuming after each failure from the revision after
//! the last one it saw) saw every event exactly once, in order.

#![allow(clippy::print_stderr)] // the test reports what it exercised

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_store::backend::Engine;
use berth_store::pb::etcdserverpb::{
    watch_request, PutRequest, RangeRequest, WatchCreateRequest, WatchRequest,
};
use common::Cluster;
use rand::Rng;
use tokio_stream::StreamExt;

const PREFIX: &str = "w/";
const KILLS: usize = 20;

#[derive(Debug, Clone)]
struct Ack {
    key: String,
    value: String,
    revision: i64,
}

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    revision: i64,
    key: String,
    value: String,
}

async fn writer(
    urls: Vec<String>,
    t: usize,
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
) -> usize {
    let mut clients: Vec<_> = urls
        .iter()
        .map(|u| berth_store::pb::etcdserverpb::kv_client::KvClient::new(common::channel(u)))
        .collect();
    let mut n = 0usize;
    let mut failed = 0;
    while !stop.load(Ordering::SeqCst) {
        let key = format!("{PREFIX}{t}-{n:06}");
        let value = format!("v{t}-{n}");
        let c = &mut clients[n % urls.len()];
        let req = PutRequest {
            key: key.clone().into_bytes(),
            value: value.clone().into_bytes(),
            ..Default::default()
        };
        match tokio::time::timeout(Duration::from_secs(5), c.put(req)).await {
            Ok(Ok(resp)) => {
                let revision = resp.into_inner().header.unwrap().revision;
                acks.lock().unwrap().push(Ack {
                    key,
                    value,
                    revision,
                });
            }
            _ => {
                failed += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        n += 1;
    }
    failed
}

/// Watches the prefix from revision 1, resuming on another member after any failure.
async fn watcher(
    urls: Vec<String>,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    target: Arc<std::sync::atomic::AtomicI64>,
) {
    let mut next_rev = 1i64;
    let mut attempt = 0usize;
    loop {
        if stop.load(Ordering::SeqCst) && next_rev > target.load(Ordering::SeqCst) {
            return;
        }
        let url = &urls[attempt % urls.len()];
        attempt += 1;
        let mut client =
            berth_store::pb::etcdserverpb::watch_client::WatchClient::new(common::channel(url));
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: PREFIX.as_bytes().to_vec(),
                    range_end: b"w0".to_vec(),
                    start_revision: next_rev,
                    ..Default::default()
                },
            )),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(create).await.unwrap();
        let stream = match tokio::time::timeout(
            Duration::from_secs(2),
            client.watch(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
        .await
        {
            Ok(Ok(s)) => s.into_inner(),
            _ => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::pin!(stream);
        loop {
            let item = tokio::time::timeout(Duration::from_secs(2), stream.next()).await;
            match item {
                Ok(Some(Ok(resp))) => {
                    assert!(
                        !resp.canceled || resp.created,
                        "watch canceled: {}",
                        resp.cancel_reason
                    );
                    let mut s = seen.lock().unwrap();
                    for ev in resp.events {
                        let kv = ev.kv.unwrap();
                        s.push(Seen {
                            revision: kv.mod_revision,
                            key: String::from_utf8(kv.key).unwrap(),
                            value: String::from_utf8(kv.value).unwrap(),
                        });
                        next_rev = kv.mod_revision + 1;
                    }
                }
                Ok(Some(Err(_))) | Ok(None) => break,
                Err(_) => {
                    // Quiet: if writing is over and we have everything, stop; else keep going.
                    if stop.load(Ordering::SeqCst) && next_rev > target.load(Ordering::SeqCst) {
                        return;
                    }
                }
            }
        }
        drop(tx);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_twenty_times_loses_nothing_on_sled() {
    leader_killed_twenty_times(Engine::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_twenty_times_loses_nothing_on_fjall() {
    leader_killed_twenty_times(Engine::Fjall).await;
}

async fn leader_killed_twenty_times(engine: Engine) {
    common::init_tracing();
    let mut cluster = Cluster::start_on(3, engine).await;
    let urls: Vec<String> = (0..3).map(|i| cluster.client_url(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let target = Arc::new(std::sync::atomic::AtomicI64::new(i64::MAX));

    let watch = tokio::spawn(watcher(
        urls.clone(),
        stop.clone(),
        seen.clone(),
        target.clone(),
    ));
    let writers: Vec<_> = (0..4)
        .map(|t| tokio::spawn(writer(urls.clone(), t, stop.clone(), acks.clone())))
        .collect();

    let mut rng = rand::thread_rng();
    for round in 0..KILLS {
        let leader = cluster
            .wait_leader(Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("no leader before kill {round}"));
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..400))).await;
        let leader = cluster.leader().unwrap_or(leader);
        cluster.kill(leader).await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..400))).await;
        cluster.restart(leader).await;
    }
    cluster
        .wait_leader(Duration::from_secs(20))
        .await
        .expect("a leader after the kills");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut failed = 0;
    for w in writers {
        failed += w.await.unwrap();
    }
    assert!(
        cluster.wait_converged(Duration::from_secs(20)).await,
        "members converge"
    );

    // Every acknowledged write is present with its value and revision.
    let leader = cluster.wait_leader(Duration::from_secs(10)).await.unwrap();
    let mut kv = cluster.kv(leader).await;
    let all = kv
        .range(RangeRequest {
            key: PREFIX.as_bytes().to_vec(),
            range_end: b"w0".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let final_rev = all.header.unwrap().revision;
    target.store(final_rev, Ordering::SeqCst);
    let stored: HashMap<String, (String, i64)> = all
        .kvs
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8(kv.key).unwrap(),
                (String::from_utf8(kv.value).unwrap(), kv.mod_revision),
            )
        })
        .collect();
    let acks = acks.lock().unwrap().clone();
    assert!(
        acks.len() > 100,
        "writers made progress: {} acknowledged, {failed} failed",
        acks.len()
    );
    let mut revs = std::collections::HashSet::new();
    for a in &acks {
        let (v, rev) = stored
            .get(&a.key)
            .unwrap_or_else(|| panic!("acknowledged write {} is missing", a.key));
        assert_eq!(v, &a.value, "value of {}", a.key);
        assert_eq!(*rev, a.revision, "revision of {}", a.key);
        assert!(
            revs.insert(a.revision),
            "revision {} acknowledged twice",
            a.revision
        );
    }
    // Each writer's acknowledged revisions only go forward.
    let mut per_writer: BTreeMap<String, i64> = BTreeMap::new();
    for a in &acks {
        let w = a.key.split('-').next().unwrap().to_string();
        let last = per_writer.entry(w).or_insert(0);
        assert!(a.revision > *last, "revision went backwards for {}", a.key);
        *last = a.revision;
    }

    // The watcher saw every event exactly once, in order: revisions 2..=final_rev.
    tokio::time::timeout(Duration::from_secs(30), watch)
        .await
        .expect("watcher caught up")
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    let revisions: Vec<i64> = seen.iter().map(|s| s.revision).collect();
    let expected: Vec<i64> = (2..=final_rev).collect();
    assert_eq!(
        revisions.len(),
        expected.len(),
        "watcher saw {} events for {} revisions",
        revisions.len(),
        expected.len()
    );
    assert_eq!(revisions, expected, "events in order, each once");
    for s in &seen {
        assert_eq!(
            stored.get(&s.key).map(|(v, r)| (v.as_str(), *r)),
            Some((s.value.as_str(), s.revision)),
            "watched event {s:?} matches the store"
        );
    }
    eprintln!("chaos ({engine:?}): {KILLS} leader kills, {} writes acknowledged, {failed} failed, final revision {final_rev}", acks.len());
    cluster.shutdown().await;
}
