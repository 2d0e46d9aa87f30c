//! The PostgreSQL engine: every namespace's tables in one table of the database,
//! `sealstore_kv (ns, tbl, k, v)`, keyed by `(ns, tbl, k)`; `bytea` keys compare byte by byte,
//! which is the order the interface promises.
//!
//! - A snapshot ([`Engine::read`]) is a `REPEATABLE READ READ ONLY` transaction, its snapshot
//!   taken when it begins.
//! - A write transaction ([`Engine::write`]) is a `READ COMMITTED` one that first takes a
//!   transaction-scoped advisory lock derived from the namespace's name: writers of a
//!   namespace are serial across every process sharing the database, and each sees every
//!   commit made before it began. [`Durability::Deferred`] commits with
//!   `synchronous_commit = off`.
//! - The interface is synchronous and may be called from any thread, a tokio worker of the
//!   caller's included: the client (tokio-postgres) runs on a small runtime of its own, and a
//!   caller waits for its answer on a channel, never with `block_on`.
//! - Connections are pooled ([`Settings`]), made when needed, and replaced when they broke. A
//!   server that cannot be reached, does not answer in time, or closed the connection is
//!   [`Error::Unavailable`]; a statement it refused is [`Error::Server`].
//! - No TLS to the server yet (`NoTls`): use a trusted network or a local socket.
//!
//! ```text
//! mod.rs         Postgres (connect, namespace), the engine and its transactions
//! pool.rs        the runtime's bridge, the connection pool, error mapping
//! migrations.rs  the schema, applied in numbered steps at connect
//! ```

use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

use tokio_postgres::types::ToSql;

use crate::{
    Durability, Engine, Error, KeyKind, KeyRange, LockGuard, Namespace, ReadTxn, Result, Table, ValueKind, Visit,
    WriteTxn,
};

mod migrations;
mod pool;

pub use pool::Settings;
use pool::{Pool, Pooled};

/// A PostgreSQL database holding sealstore's metadata: a connection pool and the runtime
/// that drives it. Share it (an [`Arc`]) between every namespace of a process.
pub struct Postgres {
    pool: Arc<Pool>,
    /// The connections that hold fleet-wide locks ([`Engine::lock`]), apart from the
    /// transactions' own: a lock keeps its connection for as long as what it guards, which
    /// must not leave the guarded work without a connection for its transactions.
    locks: Arc<Pool>,
    /// Owned here so it stops with the last user; `None` only while being dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl fmt::Debug for Postgres {
    // Not the URL: it may carry a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Postgres")
            .field("settings", &self.pool.settings)
            .finish_non_exhaustive()
    }
}

impl Postgres {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`, with
    /// an optional `?pool_size=N`, default 16) with the default [`Settings`], and brings its
    /// schema up to date.
    pub fn connect(url: &str) -> Result<Arc<Postgres>> {
        Postgres::connect_with(url, Settings::default())
    }

    /// [`Postgres::connect`] with other [`Settings`] (the URL's `pool_size` still wins).
    pub fn connect_with(url: &str, settings: Settings) -> Result<Arc<Postgres>> {
        // Two threads: the client's work is waiting on the network, and this runtime must
        // not take cores from the server's own.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sealstore-postgres")
            .enable_all()
            .build()
            .map_err(|source| Error::Io {
                context: "starting the PostgreSQL client's runtime".into(),
                source,
            })?;
        let pool = Arc::new(Pool::new(url, settings, runtime.handle().clone())?);
        let locks = Arc::new(Pool::new(url, settings, runtime.handle().clone())?);
        let postgres = Postgres {
            pool,
            locks,
            runtime: Some(runtime),
        };
        migrations::migrate(&postgres.pool)?;
        Ok(Arc::new(postgres))
    }

    /// The engine of `namespace` (its rows are those whose `ns` is its name).
    pub fn namespace(self: &Arc<Self>, namespace: &Namespace) -> Result<PgEngine> {
        Ok(PgEngine {
            postgres: self.clone(),
            ns: namespace.name,
            lock_key: lock_key(namespace.name, None),
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Without waiting: dropping a runtime the usual way blocks, which panics when the
        // last user is a task of another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The advisory lock key of a namespace's writers (`name` `None`), or of the lock `name` of
/// the namespace: FNV-1a (64 bits) of the names, stable across processes and versions, which
/// is what makes servers wait for each other. (Two names of one hash only wait for each other
/// needlessly.)
fn lock_key(namespace: &str, name: Option<&str>) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let named = name.map(|n| std::iter::once(0u8).chain(n.bytes()));
    for byte in "sealstore:"
        .bytes()
        .chain(namespace.bytes())
        .chain(named.into_iter().flatten())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// One namespace in a PostgreSQL database.
pub struct PgEngine {
    postgres: Arc<Postgres>,
    ns: &'static str,
    lock_key: i64,
}

impl fmt::Debug for PgEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgEngine").field("namespace", &self.ns).finish()
    }
}

impl PgEngine {
    /// A transaction begun by `begin` (one round trip) on a pooled connection.
    fn begin(&self, begin: String) -> Result<Txn> {
        let pool = &self.postgres.pool;
        loop {
            let pooled = pool.block(pool.clone().acquire())?;
            // Set first: should BEGIN fail half-way, the connection is rolled back before reuse.
            pooled.conn.set_in_txn(true);
            let reused = pooled.reused;
            let txn = Txn { pooled, ns: self.ns };
            let sql = begin.clone();
            match txn.run(move |c| async move { c.client.batch_execute(&sql).await }) {
                Ok(()) => return Ok(txn),
                // An idle connection the server closed meanwhile (a restart, a terminated
                // backend) is found out here: BEGIN changed nothing, so try again with
                // another, until a new connection answers or fails.
                Err(e) if reused && e.is_unavailable() && !txn.pooled.conn_reusable() => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Engine for PgEngine {
    fn read(&self) -> Result<Box<dyn ReadTxn + '_>> {
        // A repeatable-read snapshot is taken by the first query, not by BEGIN: the SELECT
        // takes it now, so that the snapshot is of the time `read` was called.
        let txn = self.begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT 1".into())?;
        Ok(Box::new(txn))
    }

    fn write(&self, durability: Durability) -> Result<Box<dyn WriteTxn + '_>> {
        let deferred = match durability {
            Durability::Immediate => "",
            Durability::Deferred => "SET LOCAL synchronous_commit = off; ",
        };
        let txn = self.begin(format!(
            "BEGIN; {deferred}SELECT pg_advisory_xact_lock({})",
            self.lock_key
        ))?;
        Ok(Box::new(txn))
    }

    fn get_one(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        // One statement, outside a transaction: it sees one snapshot, of when it runs.
        let pool = &self.postgres.pool;
        let pooled = pool.block(pool.clone().acquire())?;
        let (ns, tbl, key) = (self.ns, table.name(), key.to_vec());
        pool.run(&pooled.conn, move |c| async move {
            let statement = c.prepared(GET).await?;
            let row = c.client.query_opt(&statement, &[&ns, &tbl, &key]).await?;
            row.map(|row| row.try_get::<_, Vec<u8>>(0)).transpose()
        })
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn lock(&self, name: &str) -> Result<Option<LockGuard>> {
        let pool = &self.postgres.locks;
        let key = lock_key(self.ns, Some(name));
        let pooled = pool.block(pool.clone().acquire())?;
        // The session's lock_timeout bounds each wait; a holder may rightly keep the lock
        // longer (a large upload), so the wait is renewed while the server answers.
        let mut waited = 0;
        loop {
            let taken = pool.run(&pooled.conn, move |c| async move {
                c.client.batch_execute(&format!("SELECT pg_advisory_lock({key})")).await
            });
            match taken {
                Ok(()) => break,
                Err(e) if e.is_unavailable() && pooled.conn_reusable() && waited < LOCK_WAITS => waited += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(Some(LockGuard::new(Box::new(HeldLock {
            pooled: Some(pooled),
            key,
        }))))
    }

    fn lease(&self, name: &str, holder: &str, ttl: std::time::Duration) -> Result<bool> {
        let pool = &self.postgres.pool;
        let pooled = pool.block(pool.clone().acquire())?;
        let (ns, name, holder, seconds) = (self.ns, name.to_owned(), holder.to_owned(), ttl.as_secs_f64());
        pool.run(&pooled.conn, move |c| async move {
            let statement = c.prepared(LEASE).await?;
            Ok(c.client
                .query_opt(&statement, &[&ns, &name, &holder, &seconds])
                .await?
                .is_some())
        })
    }
}

/// How many lock timeouts in a row a fleet lock waits through before giving up (the
/// operation timeout each: 10 s by default, so five minutes).
const LOCK_WAITS: u32 = 30;

/// Takes or renews a lease: a row comes back when `$3` holds it afterwards (it was free,
/// expired, or already its own). Times are the database server's, so the servers' clocks
/// need not agree.
const LEASE: &str = "INSERT INTO sealstore_leases (ns, name, holder, expires) \
                     VALUES ($1, $2, $3, now() + make_interval(secs => $4)) \
                     ON CONFLICT (ns, name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires \
                     WHERE sealstore_leases.holder = excluded.holder OR sealstore_leases.expires < now() \
                     RETURNING 1";

/// A fleet-wide lock held by its session: released when dropped, without waiting (the
/// unlock runs on the client's runtime, then the connection goes back to its pool). Should
/// the unlock fail, the connection is closed, which releases the lock too.
struct HeldLock {
    pooled: Option<Pooled>,
    key: i64,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        let Some(pooled) = self.pooled.take() else {
            return;
        };
        let (pool, key) = (pooled.pool.clone(), self.key);
        let wait = pool.settings.operation_timeout;
        pool.spawn(async move {
            let unlock = format!("SELECT pg_advisory_unlock({key})");
            let unlocked = tokio::time::timeout(wait, pooled.conn.client.batch_execute(&unlock)).await;
            if !matches!(unlocked, Ok(Ok(()))) {
                pooled.conn.set_broken(true);
            }
            drop(pooled);
        });
    }
}

/// A transaction on a pooled connection: rolled back when dropped uncommitted (see
/// [`Pooled`]'s drop).
struct Txn {
    pooled: Pooled,
    ns: &'static str,
}

const GET: &str = "SELECT v FROM sealstore_kv WHERE ns = $1 AND tbl = $2 AND k = $3";
const INSERT: &str = "INSERT INTO sealstore_kv (ns, tbl, k, v) VALUES ($1, $2, $3, $4) \
                      ON CONFLICT (ns, tbl, k) DO UPDATE SET v = excluded.v";
const INSERT_MANY: &str = "INSERT INTO sealstore_kv (ns, tbl, k, v) \
                           SELECT $1, $2, k, v FROM unnest($3::bytea[], $4::bytea[]) AS r(k, v) \
                           ON CONFLICT (ns, tbl, k) DO UPDATE SET v = excluded.v";
const REMOVE: &str = "DELETE FROM sealstore_kv WHERE ns = $1 AND tbl = $2 AND k = $3 RETURNING 1";

/// Rows a scan fetches at a time: a long scan that the visitor ends early reads little more
/// than it needed, and no scan holds a whole table in memory.
const PAGE: i64 = 512;

/// The scan of one page: keys from `$3` (included or not) up to `$5` (included, excluded, or
/// no bound), at most `$4` rows. One statement per kind of bounds, so that each is a plain
/// range on the primary key's index.
fn scan_sql(lower_included: bool, upper: &Bound<Vec<u8>>) -> &'static str {
    macro_rules! sql {
        ($lower:literal $(, $upper:literal)?) => {
            concat!(
                "SELECT k, v FROM sealstore_kv WHERE ns = $1 AND tbl = $2 AND k ", $lower, " $3",
                $(" AND k ", $upper, " $5",)?
                " ORDER BY k LIMIT $4"
            )
        };
    }
    match (lower_included, upper) {
        (true, Bound::Unbounded) => sql!(">="),
        (false, Bound::Unbounded) => sql!(">"),
        (true, Bound::Included(_)) => sql!(">=", "<="),
        (false, Bound::Included(_)) => sql!(">", "<="),
        (true, Bound::Excluded(_)) => sql!(">=", "<"),
        (false, Bound::Excluded(_)) => sql!(">", "<"),
    }
}

impl Txn {
    fn run<T, F, Fut>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<pool::Conn>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>> + Send + 'static,
    {
        self.pooled.pool.run(&self.pooled.conn, op)
    }
}

impl ReadTxn for Txn {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let (ns, tbl, key) = (self.ns, table.name(), key.to_vec());
        self.run(move |c| async move {
            let statement = c.prepared(GET).await?;
            let row = c.client.query_opt(&statement, &[&ns, &tbl, &key]).await?;
            row.map(|row| row.try_get::<_, Vec<u8>>(0)).transpose()
        })
    }

    fn scan(&self, table: Table, range: KeyRange<'_>, visit: &mut Visit<'_>) -> Result<()> {
        let (start, end) = range;
        // No lower bound is the empty key, included: the smallest of all.
        let (mut lower, mut lower_included) = match start {
            Bound::Included(k) => (k.to_vec(), true),
            Bound::Excluded(k) => (k.to_vec(), false),
            Bound::Unbounded => (Vec::new(), true),
        };
        let upper = end.map(<[u8]>::to_vec);
        loop {
            let sql = scan_sql(lower_included, &upper);
            let (ns, tbl, from, to) = (self.ns, table.name(), lower, upper.clone());
            let page = self.run(move |c| async move {
                let statement = c.prepared(sql).await?;
                let mut params: Vec<&(dyn ToSql + Sync)> = vec![&ns, &tbl, &from, &PAGE];
                if let Bound::Included(to) | Bound::Excluded(to) = &to {
                    params.push(to);
                }
                let rows = c.client.query(&statement, &params).await?;
                rows.iter()
                    .map(|row| Ok((row.try_get::<_, Vec<u8>>(0)?, row.try_get::<_, Vec<u8>>(1)?)))
                    .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            })?;
            // The visitor runs on the caller's thread, between pages.
            for (k, v) in &page {
                if visit(k, v)?.is_break() {
                    return Ok(());
                }
            }
            match page.last() {
                Some((last, _)) if page.len() as i64 == PAGE => {
                    lower = last.clone();
                    lower_included = false;
                }
                _ => return Ok(()),
            }
        }
    }
}

/// Refuses what the embedded engine would refuse, so that a caller's mistake shows on both:
/// an integer key not eight bytes long, a string key or value not UTF-8.
fn check_row(table: Table, key: &[u8], value: &[u8]) -> Result<()> {
    let key_ok = match table.key_kind() {
        KeyKind::Str => std::str::from_utf8(key).is_ok(),
        KeyKind::U64 => key.len() == 8,
    };
    if !key_ok {
        return Err(Error::Corrupt(format!(
            "a key for table {} is not a {:?} key",
            table.name(),
            table.key_kind()
        )));
    }
    if table.value_kind() == ValueKind::Str && std::str::from_utf8(value).is_err() {
        return Err(Error::Corrupt(format!(
            "a value for table {} is not UTF-8",
            table.name()
        )));
    }
    Ok(())
}

impl WriteTxn for Txn {
    fn insert(&self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        check_row(table, key, value)?;
        let (ns, tbl, key, value) = (self.ns, table.name(), key.to_vec(), value.to_vec());
        self.run(move |c| async move {
            let statement = c.prepared(INSERT).await?;
            c.client.execute(&statement, &[&ns, &tbl, &key, &value]).await?;
            Ok(())
        })
    }

    fn insert_many(&self, table: Table, rows: &[(&[u8], &[u8])]) -> Result<()> {
        for (key, value) in rows {
            check_row(table, key, value)?;
        }
        let (ns, tbl) = (self.ns, table.name());
        let keys: Vec<Vec<u8>> = rows.iter().map(|(k, _)| k.to_vec()).collect();
        let values: Vec<Vec<u8>> = rows.iter().map(|(_, v)| v.to_vec()).collect();
        self.run(move |c| async move {
            let statement = c.prepared(INSERT_MANY).await?;
            c.client.execute(&statement, &[&ns, &tbl, &keys, &values]).await?;
            Ok(())
        })
    }

    fn remove(&self, table: Table, key: &[u8]) -> Result<bool> {
        let (ns, tbl, key) = (self.ns, table.name(), key.to_vec());
        self.run(move |c| async move {
            let statement = c.prepared(REMOVE).await?;
            Ok(c.client.execute(&statement, &[&ns, &tbl, &key]).await? > 0)
        })
    }

    fn commit(self: Box<Self>) -> Result<()> {
        let result = self.run(|c| async move { c.client.batch_execute("COMMIT").await });
        // COMMIT ends the transaction whatever it answers; a connection that failed meanwhile
        // is marked broken and closed.
        self.pooled.conn.set_in_txn(false);
        result
    }
}

#[cfg(test)]
mod tests;
