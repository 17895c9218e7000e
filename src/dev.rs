//! `ramcoord dev`: a local cluster to play with, up until Ctrl-C.
//!
//! Coordinator replicas and masters run as child processes on loopback
//! (as the demo's do), with mutual TLS (credentials made in the cluster's
//! directory) and each process's HTTP endpoint on a loopback port, plain
//! HTTP so that a browser opens the status page. What to type is printed:
//! the addresses, the status page's URL and a `ctl` command line with its
//! credentials. A process that exits is reported. Ctrl-C (or SIGTERM)
//! stops every process and removes the directory, unless it was given
//! with `--dir` (then its data stays, and the next `dev --dir` with the
//! same directory reopens the replicas' logs).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::local_cluster::{ClusterError, LocalCluster, LocalClusterConfig};

/// How `dev` runs.
pub struct DevConfig {
    /// The `ramcoord` binary to run the processes with.
    pub binary: PathBuf,
    /// Where data, logs and credentials go; `None`: a temporary directory,
    /// removed at exit.
    pub dir: Option<PathBuf>,
    /// Coordinator replicas (1, 3 or 5).
    pub coordinators: usize,
    /// Masters.
    pub masters: usize,
}

/// Why the dev cluster stopped other than by a signal.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// It could not start, or did not become ready.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The terminal went away.
    #[error("writing to the terminal: {0}")]
    Output(#[from] std::io::Error),
    /// A bad setting.
    #[error("{0}")]
    Config(String),
}

/// Runs the cluster until `stop` is set (see the module docs), telling
/// `out` what to use.
pub fn run(cfg: DevConfig, stop: Arc<AtomicBool>, out: &mut dyn Write) -> Result<(), DevError> {
    if !matches!(cfg.coordinators, 1 | 3 | 5) {
        return Err(DevError::Config(format!(
            "--coordinators {}: give 1, 3 or 5",
            cfg.coordinators
        )));
    }
    let temporary = cfg.dir.is_none();
    let dir = cfg.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("ramcoord-dev-{}", std::process::id()))
    });
    let mut lc = LocalClusterConfig::new(cfg.binary, dir.clone(), cfg.coordinators, cfg.masters);
    lc.http = true;
    lc.http_plain = true;
    lc.coordinator_args = vec!["--master-timeout-ms".into(), "2000".into()];
    let result = serve(lc, &stop, out);
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn serve(lc: LocalClusterConfig, stop: &AtomicBool, out: &mut dyn Write) -> Result<(), DevError> {
    let masters = lc.masters as u64;
    let dir = lc.dir.clone();
    let mut c = LocalCluster::start(lc)?;
    writeln!(out, "starting in {} ...", dir.display())?;
    let leader = c.wait_ready(masters, Duration::from_secs(30))?;
    let ctl = format!(
        "ramcoord ctl {} --coordinators {}",
        c.client_args().join(" "),
        c.coordinator_list()
    );
    writeln!(out, "ramcoord dev cluster is up (Ctrl-C stops it)")?;
    for (i, p) in c.coordinators.iter().enumerate() {
        let id = i as u64 + 1;
        writeln!(
            out,
            "  coordinator {id}: {}  http://{}/{}  pid {}  log {}",
            p.addr,
            p.http.map(|a| a.to_string()).unwrap_or_default(),
            if id == leader.id { "  (leader)" } else { "" },
            p.pid().unwrap_or(0),
            p.log.display()
        )?;
    }
    for (i, p) in c.masters.iter().enumerate() {
        writeln!(
            out,
            "  master {}: {}  http://{}/metrics  pid {}  log {}",
            i + 1,
            p.addr,
            p.http.map(|a| a.to_string()).unwrap_or_default(),
            p.pid().unwrap_or(0),
            p.log.display()
        )?;
    }
    let page = c.coordinators[leader.id as usize - 1]
        .http
        .map(|a| format!("http://{a}/"))
        .unwrap_or_default();
    writeln!(out, "status page: {page}")?;
    writeln!(out, "ctl: {ctl} status")?;
    writeln!(
        out,
        "try:  {ctl} create-table demo --tablets 4\n      {ctl} put demo hello world\n      {ctl} watch"
    )?;
    writeln!(out, "ready")?;
    out.flush()?;
    let mut reported = std::collections::BTreeSet::new();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        for p in c.coordinators.iter_mut().chain(c.masters.iter_mut()) {
            if let Some(status) = p.exit_status() {
                if reported.insert(p.name.clone()) {
                    writeln!(out, "{} exited ({status}); see {}", p.name, p.log.display())?;
                    out.flush()?;
                }
            }
        }
    }
    writeln!(out, "stopping")?;
    out.flush()?;
    drop(c);
    Ok(())
}
