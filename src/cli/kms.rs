//! `sealstore kms …`: key management from the command line.
//!
//! Each command becomes an admin [`Request`]; it goes to the running server over the admin
//! socket, or — when no server runs — straight to the store.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use clap::{Args, Subcommand, ValueEnum};
use kms_core::{CreateKey, CreateVault, ProtectionMode, ResourceType, Timestamp, UpdateResource, VaultType};
use sealstore::admin::{parse_id, DeletionWhen, Request};

use super::output::{self, Column};
use super::{dispatch, GlobalOpts};

#[derive(Debug, Args)]
pub struct KmsArgs {
    #[command(subcommand)]
    command: KmsCommand,
}

#[derive(Debug, Subcommand)]
enum KmsCommand {
    /// Vaults: containers of master keys.
    #[command(subcommand)]
    Vault(VaultCommand),
    /// Master encryption keys and their versions.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Encrypt up to 4 KiB under a master key; prints a self-describing base64 ciphertext.
    Encrypt(EncryptArgs),
    /// Decrypt a ciphertext made by `encrypt` or `generate-dek` (the key is read from it).
    Decrypt(DecryptArgs),
    /// Generate a 256-bit data encryption key wrapped by a master key.
    GenerateDek(GenerateDekArgs),
    /// Re-encrypt a ciphertext under the current version of its key; the plaintext never leaves the KMS.
    Rewrap(RewrapArgs),
    /// List enabled keys whose current version is older than the allowed age (OCI-KMS-001 / CIS OCI 4.16).
    Compliance {
        /// Oldest allowed age of a key's current version, in days.
        #[arg(long, default_value_t = kms_core::DEFAULT_MAX_KEY_AGE_DAYS)]
        max_age_days: i64,
    },
    /// The hash-chained audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Peer regions for vault replication.
    #[command(subcommand)]
    Region(RegionCommand),
    /// Run the scheduler once now: due auto-rotations and purges of vaults/keys past their deletion time.
    RunScheduler,
    /// Tenancy, region, default vault and key.
    Status,
    /// The JWKS of this data directory's client key: give it to external key managers
    /// (`sealstore ekm serve --jwks FILE`) so they accept its tokens.
    Jwks,
}

#[derive(Debug, Subcommand)]
enum RegionCommand {
    /// This region's name and replication public keys, as JSON: the file to give peers for
    /// their `kms region add --public-key`.
    Identity,
    /// Register a peer region (on both sides: a region accepts vault states only from peers
    /// it registered, and wraps key material only for them).
    Add {
        /// Its name (its `serve --region`).
        name: String,
        /// Its KMS API, http[s]://host:port.
        #[arg(long)]
        endpoint: String,
        /// Its `kms region identity` output.
        #[arg(long, value_name = "FILE")]
        public_key: std::path::PathBuf,
    },
    /// Registered peer regions.
    List,
    /// Forget a peer region.
    Remove { name: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum VaultTypeArg {
    Default,
    VirtualPrivate,
    /// Keys held by an external key manager (give --external-vault-url).
    External,
}

#[derive(Debug, Subcommand)]
enum VaultCommand {
    /// Create a vault.
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Compartment [default: the tenancy].
        #[arg(long)]
        compartment: Option<String>,
        /// Vault type.
        #[arg(long, value_enum, default_value = "default")]
        r#type: VaultTypeArg,
        /// EXTERNAL vaults: the key manager's vault URL, <key manager URL>/ekm/v1/vaults/<id>.
        #[arg(long, value_name = "URL")]
        external_vault_url: Option<String>,
    },
    /// List vaults.
    List {
        /// Only vaults in this compartment.
        #[arg(long)]
        compartment: Option<String>,
    },
    /// Show a vault.
    Get { vault_id: String },
    /// Rename a vault.
    Update {
        vault_id: String,
        /// New display name.
        #[arg(long)]
        name: String,
    },
    /// Schedule deletion 7–30 days ahead; its keys are unusable from now on, and destroyed at the deadline.
    ScheduleDeletion {
        vault_id: String,
        #[command(flatten)]
        when: DeletionTime,
    },
    /// Cancel a scheduled deletion.
    CancelDeletion { vault_id: String },
    /// Replicate the vault to a registered region: its keys and versions are copied there
    /// asynchronously (material wrapped for that region), and it serves crypto calls there.
    Replicate {
        vault_id: String,
        /// The destination region (see `kms region add`).
        #[arg(long)]
        region: String,
    },
    /// Delete the vault's replica in a region: DELETING until that region confirms that it
    /// stopped serving the vault and destroyed its copy of the key material, then DELETED.
    Unreplicate {
        vault_id: String,
        /// The region.
        #[arg(long)]
        region: String,
    },
    /// The vault's replicas: status (CREATING, CREATED, DELETING, DELETED), changes not yet
    /// shipped, lag.
    Replicas { vault_id: String },
}

#[derive(Debug, Args)]
#[group(multiple = false)]
struct DeletionTime {
    /// Days from now (7–30) [default: 30].
    #[arg(long)]
    days: Option<i64>,
    /// Exact time (RFC 3339, e.g. 2026-12-24T00:00:00Z).
    #[arg(long)]
    time: Option<String>,
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Create an AES-256 master key.
    Create {
        /// Vault to create it in.
        #[arg(long)]
        vault: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Compartment [default: the vault's].
        #[arg(long)]
        compartment: Option<String>,
        /// Protection mode [default: EXTERNAL in an EXTERNAL vault, SOFTWARE elsewhere].
        #[arg(long, value_parser = parse_protection_mode)]
        protection_mode: Option<ProtectionMode>,
        /// Rotate automatically every N days (60–365).
        #[arg(long)]
        auto_rotate_days: Option<u32>,
        /// Keys of EXTERNAL vaults: the key's id in the external key manager.
        #[arg(long, value_name = "ID")]
        external_key_id: Option<String>,
    },
    /// List keys.
    List {
        /// Only keys in this vault.
        #[arg(long)]
        vault: Option<String>,
        /// Only keys in this compartment.
        #[arg(long)]
        compartment: Option<String>,
    },
    /// Show a key.
    Get { key_id: String },
    /// Rename a key or change its auto-rotation.
    Update {
        key_id: String,
        /// New display name.
        #[arg(long)]
        name: Option<String>,
        /// Turn auto-rotation on with this interval in days (60–365).
        #[arg(long, conflicts_with = "no_auto_rotate")]
        auto_rotate_days: Option<u32>,
        /// Turn auto-rotation off.
        #[arg(long)]
        no_auto_rotate: bool,
    },
    /// Enable a disabled key.
    Enable { key_id: String },
    /// Disable a key: every encrypt and decrypt under it is refused until enabled.
    Disable { key_id: String },
    /// Rotate: create a new primary version (older versions keep decrypting).
    Rotate { key_id: String },
    /// EXTERNAL keys: pick up versions made in the external key manager (its current one
    /// becomes primary). `serve` does this every minute.
    Refresh { key_id: String },
    /// List a key's versions.
    Versions { key_id: String },
    /// Show one key version.
    Version { key_id: String, version_id: String },
    /// Disable an old version (suspected compromise): its ciphertexts stop decrypting.
    /// Refused while objects still depend on it, unless --force.
    DisableVersion {
        key_id: String,
        version_id: String,
        /// Disable even though objects still depend on the version (they become unreadable).
        #[arg(long)]
        force: bool,
    },
    /// Enable a disabled version.
    EnableVersion { key_id: String, version_id: String },
    /// Schedule deletion 7–30 days ahead.
    ScheduleDeletion {
        key_id: String,
        #[command(flatten)]
        when: DeletionTime,
    },
    /// Cancel a scheduled deletion.
    CancelDeletion { key_id: String },
}

#[derive(Debug, Args)]
struct AadArg {
    /// Associated data: a JSON object of strings, e.g. '{"bucket":"b"}'. Must be given again to decrypt.
    #[arg(long)]
    associated_data: Option<String>,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct PlaintextInput {
    /// Plaintext as text.
    #[arg(long)]
    plaintext: Option<String>,
    /// Plaintext as base64 (as the oci CLI takes it).
    #[arg(long)]
    plaintext_base64: Option<String>,
    /// Read the plaintext from a file ('-' for stdin).
    #[arg(long)]
    r#in: Option<String>,
}

#[derive(Debug, Args)]
struct EncryptArgs {
    /// Master key [default: the default key].
    #[arg(long)]
    key: Option<String>,
    #[command(flatten)]
    input: PlaintextInput,
    #[command(flatten)]
    aad: AadArg,
}

#[derive(Debug, Args)]
struct DecryptArgs {
    /// Base64 ciphertext ('-' reads it from stdin).
    #[arg(long)]
    ciphertext: String,
    /// Refuse ciphertexts not made by this key.
    #[arg(long)]
    key: Option<String>,
    /// Write the raw plaintext bytes to stdout instead of a summary.
    #[arg(long)]
    raw: bool,
    #[command(flatten)]
    aad: AadArg,
}

#[derive(Debug, Args)]
struct GenerateDekArgs {
    /// Master key [default: the default key].
    #[arg(long)]
    key: Option<String>,
    /// Return only the wrapped key, not the plaintext copy.
    #[arg(long)]
    no_plaintext: bool,
    #[command(flatten)]
    aad: AadArg,
}

#[derive(Debug, Args)]
struct RewrapArgs {
    /// Base64 ciphertext ('-' reads it from stdin).
    #[arg(long)]
    ciphertext: String,
    /// Re-encrypt under this key instead of the ciphertext's own.
    #[arg(long)]
    key: Option<String>,
    #[command(flatten)]
    aad: AadArg,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk the hash chain; exits non-zero if any entry was edited, removed or reordered.
    Verify,
    /// Show audit entries.
    List {
        /// First sequence number.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// How many entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

fn parse_protection_mode(s: &str) -> Result<ProtectionMode, String> {
    ProtectionMode::parse(s).ok_or_else(|| format!("'{s}' is not one of SOFTWARE, HSM, EXTERNAL"))
}

fn id(kind: ResourceType, s: &str) -> anyhow::Result<kms_core::Ocid> {
    Ok(parse_id(kind, s)?)
}

fn opt_id(kind: ResourceType, s: &Option<String>) -> anyhow::Result<Option<kms_core::Ocid>> {
    s.as_deref().map(|s| id(kind, s)).transpose()
}

fn deletion_time(when: &DeletionTime) -> anyhow::Result<DeletionWhen> {
    Ok(DeletionWhen {
        days: when.days,
        time_of_deletion: when.time.as_deref().map(Timestamp::parse).transpose()?,
    })
}

/// Reads a value given as an argument, or from stdin when it is '-'.
fn arg_or_stdin(value: &str) -> anyhow::Result<String> {
    if value != "-" {
        return Ok(value.to_owned());
    }
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).context("reading stdin")?;
    Ok(s.trim().to_owned())
}

fn plaintext_base64(input: &PlaintextInput) -> anyhow::Result<String> {
    if let Some(text) = &input.plaintext {
        return Ok(B64.encode(text.as_bytes()));
    }
    if let Some(b64) = &input.plaintext_base64 {
        return Ok(b64.clone());
    }
    let path = input.r#in.as_deref().expect("clap requires one plaintext input");
    let bytes = if path == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).context("reading stdin")?;
        buf
    } else {
        std::fs::read(path).with_context(|| format!("reading {path}"))?
    };
    Ok(B64.encode(bytes))
}

/// How a result is shown to a person.
enum View {
    Fields,
    /// JSON with or without `--json`.
    Json,
    Table(&'static [Column]),
    Compliance,
    AuditVerify,
    Decrypted {
        raw: bool,
    },
    Scheduler,
}

const VAULT_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("NAME", "displayName"),
    ("TYPE", "vaultType"),
    ("STATE", "lifecycleState"),
    ("CREATED", "timeCreated"),
];
const KEY_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("NAME", "displayName"),
    ("PROTECTION", "protectionMode"),
    ("STATE", "lifecycleState"),
    ("CURRENT VERSION", "currentKeyVersion"),
    ("CREATED", "timeCreated"),
];
const VERSION_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("STATE", "lifecycleState"),
    ("CREATED", "timeCreated"),
    ("AUTO", "isAutoRotated"),
];
const AUDIT_COLUMNS: &[Column] = &[
    ("SEQ", "seq"),
    ("TIME", "time"),
    ("PRINCIPAL", "principal"),
    ("OPERATION", "operation"),
    ("KEY", "keyId"),
    ("VERSION", "keyVersionId"),
    ("RESULT", "result"),
];

fn request(cmd: KmsCommand) -> anyhow::Result<(Request, View)> {
    use ResourceType::{Compartment, Key, KeyVersion, Vault};
    let compartment = |c: &Option<String>| -> anyhow::Result<_> {
        // The tenancy is the root compartment and has a tenancy OCID.
        match c.as_deref() {
            Some(s) if s.starts_with("ocid1.tenancy.") => Ok(Some(id(ResourceType::Tenancy, s)?)),
            other => opt_id(Compartment, &other.map(str::to_owned)),
        }
    };
    Ok(match cmd {
        KmsCommand::Vault(v) => match v {
            VaultCommand::Create {
                name,
                compartment: c,
                r#type,
                external_vault_url,
            } => (
                Request::VaultCreate(CreateVault {
                    compartment_id: compartment(&c)?,
                    display_name: name,
                    vault_type: Some(match r#type {
                        VaultTypeArg::Default => VaultType::Default,
                        VaultTypeArg::VirtualPrivate => VaultType::VirtualPrivate,
                        VaultTypeArg::External => VaultType::External,
                    }),
                    external_key_manager: external_vault_url
                        .map(|url| {
                            kms_core::ExternalKeyManager::from_vault_url(&url).with_context(|| {
                                format!("--external-vault-url must be <key manager URL>/ekm/v1/vaults/<vault id>, not '{url}'")
                            })
                        })
                        .transpose()?,
                    ..Default::default()
                }),
                View::Fields,
            ),
            VaultCommand::List { compartment: c } => (
                Request::VaultList {
                    compartment_id: compartment(&c)?,
                },
                View::Table(VAULT_COLUMNS),
            ),
            VaultCommand::Get { vault_id } => (
                Request::VaultGet {
                    id: id(Vault, &vault_id)?,
                },
                View::Fields,
            ),
            VaultCommand::Update { vault_id, name } => (
                Request::VaultUpdate {
                    id: id(Vault, &vault_id)?,
                    update: UpdateResource {
                        display_name: Some(name),
                        ..Default::default()
                    },
                },
                View::Fields,
            ),
            VaultCommand::ScheduleDeletion { vault_id, when } => (
                Request::VaultScheduleDeletion {
                    id: id(Vault, &vault_id)?,
                    when: deletion_time(&when)?,
                },
                View::Fields,
            ),
            VaultCommand::CancelDeletion { vault_id } => (
                Request::VaultCancelDeletion {
                    id: id(Vault, &vault_id)?,
                },
                View::Fields,
            ),
            VaultCommand::Replicate { vault_id, region } => (
                Request::VaultReplicate {
                    id: id(Vault, &vault_id)?,
                    region,
                },
                View::Fields,
            ),
            VaultCommand::Unreplicate { vault_id, region } => (
                Request::VaultUnreplicate {
                    id: id(Vault, &vault_id)?,
                    region,
                },
                View::Fields,
            ),
            VaultCommand::Replicas { vault_id } => (
                Request::VaultReplicas {
                    id: id(Vault, &vault_id)?,
                },
                View::Table(&[
                    ("REGION", "region"),
                    ("STATUS", "status"),
                    ("PENDING", "pendingChanges"),
                    ("LAG (MS)", "lagMillis"),
                    ("LAST SHIPPED", "timeLastShipped"),
                ]),
            ),
        },
        KmsCommand::Key(k) => match k {
            KeyCommand::Create {
                vault,
                name,
                compartment: c,
                protection_mode,
                auto_rotate_days,
                external_key_id,
            } => (
                Request::KeyCreate(CreateKey {
                    compartment_id: compartment(&c)?,
                    protection_mode,
                    auto_rotation_interval_days: auto_rotate_days,
                    external_key_id,
                    ..CreateKey::new(id(Vault, &vault)?, name)
                }),
                View::Fields,
            ),
            KeyCommand::List { vault, compartment: c } => (
                Request::KeyList {
                    vault_id: opt_id(Vault, &vault)?,
                    compartment_id: compartment(&c)?,
                },
                View::Table(KEY_COLUMNS),
            ),
            KeyCommand::Get { key_id } => (Request::KeyGet { id: id(Key, &key_id)? }, View::Fields),
            KeyCommand::Update {
                key_id,
                name,
                auto_rotate_days,
                no_auto_rotate,
            } => {
                let auto = match (auto_rotate_days, no_auto_rotate) {
                    (Some(d), _) => Some(Some(d)),
                    (None, true) => Some(None),
                    (None, false) => None,
                };
                if name.is_none() && auto.is_none() {
                    bail!("nothing to update: give --name, --auto-rotate-days or --no-auto-rotate");
                }
                let update = UpdateResource {
                    display_name: name,
                    freeform_tags: None,
                    auto_rotation_interval_days: auto,
                };
                (
                    Request::KeyUpdate {
                        id: id(Key, &key_id)?,
                        update,
                    },
                    View::Fields,
                )
            }
            KeyCommand::Enable { key_id } => (Request::KeyEnable { id: id(Key, &key_id)? }, View::Fields),
            KeyCommand::Disable { key_id } => (Request::KeyDisable { id: id(Key, &key_id)? }, View::Fields),
            KeyCommand::Rotate { key_id } => (Request::KeyRotate { id: id(Key, &key_id)? }, View::Fields),
            KeyCommand::Refresh { key_id } => (
                Request::KeyRefresh { id: id(Key, &key_id)? },
                View::Table(VERSION_COLUMNS),
            ),
            KeyCommand::Versions { key_id } => (
                Request::KeyVersions { id: id(Key, &key_id)? },
                View::Table(VERSION_COLUMNS),
            ),
            KeyCommand::Version { key_id, version_id } => (
                Request::KeyVersionGet {
                    key_id: id(Key, &key_id)?,
                    version_id: id(KeyVersion, &version_id)?,
                },
                View::Fields,
            ),
            KeyCommand::DisableVersion {
                key_id,
                version_id,
                force,
            } => (
                Request::KeyVersionDisable {
                    key_id: id(Key, &key_id)?,
                    version_id: id(KeyVersion, &version_id)?,
                    force,
                },
                View::Fields,
            ),
            KeyCommand::EnableVersion { key_id, version_id } => (
                Request::KeyVersionEnable {
                    key_id: id(Key, &key_id)?,
                    version_id: id(KeyVersion, &version_id)?,
                },
                View::Fields,
            ),
            KeyCommand::ScheduleDeletion { key_id, when } => (
                Request::KeyScheduleDeletion {
                    id: id(Key, &key_id)?,
                    when: deletion_time(&when)?,
                },
                View::Fields,
            ),
            KeyCommand::CancelDeletion { key_id } => {
                (Request::KeyCancelDeletion { id: id(Key, &key_id)? }, View::Fields)
            }
        },
        KmsCommand::Encrypt(a) => (
            Request::Encrypt {
                key_id: opt_id(Key, &a.key)?,
                plaintext: plaintext_base64(&a.input)?,
                associated_data: a.aad.associated_data,
            },
            View::Fields,
        ),
        KmsCommand::Decrypt(a) => (
            Request::Decrypt {
                ciphertext: arg_or_stdin(&a.ciphertext)?,
                key_id: opt_id(Key, &a.key)?,
                associated_data: a.aad.associated_data,
            },
            View::Decrypted { raw: a.raw },
        ),
        KmsCommand::GenerateDek(a) => (
            Request::GenerateDek {
                key_id: opt_id(Key, &a.key)?,
                include_plaintext: !a.no_plaintext,
                associated_data: a.aad.associated_data,
            },
            View::Fields,
        ),
        KmsCommand::Rewrap(a) => (
            Request::Rewrap {
                ciphertext: arg_or_stdin(&a.ciphertext)?,
                key_id: opt_id(Key, &a.key)?,
                associated_data: a.aad.associated_data,
            },
            View::Fields,
        ),
        KmsCommand::Compliance { max_age_days } => (Request::Compliance { max_age_days }, View::Compliance),
        KmsCommand::Audit(AuditCommand::Verify) => (Request::AuditVerify, View::AuditVerify),
        KmsCommand::Region(r) => match r {
            // Always JSON: the very file `region add --public-key` reads.
            RegionCommand::Identity => (Request::RegionIdentity, View::Json),
            RegionCommand::Add {
                name,
                endpoint,
                public_key,
            } => {
                let text = std::fs::read_to_string(&public_key)
                    .with_context(|| format!("reading {}", public_key.display()))?;
                let identity = kms_core::replication::PublishedIdentity::parse(&text)
                    .with_context(|| format!("{} is not a region identity", public_key.display()))?;
                anyhow::ensure!(
                    identity.region == name,
                    "{} is the identity of region {}, not {name}",
                    public_key.display(),
                    identity.region
                );
                (
                    Request::RegionAdd {
                        name,
                        endpoint,
                        signing_key: identity.signing_key,
                        wrapping_key: identity.wrapping_key,
                    },
                    View::Fields,
                )
            }
            RegionCommand::List => (
                Request::RegionList,
                View::Table(&[("NAME", "name"), ("ENDPOINT", "endpoint"), ("REGISTERED", "timeCreated")]),
            ),
            RegionCommand::Remove { name } => (Request::RegionRemove { name }, View::Fields),
        },
        KmsCommand::Audit(AuditCommand::List { from, limit }) => {
            (Request::AuditList { from, limit }, View::Table(AUDIT_COLUMNS))
        }
        KmsCommand::RunScheduler => (Request::SchedulerRun, View::Scheduler),
        KmsCommand::Status => (Request::Status, View::Fields),
        KmsCommand::Jwks => unreachable!("answered locally in run"),
    })
}

pub fn run(global: &GlobalOpts, args: KmsArgs) -> anyhow::Result<ExitCode> {
    if let KmsCommand::Jwks = args.command {
        let key = sealstore::external_kms::token::ClientKey::new(
            global.data_dir.join(super::EKM_CLIENT_KEY_FILE),
            String::new(),
        );
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&global.data_dir)?;
        println!("{}", key.jwks().map_err(anyhow::Error::msg)?);
        return Ok(ExitCode::SUCCESS);
    }
    let (req, view) = request(args.command)?;
    let value = dispatch(global, req)?;
    let mut code = ExitCode::SUCCESS;
    if let View::AuditVerify = view {
        if value["failure"].is_string() {
            code = ExitCode::FAILURE;
        }
    }
    if let View::Decrypted { raw: true } = view {
        let plain = B64
            .decode(value["plaintext"].as_str().unwrap_or_default())
            .context("server sent bad base64")?;
        std::io::stdout().write_all(&plain)?;
        return Ok(code);
    }
    if global.json || matches!(view, View::Json) {
        output::json(&value);
        return Ok(code);
    }
    match view {
        View::Fields | View::Decrypted { .. } => output::fields(&value),
        View::Json => unreachable!("printed above"),
        View::Table(columns) => output::table(&value, columns),
        View::Compliance => {
            let findings = value["findings"].as_array().cloned().unwrap_or_default();
            println!(
                "rule {}: {} enabled key(s) checked, {} with a current version older than {} days",
                value["rule"].as_str().unwrap_or_default(),
                value["keysChecked"],
                findings.len(),
                value["maxAgeDays"]
            );
            if !findings.is_empty() {
                output::table(
                    &value["findings"],
                    &[
                        ("KEY", "keyId"),
                        ("NAME", "displayName"),
                        ("LAST ROTATED", "lastRotated"),
                        ("AGE (DAYS)", "ageDays"),
                    ],
                );
                println!("\nremediate with:");
                for f in findings {
                    println!("  {}", f["remediation"].as_str().unwrap_or_default());
                }
            }
        }
        View::AuditVerify => match value["failure"].as_str() {
            None => {
                println!("audit log intact: {} entries verified", value["entriesChecked"]);
                println!("head hash {}", value["headHash"].as_str().unwrap_or_default());
            }
            Some(f) => println!("audit log BROKEN after {} good entries: {f}", value["entriesChecked"]),
        },
        View::Scheduler => {
            let n = |f: &str| value[f].as_array().map_or(0, Vec::len);
            println!(
                "rotated {} key(s), purged {} vault(s) and {} key(s)",
                n("rotated"),
                n("purgedVaults"),
                n("purgedKeys")
            );
        }
    }
    Ok(code)
}
