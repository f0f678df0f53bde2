//! `engine-bench`: what one store write costs each storage engine through [`KvBackend`].
//!
//! Per write it does what the store does per put: one Raft log entry (320 bytes) into the
//! log tree, then the key's record (300 bytes) and its history event (600 bytes) in one
//! batch into the state-machine tree; and a durable `flush` every `--flush-every` writes
//! (1: every write acknowledged alone; larger: group commit under load). It prints wall
//! time and CPU time (all threads of the process, from /proc/self/stat) per write, with
//! sled as the anchor the other engines are compared with.
#![allow(clippy::print_stdout)]

use std::time::Instant;

use anyhow::Context;
use berth_store::backend::{Batch, Engine, Tree};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// Writes per run.
    #[arg(long, default_value_t = 20_000)]
    writes: u64,
    /// Flush (fsync) every this many writes; repeat for several runs.
    #[arg(long = "flush-every", default_values_t = [1u64, 10, 100])]
    flush_every: Vec<u64>,
    /// Where to put the engines' files (a fresh directory under it per run).
    #[arg(long, default_value = "/var/tmp")]
    dir: std::path::PathBuf,
}

/// CPU seconds used so far by this process, all threads.
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("read /proc/self/stat")?;
    let after_comm = stat.rsplit_once(')').context("parse /proc/self/stat")?.1;
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

fn run(engine: Engine, args: &Args, flush_every: u64) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::Builder::new()
        .prefix("engine-bench")
        .tempdir_in(&args.dir)?;
    let b = engine.open(dir.path())?;
    let (cpu0, t0) = (cpu_seconds()?, Instant::now());
    for i in 0..args.writes {
        let mut log = Batch::default();
        log.put(i.to_be_bytes(), vec![7u8; 320]);
        b.write(Tree::Log, log)?;
        let mut sm = Batch::default();
        sm.put(
            format!("k/registry/pods/default/p{i}").into_bytes(),
            vec![1u8; 300],
        );
        let mut h = b"h".to_vec();
        h.extend_from_slice(&i.to_be_bytes());
        sm.put(h, vec![2u8; 600]);
        b.write(Tree::StateMachine, sm)?;
        if (i + 1) % flush_every == 0 {
            b.flush()?;
        }
    }
    b.flush()?;
    let n = args.writes as f64;
    Ok((
        t0.elapsed().as_secs_f64() * 1e6 / n,
        (cpu_seconds()? - cpu0) * 1e6 / n,
    ))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "engine-bench: {} writes per run (log entry + key + history event each)",
        args.writes
    );
    println!(
        "{:<8} {:>12} {:>14} {:>14} {:>12}",
        "engine", "flush every", "wall us/write", "cpu us/write", "cpu vs sled"
    );
    for &k in &args.flush_every {
        let (_, sled_cpu) = {
            let r = run(Engine::Sled, &args, k)?;
            println!(
                "{:<8} {:>12} {:>14.1} {:>14.1} {:>12}",
                "sled", k, r.0, r.1, "x1.00"
            );
            r
        };
        let (wall, cpu) = run(Engine::Fjall, &args, k)?;
        println!(
            "{:<8} {:>12} {:>14.1} {:>14.1} {:>11.2}x",
            "fjall",
            k,
            wall,
            cpu,
            cpu / sled_cpu
        );
    }
    Ok(())
}
