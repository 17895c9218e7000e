//! The RDMA layer on a real (soft-RoCE) device: run inside the VM by
//! `scripts/rdma-vm.sh`, which sets up two rxe devices on a veth pair
//! (10.0.0.1 and 10.0.0.2) and exports `RAMCOORD_RDMA_SERVER` (the address
//! to listen on). Built only with `--features rdma`.
#![cfg(feature = "rdma")]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use ramcoord_net::rdma::{devices, RdmaConn, RdmaError, RdmaListener, RegionMemory, RemoteRegion};

static NEXT_PORT: AtomicU16 = AtomicU16::new(7471);

fn step(what: &str) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let t = START.get_or_init(Instant::now).elapsed();
    eprintln!("[{:8.3}s] {what}", t.as_secs_f64());
}

/// Where the listener binds: every address (the server's address is in a
/// routing table that only traffic from the veth pair consults, so binding
/// to it directly is refused).
fn any_addr(server: SocketAddr) -> SocketAddr {
    format!("0.0.0.0:{}", server.port()).parse().unwrap()
}

fn server_addr() -> SocketAddr {
    let ip = std::env::var("RAMCOORD_RDMA_SERVER").unwrap_or_else(|_| {
        panic!("no RAMCOORD_RDMA_SERVER: run these tests through scripts/rdma-vm.sh (found devices {:?})", devices())
    });
    format!("{ip}:{}", NEXT_PORT.fetch_add(1, Ordering::Relaxed))
        .parse()
        .unwrap()
}

/// Waits until `region` starts with `want`.
fn wait_for(region: &RegionMemory, want: &[u8]) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if region.snapshot().starts_with(want) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

#[test]
fn without_a_device_the_error_names_what_was_found() {
    let found = devices();
    let r = RdmaListener::bind("127.0.0.1:7470".parse().unwrap());
    if found.is_empty() {
        let e = r.err().expect("no device: bind must fail");
        assert!(matches!(e, RdmaError::NoDevice { .. }), "{e}");
        assert!(e.to_string().contains("no RDMA device"), "{e}");
    } else {
        // With devices the error, if any, is about the address, not the device.
        if let Err(e) = r {
            assert!(!matches!(e, RdmaError::NoDevice { .. }), "{e}");
        }
    }
}

#[test]
fn messages_and_one_sided_writes_cross_between_two_devices() {
    let addr = server_addr();
    let region = RegionMemory::new(4096);
    let listener = RdmaListener::bind(any_addr(addr)).expect("listen");
    let r2 = region.clone();
    let server = std::thread::spawn(move || {
        step("server: accepting");
        let mut c = listener.accept(Some(&r2)).expect("accept");
        step("server: accepted");
        assert_eq!(c.peer_private(), b"ramcoord-test-client");
        let m = c.recv().expect("recv");
        step("server: got hello");
        assert_eq!(m, b"hello over SEND");
        // The client writes one-sidedly; this side only watches memory.
        assert!(wait_for(&r2, b"configuration v1"), "the write never landed");
        step("server: saw the write");
        c.send(b"seen v1").expect("send");
        step("server: sent seen");
        // A larger message, to the buffer's limit.
        let big = c.recv().expect("recv big");
        step("server: got the big message");
        assert_eq!(big.len(), 60_000);
        assert!(big.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    });
    std::thread::sleep(Duration::from_millis(200));
    step(&format!("client: connecting to {addr}"));
    let mut c = RdmaConn::connect(addr, b"ramcoord-test-client").expect("connect");
    step("client: connected");
    let remote = RemoteRegion::decode(c.peer_private()).expect("the server's region");
    assert_eq!(remote.len, 4096);
    c.send(b"hello over SEND").expect("send");
    step("client: sent hello");
    c.write(remote, 0, b"configuration v1")
        .expect("one-sided write");
    step("client: wrote");
    assert_eq!(c.recv().expect("recv"), b"seen v1");
    let big: Vec<u8> = (0..60_000).map(|i| (i % 251) as u8).collect();
    c.send(&big).expect("send big");
    step("client: sent big");
    // Bounds are checked before posting.
    assert!(c.write(remote, 4090, b"too long").is_err());
    // Close while the server closes too (a disconnect waits for the peer).
    drop(c);
    server.join().expect("server");
}

/// Fencing: once the region's owner revokes a writer (the deposed
/// leader), that writer's later writes fail and never reach the memory,
/// while a newer writer's land.
#[test]
fn a_revoked_writer_cannot_write_the_region() {
    let addr = server_addr();
    let region = RegionMemory::new(4096);
    let listener = RdmaListener::bind(any_addr(addr)).expect("listen");
    let r2 = region.clone();
    let (to_server, from_test) = std::sync::mpsc::channel::<&'static str>();
    let (to_test, from_server) = std::sync::mpsc::channel::<&'static str>();
    let server = std::thread::spawn(move || {
        let mut old = listener.accept(Some(&r2)).expect("accept old leader");
        assert_eq!(from_test.recv().unwrap(), "old wrote");
        assert!(wait_for(&r2, b"term 1"));
        // A new leader arrives: revoke the old one first, then accept.
        old.revoke().expect("revoke");
        step("server: revoked the old leader");
        to_test.send("revoked").unwrap();
        let _new = listener.accept(Some(&r2)).expect("accept new leader");
        assert_eq!(from_test.recv().unwrap(), "new wrote");
        assert!(wait_for(&r2, b"term 2"));
        to_test.send("seen").unwrap();
        assert_eq!(from_test.recv().unwrap(), "done");
        let bytes = r2.snapshot();
        step("server: closing");
        drop(_new);
        step("server: closed the new leader's connection");
        drop(old);
        step("server: closed the old leader's connection");
        bytes
    });
    std::thread::sleep(Duration::from_millis(200));
    let mut old = RdmaConn::connect(addr, b"leader term 1").expect("connect old");
    let r_old = RemoteRegion::decode(old.peer_private()).unwrap();
    old.write(r_old, 0, b"term 1")
        .expect("old leader's first write");
    to_server.send("old wrote").unwrap();
    assert_eq!(from_server.recv().unwrap(), "revoked");
    let mut new = RdmaConn::connect(addr, b"leader term 2").expect("connect new");
    let r_new = RemoteRegion::decode(new.peer_private()).unwrap();
    new.write(r_new, 0, b"term 2").expect("new leader's write");
    to_server.send("new wrote").unwrap();
    assert_eq!(from_server.recv().unwrap(), "seen");
    // The deposed leader's late write: refused by the hardware.
    step("old leader: late write");
    let late = old.write(r_old, 0, b"term 1 late");
    step(&format!("old leader: late write -> {late:?}"));
    assert!(late.is_err(), "a revoked writer's write completed");
    to_server.send("done").unwrap();
    // Both sides close at once (a disconnect waits for the peer's answer).
    drop(new);
    drop(old);
    step("client: connections closed");
    let final_bytes = server.join().expect("server");
    step("client: server thread done");
    assert!(
        final_bytes.starts_with(b"term 2"),
        "{:?}",
        &final_bytes[..16]
    );
}
