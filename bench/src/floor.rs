//! The hardware floor, measured in the same run as what is compared with
//! it: a loopback TCP round trip of 64 bytes (`TCP_NODELAY`, an echo
//! thread in this process: the kernel picks the cores, as it does for the
//! cluster's processes) and a 4 KiB `write` + `fdatasync` on the data
//! directory's file system (`storage::floor`). Beside the TCP round trip,
//! the same over mutual TLS through the transport's own connection type
//! (`ramcoord_net::link::Link`): what TLS costs one hop, which the commit
//! point pays on each of its four (client → leader → followers → leader →
//! client).
//!
//! The three replicas of a benchmark cluster share this machine's disk, so
//! a replica's flush competes with two others: `fsync3` is the same 4 KiB
//! write + `fdatasync` while two other processes (this binary, hidden
//! subcommand `fsync-load`) write and sync files of their own in the same
//! directory as fast as they can. The client-observed floor of a commit
//! point is then two round trips (client → leader → follower and back)
//! plus one contended flush: `2 × RTT + fsync3`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::dist::{Dist, Recorder};

/// The floor.
#[derive(Serialize, Clone, Debug, Default)]
pub struct FloorReport {
    /// Loopback round trip, 64 B.
    pub rtt: Dist,
    /// The same over mutual TLS (`Link`, as the transport uses it).
    pub rtt_tls: Dist,
    /// 4 KiB write + fdatasync.
    pub fsync: Dist,
    /// The same while two other processes write and sync on the same disk.
    pub fsync3: Dist,
}

/// Round trips of 64 bytes over loopback TCP.
pub fn rtt(ops: u64) -> Result<Dist, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let echo = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let _ = s.set_nodelay(true);
        let mut b = [0u8; 64];
        while s.read_exact(&mut b).is_ok() {
            if s.write_all(&b).is_err() {
                break;
            }
        }
    });
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut rec = Recorder::default();
    let mut b = [7u8; 64];
    for i in 0..ops + 100 {
        let t = Instant::now();
        s.write_all(&b).map_err(|e| e.to_string())?;
        s.read_exact(&mut b).map_err(|e| e.to_string())?;
        if i >= 100 {
            rec.record(t.elapsed());
        }
    }
    drop(s);
    let _ = echo.join();
    Ok(rec.dist())
}

/// Round trips of 64 bytes over loopback TCP with mutual TLS, through
/// the transport's `Link` (credentials issued for the run into `dir`).
pub fn rtt_tls(dir: &Path, ops: u64) -> Result<Dist, String> {
    use ramcoord_net::link::Link;
    use ramcoord_net::tls::{self, CredentialFiles, Identity, Tls};
    let creds = dir.join("floor-tls");
    let ids = [Identity::Replica(1), Identity::Replica(2)];
    tls::issue(&creds, &ids, 1, true).map_err(|e| e.to_string())?;
    let load = |i| Tls::load(&CredentialFiles::in_dir(&creds, i)).map_err(|e| e.to_string());
    let (server, client) = (load(ids[0])?, load(ids[1])?);
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let deadline = || Instant::now() + std::time::Duration::from_secs(5);
    let echo = std::thread::spawn(move || {
        let (s, _) = l.accept().expect("accept");
        let _ = s.set_nodelay(true);
        let Ok(link) = Link::accept_tls(s, &server, deadline()) else {
            return;
        };
        let mut b = [0u8; 64];
        'echo: loop {
            let mut got = 0;
            while got < b.len() {
                match link.read(&mut b[got..]) {
                    Ok(0) | Err(_) => break 'echo,
                    Ok(n) => got += n,
                }
            }
            if link.write_all(&b).is_err() {
                break;
            }
        }
    });
    let s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let link = Link::connect_tls(s, &client, deadline()).map_err(|e| e.to_string())?;
    let mut rec = Recorder::default();
    let mut b = [7u8; 64];
    for i in 0..ops + 100 {
        let t = Instant::now();
        link.write_all(&b).map_err(|e| e.to_string())?;
        let mut got = 0;
        while got < b.len() {
            match link.read(&mut b[got..]) {
                Ok(0) => return Err("the echo closed".into()),
                Ok(n) => got += n,
                Err(e) => return Err(e.to_string()),
            }
        }
        if i >= 100 {
            rec.record(t.elapsed());
        }
    }
    link.shutdown();
    let _ = echo.join();
    let _ = std::fs::remove_dir_all(&creds);
    Ok(rec.dist())
}

/// The floors.
pub fn floor(dir: &Path, rtt_ops: u64, fsync_ops: u64) -> Result<FloorReport, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let h = crate::storage::floor(dir, fsync_ops);
    let mut fsync = Recorder::default();
    fsync.0.add(&h).map_err(|e| e.to_string())?;
    Ok(FloorReport {
        rtt: rtt(rtt_ops)?,
        rtt_tls: rtt_tls(dir, rtt_ops)?,
        fsync: fsync.dist(),
        fsync3: fsync_contended(dir, fsync_ops, 2)?,
    })
}

/// 4 KiB write + fdatasync while `others` processes do the same on files
/// of their own in `dir` (see the module docs).
pub fn fsync_contended(dir: &Path, ops: u64, others: usize) -> Result<Dist, String> {
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut load = Vec::new();
    for i in 0..others {
        let child = Command::new(&exe)
            .arg("fsync-load")
            .arg("--file")
            .arg(dir.join(format!("load-{i}.dat")))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", exe.display()))?;
        load.push(child);
    }
    // Let them get going before measuring.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let h = crate::storage::floor(dir, ops);
    for mut child in load {
        drop(child.stdin.take()); // their signal to stop
        let _ = child.wait();
    }
    let mut r = Recorder::default();
    r.0.add(&h).map_err(|e| e.to_string())?;
    Ok(r.dist())
}

/// The load of [`fsync_contended`]: 4 KiB writes, each `fdatasync`ed, to
/// `file` (64 blocks, rewritten in turn) until stdin closes.
pub fn fsync_load(file: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(file)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        flag.store(true, Ordering::SeqCst);
    });
    let mut block = vec![0u8; 4096];
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        block.fill(i as u8);
        f.write_all_at(&block, (i % 64) * 4096)
            .map_err(|e| e.to_string())?;
        f.sync_data().map_err(|e| e.to_string())?;
        i += 1;
    }
    drop(f);
    let _ = std::fs::remove_file(file);
    Ok(())
}
