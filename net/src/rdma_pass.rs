//! Passes: how an RDMA connection proves its sender authenticated over TLS.
//!
//! # Why
//!
//! RDMA connections carry no TLS: an `rdma_cm` connection request says who
//! it is from in its private data, and nothing checks that. Anyone who can
//! reach the fabric could claim to be replica 3 and, once accepted, be
//! handed the keys of the memory the NIC lets it write (a master's
//! configuration region, a replica's message ring). So an RDMA listener
//! admits a connection only if its request carries a **pass** that the
//! listener itself issued, moments before, over an authenticated TCP
//! connection to the same process.
//!
//! # How
//!
//! 1. The would-be sender opens a TCP connection to the listener's address
//!    (mutual TLS when the cluster runs with credentials), and instead of
//!    `Hello` says `PassRequest` (its id and cluster; [`crate::frame`]).
//! 2. The listener's TCP side checks the id against the certificate (only a
//!    coordinator replica may hold a pass: replicas are the only peers that
//!    open RDMA connections), and answers with a [`Pass`]: an expiry time
//!    and a MAC, then closes the connection.
//! 3. The sender puts the pass in its connection request's private data
//!    ([`RequestPrivate`]); the listener recomputes the MAC with its key and
//!    checks the expiry **before** it accepts the request, so no memory is
//!    registered, no ring allocated, no region key advertised and no
//!    thread started for a request that fails. A refused request is counted and logged (at most once a
//!    second).
//!
//! The MAC is HMAC-SHA256 (through `ring`, which rustls already uses)
//! truncated to 128 bits (compared in constant time with `subtle`), over a domain string, the cluster, the issuer's
//! id, the holder's id and the expiry. The key is 32 random bytes drawn when
//! the process starts and never leaves it: a restarted listener refuses
//! older passes, and the sender fetches a new one (it does so after any
//! failed connect). A pass is valid for [`PASS_TTL`]; a sender fetches a
//! new one when its own is half that old.
//!
//! # Formats
//!
//! ```text
//! Pass (24 bytes)              expiry u64 (Unix seconds, the issuer's
//!                              clock), MAC 16 bytes
//! connection request private   cluster u64, sender id u64, then a pass
//! data (16 or 40 bytes)        (24 bytes) or nothing
//! ```
//!
//! Without TLS (`--insecure`) the request travels over plain TCP and a
//! pass goes to whoever claims a replica's id, as every other right does
//! in an insecure cluster.
//!
//! # What a pass does not do
//!
//! It is a bearer token sent in clear on the fabric: someone who can read
//! the fabric could replay it, as that peer, until it expires. Such a
//! reader can also read every RDMA message and region write, which TLS
//! does not cover either (the README's security section says so). The pass
//! keeps out those who can reach the fabric but hold no credential.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;
use subtle::ConstantTimeEq;

use crate::PeerId;

/// How long a pass is valid after it is issued.
pub const PASS_TTL: Duration = Duration::from_secs(120);
/// An encoded pass.
pub const PASS_BYTES: usize = 24;
/// Bytes of the MAC kept (of HMAC-SHA256's 32).
const MAC_BYTES: usize = 16;
/// Binds a MAC to its use (a key is never used for anything else, but the
/// format may change).
const DOMAIN: &[u8] = b"ramcoord rdma pass v1";

/// The issuer's proof that `holder` authenticated to it (see the module
/// docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pass {
    /// When it stops being valid, in seconds since the Unix epoch on the
    /// issuer's clock.
    pub expires_unix_s: u64,
    /// The truncated MAC.
    pub mac: [u8; MAC_BYTES],
}

/// Why a pass or a connection request's private data is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassError {
    /// Not the size of anything we send.
    #[error("private data of {0} bytes (16 or 40 expected)")]
    BadLength(usize),
    /// A pass of the wrong size.
    #[error("a pass of {0} bytes ({PASS_BYTES} expected)")]
    BadPassLength(usize),
    /// The request carries no pass and one is required.
    #[error("no pass (fetch one over TCP first)")]
    Missing,
    /// Past its expiry.
    #[error("the pass expired {0} s ago")]
    Expired(u64),
    /// Valid for longer than this issuer ever issues: not ours.
    #[error("the pass expires too far in the future")]
    TooFar,
    /// The MAC does not match: forged, for another holder or issuer, or
    /// issued by an earlier run of this process.
    #[error("the pass does not check out (forged, for another peer, or from before a restart)")]
    Forged,
}

impl Pass {
    /// The encoded pass.
    pub fn encode(&self) -> [u8; PASS_BYTES] {
        let mut b = [0u8; PASS_BYTES];
        b[..8].copy_from_slice(&self.expires_unix_s.to_le_bytes());
        b[8..].copy_from_slice(&self.mac);
        b
    }

    /// Decodes a pass (only its size is checked here).
    pub fn decode(b: &[u8]) -> Result<Pass, PassError> {
        if b.len() != PASS_BYTES {
            return Err(PassError::BadPassLength(b.len()));
        }
        let mut expires = [0u8; 8];
        expires.copy_from_slice(&b[..8]);
        let mut mac = [0u8; MAC_BYTES];
        mac.copy_from_slice(&b[8..]);
        Ok(Pass {
            expires_unix_s: u64::from_le_bytes(expires),
            mac,
        })
    }
}

/// What an RDMA connection request's private data says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestPrivate {
    /// The sender's cluster.
    pub cluster: u64,
    /// Who the sender says it is.
    pub peer: PeerId,
    /// Its pass, if it has one.
    pub pass: Option<Pass>,
}

impl RequestPrivate {
    /// The encoded private data.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(16 + PASS_BYTES);
        b.extend_from_slice(&self.cluster.to_le_bytes());
        b.extend_from_slice(&self.peer.to_le_bytes());
        if let Some(p) = &self.pass {
            b.extend_from_slice(&p.encode());
        }
        b
    }

    /// Decodes private data as received.
    pub fn decode(b: &[u8]) -> Result<RequestPrivate, PassError> {
        if b.len() != 16 && b.len() != 16 + PASS_BYTES {
            return Err(PassError::BadLength(b.len()));
        }
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[..8]);
        let cluster = u64::from_le_bytes(w);
        w.copy_from_slice(&b[8..16]);
        let peer = u64::from_le_bytes(w);
        let pass = if b.len() > 16 {
            Some(Pass::decode(&b[16..])?)
        } else {
            None
        };
        Ok(RequestPrivate {
            cluster,
            peer,
            pass,
        })
    }
}

/// A listener's key: issues passes (its TCP side) and checks them (its RDMA
/// side). One per process, shared by both sides.
pub struct PassBook {
    key: hmac::Key,
    cluster: u64,
    issuer: PeerId,
    issued: AtomicU64,
    refused: AtomicU64,
}

impl std::fmt::Debug for PassBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassBook")
            .field("cluster", &self.cluster)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

fn now_unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl PassBook {
    /// A book with a fresh random key, for `issuer` (this node's id) in
    /// `cluster`.
    pub fn new(cluster: u64, issuer: PeerId) -> PassBook {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .expect("the system's random number generator failed");
        PassBook {
            key,
            cluster,
            issuer,
            issued: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    fn mac(&self, holder: PeerId, expires_unix_s: u64) -> [u8; MAC_BYTES] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(DOMAIN);
        ctx.update(&self.cluster.to_le_bytes());
        ctx.update(&self.issuer.to_le_bytes());
        ctx.update(&holder.to_le_bytes());
        ctx.update(&expires_unix_s.to_le_bytes());
        let tag = ctx.sign();
        let mut mac = [0u8; MAC_BYTES];
        mac.copy_from_slice(&tag.as_ref()[..MAC_BYTES]);
        mac
    }

    /// A pass for `holder`, valid for [`PASS_TTL`] from now.
    pub fn issue(&self, holder: PeerId) -> Pass {
        self.issue_at(holder, now_unix_s())
    }

    /// A pass for `holder` as if issued at `now_unix_s`.
    pub fn issue_at(&self, holder: PeerId, now_unix_s: u64) -> Pass {
        self.issued.fetch_add(1, Ordering::Relaxed);
        let expires_unix_s = now_unix_s.saturating_add(PASS_TTL.as_secs());
        Pass {
            expires_unix_s,
            mac: self.mac(holder, expires_unix_s),
        }
    }

    /// Whether `pass` admits `holder` now. A refusal is counted.
    pub fn check(&self, holder: PeerId, pass: Option<&Pass>) -> Result<(), PassError> {
        self.check_at(holder, pass, now_unix_s())
    }

    /// As [`PassBook::check`] at `now_unix_s`.
    pub fn check_at(
        &self,
        holder: PeerId,
        pass: Option<&Pass>,
        now_unix_s: u64,
    ) -> Result<(), PassError> {
        let r = self.verdict(holder, pass, now_unix_s);
        if r.is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn verdict(&self, holder: PeerId, pass: Option<&Pass>, now: u64) -> Result<(), PassError> {
        let pass = pass.ok_or(PassError::Missing)?;
        // The MAC first: an expiry is worth reporting only on a genuine pass.
        let want = self.mac(holder, pass.expires_unix_s);
        if !bool::from(want.ct_eq(&pass.mac)) {
            return Err(PassError::Forged);
        }
        if pass.expires_unix_s <= now {
            return Err(PassError::Expired(now - pass.expires_unix_s));
        }
        if pass.expires_unix_s > now.saturating_add(PASS_TTL.as_secs() + 60) {
            // Our own clock went back by more than a minute: refuse rather
            // than honour a pass for longer than its lifetime.
            return Err(PassError::TooFar);
        }
        Ok(())
    }

    /// Passes issued so far.
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }

    /// Requests refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_admits_its_holder_until_it_expires() {
        let book = PassBook::new(7, 1);
        let p = book.issue_at(2, 1000);
        assert_eq!(book.check_at(2, Some(&p), 1000), Ok(()));
        assert_eq!(
            book.check_at(2, Some(&p), 1000 + PASS_TTL.as_secs() - 1),
            Ok(())
        );
        assert_eq!(
            book.check_at(2, Some(&p), 1000 + PASS_TTL.as_secs() + 5),
            Err(PassError::Expired(5))
        );
        assert_eq!(book.refused(), 1);
    }

    #[test]
    fn a_pass_admits_nobody_else_and_nowhere_else() {
        let book = PassBook::new(7, 1);
        let p = book.issue_at(2, 1000);
        assert_eq!(book.check_at(3, Some(&p), 1000), Err(PassError::Forged));
        // Another issuer, another cluster, another run of the same issuer.
        for other in [
            PassBook::new(7, 4),
            PassBook::new(8, 1),
            PassBook::new(7, 1),
        ] {
            assert_eq!(other.check_at(2, Some(&p), 1000), Err(PassError::Forged));
        }
        let mut changed = p;
        changed.expires_unix_s += 1;
        assert_eq!(
            book.check_at(2, Some(&changed), 1000),
            Err(PassError::Forged)
        );
        let mut flipped = p;
        flipped.mac[15] ^= 1;
        assert_eq!(
            book.check_at(2, Some(&flipped), 1000),
            Err(PassError::Forged)
        );
        assert_eq!(book.check_at(2, None, 1000), Err(PassError::Missing));
    }

    #[test]
    fn a_clock_that_went_back_does_not_stretch_a_pass() {
        let book = PassBook::new(7, 1);
        let p = book.issue_at(2, 10_000);
        assert_eq!(book.check_at(2, Some(&p), 9_000), Err(PassError::TooFar));
    }

    #[test]
    fn request_private_data_round_trips_and_refuses_other_sizes() {
        let book = PassBook::new(7, 1);
        for pass in [None, Some(book.issue(2))] {
            let r = RequestPrivate {
                cluster: 7,
                peer: 2,
                pass,
            };
            assert_eq!(RequestPrivate::decode(&r.encode()), Ok(r));
        }
        for len in [0, 8, 15, 17, 39, 41, 55] {
            assert_eq!(
                RequestPrivate::decode(&vec![0u8; len]),
                Err(PassError::BadLength(len))
            );
        }
    }
}
