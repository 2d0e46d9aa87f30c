//! The PostgreSQL engine's connections: a private tokio runtime that drives them, a bounded
//! pool of them made on demand, and the mapping of their failures to [`Error`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, Config, NoTls, Statement};

use crate::error::{Error, Result};

/// How the pool connects and how long it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// At most this many connections to the server (the URL's `pool_size` overrides it).
    pub max_connections: usize,
    /// A new connection (TCP, start-up, authentication) gives up after this long.
    pub connect_timeout: Duration,
    /// A statement, or a wait for a lock or for a free connection, gives up after this long
    /// (also set as the session's `statement_timeout` and `lock_timeout`).
    pub operation_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            max_connections: 16,
            connect_timeout: Duration::from_secs(3),
            operation_timeout: Duration::from_secs(10),
        }
    }
}

/// How much longer than the server's own timeouts the client waits for an answer: the server's
/// error (which says what timed out) should come first; this is for a server that is gone.
const CLIENT_MARGIN: Duration = Duration::from_secs(2);

/// One connection, with the statements it has prepared.
pub(crate) struct Conn {
    pub(crate) client: Client,
    statements: Mutex<HashMap<&'static str, Statement>>,
    /// Set when the connection can no longer be trusted (an I/O error, a timeout mid-statement,
    /// a transaction that could not be ended): it is closed instead of going back to the pool.
    broken: AtomicBool,
    /// Set while a transaction is open on it: it is rolled back before the connection is
    /// reused.
    in_txn: AtomicBool,
}

impl Conn {
    /// `sql`, prepared once per connection.
    pub(crate) async fn prepared(&self, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.lock_statements().get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        self.lock_statements().insert(sql, statement.clone());
        Ok(statement)
    }

    fn lock_statements(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, Statement>> {
        // A panic while holding it cannot leave the map half-changed: recover it.
        self.statements.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_broken(&self, broken: bool) {
        self.broken.store(broken, Ordering::Relaxed);
    }

    pub(crate) fn set_in_txn(&self, in_txn: bool) {
        self.in_txn.store(in_txn, Ordering::Relaxed);
    }

    fn reusable(&self) -> bool {
        !self.broken.load(Ordering::Relaxed) && !self.client.is_closed()
    }
}

/// The connections to one server, driven by the runtime `handle` belongs to.
pub(crate) struct Pool {
    config: Config,
    pub(crate) settings: Settings,
    handle: Handle,
    /// One permit per connection in use or idle: the pool's bound.
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Arc<Conn>>>,
}

impl Pool {
    /// A pool of connections to `url` (made on demand, none yet), with `settings` unless the
    /// URL's `pool_size` says otherwise.
    pub(crate) fn new(url: &str, mut settings: Settings, handle: Handle) -> Result<Pool> {
        let (url, pool_size) = take_pool_size(url)?;
        if let Some(n) = pool_size {
            settings.max_connections = n;
        }
        // tokio-postgres's parse errors name the option at fault, never the URL's text.
        let mut config: Config = url
            .parse()
            .map_err(|e| Error::Server(format!("invalid PostgreSQL URL: {e}")))?;
        let ms = settings.operation_timeout.as_millis();
        let options = format!("-c statement_timeout={ms} -c lock_timeout={ms}");
        let options = match config.get_options() {
            Some(theirs) => format!("{theirs} {options}"),
            None => options,
        };
        if config.get_application_name().is_none() {
            // So that an operator sees in pg_stat_activity whose connections these are.
            config.application_name("sealstore");
        }
        config.options(&options).connect_timeout(settings.connect_timeout);
        Ok(Pool {
            config,
            permits: Arc::new(Semaphore::new(settings.max_connections.max(1))),
            settings,
            handle,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Runs `future` on the pool's runtime and waits for its result, from any thread: a
    /// caller's tokio worker thread included (where `block_on` would panic), which is blocked
    /// meanwhile as by any synchronous call.
    pub(crate) fn block<T: Send + 'static>(
        &self,
        future: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            // The caller is waiting on `rx`; it is gone only if it panicked.
            let _ = tx.send(future.await);
        });
        rx.recv()
            .map_err(|_| Error::Unavailable("the PostgreSQL client has shut down".into()))?
    }

    /// Spawns `future` on the pool's runtime without waiting for it.
    pub(crate) fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        self.handle.spawn(future);
    }

    /// A connection: an idle one that still works, or a new one if the pool has room; waits
    /// up to the operation timeout for one to be given back.
    pub(crate) async fn acquire(self: Arc<Self>) -> Result<Pooled> {
        let wait = self.settings.operation_timeout;
        let permit = match tokio::time::timeout(wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(Error::Unavailable("the PostgreSQL pool is closed".into())),
            Err(_) => {
                return Err(Error::Unavailable(format!(
                    "all {} PostgreSQL connections stayed busy for {wait:?}",
                    self.settings.max_connections
                )));
            }
        };
        let idle = self.lock_idle().pop();
        // Closed idle connections (the server restarted, the backend was terminated) are
        // dropped here and replaced.
        let (conn, reused) = match idle.filter(|c| c.reusable()) {
            Some(conn) => (conn, true),
            None => (self.connect().await?, false),
        };
        Ok(Pooled {
            conn,
            reused,
            pool: self,
            permit: Some(permit),
        })
    }

    async fn connect(&self) -> Result<Arc<Conn>> {
        let connecting = self.config.connect(NoTls);
        let (client, connection) = match tokio::time::timeout(self.settings.connect_timeout, connecting).await {
            Ok(connected) => connected.map_err(classify)?,
            Err(_) => {
                return Err(Error::Unavailable(format!(
                    "PostgreSQL did not accept a connection within {:?}",
                    self.settings.connect_timeout
                )));
            }
        };
        // The connection's I/O runs as its own task; when it ends the client is closed, and
        // the pool sees that before reusing it.
        self.handle.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("a PostgreSQL connection ended: {e}");
            }
        });
        Ok(Arc::new(Conn {
            client,
            statements: Mutex::new(HashMap::new()),
            broken: AtomicBool::new(false),
            in_txn: AtomicBool::new(false),
        }))
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Conn>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `op` on `conn` within the operation timeout (plus a margin), on the runtime. A
    /// connection that failed (not a statement the server refused) is marked broken.
    pub(crate) fn run<T, F, Fut>(&self, conn: &Arc<Conn>, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Conn>) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send + 'static,
    {
        let wait = self.settings.operation_timeout + CLIENT_MARGIN;
        let conn = conn.clone();
        let future = op(conn.clone());
        self.block(async move {
            match tokio::time::timeout(wait, future).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => {
                    // The server's refusal leaves the session usable (a transaction in it
                    // aborted, which the rollback before reuse ends); any other error is the
                    // connection's.
                    if e.as_db_error()
                        .is_none_or(|db| SESSION_ENDED.contains(&db.code().code()))
                    {
                        conn.set_broken(true);
                    }
                    Err(classify(e))
                }
                Err(_) => {
                    conn.set_broken(true);
                    Err(Error::Unavailable(format!("PostgreSQL did not answer within {wait:?}")))
                }
            }
        })
    }
}

/// A connection taken from the pool: given back when dropped, after rolling back the
/// transaction left open on it, unless it is broken.
pub(crate) struct Pooled {
    pub(crate) conn: Arc<Conn>,
    /// Whether it was idle in the pool (and so may have been closed by the server meanwhile
    /// without the client having noticed yet).
    pub(crate) reused: bool,
    pub(crate) pool: Arc<Pool>,
    /// Its place in the pool, held until it is back among the idle (or closed).
    permit: Option<OwnedSemaphorePermit>,
}

impl Pooled {
    /// Whether the connection may still be used.
    pub(crate) fn conn_reusable(&self) -> bool {
        self.conn.reusable()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if !self.conn.reusable() {
            return;
        }
        if !self.conn.in_txn.load(Ordering::Relaxed) {
            self.pool.lock_idle().push(self.conn.clone());
            return;
        }
        // Dropping must not block the caller: the rollback runs on the runtime, and the
        // connection (with its permit) goes back only once it succeeded. A transaction's
        // advisory lock is held until then, so the next writer waits for it as it should.
        let (conn, pool, permit) = (self.conn.clone(), self.pool.clone(), self.permit.take());
        let wait = self.pool.settings.operation_timeout;
        self.pool.spawn(async move {
            let rollback = tokio::time::timeout(wait, conn.client.batch_execute("ROLLBACK")).await;
            if matches!(rollback, Ok(Ok(()))) {
                conn.set_in_txn(false);
                pool.lock_idle().push(conn);
            }
            drop(permit);
        });
    }
}

/// `url` without the pool's own query parameter `pool_size` (tokio-postgres refuses options
/// it does not know), and that parameter's value.
pub(crate) fn take_pool_size(url: &str) -> Result<(String, Option<usize>)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None));
    };
    let mut pool_size = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.strip_prefix("pool_size=") {
            Some(n) => {
                pool_size = Some(n.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
                    Error::Server(format!(
                        "invalid PostgreSQL URL: pool_size={n} is not a positive number"
                    ))
                })?);
            }
            None => kept.push(pair),
        }
    }
    Ok(match kept.is_empty() {
        true => (base.to_owned(), pool_size),
        false => (format!("{base}?{}", kept.join("&")), pool_size),
    })
}

/// SQLSTATEs that end the session: the backend was terminated, or the server is shutting down.
const SESSION_ENDED: &[&str] = &["57P01", "57P02", "57P03"];

/// PostgreSQL's SQLSTATEs that mean "not now" rather than "not this request": a statement or
/// lock wait that timed out, a server shutting down or starting, no connection slot free.
const UNAVAILABLE_STATES: &[&str] = &["57014", "55P03", "57P01", "57P02", "57P03", "53300", "53400"];

/// An error of tokio-postgres as the store's: the server's refusal of a statement is
/// [`Error::Server`] with its message; a connection that failed or closed, or a timeout, is
/// [`Error::Unavailable`].
pub(crate) fn classify(e: tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) if UNAVAILABLE_STATES.contains(&db.code().code()) || db.code().code().starts_with("08") => {
            Error::Unavailable(format!("PostgreSQL: {}", db.message()))
        }
        Some(db) => Error::Server(format!("PostgreSQL: {} (SQLSTATE {})", db.message(), db.code().code())),
        // Everything else is about the connection: refused, reset, closed, unreadable.
        None => Error::Unavailable(format!("PostgreSQL: {e}")),
    }
}
