//! Threads of a TCP transport with inline I/O (a coordinator's): a peer
//! costs a thread only while it is being connected, not for the life of
//! its connection; a removed peer's connection is closed and not reopened.
//! (Its own test binary: the count is of this process's threads.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use ramcoord_net::frame::Frame;
use ramcoord_net::tcp::{TcpConfig, TcpTransport};
use ramcoord_net::Transport;

const PEERS: u64 = 50;
const CLUSTER: u64 = 21;

/// The tests count this process's threads: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("Threads: in /proc/self/status")
}

#[test]
fn connected_peers_cost_no_thread_and_removed_ones_are_let_go() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let listeners: Vec<TcpListener> = (0..PEERS)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let mut cfg = TcpConfig::new(1, CLUSTER, "127.0.0.1:0".parse().unwrap());
    cfg.inline_io = true;
    let a = TcpTransport::start(cfg).unwrap();
    // Settle, then count: the transport's own threads are in the baseline.
    std::thread::sleep(Duration::from_millis(100));
    let before = threads();
    for (i, addr) in addrs.iter().enumerate() {
        a.add_peer(100 + i as u64, *addr);
    }
    // Each fake peer answers the hello and keeps its connection open.
    let mut held: Vec<TcpStream> = Vec::new();
    for (i, l) in listeners.iter().enumerate() {
        let (mut s, _) = l.accept().unwrap();
        let mut hello = [0u8; 64];
        assert!(s.read(&mut hello).unwrap() > 0);
        let answer = Frame::Hello {
            peer: 100 + i as u64,
            cluster: CLUSTER,
        };
        s.write_all(&answer.to_bytes()).unwrap();
        held.push(s);
    }
    // Every connection handed over: the connector threads are gone.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut now = threads();
    while now > before + 2 && Instant::now() < deadline {
        let _ = a.next_event(Duration::from_millis(10));
        now = threads();
    }
    assert!(
        now <= before + 2,
        "{PEERS} connected peers hold {} threads (before: {before})",
        now - before
    );
    // Removed peers: their connections close, and nobody reconnects.
    for i in 0..PEERS {
        a.remove_peer(100 + i);
    }
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut sink = [0u8; 64];
        assert_eq!(
            s.read(&mut sink).unwrap_or(0),
            0,
            "a removed peer's connection stays open"
        );
    }
    for l in &listeners {
        l.set_nonblocking(true).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let _ = a.next_event(Duration::from_millis(10));
    for l in &listeners {
        assert!(l.accept().is_err(), "a removed peer was connected again");
    }
}

/// Many clients connecting at once (and saying nothing yet) cost no
/// thread each: their handshakes wait in the accept thread's poll. Then
/// each says hello and is answered.
#[test]
fn connecting_clients_cost_no_thread_each() {
    const CLIENTS: usize = 200;
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut cfg = TcpConfig::new(1, CLUSTER + 1, "127.0.0.1:0".parse().unwrap());
    cfg.inline_io = true;
    let a = TcpTransport::start(cfg).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let before = threads();
    let mut clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| TcpStream::connect(a.local_addr()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let during = threads();
    assert!(
        during <= before + 2,
        "{CLIENTS} connections in their handshake hold {} threads",
        during - before
    );
    for (i, c) in clients.iter_mut().enumerate() {
        let hello = Frame::Hello {
            peer: 5000 + i as u64,
            cluster: CLUSTER + 1,
        };
        c.write_all(&hello.to_bytes()).unwrap();
    }
    for c in &mut clients {
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut answer = [0u8; 8];
        c.read_exact(&mut answer).expect("the node's hello");
    }
    while a.next_event(Duration::ZERO).is_some() {}
    assert!(threads() <= before + 2);
}
