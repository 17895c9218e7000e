//! Latency distributions as the benchmarks report them: recorded in
//! nanoseconds into an hdrhistogram, summarised in microseconds (p50, p99,
//! p99.9, max) and, for plots, as CDF points.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// A latency recorder.
pub struct Recorder(pub Histogram<u64>);

impl Default for Recorder {
    fn default() -> Self {
        // 1 ns to 100 s: anything longer is recorded as 100 s.
        Recorder(Histogram::<u64>::new_with_bounds(1, 100_000_000_000, 3).expect("valid bounds"))
    }
}

impl Recorder {
    /// Records one latency.
    pub fn record(&mut self, d: std::time::Duration) {
        self.0.saturating_record(d.as_nanos() as u64);
    }

    /// Records one latency given in microseconds.
    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.saturating_mul(1000));
    }

    /// Adds another recorder's samples.
    pub fn merge(&mut self, o: &Recorder) {
        self.0.add(&o.0).expect("same bounds");
    }

    /// The summary.
    pub fn dist(&self) -> Dist {
        let q = |q: f64| self.0.value_at_quantile(q) as f64 / 1000.0;
        let cdf = if self.0.is_empty() {
            Vec::new()
        } else {
            self.0
                .iter_quantiles(10)
                .map(|v| {
                    (
                        v.quantile_iterated_to(),
                        v.value_iterated_to() as f64 / 1000.0,
                    )
                })
                .collect()
        };
        Dist {
            count: self.0.len(),
            p50_us: q(0.5),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: self.0.max() as f64 / 1000.0,
            cdf,
        }
    }
}

/// A latency distribution in microseconds.
#[derive(Serialize, Clone, Debug, Default)]
pub struct Dist {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// (quantile, microseconds) points, for plotting.
    #[serde(skip)]
    pub cdf: Vec<(f64, f64)>,
}

impl Dist {
    /// `p50 / p99 / p99.9 / max` in µs, for tables.
    pub fn row(&self) -> String {
        format!(
            "{:.0} / {:.0} / {:.0} / {:.0}",
            self.p50_us, self.p99_us, self.p999_us, self.max_us
        )
    }
}

/// Runs `clients` closed-loop clients for `seconds` and returns the
/// operations per second and their latencies. Client `i` is made by
/// `make(i)` on its own thread, which then warms it up (connects) before
/// the clock starts; `op(client, i, k, recorder)` does its `k`th operation
/// and says whether it succeeded (it records its own latency).
pub fn closed_loop<C, M, F>(clients: usize, seconds: f64, make: M, op: F) -> (f64, Recorder)
where
    M: Fn(usize) -> C + Send + Sync + 'static,
    F: Fn(&mut C, usize, u64, &mut Recorder) -> bool + Send + Sync + 'static,
{
    let (make, op) = (Arc::new(make), Arc::new(op));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let total = Arc::new(Mutex::new(Recorder::default()));
    let barrier = Arc::new(Barrier::new(clients + 1));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (make, op, stop, done, total, barrier) = (
                make.clone(),
                op.clone(),
                stop.clone(),
                done.clone(),
                total.clone(),
                barrier.clone(),
            );
            std::thread::spawn(move || {
                let mut c = make(i);
                let mut rec = Recorder::default();
                barrier.wait();
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    if op(&mut c, i, k, &mut rec) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    k += 1;
                }
                total.lock().unwrap().merge(&rec);
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let n = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let rec = std::mem::take(&mut *total.lock().unwrap());
    (n as f64 / elapsed, rec)
}
