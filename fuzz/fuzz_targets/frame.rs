//! `ramcoord_net::frame::FrameDecoder`: the stream frame format every
//! stream transport reads from its peers (header, checksum, the six body
//! kinds). The input is a byte stream as read from a socket.
//!
//! Checks: no panic; every frame decoded re-encodes to a frame that
//! decodes to the same value; the same stream cut into small reads gives
//! the same frames and the same error. Run on the input as given and with
//! every frame's checksum recomputed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ramcoord_fuzz::fix_frame_crcs;
use ramcoord_net::frame::{Frame, FrameDecoder, FrameError};

/// The frames a stream holds, and how it ends (`None`: needs more bytes).
fn decode(stream: &[u8], read_size: usize) -> (Vec<Frame>, Option<FrameError>) {
    let mut d = FrameDecoder::new();
    let mut frames = Vec::new();
    for piece in stream.chunks(read_size.max(1)) {
        d.push(piece);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fn check(stream: &[u8]) {
    let whole = decode(stream, usize::MAX);
    for f in &whole.0 {
        let mut d = FrameDecoder::new();
        d.push(&f.to_bytes());
        assert_eq!(d.next_frame(), Ok(Some(f.clone())), "re-encoded frame");
        assert_eq!(d.buffered(), 0);
    }
    let read_size = 1 + stream.first().map_or(0, |b| *b as usize % 23);
    assert_eq!(
        decode(stream, read_size),
        whole,
        "reads of {read_size} bytes"
    );
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let fixed = fix_frame_crcs(data);
    if fixed != data {
        check(&fixed);
    }
});
