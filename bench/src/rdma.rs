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

/// Everything `rdma` measured.
#[derive(Serialize, Clone, Debug)]
pub struct RdmaReport {
    /// Per message size.
    pub verbs: Vec<VerbsRow>,
    /// A message round trip through the transports.
    pub transport: TransportRow,
    /// TCP, then RDMA.
    pub commit: Vec<CommitRow>,
    /// RDMA / TCP, client-side commit p50.
    pub commit_rdma_over_tcp: f64,
    /// RDMA / TCP, leader-side commit p50.
    pub leader_commit_rdma_over_tcp: f64,
    /// RDMA / TCP, no-op p50.
    pub noop_rdma_over_tcp: f64,
}

/// Runs both comparisons (see the module docs).
pub fn run(
    hosts: &[IpAddr],
    ramcoord: &Path,
    verbs_ops: u64,
    commit_ops: u64,
    progress: &dyn Fn(&str),
) -> Result<RdmaReport, String> {
    let host = *hosts.first().ok_or("no --hosts")?;
    let mut verbs = Vec::new();
    for (i, &bytes) in [64usize, 4096].iter().enumerate() {
        progress(&format!("verbs: {bytes} B, {verbs_ops} of each"));
        verbs.push(verbs_row(
            SocketAddr::new(host, 7600 + i as u16),
            bytes,
            verbs_ops,
        )?);
    }
    progress(&format!("transports: {verbs_ops} round trips of 64 B each"));
    let transport = transport_row(host, verbs_ops, verbs[0].echo.p50_us)?;
    let mut commit = Vec::new();
    for transport in ["tcp", "rdma"] {
        progress(&format!(
            "commit over {transport}: 3 replicas, 2 masters, {commit_ops} operations"
        ));
        commit.push(commit_row(hosts, ramcoord, transport, commit_ops)?);
    }
    let r = |f: fn(&CommitRow) -> f64| f(&commit[1]) / f(&commit[0]).max(1.0);
    Ok(RdmaReport {
        commit_rdma_over_tcp: r(|c| c.commit.p50_us),
        leader_commit_rdma_over_tcp: r(|c| c.commit_at_leader.p50_us),
        noop_rdma_over_tcp: r(|c| c.noop.p50_us),
        verbs,
        transport,
        commit,
    })
}

/// Round trips of 64 B messages between two transports in this process,
/// the far one echoing from its event loop.
fn round_trips<T: Transport + 'static>(a: T, b: T, ops: u64) -> Result<Dist, String> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let echo = std::thread::spawn(move || {
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(Event::Message { from, payload }) = b.next_event(Duration::from_millis(20))
            {
                b.send(from, payload);
            }
        }
    });
    let peer = 2;
    let payload = Bytes::from(vec![7u8; 64]);
    let mut rec = Recorder::default();
    let mut failed = None;
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
            failed = Some(format!("round trip {k} lost"));
            break;
        }
        if k >= ops / 10 {
            rec.record(t.elapsed());
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = echo.join();
    match failed {
        Some(e) => Err(e),
        None => Ok(rec.dist()),
    }
}

fn transport_row(host: IpAddr, ops: u64, verbs_echo_p50: f64) -> Result<TransportRow, String> {
    let any = |port: u16| SocketAddr::new([0, 0, 0, 0].into(), port);
    let (pa, pb) = (7620u16, 7621u16);
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
    let rdma = round_trips(a, b, ops)?;
    let lo = |port: u16| SocketAddr::new([127, 0, 0, 1].into(), port);
    let mut ta = TcpConfig::new(1, 5, lo(0));
    ta.inline_io = true;
    let mut tb = TcpConfig::new(2, 5, lo(0));
    tb.inline_io = true;
    let b = TcpTransport::start(tb).map_err(|e| e.to_string())?;
    ta.peers.insert(2, b.local_addr());
    let a = TcpTransport::start(ta).map_err(|e| e.to_string())?;
    let tcp = round_trips(a, b, ops)?;
    Ok(TransportRow {
        rdma_over_verbs_echo: rdma.p50_us / verbs_echo_p50.max(1.0),
        rdma_over_tcp: rdma.p50_us / tcp.p50_us.max(1.0),
        rdma,
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
    if transport == "rdma" {
        cfg.rdma_hosts = hosts.to_vec();
    }
    cfg.log_filter = "warn".into();
    // Slower ticks: the emulated CPU is slow; an election in the middle of
    // the run would measure the timeout, not the commit path.
    cfg.coordinator_args = vec!["--tick-ms".into(), "20".into()];
    cfg.master_args = vec!["--heartbeat-ms".into(), "100".into()];
    let c = LocalCluster::start(cfg).map_err(|e| e.to_string())?;
    c.wait_ready(2, Duration::from_secs(90))
        .map_err(|e| e.to_string())?;
    let mut cl = crate::cluster::client(&c);
    // The emulated CPU: give an attempt longer than on a real host.
    cl.attempt_timeout = Duration::from_secs(5);
    for k in 0..20 {
        one_op(&mut cl, op_for(9999, k))?;
    }
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
    let mut s = String::from(
        "soft-RoCE in a TCG VM: shapes and ratios, not hardware speed\n\n\
         | verbs, size | one-sided write p50/p99/p99.9/max µs | two-sided send | two-sided echo | write/send | write/echo |\n\
         |---|---|---|---|---|---|\n",
    );
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
    s += &format!(
        "\n| 64 B round trip through the transport | p50/p99/p99.9/max µs |\n|---|---|\n| RdmaTransport, inline (ring writes; the owners' threads post and poll) | {} |\n| TcpTransport, inline I/O, loopback | {} |\n\nRdmaTransport / verbs echo p50 {:.2}×; RdmaTransport / TcpTransport p50 {:.2}×\n",
        r.transport.rdma.row(),
        r.transport.tcp.row(),
        r.transport.rdma_over_verbs_echo,
        r.transport.rdma_over_tcp
    );
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
    s
}

/// Where the `ramcoord` binary is when not given.
pub fn default_binary() -> Result<PathBuf, String> {
    crate::cluster::ramcoord_binary()
}
