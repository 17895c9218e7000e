//! `ramcoord::cluster::ConfigRegion::decode`: a master's configuration
//! region as written into its memory by a coordinator (a one-sided write:
//! torn, stale or forged bytes are possible), and the master's handling
//! of it (`MasterAgent::on_region_write`).
//!
//! Checks: no panic; a decoded region re-encodes to a region that decodes
//! to the same value. Run on the input as given and with the checksum
//! recomputed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ramcoord::cluster::ConfigRegion;
use ramcoord::master::{MasterAgent, MasterBugs, MasterConfig};
use ramcoord_fuzz::fix_region_crc;

fn check(bytes: &[u8]) {
    if let Ok(r) = ConfigRegion::decode(bytes) {
        if let Ok(again) = r.encode() {
            assert_eq!(ConfigRegion::decode(&again), Ok(r.clone()), "re-encoded");
        }
        // The master it is addressed to acts on it.
        let mut agent = MasterAgent::new(
            MasterConfig::default(),
            "m:1".into(),
            1,
            7,
            MasterBugs::default(),
        );
        agent.enlisted(r.owner);
        let _ = agent.on_region_write(bytes);
        let _ = (agent.config(), agent.declared_dead());
        agent.lease_granted(0, 10);
        let _ = agent.get(1, b"key", 5);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let fixed = fix_region_crc(data);
    if fixed != data {
        check(&fixed);
    }
});
