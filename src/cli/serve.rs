//! `sealstore serve`: the long-lived process.
//!
//! Opens the data directory (creating it, the root key, the tenancy and the default vault and
//! key on first start), runs the scheduler, serves the admin socket, and writes what it bound
//! to `<data-dir>/serve.json` once ready. Ctrl-C or SIGTERM stop it cleanly.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::admin::{self, SOCKET_FILE};
use anyhow::Context;
use clap::Args;
use kms_core::{Kms, Principal};
use serde_json::json;
use tracing::{error, info, warn};

use super::GlobalOpts;

/// File in the data directory describing a running server.
const SERVE_FILE: &str = "serve.json";

#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    /// The region this data directory serves (it is in every id made there). Fixed when the
    /// data directory is created — by this command or any other (`local-1` unless given
    /// here); a different region later is refused. Default: the data directory's region.
    #[arg(long, env = "SEALSTORE_REGION")]
    region: Option<String>,
    /// Address of the S3 API (port 0 picks a free port; see serve.json).
    #[arg(long, env = "SEALSTORE_S3_LISTEN", default_value = "127.0.0.1:9000")]
    s3_listen: std::net::SocketAddr,
    /// Address of the OCI-compatible KMS API (port 0 picks a free port; see serve.json).
    #[arg(long, env = "SEALSTORE_KMS_LISTEN", default_value = "127.0.0.1:9100")]
    kms_listen: std::net::SocketAddr,
    /// KMS API requests answered at once; more get 429 TooManyRequests (clients back off).
    #[arg(long, default_value_t = crate::kms_api::DEFAULT_MAX_IN_FLIGHT as u64, value_parser = clap::value_parser!(u64).range(1..))]
    kms_max_in_flight: u64,
    /// Serve the KMS API over TLS with this certificate chain (PEM, leaf first); needs
    /// --kms-tls-key. Use it whenever clients are not on this machine.
    #[arg(long, env = "SEALSTORE_KMS_TLS_CERT", requires = "kms_tls_key")]
    kms_tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --kms-tls-cert.
    #[arg(long, env = "SEALSTORE_KMS_TLS_KEY", requires = "kms_tls_cert")]
    kms_tls_key: Option<std::path::PathBuf>,
    /// Accept SSE-C (customer-provided keys) from clients that are not on loopback, although
    /// the S3 API speaks plain HTTP: only behind a proxy that terminates TLS.
    #[arg(long)]
    allow_insecure_sse_c: bool,
    /// Also accept virtual-hosted-style requests: `BUCKET.DOMAIN` names the bucket (point
    /// `*.DOMAIN` at this server). Path-style requests keep working.
    #[arg(long, env = "SEALSTORE_S3_DOMAIN", value_parser = parse_domain)]
    domain: Option<crate::s3::host::BucketSubdomains>,
    /// Serve the web console on this address instead of the KMS API's (same TLS settings);
    /// port 0 picks one (see serve.json).
    #[arg(long, env = "SEALSTORE_CONSOLE_LISTEN")]
    console_listen: Option<std::net::SocketAddr>,
    /// Also serve every volume of the data directory over NBD, each as an export named after
    /// it: tcp:HOST:PORT (port 0 picks one; see serve.json) or unix:PATH.
    #[arg(long, env = "SEALSTORE_NBD_LISTEN")]
    nbd_listen: Option<String>,
    #[command(flatten)]
    nbd_limits: super::volume::NbdLimitArgs,
    /// Replication: a CA certificate (PEM) to trust for peer regions served over https,
    /// besides the system's (or a peer's own self-signed certificate).
    #[arg(long, env = "SEALSTORE_REPLICATION_CA_CERT", value_name = "FILE")]
    replication_ca_cert: Option<std::path::PathBuf>,
    /// Seconds between scheduler passes (auto-rotation, purge of deleted vaults and keys,
    /// new versions of EXTERNAL keys).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    scheduler_interval_secs: u64,
    /// Seconds between garbage-collection passes over the object backend (the first runs at
    /// start): files no object or upload refers to, temporary files of interrupted writes.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    gc_interval_secs: u64,
    /// Garbage collection leaves what changed in the last this many seconds alone (a write
    /// in flight). At start, a local data directory is collected without waiting: this
    /// process is its only writer.
    #[arg(long, default_value_t = 3600)]
    gc_grace_secs: u64,
}

fn parse_domain(s: &str) -> Result<crate::s3::host::BucketSubdomains, String> {
    crate::s3::host::BucketSubdomains::new(s)
}

/// s3s logs every S3 error answer at ERROR (`s3s::ops`: a 404 too; `s3s::service`: every
/// 5xx, the 501 of an unsupported operation too). sealstore logs each request itself, with
/// its id (`s3::service`): client errors and 501s at debug, server failures at ERROR.
const S3S_QUIET: [&str; 2] = ["s3s::ops=off", "s3s::service=off"];

fn init_logging() {
    let filter = match std::env::var("SEALSTORE_LOG") {
        // A filter that names s3s is taken as it is (to debug s3s itself).
        Ok(spec) if spec.contains("s3s") => tracing_subscriber::EnvFilter::new(spec),
        Ok(spec) => tracing_subscriber::EnvFilter::new(format!("{spec},{}", S3S_QUIET.join(","))),
        Err(_) => tracing_subscriber::EnvFilter::new(format!("info,{}", S3S_QUIET.join(","))),
    };
    // Colour only for a terminal: a log redirected to a file carries no escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

pub(super) fn run(global: &GlobalOpts, args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    runtime.block_on(serve(global, args))
}

async fn serve(global: &GlobalOpts, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let dir = global.open_data_dir(args.region.as_deref())?;
    crate::fleet::init(&global.data_dir);
    let kms = dir.kms.clone();
    // Defaults first: the object service uses the default key, and creating it is reported.
    let defaults = kms.ensure_defaults(&Principal::local_admin())?;
    let keys = global.data_keys(&dir)?;
    let objects = Arc::new(global.objects_in(&dir, keys.clone())?);
    if global.metadata_url.is_some() && objects.local_root().is_some() {
        tracing::warn!(
            "the metadata is shared (--metadata-url) but objects are stored in this machine's data directory: \
             other servers sharing the metadata cannot read them; give every server the same --object-backend s3://…"
        );
    }
    let gc_task = tokio::spawn(crate::object::gc::run_periodically(
        objects.clone(),
        std::time::Duration::from_secs(args.gc_interval_secs),
        std::time::Duration::from_secs(args.gc_grace_secs),
    ));
    let data_dir = global.data_dir.display();
    println!(
        "sealstore {} serving data directory {data_dir}",
        env!("CARGO_PKG_VERSION")
    );
    println!("tenancy        {}", kms.tenancy_id());
    let verb = if defaults.created { "created" } else { "using" };
    println!("default vault  {} ({verb})", defaults.vault.id);
    println!("default key    {} ({verb})", defaults.key.id);
    if let Some(endpoint) = &global.kms_endpoint {
        println!(
            "data keys      from {endpoint}, default master key {}",
            keys.default_key
        );
    }

    // Volumes first: the admin socket serves their re-encryption too.
    let volumes = match &args.nbd_listen {
        Some(_) => Arc::new(open_volumes(global, &keys.provider)?),
        None => Arc::new(Vec::new()),
    };
    let (nbd_task, nbd_bound) = match &args.nbd_listen {
        Some(spec) => {
            let listener = crate::block::nbd::NbdListener::bind(spec)
                .await
                .with_context(|| format!("binding NBD to {spec}"))?;
            let bound = listener.describe();
            println!("NBD           {bound} ({} volume(s))", volumes.len());
            let (exports, limits) = (volumes.clone(), args.nbd_limits.limits());
            tokio::spawn(follow_volume_keys(volumes.clone(), keys.provider.clone()));
            let task = tokio::spawn(async move { listener.serve(exports, limits).await });
            (Some(task), Some(bound))
        }
        None => (None, None),
    };

    let scheduler_task = tokio::spawn(scheduler(
        kms.clone(),
        Duration::from_secs(args.scheduler_interval_secs),
    ));
    // Replicated vaults: their changes are shipped to replica regions from this thread.
    let shipper_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let shipper = {
        let (kms, stop, ca) = (kms.clone(), shipper_stop.clone(), args.replication_ca_cert.clone());
        std::thread::Builder::new().name("replication".into()).spawn(move || {
            if let Err(e) = crate::kms_api::shipper::run(kms, stop, ca.as_deref()) {
                error!(error = %e, "replication shipping stopped");
            }
        })?
    };
    // IAM changes of a home region are shipped to its tenancy's member regions from this one.
    let iam_shipper = {
        let (kms, stop, ca) = (kms.clone(), shipper_stop.clone(), args.replication_ca_cert.clone());
        std::thread::Builder::new()
            .name("iam-replication".into())
            .spawn(move || {
                if let Err(e) = crate::kms_api::tenancy::run_shipper(kms, stop, ca.as_deref()) {
                    error!(error = %e, "IAM replication stopped");
                }
            })?
    };
    let audit_writer = super::AuditWriter::start(&kms)?;

    kms.ensure_iam_defaults(&Principal::local_admin())?;
    let kms_listener = tokio::net::TcpListener::bind(args.kms_listen)
        .await
        .with_context(|| format!("binding the KMS API to {}", args.kms_listen))?;
    let kms_addr = kms_listener.local_addr()?;
    let tls = match (&args.kms_tls_cert, &args.kms_tls_key) {
        (Some(cert), Some(key)) => Some(crate::kms_api::tls::acceptor(cert, key)?),
        _ => None,
    };
    let kms_url = format!("{}://{kms_addr}", if tls.is_some() { "https" } else { "http" });
    let socket_path = global.data_dir.join(SOCKET_FILE);
    let listener = admin::server::bind(&socket_path)
        .with_context(|| format!("binding the admin socket {}", socket_path.display()))?;
    let admin_target = admin::AdminTarget {
        objects: Some(objects.clone()),
        volumes: volumes.clone(),
        api_base: Some(kms_url.clone()),
        volume_keys: Some(keys.provider.clone()),
        ..dir.admin_target()
    };
    let admin_task = tokio::spawn(admin::server::serve(listener, admin_target, socket_path.clone()));
    use crate::front_door::{FrontDoor, Serves};
    let backup_buckets: Arc<dyn crate::kms_api::backup::BackupBuckets> = Arc::new(
        crate::object::backup_buckets::ObjectBuckets::new(objects.clone(), tokio::runtime::Handle::current()),
    );
    let api = crate::kms_api::KmsApi::new(kms.clone(), kms_addr, tls.clone())
        .max_in_flight(usize::try_from(args.kms_max_in_flight).unwrap_or(usize::MAX))
        .jwks(dir.client_key.clone())
        .backup_buckets(backup_buckets.clone());
    let console = Arc::new(crate::console::Console::persistent(&global.data_dir));
    let (console_url, console_task, serves) = match args.console_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the console to {addr}"))?;
            let bound = listener.local_addr()?;
            let console = FrontDoor::new(
                crate::kms_api::KmsApi::new(kms.clone(), bound, tls.clone()).backup_buckets(backup_buckets),
                Serves::Console,
            )
            .with_console(console.clone());
            let url = format!("{}://{bound}/console/", if tls.is_some() { "https" } else { "http" });
            (url, Some(tokio::spawn(console.serve(listener))), Serves::Api)
        }
        None => (format!("{kms_url}/console/"), None, Serves::ApiAndConsole),
    };
    let kms_task = tokio::spawn(FrontDoor::new(api, serves).with_console(console).serve(kms_listener));
    println!("KMS API        {kms_url} (OCI request signatures; users: sealstore iam user add)");
    println!("console        {console_url} (sign-in: sealstore iam user set-password NAME)");

    let new_admin = dir
        .users
        .ensure_admin(&global.data_dir)
        .with_context(|| format!("creating the S3 admin user in {}", global.data_dir.display()))?;
    let s3_listener = tokio::net::TcpListener::bind(args.s3_listen)
        .await
        .with_context(|| format!("binding the S3 API to {}", args.s3_listen))?;
    let s3_addr = s3_listener.local_addr()?;
    let face = crate::s3::S3Face::new(objects)
        .allow_insecure_sse_c(args.allow_insecure_sse_c)
        .users(dir.users.clone());
    let style = match &args.domain {
        Some(_) => "path-style and virtual-hosted-style",
        None => "path-style",
    };
    let s3_task = tokio::spawn(serve_s3(s3_listener, face, dir.users.clone(), args.domain));
    println!("S3 API         http://{s3_addr} ({style})");
    match new_admin {
        Some(user) => {
            println!("S3 user        {} (created)", user.name);
            println!("S3 access key  {}", user.access_key_id);
            println!("S3 secret key  {}", user.secret_access_key);
            println!(
                "               (also written to {}, mode 0600; more users: sealstore s3 user add NAME)",
                global.data_dir.join(crate::s3::credentials::ADMIN_KEYS_FILE).display()
            );
        }
        None => println!(
            "S3 users       {} (sealstore s3 user list)",
            dir.users.list().map(|u| u.len()).unwrap_or(0)
        ),
    }

    let serve_file = global.data_dir.join(SERVE_FILE);
    crate::json_file::write_atomically(
        &serve_file,
        &json!({
            "pid": std::process::id(),
            "adminSocket": socket_path,
            "s3": format!("http://{s3_addr}"),
            "kms": kms_url,
            "console": console_url,
            "nbd": nbd_bound,
            "region": kms.region(),
            "tenancyId": kms.tenancy_id(),
            "defaultVaultId": defaults.vault.id,
            "defaultKeyId": defaults.key.id,
        }),
    )
    .with_context(|| format!("writing {}", serve_file.display()))?;
    println!("admin socket   {}", socket_path.display());
    println!("ready; press Ctrl-C to stop");

    shutdown_signal().await;
    info!("shutting down");
    admin_task.abort();
    s3_task.abort();
    kms_task.abort();
    if let Some(task) = console_task {
        task.abort();
    }
    if let Some(task) = nbd_task {
        // Aborting drops the listener (removing a Unix socket). Acknowledged FLUSHes are
        // on disk already; other completed writes are in the page cache, which outlives us.
        task.abort();
    }
    scheduler_task.abort();
    gc_task.abort();
    shipper_stop.store(true, std::sync::atomic::Ordering::Release);
    kms.notify_replication();
    let _ = shipper.join();
    let _ = iam_shipper.join();
    drop(audit_writer);
    let _ = std::fs::remove_file(&serve_file);
    let _ = std::fs::remove_file(&socket_path);
    println!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Opens every volume of the data directory as an NBD export, following master key rotations
/// (a rotated key gives its volumes a new generation for new writes).
fn open_volumes(
    global: &GlobalOpts,
    keys: &Arc<dyn kms_core::KeyProvider>,
) -> anyhow::Result<Vec<crate::block::nbd::Export>> {
    let mut exports = Vec::new();
    for path in crate::block::volume::volume_files(&global.data_dir.join(crate::block::volume::VOLUMES_DIR)) {
        let volume =
            crate::block::Volume::open(&path, keys).with_context(|| format!("opening volume {}", path.display()))?;
        if let Some(id) = volume.rotate_if_key_rotated(keys)? {
            info!(volume = %volume.header().name, generation = id, "volume key rotated");
        }
        exports.push(crate::block::nbd::Export {
            name: volume.header().name,
            volume: Arc::new(volume),
            read_only: false,
        });
    }
    Ok(exports)
}

/// Accepts S3 connections (HTTP/1.1) and serves each with s3s over the object service.
async fn serve_s3(
    listener: tokio::net::TcpListener,
    face: crate::s3::S3Face,
    users: Arc<crate::s3::credentials::UserStore>,
    domain: Option<crate::s3::host::BucketSubdomains>,
) {
    let service = {
        let mut builder = s3s::service::S3ServiceBuilder::new(face);
        builder.set_auth(crate::s3::credentials::StoreAuth::new(users));
        if let Some(domain) = domain {
            builder.set_host(domain);
        }
        builder.build()
    };
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                error!(error = %e, "S3 accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Responses go out as headers then body in separate writes: without NODELAY, Nagle's
        // algorithm holds the second until the client's (delayed) ACK, tens of milliseconds
        // per small request.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        // Request ids, CORS preflights, the client's address, logging: see s3::service.
        let service = crate::s3::service::S3Connection::new(service.clone(), peer);
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder.serve_connection(io, service).await {
                tracing::debug!(%peer, error = %e, "S3 connection ended with an error");
            }
        });
    }
}

async fn scheduler(kms: Arc<Kms>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One server of a fleet runs the passes; should it stop, another takes over within
    // three intervals.
    let lease = Arc::new(std::sync::Mutex::new(crate::fleet::Lease::new(
        "scheduler",
        every * 3,
        kms.is_shared(),
    )));
    loop {
        tick.tick().await;
        let holder = kms.clone();
        let held =
            crate::fleet::held_off_thread(&lease, move |name, member, ttl| holder.lease(name, member, ttl)).await;
        if !held {
            continue;
        }
        let pass = kms.clone();
        match tokio::task::spawn_blocking(move || pass.run_scheduled()).await {
            Ok(Ok(report)) if report != Default::default() => info!(?report, "scheduler pass"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => error!(error = %e, "scheduler pass failed"),
            Err(e) => error!(error = %e, "scheduler task panicked"),
        }
        // EXTERNAL keys follow rotations made in their key managers.
        let refresh = kms.clone();
        match tokio::task::spawn_blocking(move || refresh.refresh_external_keys(&Principal::scheduler())).await {
            Ok(Ok((added, failed))) => {
                if added > 0 {
                    info!(new_versions = added, "external keys refreshed");
                }
                for (key, e) in failed {
                    warn!(%key, error = %e, "could not refresh an external key");
                }
            }
            Ok(Err(e)) => error!(error = %e, "refreshing external keys failed"),
            Err(e) => error!(error = %e, "external key refresh panicked"),
        }
    }
}

/// How often served volumes look for a rotation of their master key.
const VOLUME_KEY_CHECK: Duration = Duration::from_secs(5);

/// Served volumes follow their master keys: a rotation (manual, automatic, or in an external
/// key manager) becomes a new data-key generation within [`VOLUME_KEY_CHECK`], without a
/// restart; each extent moves to it on its next write, or with `volume reencrypt`.
async fn follow_volume_keys(volumes: Arc<Vec<crate::block::nbd::Export>>, keys: Arc<dyn kms_core::KeyProvider>) {
    let mut tick = tokio::time::interval(VOLUME_KEY_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (volumes, keys) = (volumes.clone(), keys.clone());
        let checked = tokio::task::spawn_blocking(move || {
            for export in volumes.iter() {
                match export.volume.rotate_if_key_rotated(&keys) {
                    Ok(Some(generation)) => info!(volume = %export.name, generation, "master key rotated: new writes use a new data-key generation"),
                    Ok(None) => {}
                    Err(e) => warn!(volume = %export.name, error = %e, "could not follow the master key's rotation"),
                }
            }
        })
        .await;
        if let Err(e) = checked {
            error!(error = %e, "volume key check panicked");
        }
    }
}

/// Ctrl-C or SIGTERM.
pub(super) async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}
