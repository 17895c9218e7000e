//! ramcoord benchmarks. Every figure is reported as a distribution and
//! next to a baseline measured in the same run: the Raft core's CPU cost
//! (`core`), the durable log against the disk (`storage`), the hardware
//! floor (`floor`), a real cluster's commit-point latency and throughput
//! (`commit`), failover (`failover`), configuration push (`push`), etcd
//! (`etcd`), and all of it in one run (`compare`).

mod cluster;
mod compare;
mod dist;
mod etcd;
mod fleet;
mod floor;
mod push;
#[cfg(feature = "rdma")]
mod rdma;
mod scale;
mod scale_cluster;
mod storage;
mod threads;

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
    /// RDMA (inside the soft-RoCE VM: `BENCH=1 scripts/rdma-vm.sh`): a
    /// one-sided write vs a two-sided send and echo of the same size, and
    /// a cluster's commit point over --transport rdma vs tcp, in one run.
    /// Needs a binary built with `--features rdma` and an RDMA device.
    Rdma {
        /// The RDMA devices' addresses, comma-separated (the VM's two).
        #[arg(long, value_delimiter = ',', default_value = "10.0.0.1,10.0.0.2")]
        hosts: Vec<std::net::IpAddr>,
        /// The `ramcoord` binary (built with --features rdma); default:
        /// beside this one.
        #[arg(long)]
        ramcoord: Option<PathBuf>,
        /// Operations of each verb per size.
        #[arg(long, default_value_t = 2000)]
        verbs_ops: u64,
        /// Cluster operations per transport.
        #[arg(long, default_value_t = 300)]
        commit_ops: u64,
        /// Push rounds per fan-out size (1, 10, 100 masters) and transport.
        #[arg(long, default_value_t = 50)]
        push_rounds: usize,
        /// Which parts to run, comma-separated (`--parts commit` under
        /// `perf` profiles the cluster alone).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "verbs,transport,commit,push"
        )]
        parts: Vec<RdmaPart>,
        /// The commit part's transports, in order: `tcp`, `rdma`, or
        /// `rdma:US` (masters look at their configuration regions every US
        /// µs between requests; default 5000).
        #[arg(long, value_delimiter = ',', default_value = "tcp,rdma")]
        commit_transports: Vec<String>,
        /// Print JSON after the table.
        #[arg(long)]
        json: bool,
    },
    /// A share of `scale`'s light masters in a process of its own (started
    /// by `scale`; see `fleet.rs`): reports on stdout, takes commands on
    /// stdin, ends when stdin closes.
    #[command(hide = true)]
    FleetWorker {
        #[arg(long)]
        cluster: u64,
        #[arg(long, value_delimiter = ',')]
        coordinators: Vec<std::net::SocketAddr>,
        #[arg(long)]
        first: usize,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 2)]
        shards: usize,
        #[arg(long, default_value_t = 64)]
        enlist_in_flight: usize,
        #[arg(long, default_value_t = 50_000)]
        heartbeat_us: u64,
    },
    /// Load for the contended fsync floor (started by `floor` and
    /// `compare`): write and fdatasync `file` until stdin closes.
    #[command(hide = true)]
    FsyncLoad {
        /// The file to write.
        #[arg(long)]
        file: PathBuf,
    },
    /// The hardware floor: loopback TCP round trip (64 B, TCP_NODELAY) and
    /// 4 KiB write + fdatasync on the data directory's file system, alone
    /// and while two other processes write and sync on the same disk.
    Floor {
        /// Where to measure the disk.
        #[arg(long, default_value = "bench-data")]
        dir: PathBuf,
        /// Round trips.
        #[arg(long, default_value_t = 20_000)]
        rtt_ops: u64,
        /// Synced writes.
        #[arg(long, default_value_t = 2000)]
        fsync_ops: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Commit-point latency, full operation latency and throughput of a
    /// real 3-replica cluster with 3 masters on loopback (child processes
    /// of the `ramcoord` binary beside this one), for one durability mode.
    Commit {
        /// fsync or memory.
        #[arg(long, default_value = "fsync")]
        durability: String,
        /// Sequential operations for the latency figures.
        #[arg(long, default_value_t = 3000)]
        ops: u64,
        /// Seconds per throughput point (1, 8, 64 clients).
        #[arg(long, default_value_t = 4.0)]
        seconds: f64,
        /// Where the cluster's data goes.
        #[arg(long, default_value = "bench-data")]
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Run the cluster without TLS (default: mutual TLS, as deployed).
        #[arg(long)]
        insecure: bool,
        /// The replicas' socket I/O (`ramcoord coordinator --io`): uring
        /// or epoll.
        #[arg(long, default_value = "uring")]
        io: String,
        /// The replicas' event-loop threads (`ramcoord coordinator
        /// --cores`).
        #[arg(long, default_value_t = 1)]
        cores: u16,
    },
    /// What mutual TLS costs the commit point: a TLS cluster and an
    /// --insecure one side by side, one client alternating operations
    /// between them (both see the same disk at the same moments), for
    /// fsync and memory durability; p50/p99 of each and their ratio.
    TlsCost {
        /// Operations on each cluster per durability mode.
        #[arg(long, default_value_t = 3000)]
        ops: u64,
        /// Where the clusters' data goes.
        #[arg(long, default_value = "bench-data")]
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// kill -9 the leader while a client runs operations: time to the first
    /// operation committed by the next leader and to the end of its
    /// roll-forward, over N trials.
    Failover {
        /// Trials.
        #[arg(long, default_value_t = 20)]
        trials: usize,
        /// Election timeout in ms (randomised up to twice this).
        #[arg(long, default_value_t = 10)]
        election_ms: u64,
        /// Where the cluster's data goes.
        #[arg(long, default_value = "bench-data")]
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A configuration push to 1, 10 and 100 masters over the TCP
    /// transport: time until every master's region holds the new version.
    Push {
        /// Rounds per fan-out.
        #[arg(long, default_value_t = 200)]
        rounds: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Threads of each coordinator replica in a cluster with M masters (a
    /// table with a tablet on every master, so the leader holds a
    /// connection to each): the goal is cores + a small constant, however
    /// many masters.
    Threads {
        /// Masters (child processes).
        #[arg(long, default_value_t = 100)]
        masters: usize,
        /// Clients holding a connection to every replica while counting.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Where the cluster's data goes.
        #[arg(long, default_value = "bench-data")]
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The same write workload against a 3-member etcd cluster on loopback
    /// (installed and started by scripts/etcd-cluster.sh), through etcd's
    /// native gRPC client and through its JSON gateway.
    Etcd {
        /// Sequential puts.
        #[arg(long, default_value_t = 3000)]
        ops: u64,
        /// Seconds per throughput point (1, 8, 64 clients).
        #[arg(long, default_value_t = 4.0)]
        seconds: f64,
        /// Where etcd's data goes.
        #[arg(long, default_value = "bench-data")]
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Everything in one run: floor, ramcoord (fsync and memory), etcd,
    /// failover, push. Writes bench/results/<time>.json, .md and PNG plots,
    /// and prints the table (or, with --json, the JSON).
    Compare {
        /// Small sizes: finishes in under two minutes.
        #[arg(long)]
        quick: bool,
        /// Print the JSON report instead of the table.
        #[arg(long)]
        json: bool,
        /// Where results go.
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
        /// Where clusters keep their data during the run.
        #[arg(long, default_value = "bench-data")]
        dir: PathBuf,
        /// Failover election timeout (ms).
        #[arg(long, default_value_t = 10)]
        election_ms: u64,
    },
    /// What the coordinator costs as the cluster grows (issue 19), in two
    /// parts. `state`: the cluster state alone, in one process (snapshot,
    /// restore, replay of 100,000 entries, a master's recovery plan, a
    /// region) for masters at 1M tablets and tablets at 10,000 masters.
    /// `cluster`: a real 3-replica group (child processes, --insecure)
    /// with thousands of light masters in this process, each its own
    /// connection enlisting, heartbeating and taking pushes: the leader's
    /// CPU for failure detection, the commit point loaded over empty, a
    /// master's tablets moved, memory. Writes
    /// OUT/<time>-scale.{json,md,png} (the png: the state's curves) and,
    /// with the cluster part, OUT/<time>-scale-cluster.png.
    Scale {
        /// Which parts to run.
        #[arg(long, value_delimiter = ',', default_value = "state,cluster")]
        parts: Vec<ScalePart>,
        /// The cluster part's points, MASTERS:TABLETS each: the curves
        /// against masters (100, 1,000, 10,000) at 10,000 tablets and
        /// against tablets at 10,000 masters. The light masters run in
        /// child processes of 2,500 each; the leader holds one descriptor
        /// per master and up to a fifth of its limit in push connections.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "100:10000,1000:10000,10000:10000,10000:100000,10000:1000000",
            value_parser = parse_cluster_point
        )]
        cluster_points: Vec<(u64, u64)>,
        /// Where the cluster part's replicas keep their data.
        #[arg(long, default_value = "bench-data/scale")]
        dir: PathBuf,
        /// Light masters per child process (`fleet-worker`); a fleet of at
        /// most this many runs in the bench's own process.
        #[arg(long, default_value_t = fleet::ENDPOINTS_PER_PROCESS)]
        fleet_per_process: usize,
        /// Masters of the sweep at the largest tablet count.
        #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
        masters: Vec<u64>,
        /// Tablets of the sweep at the largest master count.
        #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
        tablets: Vec<u64>,
        /// Repetitions per figure (the median is kept).
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Where results go.
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
        /// Print the JSON report instead of the table.
        #[arg(long)]
        json: bool,
        /// Measure one point MASTERS,TABLETS in this process and print it
        /// as JSON (what each point's child process runs).
        #[arg(long, value_name = "MASTERS,TABLETS", hide = true)]
        point: Option<String>,
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

fn progress(s: &str) {
    eprintln!(
        "[{}] {s}",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    );
}

fn emit<T: serde::Serialize>(json: bool, v: &T, table: impl FnOnce() -> String) {
    if json {
        println!("{}", serde_json::to_string(v).expect("serialisable"));
    } else {
        println!("{}", table());
    }
}

/// One `--cluster-points` value, MASTERS:TABLETS, checked when the
/// arguments are parsed: a typo fails at once, not after the state part
/// has run for minutes.
fn parse_cluster_point(spec: &str) -> Result<(u64, u64), String> {
    let (m, t) = spec
        .split_once(':')
        .ok_or_else(|| format!("{spec}: expected MASTERS:TABLETS, e.g. 1000:10000"))?;
    // At least 4 masters: one crashes and its tablets need other owners.
    let count = |what: &str, v: &str, least: u64| match v.parse::<u64>() {
        Ok(n) if n < least => Err(format!("{spec}: {what} must be at least {least}")),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{spec}: {what} {v:?}: {e}")),
    };
    Ok((count("masters", m, 4)?, count("tablets", t, 1)?))
}

fn fail(e: String) -> ! {
    eprintln!("ramcoord-bench: {e}");
    std::process::exit(1);
}

/// The parts of `ramcoord-bench scale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScalePart {
    /// The cluster state alone, in one process.
    State,
    /// A real coordinator group with thousands of light masters.
    Cluster,
}

/// Which parts of `rdma` run (`--parts`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RdmaPart {
    /// Bare verbs: write, send, echo.
    Verbs,
    /// A message round trip through each transport.
    Transport,
    /// A cluster's commit point over each of `--commit-transports`.
    Commit,
    /// A configuration push to 1, 10 and 100 masters over each transport.
    Push,
}

/// The state part of `scale`: each point in a process of its own.
fn scale_state(masters: &[u64], tablets: &[u64], reps: usize) -> Vec<scale::Point> {
    let most_masters = masters.iter().copied().max().unwrap_or(0);
    let most_tablets = tablets.iter().copied().max().unwrap_or(0);
    // The tablets sweep at the most masters, then the masters sweep at
    // the most tablets; each size once, smallest first.
    let mut grid: Vec<(u64, u64)> = tablets.iter().map(|t| (most_masters, *t)).collect();
    grid.extend(masters.iter().map(|m| (*m, most_tablets)));
    grid.sort_by_key(|(m, t)| (*t, *m));
    grid.dedup();
    let mut points = Vec::new();
    for (m, t) in grid {
        progress(&format!("scale: {m} masters, {t} tablets"));
        // A fresh process per point: its memory is its own.
        let exe = std::env::current_exe().unwrap_or_else(|e| fail(e.to_string()));
        let child = std::process::Command::new(exe)
            .args(["scale", "--point", &format!("{m},{t}"), "--reps"])
            .arg(reps.max(1).to_string())
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap_or_else(|e| fail(format!("scale point {m},{t}: {e}")));
        if !child.status.success() {
            fail(format!("scale point {m},{t} failed ({})", child.status));
        }
        let p: scale::Point = serde_json::from_slice(&child.stdout)
            .unwrap_or_else(|e| fail(format!("scale point {m},{t}: {e}")));
        progress(&format!(
            "  snapshot {:.1} ms (Raft thread {:.0} µs), restart {:.0} ms, crash plan {:.0} µs ({:.0} µs during a snapshot)",
            p.snapshot_ms, p.freeze_us, p.restart_ms, p.recovery_plan_us, p.recovery_during_snapshot_us
        ));
        points.push(p);
    }
    points
}

fn main() {
    // Push fan-outs and scale runs open a transport per stand-in master.
    ramcoord_net::admission::raise_descriptor_limit();
    match Cli::parse().scenario {
        Scenario::FleetWorker {
            cluster,
            coordinators,
            first,
            count,
            shards,
            enlist_in_flight,
            heartbeat_us,
        } => {
            let cfg = fleet::FleetConfig {
                count,
                first,
                cluster,
                coordinators,
                shards,
                enlist_in_flight_max: enlist_in_flight,
                heartbeat: std::time::Duration::from_micros(heartbeat_us),
                per_process: 0,
            };
            if let Err(e) = fleet::worker_main(cfg) {
                fail(e)
            }
        }
        Scenario::FsyncLoad { file } => {
            if let Err(e) = floor::fsync_load(&file) {
                fail(e)
            }
        }
        Scenario::Floor {
            dir,
            rtt_ops,
            fsync_ops,
            json,
        } => {
            let r = floor::floor(&dir, rtt_ops, fsync_ops).unwrap_or_else(|e| fail(e));
            let _ = std::fs::remove_dir(&dir);
            emit(json, &r, || {
                format!(
                    "µs p50 / p99 / p99.9 / max
loopback RTT 64 B        {}
  the same, mutual TLS   {}
4 KiB write + fdatasync  {}
  with 2 other syncers   {}",
                    r.rtt.row(),
                    r.rtt_tls.row(),
                    r.fsync.row(),
                    r.fsync3.row()
                )
            });
        }
        Scenario::Commit {
            durability,
            ops,
            seconds,
            dir,
            json,
            insecure,
            io,
            cores,
        } => {
            if durability != "fsync" && durability != "memory" {
                fail(format!("--durability {durability}: fsync or memory"));
            }
            if io != "uring" && io != "epoll" {
                fail(format!("--io {io}: uring or epoll"));
            }
            let setup = cluster::Setup {
                durability: &durability,
                tls: !insecure,
                io: &io,
                cores,
            };
            let r = cluster::commit(
                &dir,
                &setup,
                ops,
                seconds,
                &[1, 8, 64],
                &progress,
            )
                .unwrap_or_else(|e| fail(e));
            let _ = std::fs::remove_dir(&dir);
            emit(json, &r, || {
                let mut s = format!(
                    "µs p50 / p99 / p99.9 / max ({durability})
commit point (client)   {}
commit point (leader)   {}
full operation          {}
no-op record            {}
",
                    r.commit.row(),
                    r.commit_at_leader.row(),
                    r.complete.row(),
                    r.noop.row()
                );
                for t in &r.throughput {
                    s += &format!(
                        "{:>3} clients: {:.0} ops/s, commit point {}
",
                        t.clients,
                        t.ops_per_s,
                        t.commit.row()
                    );
                }
                s + &format!("no-ops, 64 clients: {:.0}/s", r.noop_ops_per_s_64)
            });
        }
        Scenario::TlsCost { ops, dir, json } => {
            let mut reports = Vec::new();
            for d in ["fsync", "memory"] {
                reports.push(cluster::tls_cost(&dir, d, ops, &progress).unwrap_or_else(|e| fail(e)));
            }
            let _ = std::fs::remove_dir(&dir);
            emit(json, &reports, || {
                let mut s = String::from("commit point (client), µs p50 / p99 / p99.9 / max
");
                for r in &reports {
                    s += &format!(
                        "{:<7} TLS        {}
{:<7} --insecure {}
{:<7} TLS costs {:+.0} µs at p50 (x{:.3}), x{:.3} at p99
",
                        r.durability,
                        r.tls.row(),
                        r.durability,
                        r.insecure.row(),
                        r.durability,
                        r.p50_added_us,
                        r.p50_ratio,
                        r.p99_ratio
                    );
                }
                s
            });
        }
        Scenario::Failover {
            trials,
            election_ms,
            dir,
            json,
        } => {
            let r =
                cluster::failover(&dir, trials, election_ms, &progress).unwrap_or_else(|e| fail(e));
            let _ = std::fs::remove_dir(&dir);
            emit(json, &r, || {
                format!(
                    "µs p50 / p99 / p99.9 / max, {trials} trials, {election_ms} ms election timeout
kill -> first commit    {}
kill -> rolled forward  {}",
                    r.first_commit.row(),
                    r.rolled_forward.row()
                )
            });
        }
        Scenario::Threads {
            masters,
            clients,
            dir,
            json,
        } => {
            progress(&format!(
                "threads: 3 replicas, {masters} masters, {clients} clients"
            ));
            let r = threads::threads(&dir, masters, clients).unwrap_or_else(|e| fail(e));
            emit(json, &r, || {
                format!(
                    "{} masters, {} clients: leader {} threads, most of any replica {} ({:?})",
                    r.masters, r.clients, r.leader, r.max, r.replicas
                )
            });
        }
        Scenario::Scale {
            parts,
            cluster_points,
            dir,
            fleet_per_process,
            masters,
            tablets,
            reps,
            out,
            json,
            point,
        } => {
            if let Some(p) = point {
                let (m, t) = p
                    .split_once(',')
                    .and_then(|(m, t)| Some((m.parse().ok()?, t.parse().ok()?)))
                    .unwrap_or_else(|| fail(format!("--point {p}: expected MASTERS,TABLETS")));
                let r = scale::point(m, t, reps.max(1)).unwrap_or_else(|e| fail(e));
                println!("{}", serde_json::to_string(&r).expect("serialisable"));
                return;
            }
            let started = std::time::SystemTime::now();
            let mut points = Vec::new();
            if parts.contains(&ScalePart::State) {
                points = scale_state(&masters, &tablets, reps);
            }
            let mut cluster_pts = Vec::new();
            let mut cluster_failed: Vec<String> = Vec::new();
            if parts.contains(&ScalePart::Cluster) {
                for &(m, t) in &cluster_points {
                    progress(&format!("scale cluster: {m} masters, {t} tablets"));
                    // A point that fails is reported with why, and the
                    // sweep goes on (the larger points are the ones that
                    // find the limits).
                    let p = match scale_cluster::point(
                        &dir.join(format!("{m}-{t}")),
                        m,
                        t,
                        fleet_per_process.max(1),
                        &progress,
                    ) {
                        Ok(p) => p,
                        Err(e) => {
                            progress(&format!("  FAILED: {e}"));
                            cluster_failed.push(format!("{m} masters, {t} tablets: {e}"));
                            continue;
                        }
                    };
                    progress(&format!(
                        "  detection CPU {:.1} % ({:.1} in the kernel), commit ratio {:.2}, recovery {:.1} / {:.1} ms, leader {:.0} MiB ({:.0} s)",
                        p.failure_detection_cpu_pct,
                        p.failure_detection_system_pct,
                        p.commit_p50_ratio_loaded,
                        p.recovery_plan_ms,
                        p.recovery_pushed_ms,
                        p.leader_rss_mib,
                        p.run_s
                    ));
                    cluster_pts.push(p);
                }
                // The replicas' logs stay when a point failed.
                if cluster_failed.is_empty() {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
            let most_masters = masters.iter().copied().max().unwrap_or(0);
            let most_tablets = tablets.iter().copied().max().unwrap_or(0);
            let at = |m: u64, t: u64| points.iter().find(|p| p.masters == m && p.tablets == t);
            let big = at(most_masters, most_tablets);
            // The cluster figures at the largest point run (most masters,
            // then most tablets).
            let cbig = cluster_pts.iter().max_by_key(|p| (p.masters, p.tablets));
            let cat = |m: u64, t: u64| {
                cluster_pts
                    .iter()
                    .find(|p| p.masters == m && p.tablets == t)
            };
            let report = serde_json::json!({
                "started": humantime::format_rfc3339_seconds(started).to_string(),
                "state_only": cluster_pts.is_empty(),
                "points": points,
                "cluster_points": cluster_pts,
                "cluster_points_failed": cluster_failed,
                "state_mib_10k_masters_1m_tablets": at(10_000, 1_000_000).map(|p| p.state_mib),
                "rss_mib_10k_masters_1m_tablets": cat(10_000, 1_000_000).map(|p| p.leader_rss_mib),
                "snapshot_ms": big.map(|p| p.snapshot_ms),
                "snapshot_raft_thread_us": big.map(|p| p.freeze_us),
                "recovery_during_snapshot_us": big.map(|p| p.recovery_during_snapshot_us),
                "restart_ms": big.map(|p| p.restart_ms),
                "recovery_plan_cpu_us": big.map(|p| p.recovery_plan_us),
                "cluster_largest": cbig.map(|p| format!("{} masters, {} tablets", p.masters, p.tablets)),
                "commit_p50_ratio_loaded": cbig.map(|p| p.commit_p50_ratio_loaded),
                "recovery_plan_ms": cbig.map(|p| p.recovery_plan_ms),
                "recovery_pushed_ms": cbig.map(|p| p.recovery_pushed_ms),
                "failure_detection_cpu_pct": cbig.map(|p| p.failure_detection_cpu_pct),
                "leader_rss_mib": cbig.map(|p| p.leader_rss_mib),
            });
            let mut md = String::new();
            if !points.is_empty() {
                md += &scale::markdown(&points);
            }
            if !cluster_pts.is_empty() {
                md += "\n";
                md += &scale_cluster::markdown(&cluster_pts);
            }
            for f in &cluster_failed {
                md += &format!("\nFAILED: {f}\n");
            }
            let stamp = humantime::format_rfc3339_seconds(started)
                .to_string()
                .replace(':', "-");
            let _ = std::fs::create_dir_all(&out);
            let base = out.join(format!("{stamp}-scale"));
            let written = std::fs::write(base.with_extension("json"), report.to_string())
                .and_then(|()| std::fs::write(base.with_extension("md"), &md));
            if let Err(e) = written {
                fail(format!("writing {}: {e}", base.display()));
            }
            match ramcoord::chaos::plot::register_font() {
                Ok(()) => {
                    let png = base.with_extension("png");
                    if !points.is_empty() {
                        if let Err(e) = scale::plot(&points, &png) {
                            fail(format!("plotting {}: {e}", png.display()));
                        }
                    }
                    let png = out.join(format!("{stamp}-scale-cluster.png"));
                    if cluster_pts.len() >= 2 {
                        if let Err(e) = scale_cluster::plot(&cluster_pts, &png) {
                            fail(format!("plotting {}: {e}", png.display()));
                        }
                    }
                }
                Err(e) => eprintln!("no plot: {e}"),
            }
            if json {
                println!("{report}");
            } else {
                print!("{md}");
            }
        }
        Scenario::Push { rounds, json } => {
            let mut v = Vec::new();
            for m in [1, 10, 100] {
                progress(&format!("push: {m} masters"));
                v.push(push::push(m, rounds).unwrap_or_else(|e| fail(e)));
            }
            emit(json, &v, || {
                v.iter()
                    .map(|p| {
                        format!(
                            "{:>3} masters ({} B): landed {} µs, acked {} µs",
                            p.masters,
                            p.region_bytes,
                            p.landed.row(),
                            p.acked.row()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Scenario::Etcd {
            ops,
            seconds,
            dir,
            json,
        } => {
            let r =
                etcd::run(&dir, ops, seconds, &[1, 8, 64], &progress).unwrap_or_else(|e| fail(e));
            let _ = std::fs::remove_dir(&dir);
            emit(json, &r, || {
                let mut s = format!(
                    "{}
µs p50 / p99 / p99.9 / max
put (1 client), native gRPC    {}
put (1 client), JSON gateway   {}
serializable read, gateway     {}
",
                    r.version,
                    r.native_put.row(),
                    r.put.row(),
                    r.client_floor.row()
                );
                for (t, g) in r.native_throughput.iter().zip(&r.throughput) {
                    s += &format!(
                        "{:>3} clients: {:.0} puts/s native gRPC, {:.0} through the gateway
",
                        t.clients, t.ops_per_s, g.ops_per_s
                    );
                }
                s
            });
        }
        Scenario::Compare {
            quick,
            json,
            out,
            dir,
            election_ms,
        } => {
            let sizes = if quick {
                compare::Sizes::quick()
            } else {
                compare::Sizes::full()
            };
            let started = std::time::SystemTime::now();
            let when = humantime::format_rfc3339_seconds(started).to_string();
            let mut r = compare::Report {
                when: when.clone(),
                quick,
                ..Default::default()
            };
            let run = |r: &mut compare::Report| -> Result<(), String> {
                progress("floor");
                r.floor = floor::floor(&dir, sizes.rtt_ops, sizes.fsync_ops)?;
                // TLS as deployed, and the same without it (its cost).
                for (d, tls) in [("fsync", true), ("memory", true), ("fsync", false)] {
                    let setup = cluster::Setup {
                        durability: d,
                        tls,
                        io: "uring",
                        cores: 1,
                    };
                    let c = cluster::commit(
                        &dir,
                        &setup,
                        sizes.latency_ops,
                        sizes.seconds,
                        &[1, 8, 64],
                        &progress,
                    )?;
                    match (d, tls) {
                        ("fsync", true) => r.ramcoord_fsync = c,
                        ("memory", _) => r.ramcoord_memory = c,
                        _ => r.ramcoord_fsync_insecure = c,
                    }
                }
                for d in ["fsync", "memory"] {
                    r.tls_cost.push(cluster::tls_cost(&dir, d, sizes.latency_ops, &progress)?);
                }
                r.etcd = etcd::run(
                    &dir,
                    sizes.latency_ops,
                    sizes.seconds,
                    &[1, 8, 64],
                    &progress,
                )?;
                r.failover =
                    cluster::failover(&dir, sizes.failover_trials, election_ms, &progress)?;
                for m in [1, 10, 100] {
                    progress(&format!("push: {m} masters"));
                    r.push.push(push::push(m, sizes.push_rounds)?);
                }
                progress(&format!(
                    "threads: {} masters, {} clients",
                    sizes.threads_masters, sizes.threads_clients
                ));
                r.threads = Some(threads::threads(
                    &dir.join("threads"),
                    sizes.threads_masters,
                    sizes.threads_clients,
                )?);
                Ok(())
            };
            if let Err(e) = run(&mut r) {
                fail(e);
            }
            let _ = std::fs::remove_dir_all(&dir);
            r.finish();
            let stamp = when.replace(':', "-");
            let written = compare::write_outputs(&r, &out, &stamp).unwrap_or_else(|e| fail(e));
            progress(&format!(
                "done in {:.0} s; wrote {}",
                started.elapsed().map_or(0.0, |d| d.as_secs_f64()),
                written
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            emit(json, &r, || r.markdown());
        }
        Scenario::Core { ops, payload } => core(ops, payload),
        #[cfg(feature = "rdma")]
        Scenario::Rdma {
            hosts,
            ramcoord,
            verbs_ops,
            commit_ops,
            push_rounds,
            parts,
            commit_transports,
            json,
        } => {
            let bin = ramcoord
                .map(Ok)
                .unwrap_or_else(rdma::default_binary)
                .unwrap_or_else(|e| fail(e));
            if let Some(t) = commit_transports
                .iter()
                .find(|t| {
                    !(t.as_str() == "tcp"
                        || t.as_str() == "rdma"
                        || t.strip_prefix("rdma:").is_some_and(|us| us.parse::<u64>().is_ok()))
                })
            {
                fail(format!(
                    "--commit-transports: {t:?} is none of tcp, rdma, rdma:MICROSECONDS"
                ));
            }
            let progress = |m: &str| eprintln!("ramcoord-bench rdma: {m}");
            let r = rdma::run(
                &rdma::RdmaOptions {
                    hosts: &hosts,
                    ramcoord: &bin,
                    verbs_ops,
                    commit_ops,
                    push_rounds,
                    parts: &parts,
                    commit_transports: &commit_transports,
                },
                &progress,
            )
            .unwrap_or_else(|e| fail(e));
            println!("{}", rdma::render(&r));
            if json {
                println!("{}", serde_json::to_string_pretty(&r).expect("serialisable"));
            }
        }
        #[cfg(not(feature = "rdma"))]
        Scenario::Rdma { .. } => fail(
            "rdma: this binary was built without RDMA support; run it in the soft-RoCE VM with `BENCH=1 scripts/rdma-vm.sh` (or build with --features rdma on an RDMA host)".into(),
        ),
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
