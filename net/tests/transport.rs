//! One test suite for every transport (in-memory and TCP), plus what only
//! TCP can get wrong: bad input on the port, reconnecting.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ramcoord_net::frame::Frame;
use ramcoord_net::mem::MemNetwork;
use ramcoord_net::tcp::{TcpConfig, TcpTransport};
use ramcoord_net::{BufferRegion, Event, Transport, WriteStatus};

const WAIT: Duration = Duration::from_secs(10);

/// Held by tests that count this process's descriptors, or open hundreds:
/// the count must not see another test's sockets.
static DESCRIPTORS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn next_event(t: &impl Transport) -> Event {
    t.events().recv_timeout(WAIT).expect("an event in time")
}

fn wait_message(t: &impl Transport) -> (u64, Bytes) {
    match next_event(t) {
        Event::Message { from, payload } => (from, payload),
        other => panic!("expected a message, got {other:?}"),
    }
}

fn wait_write(t: &impl Transport, id: u64) -> WriteStatus {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Event::WriteDone {
            id: got, status, ..
        } = next_event(t)
        {
            if got == id {
                return status;
            }
        }
    }
    panic!("write {id} never completed");
}

/// What every transport must do.
fn suite(a: &impl Transport, b: &impl Transport) {
    // Messages arrive, in order, both ways.
    for i in 0..200u32 {
        a.send(b.id(), Bytes::from(i.to_le_bytes().to_vec()));
    }
    for i in 0..200u32 {
        let (from, p) = wait_message(b);
        assert_eq!(from, a.id());
        assert_eq!(&p[..], &i.to_le_bytes());
    }
    b.send(a.id(), Bytes::from_static(b"pong"));
    assert_eq!(wait_message(a), (b.id(), Bytes::from_static(b"pong")));

    // A one-sided write lands in the region, and completes to the writer.
    let region = Arc::new(BufferRegion::new(64));
    b.register_region(7, region.clone());
    let id = a.write(b.id(), 7, 8, Bytes::from_static(b"config"));
    assert_eq!(wait_write(a, id), WriteStatus::Landed);
    assert_eq!(&region.snapshot()[8..14], b"config");
    // Writes from one writer land in order.
    let mut last = 0;
    for i in 0..50u8 {
        last = a.write(b.id(), 7, 0, Bytes::from(vec![i; 4]));
    }
    assert_eq!(wait_write(a, last), WriteStatus::Landed);
    assert_eq!(&region.snapshot()[..4], &[49; 4]);
    // Out of bounds, no such region, and a fence that refuses.
    let id = a.write(b.id(), 7, 62, Bytes::from_static(b"toolong"));
    assert_eq!(wait_write(a, id), WriteStatus::OutOfBounds);
    let id = a.write(b.id(), 99, 0, Bytes::from_static(b"x"));
    assert_eq!(wait_write(a, id), WriteStatus::NoSuchRegion);
    let fenced = Arc::new(BufferRegion::with_fence(16, |_, bytes| {
        if bytes[0] < 5 {
            Err(ramcoord_net::WriteRefused(format!(
                "term {} is older than 5",
                bytes[0]
            )))
        } else {
            Ok(())
        }
    }));
    b.register_region(8, fenced.clone());
    let id = a.write(b.id(), 8, 0, Bytes::from_static(&[3, 1, 1]));
    assert_eq!(
        wait_write(a, id),
        WriteStatus::Refused("term 3 is older than 5".into())
    );
    assert_eq!(&fenced.snapshot()[..3], &[0, 0, 0]);
}

#[test]
fn the_in_memory_transport_passes_the_suite() {
    let net = MemNetwork::new();
    let (a, b) = (net.join(1), net.join(2));
    suite(&a, &b);
    // A cut link drops messages; restored, they flow again.
    net.set_link(1, 2, false);
    a.send(2, Bytes::from_static(b"lost"));
    net.set_link(1, 2, true);
    a.send(2, Bytes::from_static(b"found"));
    assert_eq!(wait_message(&b), (1, Bytes::from_static(b"found")));
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Two TCP nodes that know each other's address.
fn tcp_pair(cluster: u64) -> (TcpTransport, TcpTransport) {
    let a = TcpTransport::start(TcpConfig::new(1, cluster, loopback())).unwrap();
    let b = TcpTransport::start(TcpConfig::new(2, cluster, loopback())).unwrap();
    a.add_peer(2, b.local_addr());
    b.add_peer(1, a.local_addr());
    (a, b)
}

#[test]
fn the_tcp_transport_passes_the_suite() {
    let (a, b) = tcp_pair(5);
    suite(&a, &b);
}

/// Bytes that are not our protocol, on the listening port: the connection
/// is closed with a logged reason, and the node keeps serving.
#[test]
fn bad_input_closes_the_connection_and_the_node_keeps_serving() {
    let (a, b) = tcp_pair(6);
    let hello = |cluster| Frame::Hello { peer: 9, cluster }.to_bytes();
    let mut oversized = Frame::Message(Bytes::from_static(b"x")).to_bytes().to_vec();
    oversized[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut bad_crc = Frame::Message(Bytes::from_static(b"payload"))
        .to_bytes()
        .to_vec();
    *bad_crc.last_mut().unwrap() ^= 1;
    let mut wrong_version = hello(6).to_vec();
    wrong_version[4] = 99;
    let garbage: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect(),
        hello(12345).to_vec(),
        wrong_version,
        [hello(6).to_vec(), oversized].concat(),
        [hello(6).to_vec(), bad_crc].concat(),
        [hello(6).to_vec(), hello(6).to_vec()].concat(),
    ];
    let n = garbage.len() as u64;
    for g in garbage {
        let mut s = TcpStream::connect(b.local_addr()).unwrap();
        s.write_all(&g).unwrap();
        // The node closes the connection: a read sees the end (after the
        // node's own hello, when ours was valid).
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    let deadline = Instant::now() + WAIT;
    while b.rejected_connections() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(b.rejected_connections(), n);
    // Still serving.
    a.send(2, Bytes::from_static(b"still there?"));
    assert_eq!(wait_message(&b), (1, Bytes::from_static(b"still there?")));
}

/// A peer that goes away and comes back on the same address is reached
/// again; messages sent meanwhile wait in the queue.
#[test]
fn a_restarted_peer_is_reconnected() {
    let (a, b) = tcp_pair(7);
    a.send(2, Bytes::from_static(b"one"));
    assert_eq!(wait_message(&b).1, Bytes::from_static(b"one"));
    let addr = b.local_addr();
    drop(b);
    // Sent while it is down: queued (or lost with the old connection).
    std::thread::sleep(Duration::from_millis(50));
    let b = TcpTransport::start(TcpConfig::new(2, 7, addr)).unwrap();
    // Keep sending until one gets through the new connection.
    let deadline = Instant::now() + WAIT;
    loop {
        a.send(2, Bytes::from_static(b"again"));
        if let Ok(Event::Message { payload, .. }) =
            b.events().recv_timeout(Duration::from_millis(100))
        {
            assert_eq!(payload, Bytes::from_static(b"again"));
            break;
        }
        assert!(Instant::now() < deadline, "never reconnected");
    }
}

/// A client whose address the server does not know is answered on the
/// connection the client opened.
#[test]
fn a_peer_without_an_address_is_answered_on_its_own_connection() {
    let server = TcpTransport::start(TcpConfig::new(1, 8, loopback())).unwrap();
    let client = TcpTransport::start(TcpConfig::new(900, 8, loopback())).unwrap();
    client.add_peer(1, server.local_addr());
    client.send(1, Bytes::from_static(b"status?"));
    assert_eq!(wait_message(&server), (900, Bytes::from_static(b"status?")));
    server.send(900, Bytes::from_static(b"leader is 1"));
    assert_eq!(
        wait_message(&client),
        (1, Bytes::from_static(b"leader is 1"))
    );
}

/// With an I/O thread ([`TcpConfig::io_threads`]), clients are read,
/// decoded and answered off the owner's thread: every request reaches the
/// owner once and every answer gets back, while the owner only polls.
#[test]
fn an_io_thread_serves_clients_for_the_owner() {
    use ramcoord_net::tls::CLIENT_BIT;
    let mut cfg = TcpConfig::new(1, 8, loopback());
    cfg.inline_io = true;
    cfg.io_uring = true;
    cfg.io_threads = 1;
    let server = TcpTransport::start(cfg).unwrap();
    let clients: Vec<TcpTransport> = (0..20u64)
        .map(|i| {
            let c =
                TcpTransport::start(TcpConfig::new(CLIENT_BIT | (100 + i), 8, loopback())).unwrap();
            c.add_peer(1, server.local_addr());
            c
        })
        .collect();
    for c in &clients {
        c.send(1, Bytes::from(c.id().to_le_bytes().to_vec()));
    }
    let mut seen = std::collections::HashSet::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < clients.len() {
        assert!(Instant::now() < deadline, "{} of 20 requests", seen.len());
        if let Some(Event::Message { from, payload }) = server.next_event(Duration::from_millis(50))
        {
            assert_eq!(payload, Bytes::from(from.to_le_bytes().to_vec()));
            assert!(seen.insert(from), "request from {from} delivered twice");
            server.send(from, Bytes::from_static(b"ok"));
        }
    }
    server.flush();
    for c in &clients {
        assert_eq!(wait_message(c), (1, Bytes::from_static(b"ok")));
    }
}

/// An owner that waits on [`Transport::ready_fd`] with `poll(2)` beside
/// other descriptors (as a coordinator does while its disk flushes) is
/// woken by a message that arrives meanwhile, on every I/O mode: with
/// io_uring the bytes are finished by the owner's own ring, so its
/// descriptor must say readable before anyone has asked the ring. (A ring
/// set up with DEFER_TASKRUN, tried on 2026-12-02, failed this: each poll
/// slept its whole timeout. It bought no latency either, so it went.)
#[test]
fn the_ready_descriptor_wakes_a_poll_for_a_message() {
    use ramcoord_net::tls::CLIENT_BIT;
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    const ME: u64 = CLIENT_BIT | 2;
    let inline_message = |t: &TcpTransport| match t.next_event(WAIT) {
        Some(Event::Message { from, payload }) => (from, payload),
        other => panic!("expected a message, got {other:?}"),
    };
    for io_uring in [false, true] {
        let mut cfg = TcpConfig::new(1, 8, loopback());
        cfg.inline_io = true;
        cfg.io_uring = io_uring;
        let server = TcpTransport::start(cfg).unwrap();
        let client = TcpTransport::start(TcpConfig::new(ME, 8, loopback())).unwrap();
        client.add_peer(1, server.local_addr());
        client.send(1, Bytes::from_static(b"hello"));
        assert_eq!(inline_message(&server), (ME, Bytes::from_static(b"hello")));
        for round in 0..20u32 {
            // Nothing waits: the descriptor is quiet (a poll that said
            // readable for nothing would make the owner spin).
            let _ = server.next_event(Duration::ZERO);
            let sent = Bytes::from(round.to_le_bytes().to_vec());
            let sender = {
                let sent = sent.clone();
                let client = &client;
                move || {
                    std::thread::sleep(Duration::from_millis(20));
                    client.send(1, sent);
                }
            };
            std::thread::scope(|s| {
                s.spawn(sender);
                let fd = server.ready_fd().expect("inline I/O has a descriptor");
                let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::IN)];
                let ts = Timespec {
                    tv_sec: 5,
                    tv_nsec: 0,
                };
                let asleep = Instant::now();
                let n = poll(&mut fds, Some(&ts)).unwrap();
                // Woken by the message, not by the timeout (a descriptor
                // the kernel signals only when asked would sleep it out,
                // and may then say readable).
                assert!(
                    n == 1 && asleep.elapsed() < Duration::from_secs(5),
                    "io_uring={io_uring}, round {round}: poll slept {:?} for a message sent after 20 ms",
                    asleep.elapsed()
                );
            });
            assert_eq!(inline_message(&server), (ME, sent), "io_uring={io_uring}");
        }
    }
}

/// `pin_cpus` pins each I/O thread to its CPU (entry k for thread k): the
/// kernel's own record of the thread says so.
#[test]
fn io_threads_are_pinned_to_their_cpus() {
    let last = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
    let mut cfg = TcpConfig::new(1, 8, loopback());
    cfg.inline_io = true;
    cfg.io_uring = true;
    cfg.io_threads = 1;
    cfg.pin_cpus = vec![0, last];
    let _server = TcpTransport::start(cfg).unwrap();
    let allowed_of = |name: &str| -> Option<String> {
        for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() == name {
                let status = std::fs::read_to_string(task.path().join("status")).ok()?;
                return status
                    .lines()
                    .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                    .map(|v| v.trim().to_string());
            }
        }
        None
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let allowed = allowed_of("net-io-1");
        if allowed.as_deref() == Some(last.to_string().as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "net-io-1 may run on {allowed:?}, not only CPU {last}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// More clients than the ring has receive buffers for them (512) send at
/// once while the owner is not looking: the kernel runs out of buffers for
/// some receives (`ENOBUFS` ends them, taking nothing from the socket),
/// they are armed again, and every request arrives, once; a second round
/// shows every connection is still read.
#[test]
fn a_burst_from_more_clients_than_receive_buffers_loses_nothing() {
    use ramcoord_net::tls::CLIENT_BIT;
    const CLIENTS: u64 = 700;
    let _fds = DESCRIPTORS.lock().unwrap_or_else(|e| e.into_inner());
    let mut cfg = TcpConfig::new(1, 8, loopback());
    cfg.inline_io = true;
    cfg.io_uring = true;
    cfg.limits.client_conns_max = 1000;
    cfg.limits.client_conns_per_ip_max = 1000;
    let server = TcpTransport::start(cfg).unwrap();
    let mut socks: Vec<TcpStream> = (0..CLIENTS)
        .map(|i| {
            let mut s = TcpStream::connect(server.local_addr()).unwrap();
            let hello = Frame::Hello {
                peer: CLIENT_BIT | (1000 + i),
                cluster: 8,
            };
            s.write_all(&hello.to_bytes()).unwrap();
            s
        })
        .collect();
    let round = |socks: &mut Vec<TcpStream>, round: u8, idle: Duration| {
        for (i, s) in socks.iter_mut().enumerate() {
            let body = Bytes::from(vec![round, i as u8, (i >> 8) as u8]);
            s.write_all(&Frame::Message(body).to_bytes()).unwrap();
        }
        // The owner is not in its ring meanwhile: receives complete into
        // the pool until it is dry.
        std::thread::sleep(idle);
        let mut seen = std::collections::HashSet::new();
        let deadline = Instant::now() + WAIT;
        while seen.len() < CLIENTS as usize {
            assert!(
                Instant::now() < deadline,
                "round {round}: {} of {CLIENTS} requests",
                seen.len()
            );
            if let Some(Event::Message { from, payload }) =
                server.next_event(Duration::from_millis(50))
            {
                let i = (from & !CLIENT_BIT) - 1000;
                assert_eq!(
                    payload,
                    Bytes::from(vec![round, i as u8, (i >> 8) as u8]),
                    "round {round}, client {i}"
                );
                assert!(seen.insert(from), "round {round}: {from} delivered twice");
            }
        }
    };
    // Round 0 also waits for every connection to be welcomed and read.
    round(&mut socks, 0, Duration::ZERO);
    round(&mut socks, 1, Duration::from_millis(300));
    round(&mut socks, 2, Duration::from_millis(300));
}

/// An owner that stops taking events does not make its I/O threads queue
/// without bound: past the bound they stop reading (the client's TCP
/// window closes and its sends wait), and once the owner takes events
/// again every message arrives, none lost or reordered.
#[test]
fn io_threads_stop_reading_while_the_owner_is_behind() {
    use ramcoord_net::tcp::READY_EVENTS_MAX;
    use ramcoord_net::tls::CLIENT_BIT;
    let mut cfg = TcpConfig::new(1, 8, loopback());
    cfg.inline_io = true;
    cfg.io_uring = true;
    cfg.io_threads = 1;
    let server = TcpTransport::start(cfg).unwrap();
    let client = TcpTransport::start(TcpConfig::new(CLIENT_BIT | 5, 8, loopback())).unwrap();
    client.add_peer(1, server.local_addr());
    // Connected first (frames sent while connecting wait in a queue of
    // 4096, past which they are dropped: not what this test is about).
    client.send(1, Bytes::from_static(b"first"));
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "the client never got through");
        if let Some(Event::Message { payload, .. }) = server.next_event(Duration::from_millis(50)) {
            assert_eq!(payload, Bytes::from_static(b"first"));
            break;
        }
    }
    // Far more than the bound plus what the ring's receive buffers can
    // hold (512 of 4 KiB), so that an I/O thread that never stopped
    // reading would queue them all.
    let total = 32 * READY_EVENTS_MAX as u32;
    let sender = std::thread::spawn(move || {
        for i in 0..total {
            client.send(1, Bytes::from(i.to_le_bytes().to_vec()));
        }
        client
    });
    // The owner does not poll: the I/O thread fills the queue to the bound
    // and stops there.
    let deadline = Instant::now() + WAIT;
    while server.queued_events() < READY_EVENTS_MAX {
        assert!(
            Instant::now() < deadline,
            "{} queued",
            server.queued_events()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Parked, the I/O thread still decodes the buffers its receives had
    // already filled (up to its pool), then stops: the queue settles.
    let mut queued = server.queued_events();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = server.queued_events();
        if now == queued {
            break;
        }
        assert!(Instant::now() < deadline, "the queue never settled ({now})");
        queued = now;
    }
    assert!(
        queued < total as usize / 2,
        "{queued} of {total} events queued: the I/O thread did not stop at the bound {READY_EVENTS_MAX}"
    );
    let mut next = 0u32;
    let deadline = Instant::now() + Duration::from_secs(60);
    while next < total {
        assert!(Instant::now() < deadline, "{next} of {total} arrived");
        if let Some(Event::Message { payload, .. }) = server.next_event(Duration::from_millis(50)) {
            assert_eq!(payload, Bytes::from(next.to_le_bytes().to_vec()));
            next += 1;
        }
    }
    drop(sender.join().unwrap());
}

/// A replica's messages are handed to the owner before those of clients
/// that arrived earlier: under a flood of clients (thousands of masters
/// enlisting) a Raft heartbeat and its answer must not wait behind them.
/// (One ring, as a coordinator replica runs by default: `--cores 1`.)
#[test]
fn a_replicas_messages_go_before_a_flood_of_clients() {
    use ramcoord_net::tls::CLIENT_BIT;
    let mut cfg = TcpConfig::new(1, 8, loopback());
    cfg.inline_io = true;
    cfg.io_uring = true;
    let server = TcpTransport::start(cfg).unwrap();
    let client = TcpTransport::start(TcpConfig::new(CLIENT_BIT | 5, 8, loopback())).unwrap();
    let replica = TcpTransport::start(TcpConfig::new(2, 8, loopback())).unwrap();
    // A configured peer: only those count as replicas.
    server.add_peer(2, replica.local_addr());
    for (t, id) in [(&client, CLIENT_BIT | 5), (&replica, 2)] {
        t.add_peer(1, server.local_addr());
        t.send(1, Bytes::from_static(b"hello"));
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "{id} never got through");
            if let Some(Event::Message { from, .. }) = server.next_event(Duration::from_millis(50))
            {
                assert_eq!(from, id);
                break;
            }
        }
    }
    // The client floods, then the replica sends one message; the owner
    // looks only once both are in its sockets.
    let flood = 1000;
    for i in 0..flood {
        client.send(1, Bytes::from(format!("client {i}")));
    }
    std::thread::sleep(Duration::from_millis(300));
    replica.send(1, Bytes::from_static(b"append"));
    std::thread::sleep(Duration::from_millis(300));
    match server.next_event(Duration::from_secs(1)) {
        Some(Event::Message { from, payload }) => {
            assert_eq!(
                (from, &payload[..]),
                (2, &b"append"[..]),
                "the replica's first"
            )
        }
        other => panic!("expected the replica's message, got {other:?}"),
    }
    // Then the clients', in their order.
    for i in 0..flood {
        match server.next_event(Duration::from_secs(1)) {
            Some(Event::Message { from, payload }) => {
                assert_eq!(from, CLIENT_BIT | 5);
                assert_eq!(payload, Bytes::from(format!("client {i}")));
            }
            other => panic!("client message {i}: got {other:?}"),
        }
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Clients that connect, say hello, and go away must not cost the server a
/// descriptor each: a coordinator serves clients for months, and a default
/// limit of 1024 descriptors was reached in minutes before this was fixed.
#[test]
fn closed_connections_do_not_keep_descriptors() {
    let _fds = DESCRIPTORS.lock().unwrap_or_else(|e| e.into_inner());
    for (inline, io_uring, io_threads) in [
        (false, false, 0),
        (true, false, 0),
        (true, true, 0),
        (true, true, 1),
    ] {
        let mut cfg = TcpConfig::new(1, 8, loopback());
        cfg.inline_io = inline;
        cfg.io_uring = io_uring;
        cfg.io_threads = io_threads;
        let server = TcpTransport::start(cfg).unwrap();
        let addr = server.local_addr();
        let hello = Frame::Hello {
            peer: 77,
            cluster: 8,
        }
        .to_bytes();
        let connect_and_leave = || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(&hello).unwrap();
            let mut b = [0u8; 64];
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.read(&mut b); // the server's hello
        };
        // Drive the inline server's I/O while the clients come and go.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let poller = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = server.next_event(Duration::from_millis(5));
                }
                server
            })
        };
        for _ in 0..50 {
            connect_and_leave();
        }
        std::thread::sleep(Duration::from_millis(200));
        let before = open_fds();
        for _ in 0..1500 {
            connect_and_leave();
        }
        std::thread::sleep(Duration::from_millis(300));
        connect_and_leave(); // the server prunes when a connection arrives
        std::thread::sleep(Duration::from_millis(100));
        let after = open_fds();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        drop(poller.join().unwrap());
        assert!(
            after < before + 100,
            "inline={inline}: {before} descriptors before 1500 short connections, {after} after"
        );
    }
}

/// A peer that completes the handshake and then never reads: sends to it
/// never wait for its socket (they would block the owner's event loop, a
/// coordinator's Raft thread); once more than the bound waits for it, it
/// is declared slow and disconnected, and every other peer is still
/// served. (Before: the owner's thread blocked in `write` up to the 1 s
/// write timeout, then dropped the connection on the first full socket.)
#[test]
fn a_peer_that_stops_reading_is_declared_slow_and_never_blocks_sends() {
    for io_uring in [false, true] {
        a_stalled_peer_is_declared_slow(io_uring);
    }
}

fn a_stalled_peer_is_declared_slow(io_uring: bool) {
    let mut cfg = TcpConfig::new(1, 11, loopback());
    cfg.inline_io = true;
    cfg.io_uring = io_uring;
    cfg.send_backlog_bytes_max = 1 << 20;
    cfg.replica_backlog_bytes_max = 1 << 20;
    let a = Arc::new(TcpTransport::start(cfg).unwrap());
    let b = TcpTransport::start(TcpConfig::new(2, 11, loopback())).unwrap();
    a.add_peer(2, b.local_addr());
    // The stalled peer: answers the hello, then reads nothing more.
    let stalled = std::net::TcpListener::bind(loopback()).unwrap();
    a.add_peer(3, stalled.local_addr().unwrap());
    let (mut s, _) = stalled.accept().unwrap();
    let mut hello = [0u8; 64];
    let n = s.read(&mut hello).unwrap();
    assert!(n > 0);
    s.write_all(
        &Frame::Hello {
            peer: 3,
            cluster: 11,
        }
        .to_bytes(),
    )
    .unwrap();
    // Let the connection be handed over to the owner.
    std::thread::sleep(Duration::from_millis(200));
    while a.next_event(Duration::ZERO).is_some() {}
    // 256 MiB at the stalled peer, far more than the kernel's buffers and
    // the bound: on another thread, so that a send that waited would show
    // as this test's timeout rather than a hang.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let sender = a.clone();
    std::thread::spawn(move || {
        let chunk = Bytes::from(vec![7u8; 64 << 10]);
        for _ in 0..4096 {
            sender.send(3, chunk.clone());
        }
        let _ = done_tx.send(());
    });
    // The owner keeps running its loop meanwhile (with a ring, sends
    // leave in its turns).
    let deadline = Instant::now() + Duration::from_secs(60);
    while done_rx.try_recv().is_err() {
        assert!(
            Instant::now() < deadline,
            "the sends to a stalled peer did not finish"
        );
        let _ = a.next_event(Duration::from_millis(5));
    }
    assert!(
        a.slow_peers() >= 1,
        "the stalled peer was not declared slow (io_uring: {io_uring})"
    );
    // Everyone else is still served (an inline transport's sends leave
    // when its owner flushes or polls).
    a.send(2, Bytes::from_static(b"still there?"));
    a.flush();
    assert_eq!(wait_message(&b), (1, Bytes::from_static(b"still there?")));
    drop(s);
}

/// The owner's log may flush through the sockets' ring
/// (`Transport::disk_ring`): the writes land in the file; a flush's
/// completion ends the owner's wait for events as a message would (no
/// message comes, the wait is 60 s); socket completions met while the log
/// waits for its flush are kept for the owner (the messages still
/// arrive, in order); a failed write is reported; one flush at a time.
/// Only an owner-run ring offers this.
#[test]
fn the_owners_log_flushes_through_the_sockets_ring() {
    use ramcoord_net::tcp::DurableWrite;
    const ME: u64 = ramcoord_net::tls::CLIENT_BIT | 2;
    let mut cfg = TcpConfig::new(1, 8, loopback());
    cfg.inline_io = true;
    cfg.io_uring = true;
    let server = TcpTransport::start(cfg).unwrap();
    let disk = server
        .disk_ring()
        .expect("an owner-run ring takes the log's flushes");
    let client = TcpTransport::start(TcpConfig::new(ME, 8, loopback())).unwrap();
    client.add_peer(1, server.local_addr());
    client.send(1, Bytes::from_static(b"hello"));
    assert!(matches!(
        server.next_event(WAIT),
        Some(Event::Message { .. })
    ));

    let dir = std::env::temp_dir().join(format!("ramcoord-ringdisk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("segment");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let mut expect = vec![0u8; 8 << 10];
    for round in 0..10u8 {
        let at = round as usize * 700;
        let bytes = vec![round + 1; 600];
        expect[at..at + 600].copy_from_slice(&bytes);
        disk.submit(vec![DurableWrite {
            fd: file.try_clone().unwrap().into(),
            offset: at as u64,
            bytes,
        }])
        .unwrap();
        assert!(disk.busy());
        let second = disk.submit(vec![]);
        assert!(second.is_err(), "a second flush while one is in flight");
        if round % 3 == 2 {
            // The owner looks without waiting until the flush has finished
            // (its completion taken off the ring), then waits: the wait
            // must end at once, not sleep through the unreaped flush.
            let look = Instant::now() + WAIT;
            while !disk.finished() && Instant::now() < look {
                let _ = server.next_event(Duration::ZERO);
            }
            assert!(disk.finished(), "round {round}: the flush never finished");
            let asleep = Instant::now();
            assert!(server.next_event(Duration::from_secs(60)).is_none());
            assert!(
                asleep.elapsed() < Duration::from_secs(30),
                "round {round}: the wait slept {:?} through a finished, unreaped flush",
                asleep.elapsed()
            );
            assert!(disk.reap(false).unwrap());
        } else if round % 3 == 0 {
            // The owner waits for events; the flush's completion ends it.
            let asleep = Instant::now();
            assert!(server.next_event(Duration::from_secs(60)).is_none());
            assert!(
                asleep.elapsed() < Duration::from_secs(30),
                "round {round}: the wait slept {:?}: a finished flush did not end it",
                asleep.elapsed()
            );
            assert!(disk.finished());
            assert!(disk.reap(false).unwrap());
        } else {
            // The log waits for the flush itself, while messages arrive:
            // they are kept for the owner's next turn.
            for i in 0..3u8 {
                client.send(1, Bytes::from(vec![round, i]));
            }
            std::thread::sleep(Duration::from_millis(20));
            assert!(disk.reap(true).unwrap());
            for i in 0..3u8 {
                match server.next_event(WAIT) {
                    Some(Event::Message { from, payload }) => {
                        assert_eq!((from, &payload[..]), (ME, &[round, i][..]))
                    }
                    other => panic!("round {round}: expected message {i}, got {other:?}"),
                }
            }
        }
        assert!(!disk.busy());
    }
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::open(&path).unwrap(), &mut got).unwrap();
    assert_eq!(&got[..], &expect[..10 * 700 - 100]);

    // A write the kernel refuses (a descriptor opened read-only) fails the
    // flush, once it has finished.
    let read_only = std::fs::File::open(&path).unwrap();
    disk.submit(vec![DurableWrite {
        fd: read_only.into(),
        offset: 0,
        bytes: vec![9; 16],
    }])
    .unwrap();
    assert!(disk.reap(true).is_err());
    assert!(!disk.busy());
    let _ = std::fs::remove_dir_all(&dir);

    // Rings the owner does not run, and epoll, offer none.
    let threaded = TcpTransport::start(TcpConfig::new(3, 8, loopback())).unwrap();
    assert!(threaded.disk_ring().is_none());
    let mut cfg = TcpConfig::new(4, 8, loopback());
    cfg.inline_io = true;
    cfg.io_uring = false;
    let epoll = TcpTransport::start(cfg).unwrap();
    assert!(epoll.disk_ring().is_none());
}

/// A leader's connections to the masters it pushes to: opened when there
/// is something to push (not when the peer is added), at most
/// `push_conns_max` at once (the least recently used idle one is closed
/// to make room), and a region write waiting for a connection is replaced
/// by a newer one to the same place (the newest region is the master's
/// whole configuration). This is what lets one leader serve 10,000
/// masters under a 20,000-descriptor limit, and what keeps a master that
/// cannot be reached from piling up a region per retry.
#[test]
fn push_peers_connect_on_demand_within_their_bound_and_keep_only_the_newest_region() {
    use ramcoord_net::tls::MASTER_BIT;
    let mut cfg = TcpConfig::new(1, 12, loopback());
    cfg.limits.push_conns_max = 2;
    let leader = TcpTransport::start(cfg).unwrap();
    let masters: Vec<(TcpTransport, Arc<BufferRegion>)> = (0..3u64)
        .map(|n| {
            let t = TcpTransport::start(TcpConfig::new(MASTER_BIT | n, 12, loopback())).unwrap();
            let region = Arc::new(BufferRegion::new(16));
            t.register_region(7, region.clone());
            (t, region)
        })
        .collect();
    for (m, _) in &masters {
        leader.add_peer(m.id(), m.local_addr());
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(leader.push_connections(), 0, "connected before a push");
    for round in 0..3u8 {
        for (m, region) in &masters {
            let id = leader.write(m.id(), 7, 0, Bytes::from(vec![round; 4]));
            assert_eq!(wait_write(&leader, id), WriteStatus::Landed);
            assert_eq!(&region.snapshot()[..4], &[round; 4]);
            assert!(
                leader.push_connections() <= 2,
                "{} push connections open, bound 2",
                leader.push_connections()
            );
        }
    }
    // A master that is not listening yet: its writes wait (one region,
    // the newest), and land once it is up.
    let spot = std::net::TcpListener::bind(loopback()).unwrap();
    let addr = spot.local_addr().unwrap();
    drop(spot);
    let late = MASTER_BIT | 9;
    leader.add_peer(late, addr);
    let before = leader.superseded_writes();
    for v in 1..=5u8 {
        leader.write(late, 7, 0, Bytes::from(vec![v; 4]));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        leader.superseded_writes() >= before + 4,
        "{} writes superseded while the master was away, expected 4",
        leader.superseded_writes() - before
    );
    let up = TcpTransport::start(TcpConfig::new(late, 12, addr)).unwrap();
    let region = Arc::new(BufferRegion::new(16));
    up.register_region(7, region.clone());
    // The next push after the leader's backoff connects (as a
    // coordinator's push retry would).
    let deadline = Instant::now() + WAIT;
    while region.snapshot()[..4] != [6; 4] && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        leader.write(late, 7, 0, Bytes::from(vec![6; 4]));
    }
    assert_eq!(&region.snapshot()[..4], &[6; 4]);
    assert!(leader.push_connections() <= 2);
}

/// A master that takes its push connection and then reads nothing: its
/// region writes are dropped once 64 KiB wait (never a region per retry),
/// and after `push_conn_idle` without progress its connection is closed
/// as slow, so it cannot hold a place under `push_conns_max` for good. An
/// idle push connection to a healthy master is closed as well (the next
/// push opens another).
#[test]
fn a_push_peer_that_stops_reading_is_closed_and_idle_push_connections_go() {
    use ramcoord_net::tls::MASTER_BIT;
    let mut cfg = TcpConfig::new(1, 13, loopback());
    cfg.inline_io = true;
    cfg.push_conn_idle = Duration::from_millis(300);
    let leader = TcpTransport::start(cfg).unwrap();
    // The stalled master: answers the hello, then reads nothing more.
    let stalled = std::net::TcpListener::bind(loopback()).unwrap();
    let master = MASTER_BIT | 1;
    leader.add_peer(master, stalled.local_addr().unwrap());
    leader.write(master, 7, 0, Bytes::from(vec![1u8; 1024]));
    let (mut s, _) = stalled.accept().unwrap();
    let mut hello = [0u8; 64];
    assert!(s.read(&mut hello).unwrap() > 0);
    s.write_all(
        &Frame::Hello {
            peer: master,
            cluster: 13,
        }
        .to_bytes(),
    )
    .unwrap();
    let deadline = Instant::now() + WAIT;
    while leader.push_connections() == 0 {
        assert!(Instant::now() < deadline, "never connected");
        let _ = leader.next_event(Duration::from_millis(5));
    }
    // 64 MiB of regions at a master that reads nothing.
    let region = Bytes::from(vec![2u8; 64 << 10]);
    for _ in 0..1024 {
        leader.write(master, 7, 0, region.clone());
        let _ = leader.next_event(Duration::ZERO);
    }
    assert!(
        leader.superseded_writes() > 900,
        "only {} of 1024 writes to a stalled master were dropped",
        leader.superseded_writes()
    );
    while leader.slow_peers() == 0 {
        assert!(
            Instant::now() < deadline,
            "the stalled push peer was never closed"
        );
        let _ = leader.next_event(Duration::from_millis(20));
    }
    while leader.push_connections() > 0 {
        assert!(Instant::now() < deadline, "its connection stayed counted");
        let _ = leader.next_event(Duration::from_millis(20));
    }
    drop(s);

    // A healthy master: pushed once, then idle.
    let healthy = TcpTransport::start(TcpConfig::new(MASTER_BIT | 2, 13, loopback())).unwrap();
    let r = Arc::new(BufferRegion::new(16));
    healthy.register_region(7, r.clone());
    leader.add_peer(healthy.id(), healthy.local_addr());
    let id = leader.write(healthy.id(), 7, 0, Bytes::from_static(b"conf"));
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "the push never landed");
        if let Some(Event::WriteDone {
            id: got, status, ..
        }) = leader.next_event(Duration::from_millis(20))
        {
            if got == id {
                assert_eq!(status, WriteStatus::Landed);
                break;
            }
        }
    }
    assert_eq!(leader.push_connections(), 1);
    while leader.push_connections() > 0 {
        assert!(
            Instant::now() < deadline,
            "an idle push connection stayed open"
        );
        let _ = leader.next_event(Duration::from_millis(20));
    }
    let before = leader.slow_peers();
    // The next push opens a new one.
    let id = leader.write(healthy.id(), 7, 0, Bytes::from_static(b"more"));
    loop {
        assert!(Instant::now() < deadline, "the second push never landed");
        if let Some(Event::WriteDone { id: got, .. }) = leader.next_event(Duration::from_millis(20))
        {
            if got == id {
                break;
            }
        }
    }
    assert_eq!(&r.snapshot()[..4], b"more");
    assert_eq!(
        leader.slow_peers(),
        before,
        "an idle master was declared slow"
    );
}
