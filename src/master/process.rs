//! The master process (`ramcoord master`): a [`MasterAgent`] behind the
//! TCP transport, its configuration region on TCP or RDMA.
//!
//! Three activities, each on its own thread (over TCP; RDMA below):
//!
//! - the transport's I/O threads apply coordinators' one-sided writes to
//!   the configuration region ([`CONFIG_REGION`]). The region is the agent
//!   itself: a write is decoded, fenced by term and acted on right there,
//!   under the agent's lock, without waking the worker (on RDMA the NIC
//!   writes memory and the fence is the queue pair's state; over TCP the
//!   receiving thread plays the NIC). A refused write is answered with the
//!   reason, which the coordinator logs;
//! - the worker serves clients' `get` / `put` ([`MasterRequest`]),
//!   refusing keys whose tablet this master does not own, and everything
//!   once its lease has run out (see [`super`]: a master cut off from the
//!   coordinators stops serving before they hand its tablets on);
//! - the main thread talks to the coordinator group: enlists (a random
//!   nonce makes a retried enlistment recognisable), then heartbeats the
//!   active coordinator; each acknowledged heartbeat extends the lease
//!   from the moment it was sent. Told it was declared crashed, the
//!   process stops: a restarted process enlists as a new server.
//!
//! Times are `CLOCK_BOOTTIME` nanoseconds ([`boottime_ns`]), also
//! what the serve log ([`super::serve_log`], `--serve-log`) records.
//!
//! # Over RDMA (`--transport rdma`)
//!
//! The region is registered memory the coordinator's NIC writes; no code
//! runs when a write lands. A watcher thread, and the worker before each
//! request, read the region's header without a lock and, when it changed,
//! the whole region, and hand it to the agent, which acts only on a region
//! that checks out (a torn read — a write landing mid-copy — fails the
//! checksum and is read again later). Fencing is the queue pair: the
//! master lets one coordinator at a time connect to it (the leader of the
//! newest term its heartbeats were answered by); granting a newer leader
//! first moves the older one's queue pair to the error state, so a deposed
//! leader's later writes fail at its NIC and never reach this memory.
//! Clients and the coordinators' answers stay on TCP.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ramcoord_net::tcp::{TcpConfig, TcpTransport};
use ramcoord_net::{Event, Region, Transport, WriteRefused};

use super::serve_log::{boottime_ns, ServeLog, ServeWhat};
use super::{MasterAgent, MasterBugs, MasterConfig, RegionOutcome};
use crate::client::CoordinatorClient;
use crate::cluster::{limits, services, ServerId};
use crate::coordinator::Request;
use crate::protocol::{
    decode, encode, ClientReply, ClientRequest, MasterReply, MasterRequest, OpResult,
};
use crate::protocol::{master_client_id, master_peer_id, tag, CONFIG_REGION};
use crate::transport::TransportKind;

/// How a master process runs.
#[derive(Clone, Debug)]
pub struct MasterProcessConfig {
    /// Where to listen for coordinators' writes and clients.
    pub listen: SocketAddr,
    /// The address enlisted (what coordinators and clients dial); default:
    /// the listening address.
    pub advertise: Option<SocketAddr>,
    /// Coordinator replicas (any subset of the group).
    pub coordinators: Vec<SocketAddr>,
    /// Cluster id.
    pub cluster: u64,
    /// How often to heartbeat the active coordinator.
    pub heartbeat: Duration,
    /// Where the configuration region lives (TCP: applied by the I/O
    /// thread; RDMA: registered memory, see the module docs).
    pub transport: TransportKind,
    /// RDMA only: how often the watcher thread looks at the region between
    /// requests. Every request looks first whatever this is, so it only
    /// sets how soon a change is noticed while no request comes (logs,
    /// metrics, a crash declaration); each look is a wake-up.
    pub region_poll: Duration,
    /// The master credential (`None`: plain TCP, `--insecure`).
    pub tls: Option<ramcoord_net::tls::Tls>,
    /// Where to record what it serves when (see [`super::serve_log`]).
    pub serve_log: Option<std::path::PathBuf>,
    /// Planted bugs (only `ramcoord chaos` sets them).
    pub bugs: MasterBugs,
    /// Serve `/metrics`, `/health`, `/ready` here ([`crate::http`]);
    /// HTTPS with this credential, if one.
    pub http: Option<(SocketAddr, Option<ramcoord_net::tls::Tls>)>,
    /// Set to stop: the master drains (see [`drain`]) and [`run`] returns.
    pub stop: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// How long a drain may take before the master stops anyway.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Why the master process stopped.
#[derive(Debug, thiserror::Error)]
pub enum MasterExit {
    /// The coordinator declared this server crashed (it was silent too
    /// long): it must not serve again; start a new process.
    #[error(
        "declared crashed by the coordinator as server {0}; a new process enlists as a new server"
    )]
    DeclaredCrashed(ServerId),
    /// It could not start.
    #[error("{0}")]
    Start(String),
}

/// The configuration region: the agent, fenced, applied on the I/O path.
struct ConfigRegionSlot {
    agent: Arc<Mutex<MasterAgent>>,
    serve_log: Option<Arc<ServeLog>>,
}

impl Region for ConfigRegionSlot {
    fn len(&self) -> u64 {
        limits::REGION_BYTES_MAX as u64
    }

    fn write(&self, offset: u64, bytes: &[u8]) -> Result<(), WriteRefused> {
        if offset != 0 {
            return Err(WriteRefused(
                "a configuration region is written whole, at offset 0".into(),
            ));
        }
        let mut agent = self.agent.lock().expect("agent lock poisoned");
        let outcome = agent.on_region_write(bytes);
        log_outcome(&agent, outcome, self.serve_log.as_deref())
    }
}

/// Logs what became of a region (and, in the serve log, the tablets it
/// now owns); `Err` with the reason if it was refused.
fn log_outcome(
    agent: &MasterAgent,
    outcome: RegionOutcome,
    serve_log: Option<&ServeLog>,
) -> Result<(), WriteRefused> {
    {
        match outcome {
            RegionOutcome::Applied { version } => {
                let c = agent.config().expect("just applied");
                if let (Some(log), Some(id)) = (serve_log, agent.id()) {
                    let tablets = c
                        .tablets
                        .iter()
                        .map(|t| (t.table, t.start_hash, t.end_hash))
                        .collect();
                    log.record(boottime_ns(), id, ServeWhat::Tablets { version, tablets });
                }
                tracing::info!(
                    version,
                    term = c.term,
                    tablets = c.tablets.len(),
                    "configuration applied"
                );
                Ok(())
            }
            RegionOutcome::Regressed { version, acted } => {
                if let (Some(log), Some(id)) = (serve_log, agent.id()) {
                    let tablets = Vec::new(); // it stops serving
                    log.record(boottime_ns(), id, ServeWhat::Tablets { version, tablets });
                }
                tracing::warn!(
                    version,
                    acted,
                    "configuration went back: not serving until a newer one lands"
                );
                Ok(())
            }
            RegionOutcome::StaleTerm { term, seen } => {
                tracing::warn!(term, seen, "fenced a write from a deposed coordinator");
                Err(WriteRefused(format!(
                    "fenced: term {term} is older than {seen}"
                )))
            }
            RegionOutcome::NotMine => Err(WriteRefused("the region names another server".into())),
            RegionOutcome::Invalid(e) => Err(WriteRefused(format!("invalid region: {e}"))),
        }
    }
}

/// Reads a configuration region in registered memory (RDMA) and hands it
/// to the agent when its header changed (see the module docs).
#[cfg(feature = "rdma")]
struct RegionWatcher {
    mem: Arc<ramcoord_net::rdma::RegionMemory>,
    /// The header last acted on (or refused): not read again until it
    /// changes.
    seen: [u8; 32],
    /// Copies that did not check out (a write was landing).
    torn: u64,
}

#[cfg(feature = "rdma")]
impl RegionWatcher {
    fn sync(&mut self, agent: &Mutex<MasterAgent>, serve_log: Option<&ServeLog>) {
        let mut header = [0u8; 32];
        self.mem.read_at(0, &mut header);
        if header == self.seen || header == [0u8; 32] {
            return;
        }
        let body = u32::from_le_bytes(header[24..28].try_into().expect("4 bytes")) as usize;
        let len = (32 + body).min(self.mem.len());
        let mut bytes = vec![0u8; len];
        self.mem.read_at(0, &mut bytes);
        let mut agent = agent.lock().expect("agent lock poisoned");
        match agent.on_region_write(&bytes) {
            RegionOutcome::Invalid(e) => {
                // Torn (a write is landing) or garbage: never acted on;
                // read again at the next look.
                self.torn += 1;
                tracing::debug!(error = %e, torn = self.torn, "region did not check out; reading again");
            }
            outcome => {
                self.seen = header;
                let _ = log_outcome(&agent, outcome, serve_log);
            }
        }
    }
}

/// Runs a master until it is declared crashed (see the module docs).
pub fn run(cfg: MasterProcessConfig) -> Result<(), MasterExit> {
    let nonce = rand::random::<u64>() | (1 << 63);
    let mut tcp = TcpConfig::new(master_peer_id(nonce), cfg.cluster, cfg.listen);
    tcp.backoff_max = Duration::from_millis(200);
    tcp.tls = cfg.tls.clone();
    // Over RDMA, the coordinators' connections are admitted only with a
    // pass the TCP side issued them after checking their certificates.
    let passes = matches!(cfg.transport, TransportKind::Rdma).then(|| {
        Arc::new(ramcoord_net::rdma_pass::PassBook::new(
            cfg.cluster,
            master_peer_id(nonce),
        ))
    });
    tcp.passes = passes.clone();
    let transport = TcpTransport::start(tcp).map_err(|e| MasterExit::Start(e.to_string()))?;
    let advertise = cfg.advertise.unwrap_or(transport.local_addr());
    if advertise.ip().is_unspecified() {
        return Err(MasterExit::Start(format!(
            "listening on {advertise}: say which address others dial with --advertise"
        )));
    }
    let agent = Arc::new(Mutex::new(MasterAgent::new(
        MasterConfig::default(),
        advertise.to_string(),
        services::MASTER,
        nonce,
        cfg.bugs,
    )));
    let serve_log = match &cfg.serve_log {
        Some(path) => Some(Arc::new(ServeLog::create(path).map_err(|e| {
            MasterExit::Start(format!("serve log {}: {e}", path.display()))
        })?)),
        None => None,
    };
    if cfg.bugs.ignore_lease {
        tracing::warn!("PLANTED BUG: serving without a lease (a test of the chaos checker)");
    }
    // Before each request the worker brings the region up to date (RDMA:
    // the NIC may have written it since the watcher last looked).
    #[cfg_attr(not(feature = "rdma"), allow(unused_mut))]
    let mut sync: Box<dyn FnMut() + Send> = Box::new(|| {});
    #[cfg(feature = "rdma")]
    let mut rdma = None;
    match cfg.transport {
        TransportKind::Tcp => transport.register_region(
            CONFIG_REGION,
            Arc::new(ConfigRegionSlot {
                agent: agent.clone(),
                serve_log: serve_log.clone(),
            }),
        ),
        #[cfg(not(feature = "rdma"))]
        TransportKind::Rdma => {
            return Err(MasterExit::Start(
                crate::transport::RdmaUnavailable::NotBuilt.to_string(),
            ))
        }
        #[cfg(feature = "rdma")]
        TransportKind::Rdma => {
            use ramcoord_net::rdma_transport::{RdmaConfig, RdmaTransport};
            let mut r = RdmaConfig::new(master_peer_id(nonce), cfg.cluster, cfg.listen);
            r.regions = vec![(CONFIG_REGION, limits::REGION_BYTES_MAX)];
            r.ring_bytes = 4096; // nothing is sent to a master over RDMA
            r.exclusive_writer = true;
            r.passes = passes;
            let t = RdmaTransport::start(r).map_err(|e| MasterExit::Start(e.to_string()))?;
            let watcher = Arc::new(Mutex::new(RegionWatcher {
                mem: t.region(CONFIG_REGION).expect("declared"),
                seen: [0; 32],
                torn: 0,
            }));
            let (w, a, l) = (watcher.clone(), agent.clone(), serve_log.clone());
            let region_poll = cfg.region_poll.max(Duration::from_micros(50));
            std::thread::Builder::new()
                .name("region-watcher".into())
                .spawn(move || loop {
                    w.lock()
                        .expect("watcher lock poisoned")
                        .sync(&a, l.as_deref());
                    std::thread::sleep(region_poll);
                })
                .map_err(|e| MasterExit::Start(e.to_string()))?;
            let (a, l) = (agent.clone(), serve_log.clone());
            sync = Box::new(move || {
                watcher
                    .lock()
                    .expect("watcher lock poisoned")
                    .sync(&a, l.as_deref())
            });
            tracing::info!(listen = %cfg.listen, "configuration region in RDMA memory");
            rdma = Some(t);
        }
    }
    let observed = crate::http::master::MasterObserved::new(agent.clone());
    if let Some((addr, tls)) = cfg.http.clone() {
        let o = observed.clone();
        let https = tls.is_some();
        let bound = crate::http::serve(addr, tls, Box::new(move |path| o.route(path)))
            .map_err(|e| MasterExit::Start(e.to_string()))?;
        tracing::info!(address = %bound, scheme = if https { "https" } else { "http" }, "HTTP endpoint: /metrics /health /ready");
    }
    observed.loop_seen.touch();
    let worker_agent = agent.clone();
    let worker_log = serve_log.clone();
    std::thread::Builder::new()
        .name("master-worker".into())
        .spawn(move || serve_clients(transport, worker_agent, sync, worker_log))
        .map_err(|e| MasterExit::Start(e.to_string()))?;

    let mut coord = CoordinatorClient::new(
        cfg.coordinators.clone(),
        cfg.cluster,
        crate::client::ClientSecurity {
            tls: cfg.tls.clone(),
            admin: false,
        },
    );
    // Enlisted and heard as a master (the class its credential admits),
    // under an id of its own: answers to it must not go to the transport,
    // where the coordinator pushes.
    coord.set_peer_id(master_client_id(nonce));
    coord.attempt_timeout = Duration::from_millis(500);
    let Some(id) = enlist(&mut coord, advertise, nonce, cfg.stop.as_deref()) else {
        return Ok(());
    };
    agent.lock().expect("agent lock poisoned").enlisted(id);
    tracing::info!(%id, %advertise, "enlisted");
    // The leader sets the pace from its first answer on (it slows
    // heartbeats as the cluster grows); `--heartbeat-ms` until then.
    let mut heartbeat = cfg.heartbeat;
    let (mut paced, mut unanswered) = (false, 0u32);
    coord.attempt_timeout = heartbeat_attempt(heartbeat, paced, unanswered);
    let mut next = Instant::now();
    // The first heartbeat goes at once: until its answer this master has
    // no lease (it serves nothing) and, over RDMA, has granted the leader
    // no write access (every push to it is refused and sent again).
    let mut first = true;
    #[cfg(feature = "rdma")]
    let mut granted_term = 0u64;
    loop {
        if cfg
            .stop
            .as_ref()
            .is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed))
        {
            drain(&mut coord, &agent, id, &observed);
            return Ok(());
        }
        if !std::mem::take(&mut first) {
            next += heartbeat;
            // Slept in slices: a stop signal must not wait out a slow pace.
            if !sleep_until_or_stopped(next, cfg.stop.as_deref()) {
                continue;
            }
        }
        if next < Instant::now() {
            next = Instant::now();
        }
        // Two intervals for the heartbeat (at least one attempt), each
        // replica tried for one attempt at most (`heartbeat_attempt`).
        coord.attempt_timeout = heartbeat_attempt(heartbeat, paced, unanswered);
        let deadline = Instant::now() + (heartbeat * 2).max(coord.attempt_timeout);
        // The lease counts from before the heartbeat leaves.
        let sent = boottime_ns();
        let answer = coord.ask_leader(&ClientRequest::Heartbeat { from: id }, deadline);
        observed.loop_seen.touch();
        match &answer {
            Ok(ClientReply::HeartbeatAck { gone: false, .. }) => {
                observed.heartbeats.inc();
                unanswered = 0;
            }
            _ => {
                observed.heartbeat_failures.inc();
                // Only a replica that answered before and is slow now
                // (overloaded) is a reason to wait longer; one that is
                // down or unreachable is not (the next leader must be
                // found within the master timeout).
                if coord.last_failure_was_slow() {
                    unanswered = unanswered.saturating_add(1);
                }
            }
        };
        if let Ok(ClientReply::HeartbeatAck {
            gone: false,
            interval_us,
            lease_us,
            ..
        }) = &answer
        {
            // 0: no advice (keep the pace).
            let advised = match interval_us {
                0 => heartbeat,
                us => advised_heartbeat(*us),
            };
            paced |= *interval_us > 0;
            if advised != heartbeat {
                tracing::info!(
                    from_ms = heartbeat.as_millis() as u64,
                    to_ms = advised.as_millis() as u64,
                    "the leader sets the heartbeat interval"
                );
                heartbeat = advised;
            }
            let mut a = agent.lock().expect("agent lock poisoned");
            let had = a.lease_until();
            a.lease_granted(sent, lease_us.saturating_mul(1000));
            let until = a.lease_until();
            drop(a);
            if had != 0 && had <= sent {
                tracing::info!(
                    lapsed_ms = (sent - had) / 1_000_000,
                    "lease regained: serving again"
                );
            }
            if let Some(log) = &serve_log {
                log.record(sent, id, ServeWhat::Lease { until });
            }
        }
        match answer {
            Ok(ClientReply::HeartbeatAck { gone: true, .. }) => {
                // Stop serving now, not when the process is gone.
                agent.lock().expect("agent lock poisoned").revoke_lease();
                return Err(MasterExit::DeclaredCrashed(id));
            }
            #[cfg(feature = "rdma")]
            Ok(ClientReply::HeartbeatAck {
                leader: Some(leader),
                term,
                ..
            }) => {
                // A newer leader: it alone may write the region from now on
                // (the older one is revoked first).
                if let Some(t) = rdma.as_ref().filter(|_| term > granted_term) {
                    match t.grant_writes(leader) {
                        Ok(revoked) => {
                            granted_term = term;
                            tracing::info!(
                                leader,
                                term,
                                revoked,
                                "configuration writes granted to the leader"
                            );
                        }
                        Err(e) => {
                            tracing::error!(leader, error = %e, "could not revoke the older leader")
                        }
                    }
                }
            }
            Ok(ClientReply::HeartbeatAck { .. }) => {}
            Ok(other) => {
                tracing::warn!(answer = %other.describe(), "unexpected answer to a heartbeat")
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat not delivered"),
        }
        if agent.lock().expect("agent lock poisoned").declared_dead() {
            agent.lock().expect("agent lock poisoned").revoke_lease();
            return Err(MasterExit::DeclaredCrashed(id));
        }
    }
}

/// A graceful stop: first stop serving (give up the lease), then ask the
/// active coordinator to hand this server's tablets to the other masters
/// (it declares the server crashed at once, instead of after its master
/// timeout), and wait until it says the server is gone: the new owners
/// have the tablets' ownership. Stopping to serve comes first so that no
/// key is ever served by two masters. Bounded by [`DRAIN_LIMIT`]; a drain
/// refused (no other master up) or not finished in time is logged, and
/// the master stops anyway (its tablets then move when the coordinator
/// times it out, as for a crash).
pub fn drain(
    coord: &mut CoordinatorClient,
    agent: &Mutex<MasterAgent>,
    id: ServerId,
    observed: &crate::http::master::MasterObserved,
) {
    agent.lock().expect("agent lock poisoned").revoke_lease();
    tracing::info!(%id, "asked to stop: stopped serving; asking the coordinator to move this server's tablets");
    let deadline = Instant::now() + DRAIN_LIMIT;
    let mut asked_at: Option<Instant> = None;
    while Instant::now() < deadline {
        // Alive while draining (`/health`).
        observed.loop_seen.touch();
        let step = Instant::now() + Duration::from_millis(500);
        // Asked again every half second: a new leader does not know.
        if asked_at.is_none_or(|t| t.elapsed() >= Duration::from_millis(500)) {
            match coord.ask_leader(&ClientRequest::Leave { server: id }, step) {
                Ok(ClientReply::Leaving { accepted: true, .. }) => {
                    if asked_at.is_none() {
                        tracing::info!(%id, "the coordinator is moving this server's tablets");
                    }
                    asked_at = Some(Instant::now());
                }
                Ok(ClientReply::Leaving { why, .. }) => {
                    tracing::warn!(%id, why = why.as_deref().unwrap_or(""), "drain refused; stopping without it (the coordinator moves the tablets after its master timeout)");
                    return;
                }
                Ok(ClientReply::Refused(why)) => {
                    tracing::warn!(%id, why, "drain refused; stopping without it");
                    return;
                }
                Ok(_) | Err(_) => {}
            }
        }
        if let Ok(ClientReply::HeartbeatAck { gone: true, .. }) =
            coord.ask_leader(&ClientRequest::Heartbeat { from: id }, step)
        {
            tracing::info!(%id, "drained: its tablets belong to other masters now; stopping");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::warn!(%id, limit_s = DRAIN_LIMIT.as_secs(), "drain not finished in time; stopping anyway (the coordinator moves the tablets after its master timeout)");
}

/// Asks the active coordinator to enlist this process until it answers:
/// one operation (one exactly-once id) sent again until answered; the
/// nonce makes even a new id's retry recognisable.
/// `None` if `stop` was set first.
fn enlist(
    coord: &mut CoordinatorClient,
    advertise: SocketAddr,
    nonce: u64,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> Option<ServerId> {
    let req = Request::Enlist {
        addr: advertise.to_string(),
        services: services::MASTER,
        nonce,
    };
    let mut rpc = coord.next_rpc(Instant::now() + Duration::from_secs(2));
    loop {
        if stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed)) {
            // If an attempt did enlist a server, the coordinator declares
            // it crashed when it never heartbeats.
            tracing::info!("asked to stop before enlisting; stopping");
            return None;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        match coord.operate(rpc, req.clone(), false, deadline) {
            Ok(ClientReply::Committed {
                result: OpResult::Enlisted(id),
                ..
            }) => return Some(id),
            Ok(other) => {
                // Answered (refused, rejected, unknown): that operation is
                // over; the next attempt is a new one.
                tracing::warn!(answer = %other.describe(), "enlistment not done; retrying");
                rpc = coord.next_rpc(deadline);
            }
            // Perhaps not delivered: the same operation again.
            Err(e) => tracing::warn!(error = %e, "enlistment not answered; retrying"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Until the leader sets the heartbeat pace, an unanswered heartbeat's
/// next attempt waits twice as long, up to this.
pub const UNPACED_ATTEMPT_MAX: Duration = Duration::from_millis(3_200);

/// How long one replica is given to answer a heartbeat: 200 ms, or one
/// interval once the pace is slower than that, and never more than four
/// intervals. The master timeout is at least four intervals, so a master
/// whose leader went silent (no reset, just nothing) gives up on it and
/// finds the next leader in time; at the default pace (50 ms) this is
/// the 200 ms it always was.
///
/// Until a leader's answer has set the pace (`paced`), each heartbeat in
/// a row that went unanswered (`unanswered`) by a replica that had
/// answered this master before doubles that, up to
/// [`UNPACED_ATTEMPT_MAX`]. (Only those: a replica that is down or cut
/// off never answered on its connection, and a master that backed off
/// from it could miss a new leader's master timeout, 500 ms in a small
/// cluster.) Why: the pace a master starts at
/// (`--heartbeat-ms`, 50 ms) suits a small cluster, and only the leader
/// knows the cluster is large. When thousands of masters enlist at once,
/// their first heartbeats queue behind one another at the leader for
/// longer than an attempt; without the doubling each master gave up,
/// reconnected to the next replica and asked again every 200 ms, and
/// that storm (measured: 10,000 masters, 90,000 reconnections in 10 s)
/// kept the answers that would have slowed them from ever arriving in
/// time, and starved the group of CPU until it lost its leader.
pub fn heartbeat_attempt(interval: Duration, paced: bool, unanswered: u32) -> Duration {
    let base = interval.max(Duration::from_millis(200)).min(interval * 4);
    if paced {
        return base;
    }
    base.saturating_mul(1 << unanswered.min(5))
        .min(UNPACED_ATTEMPT_MAX)
        .max(base)
}

/// Sleeps until `until`, in slices of at most 50 ms; false if `stop` was
/// set meanwhile (the caller drains at once).
fn sleep_until_or_stopped(until: Instant, stop: Option<&std::sync::atomic::AtomicBool>) -> bool {
    loop {
        if stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed)) {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

/// The heartbeat interval a leader's answer asks for, kept within 1 ms
/// and 60 s (an answer is trusted, but a value past these would stop
/// heartbeats or overflow a deadline).
fn advised_heartbeat(interval_us: u64) -> Duration {
    Duration::from_micros(interval_us.clamp(1_000, 60_000_000))
}

/// The worker: clients' reads and writes.
fn serve_clients(
    transport: TcpTransport,
    agent: Arc<Mutex<MasterAgent>>,
    mut sync: Box<dyn FnMut() + Send>,
    serve_log: Option<Arc<ServeLog>>,
) {
    let mut rejected = 0u64;
    // Lease refusals are logged once per lapse, not per request.
    let mut lease_lapse_logged = 0u64;
    while let Ok(ev) = transport.events().recv() {
        let Event::Message { from, payload } = ev else {
            continue;
        };
        if payload.first() != Some(&tag::MASTER) {
            rejected += 1;
            tracing::warn!(from, rejected, "message with an unknown tag dropped");
            continue;
        }
        let env = match decode::<MasterRequest>(&payload[1..]) {
            Ok(env) => env,
            Err(e) => {
                rejected += 1;
                tracing::warn!(from, rejected, error = %e, "malformed request dropped");
                continue;
            }
        };
        // Readers get; admins also put (with TLS the class is proven by
        // the certificate).
        if matches!(env.body, MasterRequest::Put { .. })
            && !matches!(
                ramcoord_net::tls::PeerClass::of(from),
                ramcoord_net::tls::PeerClass::Admin
            )
        {
            rejected += 1;
            tracing::warn!(from, rejected, "put refused: it needs the admin role");
            let reply = MasterReply::Refused("a put needs the admin role".into());
            transport.send(from, encode(tag::MASTER_REPLY, env.id, &reply));
            continue;
        }
        sync();
        let reply = {
            let mut a = agent.lock().expect("agent lock poisoned");
            let now = boottime_ns();
            let (f, table, hash, result) = match env.body {
                MasterRequest::Get { table, key } => (
                    "get",
                    table,
                    crate::cluster::key_hash(&key),
                    a.get(table, &key, now).map(MasterReply::Value),
                ),
                MasterRequest::Put { table, key, value } => (
                    "put",
                    table,
                    crate::cluster::key_hash(&key),
                    a.put(table, &key, Bytes::copy_from_slice(&value), now)
                        .map(|()| MasterReply::Stored),
                ),
            };
            match result {
                Ok(reply) => {
                    if let (Some(log), Some(id)) = (&serve_log, a.id()) {
                        let f = f.to_string();
                        log.record(now, id, ServeWhat::Served { f, table, hash });
                    }
                    reply
                }
                Err(e) => {
                    if let super::MasterError::NoLease { expired, .. } = e {
                        if expired != lease_lapse_logged {
                            lease_lapse_logged = expired;
                            tracing::warn!(
                                "lease expired (no heartbeat acknowledged in time): refusing requests until the coordinator answers"
                            );
                        }
                    }
                    MasterReply::NotOwner(e.to_string())
                }
            }
        };
        transport.send(from, encode(tag::MASTER_REPLY, env.id, &reply));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A master's attempt at a heartbeat: one interval within 200 ms and
    /// four intervals; doubling per unanswered heartbeat only until the
    /// leader has set the pace, and never past `UNPACED_ATTEMPT_MAX`.
    #[test]
    fn heartbeat_attempts_back_off_only_until_the_leader_sets_the_pace() {
        let ms = Duration::from_millis;
        assert_eq!(heartbeat_attempt(ms(50), false, 0), ms(200));
        assert_eq!(heartbeat_attempt(ms(50), false, 1), ms(400));
        assert_eq!(heartbeat_attempt(ms(50), false, 3), ms(1_600));
        assert_eq!(heartbeat_attempt(ms(50), false, 9), UNPACED_ATTEMPT_MAX);
        assert_eq!(
            heartbeat_attempt(ms(50), false, u32::MAX),
            UNPACED_ATTEMPT_MAX
        );
        // Paced: the leader's interval rules, unanswered or not (the
        // master timeout is four intervals).
        assert_eq!(heartbeat_attempt(ms(50), true, 5), ms(200));
        assert_eq!(heartbeat_attempt(ms(2_000), true, 5), ms(2_000));
        assert_eq!(heartbeat_attempt(ms(10), true, 0), ms(40));
        // A slow pace set by hand is not shortened by the cap.
        assert_eq!(heartbeat_attempt(ms(5_000), false, 3), ms(5_000));
    }
}
