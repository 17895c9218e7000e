//! The `push` scenario: a configuration push to M masters over the real
//! TCP transport, as the active coordinator does it (one one-sided write of
//! an encoded configuration region per master, all issued at once, each
//! on its own connection, from a transport with inline I/O on io_uring as
//! a coordinator replica's). The masters are light in-process endpoints: a
//! TCP transport each, whose registered region decodes and checks what
//! lands (as a master's does) and notes when. Measured per round: from the
//! moment the coordinator starts encoding the regions until every master's
//! region shows the new version, and until the last acknowledgement is
//! back.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ramcoord::cluster::region::RegionTablet;
use ramcoord::cluster::{ConfigRegion, ServerId, ServerStatus};
use ramcoord_net::tcp::{TcpConfig, TcpTransport};
use ramcoord_net::{Event, Region, Transport, WriteStatus};
use serde::Serialize;

use crate::dist::{Dist, Recorder};

/// A master's region: keeps the newest version that checked out and when
/// it landed.
struct TimedRegion {
    landed: Mutex<(u64, Option<Instant>)>,
}

impl Region for TimedRegion {
    fn len(&self) -> u64 {
        1 << 20
    }

    fn write(&self, _offset: u64, bytes: &[u8]) -> Result<(), ramcoord_net::WriteRefused> {
        let r =
            ConfigRegion::decode(bytes).map_err(|e| ramcoord_net::WriteRefused(e.to_string()))?;
        let mut l = self.landed.lock().unwrap();
        if r.version > l.0 {
            *l = (r.version, Some(Instant::now()));
        }
        Ok(())
    }
}

/// One fan-out size's result.
#[derive(Serialize, Clone, Debug, Default)]
pub struct PushResult {
    /// Masters pushed to.
    pub masters: usize,
    /// Encoded region bytes per master.
    pub region_bytes: usize,
    /// Push started → every region holds the version.
    pub landed: Dist,
    /// Push started → every acknowledgement back.
    pub acked: Dist,
}

/// A region like the coordinator's: its owner up, 8 tablets, whole (its
/// size does not depend on how many masters there are).
pub fn region(owner: u32, version: u64) -> ConfigRegion {
    ConfigRegion {
        term: 1,
        version,
        server_list_version: version,
        owner: ServerId {
            index: owner,
            generation: 1,
        },
        status: ServerStatus::Up,
        tables: None,
        tablets: (0..8)
            .map(|t| RegionTablet {
                table: t,
                start_hash: t << 60,
                end_hash: ((t + 1) << 60) - 1,
            })
            .collect(),
    }
}

/// Pushes to `m` masters `rounds` times.
pub fn push(m: usize, rounds: usize) -> Result<PushResult, String> {
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut masters = Vec::new();
    for i in 0..m {
        let t = TcpTransport::start(TcpConfig::new(1000 + i as u64, 1, any))
            .map_err(|e| e.to_string())?;
        let r = Arc::new(TimedRegion {
            landed: Mutex::new((0, None)),
        });
        t.register_region(1, r.clone());
        masters.push((t, r));
    }
    // The coordinator's side as a coordinator replica runs it: inline I/O
    // on io_uring (every push of a round leaves in one submission, the
    // acknowledgements come back on the same ring).
    let mut ccfg = TcpConfig::new(1, 1, any);
    ccfg.inline_io = true;
    let coord = TcpTransport::start(ccfg).map_err(|e| e.to_string())?;
    for (i, (t, _)) in masters.iter().enumerate() {
        coord.add_peer(1000 + i as u64, t.local_addr());
    }
    let (mut landed, mut acked) = (Recorder::default(), Recorder::default());
    let mut region_bytes = 0;
    // Round 0 connects everyone; not measured.
    for round in 0..=rounds {
        let version = round as u64 + 1;
        let contents: Vec<_> = (0..m).map(|i| region(i as u32 + 1, version)).collect();
        // From here on, what the coordinator does per push: encode each
        // master's region, write it.
        let start = Instant::now();
        for (i, r) in contents.iter().enumerate() {
            let bytes = r.encode().expect("the benchmark's regions fit");
            region_bytes = bytes.len();
            coord.write(1000 + i as u64, 1, 0, bytes);
        }
        coord.flush();
        let deadline = start + Duration::from_secs(10);
        let mut acks = 0;
        while acks < m {
            match coord.next_event(deadline.saturating_duration_since(Instant::now())) {
                Some(Event::WriteDone { status, .. }) => {
                    if status != WriteStatus::Landed {
                        return Err(format!("push refused: {status}"));
                    }
                    acks += 1;
                }
                Some(_) => {}
                None if Instant::now() < deadline => {}
                None => return Err(format!("round {round}: {acks} of {m} acknowledged")),
            }
        }
        let all_acked = start.elapsed();
        let mut last = start;
        for (_, r) in &masters {
            let (v, at) = *r.landed.lock().unwrap();
            if v != version {
                return Err(format!("a master holds version {v}, not {version}"));
            }
            last = last.max(at.expect("landed"));
        }
        if round > 0 {
            landed.record(last - start);
            acked.record(all_acked);
        }
    }
    Ok(PushResult {
        masters: m,
        region_bytes,
        landed: landed.dist(),
        acked: acked.dist(),
    })
}
