//! The Raft wire format: every message round-trips; no input makes the
//! decoder panic; what the core takes for granted is checked.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use ramcoord_log::wire::{
    decode_message, encode_message, message_to_bytes, WireError, WIRE_INDEX_TERM_MAX,
};
use ramcoord_log::{ConfState, Entry, EntryKind, Message, MessageBody, SnapshotMeta};

/// A log index or term as the wire carries them.
fn idx() -> impl Strategy<Value = u64> {
    0..=WIRE_INDEX_TERM_MAX
}

fn body(term: u64) -> impl Strategy<Value = MessageBody> {
    let entries = (
        0u64..5,
        proptest::collection::vec(
            (
                0u64..2,
                0u8..3,
                proptest::collection::vec(any::<u8>(), 0..40),
            ),
            0..6,
        ),
    )
        .prop_map(move |(prev, specs)| {
            let prev_term = term.saturating_sub(1);
            let mut t = prev_term;
            let entries: Vec<Entry> = specs
                .into_iter()
                .enumerate()
                .map(|(i, (bump, kind, data))| {
                    t = (t + bump).min(term);
                    Entry {
                        term: t,
                        index: prev + 1 + i as u64,
                        kind: [EntryKind::Normal, EntryKind::ConfChange, EntryKind::Empty]
                            [kind as usize],
                        data: Bytes::from(data),
                    }
                })
                .collect();
            MessageBody::Append {
                prev_index: prev,
                prev_term,
                entries,
                commit: prev,
            }
        });
    prop_oneof![
        (idx(), idx()).prop_map(|(last_index, last_term)| MessageBody::PreVote {
            last_index,
            last_term
        }),
        any::<bool>().prop_map(|reject| MessageBody::VoteResp { reject }),
        (idx(), idx(), any::<bool>()).prop_map(|(last_index, last_term, transfer)| {
            MessageBody::Vote {
                last_index,
                last_term,
                transfer,
            }
        }),
        entries,
        (any::<bool>(), idx(), idx(), idx()).prop_map(|(reject, index, hint_index, hint_term)| {
            MessageBody::AppendResp {
                reject,
                index,
                hint_index,
                hint_term,
            }
        }),
        (idx(), any::<u64>(), any::<u64>()).prop_map(|(commit, seq, sent_tick)| {
            MessageBody::Heartbeat {
                commit,
                seq,
                sent_tick,
            }
        }),
        (proptest::collection::vec(any::<u8>(), 0..64), 0u64..100).prop_map(|(data, extra)| {
            let total_len = data.len() as u64 + extra;
            MessageBody::Snapshot {
                meta: SnapshotMeta {
                    index: 9,
                    term: 2,
                    conf: ConfState::with_voters([1, 2, 3]),
                },
                total_len,
                offset: extra,
                data: Bytes::from(data),
            }
        }),
        (idx(), any::<u64>(), any::<bool>()).prop_map(|(index, next_offset, reject)| {
            MessageBody::SnapshotResp {
                index,
                next_offset,
                reject,
            }
        }),
        Just(MessageBody::TimeoutNow),
        (any::<u64>(), idx()).prop_map(|(ctx, index)| MessageBody::ReadIndexResp { ctx, index }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (1u64..6, 1u64..6, 1u64..1000).prop_flat_map(|(from, to, term)| {
        body(term).prop_map(move |body| Message {
            from,
            to,
            term,
            body,
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn messages_round_trip(m in message()) {
        prop_assert_eq!(decode_message(message_to_bytes(&m)), Ok(m));
    }

    #[test]
    fn damaged_messages_never_panic(m in message(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let good = message_to_bytes(&m);
        let mut v = good.to_vec();
        let i = at.index(v.len());
        v[i] = byte;
        let _ = decode_message(Bytes::from(v));
        let c = cut.index(good.len());
        prop_assert!(decode_message(good.slice(..c)).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(v in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_message(Bytes::from(v));
    }
}

fn append(entries: Vec<Entry>) -> Message {
    Message {
        from: 1,
        to: 2,
        term: 5,
        body: MessageBody::Append {
            prev_index: 10,
            prev_term: 4,
            entries,
            commit: 10,
        },
    }
}

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: Bytes::from_static(b"x"),
    }
}

#[test]
fn what_the_core_assumes_is_checked() {
    let bad = [
        append(vec![entry(5, 11), entry(5, 13)]), // a gap
        append(vec![entry(5, 12)]),               // not after prev_index
        append(vec![entry(3, 11)]),               // term below prev_term
        append(vec![entry(5, 11), entry(4, 12)]), // terms decrease
        append(vec![entry(6, 11)]),               // from a later term than the sender's
    ];
    for m in bad {
        assert!(
            matches!(
                decode_message(message_to_bytes(&m)),
                Err(WireError::Invalid(_))
            ),
            "{m:?}"
        );
    }
    let chunk_past_end = Message {
        from: 1,
        to: 2,
        term: 5,
        body: MessageBody::Snapshot {
            meta: SnapshotMeta {
                index: 9,
                term: 2,
                conf: ConfState::with_voters([1]),
            },
            total_len: 10,
            offset: 8,
            data: Bytes::from_static(b"abc"),
        },
    };
    assert!(matches!(
        decode_message(message_to_bytes(&chunk_past_end)),
        Err(WireError::Invalid(_))
    ));
    let mut zero = BytesMut::new();
    encode_message(
        &Message {
            from: 0,
            to: 2,
            term: 1,
            body: MessageBody::TimeoutNow,
        },
        &mut zero,
    );
    assert!(decode_message(zero.freeze()).is_err());
    let mut v = message_to_bytes(&append(vec![entry(5, 11)])).to_vec();
    v.push(0);
    assert_eq!(decode_message(Bytes::from(v)), Err(WireError::Trailing(1)));
}

/// Payloads are slices of the received buffer, not copies.
#[test]
fn payloads_share_the_received_buffer() {
    let buf = message_to_bytes(&append(vec![entry(5, 11)]));
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let Ok(Message {
        body: MessageBody::Append { entries, .. },
        ..
    }) = decode_message(buf.clone())
    else {
        panic!("decodes");
    };
    assert!(range.contains(&(entries[0].data.as_ptr() as usize)));
}
