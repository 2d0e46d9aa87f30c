//! Command-line interface: argument parsing and the edge where errors become messages.

mod api;
mod bench;
mod ekm;
mod iam;
mod kms;
mod migrate;
mod object;
mod output;
mod s3;
mod serve;
mod volume;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::object::index::ObjectIndex;
use crate::object::ObjectService;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use kms_core::{Clock, Kms, KmsConfig, OffsetClock, SystemClock};

/// sealstore: encryption front-end for object and block storage, with its own key management.
#[derive(Debug, Parser)]
#[command(name = "sealstore", version, about, long_about = None, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    global: GlobalOpts,
    #[command(subcommand)]
    command: Command,
}

/// Help headings of the global options ([`HEADING_SCOPES`] says where each group is shown).
const DATA_DIR: &str = "Data directory";
const OBJECT_STORAGE: &str = "Object storage";
const REMOTE_KMS: &str = "Remote KMS";
const HSM: &str = "HSM (PKCS#11)";
const EKM: &str = "External key manager";
const OUTPUT: &str = "Output";

/// The commands that use master keys themselves, where the protection backends' options
/// (HSM, external key manager) apply.
const KEY_USING_COMMANDS: &[&str] = &[
    "serve",
    "object",
    "reencrypt",
    "index",
    "volume",
    "bench",
    "kms key",
    "kms encrypt",
    "kms decrypt",
    "kms generate-dek",
    "kms rewrap",
    "kms compliance",
    "kms run-scheduler",
    "kms region",
];

/// The commands under which each group of global options applies, by their path below
/// `sealstore`: their `--help` shows the group (as do the commands above them), the others'
/// hide it. Every command still accepts every global option (and its environment variable),
/// so that `sealstore --pkcs11-module … iam …` and scripts that set SEALSTORE_* for all
/// commands keep working. A heading not listed (the data directory) applies everywhere.
const HEADING_SCOPES: &[(&str, &[&str])] = &[
    (OBJECT_STORAGE, &["serve", "object", "reencrypt", "index", "bench"]),
    (
        REMOTE_KMS,
        &["serve", "object", "reencrypt", "index", "volume", "bench"],
    ),
    (HSM, KEY_USING_COMMANDS),
    (EKM, KEY_USING_COMMANDS),
    (OUTPUT, &["kms", "ekm", "object", "s3", "iam", "volume", "reencrypt"]),
];

/// The command line: [`Cli`], with each group of global options hidden from the `--help` of
/// the commands it does not apply to ([`HEADING_SCOPES`]).
pub(crate) fn command() -> clap::Command {
    use clap::CommandFactory;
    let cli = Cli::command();
    let globals: Vec<clap::Arg> = cli.get_arguments().filter(|a| a.is_global_set()).cloned().collect();
    cli.mut_subcommands(|sub| scope_globals(sub, "", &globals))
}

/// Hides from `cmd` (at `parent` + its name) and below it the `globals` that apply nowhere
/// there. A subcommand that has an argument of a global's name keeps its own and passes it
/// down instead of the global, so a hidden copy takes the global's place while parsing
/// exactly as the global does.
fn scope_globals(cmd: clap::Command, parent: &str, globals: &[clap::Arg]) -> clap::Command {
    let path = format!("{parent}{}", cmd.get_name());
    let inside = |scope: &str| path == scope || path.starts_with(&format!("{scope} "));
    let above = |scope: &str| scope.starts_with(&format!("{path} "));
    let mut hidden = Vec::new();
    let mut below = false;
    for arg in globals {
        let Some((_, scopes)) = HEADING_SCOPES.iter().find(|(h, _)| arg.get_help_heading() == Some(*h)) else {
            continue;
        };
        if scopes.iter().any(|s| inside(s)) {
            continue;
        }
        if scopes.iter().any(|s| above(s)) {
            below = true;
        } else {
            hidden.push(arg.clone().hide(true));
        }
    }
    let cmd = cmd.args(hidden);
    if below {
        let parent = format!("{path} ");
        cmd.mut_subcommands(|sub| scope_globals(sub, &parent, globals))
    } else {
        cmd
    }
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub(crate) struct GlobalOpts {
    /// Where this sealstore keeps its key store, root key, object index and admin socket.
    #[arg(long, global = true, help_heading = DATA_DIR, value_name = "DIR", env = "SEALSTORE_DATA_DIR", default_value = "./sealstore-data")]
    pub data_dir: PathBuf,
    /// Keep the metadata — the KMS (vaults, keys, IAM, audit log), the object index and the S3
    /// users — in this PostgreSQL database instead of redb files in the data directory, so that
    /// several `serve` processes share it: postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?pool_size=N].
    /// Every server of a fleet needs the same root key (copy root.key, or --root-key-file).
    #[arg(long, global = true, help_heading = DATA_DIR, value_name = "URL", env = "SEALSTORE_METADATA_URL")]
    pub metadata_url: Option<String>,
    /// Root key file sealing SOFTWARE key material [default: <data-dir>/root.key, created on first start].
    #[arg(long, global = true, help_heading = DATA_DIR, value_name = "FILE", env = "SEALSTORE_ROOT_KEY_FILE")]
    pub root_key_file: Option<PathBuf>,
    /// Where object ciphertext is stored: a directory, or s3://bucket[/prefix] configured by
    /// the AWS_* environment (AWS_ENDPOINT, AWS_ALLOW_HTTP, credentials) [default: <data-dir>/objects].
    #[arg(long, global = true, help_heading = OBJECT_STORAGE, value_name = "DIR|URL", env = "SEALSTORE_OBJECT_BACKEND")]
    pub object_backend: Option<String>,
    /// Take data keys for objects and volumes from the KMS API of another sealstore
    /// (http[s]://host:port) instead of this data directory's own KMS, so that keys and data
    /// live on different machines. Needs --kms-key; signs with the API key of --kms-config.
    #[arg(long, global = true, help_heading = REMOTE_KMS, env = "SEALSTORE_KMS_ENDPOINT", value_name = "URL")]
    pub kms_endpoint: Option<String>,
    /// With --kms-endpoint: OCI config file whose profile holds the API key that signs the
    /// requests (`sealstore iam user add` on the KMS side prints one) [default: ~/.oci/config].
    #[arg(long, global = true, help_heading = REMOTE_KMS, env = "SEALSTORE_KMS_CONFIG", value_name = "FILE")]
    pub kms_config: Option<PathBuf>,
    /// With --kms-endpoint: the profile in --kms-config.
    #[arg(long, global = true, help_heading = REMOTE_KMS, value_name = "NAME", env = "SEALSTORE_KMS_PROFILE", default_value = "DEFAULT")]
    pub kms_profile: String,
    /// With --kms-endpoint: the master key (OCID) there that encrypts objects that name no
    /// key (SSE-S3) and new volumes created without --key.
    #[arg(long, global = true, help_heading = REMOTE_KMS, env = "SEALSTORE_KMS_KEY", value_name = "OCID")]
    pub kms_key: Option<String>,
    /// With an https --kms-endpoint: a CA certificate (PEM) to trust besides the system's.
    #[arg(long, global = true, help_heading = REMOTE_KMS, env = "SEALSTORE_KMS_CA_CERT", value_name = "FILE")]
    pub kms_ca_cert: Option<PathBuf>,
    /// PKCS#11 module for HSM-protected keys (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so). Keys
    /// created with protection mode HSM are generated in its token and never leave it.
    #[arg(long, global = true, help_heading = HSM, env = "SEALSTORE_PKCS11_MODULE", value_name = "PATH")]
    pub pkcs11_module: Option<PathBuf>,
    /// With --pkcs11-module: the label of the token to use.
    #[arg(long, global = true, help_heading = HSM, env = "SEALSTORE_PKCS11_TOKEN_LABEL", value_name = "LABEL")]
    pub pkcs11_token_label: Option<String>,
    /// With --pkcs11-module: a file holding the token's user PIN (one line; keep it 0600).
    #[arg(long, global = true, help_heading = HSM, env = "SEALSTORE_PKCS11_PIN_FILE", value_name = "FILE")]
    pub pkcs11_pin_file: Option<PathBuf>,
    /// With --pkcs11-module: PKCS#11 sessions kept open, i.e. HSM calls that run at once.
    #[arg(long, global = true, help_heading = HSM, value_name = "N", env = "SEALSTORE_PKCS11_SESSIONS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub pkcs11_sessions: u32,
    /// EXTERNAL keys: a CA certificate (PEM) to trust for https external key managers,
    /// besides the system's (or their own self-signed certificate).
    #[arg(long, global = true, help_heading = EKM, env = "SEALSTORE_EKM_CA_CERT", value_name = "FILE")]
    pub ekm_ca_cert: Option<PathBuf>,
    /// Print JSON instead of tables (for scripts).
    #[arg(long, global = true, help_heading = OUTPUT)]
    pub json: bool,
    /// Testing only: run the clock this many days ahead, to reach deletion and rotation deadlines.
    #[arg(
        long,
        global = true,
        env = "SEALSTORE_CLOCK_OFFSET_DAYS",
        hide = true,
        default_value_t = 0
    )]
    pub clock_offset_days: i64,
}

impl GlobalOpts {
    /// The clock of key management: the system's, run ahead by `--clock-offset-days`.
    pub(crate) fn clock(&self) -> Arc<dyn Clock> {
        if self.clock_offset_days == 0 {
            Arc::new(SystemClock)
        } else {
            Arc::new(OffsetClock {
                offset_days: self.clock_offset_days,
            })
        }
    }

    /// Where the metadata lives: the data directory's redb files, or the PostgreSQL database
    /// of `--metadata-url` (connected, its schema brought up to date).
    pub(crate) fn metadata_location(&self) -> anyhow::Result<sealstore_meta::Location> {
        match &self.metadata_url {
            None => Ok(sealstore_meta::Location::Dir(self.data_dir.clone())),
            Some(url) => {
                // The error never repeats the URL: it may hold a password.
                let pg = sealstore_meta::Postgres::connect(url).context("connecting to the --metadata-url database")?;
                Ok(sealstore_meta::Location::Postgres(pg))
            }
        }
    }

    /// Opens the data directory directly: the key-management service, with the object
    /// index registered as its inventory of protected data.
    pub(crate) fn open_data_dir(&self, region: Option<&str>) -> anyhow::Result<DataDir> {
        let metadata = self.metadata_location()?;
        let config = KmsConfig {
            root_key_file: self.root_key_file.clone(),
            clock: self.clock(),
            region: region.map(str::to_owned),
            metadata: Some(metadata.clone()),
            ..KmsConfig::new(&self.data_dir)
        };
        let mut kms = Kms::open(config).map_err(|e| match e {
            kms_core::KmsError::RegionMismatch { stored, requested } => anyhow::anyhow!(
                "the data directory {} belongs to region {stored} (fixed when it was created), not {requested}: \
                 start it with --region {stored} (or without --region), or give region {requested} a data \
                 directory of its own",
                self.data_dir.display()
            ),
            e => anyhow::Error::new(e).context(format!("cannot open the data directory {}", self.data_dir.display())),
        })?;
        if let Some(hsm) = self.hsm_config()? {
            let token = hsm.token_label.clone();
            let backend = kms_core::protection::hsm::HsmProtection::open(&hsm)
                .with_context(|| format!("opening the HSM token '{token}'"))?;
            kms.register_protection(Arc::new(backend));
        }
        // EXTERNAL keys: tokens for key managers are signed with this data directory's client
        // key (made on first use), naming the tenancy as the client.
        let client_key = Arc::new(crate::external_kms::token::ClientKey::new(
            self.data_dir.join(EKM_CLIENT_KEY_FILE),
            kms.tenancy_id().to_string(),
        ));
        let external =
            crate::external_kms::client::ExternalProtection::new(client_key.clone(), self.ekm_ca_cert.as_deref())
                .map_err(|e| anyhow::anyhow!("setting up EXTERNAL protection: {e}"))?;
        kms.register_protection(Arc::new(external));
        let index = Arc::new(ObjectIndex::open_at(&metadata).context("opening the object index")?);
        kms.register_inventory(index.clone());
        kms.register_inventory(Arc::new(crate::block::volume::VolumeInventory {
            dir: self.data_dir.join(crate::block::volume::VOLUMES_DIR),
        }));
        let users =
            Arc::new(crate::s3::credentials::UserStore::open_at(&metadata).context("opening the S3 user store")?);
        Ok(DataDir {
            kms: Arc::new(kms),
            index,
            users,
            client_key,
        })
    }

    /// The PKCS#11 settings, when --pkcs11-module is given (then the label and PIN file must be).
    fn hsm_config(&self) -> anyhow::Result<Option<kms_core::protection::hsm::HsmConfig>> {
        let Some(module) = &self.pkcs11_module else {
            if self.pkcs11_token_label.is_some() || self.pkcs11_pin_file.is_some() {
                anyhow::bail!("--pkcs11-token-label and --pkcs11-pin-file need --pkcs11-module");
            }
            return Ok(None);
        };
        let token_label = self
            .pkcs11_token_label
            .clone()
            .context("--pkcs11-module needs --pkcs11-token-label")?;
        let pin_file = self
            .pkcs11_pin_file
            .as_ref()
            .context("--pkcs11-module needs --pkcs11-pin-file")?;
        let pin = zeroize::Zeroizing::new(
            std::fs::read_to_string(pin_file)
                .with_context(|| format!("reading the PIN file {}", pin_file.display()))?,
        );
        let pin = zeroize::Zeroizing::new(pin.trim_end_matches(['\n', '\r']).to_owned());
        Ok(Some(kms_core::protection::hsm::HsmConfig {
            module: module.clone(),
            token_label,
            pin,
            sessions: self.pkcs11_sessions as usize,
        }))
    }

    /// Where the data path gets its data keys, and the master key it uses when none is named:
    /// this data directory's KMS, or the remote one of --kms-endpoint (checked here, so a
    /// wrong address, key or signature fails at start with the reason).
    pub(crate) fn data_keys(&self, dir: &DataDir) -> anyhow::Result<DataKeys> {
        let Some(endpoint) = &self.kms_endpoint else {
            if self.kms_key.is_some() {
                anyhow::bail!(
                    "--kms-key applies only with --kms-endpoint (the local KMS's default key is used otherwise)"
                );
            }
            let default_key = dir.kms.ensure_defaults(&kms_core::Principal::local_admin())?.key.id;
            return Ok(DataKeys {
                provider: dir.kms.clone(),
                default_key,
            });
        };
        let key = self
            .kms_key
            .as_deref()
            .context("--kms-endpoint needs --kms-key: the master key there for objects and volumes that name none")?;
        let default_key = kms_core::Ocid::parse(kms_core::ResourceType::Key, key)?;
        let config_file = match &self.kms_config {
            Some(f) => f.clone(),
            None => std::env::var_os("HOME")
                .map(PathBuf::from)
                .context("HOME is not set: give --kms-config")?
                .join(".oci/config"),
        };
        let remote = crate::kms_api::remote::RemoteKms::new(&crate::kms_api::remote::RemoteConfig {
            endpoint: endpoint.clone(),
            config_file,
            profile: self.kms_profile.clone(),
            ca_cert: self.kms_ca_cert.clone(),
        })?;
        use kms_core::KeyProvider;
        let status = remote
            .key_status(&default_key)
            .with_context(|| format!("checking --kms-key {default_key} at {endpoint}"))?;
        if let Some(why) = status.unusable {
            tracing::warn!(key = %default_key, reason = %why, "the default master key cannot be used now");
        }
        Ok(DataKeys {
            provider: Arc::new(remote),
            default_key,
        })
    }

    /// Opens the data directory and its buckets of objects.
    pub(crate) fn open_objects(&self) -> anyhow::Result<ObjectService> {
        let dir = self.open_data_dir(None)?;
        let keys = self.data_keys(&dir)?;
        self.objects_in(&dir, keys)
    }

    /// The buckets of an opened data directory, on the configured object backend, with data
    /// keys from `keys`.
    pub(crate) fn objects_in(&self, dir: &DataDir, keys: DataKeys) -> anyhow::Result<ObjectService> {
        let backend = match &self.object_backend {
            Some(url) => Some(
                crate::object::backend::open_backend(url, &[])
                    .with_context(|| format!("opening the object backend {url}"))?,
            ),
            None => None,
        };
        let service = ObjectService::open(
            &self.data_dir,
            backend,
            keys.provider,
            keys.default_key,
            dir.index.clone(),
        )?;
        Ok(
            match self
                .object_backend
                .as_deref()
                .and_then(crate::object::backend::local_directory)
            {
                Some(root) => service.with_local_root(root),
                None => service,
            },
        )
    }
}

/// Sends an admin request to a running server, or runs it against the data directory
/// directly when none runs (same code, same result).
pub(crate) fn dispatch(global: &GlobalOpts, req: crate::admin::Request) -> anyhow::Result<serde_json::Value> {
    use crate::admin::client::{try_send, Reached};
    let socket = global.data_dir.join(crate::admin::SOCKET_FILE);
    match try_send(&socket, &req).with_context(|| format!("talking to the server at {}", socket.display()))? {
        Reached::Answered(result) => Ok(result?),
        Reached::NoServer => {
            let dir = global.open_data_dir(None)?;
            Ok(crate::admin::execute(&dir.admin_target(), req)?)
        }
    }
}

/// Sends a request that only a running server handles (it owns the objects and volumes):
/// its answer, or `None` when no server runs. With `spinner`, shows it while waiting.
pub(crate) fn via_server(
    global: &GlobalOpts,
    req: &crate::admin::Request,
    spinner: Option<&str>,
) -> anyhow::Result<Option<serde_json::Value>> {
    use crate::admin::client::{try_send_with_progress, Reached};
    let socket = global.data_dir.join(crate::admin::SOCKET_FILE);
    let bar = spinner.filter(|_| socket.exists()).map(|message| {
        let bar = indicatif::ProgressBar::new_spinner().with_message(message.to_owned());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    // A long command (a volume sweep) reports how far it has come: the spinner becomes a bar.
    let mut progress = |p: crate::admin::Progress| {
        let Some(bar) = &bar else { return };
        // Fixed-size units (a volume's extents) are shown as bytes, with a byte rate.
        let scale = p.unit_bytes.max(1);
        let total = p.total.saturating_mul(scale);
        if total > 0 && bar.length() != Some(total) {
            bar.set_length(total);
            let template = if p.unit_bytes > 0 {
                "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta})"
            } else {
                "{spinner} {msg} [{bar:30}] {pos}/{len} ({per_sec}, ETA {eta})"
            };
            bar.set_style(
                indicatif::ProgressStyle::with_template(template)
                    .expect("valid template")
                    .progress_chars("=> "),
            );
        }
        bar.set_position(p.done.saturating_mul(scale));
    };
    let reached = try_send_with_progress(&socket, req, &mut progress)
        .with_context(|| format!("talking to the server at {}", socket.display()));
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    match reached? {
        Reached::Answered(result) => Ok(Some(result?)),
        Reached::NoServer => Ok(None),
    }
}

/// The key that signs this data directory's tokens for external key managers.
pub(crate) const EKM_CLIENT_KEY_FILE: &str = "ekm-client.key";

/// The background audit writer ([`Kms::run_audit_writer`]) on its own thread; dropping it
/// stops the thread, waits for it and flushes what it had queued.
pub(crate) struct AuditWriter {
    kms: Arc<Kms>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AuditWriter {
    /// Starts the writer of `kms`.
    pub(crate) fn start(kms: &Arc<Kms>) -> std::io::Result<Self> {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (kms, stop) = (kms.clone(), stop.clone());
            std::thread::Builder::new().name("audit-writer".into()).spawn(move || {
                if let Err(e) = kms.run_audit_writer(&stop) {
                    tracing::error!(error = %e, "the audit writer stopped; crypto calls write their own entries from now on");
                }
            })?
        };
        Ok(AuditWriter {
            kms: kms.clone(),
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.kms.wake_audit_writer();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Err(e) = self.kms.flush_audit() {
            tracing::error!(error = %e, "could not flush the audit log");
        }
    }
}

/// Where the data path's keys come from (see [`GlobalOpts::data_keys`]).
#[derive(Clone)]
pub(crate) struct DataKeys {
    /// Makes and opens data keys.
    pub provider: Arc<dyn kms_core::KeyProvider>,
    /// The master key for data that names none.
    pub default_key: kms_core::Ocid,
}

/// An opened data directory.
pub(crate) struct DataDir {
    /// Key management.
    pub kms: Arc<Kms>,
    /// The object index (also registered with `kms`).
    pub index: Arc<ObjectIndex>,
    /// S3 users.
    pub users: Arc<crate::s3::credentials::UserStore>,
    /// The key that signs this data directory's tokens for external key managers.
    pub client_key: Arc<crate::external_kms::token::ClientKey>,
}

impl DataDir {
    /// What admin requests act on.
    pub(crate) fn admin_target(&self) -> crate::admin::AdminTarget {
        crate::admin::AdminTarget {
            kms: self.kms.clone(),
            users: self.users.clone(),
            objects: None,
            volumes: Arc::new(Vec::new()),
            api_base: None,
            volume_keys: None,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the long-lived server: key management, scheduler (auto-rotation, purge), admin socket.
    Serve(serve::ServeArgs),
    /// Key management: vaults, keys, versions, crypto, compliance, audit.
    Kms(kms::KmsArgs),
    /// The reference external key manager that EXTERNAL vaults point at (docs/EXTERNAL_KMS.md),
    /// over a data directory of its own.
    Ekm(ekm::EkmArgs),
    /// Measure what encryption costs on this machine, beside the raw primitives and peers.
    Bench(bench::BenchArgs),
    /// Encrypted objects in the data directory: buckets, put/get, bulk import/export, inventory.
    Object(object::ObjectArgs),
    /// The S3 API's users and access keys.
    S3(s3::S3Args),
    /// Who may use the KMS API: users and their API keys, groups, policies, compartments.
    Iam(iam::IamArgs),
    /// Encrypted block volumes (AES-256-XTS in 4 KiB sectors): create, import, export, check.
    Volume(volume::VolumeArgs),
    /// Re-encrypt a bucket after a key rotation (--rewrap) or a suspected compromise (--full).
    /// Resumable: run it again after an interruption and it continues where it stopped.
    Reencrypt(object::ReencryptArgs),
    /// The object metadata index.
    #[command(subcommand)]
    Index(object::IndexCommand),
    /// Move this data directory's metadata (KMS, object index, S3 users) into a PostgreSQL
    /// database, for a fleet of servers (`serve --metadata-url`). Stop the server first; the
    /// files stay as they are.
    MigrateMetadata(migrate::MigrateArgs),
}

/// Parses arguments, runs the command, prints errors for humans.
pub fn main() -> ExitCode {
    exit_quietly_on_broken_pipe();
    let cli = {
        use clap::FromArgMatches;
        Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit())
    };
    let result = match cli.command {
        Command::Serve(args) => serve::run(&cli.global, args),
        Command::Kms(args) => kms::run(&cli.global, args),
        Command::Ekm(args) => ekm::run(&cli.global, args),
        Command::Bench(args) => bench::run(&cli.global, args),
        Command::Object(args) => object::run(&cli.global, args),
        Command::S3(args) => s3::run(&cli.global, args),
        Command::Iam(args) => iam::run(&cli.global, args),
        Command::Volume(args) => volume::run(&cli.global, args),
        Command::Reencrypt(args) => object::reencrypt(&cli.global, args),
        Command::Index(cmd) => object::index(&cli.global, cmd),
        Command::MigrateMetadata(args) => migrate::run(&cli.global, args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", describe(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, leaving out a cause whose text the message before
/// it already contains (library errors often quote their source).
fn describe(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// `sealstore … | head` closes our stdout early; `println!` then panics. Behave like other
/// command-line tools instead: stop quietly with the status a SIGPIPE death would give (141).
fn exit_quietly_on_broken_pipe() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info)
    }));
}
