//! The PostgreSQL schema, as numbered migrations applied in order when a sealstore connects:
//! each exactly once, recorded in `sealstore_migrations`, under a session advisory lock so that
//! servers starting together do not race.

use std::sync::Arc;

use crate::error::{Error, Result};

use super::pool::{classify, Conn, Pool, Pooled};

/// A step of the schema. Never edit one that has shipped: add the next.
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "sealstore_kv: every namespace's tables, one row per key",
        sql: "CREATE TABLE sealstore_kv (
            ns text NOT NULL,
            tbl text NOT NULL,
            k bytea NOT NULL,
            v bytea NOT NULL,
            PRIMARY KEY (ns, tbl, k)
        )",
    },
    Migration {
        version: 2,
        name: "sealstore_leases: which server runs each background task, until when",
        sql: "CREATE TABLE sealstore_leases (
            ns text NOT NULL,
            name text NOT NULL,
            holder text NOT NULL,
            expires timestamptz NOT NULL,
            PRIMARY KEY (ns, name)
        )",
    },
];

/// The newest schema this sealstore knows.
pub(crate) const LATEST: i32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// The key of the session advisory lock migrations run under: a fixed one ("sealstore" in
/// hex-speak), which other applications of the database are unlikely to take.
const LOCK_KEY: i64 = 0x5ea1_5703_e316_0001;

/// Brings the database's schema to [`LATEST`], or refuses a database migrated by a newer
/// sealstore.
pub(crate) fn migrate(pool: &Arc<Pool>) -> Result<()> {
    let pooled: Pooled = pool.block(pool.clone().acquire())?;
    let result = pool.run(&pooled.conn, |conn| async move { Ok(migrate_on(&conn).await) });
    let result = result.and_then(|inner| inner);
    if result.is_err() {
        // The session may still hold the lock or be inside a transaction: close it rather
        // than reuse it (closing releases both).
        pooled.conn.set_broken(true);
    }
    result
}

async fn migrate_on(conn: &Conn) -> Result<()> {
    conn.client
        .batch_execute(&format!(
            "SELECT pg_advisory_lock({LOCK_KEY});
             CREATE TABLE IF NOT EXISTS sealstore_migrations (
                 version int PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )"
        ))
        .await
        .map_err(classify)?;
    let row = conn
        .client
        .query_one("SELECT coalesce(max(version), 0) FROM sealstore_migrations", &[])
        .await
        .map_err(classify)?;
    let current: i32 = row.try_get(0).map_err(classify)?;
    if current > LATEST {
        return Err(Error::Server(format!(
            "the PostgreSQL database was migrated by a newer sealstore: version {current} > {LATEST} (the newest this one knows); upgrade sealstore"
        )));
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        // The migration and its record commit together: a crash leaves neither.
        conn.client.batch_execute("BEGIN").await.map_err(classify)?;
        conn.client.batch_execute(m.sql).await.map_err(classify)?;
        conn.client
            .execute(
                "INSERT INTO sealstore_migrations (version, name) VALUES ($1, $2)",
                &[&m.version, &m.name],
            )
            .await
            .map_err(classify)?;
        conn.client.batch_execute("COMMIT").await.map_err(classify)?;
        tracing::info!(
            "PostgreSQL metadata schema: applied migration {} ({})",
            m.version,
            m.name
        );
    }
    conn.client
        .batch_execute(&format!("SELECT pg_advisory_unlock({LOCK_KEY})"))
        .await
        .map_err(classify)?;
    Ok(())
}
