//! Mutual TLS on the TCP transport: the suite runs encrypted, and every
//! forged or unfit credential is refused while the node keeps serving.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ramcoord_net::frame::Frame;
use ramcoord_net::tcp::{TcpConfig, TcpTransport};
use ramcoord_net::tls::{self, CredentialFiles, Identity, Tls, ADMIN_BIT, CLIENT_BIT, MASTER_BIT};
use ramcoord_net::{BufferRegion, Event, Transport, WriteStatus};

const WAIT: Duration = Duration::from_secs(10);

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

struct Dirs {
    good: PathBuf,
    other_ca: PathBuf,
    expired: PathBuf,
    future: PathBuf,
}

fn dirs(name: &str) -> Dirs {
    let root = std::env::temp_dir().join(format!("ramcoord-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let all = [
        Identity::Replica(1),
        Identity::Replica(2),
        Identity::Master,
        Identity::Admin,
        Identity::Reader,
    ];
    let d = Dirs {
        good: root.join("good"),
        other_ca: root.join("other"),
        expired: root.join("expired"),
        future: root.join("future"),
    };
    tls::issue(&d.good, &all, 30, false).unwrap();
    tls::issue(&d.other_ca, &all, 30, false).unwrap();
    let now = time::OffsetDateTime::now_utc();
    // Same CA as `good`: only the validity differs.
    for (dir, from, to) in [
        (
            &d.expired,
            now - time::Duration::days(10),
            now - time::Duration::days(1),
        ),
        (
            &d.future,
            now + time::Duration::days(1),
            now + time::Duration::days(10),
        ),
    ] {
        std::fs::create_dir_all(dir).unwrap();
        for f in ["ca.pem", "ca.key"] {
            std::fs::copy(d.good.join(f), dir.join(f)).unwrap();
        }
        tls::issue_valid(dir, &all, from, to, true).unwrap();
    }
    d
}

fn cred(dir: &Path, id: Identity) -> Tls {
    Tls::load(&CredentialFiles::in_dir(dir, id)).unwrap()
}

/// `inline`: 0 reader threads, 1 inline on epoll, 2 inline on io_uring,
/// 3 that and an I/O thread for clients and masters.
fn node(id: u64, tls: Tls, inline: u8) -> TcpTransport {
    let mut cfg = TcpConfig::new(id, 5, loopback());
    cfg.tls = Some(tls);
    cfg.inline_io = inline > 0;
    cfg.io_uring = inline >= 2;
    cfg.io_threads = usize::from(inline == 3);
    TcpTransport::start(cfg).unwrap()
}

fn next_message(t: &TcpTransport, within: Duration) -> Option<(u64, Bytes)> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match t.next_event(left)? {
            Event::Message { from, payload } => return Some((from, payload)),
            _ if left.is_zero() => return None,
            _ => {}
        }
    }
}

/// Waits for write `id` of `t` to complete, polling `target` too (an
/// inline transport reads only when its owner polls).
fn wait_write(t: &TcpTransport, target: &TcpTransport, id: u64) -> Option<WriteStatus> {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let _ = target.next_event(Duration::from_millis(5));
        if let Some(Event::WriteDone {
            id: got, status, ..
        }) = t.next_event(Duration::from_millis(5))
        {
            if got == id {
                return Some(status);
            }
        }
    }
    None
}

fn wait_rejected(t: &TcpTransport, before: u64) {
    let deadline = Instant::now() + WAIT;
    while t.rejected_connections() <= before {
        assert!(Instant::now() < deadline, "the connection was not refused");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn replicas_talk_over_mutual_tls_both_io_modes() {
    let d = dirs("pair");
    for inline in [0, 1, 2] {
        let a = node(1, cred(&d.good, Identity::Replica(1)), inline);
        let b = node(2, cred(&d.good, Identity::Replica(2)), inline);
        a.add_peer(2, b.local_addr());
        b.add_peer(1, a.local_addr());
        // Enough bytes to span many TLS records and socket reads.
        let big = Bytes::from(vec![7u8; 300_000]);
        for i in 0..100u32 {
            a.send(2, Bytes::from(i.to_le_bytes().to_vec()));
        }
        a.send(2, big.clone());
        for i in 0..100u32 {
            assert_eq!(
                next_message(&b, WAIT),
                Some((1, Bytes::from(i.to_le_bytes().to_vec())))
            );
        }
        assert_eq!(next_message(&b, WAIT), Some((1, big)));
        b.send(1, Bytes::from_static(b"pong"));
        // An inline transport sends when its owner flushes or polls (one
        // submission per ready); only `a` is polled next.
        b.flush();
        assert_eq!(
            next_message(&a, WAIT),
            Some((2, Bytes::from_static(b"pong")))
        );
        // A replica writes configuration into a peer's region.
        let region = Arc::new(BufferRegion::new(32));
        b.register_region(1, region.clone());
        let id = a.write(2, 1, 0, Bytes::from_static(b"cfg"));
        assert_eq!(
            wait_write(&a, &b, id),
            Some(WriteStatus::Landed),
            "inline {inline}"
        );
        assert_eq!(&region.snapshot()[..3], b"cfg");
    }
}

/// Each unfit credential tries to talk to replica 2 as `claim`; replica 2
/// must refuse it and go on serving replica 1.
#[test]
fn forged_and_unfit_credentials_are_refused() {
    let d = dirs("forged");
    let server = node(2, cred(&d.good, Identity::Replica(2)), 3);
    let friend = node(1, cred(&d.good, Identity::Replica(1)), 0);
    friend.add_peer(2, server.local_addr());
    server.add_peer(1, friend.local_addr());
    friend.send(2, Bytes::from_static(b"hello"));
    assert_eq!(
        next_message(&server, WAIT),
        Some((1, Bytes::from_static(b"hello")))
    );
    let client = CLIENT_BIT | 77;
    let cases: Vec<(&str, Option<Tls>, u64)> = vec![
        ("no certificate", None, 1),
        (
            "another CA's replica 1",
            Some(cred(&d.other_ca, Identity::Replica(1))),
            1,
        ),
        (
            "a reader claiming replica 1",
            Some(cred(&d.good, Identity::Reader)),
            1,
        ),
        (
            "a reader claiming admin",
            Some(cred(&d.good, Identity::Reader)),
            client | ADMIN_BIT,
        ),
        (
            "a master claiming replica 1",
            Some(cred(&d.good, Identity::Master)),
            1,
        ),
        (
            "replica 2 claiming replica 1",
            Some(cred(&d.good, Identity::Replica(2))),
            1,
        ),
        (
            "an admin claiming a master",
            Some(cred(&d.good, Identity::Admin)),
            MASTER_BIT | 5,
        ),
        (
            "an expired replica 1",
            Some(cred(&d.expired, Identity::Replica(1))),
            1,
        ),
        (
            "a not-yet-valid replica 1",
            Some(cred(&d.future, Identity::Replica(1))),
            1,
        ),
    ];
    for (what, tls, claim) in cases {
        let before = server.rejected_connections();
        let mut cfg = TcpConfig::new(claim, 5, loopback());
        cfg.tls = tls;
        let forger = TcpTransport::start(cfg).unwrap();
        forger.add_peer(2, server.local_addr());
        forger.send(2, Bytes::from_static(b"forged"));
        wait_rejected(&server, before);
        // Nothing from it reached the node, and the node still serves.
        friend.send(2, Bytes::from_static(b"still here"));
        assert_eq!(
            next_message(&server, WAIT),
            Some((1, Bytes::from_static(b"still here"))),
            "{what}"
        );
        drop(forger);
    }
    // A client with a proper credential is served, under its class.
    let mut cfg = TcpConfig::new(client, 5, loopback());
    cfg.tls = Some(cred(&d.good, Identity::Reader));
    let reader = TcpTransport::start(cfg).unwrap();
    reader.add_peer(2, server.local_addr());
    reader.send(2, Bytes::from_static(b"status?"));
    assert_eq!(
        next_message(&server, WAIT),
        Some((client, Bytes::from_static(b"status?")))
    );
    // Answered on its connection, which the server's I/O thread runs.
    server.send(client, Bytes::from_static(b"leader is 2"));
    server.flush();
    assert_eq!(
        next_message(&reader, WAIT),
        Some((2, Bytes::from_static(b"leader is 2")))
    );
    // A raw hello without TLS gets nothing back.
    let mut raw = std::net::TcpStream::connect(server.local_addr()).unwrap();
    use std::io::{Read, Write};
    let _ = raw.write_all(
        &Frame::Hello {
            peer: 1,
            cluster: 5,
        }
        .to_bytes(),
    );
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    let n = raw.read(&mut buf).unwrap_or(0);
    assert!(
        n == 0 || buf[0] == 0x15,
        "a plain hello is answered only by a TLS alert or a close, got {:?}",
        &buf[..n]
    );
}

/// A master's credential may not write configuration into another node.
#[test]
fn only_a_replica_writes_configuration() {
    let d = dirs("writes");
    let target = node(MASTER_BIT | 1, cred(&d.good, Identity::Master), 0);
    let region = Arc::new(BufferRegion::new(32));
    target.register_region(1, region.clone());
    let mut cfg = TcpConfig::new(MASTER_BIT | 2, 5, loopback());
    cfg.tls = Some(cred(&d.good, Identity::Master));
    let other_master = TcpTransport::start(cfg).unwrap();
    other_master.add_peer(MASTER_BIT | 1, target.local_addr());
    let before = target.rejected_connections();
    let id = other_master.write(MASTER_BIT | 1, 1, 0, Bytes::from_static(b"evil"));
    wait_rejected(&target, before);
    assert_ne!(
        wait_write(&other_master, &target, id),
        Some(WriteStatus::Landed)
    );
    assert_eq!(&region.snapshot()[..4], &[0; 4]);
    let replica = node(1, cred(&d.good, Identity::Replica(1)), 0);
    replica.add_peer(MASTER_BIT | 1, target.local_addr());
    let id = replica.write(MASTER_BIT | 1, 1, 0, Bytes::from_static(b"good"));
    assert_eq!(wait_write(&replica, &target, id), Some(WriteStatus::Landed));
    assert_eq!(&region.snapshot()[..4], b"good");
}

/// A peer that trickles its handshake is cut off at the handshake deadline
/// however slowly it sends (each byte used to restart the wait).
#[test]
fn a_trickled_handshake_ends_at_its_deadline() {
    use std::io::{Read, Write};
    let d = dirs("trickle");
    let mut cfg = TcpConfig::new(2, 5, loopback());
    cfg.tls = Some(cred(&d.good, Identity::Replica(2)));
    cfg.limits.handshake_timeout = Duration::from_secs(1);
    let server = TcpTransport::start(cfg).unwrap();
    let mut raw = std::net::TcpStream::connect(server.local_addr()).unwrap();
    raw.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    // A handshake record header announcing 16 KiB, then a byte at a time.
    raw.write_all(&[0x16, 0x03, 0x01, 0x40, 0x00]).unwrap();
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(20) {
        let mut b = [0u8; 64];
        match raw.read(&mut b) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
        if raw.write_all(&[0x01]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(closed, "a trickling handshake was kept open for 20 s");
}

/// A write acknowledgement sent on a connection the peer opened is forged
/// (ours come back on the connection we wrote on): the connection is
/// closed and nothing is delivered.
#[test]
fn a_forged_write_acknowledgement_is_refused() {
    let d = dirs("ack");
    let target = node(1, cred(&d.good, Identity::Replica(1)), 0);
    let before = target.rejected_connections();
    // A transport sends acks only for writes it received: forge one with
    // a bare TLS connection.
    let tls = cred(&d.good, Identity::Reader);
    let link = ramcoord_net::link::Link::connect(target.local_addr(), Some(&tls), WAIT).unwrap();
    link.write_all(
        &Frame::Hello {
            peer: CLIENT_BIT | 9,
            cluster: 5,
        }
        .to_bytes(),
    )
    .unwrap();
    link.write_all(
        &Frame::WriteAck {
            id: 1,
            status: WriteStatus::Landed,
        }
        .to_bytes(),
    )
    .unwrap();
    wait_rejected(&target, before);
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        if let Some(Event::WriteDone { .. }) = target.next_event(Duration::from_millis(50)) {
            panic!("a forged acknowledgement was delivered");
        }
    }
}

/// RDMA passes ([`ramcoord_net::rdma_pass`]) are issued over TCP only to a
/// replica whose certificate admits the id it asks for, and only by a node
/// that has a pass book; what one issues checks out in its book and
/// nowhere else. (The RDMA side's refusals are tested on a device, in the
/// VM: `net/tests/rdma.rs`.)
#[test]
fn rdma_passes_go_only_to_authenticated_replicas() {
    use ramcoord_net::rdma_pass::PassBook;
    use ramcoord_net::tcp::fetch_pass;
    let d = dirs("passes");
    let book = Arc::new(PassBook::new(5, 2));
    let mut cfg = TcpConfig::new(2, 5, loopback());
    cfg.tls = Some(cred(&d.good, Identity::Replica(2)));
    cfg.passes = Some(book.clone());
    let issuer = TcpTransport::start(cfg).unwrap();
    let at = issuer.local_addr();
    let t = Duration::from_secs(5);

    let r1 = cred(&d.good, Identity::Replica(1));
    let pass = fetch_pass(at, 1, 5, Some(&r1), 2, t).expect("a replica gets a pass");
    assert_eq!(book.check(1, Some(&pass)), Ok(()));
    assert!(
        book.check(3, Some(&pass)).is_err(),
        "the pass names its holder"
    );
    assert!(
        PassBook::new(5, 2).check(1, Some(&pass)).is_err(),
        "only the issuing process's book accepts it"
    );
    assert_eq!(book.issued(), 1);

    // Refused: replica 1's certificate claiming replica 3; a master's and a
    // reader's credential; another CA's replica; no TLS at all.
    let refusals: Vec<(&str, Result<_, _>)> = vec![
        ("another id", fetch_pass(at, 3, 5, Some(&r1), 2, t)),
        (
            "a master",
            fetch_pass(
                at,
                MASTER_BIT | 9,
                5,
                Some(&cred(&d.good, Identity::Master)),
                2,
                t,
            ),
        ),
        (
            "a reader",
            fetch_pass(
                at,
                CLIENT_BIT | 9,
                5,
                Some(&cred(&d.good, Identity::Reader)),
                2,
                t,
            ),
        ),
        (
            "another CA",
            fetch_pass(
                at,
                1,
                5,
                Some(&cred(&d.other_ca, Identity::Replica(1))),
                2,
                t,
            ),
        ),
        ("plain TCP", fetch_pass(at, 1, 5, None, 2, t)),
        (
            "expecting another issuer",
            fetch_pass(at, 1, 5, Some(&r1), 7, t),
        ),
    ];
    for (what, r) in refusals {
        assert!(r.is_err(), "{what}: a pass was issued");
    }
    assert_eq!(book.issued(), 1, "nothing more was issued");

    // A node without a book refuses pass requests.
    let plain = node(4, cred(&d.good, Identity::Replica(2)), 0);
    assert!(fetch_pass(plain.local_addr(), 1, 5, Some(&r1), 2, t).is_err());

    // The issuer kept serving: replica 1 still talks to it.
    let a = node(1, r1, 0);
    a.add_peer(2, at);
    a.send(2, Bytes::from_static(b"still here"));
    let (from, p) = next_message(&issuer, WAIT).expect("the issuer still serves");
    assert_eq!((from, &p[..]), (1, &b"still here"[..]));
}
