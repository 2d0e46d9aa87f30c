//! `sealstore object …`, `sealstore reencrypt`, `sealstore index …`: encrypted objects from
//! the command line. These open the data directory directly (stop `sealstore serve` first).

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::process::ExitCode;

use crate::admin::Request;
use crate::object::sweep::{sweep, SweepEvent, SweepMode, SweepPlan, SweepReport};
use crate::object::{InventoryRow, ObjectService, PutParams};
use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use kms_core::{Ocid, ResourceType};
use object_store::GetRange;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::output;
use super::GlobalOpts;

#[derive(Debug, Args)]
pub(super) struct ObjectArgs {
    #[command(subcommand)]
    command: ObjectCommand,
}

#[derive(Debug, Subcommand)]
enum ObjectCommand {
    /// Create a bucket.
    Mb { bucket: String },
    /// Remove an empty bucket.
    Rb { bucket: String },
    /// List buckets.
    Buckets,
    /// Store a file as an object (encrypted under the default key's current version).
    Put {
        bucket: String,
        key: String,
        /// File to read ('-' for stdin).
        #[arg(long)]
        file: String,
        /// Content type to record.
        #[arg(long)]
        content_type: Option<String>,
        /// User metadata, NAME=VALUE (repeatable).
        #[arg(long = "meta", value_parser = parse_meta)]
        meta: Vec<(String, String)>,
    },
    /// Write an object (or a byte range of it) to a file or stdout.
    Get {
        bucket: String,
        key: String,
        /// Output file [default: stdout].
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Byte range FIRST-LAST (inclusive, as HTTP), FIRST- or -SUFFIX_LENGTH.
        #[arg(long)]
        range: Option<String>,
    },
    /// Show what the index records for an object.
    Head { bucket: String, key: String },
    /// List objects.
    Ls {
        bucket: String,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Roll keys up to the first occurrence of this after the prefix (e.g. '/').
        #[arg(long)]
        delimiter: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 1000)]
        max_keys: usize,
    },
    /// Delete an object.
    Rm { bucket: String, key: String },
    /// Upload every file under a directory (keys are paths relative to it).
    Import {
        /// Bucket to upload into (it must exist: `object mb`).
        bucket: String,
        /// Directory whose files, at any depth, become objects (key = path relative to it).
        dir: PathBuf,
    },
    /// Download every object of a bucket into a directory.
    Export {
        /// Bucket to download.
        bucket: String,
        /// Directory to write into (created as needed; an object `a/b` becomes `DIR/a/b`).
        dir: PathBuf,
    },
    /// Objects and bytes protected by each master key version.
    Inventory,
}

#[derive(Debug, Args)]
#[group(id = "mode", required = true, multiple = false)]
struct ModeArgs {
    /// Re-wrap each object's data key under the current key version (header rewrite only).
    #[arg(long)]
    rewrap: bool,
    /// Re-encrypt each object's data under a new data key (suspected compromise).
    #[arg(long)]
    full: bool,
}

#[derive(Debug, Args)]
pub(super) struct ReencryptArgs {
    /// Bucket to sweep.
    #[arg(long)]
    bucket: String,
    /// Only objects under this master key.
    #[arg(long)]
    key: Option<String>,
    #[command(flatten)]
    mode: ModeArgs,
}

#[derive(Debug, Subcommand)]
pub(super) enum IndexCommand {
    /// Rebuild the index of a bucket (or of every bucket found in the object backend) from the
    /// objects themselves: each is decrypted to recompute its size and ETag.
    Rebuild {
        /// Only this bucket.
        #[arg(long)]
        bucket: Option<String>,
    },
}

fn parse_meta(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("'{s}' is not NAME=VALUE"))
}

/// Parses an HTTP-style byte range (`a-b`, `a-`, `-n`).
fn parse_range(s: &str) -> anyhow::Result<GetRange> {
    let bad = || anyhow::anyhow!("'{s}' is not a byte range (FIRST-LAST, FIRST- or -SUFFIX_LENGTH)");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    Ok(match (a.is_empty(), b.is_empty()) {
        (true, false) => GetRange::Suffix(b.parse().map_err(|_| bad())?),
        (false, true) => GetRange::Offset(a.parse().map_err(|_| bad())?),
        (false, false) => {
            let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
            if b < a {
                return Err(bad());
            }
            GetRange::Bounded(a..b + 1)
        }
        (true, true) => return Err(bad()),
    })
}

/// A progress bar over `objects` (a sweep, whose bytes are known only as it goes), with the
/// bytes done in its message.
fn object_bar(objects: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(objects);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} objects ({{per_sec}}, ETA {{eta}}), {{msg}}"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// A progress bar over `total_bytes`, with the objects done in its message: bytes, rate and an
/// ETA that follow the data, not the object count.
fn bar(total_bytes: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total_bytes);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:30}}] {{bytes}}/{{total_bytes}} ({{bytes_per_sec}}, ETA {{eta}}), {{msg}}"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Reads anything readable as a stream of chunks of up to 1 MiB.
fn reader_stream<R: tokio::io::AsyncRead + Unpin>(
    reader: R,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::try_unfold(reader, |mut reader| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 20];
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), reader)))
    })
}

fn file_stream(path: &FsPath) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    let path = path.to_owned();
    Box::pin(
        futures::stream::once(tokio::fs::File::open(path))
            .map_ok(reader_stream)
            .try_flatten(),
    )
}

fn stdin_stream() -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    Box::pin(reader_stream(tokio::io::stdin()))
}

fn files_under(dir: &FsPath) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

async fn write_object(
    service: &ObjectService,
    bucket: &str,
    key: &str,
    range: Option<GetRange>,
    to: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> anyhow::Result<u64> {
    let (_, got) = service.get(bucket, key, range, None).await?;
    let mut stream = got.into_stream();
    let mut n = 0u64;
    while let Some(chunk) = stream
        .try_next()
        .await
        .with_context(|| format!("reading {bucket}/{key}"))?
    {
        to.write_all(&chunk).await?;
        n += chunk.len() as u64;
    }
    to.flush().await?;
    Ok(n)
}

pub(super) fn run(global: &GlobalOpts, args: ObjectArgs) -> anyhow::Result<ExitCode> {
    if let ObjectCommand::Inventory = args.command {
        if let Some(answer) = super::via_server(global, &Request::ObjectInventory, None)? {
            print_inventory(global, &serde_json::from_value::<Vec<InventoryRow>>(answer)?)?;
            return Ok(ExitCode::SUCCESS);
        }
    }
    let service = global.open_objects()?;
    runtime()?.block_on(async {
        match args.command {
            ObjectCommand::Mb { bucket } => {
                service.create_bucket(&bucket)?;
                println!("created bucket {bucket}");
            }
            ObjectCommand::Rb { bucket } => {
                service.delete_bucket(&bucket).await?;
                println!("removed bucket {bucket}");
            }
            ObjectCommand::Buckets => {
                let names = service.list_buckets()?;
                if global.json {
                    output::json(&json!(names));
                } else {
                    for n in names {
                        println!("{n}");
                    }
                }
            }
            ObjectCommand::Put { bucket, key, file, content_type, meta } => {
                let params = PutParams {
                    content_type,
                    user_metadata: meta.into_iter().collect::<BTreeMap<_, _>>(),
                    ..Default::default()
                };
                let entry = if file == "-" {
                    service.put(&bucket, &key, stdin_stream(), params).await?
                } else {
                    service.put(&bucket, &key, file_stream(FsPath::new(&file)), params).await?
                };
                let v = serde_json::to_value(&entry)?;
                if global.json { output::json(&v) } else { output::fields(&v) }
            }
            ObjectCommand::Get { bucket, key, output: out, range } => {
                let range = range.as_deref().map(parse_range).transpose()?;
                match out {
                    Some(path) => {
                        let tmp = path.with_extension("sealstore-partial");
                        let mut f = tokio::fs::File::create(&tmp).await?;
                        let written = write_object(&service, &bucket, &key, range, &mut f).await;
                        if let Err(e) = written {
                            let _ = tokio::fs::remove_file(&tmp).await;
                            return Err(e);
                        }
                        f.sync_all().await?;
                        tokio::fs::rename(&tmp, &path).await?;
                    }
                    None => {
                        write_object(&service, &bucket, &key, range, &mut tokio::io::stdout()).await?;
                    }
                }
            }
            ObjectCommand::Head { bucket, key } => {
                service.require_bucket(&bucket)?;
                let entry = service.index().get(&bucket, &key)?.with_context(|| format!("no object {bucket}/{key}"))?;
                let v = serde_json::to_value(&entry)?;
                if global.json { output::json(&v) } else { output::fields(&v) }
            }
            ObjectCommand::Ls { bucket, prefix, delimiter, max_keys } => {
                service.require_bucket(&bucket)?;
                let page = service.index().list(&bucket, &prefix, delimiter.as_deref(), None, max_keys)?;
                if global.json {
                    output::json(&json!({
                        "objects": page.objects.iter().map(|(k, e)| json!({"key": k, "size": e.size, "etag": e.etag, "lastModified": e.last_modified, "keyVersionId": e.encryption.key_version_id()})).collect::<Vec<_>>(),
                        "commonPrefixes": page.common_prefixes,
                        "nextStartAfter": page.next_start_after,
                    }));
                } else {
                    for p in &page.common_prefixes {
                        println!("{:>12}  {:<24}  {p}", "PRE", "");
                    }
                    for (k, e) in &page.objects {
                        println!("{:>12}  {:<24}  {k}", e.size, e.last_modified.format("%Y-%m-%dT%H:%M:%SZ"));
                    }
                    if page.next_start_after.is_some() {
                        println!("(more: raise --max-keys)");
                    }
                }
            }
            ObjectCommand::Rm { bucket, key } => {
                service.delete(&bucket, &key).await?;
                println!("deleted {bucket}/{key}");
            }
            ObjectCommand::Import { bucket, dir } => {
                let files = files_under(&dir)?;
                let total: u64 = files
                    .iter()
                    .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
                    .sum();
                let bar = bar(total, "importing");
                let count = files.len();
                for (done, file) in files.into_iter().enumerate() {
                    let key = file.strip_prefix(&dir)?.to_string_lossy().replace(std::path::MAIN_SEPARATOR, "/");
                    let entry = service.put(&bucket, &key, file_stream(&file), PutParams::default()).await?;
                    bar.inc(entry.size);
                    bar.set_message(format!("{}/{count} objects", done + 1));
                }
                bar.finish();
            }
            ObjectCommand::Export { bucket, dir } => {
                service.require_bucket(&bucket)?;
                let mut keys = Vec::new();
                let mut total = 0u64;
                let mut after: Option<String> = None;
                loop {
                    let page = service.index().list(&bucket, "", None, after.as_deref(), 1000)?;
                    total += page.objects.iter().map(|(_, e)| e.size).sum::<u64>();
                    keys.extend(page.objects.into_iter().map(|(k, _)| k));
                    match page.next_start_after {
                        Some(n) => after = Some(n),
                        None => break,
                    }
                }
                let bar = bar(total, "exporting");
                let count = keys.len();
                for (done, key) in keys.into_iter().enumerate() {
                    if key.split('/').any(|part| part == ".." || part.is_empty()) {
                        bail!("refusing to export key '{key}': it does not map to a path inside {}", dir.display());
                    }
                    let path = dir.join(&key);
                    if let Some(parent) = path.parent() {
                        tokio::fs::create_dir_all(parent).await?;
                    }
                    let mut f = tokio::fs::File::create(&path).await?;
                    bar.inc(write_object(&service, &bucket, &key, None, &mut f).await?);
                    bar.set_message(format!("{}/{count} objects", done + 1));
                }
                bar.finish();
            }
            ObjectCommand::Inventory => print_inventory(global, &service.inventory()?)?,
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn print_inventory(global: &GlobalOpts, rows: &[InventoryRow]) -> anyhow::Result<()> {
    let mut value = serde_json::to_value(rows)?;
    if global.json {
        output::json(&value);
    } else {
        // People read sizes, not byte counts (`--json` keeps the exact number).
        for row in value.as_array_mut().into_iter().flatten() {
            let bytes = row["bytes"].as_u64().unwrap_or(0);
            row["size"] = indicatif::HumanBytes(bytes).to_string().into();
        }
        output::table(
            &value,
            &[
                ("KEY", "keyId"),
                ("VERSION", "keyVersionId"),
                ("CURRENT", "current"),
                ("OBJECTS", "objects"),
                ("SIZE", "size"),
            ],
        );
        let old: u64 = rows.iter().filter(|r| !r.current).map(|r| r.objects).sum();
        println!("{old} object(s) on old key versions");
    }
    Ok(())
}

/// A sweep's report and the inventory after it: with `--json`, one document
/// `{"report": …, "inventory": […]}` (a line of text before it would not parse).
fn print_sweep(global: &GlobalOpts, report: &SweepReport, rows: &[InventoryRow]) -> anyhow::Result<()> {
    if global.json {
        output::json(&serde_json::json!({ "report": report, "inventory": rows }));
        return Ok(());
    }
    print_sweep_report(report);
    print_inventory(global, rows)
}

fn print_sweep_report(report: &SweepReport) {
    println!(
        "{} object(s) visited, {} rewritten ({}){}",
        report.visited,
        report.rewritten,
        indicatif::HumanBytes(report.bytes),
        if report.resumed { ", resumed" } else { "" }
    );
    if report.customer_key_objects > 0 {
        println!(
            "{} object(s) use customer-provided keys (SSE-C) and were left as they are: only their owners \
             can re-encrypt them, by copying each onto itself with its key",
            report.customer_key_objects
        );
    }
}

pub(super) fn reencrypt(global: &GlobalOpts, args: ReencryptArgs) -> anyhow::Result<ExitCode> {
    let key_id = args
        .key
        .as_deref()
        .map(|k| Ocid::parse(ResourceType::Key, k))
        .transpose()?;
    // A running server sweeps the bucket itself, locking each object against S3 writers.
    let req = Request::Reencrypt {
        bucket: args.bucket.clone(),
        key_id: key_id.clone(),
        full: args.mode.full,
    };
    if let Some(answer) = super::via_server(global, &req, Some("sweeping through the running server"))? {
        let report: SweepReport = serde_json::from_value(answer["report"].clone())?;
        let rows: Vec<InventoryRow> = serde_json::from_value(answer["inventory"].clone())?;
        print_sweep(global, &report, &rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    let service = global.open_objects()?;
    let mode = if args.mode.full {
        SweepMode::Full
    } else {
        SweepMode::Rewrap
    };
    let plan = SweepPlan {
        bucket: args.bucket.clone(),
        key_id,
        mode,
    };
    let report = runtime()?.block_on(async {
        let mut bar: Option<ProgressBar> = None;
        let mut bytes = 0u64;
        let report = sweep(&service, &plan, |event| match event {
            SweepEvent::Start { objects, resumed_after } => {
                if let Some(after) = resumed_after {
                    eprintln!("resuming an interrupted sweep after '{after}'");
                }
                bar = Some(object_bar(
                    objects,
                    if mode == SweepMode::Full {
                        "re-encrypting"
                    } else {
                        "re-wrapping"
                    },
                ));
            }
            SweepEvent::Object { bytes: b, changed, .. } => {
                if changed {
                    bytes += b;
                }
                if let Some(bar) = &bar {
                    bar.set_message(indicatif::HumanBytes(bytes).to_string());
                    bar.inc(1);
                }
            }
        })
        .await;
        if let Some(bar) = bar {
            bar.finish();
        }
        report
    })?;
    print_sweep(global, &report, &service.inventory()?)?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn index(global: &GlobalOpts, cmd: IndexCommand) -> anyhow::Result<ExitCode> {
    let service = global.open_objects()?;
    let IndexCommand::Rebuild { bucket } = cmd;
    runtime()?.block_on(async {
        let buckets = match bucket {
            Some(b) => vec![b],
            None => service.discover_buckets().await?,
        };
        for b in buckets {
            let bar = ProgressBar::new_spinner();
            let n = service
                .rebuild_index(&b, |key, _| {
                    bar.set_message(format!("{b}: {key}"));
                    bar.tick();
                })
                .await?;
            bar.finish_and_clear();
            println!("{b}: {n} object(s) indexed");
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
