//! `ramcoord chaos`: a cluster of real processes in network namespaces,
//! clients working on it, a seeded nemesis, the history recorded and
//! checked.
//!
//! - **Cluster**: 3 coordinator replicas and the masters, each in its own
//!   namespace ([`super::netns`]), with mutual TLS; clients in the root
//!   namespace. Masters keep serve logs ([`crate::master::serve_log`]).
//! - **Nemesis** (seeded; one fault at a time, each followed by a heal and
//!   a calm spell; see [`Nemesis`]): partitions of the replicas, the
//!   leader isolated, a bridge, one-way loss, replicas killed or paused,
//!   masters cut off from the coordinators, killed or paused. A master
//!   that exits (declared crashed) or was killed is replaced by a new
//!   process in its slot. The run ends healed.
//! - **Workload**: clients create, drop and look up (a linearizable read)
//!   a few table names; other clients put and get a few keys of tables
//!   `kv` (keys `k0`, `k1`, …) and `moves` (`m0`, …) at their masters; a
//!   tablet mover splits tablets of both and migrates tablets of `moves`
//!   between masters. Every operation is written to the history
//!   ([`super::history`]). A client whose operation's outcome is unknown
//!   continues under a new process number, as in Jepsen.
//! - **Checks**, after the final heal (every name and key read once more,
//!   into the history): the table operations are linearizable per name
//!   ([`super::tables`]) — an acknowledged create or drop that was lost
//!   fails it; put/get of `kv` are linearizable per key ([`super::kv`])
//!   when no master was lost (a master's data lives only in its memory; a
//!   migration hands over a tablet, not its data, which is why `moves`
//!   is not checked that way); no key was
//!   served by two masters at once, and every master serves exactly what
//!   the map gives it ([`super::serve`]).
//!
//! Not yet: the membership-change and slow-disk nemeses.

use std::io::BufWriter;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::history::{Event, EventType, Function, HistoryWriter, Value};
use super::netns::Net;
use super::{kv, serve, tables};
use crate::client::{ClientSecurity, CoordinatorClient, MasterClient};
use crate::cluster::{key_hash, TableId};
use crate::coordinator::Request;
use crate::local_cluster::{LocalCluster, LocalClusterConfig};
use crate::protocol::{ClientReply, ClientRequest, MasterReply, MasterRequest, OpResult};

/// A family of faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nemesis {
    /// The replicas split into two sides (one against two), cut both ways.
    Partition,
    /// The leader cut off from the other replicas.
    Isolate,
    /// Two replicas cut from each other; the third still reaches both.
    Bridge,
    /// One replica stops hearing the leader; the other way still works.
    OneWay,
    /// A replica killed (SIGKILL) and restarted at the heal.
    Kill,
    /// A replica paused (SIGSTOP) and continued at the heal.
    Pause,
    /// A master cut off from every replica (clients still reach it), for
    /// longer than the master timeout: its lease runs out and its tablets
    /// move.
    MasterCut,
    /// A master killed (SIGKILL); a new process takes its slot at the heal.
    MasterKill,
    /// A master paused (SIGSTOP) and continued at the heal.
    MasterPause,
    /// A replica's disk made slow (the leader's, half the time): every log
    /// sync waits [`SLOW_SYNC_MS`] more until the heal (the storage
    /// layer's fault hook, switched by signal).
    SlowDisk,
    /// A replica's disk lost: it is removed from the group and a new
    /// replica (a new id, an empty disk) added, while clients keep going.
    /// Masters and clients are given every address a replica may take
    /// from the start, as a deployment lists its coordinator hosts.
    Membership,
}

impl Nemesis {
    /// Every family.
    pub const ALL: [Nemesis; 11] = [
        Nemesis::Partition,
        Nemesis::Isolate,
        Nemesis::Bridge,
        Nemesis::OneWay,
        Nemesis::Kill,
        Nemesis::Pause,
        Nemesis::MasterCut,
        Nemesis::MasterKill,
        Nemesis::MasterPause,
        Nemesis::SlowDisk,
        Nemesis::Membership,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Nemesis::Partition => "partition",
            Nemesis::Isolate => "isolate",
            Nemesis::Bridge => "bridge",
            Nemesis::OneWay => "one-way",
            Nemesis::Kill => "kill",
            Nemesis::Pause => "pause",
            Nemesis::MasterCut => "master-cut",
            Nemesis::MasterKill => "master-kill",
            Nemesis::MasterPause => "master-pause",
            Nemesis::SlowDisk => "slow-disk",
            Nemesis::Membership => "membership",
        }
    }

    /// Whether it loses a master's data (put/get are then not checked).
    pub fn loses_masters(self) -> bool {
        matches!(
            self,
            Nemesis::MasterCut | Nemesis::MasterKill | Nemesis::MasterPause
        )
    }
}

/// A bug planted in the processes, to show the checks catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// Coordinators answer operations before their commit point.
    AckBeforeCommit,
    /// Masters serve without a lease.
    IgnoreLease,
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
    /// Concurrent clients of the table operations.
    pub clients: usize,
    /// Concurrent clients of put/get.
    pub kv_clients: usize,
    /// Table names the clients use.
    pub names: usize,
    /// Keys of table `kv` the put/get clients use.
    pub keys: usize,
    /// Coordinator replicas (3 or 5).
    pub replicas: usize,
    /// Masters.
    pub masters: usize,
    /// A planted bug, if any.
    pub bug: Option<PlantedBug>,
    /// Each client waits a random time of up to twice this between
    /// operations (keeps long histories to a size a checker can read).
    pub think: Duration,
    /// Where the timeline goes (PNG), if anywhere.
    pub plot: Option<PathBuf>,
}

/// One fault's window, in nanoseconds from the run's start.
#[derive(Clone, Debug)]
pub struct FaultWindow {
    /// When it began.
    pub start_ns: u64,
    /// When it was healed.
    pub end_ns: u64,
    /// What it was.
    pub what: String,
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
    pub faults: Vec<FaultWindow>,
    /// Per-name verdicts.
    pub verdicts: Vec<tables::NameVerdict>,
    /// Per-key verdicts (`None`: not checked, and why).
    pub keys: Result<Vec<kv::KeyVerdict>, String>,
    /// No key served twice.
    pub serving: serve::ServeCheck,
    /// What the final state check found wrong.
    pub final_state: Vec<String>,
    /// Operations still open at the end (none may be).
    pub open: u64,
    /// What the tablet mover did.
    pub tablet_ops: TabletOps,
}

impl ChaosSummary {
    /// Every table name's and key's history is linearizable, and every
    /// operation completed.
    pub fn linearizable(&self) -> bool {
        self.verdicts.iter().all(|v| v.verdict.is_linearizable())
            && self
                .keys
                .as_ref()
                .map_or(true, |k| k.iter().all(|v| v.verdict.is_linearizable()))
            && self.open == 0
    }

    /// No key served by two masters at once, and the final state agrees.
    pub fn atomic(&self) -> bool {
        self.serving.atomic() && self.final_state.is_empty()
    }

    /// The last line of the run's output.
    pub fn line(&self) -> String {
        format!(
            "chaos: {} ops (ok {}, fail {}, info {}), {} faults, {}, {}",
            self.ops,
            self.ok,
            self.fail,
            self.info,
            self.faults.len(),
            if self.linearizable() {
                "linearizable"
            } else {
                "NOT linearizable"
            },
            if self.atomic() {
                "atomic"
            } else {
                "NOT atomic"
            }
        )
    }
}

/// How long one client operation may take before it is `info`.
const OP_DEADLINE: Duration = Duration::from_secs(2);
/// The coordinators' master timeout in chaos runs: long enough that a
/// pause of a replica does not declare masters crashed, short enough that
/// a master cut off longer than it loses its tablets.
const MASTER_TIMEOUT_MS: u64 = 2000;
/// Replicas a run may replace (the network has a node for each).
const REPLACEMENTS_MAX: usize = 6;

/// How much longer each log sync takes on a replica with a slow disk.
pub const SLOW_SYNC_MS: u64 = 300;

/// The tables the put/get clients use, their tablets at the start, and
/// the first letter of their keys.
const KV_TABLE: &str = "kv";
const MOVES_TABLE: &str = "moves";
const KV_TABLETS: u32 = 3;
/// The mover splits a table's tablets only while it has fewer.
const TABLETS_SPLIT_MAX: usize = 24;

/// What the tablet mover did.
#[derive(Clone, Debug, Default)]
pub struct TabletOps {
    /// Splits applied.
    pub splits: u64,
    /// Migrations applied.
    pub migrations: u64,
    /// Refused or rejected (busy, one migration at a time, …).
    pub refused: u64,
    /// Outcome unknown.
    pub unknown: u64,
}

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

    fn count(&self, i: usize) -> u64 {
        self.counts[i].load(Ordering::Relaxed)
    }
}

/// What a client needs to reach the cluster.
#[derive(Clone)]
struct Reach {
    coordinators: Vec<SocketAddr>,
    security: ClientSecurity,
}

impl Reach {
    fn coordinator(&self) -> CoordinatorClient {
        let mut cl = CoordinatorClient::new(self.coordinators.clone(), 1, self.security.clone());
        cl.attempt_timeout = Duration::from_millis(500);
        cl
    }
}

/// One table client: random operations on random names until `stop`.
fn table_loop(
    reach: Reach,
    rec: &Recorder,
    names: usize,
    seed: u64,
    think: Duration,
    stop: &AtomicBool,
) {
    let mut cl = reach.coordinator();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut process = rec.next_process.fetch_add(1, Ordering::Relaxed);
    while !stop.load(Ordering::Relaxed) {
        let key = format!("t{}", rng.random_range(0..names));
        let f = match rng.random_range(0..3) {
            0 => Function::Create,
            1 => Function::Drop,
            _ => Function::Read,
        };
        if table_op(&mut cl, rec, process, f, &key) == EventType::Info {
            process = rec.next_process.fetch_add(1, Ordering::Relaxed);
        }
        std::thread::sleep(think.mul_f64(rng.random_range(0.0..2.0)));
    }
}

/// One table operation, recorded; its outcome.
fn table_op(
    cl: &mut CoordinatorClient,
    rec: &Recorder,
    process: u64,
    f: Function,
    key: &str,
) -> EventType {
    rec.event(process, EventType::Invoke, f, key, None);
    let deadline = Instant::now() + OP_DEADLINE;
    let (kind, value) = match f {
        Function::Read => {
            let req = ClientRequest::Lookup {
                table: key.to_string(),
            };
            match cl.ask_leader(&req, deadline) {
                Ok(ClientReply::Lookup { exists, .. }) => {
                    (EventType::Ok, Some(Value::Bool(exists)))
                }
                _ => (EventType::Info, None),
            }
        }
        _ => {
            let op = if f == Function::Create {
                Request::CreateTable {
                    name: key.to_string(),
                    tablets: 1,
                }
            } else {
                Request::DropTable {
                    name: key.to_string(),
                }
            };
            perform(cl, op, f, deadline)
        }
    };
    rec.event(process, kind, f, key, value);
    kind
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

/// Where a table's tablets are, as last looked up.
struct KvMap {
    name: &'static str,
    table: Option<TableId>,
    /// (start, end, master address).
    tablets: Vec<(u64, u64, SocketAddr)>,
}

impl KvMap {
    fn refresh(&mut self, cl: &mut CoordinatorClient, deadline: Instant) {
        let Ok(ClientReply::View(view)) = cl.ask_leader(&ClientRequest::View, deadline) else {
            return;
        };
        let Some(t) = view.tables.iter().find(|t| t.name == self.name) else {
            return;
        };
        let addr_of = |id| {
            view.servers
                .iter()
                .find(|s| s.id == id)
                .and_then(|s| s.addr.parse::<SocketAddr>().ok())
        };
        self.table = Some(t.id);
        self.tablets = t
            .tablets
            .iter()
            .filter_map(|tb| Some((tb.start_hash, tb.end_hash, addr_of(tb.owner)?)))
            .collect();
    }

    fn owner(&self, hash: u64) -> Option<(TableId, SocketAddr)> {
        let t = self.table?;
        self.tablets
            .iter()
            .find(|(s, e, _)| *s <= hash && hash <= *e)
            .map(|(_, _, a)| (t, *a))
    }
}

/// Lookups of the put/get tables (`kv` first; a key's first letter is its
/// table's).
fn kv_maps() -> [KvMap; 2] {
    [KV_TABLE, MOVES_TABLE].map(|name| KvMap {
        name,
        table: None,
        tablets: Vec::new(),
    })
}

/// The tablet mover until `stop`: splits tablets of both put/get tables
/// (while they have few) and migrates tablets of `moves` to another
/// master, one operation at a time.
fn mover_loop(reach: Reach, seed: u64, stop: &AtomicBool) -> TabletOps {
    let mut cl = reach.coordinator();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut ops = TabletOps::default();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(rng.random_range(200..600)));
        let deadline = Instant::now() + OP_DEADLINE;
        let Ok(ClientReply::View(view)) = cl.ask_leader(&ClientRequest::View, deadline) else {
            continue;
        };
        let migrate = rng.random_bool(0.5);
        let name = if migrate || rng.random_bool(0.5) {
            MOVES_TABLE
        } else {
            KV_TABLE
        };
        let Some(t) = view.tables.iter().find(|t| t.name == name) else {
            continue;
        };
        let tb = &t.tablets[rng.random_range(0..t.tablets.len())];
        let op = if migrate {
            let others: Vec<_> = view
                .servers
                .iter()
                .filter(|s| {
                    s.status == crate::cluster::ServerStatus::Up
                        && s.services & crate::cluster::services::MASTER != 0
                        && s.id != tb.owner
                })
                .map(|s| s.id)
                .collect();
            if others.is_empty() {
                continue;
            }
            Request::MigrateTablet {
                table: name.into(),
                hash: tb.start_hash,
                to: others[rng.random_range(0..others.len())],
            }
        } else {
            if t.tablets.len() >= TABLETS_SPLIT_MAX || tb.end_hash - tb.start_hash < 2 {
                continue;
            }
            Request::SplitTablet {
                table: name.into(),
                split_hash: rng.random_range(tb.start_hash + 1..=tb.end_hash),
            }
        };
        let rpc = cl.next_rpc(deadline);
        match cl.operate(rpc, op, false, deadline) {
            Ok(ClientReply::Committed {
                result: OpResult::Rejected(_),
                ..
            })
            | Ok(ClientReply::Refused(_)) => ops.refused += 1,
            Ok(ClientReply::Committed { .. }) if migrate => ops.migrations += 1,
            Ok(ClientReply::Committed { .. }) => ops.splits += 1,
            _ => ops.unknown += 1,
        }
    }
    ops
}

/// One put/get client until `stop`.
fn kv_loop(
    reach: Reach,
    rec: &Recorder,
    keys: usize,
    seed: u64,
    think: Duration,
    stop: &AtomicBool,
) {
    let mut cl = reach.coordinator();
    let mut masters = MasterClient::new(1, reach.security.clone());
    masters.attempt_timeout = Duration::from_millis(500);
    let mut maps = kv_maps();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut process = rec.next_process.fetch_add(1, Ordering::Relaxed);
    let mut written = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let map = &mut maps[rng.random_range(0..2)];
        let key = format!("{}{}", &map.name[..1], rng.random_range(0..keys));
        let put = rng.random_bool(0.5).then(|| {
            written += 1;
            format!("{process}.{written}")
        });
        let kind = kv_op(&mut cl, &mut masters, map, rec, process, &key, put);
        if kind == EventType::Info {
            process = rec.next_process.fetch_add(1, Ordering::Relaxed);
        }
        std::thread::sleep(think.mul_f64(rng.random_range(0.0..2.0)));
    }
}

/// One put (`Some(value)`) or get, recorded; its outcome. A put whose
/// request may have reached a master is never sent again (a late copy
/// could land after the answer); one refused by a master that does not
/// own the key (or holds no lease) was not applied and is tried at the
/// owner, looked up again.
fn kv_op(
    cl: &mut CoordinatorClient,
    masters: &mut MasterClient,
    map: &mut KvMap,
    rec: &Recorder,
    process: u64,
    key: &str,
    put: Option<String>,
) -> EventType {
    let f = if put.is_some() {
        Function::Put
    } else {
        Function::Get
    };
    rec.event(
        process,
        EventType::Invoke,
        f,
        key,
        put.clone().map(Value::Str),
    );
    let deadline = Instant::now() + OP_DEADLINE;
    let hash = key_hash(key.as_bytes());
    let mut outcome = (EventType::Fail, None);
    while Instant::now() < deadline {
        let Some((table, addr)) = map.owner(hash) else {
            map.refresh(cl, deadline);
            if map.owner(hash).is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            continue;
        };
        let req = match &put {
            Some(v) => MasterRequest::Put {
                table,
                key: bytes::Bytes::copy_from_slice(key.as_bytes()),
                value: bytes::Bytes::copy_from_slice(v.as_bytes()),
            },
            None => MasterRequest::Get {
                table,
                key: bytes::Bytes::copy_from_slice(key.as_bytes()),
            },
        };
        match masters.ask(addr, &req) {
            Ok(MasterReply::Stored) => {
                outcome = (EventType::Ok, put.clone().map(Value::Str));
                break;
            }
            Ok(MasterReply::Value(v)) => {
                let v = v.map(|b| Value::Str(String::from_utf8_lossy(&b).into_owned()));
                outcome = (EventType::Ok, v);
                break;
            }
            Ok(MasterReply::NotOwner(_)) => {
                map.refresh(cl, deadline);
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(MasterReply::Refused(_)) => break,
            Err(_) if put.is_some() => {
                outcome = (EventType::Info, None);
                break;
            }
            Err(_) => {
                map.refresh(cl, deadline);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let value = match f {
        Function::Get => outcome.1,
        _ => put.map(Value::Str),
    };
    rec.event(process, outcome.0, f, key, value);
    outcome.0
}

/// Cuts replica `lone` off from the other replicas, both ways; returns
/// the others.
/// Cuts replicas `a` and `b` off from each other, both ways.
fn split(net: &Net, replicas: &[(u64, usize)], a: &[u64], b: &[u64]) -> Result<(), ChaosError> {
    let node = |id: u64| replicas.iter().find(|r| r.0 == id).map_or(0, |r| r.1);
    let addrs = |side: &[u64]| side.iter().map(|&i| Net::addr(node(i))).collect::<Vec<_>>();
    for &x in a {
        net.cut(node(x), &addrs(b))?;
    }
    for &y in b {
        net.cut(node(y), &addrs(a))?;
    }
    Ok(())
}

fn cut_off(net: &Net, replicas: &[(u64, usize)], lone: u64) -> Result<Vec<u64>, ChaosError> {
    let node = |id: u64| replicas.iter().find(|r| r.0 == id).map_or(0, |r| r.1);
    let others: Vec<u64> = replicas
        .iter()
        .map(|r| r.0)
        .filter(|&i| i != lone)
        .collect();
    let addrs: Vec<_> = others.iter().map(|&i| Net::addr(node(i))).collect();
    net.cut(node(lone), &addrs)?;
    for &o in &others {
        net.cut(node(o), &[Net::addr(node(lone))])?;
    }
    Ok(others)
}

/// Replaces replica `victim` as an operator whose disk was lost would:
/// kill it, wipe it, start a new replica under a new id with `--join`,
/// remove the old one from the group, add the new one (a learner until
/// it caught up, then a voter). What happened, for the fault's name.
fn replace_replica(c: &mut LocalCluster, victim: u64) -> Result<String, ChaosError> {
    use crate::ctl::CtlCommand;
    let new = c.replace_coordinator(victim)?;
    let addr = c.coordinators[new as usize - 1].addr.to_string();
    let mut ctl = c.ctl(Duration::from_secs(10));
    let mut tries = |cmd: &dyn Fn() -> CtlCommand| {
        let mut last = String::new();
        for _ in 0..3 {
            match ctl.run(cmd()) {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    };
    let removed = tries(&|| CtlCommand::RemoveReplica { id: victim });
    let added = tries(&|| CtlCommand::AddReplica {
        id: new,
        address: Some(addr.clone()),
    });
    Ok(match (removed, added) {
        (Ok(()), Ok(())) => format!("membership: replica {victim} replaced by {new}"),
        (r, a) => format!(
            "membership: replica {victim} replaced by {new}, but: remove {}, add {}",
            r.err().unwrap_or_else(|| "ok".into()),
            a.err().unwrap_or_else(|| "ok".into())
        ),
    })
}

fn signal(pid: Option<u32>, sig: &str) {
    if let Some(pid) = pid {
        let _ = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status();
    }
}

/// The active coordinator's id (1 if none answers).
fn leader_of(c: &LocalCluster) -> u64 {
    c.active()
        .map(|s| s.id)
        .unwrap_or_else(|| c.replicas().first().map_or(1, |r| r.0))
}

/// Replaces every master process that exited on its own (declared
/// crashed: it stops and a new process enlists); returns how many.
fn replace_exited_masters(
    cluster: &Mutex<LocalCluster>,
    progress: &dyn Fn(&str),
) -> Result<usize, ChaosError> {
    let mut c = cluster.lock().unwrap_or_else(|e| e.into_inner());
    let mut n = 0;
    for i in 0..c.masters.len() {
        if c.masters[i].exited() {
            progress(&format!(
                "master {} exited (declared crashed); a new process takes its slot",
                i + 1
            ));
            c.restart_master(i)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Sleeps `d`, or less if the run was interrupted; whether it was.
fn nap(d: Duration, interrupted: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while !interrupted.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= end {
            return false;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
    true
}

/// SIGINT and SIGTERM end the run early, cleanly (a second one ends the
/// process at once).
fn interruptible() -> Arc<AtomicBool> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // Registration fails only for forbidden signals; then Ctrl-C kills
        // the run, and the next run cleans its leftovers.
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone());
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
    flag
}

/// Why a chaos run stopped before its verdict.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// The network namespaces could not be built or changed.
    #[error(transparent)]
    Net(#[from] super::netns::NetError),
    /// The cluster's processes could not be started or did not come up.
    #[error(transparent)]
    Cluster(#[from] crate::local_cluster::ClusterError),
    /// A membership change could not be made.
    #[error(transparent)]
    Ctl(#[from] crate::ctl::CtlError),
    /// A file of the run (history, serve logs) could not be written or
    /// read.
    #[error("{what}: {source}")]
    Io {
        /// Which file.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// Ctrl-C or SIGTERM.
    #[error("interrupted: processes stopped, namespaces removed")]
    Interrupted,
    /// The run could not go on (what happened).
    #[error("{0}")]
    Run(String),
}

/// Runs a chaos run (needs root: see [`Net::check`]). Interrupted (Ctrl-C,
/// SIGTERM), it stops its processes, removes its namespaces and returns
/// an error saying so.
pub fn run(cfg: &ChaosConfig, progress: &dyn Fn(&str)) -> Result<ChaosSummary, ChaosError> {
    let interrupted = interruptible();
    let families = if cfg.nemesis.is_empty() {
        Nemesis::ALL.to_vec()
    } else {
        cfg.nemesis.clone()
    };
    if let Some(p) = &cfg.plot {
        let _ = std::fs::remove_file(p); // never show an older run's
    }
    let replicas = cfg.replicas;
    if replicas != 3 && replicas != 5 {
        return Err(ChaosError::Run(format!(
            "{replicas} replicas: a chaos run has 3 or 5"
        )));
    }
    let net = Net::create(replicas + cfg.masters + REPLACEMENTS_MAX)?;
    let _ = std::fs::remove_dir_all(&cfg.dir);
    let mut lc =
        LocalClusterConfig::new(cfg.binary.clone(), cfg.dir.clone(), replicas, cfg.masters);
    lc.namespaces = true;
    lc.serve_logs = true;
    lc.spare_replicas = REPLACEMENTS_MAX;
    lc.log_filter = "info".into();
    lc.coordinator_args = vec![
        "--master-timeout-ms".to_string(),
        MASTER_TIMEOUT_MS.to_string(),
        "--fault-signals".to_string(),
        "--fault-sync-delay-ms".to_string(),
        SLOW_SYNC_MS.to_string(),
    ];
    match cfg.bug {
        Some(PlantedBug::AckBeforeCommit) => lc
            .coordinator_args
            .extend(["--inject-bug".to_string(), "ack-before-commit".to_string()]),
        Some(PlantedBug::IgnoreLease) => lc
            .master_args
            .extend(["--inject-bug".to_string(), "ignore-lease".to_string()]),
        None => {}
    }
    let cluster = Arc::new(Mutex::new(LocalCluster::start(lc)?));
    let (reach, serve_logs) = {
        let c = cluster.lock().unwrap_or_else(|e| e.into_inner());
        c.wait_ready(cfg.masters as u64, Duration::from_secs(60))?;
        let reach = Reach {
            coordinators: c.coordinator_addrs(),
            security: c.security(),
        };
        let logs: Vec<PathBuf> = (0..cfg.masters).map(|i| c.serve_log(i)).collect();
        (reach, logs)
    };
    // The put/get tables.
    for name in [KV_TABLE, MOVES_TABLE] {
        let mut cl = reach.coordinator();
        let deadline = Instant::now() + Duration::from_secs(20);
        let op = Request::CreateTable {
            name: name.into(),
            tablets: KV_TABLETS,
        };
        match perform(&mut cl, op, Function::Create, deadline) {
            (EventType::Ok, _) => {}
            (kind, _) => {
                return Err(ChaosError::Run(format!(
                    "could not create table {name}: {}",
                    match kind {
                        EventType::Fail => "refused",
                        _ => "its outcome is unknown",
                    }
                )))
            }
        }
    }
    progress(&format!(
        "cluster up: {replicas} replicas and {} masters in namespaces; nemesis {}{}",
        cfg.masters,
        families
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(","),
        match cfg.bug {
            Some(b) => format!(
                "; PLANTED BUG {}",
                match b {
                    PlantedBug::AckBeforeCommit => "ack-before-commit",
                    PlantedBug::IgnoreLease => "ignore-lease",
                }
            ),
            None => String::new(),
        }
    ));
    let file = std::fs::File::create(&cfg.history).map_err(|source| ChaosError::Io {
        what: cfg.history.display().to_string(),
        source,
    })?;
    let rec = Arc::new(Recorder {
        start: Instant::now(),
        out: Mutex::new(HistoryWriter::new(BufWriter::new(file))),
        next_process: AtomicU64::new(0),
        counts: Default::default(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for i in 0..cfg.clients + cfg.kv_clients {
        let (rec, stop, reach) = (rec.clone(), stop.clone(), reach.clone());
        let seed = cfg.seed.wrapping_mul(1000).wrapping_add(i as u64);
        let (names, keys, think) = (cfg.names, cfg.keys, cfg.think);
        let table_client = i < cfg.clients;
        workers.push(std::thread::spawn(move || {
            if table_client {
                table_loop(reach, &rec, names, seed, think, &stop)
            } else {
                kv_loop(reach, &rec, keys, seed, think, &stop)
            }
        }));
    }

    let mover = {
        let (stop, reach) = (stop.clone(), reach.clone());
        let seed = cfg.seed.wrapping_mul(1000).wrapping_add(999);
        std::thread::spawn(move || mover_loop(reach, seed, &stop))
    };

    // The nemesis, in this thread.
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut faults = Vec::new();
    let mut masters_lost = 0usize;
    let end = Instant::now() + cfg.duration;
    let ns = |rec: &Recorder| rec.start.elapsed().as_nanos() as u64;
    let stopped = |stop: &AtomicBool| {
        stop.store(true, Ordering::Relaxed);
        ChaosError::Interrupted
    };
    while Instant::now() + Duration::from_secs(5) < end {
        if nap(
            Duration::from_millis(rng.random_range(800..1500)),
            &interrupted,
        ) {
            return Err(stopped(&stop));
        }
        masters_lost += replace_exited_masters(&cluster, progress)?;
        let family = families[rng.random_range(0..families.len())];
        let mut restart = None;
        let mut restart_master = None;
        let mut resume = None;
        let mut fast_disk = None;
        let mut hold = Duration::from_millis(rng.random_range(1500..3000));
        let what = {
            let mut c = cluster.lock().unwrap_or_else(|e| e.into_inner());
            let reps = c.replicas();
            let ids: Vec<u64> = reps.iter().map(|r| r.0).collect();
            let node = |id: u64| reps.iter().find(|r| r.0 == id).map_or(0, |r| r.1);
            let any = |rng: &mut ChaCha8Rng| ids[rng.random_range(0..ids.len())];
            match family {
                Nemesis::Partition => {
                    // Random halves: a minority of 1 (of 3) or 1–2 (of 5)
                    // against the rest.
                    let mut side = ids.clone();
                    for i in (1..side.len()).rev() {
                        side.swap(i, rng.random_range(0..=i));
                    }
                    let rest = side.split_off(rng.random_range(1..=ids.len() / 2));
                    split(&net, &reps, &side, &rest)?;
                    format!("partition: {side:?} | {rest:?}")
                }
                Nemesis::Isolate => {
                    let leader = leader_of(&c);
                    cut_off(&net, &reps, leader)?;
                    format!("isolate the leader {leader}")
                }
                Nemesis::Bridge => {
                    // The others in two halves that cannot reach each
                    // other; the bridge reaches both (with 5: 2 + 1 + 2,
                    // each half a minority, the bridge in both majorities).
                    let bridge = any(&mut rng);
                    let mut ends: Vec<u64> = ids.iter().copied().filter(|&i| i != bridge).collect();
                    for i in (1..ends.len()).rev() {
                        ends.swap(i, rng.random_range(0..=i));
                    }
                    let other = ends.split_off(ends.len() / 2);
                    split(&net, &reps, &ends, &other)?;
                    format!("bridge: {ends:?} and {other:?} cut, {bridge} reaches both")
                }
                Nemesis::OneWay => {
                    let leader = leader_of(&c);
                    let others: Vec<u64> = ids.iter().copied().filter(|&i| i != leader).collect();
                    let deaf = others[rng.random_range(0..others.len())];
                    net.cut(node(deaf), &[Net::addr(node(leader))])?;
                    format!("one-way: replica {deaf} stops hearing the leader {leader}")
                }
                Nemesis::Kill => {
                    let victim = any(&mut rng);
                    c.kill_coordinator(victim);
                    restart = Some(victim);
                    format!("kill -9 replica {victim}")
                }
                Nemesis::Pause => {
                    let victim = any(&mut rng);
                    let pid = c.coordinators[victim as usize - 1].pid();
                    signal(pid, "-STOP");
                    resume = pid;
                    format!("pause replica {victim}")
                }
                Nemesis::MasterCut => {
                    let m = rng.random_range(0..cfg.masters);
                    let mnode = replicas + 1 + m;
                    let addrs: Vec<_> = reps.iter().map(|r| Net::addr(r.1)).collect();
                    net.cut(mnode, &addrs)?;
                    for r in &reps {
                        net.cut(r.1, &[Net::addr(mnode)])?;
                    }
                    // Past the master timeout: the coordinators declare it
                    // crashed and hand its tablets on.
                    hold = Duration::from_millis(MASTER_TIMEOUT_MS + rng.random_range(1000..2500));
                    format!("master {} cut off from the replicas", m + 1)
                }
                Nemesis::MasterKill => {
                    let m = rng.random_range(0..cfg.masters);
                    c.kill_master(m);
                    restart_master = Some(m);
                    format!("kill -9 master {}", m + 1)
                }
                Nemesis::MasterPause => {
                    let m = rng.random_range(0..cfg.masters);
                    let pid = c.masters[m].pid();
                    signal(pid, "-STOP");
                    resume = pid;
                    format!("pause master {}", m + 1)
                }
                Nemesis::SlowDisk => {
                    let victim = if rng.random_bool(0.5) {
                        leader_of(&c)
                    } else {
                        any(&mut rng)
                    };
                    let pid = c.coordinators[victim as usize - 1].pid();
                    signal(pid, "-USR1");
                    fast_disk = pid;
                    format!("slow disk on replica {victim} (+{SLOW_SYNC_MS} ms a sync)")
                }
                Nemesis::Membership if c.coordinators.len() >= replicas + REPLACEMENTS_MAX => {
                    continue; // no node left for another replica
                }
                Nemesis::Membership => {
                    // During faults: a master paused and another replica's
                    // disk slow while the group changes.
                    let victim = any(&mut rng);
                    let m = rng.random_range(0..cfg.masters);
                    let mpid = c.masters[m].pid();
                    signal(mpid, "-STOP");
                    resume = mpid;
                    let others: Vec<u64> = ids.iter().copied().filter(|&i| i != victim).collect();
                    let slow = others[rng.random_range(0..others.len())];
                    let spid = c.coordinators[slow as usize - 1].pid();
                    signal(spid, "-USR1");
                    fast_disk = spid;
                    hold = Duration::from_millis(500);
                    format!(
                        "{} (master {} paused, replica {slow}'s disk slow meanwhile)",
                        replace_replica(&mut c, victim)?,
                        m + 1
                    )
                }
            }
        };
        let start_ns = ns(&rec);
        progress(&format!("[{:6.1} s] fault: {what}", start_ns as f64 / 1e9));
        let cut_short = nap(hold, &interrupted);
        net.heal()?;
        signal(resume, "-CONT");
        signal(fast_disk, "-USR2");
        if let Some(id) = restart {
            cluster
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .restart_coordinator(id)?;
        }
        if let Some(m) = restart_master {
            masters_lost += 1;
            cluster
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .restart_master(m)?;
        }
        let end_ns = ns(&rec);
        progress(&format!(
            "[{:6.1} s] healed; {} ops so far",
            end_ns as f64 / 1e9,
            rec.count(0)
        ));
        faults.push(FaultWindow {
            start_ns,
            end_ns,
            what,
        });
        if cut_short {
            return Err(stopped(&stop));
        }
    }
    if nap(end.saturating_duration_since(Instant::now()), &interrupted) {
        return Err(stopped(&stop));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let tablet_ops = mover.join().unwrap_or_default();
    progress("healed; waiting for the cluster to settle");
    // A master declared crashed learns it at its next heartbeat and exits.
    let settle = Instant::now() + Duration::from_secs(60);
    loop {
        masters_lost += replace_exited_masters(&cluster, progress)?;
        let ready = {
            let c = cluster.lock().unwrap_or_else(|e| e.into_inner());
            c.wait_ready(cfg.masters as u64, Duration::from_secs(3))
        };
        match ready {
            Ok(_) => break,
            Err(e) if Instant::now() > settle => {
                return Err(ChaosError::Run(format!("after the final heal: {e}")));
            }
            Err(_) => {}
        }
    }
    // Every name and key once more, into the history: an acknowledged
    // operation that was lost shows here.
    progress("reading every name and key once more");
    {
        let mut cl = reach.coordinator();
        let mut masters = MasterClient::new(1, reach.security.clone());
        let mut maps = kv_maps();
        for n in 0..cfg.names {
            let name = format!("t{n}");
            for _ in 0..10 {
                let p = rec.next_process.fetch_add(1, Ordering::Relaxed);
                if table_op(&mut cl, &rec, p, Function::Read, &name) == EventType::Ok {
                    break;
                }
            }
        }
        for map in &mut maps {
            for k in 0..cfg.keys {
                let key = format!("{}{k}", &map.name[..1]);
                for _ in 0..10 {
                    let p = rec.next_process.fetch_add(1, Ordering::Relaxed);
                    let kind = kv_op(&mut cl, &mut masters, map, &rec, p, &key, None);
                    if kind == EventType::Ok {
                        break;
                    }
                }
            }
        }
    }
    {
        let mut out = rec.out.lock().unwrap_or_else(|e| e.into_inner());
        out.flush().map_err(|source| ChaosError::Io {
            what: cfg.history.display().to_string(),
            source,
        })?;
    }
    progress("checking the history and the serve logs");
    let text = std::fs::read_to_string(&cfg.history).map_err(|source| ChaosError::Io {
        what: cfg.history.display().to_string(),
        source,
    })?;
    let ops = super::history::read(text.as_bytes())
        .map_err(|e| ChaosError::Run(format!("{}: {e}", cfg.history.display())))?;
    let open = ops.iter().filter(|o| o.complete.is_none()).count() as u64;
    let verdicts = tables::check_tables(&ops);
    let keys = if masters_lost == 0 {
        Ok(kv::check_keys(&ops, |key| key.starts_with('k')))
    } else {
        Err(format!(
            "{masters_lost} master processes were lost (killed or declared crashed), and their keys with them"
        ))
    };
    let mut events = Vec::new();
    for path in &serve_logs {
        let text = std::fs::read_to_string(path).map_err(|source| ChaosError::Io {
            what: path.display().to_string(),
            source,
        })?;
        events.extend(
            crate::master::serve_log::read(&text)
                .map_err(|e| ChaosError::Run(format!("{}: {e}", path.display())))?,
        );
    }
    let serving = serve::check_serving(&events);
    let view = {
        let mut cl = reach.coordinator();
        match cl.ask_leader(
            &ClientRequest::View,
            Instant::now() + Duration::from_secs(10),
        ) {
            Ok(ClientReply::View(v)) => v,
            Ok(_) => {
                return Err(ChaosError::Run(
                    "no view of the final state: an unexpected answer".into(),
                ))
            }
            Err(e) => return Err(ChaosError::Run(format!("no view of the final state: {e}"))),
        }
    };
    let final_state = serve::check_final(&view, &events);
    drop(cluster);
    drop(net);
    if let Some(path) = &cfg.plot {
        let title = format!(
            "ramcoord chaos, seed {}, nemesis {}",
            cfg.seed,
            families
                .iter()
                .map(|f| f.name())
                .collect::<Vec<_>>()
                .join(",")
        );
        match super::plot::timeline(&ops, &faults, &title, path) {
            Ok(()) => progress(&format!("timeline: {}", path.display())),
            Err(e) => progress(&format!("no timeline: {e}")),
        }
    }
    Ok(ChaosSummary {
        ops: rec.count(0),
        ok: rec.count(1),
        fail: rec.count(2),
        info: rec.count(3),
        faults,
        verdicts,
        keys,
        serving,
        final_state,
        open,
        tablet_ops,
    })
}
