//! Writes the seed corpus of every fuzz target to `fuzz/corpus/<target>/`:
//! valid inputs made by the project's own encoders (frames, Raft messages,
//! client messages, records, regions, snapshots, hard-state files, log
//! segments and whole data directories written by `DiskStorage`).
//!
//! Deterministic: running it again rewrites the same files. Run with
//! `cargo run --manifest-path fuzz/Cargo.toml --bin seed_corpus` (no
//! fuzzing flags needed) after a format changes, and commit the result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use ramcoord::cluster::{
    ClusterState, ConfigRegion, Op, Record, RpcId, Server, ServerId, ServerStatus, Table,
};
use ramcoord::coordinator::Request;
use ramcoord::protocol::tag;
use ramcoord::protocol::{
    encode, ClientOp, ClientReply, ClientRequest, MasterReply, MasterRequest, OpRecord, OpResult,
    ReplicaChange, Status, View,
};
use ramcoord_fuzz::{chunks, fresh_dir, join, scratch_dir, seeds};
use ramcoord_log::disk::hard_state::HardStateFile;
use ramcoord_log::disk::record;
use ramcoord_log::disk::{BackendChoice, DiskStorage};
use ramcoord_log::wire::message_to_bytes;
use ramcoord_log::{
    ConfChange, ConfState, Entry, EntryKind, HardState, MemStorage, Message, MessageBody, Snapshot,
    SnapshotMeta, Storage,
};
use ramcoord_net::frame::{Frame, WriteStatus};
use ramcoord_net::ring::{encode_frame, RingWriter};

/// Seeds by target, by file name.
type Corpus = BTreeMap<&'static str, BTreeMap<String, Vec<u8>>>;

fn add(c: &mut Corpus, target: &'static str, name: impl Into<String>, bytes: impl AsRef<[u8]>) {
    let files = c.entry(target).or_default();
    let name = format!("{:02}-{}", files.len(), name.into());
    files.insert(name, bytes.as_ref().to_vec());
}

fn sid(index: u32, generation: u32) -> ServerId {
    ServerId { index, generation }
}

/// The cluster state after each record of the seed history.
fn states() -> Vec<ClusterState> {
    let mut s = ClusterState::default();
    let mut out = vec![s.clone()];
    for (i, r) in seeds::cluster_history().iter().enumerate() {
        s.apply(i as u64 + 1, &r.encode().expect("encodes"));
        out.push(s.clone());
    }
    out
}

fn entry(index: u64, term: u64, kind: EntryKind, data: impl Into<Bytes>) -> Entry {
    Entry {
        term,
        index,
        kind,
        data: data.into(),
    }
}

/// Log entries as a coordinator writes them: the founding configuration,
/// then the seed history's records, at term 2.
fn coordinator_log() -> Vec<Entry> {
    let mut log = MemStorage::bootstrap(&ConfState::with_voters([1, 2, 3]))
        .all_entries()
        .to_vec();
    let first = log.len() as u64 + 1;
    log.push(entry(first, 2, EntryKind::Empty, Bytes::new()));
    for (i, r) in seeds::cluster_history().iter().enumerate() {
        let data = r.encode().expect("encodes");
        log.push(entry(first + 1 + i as u64, 2, EntryKind::Normal, data));
    }
    log
}

fn msg(from: u64, to: u64, term: u64, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

fn raft_messages() -> Vec<(&'static str, Message)> {
    let log = coordinator_log();
    let cluster = states().pop().expect("a state");
    let conf = ConfState::with_voters([1, 2, 3]);
    vec![
        (
            "prevote",
            msg(
                2,
                1,
                3,
                MessageBody::PreVote {
                    last_index: 9,
                    last_term: 2,
                },
            ),
        ),
        (
            "prevote-resp",
            msg(2, 1, 3, MessageBody::PreVoteResp { reject: false }),
        ),
        (
            "vote",
            msg(
                3,
                1,
                3,
                MessageBody::Vote {
                    last_index: 9,
                    last_term: 2,
                    transfer: true,
                },
            ),
        ),
        (
            "vote-resp",
            msg(3, 1, 3, MessageBody::VoteResp { reject: true }),
        ),
        (
            "append",
            msg(
                2,
                1,
                2,
                MessageBody::Append {
                    prev_index: 3,
                    prev_term: 1,
                    entries: log[3..8].to_vec(),
                    commit: 5,
                },
            ),
        ),
        (
            "append-conf-change",
            msg(
                2,
                1,
                2,
                MessageBody::Append {
                    prev_index: 0,
                    prev_term: 0,
                    entries: vec![entry(
                        1,
                        2,
                        EntryKind::ConfChange,
                        ConfChange::AddLearner(4).encode(),
                    )],
                    commit: 0,
                },
            ),
        ),
        (
            "append-resp",
            msg(
                1,
                2,
                2,
                MessageBody::AppendResp {
                    reject: true,
                    index: 7,
                    hint_index: 5,
                    hint_term: 1,
                },
            ),
        ),
        (
            "heartbeat",
            msg(
                2,
                1,
                2,
                MessageBody::Heartbeat {
                    commit: 4,
                    seq: 11,
                    sent_tick: 40,
                },
            ),
        ),
        (
            "heartbeat-resp",
            msg(
                1,
                2,
                2,
                MessageBody::HeartbeatResp {
                    seq: 11,
                    sent_tick: 40,
                },
            ),
        ),
        (
            "snapshot",
            msg(
                2,
                1,
                2,
                MessageBody::Snapshot {
                    meta: SnapshotMeta {
                        index: 40,
                        term: 2,
                        conf,
                    },
                    total_len: cluster.snapshot().len() as u64,
                    offset: 0,
                    data: cluster.snapshot(),
                },
            ),
        ),
        (
            "snapshot-resp",
            msg(
                1,
                2,
                2,
                MessageBody::SnapshotResp {
                    index: 40,
                    next_offset: 512,
                    reject: false,
                },
            ),
        ),
        ("timeout-now", msg(2, 1, 2, MessageBody::TimeoutNow)),
        (
            "read-index",
            msg(2, 1, 2, MessageBody::ReadIndex { ctx: 77 }),
        ),
        (
            "read-index-resp",
            msg(1, 2, 2, MessageBody::ReadIndexResp { ctx: 77, index: 9 }),
        ),
    ]
}

fn frames(c: &mut Corpus) {
    let region = states()
        .pop()
        .expect("a state")
        .region_for(sid(1, 1), 2)
        .encode()
        .expect("encodes");
    let raft = message_to_bytes(&raft_messages()[4].1);
    let mut tagged = vec![tag::RAFT];
    tagged.extend_from_slice(&raft);
    let samples = [
        (
            "hello",
            Frame::Hello {
                peer: 2,
                cluster: 0x5eed,
            },
        ),
        ("message", Frame::Message(Bytes::from(tagged))),
        ("message-empty", Frame::Message(Bytes::new())),
        (
            "write",
            Frame::Write {
                id: 9,
                region: 1,
                offset: 0,
                bytes: region,
            },
        ),
        (
            "write-ack-landed",
            Frame::WriteAck {
                id: 9,
                status: WriteStatus::Landed,
            },
        ),
        (
            "write-ack-refused",
            Frame::WriteAck {
                id: 10,
                status: WriteStatus::Refused("term 3 < 5".into()),
            },
        ),
        (
            "write-ack-no-region",
            Frame::WriteAck {
                id: 11,
                status: WriteStatus::NoSuchRegion,
            },
        ),
        (
            "write-ack-out-of-bounds",
            Frame::WriteAck {
                id: 12,
                status: WriteStatus::OutOfBounds,
            },
        ),
        (
            "pass-request",
            Frame::PassRequest {
                peer: 3,
                cluster: 1,
            },
        ),
        (
            "pass",
            Frame::Pass(ramcoord_net::rdma_pass::Pass {
                expires_unix_s: 1_900_000_000,
                mac: [0xa5; 16],
            }),
        ),
    ];
    let mut stream = BytesMut::new();
    for (name, f) in &samples {
        add(c, "frame", *name, f.to_bytes());
        f.encode(&mut stream);
    }
    add(c, "frame", "stream", stream);
}

fn client(c: &mut Corpus) {
    let t = "client_messages";
    let enlist = Request::Enlist {
        addr: "10.0.0.1:7000".into(),
        services: 3,
        nonce: 42,
    };
    let op = |seq: u64, op: Request| ClientOp {
        rpc: RpcId {
            client: 0x005e_edc1_1e47,
            seq,
            after: 30,
        },
        op,
    };
    let requests = [
        ("status", ClientRequest::Status),
        ("view", ClientRequest::View),
        ("operate", ClientRequest::Operate(op(1, enlist))),
        (
            "operate-until-complete",
            ClientRequest::OperateUntilComplete(op(
                2,
                Request::CreateTable {
                    name: "users".into(),
                    tablets: 4,
                },
            )),
        ),
        (
            "operate-split",
            ClientRequest::Operate(op(
                3,
                Request::SplitTablet {
                    table: "users".into(),
                    split_hash: 1 << 40,
                },
            )),
        ),
        (
            "operate-migrate",
            ClientRequest::Operate(op(
                4,
                Request::MigrateTablet {
                    table: "users".into(),
                    hash: 7,
                    to: sid(2, 1),
                },
            )),
        ),
        (
            "operate-drop",
            ClientRequest::Operate(op(
                u64::MAX,
                Request::DropTable {
                    name: "users".into(),
                },
            )),
        ),
        ("noop", ClientRequest::Noop),
        ("op-state", ClientRequest::OpState { seq: 17 }),
        (
            "add-learner",
            ClientRequest::ChangeReplicas(ReplicaChange::AddLearner {
                id: 4,
                addr: Some("127.0.0.1:7104".into()),
            }),
        ),
        (
            "add-voter",
            ClientRequest::ChangeReplicas(ReplicaChange::AddVoter(4)),
        ),
        ("heartbeat", ClientRequest::Heartbeat { from: sid(1, 1) }),
        (
            "lookup",
            ClientRequest::Lookup {
                table: "users".into(),
            },
        ),
    ];
    for (i, (name, r)) in requests.iter().enumerate() {
        add(
            c,
            t,
            format!("request-{name}"),
            encode(tag::CLIENT, i as u64, r),
        );
    }
    let cluster = states().pop().expect("a state");
    let status = Status {
        id: 1,
        role: "leader".into(),
        term: 2,
        commit: 30,
        last_index: 31,
        durable_index: 29,
        applied: 30,
        leader: Some(1),
        active: true,
        servers_up: 3,
        tables: 2,
        incomplete: 1,
        match_index: vec![(2, 30), (3, 29)],
        voters: vec![1, 2, 3],
        learners: vec![4],
        addresses: vec![
            (1, "127.0.0.1:7101".into()),
            (2, "coord-2.example:7102".into()),
            (4, "[::1]:7104".into()),
        ],
        commits_measured: 100,
        commit_p50_us: 250,
        commit_p99_us: 900,
        insecure: true,
        last_contact_ms: vec![(2, 3), (3, 41)],
    };
    let view = View {
        id: 1,
        term: 2,
        active: true,
        applied: cluster.applied_index(),
        servers: cluster.servers().cloned().collect::<Vec<Server>>(),
        tables: cluster.tables().cloned().collect::<Vec<Table>>(),
        incomplete: cluster
            .incomplete()
            .iter()
            .map(|(seq, p)| (*seq, p.op.summary(), p.targets.iter().copied().collect()))
            .collect(),
        recent: vec![OpRecord {
            seq: 12,
            term: 2,
            summary: "drop-table \"orders\"".into(),
            kind: "drop-table".into(),
            rejected: Some("table \"orders\" is busy".into()),
            completed: Some((13, 2)),
            commit_us: Some(300),
            complete_after_us: None,
        }],
    };
    let replies = [
        ("status", ClientReply::Status(status)),
        ("view", ClientReply::View(view)),
        (
            "committed",
            ClientReply::Committed {
                seq: 9,
                term: 2,
                result: OpResult::Enlisted(sid(3, 2)),
                commit_us: 410,
            },
        ),
        (
            "committed-rejected",
            ClientReply::Committed {
                seq: 10,
                term: 2,
                result: OpResult::Rejected("no table named \"x\"".into()),
                commit_us: 380,
            },
        ),
        (
            "completed",
            ClientReply::Completed {
                seq: 9,
                complete_us: 1200,
            },
        ),
        ("refused", ClientReply::Refused("no master is up".into())),
        (
            "retry",
            ClientReply::Retry("the proposal was lost in a change of leader".into()),
        ),
        (
            "unknown",
            ClientReply::Unknown("the client's operation 3 was applied after it".into()),
        ),
        (
            "not-leader",
            ClientReply::NotLeader {
                leader: Some(2),
                addr: Some("127.0.0.1:7102".into()),
            },
        ),
        (
            "not-leader-unknown",
            ClientReply::NotLeader {
                leader: None,
                addr: None,
            },
        ),
        (
            "op-state",
            ClientReply::OpState {
                seq: 9,
                incomplete: false,
                applied: 12,
            },
        ),
        (
            "heartbeat-ack",
            ClientReply::HeartbeatAck {
                gone: false,
                leader: Some(1),
                term: 2,
                lease_us: 400_000,
                interval_us: 50_000,
            },
        ),
        (
            "lookup",
            ClientReply::Lookup {
                exists: true,
                index: 42,
            },
        ),
    ];
    for (i, (name, r)) in replies.iter().enumerate() {
        add(
            c,
            t,
            format!("reply-{name}"),
            encode(tag::CLIENT_REPLY, i as u64, r),
        );
    }
    let master = [
        (
            "get",
            MasterRequest::Get {
                table: 1,
                key: Bytes::from_static(b"alice"),
            },
        ),
        (
            "put",
            MasterRequest::Put {
                table: 1,
                key: Bytes::from_static(b"alice"),
                value: Bytes::from_static(b"\x00\x01value"),
            },
        ),
    ];
    for (i, (name, r)) in master.iter().enumerate() {
        add(
            c,
            t,
            format!("master-request-{name}"),
            encode(tag::MASTER, i as u64, r),
        );
    }
    let master_replies = [
        (
            "value",
            MasterReply::Value(Some(Bytes::from_static(b"value"))),
        ),
        ("no-value", MasterReply::Value(None)),
        ("stored", MasterReply::Stored),
        ("not-owner", MasterReply::NotOwner("server 2.1".into())),
        (
            "refused",
            MasterReply::Refused("a put needs the admin role".into()),
        ),
    ];
    for (i, (name, r)) in master_replies.iter().enumerate() {
        add(
            c,
            t,
            format!("master-reply-{name}"),
            encode(tag::MASTER_REPLY, i as u64, r),
        );
    }
}

fn cluster(c: &mut Corpus) {
    let history = seeds::cluster_history();
    for r in &history {
        let name = match r {
            Record::Commit(op) => op.kind().to_string(),
            Record::ClientCommit { op, .. } => format!("client-{}", op.kind()),
            Record::Complete { .. } => "complete".into(),
            Record::Noop => "noop".into(),
        };
        add(c, "record", name, r.encode().expect("encodes"));
    }
    // As the version-1 build wrote it (the same bytes under header 1).
    let mut v1 = history[3].encode().expect("encodes").to_vec();
    v1[1] = 1;
    add(c, "record", "format-1-create-table", v1);
    let bad = Record::Commit(Op::DropTable { name: "".into() });
    add(
        c,
        "record",
        "breaks-a-limit",
        bad.encode().expect("encodes"),
    );

    let encoded: Vec<Bytes> = history
        .iter()
        .map(|r| r.encode().expect("encodes"))
        .collect();
    add(c, "cluster_apply", "history", join(&encoded));
    add(c, "cluster_apply", "enlist-create", join(&encoded[..5]));
    let mut with_raft = vec![Bytes::new()];
    with_raft.extend(encoded.iter().cloned());
    add(c, "cluster_apply", "after-a-raft-entry", join(&with_raft));
    let s = states().pop().expect("a state");
    let probes: Vec<Bytes> = encoded
        .iter()
        .cloned()
        .chain(
            seeds::probe_records(&s)
                .iter()
                .map(|r| r.encode().expect("encodes")),
        )
        .collect();
    add(c, "cluster_apply", "history-then-probes", join(&probes));

    let all = states();
    for at in [0, 4, 12, all.len() - 1] {
        add(
            c,
            "cluster_snapshot",
            format!("after-{at}-records"),
            all[at].snapshot(),
        );
    }

    let last = all.last().expect("a state");
    add(
        c,
        "backup_file",
        "whole-history".to_string(),
        ramcoord::snapshot_file::Backup {
            cluster: 1,
            index: last.applied_index(),
            term: 2,
            current_term: 3,
            version: last.version(),
            saved_at: 1_800_000_000,
            state: last.snapshot(),
        }
        .encode(),
    );
    for srv in last.servers() {
        add(
            c,
            "region",
            format!("server-{}", srv.id.index),
            last.region_for(srv.id, 2).encode().expect("encodes"),
        );
    }
    // A part: one server's tablets of the tables it holds, as pushed over
    // TCP (format 3).
    if let Some(srv) = last.servers().find(|s| last.tablet_count(s.id) > 0) {
        let tables: std::collections::BTreeSet<_> = last
            .tablets_of(srv.id)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        add(
            c,
            "region",
            "part",
            last.region_part_for(srv.id, 2, &tables)
                .encode()
                .expect("encodes"),
        );
    }
    let empty = ConfigRegion {
        term: 1,
        version: 0,
        server_list_version: 0,
        owner: sid(1, 1),
        status: ServerStatus::Up,
        tables: None,
        tablets: Vec::new(),
    };
    add(c, "region", "empty", empty.encode().expect("encodes"));
    // A crashed server's view, as the region of a server that is not up.
    let crashed = last
        .servers()
        .find(|s| s.status != ServerStatus::Up)
        .map(|s| s.id);
    if let Some(id) = crashed {
        add(
            c,
            "region",
            "not-up",
            last.region_for(id, 3).encode().expect("encodes"),
        );
    }
}

fn hard_state(c: &mut Corpus) {
    let dir = scratch_dir("seed-hard-state");
    fresh_dir(&dir);
    let path = dir.join("hardstate");
    let (mut f, _) = HardStateFile::open(&path).expect("open");
    let hs = |term, vote, commit| HardState { term, vote, commit };
    f.save(hs(1, Some(1), 0)).expect("save");
    add(
        c,
        "hard_state",
        "one-save",
        std::fs::read(&path).expect("read"),
    );
    f.save(hs(2, Some(2), 3)).expect("save");
    add(
        c,
        "hard_state",
        "two-saves",
        std::fs::read(&path).expect("read"),
    );
    f.save_unsynced(hs(2, Some(2), 9)).expect("save");
    add(
        c,
        "hard_state",
        "unsynced-hint",
        std::fs::read(&path).expect("read"),
    );
    f.save(hs(3, None, 9)).expect("save");
    add(
        c,
        "hard_state",
        "no-vote",
        std::fs::read(&path).expect("read"),
    );
    drop(f);
    let _ = std::fs::remove_dir_all(&dir);
}

fn log_segment(c: &mut Corpus) {
    let log = coordinator_log();
    let prev = |p: Option<(u64, u64)>| {
        let (i, t) = p.unwrap_or((0, 0));
        let mut b = i.to_le_bytes().to_vec();
        b.extend_from_slice(&t.to_le_bytes());
        b
    };
    let seg = |entries: &[Entry], zeros: usize| {
        let mut b = Vec::new();
        for e in entries {
            record::encode(e, &mut b);
        }
        b.resize(b.len() + zeros, 0);
        b
    };
    let mut whole = prev(None);
    whole.extend(seg(&log, 256));
    add(c, "log_segment", "coordinator-log", whole);
    let mut second = prev(Some((log[4].index, log[4].term)));
    second.extend(seg(&log[5..12], 64));
    add(c, "log_segment", "continues-a-segment", second);
    let mut empty = prev(Some((9, 2)));
    empty.extend(vec![0u8; 128]);
    add(c, "log_segment", "clean-empty", empty);
}

/// A data directory as `disk_open` takes it (see that target).
fn dir_image(dir: &Path) -> Vec<u8> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    parts.push(std::fs::read(dir.join("hardstate")).unwrap_or_default());
    match std::fs::read(dir.join("snapshot")) {
        Ok(s) => {
            let mut p = vec![1];
            p.extend(s);
            parts.push(p);
        }
        Err(_) => parts.push(vec![0]),
    }
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    for p in segs {
        let first: u64 = p
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .expect("a segment name");
        let mut b = first.to_le_bytes().to_vec();
        b.extend(std::fs::read(&p).expect("read segment"));
        // Keep seeds small: the zeros after the written part are implied
        // by a shorter file (open reads what is there).
        let end = b.iter().rposition(|&x| x != 0).map_or(8, |i| i + 1);
        b.truncate(end.max(8));
        parts.push(b);
    }
    let image = join(&parts);
    assert_eq!(chunks(&image).len(), parts.len());
    image
}

fn disk(c: &mut Corpus) {
    let dir = scratch_dir("seed-disk");
    let conf = ConfState::with_voters([1, 2, 3]);
    let log = coordinator_log();
    let opened = |dir: &Path| {
        DiskStorage::open_with(dir, 4096, BackendChoice::Std)
            .expect("open")
            .0
    };

    fresh_dir(&dir);
    let mut s = DiskStorage::bootstrap(&dir, &conf, 4096).expect("bootstrap");
    s.sync().expect("sync");
    drop(s);
    add(c, "disk_open", "bootstrapped", dir_image(&dir));

    let mut s = opened(&dir);
    s.append(&log[3..]).expect("append");
    s.sync().expect("sync");
    s.set_hard_state(HardState {
        term: 2,
        vote: Some(2),
        commit: 20,
    })
    .expect("hard state");
    drop(s);
    add(c, "disk_open", "coordinator-log", dir_image(&dir));

    let mut s = opened(&dir);
    let snap_state = states()[10].snapshot();
    let snap = Snapshot {
        meta: SnapshotMeta {
            index: 13,
            term: 2,
            conf: conf.clone(),
        },
        data: snap_state.clone(),
    };
    s.compact(snap).expect("compact");
    drop(s);
    add(c, "disk_open", "compacted", dir_image(&dir));

    fresh_dir(&dir);
    let mut s = opened(&dir);
    let installed = Snapshot {
        meta: SnapshotMeta {
            index: 40,
            term: 3,
            conf: ConfState {
                voters: [1, 2, 3].into(),
                learners: [4].into(),
            },
        },
        data: snap_state,
    };
    s.apply_snapshot(installed).expect("install");
    s.append(&[entry(41, 3, EntryKind::Empty, Bytes::new())])
        .expect("append");
    s.sync().expect("sync");
    drop(s);
    add(c, "disk_open", "installed-snapshot", dir_image(&dir));
    let _ = std::fs::remove_dir_all(&dir);
}

fn ring(c: &mut Corpus) {
    // Scripts (see the target): cap byte, then ops.
    let write = |len: u8| {
        let mut op = vec![0, len];
        op.extend((0..len).map(|i| i.wrapping_mul(37)));
        op
    };
    let mut laps = vec![1u8]; // a 128-byte ring
    for len in [20, 1, 0, 24, 9] {
        laps.extend(write(len));
        laps.push(1);
    }
    for len in [24, 24, 3] {
        laps.extend(write(len));
    }
    laps.push(1);
    add(c, "ring", "script-laps", laps);
    let mut batch = vec![7u8]; // a 512-byte ring
    for len in [100, 0, 50, 120] {
        batch.extend(write(len));
    }
    batch.push(1);
    add(c, "ring", "script-batch", batch);

    // A raw region: tail word, reserved, data area of 256 bytes holding
    // frames written by the real writer (a reader starts at 0, so no lap).
    let cap = 256;
    let mut area = vec![0u8; cap];
    let mut w = RingWriter::new(cap);
    for len in [40usize, 56, 0, 8, 30] {
        let payload: Vec<u8> = (0..len as u8).collect();
        let p = w.place(len).expect("room");
        assert_eq!(p.pad_at, None);
        encode_frame(&payload, &mut area[p.offset..p.offset + p.bytes]);
    }
    let mut region = w.tail().to_le_bytes().to_vec();
    region.resize(64, 0);
    region.extend(&area);
    add(c, "ring", "raw-region", region);
}

fn jepsen(c: &mut Corpus) {
    let line = |p: u32, kind: &str, f: &str, v: &str| {
        format!("INFO  jepsen.util - {p}\t{kind}\t{f}\t{v}\n")
    };
    let mut h = String::from("2024-01-01 INFO jepsen.core - Running test\n");
    h += &line(0, ":invoke", ":write", "3");
    h += &line(1, ":invoke", ":read", "nil");
    h += &line(0, ":ok", ":write", "3");
    h += &line(1, ":ok", ":read", "3");
    h += &line(2, ":invoke", ":cas", "[3 4]");
    h += &line(2, ":fail", ":cas", "[3 4]");
    h += &line(3, ":invoke", ":write", "1");
    h += &line(3, ":info", ":write", ":timed-out");
    add(c, "jepsen", "history", &h);
    add(
        c,
        "jepsen",
        "spaces",
        "jepsen.util - 0 :invoke :read nil\njepsen.util - 0 :ok :read nil\n",
    );
}

fn raft_step(c: &mut Corpus) {
    let log = coordinator_log();
    let msgs = raft_messages();
    let enc = |m: &Message| message_to_bytes(m).to_vec();
    // Follower: a leader of term 2 replicates the coordinator's log in
    // batches, commits it, heartbeats; ticks in between.
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut prev = 3u64;
    for batch in log[3..].chunks(6) {
        parts.push(enc(&msg(
            2,
            1,
            2,
            MessageBody::Append {
                prev_index: prev,
                prev_term: log[prev as usize - 1].term,
                entries: batch.to_vec(),
                commit: prev,
            },
        )));
        prev = batch.last().expect("a batch").index;
        parts.push(Vec::new());
    }
    parts.push(enc(&msg(
        2,
        1,
        2,
        MessageBody::Heartbeat {
            commit: prev,
            seq: 1,
            sent_tick: 9,
        },
    )));
    let mut follower = vec![0u8];
    follower.extend(join(&parts));
    add(c, "raft_step", "follower-replicates", follower);

    // Follower: a snapshot from the leader, then more entries.
    let (_, snap) = msgs
        .iter()
        .find(|(n, _)| *n == "snapshot")
        .expect("a snapshot message");
    let after = msg(
        2,
        1,
        2,
        MessageBody::Append {
            prev_index: 40,
            prev_term: 2,
            entries: vec![entry(41, 2, EntryKind::Normal, log[6].data.clone())],
            commit: 41,
        },
    );
    let mut snapshot = vec![0u8];
    snapshot.extend(join(&[enc(snap), enc(&after)]));
    add(c, "raft_step", "follower-snapshot", snapshot);

    // Every kind of message, to each role.
    let all: Vec<Vec<u8>> = msgs
        .iter()
        .map(|(_, m)| enc(&msg(2, 1, m.term, m.body.clone())))
        .collect();
    for (mode, name) in [(0u8, "follower"), (1, "candidate"), (2, "leader")] {
        let mut b = vec![mode];
        b.extend(join(&all));
        add(c, "raft_step", format!("every-kind-to-{name}"), b);
    }
    // Leader: followers acknowledge and ask for a read.
    let mut acks = Vec::new();
    for from in [2, 3] {
        acks.push(enc(&msg(
            from,
            1,
            2,
            MessageBody::AppendResp {
                reject: false,
                index: 5,
                hint_index: 0,
                hint_term: 0,
            },
        )));
        acks.push(enc(&msg(
            from,
            1,
            2,
            MessageBody::HeartbeatResp {
                seq: 1,
                sent_tick: 1,
            },
        )));
    }
    acks.push(enc(&msg(3, 1, 2, MessageBody::ReadIndex { ctx: 5 })));
    acks.push(Vec::new());
    let mut leader = vec![2u8];
    leader.extend(join(&acks));
    add(c, "raft_step", "leader-acks", leader);
}

/// Chaos histories: the hand-written ones of the test data.
fn chaos_history(c: &mut Corpus) {
    add(
        c,
        "chaos_history",
        "concurrent",
        include_str!("../../../tests/data/chaos/concurrent.jsonl"),
    );
    add(
        c,
        "chaos_history",
        "stale-read",
        include_str!("../../../tests/data/chaos/stale-read.jsonl"),
    );
}

/// Masters' serve logs: a handover after the lease, then a planted
/// violation.
fn serve_log(c: &mut Corpus) {
    add(
        c,
        "serve_log",
        "handover",
        include_str!("../../../tests/data/chaos/serve.jsonl"),
    );
}

/// RDMA connection requests' private data: with and without a pass.
fn rdma_pass(c: &mut Corpus) {
    use ramcoord_net::rdma_pass::{Pass, RequestPrivate};
    let pass = Pass {
        expires_unix_s: 1_900_000_000,
        mac: [0xa5; 16],
    };
    for (name, r) in [
        (
            "no-pass",
            RequestPrivate {
                cluster: 1,
                peer: 3,
                pass: None,
            },
        ),
        (
            "with-pass",
            RequestPrivate {
                cluster: 1,
                peer: 3,
                pass: Some(pass),
            },
        ),
    ] {
        add(c, "rdma_pass", name, r.encode());
    }
    add(c, "rdma_pass", "pass-alone", pass.encode());
}

fn main() {
    let mut c = Corpus::new();
    chaos_history(&mut c);
    serve_log(&mut c);
    rdma_pass(&mut c);
    frames(&mut c);
    for (name, m) in raft_messages() {
        add(&mut c, "raft_wire", name, message_to_bytes(&m));
    }
    client(&mut c);
    cluster(&mut c);
    hard_state(&mut c);
    log_segment(&mut c);
    disk(&mut c);
    ring(&mut c);
    jepsen(&mut c);
    raft_step(&mut c);

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, files) in &c {
        let dir = root.join(target);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
        let mut total = 0;
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).expect("write a seed");
            total += bytes.len();
        }
        assert!(files.len() < 50, "{target}: {} seeds", files.len());
        assert!(total < 200 << 10, "{target}: {total} bytes of seeds");
        println!("{target}: {} seeds, {total} bytes", files.len());
    }
}
