//! `ramcoord_net::tls::identity_of_der` and `Identity::from_uri`: the
//! identity read from a peer's certificate (DER), after the handshake.
//!
//! Checks: no panic on any bytes; an identity parsed from a URI prints a
//! URI that parses back to it, and admits exactly its own class of ids.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ramcoord_net::tls::{identity_of_der, Identity, PeerClass};

fuzz_target!(|data: &[u8]| {
    let _ = identity_of_der(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(id) = Identity::from_uri(text) {
            assert_eq!(Identity::from_uri(&id.uri()), Some(id));
            if let Identity::Replica(n) = id {
                assert!(id.admits(n));
                assert_eq!(PeerClass::of(n), PeerClass::Replica(n));
            }
        }
    }
});
