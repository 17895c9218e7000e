//! The durable log against its in-memory model and its crash cases.

use std::path::PathBuf;

use bytes::Bytes;
use proptest::prelude::*;
use ramcoord_log::disk::{BackendChoice, DiskStorage, Durability, OpenError, Recovery};
use ramcoord_log::*;

const SEGMENT: u64 = 4096;

/// Every test runs on both write paths.
const BACKENDS: [BackendChoice; 2] = [BackendChoice::Std, BackendChoice::Uring];

fn open(b: BackendChoice, dir: &std::path::Path) -> (DiskStorage, Recovery) {
    DiskStorage::open_with(dir, SEGMENT, b).unwrap()
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("ramcoord-disk-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ent(index: Index, term: Term, len: usize) -> Entry {
    let data: Vec<u8> = (0..len).map(|i| (index as usize * 31 + i) as u8).collect();
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: Bytes::from(data),
    }
}

fn all(s: &impl Storage) -> Vec<Entry> {
    s.entries(s.first_index(), s.last_index() + 1, u64::MAX)
        .unwrap()
}

/// The segment files (not the spare being prepared).
fn segment_files(dir: &TempDir) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.0.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn bootstrap_append_reopen_across_segments() {
    for b in BACKENDS {
        bootstrap_append_reopen_across_segments_on(b);
    }
}

fn bootstrap_append_reopen_across_segments_on(b: BackendChoice) {
    let dir = TempDir::new("roundtrip");
    let conf = ConfState::with_voters([1, 2, 3]);
    let mut d = DiskStorage::bootstrap(&dir.0, &conf, SEGMENT).unwrap();
    let ents: Vec<Entry> = (4..200).map(|i| ent(i, 2, 100)).collect();
    d.append(&ents).unwrap();
    d.sync().unwrap();
    d.set_hard_state(HardState {
        term: 2,
        vote: Some(1),
        commit: 150,
    })
    .unwrap();
    let before = all(&d);
    drop(d);
    assert!(
        segment_files(&dir).len() > 3,
        "records spread over segments"
    );
    let (d, rec) = open(b, &dir.0);
    assert_eq!(rec, Default::default());
    assert_eq!(all(&d), before);
    assert_eq!(
        d.initial_state().0,
        HardState {
            term: 2,
            vote: Some(1),
            commit: 150
        }
    );
    assert!(matches!(
        DiskStorage::bootstrap(&dir.0, &conf, SEGMENT),
        Err(OpenError::NotEmpty(_))
    ));
    // The founding configuration is in the log, as in memory.
    let node = RawNode::new(Config::new(1), d).unwrap();
    assert_eq!(node.conf().voters, conf.voters);
}

#[test]
fn a_torn_last_record_is_truncated_and_reported() {
    for b in BACKENDS {
        a_torn_last_record_is_truncated_and_reported_on(b);
    }
}

fn a_torn_last_record_is_truncated_and_reported_on(b: BackendChoice) {
    let dir = TempDir::new("torn");
    let (mut d, _) = open(b, &dir.0);
    d.append(&(1..=10).map(|i| ent(i, 1, 50)).collect::<Vec<_>>())
        .unwrap();
    d.sync().unwrap();
    drop(d);
    // A write of record 11 that reached the disk only in part.
    let last = segment_files(&dir).pop().unwrap();
    let mut img = std::fs::read(&last).unwrap();
    let end = (10 * (32 + 50)) as usize;
    let mut rec = Vec::new();
    ramcoord_log::disk::record::encode(&ent(11, 1, 50), &mut rec);
    img[end..end + 40].copy_from_slice(&rec[..40]);
    std::fs::write(&last, &img).unwrap();
    let (mut d, recovery) = open(b, &dir.0);
    let (path, offset, _) = recovery.torn_tail.expect("reported");
    assert_eq!((path, offset), (last, end as u64));
    assert_eq!(d.last_index(), 10);
    // The log goes on from there, and reopens cleanly.
    d.append(&[ent(11, 2, 20)]).unwrap();
    d.sync().unwrap();
    drop(d);
    let (d, recovery) = open(b, &dir.0);
    assert_eq!(recovery.torn_tail, None);
    assert_eq!(d.term(11), Ok(2));
}

#[test]
fn a_flipped_bit_in_the_middle_is_corruption_naming_file_offset_and_index() {
    for b in BACKENDS {
        a_flipped_bit_in_the_middle_is_corruption_naming_file_offset_and_index_on(b);
    }
}

fn a_flipped_bit_in_the_middle_is_corruption_naming_file_offset_and_index_on(b: BackendChoice) {
    let dir = TempDir::new("flip");
    let (mut d, _) = open(b, &dir.0);
    d.append(&(1..=10).map(|i| ent(i, 1, 50)).collect::<Vec<_>>())
        .unwrap();
    d.sync().unwrap();
    drop(d);
    let seg = segment_files(&dir).pop().unwrap();
    let mut img = std::fs::read(&seg).unwrap();
    img[3 * 82 + 40] ^= 0x10; // inside record 4's payload
    std::fs::write(&seg, &img).unwrap();
    match DiskStorage::open_with(&dir.0, SEGMENT, b) {
        Err(OpenError::Corrupt {
            path,
            offset,
            index,
            ..
        }) => {
            assert_eq!(path, seg);
            assert_eq!(offset, 3 * 82);
            assert_eq!(index, 4);
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened a corrupt log"),
    }
}

#[test]
fn compaction_and_snapshots_survive_reopen() {
    for b in BACKENDS {
        compaction_and_snapshots_survive_reopen_on(b);
    }
}

fn compaction_and_snapshots_survive_reopen_on(b: BackendChoice) {
    let dir = TempDir::new("compact");
    let (mut d, _) = open(b, &dir.0);
    d.append(&(1..=120).map(|i| ent(i, 1, 100)).collect::<Vec<_>>())
        .unwrap();
    d.sync().unwrap();
    let files_before = segment_files(&dir).len();
    let meta = SnapshotMeta {
        index: 90,
        term: 1,
        conf: ConfState::with_voters([1, 2]),
    };
    d.compact(Snapshot {
        meta: meta.clone(),
        data: Bytes::from_static(b"state at 90"),
    })
    .unwrap();
    assert!(segment_files(&dir).len() < files_before);
    drop(d);
    let (mut d, _) = open(b, &dir.0);
    assert_eq!(d.first_index(), 91);
    assert_eq!(d.last_index(), 120);
    assert_eq!(d.snapshot().data, Bytes::from_static(b"state at 90"));
    assert_eq!(d.initial_state().1, meta.conf);
    // A leader's snapshot replaces the whole log.
    let meta = SnapshotMeta {
        index: 500,
        term: 7,
        conf: ConfState::with_voters([1, 2, 3]),
    };
    d.apply_snapshot(Snapshot {
        meta,
        data: Bytes::from_static(b"state at 500"),
    })
    .unwrap();
    d.append(&[ent(501, 7, 10)]).unwrap();
    d.sync().unwrap();
    drop(d);
    let (d, _) = open(b, &dir.0);
    assert_eq!((d.first_index(), d.last_index()), (501, 501));
    assert_eq!(d.term(500), Ok(7));
}

/// A snapshot written by another thread ([`SnapshotFileWriter`]) while
/// the log goes on taking appends, then taken with `compact_written`; and
/// a crash between the two halves: the file is newer than every segment's
/// start, and opening serves the snapshot with the entries after it.
#[test]
fn snapshots_written_off_thread_compact_and_survive_a_crash_between() {
    for b in BACKENDS {
        for crash_between in [false, true] {
            snapshot_written_off_thread_on(b, crash_between);
        }
    }
}

fn snapshot_written_off_thread_on(b: BackendChoice, crash_between: bool) {
    let dir = TempDir::new("offthread");
    let (mut d, _) = open(b, &dir.0);
    d.append(&(1..=120).map(|i| ent(i, 1, 100)).collect::<Vec<_>>())
        .unwrap();
    d.sync().unwrap();
    let meta = SnapshotMeta {
        index: 90,
        term: 1,
        conf: ConfState::with_voters([1, 2]),
    };
    let snap = Snapshot {
        meta: meta.clone(),
        data: Bytes::from_static(b"state at 90"),
    };
    let writer = d.snapshot_file_writer();
    let worker = std::thread::spawn(move || {
        writer.write(&snap).unwrap();
        snap
    });
    // The log goes on meanwhile.
    d.append(&(121..=130).map(|i| ent(i, 1, 100)).collect::<Vec<_>>())
        .unwrap();
    d.sync().unwrap();
    let snap = worker.join().unwrap();
    let files_before = segment_files(&dir).len();
    if crash_between {
        drop(d); // before `compact_written`: every segment is still there
    } else {
        d.compact_written(snap).unwrap();
        assert!(segment_files(&dir).len() < files_before);
        assert_eq!(d.first_index(), 91);
        assert_eq!(d.snapshot().data, Bytes::from_static(b"state at 90"));
        drop(d);
    }
    let (d, _) = open(b, &dir.0);
    assert_eq!((d.first_index(), d.last_index()), (91, 130));
    assert_eq!(d.snapshot().data, Bytes::from_static(b"state at 90"));
    assert_eq!(d.initial_state().1, meta.conf);
    assert_eq!(
        all(&d),
        (91..=130).map(|i| ent(i, 1, 100)).collect::<Vec<_>>()
    );
}

#[derive(Clone, Debug)]
enum Op {
    /// Append `n` entries of `len` bytes at `back` entries before the end
    /// (overwriting a suffix, as a Raft conflict does), with a new term.
    Append {
        back: u8,
        n: u8,
        len: u16,
        sync: bool,
    },
    Truncate {
        back: u8,
    },
    Compact {
        back: u8,
    },
    /// Starts a flush without waiting (io_uring: group commit).
    FlushStart,
    /// Collects a finished flush, maybe waiting for it.
    FlushPoll {
        wait: bool,
    },
    /// Closes and reopens the log, after a sync or not (a clean close
    /// keeps the page cache, so nothing may be lost either way).
    Reopen {
        sync: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, 1u8..20, 0u16..600, any::<bool>()).prop_map(|(back, n, len, sync)| Op::Append { back, n, len, sync }),
        1 => (0u8..5).prop_map(|back| Op::Truncate { back }),
        1 => (0u8..30).prop_map(|back| Op::Compact { back }),
        2 => Just(Op::FlushStart),
        2 => any::<bool>().prop_map(|wait| Op::FlushPoll { wait }),
        2 => any::<bool>().prop_map(|sync| Op::Reopen { sync }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any sequence of appends (with overwrites), truncations, compactions
    /// and reopens leaves the disk log equal to the in-memory model.
    #[test]
    fn disk_log_matches_the_memory_model(
        ops in proptest::collection::vec(op(), 1..40),
        b in prop_oneof![Just(BackendChoice::Std), Just(BackendChoice::Uring)],
    ) {
        let dir = TempDir::new("prop");
        let (mut disk, _) = open(b, &dir.0);
        let mut model = MemStorage::default();
        let mut term = 1;
        for op in ops {
            let durable_before = disk.durable_index();
            match op {
                Op::Append { back, n, len, sync } => {
                    let last = model.last_index();
                    let first = (last + 1).saturating_sub(back as u64).max(model.first_index());
                    term += 1;
                    let ents: Vec<Entry> = (first..first + n as u64).map(|i| ent(i, term, len as usize)).collect();
                    model.append(&ents).unwrap();
                    disk.append(&ents).unwrap();
                    prop_assert!(disk.durable_index() < first);
                    if sync {
                        disk.sync().unwrap();
                        prop_assert_eq!(disk.durable_index(), model.last_index());
                    }
                }
                Op::Truncate { back } => {
                    let from = model.last_index().saturating_sub(back as u64).max(model.first_index());
                    if from <= model.last_index() {
                        model.truncate_suffix(from).unwrap();
                        disk.truncate_suffix(from).unwrap();
                        prop_assert!(disk.durable_index() < from);
                    }
                }
                Op::Compact { back } => {
                    let at = model.last_index().saturating_sub(back as u64);
                    if at >= model.first_index() {
                        let meta = SnapshotMeta { index: at, term: model.term(at).unwrap(), conf: ConfState::with_voters([1]) };
                        let snap = Snapshot { meta, data: Bytes::from(format!("snap{at}")) };
                        model.compact(snap.clone()).unwrap();
                        disk.compact(snap).unwrap();
                    }
                }
                Op::FlushStart => {
                    disk.flush_start().unwrap();
                    prop_assert!(disk.durable_index() >= durable_before);
                }
                Op::FlushPoll { wait } => {
                    let d = disk.flush_poll(wait).unwrap();
                    prop_assert_eq!(d, disk.durable_index());
                    prop_assert!(d >= durable_before);
                }
                Op::Reopen { sync } => {
                    if sync {
                        disk.sync().unwrap();
                    }
                    drop(disk);
                    let (d, rec) = open(b, &dir.0);
                    prop_assert_eq!(rec, Default::default());
                    // Reopening makes what it found durable.
                    prop_assert_eq!(d.durable_index(), model.last_index());
                    disk = d;
                }
            }
            prop_assert!(disk.durable_index() <= model.last_index());
            prop_assert_eq!(disk.first_index(), model.first_index());
            prop_assert_eq!(all(&disk), all(&model));
        }
        disk.sync().unwrap();
        drop(disk);
        let (disk, _) = open(b, &dir.0);
        prop_assert_eq!(all(&disk), all(&model));
        prop_assert_eq!(disk.snapshot(), model.snapshot());
    }
}

#[test]
fn a_log_replaced_by_a_snapshot_is_dropped_after_a_crash_mid_install() {
    for b in BACKENDS {
        a_log_replaced_by_a_snapshot_is_dropped_after_a_crash_mid_install_on(b);
    }
}

fn a_log_replaced_by_a_snapshot_is_dropped_after_a_crash_mid_install_on(b: BackendChoice) {
    // The crash: the leader's snapshot reached the disk, the old segments
    // were not deleted yet. Made by hand: an old log, and the snapshot file
    // of another directory that installed it.
    let old = TempDir::new("stale-old");
    let (mut d, _) = open(b, &old.0);
    d.append(&(1..=100).map(|i| ent(i, 1, 60)).collect::<Vec<_>>())
        .unwrap();
    d.sync().unwrap();
    drop(d);
    let other = TempDir::new("stale-new");
    let (mut n, _) = open(b, &other.0);
    let meta = SnapshotMeta {
        index: 80,
        term: 5,
        conf: ConfState::with_voters([1]),
    };
    n.apply_snapshot(Snapshot {
        meta,
        data: Bytes::from_static(b"s"),
    })
    .unwrap();
    std::fs::copy(other.0.join("snapshot"), old.0.join("snapshot")).unwrap();
    let (d, rec) = open(b, &old.0);
    assert_eq!(
        rec.dropped_after_snapshot, 20,
        "81..=100 were not the snapshot's log"
    );
    assert_eq!((d.first_index(), d.last_index()), (81, 80));
    assert_eq!(d.term(80), Ok(5));
}

#[test]
fn memory_durability_acknowledges_from_the_page_cache() {
    for b in BACKENDS {
        let dir = TempDir::new("memory");
        let (mut d, _) = open(b, &dir.0);
        d.set_durability(Durability::Memory).unwrap();
        d.append(&(1..=300).map(|i| ent(i, 1, 300)).collect::<Vec<_>>())
            .unwrap();
        d.sync().unwrap();
        d.truncate_suffix(250).unwrap();
        d.append(&(250..=260).map(|i| ent(i, 2, 10)).collect::<Vec<_>>())
            .unwrap();
        d.sync().unwrap();
        let before = all(&d);
        // Back to fsync: everything is flushed now.
        d.set_durability(Durability::Fsync).unwrap();
        d.set_durability(Durability::Memory).unwrap();
        drop(d);
        // A process crash keeps the page cache: a reopen sees it all.
        let (d, rec) = open(b, &dir.0);
        assert_eq!(rec, Recovery::default());
        assert_eq!(all(&d), before);
    }
}

/// Group commit inside the backend: entries appended while a flush is in
/// flight go out together in the next one, and the durable index says
/// exactly which prefix each finished flush covers.
#[test]
fn appends_during_a_flush_join_the_next_and_durable_index_reports_each_range() {
    for b in BACKENDS {
        let dir = TempDir::new("group");
        let (mut d, _) = open(b, &dir.0);
        assert_eq!(d.durable_index(), 0);
        d.append(&(1..=10).map(|i| ent(i, 1, 100)).collect::<Vec<_>>())
            .unwrap();
        d.flush_start().unwrap();
        d.append(&(11..=20).map(|i| ent(i, 1, 100)).collect::<Vec<_>>())
            .unwrap();
        d.flush_start().unwrap(); // io_uring: in flight already, joins the next
        match b {
            BackendChoice::Uring => {
                // The first flush covers 1..=10 only.
                assert_eq!(d.flush_poll(true).unwrap(), 10);
                d.append(&(21..=25).map(|i| ent(i, 1, 100)).collect::<Vec<_>>())
                    .unwrap();
                // The second (started when the first was reaped) covers
                // 11..=20; 21..=25 wait for a third.
                assert_eq!(d.flush_poll(true).unwrap(), 20);
                assert_eq!(d.flush_poll(true).unwrap(), 25);
            }
            _ => {
                // pwrite + fdatasync finishes inside flush_start.
                assert_eq!(d.durable_index(), 20);
                d.append(&[ent(21, 1, 100)]).unwrap();
                assert_eq!(d.flush_poll(true).unwrap(), 20);
                d.flush_start().unwrap();
                assert_eq!(d.flush_poll(false).unwrap(), 21);
            }
        }
        // Three flushes carried the appends (group commit on io_uring).
        assert_eq!(d.flushes(), 3);
        // A truncation waits for the flush in flight and lowers the durable
        // index below the cut.
        let last = d.last_index();
        d.append(&[ent(last + 1, 2, 50)]).unwrap();
        d.flush_start().unwrap();
        d.truncate_suffix(last - 2).unwrap();
        assert_eq!(d.durable_index(), last - 3);
        d.sync().unwrap();
        assert_eq!(d.durable_index(), last - 3);
        let before = all(&d);
        // Dropped with a flush in flight: the drop waits, nothing is lost.
        d.append(&[ent(last - 2, 3, 50)]).unwrap();
        d.flush_start().unwrap();
        drop(d);
        let (d, rec) = open(b, &dir.0);
        assert_eq!(rec, Recovery::default());
        let mut want = before;
        want.push(ent(last - 2, 3, 50));
        assert_eq!(all(&d), want);
        assert_eq!(d.durable_index(), last - 2);
    }
}

/// The next segment is prepared in the background as `log/spare.tmp`; a
/// spare left by a crash is not a segment and is discarded on open.
#[test]
fn a_leftover_spare_segment_is_ignored_and_rollover_uses_a_fresh_one() {
    for b in BACKENDS {
        let dir = TempDir::new("spare");
        std::fs::create_dir_all(dir.0.join("log")).unwrap();
        std::fs::write(dir.0.join("log/spare.tmp"), b"half-prepared garbage").unwrap();
        let (mut d, rec) = open(b, &dir.0);
        assert_eq!(rec, Recovery::default());
        // Enough entries for several segments: each rollover renames a spare.
        let ents: Vec<Entry> = (1..=400).map(|i| ent(i, 1, 300)).collect();
        for chunk in ents.chunks(7) {
            d.append(chunk).unwrap();
            d.sync().unwrap();
        }
        assert!(segment_files(&dir).len() >= 3);
        drop(d);
        let (d, rec) = open(b, &dir.0);
        assert_eq!(rec, Recovery::default());
        assert_eq!(all(&d), ents);
    }
}

/// A flipped byte in the newest record is a torn tail only if the replica
/// never made that record durable; once a hard-state write recorded it
/// (the acknowledged watermark), the same damage is corruption: open
/// refuses, naming the entry and how to recover. (Before, it was truncated
/// with a warning and the replica ran forever behind its leader's idea of
/// it.)
#[test]
fn damage_to_an_acknowledged_newest_record_is_refused() {
    for b in BACKENDS {
        damage_to_an_acknowledged_newest_record_is_refused_on(b);
    }
}

fn damage_to_an_acknowledged_newest_record_is_refused_on(b: BackendChoice) {
    let dir = TempDir::new("acked");
    let (mut d, _) = open(b, &dir.0);
    d.append(&(1..=10).map(|i| ent(i, 1, 50)).collect::<Vec<_>>())
        .unwrap();
    d.sync().unwrap();
    // A commit-index update records the watermark (10 is durable).
    d.set_hard_state(HardState {
        term: 1,
        vote: Some(1),
        commit: 8,
    })
    .unwrap();
    drop(d);
    let seg = segment_files(&dir).pop().unwrap();
    let mut img = std::fs::read(&seg).unwrap();
    img[9 * 82 + 40] ^= 0x01; // inside record 10's payload: the newest
    std::fs::write(&seg, &img).unwrap();
    match DiskStorage::open_with(&dir.0, SEGMENT, b) {
        Err(
            e @ OpenError::Lost {
                index: 10,
                acked: 10,
                ..
            },
        ) => {
            let text = e.to_string();
            assert!(text.contains("new id"), "{text}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened a log that lost an acknowledged entry"),
    }
}

/// Segments deleted under a hard state that says the log held entries:
/// refused (before, the replica started as an empty voter).
#[test]
fn missing_segments_under_a_kept_hard_state_are_refused() {
    let dir = TempDir::new("missing");
    let (mut d, _) = open(BackendChoice::Std, &dir.0);
    d.append(&(1..=200).map(|i| ent(i, 1, 50)).collect::<Vec<_>>())
        .unwrap();
    d.sync().unwrap();
    d.set_hard_state(HardState {
        term: 1,
        vote: Some(1),
        commit: 150,
    })
    .unwrap();
    drop(d);
    let segs = segment_files(&dir);
    assert!(segs.len() > 1);
    for s in &segs {
        std::fs::remove_file(s).unwrap();
    }
    match DiskStorage::open_with(&dir.0, SEGMENT, BackendChoice::Std) {
        Err(OpenError::Lost {
            index: 1,
            acked: 200,
            ..
        }) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened an emptied log as if nothing happened"),
    }
}

/// A legitimate cut below the watermark (a conflicting suffix replaced by
/// a new leader's entries) lowers it first: the shorter log reopens.
#[test]
fn a_conflict_truncation_lowers_the_watermark_before_cutting() {
    for b in BACKENDS {
        let dir = TempDir::new("cut");
        let (mut d, _) = open(b, &dir.0);
        d.append(&(1..=10).map(|i| ent(i, 1, 50)).collect::<Vec<_>>())
            .unwrap();
        d.sync().unwrap();
        let hs = HardState {
            term: 2,
            vote: Some(2),
            commit: 4,
        };
        d.set_hard_state(hs).unwrap();
        // A new leader's entry 6 of term 2 replaces 6..=10; a crash follows
        // before anything else is written.
        d.append(&[ent(6, 2, 10)]).unwrap();
        d.sync().unwrap();
        drop(d);
        let (d, recovery) = open(b, &dir.0);
        assert_eq!(recovery.torn_tail, None);
        assert_eq!(d.last_index(), 6);
        // And after the cut, a crash mid-cut (the later segments gone, the
        // zeroing done) also reopens: nothing below the lowered watermark
        // is missing.
        drop(d);
    }
}

/// A torn tail beyond the watermark is still truncated as before.
#[test]
fn a_torn_tail_beyond_the_watermark_is_still_truncated() {
    let dir = TempDir::new("beyond");
    let (mut d, _) = open(BackendChoice::Std, &dir.0);
    d.append(&(1..=5).map(|i| ent(i, 1, 50)).collect::<Vec<_>>())
        .unwrap();
    d.sync().unwrap();
    d.set_hard_state(HardState {
        term: 1,
        vote: Some(1),
        commit: 5,
    })
    .unwrap();
    d.append(&(6..=10).map(|i| ent(i, 1, 50)).collect::<Vec<_>>())
        .unwrap();
    d.sync().unwrap(); // durable, but no hard-state write recorded it
    drop(d);
    let seg = segment_files(&dir).pop().unwrap();
    let mut img = std::fs::read(&seg).unwrap();
    img[9 * 82 + 40] ^= 0x01;
    std::fs::write(&seg, &img).unwrap();
    let (d, recovery) = open(BackendChoice::Std, &dir.0);
    assert!(recovery.torn_tail.is_some());
    assert_eq!(d.last_index(), 9);
}

/// Two opens of one directory: the second is refused, naming the holder;
/// once the first is closed, the directory opens again.
#[test]
fn a_second_open_of_a_directory_is_refused_naming_the_holder() {
    let dir = TempDir::new("lock");
    let (d, _) = open(BackendChoice::Std, &dir.0);
    match DiskStorage::open_with(&dir.0, SEGMENT, BackendChoice::Std) {
        Err(e @ OpenError::Locked { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&format!("process {}", std::process::id())),
                "{text}"
            );
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("two opens of one directory"),
    }
    drop(d);
    let _ = open(BackendChoice::Std, &dir.0);
}

/// A bootstrap cut short (here: its founding entries written, its hard
/// state never) leaves a directory recognisably unfinished; bootstrapping
/// it again starts afresh, and a finished one is never overwritten.
#[test]
fn an_unfinished_bootstrap_is_redone_and_a_finished_one_kept() {
    let dir = TempDir::new("boot");
    let conf = ConfState::with_voters([1, 2, 3]);
    {
        // What a crash (or ENOSPC) between the entries and the hard state
        // leaves: a log with records, a hard-state file never written.
        let (mut d, _) = open(BackendChoice::Std, &dir.0);
        d.append(&[ent(1, 1, 10)]).unwrap();
        d.sync().unwrap();
    }
    assert!(!DiskStorage::holds_state(&dir.0).unwrap());
    let d = DiskStorage::bootstrap(&dir.0, &conf, SEGMENT).unwrap();
    let boot = MemStorage::bootstrap(&conf);
    assert_eq!(all(&d), boot.all_entries().to_vec());
    drop(d);
    assert!(DiskStorage::holds_state(&dir.0).unwrap());
    assert!(matches!(
        DiskStorage::bootstrap(&dir.0, &conf, SEGMENT),
        Err(OpenError::NotEmpty(_))
    ));
}
