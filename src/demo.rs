//! `ramcoord demo`: a real cluster on loopback, narrated.
//!
//! Starts three coordinator replicas and three masters as child processes
//! of this binary (free loopback ports, a temporary directory for data and
//! logs), then walks through what the coordinator is for:
//!
//! 1. the group elects a leader; the masters enlist;
//! 2. a table is created; right after its **commit point** the leader is
//!    killed with SIGKILL, before the masters were told; the next leader
//!    **rolls the operation forward** (pushes the tablets, records the
//!    completion);
//! 3. keys are written and read at the masters that own them;
//! 4. a master is killed; the coordinator notices the silence, commits a
//!    **recovery plan** moving its tablets to live masters, and removes it;
//!    keys in the other tablets are still served;
//! 5. the killed coordinator restarts from its data directory and catches
//!    up;
//!
//! and prints a timeline with each operation's commit-point latency.
//! Children are killed and the directory removed at the end (kept, with
//! the logs, if a step fails). The coordinators hold each configuration
//! push for `push_delay` so that the kill in step 2 lands between the
//! commit point and the completion: without it the whole operation takes
//! about a millisecond and the kill would usually come too late to show a
//! roll-forward.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::coordinator::Request;
use crate::ctl::Ctl;
use crate::local_cluster::{LocalCluster, LocalClusterConfig};
use crate::protocol::{OpResult, Status};

/// How the demo runs.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// The `ramcoord` binary to start children from.
    pub binary: PathBuf,
    /// Where data and logs go (a fresh temporary directory if `None`).
    pub dir: Option<PathBuf>,
    /// Coordinators' push hold (see the module docs).
    pub push_delay: Duration,
    /// Tablets of the demo table.
    pub tablets: u32,
    /// Keys written.
    pub keys: usize,
}

/// A line of the timeline.
struct Event {
    at: Duration,
    what: String,
    commit_us: Option<u64>,
}

struct Demo {
    cfg: DemoConfig,
    start: Instant,
    cluster: Option<LocalCluster>,
    timeline: Vec<Event>,
}

impl Demo {
    fn say(&self, s: impl AsRef<str>) {
        let t = self.start.elapsed().as_secs_f64();
        for (i, line) in s.as_ref().lines().enumerate() {
            if i == 0 {
                println!("[{t:7.3}s] {line}");
            } else {
                println!("           {line}");
            }
        }
    }

    fn mark(&mut self, what: impl Into<String>, commit_us: Option<u64>) {
        self.timeline.push(Event {
            at: self.start.elapsed(),
            what: what.into(),
            commit_us,
        });
    }

    fn cluster(&mut self) -> &mut LocalCluster {
        self.cluster.as_mut().expect("started")
    }

    fn ctl(&self) -> Ctl {
        self.cluster
            .as_ref()
            .expect("started")
            .ctl(Duration::from_secs(10))
    }

    fn wait_for<T>(
        &self,
        what: &str,
        f: impl FnMut(&LocalCluster) -> Option<T>,
    ) -> Result<T, DemoError> {
        Ok(self
            .cluster
            .as_ref()
            .expect("started")
            .wait_for(what, Duration::from_secs(20), f)?)
    }

    fn run(&mut self) -> Result<(), DemoError> {
        let dir = self.cfg.dir.clone().expect("run() sets it");
        let mut lc = LocalClusterConfig::new(self.cfg.binary.clone(), dir.clone(), 3, 3);
        lc.coordinator_args = vec![
            "--push-delay-ms".into(),
            self.cfg.push_delay.as_millis().to_string(),
        ];
        let cluster = LocalCluster::start(lc)?;
        self.say(format!(
            "started 3 coordinator replicas ({}) and 3 masters; data and logs in {}",
            cluster.coordinator_list(),
            dir.display()
        ));
        self.cluster = Some(cluster);

        // 1. Election and enlistment.
        let leader = self.cluster().wait_ready(3, Duration::from_secs(20))?;
        self.say(format!(
            "coordinator {} leads in term {}; 3 masters enlisted",
            leader.id, leader.term
        ));
        self.mark(
            format!("coordinator {} active, term {}", leader.id, leader.term),
            None,
        );
        let mut ctl = self.ctl();
        let view = ctl.view()?;
        for op in view.recent.iter().filter(|o| o.kind == "enlist") {
            self.mark(op.summary.clone(), op.commit_us);
        }
        self.say(format!(
            "servers:\n{}",
            ctl_out(&mut ctl, crate::ctl::CtlCommand::Servers)?
        ));

        // 2. Create a table; kill the leader right after its commit point.
        let name = "accounts".to_string();
        let c = ctl.operate(Request::CreateTable {
            name: name.clone(),
            tablets: self.cfg.tablets,
        })?;
        if !matches!(c.result, OpResult::TableCreated(_)) {
            return Err(DemoError::Check(format!(
                "create-table: {}",
                crate::ctl::result_text(&c.result)
            )));
        }
        self.cluster().kill_coordinator(leader.id);
        let killed_at = Instant::now();
        self.say(format!(
            "create-table {name:?} ({} tablets) passed its commit point: seq {}, term {}, \
             commit point {} µs at the leader ({} µs round trip at this client)\n\
             kill -9 coordinator {} now, before it told the masters (pushes are held {} ms)",
            self.cfg.tablets,
            c.seq,
            c.term,
            c.commit_us,
            c.client_us,
            leader.id,
            self.cfg.push_delay.as_millis()
        ));
        self.mark(
            format!("create-table {name:?} committed (seq {})", c.seq),
            Some(c.commit_us),
        );
        self.mark(format!("kill -9 coordinator {}", leader.id), None);
        let next = self.wait_for("a new leader", |c| {
            c.active().filter(|s| s.term > leader.term)
        })?;
        let elected = killed_at.elapsed();
        self.say(format!(
            "coordinator {} leads in term {} ({} ms after the kill); it finds seq {} incomplete \
             and rolls it forward",
            next.id,
            next.term,
            elected.as_millis(),
            c.seq
        ));
        self.mark(
            format!("coordinator {} active, term {}", next.id, next.term),
            None,
        );
        let mut ctl = self.ctl();
        ctl.wait_complete(c.seq)?;
        let view = ctl.view()?;
        let op =
            view.recent.iter().find(|o| o.seq == c.seq).ok_or_else(|| {
                DemoError::Check("the new leader does not know the operation".into())
            })?;
        let (ci, ct) = op
            .completed
            .ok_or_else(|| DemoError::Check("not complete".into()))?;
        if ct <= c.term {
            return Err(DemoError::Check(format!(
                "expected a roll-forward in a later term, completed in term {ct}"
            )));
        }
        self.say(format!(
            "seq {} completed at index {ci} in term {ct} (committed in term {}): rolled forward, \
             {} ms after the kill",
            c.seq,
            c.term,
            killed_at.elapsed().as_millis()
        ));
        self.mark(
            format!("create-table {name:?} rolled forward (index {ci}, term {ct})"),
            None,
        );
        self.say(format!(
            "tablets:\n{}",
            ctl_out(&mut ctl, crate::ctl::CtlCommand::Tables)?
        ));

        // 3. Keys at their owners.
        let mut owners = std::collections::BTreeMap::new();
        for k in 0..self.cfg.keys {
            let a = ctl.put(&name, &format!("key-{k}"), &format!("value-{k}"))?;
            owners.insert(k, a.server);
        }
        for k in 0..self.cfg.keys {
            let a = ctl.get(&name, &format!("key-{k}"))?;
            let want = format!("value-{k}");
            if a.value.as_deref() != Some(want.as_bytes()) {
                return Err(DemoError::Check(format!(
                    "key-{k}: read {}, wrote {want}",
                    shown(&a.value)
                )));
            }
        }
        let mut per: std::collections::BTreeMap<String, usize> = Default::default();
        for s in owners.values() {
            *per.entry(s.to_string()).or_default() += 1;
        }
        self.say(format!(
            "put and read back {} keys at their owners: {}",
            self.cfg.keys,
            per.iter()
                .map(|(s, n)| format!("{n} on {s}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        self.mark(
            format!("{} puts + gets at the masters", self.cfg.keys),
            None,
        );

        // 4. Kill a master.
        let victim_server = *owners
            .values()
            .next()
            .ok_or_else(|| DemoError::Check("no keys".into()))?;
        let victim = view
            .servers
            .iter()
            .find(|s| s.id == victim_server)
            .ok_or_else(|| DemoError::Check("owner not in the server list".into()))?;
        let vaddr = victim.addr.clone();
        let mi = self
            .cluster()
            .master_at(&vaddr)
            .ok_or_else(|| DemoError::Check("owner is not one of our masters".into()))?;
        self.cluster().kill_master(mi);
        let master_killed = Instant::now();
        self.say(format!(
            "kill -9 master {victim_server} ({vaddr}); the coordinator declares it crashed after \
             500 ms of silence"
        ));
        self.mark(format!("kill -9 master {victim_server}"), None);
        let crash = self.wait_for("the recovery", |c| {
            let v = c.ctl(Duration::from_secs(1)).view().ok()?;
            let gone = v.servers.iter().any(|s| {
                s.id == victim_server && s.status == crate::cluster::ServerStatus::Removed
            });
            let op = v
                .recent
                .iter()
                .find(|o| o.kind == "server-crashed" && o.completed.is_some())?
                .clone();
            gone.then_some(op)
        })?;
        self.say(format!(
            "{} (seq {}, commit point {} µs); recovered and removed {} ms after the kill",
            crash.summary,
            crash.seq,
            crash.commit_us.unwrap_or(0),
            master_killed.elapsed().as_millis()
        ));
        self.mark(
            format!("server-crashed {victim_server}: recovery plan committed"),
            crash.commit_us,
        );
        let view = ctl.view()?;
        if let Some(r) = view.recent.iter().find(|o| o.kind == "server-removed") {
            self.mark(r.summary.clone(), r.commit_us);
        }
        self.say(format!(
            "tablets:\n{}",
            ctl_out(&mut ctl, crate::ctl::CtlCommand::Tables)?
        ));
        let (mut kept, mut lost) = (0, 0);
        for (k, s) in &owners {
            let a = ctl.get(&name, &format!("key-{k}"))?;
            if *s == victim_server {
                // Masters keep data in memory only (this project models the
                // coordinator, not RAMCloud's backups): the tablet moved, empty.
                if a.value.is_none() {
                    lost += 1;
                }
            } else if a.value.as_deref() == Some(format!("value-{k}").as_bytes()) {
                kept += 1;
            } else {
                return Err(DemoError::Check(format!(
                    "key-{k} on live master {s}: read {}",
                    shown(&a.value)
                )));
            }
        }
        self.say(format!(
            "get after the crash: {kept} keys on live masters read back; {lost} keys of the \
             crashed master's tablets are served by their new owners, empty (masters keep data \
             in memory only: backups are out of scope)"
        ));
        self.mark(format!("{kept} gets served after the master crash"), None);

        // 5. Restart the killed coordinator.
        self.cluster().restart_coordinator(leader.id)?;
        let caught = self.wait_for("the restarted replica to catch up", |c| {
            let rows: Vec<Status> = c.statuses();
            let lead = rows.iter().find(|s| s.active)?;
            let me = rows.iter().find(|s| s.id == leader.id)?;
            (me.applied >= lead.commit && lead.commit > 0).then_some(me.applied)
        })?;
        self.say(format!(
            "coordinator {} restarted from its data directory and caught up to index {caught}",
            leader.id
        ));
        self.mark(
            format!("coordinator {} restarted, caught up", leader.id),
            None,
        );
        let status = ctl_out(&mut ctl, crate::ctl::CtlCommand::Status)?;
        self.say(format!("status:\n{status}"));
        Ok(())
    }

    fn print_timeline(&self) {
        println!();
        println!("timeline (commit point = from the leader receiving the request, or proposing");
        println!("its own record, to knowing the commit record is committed)");
        println!("{:>9}  {:>14}  event", "t", "commit point");
        for e in &self.timeline {
            println!(
                "{:>8.3}s  {:>14}  {}",
                e.at.as_secs_f64(),
                e.commit_us.map_or(String::new(), |u| format!("{u} µs")),
                e.what
            );
        }
    }
}

fn ctl_out(ctl: &mut Ctl, cmd: crate::ctl::CtlCommand) -> Result<String, DemoError> {
    Ok(ctl.run(cmd)?)
}

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The local cluster failed (a process, a port, a wait).
    #[error(transparent)]
    Cluster(#[from] crate::local_cluster::ClusterError),
    /// A request failed.
    #[error(transparent)]
    Ctl(#[from] crate::ctl::CtlError),
    /// What the demo shows did not happen (what it saw instead).
    #[error("{0}")]
    Check(String),
    /// Any of the above, with where the cluster's data and logs were kept.
    #[error("{why} (data and logs kept in {})", dir.display())]
    Kept {
        /// What went wrong.
        why: Box<DemoError>,
        /// The cluster's directory.
        dir: std::path::PathBuf,
    },
}

/// A value read, as text.
fn shown(v: &Option<bytes::Bytes>) -> String {
    match v {
        Some(b) => format!("{:?}", String::from_utf8_lossy(b)),
        None => "nothing".into(),
    }
}

/// Runs the demo (see the module docs). Prints as it goes.
pub fn run(mut cfg: DemoConfig) -> Result<(), DemoError> {
    let temporary = cfg.dir.is_none();
    let dir = cfg.dir.take().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("ramcoord-demo-{}", std::process::id()))
    });
    let mut demo = Demo {
        cfg: DemoConfig {
            dir: Some(dir.clone()),
            ..cfg
        },
        start: Instant::now(),
        cluster: None,
        timeline: Vec::new(),
    };
    let r = demo.run();
    demo.print_timeline();
    drop(demo); // stops every child
    match r {
        Ok(()) => {
            if temporary {
                let _ = std::fs::remove_dir_all(&dir);
            }
            println!(
                "\ndemo finished: every child stopped, {} removed",
                dir.display()
            );
            Ok(())
        }
        Err(e) => Err(DemoError::Kept {
            why: Box::new(e),
            dir,
        }),
    }
}
