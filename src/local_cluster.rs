//! A cluster of `ramcoord` processes on loopback: the demo, the end-to-end
//! tests and the benchmarks start one.
//!
//! Each coordinator replica and master is a child process of the given
//! binary, on a free loopback port, with its data directory and its log
//! file (stderr) under one directory. Children are killed (SIGKILL) when
//! the [`LocalCluster`] is dropped. A coordinator can be killed and
//! restarted from its data directory, or replaced (its directory lost) by
//! a new replica that joins under a new id; a master can be killed and a new one started (it enlists as a
//! new server).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ramcoord_net::tls::{self, CredentialFiles, Identity, Tls};

use crate::client::ClientSecurity;
use crate::ctl::{Ctl, CtlOptions};
use crate::protocol::Status;

/// How to start a [`LocalCluster`].
#[derive(Clone, Debug)]
pub struct LocalClusterConfig {
    /// The `ramcoord` binary.
    pub binary: PathBuf,
    /// Data directories and logs go here.
    pub dir: PathBuf,
    /// Coordinator replicas (ids 1..=n).
    pub coordinators: usize,
    /// Masters started at once.
    pub masters: usize,
    /// Extra arguments for every coordinator (e.g. `--tick-ms 5`).
    pub coordinator_args: Vec<String>,
    /// Extra arguments for every master.
    pub master_args: Vec<String>,
    /// `RAMCOORD_LOG` for the children.
    pub log_filter: String,
    /// Empty: TCP on loopback. Otherwise `--transport rdma`: every process
    /// listens on all addresses and is dialled at one of these (round
    /// robin), each an address of an RDMA device (soft-RoCE in the VM:
    /// two devices, so that every connection crosses a wire).
    pub rdma_hosts: Vec<std::net::IpAddr>,
    /// Give every loopback address on the command lines as
    /// `localhost:PORT` (host names are resolved by each process).
    pub host_names: bool,
    /// Mutual TLS on every connection: credentials are made under `dir`
    /// (`tls/`) and every process gets `--tls-dir`. Off: `--insecure`.
    pub tls: bool,
    /// Every process in its own network namespace of the chaos network
    /// ([`crate::chaos::netns`], which the caller builds with a node per
    /// process): coordinator `i` at node `i`, master `j` at node
    /// `coordinators + j`, each on port [`NAMESPACE_PORT`].
    pub namespaces: bool,
    /// Every master records what it serves when in
    /// `master-N.serve.jsonl` under `dir` (`--serve-log`; a restarted
    /// master appends to its slot's file under its new server id).
    pub serve_logs: bool,
    /// In namespaces: replicas that may be added later (replacements).
    /// Masters are given their addresses from the start, as a deployment
    /// lists every host a coordinator may run on: a follower knows a
    /// replica added later by id only, and cannot tell where it is.
    pub spare_replicas: usize,
    /// Every process serves its HTTP endpoint (`--http`) on a free
    /// loopback port ([`Proc::http`]); HTTPS with TLS unless `http_plain`.
    pub http: bool,
    /// `--http-plain` with `http`.
    pub http_plain: bool,
}

/// The port every process listens on inside its namespace.
pub const NAMESPACE_PORT: u16 = 7000;

impl LocalClusterConfig {
    /// Where the credentials are (with `tls`).
    pub fn tls_dir(&self) -> PathBuf {
        self.dir.join("tls")
    }

    /// `--tls-dir DIR`, or `--insecure`.
    fn security_args(&self) -> Vec<String> {
        if self.tls {
            vec!["--tls-dir".into(), self.tls_dir().display().to_string()]
        } else {
            vec!["--insecure".into()]
        }
    }

    /// `coordinators` replicas and `masters` masters of `binary`, under `dir`.
    pub fn new(binary: PathBuf, dir: PathBuf, coordinators: usize, masters: usize) -> Self {
        LocalClusterConfig {
            binary,
            dir,
            coordinators,
            masters,
            coordinator_args: Vec::new(),
            master_args: Vec::new(),
            log_filter: "info".into(),
            rdma_hosts: Vec::new(),
            host_names: false,
            tls: true,
            namespaces: false,
            serve_logs: false,
            spare_replicas: 0,
            http: false,
            http_plain: false,
        }
    }

    /// `a` as written on a command line (see [`Self::host_names`]).
    pub fn written(&self, a: SocketAddr) -> String {
        if self.host_names && a.ip() == std::net::Ipv4Addr::LOCALHOST {
            format!("localhost:{}", a.port())
        } else {
            a.to_string()
        }
    }

    /// In namespaces: the node of coordinator replica `id`. The first
    /// replicas come first, then the masters, then replicas added later
    /// (replacements), so that no two processes ever share a node.
    pub fn coordinator_node(&self, id: u64) -> usize {
        let id = id as usize;
        if id <= self.coordinators {
            id
        } else {
            self.coordinators + self.masters + (id - self.coordinators)
        }
    }

    /// The address process number `n` is dialled at (port from a free
    /// loopback port), and what it listens on.
    fn place(&self, n: usize) -> Result<(SocketAddr, SocketAddr), ClusterError> {
        if self.namespaces {
            let a = SocketAddr::new(crate::chaos::netns::Net::addr(n + 1).into(), NAMESPACE_PORT);
            return Ok((a, a));
        }
        let a = free_addr()?;
        if self.rdma_hosts.is_empty() {
            return Ok((a, a));
        }
        let host = self.rdma_hosts[n % self.rdma_hosts.len()];
        Ok((
            SocketAddr::new(host, a.port()),
            SocketAddr::new([0, 0, 0, 0].into(), a.port()),
        ))
    }

    fn transport_args(&self) -> Vec<String> {
        if self.rdma_hosts.is_empty() {
            Vec::new()
        } else {
            vec!["--transport".into(), "rdma".into()]
        }
    }
}

/// One child process and how to start it again.
pub struct Proc {
    /// `coordinator-N` or `master-N`.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its stderr.
    pub log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    starts: u32,
    /// Replaced for good (its disk was lost).
    retired: bool,
    /// The network namespace it runs in (chaos), if any.
    ns: Option<String>,
    /// Where it serves HTTP (`--http`), if it does.
    pub http: Option<SocketAddr>,
}

impl Proc {
    /// Whether it was started and not killed.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Its process id, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether it was started and has exited on its own (e.g. a master
    /// declared crashed).
    pub fn exited(&mut self) -> bool {
        self.exit_status().is_some()
    }

    /// How it exited, once it has on its own (`None` while it runs, or if
    /// it was never started or was killed by [`LocalCluster`]).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Running processes (see the module docs).
pub struct LocalCluster {
    cfg: LocalClusterConfig,
    /// Coordinator replicas; replica id = index + 1.
    pub coordinators: Vec<Proc>,
    /// Masters, in start order.
    pub masters: Vec<Proc>,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for p in self.coordinators.iter_mut().chain(self.masters.iter_mut()) {
            p.kill();
        }
    }
}

/// A loopback address with a free port (free when asked: a child binds it
/// a moment later). Drawn below Linux's ephemeral range (32768 and up) so
/// that the connections the cluster's processes open cannot take it in the
/// meantime, as a port from `bind(0)` could.
pub fn free_addr() -> Result<SocketAddr, ClusterError> {
    // A port handed out is not handed out again by this process: the child
    // it was for may not have bound it yet when the next one is drawn.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = rand::random_range(20_000..32_000u16);
        if given.contains(&port) {
            continue;
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            given.push(port);
            return l.local_addr().map_err(|source| ClusterError::Io {
                what: format!("port {port}"),
                source,
            });
        }
    }
    Err(ClusterError::NoFreePort)
}

fn spawn(binary: &Path, filter: &str, p: &mut Proc) -> Result<(), ClusterError> {
    spawn_with(binary, filter, p, &[])
}

fn spawn_with(
    binary: &Path,
    filter: &str,
    p: &mut Proc,
    extra: &[&str],
) -> Result<(), ClusterError> {
    p.starts += 1;
    if p.starts > 1 {
        // coordinator-1.log, then coordinator-1.2.log, coordinator-1.3.log…
        let dir = p.log.parent().map(Path::to_path_buf).unwrap_or_default();
        p.log = dir.join(format!("{}.{}.log", p.name, p.starts));
    }
    let file = std::fs::File::create(&p.log).map_err(|source| ClusterError::Io {
        what: p.log.display().to_string(),
        source,
    })?;
    let mut cmd = match &p.ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    cmd.args(&p.args)
        .args(extra)
        .env("RAMCOORD_LOG", filter)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file);
    // ETXTBSY: another thread of this process may have forked while a
    // script we are about to exec was still open for writing (a test's
    // wrapper); the forked child holds that descriptor until its own exec,
    // a few milliseconds. The kernel refuses to exec a file open for
    // writing, so wait for that child to exec and try again.
    let mut attempt = 0;
    let child = loop {
        match cmd.spawn() {
            Ok(child) => break child,
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && attempt < 50 => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(source) => {
                return Err(ClusterError::Io {
                    what: format!("starting {}", p.name),
                    source,
                })
            }
        }
    };
    p.child = Some(child);
    Ok(())
}

/// Why the local cluster could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A file, a directory, a port or a process could not be had (what,
    /// and why).
    #[error("{what}: {source}")]
    Io {
        /// What.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// No loopback port was free.
    #[error("no free port between 20000 and 32000")]
    NoFreePort,
    /// Certificates could not be issued.
    #[error("issuing certificates: {0}")]
    Tls(#[from] tls::TlsError),
    /// Processes that should run have exited (each named, with its log).
    #[error("exited: {0}")]
    Exited(String),
    /// Something did not happen in time.
    #[error("timed out after {limit:?} waiting for {what} (logs in {})", dir.display())]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        limit: Duration,
        /// Where the processes' logs are.
        dir: PathBuf,
    },
}

impl LocalCluster {
    /// Starts every process (returns without waiting for an election).
    pub fn start(cfg: LocalClusterConfig) -> Result<LocalCluster, ClusterError> {
        std::fs::create_dir_all(&cfg.dir).map_err(|source| ClusterError::Io {
            what: cfg.dir.display().to_string(),
            source,
        })?;
        if cfg.tls {
            let ids = (1..=cfg.coordinators as u64).map(Identity::Replica);
            let all: Vec<Identity> = ids
                .chain([Identity::Master, Identity::Admin, Identity::Reader])
                .collect();
            tls::issue(&cfg.tls_dir(), &all, 30, false)?;
        }
        let placed: Vec<(SocketAddr, SocketAddr)> = (0..cfg.coordinators)
            .map(|n| cfg.place(n))
            .collect::<Result<_, _>>()?;
        let addrs: Vec<SocketAddr> = placed.iter().map(|p| p.0).collect();
        let peers: Vec<String> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={}", i + 1, cfg.written(*a)))
            .collect();
        let peers = peers.join(",");
        // Every replica's HTTP address, known to all (`--http-peers`): a
        // follower's status page links to the leader's.
        let https: Vec<SocketAddr> = if cfg.http && !cfg.namespaces {
            (0..cfg.coordinators)
                .map(|_| free_addr())
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let http_peers: Vec<String> = https
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect();
        let mut c = LocalCluster {
            cfg,
            coordinators: Vec::new(),
            masters: Vec::new(),
        };
        for (i, (addr, listen)) in placed.iter().enumerate() {
            let mut extra: Vec<String> = Vec::new();
            if let Some(h) = https.get(i) {
                extra.extend([
                    "--http".to_string(),
                    h.to_string(),
                    "--http-peers".to_string(),
                    http_peers.join(","),
                ]);
            }
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            c.spawn_coordinator(i as u64 + 1, *addr, *listen, &peers, &extra)?;
        }
        for _ in 0..c.cfg.masters {
            c.start_master()?;
        }
        Ok(c)
    }

    /// The coordinators' addresses, comma-separated (for `--coordinators`).
    pub fn coordinator_list(&self) -> String {
        let v: Vec<String> = self
            .coordinator_addrs()
            .into_iter()
            .map(|a| self.cfg.written(a))
            .collect();
        v.join(",")
    }

    /// Every address a coordinator replica has or may have (with
    /// `spare_replicas`, the ones replacements will take).
    pub fn coordinator_addrs(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self.coordinators.iter().map(|p| p.addr).collect();
        if self.cfg.namespaces {
            let first = self.cfg.coordinators as u64 + 1;
            for id in first..first + self.cfg.spare_replicas as u64 {
                let ip = crate::chaos::netns::Net::addr(self.cfg.coordinator_node(id));
                let a = SocketAddr::new(ip.into(), NAMESPACE_PORT);
                if !v.contains(&a) {
                    v.push(a);
                }
            }
        }
        v
    }

    /// The directory of everything.
    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// Starts one more master; returns its index in [`Self::masters`].
    pub fn start_master(&mut self) -> Result<usize, ClusterError> {
        let n = self.masters.len() + 1;
        // In namespaces, masters follow the coordinators' nodes.
        let node = self.cfg.coordinators + n;
        let (addr, listen) = if self.cfg.namespaces {
            self.cfg.place(node - 1)?
        } else {
            self.cfg.place(n)?
        };
        let mut args = vec![
            "master".to_string(),
            "--listen".into(),
            self.cfg.written(listen),
            "--advertise".into(),
            self.cfg.written(addr),
            "--coordinators".into(),
            self.coordinator_list(),
        ];
        args.extend(self.cfg.transport_args());
        args.extend(self.cfg.security_args());
        args.extend(self.cfg.master_args.iter().cloned());
        if self.cfg.serve_logs {
            args.push("--serve-log".into());
            args.push(self.serve_log(n - 1).display().to_string());
        }
        let http = if self.cfg.http && !self.cfg.namespaces {
            let a = free_addr()?;
            args.extend(["--http".to_string(), a.to_string()]);
            if self.cfg.http_plain {
                args.push("--http-plain".into());
            }
            Some(a)
        } else {
            None
        };
        let mut p = Proc {
            http,
            name: format!("master-{n}"),
            addr,
            log: self.cfg.dir.join(format!("master-{n}.log")),
            args,
            child: None,
            starts: 0,
            retired: false,
            ns: self
                .cfg
                .namespaces
                .then(|| crate::chaos::netns::Net::namespace(node)),
        };
        spawn(&self.cfg.binary, &self.cfg.log_filter, &mut p)?;
        self.masters.push(p);
        Ok(n - 1)
    }

    /// Fails naming every started process that has exited on its own.
    pub fn check_alive(&mut self) -> Result<(), ClusterError> {
        let mut dead = Vec::new();
        for p in self.coordinators.iter_mut().chain(self.masters.iter_mut()) {
            if let Some(c) = p.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    dead.push(format!("{} ({status}, log {})", p.name, p.log.display()));
                }
            }
        }
        if dead.is_empty() {
            Ok(())
        } else {
            Err(ClusterError::Exited(dead.join("; ")))
        }
    }

    /// SIGKILLs coordinator replica `id`.
    pub fn kill_coordinator(&mut self, id: u64) {
        self.coordinators[id as usize - 1].kill();
    }

    /// Starts coordinator replica `id` again from its data directory.
    pub fn restart_coordinator(&mut self, id: u64) -> Result<(), ClusterError> {
        let p = &mut self.coordinators[id as usize - 1];
        p.kill();
        // A replica that joined and holds state restarts as a member (with
        // --join and a log it would refuse to start); one killed before it
        // held anything joins again (without --join an empty directory
        // would bootstrap a founding member).
        let data_dir = p
            .args
            .iter()
            .position(|a| a == "--data-dir")
            .and_then(|i| p.args.get(i + 1))
            .map(PathBuf::from);
        let holds = data_dir
            .is_some_and(|d| ramcoord_log::disk::DiskStorage::holds_state(&d).unwrap_or(false));
        if holds {
            p.args.retain(|a| a != "--join");
        }
        spawn(&self.cfg.binary, &self.cfg.log_filter, p)
    }

    /// Replaces replica `old`, whose disk is lost, by a new replica: kills
    /// it, deletes its data directory, and starts a replica with a new id
    /// at a new address, with `--join` and an empty directory. The caller
    /// removes `old` from the group and adds the new one
    /// ([`Ctl::add_replica`]); returns the new id.
    pub fn replace_coordinator(&mut self, old: u64) -> Result<u64, ClusterError> {
        self.coordinators[old as usize - 1].kill();
        let _ = std::fs::remove_dir_all(self.cfg.dir.join(format!("c{old}")));
        self.coordinators[old as usize - 1].retired = true;
        let id = self.coordinators.len() as u64 + 1;
        let slot = if self.cfg.namespaces {
            self.cfg.coordinator_node(id) - 1
        } else {
            id as usize - 1
        };
        let (addr, listen) = self.cfg.place(slot)?;
        let mut peers: Vec<String> = self
            .coordinators
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.retired)
            .map(|(i, p)| format!("{}={}", i + 1, self.cfg.written(p.addr)))
            .collect();
        peers.push(format!("{id}={}", self.cfg.written(addr)));
        if self.cfg.tls {
            tls::issue(&self.cfg.tls_dir(), &[Identity::Replica(id)], 30, false)?;
        }
        self.spawn_coordinator(id, addr, listen, &peers.join(","), &["--join"])?;
        Ok(id)
    }

    /// Starts coordinator replica `id`, dialled at `addr`, listening on
    /// `listen` (its index in [`Self::coordinators`] is `id - 1`).
    fn spawn_coordinator(
        &mut self,
        id: u64,
        addr: SocketAddr,
        listen: SocketAddr,
        peers: &str,
        extra: &[&str],
    ) -> Result<(), ClusterError> {
        let mut args = vec![
            "coordinator".to_string(),
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            self.cfg.written(listen),
            "--peers".into(),
            peers.to_string(),
            "--data-dir".into(),
            self.cfg.dir.join(format!("c{id}")).display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(self.cfg.transport_args());
        args.extend(self.cfg.security_args());
        args.extend(self.cfg.coordinator_args.iter().cloned());
        // Given by the caller (with every replica's, `start`), or one of
        // its own (a replacement).
        let given = extra
            .iter()
            .position(|a| *a == "--http")
            .and_then(|i| extra.get(i + 1))
            .and_then(|a| a.parse::<SocketAddr>().ok());
        let http = if self.cfg.http && !self.cfg.namespaces {
            let a = match given {
                Some(a) => a,
                None => {
                    let a = free_addr()?;
                    args.extend(["--http".to_string(), a.to_string()]);
                    a
                }
            };
            if self.cfg.http_plain {
                args.push("--http-plain".into());
            }
            Some(a)
        } else {
            None
        };
        let mut p = Proc {
            http,
            name: format!("coordinator-{id}"),
            addr,
            log: self.cfg.dir.join(format!("coordinator-{id}.log")),
            args,
            child: None,
            starts: 0,
            retired: false,
            ns: self
                .cfg
                .namespaces
                .then(|| crate::chaos::netns::Net::namespace(self.cfg.coordinator_node(id))),
        };
        spawn(&self.cfg.binary, &self.cfg.log_filter, &mut p)?;
        self.coordinators.push(p);
        Ok(())
    }

    /// The replicas not retired: (id, namespace node).
    pub fn replicas(&self) -> Vec<(u64, usize)> {
        self.coordinators
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.retired)
            .map(|(i, _)| (i as u64 + 1, self.cfg.coordinator_node(i as u64 + 1)))
            .collect()
    }

    /// SIGKILLs the master at `index`.
    pub fn kill_master(&mut self, index: usize) {
        self.masters[index].kill();
    }

    /// Starts a new master process in slot `index` (same address and
    /// namespace; it enlists as a new server), killing what runs there.
    pub fn restart_master(&mut self, index: usize) -> Result<(), ClusterError> {
        let p = &mut self.masters[index];
        p.kill();
        spawn(&self.cfg.binary, &self.cfg.log_filter, p)
    }

    /// The serve log of master slot `index` (with `serve_logs`).
    pub fn serve_log(&self, index: usize) -> PathBuf {
        self.cfg
            .dir
            .join(format!("master-{}.serve.jsonl", index + 1))
    }

    /// The index of the master listening at `addr`.
    pub fn master_at(&self, addr: &str) -> Option<usize> {
        self.masters.iter().position(|p| p.addr.to_string() == addr)
    }

    /// A `ctl` client of this cluster (its replicas not retired).
    pub fn ctl(&self, timeout: Duration) -> Ctl {
        Ctl::new(CtlOptions {
            coordinators: self
                .coordinators
                .iter()
                .filter(|p| !p.retired)
                .map(|p| p.addr)
                .collect(),
            cluster: 1,
            json: false,
            timeout,
            wait: true,
            security: self.security(),
        })
    }

    /// How a client of this cluster connects: the admin credential, or
    /// plain TCP.
    pub fn security(&self) -> ClientSecurity {
        self.security_as(Identity::Admin)
    }

    /// How a client in `role` (admin or reader) connects.
    pub fn security_as(&self, role: Identity) -> ClientSecurity {
        if !self.cfg.tls {
            return ClientSecurity {
                tls: None,
                admin: role == Identity::Admin,
            };
        }
        let files = CredentialFiles::in_dir(&self.cfg.tls_dir(), role);
        let tls = Tls::load(&files).expect("the cluster's own credentials load");
        ClientSecurity::with(tls)
    }

    /// The command-line flags a `ramcoord ctl` (or any client) of this
    /// cluster needs: `--tls-dir DIR` or `--insecure`.
    pub fn client_args(&self) -> Vec<String> {
        self.cfg.security_args()
    }

    /// Every answering replica's status.
    pub fn statuses(&self) -> Vec<Status> {
        let mut ctl = self.ctl(Duration::from_millis(500));
        ctl.statuses()
            .into_iter()
            .filter_map(|(_, r)| r.ok())
            .collect()
    }

    /// The active coordinator's status, if one answers.
    pub fn active(&self) -> Option<Status> {
        self.statuses().into_iter().find(|s| s.active)
    }

    /// Polls `f` until it says yes, or fails after `limit` naming `what`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        mut f: impl FnMut(&LocalCluster) -> Option<T>,
    ) -> Result<T, ClusterError> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(v) = f(self) {
                return Ok(v);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(ClusterError::Timeout {
            what: what.to_string(),
            limit,
            dir: self.cfg.dir.clone(),
        })
    }

    /// Waits for an active coordinator with `masters` servers up and
    /// nothing incomplete.
    pub fn wait_ready(&self, masters: u64, limit: Duration) -> Result<Status, ClusterError> {
        self.wait_for("an active coordinator and its masters", limit, |c| {
            c.active()
                .filter(|s| s.servers_up == masters && s.incomplete == 0)
        })
    }
}
