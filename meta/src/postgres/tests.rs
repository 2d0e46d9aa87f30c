//! The PostgreSQL engine against a server: `SEALSTORE_TEST_POSTGRES_URL` (scripts/with-postgres
//! sets it). Without it these tests say they were not run and pass, unless
//! `SEALSTORE_REQUIRE_POSTGRES=1`. Each test works in a namespace or a database of its own, so
//! they run in parallel on one server.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::tests::{check_engine, TEST_NAMESPACE};
use crate::{collect, Location, ALL};

/// The test server's URL; `None` (said on stderr) when there is none and none is required.
pub(crate) fn server() -> Option<String> {
    match std::env::var("SEALSTORE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert_ne!(
                std::env::var("SEALSTORE_REQUIRE_POSTGRES").as_deref(),
                Ok("1"),
                "SEALSTORE_REQUIRE_POSTGRES=1 but SEALSTORE_TEST_POSTGRES_URL is not set: run under scripts/with-postgres"
            );
            eprintln!("not run: SEALSTORE_TEST_POSTGRES_URL is not set (scripts/with-postgres sets it)");
            None
        }
    }
}

/// A name no other test (of this run or an earlier one) uses.
fn unique(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{tag}_{}_{nanos}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The contract's namespace under a name of its own.
fn namespace(tag: &str) -> Namespace {
    Namespace {
        name: Box::leak(unique(tag).into_boxed_str()),
        ..TEST_NAMESPACE
    }
}

/// Runs `sql` (one or more statements) on one of `pg`'s connections, outside a transaction.
fn execute(pg: &Postgres, sql: &str) -> Result<()> {
    let pool = &pg.pool;
    let pooled = pool.block(pool.clone().acquire())?;
    let sql = sql.to_owned();
    pool.run(&pooled.conn, move |c| async move { c.client.batch_execute(&sql).await })
}

/// The integer `sql` answers.
fn query_i64(pg: &Postgres, sql: &str) -> i64 {
    let pool = &pg.pool;
    let pooled = pool.block(pool.clone().acquire()).unwrap();
    let sql = sql.to_owned();
    pool.run(&pooled.conn, move |c| async move {
        c.client.query_one(&sql, &[]).await?.try_get(0)
    })
    .unwrap()
}

/// `url` naming database `db` instead of its own.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let (server, _) = base.rsplit_once('/').unwrap();
    match query {
        Some(q) => format!("{server}/{db}?{q}"),
        None => format!("{server}/{db}"),
    }
}

/// A new, empty database on the test server: its URL.
fn fresh_database(url: &str) -> String {
    let db = unique("sealstore_test");
    execute(&Postgres::connect(url).unwrap(), &format!("CREATE DATABASE {db}")).unwrap();
    with_database(url, &db)
}

const COUNTER: Table = Table::u64_to_bytes("log");

#[test]
fn postgres_keeps_the_engine_contract() {
    let Some(url) = server() else { return };
    let location = Location::Postgres(Postgres::connect(&url).unwrap());
    assert!(location.is_shared());
    let engine = location.open(&namespace("contract")).unwrap();
    assert!(engine.is_shared());
    check_engine(&*engine);
}

#[test]
fn namespaces_do_not_see_each_others_rows() {
    let Some(url) = server() else { return };
    let pg = Postgres::connect(&url).unwrap();
    let (a, b) = (
        pg.namespace(&namespace("a")).unwrap(),
        pg.namespace(&namespace("b")).unwrap(),
    );
    let w = a.write(Durability::Immediate).unwrap();
    w.insert(COUNTER, &1u64.to_be_bytes(), b"a").unwrap();
    w.commit().unwrap();
    assert_eq!(collect(&*b.read().unwrap(), COUNTER, ALL).unwrap(), []);
    assert_eq!(collect(&*a.read().unwrap(), COUNTER, ALL).unwrap().len(), 1);
}

#[test]
fn two_gateways_share_one_truth_and_their_writers_are_serial() {
    let Some(url) = server() else { return };
    let ns = namespace("gateways");
    let gateways = [Postgres::connect(&url).unwrap(), Postgres::connect(&url).unwrap()];
    let engines: Vec<PgEngine> = gateways.iter().map(|g| g.namespace(&ns).unwrap()).collect();

    let w = engines[0].write(Durability::Immediate).unwrap();
    w.insert(COUNTER, &0u64.to_be_bytes(), &0u64.to_be_bytes()).unwrap();
    w.commit().unwrap();
    assert_eq!(
        engines[1].read().unwrap().get(COUNTER, &0u64.to_be_bytes()).unwrap(),
        Some(0u64.to_be_bytes().to_vec()),
        "a commit through one gateway is read through the other at once"
    );

    // Read-modify-write from threads of both gateways, deferred and immediate: a lost update
    // would show in the count.
    const THREADS: usize = 4;
    const ROUNDS: u64 = 25;
    std::thread::scope(|s| {
        for engine in &engines {
            for t in 0..THREADS {
                s.spawn(move || {
                    for round in 0..ROUNDS {
                        let durability = match (t as u64 + round) % 2 {
                            0 => Durability::Immediate,
                            _ => Durability::Deferred,
                        };
                        let w = engine.write(durability).unwrap();
                        let now = w.get(COUNTER, &0u64.to_be_bytes()).unwrap().unwrap();
                        let next = u64::from_be_bytes(now.try_into().unwrap()) + 1;
                        w.insert(COUNTER, &0u64.to_be_bytes(), &next.to_be_bytes()).unwrap();
                        w.commit().unwrap();
                    }
                });
            }
        }
    });
    let count = engines[1]
        .read()
        .unwrap()
        .get(COUNTER, &0u64.to_be_bytes())
        .unwrap()
        .unwrap();
    assert_eq!(
        u64::from_be_bytes(count.try_into().unwrap()),
        2 * THREADS as u64 * ROUNDS
    );
}

#[test]
fn a_snapshot_does_not_see_a_later_commit_of_another_gateway() {
    let Some(url) = server() else { return };
    let ns = namespace("snapshot");
    let (one, two) = (Postgres::connect(&url).unwrap(), Postgres::connect(&url).unwrap());
    let (one, two) = (one.namespace(&ns).unwrap(), two.namespace(&ns).unwrap());
    let snapshot = one.read().unwrap();
    let w = two.write(Durability::Immediate).unwrap();
    w.insert(COUNTER, &7u64.to_be_bytes(), b"later").unwrap();
    w.commit().unwrap();
    assert_eq!(snapshot.get(COUNTER, &7u64.to_be_bytes()).unwrap(), None);
    let mut rows = 0;
    snapshot
        .scan(COUNTER, ALL, &mut |_, _| {
            rows += 1;
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
    assert_eq!(rows, 0);
    assert!(one.read().unwrap().get(COUNTER, &7u64.to_be_bytes()).unwrap().is_some());
}

#[test]
fn racing_gateways_apply_each_migration_once() {
    let Some(url) = server() else { return };
    let db = fresh_database(&url);
    let gateways: Vec<Arc<Postgres>> = std::thread::scope(|s| {
        let racers: Vec<_> = (0..3).map(|_| s.spawn(|| Postgres::connect(&db))).collect();
        racers.into_iter().map(|r| r.join().unwrap().unwrap()).collect()
    });
    assert_eq!(
        query_i64(
            &gateways[0],
            "SELECT count(*) FROM sealstore_migrations WHERE version = 1"
        ),
        1
    );
    assert_eq!(
        query_i64(&gateways[0], "SELECT count(*) FROM sealstore_migrations"),
        i64::from(migrations::LATEST)
    );
}

#[test]
fn a_database_migrated_by_a_newer_sealstore_is_refused() {
    let Some(url) = server() else { return };
    let db = fresh_database(&url);
    execute(
        &Postgres::connect(&db).unwrap(),
        "INSERT INTO sealstore_migrations (version, name) VALUES (99, 'from the future')",
    )
    .unwrap();
    let refused = Postgres::connect(&db).unwrap_err();
    let expected = format!("migrated by a newer sealstore: version 99 > {}", migrations::LATEST);
    assert!(refused.to_string().contains(&expected), "{refused}");
    assert!(!refused.is_unavailable());
}

#[test]
fn an_unreachable_server_is_unavailable_at_once_and_the_password_is_not_told() {
    // A port nobody listens on: refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let e = Postgres::connect(&format!("postgres://sealstore:s3cret-pw@127.0.0.1:{port}/db")).unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(!format!("{e} {e:?}").contains("s3cret-pw"), "{e}");

    // A port that accepts and never answers: the connect timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let e = Postgres::connect(&format!("postgres://sealstore:s3cret-pw@127.0.0.1:{port}/db")).unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(!format!("{e} {e:?}").contains("s3cret-pw"), "{e}");
}

#[test]
fn a_malformed_url_is_refused_without_telling_the_password() {
    for url in [
        "postgres://sealstore:s3cret-pw@127.0.0.1:notaport/db",
        "postgres://sealstore:s3cret-pw@127.0.0.1/db?sslmode=nonsense",
        "postgres://sealstore:s3cret-pw@127.0.0.1/db?pool_size=many",
    ] {
        let e = Postgres::connect(url).unwrap_err();
        assert!(!e.is_unavailable(), "{e}");
        assert!(!format!("{e} {e:?}").contains("s3cret-pw"), "{e}");
    }
}

#[test]
fn pool_size_comes_from_the_url() {
    let (url, size) = pool::take_pool_size("postgres://u@h/db?pool_size=3&application_name=x").unwrap();
    assert_eq!((url.as_str(), size), ("postgres://u@h/db?application_name=x", Some(3)));
    assert!(pool::take_pool_size("postgres://u@h/db?pool_size=0").is_err());
}

#[test]
fn terminated_connections_are_replaced() {
    let Some(url) = server() else { return };
    let name = unique("terminated");
    let pg = Postgres::connect(&format!("{url}?application_name={name}&pool_size=2")).unwrap();
    let engine = pg.namespace(&namespace("terminated")).unwrap();
    let w = engine.write(Durability::Immediate).unwrap();
    w.insert(COUNTER, &1u64.to_be_bytes(), b"kept").unwrap();
    w.commit().unwrap();
    // Both of the pool's connections idle, then ended by the server.
    let (a, b) = (engine.read().unwrap(), engine.read().unwrap());
    drop((a, b));
    std::thread::sleep(Duration::from_millis(200)); // the rollbacks of the drops
    let other = Postgres::connect(&url).unwrap();
    let terminated = query_i64(
        &other,
        &format!("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{name}'"),
    );
    assert_eq!(terminated, 2);
    // At once: the client may not have noticed yet; the engine must.
    let r = engine.read().unwrap();
    assert_eq!(
        r.get(COUNTER, &1u64.to_be_bytes()).unwrap().as_deref(),
        Some(&b"kept"[..])
    );
}

/// The engine is synchronous, yet called from async code of the server's runtime; it must
/// not panic there (as `block_on` would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn called_from_a_tokio_task_without_spawn_blocking() {
    let Some(url) = server() else { return };
    let pg = Postgres::connect(&url).unwrap();
    let engine = pg.namespace(&namespace("tokio")).unwrap();
    let w = engine.write(Durability::Deferred).unwrap();
    w.insert(COUNTER, &1u64.to_be_bytes(), b"x").unwrap();
    w.commit().unwrap();
    assert!(engine
        .read()
        .unwrap()
        .get(COUNTER, &1u64.to_be_bytes())
        .unwrap()
        .is_some());
    // An uncommitted writer dropped, and the last user of the pool, here too.
    drop(engine.write(Durability::Immediate).unwrap());
    drop(engine);
    drop(pg);
}

#[test]
fn lock_keys_are_stable() {
    // Every sealstore version must derive the same key, or old and new writers would not
    // exclude each other during a rolling upgrade.
    assert_eq!(lock_key("kms", None), lock_key("kms", None));
    assert_ne!(lock_key("kms", None), lock_key("objects", None));
    assert_eq!(
        lock_key("", None),
        i64::from_ne_bytes(0x09f0_0fc9_aec0_6dc1u64.to_ne_bytes())
    );
}

#[test]
fn a_writer_waiting_longer_than_the_operation_timeout_is_unavailable() {
    let Some(url) = server() else { return };
    let settings = Settings {
        operation_timeout: Duration::from_secs(1),
        ..Settings::default()
    };
    let ns = namespace("waiting");
    let (one, two) = (
        Postgres::connect_with(&url, settings).unwrap(),
        Postgres::connect_with(&url, settings).unwrap(),
    );
    let (one, two) = (one.namespace(&ns).unwrap(), two.namespace(&ns).unwrap());
    let holder = one.write(Durability::Immediate).unwrap();
    let started = Instant::now();
    let e = two.write(Durability::Immediate).map(|_| ()).unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    drop(holder);
    // The lock is free again once the dropped writer's rollback ran; the waiter's connection
    // (whose statement the server cancelled) is still good.
    let w = two.write(Durability::Immediate).unwrap();
    w.insert(COUNTER, &1u64.to_be_bytes(), b"x").unwrap();
    w.commit().unwrap();
}

#[test]
fn a_fleet_lock_is_held_by_one_gateway_until_dropped() {
    let Some(url) = server() else { return };
    let ns = namespace("fleet_lock");
    let (a, b) = (Postgres::connect(&url).unwrap(), Postgres::connect(&url).unwrap());
    let (a, b) = (a.namespace(&ns).unwrap(), b.namespace(&ns).unwrap());
    let held = a.lock("bucket\0key").unwrap().expect("a shared engine locks");
    // Another name is free at once.
    drop(b.lock("bucket\0other").unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let guard = b.lock("bucket\0key").unwrap();
        tx.send(Instant::now()).unwrap();
        drop(guard);
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(rx.try_recv().is_err(), "the other gateway waits for the lock");
    let released = Instant::now();
    drop(held);
    let taken = rx.recv_timeout(Duration::from_secs(5)).expect("taken once released");
    assert!(taken >= released);
    waiter.join().unwrap();
    // Writes of the namespace do not wait for its locks: a lock holder can commit.
    let again = a.lock("bucket\0key").unwrap();
    let w = a.write(Durability::Immediate).unwrap();
    w.insert(Table::str_to_bytes("names"), b"k", b"v").unwrap();
    w.commit().unwrap();
    drop(again);
}

#[test]
fn a_fleet_lock_dies_with_its_gateway() {
    let Some(url) = server() else { return };
    let ns = namespace("fleet_lock_crash");
    let b = Postgres::connect(&url).unwrap().namespace(&ns).unwrap();
    {
        let a = Postgres::connect(&url).unwrap();
        let engine = a.namespace(&ns).unwrap();
        let held = engine.lock("k").unwrap();
        // The process dies: its sessions end without an unlock.
        std::mem::forget(held);
        let key = lock_key(ns.name, Some("k"));
        execute(
            &a,
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE pid <> pg_backend_pid() AND query = 'SELECT pg_advisory_lock({key})'"
            ),
        )
        .unwrap();
    }
    let started = Instant::now();
    drop(b.lock("k").unwrap());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_lease_has_one_holder_until_it_expires() {
    let Some(url) = server() else { return };
    let ns = namespace("lease");
    let (a, b) = (Postgres::connect(&url).unwrap(), Postgres::connect(&url).unwrap());
    let (a, b) = (a.namespace(&ns).unwrap(), b.namespace(&ns).unwrap());
    let ttl = Duration::from_millis(800);
    assert!(a.lease("gc", "gateway-a", ttl).unwrap());
    assert!(!b.lease("gc", "gateway-b", ttl).unwrap(), "held by a");
    assert!(b.lease("scheduler", "gateway-b", ttl).unwrap(), "another lease is free");
    assert!(a.lease("gc", "gateway-a", ttl).unwrap(), "the holder renews");
    std::thread::sleep(ttl + Duration::from_millis(300));
    assert!(b.lease("gc", "gateway-b", ttl).unwrap(), "expired: taken over");
    assert!(!a.lease("gc", "gateway-a", ttl).unwrap());
}
