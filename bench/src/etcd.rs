//! The `etcd` baseline: the same sequential and concurrent write workload
//! against a 3-member etcd cluster on loopback (`scripts/etcd-cluster.sh`
//! installs etcd from the distribution's packages and starts it), through
//! two clients, both sent to the leader (as our clients are):
//!
//! - **native**: etcd's own gRPC API through the `etcd-client` crate (tonic
//!   over HTTP/2), one connection per client as ours have, each client with
//!   one put outstanding at a time. This is how etcd's users reach it, and
//!   the figure the goals compare with.
//! - **gateway**: etcd's v3 JSON gateway (`POST /v3/kv/put`) over one
//!   persistent HTTP/1.1 connection per client (`ureq`, blocking,
//!   keep-alive). The gateway runs inside etcd and forwards to its own gRPC
//!   server, so it costs etcd work per request; kept beside the native
//!   figure because earlier runs reported it. That cost, with the client's,
//!   is measured: a serializable range read through the same gateway skips
//!   consensus and the disk, so its latency is the overhead in every put.
//!
//! The native client runs on a tokio runtime of two workers (this machine's
//! cores); ours are threads. Both are closed loops of the same length.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Serialize;

use crate::cluster::Throughput;
use crate::dist::{Dist, Recorder};

/// What the etcd run measured.
#[derive(Serialize, Clone, Debug, Default)]
pub struct EtcdReport {
    /// `etcd --version`'s first line.
    pub version: String,
    /// Sequential put, 1 client.
    pub put: Dist,
    /// Serializable range read, 1 client: client + gateway overhead.
    pub client_floor: Dist,
    /// Closed-loop puts per client count.
    pub throughput: Vec<Throughput>,
    /// Sequential put, 1 client, native gRPC.
    pub native_put: Dist,
    /// Closed-loop puts per client count, native gRPC.
    pub native_throughput: Vec<Throughput>,
}

/// A running etcd cluster (stopped on drop).
struct EtcdCluster {
    script: PathBuf,
    dir: PathBuf,
    endpoints: Vec<String>,
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn script() -> Result<PathBuf, String> {
    // The repository's scripts/, found from the manifest or the cwd.
    let candidates = [
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/etcd-cluster.sh"),
        PathBuf::from("scripts/etcd-cluster.sh"),
    ];
    candidates
        .into_iter()
        .find(|p| p.exists())
        .ok_or_else(|| "scripts/etcd-cluster.sh not found".to_string())
}

fn start(dir: &Path, port: u16) -> Result<EtcdCluster, String> {
    let script = script()?;
    let out = std::process::Command::new(&script)
        .arg("start")
        .arg(dir)
        .arg(port.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} start failed", script.display()));
    }
    let endpoints = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    Ok(EtcdCluster {
        script,
        dir: dir.to_path_buf(),
        endpoints,
    })
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn post(agent: &ureq::Agent, url: &str, body: &str) -> Result<serde_json::Value, String> {
    let mut r = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body)
        .map_err(|e| format!("{url}: {e}"))?;
    let status = r.status();
    let text = r
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{url}: {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("{url}: {e}: {text}"))
}

/// The endpoint of the current leader.
fn leader(endpoints: &[String]) -> Result<String, String> {
    let a = agent();
    for e in endpoints {
        let v = post(&a, &format!("{e}/v3/maintenance/status"), "{}")?;
        if v["leader"].as_str().is_some() && v["leader"] == v["header"]["member_id"] {
            return Ok(e.clone());
        }
    }
    Err("no etcd member says it leads".into())
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn put(agent: &ureq::Agent, url: &str, key: &str, value: &str) -> Result<(), String> {
    let body = format!(r#"{{"key":"{}","value":"{}"}}"#, b64(key), b64(value));
    post(agent, url, &body).map(|_| ())
}

/// Runs the etcd baseline.
pub fn run(
    dir: &Path,
    ops: u64,
    seconds: f64,
    client_counts: &[usize],
    progress: &dyn Fn(&str),
) -> Result<EtcdReport, String> {
    progress("etcd: starting 3 members");
    let cluster = start(&dir.join("etcd"), 23790)?;
    let version = std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_default();
    let lead = leader(&cluster.endpoints)?;
    let put_url = format!("{lead}/v3/kv/put");
    let range_url = format!("{lead}/v3/kv/range");
    let a = agent();
    let value = "x".repeat(64);
    for i in 0..50 {
        put(&a, &put_url, &format!("warm-{i}"), &value)?;
    }
    progress(&format!("etcd: 1 client, {ops} puts"));
    let mut puts = Recorder::default();
    for i in 0..ops {
        let t = Instant::now();
        put(&a, &put_url, &format!("key-{}", i % 1000), &value)?;
        puts.record(t.elapsed());
    }
    progress(&format!("etcd: 1 client, {ops} serializable reads"));
    let mut reads = Recorder::default();
    let range = format!(r#"{{"key":"{}","serializable":true}}"#, b64("key-1"));
    for _ in 0..ops {
        let t = Instant::now();
        post(&a, &range_url, &range)?;
        reads.record(t.elapsed());
    }
    let mut throughput = Vec::new();
    for &n in client_counts {
        progress(&format!("etcd: {n} clients for {seconds:.1} s"));
        let (url, v) = (put_url.clone(), value.clone());
        let make = move |c: usize| {
            let a = agent();
            let _ = put(&a, &url, &format!("c{c}"), &v);
            (a, url.clone(), v.clone())
        };
        let (ops_per_s, rec) = crate::dist::closed_loop(
            n,
            seconds,
            make,
            |(a, url, value): &mut (ureq::Agent, String, String), c, k, rec| {
                let t = Instant::now();
                let ok = put(a, url, &format!("c{c}-{}", k % 100), value).is_ok();
                if ok {
                    rec.record(t.elapsed());
                }
                ok
            },
        );
        throughput.push(Throughput {
            clients: n,
            ops_per_s,
            commit: rec.dist(),
        });
    }
    let (native_put, native_throughput) =
        native(&lead, ops, seconds, client_counts, &value, progress)?;
    drop(cluster);
    Ok(EtcdReport {
        version,
        put: puts.dist(),
        client_floor: reads.dist(),
        throughput,
        native_put,
        native_throughput,
    })
}

/// The native gRPC runs against `endpoint` (the leader): `ops` sequential
/// puts, then each closed loop.
fn native(
    endpoint: &str,
    ops: u64,
    seconds: f64,
    client_counts: &[usize],
    value: &str,
    progress: &dyn Fn(&str),
) -> Result<(Dist, Vec<Throughput>), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let connect = |endpoint: String| async move {
        etcd_client::Client::connect([endpoint.as_str()], None)
            .await
            .map_err(|e| format!("etcd gRPC {endpoint}: {e}"))
    };
    runtime.block_on(async {
        let mut client = connect(endpoint.to_string()).await?;
        for i in 0..50 {
            client
                .put(format!("warm-{i}"), value, None)
                .await
                .map_err(|e| format!("etcd gRPC put: {e}"))?;
        }
        progress(&format!("etcd native gRPC: 1 client, {ops} puts"));
        let mut puts = Recorder::default();
        for i in 0..ops {
            let t = Instant::now();
            client
                .put(format!("key-{}", i % 1000), value, None)
                .await
                .map_err(|e| format!("etcd gRPC put: {e}"))?;
            puts.record(t.elapsed());
        }
        let mut throughput = Vec::new();
        for &n in client_counts {
            progress(&format!("etcd native gRPC: {n} clients for {seconds:.1} s"));
            // Every client connects and puts once before the clock starts.
            let mut clients = Vec::with_capacity(n);
            for c in 0..n {
                let mut client = connect(endpoint.to_string()).await?;
                client
                    .put(format!("c{c}"), value, None)
                    .await
                    .map_err(|e| format!("etcd gRPC put: {e}"))?;
                clients.push(client);
            }
            let start = Instant::now();
            let end = start + Duration::from_secs_f64(seconds);
            let tasks: Vec<_> = clients
                .into_iter()
                .enumerate()
                .map(|(c, mut client)| {
                    let value = value.to_string();
                    tokio::spawn(async move {
                        let mut rec = Recorder::default();
                        let mut done = 0u64;
                        let mut k = 0u64;
                        while Instant::now() < end {
                            let t = Instant::now();
                            let key = format!("c{c}-{}", k % 100);
                            if client.put(key, value.as_str(), None).await.is_ok() {
                                rec.record(t.elapsed());
                                done += 1;
                            }
                            k += 1;
                        }
                        (done, rec)
                    })
                })
                .collect();
            let mut total = Recorder::default();
            let mut done = 0;
            for task in tasks {
                let (d, rec) = task.await.map_err(|e| format!("etcd client task: {e}"))?;
                done += d;
                total.merge(&rec);
            }
            let elapsed = start.elapsed().as_secs_f64();
            throughput.push(Throughput {
                clients: n,
                ops_per_s: done as f64 / elapsed,
                commit: total.dist(),
            });
        }
        Ok((puts.dist(), throughput))
    })
}
