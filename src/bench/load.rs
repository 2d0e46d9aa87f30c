//! Concurrent load: `clients` callers, each making one operation after another until the
//! duration is up, every operation timed. The object, S3 and volume benchmarks are this
//! engine with different operations.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Latency, Measured, Role, Unit};

/// Most points kept in a latency distribution (enough for a smooth plotted curve).
const CDF_POINTS: usize = 200;

/// What a load run did.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoadResult {
    /// Operations made by each client, in client order.
    pub ops_per_client: Vec<u64>,
    /// Bytes the operations moved.
    pub bytes: u64,
    /// Wall-clock seconds from the first operation's start to the last one's end.
    pub seconds: f64,
    /// Every operation's latency, nanoseconds (unsorted).
    latencies_ns: Vec<u64>,
}

impl LoadResult {
    /// Operations made by all clients.
    pub(crate) fn ops(&self) -> u64 {
        self.ops_per_client.iter().sum()
    }

    /// Percentiles and distribution of the operations' latencies (`None` without operations).
    pub(crate) fn latency(&self) -> Option<Latency> {
        let mut sorted = self.latencies_ns.clone();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_unstable();
        let us = |ns: u64| ns as f64 / 1000.0;
        let at = |q: f64| us(sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]);
        let n = sorted.len();
        let step = n.div_ceil(CDF_POINTS).max(1);
        let mut cdf: Vec<(f64, f64)> = (step - 1..n)
            .step_by(step)
            .map(|i| (us(sorted[i]), (i + 1) as f64 / n as f64))
            .collect();
        if cdf.last().is_none_or(|(_, f)| *f < 1.0) {
            cdf.push((us(sorted[n - 1]), 1.0));
        }
        Some(Latency {
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            max_us: us(sorted[n - 1]),
            cdf,
        })
    }

    /// This run as a result line: bytes per second, or operations per second.
    pub(crate) fn measured(
        &self,
        kind: &str,
        group: &str,
        name: &str,
        unit: Unit,
        baseline: bool,
        role: Role,
    ) -> Measured {
        let seconds = self.seconds.max(1e-9);
        let value = match unit {
            Unit::BytesPerSec => self.bytes as f64 / seconds,
            Unit::OpsPerSec => self.ops() as f64 / seconds,
        };
        Measured {
            kind: kind.into(),
            group: group.into(),
            name: name.into(),
            unit,
            value,
            ops: self.ops(),
            seconds: self.seconds,
            ratio: None,
            baseline,
            role,
            latency: self.latency(),
            versus: None,
            rounds: Vec::new(),
        }
    }

    /// This run and `other` as one: operations, bytes, seconds and latencies added up (so
    /// the rate is over both), clients of `other` after this run's.
    pub(crate) fn combine(mut self, other: LoadResult) -> LoadResult {
        self.ops_per_client.extend(other.ops_per_client);
        self.bytes += other.bytes;
        self.seconds += other.seconds;
        self.latencies_ns.extend(other.latencies_ns);
        self
    }

    fn merge(clients: Vec<ClientRun>, seconds: f64) -> Self {
        let mut result = LoadResult {
            seconds,
            ..Default::default()
        };
        for c in clients {
            result.ops_per_client.push(c.latencies_ns.len() as u64);
            result.bytes += c.bytes;
            result.latencies_ns.extend(c.latencies_ns);
        }
        result
    }
}

/// One client's share of a run.
#[derive(Default)]
struct ClientRun {
    bytes: u64,
    latencies_ns: Vec<u64>,
}

impl ClientRun {
    fn record(&mut self, started: Instant, bytes: u64) {
        self.latencies_ns.push(started.elapsed().as_nanos() as u64);
        self.bytes += bytes;
    }
}

/// Runs `op(client, seq)` from `clients` tasks on the current tokio runtime, each task calling
/// it again as soon as it returns, until `duration` has passed (each client makes at least
/// one call). `op` returns the bytes it moved. An error stops every client and is returned.
pub(crate) async fn run_async<F, Fut, E>(clients: usize, duration: Duration, op: F) -> Result<LoadResult, E>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u64, E>> + Send + 'static,
    E: Send + 'static,
{
    let op = Arc::new(op);
    let failed = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients.max(1))
        .map(|client| {
            let (op, failed) = (op.clone(), failed.clone());
            tokio::spawn(async move {
                let mut run = ClientRun::default();
                for seq in 0u64.. {
                    let started = Instant::now();
                    let bytes = op(client, seq)
                        .await
                        .inspect_err(|_| failed.store(true, Ordering::Relaxed))?;
                    run.record(started, bytes);
                    if start.elapsed() >= duration || failed.load(Ordering::Relaxed) {
                        break;
                    }
                }
                Ok::<_, E>(run)
            })
        })
        .collect();
    let mut runs = Vec::with_capacity(tasks.len());
    for task in tasks {
        runs.push(task.await.expect("a benchmark client panicked")?);
    }
    Ok(LoadResult::merge(runs, start.elapsed().as_secs_f64()))
}

/// As [`run_async`] with `threads` OS threads calling a blocking `op`.
pub(crate) fn run_threads<F, E>(threads: usize, duration: Duration, op: F) -> Result<LoadResult, E>
where
    F: Fn(usize, u64) -> Result<u64, E> + Sync,
    E: Send,
{
    let failed = AtomicBool::new(false);
    let start = Instant::now();
    let runs = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|thread| {
                let (op, failed) = (&op, &failed);
                scope.spawn(move || {
                    let mut run = ClientRun::default();
                    for seq in 0u64.. {
                        let started = Instant::now();
                        let bytes = op(thread, seq).inspect_err(|_| failed.store(true, Ordering::Relaxed))?;
                        run.record(started, bytes);
                        if start.elapsed() >= duration || failed.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    Ok::<_, E>(run)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a benchmark thread panicked"))
            .collect::<Result<Vec<_>, E>>()
    })?;
    Ok(LoadResult::merge(runs, start.elapsed().as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_cdf_come_from_the_recorded_latencies() {
        let result = LoadResult {
            ops_per_client: vec![1000],
            bytes: 4000,
            seconds: 2.0,
            // 1..=1000 µs
            latencies_ns: (1..=1000u64).rev().map(|i| i * 1000).collect(),
        };
        let l = result.latency().unwrap();
        assert_eq!((l.p50_us, l.p90_us, l.p99_us, l.max_us), (500.0, 900.0, 990.0, 1000.0));
        assert!(l.cdf.len() <= CDF_POINTS + 1);
        assert_eq!(*l.cdf.last().unwrap(), (1000.0, 1.0));
        assert!(l.cdf.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
        let m = result.measured("object", "g", "n", Unit::OpsPerSec, false, Role::Sealstore);
        assert_eq!(m.value, 500.0);
        let m = result.measured("object", "g", "n", Unit::BytesPerSec, false, Role::Sealstore);
        assert_eq!(m.value, 2000.0);
        assert!(LoadResult::default().latency().is_none());
    }

    #[test]
    fn every_client_runs_until_the_duration_and_errors_end_the_run() {
        let result = run_threads(3, Duration::from_millis(30), |_, _| {
            std::thread::sleep(Duration::from_millis(1));
            Ok::<_, ()>(10)
        })
        .unwrap();
        assert_eq!(result.ops_per_client.len(), 3);
        assert!(result.ops_per_client.iter().all(|n| *n >= 1));
        assert_eq!(result.bytes, result.ops() * 10);
        assert!(result.seconds >= 0.03);
        let failed = run_threads(2, Duration::from_secs(5), |t, seq| {
            if t == 1 && seq == 3 {
                Err("boom")
            } else {
                Ok(1)
            }
        });
        assert_eq!(failed.unwrap_err(), "boom");

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let result = rt
            .block_on(run_async(4, Duration::from_millis(20), |_, _| async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok::<_, ()>(1)
            }))
            .unwrap();
        assert_eq!(result.ops_per_client.len(), 4);
        assert!(result.ops() >= 4);
    }
}
