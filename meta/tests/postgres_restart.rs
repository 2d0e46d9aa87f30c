//! The PostgreSQL engine across a server restart: an operation during the outage is
//! `Unavailable` at once, and the first one after it works on new connections. It stops the
//! server (`SEALSTORE_TEST_PGCTL`, from scripts/with-postgres), so it is the only test of its
//! binary: `cargo test` runs test binaries one after another, never beside the unit tests.

use std::time::{Duration, Instant};

use sealstore_meta::{Durability, Location, Namespace, Postgres, Table};

const ROWS: Table = Table::str_to_bytes("rows");

fn pg_ctl(pg_ctl: &str, args: &[&str]) {
    let status = std::process::Command::new(pg_ctl)
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{pg_ctl} {args:?}: {status}");
}

#[test]
fn a_restarted_server_is_unavailable_meanwhile_and_used_again_after() {
    let (Ok(url), Ok(ctl)) = (
        std::env::var("SEALSTORE_TEST_POSTGRES_URL"),
        std::env::var("SEALSTORE_TEST_PGCTL"),
    ) else {
        assert_ne!(
            std::env::var("SEALSTORE_REQUIRE_POSTGRES").as_deref(),
            Ok("1"),
            "SEALSTORE_REQUIRE_POSTGRES=1 but no server to restart: run under scripts/with-postgres"
        );
        eprintln!("not run: SEALSTORE_TEST_POSTGRES_URL and SEALSTORE_TEST_PGCTL are not set (scripts/with-postgres sets them)");
        return;
    };
    let namespace = Namespace {
        name: "restart",
        file: "restart.redb",
        tables: &[ROWS],
        private: false,
    };
    let engine = Location::Postgres(Postgres::connect(&url).unwrap())
        .open(&namespace)
        .unwrap();
    let w = engine.write(Durability::Immediate).unwrap();
    w.insert(ROWS, b"before", b"1").unwrap();
    w.commit().unwrap();
    // Several idle connections in the pool, all to be broken by the restart.
    let snapshots: Vec<_> = (0..3).map(|_| engine.read().unwrap()).collect();
    drop(snapshots);

    pg_ctl(&ctl, &["stop", "-m", "fast"]);
    let started = Instant::now();
    let e = engine.read().map(|_| ()).unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    pg_ctl(&ctl, &["start"]);
    let r = engine.read().unwrap();
    assert_eq!(r.get(ROWS, b"before").unwrap().as_deref(), Some(&b"1"[..]));
    drop(r);
    let w = engine.write(Durability::Immediate).unwrap();
    w.insert(ROWS, b"after", b"2").unwrap();
    w.commit().unwrap();

    // And a restart with no pause: the pool's connections are all stale, none is told so.
    pg_ctl(&ctl, &["restart", "-m", "fast"]);
    let r = engine.read().unwrap();
    assert_eq!(r.get(ROWS, b"after").unwrap().as_deref(), Some(&b"2"[..]));
}
