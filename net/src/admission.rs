//! Admission of inbound connections: what a peer can make a node hold is
//! bounded, whatever it does.
//!
//! Every accepted connection takes a [`Ticket`] from the node's
//! [`Admission`] before anything is read from it, and gives it back when it
//! closes (the ticket's `Drop`). Until its hello says it is one of the
//! node's configured peers, a connection counts as a **client**, and
//! clients are bounded:
//!
//! - in number, in all ([`Limits::client_conns_max`]) and per source
//!   address ([`Limits::client_conns_per_ip_max`], not applied to the
//!   addresses of configured peers: on one host every replica shares
//!   one); past either, a new connection is closed at once, before any
//!   read. [`PEER_HEADROOM`] connections beyond the cap are admitted while
//!   their hello is pending, so a peer reconnecting during a flood is heard;
//!   one that turns out to be a client is closed;
//! - in the bytes they may make the node buffer for frames not yet
//!   complete, summed over every client connection
//!   ([`Limits::client_buffered_bytes_max`]); the connection whose read
//!   would pass the bound is closed.
//!
//! A configured peer (another replica) is exempt once its hello names it:
//! peers are few and known, and starving them would stop the group. The
//! number of connections is derived by default from the process's
//! descriptor limit, so that descriptors never run out before the caps
//! do: already-connected clients and peers keep being served while new
//! connections are refused. A connection costs one descriptor; a fifth of
//! the limit (at most 4,096) is kept for a leader's push connections to
//! masters ([`Limits::push_conns_max`]), 256 for the node's own files
//! and peers, and the rest is the cap on clients: 15,744 under a limit
//! of 20,000, so one leader serves 10,000 masters.
//!
//! Refusals are logged at most once a second (with how many were refused
//! meanwhile), so a flood cannot turn into a flood of log lines.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Descriptors one inbound connection uses: its socket (the transport
/// keeps no duplicate; a push connection to a master is counted apart, in
/// [`Limits::push_conns_max`]).
const DESCRIPTORS_PER_CONN: u64 = 1;
/// Descriptors kept for everything else (log files, peers' connections,
/// the listener, io_uring).
const DESCRIPTORS_RESERVED: u64 = 256;
/// Connections admitted beyond the client cap while their hello is
/// pending, so that a peer reconnecting during a flood of clients is still
/// heard: a connection that turns out to be a client is then closed.
pub const PEER_HEADROOM: usize = 32;

/// The bounds (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Client connections at once (0: derived from the descriptor limit).
    pub client_conns_max: usize,
    /// Client connections at once from one source address (0: a quarter of
    /// `client_conns_max`, at least 8).
    pub client_conns_per_ip_max: usize,
    /// Bytes buffered for incomplete frames over all client connections.
    pub client_buffered_bytes_max: usize,
    /// A connection must complete its hello within this.
    pub handshake_timeout: Duration,
    /// A client connection that sends nothing for this long is closed.
    pub client_idle_timeout: Duration,
    /// Push connections (a leader's to the masters it writes
    /// configuration into) open at once; past it the least recently used
    /// idle one is closed first (0: a fifth of the descriptor limit, at
    /// most 4,096).
    pub push_conns_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            client_conns_max: 0,
            client_conns_per_ip_max: 0,
            client_buffered_bytes_max: 64 << 20,
            handshake_timeout: Duration::from_secs(5),
            client_idle_timeout: Duration::from_secs(120),
            push_conns_max: 0,
        }
    }
}

impl Limits {
    /// The limits with the derived defaults filled in.
    pub fn resolved(self) -> Limits {
        let mut l = self;
        let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(1 << 20);
        if l.push_conns_max == 0 {
            l.push_conns_max = (nofile / 5).clamp(16, 4096) as usize;
        }
        if l.client_conns_max == 0 {
            let n = nofile
                .saturating_sub(DESCRIPTORS_RESERVED)
                .saturating_sub(l.push_conns_max as u64)
                / DESCRIPTORS_PER_CONN;
            l.client_conns_max = n.clamp(16, 16_384) as usize;
        }
        if l.client_conns_per_ip_max == 0 {
            l.client_conns_per_ip_max = (l.client_conns_max / 4).max(8);
        }
        l
    }
}

/// Raises this process's soft limit on open descriptors to its hard
/// limit (what a process serving thousands of connections, or a benchmark
/// standing in for thousands of peers, needs; the derived connection
/// bound above follows it). Returns the soft limit now in force.
pub fn raise_descriptor_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, l) {
            tracing::warn!(error = %e, "cannot raise the open-descriptor limit");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

#[derive(Default)]
struct Counts {
    clients: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// A node's admission state (see the module docs).
pub struct Admission {
    limits: Limits,
    counts: Mutex<Counts>,
    buffered: AtomicUsize,
    refused: AtomicU64,
    last_log: Mutex<(Option<Instant>, u64)>,
}

/// A connection's place in the bounds; given back on drop.
pub struct Ticket {
    adm: Arc<Admission>,
    ip: IpAddr,
    client: bool,
    buffered: usize,
}

impl Admission {
    /// Admission under `limits` (derived defaults resolved).
    pub fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission {
            limits: limits.resolved(),
            counts: Mutex::new(Counts::default()),
            buffered: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            last_log: Mutex::new((None, 0)),
        })
    }

    /// The bounds in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Connections refused or closed for a bound, since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Client connections open now.
    pub fn clients(&self) -> usize {
        self.counts.lock().expect("lock poisoned").clients
    }

    /// Bytes buffered for incomplete client frames now.
    pub fn buffered(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
    }

    /// Admits a new connection from `ip`, counted as a client until its
    /// hello, or says which bound it would pass. `peer_address`: `ip` is a
    /// configured peer's address, so the per-address cap does not apply
    /// (on one host, every replica shares it); [`PEER_HEADROOM`] slots
    /// beyond the client cap are kept for connections whose hello is
    /// pending.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, peer_address: bool) -> Result<Ticket, &'static str> {
        let mut c = self.counts.lock().expect("lock poisoned");
        if c.clients >= self.limits.client_conns_max + PEER_HEADROOM {
            return Err("client connections at their limit");
        }
        let here = c.per_ip.entry(ip).or_default();
        if !peer_address && *here >= self.limits.client_conns_per_ip_max {
            return Err("client connections from this address at their limit");
        }
        *here += 1;
        c.clients += 1;
        Ok(Ticket {
            adm: self.clone(),
            ip,
            client: true,
            buffered: 0,
        })
    }

    /// Logs a refusal (or a close for a bound), at most once a second.
    pub fn note_refusal(&self, addr: std::net::SocketAddr, why: &str) {
        let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_log.lock().expect("lock poisoned");
        let now = Instant::now();
        if last
            .0
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1))
        {
            return;
        }
        let since = n - last.1;
        *last = (Some(now), n);
        tracing::warn!(
            %addr,
            reason = why,
            refused_since_last_log = since,
            refused_total = n,
            "connection refused or closed (a bound, or a credential; still serving peers and connected clients)"
        );
    }
}

impl Ticket {
    /// The connection is a configured peer: it no longer counts against
    /// the client bounds.
    pub fn promote_to_peer(&mut self) {
        if self.client {
            self.release_client();
            self.client = false;
        }
    }

    /// Whether it counts as a client.
    pub fn is_client(&self) -> bool {
        self.client
    }

    /// After its hello named a client: whether clients (this one
    /// included) are within their cap; a client admitted into the peers'
    /// headroom must then be closed.
    pub fn client_within_cap(&self) -> bool {
        !self.client
            || self.adm.counts.lock().expect("lock poisoned").clients
                <= self.adm.limits.client_conns_max
    }

    /// The connection's decoder holds `now` bytes of incomplete frames.
    /// Err if a client's bytes would pass the bound over all clients.
    pub fn account(&mut self, now: usize) -> Result<(), &'static str> {
        if !self.client {
            return Ok(());
        }
        let before = self.buffered;
        self.buffered = now;
        if now >= before {
            let total = self.adm.buffered.fetch_add(now - before, Ordering::Relaxed) + now - before;
            if total > self.adm.limits.client_buffered_bytes_max {
                return Err("bytes buffered for incomplete client frames at their limit");
            }
        } else {
            self.adm.buffered.fetch_sub(before - now, Ordering::Relaxed);
        }
        Ok(())
    }

    fn release_client(&mut self) {
        self.adm
            .buffered
            .fetch_sub(self.buffered, Ordering::Relaxed);
        self.buffered = 0;
        let mut c = self.adm.counts.lock().expect("lock poisoned");
        c.clients = c.clients.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.client {
            self.release_client();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_ip: usize, bytes: usize) -> Limits {
        Limits {
            client_conns_max: total,
            client_conns_per_ip_max: per_ip,
            client_buffered_bytes_max: bytes,
            ..Limits::default()
        }
    }

    #[test]
    fn caps_hold_and_are_given_back() {
        let a = Admission::new(limits(3, 2, 1000));
        let ip1: IpAddr = "10.0.0.1".parse().unwrap();
        let ip2: IpAddr = "10.0.0.2".parse().unwrap();
        let t1 = a.admit(ip1, false).unwrap();
        let _t2 = a.admit(ip1, false).unwrap();
        assert!(a.admit(ip1, false).is_err(), "per address");
        let mut t3 = a.admit(ip2, false).unwrap();
        assert!(t3.client_within_cap());
        // Beyond the cap, within the peers' headroom: admitted, but a
        // client must then go.
        let extra = a.admit(ip2, false).unwrap();
        assert!(!extra.client_within_cap());
        drop(extra);
        t3.promote_to_peer();
        assert_eq!(a.clients(), 2);
        let _t4 = a.admit(ip2, false).unwrap();
        drop(t1);
        let _t5 = a.admit(ip1, false).unwrap();
        assert_eq!(a.clients(), 3);
        // A peer's address is not held to the per-address cap.
        let held: Vec<Ticket> = (0..PEER_HEADROOM)
            .map(|_| a.admit(ip1, true).unwrap())
            .collect();
        assert!(a.admit(ip1, true).is_err(), "in all, headroom included");
        drop(held);
    }

    #[test]
    fn buffered_bytes_are_bounded_over_all_clients() {
        let a = Admission::new(limits(10, 10, 1000));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut t1 = a.admit(ip, false).unwrap();
        let mut t2 = a.admit(ip, false).unwrap();
        t1.account(600).unwrap();
        assert!(t2.account(500).is_err());
        drop(t2);
        assert_eq!(a.buffered(), 600);
        t1.account(0).unwrap();
        assert_eq!(a.buffered(), 0);
        let mut t3 = a.admit(ip, false).unwrap();
        t3.promote_to_peer();
        t3.account(1 << 30).unwrap(); // peers are not bounded here
        assert_eq!(a.buffered(), 0);
    }

    #[test]
    fn the_default_connection_cap_follows_the_descriptor_limit() {
        let l = Limits::default().resolved();
        assert!(l.client_conns_max >= 16);
        assert!(l.client_conns_per_ip_max >= 8);
        assert!(l.push_conns_max >= 16);
        // Clients (one descriptor each), push connections and what is
        // kept for the node's own files fit in the limit: descriptors do
        // not run out before the caps do.
        let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        if nofile >= 1024 {
            let used = l.client_conns_max as u64 * DESCRIPTORS_PER_CONN
                + l.push_conns_max as u64
                + DESCRIPTORS_RESERVED;
            assert!(used <= nofile, "{l:?} needs {used} descriptors of {nofile}");
        }
    }
}
