//! Threads of a coordinator process with many masters: a 3-replica cluster
//! with M masters (child processes), a table with a tablet on every
//! master (so the leader pushes to, and holds a connection to, each of
//! them), K clients each holding a connection to every replica, then each
//! replica's thread count from `/proc/<pid>/status`.
//! The goal is cores + a small constant whatever M; a transport with a
//! thread per peer would show M more on the leader.

use std::path::Path;
use std::time::Duration;

use ramcoord::client::CoordinatorClient;
use ramcoord::coordinator::Request;
use ramcoord::local_cluster::{LocalCluster, LocalClusterConfig};
use ramcoord::protocol::ClientRequest;
use serde::Serialize;

/// What [`threads`] measured.
#[derive(Serialize, Clone, Debug)]
pub struct ThreadsReport {
    /// Masters up.
    pub masters: usize,
    /// Client connections open to every replica when counted.
    pub clients: usize,
    /// The leader's threads.
    pub leader: u64,
    /// The most threads any replica had.
    pub max: u64,
    /// Each replica's (id, threads).
    pub replicas: Vec<(u64, u64)>,
}

fn threads_of(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("reading /proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("no Threads: line in /proc/{pid}/status"))
}

/// Runs the scenario with `masters` masters under `dir`, and `clients`
/// client connections held open to each replica while counting.
pub fn threads(dir: &Path, masters: usize, clients: usize) -> Result<ThreadsReport, String> {
    let _ = std::fs::remove_dir_all(dir);
    let mut cfg = LocalClusterConfig::new(
        crate::cluster::ramcoord_binary()?,
        dir.to_path_buf(),
        3,
        masters,
    );
    cfg.log_filter = "warn".into();
    let c = LocalCluster::start(cfg).map_err(|e| e.to_string())?;
    c.wait_ready(masters as u64, Duration::from_secs(300))
        .map_err(|e| e.to_string())?;
    let mut ctl = c.ctl(Duration::from_secs(60));
    ctl.operate(Request::CreateTable {
        name: "everywhere".into(),
        tablets: masters as u32,
    })
    .map_err(|e| e.to_string())?;
    c.wait_for("the table on every master", Duration::from_secs(120), |c| {
        c.active().filter(|s| s.incomplete == 0)
    })
    .map_err(|e| e.to_string())?;
    // Clients, each with a connection to every replica (a status request
    // opens it), held open while counting.
    let addrs: Vec<std::net::SocketAddr> = c.coordinators.iter().map(|p| p.addr).collect();
    let mut held = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut cl = CoordinatorClient::new(addrs.clone(), 1, c.security());
        for i in 0..addrs.len() {
            cl.ask(i, &ClientRequest::Status)
                .map_err(|e| format!("a client's status request: {e}"))?;
        }
        held.push(cl);
    }
    // Connections handed over, connectors and handshakes finished.
    std::thread::sleep(Duration::from_secs(2));
    let leader = c.active().ok_or("no active coordinator")?.id;
    let mut replicas = Vec::new();
    for (i, p) in c.coordinators.iter().enumerate() {
        let pid = p.pid().ok_or("a replica is not running")?;
        replicas.push((i as u64 + 1, threads_of(pid)?));
    }
    let of_leader = replicas
        .iter()
        .find(|(id, _)| *id == leader)
        .map_or(0, |(_, n)| *n);
    let max = replicas.iter().map(|(_, n)| *n).max().unwrap_or(0);
    drop(held);
    let _ = std::fs::remove_dir_all(dir);
    Ok(ThreadsReport {
        masters,
        clients,
        leader: of_leader,
        max,
        replicas,
    })
}
