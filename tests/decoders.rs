//! Bad input is an error, never a panic: every decoder of the coordinator's
//! formats (log records, configuration regions, state snapshots) is fed
//! arbitrary bytes and mutations of valid encodings.

use proptest::prelude::*;
use ramcoord::cluster::{
    ClusterState, ConfigRegion, Op, Outcome, Record, ServerId, ServerStatus, TabletSpec,
};

fn valid_record() -> impl Strategy<Value = Record> {
    let id = (1u32..50, 1u32..5).prop_map(|(index, generation)| ServerId { index, generation });
    prop_oneof![
        ("[a-z]{1,12}", any::<u8>(), any::<u64>()).prop_map(|(addr, services, nonce)| {
            Record::Commit(Op::EnlistServer {
                addr,
                services,
                nonce,
            })
        }),
        ("[a-z]{1,12}", id.clone()).prop_map(|(name, owner)| Record::Commit(Op::CreateTable {
            name,
            tablets: vec![TabletSpec {
                start_hash: 0,
                end_hash: u64::MAX,
                owner
            }],
        })),
        ("[a-z]{1,12}", any::<u64>(), id.clone())
            .prop_map(|(table, hash, to)| Record::Commit(Op::MigrateTablet { table, hash, to })),
        id.prop_map(|id| Record::Commit(Op::ServerRemoved { id })),
        any::<u64>().prop_map(|seq| Record::Complete { seq }),
    ]
}

fn region(term: u64, version: u64) -> ConfigRegion {
    let mut s = ClusterState::default();
    s.apply(
        1,
        &Record::Commit(Op::EnlistServer {
            addr: "m:1".into(),
            services: 1,
            nonce: 1,
        })
        .encode()
        .unwrap(),
    );
    let mut r = s.region_for(
        ServerId {
            index: 1,
            generation: 1,
        },
        term,
    );
    r.version = version;
    assert_eq!(r.status, ServerStatus::Up);
    r
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Record::decode(&bytes);
        let _ = ConfigRegion::decode(&bytes);
        let _ = ClusterState::restore(&bytes);
        // Applying garbage as a committed entry is total: it changes
        // nothing but the applied index, and never stops the replica.
        let mut s = ClusterState::default();
        // (Random bytes that happen to spell a valid record may commit.)
        let outcome = s.apply(7, &bytes);
        prop_assert_eq!(s.applied_index(), 7);
        if matches!(outcome, Outcome::Malformed(_) | Outcome::Rejected(_)) {
            let mut fresh = ClusterState::default();
            fresh.apply(7, &[]);
            prop_assert_eq!(s.snapshot(), fresh.snapshot());
        }
    }

    #[test]
    fn records_round_trip_and_mutations_never_panic(
        r in valid_record(),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = r.encode().unwrap();
        prop_assert_eq!(Record::decode(&bytes), Ok(r));
        let mut flipped = bytes.to_vec();
        let i = at.index(flipped.len());
        flipped[i] ^= 1 << bit;
        let _ = Record::decode(&flipped);
        prop_assert!(Record::decode(&bytes[..cut.index(bytes.len())]).is_err());
    }

    #[test]
    fn a_damaged_region_is_always_refused(
        term in any::<u64>(),
        version in any::<u64>(),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let r = region(term, version);
        let bytes = r.encode().unwrap();
        prop_assert_eq!(ConfigRegion::decode(&bytes), Ok(r));
        let mut flipped = bytes.to_vec();
        let i = at.index(flipped.len());
        flipped[i] ^= 1 << bit;
        // CRC32C catches every single-bit error.
        prop_assert!(ConfigRegion::decode(&flipped).is_err());
    }
}
