//! Bounded resources, whatever a peer does, on real processes: a replica
//! run with a 512-descriptor limit and flooded with idle connections
//! keeps serving its peers and the clients already connected to it; and
//! stalled near-maximum frames cannot grow its memory past the documented
//! bound on bytes buffered for incomplete client frames.
//!
//! (Before: 400 idle connections made `accept` fail with EMFILE at a
//! 1024-descriptor limit and
//! `ctl status` time out; 16 stalled 16 MiB frames grew a replica by
//! ~240 MiB.)

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use ramcoord::client::CoordinatorClient;
use ramcoord::coordinator::Request;
use ramcoord::local_cluster::{LocalCluster, LocalClusterConfig};
use ramcoord::protocol::{ClientReply, ClientRequest};
use ramcoord_net::admission::Limits;
use ramcoord_net::frame::{Frame, FRAME_BODY_BYTES_MAX};

const LIMIT: Duration = Duration::from_secs(30);

/// A cluster whose processes run with a 512-descriptor limit (a wrapper
/// script sets it, then execs the binary: the pid stays the same). The
/// derived cap on client connections is then 154 (512, less 256 kept for
/// the node's own files and peers, less a fifth kept for push
/// connections, one descriptor per connection): the flood below passes it.
fn cluster(name: &str) -> LocalCluster {
    let dir = std::env::temp_dir().join(format!("ramcoord-bounds-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let wrapper = dir.join("ramcoord-nofile-512");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nulimit -n 512\nexec {} \"$@\"\n",
            env!("CARGO_BIN_EXE_ramcoord")
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cfg = LocalClusterConfig::new(wrapper, dir, 3, 1);
    cfg.coordinator_args = vec!["--tick-ms".into(), "5".into()];
    cfg.master_args = vec!["--heartbeat-ms".into(), "40".into()];
    // The bounds are the same with TLS; plain TCP lets the flood say hello
    // without 400 handshakes (tests/security.rs covers TLS refusals).
    cfg.tls = false;
    LocalCluster::start(cfg).expect("cluster starts")
}

fn follower(c: &LocalCluster) -> (usize, u64) {
    let leader = c.wait_ready(1, LIMIT).unwrap();
    let i = (0..3).find(|&i| i as u64 + 1 != leader.id).unwrap();
    (i, i as u64 + 1)
}

fn nofile_of(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn status(client: &mut CoordinatorClient) -> Result<u64, String> {
    match client.ask(0, &ClientRequest::Status) {
        Ok(ClientReply::Status(s)) => Ok(s.commit),
        Ok(other) => Err(format!("{other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn a_flood_of_idle_connections_is_refused_and_the_replica_keeps_serving() {
    let mut c = cluster("flood");
    let (i, id) = follower(&c);
    let pid = c.coordinators[i].pid().unwrap();
    assert_eq!(nofile_of(pid), 512);
    let addr = c.coordinators[i].addr;
    // A client connected before the flood.
    let mut client = CoordinatorClient::new(vec![addr], 1, c.security());
    let before = status(&mut client).unwrap();
    // 500 connections; 400 of them say hello as clients and go idle.
    let hello = |n: u64| {
        Frame::Hello {
            peer: (1 << 62) | (1000 + n),
            cluster: 1,
        }
        .to_bytes()
    };
    let mut held = Vec::new();
    for n in 0..500u64 {
        if let Ok(mut s) = TcpStream::connect(addr) {
            if n < 400 {
                let _ = s.write_all(&hello(n));
            }
            held.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    c.check_alive().expect("the flooded replica is running");
    // The connected client is still served.
    status(&mut client).expect("the client connected before the flood is served");
    // Peers are served: an operation commits at the leader and reaches
    // the flooded follower.
    let mut ctl = c.ctl(Duration::from_secs(10));
    let r = ctl
        .operate(Request::CreateTable {
            name: "during-flood".into(),
            tablets: 2,
        })
        .unwrap();
    c.wait_for("the flooded follower to apply it", LIMIT, |_| {
        status(&mut client).ok().filter(|&commit| commit >= r.seq)
    })
    .unwrap();
    assert!(r.seq > before);
    let log = std::fs::read_to_string(&c.coordinators[i].log).unwrap();
    assert!(
        log.contains("connection refused or closed (a bound"),
        "replica {id} did not log its refusals"
    );
    // Once the flood ends, new clients are served again.
    drop(held);
    c.wait_for("a new client to be served after the flood", LIMIT, |_| {
        let mut fresh = CoordinatorClient::new(vec![addr], 1, c.security());
        status(&mut fresh).ok()
    })
    .unwrap();
    let dir = c.dir().to_path_buf();
    drop(c);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn stalled_near_maximum_frames_stay_within_the_buffer_bound() {
    let mut c = cluster("stall");
    let (i, _) = follower(&c);
    let pid = c.coordinators[i].pid().unwrap();
    let addr = c.coordinators[i].addr;
    let before = rss_kib(pid);
    let body = vec![0x5a_u8; FRAME_BODY_BYTES_MAX - 64];
    let frame = Frame::Message(body.into()).to_bytes();
    let mut held = Vec::new();
    for n in 0..16u64 {
        let Ok(mut s) = TcpStream::connect(addr) else {
            continue;
        };
        let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
        let mut hello = Frame::Hello {
            peer: (1 << 62) | (2000 + n),
            cluster: 1,
        }
        .to_bytes()
        .to_vec();
        hello.extend_from_slice(&frame[..frame.len() - 4096]);
        // Refused part way once the bound is reached: errors are expected.
        let _ = s.write_all(&hello);
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    c.check_alive().expect("the replica is running");
    let after = rss_kib(pid);
    let grown_mib = after.saturating_sub(before) / 1024;
    // The bound on buffered client bytes, plus the allocator's slack (a
    // buffer grows by doubling) and the test's own noise.
    let bound_mib = (Limits::default().client_buffered_bytes_max >> 20) as u64 * 2 + 32;
    eprintln!("RSS {before} KiB -> {after} KiB: grew {grown_mib} MiB (bound {bound_mib} MiB)");
    assert!(
        grown_mib <= bound_mib,
        "grew {grown_mib} MiB, past the {bound_mib} MiB bound"
    );
    // And it still serves.
    let mut client = CoordinatorClient::new(vec![addr], 1, c.security());
    status(&mut client).expect("served after the stalled frames");
    drop(held);
    let dir = c.dir().to_path_buf();
    drop(c);
    let _ = std::fs::remove_dir_all(dir);
}
