//! Volume workloads: sequential 1 MiB and random 4 KiB writes and reads.
//!
//! - In-process: [`Volume::write_at`]/[`Volume::read_at`] from every thread, beside the
//!   same I/O on a plain file of the same size (the baseline: the encryption's cost).
//! - Over NBD, with fio's `nbd` engine (when fio is installed): sealstore's NBD server
//!   beside nbdkit's file plugin serving a raw file (the baseline, when installed), and
//!   `qemu-nbd` serving a raw file (the baseline without nbdkit) and a LUKS image (qemu's
//!   own AES-XTS), when qemu-nbd and qemu-img are installed. `scripts/bench-nbd` runs these.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kms_core::{KeyProvider, Ocid};
use serde_json::Value;

use super::load::{self, LoadResult};
use super::{Latency, Measured, Role, Unit};
use crate::block::nbd::{Export, NbdListener};
use crate::block::{Volume, VolumeError};

/// Sequential I/O size.
const SEQ_BLOCK: usize = 1 << 20;
/// Random I/O size.
const RAND_BLOCK: usize = 4096;
/// Queue depths of the fio jobs (what a guest or a copy tool keeps in flight).
const SEQ_DEPTH: u32 = 8;
const RAND_DEPTH: u32 = 32;

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum VolumeBenchError {
    /// The volume failed.
    #[error("volume: {0}")]
    Volume(#[from] VolumeError),
    /// A file or socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        source: std::io::Error,
    },
    /// fio, qemu-nbd or qemu-img failed.
    #[error("{tool} failed: {message}")]
    Tool {
        /// The program.
        tool: String,
        /// Its complaint.
        message: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VolumeBenchError {
    let what = what.into();
    move |source| VolumeBenchError::Io { what, source }
}

/// The four workloads, as (group, sequential?, write?).
fn workloads(threads_or_depth: &dyn Fn(bool) -> String) -> [(String, bool, bool); 4] {
    [
        (
            format!("sequential write, 1 MiB, {}", threads_or_depth(true)),
            true,
            true,
        ),
        (
            format!("sequential read, 1 MiB, {}", threads_or_depth(true)),
            true,
            false,
        ),
        (format!("random write, 4 KiB, {}", threads_or_depth(false)), false, true),
        (format!("random read, 4 KiB, {}", threads_or_depth(false)), false, false),
    ]
}

/// What I/O goes to in-process.
trait Device: Sync {
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), VolumeBenchError>;
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), VolumeBenchError>;
}

impl Device for Volume {
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), VolumeBenchError> {
        Ok(self.write_at(offset, data)?)
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), VolumeBenchError> {
        Ok(self.read_at(offset, buf)?)
    }
}

impl Device for File {
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), VolumeBenchError> {
        self.write_all_at(data, offset).map_err(io("writing the plain file"))
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), VolumeBenchError> {
        self.read_exact_at(buf, offset).map_err(io("reading the plain file"))
    }
}

/// A new volume for benchmarking: `dir/bench.vol`, its data key wrapped by `key_id`.
pub(crate) fn create_volume(
    dir: &Path,
    size: u64,
    keys: &Arc<dyn KeyProvider>,
    key_id: &Ocid,
) -> Result<Volume, VolumeBenchError> {
    Ok(Volume::create(dir, "bench", size, keys, key_id)?)
}

/// How many times [`in_process`] then [`over_nbd`] call `progress` with `rounds` rounds on
/// this machine: a fill per device or server, then a step per job, device or server, and
/// round. The NBD servers are those [`over_nbd`] finds installed.
pub(crate) fn steps(rounds: u32) -> u64 {
    let jobs = workloads(&|_| String::new()).len() as u64;
    let in_process = 2 + 2 * jobs;
    if !installed("fio") {
        return in_process;
    }
    let qemu = installed("qemu-nbd") && installed("qemu-img");
    let servers = 1 + u64::from(installed("nbdkit")) + if qemu { 2 } else { 0 };
    in_process + servers + u64::from(rounds.max(1)) * jobs * servers
}

/// In-process lines: `volume` beside a plain file of its size in `dir`, both written once
/// in full first so that reads decrypt real data.
pub(crate) fn in_process(
    dir: &Path,
    volume: &Volume,
    threads: usize,
    duration: Duration,
    mut progress: impl FnMut(&str),
) -> Result<Vec<Measured>, VolumeBenchError> {
    let size = volume.size();
    let plain_path = dir.join("bench-plain.img");
    let plain = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&plain_path)
        .map_err(io(format!("creating {}", plain_path.display())))?;
    plain.set_len(size).map_err(io("sizing the plain file"))?;
    let devices: [(&str, bool, Role, &dyn Device); 2] = [
        ("plain file, no encryption", true, Role::Baseline, &plain),
        ("sealstore volume (AES-256-XTS)", false, Role::Sealstore, volume),
    ];
    for (name, _, _, device) in devices {
        progress(&format!("filling {name}"));
        let block = vec![0x5au8; SEQ_BLOCK];
        for offset in (0..size).step_by(SEQ_BLOCK) {
            let len = (size - offset).min(SEQ_BLOCK as u64) as usize;
            device.write(offset, &block[..len])?;
        }
    }
    let label = |_: bool| format!("{threads} thread(s)");
    let mut results = Vec::new();
    for (group, sequential, write) in workloads(&label) {
        for (name, baseline, role, device) in devices {
            progress(&format!("{group}: {name}"));
            super::settle();
            let run = device_load(device, size, threads, duration, sequential, write)?;
            let unit = if sequential { Unit::BytesPerSec } else { Unit::OpsPerSec };
            results.push(run.measured("volume", &group, name, unit, baseline, role));
        }
    }
    let _ = std::fs::remove_file(&plain_path);
    Ok(results)
}

fn device_load(
    device: &dyn Device,
    size: u64,
    threads: usize,
    duration: Duration,
    sequential: bool,
    write: bool,
) -> Result<LoadResult, VolumeBenchError> {
    let block = if sequential { SEQ_BLOCK } else { RAND_BLOCK };
    let blocks = (size / block as u64).max(1);
    // Each thread its own stretch for sequential I/O; random offsets from a per-thread
    // xorshift (no shared state between threads).
    let stretch = (blocks / threads as u64).max(1);
    let buffers: Vec<std::sync::Mutex<Vec<u8>>> = (0..threads)
        .map(|t| std::sync::Mutex::new(vec![t as u8 ^ 0xa5; block]))
        .collect();
    load::run_threads(threads, duration, |thread, seq| {
        let index = if sequential {
            (thread as u64 * stretch + seq % stretch) % blocks
        } else {
            let mut x = (seq + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((thread as u64 + 1) << 32);
            x ^= x >> 33;
            x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
            x ^= x >> 29;
            x % blocks
        };
        let mut buf = buffers[thread].lock().expect("one thread per buffer");
        if write {
            device.write(index * block as u64, &buf)?;
        } else {
            device.read(index * block as u64, &mut buf)?;
        }
        Ok(block as u64)
    })
}

/// The fio lines over NBD, or an empty list when fio is not installed. `volume` is served
/// by sealstore's NBD server on a Unix socket in `dir`; qemu-nbd serves a raw and a LUKS
/// image of the same size there too, when installed.
pub(crate) fn over_nbd(
    dir: &Path,
    volume: Volume,
    duration: Duration,
    rounds: u32,
    mut progress: impl FnMut(&str),
) -> Result<Vec<Measured>, VolumeBenchError> {
    if !installed("fio") {
        return Ok(Vec::new());
    }
    let size = volume.size();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(io("starting the NBD server's runtime"))?;
    let socket = dir.join("sealstore.sock");
    let listener = runtime
        .block_on(NbdListener::bind(&format!("unix:{}", socket.display())))
        .map_err(io("binding the NBD socket"))?;
    let exports = Arc::new(vec![Export {
        name: "bench".into(),
        volume: Arc::new(volume),
        read_only: false,
    }]);
    let server = runtime.spawn(async move { listener.serve(exports, Default::default()).await });

    let mut servers: Vec<(String, bool, Role, PathBuf, Option<QemuNbd>)> = vec![(
        "sealstore NBD (AES-256-XTS)".into(),
        false,
        Role::Sealstore,
        socket,
        None,
    )];
    // The baseline (100%) is nbdkit's file plugin, or qemu-nbd's raw file without nbdkit.
    let have_nbdkit = installed("nbdkit");
    if have_nbdkit {
        let nbdkit = QemuNbd::nbdkit_file(dir, size)?;
        servers.push((
            "nbdkit file, no encryption".into(),
            true,
            Role::Baseline,
            nbdkit.socket.clone(),
            Some(nbdkit),
        ));
    }
    if installed("qemu-nbd") && installed("qemu-img") {
        for luks in [false, true] {
            let qemu = QemuNbd::start(dir, size, luks)?;
            let name = if luks {
                "qemu-nbd LUKS (AES-256-XTS)"
            } else {
                "qemu-nbd raw file, no encryption"
            };
            let role = if luks { Role::Peer } else { Role::Baseline };
            servers.push((
                name.into(),
                !luks && !have_nbdkit,
                role,
                qemu.socket.clone(),
                Some(qemu),
            ));
        }
    }
    let label = |sequential: bool| format!("fio depth {}", if sequential { SEQ_DEPTH } else { RAND_DEPTH });
    // Every round runs every job on every server in turn (servers alternate, so drift in the
    // machine's load spreads over all of them); a line is the median of its rounds.
    // Every image is written once in full first, over NBD, so that no server measures
    // writes into a sparse file (block allocation) against others that overwrite, and reads
    // decrypt or copy real data everywhere; each is then flushed (`sync`) before every job.
    for (name, _, _, socket, _) in &servers {
        progress(&format!("filling {name}"));
        fio_fill(dir, socket, size)?;
    }
    let rounds = rounds.max(1);
    let jobs = workloads(&label);
    // runs[job][server]: one (value, latency) per round.
    type Runs = Vec<Vec<(f64, Option<Latency>)>>;
    let mut runs: Vec<Runs> = vec![vec![Vec::new(); servers.len()]; jobs.len()];
    for round in 1..=rounds {
        for (j, (group, sequential, write)) in jobs.iter().enumerate() {
            for (s, (name, _, _, socket, _)) in servers.iter().enumerate() {
                progress(&format!("round {round}/{rounds}, {group}: {name}"));
                super::settle();
                runs[j][s].push(fio(dir, socket, size, duration, *sequential, *write)?);
            }
        }
    }
    let mut results = Vec::new();
    for (j, (group, sequential, _)) in jobs.iter().enumerate() {
        for (s, (name, baseline, role, _, _)) in servers.iter().enumerate() {
            let mut line = std::mem::take(&mut runs[j][s]);
            // Each round's rate, in the order measured (what `bench compare` takes the noise from).
            let each: Vec<f64> = if rounds > 1 {
                line.iter().map(|r| r.0).collect()
            } else {
                Vec::new()
            };
            line.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (value, latency) = line.swap_remove(line.len() / 2);
            let unit = if *sequential {
                Unit::BytesPerSec
            } else {
                Unit::OpsPerSec
            };
            results.push(Measured {
                kind: "volume".into(),
                group: format!("NBD {group}"),
                name: name.clone(),
                unit,
                value,
                ops: 0,
                seconds: 0.0,
                ratio: None,
                baseline: *baseline,
                role: *role,
                latency,
                versus: None,
                rounds: each,
            });
        }
    }
    server.abort();
    drop(servers);
    Ok(results)
}

/// Whether `program` is on the PATH.
fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One fio job against the NBD server at `socket`: bytes/s (sequential) or IOPS (random),
/// and the completion latency fio measured.
fn fio(
    dir: &Path,
    socket: &Path,
    size: u64,
    duration: Duration,
    sequential: bool,
    write: bool,
) -> Result<(f64, Option<Latency>), VolumeBenchError> {
    let (rw, block, depth) = match (sequential, write) {
        (true, true) => ("write", SEQ_BLOCK, SEQ_DEPTH),
        (true, false) => ("read", SEQ_BLOCK, SEQ_DEPTH),
        (false, true) => ("randwrite", RAND_BLOCK, RAND_DEPTH),
        (false, false) => ("randread", RAND_BLOCK, RAND_DEPTH),
    };
    let out = dir.join("fio.json");
    // The nbd engine also prints to stdout: the JSON goes to a file.
    run_tool(
        Command::new("fio")
            .arg("--name=bench")
            .arg("--ioengine=nbd")
            .arg(format!("--uri=nbd+unix:///?socket={}", socket.display()))
            .arg(format!("--rw={rw}"))
            .arg(format!("--bs={block}"))
            .arg(format!("--iodepth={depth}"))
            .arg(format!("--size={size}"))
            .arg("--time_based")
            .arg(format!("--runtime={}ms", duration.as_millis().max(200)))
            .arg("--randrepeat=0")
            .arg("--output-format=json")
            .arg(format!("--output={}", out.display())),
    )?;
    let text = std::fs::read(&out).map_err(io("reading fio's results"))?;
    let json: Value = serde_json::from_slice(&text).map_err(|e| VolumeBenchError::Tool {
        tool: "fio".into(),
        message: format!("unreadable JSON: {e}"),
    })?;
    let job = &json["jobs"][0][if write { "write" } else { "read" }];
    let value = if sequential {
        job["bw_bytes"].as_f64().unwrap_or(0.0)
    } else {
        job["iops"].as_f64().unwrap_or(0.0)
    };
    Ok((value, fio_latency(&job["clat_ns"])))
}

/// Writes the whole export at `socket` once, sequentially in 1 MiB blocks.
fn fio_fill(dir: &Path, socket: &Path, size: u64) -> Result<(), VolumeBenchError> {
    run_tool(
        Command::new("fio")
            .arg("--name=fill")
            .arg("--ioengine=nbd")
            .arg(format!("--uri=nbd+unix:///?socket={}", socket.display()))
            .arg("--rw=write")
            .arg(format!("--bs={SEQ_BLOCK}"))
            .arg(format!("--iodepth={SEQ_DEPTH}"))
            .arg(format!("--size={size}"))
            .arg(format!("--output={}", dir.join("fio-fill.txt").display())),
    )
}

/// fio's completion-latency percentiles as a [`Latency`].
fn fio_latency(clat: &Value) -> Option<Latency> {
    let pct = clat["percentile"].as_object()?;
    let mut cdf: Vec<(f64, f64)> = pct
        .iter()
        .filter_map(|(p, ns)| Some((ns.as_f64()? / 1000.0, p.parse::<f64>().ok()? / 100.0)))
        .collect();
    cdf.sort_by(|a, b| a.1.total_cmp(&b.1));
    // fio's percentiles are the upper bounds of its histogram buckets, so they can exceed
    // the exact maximum it also reports: cap them there.
    let max_us = clat["max"].as_f64()? / 1000.0;
    for point in &mut cdf {
        point.0 = point.0.min(max_us);
    }
    let at = |q: f64| cdf.iter().find(|(_, f)| (*f - q).abs() < 1e-9).map(|(us, _)| *us);
    let (p50_us, p90_us, p99_us) = (at(0.50)?, at(0.90)?, at(0.99)?);
    cdf.push((max_us, 1.0));
    Some(Latency {
        p50_us,
        p90_us,
        p99_us,
        max_us,
        cdf,
    })
}

/// A qemu-nbd serving a raw or LUKS image, or an nbdkit serving a raw one, on a Unix socket;
/// stopped on drop.
struct QemuNbd {
    child: Child,
    socket: PathBuf,
}

impl QemuNbd {
    const SECRET: &'static str = "secret,id=sec0,data=benchmark-passphrase";
    // iter-time: the passphrase's key derivation takes 50 ms instead of 2 s (it is paid at
    // create and open only; the data path is the same).

    fn start(dir: &Path, size: u64, luks: bool) -> Result<Self, VolumeBenchError> {
        let kind = if luks { "luks" } else { "raw" };
        let image = dir.join(format!("{kind}.img"));
        let socket = dir.join(format!("{kind}.sock"));
        let mut create = Command::new("qemu-img");
        create.arg("create").arg("-q");
        if luks {
            create.args([
                "--object",
                Self::SECRET,
                "-f",
                "luks",
                "-o",
                "key-secret=sec0,iter-time=50",
            ]);
        } else {
            create.args(["-f", "raw"]);
        }
        run_tool(create.arg(&image).arg(size.to_string()))?;
        let mut serve = Command::new("qemu-nbd");
        // writeback: the page cache, as the other servers use it (flushes still sync).
        serve.args(["--shared=16", "--persistent", "--cache=writeback"]);
        if luks {
            serve
                .args(["--object", Self::SECRET, "--image-opts"])
                .arg(format!("driver=luks,key-secret=sec0,file.filename={}", image.display()));
        } else {
            serve.arg("--format=raw").arg(&image);
        }
        serve.arg(format!("--socket={}", socket.display()));
        Self::spawn(serve, socket)
    }

    /// nbdkit's file plugin serving a raw image (the unencrypted baseline): through the page
    /// cache (`cache=default`), a thread per request in flight up to its default 16.
    fn nbdkit_file(dir: &Path, size: u64) -> Result<Self, VolumeBenchError> {
        let image = dir.join("nbdkit.img");
        let socket = dir.join("nbdkit.sock");
        File::create(&image)
            .and_then(|f| f.set_len(size))
            .map_err(io(format!("creating {}", image.display())))?;
        let mut serve = Command::new("nbdkit");
        serve
            .args(["--foreground", "--exit-with-parent", "--unix"])
            .arg(&socket)
            .arg("file")
            .arg(format!("file={}", image.display()))
            .arg("cache=default");
        Self::spawn(serve, socket)
    }

    fn spawn(mut serve: Command, socket: PathBuf) -> Result<Self, VolumeBenchError> {
        let tool = serve.get_program().to_string_lossy().into_owned();
        let child = serve
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io(format!("starting {tool}")))?;
        let server = QemuNbd { child, socket };
        let started = Instant::now();
        while !server.socket.exists() {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(VolumeBenchError::Tool {
                    tool,
                    message: format!("no socket {} after 10 s", server.socket.display()),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }
}

impl Drop for QemuNbd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_tool(command: &mut Command) -> Result<(), VolumeBenchError> {
    let tool = command.get_program().to_string_lossy().into_owned();
    let out = command.output().map_err(io(format!("running {tool}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(VolumeBenchError::Tool {
            tool,
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fio_percentiles_are_capped_at_the_exact_maximum() {
        let clat = serde_json::json!({
            "max": 77_812_131.0,
            "percentile": {"50.000000": 36_962_304, "90.000000": 60_555_264, "99.000000": 78_118_912, "99.900000": 78_118_912}
        });
        let l = fio_latency(&clat).unwrap();
        assert_eq!((l.p50_us, l.p90_us), (36_962.304, 60_555.264));
        assert_eq!(l.p99_us, l.max_us);
        assert!(l.cdf.iter().all(|(us, _)| *us <= l.max_us));
        assert_eq!(*l.cdf.last().unwrap(), (l.max_us, 1.0));
    }
}
