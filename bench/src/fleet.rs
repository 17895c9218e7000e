//! Light masters for `ramcoord-bench scale --parts cluster`: thousands of
//! master endpoints in one process, each speaking the real protocol to a
//! real coordinator group.
//!
//! A real master process costs a transport (an accept thread, a driver,
//! I/O threads) and a few MiB; ten thousand of them do not fit on a small
//! machine. What the coordinator sees of a master is much less: a client
//! connection on which it enlists and heartbeats, and a listening address
//! the leader dials to write the master's configuration region. An
//! endpoint here is exactly that, and nothing is shortcut on the
//! coordinator's side:
//!
//! - **its own connection to a replica**, opened from its own loopback
//!   source address (127.1.x.y, 250 endpoints per address, so the
//!   coordinator's per-address cap on client connections is not what is
//!   measured), greeted with its own client id
//!   ([`master_client_id`] of its nonce): the coordinator accepts an
//!   enlistment only under that id, and a heartbeat only from the
//!   connection that enlisted the server;
//! - **an enlistment** (`Request::Enlist`, one exactly-once id, sent again
//!   on the same id until answered) and then **heartbeats** at the pace
//!   the leader's answers set (`HeartbeatAck::interval_us`), each with one
//!   attempt's timeout, following `NotLeader` redirects;
//! - **a listener** (127.2.x.y) that answers the leader's hello with the
//!   endpoint's transport id ([`master_peer_id`]) and applies each
//!   one-sided write through a real [`MasterAgent`] (decode, checksum,
//!   owner and term fence), acknowledging it as a master's transport does.
//!
//! The endpoints of a fleet are spread over a few shard threads, each one
//! `mio` event loop over its endpoints' sockets with a timer heap: a
//! thousand endpoints cost a thousand sockets' buffers and agents, not a
//! thousand threads. What they saw (heartbeats answered, regions landed
//! and when, declarations of death) is counted in [`FleetStats`], and,
//! while recording is on, every landing is kept with its time, for the
//! recovery figures.
//!
//! No TLS: the scale runs use `--insecure` clusters (a TLS handshake per
//! endpoint would measure the handshakes, and the classes it would prove
//! are the same ids taken on trust here).

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{unbounded, Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use ramcoord::cluster::services;
use ramcoord::coordinator::Request;
use ramcoord::master::{MasterAgent, MasterBugs, MasterConfig, RegionOutcome};
use ramcoord::protocol::{
    decode, encode, master_client_id, master_peer_id, tag, ClientOp, ClientReply, ClientRequest,
    OpResult, CONFIG_REGION,
};
use ramcoord_net::frame::{Frame, FrameDecoder, WriteStatus};

/// How a fleet runs.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// Endpoints.
    pub count: usize,
    /// The first endpoint's number (fleets started side by side take
    /// different numbers, hence different addresses).
    pub first: usize,
    /// The cluster id.
    pub cluster: u64,
    /// The coordinator replicas' client addresses.
    pub coordinators: Vec<SocketAddr>,
    /// Event-loop threads.
    pub shards: usize,
    /// Enlistments in flight per shard (the rest wait their turn).
    pub enlist_in_flight_max: usize,
    /// Heartbeat interval until the leader sets one.
    pub heartbeat: Duration,
    /// Endpoints per process: a fleet larger than this runs in child
    /// processes of this binary (`ramcoord-bench fleet-worker`), this many
    /// each, so that no process needs more descriptors than the limit
    /// allows (an endpoint holds two or three). 0: all in this process.
    pub per_process: usize,
}

/// Endpoints a worker process holds: 2 descriptors each (its client
/// connection, its listener) and a third while a leader's push
/// connection to it is open (closed after 10 s idle; after a change of
/// leader, the old leader's and the new one's for a while): under
/// 10,000 descriptors, half a 20,000 limit.
pub const ENDPOINTS_PER_PROCESS: usize = 2500;

/// What the endpoints saw, counted as it happens.
#[derive(Debug, Default)]
pub struct FleetStats {
    /// Endpoints enlisted.
    pub enlisted: AtomicUsize,
    /// Heartbeats answered with `gone: false`.
    pub heartbeats: AtomicU64,
    /// Heartbeats unanswered within their attempt (sent again).
    pub heartbeat_timeouts: AtomicU64,
    /// Redirects followed (`NotLeader`).
    pub redirects: AtomicU64,
    /// Endpoints told they were declared crashed although they were
    /// heartbeating (never asked to leave nor stopped): false suspicions.
    pub declared_crashed_alive: AtomicUsize,
    /// Endpoints told they are gone after they left (expected).
    pub gone_after_leave: AtomicUsize,
    /// Region writes applied.
    pub regions_landed: AtomicU64,
    /// Region writes refused (fence, not ours, malformed).
    pub regions_refused: AtomicU64,
    /// Bytes of region writes received.
    pub region_bytes: AtomicU64,
    /// The interval the leader last set, in microseconds.
    pub interval_us: AtomicU64,
    /// The lease the leader last granted, in microseconds.
    pub lease_us: AtomicU64,
    /// Connections to replicas that failed or were closed.
    pub reconnects: AtomicU64,
}

/// A region that landed while recording.
#[derive(Clone, Copy, Debug)]
pub struct Landing {
    /// When.
    pub at: Instant,
    /// The endpoint's number.
    pub endpoint: usize,
    /// Tablets the endpoint held before it.
    pub tablets_before: usize,
    /// Tablets it holds now.
    pub tablets_after: usize,
}

struct Shared {
    stats: FleetStats,
    recording: AtomicBool,
    landings: Mutex<Vec<Landing>>,
    /// Per endpoint (by number - first): its server id once enlisted
    /// (`u64::MAX` before) and its tablet count.
    ids: Vec<AtomicU64>,
    tablets: Vec<AtomicUsize>,
}

enum Command {
    /// Ask the coordinator to move this endpoint's tablets (a drain).
    Leave(usize),
    /// Stop heartbeating and close everything: a crash.
    Crash(usize),
    Shutdown,
}

/// A shard's command queue, its waker and its thread.
type ShardHandle = (Sender<Command>, Arc<Waker>, Option<JoinHandle<()>>);

/// A running fleet of light masters (see the module docs).
pub struct Fleet {
    cfg: FleetConfig,
    shared: Arc<Shared>,
    shards: Vec<ShardHandle>,
    /// The child processes holding the endpoints, when the fleet is
    /// larger than [`FleetConfig::per_process`].
    workers: Vec<Worker>,
    /// Which recording the landings reported belong to (workers').
    epoch: Arc<AtomicU64>,
}

impl Fleet {
    /// Binds every endpoint's listener and starts the shards; endpoints
    /// enlist at once (a few at a time per shard).
    pub fn start(cfg: FleetConfig) -> Result<Fleet, String> {
        if cfg.coordinators.is_empty() {
            return Err("a fleet needs at least one coordinator address".into());
        }
        let shared = Arc::new(Shared {
            stats: FleetStats::default(),
            recording: AtomicBool::new(false),
            landings: Mutex::new(Vec::new()),
            ids: (0..cfg.count).map(|_| AtomicU64::new(u64::MAX)).collect(),
            tablets: (0..cfg.count).map(|_| AtomicUsize::new(0)).collect(),
        });
        let epoch = Arc::new(AtomicU64::new(0));
        if cfg.per_process > 0 && cfg.count > cfg.per_process {
            let mut workers = Vec::new();
            let mut offset = 0;
            while offset < cfg.count {
                let count = cfg.per_process.min(cfg.count - offset);
                workers.push(Worker::start(&cfg, offset, count, &shared, &epoch)?);
                offset += count;
            }
            return Ok(Fleet {
                cfg,
                shared,
                shards: Vec::new(),
                workers,
                epoch,
            });
        }
        let shards_n = cfg.shards.clamp(1, cfg.count.max(1));
        let mut shards = Vec::new();
        for s in 0..shards_n {
            let numbers: Vec<usize> = (0..cfg.count).filter(|i| i % shards_n == s).collect();
            let poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
            let waker =
                Arc::new(Waker::new(poll.registry(), WAKER).map_err(|e| format!("waker: {e}"))?);
            let (tx, rx) = unbounded();
            let mut shard = Shard::new(&cfg, shared.clone(), poll, rx, &numbers)?;
            let handle = std::thread::Builder::new()
                .name(format!("fleet-{s}"))
                .spawn(move || shard.run())
                .map_err(|e| format!("spawning a fleet shard: {e}"))?;
            shards.push((tx, waker, Some(handle)));
        }
        Ok(Fleet {
            cfg,
            shared,
            shards,
            workers: Vec::new(),
            epoch,
        })
    }

    /// What the endpoints saw so far.
    pub fn stats(&self) -> &FleetStats {
        &self.shared.stats
    }

    /// Endpoints in the fleet.
    pub fn len(&self) -> usize {
        self.cfg.count
    }

    /// Tablets endpoint `i` holds (its last region applied).
    pub fn tablets_of(&self, i: usize) -> usize {
        self.shared
            .tablets
            .get(i)
            .map_or(0, |t| t.load(Ordering::Relaxed))
    }

    /// Waits until every endpoint enlisted, or `limit` passed.
    pub fn wait_enlisted(&self, limit: Duration) -> Result<Duration, String> {
        let t = Instant::now();
        let mut said = Instant::now();
        while self.stats().enlisted.load(Ordering::Relaxed) < self.cfg.count {
            if said.elapsed() >= Duration::from_secs(5) {
                // A slow enlistment says why (timeouts and reconnections
                // are a storm; redirects are a leader changing hands).
                said = Instant::now();
                let st = self.stats();
                let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
                eprintln!(
                    "  fleet: {} of {} enlisted after {:.0} s; {} heartbeats answered, {} timed out, {} redirects, {} reconnections",
                    st.enlisted.load(Ordering::Relaxed),
                    self.cfg.count,
                    t.elapsed().as_secs_f64(),
                    r(&st.heartbeats),
                    r(&st.heartbeat_timeouts),
                    r(&st.redirects),
                    r(&st.reconnects),
                );
            }
            if let Some(k) = self
                .workers
                .iter()
                .position(|w| w.gone.load(Ordering::SeqCst))
            {
                return Err(format!("fleet worker {k} exited (its stderr is above)"));
            }
            if t.elapsed() > limit {
                return Err(format!(
                    "{} of {} endpoints enlisted after {limit:?}",
                    self.stats().enlisted.load(Ordering::Relaxed),
                    self.cfg.count
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(t.elapsed())
    }

    /// Starts keeping every landing (with its time); clears what was kept.
    pub fn record(&self, on: bool) {
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        self.shared
            .landings
            .lock()
            .expect("landings lock poisoned")
            .clear();
        self.shared.recording.store(on, Ordering::SeqCst);
        for w in &self.workers {
            w.tell(&format!("record {} {epoch}", u8::from(on)));
        }
        // Every worker records before anything is asked of any of them
        // (a leave in one lands in others).
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .workers
            .iter()
            .any(|w| w.recording.load(Ordering::SeqCst) < epoch)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The landings kept since [`Fleet::record`].
    pub fn landings(&self) -> Vec<Landing> {
        self.shared
            .landings
            .lock()
            .expect("landings lock poisoned")
            .clone()
    }

    fn command(&self, i: usize, c: Command) {
        if !self.workers.is_empty() {
            let per = self.cfg.per_process;
            let Some(w) = self.workers.get(i / per) else {
                return;
            };
            let verb = match c {
                Command::Leave(_) => "leave",
                Command::Crash(_) => "crash",
                Command::Shutdown => "quit",
            };
            w.tell(&format!("{verb} {}", i % per));
            return;
        }
        let (tx, waker, _) = &self.shards[i % self.shards.len()];
        let _ = tx.send(c);
        let _ = waker.wake();
    }

    /// Endpoint `i` asks the coordinator to move its tablets (a drain).
    pub fn leave(&self, i: usize) {
        self.command(i, Command::Leave(i));
    }

    /// Endpoint `i` stops as a crashed process would (silence).
    pub fn crash(&self, i: usize) {
        self.command(i, Command::Crash(i));
    }

    /// Processes holding the endpoints (1: this one).
    pub fn processes(&self) -> usize {
        self.workers.len().max(1)
    }
}

/// A child process holding a share of a fleet's endpoints
/// (`ramcoord-bench fleet-worker`). It is told what to do on its stdin,
/// one line a command (`leave I`, `crash I`, `record 0|1 EPOCH`, `quit`),
/// and reports on its stdout, one line a fact, which a thread here folds
/// into the fleet's counters:
///
/// - `s` and the [`FleetStats`] counters in their order of declaration
///   (every 20 ms; added here as the difference from the last report);
/// - `t I N`: endpoint I now holds N tablets;
/// - `l EPOCH NS I BEFORE AFTER`: a landing while recording, at NS
///   nanoseconds of the monotonic clock (the one `Instant` reads, shared
///   by every process on the host);
/// - `r EPOCH`: the worker took `record … EPOCH` (the fleet's `record`
///   waits for it from every worker).
struct Worker {
    child: std::process::Child,
    stdin: Mutex<Option<std::process::ChildStdin>>,
    reader: Option<JoinHandle<()>>,
    /// The last recording epoch the worker confirmed.
    recording: Arc<AtomicU64>,
    /// Its stdout closed: it exited.
    gone: Arc<AtomicBool>,
}

impl Worker {
    fn start(
        cfg: &FleetConfig,
        offset: usize,
        count: usize,
        shared: &Arc<Shared>,
        epoch: &Arc<AtomicU64>,
    ) -> Result<Worker, String> {
        use std::process::{Command as Process, Stdio};
        let exe = std::env::current_exe().map_err(|e| format!("this binary's path: {e}"))?;
        let coordinators: Vec<String> = cfg.coordinators.iter().map(|a| a.to_string()).collect();
        let mut child = Process::new(exe)
            .arg("fleet-worker")
            .args(["--cluster", &cfg.cluster.to_string()])
            .args(["--coordinators", &coordinators.join(",")])
            .args(["--first", &(cfg.first + offset).to_string()])
            .args(["--count", &count.to_string()])
            .args(["--shards", &cfg.shards.to_string()])
            .args(["--enlist-in-flight", &cfg.enlist_in_flight_max.to_string()])
            .args(["--heartbeat-us", &cfg.heartbeat.as_micros().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting a fleet worker: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let stdin = child.stdin.take();
        let recording = Arc::new(AtomicU64::new(0));
        let gone = Arc::new(AtomicBool::new(false));
        let (shared, epoch, confirmed, ended) = (
            shared.clone(),
            epoch.clone(),
            recording.clone(),
            gone.clone(),
        );
        let reader = std::thread::Builder::new()
            .name("fleet-worker-reader".into())
            .spawn(move || {
                read_worker(stdout, offset, &shared, &epoch, &confirmed);
                ended.store(true, Ordering::SeqCst);
            })
            .map_err(|e| format!("spawning a fleet reader: {e}"))?;
        Ok(Worker {
            child,
            stdin: Mutex::new(stdin),
            reader: Some(reader),
            recording,
            gone,
        })
    }

    fn tell(&self, line: &str) {
        let mut stdin = self.stdin.lock().expect("worker stdin lock poisoned");
        if let Some(s) = stdin.as_mut() {
            if writeln!(s, "{line}").and_then(|_| s.flush()).is_err() {
                *stdin = None;
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.tell("quit");
        // Closing its stdin ends it too.
        self.stdin
            .lock()
            .expect("worker stdin lock poisoned")
            .take();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// The monotonic clock `Instant` reads, in nanoseconds (comparable across
/// processes of one host).
fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
}

/// Folds a worker's reports into the fleet (see [`Worker`]).
fn read_worker(
    stdout: std::process::ChildStdout,
    offset: usize,
    shared: &Shared,
    epoch: &AtomicU64,
    confirmed: &AtomicU64,
) {
    use std::io::BufRead;
    let (anchor, anchor_ns) = (Instant::now(), monotonic_ns());
    let mut last = [0u64; 12];
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_ascii_whitespace();
        let kind = words.next();
        let n: Vec<u64> = words.filter_map(|w| w.parse().ok()).collect();
        match (kind, n.as_slice()) {
            (Some("s"), v) if v.len() == last.len() => {
                let st = &shared.stats;
                let add = |a: &AtomicUsize, i: usize| {
                    a.fetch_add(v[i].wrapping_sub(last[i]) as usize, Ordering::Relaxed);
                };
                let add64 = |a: &AtomicU64, i: usize| {
                    a.fetch_add(v[i].wrapping_sub(last[i]), Ordering::Relaxed);
                };
                add(&st.enlisted, 0);
                add64(&st.heartbeats, 1);
                add64(&st.heartbeat_timeouts, 2);
                add64(&st.redirects, 3);
                add(&st.declared_crashed_alive, 4);
                add(&st.gone_after_leave, 5);
                add64(&st.regions_landed, 6);
                add64(&st.regions_refused, 7);
                add64(&st.region_bytes, 8);
                st.interval_us.store(v[9], Ordering::Relaxed);
                st.lease_us.store(v[10], Ordering::Relaxed);
                add64(&st.reconnects, 11);
                last.copy_from_slice(v);
            }
            (Some("r"), &[e]) => confirmed.store(e, Ordering::SeqCst),
            (Some("t"), &[i, tablets]) => {
                if let Some(t) = shared.tablets.get(offset + i as usize) {
                    t.store(tablets as usize, Ordering::Relaxed);
                }
            }
            (Some("l"), &[e, ns, i, before, after])
                if e == epoch.load(Ordering::SeqCst) && shared.recording.load(Ordering::SeqCst) =>
            {
                let at = match ns.checked_sub(anchor_ns) {
                    Some(d) => anchor + Duration::from_nanos(d),
                    None => anchor
                        .checked_sub(Duration::from_nanos(anchor_ns - ns))
                        .unwrap_or(anchor),
                };
                shared
                    .landings
                    .lock()
                    .expect("landings lock poisoned")
                    .push(Landing {
                        at,
                        endpoint: offset + i as usize,
                        tablets_before: before as usize,
                        tablets_after: after as usize,
                    });
            }
            _ => {}
        }
    }
}

/// `ramcoord-bench fleet-worker`: holds `cfg`'s endpoints in this process
/// and speaks the [`Worker`] protocol on stdin and stdout until told to
/// quit or its stdin closes.
pub fn worker_main(cfg: FleetConfig) -> Result<(), String> {
    ramcoord_net::admission::raise_descriptor_limit();
    let fleet = Fleet::start(FleetConfig {
        per_process: 0,
        ..cfg
    })?;
    let (tx, rx) = unbounded::<String>();
    std::thread::Builder::new()
        .name("fleet-worker-stdin".into())
        .spawn(move || {
            use std::io::BufRead;
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| format!("spawning the stdin reader: {e}"))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut tablets_sent = vec![0usize; fleet.len()];
    let mut landings_sent = 0;
    let mut epoch = 0u64;
    let (anchor, anchor_ns) = (Instant::now(), monotonic_ns());
    let report_every = Duration::from_millis(20);
    let mut next_report = Instant::now();
    loop {
        // Commands are acted on as they come: a leave's or crash's time is
        // measured from when the bench asks, so the wait for a command must
        // never be a sleep (a 20 ms sleep here once added 0-20 ms to every
        // recovery figure measured through a worker). Reports go every
        // 20 ms, and at once when a recording is confirmed.
        let mut lines = Vec::new();
        let mut quit = false;
        match rx.recv_timeout(next_report.saturating_duration_since(Instant::now())) {
            Ok(line) => lines.push(line),
            Err(crossbeam::channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam::channel::RecvTimeoutError::Disconnected) => quit = true,
        }
        while let Ok(line) = rx.try_recv() {
            lines.push(line);
        }
        let mut confirmations = String::new();
        for line in lines {
            let mut w = line.split_ascii_whitespace();
            match (w.next(), w.next().and_then(|v| v.parse::<u64>().ok())) {
                (Some("leave"), Some(i)) => fleet.leave(i as usize),
                (Some("crash"), Some(i)) => fleet.crash(i as usize),
                (Some("record"), Some(on)) => {
                    epoch = w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                    fleet.record(on == 1);
                    landings_sent = 0;
                    confirmations.push_str(&format!("r {epoch}\n"));
                }
                (Some("quit"), _) => quit = true,
                _ => {}
            }
        }
        if quit {
            break;
        }
        if confirmations.is_empty() && Instant::now() < next_report {
            continue;
        }
        next_report = Instant::now() + report_every;
        let st = fleet.stats();
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let ru = |a: &AtomicUsize| a.load(Ordering::Relaxed);
        let mut text = confirmations;
        text.push_str(&format!(
            "s {} {} {} {} {} {} {} {} {} {} {} {}\n",
            ru(&st.enlisted),
            r(&st.heartbeats),
            r(&st.heartbeat_timeouts),
            r(&st.redirects),
            ru(&st.declared_crashed_alive),
            ru(&st.gone_after_leave),
            r(&st.regions_landed),
            r(&st.regions_refused),
            r(&st.region_bytes),
            r(&st.interval_us),
            r(&st.lease_us),
            r(&st.reconnects),
        ));
        for (i, sent) in tablets_sent.iter_mut().enumerate() {
            let now = fleet.tablets_of(i);
            if now != *sent {
                *sent = now;
                text.push_str(&format!("t {i} {now}\n"));
            }
        }
        let landings = fleet.landings();
        for l in landings.iter().skip(landings_sent) {
            let ns = anchor_ns + l.at.saturating_duration_since(anchor).as_nanos() as u64;
            text.push_str(&format!(
                "l {epoch} {ns} {} {} {}\n",
                l.endpoint, l.tablets_before, l.tablets_after
            ));
        }
        landings_sent = landings.len();
        if out
            .write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .is_err()
        {
            break; // the bench is gone
        }
    }
    drop(fleet);
    Ok(())
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (tx, waker, _) in &self.shards {
            let _ = tx.send(Command::Shutdown);
            let _ = waker.wake();
        }
        for (_, _, h) in &mut self.shards {
            if let Some(h) = h.take() {
                let _ = h.join();
            }
        }
    }
}

const WAKER: Token = Token(usize::MAX);
/// Endpoint `e`'s listener is token `e * 2`, its client connection
/// `e * 2 + 1`; accepted push connections start here.
const PUSH_TOKENS: usize = 1 << 40;
/// One attempt at enlisting before it is sent again (same exactly-once
/// id, perhaps to another replica).
const ENLIST_ATTEMPT: Duration = Duration::from_secs(2);
/// Frames a push connection may leave unread before it is closed.
const PUSH_OUT_BYTES_MAX: usize = 1 << 20;

/// The loopback address of an endpoint's side `net` (1: client
/// connections, 2: listeners): 250 endpoints per address.
fn endpoint_ip(net: u8, number: usize) -> IpAddr {
    let block = number / 250;
    IpAddr::V4(Ipv4Addr::new(
        127,
        net,
        (block >> 8) as u8,
        (block & 255) as u8 + 1,
    ))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting its turn to enlist.
    Queued,
    Enlisting,
    Up,
    /// Asked to leave: heartbeats until told gone.
    Leaving,
    /// Crashed by the bench, or told gone: silent for good.
    Stopped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asked {
    Enlist,
    Heartbeat,
    Leave,
}

/// A connection's bytes both ways.
struct Conn {
    stream: TcpStream,
    dec: FrameDecoder,
    out: Vec<u8>,
    /// The peer's hello has been read.
    greeted: bool,
    /// An answer came on it.
    answered: bool,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            dec: FrameDecoder::new(),
            out: Vec::new(),
            greeted: false,
            answered: false,
        }
    }

    /// Queues `frame` and writes what the socket takes.
    fn send(&mut self, frame: &Frame) -> std::io::Result<()> {
        self.out.extend_from_slice(&frame.to_bytes());
        self.flush()
    }

    fn flush(&mut self) -> std::io::Result<()> {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The whole frames received so far; sets `failed` on bytes that are
    /// not a frame.
    fn frames(&mut self, failed: &mut bool) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            match self.dec.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => return frames,
                Err(_) => {
                    *failed = true;
                    return frames;
                }
            }
        }
    }

    /// Reads what the socket has; Err when it closed or failed.
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        loop {
            match self.stream.read(buf) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.dec.push(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

struct Endpoint {
    number: usize,
    nonce: u64,
    addr: SocketAddr,
    listener: Option<TcpListener>,
    agent: MasterAgent,
    phase: Phase,
    client: Option<Conn>,
    /// The replica its client connection goes to (index).
    replica: usize,
    /// A redirect's address (the leader's, not in the list given).
    redirect: Option<SocketAddr>,
    /// The request in flight: envelope id, when sent, what.
    pending: Option<(u64, Instant, Asked)>,
    next_envelope: u64,
    /// The enlistment's exactly-once id (kept across retries).
    enlist_seq: u64,
    interval: Duration,
    /// The leader has set `interval` (an answer carried one).
    paced: bool,
    /// Heartbeats in a row that went unanswered (each attempt's timeout
    /// doubles until the leader sets the pace; see `send_request`).
    unanswered: u32,
    /// When it acts next (the timer heap holds stale copies; this is the
    /// one that counts).
    due: Instant,
    left: bool,
    leave_accepted: bool,
}

struct PushConn {
    conn: Conn,
    /// The endpoint (local index) it writes into.
    endpoint: usize,
}

struct Shard {
    cluster: u64,
    coordinators: Vec<SocketAddr>,
    shared: Arc<Shared>,
    first: usize,
    poll: Poll,
    rx: Receiver<Command>,
    endpoints: Vec<Endpoint>,
    /// Number -> local index.
    local: HashMap<usize, usize>,
    timers: BinaryHeap<std::cmp::Reverse<(Instant, usize)>>,
    queued: VecDeque<usize>,
    enlisting: usize,
    enlist_in_flight_max: usize,
    push: HashMap<usize, PushConn>,
    next_push_token: usize,
    buf: Vec<u8>,
}

impl Shard {
    fn new(
        cfg: &FleetConfig,
        shared: Arc<Shared>,
        poll: Poll,
        rx: Receiver<Command>,
        numbers: &[usize],
    ) -> Result<Shard, String> {
        let mut endpoints = Vec::with_capacity(numbers.len());
        let mut local = HashMap::new();
        let now = Instant::now();
        for (li, &i) in numbers.iter().enumerate() {
            let number = cfg.first + i;
            let bind = SocketAddr::new(endpoint_ip(2, number), 0);
            let mut listener = TcpListener::bind(bind)
                .map_err(|e| format!("endpoint {number}: listening on {bind}: {e}"))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            poll.registry()
                .register(&mut listener, Token(li * 2), Interest::READABLE)
                .map_err(|e| e.to_string())?;
            let nonce = rand::random::<u64>() >> 2 | 1;
            endpoints.push(Endpoint {
                number: i,
                nonce,
                addr,
                listener: Some(listener),
                agent: MasterAgent::new(
                    MasterConfig::default(),
                    addr.to_string(),
                    services::MASTER,
                    nonce,
                    MasterBugs::default(),
                ),
                phase: Phase::Queued,
                client: None,
                replica: number % cfg.coordinators.len(),
                redirect: None,
                pending: None,
                next_envelope: 1,
                enlist_seq: 1,
                interval: cfg.heartbeat,
                paced: false,
                unanswered: 0,
                due: now,
                left: false,
                leave_accepted: false,
            });
            local.insert(i, li);
        }
        let queued = (0..endpoints.len()).collect();
        Ok(Shard {
            cluster: cfg.cluster,
            coordinators: cfg.coordinators.clone(),
            shared,
            first: cfg.first,
            poll,
            rx,
            endpoints,
            local,
            timers: BinaryHeap::new(),
            queued,
            enlisting: 0,
            enlist_in_flight_max: cfg.enlist_in_flight_max.max(1),
            push: HashMap::new(),
            next_push_token: PUSH_TOKENS,
            buf: vec![0u8; 64 << 10],
        })
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            self.admit_enlistments();
            let now = Instant::now();
            self.fire_timers(now);
            let timeout = self
                .timers
                .peek()
                .map(|std::cmp::Reverse((t, _))| t.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_millis(100))
                .min(Duration::from_millis(100));
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    eprintln!("fleet shard: poll failed: {e}");
                    return;
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    Token(t) if t >= PUSH_TOKENS => self.on_push_ready(t),
                    Token(t) if t % 2 == 0 => self.accept(t / 2),
                    Token(t) => self.on_client_ready(t / 2, ev.is_writable()),
                }
            }
            while let Ok(c) = self.rx.try_recv() {
                match c {
                    Command::Shutdown => return,
                    Command::Leave(n) => {
                        if let Some(&li) = self.local.get(&n) {
                            let e = &mut self.endpoints[li];
                            if e.phase == Phase::Up {
                                e.phase = Phase::Leaving;
                                e.left = true;
                                e.pending = None;
                                self.send_request(li, Asked::Leave);
                            }
                        }
                    }
                    Command::Crash(n) => {
                        if let Some(&li) = self.local.get(&n) {
                            self.stop_endpoint(li);
                        }
                    }
                }
            }
        }
    }

    fn schedule(&mut self, li: usize, at: Instant) {
        self.endpoints[li].due = at;
        self.timers.push(std::cmp::Reverse((at, li)));
    }

    fn admit_enlistments(&mut self) {
        while self.enlisting < self.enlist_in_flight_max {
            let Some(li) = self.queued.pop_front() else {
                return;
            };
            self.enlisting += 1;
            self.endpoints[li].phase = Phase::Enlisting;
            self.send_request(li, Asked::Enlist);
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(std::cmp::Reverse((t, li))) = self.timers.peek().copied() {
            if t > now {
                return;
            }
            self.timers.pop();
            if self.endpoints[li].due != t {
                continue; // rescheduled since
            }
            let e = &self.endpoints[li];
            match e.phase {
                Phase::Queued | Phase::Stopped => {}
                Phase::Enlisting => {
                    // Unanswered: the same operation again, at the next
                    // replica (after a redirect: at the replica named).
                    if self.endpoints[li].pending.is_some() {
                        self.rotate(li);
                    }
                    self.send_request(li, Asked::Enlist);
                }
                Phase::Up | Phase::Leaving => {
                    if self.endpoints[li].pending.is_some() {
                        // Unanswered (counted by `rotate`).
                        self.rotate(li);
                    }
                    // A leaving master asks until the leader accepts, then
                    // heartbeats until told it is gone (as `drain` does).
                    let e = &self.endpoints[li];
                    let asked = if e.phase == Phase::Leaving && !e.leave_accepted {
                        Asked::Leave
                    } else {
                        Asked::Heartbeat
                    };
                    self.send_request(li, asked);
                }
            }
        }
    }

    /// Drops the client connection; the next request goes to the next
    /// replica.
    fn rotate(&mut self, li: usize) {
        let n = self.coordinators.len();
        let e = &mut self.endpoints[li];
        if e.redirect.take().is_none() {
            e.replica = (e.replica + 1) % n;
        }
        let answered_before = e.client.as_ref().is_some_and(|c| c.answered);
        if let Some(mut c) = e.client.take() {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
        if e.pending.take().is_some_and(|(_, _, a)| a != Asked::Enlist) {
            // As the master process does: only a replica that answered
            // before and is slow now makes it wait longer.
            if answered_before {
                e.unanswered = e.unanswered.saturating_add(1);
            }
            // A heartbeat lost with its connection counts as unanswered.
            self.shared
                .stats
                .heartbeat_timeouts
                .fetch_add(1, Ordering::Relaxed);
        }
        self.shared.stats.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    fn connect(&mut self, li: usize) -> std::io::Result<()> {
        let e = &mut self.endpoints[li];
        let to = e.redirect.unwrap_or(self.coordinators[e.replica]);
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        let from = SocketAddr::new(endpoint_ip(1, self.first + e.number), 0);
        socket.bind(&from.into())?;
        match socket.connect(&to.into()) {
            Ok(()) => {}
            Err(err) if err.raw_os_error() == Some(EINPROGRESS) => {}
            Err(err) if err.kind() == ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
        let std_stream: std::net::TcpStream = socket.into();
        let mut stream = TcpStream::from_std(std_stream);
        self.poll.registry().register(
            &mut stream,
            Token(li * 2 + 1),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let mut conn = Conn::new(stream);
        // Queued now, written once the connection is up.
        conn.out.extend_from_slice(
            &Frame::Hello {
                peer: master_client_id(e.nonce),
                cluster: self.cluster,
            }
            .to_bytes(),
        );
        e.client = Some(conn);
        Ok(())
    }

    /// Sends the endpoint's next request (over a new connection if it has
    /// none) and sets its timer.
    fn send_request(&mut self, li: usize, asked: Asked) {
        let now = Instant::now();
        if self.endpoints[li].client.is_none() {
            if let Err(err) = self.connect(li) {
                self.shared.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing_free_log(&format!(
                    "endpoint {}: connecting: {err}",
                    self.endpoints[li].number
                ));
                // The next replica, after a pause.
                let n = self.coordinators.len();
                let e = &mut self.endpoints[li];
                if e.redirect.take().is_none() {
                    e.replica = (e.replica + 1) % n;
                }
                let retry = now + Duration::from_millis(200);
                self.schedule(li, retry);
                return;
            }
        }
        let e = &mut self.endpoints[li];
        let id = e.next_envelope;
        e.next_envelope += 1;
        let body = match asked {
            Asked::Enlist => ClientRequest::Operate(ClientOp {
                rpc: ramcoord::cluster::RpcId {
                    client: e.nonce,
                    seq: e.enlist_seq,
                    after: 0,
                },
                op: Request::Enlist {
                    addr: e.addr.to_string(),
                    services: services::MASTER,
                    nonce: e.nonce,
                },
            }),
            Asked::Heartbeat => ClientRequest::Heartbeat {
                from: e.agent.id().expect("up endpoints are enlisted"),
            },
            Asked::Leave => ClientRequest::Leave {
                server: e.agent.id().expect("leaving endpoints are enlisted"),
            },
        };
        let payload = encode(tag::CLIENT, id, &body);
        e.pending = Some((id, now, asked));
        let attempt = match asked {
            Asked::Enlist => ENLIST_ATTEMPT,
            // As the master process does (`heartbeat_attempt`).
            _ => ramcoord::master::process::heartbeat_attempt(e.interval, e.paced, e.unanswered),
        };
        let conn = e.client.as_mut().expect("connected above");
        let result = conn.send(&Frame::Message(payload));
        if result.is_err() {
            self.rotate(li);
        }
        self.schedule(li, now + attempt);
    }

    fn on_client_ready(&mut self, li: usize, writable: bool) {
        let Some(e) = self.endpoints.get_mut(li) else {
            return;
        };
        let Some(conn) = e.client.as_mut() else {
            return;
        };
        let mut failed = writable && conn.flush().is_err();
        if !failed {
            failed = conn.fill(&mut self.buf).is_err();
        }
        let frames = conn.frames(&mut failed);
        for f in frames {
            match f {
                Frame::Hello { cluster, .. } if cluster == self.cluster => {
                    if let Some(c) = self.endpoints[li].client.as_mut() {
                        c.greeted = true;
                    }
                }
                Frame::Message(payload) if payload.first() == Some(&tag::CLIENT_REPLY) => {
                    match decode::<ClientReply>(&payload[1..]) {
                        Ok(env) => self.on_reply(li, env.id, env.body),
                        Err(_) => failed = true,
                    }
                }
                _ => failed = true,
            }
        }
        if failed && self.endpoints[li].client.is_some() {
            // The request in flight is sent again at its timer, over a
            // new connection to the next replica.
            self.rotate(li);
        }
    }

    fn on_reply(&mut self, li: usize, id: u64, reply: ClientReply) {
        let e = &mut self.endpoints[li];
        if let Some(c) = e.client.as_mut() {
            c.answered = true;
        }
        let Some((pending, sent, asked)) = e.pending else {
            return;
        };
        if pending != id {
            return; // an answer to an attempt given up on
        }
        e.pending = None;
        let stats = &self.shared.stats;
        match reply {
            ClientReply::NotLeader { addr, .. } => {
                stats.redirects.fetch_add(1, Ordering::Relaxed);
                let to = addr.and_then(|a| a.parse::<SocketAddr>().ok());
                if let Some(mut c) = e.client.take() {
                    let _ = self.poll.registry().deregister(&mut c.stream);
                }
                e.redirect = None;
                match to.and_then(|a| self.coordinators.iter().position(|c| *c == a)) {
                    Some(i) => e.replica = i,
                    None => e.redirect = to,
                }
                if to.is_none() {
                    e.replica = (e.replica + 1) % self.coordinators.len();
                }
                // At once: the leader is known (or the next replica is
                // worth a try); a small pause when no one knows.
                let at = if to.is_some() {
                    Instant::now()
                } else {
                    Instant::now() + Duration::from_millis(50)
                };
                self.schedule(li, at);
            }
            ClientReply::Committed {
                result: OpResult::Enlisted(server),
                ..
            } if asked == Asked::Enlist => {
                e.agent.enlisted(server);
                e.phase = Phase::Up;
                let packed = (server.index as u64) << 32 | server.generation as u64;
                self.shared.ids[e.number].store(packed, Ordering::Relaxed);
                stats.enlisted.fetch_add(1, Ordering::Relaxed);
                self.enlisting -= 1;
                // The first heartbeat at once, as a master process does
                // (it has no lease until answered).
                self.schedule(li, Instant::now());
            }
            _ if asked == Asked::Enlist => {
                // Answered otherwise (refused, retry): a new operation
                // after a pause.
                e.enlist_seq += 1;
                let at = Instant::now() + Duration::from_millis(100);
                self.schedule(li, at);
            }
            ClientReply::HeartbeatAck {
                gone,
                interval_us,
                lease_us,
                ..
            } => {
                if gone {
                    if e.left {
                        stats.gone_after_leave.fetch_add(1, Ordering::Relaxed);
                    } else {
                        stats.declared_crashed_alive.fetch_add(1, Ordering::Relaxed);
                        tracing_free_log(&format!(
                            "endpoint {} (server {:?}) declared crashed while heartbeating",
                            e.number,
                            e.agent.id()
                        ));
                    }
                    self.stop_endpoint(li);
                    return;
                }
                stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                e.unanswered = 0;
                if interval_us > 0 {
                    e.paced = true;
                    e.interval = Duration::from_micros(interval_us.clamp(1_000, 60_000_000));
                    stats.interval_us.store(interval_us, Ordering::Relaxed);
                }
                stats.lease_us.store(lease_us, Ordering::Relaxed);
                // The next one an interval after this one left.
                let at = (sent + e.interval).max(Instant::now());
                self.schedule(li, at);
            }
            ClientReply::Leaving { accepted, why } => {
                // Accepted: heartbeats until told gone; refused: asked
                // again (the bench leaves a master only when others are up).
                e.leave_accepted |= accepted;
                if !accepted {
                    tracing_free_log(&format!(
                        "endpoint {}: leave refused: {}",
                        e.number,
                        why.unwrap_or_default()
                    ));
                }
                let at = Instant::now() + e.interval.min(Duration::from_millis(50));
                self.schedule(li, at);
            }
            _ => {
                let at = Instant::now() + e.interval;
                self.schedule(li, at);
            }
        }
    }

    fn stop_endpoint(&mut self, li: usize) {
        let e = &mut self.endpoints[li];
        if e.phase == Phase::Enlisting {
            self.enlisting -= 1;
        }
        if e.phase == Phase::Queued {
            self.queued.retain(|q| *q != li);
        }
        e.phase = Phase::Stopped;
        e.pending = None;
        if let Some(mut c) = e.client.take() {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
        if let Some(mut l) = e.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        let dead: Vec<usize> = self
            .push
            .iter()
            .filter(|(_, p)| p.endpoint == li)
            .map(|(t, _)| *t)
            .collect();
        for t in dead {
            if let Some(mut p) = self.push.remove(&t) {
                let _ = self.poll.registry().deregister(&mut p.conn.stream);
            }
        }
    }

    fn accept(&mut self, li: usize) {
        loop {
            let Some(listener) = self.endpoints.get(li).and_then(|e| e.listener.as_ref()) else {
                return;
            };
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let token = self.next_push_token;
                    self.next_push_token += 1;
                    if self
                        .poll
                        .registry()
                        .register(
                            &mut stream,
                            Token(token),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_ok()
                    {
                        self.push.insert(
                            token,
                            PushConn {
                                conn: Conn::new(stream),
                                endpoint: li,
                            },
                        );
                        // Data may have come with the connection.
                        self.on_push_ready(token);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // Out of descriptors, most likely: the backlog waits
                    // for the next connection's event.
                    tracing_free_log(&format!("accept: {e}"));
                    return;
                }
            }
        }
    }

    fn on_push_ready(&mut self, token: usize) {
        let Some(p) = self.push.get_mut(&token) else {
            return;
        };
        let mut failed = p.conn.flush().is_err() || p.conn.fill(&mut self.buf).is_err();
        let li = p.endpoint;
        let frames = p.conn.frames(&mut failed);
        for f in frames {
            let answer = match f {
                Frame::Hello { cluster, .. } if cluster == self.cluster && !p.conn.greeted => {
                    p.conn.greeted = true;
                    Frame::Hello {
                        peer: master_peer_id(self.endpoints[li].nonce),
                        cluster: self.cluster,
                    }
                }
                Frame::Write {
                    id,
                    region,
                    offset,
                    bytes,
                } if p.conn.greeted => {
                    let status = if region != CONFIG_REGION {
                        WriteStatus::NoSuchRegion
                    } else if offset != 0 {
                        WriteStatus::Refused("a configuration region is written whole".into())
                    } else {
                        let e = &mut self.endpoints[li];
                        let before = e.agent.config().map_or(0, |c| c.tablets.len());
                        let stats = &self.shared.stats;
                        stats
                            .region_bytes
                            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        match e.agent.on_region_write(&bytes) {
                            RegionOutcome::Applied { .. } => {
                                let after = e.agent.config().map_or(0, |c| c.tablets.len());
                                stats.regions_landed.fetch_add(1, Ordering::Relaxed);
                                self.shared.tablets[e.number].store(after, Ordering::Relaxed);
                                if self.shared.recording.load(Ordering::Relaxed) {
                                    self.shared
                                        .landings
                                        .lock()
                                        .expect("landings lock poisoned")
                                        .push(Landing {
                                            at: Instant::now(),
                                            endpoint: e.number,
                                            tablets_before: before,
                                            tablets_after: after,
                                        });
                                }
                                WriteStatus::Landed
                            }
                            RegionOutcome::Regressed { .. } => WriteStatus::Landed,
                            other => {
                                stats.regions_refused.fetch_add(1, Ordering::Relaxed);
                                WriteStatus::Refused(format!("{other:?}"))
                            }
                        }
                    };
                    Frame::WriteAck { id, status }
                }
                _ => {
                    failed = true;
                    break;
                }
            };
            if p.conn.send(&answer).is_err() || p.conn.out.len() > PUSH_OUT_BYTES_MAX {
                failed = true;
                break;
            }
        }
        if failed {
            if let Some(mut p) = self.push.remove(&token) {
                let _ = self.poll.registry().deregister(&mut p.conn.stream);
            }
        }
    }
}

/// Linux's `EINPROGRESS`: a non-blocking connect under way.
const EINPROGRESS: i32 = 115;

/// Fleet diagnostics go to stderr, at most a few a second (ten thousand
/// endpoints failing alike must not flood the terminal).
fn tracing_free_log(msg: &str) {
    static LAST: Mutex<Option<(Instant, u64)>> = Mutex::new(None);
    let mut last = LAST.lock().expect("log lock poisoned");
    let now = Instant::now();
    match *last {
        Some((at, n)) if now.duration_since(at) < Duration::from_millis(500) => {
            *last = Some((at, n + 1));
        }
        Some((_, n)) => {
            if n > 0 {
                eprintln!("fleet: ({n} more like the last not shown)");
            }
            eprintln!("fleet: {msg}");
            *last = Some((now, 0));
        }
        None => {
            eprintln!("fleet: {msg}");
            *last = Some((now, 0));
        }
    }
}
