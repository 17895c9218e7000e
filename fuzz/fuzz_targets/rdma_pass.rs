//! `ramcoord_net::rdma_pass`: the private data of an RDMA connection
//! request, read by a listener before it admits anyone, and the pass in
//! it.
//!
//! Checks: decoding never panics; what decodes encodes back to the same
//! bytes; a pass the fuzzer made up is never admitted by a book with a
//! key of its own (a 128-bit MAC is not guessed), for any holder; a pass
//! the book issued admits its holder and nobody else.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ramcoord_net::rdma_pass::{Pass, PassBook, RequestPrivate};

fn book() -> &'static PassBook {
    static BOOK: OnceLock<PassBook> = OnceLock::new();
    BOOK.get_or_init(|| PassBook::new(9, 2))
}

fuzz_target!(|data: &[u8]| {
    let _ = Pass::decode(data);
    let Ok(r) = RequestPrivate::decode(data) else {
        return;
    };
    assert_eq!(r.encode(), data, "decoded private data encodes back");
    let book = book();
    assert!(
        book.check(r.peer, r.pass.as_ref()).is_err(),
        "a made-up pass was admitted"
    );
    let genuine = book.issue(r.peer);
    assert_eq!(book.check(r.peer, Some(&genuine)), Ok(()));
    assert!(book.check(r.peer ^ 1, Some(&genuine)).is_err());
});
