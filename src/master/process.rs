//! The master process (`ramcoord master`): a [`MasterAgent`] behind the
//! TCP transport.
//!
//! Three activities, each on its own thread:
//!
//! - the transport's I/O threads apply coordinators' one-sided writes to
//!   the configuration region ([`CONFIG_REGION`]). The region is the agent
//!   itself: a write is decoded, fenced by term and acted on right there,
//!   under the agent's lock, without waking the worker (on RDMA the NIC
//!   writes memory and the fence is the queue pair's state; over TCP the
//!   receiving thread plays the NIC). A refused write is answered with the
//!   reason, which the coordinator logs;
//! - the worker serves clients' `get` / `put` ([`MasterRequest`]),
//!   refusing keys whose tablet this master does not own;
//! - the main thread talks to the coordinator group: enlists (a random
//!   nonce makes a retried enlistment recognisable), then heartbeats the
//!   active coordinator. Told it was declared crashed, the process stops:
//!   a restarted process enlists as a new server.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ramcoord_net::tcp::{TcpConfig, TcpTransport};
use ramcoord_net::{Event, Region, Transport};

use super::{MasterAgent, MasterBugs, MasterConfig, RegionOutcome};
use crate::client::CoordinatorClient;
use crate::cluster::{limits, services, ServerId};
use crate::coordinator::Request;
use crate::node::client::{
    decode, encode, ClientReply, ClientRequest, MasterReply, MasterRequest, OpResult,
};
use crate::node::{master_peer_id, tag, CONFIG_REGION};

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
}

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
}

impl Region for ConfigRegionSlot {
    fn len(&self) -> u64 {
        limits::REGION_BYTES_MAX as u64
    }

    fn write(&self, offset: u64, bytes: &[u8]) -> Result<(), String> {
        if offset != 0 {
            return Err("a configuration region is written whole, at offset 0".into());
        }
        let mut agent = self.agent.lock().expect("agent lock poisoned");
        match agent.on_region_write(bytes) {
            RegionOutcome::Applied { version } => {
                let c = agent.config().expect("just applied");
                tracing::info!(
                    version,
                    term = c.term,
                    tablets = c.tablets.len(),
                    "configuration applied"
                );
                Ok(())
            }
            RegionOutcome::Regressed { version, acted } => {
                tracing::warn!(
                    version,
                    acted,
                    "configuration went back: not serving until a newer one lands"
                );
                Ok(())
            }
            RegionOutcome::StaleTerm { term, seen } => {
                tracing::warn!(term, seen, "fenced a write from a deposed coordinator");
                Err(format!("fenced: term {term} is older than {seen}"))
            }
            RegionOutcome::NotMine => Err("the region names another server".into()),
            RegionOutcome::Invalid(e) => Err(format!("invalid region: {e}")),
        }
    }
}

/// Runs a master until it is declared crashed (see the module docs).
pub fn run(cfg: MasterProcessConfig) -> Result<(), MasterExit> {
    let nonce = rand::random::<u64>() | (1 << 63);
    let mut tcp = TcpConfig::new(master_peer_id(nonce), cfg.cluster, cfg.listen);
    tcp.backoff_max = Duration::from_millis(200);
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
        MasterBugs::default(),
    )));
    transport.register_region(
        CONFIG_REGION,
        Arc::new(ConfigRegionSlot {
            agent: agent.clone(),
        }),
    );
    let worker_agent = agent.clone();
    std::thread::Builder::new()
        .name("master-worker".into())
        .spawn(move || serve_clients(transport, worker_agent))
        .map_err(|e| MasterExit::Start(e.to_string()))?;

    let mut coord = CoordinatorClient::new(cfg.coordinators.clone(), cfg.cluster);
    coord.attempt_timeout = Duration::from_millis(500);
    let id = enlist(&mut coord, advertise, nonce);
    agent.lock().expect("agent lock poisoned").enlisted(id);
    tracing::info!(%id, %advertise, "enlisted");
    coord.attempt_timeout = cfg.heartbeat.max(Duration::from_millis(20)) * 4;
    let mut next = Instant::now();
    loop {
        next += cfg.heartbeat;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
        let deadline = Instant::now() + cfg.heartbeat * 4;
        match coord.ask_leader(&ClientRequest::Heartbeat { from: id }, deadline) {
            Ok(ClientReply::HeartbeatAck { gone: true, .. }) => {
                return Err(MasterExit::DeclaredCrashed(id));
            }
            Ok(ClientReply::HeartbeatAck { .. }) => {}
            Ok(other) => tracing::warn!(?other, "unexpected answer to a heartbeat"),
            Err(e) => tracing::warn!(error = %e, "heartbeat not delivered"),
        }
        if agent.lock().expect("agent lock poisoned").declared_dead() {
            return Err(MasterExit::DeclaredCrashed(id));
        }
    }
}

/// Asks the active coordinator to enlist this process until it answers.
fn enlist(coord: &mut CoordinatorClient, advertise: SocketAddr, nonce: u64) -> ServerId {
    let req = ClientRequest::Operate(Request::Enlist {
        addr: advertise.to_string(),
        services: services::MASTER,
        nonce,
    });
    loop {
        let deadline = Instant::now() + Duration::from_secs(2);
        match coord.ask_leader(&req, deadline) {
            Ok(ClientReply::Committed {
                result: OpResult::Enlisted(id),
                ..
            }) => return id,
            Ok(other) => tracing::warn!(?other, "enlistment not done; retrying"),
            Err(e) => tracing::warn!(error = %e, "enlistment not answered; retrying"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The worker: clients' reads and writes.
fn serve_clients(transport: TcpTransport, agent: Arc<Mutex<MasterAgent>>) {
    let mut rejected = 0u64;
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
        let reply = {
            let mut a = agent.lock().expect("agent lock poisoned");
            match env.body {
                MasterRequest::Get { table, key } => match a.get(table, &key) {
                    Ok(v) => MasterReply::Value(v),
                    Err(e) => MasterReply::NotOwner(e.to_string()),
                },
                MasterRequest::Put { table, key, value } => {
                    match a.put(table, &key, Bytes::copy_from_slice(&value)) {
                        Ok(()) => MasterReply::Stored,
                        Err(e) => MasterReply::NotOwner(e.to_string()),
                    }
                }
            }
        };
        transport.send(from, encode(tag::MASTER_REPLY, env.id, &reply));
    }
}
