//! What kms-core's test binaries share: the metadata location of a test data directory.
#![allow(dead_code)] // each test binary uses a different part

use std::path::Path;

use kms_core::KmsConfig;
use sealstore_meta::testing::Kv;

/// `KmsConfig::new(dir)`, its records in the test PostgreSQL server's database of `dir` when
/// `SEALSTORE_TEST_POSTGRES_URL` is set (`scripts/with-postgres`; see
/// `sealstore_meta::testing`), else in `dir`'s kms.redb.
pub fn kms_config(dir: impl AsRef<Path>) -> KmsConfig {
    let dir = dir.as_ref();
    KmsConfig {
        metadata: sealstore_meta::testing::location(dir),
        ..KmsConfig::new(dir)
    }
}

/// On PostgreSQL, the rows of `dir`'s database, for tests that edit them directly; checked to
/// be where the KMS really keeps its records (rows there, no kms.redb in `dir`).
pub fn postgres_rows(dir: &Path) -> Option<Kv> {
    let kv = Kv::of(dir)?;
    assert!(
        !dir.join(kms_core::internals::DB_FILE).exists(),
        "on PostgreSQL, yet {} has a kms.redb",
        dir.display()
    );
    assert!(kv.count("kms") > 0, "no KMS rows in the database of {}", dir.display());
    Some(kv)
}
