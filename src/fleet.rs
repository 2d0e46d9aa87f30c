//! Servers sharing one metadata store (a fleet over PostgreSQL): this server's name among
//! them, and the leases that make each background task — the KMS scheduler, garbage
//! collection, replication shipping — run on one server at a time. On a store no other server
//! shares, every lease is this server's.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static MEMBER: OnceLock<String> = OnceLock::new();

/// Names this server after its host and data directory: a server restarted on the same data
/// directory is the same member, and takes its leases back at once instead of waiting for
/// them to expire (one server runs on a data directory at a time). Call it once, at start.
pub(crate) fn init(data_dir: &std::path::Path) {
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    let _ = MEMBER.set(format!("{}:{}", host(), dir.display()));
}

/// This process's name among the servers of its fleet (see [`init`]; without it, host,
/// process id and a random part).
pub(crate) fn member_id() -> &'static str {
    MEMBER.get_or_init(|| {
        let mut random = [0u8; 4];
        // A name, not a secret: should the system's generator fail, the pid alone still
        // tells this process apart on its host.
        let _ = aws_lc_rs::rand::fill(&mut random);
        format!(
            "{}/{}/{}",
            host(),
            std::process::id(),
            data_encoding::HEXLOWER.encode(&random)
        )
    })
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into())
}

/// The lease of one background task, as this server sees it: taken or renewed in the
/// metadata store when it is asked about and a third of its time has passed since the last
/// renewal (so a server that stops renewing loses it within `ttl`).
#[derive(Debug)]
pub(crate) struct Lease {
    task: &'static str,
    /// Whether other servers share the store (otherwise the lease is always this server's).
    shared: bool,
    ttl: Duration,
    /// When it was last taken or renewed, while this server holds it.
    renewed: Option<Instant>,
}

impl Lease {
    /// The lease of `task`, lasting `ttl` from each renewal, in a store other servers share
    /// or not (`shared`).
    pub(crate) fn new(task: &'static str, ttl: Duration, shared: bool) -> Lease {
        Lease {
            task,
            shared,
            ttl,
            renewed: None,
        }
    }

    /// Whether this server runs the task now; `take` takes or renews the lease in the store
    /// (`name`, holder, ttl). A store that cannot be reached means "not now".
    pub(crate) fn held<E: std::fmt::Display>(
        &mut self,
        take: impl FnOnce(&str, &str, Duration) -> Result<bool, E>,
    ) -> bool {
        if !self.shared || self.renewed.is_some_and(|at| at.elapsed() < self.ttl / 3) {
            return true;
        }
        let held = match take(self.task, member_id(), self.ttl) {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(task = self.task, error = %e, "cannot renew a background task's lease; the task pauses here");
                false
            }
        };
        match (self.renewed.is_some(), held) {
            (false, true) => tracing::info!(task = self.task, member = member_id(), "this server runs the task"),
            (true, false) => tracing::info!(task = self.task, "another server runs the task now"),
            _ => {}
        }
        self.renewed = held.then(Instant::now);
        held
    }
}

/// [`Lease::held`] for async code: the store is asked on a blocking thread (a task that
/// could not ask, having panicked, counts as "not now").
pub(crate) async fn held_off_thread<E: std::fmt::Display>(
    lease: &std::sync::Arc<std::sync::Mutex<Lease>>,
    take: impl FnOnce(&str, &str, Duration) -> Result<bool, E> + Send + 'static,
) -> bool {
    let lease = lease.clone();
    tokio::task::spawn_blocking(move || {
        lease
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .held(take)
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_renewed_after_a_third_of_its_time_and_lost_on_errors() {
        let mut alone = Lease::new("t", Duration::from_millis(300), false);
        assert!(alone.held(|_, _, _| -> Result<bool, String> { panic!("a store nobody shares is not asked") }));
        let mut lease = Lease::new("t", Duration::from_millis(300), true);
        let mut asked = 0;
        assert!(lease.held(|_, _, _| {
            asked += 1;
            Ok::<_, String>(true)
        }));
        // Within a third of the ttl: not asked again.
        assert!(lease.held(|_, _, _| -> Result<bool, String> { panic!("asked too soon") }));
        std::thread::sleep(Duration::from_millis(120));
        assert!(!lease.held(|task, holder, ttl| {
            asked += 1;
            assert_eq!((task, holder, ttl), ("t", member_id(), Duration::from_millis(300)));
            Err::<bool, _>("unreachable")
        }));
        assert!(!lease.held(|_, _, _| {
            asked += 1;
            Ok::<_, String>(false)
        }));
        assert_eq!(asked, 3);
    }
}
