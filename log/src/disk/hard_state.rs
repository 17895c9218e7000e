//! The hard-state file: term, vote and commit, updated atomically.
//!
//! ```text
//! hardstate = slot 0 (64 bytes) | slot 1 (64 bytes)
//! slot      = magic u32 "RCHS" | version u8 | 3 reserved | seq u64 | term u64
//!             | vote u64 (0 = none) | commit u64 | crc32c u32 | acked u64
//!             | 12 reserved
//! ```
//!
//! `acked` is the **acknowledged watermark**: the log's durable index when
//! the slot was written (0: not recorded, as in files written before it
//! existed). Every entry up to it was durable, so this replica may have
//! acknowledged it, and a leader may have counted it toward a commit. On
//! open, damage to an entry at or below it is corruption, never a torn
//! tail (see `DiskStorage::open`). It only lags the truth (a slot is
//! written at each term, vote or commit change), so it never makes an
//! honest torn tail look like corruption; when the log is legitimately cut
//! below it (a conflicting suffix, a snapshot that replaces the log), the
//! watermark is lowered durably first.
//!
//! Why two slots and not temp file + rename: an update is one 64-byte
//! `pwrite` and one `fdatasync` of a file that never changes size, so no
//! directory fsync and no metadata write is on the path of every vote.
//! Updates go to the slot the *older* state is in (`seq % 2`); a crash in
//! the middle tears only that slot, whose checksum then fails, and the
//! reader takes the other slot: the state before the update. A slot is
//! chosen by the highest `seq` among those whose checksum holds, so the
//! result is always exactly the old or exactly the new state, never a mix.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::types::HardState;

const SLOT_MAGIC: u32 = 0x5348_4352; // "RCHS"
const SLOT_VERSION: u8 = 1;
/// Bytes per slot.
pub const SLOT_BYTES: usize = 64;

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct Slot {
    magic: U32,
    version: u8,
    reserved: [u8; 3],
    seq: U64,
    term: U64,
    vote: U64,
    commit: U64,
    crc: U32,
    acked: U64,
    reserved2: [u8; 12],
}

const _: () = assert!(std::mem::size_of::<Slot>() == SLOT_BYTES);

/// Why the hard state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HardStateError {
    /// The file system failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// Neither slot holds a valid state, but the file is not empty.
    #[error("{path}: no valid hard-state slot (both fail their checksum); refusing to guess")]
    Corrupt {
        /// The file.
        path: PathBuf,
    },
    /// The newest slot's sequence number is `u64::MAX`: no later write
    /// could be told apart from it (no real file gets there; a damaged one
    /// whose checksum still holds might).
    #[error("{path}: hard-state sequence number exhausted; refusing to write over it")]
    SeqExhausted {
        /// The file.
        path: PathBuf,
    },
}

fn slot_crc(s: &Slot) -> u32 {
    let mut c = *s;
    c.crc = U32::new(0);
    crc32c::crc32c(c.as_bytes())
}

fn encode_slot(seq: u64, hs: HardState, acked: u64) -> [u8; SLOT_BYTES] {
    let mut s = Slot {
        magic: U32::new(SLOT_MAGIC),
        version: SLOT_VERSION,
        reserved: [0; 3],
        seq: U64::new(seq),
        term: U64::new(hs.term),
        vote: U64::new(hs.vote.unwrap_or(0)),
        commit: U64::new(hs.commit),
        crc: U32::new(0),
        acked: U64::new(acked),
        reserved2: [0; 12],
    };
    s.crc = U32::new(slot_crc(&s));
    let mut out = [0u8; SLOT_BYTES];
    out.copy_from_slice(s.as_bytes());
    out
}

/// A decoded slot: its sequence number, the state, the acknowledged
/// watermark.
type SlotContents = (u64, HardState, u64);

fn decode_slot(b: &[u8]) -> Option<SlotContents> {
    let s = Slot::read_from_bytes(b).ok()?;
    if s.magic.get() != SLOT_MAGIC || s.version != SLOT_VERSION || slot_crc(&s) != s.crc.get() {
        return None;
    }
    let vote = s.vote.get();
    let hs = HardState {
        term: s.term.get(),
        vote: (vote != 0).then_some(vote),
        commit: s.commit.get(),
    };
    Some((s.seq.get(), hs, s.acked.get()))
}

/// Picks the newest valid slot of a whole file image. `Ok(None)` for a
/// file never written (all zeros or empty); `Err(())` if it was written
/// but no slot checks out.
fn decode_file(image: &[u8]) -> Result<Option<SlotContents>, ()> {
    if image.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let slots = image.chunks(SLOT_BYTES).take(2).filter_map(decode_slot);
    match slots.max_by_key(|(seq, _, _)| *seq) {
        Some(best) => Ok(Some(best)),
        None => Err(()),
    }
}

/// The open hard-state file.
///
/// Every write goes to the slot that does *not* hold the newest durable
/// state; a synced write then becomes the durable slot. So an unsynced
/// write (a commit-index hint) can be lost or torn by a crash, but never
/// takes the last durable term and vote with it: the other slot still
/// holds them, and any newer valid slot carries the same term and vote.
pub struct HardStateFile {
    file: File,
    path: PathBuf,
    seq: u64,
    /// The slot (0 or 1) holding the newest state known durable.
    durable_slot: u64,
    /// The acknowledged watermark last written (see the module docs).
    acked: u64,
    /// The acknowledged watermark as of the last *synced* write: the one a
    /// crash cannot take back.
    acked_durable: u64,
}

/// What the hard-state file held when opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenedHardState {
    /// The state (default if never written).
    pub state: HardState,
    /// The acknowledged watermark (0 if never recorded).
    pub acked: u64,
    /// Whether any slot was ever written: a directory whose hard state was
    /// never written holds no founding member's log yet.
    pub written: bool,
}

impl HardStateFile {
    /// Opens (creating if missing) the file at `path` and reads the state.
    pub fn open(path: &Path) -> Result<(HardStateFile, HardState), HardStateError> {
        Self::open_full(path).map(|(f, o)| (f, o.state))
    }

    /// [`HardStateFile::open`], with the watermark and whether the file
    /// was ever written.
    pub fn open_full(path: &Path) -> Result<(HardStateFile, OpenedHardState), HardStateError> {
        let io = |source| HardStateError::Io {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let mut image = vec![0u8; 2 * SLOT_BYTES];
        let n = file.read_at(&mut image, 0).map_err(io)?;
        image.truncate(n);
        let (seq, hs, acked) = match decode_file(&image) {
            Ok(found) => found.unwrap_or_default(),
            Err(()) => {
                return Err(HardStateError::Corrupt {
                    path: path.to_owned(),
                })
            }
        };
        if seq == u64::MAX {
            return Err(HardStateError::SeqExhausted {
                path: path.to_owned(),
            });
        }
        // What was read may have been in the page cache only (an unsynced
        // hint, then a process crash): make it durable before relying on
        // which slot holds it.
        file.sync_data().map_err(io)?;
        let durable_slot = image
            .chunks(SLOT_BYTES)
            .take(2)
            .position(|c| decode_slot(c).is_some_and(|(q, _, _)| q == seq) && seq > 0)
            .map_or(1, |i| i as u64);
        Ok((
            HardStateFile {
                file,
                path: path.to_owned(),
                seq,
                durable_slot,
                acked,
                acked_durable: acked,
            },
            OpenedHardState {
                state: hs,
                acked,
                written: seq > 0,
            },
        ))
    }

    /// Sets the acknowledged watermark written with the next save.
    /// Raising it waits for the next save; lowering it (the log is about
    /// to be cut below it) is written and synced now, with `hs`, so that a
    /// crash after the cut cannot find entries missing below it.
    pub fn set_acked(&mut self, acked: u64, hs: HardState) -> Result<(), HardStateError> {
        if acked < self.acked_durable || acked < self.acked {
            self.acked = acked;
            return self.write(hs, true);
        }
        self.acked = acked;
        Ok(())
    }

    /// The watermark last written.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Writes `hs` durably: it is the state any later open returns, unless
    /// a newer one is saved. Returns after `fdatasync`.
    pub fn save(&mut self, hs: HardState) -> Result<(), HardStateError> {
        self.write(hs, true)
    }

    /// Writes `hs` without waiting for the disk: after a crash the file
    /// holds this state, or an earlier one no older than the last durable
    /// save (see the type's docs). For commit-index-only changes: the term
    /// and vote must equal the last durable save's.
    pub fn save_unsynced(&mut self, hs: HardState) -> Result<(), HardStateError> {
        self.write(hs, false)
    }

    fn write(&mut self, hs: HardState, sync: bool) -> Result<(), HardStateError> {
        // u64::MAX is never written: open refuses it.
        let seq = self
            .seq
            .checked_add(1)
            .filter(|&s| s < u64::MAX)
            .ok_or_else(|| HardStateError::SeqExhausted {
                path: self.path.clone(),
            })?;
        let slot = encode_slot(seq, hs, self.acked);
        let target = 1 - self.durable_slot;
        let offset = target * SLOT_BYTES as u64;
        let io = |source| HardStateError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all_at(&slot, offset).map_err(io)?;
        if sync {
            self.file.sync_data().map_err(io)?;
            self.durable_slot = target;
            self.acked_durable = self.acked;
        }
        self.seq = seq;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(term: u64, vote: Option<u64>, commit: u64) -> HardState {
        HardState { term, vote, commit }
    }

    #[test]
    fn unsynced_hints_never_overwrite_the_last_durable_state() {
        let dir = std::env::temp_dir().join(format!("ramcoord-hs-hint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hardstate");
        let (mut f, _) = HardStateFile::open(&path).unwrap();
        let durable_in_file = |want: HardState| {
            let image = std::fs::read(&path).unwrap();
            assert!(
                image
                    .chunks(SLOT_BYTES)
                    .filter_map(decode_slot)
                    .any(|(_, h, _)| h == want),
                "the last durable state {want:?} is no longer in the file"
            );
        };
        let mut last_durable = hs(1, Some(1), 0);
        f.save(last_durable).unwrap();
        for round in 0..4u64 {
            for c in 1..=5 {
                let h = HardState {
                    commit: round * 10 + c,
                    ..last_durable
                };
                f.save_unsynced(h).unwrap();
                durable_in_file(last_durable);
            }
            last_durable = hs(round + 2, Some(round % 3 + 1), round * 10 + 5);
            f.save(last_durable).unwrap();
            durable_in_file(last_durable);
        }
        // Reopening returns the newest state written.
        f.save_unsynced(HardState {
            commit: 99,
            ..last_durable
        })
        .unwrap();
        drop(f);
        let (_, got) = HardStateFile::open(&path).unwrap();
        assert_eq!(got.commit, 99);
        assert_eq!((got.term, got.vote), (last_durable.term, last_durable.vote));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn save_and_reopen() {
        let dir = std::env::temp_dir().join(format!("ramcoord-hs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hardstate");
        let (mut f, first) = HardStateFile::open(&path).unwrap();
        assert_eq!(first, HardState::default());
        for t in 1..=5 {
            f.save(hs(t, Some(t % 3 + 1), t * 10)).unwrap();
        }
        drop(f);
        let (_, got) = HardStateFile::open(&path).unwrap();
        assert_eq!(got, hs(5, Some(3), 50));
        std::fs::write(&path, [0xAB; 128]).unwrap();
        assert!(matches!(
            HardStateFile::open(&path),
            Err(HardStateError::Corrupt { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_update_torn_at_any_byte_leaves_the_old_or_the_new_state() {
        let old = hs(7, Some(2), 40);
        let older = hs(6, None, 30);
        let new = hs(8, Some(3), 41);
        // Slots after saving `older` (seq 1, slot 1) and `old` (seq 2, slot 0);
        // the next save (seq 3) goes to slot 1, over `older`.
        let mut image = [0u8; 2 * SLOT_BYTES];
        image[SLOT_BYTES..].copy_from_slice(&encode_slot(1, older, 0));
        image[..SLOT_BYTES].copy_from_slice(&encode_slot(2, old, 0));
        let new_slot = encode_slot(3, new, 0);
        for cut in 0..=SLOT_BYTES {
            let mut torn = image;
            torn[SLOT_BYTES..SLOT_BYTES + cut].copy_from_slice(&new_slot[..cut]);
            let (_, got, _) = decode_file(&torn).unwrap().unwrap();
            assert!(got == old || got == new, "cut at {cut}: {got:?} is neither");
            if cut == SLOT_BYTES {
                assert_eq!(got, new);
            }
            if cut < 44 {
                // The checksum is not complete yet: the old state stands.
                assert_eq!(got, old, "cut at {cut}");
            }
        }
    }

    /// Found by fuzzing (fuzz/fuzz_targets/hard_state.rs): a slot whose
    /// checksum holds but whose seq is u64::MAX opened, and the next save
    /// overflowed `seq + 1` (a panic with overflow checks; without them
    /// the save wrapped to seq 0 and a reopen returned the older state,
    /// forgetting the vote). Such a file is refused at open now.
    #[test]
    fn an_exhausted_sequence_number_is_refused_not_overflowed() {
        let dir = std::env::temp_dir().join(format!("ramcoord-hs-max-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hardstate");
        let mut image = [0u8; 2 * SLOT_BYTES];
        image[..SLOT_BYTES].copy_from_slice(&encode_slot(u64::MAX, hs(4, Some(2), 9), 0));
        image[SLOT_BYTES..].copy_from_slice(&encode_slot(u64::MAX - 1, hs(4, Some(2), 8), 0));
        std::fs::write(&path, image).unwrap();
        assert!(matches!(
            HardStateFile::open(&path),
            Err(HardStateError::SeqExhausted { .. })
        ));
        // Two below opens and takes one more save, which reopens; the
        // save after it is refused and the file keeps the last state.
        image[..SLOT_BYTES].copy_from_slice(&encode_slot(u64::MAX - 2, hs(4, Some(2), 9), 0));
        image[SLOT_BYTES..].fill(0);
        std::fs::write(&path, image).unwrap();
        let (mut f, got) = HardStateFile::open(&path).unwrap();
        assert_eq!(got, hs(4, Some(2), 9));
        f.save(hs(5, Some(3), 9)).unwrap();
        drop(f);
        let (mut f, got) = HardStateFile::open(&path).unwrap();
        assert_eq!(got, hs(5, Some(3), 9));
        assert!(matches!(
            f.save(hs(6, None, 9)),
            Err(HardStateError::SeqExhausted { .. })
        ));
        drop(f);
        assert_eq!(HardStateFile::open(&path).unwrap().1, hs(5, Some(3), 9));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
