//! ramcoord benchmarks. For now one scenario, `core`: the CPU cost of the
//! Raft core itself (propose to commit in an in-process 3-replica group,
//! in-memory storage, messages handed over directly), next to a baseline
//! measured in the same run (the same loop's hand-off work without Raft).
//! The network, disk and etcd scenarios arrive with the issues that build
//! those layers.

mod storage;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use ramcoord_log::{ConfState, Config, MemStorage, Message, RawNode, Role, Storage};

/// ramcoord latency benchmarks.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Propose-to-commit CPU cost of the Raft core: 3 replicas in one
    /// thread, in-memory storage, no network or disk. Prints p50/p99/p99.9/max
    /// in microseconds and the ratio to a no-Raft baseline from the same run.
    Core {
        /// Proposals to measure.
        #[arg(long, default_value_t = 20_000)]
        ops: u64,
        /// Payload bytes per proposal.
        #[arg(long, default_value_t = 64)]
        payload: usize,
    },
    /// The durable log against the disk floor, in one run: 4 KiB write +
    /// fdatasync (floor), DiskStorage append + sync (one appender), and
    /// entries/s with 1, 8 and 64 appenders through a group-commit writer.
    Storage {
        /// Directory on the file system to measure (default: ./bench-data).
        #[arg(long, default_value = "bench-data")]
        dir: PathBuf,
        /// Synced writes per latency measurement.
        #[arg(long, default_value_t = 2000)]
        ops: u64,
        /// Seconds per group-commit measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
        /// Write path: io_uring (auto falls back to pwrite + fdatasync).
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
    },
}

/// The log's write path.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Backend {
    /// io_uring if available, else pwrite + fdatasync.
    Auto,
    /// pwrite + fdatasync.
    Std,
    /// io_uring (asynchronous RWF_DSYNC writes, group commit).
    Uring,
}

fn main() {
    match Cli::parse().scenario {
        Scenario::Core { ops, payload } => core(ops, payload),
        Scenario::Storage {
            dir,
            ops,
            seconds,
            json,
            backend,
        } => {
            let backend = match backend {
                Backend::Auto => ramcoord_log::disk::BackendChoice::Auto,
                Backend::Std => ramcoord_log::disk::BackendChoice::Std,
                Backend::Uring => ramcoord_log::disk::BackendChoice::Uring,
            };
            let report = storage::run(&dir, ops, seconds, backend, &mut |step| {
                eprintln!("storage: {step}")
            });
            let _ = std::fs::remove_dir(&dir);
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&report).expect("numbers serialize")
                );
            } else {
                print!("{}", storage::table(&report));
            }
        }
    }
}

struct Group {
    nodes: Vec<RawNode<MemStorage>>,
    wire: VecDeque<Message>,
}

impl Group {
    fn new() -> Group {
        let conf = ConfState::with_voters([1, 2, 3]);
        let nodes = (1..=3)
            .map(|id| RawNode::new(Config::new(id), MemStorage::bootstrap(&conf)).unwrap())
            .collect();
        Group {
            nodes,
            wire: VecDeque::new(),
        }
    }

    /// Runs every node's ready loop and delivers messages until quiet;
    /// returns the leader's commit index.
    fn settle(&mut self) -> u64 {
        loop {
            for n in &mut self.nodes {
                while n.has_ready() {
                    let mut rd = n.ready();
                    let s = n.storage_mut();
                    if let Some(snap) = &rd.snapshot {
                        s.apply_snapshot(snap.clone()).unwrap();
                    }
                    s.append(&rd.entries).unwrap();
                    if let Some(hs) = rd.hard_state {
                        s.set_hard_state(hs).unwrap();
                    }
                    self.wire.extend(rd.messages.drain(..));
                    self.wire.extend(rd.persisted_messages.drain(..));
                    n.advance(rd);
                }
            }
            let Some(m) = self.wire.pop_front() else {
                break;
            };
            let to = (m.to - 1) as usize;
            self.nodes[to].step(m);
        }
        self.nodes[0].log().committed
    }
}

fn core(ops: u64, payload: usize) {
    let mut g = Group::new();
    g.nodes[0].campaign_now();
    g.settle();
    assert_eq!(g.nodes[0].role(), Role::Leader);
    let data = Bytes::from(vec![7u8; payload]);
    let mut raft = Histogram::<u64>::new(3).unwrap();
    let mut base = Histogram::<u64>::new(3).unwrap();
    let mut sink = VecDeque::new();
    for _ in 0..ops {
        // Baseline: the same payload hand-off through a queue, no protocol.
        let t = Instant::now();
        sink.push_back(data.clone());
        std::hint::black_box(sink.pop_front());
        base.record(t.elapsed().as_nanos() as u64).unwrap();

        let t = Instant::now();
        let index = g.nodes[0].propose(data.clone()).unwrap();
        let committed = g.settle();
        raft.record(t.elapsed().as_nanos() as u64).unwrap();
        assert!(committed >= index);
        // Keep memory flat: compact what is applied.
        if index % 4096 == 0 {
            for n in &mut g.nodes {
                let point = n.snapshot_point();
                if point.index > n.log().storage().snapshot().meta.index {
                    let _ = n.storage_mut().compact(ramcoord_log::Snapshot {
                        meta: point,
                        data: Bytes::new(),
                    });
                }
            }
        }
    }
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!("core: {ops} proposals of {payload} B, 3 replicas in one thread, in-memory storage");
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>9}",
        "", "p50 µs", "p99 µs", "p99.9 µs", "max µs"
    );
    for (name, h) in [
        ("propose→commit (Raft core)", &raft),
        ("baseline (queue hand-off)", &base),
    ] {
        println!(
            "{name:<28} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            us(h, 0.5),
            us(h, 0.99),
            us(h, 0.999),
            h.max() as f64 / 1000.0
        );
    }
    println!(
        "ratio p50 core/baseline: {:.0}x",
        us(&raft, 0.5) / us(&base, 0.5).max(0.001)
    );
}
