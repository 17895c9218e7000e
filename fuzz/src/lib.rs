//! Helpers shared by the fuzz targets (`fuzz_targets/`) and the seed
//! corpus generator (`src/bin/seed_corpus.rs`).
//!
//! Two things live here:
//!
//! - **Checksum fixers.** Most formats carry a CRC32C; random mutations
//!   almost never keep it right, so a target that only decoded its input
//!   as given would spend its time in the checksum comparison. Each target
//!   of a checksummed format therefore decodes the input twice: as given,
//!   and with every checksum recomputed by the fixer below (which knows
//!   where the format keeps its lengths and checksums, and nothing else).
//!   A peer that forges checksums is exactly the adversary the decoders
//!   must survive.
//! - **Chunked inputs.** Targets that take several byte strings (a
//!   sequence of log records, a data directory) read them from one input
//!   as `u16 LE length | bytes`, repeated; a last chunk whose length runs
//!   past the end takes what is left.

use std::path::{Path, PathBuf};

/// Splits `data` into chunks (see the crate docs).
pub fn chunks(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 {
        let len = u16::from_le_bytes([data[0], data[1]]) as usize;
        data = &data[2..];
        let n = len.min(data.len());
        out.push(&data[..n]);
        data = &data[n..];
    }
    out
}

/// The inverse of [`chunks`] (for the seed generator).
///
/// # Panics
///
/// If a chunk is longer than `u16::MAX` bytes.
pub fn join<B: AsRef<[u8]>>(parts: &[B]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        let p = p.as_ref();
        let len = u16::try_from(p.len()).expect("a chunk of at most 64 KiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Recomputes the checksum of every stream frame (`ramcoord_net::frame`:
/// 16-byte header, CRC32C of bytes 0..12 and the body at 12..16) that is
/// complete in `data`, walking by the lengths the headers claim.
pub fn fix_frame_crcs(data: &[u8]) -> Vec<u8> {
    let mut b = data.to_vec();
    let mut p = 0;
    while b.len() - p >= 16 {
        let len = u32_at(&b, p + 8) as usize;
        let Some(end) = (p + 16).checked_add(len).filter(|&e| e <= b.len()) else {
            break;
        };
        let crc = crc32c::crc32c_append(crc32c::crc32c(&b[p..p + 12]), &b[p + 16..end]);
        put_u32(&mut b, p + 12, crc);
        p = end;
    }
    b
}

/// Recomputes the checksum of a configuration region
/// (`ramcoord::cluster::region`: 32-byte header, CRC32C of bytes 0..28 and
/// the body at 28..32), if the body it claims is present.
pub fn fix_region_crc(data: &[u8]) -> Vec<u8> {
    let mut b = data.to_vec();
    if b.len() >= 32 {
        let len = u32_at(&b, 24) as usize;
        if len <= b.len() - 32 {
            let crc = crc32c::crc32c_append(crc32c::crc32c(&b[..28]), &b[32..32 + len]);
            put_u32(&mut b, 28, crc);
        }
    }
    b
}

/// Recomputes the checksum of each 64-byte hard-state slot
/// (`ramcoord_log::disk::hard_state`: CRC32C of the slot with its checksum
/// field, bytes 40..44, zero).
pub fn fix_hard_state_crcs(data: &[u8]) -> Vec<u8> {
    let mut b = data.to_vec();
    for slot in b.chunks_exact_mut(64) {
        slot[40..44].fill(0);
        let crc = crc32c::crc32c(slot);
        put_u32(slot, 40, crc);
    }
    b
}

/// Recomputes the checksum of every log record (`ramcoord_log::disk::record`:
/// 32-byte header, CRC32C of the header with bytes 12..16 zero and the
/// payload) complete in `data`, walking by the payload lengths; stops at an
/// all-zero header (the clean end of a segment).
pub fn fix_log_record_crcs(data: &[u8]) -> Vec<u8> {
    let mut b = data.to_vec();
    let mut p = 0;
    while b.len() - p >= 32 {
        if b[p..p + 32].iter().all(|&x| x == 0) {
            break;
        }
        let len = u32_at(&b, p + 8) as usize;
        let Some(end) = (p + 32).checked_add(len).filter(|&e| e <= b.len()) else {
            break;
        };
        b[p + 12..p + 16].fill(0);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&b[p..p + 32]), &b[p + 32..end]);
        put_u32(&mut b, p + 12, crc);
        p = end;
    }
    b
}

/// Recomputes the checksum of a snapshot file
/// (`ramcoord_log::disk::segment_log`: 48-byte header, CRC32C of the header
/// with bytes 40..44 zero and everything after it).
pub fn fix_snapshot_file_crc(data: &[u8]) -> Vec<u8> {
    let mut b = data.to_vec();
    if b.len() >= 48 {
        b[40..44].fill(0);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&b[..48]), &b[48..]);
        put_u32(&mut b, 40, crc);
    }
    b
}

/// CRC32C of a ring frame (`ramcoord_net::ring`): over the length's four
/// bytes and the payload.
pub fn ring_frame_crc(len: u32, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), payload)
}

/// A scratch directory for targets that go through files, unique to this
/// process: under `$RAMCOORD_FUZZ_TMPDIR` if set (scripts/fuzz.sh points it
/// at a directory it removes afterwards), else `/dev/shm` (no disk writes,
/// `fsync` is free), else the system's temporary directory.
pub fn scratch_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("RAMCOORD_FUZZ_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let shm = Path::new("/dev/shm");
            if shm.is_dir() {
                shm.to_owned()
            } else {
                std::env::temp_dir()
            }
        });
    base.join(format!("ramcoord-fuzz-{name}-{}", std::process::id()))
}

/// Empties `dir` (creating it if needed).
pub fn fresh_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("create the scratch directory");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_invert_join() {
        let parts: Vec<Vec<u8>> = vec![vec![], vec![1, 2, 3], vec![9; 300]];
        assert_eq!(chunks(&join(&parts)), parts);
        // A short last chunk takes what is left; a lone byte is dropped.
        assert_eq!(chunks(&[5, 0, 1, 2]), vec![&[1u8, 2][..]]);
        assert!(chunks(&[7]).is_empty());
    }
}

/// Valid values built with the project's own types, for seeds and for
/// targets that need a realistic state to work on.
pub mod seeds {
    use ramcoord::cluster::{
        even_ranges, services, ClusterState, Op, Record, RpcId, ServerId, TabletSpec,
    };

    /// A record applied to `s` at its next index, returned for the history.
    fn push(s: &mut ClusterState, out: &mut Vec<Record>, r: Record) {
        let index = s.applied_index() + 1;
        s.apply(index, &r.encode().expect("seed records encode"));
        out.push(r);
    }

    fn create(s: &ClusterState, name: &str, n: u32) -> Record {
        let owners = s.choose_owners(n).expect("masters are up");
        let tablets = even_ranges(n)
            .into_iter()
            .zip(owners)
            .map(|((start_hash, end_hash), owner)| TabletSpec {
                start_hash,
                end_hash,
                owner,
            })
            .collect();
        Record::Commit(Op::CreateTable {
            name: name.into(),
            tablets,
        })
    }

    /// A history of every kind of record, each valid when applied in
    /// order from an empty state: enlistments, creates, a split, a
    /// migration, a crash with its recovery plan, completions, a removal,
    /// a slot reused, a client's drop (with its exactly-once id) and that
    /// record again (a retry: applied as a duplicate), a no-op. It leaves
    /// one operation incomplete.
    pub fn cluster_history() -> Vec<Record> {
        let mut s = ClusterState::default();
        let mut out = Vec::new();
        for i in 1..=3u64 {
            let r = Record::Commit(Op::EnlistServer {
                addr: format!("10.0.0.{i}:7000"),
                services: services::MASTER | services::BACKUP,
                nonce: 100 + i,
            });
            push(&mut s, &mut out, r);
        }
        let r = create(&s, "users", 4);
        push(&mut s, &mut out, r);
        let seq = s.applied_index();
        push(&mut s, &mut out, Record::Complete { seq });
        let r = Record::Commit(Op::SplitTablet {
            table: "users".into(),
            split_hash: 1 << 20,
        });
        push(&mut s, &mut out, r);
        let seq = s.applied_index();
        push(&mut s, &mut out, Record::Complete { seq });
        let third = ServerId {
            index: 3,
            generation: 1,
        };
        let r = Record::Commit(Op::MigrateTablet {
            table: "users".into(),
            hash: 0,
            to: third,
        });
        push(&mut s, &mut out, r);
        let seq = s.applied_index();
        push(&mut s, &mut out, Record::Complete { seq });
        let plan = s.plan_recovery(third).expect("other masters are up");
        let r = Record::Commit(Op::ServerCrashed { id: third, plan });
        push(&mut s, &mut out, r);
        let seq = s.applied_index();
        push(&mut s, &mut out, Record::Complete { seq });
        push(
            &mut s,
            &mut out,
            Record::Commit(Op::ServerRemoved { id: third }),
        );
        let r = Record::Commit(Op::EnlistServer {
            addr: "10.0.0.4:7000".into(),
            services: services::MASTER,
            nonce: 104,
        });
        push(&mut s, &mut out, r);
        let r = create(&s, "orders", 2);
        push(&mut s, &mut out, r);
        let seq = s.applied_index();
        push(&mut s, &mut out, Record::Complete { seq });
        let r = Record::ClientCommit {
            rpc: RpcId {
                client: 0x00c1_1e47,
                seq: 1,
                after: s.applied_index(),
            },
            op: Op::DropTable {
                name: "orders".into(),
            },
        };
        push(&mut s, &mut out, r.clone());
        push(&mut s, &mut out, r);
        push(&mut s, &mut out, Record::Noop);
        let r = create(&s, "events", 3);
        push(&mut s, &mut out, r);
        out
    }

    /// Records that act on what `s` holds: a completion of each incomplete
    /// operation; a split, a migration and a drop of each table; a crash
    /// (with its recovery plan) and a removal of each server; an
    /// enlistment and a create. Applied after a restore, they drive the
    /// restored state through every operation.
    pub fn probe_records(s: &ClusterState) -> Vec<Record> {
        let mut out: Vec<Record> = s
            .incomplete()
            .keys()
            .take(8)
            .map(|&seq| Record::Complete { seq })
            .collect();
        let masters = s.up_masters();
        for t in s.tables().take(4) {
            for tb in t.tablets.iter().take(2) {
                if tb.end_hash > tb.start_hash {
                    out.push(Record::Commit(Op::SplitTablet {
                        table: t.name.clone(),
                        split_hash: tb.start_hash + (tb.end_hash - tb.start_hash) / 2 + 1,
                    }));
                }
                if let Some(&to) = masters.iter().find(|m| **m != tb.owner) {
                    out.push(Record::Commit(Op::MigrateTablet {
                        table: t.name.clone(),
                        hash: tb.start_hash,
                        to,
                    }));
                }
            }
        }
        for srv in s.servers().take(4) {
            if let Some(plan) = s.plan_recovery(srv.id) {
                out.push(Record::Commit(Op::ServerCrashed { id: srv.id, plan }));
            }
            out.push(Record::Commit(Op::ServerRemoved { id: srv.id }));
        }
        out.push(Record::Commit(Op::EnlistServer {
            addr: "10.9.9.9:7000".into(),
            services: services::MASTER,
            nonce: 0xfeed,
        }));
        if s.choose_owners(2).is_some() {
            out.push(create(s, "probe", 2));
            if let Record::Commit(op) = create(s, "probe-client", 1) {
                out.push(Record::ClientCommit {
                    rpc: RpcId {
                        client: 0x00c1_1e47,
                        seq: 2,
                        after: s.applied_index(),
                    },
                    op,
                });
            }
        }
        for t in s.tables().take(4) {
            out.push(Record::Commit(Op::DropTable {
                name: t.name.clone(),
            }));
        }
        out
    }
}
