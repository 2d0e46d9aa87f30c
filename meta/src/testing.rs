//! For tests of sealstore and its crates: the same suites run on either engine. With
//! `SEALSTORE_TEST_POSTGRES_URL` set (`scripts/with-postgres` sets it), the metadata of a test's
//! data directory lives in a database of its own on that server, `sealstore_dir_<FNV-1a 64 of
//! the absolute directory, hex>`, made on first use: a fresh directory gets a fresh database,
//! and reopening a directory finds its metadata again. Without it, the directory's redb files.
//! tests/pg-launcher (the pytest suites) maps directories to databases the same way.
//!
//! A database's comment is `<unix time made> <directory>`; when a database is made, those whose
//! directory is gone (and that are more than a minute old) are dropped, so that a long run
//! does not fill the disk with the databases of finished tests.
//!
//! [`Kv`] reads and changes `sealstore_kv` with SQL of its own, apart from the engine: what
//! tests that tamper with the stored rows use on PostgreSQL.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Location, Postgres};

/// The variable naming the test server.
pub const SERVER_VAR: &str = "SEALSTORE_TEST_POSTGRES_URL";

/// The test server's URL (its `postgres` database), when tests run on PostgreSQL.
pub fn server_url() -> Option<String> {
    std::env::var(SERVER_VAR).ok().filter(|u| !u.is_empty())
}

/// Where the metadata of data directory `dir` lives in tests: `None` (its redb files) unless
/// tests run on PostgreSQL, else the database of `dir`, connected.
pub fn location(dir: &Path) -> Option<Location> {
    let url = database_url(dir)?;
    Some(Location::Postgres(Postgres::connect(&url).unwrap_or_else(|e| {
        panic!("connecting to the test database of {}: {e}", dir.display())
    })))
}

/// The URL of data directory `dir`'s database (made if missing), when tests run on PostgreSQL:
/// what to pass a `sealstore` as `--metadata-url`.
pub fn database_url(dir: &Path) -> Option<String> {
    static MADE: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let server = server_url()?;
    let dir = absolute(dir);
    let name = database_name(&dir);
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    if made.get_or_insert_with(HashSet::new).insert(name.clone()) {
        make_database(&server, &name, &dir);
    }
    Some(with_database(&server, &name))
}

/// The name of the database of `dir` (absolute).
pub fn database_name(dir: &Path) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in dir.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("sealstore_dir_{hash:016x}")
}

fn absolute(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// `url` naming database `db` instead of its own.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let (server, _) = base.rsplit_once('/').expect("a postgres:// URL names a database");
    match query {
        Some(q) => format!("{server}/{db}?{q}"),
        None => format!("{server}/{db}"),
    }
}

/// Runs `op` with a client of `url` on a runtime of its own, on a thread of its own (callers
/// may be tasks of a runtime themselves).
fn with_client<T: Send + 'static>(
    url: &str,
    op: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error> + Send + 'static,
) -> T {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connecting to the test PostgreSQL server");
            let driver = tokio::spawn(connection);
            let out = op(&client)
                .await
                .unwrap_or_else(|e| panic!("on the test PostgreSQL server: {e:?}"));
            drop(client);
            let _ = driver.await;
            out
        })
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Makes database `name` for `dir` unless it exists (another process may be making it too),
/// dropping those of directories that are gone.
fn make_database(server: &str, name: &str, dir: &Path) {
    let (name, comment) = (
        name.to_owned(),
        format!(
            "{} {}",
            SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs(),
            dir.display()
        ),
    );
    with_client(server, async move |c| {
        let gone: Vec<String> = c
            .query(
                "SELECT datname::text, coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database \
                 WHERE datname LIKE 'sealstore\\_dir\\_%'",
                &[],
            )
            .await?
            .iter()
            .filter_map(|row| {
                let (db, comment): (String, String) = (row.get(0), row.get(1));
                let (made, dir) = comment.split_once(' ')?;
                let old = made.parse::<u64>().ok()? + 60 < SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
                (old && !Path::new(dir).exists()).then_some(db)
            })
            .collect();
        for db in gone {
            c.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .await?;
        }
        match c
            .batch_execute(&format!("CREATE DATABASE {name} STRATEGY FILE_COPY"))
            .await
        {
            Ok(()) => {}
            // Made by another process meanwhile, or on an earlier run of this directory.
            Err(e) if e.code().is_some_and(|c| c.code() == "42P04" || c.code() == "23505") => return Ok(()),
            Err(e) => return Err(e),
        }
        c.batch_execute(&format!(
            "COMMENT ON DATABASE {name} IS '{}'",
            comment.replace('\'', "''")
        ))
        .await
    })
}

/// `sealstore_kv` of a test data directory's database, read and changed with SQL of its own:
/// for tests that tamper with stored rows. Keys are as the engine stores them (UTF-8, or eight
/// big-endian bytes for integer keys).
pub struct Kv {
    url: String,
}

impl Kv {
    /// The rows of data directory `dir`, when tests run on PostgreSQL.
    pub fn of(dir: &Path) -> Option<Kv> {
        database_url(dir).map(|url| Kv { url })
    }

    /// The value of `(ns, tbl, k)`.
    pub fn get(&self, ns: &str, tbl: &str, k: &[u8]) -> Option<Vec<u8>> {
        let (ns, tbl, k) = (ns.to_owned(), tbl.to_owned(), k.to_vec());
        with_client(&self.url, async move |c| {
            let row = c
                .query_opt(
                    "SELECT v FROM sealstore_kv WHERE ns = $1 AND tbl = $2 AND k = $3",
                    &[&ns, &tbl, &k],
                )
                .await?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    /// Every row of table `tbl` of namespace `ns`, in key order.
    pub fn rows(&self, ns: &str, tbl: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let (ns, tbl) = (ns.to_owned(), tbl.to_owned());
        with_client(&self.url, async move |c| {
            let rows = c
                .query(
                    "SELECT k, v FROM sealstore_kv WHERE ns = $1 AND tbl = $2 ORDER BY k",
                    &[&ns, &tbl],
                )
                .await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    /// Sets `(ns, tbl, k)` to `v`, inserting the row if missing.
    pub fn put(&self, ns: &str, tbl: &str, k: &[u8], v: &[u8]) {
        let (ns, tbl, k, v) = (ns.to_owned(), tbl.to_owned(), k.to_vec(), v.to_vec());
        with_client(&self.url, async move |c| {
            c.execute(
                "INSERT INTO sealstore_kv (ns, tbl, k, v) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (ns, tbl, k) DO UPDATE SET v = excluded.v",
                &[&ns, &tbl, &k, &v],
            )
            .await
        });
    }

    /// Deletes `(ns, tbl, k)`; whether it was there.
    pub fn delete(&self, ns: &str, tbl: &str, k: &[u8]) -> bool {
        let (ns, tbl, k) = (ns.to_owned(), tbl.to_owned(), k.to_vec());
        with_client(&self.url, async move |c| {
            c.execute(
                "DELETE FROM sealstore_kv WHERE ns = $1 AND tbl = $2 AND k = $3",
                &[&ns, &tbl, &k],
            )
            .await
        }) == 1
    }

    /// Deletes every row of namespace `ns`; how many there were.
    pub fn delete_namespace(&self, ns: &str) -> u64 {
        let ns = ns.to_owned();
        with_client(&self.url, async move |c| {
            c.execute("DELETE FROM sealstore_kv WHERE ns = $1", &[&ns]).await
        })
    }

    /// How many rows namespace `ns` holds.
    pub fn count(&self, ns: &str) -> i64 {
        let ns = ns.to_owned();
        with_client(&self.url, async move |c| {
            Ok(c.query_one("SELECT count(*) FROM sealstore_kv WHERE ns = $1", &[&ns])
                .await?
                .get(0))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_has_one_database_and_its_rows_are_reached_with_sql() {
        if server_url().is_none() {
            assert_ne!(
                std::env::var("SEALSTORE_REQUIRE_POSTGRES").as_deref(),
                Ok("1"),
                "SEALSTORE_REQUIRE_POSTGRES=1 but {SERVER_VAR} is not set"
            );
            eprintln!("not run: {SERVER_VAR} is not set (scripts/with-postgres sets it)");
            return;
        }
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let url = database_url(a.path()).unwrap();
        assert_eq!(url, database_url(a.path()).unwrap(), "reopened: the same database");
        assert_ne!(
            url,
            database_url(b.path()).unwrap(),
            "another directory: another database"
        );
        let Some(Location::Postgres(pg)) = location(a.path()) else {
            panic!("not on PostgreSQL")
        };
        let engine = pg.namespace(&crate::tests::TEST_NAMESPACE).unwrap();
        let table = crate::tests::TEST_NAMESPACE.tables[0];
        let w = crate::Engine::write(&engine, crate::Durability::Immediate).unwrap();
        w.insert(table, b"k", b"engine").unwrap();
        w.commit().unwrap();

        let kv = Kv::of(a.path()).unwrap();
        let ns = crate::tests::TEST_NAMESPACE.name;
        assert_eq!(kv.count(ns), 1);
        assert_eq!(kv.get(ns, table.name(), b"k").as_deref(), Some(&b"engine"[..]));
        kv.put(ns, table.name(), b"k", b"sql");
        kv.put(ns, table.name(), b"l", b"new");
        assert_eq!(
            crate::Engine::read(&engine)
                .unwrap()
                .get(table, b"k")
                .unwrap()
                .as_deref(),
            Some(&b"sql"[..]),
            "the engine reads what SQL wrote"
        );
        assert_eq!(kv.rows(ns, table.name()).len(), 2);
        assert!(kv.delete(ns, table.name(), b"l") && !kv.delete(ns, table.name(), b"l"));
        assert_eq!(kv.delete_namespace(ns), 1);
        drop(location(b.path()).unwrap()); // its schema
        assert_eq!(
            Kv::of(b.path()).unwrap().count(ns),
            0,
            "the other directory's rows are apart"
        );
    }
}
