//! `sealstore migrate-metadata`: a single server's metadata, from the data directory's redb
//! files into a PostgreSQL database, so that a fleet of servers can share it.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use sealstore_meta::{copy_namespace, Location, Namespace, Postgres};

use super::GlobalOpts;

/// Arguments of `migrate-metadata`.
#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// Where the metadata is now: the data directory's redb files.
    #[arg(long, value_name = "ENGINE", default_value = "redb", value_parser = ["redb"])]
    from: String,
    /// The PostgreSQL database to move it to (postgres://USER[:PASSWORD]@HOST[:PORT]/DB); it
    /// must hold no sealstore metadata yet. Its schema is created first.
    #[arg(long, value_name = "URL")]
    to: String,
}

/// Every namespace a data directory holds, in the order they are moved.
fn namespaces() -> [&'static Namespace; 3] {
    [
        &kms_core::METADATA_NAMESPACE,
        &crate::object::index::NAMESPACE,
        &crate::s3::credentials::NAMESPACE,
    ]
}

/// Copies every namespace of the data directory to `--to`, each in one transaction, read back
/// and compared; the redb files are left as they were.
pub(crate) fn run(global: &GlobalOpts, args: MigrateArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        global.metadata_url.is_none(),
        "migrate-metadata reads the data directory's files and writes --to; leave --metadata-url (SEALSTORE_METADATA_URL) unset"
    );
    let dir = &global.data_dir;
    anyhow::ensure!(
        dir.join(kms_core::internals::DB_FILE).is_file(),
        "{} holds no metadata to move (no {})",
        dir.display(),
        kms_core::internals::DB_FILE
    );
    let from = Location::Dir(dir.clone());
    // The error never repeats the URL: it may hold a password.
    let to = Location::Postgres(Postgres::connect(&args.to).context("connecting to the --to database")?);
    for namespace in namespaces() {
        let source = from
            .open(namespace)
            .with_context(|| format!("opening {} in {}", namespace.file, dir.display()))?;
        let target = to.open(namespace)?;
        let bar = indicatif::ProgressBar::new_spinner().with_message(namespace.name);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg}: {bytes} copied ({bytes_per_sec}, {elapsed})")
                .expect("a valid template"),
        );
        let copied = copy_namespace(namespace, &*source, &*target, &mut |bytes| bar.inc(bytes))
            .with_context(|| format!("moving the {} metadata", namespace.name))?;
        bar.finish_and_clear();
        let rows: u64 = copied.iter().map(|t| t.rows).sum();
        let bytes: u64 = copied.iter().map(|t| t.bytes).sum();
        println!(
            "{:<9} {rows} rows, {bytes} bytes in {} tables: copied, read back, equal",
            namespace.name,
            copied.len()
        );
    }
    println!(
        "done. Start every server with --metadata-url and the same root key as this data directory's; \
         the redb files in {} are no longer read (move them away once the servers run).",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
