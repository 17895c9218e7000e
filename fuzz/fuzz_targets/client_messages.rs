//! `ramcoord::protocol::decode`: the client protocol's enveloped
//! messages, as `ClientRequest` (what a coordinator replica reads),
//! `ClientReply` (what `ctl` and masters read), `MasterRequest` and
//! `MasterReply`. The input is a whole message: the node's tag byte, then
//! the postcard envelope; the body after the tag is decoded as each of the
//! four types.
//!
//! Checks: no panic; whatever decodes re-encodes to a message that
//! decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ramcoord::protocol::{decode, encode, ClientReply, ClientRequest, MasterReply, MasterRequest};
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;

fn check<T: DeserializeOwned + Serialize + PartialEq + Debug>(body: &[u8]) {
    if let Ok(env) = decode::<T>(body) {
        let again = encode(0, env.id, &env.body);
        assert_eq!(decode::<T>(&again[1..]), Ok(env), "re-encoded");
    }
}

fuzz_target!(|data: &[u8]| {
    let body = data.get(1..).unwrap_or_default();
    check::<ClientRequest>(body);
    check::<ClientReply>(body);
    check::<MasterRequest>(body);
    check::<MasterReply>(body);
});
