//! Benchmarks of a real ramcoord cluster on loopback: 3 coordinator
//! replicas and 3 masters, child processes of the `ramcoord` binary built
//! next to this one (`ramcoord::local_cluster`).
//!
//! - `commit`: the **commit-point latency** of coordinator operations, as a
//!   client sees it: from sending the request to receiving the leader's
//!   answer, which it sends when the operation's commit record is
//!   committed and applied (the leader's own measurement, from receiving
//!   the request, is reported beside it); the **full operation latency**
//!   (until the completion record applies, after the pushes to the
//!   masters); and a no-op record through the log (the log's own cost).
//!   Each client alternately creates and drops its own one-tablet table,
//!   waiting for completion before the next operation on it (the
//!   coordinator serialises operations on a table). Throughput is counted
//!   in operations (creates and drops) per second, closed loop.
//! - `tls-cost`: what mutual TLS costs the commit point. Two clusters run
//!   side by side, one with TLS and one `--insecure`, and a client's
//!   operations alternate between them, one on each in turn: both see the
//!   same disk and the same machine at the same moments, so the disk's
//!   slow periods (which move an fsync commit's p50 by more than 10 % from
//!   one run to the next here) fall on both alike.
//! - `failover`: kill -9 the leader while a client runs operations; the
//!   time to the first operation committed by the next leader and to the
//!   end of its roll-forward.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ramcoord::client::CoordinatorClient;
use ramcoord::coordinator::Request;
use ramcoord::local_cluster::{LocalCluster, LocalClusterConfig};
use ramcoord::protocol::{ClientReply, ClientRequest, OpResult};
use serde::Serialize;

use crate::dist::{Dist, Recorder};

/// Finds (or builds) the `ramcoord` binary beside this one.
pub fn ramcoord_binary() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = me.with_file_name("ramcoord");
    if bin.exists() {
        return Ok(bin);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let release = me.parent().is_some_and(|p| p.ends_with("release"));
    eprintln!("building the ramcoord binary ({})", bin.display());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "-p", "ramcoord", "--bin", "ramcoord"]);
    if release {
        cmd.arg("--release");
    }
    let st = cmd.status().map_err(|e| format!("running cargo: {e}"))?;
    if !st.success() || !bin.exists() {
        return Err(format!(
            "no {} (build it: cargo build --release -p ramcoord)",
            bin.display()
        ));
    }
    Ok(bin)
}

/// Starts a 3-replica, 3-master cluster under `dir` with extra coordinator
/// arguments, and waits until it is ready.
pub fn start_cluster(dir: &Path, coordinator_args: &[String]) -> Result<LocalCluster, String> {
    start_cluster_tls(dir, coordinator_args, true)
}

/// [`start_cluster`], with mutual TLS or `--insecure`.
pub fn start_cluster_tls(
    dir: &Path,
    coordinator_args: &[String],
    tls: bool,
) -> Result<LocalCluster, String> {
    let _ = std::fs::remove_dir_all(dir);
    let mut cfg = LocalClusterConfig::new(ramcoord_binary()?, dir.to_path_buf(), 3, 3);
    cfg.tls = tls;
    cfg.coordinator_args = coordinator_args.to_vec();
    cfg.log_filter = "warn".into();
    let c = LocalCluster::start(cfg).map_err(|e| e.to_string())?;
    c.wait_ready(3, Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    Ok(c)
}

/// A client of the cluster's coordinators (2 s per attempt).
pub fn client(c: &LocalCluster) -> CoordinatorClient {
    let addrs = c.coordinators.iter().map(|p| p.addr).collect();
    let mut cl = CoordinatorClient::new(addrs, 1, c.security());
    cl.attempt_timeout = Duration::from_secs(2);
    cl
}

/// What one commit run measured.
#[derive(Serialize, Clone, Debug, Default)]
pub struct CommitReport {
    /// `fsync` or `memory`.
    pub durability: String,
    /// Mutual TLS on every connection (else `--insecure`).
    pub tls: bool,
    /// Commit point, as the client sees it (1 client).
    pub commit: Dist,
    /// Commit point, as the leader measures it (same operations).
    pub commit_at_leader: Dist,
    /// Through completion (same operations).
    pub complete: Dist,
    /// A no-op record through the log (1 client).
    pub noop: Dist,
    /// Closed-loop throughput per client count.
    pub throughput: Vec<Throughput>,
    /// No-op records per second with 64 clients.
    pub noop_ops_per_s_64: f64,
}

/// Throughput with `clients` closed-loop clients.
#[derive(Serialize, Clone, Debug, Default)]
pub struct Throughput {
    /// Clients.
    pub clients: usize,
    /// Operations (creates and drops) completed per second.
    pub ops_per_s: f64,
    /// Their commit-point latency.
    pub commit: Dist,
}

/// One create or drop through completion; returns (commit point as seen
/// by the client, leader's commit µs, completion), or why not.
pub fn one_op(
    cl: &mut CoordinatorClient,
    req: Request,
) -> Result<(Duration, u64, Duration), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    match cl.operate_until_complete(req, deadline) {
        Ok((
            ClientReply::Committed {
                commit_us, result, ..
            },
            at_commit,
            Some((ClientReply::Completed { .. }, at_complete)),
        )) if !matches!(result, OpResult::Rejected(_)) => Ok((at_commit, commit_us, at_complete)),
        Ok((reply, _, completion)) => Err(format!(
            "{}{}",
            reply.describe(),
            if completion.is_none() {
                "; no completion"
            } else {
                ""
            }
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// The alternating create / drop stream of client `i`: the `k`th request.
pub fn op_for(i: usize, k: u64) -> Request {
    let name = format!("bench-{i}");
    if k % 2 == 0 {
        Request::CreateTable { name, tablets: 1 }
    } else {
        Request::DropTable { name }
    }
}

pub fn noop(cl: &mut CoordinatorClient) -> Result<Duration, String> {
    let t = Instant::now();
    match cl.ask_leader(&ClientRequest::Noop, t + Duration::from_secs(10)) {
        Ok(ClientReply::Committed { .. }) => Ok(t.elapsed()),
        Ok(other) => Err(other.describe()),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs `clients` closed-loop clients of the cluster for `seconds` (see
/// [`crate::dist::closed_loop`]); each connects and finds the leader first.
fn closed_loop<F>(c: &LocalCluster, clients: usize, seconds: f64, f: F) -> (f64, Recorder)
where
    F: Fn(&mut CoordinatorClient, usize, u64, &mut Recorder) -> bool + Send + Sync + 'static,
{
    let addrs: Vec<_> = c.coordinators.iter().map(|p| p.addr).collect();
    let security = c.security();
    let make = move |_| {
        let mut cl = CoordinatorClient::new(addrs.clone(), 1, security.clone());
        cl.attempt_timeout = Duration::from_secs(2);
        let _ = cl.ask_leader(
            &ClientRequest::Status,
            Instant::now() + Duration::from_secs(5),
        );
        cl
    };
    crate::dist::closed_loop(clients, seconds, make, f)
}

/// How the measured cluster's replicas run.
pub struct Setup<'a> {
    /// `--durability`: fsync or memory.
    pub durability: &'a str,
    /// Mutual TLS (else `--insecure`).
    pub tls: bool,
    /// `--io`: uring or epoll.
    pub io: &'a str,
    /// `--cores`.
    pub cores: u16,
}

/// The `commit` scenario for one durability mode.
pub fn commit(
    dir: &Path,
    setup: &Setup,
    latency_ops: u64,
    seconds: f64,
    client_counts: &[usize],
    progress: &dyn Fn(&str),
) -> Result<CommitReport, String> {
    let Setup {
        durability,
        tls,
        io,
        cores,
    } = *setup;
    let args = vec![
        "--durability".to_string(),
        durability.to_string(),
        "--io".to_string(),
        io.to_string(),
        "--cores".to_string(),
        cores.to_string(),
    ];
    let name = if tls {
        format!("commit-{durability}")
    } else {
        format!("commit-{durability}-insecure")
    };
    let c = start_cluster_tls(&dir.join(name), &args, tls)?;
    let mut cl = client(&c);
    // Warm up: connections, the leader's first proposals.
    for k in 0..20 {
        one_op(&mut cl, op_for(9999, k))?;
        noop(&mut cl)?;
    }
    progress(&format!(
        "ramcoord {durability}: 1 client, {latency_ops} operations"
    ));
    let (mut commit, mut leader, mut complete, mut noops) = (
        Recorder::default(),
        Recorder::default(),
        Recorder::default(),
        Recorder::default(),
    );
    for k in 0..latency_ops {
        let (at_commit, commit_us, at_complete) = one_op(&mut cl, op_for(0, k))?;
        commit.record(at_commit);
        leader.record_us(commit_us);
        complete.record(at_complete);
    }
    progress(&format!(
        "ramcoord {durability}: 1 client, {latency_ops} no-ops"
    ));
    for _ in 0..latency_ops {
        noops.record(noop(&mut cl)?);
    }
    drop(cl);
    let mut throughput = Vec::new();
    for &n in client_counts {
        progress(&format!(
            "ramcoord {durability}: {n} clients for {seconds:.1} s"
        ));
        let (ops, rec) = closed_loop(&c, n, seconds, |cl, i, k, rec| {
            match one_op(cl, op_for(100 + i, k)) {
                Ok((at_commit, _, _)) => {
                    rec.record(at_commit);
                    true
                }
                Err(_) => false,
            }
        });
        throughput.push(Throughput {
            clients: n,
            ops_per_s: ops,
            commit: rec.dist(),
        });
    }
    progress(&format!("ramcoord {durability}: no-ops, 64 clients"));
    let (noop_ops, _) = closed_loop(&c, 64, seconds, |cl, _, _, rec| match noop(cl) {
        Ok(d) => {
            rec.record(d);
            true
        }
        Err(_) => false,
    });
    let dir = c.dir().to_path_buf();
    drop(c);
    let _ = std::fs::remove_dir_all(dir);
    Ok(CommitReport {
        durability: durability.into(),
        tls,
        commit: commit.dist(),
        commit_at_leader: leader.dist(),
        complete: complete.dist(),
        noop: noops.dist(),
        throughput,
        noop_ops_per_s_64: noop_ops,
    })
}

/// What TLS costs the commit point, measured on interleaved operations
/// (see the module docs).
#[derive(Serialize, Clone, Debug, Default)]
pub struct TlsCostReport {
    /// `fsync` or `memory`.
    pub durability: String,
    /// Operations on each cluster.
    pub ops: u64,
    /// Commit point with TLS (client-observed).
    pub tls: Dist,
    /// Commit point without (`--insecure`).
    pub insecure: Dist,
    /// TLS p50 / insecure p50.
    pub p50_ratio: f64,
    /// TLS p50 − insecure p50 (µs).
    pub p50_added_us: f64,
    /// TLS p99 / insecure p99.
    pub p99_ratio: f64,
}

/// The `tls-cost` scenario for one durability mode.
pub fn tls_cost(
    dir: &Path,
    durability: &str,
    ops: u64,
    progress: &dyn Fn(&str),
) -> Result<TlsCostReport, String> {
    let args = vec!["--durability".to_string(), durability.to_string()];
    progress(&format!(
        "TLS cost ({durability}): a TLS and an --insecure cluster side by side"
    ));
    let secure = start_cluster_tls(&dir.join(format!("tls-cost-{durability}")), &args, true)?;
    let plain = start_cluster_tls(
        &dir.join(format!("tls-cost-{durability}-insecure")),
        &args,
        false,
    )?;
    let mut clients = [client(&secure), client(&plain)];
    for k in 0..20 {
        for cl in clients.iter_mut() {
            one_op(cl, op_for(9999, k))?;
        }
    }
    progress(&format!(
        "TLS cost ({durability}): {ops} operations on each, interleaved"
    ));
    let mut rec = [Recorder::default(), Recorder::default()];
    for k in 0..ops {
        // Alternate which goes first, so neither always follows the other.
        let order = if k % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let (at_commit, _, _) = one_op(&mut clients[i], op_for(0, k))?;
            rec[i].record(at_commit);
        }
    }
    drop(clients);
    for c in [secure, plain] {
        let d = c.dir().to_path_buf();
        drop(c);
        let _ = std::fs::remove_dir_all(d);
    }
    let [tls, insecure] = rec.map(|r| r.dist());
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::INFINITY };
    Ok(TlsCostReport {
        durability: durability.into(),
        ops,
        p50_ratio: ratio(tls.p50_us, insecure.p50_us),
        p50_added_us: tls.p50_us - insecure.p50_us,
        p99_ratio: ratio(tls.p99_us, insecure.p99_us),
        tls,
        insecure,
    })
}

/// What the failover trials measured.
#[derive(Serialize, Clone, Debug, Default)]
pub struct FailoverReport {
    /// Election timeout used (ms; randomised up to twice this).
    pub election_ms: u64,
    /// Trials run.
    pub trials: usize,
    /// Kill to the first operation committed by the next leader.
    pub first_commit: Dist,
    /// Kill to the next leader being active with nothing incomplete.
    pub rolled_forward: Dist,
}

/// The `failover` scenario.
pub fn failover(
    dir: &Path,
    trials: usize,
    election_ms: u64,
    progress: &dyn Fn(&str),
) -> Result<FailoverReport, String> {
    let tick_ms = (election_ms / 5).max(1);
    let ticks = (election_ms / tick_ms).max(2);
    // The master timeout must be at least 10 ticks (masters' leases).
    let master_timeout_ms = (20 * tick_ms).max(500);
    let args: Vec<String> = [
        "--tick-ms",
        &tick_ms.to_string(),
        "--election-ticks",
        &ticks.to_string(),
        "--master-timeout-ms",
        &master_timeout_ms.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut c = start_cluster(&dir.join("failover"), &args)?;
    let (mut first, mut rolled) = (Recorder::default(), Recorder::default());
    for trial in 0..trials {
        progress(&format!("failover: trial {}/{trials}", trial + 1));
        let leader = c
            .wait_ready(3, Duration::from_secs(30))
            .map_err(|e| e.to_string())?;
        // A client streams operations and reports each commit's term.
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<(Instant, u64)>();
        let mut cl = client(&c);
        cl.attempt_timeout = Duration::from_millis(30);
        let s2 = stop.clone();
        let streamer = std::thread::spawn(move || {
            // Creates of new names: each can be retried blindly (an answer
            // lost with the old leader leaves no name to collide with).
            let mut k = 0u64;
            while !s2.load(Ordering::Relaxed) {
                k += 1;
                let deadline = Instant::now() + Duration::from_millis(100);
                let rpc = cl.next_rpc(deadline);
                let req = Request::CreateTable {
                    name: format!("failover-{trial}-{k}"),
                    tablets: 1,
                };
                if let Ok(ClientReply::Committed { term, .. }) =
                    cl.operate(rpc, req, false, deadline)
                {
                    let _ = tx.send((Instant::now(), term));
                }
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        c.kill_coordinator(leader.id);
        let killed = Instant::now();
        let deadline = killed + Duration::from_secs(10);
        let mut first_at = None;
        while first_at.is_none() && Instant::now() < deadline {
            if let Ok((at, term)) = rx.recv_timeout(Duration::from_millis(100)) {
                if term > leader.term {
                    first_at = Some(at);
                }
            }
        }
        let first_at = first_at.ok_or("no operation committed after the kill")?;
        // New operations stop here; what remains incomplete is the old
        // leader's operations being rolled forward (and at most one of
        // the new leader's, about a millisecond from completion).
        stop.store(true, Ordering::Relaxed);
        let done_at = c
            .wait_for("the roll-forward", Duration::from_secs(10), |c| {
                c.active()
                    .filter(|s| s.term > leader.term && s.incomplete == 0)
                    .map(|_| Instant::now())
            })
            .map_err(|e| e.to_string())?;
        stop.store(true, Ordering::Relaxed);
        let _ = streamer.join();
        first.record(first_at - killed);
        rolled.record(done_at.max(first_at) - killed);
        c.restart_coordinator(leader.id)
            .map_err(|e| e.to_string())?;
        c.wait_for(
            "the killed replica to catch up",
            Duration::from_secs(30),
            |c| {
                let rows = c.statuses();
                let lead = rows.iter().find(|s| s.active)?;
                (rows.len() == 3 && rows.iter().all(|s| s.applied >= lead.commit)).then_some(())
            },
        )
        .map_err(|e| e.to_string())?;
    }
    let dir = c.dir().to_path_buf();
    drop(c);
    let _ = std::fs::remove_dir_all(dir);
    Ok(FailoverReport {
        election_ms,
        trials,
        first_commit: first.dist(),
        rolled_forward: rolled.dist(),
    })
}
