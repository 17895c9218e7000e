//! The hardware floor, measured in the same run as what is compared with
//! it: a loopback TCP round trip of 64 bytes (`TCP_NODELAY`, an echo
//! thread in this process: the kernel picks the cores, as it does for the
//! cluster's processes) and a 4 KiB `write` + `fdatasync` on the data
//! directory's file system (`storage::floor`).

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
    /// 4 KiB write + fdatasync.
    pub fsync: Dist,
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

/// Both floors.
pub fn floor(dir: &Path, rtt_ops: u64, fsync_ops: u64) -> Result<FloorReport, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let h = crate::storage::floor(dir, fsync_ops);
    let mut fsync = Recorder::default();
    fsync.0.add(&h).map_err(|e| e.to_string())?;
    Ok(FloorReport {
        rtt: rtt(rtt_ops)?,
        fsync: fsync.dist(),
    })
}
