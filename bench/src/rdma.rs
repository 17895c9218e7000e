//! `ramcoord-bench rdma` (feature `rdma`; run inside the soft-RoCE VM by
//! `BENCH=1 scripts/rdma-vm.sh`).
//!
//! Two comparisons, each within one run:
//!
//! - **verbs**: a one-sided RDMA WRITE of N bytes (post → completion: the
//!   bytes are in the peer's memory, no peer CPU involved) against a
//!   two-sided SEND of the same N bytes (post → completion: the peer's NIC
//!   took it into a posted receive) and against a two-sided echo (SEND,
//!   the peer's thread receives it and SENDs it back: what an RPC costs).
//! - **commit**: a 3-replica cluster with 2 masters, the same client and
//!   operations, once with `--transport rdma` (Raft by one-sided writes
//!   into the followers' rings, configuration by RDMA WRITE) and once with
//!   `--transport tcp` (loopback inside the VM).
//!
//! Soft-RoCE is a kernel driver on an emulated CPU: these figures measure
//! the protocol's shape (round trips, who wakes whom), not the speed of
//! real RDMA hardware. Read the ratios, not the microseconds.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ramcoord::local_cluster::{LocalCluster, LocalClusterConfig};
use ramcoord_net::rdma::{RdmaConn, RdmaListener, RegionMemory, RemoteRegion};
use ramcoord_net::rdma_transport::{RdmaConfig, RdmaTransport};
use ramcoord_net::tcp::{TcpConfig, TcpTransport};
use ramcoord_net::{Event, Transport};
use serde::Serialize;

use crate::cluster::{noop, one_op, op_for};
use crate::dist::{Dist, Recorder};

/// One message size's verbs figures.
#[derive(Serialize, Clone, Debug)]
pub struct VerbsRow {
    /// Bytes per operation.
    pub bytes: usize,
    /// One-sided write, post → completion.
    pub write: Dist,
    /// Two-sided send, post → completion.
    pub send: Dist,
    /// Two-sided echo round trip (send, the peer's thread sends it back).
    pub echo: Dist,
    /// write p50 / send p50.
    pub write_over_send: f64,
    /// write p50 / echo p50.
    pub write_over_echo: f64,
}

/// A message's round trip through each transport (64 B, echoed by the
/// peer's event loop): where the transport's own threads show.
#[derive(Serialize, Clone, Debug)]
pub struct TransportRow {
    /// `RdmaTransport` (ring writes; each loop run by its owner's thread).
    pub rdma: Dist,
    /// The same, both threads pinned to CPU 0.
    pub rdma_same_cpu: Dist,
    /// The same, the measuring thread on CPU 0 and the echoing one on 1.
    pub rdma_apart: Dist,
    /// `TcpTransport` with inline I/O (the replica's setting), loopback.
    pub tcp: Dist,
    /// rdma p50 / verbs echo p50 (64 B): the cost of the transport's
    /// threads and ring over the bare verbs round trip.
    pub rdma_over_verbs_echo: f64,
    /// rdma p50 / tcp p50.
    pub rdma_over_tcp: f64,
}

/// One transport's commit figures.
#[derive(Serialize, Clone, Debug)]
pub struct CommitRow {
    /// `tcp` or `rdma`.
    pub transport: String,
    /// Commit point as the client sees it.
    pub commit: Dist,
    /// Commit point as the leader measured it.
    pub commit_at_leader: Dist,
    /// A no-op record through the log.
    pub noop: Dist,
}

/// One fan-out size's configuration push, over each transport.
#[derive(Serialize, Clone, Debug)]
pub struct PushRow {
    /// Masters pushed to.
    pub masters: usize,
    /// Encoded region bytes per master.
    pub region_bytes: usize,
    /// RDMA: one RDMA WRITE per master, all posted from the coordinator's
    /// loop at once; push started → every write's completion (a reliable
    /// connection completes a write once the bytes are in the master's
    /// memory; no master thread runs).
    pub rdma: Dist,
    /// RDMA: push started → every write posted (the coordinator loop's own
    /// share: encoding, queueing, one post per master); the rest of `rdma`
    /// is the NIC's, here soft-RoCE's on the emulated CPU.
    pub rdma_posted: Dist,
    /// TCP (the `push` scenario in this VM): push started → every
    /// acknowledgement back (each master's transport wakes to apply it).
    pub tcp: Dist,
}

pub use crate::RdmaPart as Part;

/// Everything `rdma` measured (a part not run is empty, its ratios null).
#[derive(Serialize, Clone, Debug)]
pub struct RdmaReport {
    /// Per message size.
    pub verbs: Vec<VerbsRow>,
    /// A message round trip through the transports.
    pub transport: Option<TransportRow>,
    /// In the order of `--commit-transports` (TCP, then RDMA by default).
    pub commit: Vec<CommitRow>,
    /// Per fan-out size.
    pub push: Vec<PushRow>,
    /// RDMA: push to 100 masters p50 / push to 1 p50.
    pub push_100_over_1_rdma: f64,
    /// TCP in the same VM: push to 100 masters p50 / push to 1 p50.
    pub push_100_over_1_tcp: f64,
    /// RDMA / TCP, client-side commit p50.
    pub commit_rdma_over_tcp: f64,
    /// RDMA / TCP, leader-side commit p50.
    pub leader_commit_rdma_over_tcp: f64,
    /// RDMA / TCP, no-op p50.
    pub noop_rdma_over_tcp: f64,
}

/// What `run` is asked to do.
pub struct RdmaOptions<'a> {
    /// The RDMA devices' addresses: the first for the coordinator's side,
    /// the last for the peers (masters, followers' hosts).
    pub hosts: &'a [IpAddr],
    /// The `ramcoord` binary (with `--features rdma`).
    pub ramcoord: &'a Path,
    /// Operations of each verb per size, and transport round trips.
    pub verbs_ops: u64,
    /// Cluster operations per transport.
    pub commit_ops: u64,
    /// Push rounds per fan-out size and transport.
    pub push_rounds: usize,
    /// What to run.
    pub parts: &'a [Part],
    /// The commit part's transports, in order (`tcp`, `rdma`).
    pub commit_transports: &'a [String],
}

/// Runs the comparisons asked for (see the module docs).
pub fn run(o: &RdmaOptions, progress: &dyn Fn(&str)) -> Result<RdmaReport, String> {
    let host = *o.hosts.first().ok_or("no --hosts")?;
    let far = *o.hosts.last().ok_or("no --hosts")?;
    let verbs_ops = o.verbs_ops;
    let mut verbs = Vec::new();
    if o.parts.contains(&Part::Verbs) || o.parts.contains(&Part::Transport) {
        for (i, &bytes) in [64usize, 4096].iter().enumerate() {
            progress(&format!("verbs: {bytes} B, {verbs_ops} of each"));
            verbs.push(verbs_row(
                SocketAddr::new(host, 7600 + i as u16),
                bytes,
                verbs_ops,
            )?);
        }
    }
    let mut transport = None;
    if o.parts.contains(&Part::Transport) {
        progress(&format!("transports: {verbs_ops} round trips of 64 B each"));
        transport = Some(transport_row(host, verbs_ops, verbs[0].echo.p50_us)?);
    }
    let mut commit = Vec::new();
    if o.parts.contains(&Part::Commit) {
        for transport in o.commit_transports {
            progress(&format!(
                "commit over {transport}: 3 replicas, 2 masters, {} operations",
                o.commit_ops
            ));
            commit.push(commit_row(o.hosts, o.ramcoord, transport, o.commit_ops)?);
        }
    }
    let mut push = Vec::new();
    if o.parts.contains(&Part::Push) {
        // Ports of their own per size: a dropped RDMA transport's
        // listener outlives it (its accept thread blocks in the kernel).
        for (k, (m, base_port)) in [(1usize, 7700u16), (10, 7710), (100, 7730)]
            .into_iter()
            .enumerate()
        {
            progress(&format!(
                "push to {m} masters, {} rounds each over rdma and tcp",
                o.push_rounds
            ));
            let (rdma, rdma_posted, region_bytes) =
                push_rdma(host, far, (7690 + k as u16, base_port), m, o.push_rounds)?;
            let tcp = crate::push::push(m, o.push_rounds)?;
            push.push(PushRow {
                masters: m,
                region_bytes,
                rdma,
                rdma_posted,
                tcp: tcp.acked,
            });
        }
    }
    let by = |t: &str| commit.iter().find(|c| c.transport == t);
    let r = |f: fn(&CommitRow) -> f64| match (by("rdma"), by("tcp")) {
        (Some(a), Some(b)) => f(a) / f(b).max(1.0),
        _ => f64::NAN,
    };
    let fan = |f: fn(&PushRow) -> f64| match (
        push.iter().find(|p| p.masters == 100),
        push.iter().find(|p| p.masters == 1),
    ) {
        (Some(a), Some(b)) => f(a) / f(b).max(1.0),
        _ => f64::NAN,
    };
    Ok(RdmaReport {
        commit_rdma_over_tcp: r(|c| c.commit.p50_us),
        leader_commit_rdma_over_tcp: r(|c| c.commit_at_leader.p50_us),
        noop_rdma_over_tcp: r(|c| c.noop.p50_us),
        push_100_over_1_rdma: fan(|p| p.rdma.p50_us),
        push_100_over_1_tcp: fan(|p| p.tcp.p50_us),
        verbs: if o.parts.contains(&Part::Verbs) {
            verbs
        } else {
            Vec::new()
        },
        transport,
        commit,
        push,
    })
}

/// Pushes a configuration region to `m` masters over RDMA, `rounds` times
/// (plus one unmeasured round that connects everyone), as the active
/// coordinator does: the coordinator's transport runs its loop in this
/// thread (a replica's setting) and posts every master's write at once;
/// the masters are `RdmaTransport`s in this process listening on `far`,
/// each with a declared configuration region. Returns push started →
/// every write completed, and the region's size.
/// The coordinator listens on `ports.0`, master `i` on `ports.1 + i`.
fn push_rdma(
    near: IpAddr,
    far: IpAddr,
    ports: (u16, u16),
    m: usize,
    rounds: usize,
) -> Result<(Dist, Dist, usize), String> {
    const REGION: ramcoord_net::RegionId = 1;
    let base_port = ports.1;
    let mut masters = Vec::new();
    for i in 0..m {
        let mut cfg = RdmaConfig::new(
            1000 + i as u64,
            5,
            SocketAddr::new(far, base_port + i as u16),
        );
        cfg.regions = vec![(REGION, 4096)];
        // A master's accepted connection pins a message ring; the push
        // sends no messages, and a hundred 16 MiB rings would not fit the
        // VM.
        cfg.ring_bytes = 64 << 10;
        masters.push(RdmaTransport::start(cfg).map_err(|e| format!("master {i}: {e}"))?);
    }
    let mut ccfg = RdmaConfig::new(1, 5, SocketAddr::new(near, ports.0));
    ccfg.inline = true;
    ccfg.ring_bytes = 64 << 10;
    for i in 0..m {
        ccfg.peers
            .insert(1000 + i as u64, SocketAddr::new(far, base_port + i as u16));
    }
    let coord = RdmaTransport::start(ccfg).map_err(|e| format!("coordinator: {e}"))?;
    let (mut rec, mut posted) = (Recorder::default(), Recorder::default());
    let mut region_bytes = 0;
    for round in 0..=rounds {
        let version = round as u64 + 1;
        let regions: Vec<_> = (0..m)
            .map(|i| crate::push::region(i as u32 + 1, version))
            .collect();
        // Round 0 connects: a write posted before its connection is up is
        // refused and posted again, for up to 60 s (the emulated CPU sets
        // up a hundred queue pairs slowly).
        let deadline = Instant::now()
            + if round == 0 {
                Duration::from_secs(60)
            } else {
                Duration::from_secs(10)
            };
        let start = Instant::now();
        let contents: Vec<Bytes> = regions
            .iter()
            .map(|r| r.encode().expect("the benchmark's regions fit"))
            .collect();
        let mut pending: std::collections::HashMap<u64, usize> = (0..m)
            .map(|i| {
                (
                    coord.write(1000 + i as u64, REGION, 0, contents[i].clone()),
                    i,
                )
            })
            .collect();
        coord.flush();
        let posted_after = start.elapsed();
        region_bytes = contents[0].len();
        while !pending.is_empty() {
            match coord.next_event(deadline.saturating_duration_since(Instant::now())) {
                Some(Event::WriteDone { id, status, .. }) => {
                    let Some(i) = pending.remove(&id) else {
                        continue;
                    };
                    if status == ramcoord_net::WriteStatus::Landed {
                        continue;
                    }
                    if round > 0 {
                        return Err(format!("push to master {i} refused: {status}"));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    let again = coord.write(1000 + i as u64, REGION, 0, contents[i].clone());
                    pending.insert(again, i);
                    coord.flush();
                }
                Some(_) => {}
                None if Instant::now() < deadline => {}
                None => {
                    return Err(format!(
                        "round {round}: {} of {m} writes not completed",
                        pending.len()
                    ))
                }
            }
        }
        let took = start.elapsed();
        // Every master's memory holds this round's region.
        for (i, t) in masters.iter().enumerate() {
            let mem = t.region(REGION).ok_or("a declared region is missing")?;
            let mut bytes = vec![0u8; region_bytes];
            mem.read_at(0, &mut bytes);
            let got = ramcoord::cluster::ConfigRegion::decode(&bytes)
                .map_err(|e| format!("master {i}'s region: {e}"))?;
            if got.version != version {
                return Err(format!(
                    "master {i} holds version {}, not {version}",
                    got.version
                ));
            }
        }
        if round > 0 {
            rec.record(took);
            posted.record(posted_after);
        }
    }
    Ok((rec.dist(), posted.dist(), region_bytes))
}

/// Round trips of 64 B messages between two transports in this process,
/// the far one echoing from its event loop. Each side runs in a thread of
/// its own; `pin`: the measuring side's CPU and the echoing side's.
fn round_trips<T: Transport + Send + 'static>(
    a: T,
    b: T,
    ops: u64,
    pin: Option<(usize, usize)>,
) -> Result<Dist, String> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let echo = std::thread::spawn(move || {
        if let Some((_, cpu)) = pin {
            ramcoord_net::affinity::pin_current_thread(cpu, "bench echo");
        }
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(Event::Message { from, payload }) = b.next_event(Duration::from_millis(20))
            {
                b.send(from, payload);
            }
        }
    });
    let measure = std::thread::spawn(move || {
        if let Some((cpu, _)) = pin {
            ramcoord_net::affinity::pin_current_thread(cpu, "bench measure");
        }
        let peer = 2;
        let payload = Bytes::from(vec![7u8; 64]);
        let mut rec = Recorder::default();
        for k in 0..ops + ops / 10 {
            let t = Instant::now();
            a.send(peer, payload.clone());
            let deadline = t + Duration::from_secs(10);
            let got = loop {
                match a.next_event(deadline.saturating_duration_since(Instant::now())) {
                    Some(Event::Message { .. }) => break true,
                    Some(_) => continue,
                    None => break false,
                }
            };
            if !got {
                return Err(format!("round trip {k} lost"));
            }
            if k >= ops / 10 {
                rec.record(t.elapsed());
            }
        }
        Ok(rec.dist())
    });
    let result = measure
        .join()
        .unwrap_or_else(|_| Err("the measuring thread panicked".into()));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = echo.join();
    result
}

/// Two inline RDMA transports (ids 1 and 2) on `host`, connected both ways.
fn rdma_pair(host: IpAddr, pa: u16, pb: u16) -> Result<(RdmaTransport, RdmaTransport), String> {
    let any = |port: u16| SocketAddr::new([0, 0, 0, 0].into(), port);
    let mut ca = RdmaConfig::new(1, 5, any(pa));
    ca.peers.insert(2, SocketAddr::new(host, pb));
    let mut cb = RdmaConfig::new(2, 5, any(pb));
    cb.peers.insert(1, SocketAddr::new(host, pa));
    // Each transport's loop runs in the thread that waits on it, as a
    // replica's does: a message crosses no thread between the two owners.
    ca.inline = true;
    cb.inline = true;
    let a = RdmaTransport::start(ca).map_err(|e| e.to_string())?;
    let b = RdmaTransport::start(cb).map_err(|e| e.to_string())?;
    // Let both directions connect before the clock starts (each side's
    // loop runs only when its owner waits on it).
    let warm_until = Instant::now() + Duration::from_secs(20);
    let mut warm = [false; 2];
    while warm != [true; 2] && Instant::now() < warm_until {
        if !warm[0] {
            a.send(2, Bytes::from_static(b"warm"));
        }
        if !warm[1] {
            b.send(1, Bytes::from_static(b"warm"));
        }
        let t = Instant::now() + Duration::from_millis(20);
        while Instant::now() < t {
            if let Some(Event::Message { .. }) = b.next_event(Duration::from_millis(1)) {
                warm[0] = true;
            }
            if let Some(Event::Message { .. }) = a.next_event(Duration::from_millis(1)) {
                warm[1] = true;
            }
        }
    }
    Ok((a, b))
}

fn transport_row(host: IpAddr, ops: u64, verbs_echo_p50: f64) -> Result<TransportRow, String> {
    // Ports of their own per pair: a dropped transport's listener outlives
    // it.
    let (a, b) = rdma_pair(host, 7620, 7621)?;
    let rdma = round_trips(a, b, ops, None)?;
    // Where the two sides' threads run, pinned both ways (the unpinned
    // figure has been bimodal across runs).
    let (a, b) = rdma_pair(host, 7622, 7623)?;
    let rdma_same_cpu = round_trips(a, b, ops, Some((0, 0)))?;
    let (a, b) = rdma_pair(host, 7624, 7625)?;
    let rdma_apart = round_trips(a, b, ops, Some((0, 1)))?;
    let lo = |port: u16| SocketAddr::new([127, 0, 0, 1].into(), port);
    let mut ta = TcpConfig::new(1, 5, lo(0));
    ta.inline_io = true;
    let mut tb = TcpConfig::new(2, 5, lo(0));
    tb.inline_io = true;
    let b = TcpTransport::start(tb).map_err(|e| e.to_string())?;
    ta.peers.insert(2, b.local_addr());
    let a = TcpTransport::start(ta).map_err(|e| e.to_string())?;
    let tcp = round_trips(a, b, ops, None)?;
    Ok(TransportRow {
        rdma_over_verbs_echo: rdma.p50_us / verbs_echo_p50.max(1.0),
        rdma_over_tcp: rdma.p50_us / tcp.p50_us.max(1.0),
        rdma,
        rdma_same_cpu,
        rdma_apart,
        tcp,
    })
}

fn verbs_row(addr: SocketAddr, bytes: usize, ops: u64) -> Result<VerbsRow, String> {
    let any = SocketAddr::new([0, 0, 0, 0].into(), addr.port());
    let region = RegionMemory::new(64 << 10);
    let listener = RdmaListener::bind(any).map_err(|e| e.to_string())?;
    let r2 = region.clone();
    // The peer: receives everything; echoes the messages that ask for it
    // (first byte 1).
    let peer = std::thread::spawn(move || -> Result<(), String> {
        let mut c = listener.accept(Some(&r2)).map_err(|e| e.to_string())?;
        loop {
            let m = c.recv().map_err(|e| e.to_string())?;
            match m.first() {
                Some(1) => c.send(&m).map_err(|e| e.to_string())?,
                Some(2) => return Ok(()),
                _ => {}
            }
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let mut c = RdmaConn::connect(addr, b"bench").map_err(|e| e.to_string())?;
    let remote = RemoteRegion::decode(c.peer_private()).ok_or("no region in the accept")?;
    let payload = vec![0u8; bytes];
    let mut echo_payload = payload.clone();
    echo_payload[0] = 1;
    let (mut write, mut send, mut echo) = (
        Recorder::default(),
        Recorder::default(),
        Recorder::default(),
    );
    // Interleaved, so that the machine's noise falls on all three alike.
    for k in 0..ops + ops / 10 {
        let warm = k < ops / 10;
        let t = Instant::now();
        c.write(remote, 0, &payload).map_err(|e| e.to_string())?;
        let w = t.elapsed();
        let t = Instant::now();
        c.send(&payload).map_err(|e| e.to_string())?;
        let s = t.elapsed();
        let t = Instant::now();
        c.send(&echo_payload).map_err(|e| e.to_string())?;
        c.recv().map_err(|e| e.to_string())?;
        let e = t.elapsed();
        if !warm {
            write.record(w);
            send.record(s);
            echo.record(e);
        }
    }
    c.send(&[2]).map_err(|e| e.to_string())?;
    peer.join().map_err(|_| "the peer thread panicked")??;
    let (write, send, echo) = (write.dist(), send.dist(), echo.dist());
    Ok(VerbsRow {
        bytes,
        write_over_send: write.p50_us / send.p50_us.max(1.0),
        write_over_echo: write.p50_us / echo.p50_us.max(1.0),
        write,
        send,
        echo,
    })
}

fn commit_row(
    hosts: &[IpAddr],
    ramcoord: &Path,
    transport: &str,
    ops: u64,
) -> Result<CommitRow, String> {
    let dir = std::env::temp_dir().join(format!("ramcoord-bench-rdma-{transport}"));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = LocalClusterConfig::new(ramcoord.to_path_buf(), dir.clone(), 3, 2);
    // `rdma:US`: RDMA, with the masters looking at their regions every US
    // microseconds between requests.
    let (kind, region_poll_us) = match transport.split_once(':') {
        Some((k, us)) => (k, Some(us)),
        None => (transport, None),
    };
    if kind == "rdma" {
        cfg.rdma_hosts = hosts.to_vec();
    }
    cfg.log_filter = "warn".into();
    // Slower ticks: the emulated CPU is slow; an election in the middle of
    // the run would measure the timeout, not the commit path.
    cfg.coordinator_args = vec![
        "--tick-ms".into(),
        "20".into(),
        // Masters heartbeat every 100 ms (the leader sets the pace).
        "--heartbeat-interval-ms".into(),
        "100".into(),
    ];
    cfg.master_args = vec!["--heartbeat-ms".into(), "100".into()];
    if let Some(us) = region_poll_us {
        cfg.master_args
            .extend(["--region-poll-us".into(), us.into()]);
    }
    let c = LocalCluster::start(cfg).map_err(|e| e.to_string())?;
    c.wait_ready(2, Duration::from_secs(90))
        .map_err(|e| e.to_string())?;
    let mut cl = crate::cluster::client(&c);
    // The emulated CPU: give an attempt longer than on a real host.
    cl.attempt_timeout = Duration::from_secs(5);
    for k in 0..20 {
        one_op(&mut cl, op_for(9999, k))?;
    }
    // `PERF=1 scripts/rdma-vm.sh` starts its profile on this line.
    eprintln!("ramcoord-bench rdma: commit over {transport}: warmed up, measuring");
    let (mut commit, mut leader, mut noops) = (
        Recorder::default(),
        Recorder::default(),
        Recorder::default(),
    );
    for k in 0..ops {
        let (at_commit, commit_us, _) = one_op(&mut cl, op_for(0, k))?;
        commit.record(at_commit);
        leader.record_us(commit_us);
        noops.record(noop(&mut cl)?);
    }
    drop(cl);
    drop(c);
    let _ = std::fs::remove_dir_all(dir);
    Ok(CommitRow {
        transport: transport.into(),
        commit: commit.dist(),
        commit_at_leader: leader.dist(),
        noop: noops.dist(),
    })
}

/// The report as a markdown table.
pub fn render(r: &RdmaReport) -> String {
    let mut s = String::from("soft-RoCE in a TCG VM: shapes and ratios, not hardware speed\n");
    if !r.verbs.is_empty() {
        s += "\n| verbs, size | one-sided write p50/p99/p99.9/max µs | two-sided send | two-sided echo | write/send | write/echo |\n|---|---|---|---|---|---|\n";
    }
    for v in &r.verbs {
        s += &format!(
            "| {} B | {} | {} | {} | {:.2}× | {:.2}× |\n",
            v.bytes,
            v.write.row(),
            v.send.row(),
            v.echo.row(),
            v.write_over_send,
            v.write_over_echo
        );
    }
    if let Some(t) = &r.transport {
        s += &format!(
            "\n| 64 B round trip through the transport | p50/p99/p99.9/max µs |\n|---|---|\n| RdmaTransport, inline (ring writes; the owners' threads post and poll) | {} |\n| the same, both threads on CPU 0 | {} |\n| the same, threads on CPUs 0 and 1 | {} |\n| TcpTransport, inline I/O, loopback | {} |\n\nRdmaTransport / verbs echo p50 {:.2}×; RdmaTransport / TcpTransport p50 {:.2}×\n",
            t.rdma.row(),
            t.rdma_same_cpu.row(),
            t.rdma_apart.row(),
            t.tcp.row(),
            t.rdma_over_verbs_echo,
            t.rdma_over_tcp
        );
    }
    if !r.commit.is_empty() {
        s += "\n| commit, transport | client commit point p50/p99/p99.9/max µs | at the leader | no-op record |\n|---|---|---|---|\n";
        for c in &r.commit {
            s += &format!(
                "| {} | {} | {} | {} |\n",
                c.transport,
                c.commit.row(),
                c.commit_at_leader.row(),
                c.noop.row()
            );
        }
        s += &format!(
            "\nRDMA / TCP p50: client commit {:.2}×, leader commit {:.2}×, no-op {:.2}×\n",
            r.commit_rdma_over_tcp, r.leader_commit_rdma_over_tcp, r.noop_rdma_over_tcp
        );
    }
    if !r.push.is_empty() {
        s += "\n| push to M masters | region B | RDMA WRITEs from one loop, all completed p50/p99/p99.9/max µs | of which posting them | TCP, all acknowledged |\n|---|---|---|---|---|\n";
        for p in &r.push {
            s += &format!(
                "| {} | {} | {} | {} | {} |\n",
                p.masters,
                p.region_bytes,
                p.rdma.row(),
                p.rdma_posted.row(),
                p.tcp.row()
            );
        }
        s += &format!(
            "\npush to 100 / push to 1, p50: RDMA {:.1}×, TCP {:.1}×\n",
            r.push_100_over_1_rdma, r.push_100_over_1_tcp
        );
    }
    s
}

/// Where the `ramcoord` binary is when not given.
pub fn default_binary() -> Result<PathBuf, String> {
    crate::cluster::ramcoord_binary()
}
