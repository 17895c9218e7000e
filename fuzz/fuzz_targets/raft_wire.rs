//! `ramcoord_log::wire::decode_message`: a Raft message as it arrives in a
//! `Message` frame from a peer (after the node's tag byte), and
//! `ConfChange::decode` on every entry payload it carries.
//!
//! Checks: no panic; a decoded message re-encodes to exactly the input
//! (the format has one encoding per message), except a snapshot chunk,
//! whose member lists are sets (re-encoded sorted and deduplicated): it
//! must decode back to the same message.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ramcoord_log::wire::{decode_message, message_to_bytes};
use ramcoord_log::{ConfChange, MessageBody};

fuzz_target!(|data: &[u8]| {
    let _ = ConfChange::decode(data);
    let Ok(m) = decode_message(Bytes::copy_from_slice(data)) else {
        return;
    };
    if let MessageBody::Append { entries, .. } = &m.body {
        for e in entries {
            let _ = ConfChange::decode(&e.data);
        }
    }
    let again = message_to_bytes(&m);
    if matches!(m.body, MessageBody::Snapshot { .. }) {
        assert_eq!(decode_message(again), Ok(m), "re-encoded snapshot chunk");
    } else {
        assert_eq!(&again[..], data, "re-encoding of {m:?}");
    }
});
