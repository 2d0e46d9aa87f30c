//! `sealstore volume …`: encrypted block volumes in `<data-dir>/volumes/`.
//!
//! These commands open the data directory directly (stop `serve` first).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::admin::Request;
use crate::block::nbd::{Export, NbdListener};
use crate::block::volume::{check, read_header, read_map, volume_files, VOLUMES_DIR, VOLUME_SUFFIX};
use crate::block::Volume;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use kms_core::{Ocid, ResourceType};
use serde_json::json;

use super::{output, GlobalOpts};

/// Bytes per read or write of import and export.
const CHUNK: usize = 4 << 20;

#[derive(Debug, Args)]
pub(super) struct VolumeArgs {
    #[command(subcommand)]
    command: VolumeCommand,
}

#[derive(Debug, Subcommand)]
enum VolumeCommand {
    /// Create a volume: a sparse file, AES-256-XTS in 4 KiB sectors, its data key wrapped by
    /// a master key.
    Create {
        /// Volume name (1–64 letters, digits, '.', '_', '-').
        name: String,
        /// Size: bytes, or with a K, M, G or T suffix (powers of 1024); a multiple of 4 KiB.
        #[arg(long, value_parser = parse_size)]
        size: u64,
        /// Master key [default: the data directory's default key].
        #[arg(long)]
        key: Option<String>,
    },
    /// List volumes.
    List,
    /// Show a volume: size, space used, data-key generations and their key versions.
    Info {
        /// Volume name.
        name: String,
    },
    /// Copy a raw image (a file, or - for standard input) into a volume, from its start.
    Import {
        /// Volume name.
        name: String,
        /// Raw image, or - for standard input.
        file: String,
    },
    /// Copy a volume out as a raw image (a file, or - for standard output).
    Export {
        /// Volume name.
        name: String,
        /// Destination, or - for standard output.
        file: String,
    },
    /// Verify a volume file: both header copies (a damaged or stale copy is reported),
    /// geometry, extent map. Needs no key.
    Check {
        /// Volume name.
        name: String,
        /// Rewrite a damaged or stale header copy from the good one (the volume must not be
        /// served meanwhile).
        #[arg(long)]
        repair: bool,
    },
    /// Rotate: add a data-key generation under the current version of the volume's master key.
    /// New writes use it at once; each extent moves to it on its next write (lazily), or all
    /// with `volume reencrypt`.
    Rotate {
        /// Volume name.
        name: String,
    },
    /// Re-encrypt every extent still on an older generation, then drop the generations no
    /// extent uses (after which their master key versions can be disabled). Resumable: an
    /// interrupted run leaves every finished extent done.
    Reencrypt {
        /// Volume name.
        name: String,
        /// Limit the rate, in MiB of extents per second (0: no limit).
        #[arg(long, default_value_t = 0)]
        max_mib_per_sec: u64,
    },
    /// Delete a volume and its data (the data key goes with it).
    Delete {
        /// Volume name.
        name: String,
    },
    /// Serve a volume over NBD until Ctrl-C or SIGTERM (e.g. `nbdinfo nbd://127.0.0.1/NAME`,
    /// `qemu-io -f raw nbd://127.0.0.1:10809/NAME`, `nbd+unix:///NAME?socket=PATH`).
    Serve {
        /// Volume name (also the export name).
        name: String,
        /// Where to listen: tcp:HOST:PORT (port 0 picks one) or unix:PATH.
        #[arg(long, default_value = "tcp:127.0.0.1:10809")]
        listen: String,
        /// Refuse writes.
        #[arg(long)]
        read_only: bool,
        #[command(flatten)]
        limits: NbdLimitArgs,
    },
}

/// What NBD clients may hold of the server.
#[derive(Debug, Clone, clap::Args)]
pub(super) struct NbdLimitArgs {
    /// MiB of requests in flight per NBD connection (read buffers, write payloads); beyond
    /// it the server stops reading that client's requests until its replies drain (at least 32).
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    nbd_max_in_flight_mib: usize,
    /// MiB of requests in flight across all NBD connections.
    #[arg(long, value_name = "MIB", default_value_t = 512)]
    nbd_max_in_flight_total_mib: usize,
    /// NBD connections served at once; more are closed at once.
    #[arg(long, value_name = "N", default_value_t = 128)]
    nbd_max_connections: usize,
    /// Close an NBD connection idle this many seconds (no request, none in flight); 0: never
    /// (VM disks sit idle for long). Negotiation must finish within 30 s regardless.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    nbd_idle_timeout_secs: u64,
}

impl NbdLimitArgs {
    pub(super) fn limits(&self) -> crate::block::nbd::Limits {
        crate::block::nbd::Limits {
            per_connection_bytes: self.nbd_max_in_flight_mib << 20,
            total_bytes: self.nbd_max_in_flight_total_mib << 20,
            max_connections: self.nbd_max_connections,
            idle_timeout: (self.nbd_idle_timeout_secs > 0)
                .then(|| std::time::Duration::from_secs(self.nbd_idle_timeout_secs)),
        }
    }
}

/// Parses `10G`, `512M`, `4096`, …
pub(super) fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], s[i..].trim_end_matches(['i', 'B', 'b'])),
        None => (s, ""),
    };
    let n: u64 = digits.parse().map_err(|_| format!("'{s}' is not a size"))?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("'{s}': the unit must be K, M, G or T")),
    };
    n.checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or_else(|| format!("'{s}' is too large"))
}

fn volumes_dir(global: &GlobalOpts) -> PathBuf {
    global.data_dir.join(VOLUMES_DIR)
}

fn volume_path(global: &GlobalOpts, name: &str) -> anyhow::Result<PathBuf> {
    crate::block::volume::check_name(name)?;
    let path = volumes_dir(global).join(format!("{name}{VOLUME_SUFFIX}"));
    if !path.exists() {
        bail!("volume '{name}' does not exist (sealstore volume list)");
    }
    Ok(path)
}

fn byte_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:30}}] {{bytes}}/{{total_bytes}} ({{bytes_per_sec}}, ETA {{eta}})"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Follows a rotation of the master key in the KMS with a new volume generation.
fn auto_rotate(global: &GlobalOpts, volume: &Volume) -> anyhow::Result<()> {
    let keys = global.data_keys(&global.open_data_dir(None)?)?.provider;
    if let Some(id) = volume.rotate_if_key_rotated(&keys)? {
        eprintln!(
            "{}: the master key was rotated; new writes use generation {id} (extents move lazily)",
            volume.header().name
        );
    }
    Ok(())
}

fn open(global: &GlobalOpts, name: &str) -> anyhow::Result<Volume> {
    let path = volume_path(global, name)?;
    let keys = global.data_keys(&global.open_data_dir(None)?)?.provider;
    Ok(Volume::open(&path, &keys)?)
}

pub(super) fn run(global: &GlobalOpts, args: VolumeArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        VolumeCommand::Create { name, size, key } => {
            let keys = global.data_keys(&global.open_data_dir(None)?)?;
            let key_id = match key {
                Some(k) => Ocid::parse(ResourceType::Key, &k)?,
                None => keys.default_key,
            };
            let keys = keys.provider;
            let vol = Volume::create(&volumes_dir(global), &name, size, &keys, &key_id)?;
            println!(
                "created volume {name}: {} ({} bytes), key {key_id}",
                indicatif::HumanBytes(vol.size()),
                vol.size()
            );
        }
        VolumeCommand::List => {
            let mut rows = Vec::new();
            for path in volume_files(&volumes_dir(global)) {
                match read_header(&path) {
                    Ok(h) => rows.push(json!({"name": h.name, "size": h.size, "generations": h.generations.len(), "created": h.created})),
                    Err(e) => rows.push(json!({"name": path.file_name().map(|n| n.to_string_lossy().into_owned()), "error": e.to_string()})),
                }
            }
            let rows = serde_json::Value::Array(rows);
            if global.json {
                output::json(&rows);
            } else {
                output::table(
                    &rows,
                    &[
                        ("NAME", "name"),
                        ("SIZE", "size"),
                        ("GENERATIONS", "generations"),
                        ("CREATED", "created"),
                    ],
                );
            }
        }
        VolumeCommand::Info { name } => {
            let path = volume_path(global, &name)?;
            let h = read_header(&path)?;
            let map = read_map(&path, &h)?;
            use std::os::unix::fs::MetadataExt;
            let allocated = std::fs::metadata(&path)?.blocks() * 512;
            let info = json!({
                "name": h.name,
                "uuid": h.uuid,
                "size": h.size,
                "allocated": allocated,
                "sectorSize": h.sector_size,
                "extentSize": h.extent_size,
                "extents": h.extents(),
                "generations": h.generations.iter().map(|g| json!({
                    "id": g.id, "keyId": g.key_id, "keyVersionId": g.key_version_id,
                    "extents": map.iter().filter(|e| **e == g.id).count(),
                })).collect::<Vec<_>>(),
                "created": h.created,
                "headerSequence": h.sequence,
            });
            if global.json {
                output::json(&info);
            } else {
                output::fields(&json!({
                    "name": info["name"], "uuid": info["uuid"], "size": info["size"],
                    "allocated": info["allocated"], "sectorSize": info["sectorSize"],
                    "extents": info["extents"], "created": info["created"],
                }));
                output::table(
                    &info["generations"],
                    &[
                        ("GENERATION", "id"),
                        ("KEY", "keyId"),
                        ("KEY VERSION", "keyVersionId"),
                        ("EXTENTS", "extents"),
                    ],
                );
            }
        }
        VolumeCommand::Import { name, file } => {
            let vol = open(global, &name)?;
            let mut input: Box<dyn Read> = if file == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(std::fs::File::open(&file).with_context(|| format!("opening {file}"))?)
            };
            let total = if file == "-" {
                vol.size()
            } else {
                std::fs::metadata(&file)?.len()
            };
            if total > vol.size() {
                bail!("{file} is {total} bytes, larger than the {}-byte volume", vol.size());
            }
            let bar = byte_bar(total, "importing");
            let mut buf = vec![0u8; CHUNK];
            let mut at = 0u64;
            loop {
                let n = read_full(&mut input, &mut buf)?;
                if n == 0 {
                    break;
                }
                if at + n as u64 > vol.size() {
                    bail!("the input is larger than the {}-byte volume", vol.size());
                }
                vol.write_at(at, &buf[..n])?;
                at += n as u64;
                bar.set_position(at);
            }
            vol.flush()?;
            bar.finish_and_clear();
            eprintln!("imported {} into {name}", indicatif::HumanBytes(at));
        }
        VolumeCommand::Export { name, file } => {
            let vol = open(global, &name)?;
            let mut out: Box<dyn Write> = if file == "-" {
                Box::new(std::io::stdout().lock())
            } else {
                Box::new(std::fs::File::create(&file).with_context(|| format!("creating {file}"))?)
            };
            let bar = byte_bar(vol.size(), "exporting");
            let mut buf = vec![0u8; CHUNK];
            let mut at = 0u64;
            // A reader that stops early (`| head`) ends the export quietly, as cat does.
            let quiet = |e: std::io::Error| -> anyhow::Result<()> {
                if e.kind() == std::io::ErrorKind::BrokenPipe && file == "-" {
                    Ok(())
                } else {
                    Err(e.into())
                }
            };
            let mut written = Ok(());
            while at < vol.size() {
                let n = (vol.size() - at).min(CHUNK as u64) as usize;
                vol.read_at(at, &mut buf[..n])?;
                written = out.write_all(&buf[..n]);
                if written.is_err() {
                    break;
                }
                at += n as u64;
                bar.set_position(at);
            }
            bar.finish_and_clear();
            match written.and_then(|()| out.flush()) {
                Ok(()) => {}
                Err(e) => quiet(e)?,
            }
        }
        VolumeCommand::Check { name, repair } => {
            let path = volume_path(global, &name)?;
            println!("{name}: {}", check(&path, repair)?);
        }
        VolumeCommand::Serve {
            name,
            listen,
            read_only,
            limits,
        } => {
            let volume = open(global, &name)?;
            auto_rotate(global, &volume)?;
            let volume = Arc::new(volume);
            let exports = Arc::new(vec![Export {
                name: name.clone(),
                volume: volume.clone(),
                read_only,
            }]);
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(serve_nbd(&listen, exports, limits.limits()))?;
            volume.flush()?;
            println!("stopped");
        }
        VolumeCommand::Rotate { name } => {
            let path = volume_path(global, &name)?;
            // A running `serve --nbd-listen` owns the volume: it rotates it.
            let req = Request::VolumeRotate { name: name.clone() };
            if let Some(answer) = super::via_server(global, &req, None)? {
                println!(
                    "{name}: generation {} (key version {}); extents move to it as they are written, or run `sealstore volume reencrypt {name}`",
                    answer["generation"],
                    answer["keyVersionId"].as_str().unwrap_or_default()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let keys = global.data_keys(&global.open_data_dir(None)?)?.provider;
            let vol = Volume::open(&path, &keys)?;
            let id = vol.rotate(&keys)?;
            let header = vol.header();
            let g = header.generations.last().expect("just added");
            println!(
                "{name}: generation {id} (key version {}); extents move to it as they are written, or run `sealstore volume reencrypt {name}`",
                g.key_version_id
            );
        }
        VolumeCommand::Reencrypt { name, max_mib_per_sec } => {
            let path = volume_path(global, &name)?;
            // A running `serve --nbd-listen` owns the volume: it sweeps, extent by extent,
            // while clients keep using it.
            let req = Request::VolumeReencrypt {
                name: name.clone(),
                max_mib_per_sec,
            };
            if let Some(answer) = super::via_server(global, &req, Some("re-encrypting through the running server"))? {
                println!(
                    "{name}: {} extent(s) re-encrypted to generation {}",
                    answer["reencrypted"], answer["generation"]
                );
                let pairs = |list: &serde_json::Value| -> Vec<(u64, String)> {
                    list.as_array()
                        .into_iter()
                        .flatten()
                        .map(|g| {
                            (
                                g["id"].as_u64().unwrap_or_default(),
                                g["keyVersionId"].as_str().unwrap_or_default().to_owned(),
                            )
                        })
                        .collect()
                };
                let remaining = pairs(&answer["remaining"]);
                for (id, version) in pairs(&answer["dropped"]) {
                    println!("{}", dropped_message(id, &version, &remaining));
                }
                return Ok(ExitCode::SUCCESS);
            }
            let keys = global.data_keys(&global.open_data_dir(None)?)?.provider;
            let vol = Volume::open(&path, &keys)?;
            let current = vol.current_generation();
            let todo = vol
                .extents_per_generation()
                .iter()
                .filter(|(g, _)| **g != current)
                .map(|(_, n)| n)
                .sum::<u64>();
            let extent = vol.header().extent_size;
            let bar = byte_bar(todo * extent, "re-encrypting");
            let (done, _) = vol.reencrypt_all(max_mib_per_sec, |_| {
                bar.inc(extent);
                true
            })?;
            bar.finish_and_clear();
            let dropped = vol.drop_unused_generations()?;
            println!("{name}: {done} extent(s) re-encrypted to generation {current}");
            let remaining: Vec<(u64, String)> = vol
                .header()
                .generations
                .iter()
                .map(|g| (u64::from(g.id), g.key_version_id.to_string()))
                .collect();
            for g in dropped {
                println!(
                    "{}",
                    dropped_message(u64::from(g.id), g.key_version_id.as_str(), &remaining)
                );
            }
        }
        VolumeCommand::Delete { name } => {
            let path = volume_path(global, &name)?;
            std::fs::remove_file(&path).with_context(|| format!("deleting {}", path.display()))?;
            println!("deleted volume {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What dropping generation `id` (its data key wrapped by `version`) means for the master
/// key version, given the generations that remain.
fn dropped_message(id: u64, version: &str, remaining: &[(u64, String)]) -> String {
    match remaining.iter().find(|(_, v)| v == version) {
        Some((still, _)) => format!(
            "dropped generation {id}: no extent uses it any more (key version {version} still wraps generation {still})"
        ),
        None => format!(
            "dropped generation {id}: no extent uses it any more, nor key version {version} (this volume no longer needs it)"
        ),
    }
}

/// Accepts NBD clients on `listen` until Ctrl-C or SIGTERM.
async fn serve_nbd(listen: &str, exports: Arc<Vec<Export>>, limits: crate::block::nbd::Limits) -> anyhow::Result<()> {
    let listener = NbdListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    println!("serving NBD on {}", listener.describe());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = listener.serve(exports, limits) => {}
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// Reads until `buf` is full or the input ends.
fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match input.read(&mut buf[done..])? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1t"), Ok(1 << 40));
        assert!(parse_size("10X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
