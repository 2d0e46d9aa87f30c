//! `sealstore bench`: what encryption costs on this machine (see `crate::bench`).
//!
//! Every kind measures sealstore beside a baseline in the same run (the raw primitive, plain
//! files, qemu-nbd, another S3 endpoint), prints a table, and with `--out DIR` writes
//! `results.json` and SVG charts; `bench compare` sets two `results.json` side by side.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::bench::objects::{ObjectLoad, S3Endpoint, Target};
use crate::bench::{self, Measured, Report, Workload};
use anyhow::Context;
use clap::{Args, Subcommand};
use kms_core::{Ocid, Principal, ProtectionMode};
use serde_json::{json, Map, Value};

use super::GlobalOpts;

#[derive(Debug, Args)]
pub(super) struct BenchArgs {
    #[command(subcommand)]
    what: BenchKind,
}

#[derive(Debug, Subcommand)]
enum BenchKind {
    /// AES-256-GCM as objects use it (segmented, 1 thread and all threads) and AES-256-XTS as
    /// volumes use it (4 KiB sectors), each beside the raw aws-lc primitive over the same bytes
    /// and `openssl speed` when installed; with the CPU's AES features.
    Crypto {
        #[command(flatten)]
        crypto: CryptoOpts,
        #[command(flatten)]
        common: CommonOpts,
    },
    /// PUT and GET of small and large objects through the encrypted object store
    /// (EncryptedStore over local files), beside the same on plain local files:
    /// throughput and per-object latency.
    Object {
        #[command(flatten)]
        objects: ObjectOpts,
        #[command(flatten)]
        common: CommonOpts,
    },
    /// A concurrent S3 load generator (SigV4, keep-alive): PUT and GET of small and large
    /// objects against an S3 endpoint, sealstore's own (started here on a fresh data
    /// directory, unless --endpoint is given) or any other, optionally beside a baseline
    /// endpoint (your current store): MiB/s, ops/s, latency percentiles.
    S3 {
        #[command(flatten)]
        s3: Box<S3Opts>,
        #[command(flatten)]
        objects: ObjectOpts,
        #[command(flatten)]
        common: CommonOpts,
    },
    /// Sequential 1 MiB and random 4 KiB I/O on a volume: in-process beside a plain file, and
    /// over NBD with fio (when installed) beside qemu-nbd serving a raw file and a LUKS image
    /// (when installed).
    Volume {
        #[command(flatten)]
        volume: VolumeOpts,
        #[command(flatten)]
        common: CommonOpts,
    },
    /// Data keys wrapped and unwrapped per second, for each protection mode: SOFTWARE; HSM
    /// with --pkcs11-* (or on a temporary SoftHSM2 token when SoftHSM2 is installed);
    /// EXTERNAL through sealstore's reference key manager over loopback HTTP. Beside the raw
    /// AES-256-GCM seal of 32 bytes.
    Kms {
        #[command(flatten)]
        common: CommonOpts,
    },
    /// Every kind in turn (crypto, object, s3, volume, kms), one report; about 3 minutes.
    All {
        #[command(flatten)]
        crypto: CryptoOpts,
        #[command(flatten)]
        objects: ObjectOpts,
        #[command(flatten)]
        s3: Box<S3Opts>,
        #[command(flatten)]
        volume: VolumeOpts,
        #[command(flatten)]
        common: CommonOpts,
    },
    /// Prints the differences between two results.json files (two machines, versions or
    /// settings): each line's rate before and after, the change, whether it is beyond the
    /// run-to-run noise (the spread of the line's rounds, at least --noise), and p99
    /// latencies. Refuses runs whose parameters (sizes, durations, clients) differ.
    Compare {
        /// The earlier (or reference) results.json.
        before: PathBuf,
        /// The later results.json.
        after: PathBuf,
        /// The least change that counts (a fraction: 0.05 = 5%); lines that ran several
        /// rounds count only changes beyond the spread of their rounds.
        #[arg(long, default_value_t = 0.05)]
        noise: f64,
        /// Compare runs whose parameters differ, with a warning listing them.
        #[arg(long)]
        allow_different_parameters: bool,
    },
}

/// Options every kind takes.
#[derive(Debug, Clone, Args)]
struct CommonOpts {
    /// Rounds of the lines that compare servers (S3 peers, NBD servers): each runs every
    /// job once per round, taking turns (for S3 in an order reversed every other round); an
    /// S3 line's rate is over all rounds, an NBD line is the median of its rounds.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Seconds per measured line.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// A smoke run (small sizes, 0.3 s per line): checks that everything runs, in seconds.
    #[arg(long)]
    quick: bool,
    /// Write results.json (machine, version, parameters, results) and SVG charts here.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Where the object, S3 and volume kinds put their data: the disk to measure (a fresh
    /// directory inside it, removed afterwards) [default: the system's temporary directory].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

impl CommonOpts {
    fn duration(&self) -> Duration {
        if self.quick {
            Duration::from_millis(300)
        } else {
            Duration::from_secs_f64(self.duration.max(0.1))
        }
    }

    /// A fresh working directory, removed when dropped.
    fn workdir(&self) -> anyhow::Result<tempfile::TempDir> {
        let parent = self.dir.clone().unwrap_or_else(std::env::temp_dir);
        tempfile::Builder::new()
            .prefix("sealstore-bench.")
            .tempdir_in(&parent)
            .with_context(|| format!("making a working directory in {}", parent.display()))
    }
}

#[derive(Debug, Clone, Args)]
struct CryptoOpts {
    /// Object size for the GCM lines (K, M, G suffixes).
    #[arg(long, default_value = "64M", value_parser = super::volume::parse_size)]
    size: u64,
}

#[derive(Debug, Clone, Args)]
struct ObjectOpts {
    /// Size of the small objects.
    #[arg(long, default_value = "4K", value_parser = super::volume::parse_size)]
    small_size: u64,
    /// Clients putting and getting small objects at once.
    #[arg(long, default_value_t = 32)]
    small_clients: usize,
    /// Size of the large objects.
    #[arg(long, default_value = "64M", value_parser = super::volume::parse_size)]
    large_size: u64,
    /// Clients putting and getting large objects at once.
    #[arg(long, default_value_t = 4)]
    large_clients: usize,
}

impl ObjectOpts {
    fn load(&self, common: &CommonOpts) -> anyhow::Result<ObjectLoad> {
        let size = |s: u64| usize::try_from(s).context("object size too large");
        Ok(ObjectLoad {
            small_size: size(self.small_size)?,
            small_clients: self.small_clients.max(1),
            large_size: if common.quick { 8 << 20 } else { size(self.large_size)? },
            large_clients: self.large_clients.max(1),
            duration: common.duration(),
            rounds: common.rounds.max(1),
        })
    }
}

#[derive(Debug, Clone, Args)]
struct S3Opts {
    /// The S3 endpoint to measure (http://host:port) [default: a sealstore started here].
    #[arg(long, value_name = "URL", requires_all = ["access_key", "secret_key", "bucket"])]
    endpoint: Option<String>,
    /// --endpoint's access key id.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    access_key: Option<String>,
    /// --endpoint's secret access key.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// An existing bucket at --endpoint (objects go under bench/).
    #[arg(long)]
    bucket: Option<String>,
    /// A second endpoint measured in the same run as the baseline (your current store).
    #[arg(long, value_name = "URL", requires_all = ["baseline_access_key", "baseline_secret_key", "baseline_bucket"])]
    baseline_endpoint: Option<String>,
    /// --baseline-endpoint's access key id.
    #[arg(long)]
    baseline_access_key: Option<String>,
    /// --baseline-endpoint's secret access key.
    #[arg(long)]
    baseline_secret_key: Option<String>,
    /// An existing bucket at --baseline-endpoint.
    #[arg(long)]
    baseline_bucket: Option<String>,
    /// What the results call --baseline-endpoint [default: its URL].
    #[arg(long)]
    baseline_name: Option<String>,
    /// A plain S3 store (SeaweedFS, MinIO...) measured twice more in the same run: directly,
    /// and through a second `sealstore serve` started here whose object backend is this
    /// store (`--object-backend s3://BUCKET/sealstore-gateway`), compared with each other.
    #[arg(long, value_name = "URL", requires_all = ["gateway_access_key", "gateway_secret_key", "gateway_bucket"])]
    gateway_endpoint: Option<String>,
    /// --gateway-endpoint's access key id.
    #[arg(long)]
    gateway_access_key: Option<String>,
    /// --gateway-endpoint's secret access key.
    #[arg(long)]
    gateway_secret_key: Option<String>,
    /// An existing bucket at --gateway-endpoint.
    #[arg(long)]
    gateway_bucket: Option<String>,
    /// What the results call --gateway-endpoint [default: its URL].
    #[arg(long)]
    gateway_name: Option<String>,
    /// Region named in the signatures.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Append a line "<Unix time in ns> <line measured>" to FILE as each line starts, and
    /// "<time> end" at the end: what cuts a profile taken meanwhile (`perf record -k
    /// CLOCK_REALTIME`) into workloads; `sealstore serve`'s pids are in the lines too.
    #[arg(long, value_name = "FILE")]
    marks: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
struct VolumeOpts {
    /// Volume size (and of the plain file and qemu images beside it).
    #[arg(long, default_value = "1G", value_parser = super::volume::parse_size)]
    volume_size: u64,
    /// Threads doing in-process volume I/O [default: all the machine has].
    #[arg(long)]
    threads: Option<usize>,
}

pub(super) fn run(global: &GlobalOpts, args: BenchArgs) -> anyhow::Result<ExitCode> {
    let (tool, common, kinds): (&str, CommonOpts, Vec<Kind>) = match args.what {
        BenchKind::Compare {
            before,
            after,
            noise,
            allow_different_parameters,
        } => {
            let options = bench::compare::Options {
                noise,
                allow_different_parameters,
            };
            return compare(&before, &after, options);
        }
        BenchKind::Crypto { crypto, common } => ("sealstore bench crypto", common, vec![Kind::Crypto(crypto)]),
        BenchKind::Object { objects, common } => ("sealstore bench object", common, vec![Kind::Object(objects)]),
        BenchKind::S3 { s3, objects, common } => ("sealstore bench s3", common, vec![Kind::S3(s3, objects)]),
        BenchKind::Volume { volume, common } => ("sealstore bench volume", common, vec![Kind::Volume(volume)]),
        BenchKind::Kms { common } => ("sealstore bench kms", common, vec![Kind::Kms]),
        BenchKind::All {
            crypto,
            objects,
            s3,
            volume,
            common,
        } => (
            "sealstore bench all",
            common,
            vec![
                Kind::Crypto(crypto),
                Kind::Object(objects.clone()),
                Kind::S3(s3, objects),
                Kind::Volume(volume),
                Kind::Kms,
            ],
        ),
    };
    let machine = bench::Machine::this();
    print_machine(&machine);
    let mut report = Report {
        tool: tool.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        machine,
        parameters: Map::new(),
        results: Vec::new(),
    };
    let started = std::time::Instant::now();
    for kind in kinds {
        let name = kind.name();
        let (mut results, parameters) = match kind {
            Kind::Crypto(opts) => crypto(&opts, &common)?,
            Kind::Object(opts) => object(global, &opts, &common)?,
            Kind::S3(s3, opts) => s3_kind(global, &s3, &opts, &common)?,
            Kind::Volume(opts) => volume(global, &opts, &common)?,
            Kind::Kms => kms(global, &common)?,
        };
        bench::add_ratios(&mut results);
        group_lines(&mut results);
        print_table(name, &results);
        report.parameters.insert(name.into(), parameters);
        report.results.extend(results);
    }
    println!("done in {:.0} s", started.elapsed().as_secs_f64());
    if let Some(dir) = &common.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("results.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
        for svg in bench::plot::write_svgs(&report, dir).context("drawing the charts")? {
            println!("wrote {}", svg.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One benchmark of a run.
enum Kind {
    Crypto(CryptoOpts),
    Object(ObjectOpts),
    S3(Box<S3Opts>, ObjectOpts),
    Volume(VolumeOpts),
    Kms,
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Crypto(_) => "crypto",
            Kind::Object(_) => "object",
            Kind::S3(..) => "s3",
            Kind::Volume(_) => "volume",
            Kind::Kms => "kms",
        }
    }
}

/// Orders lines by group (groups in the order first measured), keeping each group's order.
fn group_lines(results: &mut [Measured]) {
    let mut groups: Vec<String> = Vec::new();
    for r in results.iter() {
        if !groups.contains(&r.group) {
            groups.push(r.group.clone());
        }
    }
    results.sort_by_key(|r| groups.iter().position(|g| *g == r.group));
}

type KindResult = anyhow::Result<(Vec<Measured>, Value)>;

fn print_machine(machine: &bench::Machine) {
    // Two lines, each within 80 columns for any usual CPU name.
    let features = |present: bool| -> Vec<&str> {
        machine
            .cpu_features
            .iter()
            .filter(|f| f.present == present)
            .map(|f| f.name.as_str())
            .collect()
    };
    let missing = features(false);
    println!(
        "CPU: {}{} thread(s)\nfeatures: {}{}",
        machine.cpu.as_deref().map(|c| format!("{c}, ")).unwrap_or_default(),
        machine.threads,
        features(true).join(", "),
        if missing.is_empty() {
            String::new()
        } else {
            format!(" (not: {})", missing.join(", "))
        }
    );
    if !bench::hardware_aes() {
        eprintln!("warning: this CPU has no AES instructions: AES runs in software, many times slower");
    }
}

fn print_table(kind: &str, results: &[Measured]) {
    print!("{}", bench::table::results(kind, results));
}

/// Progress over the steps of a measurement (its lines, or their rounds): how many of `steps`
/// are done, the time gone and an ETA, and the line now measured. Call
/// [`LineProgress::line`] as each line starts.
struct LineProgress {
    bar: indicatif::ProgressBar,
    started: std::cell::Cell<bool>,
}

impl LineProgress {
    fn new(kind: &str, steps: u64) -> Self {
        let template = "{spinner} [{elapsed_precise}] {prefix}: {pos}/{len} steps, ETA {eta}: {msg}";
        let bar = indicatif::ProgressBar::new(steps)
            .with_style(indicatif::ProgressStyle::with_template(template).expect("a valid template"));
        bar.set_prefix(kind.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        LineProgress {
            bar,
            started: std::cell::Cell::new(false),
        }
    }

    /// The line `what` starts (the one before it, if any, is done).
    fn line(&self, what: &str) {
        if self.started.replace(true) {
            self.bar.inc(1);
        }
        self.bar.set_message(what.to_owned());
    }

    fn finish(self) {
        self.bar.finish_and_clear();
    }
}

/// Measures `workloads` one after another.
fn measure_all(kind: &str, workloads: &mut [Workload], duration: Duration) -> Vec<Measured> {
    let progress = LineProgress::new(kind, workloads.len() as u64);
    let results = workloads
        .iter_mut()
        .map(|w| {
            progress.line(&format!("{}: {}", w.group, w.name));
            bench::measure(kind, w, duration)
        })
        .collect();
    progress.finish();
    results
}

fn crypto(opts: &CryptoOpts, common: &CommonOpts) -> KindResult {
    let size = if common.quick {
        8 << 20
    } else {
        usize::try_from(opts.size).context("--size is too large")?
    };
    let duration = common.duration();
    let mut workloads: Vec<Workload> = bench::crypto::gcm(size);
    workloads.extend(bench::crypto::xts());
    let mut results = measure_all("crypto", &mut workloads, duration);

    // openssl's own figure for the same primitive, when it is installed, after the group's
    // last line (compared to the group's raw baseline like every line).
    for (cipher, measured) in [("aes-256-gcm", "GCM seal"), ("aes-256-xts", "XTS encrypt")] {
        let Some(bytes_per_sec) = openssl_speed(cipher, duration) else {
            continue;
        };
        let Some(at) = results.iter().rposition(|r| r.group.contains(measured)) else {
            continue;
        };
        let line = Measured {
            kind: "crypto".into(),
            group: results[at].group.clone(),
            name: format!("openssl speed -evp {cipher}, 16 KiB"),
            unit: bench::Unit::BytesPerSec,
            value: bytes_per_sec,
            ops: 0,
            seconds: 0.0,
            ratio: None,
            baseline: false,
            role: bench::Role::Peer,
            latency: None,
            versus: None,
            rounds: Vec::new(),
        };
        results.insert(at + 1, line);
    }
    Ok((
        results,
        json!({"objectSize": size, "secondsPerLine": duration.as_secs_f64(), "quick": common.quick}),
    ))
}

/// `openssl speed -evp CIPHER` on 16 KiB blocks, in bytes per second; `None` without openssl.
fn openssl_speed(cipher: &str, duration: Duration) -> Option<f64> {
    let seconds = duration.as_secs().max(1).to_string();
    let out = std::process::Command::new("openssl")
        .args(["speed", "-evp", cipher, "-seconds", &seconds, "-bytes", "16384"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.to_ascii_lowercase().starts_with(cipher))?;
    let thousands: f64 = line.split_whitespace().last()?.trim_end_matches('k').parse().ok()?;
    Some(thousands * 1000.0)
}

/// A fresh data directory in `work` (its own KMS with the default key, object index and S3
/// users) opened with the user's global options (so --kms-endpoint and --pkcs11-* apply),
/// with the audit writer running as under `serve`.
struct BenchDataDir {
    dir: super::DataDir,
    keys: super::DataKeys,
    _audit_writer: super::AuditWriter,
}

impl BenchDataDir {
    fn open(global: &GlobalOpts, work: &Path) -> anyhow::Result<Self> {
        let mut global = global.clone();
        global.data_dir = work.join("data");
        global.object_backend = None;
        let dir = global.open_data_dir(None)?;
        let keys = global.data_keys(&dir)?;
        let _audit_writer = super::AuditWriter::start(&dir.kms)?;
        Ok(BenchDataDir {
            dir,
            keys,
            _audit_writer,
        })
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")
}

fn object(global: &GlobalOpts, opts: &ObjectOpts, common: &CommonOpts) -> KindResult {
    let load = opts.load(common)?;
    let work = common.workdir()?;
    let data = BenchDataDir::open(global, work.path())?;
    let local = |name: &str| -> anyhow::Result<object_store::local::LocalFileSystem> {
        let path = work.path().join(name);
        std::fs::create_dir_all(&path)?;
        Ok(object_store::local::LocalFileSystem::new_with_prefix(path)?)
    };
    let targets = [
        Target {
            name: "plain local files (LocalFileSystem)".into(),
            baseline: true,
            role: bench::Role::Baseline,
            versus: None,
            store: Arc::new(local("plain")?),
        },
        Target {
            name: "sealstore EncryptedStore over local files".into(),
            baseline: false,
            role: bench::Role::Sealstore,
            versus: None,
            store: Arc::new(crate::object::store::EncryptedStore::new(
                local("sealed")?,
                data.keys.provider.clone(),
                data.keys.default_key.clone(),
                "bench",
            )),
        },
    ];
    let progress = LineProgress::new("object", crate::bench::objects::steps(targets.len(), &load));
    let results = runtime()?.block_on(crate::bench::objects::run("object", &targets, &load, |m| {
        progress.line(m)
    }))?;
    progress.finish();
    Ok((results, json!({"load": load, "dir": work.path()})))
}

fn s3_kind(global: &GlobalOpts, s3: &S3Opts, opts: &ObjectOpts, common: &CommonOpts) -> KindResult {
    let load = opts.load(common)?;
    let runtime = runtime()?;
    let work = common.workdir()?;
    // Without --endpoint: `sealstore serve` on a fresh data directory, as users run it.
    let (endpoint, _own) = match &s3.endpoint {
        Some(url) => (
            S3Endpoint {
                url: url.clone(),
                access_key: s3.access_key.clone().context("--endpoint needs --access-key")?,
                secret_key: s3.secret_key.clone().context("--endpoint needs --secret-key")?,
                bucket: s3.bucket.clone().context("--endpoint needs --bucket")?,
                region: s3.region.clone(),
            },
            None,
        ),
        None => {
            let server = ServeChild::start(global, work.path(), None, None)?;
            (server.endpoint(&s3.region), Some(server))
        }
    };
    let mut targets = Vec::new();
    let mut urls = Vec::new();
    let baseline_name = match &s3.baseline_endpoint {
        Some(url) => {
            let mut target = crate::bench::objects::s3_target(
                &S3Endpoint {
                    url: url.clone(),
                    access_key: s3.baseline_access_key.clone().unwrap_or_default(),
                    secret_key: s3.baseline_secret_key.clone().unwrap_or_default(),
                    bucket: s3.baseline_bucket.clone().unwrap_or_default(),
                    region: s3.region.clone(),
                },
                bench::Role::Baseline,
            )?;
            target.name = s3.baseline_name.clone().unwrap_or_else(|| url.clone());
            urls.push(url.clone());
            let name = target.name.clone();
            targets.push(target);
            Some(name)
        }
        None => None,
    };
    let mut measured = crate::bench::objects::s3_target(&endpoint, bench::Role::Sealstore)?;
    if s3.endpoint.is_none() {
        measured.name = "sealstore serve, S3 API".into();
        if s3.gateway_endpoint.is_some() {
            measured.name = "sealstore serve, local disk".into();
        }
    }
    measured.versus = baseline_name;
    urls.push(endpoint.url.clone());
    targets.push(measured);
    // The gateway pair: the plain store, then sealstore in front of it.
    let mut _gateway = None;
    if let Some(url) = &s3.gateway_endpoint {
        let plain = S3Endpoint {
            url: url.clone(),
            access_key: s3.gateway_access_key.clone().unwrap_or_default(),
            secret_key: s3.gateway_secret_key.clone().unwrap_or_default(),
            bucket: s3.gateway_bucket.clone().unwrap_or_default(),
            region: s3.region.clone(),
        };
        let mut direct = crate::bench::objects::s3_target(&plain, bench::Role::Baseline)?;
        direct.name = s3.gateway_name.clone().unwrap_or_else(|| url.clone());
        let server = ServeChild::start(global, work.path(), Some(&plain), Some("gateway"))?;
        let mut through = crate::bench::objects::s3_target(&server.endpoint(&s3.region), bench::Role::Sealstore)?;
        through.name = format!("sealstore serve in front of {}", direct.name);
        through.versus = Some(direct.name.clone());
        urls.push(url.clone());
        urls.push(server.s3_url.clone());
        targets.push(direct);
        targets.push(through);
        _gateway = Some(server);
    }
    let mut marks = match &s3.marks {
        Some(path) => {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            use std::io::Write;
            for (server, pid) in [("local", _own.as_ref()), ("gateway", _gateway.as_ref())] {
                if let Some(s) = pid {
                    writeln!(file, "{} pid {server} {}", unix_ns(), s.child.id())?;
                }
            }
            Some(file)
        }
        None => None,
    };
    let mut mark = |line: &str| {
        if let Some(file) = &mut marks {
            use std::io::Write;
            // Best effort: a failed write costs the profile's cut, not the benchmark.
            let _ = writeln!(file, "{} {line}", unix_ns());
        }
    };
    let progress = LineProgress::new("s3", crate::bench::objects::steps(targets.len(), &load));
    let results = runtime.block_on(crate::bench::objects::run("s3", &targets, &load, |m| {
        mark(m);
        progress.line(m)
    }))?;
    mark("end");
    progress.finish();
    let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    Ok((results, json!({"load": load, "endpoints": urls, "targets": names})))
}

/// Nanoseconds since the Unix epoch.
fn unix_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// `sealstore serve` (this executable) on a fresh data directory with a bucket "bench",
/// stopped when dropped.
struct ServeChild {
    child: std::process::Child,
    s3_url: String,
    access_key: String,
    secret_key: String,
}

impl ServeChild {
    /// Starts the server with its defaults (embedded KMS, local objects, or with `backend`
    /// its objects in folder `sealstore-gateway` of that S3 store's bucket): other global
    /// options and SEALSTORE_* variables are not passed on. `name` tells two servers'
    /// directories and logs apart.
    fn start(
        global: &GlobalOpts,
        work: &Path,
        backend: Option<&S3Endpoint>,
        name: Option<&str>,
    ) -> anyhow::Result<Self> {
        let suffix = name.map(|n| format!("-{n}")).unwrap_or_default();
        let data_dir = work.join(format!("serve-data{suffix}"));
        let log_path = work.join(format!("serve{suffix}.log"));
        {
            // The bucket, made before the server holds the data directory (buckets live in
            // the index, whatever the backend).
            let mut global = global.clone();
            global.data_dir = data_dir.clone();
            global.object_backend = None;
            global.kms_endpoint = None;
            global.kms_key = None;
            global.pkcs11_module = None;
            global.pkcs11_token_label = None;
            global.pkcs11_pin_file = None;
            let dir = global.open_data_dir(None)?;
            let keys = global.data_keys(&dir)?;
            global.objects_in(&dir, keys)?.create_bucket("bench")?;
        }
        let log = std::fs::File::create(&log_path)?;
        let mut command = std::process::Command::new(std::env::current_exe()?);
        for (name, _) in std::env::vars_os() {
            let name_text = name.to_string_lossy();
            if name_text.starts_with("SEALSTORE_") || (backend.is_some() && name_text.starts_with("AWS_")) {
                command.env_remove(name);
            }
        }
        if let Some(b) = backend {
            command
                .env(
                    "SEALSTORE_OBJECT_BACKEND",
                    format!("s3://{}/sealstore-gateway", b.bucket),
                )
                .env("AWS_ENDPOINT", &b.url)
                .env("AWS_ALLOW_HTTP", "true")
                .env("AWS_REGION", &b.region)
                .env("AWS_ACCESS_KEY_ID", &b.access_key)
                .env("AWS_SECRET_ACCESS_KEY", &b.secret_key);
        }
        let child = command
            .args(["serve", "--s3-listen", "127.0.0.1:0", "--kms-listen", "127.0.0.1:0"])
            .env("SEALSTORE_DATA_DIR", &data_dir)
            .env("SEALSTORE_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting sealstore serve")?;
        let mut server = ServeChild {
            child,
            s3_url: String::new(),
            access_key: String::new(),
            secret_key: String::new(),
        };
        let serve_file = data_dir.join("serve.json");
        let started = std::time::Instant::now();
        while !serve_file.exists() {
            if let Some(status) = server.child.try_wait()? {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                anyhow::bail!("sealstore serve stopped ({status}): {log}");
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "sealstore serve did not start in 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let serve: Value = serde_json::from_slice(&std::fs::read(&serve_file)?)?;
        server.s3_url = serve["s3"]
            .as_str()
            .context("serve.json names no S3 endpoint")?
            .to_owned();
        let admin_file = data_dir.join(crate::s3::credentials::ADMIN_KEYS_FILE);
        let admin: Value = serde_json::from_slice(&std::fs::read(&admin_file)?)
            .with_context(|| format!("reading {}", admin_file.display()))?;
        let field = |name: &str| {
            admin[name]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("{} has no {name}", admin_file.display()))
        };
        (server.access_key, server.secret_key) = (field("accessKeyId")?, field("secretAccessKey")?);
        Ok(server)
    }

    fn endpoint(&self, region: &str) -> S3Endpoint {
        S3Endpoint {
            url: self.s3_url.clone(),
            access_key: self.access_key.clone(),
            secret_key: self.secret_key.clone(),
            bucket: "bench".into(),
            region: region.into(),
        }
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn volume(global: &GlobalOpts, opts: &VolumeOpts, common: &CommonOpts) -> KindResult {
    let size = if common.quick { 64 << 20 } else { opts.volume_size };
    let threads = opts
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let duration = common.duration();
    let work = common.workdir()?;
    let data = BenchDataDir::open(global, work.path())?;
    let volume = crate::bench::volume::create_volume(work.path(), size, &data.keys.provider, &data.keys.default_key)?;
    let rounds = u32::try_from(common.rounds.max(1)).unwrap_or(u32::MAX);
    let progress = LineProgress::new("volume", crate::bench::volume::steps(rounds));
    let mut results = crate::bench::volume::in_process(work.path(), &volume, threads, duration, |m| progress.line(m))?;
    let nbd = crate::bench::volume::over_nbd(work.path(), volume, duration, rounds, |m| progress.line(m))?;
    progress.finish();
    if nbd.is_empty() {
        println!("(fio is not installed: no NBD lines; apt-get install fio)");
    }
    results.extend(nbd);
    Ok((
        results,
        json!({"volumeSize": size, "threads": threads, "secondsPerLine": duration.as_secs_f64(), "dir": work.path()}),
    ))
}

fn kms(global: &GlobalOpts, common: &CommonOpts) -> KindResult {
    let work = common.workdir()?;
    let mut global = global.clone();
    // HSM: the token given, or a temporary SoftHSM2 token when SoftHSM2 is installed.
    let hsm = match &global.pkcs11_module {
        Some(module) => Some(format!("{}", module.display())),
        None => softhsm_token(work.path(), &mut global)?,
    };
    let data = BenchDataDir::open(&global, work.path())?;
    let kms = data.dir.kms.clone();
    let mut keys: Vec<(ProtectionMode, Ocid)> = vec![(
        ProtectionMode::Software,
        kms.ensure_defaults(&Principal::local_admin())?.key.id,
    )];
    if hsm.is_some() {
        keys.push((
            ProtectionMode::Hsm,
            bench::kms::bench_key(&kms, ProtectionMode::Hsm).context("creating an HSM key")?,
        ));
    }
    // EXTERNAL: sealstore's reference key manager, on its own data directory, over loopback.
    let runtime = runtime()?;
    keys.push((
        ProtectionMode::External,
        external_key(&global, &data, work.path(), &runtime).context("setting up an EXTERNAL key")?,
    ));
    let mut workloads = bench::kms::workloads(&kms, &keys)?;
    // Sign and verify: SOFTWARE, and HSM when there is one (EXTERNAL keys are AES-256 only).
    let mut signing_modes = vec![ProtectionMode::Software];
    if hsm.is_some() {
        signing_modes.push(ProtectionMode::Hsm);
    }
    workloads.extend(bench::kms::signing_workloads(&kms, &signing_modes).context("creating the RSA and ECDSA keys")?);
    let mut results = measure_all("kms", &mut workloads, common.duration());
    // openssl's own RSA-2048 and P-256 figures (`openssl speed -seconds 1`), in the same run,
    // beside sealstore's.
    let openssl = bench::kms::openssl_speed(1);
    match openssl {
        Some(speed) => bench::kms::add_openssl_lines("kms", &mut results, speed),
        None => println!("(no openssl speed lines: openssl is missing or its output was not understood)"),
    }
    let modes: Vec<&str> = keys.iter().map(|(m, _)| bench::kms::mode_name(*m)).collect();
    let signing_modes: Vec<&str> = signing_modes.iter().map(|m| bench::kms::mode_name(*m)).collect();
    Ok((
        results,
        json!({
            "modes": modes,
            "signingModes": signing_modes,
            "hsmModule": hsm,
            "opensslSpeed": openssl.is_some(),
            "secondsPerLine": common.duration().as_secs_f64(),
        }),
    ))
}

/// A key in an EXTERNAL vault of `data`'s KMS whose material is a key of a reference key
/// manager (`sealstore ekm serve`'s server) started on `runtime`, over loopback HTTP, checking
/// `data`'s tokens: every wrap and unwrap is a signed HTTP round trip to it.
fn external_key(
    global: &GlobalOpts,
    data: &BenchDataDir,
    work: &Path,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<Ocid> {
    use crate::external_kms::server::KeyManager;
    use crate::external_kms::token::TokenVerifier;

    let mut manager_opts = global.clone();
    manager_opts.data_dir = work.join("key-manager");
    manager_opts.pkcs11_module = None;
    manager_opts.pkcs11_token_label = None;
    manager_opts.pkcs11_pin_file = None;
    let manager_dir = manager_opts.open_data_dir(None)?;
    manager_dir.kms.ensure_iam_defaults(&Principal::local_admin())?;
    let manager_key = bench::kms::bench_key(&manager_dir.kms, ProtectionMode::Software)?;
    let manager_vault = manager_dir.kms.get_key(&manager_key)?.vault_id;

    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let url = format!("http://{}", listener.local_addr()?);
    let jwks = data.dir.client_key.jwks().map_err(anyhow::Error::msg)?.to_string();
    let verifier = TokenVerifier::new(&jwks, url.clone()).map_err(anyhow::Error::msg)?;
    let manager = Arc::new(KeyManager::new(
        manager_dir.kms.clone(),
        verifier,
        &manager_opts.data_dir,
    ));
    runtime.spawn(manager.serve(listener, None));

    let me = Principal::local_admin();
    let vault = data.dir.kms.create_vault(
        &me,
        kms_core::CreateVault {
            display_name: "bench-external".into(),
            vault_type: Some(kms_core::VaultType::External),
            external_key_manager: Some(kms_core::model::ExternalKeyManager {
                endpoint: url,
                external_vault_id: manager_vault.to_string(),
            }),
            ..Default::default()
        },
    )?;
    let key = data.dir.kms.create_key(
        &me,
        kms_core::CreateKey {
            protection_mode: Some(ProtectionMode::External),
            external_key_id: Some(manager_key.to_string()),
            ..kms_core::CreateKey::new(vault.id, "bench")
        },
    )?;
    Ok(key.id)
}

/// Where Debian's SoftHSM2 puts its PKCS#11 module.
const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// When SoftHSM2 is installed: a fresh token in `work` (SOFTHSM2_CONF pointed at it, for this
/// process), set in `global` as the HSM to use; returns the module's path.
fn softhsm_token(work: &Path, global: &mut GlobalOpts) -> anyhow::Result<Option<String>> {
    if !Path::new(SOFTHSM_MODULE).exists() {
        return Ok(None);
    }
    let tokens = work.join("softhsm-tokens");
    std::fs::create_dir_all(&tokens)?;
    let conf = work.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )?;
    // Read by the module when it is loaded, which has not happened yet in this process.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let pin = "bench-1234";
    let out = std::process::Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "sealstore-bench", "--pin", pin])
        .args(["--so-pin", "bench-so-1234"])
        .output();
    match out {
        Ok(out) if out.status.success() => {}
        // SoftHSM2's library without its tool: no HSM lines, as without SoftHSM2.
        _ => return Ok(None),
    }
    let pin_file = work.join("softhsm.pin");
    std::fs::write(&pin_file, pin)?;
    global.pkcs11_module = Some(SOFTHSM_MODULE.into());
    global.pkcs11_token_label = Some("sealstore-bench".into());
    global.pkcs11_pin_file = Some(pin_file);
    Ok(Some(format!("{SOFTHSM_MODULE} (a temporary SoftHSM2 token)")))
}

fn compare(before: &Path, after: &Path, options: bench::compare::Options) -> anyhow::Result<ExitCode> {
    let read = |path: &Path| -> anyhow::Result<Report> {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a results.json of sealstore bench", path.display()))
    };
    let (a, b) = (read(before)?, read(after)?);
    print!(
        "{}",
        bench::compare::render(
            &a,
            &b,
            &before.display().to_string(),
            &after.display().to_string(),
            options
        )?
    );
    Ok(ExitCode::SUCCESS)
}
