//! A fault hook for chaos tests: while switched on, every sync of this
//! process's disk log takes an extra delay, as a slow or stalled disk
//! would, and holds whoever a real slow disk would hold:
//!
//! - an io_uring flush ([`super::DiskStorage::flush_start`]) is reported
//!   finished no sooner than the delay after it was submitted; the caller
//!   goes on meanwhile, as it does while a real slow write is in flight;
//! - a blocking sync (`Storage::sync`, the `std` backend, memory
//!   durability's page-cache write) waits the delay first in the caller's
//!   thread, exactly where a real slow `fdatasync` would hold it.
//!
//! Compiled in and off by default: the delay is zero until something in
//! the process sets it. `ramcoord coordinator --fault-signals` lets a
//! chaos nemesis switch it on and off from outside with SIGUSR1 and
//! SIGUSR2; nothing else sets it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static SYNC_DELAY_US: AtomicU64 = AtomicU64::new(0);

/// Makes every later sync wait `delay` first (zero: the hook is off).
pub fn set_sync_delay(delay: Duration) {
    SYNC_DELAY_US.store(delay.as_micros() as u64, Ordering::Relaxed);
}

/// The delay each sync waits now.
pub fn sync_delay() -> Duration {
    Duration::from_micros(SYNC_DELAY_US.load(Ordering::Relaxed))
}

/// Called at the start of every sync.
pub(crate) fn before_sync() {
    let us = SYNC_DELAY_US.load(Ordering::Relaxed);
    if us > 0 {
        std::thread::sleep(Duration::from_micros(us));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_is_off_until_set_and_can_be_switched_off() {
        // (Other tests of this process sync too: keep the delay tiny.)
        assert_eq!(sync_delay(), Duration::ZERO);
        set_sync_delay(Duration::from_micros(1));
        assert_eq!(sync_delay(), Duration::from_micros(1));
        before_sync();
        set_sync_delay(Duration::ZERO);
        assert_eq!(sync_delay(), Duration::ZERO);
    }
}
