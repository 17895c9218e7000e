//! The `ramcoord` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ramcoord::lincheck::{self, jepsen, register::Register, Verdict};

/// ramcoord: a fault-tolerant cluster coordinator (Raft log, commit points,
/// roll-forward).
#[derive(Parser)]
#[command(version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: LogArgs,
}

/// How the long-running commands (coordinator, master) log to stderr.
#[derive(clap::Args, Clone, Debug)]
struct LogArgs {
    /// What to log: error, warn, info (the default), debug or trace, or a
    /// filter such as `info,ramcoord_net=debug` (tracing's EnvFilter
    /// syntax). Overrides the RAMCOORD_LOG environment variable.
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,
    /// How log lines look: text (one readable line each) or json (one JSON
    /// object per line: timestamp, level, target, fields; for a log
    /// collector).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    log_format: LogFormat,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The logging options (`--log-level`, checked, and `--log-format`), set
/// once by `main` for `init_logging`.
static LOGGING: std::sync::OnceLock<(Option<String>, LogFormat)> = std::sync::OnceLock::new();

#[derive(Subcommand)]
enum Command {
    /// Run a coordinator replica: Raft over TCP with a durable log.
    ///
    /// Every replica is started with the same --peers list (its own id
    /// included); an empty --data-dir is bootstrapped as a founding member,
    /// a non-empty one is recovered (torn tail truncated and logged). Logs go
    /// to stderr (RAMCOORD_LOG=debug for more).
    ///
    /// Example:
    ///   ramcoord coordinator --id 1 --listen 127.0.0.1:7101 \
    ///     --peers 1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103 --data-dir /tmp/c1
    #[command(verbatim_doc_comment)]
    Coordinator(CoordinatorArgs),
    /// Start a local cluster (3 coordinators, 3 masters) and narrate what
    /// the coordinator does: a table created, the leader killed with -9
    /// right after the commit point and the operation rolled forward by the
    /// next leader, a master killed and its tablets recovered, keys still
    /// served, the killed replica restarted; then a timeline with each
    /// operation's commit-point latency. Children and files are cleaned up.
    ///
    /// Example: cargo run --release -- demo
    #[command(verbatim_doc_comment)]
    Demo(DemoArgs),
    /// A local cluster to play with, up until Ctrl-C: coordinator replicas
    /// and masters on loopback, with TLS and each one's HTTP endpoint.
    /// Prints the addresses, the status page's URL and the `ctl` command
    /// line (with its credentials) to use. Ctrl-C stops everything and
    /// removes the temporary directory (with --dir, the data stays and the
    /// next run reopens it).
    Dev {
        /// Keep data, logs and credentials here (default: a temporary
        /// directory, removed at exit).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Coordinator replicas: 1, 3 or 5.
        #[arg(long, default_value_t = 3)]
        coordinators: usize,
        /// Masters.
        #[arg(long, default_value_t = 3)]
        masters: usize,
    },
    /// Chaos on real processes (needs root: network namespaces). A cluster
    /// of 3 coordinator replicas and the masters, each in its own network
    /// namespace on a bridge; clients creating, dropping and looking up
    /// tables, and putting and getting keys at the masters, while a seeded
    /// nemesis partitions, isolates, kills and pauses replicas and masters
    /// (one fault at a time, each healed). Every operation goes to
    /// --history as JSON lines. At the end: table operations linearizable
    /// per name, put/get per key (when no master was lost), no key served
    /// by two masters at once (from the masters' serve logs), and every
    /// master holding what the coordinator's map gives it. Exit 0 only if
    /// every check passed. Namespaces and processes are removed at the end
    /// (and a killed run's leftovers at the next start).
    ///
    /// Not yet: tablet splits and migrations in the workload, membership
    /// and slow-disk faults, the timeline plot.
    ///
    /// Example: sudo ramcoord chaos --duration 60 --seed 7 --nemesis partition,kill
    #[command(verbatim_doc_comment)]
    Chaos(ChaosArgs),
    /// Run a master: serves tablets, takes its configuration from the
    /// coordinator by one-sided writes.
    ///
    /// It enlists with the active coordinator (any replica address works:
    /// followers point to the leader), then heartbeats it. Its configuration
    /// region is written by the coordinator; a write from a deposed
    /// coordinator's term is fenced. If the coordinator declares it crashed
    /// (silent past --master-timeout-ms) it exits with status 3: a new
    /// process enlists as a new server.
    ///
    /// Example:
    ///   ramcoord master --listen 127.0.0.1:7201 \
    ///     --coordinators 127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103
    #[command(verbatim_doc_comment)]
    Master(MasterArgs),
    /// Ask a running cluster: status, servers, tables, operations, keys.
    ///
    /// Any replica's address works (HOST:PORT, host names resolved):
    /// followers name the leader and its address. Operations return at
    /// their commit point, then wait for completion (unless --no-wait);
    /// each is applied at most once, even when ctl retries it at a new
    /// leader (see --timeout). `put`/`get` go to the master that owns the
    /// key. With --json, errors are {"error": "..."} on stdout.
    ///
    /// Examples:
    ///   ramcoord ctl --coordinators 127.0.0.1:7101,127.0.0.1:7102 status
    ///   ramcoord ctl --coordinators 127.0.0.1:7101 create-table users --tablets 4
    ///   ramcoord ctl --coordinators 127.0.0.1:7101 put users alice 42
    ///   ramcoord ctl --coordinators 127.0.0.1:7101 get users alice
    ///   ramcoord ctl --coordinators 127.0.0.1:7101 migrate-tablet users 0x0 2.1
    ///   ramcoord ctl --coordinators 127.0.0.1:7101 --json ops
    ///   ramcoord ctl --coordinators localhost:7102 remove-replica 3
    #[command(verbatim_doc_comment)]
    Ctl(CtlArgs),
    /// Check a recorded client history for linearizability.
    ///
    /// Reads a Jepsen register history (read / write / cas; `:info` outcomes
    /// count as "may have happened any time after the invocation, or never"),
    /// or with `--format tables` a chaos history of table operations (JSON
    /// lines; each table name checked as a register of "exists")
    /// and prints `linearizable` (exit 0) or `not linearizable` (exit 1) with
    /// the shortest failing prefix and the operations that could not be
    /// placed. Unreadable event lines are an error naming the line (exit 2).
    ///
    /// Examples:
    ///   ramcoord lincheck --format jepsen tests/data/jepsen/etcd_000.log
    ///   ramcoord lincheck --format tables tests/data/chaos/stale-read.jsonl
    #[command(verbatim_doc_comment)]
    Lincheck {
        /// History format.
        #[arg(long, value_enum, default_value_t = HistoryFormat::Jepsen)]
        format: HistoryFormat,
        /// The history file.
        file: PathBuf,
    },
    /// Create a cluster CA and the credentials a cluster needs, for mutual
    /// TLS on every connection.
    ///
    /// Writes into DIR: ca.pem and ca.key (the CA; keep ca.key off the
    /// nodes in a real deployment), and a NAME.pem + NAME.key pair for each
    /// coordinator replica (replica-1, replica-2, ...), for the masters
    /// (master, shared by all of them), and for two clients: admin (may
    /// change the cluster) and reader (may only look). Each certificate
    /// names its identity in a URI (ramcoord://replica/3, ramcoord://master,
    /// ramcoord://client/admin, ramcoord://client/reader); a peer's identity
    /// is read from it, never from what the peer claims. Keys are written
    /// 0600.
    ///
    /// Run again on the same DIR, it keeps the CA and the credentials there
    /// and adds the missing ones (e.g. --replicas 4 after adding a replica);
    /// --reissue replaces every credential it names under the same CA: how
    /// credentials are rotated before they expire.
    ///
    /// Examples:
    ///   ramcoord certs /etc/ramcoord/tls --replicas 3
    ///   ramcoord certs /etc/ramcoord/tls --replicas 1,2,3,4 --days 90 --reissue
    #[command(verbatim_doc_comment)]
    Certs {
        /// Directory to write into (created if missing).
        dir: PathBuf,
        /// Replica ids to issue credentials for: a count N (ids 1..=N) or a
        /// comma-separated list of ids.
        #[arg(long, default_value = "3")]
        replicas: String,
        /// Days the new credentials are valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Replace the credentials already in DIR (same CA).
        #[arg(long)]
        reissue: bool,
    },
    /// Seed a new coordinator replica's data directory from a backup
    /// (`ctl snapshot save`), as a founding member of a new group.
    ///
    /// Run it once per replica of the new group, each with its own --id
    /// and --data-dir and the same FILE and --peers; then start each with
    /// `ramcoord coordinator` and the same --id, --peers and --data-dir,
    /// and restart every master (a master that kept running may hold
    /// configuration newer than the backup; restarted, it enlists afresh
    /// and the restored servers' tablets move to the new ones). The new
    /// group starts at the backup's leader term plus --term-gap, with its
    /// configuration versions moved ahead, so that nothing the old group
    /// handed out is reused.
    ///
    /// Example (three replicas, from a backup of the old group):
    ///   ramcoord ctl --coordinators A1 snapshot save cluster.backup
    ///   ramcoord restore cluster.backup --id 1 --data-dir /var/lib/rc1 \
    ///     --peers 1=A1,2=A2,3=A3      # and --id 2, --id 3 on their hosts
    ///   ramcoord coordinator --id 1 --listen A1 --peers 1=A1,2=A2,3=A3 \
    ///     --data-dir /var/lib/rc1
    #[command(verbatim_doc_comment)]
    Restore {
        /// The backup file.
        file: PathBuf,
        /// This replica's id (one of --peers).
        #[arg(long)]
        id: u64,
        /// Every replica of the new group as ID=HOST:PORT (their ids are
        /// the new group's voters).
        #[arg(long, value_parser = parse_peers)]
        peers: Peers,
        /// The directory to seed (created; it must not hold a replica).
        #[arg(long)]
        data_dir: PathBuf,
        /// Terms to leave between the backup's leader term and the new
        /// group's first: more than the old group went through after the
        /// backup was taken.
        #[arg(long, default_value_t = 1000)]
        term_gap: u64,
        /// The cluster id (the backup must be of this cluster).
        #[arg(long, default_value_t = 1)]
        cluster: u64,
    },
    /// Run the deterministic simulator over a range of seeds.
    ///
    /// Each seed runs a whole Raft group (plus clients) over a simulated
    /// network and disks with faults, checks every safety invariant after
    /// every step (election safety, log matching, leader completeness, state
    /// machine safety, committed entries never change), then heals every
    /// fault and checks liveness, the survival of acknowledged writes and
    /// the linearizability of the client history. One seed determines
    /// everything: a failing seed replays exactly.
    ///
    /// --workload coordinator runs the coordinator on the replicas, with
    /// masters taking configuration pushes and clients creating, dropping,
    /// splitting and migrating tables; the leader crashes around commit
    /// points, masters crash and lose links. It checks the cluster state's
    /// invariants after every applied record, that no master goes back to
    /// an older configuration or takes one from a deposed term, and at the
    /// end that every committed operation completed and every master holds
    /// what the coordinator says.
    ///
    /// Examples:
    ///   ramcoord sim --workload raft --seeds 2000
    ///   ramcoord sim --workload raft --seeds 20000 --faults heavy --replicas 5
    ///   ramcoord sim --workload raft --seed 42 --trace
    ///   ramcoord sim --inject-bug forget-vote --seeds 2000
    ///   ramcoord sim --workload coordinator --seeds 2000
    ///   ramcoord sim --workload coordinator --inject-bug no-roll-forward --seeds 2000
    #[command(verbatim_doc_comment)]
    Sim(SimArgs),
    /// Crash-test the durable log with real processes: a child appends and
    /// reports what is durable, the parent kills it with SIGKILL, reopens
    /// the log and checks every reported entry. Exit 0 iff all survive.
    ///
    /// Example: ramcoord storage-crash --iterations 500
    #[command(hide = true)]
    StorageCrash {
        /// Rounds of spawn, kill -9, reopen, check.
        #[arg(long, default_value_t = 50)]
        iterations: u64,
        /// Seed of the kill timing.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where the log lives (default: a fresh temporary directory, removed
        /// after a passing run).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Internal: run as the appending child.
        #[arg(long, requires = "dir")]
        child: bool,
        /// Internal: the child's term.
        #[arg(long, default_value_t = 1)]
        term: u64,
    },
}

#[derive(clap::Args)]
struct CoordinatorArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// This replica's id (one of --peers).
    #[arg(long)]
    id: u64,
    /// Address to listen on for peers and clients (HOST:PORT; a host name
    /// is resolved at start).
    #[arg(long, value_parser = parse_addr)]
    listen: std::net::SocketAddr,
    /// Every replica as ID=HOST:PORT, comma-separated (this one included).
    /// Host names are resolved at start; followers tell clients the
    /// leader's address as written here.
    #[arg(long, value_parser = parse_peers)]
    peers: Peers,
    /// Directory of this replica's log (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// Serve /metrics (Prometheus), /health, /ready and the status page
    /// (/) on HOST:PORT. HTTPS with a client certificate of the cluster's
    /// CA when this replica runs with TLS (any role; a reader's will do),
    /// unless --http-plain.
    #[arg(long, value_parser = parse_addr, value_name = "HOST:PORT")]
    http: Option<std::net::SocketAddr>,
    /// Serve --http as plain HTTP even with TLS (for a loopback address, or
    /// behind a proxy that does TLS). What it serves is read-only.
    #[arg(long)]
    http_plain: bool,
    /// Every replica's --http address as ID=HOST:PORT, comma-separated: a
    /// follower's status page then links to the leader's.
    #[arg(long, value_parser = parse_peers, value_name = "ID=HOST:PORT,...")]
    http_peers: Option<Peers>,
    /// When an entry counts as durable: fsync (flushed to disk) or memory
    /// (in the page cache, flushed every 50 ms: a power loss of a majority
    /// can lose acknowledged entries).
    #[arg(long, value_enum, default_value_t = DurabilityArg::Fsync)]
    durability: DurabilityArg,
    /// One Raft tick, in milliseconds.
    #[arg(long, default_value_t = 10)]
    tick_ms: u64,
    /// Election timeout, in ticks (randomised up to twice this).
    #[arg(long, default_value_t = 10)]
    election_ticks: u64,
    /// Cluster id: connections from another cluster are refused.
    #[arg(long, default_value_t = 1)]
    cluster: u64,
    /// Declare a master crashed after this long without a heartbeat (its
    /// tablets then move to live masters). Masters serve under a lease of
    /// 9/10 of it less two ticks, so it must be at least 10 ticks; every
    /// replica must be given the same value (and the same --tick-ms).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    master_timeout_ms: u64,
    /// Tell masters to heartbeat this often (milliseconds; default: a
    /// tenth of --master-timeout-ms), or less often once the cluster is so
    /// large that the leader would take more than --heartbeats-per-s-max:
    /// then the interval is slots / that rate and the master timeout at
    /// least four intervals (10,000 masters at 5,000 a second: 2 s and
    /// 8 s). Same on every replica.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    heartbeat_interval_ms: Option<u64>,
    /// Heartbeats a second the leader takes at most, whatever the number of
    /// masters (0: no limit; at least one a tick). Each costs the leader
    /// about 17 µs of CPU (measured: `ramcoord-bench scale`), so the
    /// default keeps failure detection under a tenth of a core. Same on
    /// every replica.
    #[arg(long, default_value_t = 5_000)]
    heartbeats_per_s_max: u64,
    /// Compact the log (snapshot the cluster state, delete older segments)
    /// after this many entries.
    #[arg(long, default_value_t = 10_000)]
    snapshot_entries: u64,
    /// After activity, spin this long (µs) waiting for the next message
    /// before blocking: a blocked thread costs a cross-core wake-up to
    /// resume (0: always block; saves CPU on a crowded machine).
    #[arg(long, default_value_t = 0)]
    spin_us: u64,
    /// How the replica's thread does its socket I/O: `uring` submits every
    /// receive and every send of a ready through one io_uring (one system
    /// call for them all); `epoll` waits for readiness, then reads and
    /// sends with a system call each. `uring` falls back to `epoll`
    /// (logged) where the kernel refuses a ring.
    #[arg(long, value_enum, default_value_t = IoArg::Uring)]
    io: IoArg,
    /// Threads that run the replica's event loops. 1: one thread runs
    /// Raft, the log, the coordinator and every connection. N > 1 (with
    /// --io uring): that thread keeps Raft, the log and the links to the
    /// other replicas (the commit path), and N-1 I/O threads, each with
    /// its own io_uring, run the connections of clients and masters (their
    /// TLS, decoding and sends), handing requests over through a bounded
    /// queue. On a machine with fewer cores than replicas times N the
    /// hand-overs cost more than they save: measure.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    cores: u16,
    /// Pin the replica's threads to these CPUs (comma-separated): the
    /// replica's thread (Raft, the log, the replicas' connections) to the
    /// first, I/O thread k (--cores) to entry k, wrapping around. Off by
    /// default: replicas sharing a machine must not pin to the same CPUs,
    /// and only the operator knows which CPUs this one owns. A CPU the
    /// process may not use is logged and left unpinned. Threads started
    /// later by the replica's thread (connectors) share its CPU.
    #[arg(long, value_delimiter = ',', value_name = "CPU,...")]
    pin_cpus: Vec<usize>,
    /// Test hook for chaos runs (off by default): SIGUSR1 makes every sync
    /// of the log wait --fault-sync-delay-ms first, as a slow disk would;
    /// SIGUSR2 ends it. Without this flag those signals stop the process.
    #[arg(long)]
    fault_signals: bool,
    /// With --fault-signals: how long each sync waits while the slow disk
    /// is on.
    #[arg(long, default_value_t = 200, requires = "fault_signals")]
    fault_sync_delay_ms: u64,
    /// Join an existing group as a new replica, with an empty data
    /// directory: it waits, without voting, until the leader adds it
    /// (`ctl add-replica ID --address ADDR`). This is how a replica whose
    /// disk was lost comes back: removed (`ctl remove-replica OLD`), then
    /// joined under a NEW id. Never restart it empty under its old id: an
    /// empty directory bootstraps a founding member that forgot its votes
    /// and its log.
    #[arg(long)]
    join: bool,
    /// Fault injection: hold every configuration push this long (widens the
    /// window between a commit point and the operation's completion).
    #[arg(long, default_value_t = 0, hide = true)]
    push_delay_ms: u64,
    /// A planted bug, for testing the chaos checker only:
    /// `ack-before-commit` answers operations before their commit point.
    #[arg(long, hide = true)]
    inject_bug: Option<String>,
    /// Network for replication and configuration pushes: tcp, or rdma
    /// (Raft appends written one-sidedly into each follower's ring,
    /// configuration by RDMA WRITE into masters; the RDMA listener uses the
    /// --listen address and port, clients stay on TCP there). Every replica
    /// and master of a cluster uses the same.
    #[arg(long, value_enum, default_value_t = TransportArg::Tcp)]
    transport: TransportArg,
    #[command(flatten)]
    tls: TlsArgs,
}

/// Mutual TLS: where the credential is, or `--insecure`.
#[derive(clap::Args, Clone, Debug)]
struct TlsArgs {
    /// Directory of credentials made by `ramcoord certs DIR`: the process
    /// presents the one for its role and id (replica-ID.pem/.key, master,
    /// admin or reader) and trusts ca.pem. Every connection is mutual TLS
    /// 1.3, and every peer's id and role is read from its certificate.
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<PathBuf>,
    /// The CA certificate to trust (default: DIR/ca.pem).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// This process's certificate (default: DIR/<role>.pem).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// This process's private key, mode 0600 (default: DIR/<role>.key).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Run without TLS: plain TCP, ids and roles taken on trust (anyone
    /// who reaches a port can act as any replica, master or admin). For a
    /// laboratory only; the log and `ctl status` say so.
    #[arg(long)]
    insecure: bool,
}

impl TlsArgs {
    /// The credential for `want`, or `None` with --insecure. Errors say
    /// what to do.
    fn load(
        &self,
        want: ramcoord_net::tls::Identity,
    ) -> Result<Option<ramcoord_net::tls::Tls>, String> {
        use ramcoord_net::tls::{CredentialFiles, Tls};
        let explicit = self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_key.is_some();
        if self.insecure {
            if self.tls_dir.is_some() || explicit {
                return Err("--insecure and TLS credentials together: choose one".into());
            }
            return Ok(None);
        }
        let base = match &self.tls_dir {
            Some(dir) => Some(CredentialFiles::in_dir(dir, want)),
            None if explicit => None,
            None => {
                return Err(format!(
                    "no credentials: give --tls-dir DIR (made by `ramcoord certs DIR`; the {want} \
                     credential is used), or --tls-ca, --tls-cert and --tls-key, or --insecure \
                     to run without TLS"
                ))
            }
        };
        let pick = |given: &Option<PathBuf>, from_dir: Option<PathBuf>, flag: &str| {
            given
                .clone()
                .or(from_dir)
                .ok_or_else(|| format!("{flag} is needed without --tls-dir"))
        };
        let files = CredentialFiles {
            ca: pick(
                &self.tls_ca,
                base.as_ref().map(|b| b.ca.clone()),
                "--tls-ca",
            )?,
            cert: pick(
                &self.tls_cert,
                base.as_ref().map(|b| b.cert.clone()),
                "--tls-cert",
            )?,
            key: pick(
                &self.tls_key,
                base.as_ref().map(|b| b.key.clone()),
                "--tls-key",
            )?,
        };
        let tls = Tls::load(&files).map_err(|e| e.to_string())?;
        let has = tls.identity();
        let fits = match want {
            ramcoord_net::tls::Identity::Admin | ramcoord_net::tls::Identity::Reader => {
                matches!(
                    has,
                    ramcoord_net::tls::Identity::Admin | ramcoord_net::tls::Identity::Reader
                )
            }
            _ => has == want,
        };
        if !fits {
            return Err(format!(
                "{} is a {has} certificate; this process needs a {want} one",
                files.cert.display()
            ));
        }
        Ok(Some(tls))
    }
}

#[derive(clap::Args)]
struct ChaosArgs {
    /// How long the workload runs, in seconds.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// The nemesis schedule's seed (the same seed, the same schedule).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fault families, comma-separated; all of them if not given.
    #[arg(long, value_enum, value_delimiter = ',')]
    nemesis: Vec<NemesisArg>,
    /// Where the history goes (JSON lines).
    #[arg(long, default_value = "chaos-history.jsonl")]
    history: PathBuf,
    /// Data directories and logs of the processes.
    #[arg(long, default_value = "chaos-data")]
    dir: PathBuf,
    /// Concurrent clients of the table operations.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    clients: u64,
    /// Concurrent clients putting and getting keys at the masters.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=64))]
    kv_clients: u64,
    /// Table names the clients use.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
    names: u64,
    /// Keys of table kv the put/get clients use.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(1..=100))]
    keys: u64,
    /// Coordinator replicas: 3 or 5.
    #[arg(long, default_value = "3", value_parser = ["3", "5"])]
    replicas: String,
    /// Masters.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=16))]
    masters: u64,
    /// Each client waits a random time of up to twice this between
    /// operations, in milliseconds (0: as fast as it can; histories then
    /// grow by tens of megabytes a minute).
    #[arg(long, default_value_t = 2)]
    think_ms: u64,
    /// Where the timeline goes (PNG: each operation's latency over time,
    /// faults shaded); default: the history's name with .png.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// A planted bug, to show the checks catch it: ack-before-commit
    /// (coordinators) or ignore-lease (masters).
    #[arg(long, hide = true)]
    inject_bug: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum NemesisArg {
    /// The replicas split into two random sides, cut both ways.
    Partition,
    /// The leader cut off from the other replicas.
    Isolate,
    /// A replica killed with SIGKILL, restarted at the heal.
    Kill,
    /// A replica stopped with SIGSTOP, continued at the heal.
    Pause,
    /// Two replicas cut from each other; the third reaches both.
    Bridge,
    /// One replica stops hearing the leader; the other way works.
    OneWay,
    /// A master cut off from every replica past the master timeout (clients
    /// still reach it): its lease runs out and its tablets move.
    MasterCut,
    /// A master killed with SIGKILL; a new process takes its slot.
    MasterKill,
    /// A master stopped with SIGSTOP, continued at the heal.
    MasterPause,
    /// A replica's log syncs made slow (the leader's half the time) until
    /// the heal, through the storage layer's fault hook.
    SlowDisk,
    /// A replica's disk lost: removed from the group, a new replica (new
    /// id, empty disk) added, while clients keep going.
    Membership,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Keep data and logs here (default: a temporary directory, removed
    /// after a successful run).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Coordinators hold each configuration push this long, so the leader
    /// is killed between an operation's commit point and its completion.
    #[arg(long, default_value_t = 300)]
    push_delay_ms: u64,
    /// Tablets of the demo table.
    #[arg(long, default_value_t = 6)]
    tablets: u32,
    /// Keys written and read.
    #[arg(long, default_value_t = 24)]
    keys: usize,
}

#[derive(clap::Args)]
struct MasterArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Address to listen on for coordinators' one-sided writes and clients
    /// (HOST:PORT; a host name is resolved at start).
    #[arg(long, value_parser = parse_addr)]
    listen: std::net::SocketAddr,
    /// The address to enlist with (what others dial); default: --listen.
    /// A host name is resolved at start and its IP address enlisted.
    #[arg(long, value_parser = parse_addr)]
    advertise: Option<std::net::SocketAddr>,
    /// Coordinator replicas' addresses (HOST:PORT), comma-separated (any
    /// subset: followers name the leader).
    #[arg(long, value_delimiter = ',', required = true, value_parser = parse_addr)]
    coordinators: Vec<std::net::SocketAddr>,
    /// Cluster id (as given to the coordinators).
    #[arg(long, default_value_t = 1)]
    cluster: u64,
    /// Heartbeat the active coordinator this often, in milliseconds, until
    /// its first answer: from then on the leader sets the pace (a tenth of
    /// its --master-timeout-ms, slower in a large cluster). Until then, each
    /// heartbeat that a replica which had answered before leaves unanswered
    /// doubles the wait for the next answer (up to 3.2 s), so that thousands
    /// of masters starting at once do not storm a busy leader.
    #[arg(long, default_value_t = 50)]
    heartbeat_ms: u64,
    /// Where coordinators write the configuration region: tcp, or rdma
    /// (registered memory on the --listen port, written by RDMA WRITE; only
    /// the newest leader may write). As the coordinators use.
    #[arg(long, value_enum, default_value_t = TransportArg::Tcp)]
    transport: TransportArg,
    /// With --transport rdma: look at the configuration region this often,
    /// in microseconds, while no request comes (every request looks first
    /// anyway; each look wakes a thread).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(50..=1_000_000))]
    region_poll_us: u64,
    /// Append to FILE what this master may serve and what it serves, when
    /// (JSON lines with CLOCK_BOOTTIME times; one line per request, so it
    /// grows without bound: for tests such as `ramcoord chaos`, not
    /// production).
    #[arg(long, value_name = "FILE")]
    serve_log: Option<std::path::PathBuf>,
    /// Serve /metrics (Prometheus), /health and /ready (enlisted and
    /// holding a lease) on HOST:PORT: HTTPS with a client certificate of
    /// the cluster's CA when running with TLS, unless --http-plain.
    #[arg(long, value_parser = parse_addr, value_name = "HOST:PORT")]
    http: Option<std::net::SocketAddr>,
    /// Serve --http as plain HTTP even with TLS (loopback, or behind a
    /// proxy that does TLS). What it serves is read-only.
    #[arg(long)]
    http_plain: bool,
    /// A planted bug, for testing the chaos checker only: `ignore-lease`
    /// serves without a lease.
    #[arg(long, hide = true)]
    inject_bug: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(clap::Args)]
struct CtlArgs {
    /// Coordinator replicas' addresses (HOST:PORT, host names resolved),
    /// comma-separated: any subset of the group, one replica is enough
    /// (followers name the leader and its address).
    /// (Every command but `snapshot status` needs it.)
    #[arg(long, value_delimiter = ',')]
    coordinators: Vec<String>,
    /// Cluster id (as given to the coordinators).
    #[arg(long, default_value_t = 1)]
    cluster: u64,
    /// Print JSON instead of a table. Errors too: a single object
    /// {"error": "..."} on stdout (nothing on stderr), with a non-zero
    /// exit status (1; 2 for a bad command line).
    #[arg(long)]
    json: bool,
    /// Seconds a command may take in all (finding the leader, retrying,
    /// waiting for completion, retrying a stale owner).
    ///
    /// An operation whose leader vanishes (no answer, connection lost, a
    /// change of leader) is sent again, until this timeout, to the next
    /// leader with the same client id and sequence number: the
    /// coordinator applies it at most once and answers a retry with the
    /// original outcome, so retrying is safe. Only if ctl gives up at the
    /// timeout may the operation have been applied or not (`ctl ops`
    /// tells); running ctl again is a new operation.
    #[arg(long, default_value_t = 5.0, verbatim_doc_comment)]
    timeout: f64,
    /// Return at an operation's commit point; do not wait for completion.
    #[arg(long)]
    no_wait: bool,
    /// The client role to act in: admin (may change the cluster) or
    /// reader (status, servers, tables, ops, get). With --tls-dir, the
    /// credential of that name is used.
    #[arg(long = "as", value_enum, default_value_t = RoleArg::Admin)]
    role: RoleArg,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(subcommand)]
    command: ramcoord::ctl::CtlCommand,
}

/// A client role.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum RoleArg {
    /// May change tables, tablets and membership.
    Admin,
    /// May only look.
    Reader,
}

/// The replica list of --peers: (id, resolved address, as written).
#[derive(Clone, Debug)]
struct Peers(Vec<(u64, std::net::SocketAddr, String)>);

/// HOST:PORT, host names resolved ([`ramcoord::addr::resolve`]).
fn parse_addr(s: &str) -> Result<std::net::SocketAddr, ramcoord::addr::AddrError> {
    ramcoord::addr::resolve(s)
}

fn parse_peers(s: &str) -> Result<Peers, String> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected ID=HOST:PORT"))?;
        let id: u64 = id
            .parse()
            .map_err(|_| format!("{id:?}: a replica id is a positive integer"))?;
        if id == 0 || id >= 1 << 62 {
            return Err(format!("replica id {id}: use 1 to 2^62-1 (0 is reserved, larger ids name clients and masters)"));
        }
        let resolved = ramcoord::addr::resolve(addr).map_err(|e| format!("replica {id}: {e}"))?;
        if out.iter().any(|(i, _, _)| *i == id) {
            return Err(format!("replica {id} listed twice"));
        }
        out.push((id, resolved, addr.to_string()));
    }
    if out.is_empty() {
        return Err("at least one replica".into());
    }
    Ok(Peers(out))
}

/// --transport.
#[derive(Clone, Copy, ValueEnum)]
enum TransportArg {
    /// Everything over TCP (any host).
    Tcp,
    /// Cluster traffic over RDMA (Raft appends and configuration pushes by
    /// one-sided writes); clients stay on TCP. Needs an RDMA device and a
    /// binary built with `--features rdma`.
    Rdma,
}

impl From<TransportArg> for ramcoord::transport::TransportKind {
    fn from(t: TransportArg) -> Self {
        match t {
            TransportArg::Tcp => ramcoord::transport::TransportKind::Tcp,
            TransportArg::Rdma => ramcoord::transport::TransportKind::Rdma,
        }
    }
}

/// --io.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum IoArg {
    /// io_uring: receives and sends as submitted operations.
    Uring,
    /// epoll readiness, then a system call per receive and send.
    Epoll,
}

/// --durability.
#[derive(Clone, Copy, ValueEnum)]
enum DurabilityArg {
    /// Durable = fdatasync'ed.
    Fsync,
    /// Durable = in the page cache, flushed in the background.
    Memory,
}

#[derive(clap::Args)]
struct SimArgs {
    /// What to simulate.
    #[arg(long, value_enum, default_value_t = Workload::Raft)]
    workload: Workload,
    /// How many seeds to run.
    #[arg(long, default_value_t = 100, conflicts_with = "seed")]
    seeds: u64,
    /// The first seed of the range.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Run exactly this one seed (with --trace: print its events).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the event trace of the seed and its hash.
    #[arg(long, requires = "seed")]
    trace: bool,
    /// Fault intensity.
    #[arg(long, value_enum, default_value_t = Faults::Standard)]
    faults: Faults,
    /// Replicas in the group: 3 or 5; 0 alternates 3 and 5 by seed.
    #[arg(long, default_value_t = 0, value_parser = parse_replicas)]
    replicas: usize,
    /// Masters of the coordinator workload (default: 3 to 6, drawn from
    /// each seed); thousands for the scaled workload.
    #[arg(long)]
    masters: Option<usize>,
    /// Plant a known bug to see the checkers catch it (see --list-bugs).
    #[arg(long)]
    inject_bug: Option<String>,
    /// List the bugs --inject-bug knows (with the invariants that catch
    /// each) and exit.
    #[arg(long)]
    list_bugs: bool,
    /// With --inject-bug: exit 0 if some seed caught the bug through one
    /// of its own invariants, 1 if none did (the sweep found nothing, or
    /// only other failures).
    #[arg(long, requires = "inject_bug")]
    expect_caught: bool,
    /// With --inject-bug: stop the sweep at the first seed that catches
    /// the bug through one of its own invariants (seeds already running
    /// finish). A quick check that the bug is still caught; without it
    /// the sweep runs every seed and counts the catches.
    #[arg(long, requires = "inject_bug")]
    stop_when_caught: bool,
    /// Worker threads (default: available cores).
    #[arg(long)]
    threads: Option<usize>,
}

fn parse_replicas(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n @ (0 | 3 | 5)) => Ok(n),
        _ => Err(format!("{s:?}: replicas must be 3, 5 or 0 (alternate)")),
    }
}

/// What the simulator runs.
#[derive(Clone, Copy, ValueEnum)]
enum Workload {
    /// A Raft group serving a key-value register workload.
    Raft,
    /// Coordinator replicas, masters and clients: operations with commit
    /// points, roll-forward, configuration pushes.
    Coordinator,
}

/// Fault intensity.
#[derive(Clone, Copy, ValueEnum)]
enum Faults {
    /// Ordinary delays only.
    None,
    /// Loss, duplication, reordering, partitions, crashes with torn writes,
    /// slow disks, tick skew, membership changes and leader transfers.
    Standard,
    /// The same, more often.
    Heavy,
}

#[derive(Clone, Copy, ValueEnum)]
enum HistoryFormat {
    /// Jepsen's `jepsen.util` log lines for a single register.
    Jepsen,
    /// A chaos history (JSON lines: process, type, f, key, value, time):
    /// create / drop / read of tables, checked per name.
    Tables,
}

/// The command line as run, after `--config` (for `--check-config`).
static EFFECTIVE_ARGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// `--config FILE` and `--check-config`, shared by the long-running
/// commands.
#[derive(clap::Args, Clone, Debug)]
struct ConfigArgs {
    /// Read settings from a TOML file: the flags' names as keys
    /// (`data-dir = "/var/lib/ramcoord"`, `[peers]` with `1 = "HOST:PORT"`
    /// lines, switches as true/false). Flags on the command line win over
    /// the file; a key that is not a flag is refused. See
    /// deploy/*.toml in the repository.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the settings (command line and --config) and print the
    /// effective command line, then exit 0 without starting (2 if they do
    /// not parse).
    #[arg(long)]
    check_config: bool,
}

impl ConfigArgs {
    /// With `--check-config`: prints the effective command line; the
    /// caller exits 0.
    fn checked(&self, what: &str) -> bool {
        if self.check_config {
            let line = EFFECTIVE_ARGS.get().cloned().unwrap_or_default();
            let line: Vec<String> = line
                .into_iter()
                .skip(1)
                .filter(|a| a != "--check-config")
                .map(|a| {
                    if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"') {
                        format!("{a:?}")
                    } else {
                        a
                    }
                })
                .collect();
            println!("{what} settings OK: ramcoord {}", line.join(" "));
        }
        self.check_config
    }
}

fn main() -> ExitCode {
    let args = match ramcoord::config_file::expand(
        std::env::args_os().collect(),
        &<Cli as clap::CommandFactory>::command(),
        &["coordinator", "master"],
    ) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ramcoord: {e}");
            return ExitCode::from(2);
        }
    };
    let _ = EFFECTIVE_ARGS.set(
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
    );
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let args: Vec<String> = std::env::args().collect();
            let ctl_json = args.iter().any(|a| a == "ctl") && args.iter().any(|a| a == "--json");
            let shown = matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
            if ctl_json && !shown {
                // `ctl --json`: every error is one JSON object on stdout.
                let msg = e.to_string();
                let msg = msg.trim().trim_start_matches("error: ");
                println!("{}", serde_json::json!({ "error": msg }));
                return ExitCode::from(2);
            }
            e.exit();
        }
    };
    // A filter that does not parse is refused before anything starts.
    if let Some(level) = &cli.log.log_level {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(level) {
            eprintln!(
                "ramcoord: --log-level {level:?} is not a level (error, warn, info, debug, trace) or a filter such as info,ramcoord_net=debug: {e}"
            );
            return ExitCode::from(2);
        }
    }
    let _ = LOGGING.set((cli.log.log_level.clone(), cli.log.log_format));
    match cli.command {
        Command::Lincheck { format, file } => run_lincheck(format, &file),
        Command::Certs {
            dir,
            replicas,
            days,
            reissue,
        } => run_certs(&dir, &replicas, days, reissue),
        Command::Sim(args) => run_sim(args),
        Command::Dev {
            dir,
            coordinators,
            masters,
        } => run_dev(dir, coordinators, masters),
        Command::Restore {
            file,
            id,
            peers,
            data_dir,
            term_gap,
            cluster,
        } => run_restore(&file, id, &peers, &data_dir, term_gap, cluster),
        Command::Coordinator(args) => run_coordinator(args),
        Command::Ctl(args) => run_ctl(args),
        Command::Master(args) => run_master(args),
        Command::Demo(args) => run_demo(args),
        Command::Chaos(args) => run_chaos(args),
        Command::StorageCrash {
            iterations,
            seed,
            dir,
            child,
            term,
        } => run_storage_crash(iterations, seed, dir, child, term),
    }
}

/// Appends a line to a report string (reports are written in one go, and a
/// closed stdout, as in `| head`, is not an error worth a panic).
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

fn emit(out: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
}

fn run_certs(dir: &std::path::Path, replicas: &str, days: u32, reissue: bool) -> ExitCode {
    use ramcoord_net::tls::{self, Identity};
    let ids: Result<Vec<u64>, String> = match replicas.trim().parse::<u64>() {
        Ok(n) if !replicas.contains(',') => {
            if (1..=1000).contains(&n) {
                Ok((1..=n).collect())
            } else {
                Err(format!(
                    "--replicas {n}: give 1 to 1000 replicas, or a list of ids"
                ))
            }
        }
        _ => replicas
            .split(',')
            .map(|p| {
                let p = p.trim();
                match p.parse::<u64>() {
                    Ok(id) if id != 0 && id < (1 << 61) => Ok(id),
                    _ => Err(format!(
                        "--replicas: {p:?} is not a replica id (1 to 2^61-1)"
                    )),
                }
            })
            .collect(),
    };
    let ids = match ids {
        Ok(ids) => ids,
        Err(e) => {
            eprintln!("ramcoord certs: {e}");
            return ExitCode::from(2);
        }
    };
    if days == 0 {
        eprintln!("ramcoord certs: --days must be at least 1");
        return ExitCode::from(2);
    }
    let mut identities: Vec<Identity> = ids.into_iter().map(Identity::Replica).collect();
    identities.extend([Identity::Master, Identity::Admin, Identity::Reader]);
    match tls::issue(dir, &identities, days, reissue) {
        Ok(done) => {
            let mut out = String::new();
            if done.new_ca {
                outln!(
                    out,
                    "created a CA: {}/ca.pem (keep ca.key safe, off the nodes)",
                    dir.display()
                );
            } else {
                outln!(out, "using the CA in {}", dir.display());
            }
            for id in &done.written {
                outln!(
                    out,
                    "issued {id}: {}/{}.pem, .key (valid {days} days)",
                    dir.display(),
                    id.file_stem()
                );
            }
            for id in &done.kept {
                outln!(
                    out,
                    "kept {id}: {}/{}.pem (--reissue replaces it)",
                    dir.display(),
                    id.file_stem()
                );
            }
            emit(&out);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ramcoord certs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_lincheck(format: HistoryFormat, file: &PathBuf) -> ExitCode {
    if let HistoryFormat::Tables = format {
        return run_lincheck_tables(file);
    }
    let mut out = String::new();
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ramcoord lincheck: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let parsed = match jepsen::parse(&text) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ramcoord lincheck: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let line = |n: u64| parsed.lines[n as usize - 1].trim().to_owned();
    match lincheck::check(&Register, &parsed.history) {
        Verdict::Linearizable => {
            outln!(out, "linearizable");
            emit(&out);
            ExitCode::SUCCESS
        }
        Verdict::NotLinearizable(failure) => {
            outln!(out, "not linearizable");
            if let Some(end) = lincheck::shortest_failing_prefix(&Register, &parsed.history) {
                outln!(
                    out,
                    "shortest non-linearizable prefix: lines 1..={end}, ending with:"
                );
                outln!(out, "  {end}: {}", line(end));
            }
            outln!(
                out,
                "deepest partial linearization placed {} of {} operations; could not place:",
                failure.placed_max,
                parsed.history.len()
            );
            for i in failure.unplaceable {
                let op = &parsed.history[i];
                let ret = op
                    .ret
                    .map(|r| format!(" -> {}: {}", r, line(r)))
                    .unwrap_or_default();
                outln!(out, "  {}: {}{}", op.call, line(op.call), ret);
            }
            emit(&out);
            ExitCode::from(1)
        }
        Verdict::Unknown => {
            eprintln!(
                "ramcoord lincheck: search budget ({} steps) exhausted without a verdict",
                lincheck::SEARCH_STEPS_MAX
            );
            ExitCode::from(3)
        }
    }
}

fn run_chaos(args: ChaosArgs) -> ExitCode {
    use ramcoord::chaos::run::{self as chaos, ChaosConfig, Nemesis};
    if let Err(e) = ramcoord::chaos::netns::Net::check() {
        eprintln!("ramcoord chaos: {e}");
        return ExitCode::from(2);
    }
    let binary = match std::env::current_exe() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("ramcoord chaos: where is this binary? {e}");
            return ExitCode::from(2);
        }
    };
    let dir = std::path::absolute(&args.dir).unwrap_or(args.dir.clone());
    let cfg = ChaosConfig {
        binary,
        dir,
        duration: std::time::Duration::from_secs(args.duration),
        seed: args.seed,
        nemesis: args
            .nemesis
            .iter()
            .map(|n| match n {
                NemesisArg::Partition => Nemesis::Partition,
                NemesisArg::Isolate => Nemesis::Isolate,
                NemesisArg::Kill => Nemesis::Kill,
                NemesisArg::Pause => Nemesis::Pause,
                NemesisArg::Bridge => Nemesis::Bridge,
                NemesisArg::OneWay => Nemesis::OneWay,
                NemesisArg::MasterCut => Nemesis::MasterCut,
                NemesisArg::MasterKill => Nemesis::MasterKill,
                NemesisArg::MasterPause => Nemesis::MasterPause,
                NemesisArg::SlowDisk => Nemesis::SlowDisk,
                NemesisArg::Membership => Nemesis::Membership,
            })
            .collect(),
        history: args.history.clone(),
        clients: args.clients as usize,
        kv_clients: args.kv_clients as usize,
        names: args.names as usize,
        keys: args.keys as usize,
        replicas: if args.replicas == "5" { 5 } else { 3 },
        masters: args.masters as usize,
        think: std::time::Duration::from_millis(args.think_ms),
        plot: Some(
            args.plot
                .clone()
                .unwrap_or_else(|| args.history.with_extension("png")),
        ),
        bug: match args.inject_bug.as_deref() {
            None => None,
            Some("ack-before-commit") => Some(chaos::PlantedBug::AckBeforeCommit),
            Some("ignore-lease") => Some(chaos::PlantedBug::IgnoreLease),
            Some(other) => {
                eprintln!(
                    "ramcoord chaos: no planted bug named {other:?} (ack-before-commit, ignore-lease)"
                );
                return ExitCode::from(2);
            }
        },
    };
    let progress = |m: &str| eprintln!("chaos: {m}");
    let summary = match chaos::run(&cfg, &progress) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ramcoord chaos: {e}");
            return ExitCode::from(2);
        }
    };
    let text = std::fs::read_to_string(&cfg.history).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    for v in &summary.verdicts {
        match &v.verdict {
            Verdict::Linearizable => println!("{}: linearizable ({} operations)", v.name, v.ops),
            Verdict::Unknown => println!("{}: unknown (search budget exhausted)", v.name),
            Verdict::NotLinearizable(_) => {
                println!("{}: NOT linearizable; could not place:", v.name);
                for &at in &v.evidence {
                    println!("  {at}: {}", lines.get(at - 1).copied().unwrap_or(""));
                }
            }
        }
    }
    let t = &summary.tablet_ops;
    println!(
        "tablet mover: {} splits, {} migrations applied; {} refused (busy, one migration at a time), {} unknown",
        t.splits, t.migrations, t.refused, t.unknown
    );
    println!("put/get of table moves: not checked per key (a migration hands over a tablet, not its data)");
    match &summary.keys {
        Err(why) => println!("put/get of table kv: not checked: {why}"),
        Ok(keys) => {
            for v in keys {
                match &v.verdict {
                    Verdict::Linearizable => {
                        println!("key {}: linearizable ({} operations)", v.key, v.ops)
                    }
                    Verdict::Unknown => {
                        println!("key {}: unknown (search budget exhausted)", v.key)
                    }
                    Verdict::NotLinearizable(_) => {
                        println!("key {}: NOT linearizable; could not place:", v.key);
                        for &at in &v.evidence {
                            println!("  {at}: {}", lines.get(at - 1).copied().unwrap_or(""));
                        }
                    }
                }
            }
        }
    }
    if summary.open > 0 {
        println!("{} operations never completed", summary.open);
    }
    let s = &summary.serving;
    if s.atomic() {
        println!(
            "serving: {} requests served by {} masters, no key by two at once, none outside a lease",
            s.served, s.servers
        );
    } else {
        println!(
            "serving: of {} requests served by {} masters, {} were served by a master without the tablet or a lease, {} while another master held the key:",
            s.served, s.servers, s.unheld, s.twice
        );
        for e in &s.evidence {
            println!("  {e}");
        }
    }
    if summary.final_state.is_empty() {
        println!("final state: every master holds exactly what the map gives it; tablets cover every table once");
    } else {
        println!("final state:");
        for e in &summary.final_state {
            println!("  {e}");
        }
    }
    for f in &summary.faults {
        println!(
            "fault {:7.1}–{:7.1} s: {}",
            f.start_ns as f64 / 1e9,
            f.end_ns as f64 / 1e9,
            f.what
        );
    }
    println!("history: {}", cfg.history.display());
    if let Some(plot) = cfg.plot.as_ref().filter(|p| p.exists()) {
        println!("timeline: {}", plot.display());
    }
    let passed = summary.linearizable() && summary.atomic();
    if passed {
        let _ = std::fs::remove_dir_all(&cfg.dir);
    } else {
        println!("logs and serve logs kept in {}", cfg.dir.display());
    }
    println!("{}", summary.line());
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `lincheck --format tables`: every table name of a chaos history.
fn run_lincheck_tables(file: &PathBuf) -> ExitCode {
    use ramcoord::chaos::{history, tables};
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ramcoord lincheck: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let ops = match history::read(text.as_bytes()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ramcoord lincheck: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let lines: Vec<&str> = text.lines().collect();
    let line = |n: usize| lines.get(n - 1).map_or("", |l| l.trim());
    let mut out = String::new();
    let (mut bad, mut unknown) = (0, 0);
    let verdicts = tables::check_tables(&ops);
    for v in &verdicts {
        match &v.verdict {
            Verdict::Linearizable => outln!(
                out,
                "{}: linearizable ({} operation{})",
                v.name,
                v.ops,
                if v.ops == 1 { "" } else { "s" }
            ),
            Verdict::Unknown => {
                unknown += 1;
                outln!(out, "{}: unknown (search budget exhausted)", v.name);
            }
            Verdict::NotLinearizable(f) => {
                bad += 1;
                outln!(
                    out,
                    "{}: NOT linearizable: placed {} of {} operations; could not place:",
                    v.name,
                    f.placed_max,
                    v.ops
                );
                for &at in &v.evidence {
                    outln!(out, "  {at}: {}", line(at));
                    if let Some((_, done)) = ops
                        .iter()
                        .find(|o| o.invoke.1 == at)
                        .and_then(|o| o.complete.as_ref())
                    {
                        outln!(out, "  {done}: {}", line(*done));
                    }
                }
            }
        }
    }
    if bad > 0 {
        outln!(out, "not linearizable ({bad} of {} names)", verdicts.len());
    } else if unknown > 0 {
        outln!(out, "unknown ({unknown} of {} names)", verdicts.len());
    } else {
        outln!(out, "linearizable ({} names)", verdicts.len());
    }
    emit(&out);
    if bad > 0 {
        ExitCode::from(1)
    } else if unknown > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

fn run_sim(args: SimArgs) -> ExitCode {
    use ramcoord::sim::{self, FaultLevel, SimOptions};
    if args.list_bugs {
        for b in sim::BUGS {
            println!(
                "{:<22} {:<12} {} [caught by: {}]",
                b.name,
                b.workload,
                b.what,
                b.invariants.join(", ")
            );
        }
        return ExitCode::SUCCESS;
    }
    let workload = match args.workload {
        Workload::Raft => sim::Workload::Raft,
        Workload::Coordinator => sim::Workload::Coordinator,
    };
    let workload_name = args.workload.to_possible_value().expect("value");
    let workload_name = workload_name.get_name();
    let planted = args
        .inject_bug
        .as_deref()
        .and_then(|b| sim::BUGS.iter().find(|p| p.name == b));
    if let Some(sim::PlantedBug {
        name,
        workload: needs,
        ..
    }) = planted
    {
        if *needs != workload_name {
            eprintln!(
                "ramcoord sim: bug {name:?} lives in the {needs} workload; add --workload {needs}"
            );
            return ExitCode::from(2);
        }
    }
    let bugs = match &args.inject_bug {
        None => Default::default(),
        Some(name) => match sim::bug_by_name(name) {
            Some(b) => b,
            None => {
                let known: Vec<&str> = sim::BUGS.iter().map(|p| p.name).collect();
                eprintln!(
                    "ramcoord sim: unknown bug {name:?}; known: {}",
                    known.join(", ")
                );
                return ExitCode::from(2);
            }
        },
    };
    let faults = match args.faults {
        Faults::None => FaultLevel::None,
        Faults::Standard => FaultLevel::Standard,
        Faults::Heavy => FaultLevel::Heavy,
    };
    let replicas_for = |seed: u64| {
        if args.replicas == 0 {
            if seed % 2 == 0 {
                3
            } else {
                5
            }
        } else {
            args.replicas
        }
    };
    let opts_for = |seed: u64, trace: bool| SimOptions {
        seed,
        replicas: replicas_for(seed),
        faults,
        bugs,
        trace,
        workload,
        masters: args.masters,
    };

    if let Some(seed) = args.seed {
        let out = sim::run(opts_for(seed, args.trace));
        let mut text = String::new();
        for line in &out.trace {
            outln!(text, "{line}");
        }
        let s = &out.stats;
        outln!(
            text,
            "seed {seed}: {} replicas, {} events, {} leaders, applied {}, ops ok {} unknown {}, crashes {}",
            replicas_for(seed), s.events, s.leaders, s.applied_max, s.ops_ok, s.ops_unknown, s.crashes
        );
        let failed = match &out.violation {
            None => {
                outln!(text, "sim: 1 passed, 0 failed");
                false
            }
            Some(v) => {
                outln!(text, "seed {seed} FAILED: {}: {}", v.invariant, v.detail);
                outln!(text, "sim: 0 passed, 1 failed");
                true
            }
        };
        if args.trace {
            outln!(text, "trace-hash: {:016x}", out.trace_hash);
        }
        emit(&text);
        return if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        };
    }

    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let next = std::sync::atomic::AtomicU64::new(0);
    let caught = std::sync::atomic::AtomicBool::new(false);
    let catches = |r: &sim::SimOutcome| {
        planted.is_some_and(|bug| {
            r.violation
                .as_ref()
                .is_some_and(|v| bug.invariants.contains(&v.invariant))
        })
    };
    let started = std::time::Instant::now();
    let mut results: Vec<sim::SimOutcome> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        if args.stop_when_caught
                            && caught.load(std::sync::atomic::Ordering::Relaxed)
                        {
                            break;
                        }
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= args.seeds {
                            break;
                        }
                        let r = sim::run(opts_for(args.first_seed + i, false));
                        if catches(&r) {
                            caught.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        mine.push(r);
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("simulator worker panicked"))
            .collect()
    });
    results.sort_by_key(|r| r.seed);
    let elapsed = started.elapsed().as_secs_f64();
    let failed: Vec<&sim::SimOutcome> = results.iter().filter(|r| r.violation.is_some()).collect();
    let mut text = String::new();
    for r in &failed {
        let v = r.violation.as_ref().expect("filtered");
        outln!(
            text,
            "seed {} FAILED: {}: {}",
            r.seed,
            v.invariant,
            v.detail
        );
    }
    if let Some(first) = failed.first() {
        let bug = args
            .inject_bug
            .as_deref()
            .map(|b| format!(" --inject-bug {b}"))
            .unwrap_or_default();
        let masters = args
            .masters
            .map(|m| format!(" --masters {m}"))
            .unwrap_or_default();
        outln!(
            text,
            "replay: ramcoord sim --workload {workload_name} --seed {} --faults {} --replicas {}{masters}{bug} --trace",
            first.seed,
            args.faults.to_possible_value().expect("value").get_name(),
            replicas_for(first.seed)
        );
    }
    let events: u64 = results.iter().map(|r| r.stats.events).sum();
    let crashes: u64 = results.iter().map(|r| r.stats.crashes).sum();
    let ops: u64 = results.iter().map(|r| r.stats.ops_ok).sum();
    let sum = |f: fn(&sim::SimStats) -> u64| -> u64 { results.iter().map(|r| f(&r.stats)).sum() };
    outln!(
        text,
        "coverage: {} leaders, {} torn writes, {} restarts that lost acknowledged entries, {} snapshots installed, {} written off the Raft thread, {} membership changes ({} replicas replaced after losing their disk), {} transfers, {} reads, {} forged messages refused",
        sum(|s| s.leaders),
        sum(|s| s.torn_writes),
        sum(|s| s.tails_lost),
        sum(|s| s.snapshots_installed),
        sum(|s| s.snapshots_written),
        sum(|s| s.conf_changes),
        sum(|s| s.wipes),
        sum(|s| s.transfers),
        sum(|s| s.reads),
        sum(|s| s.forged)
    );
    if workload == sim::Workload::Coordinator {
        outln!(
            text,
            "coordinator: {} operations completed ({} rolled forward by a later leader), {} pushes ({} landed, {} fenced off by term, {} refused as not granted after {} write grants), {} master crashes, {} master drains ({} told gone before their limit), {} invalid records injected ({} applied as rejections across replicas); exactly once: {} client retries, {} answered as applied already, {} duplicate records applied as nothing, {} outcomes unknown",
            sum(|s| s.coord_ops_completed),
            sum(|s| s.roll_forwards),
            sum(|s| s.pushes),
            sum(|s| s.pushes_applied),
            sum(|s| s.stale_pushes_refused),
            sum(|s| s.ungranted_pushes_refused),
            sum(|s| s.write_grants),
            sum(|s| s.master_crashes),
            sum(|s| s.master_leaves),
            sum(|s| s.master_drains_done),
            sum(|s| s.invalid_injected),
            sum(|s| s.invalid_applied),
            sum(|s| s.op_retries),
            sum(|s| s.retries_answered_applied),
            sum(|s| s.duplicate_records),
            sum(|s| s.unknown_outcomes)
        );
    }
    outln!(
        text,
        "{} seeds in {elapsed:.1}s ({:.1} seeds/s, {threads} threads): {events} events, {crashes} crashes, {ops} client ops acknowledged",
        results.len(),
        results.len() as f64 / elapsed.max(1e-9)
    );
    outln!(
        text,
        "sim: {} passed, {} failed",
        results.len() - failed.len(),
        failed.len()
    );
    if let Some(bug) = planted {
        let caught = failed
            .iter()
            .filter(|r| {
                r.violation
                    .as_ref()
                    .is_some_and(|v| bug.invariants.contains(&v.invariant))
            })
            .count();
        let mut other: std::collections::BTreeMap<&str, usize> = Default::default();
        for r in &failed {
            let v = r.violation.as_ref().expect("filtered");
            if !bug.invariants.contains(&v.invariant) {
                *other.entry(v.invariant).or_default() += 1;
            }
        }
        let other: Vec<String> = other.iter().map(|(k, n)| format!("{k} ({n})")).collect();
        outln!(
            text,
            "planted bug {}: caught by {caught} seeds through its invariants ({}); other failures: {}",
            bug.name,
            bug.invariants.join(", "),
            if other.is_empty() {
                "none".to_string()
            } else {
                other.join(", ")
            }
        );
        emit(&text);
        if args.expect_caught {
            return if caught > 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            };
        }
    } else {
        emit(&text);
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn run_storage_crash(
    iterations: u64,
    seed: u64,
    dir: Option<PathBuf>,
    child: bool,
    term: u64,
) -> ExitCode {
    use ramcoord::storage_crash;
    if child {
        let dir = dir.expect("clap requires --dir with --child");
        if let Err(e) = storage_crash::child(&dir, term) {
            eprintln!("ramcoord storage-crash child: {e}");
        }
        return ExitCode::from(2);
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ramcoord storage-crash: cannot find my own executable: {e}");
            return ExitCode::from(2);
        }
    };
    let (dir, temporary) = match dir {
        Some(d) => (d, false),
        None => (storage_crash::temp_dir(), true),
    };
    let started = std::time::Instant::now();
    match storage_crash::parent(&exe, &dir, iterations, seed) {
        Ok(r) => {
            println!(
                "storage-crash: {} iterations in {:.1}s, {} torn tails repaired, {} entries verified up to durable index {}",
                r.iterations,
                started.elapsed().as_secs_f64(),
                r.torn_tails,
                r.entries_checked,
                r.durable_max
            );
            if temporary {
                let _ = std::fs::remove_dir_all(&dir);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "ramcoord storage-crash: FAILED: {e} (log kept in {})",
                dir.display()
            );
            ExitCode::from(1)
        }
    }
}

fn run_coordinator(args: CoordinatorArgs) -> ExitCode {
    use ramcoord::node::NodeConfig;
    use ramcoord_net::tcp::{TcpConfig, TcpTransport};
    if args.config.checked("coordinator") {
        return ExitCode::SUCCESS;
    }
    init_logging();
    if args.fault_signals {
        if let Err(e) =
            slow_disk_on_signals(std::time::Duration::from_millis(args.fault_sync_delay_ms))
        {
            eprintln!("ramcoord coordinator: --fault-signals: {e}");
            return ExitCode::from(2);
        }
    }
    let ids: Vec<u64> = args.peers.0.iter().map(|(i, _, _)| *i).collect();
    if !ids.contains(&args.id) {
        eprintln!(
            "ramcoord coordinator: --id {} is not in --peers ({ids:?})",
            args.id
        );
        return ExitCode::from(2);
    }
    let tls = match args.tls.load(ramcoord_net::tls::Identity::Replica(args.id)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ramcoord coordinator: {e}");
            return ExitCode::from(2);
        }
    };
    if tls.is_none() {
        tracing::warn!(
            "running WITHOUT TLS (--insecure): anyone who reaches this port can act as a replica, \
             a master or an admin"
        );
    }
    let mut tcp = TcpConfig::new(args.id, args.cluster, args.listen);
    tcp.tls = tls.clone();
    // The replica's thread reads its connections itself: one wake-up per
    // message instead of two (reader thread, then replica).
    tcp.inline_io = true;
    tcp.io_uring = args.io == IoArg::Uring;
    tcp.io_threads = usize::from(args.cores) - 1;
    tcp.pin_cpus = args.pin_cpus.clone();
    if !args.pin_cpus.is_empty() && args.pin_cpus.len() < usize::from(args.cores) {
        tracing::warn!(
            cpus = ?args.pin_cpus,
            cores = args.cores,
            "--pin-cpus lists fewer CPUs than --cores threads: some threads share a CPU (entries wrap around)"
        );
    }
    if args.cores > 1 && args.io != IoArg::Uring {
        eprintln!(
            "ramcoord coordinator: --cores {} needs --io uring",
            args.cores
        );
        return ExitCode::from(2);
    }
    for (id, addr, _) in &args.peers.0 {
        if *id != args.id {
            tcp.peers.insert(*id, *addr);
        }
    }
    let mut cfg = NodeConfig::new(args.id, ids, args.data_dir);
    cfg.tls = tls.is_some();
    cfg.peer_addrs = args
        .peers
        .0
        .iter()
        .map(|(id, _, written)| (*id, written.clone()))
        .collect();
    cfg.durability = match args.durability {
        DurabilityArg::Fsync => ramcoord_log::disk::Durability::Fsync,
        DurabilityArg::Memory => ramcoord_log::disk::Durability::Memory,
    };
    cfg.tick = std::time::Duration::from_millis(args.tick_ms.max(1));
    cfg.election_ticks = args.election_ticks.max(2);
    cfg.coordinator.master_timeout_ticks = args.master_timeout_ms / args.tick_ms.max(1);
    if cfg.coordinator.master_timeout_ticks < 10 {
        eprintln!(
            "ramcoord coordinator: --master-timeout-ms {} is {} ticks of {} ms; it must be at least 10 ticks (masters' leases are 9/10 of it less two ticks)",
            args.master_timeout_ms,
            cfg.coordinator.master_timeout_ticks,
            args.tick_ms.max(1)
        );
        return ExitCode::from(2);
    }
    let tick_ms = args.tick_ms.max(1);
    cfg.coordinator.heartbeat_interval_ticks = args
        .heartbeat_interval_ms
        .map_or(cfg.coordinator.master_timeout_ticks / 10, |ms| ms / tick_ms)
        .max(1);
    cfg.coordinator.heartbeats_per_tick_max = match args.heartbeats_per_s_max {
        0 => 0,
        per_s => (per_s.saturating_mul(tick_ms) / 1000).max(1),
    };
    // Over RDMA a push is acknowledged when it lands in the master's
    // memory, not when the master has read it: whole configurations there,
    // so that a write landing over one not yet read loses nothing.
    cfg.coordinator.region_parts = matches!(args.transport, TransportArg::Tcp);
    cfg.push_delay = std::time::Duration::from_millis(args.push_delay_ms);
    match args.inject_bug.as_deref() {
        None => {}
        Some("ack-before-commit") => {
            cfg.bugs.ack_before_commit = true;
            tracing::warn!("PLANTED BUG: operations answered before their commit point (a test of the chaos checker)");
        }
        Some(other) => {
            eprintln!("ramcoord coordinator: no planted bug named {other:?} (ack-before-commit)");
            return ExitCode::from(2);
        }
    }
    cfg.join = args.join;
    let http = args.http.map(|addr| {
        let tls = if args.http_plain { None } else { tls.clone() };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let peers: std::collections::BTreeMap<u64, String> = args
            .http_peers
            .as_ref()
            .map(|p| {
                p.0.iter()
                    .map(|(id, _, written)| (*id, format!("{scheme}://{written}/")))
                    .collect()
            })
            .unwrap_or_default();
        (addr, tls, peers)
    });
    if args.http.is_some() && args.http_plain && cfg.tls {
        tracing::warn!(
            "--http-plain: the HTTP endpoint is plain HTTP although the cluster runs with TLS:              anyone who reaches it can read the cluster's status and metrics"
        );
    }
    cfg.spin = std::time::Duration::from_micros(args.spin_us);
    cfg.snapshot_entries = args.snapshot_entries.max(1);
    // Pinned once the transport's own threads (accept, I/O) have started:
    // they must not inherit the replica's CPU.
    let pin = args.pin_cpus.first().copied();
    match args.transport {
        TransportArg::Tcp => match TcpTransport::start(tcp) {
            Ok(t) => {
                if let Some(cpu) = pin {
                    ramcoord_net::affinity::pin_current_thread(cpu, "replica");
                }
                let admission = Some(t.admission());
                drive_coordinator(cfg, t, http, admission)
            }
            Err(e) => {
                eprintln!("ramcoord coordinator: {e}");
                ExitCode::from(2)
            }
        },
        #[cfg(feature = "rdma")]
        TransportArg::Rdma => {
            use ramcoord_net::hybrid::HybridTransport;
            use ramcoord_net::rdma_transport::RdmaConfig;
            if let Err(e) = ramcoord::transport::check_rdma() {
                eprintln!("ramcoord coordinator: --transport rdma: {e}");
                return ExitCode::from(2);
            }
            if tls.is_some() {
                tracing::info!(
                    "--transport rdma: RDMA connections are admitted only with a pass issued over \
                     mutual TLS; RDMA traffic itself is neither encrypted nor signed (keep the \
                     fabric private)"
                );
            }
            let mut r = RdmaConfig::new(args.id, args.cluster, args.listen);
            r.peers = tcp.peers.clone();
            match HybridTransport::start(tcp, r) {
                Ok(t) => {
                    if let Some(cpu) = pin {
                        ramcoord_net::affinity::pin_current_thread(cpu, "replica");
                    }
                    let admission = Some(t.tcp().admission());
                    drive_coordinator(cfg, t, http, admission)
                }
                Err(e) => {
                    eprintln!("ramcoord coordinator: {e}");
                    ExitCode::from(2)
                }
            }
        }
        #[cfg(not(feature = "rdma"))]
        TransportArg::Rdma => {
            let e = ramcoord::transport::check_rdma().expect_err("built without rdma");
            eprintln!("ramcoord coordinator: {e}");
            ExitCode::from(2)
        }
    }
}

/// A flag SIGTERM and SIGINT set (a graceful stop); a second signal
/// while it is set exits at once with status 1.
fn graceful_stop_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let registered = signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone())
            .and_then(|_| signal_hook::flag::register(sig, stop.clone()));
        if let Err(e) = registered {
            tracing::warn!(signal = sig, error = %e, "no graceful stop on this signal");
        }
    }
    stop
}

/// Runs a coordinator replica on `transport` until it fails.
fn drive_coordinator<T: ramcoord_net::Transport>(
    cfg: ramcoord::node::NodeConfig,
    transport: T,
    http: Option<(
        std::net::SocketAddr,
        Option<ramcoord_net::tls::Tls>,
        std::collections::BTreeMap<u64, String>,
    )>,
    admission: Option<std::sync::Arc<ramcoord_net::admission::Admission>>,
) -> ExitCode {
    use ramcoord::node::CoordinatorNode;
    let hand_off_limit =
        (cfg.tick * cfg.election_ticks as u32 * 4).max(std::time::Duration::from_millis(200));
    let mut node = match CoordinatorNode::open(cfg, transport) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("ramcoord coordinator: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some((addr, tls, pages)) = http {
        let observed = node.observe(admission, pages);
        let https = tls.is_some();
        match ramcoord::http::serve(addr, tls, Box::new(move |path| observed.route(path))) {
            Ok(bound) => tracing::info!(
                address = %bound,
                scheme = if https { "https" } else { "http" },
                "HTTP endpoint: /metrics /health /ready and the status page at /"
            ),
            Err(e) => {
                eprintln!("ramcoord coordinator: {e}");
                return ExitCode::from(2);
            }
        }
    }
    // SIGTERM or SIGINT: a graceful stop (a second one stops at once,
    // exit 1).
    let stop = graceful_stop_flag();
    let fail = |e: ramcoord::node::NodeError| {
        tracing::error!(error = %e, "stopping");
        eprintln!("ramcoord coordinator: {e}");
        ExitCode::from(1)
    };
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if let Err(e) = node.run_for(std::time::Duration::from_millis(100)) {
            return fail(e);
        }
    }
    tracing::info!("asked to stop: stopping gracefully");
    match node.hand_off_leadership() {
        Ok(Some(to)) => {
            tracing::info!(to, "handing leadership over before stopping");
            // Bounded: a hand-over that does not finish within a few
            // election timeouts is abandoned (the others elect one).
            let deadline = std::time::Instant::now() + hand_off_limit;
            while node.status().0 == ramcoord_log::Role::Leader
                && std::time::Instant::now() < deadline
            {
                if let Err(e) = node.run_for(std::time::Duration::from_millis(5)) {
                    return fail(e);
                }
            }
            match node.status().0 {
                ramcoord_log::Role::Leader => {
                    tracing::warn!(to, "leadership not handed over in time; stopping anyway")
                }
                _ => tracing::info!(to, "leadership handed over"),
            }
        }
        Ok(None) => {}
        Err(e) => return fail(e),
    }
    if let Err(e) = node.flush_for_exit() {
        return fail(e);
    }
    tracing::info!("log flushed; stopped");
    ExitCode::SUCCESS
}

fn run_dev(dir: Option<PathBuf>, coordinators: usize, masters: usize) -> ExitCode {
    let binary = match std::env::current_exe() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("ramcoord dev: cannot find its own binary: {e}");
            return ExitCode::from(2);
        }
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("ramcoord dev: cannot catch signal {sig}: {e}");
            return ExitCode::from(2);
        }
    }
    let cfg = ramcoord::dev::DevConfig {
        binary,
        dir,
        coordinators,
        masters,
    };
    match ramcoord::dev::run(cfg, stop, &mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ramcoord dev: {e}");
            ExitCode::from(1)
        }
    }
}

fn run_restore(
    file: &std::path::Path,
    id: u64,
    peers: &Peers,
    data_dir: &std::path::Path,
    term_gap: u64,
    cluster: u64,
) -> ExitCode {
    use ramcoord::snapshot_file::{restore_into, Backup};
    let voters: Vec<u64> = peers.0.iter().map(|(i, _, _)| *i).collect();
    if !voters.contains(&id) {
        eprintln!("ramcoord restore: --id {id} is not in --peers ({voters:?})");
        return ExitCode::from(2);
    }
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("ramcoord restore: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let backup = match Backup::decode(&bytes) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("ramcoord restore: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    match restore_into(&backup, data_dir, &voters, term_gap, cluster) {
        Ok(r) => {
            let peers_arg: Vec<String> = peers
                .0
                .iter()
                .map(|(i, _, written)| format!("{i}={written}"))
                .collect();
            let listen = peers
                .0
                .iter()
                .find(|(i, _, _)| *i == id)
                .map(|(_, _, w)| w.clone())
                .unwrap_or_default();
            println!(
                "restored {} into {}: index {}, configuration version {} (moved ahead from the backup's), {} servers, {} tables; the new group starts at term {}\nstart it with: ramcoord coordinator --cluster {cluster} --id {id} --listen {listen} --peers {} --data-dir {}\nthen restart every master: they enlist afresh and the restored servers' tablets move to them (a master that kept running may hold configuration newer than the backup)",
                file.display(),
                data_dir.display(),
                r.index,
                r.version,
                r.servers,
                r.tables,
                r.term,
                peers_arg.join(","),
                data_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ramcoord restore: {e}");
            ExitCode::from(1)
        }
    }
}

fn run_ctl(args: CtlArgs) -> ExitCode {
    let json = args.json;
    match ctl_command(args) {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        // Every replica's line, some unhealthy: printed as any answer,
        // exit 1.
        Err(CtlFailure::Unhealthy(out)) => {
            println!("{out}");
            ExitCode::from(1)
        }
        Err(CtlFailure::Failed(e)) if json => {
            println!("{}", serde_json::json!({ "error": e }));
            ExitCode::from(1)
        }
        Err(CtlFailure::Failed(e)) => {
            eprintln!("ramcoord ctl: {e}");
            ExitCode::from(1)
        }
    }
}

/// Why `ctl` exits 1.
enum CtlFailure {
    /// An error (one line).
    Failed(String),
    /// `endpoint health` found a replica unhealthy (the whole answer).
    Unhealthy(String),
}

impl From<String> for CtlFailure {
    fn from(e: String) -> Self {
        CtlFailure::Failed(e)
    }
}

/// Runs one `ctl` command: what to print, or the error.
fn ctl_command(args: CtlArgs) -> Result<String, CtlFailure> {
    use ramcoord::ctl::{Ctl, CtlOptions};
    let coordinators = args
        .coordinators
        .iter()
        .map(|a| ramcoord::addr::resolve(a).map_err(|e| format!("--coordinators: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let cmd = args.command;
    let offline = matches!(
        cmd,
        ramcoord::ctl::CtlCommand::Snapshot(ramcoord::ctl::SnapshotCommand::Status { .. })
    );
    if coordinators.is_empty() && !offline {
        return Err(CtlFailure::Failed(
            "--coordinators HOST:PORT[,...] is needed: any replica of the group".into(),
        ));
    }
    if offline {
        // Reads a file; never connects.
        let mut ctl = Ctl::new(CtlOptions {
            coordinators,
            cluster: args.cluster,
            json: args.json,
            timeout: std::time::Duration::from_secs(1),
            wait: false,
            security: ramcoord::client::ClientSecurity::insecure(),
        });
        return ctl.run(cmd).map_err(|e| CtlFailure::Failed(e.to_string()));
    }
    let want = match args.role {
        RoleArg::Admin => ramcoord_net::tls::Identity::Admin,
        RoleArg::Reader => ramcoord_net::tls::Identity::Reader,
    };
    let security = match args.tls.load(want)? {
        Some(tls) => ramcoord::client::ClientSecurity::with(tls),
        None => ramcoord::client::ClientSecurity {
            tls: None,
            admin: matches!(args.role, RoleArg::Admin),
        },
    };
    let mut ctl = Ctl::new(CtlOptions {
        coordinators,
        cluster: args.cluster,
        json: args.json,
        timeout: std::time::Duration::from_secs_f64(args.timeout.max(0.01)),
        wait: !args.no_wait,
        security,
    });
    if let ramcoord::ctl::CtlCommand::Watch { from, count } = cmd {
        // Streamed: each change printed (and flushed) as it arrives.
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let mut each = |c: &ramcoord::protocol::Change| {
            writeln!(out, "{}", ramcoord::ctl::change_json(c))
                .and_then(|()| out.flush())
                .is_ok()
        };
        return ctl
            .watch(from, count, &mut each)
            .map(|_| String::new())
            .map_err(|e| CtlFailure::Failed(e.to_string()));
    }
    ctl.run(cmd).map_err(|e| match e {
        ramcoord::ctl::CtlError::Unhealthy(out) => CtlFailure::Unhealthy(out),
        e => CtlFailure::Failed(e.to_string()),
    })
}

fn run_demo(args: DemoArgs) -> ExitCode {
    let binary = match std::env::current_exe() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("ramcoord demo: cannot find its own binary: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg = ramcoord::demo::DemoConfig {
        binary,
        dir: args.dir,
        push_delay: std::time::Duration::from_millis(args.push_delay_ms),
        tablets: args.tablets.max(1),
        keys: args.keys.max(1),
    };
    match ramcoord::demo::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ramcoord demo: FAILED: {e}");
            ExitCode::from(1)
        }
    }
}

/// `--fault-signals`: a thread that switches the log's slow-disk hook on
/// at SIGUSR1 and off at SIGUSR2 (see `ramcoord_log::disk::fault`).
fn slow_disk_on_signals(delay: std::time::Duration) -> std::io::Result<()> {
    use signal_hook::consts::{SIGUSR1, SIGUSR2};
    let mut signals = signal_hook::iterator::Signals::new([SIGUSR1, SIGUSR2])?;
    tracing::warn!(
        delay_ms = delay.as_millis() as u64,
        "fault hook armed: SIGUSR1 slows every log sync, SIGUSR2 ends it"
    );
    std::thread::Builder::new()
        .name("fault-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let on = sig == SIGUSR1;
                ramcoord_log::disk::fault::set_sync_delay(if on {
                    delay
                } else {
                    std::time::Duration::ZERO
                });
                tracing::warn!(
                    on,
                    "fault hook: slow disk {}",
                    if on { "on" } else { "off" }
                );
            }
        })?;
    Ok(())
}

fn run_master(args: MasterArgs) -> ExitCode {
    use ramcoord::master::process::{run, MasterExit, MasterProcessConfig};
    if args.config.checked("master") {
        return ExitCode::SUCCESS;
    }
    init_logging();
    let tls = match args.tls.load(ramcoord_net::tls::Identity::Master) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ramcoord master: {e}");
            return ExitCode::from(2);
        }
    };
    if args.http.is_some() && args.http_plain && tls.is_some() {
        tracing::warn!(
            "--http-plain: the HTTP endpoint is plain HTTP although the cluster runs with TLS"
        );
    }
    // SIGTERM or SIGINT: drain, then exit 0 (a second one stops at once,
    // exit 1).
    let stop = graceful_stop_flag();
    let cfg = MasterProcessConfig {
        stop: Some(stop),
        http: args
            .http
            .map(|a| (a, if args.http_plain { None } else { tls.clone() })),
        listen: args.listen,
        advertise: args.advertise,
        coordinators: args.coordinators,
        cluster: args.cluster,
        heartbeat: std::time::Duration::from_millis(args.heartbeat_ms.max(1)),
        transport: args.transport.into(),
        region_poll: std::time::Duration::from_micros(args.region_poll_us),
        tls,
        serve_log: args.serve_log,
        bugs: match args.inject_bug.as_deref() {
            None => Default::default(),
            Some("ignore-lease") => ramcoord::master::MasterBugs {
                ignore_lease: true,
                ..Default::default()
            },
            Some(other) => {
                eprintln!("ramcoord master: no planted bug named {other:?} (ignore-lease)");
                return ExitCode::from(2);
            }
        },
    };
    if cfg.tls.is_none() {
        tracing::warn!("running WITHOUT TLS (--insecure): anyone who reaches this port can write its configuration");
    }
    match run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ MasterExit::DeclaredCrashed(_)) => {
            tracing::warn!("{e}");
            eprintln!("ramcoord master: {e}");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("ramcoord master: {e}");
            ExitCode::from(2)
        }
    }
}

/// Logs to stderr as `--log-level` and `--log-format` say (without
/// `--log-level`, RAMCOORD_LOG picks the level; default info).
fn init_logging() {
    let (level, format) = LOGGING.get().cloned().unwrap_or((None, LogFormat::Text));
    let filter = level
        .and_then(|l| tracing_subscriber::EnvFilter::try_new(l).ok())
        .or_else(|| tracing_subscriber::EnvFilter::try_from_env("RAMCOORD_LOG").ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}
