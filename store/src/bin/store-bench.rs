//! `store-bench`: an etcd v3 load generator. It runs the same workload with the same client
//! against every target it is given (Berth and etcd, in one run), and prints ops/s and
//! p50/p99 latency per phase, then the ratios of each target to the last one (the anchor).
//!
//! Phases: puts of 256-byte values to distinct keys at concurrency 1 and 64, then
//! linearizable single-key reads at concurrency 64.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use anyhow::Context;
use berth_store::pb::etcdserverpb::kv_client::KvClient;
use berth_store::pb::etcdserverpb::{PutRequest, RangeRequest};
use clap::Parser;
use tonic::transport::{Channel, Endpoint};

#[derive(Parser, Debug)]
#[command(about = "etcd v3 load generator: the same workload against several stores")]
struct Args {
    /// A target as `name=url,url,...` (repeat); every target is compared with the last.
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Phases to run, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', default_value = "put-c1,put-c64,read-c64")]
    phases: Vec<String>,
    /// gRPC connections per endpoint at high concurrency.
    #[arg(long, default_value_t = 4)]
    conns_per_endpoint: usize,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Put,
    Read,
}

#[derive(Debug, Clone)]
struct Phase {
    name: &'static str,
    op: Op,
    concurrency: usize,
}

#[derive(Debug, Clone)]
struct Figures {
    ops: usize,
    errors: usize,
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn channels(urls: &[String], per_endpoint: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::new();
    for _ in 0..per_endpoint {
        for u in urls {
            let ch = Endpoint::from_shared(u.clone())
                .with_context(|| format!("endpoint {u}"))?
                .tcp_nodelay(true)
                .timeout(Duration::from_secs(10))
                .connect_lazy();
            out.push(ch);
        }
    }
    Ok(out)
}

async fn run_phase(
    name: &str,
    urls: &[String],
    phase: &Phase,
    args: &Args,
) -> anyhow::Result<Figures> {
    let per = if phase.concurrency == 1 {
        1
    } else {
        args.conns_per_endpoint
    };
    let chans = channels(urls, per)?;
    // Seed a key for reads.
    let mut seed = KvClient::new(chans[0].clone());
    seed.put(PutRequest {
        key: b"bench/read".to_vec(),
        value: vec![b'r'; args.value_size],
        ..Default::default()
    })
    .await
    .with_context(|| format!("{name}: seeding the read key"))?;
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..phase.concurrency {
        let mut client = KvClient::new(chans[w % chans.len()].clone());
        let op = phase.op;
        let value = vec![b'v'; args.value_size];
        let prefix = format!("bench/{}/{}/{w}/", phase.name, std::process::id());
        workers.push(tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::with_capacity(100_000);
            let mut errors = 0usize;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = match op {
                    Op::Put => client
                        .put(PutRequest {
                            key: format!("{prefix}{n}").into_bytes(),
                            value: value.clone(),
                            ..Default::default()
                        })
                        .await
                        .map(|_| ()),
                    Op::Read => client
                        .range(RangeRequest {
                            key: b"bench/read".to_vec(),
                            ..Default::default()
                        })
                        .await
                        .map(|_| ()),
                };
                match r {
                    Ok(()) => lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32),
                    Err(_) => errors += 1,
                }
                n += 1;
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await?;
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return f64::NAN;
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        all[i] as f64 / 1000.0
    };
    Ok(Figures {
        ops: all.len(),
        errors,
        ops_per_sec: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let targets: Vec<(String, Vec<String>)> = args
        .targets
        .iter()
        .map(|t| {
            let (name, urls) = t
                .split_once('=')
                .with_context(|| format!("--target {t:?} is not name=url,..."))?;
            Ok((
                name.to_string(),
                urls.split(',').map(|u| u.to_string()).collect(),
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let all = [
        Phase {
            name: "put-c1",
            op: Op::Put,
            concurrency: 1,
        },
        Phase {
            name: "put-c64",
            op: Op::Put,
            concurrency: 64,
        },
        Phase {
            name: "read-c64",
            op: Op::Read,
            concurrency: 64,
        },
    ];
    for p in &args.phases {
        anyhow::ensure!(
            all.iter().any(|a| a.name == p),
            "unknown phase {p:?}: expected put-c1, put-c64 or read-c64"
        );
    }
    let phases: Vec<Phase> = all
        .into_iter()
        .filter(|p| args.phases.iter().any(|n| n == p.name))
        .collect();
    println!(
        "store-bench: {}s per phase, {}-byte values, linearizable reads",
        args.duration, args.value_size
    );
    println!(
        "{:<10} {:<10} {:>10} {:>8} {:>12} {:>9} {:>9}",
        "target", "phase", "ops", "errors", "ops/s", "p50 ms", "p99 ms"
    );
    let mut results: Vec<Vec<Figures>> = Vec::new();
    for (name, urls) in &targets {
        let mut row = Vec::new();
        for p in &phases {
            let f = run_phase(name, urls, p, &args).await?;
            println!(
                "{:<10} {:<10} {:>10} {:>8} {:>12.0} {:>9.2} {:>9.2}",
                name, p.name, f.ops, f.errors, f.ops_per_sec, f.p50_ms, f.p99_ms
            );
            row.push(f);
        }
        results.push(row);
    }
    let base = targets.len() - 1;
    for t in 0..base {
        println!();
        println!("ratios {} / {}:", targets[t].0, targets[base].0);
        for (i, p) in phases.iter().enumerate() {
            let (a, b) = (&results[t][i], &results[base][i]);
            println!(
                "  {:<10} throughput x{:.2}   p50 x{:.2}   p99 x{:.2}",
                p.name,
                a.ops_per_sec / b.ops_per_sec,
                a.p50_ms / b.p50_ms,
                a.p99_ms / b.p99_ms
            );
        }
    }
    Ok(())
}
