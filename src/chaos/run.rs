//! `ramcoord chaos` (a first version): a cluster of real processes in
//! network namespaces, clients creating, dropping and looking up tables,
//! a seeded nemesis, the history recorded and checked.
//!
//! What this version does:
//!
//! - **Cluster**: 3 coordinator replicas and the masters, each in its own
//!   namespace ([`super::netns`]), with mutual TLS; clients in the root
//!   namespace.
//! - **Nemesis** (seeded; one fault at a time, each followed by a heal and
//!   a calm spell): `partition` (the replicas split into two random
//!   sides, cut both ways), `isolate` (the leader cut off from the other
//!   replicas), `kill` (a replica killed with SIGKILL, restarted at the
//!   heal), `pause` (a replica stopped with SIGSTOP, continued at the
//!   heal). The run ends healed.
//! - **Workload**: clients create, drop and look up (a linearizable read)
//!   a few table names; every operation is written to the history
//!   ([`super::history`]). A client whose operation's outcome is unknown
//!   continues under a new process number, as in Jepsen.
//! - **Checks**: the table operations are linearizable per name
//!   ([`super::tables`]); after the final heal a leader answers and every
//!   name's existence is read once more.
//!
//! Not yet: masters' put/get and their checks, the membership-change and
//! slow-disk nemeses, the atomicity and no-key-served-twice checks, the
//! timeline plot.

use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::history::{Event, EventType, Function, HistoryWriter, Value};
use super::netns::Net;
use super::tables;
use crate::client::CoordinatorClient;
use crate::coordinator::Request;
use crate::local_cluster::{LocalCluster, LocalClusterConfig};
use crate::node::client::{ClientReply, ClientRequest, OpResult};

/// A family of faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nemesis {
    /// The replicas split into two random sides.
    Partition,
    /// The leader cut off from the other replicas.
    Isolate,
    /// A replica killed (SIGKILL) and restarted at the heal.
    Kill,
    /// A replica paused (SIGSTOP) and continued at the heal.
    Pause,
}

impl Nemesis {
    /// Every family.
    pub const ALL: [Nemesis; 4] = [
        Nemesis::Partition,
        Nemesis::Isolate,
        Nemesis::Kill,
        Nemesis::Pause,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Nemesis::Partition => "partition",
            Nemesis::Isolate => "isolate",
            Nemesis::Kill => "kill",
            Nemesis::Pause => "pause",
        }
    }
}

/// How a run goes.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// The `ramcoord` binary the processes run.
    pub binary: PathBuf,
    /// Data directories and logs.
    pub dir: PathBuf,
    /// How long the workload runs.
    pub duration: Duration,
    /// The nemesis schedule's seed.
    pub seed: u64,
    /// The families used (all if empty).
    pub nemesis: Vec<Nemesis>,
    /// Where the history goes.
    pub history: PathBuf,
    /// Concurrent clients.
    pub clients: usize,
    /// Table names the clients use.
    pub names: usize,
    /// Masters.
    pub masters: usize,
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct ChaosSummary {
    /// Operations invoked.
    pub ops: u64,
    /// Completed `ok`.
    pub ok: u64,
    /// Completed `fail`.
    pub fail: u64,
    /// Completed `info` (unknown).
    pub info: u64,
    /// Faults injected.
    pub faults: Vec<String>,
    /// Per-name verdicts.
    pub verdicts: Vec<tables::NameVerdict>,
    /// Every name's verdict is linearizable.
    pub linearizable: bool,
}

impl ChaosSummary {
    /// The last line of the run's output.
    pub fn line(&self) -> String {
        format!(
            "chaos: {} ops (ok {}, fail {}, info {}), {} faults, {}, atomicity not checked yet",
            self.ops,
            self.ok,
            self.fail,
            self.info,
            self.faults.len(),
            if self.linearizable {
                "linearizable"
            } else {
                "NOT linearizable"
            }
        )
    }
}

const REPLICAS: usize = 3;
/// How long one client operation may take before it is `info`.
const OP_DEADLINE: Duration = Duration::from_secs(2);

struct Recorder {
    start: Instant,
    out: Mutex<HistoryWriter<BufWriter<std::fs::File>>>,
    next_process: AtomicU64,
    counts: [AtomicU64; 4],
}

impl Recorder {
    fn event(&self, process: u64, kind: EventType, f: Function, key: &str, value: Option<Value>) {
        let i = match kind {
            EventType::Invoke => 0,
            EventType::Ok => 1,
            EventType::Fail => 2,
            EventType::Info => 3,
        };
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        // The time is taken under the lock, so times in the file never go
        // back.
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let e = Event {
            process,
            kind,
            f,
            key: key.to_string(),
            value,
            time: self.start.elapsed().as_nanos() as u64,
        };
        if let Err(err) = out.write(&e) {
            tracing::error!(error = %err, "could not write the history");
        }
    }
}

/// One client's loop: random operations on random names until `stop`.
fn client_loop(
    addrs: Vec<std::net::SocketAddr>,
    security: crate::client::ClientSecurity,
    rec: &Recorder,
    names: usize,
    seed: u64,
    stop: &AtomicBool,
) {
    let mut cl = CoordinatorClient::new(addrs, 1, security);
    cl.attempt_timeout = Duration::from_millis(500);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut process = rec.next_process.fetch_add(1, Ordering::Relaxed);
    while !stop.load(Ordering::Relaxed) {
        let key = format!("t{}", rng.random_range(0..names));
        let f = match rng.random_range(0..3) {
            0 => Function::Create,
            1 => Function::Drop,
            _ => Function::Read,
        };
        rec.event(process, EventType::Invoke, f, &key, None);
        let deadline = Instant::now() + OP_DEADLINE;
        let (kind, value) = match f {
            Function::Read => {
                match cl.ask_leader(&ClientRequest::Lookup { table: key.clone() }, deadline) {
                    Ok(ClientReply::Lookup { exists, .. }) => {
                        (EventType::Ok, Some(Value::Bool(exists)))
                    }
                    _ => (EventType::Info, None),
                }
            }
            _ => {
                let op = if f == Function::Create {
                    Request::CreateTable {
                        name: key.clone(),
                        tablets: 1,
                    }
                } else {
                    Request::DropTable { name: key.clone() }
                };
                perform(&mut cl, op, f, deadline)
            }
        };
        rec.event(process, kind, f, &key, value);
        if kind == EventType::Info {
            process = rec.next_process.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs a create or drop until it has a definite answer or `deadline`:
/// `ok` if applied, `fail` only when the answer says the name existed
/// (create) or did not (drop), which is what a failure means to the
/// checker; a table busy with another operation is tried again; any other
/// refusal, or no answer, is `info`.
fn perform(
    cl: &mut CoordinatorClient,
    op: Request,
    f: Function,
    deadline: Instant,
) -> (EventType, Option<Value>) {
    let says_existence = |why: &str| match f {
        Function::Create => why.contains("a table named") && why.contains("exists"),
        _ => why.contains("no table named"),
    };
    loop {
        let rpc = cl.next_rpc(deadline);
        let why = match cl.operate(rpc, op.clone(), false, deadline) {
            Ok(ClientReply::Committed { result, .. }) => match result {
                OpResult::Rejected(why) => why,
                _ => return (EventType::Ok, None),
            },
            // Checked against the leader's state and not proposed.
            Ok(ClientReply::Refused(why)) => why,
            _ => return (EventType::Info, None),
        };
        if says_existence(&why) {
            return (EventType::Fail, None);
        }
        if !why.contains("is busy") || Instant::now() >= deadline {
            return (EventType::Info, None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Cuts replica `lone` off from the other replicas, both ways; returns
/// the others.
fn cut_off(net: &Net, lone: usize) -> Result<Vec<usize>, String> {
    let others: Vec<usize> = (1..=REPLICAS).filter(|&i| i != lone).collect();
    let addrs: Vec<_> = others.iter().map(|&i| Net::addr(i)).collect();
    net.cut(lone, &addrs)?;
    for &o in &others {
        net.cut(o, &[Net::addr(lone)])?;
    }
    Ok(others)
}

fn signal(pid: Option<u32>, sig: &str) {
    if let Some(pid) = pid {
        let _ = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status();
    }
}

/// Runs a chaos run (needs root: see [`Net::check`]).
pub fn run(cfg: &ChaosConfig, progress: &dyn Fn(&str)) -> Result<ChaosSummary, String> {
    let families = if cfg.nemesis.is_empty() {
        Nemesis::ALL.to_vec()
    } else {
        cfg.nemesis.clone()
    };
    let net = Net::create(REPLICAS + cfg.masters)?;
    let _ = std::fs::remove_dir_all(&cfg.dir);
    let mut lc =
        LocalClusterConfig::new(cfg.binary.clone(), cfg.dir.clone(), REPLICAS, cfg.masters);
    lc.namespaces = true;
    lc.log_filter = "info".into();
    lc.coordinator_args = ["--master-timeout-ms", "3000"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let cluster = Arc::new(Mutex::new(LocalCluster::start(lc)?));
    {
        let c = cluster.lock().unwrap_or_else(|e| e.into_inner());
        c.wait_ready(cfg.masters as u64, Duration::from_secs(60))?;
    }
    progress(&format!(
        "cluster up: {REPLICAS} replicas and {} masters in namespaces; nemesis {}",
        cfg.masters,
        families
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(",")
    ));
    let file = std::fs::File::create(&cfg.history)
        .map_err(|e| format!("{}: {e}", cfg.history.display()))?;
    let rec = Arc::new(Recorder {
        start: Instant::now(),
        out: Mutex::new(HistoryWriter::new(BufWriter::new(file))),
        next_process: AtomicU64::new(0),
        counts: Default::default(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    // Clients take the cluster's addresses once: the nemesis holds the
    // cluster.
    let (addrs, security) = {
        let c = cluster.lock().unwrap_or_else(|e| e.into_inner());
        (
            c.coordinators.iter().map(|p| p.addr).collect::<Vec<_>>(),
            c.security(),
        )
    };
    let mut workers = Vec::new();
    for i in 0..cfg.clients {
        let (rec, stop, names) = (rec.clone(), stop.clone(), cfg.names);
        let (addrs, security) = (addrs.clone(), security.clone());
        let seed = cfg.seed.wrapping_mul(1000).wrapping_add(i as u64);
        workers.push(std::thread::spawn(move || {
            client_loop(addrs, security, &rec, names, seed, &stop)
        }));
    }

    // The nemesis, in this thread.
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut faults = Vec::new();
    let end = Instant::now() + cfg.duration;
    while Instant::now() + Duration::from_secs(4) < end {
        std::thread::sleep(Duration::from_millis(rng.random_range(800..1500)));
        let family = families[rng.random_range(0..families.len())];
        let mut restart = None;
        let mut resume = None;
        let what = {
            let mut c = cluster.lock().unwrap_or_else(|e| e.into_inner());
            match family {
                Nemesis::Partition => {
                    let lone = rng.random_range(1..=REPLICAS);
                    let others = cut_off(&net, lone)?;
                    format!("partition: {{{lone}}} | {others:?}")
                }
                Nemesis::Isolate => {
                    let leader = c.active().map(|s| s.id as usize).unwrap_or(1);
                    cut_off(&net, leader)?;
                    format!("isolate the leader {leader}")
                }
                Nemesis::Kill => {
                    let victim = rng.random_range(1..=REPLICAS) as u64;
                    c.kill_coordinator(victim);
                    restart = Some(victim);
                    format!("kill -9 replica {victim}")
                }
                Nemesis::Pause => {
                    let victim = rng.random_range(1..=REPLICAS);
                    let pid = c.coordinators[victim - 1].pid();
                    signal(pid, "-STOP");
                    resume = pid;
                    format!("pause replica {victim}")
                }
            }
        };
        let at = rec.start.elapsed();
        progress(&format!("[{:6.1} s] fault: {what}", at.as_secs_f64()));
        std::thread::sleep(Duration::from_millis(rng.random_range(1500..3000)));
        net.heal()?;
        signal(resume, "-CONT");
        if let Some(id) = restart {
            cluster
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .restart_coordinator(id)?;
        }
        progress(&format!(
            "[{:6.1} s] healed",
            rec.start.elapsed().as_secs_f64()
        ));
        faults.push(format!("{:.1} s: {what}", at.as_secs_f64()));
    }
    let left = end.saturating_duration_since(Instant::now());
    std::thread::sleep(left);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    {
        let mut out = rec.out.lock().unwrap_or_else(|e| e.into_inner());
        out.flush().map_err(|e| e.to_string())?;
    }
    progress("healed; checking the history");
    {
        let c = cluster.lock().unwrap_or_else(|e| e.into_inner());
        c.wait_ready(cfg.masters as u64, Duration::from_secs(60))
            .map_err(|e| format!("after the final heal: {e}"))?;
    }
    let text = std::fs::read_to_string(&cfg.history).map_err(|e| e.to_string())?;
    let ops = super::history::read(text.as_bytes()).map_err(|e| e.to_string())?;
    let verdicts = tables::check_tables(&ops);
    let linearizable = verdicts.iter().all(|v| v.verdict.is_linearizable());
    let count = |i: usize| rec.counts[i].load(Ordering::Relaxed);
    drop(cluster);
    drop(net);
    Ok(ChaosSummary {
        ops: count(0),
        ok: count(1),
        fail: count(2),
        info: count(3),
        faults,
        verdicts,
        linearizable,
    })
}
