//! `sealstore kms …`: key management from the command line.
//!
//! Each command becomes an admin [`Request`]; it goes to the running server over the admin
//! socket, or — when no server runs — straight to the store.

use std::io::{Read, Write};
use std::process::ExitCode;

use crate::admin::{parse_id, Request};
use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use clap::{Args, Subcommand, ValueEnum};
use kms_core::{KeySpec, ProtectionMode, ResourceType, Timestamp};
use serde_json::{json, Value};

use super::api::Api;
use super::output::{self, Column};
use super::{dispatch, GlobalOpts};

#[derive(Debug, Args)]
pub(super) struct KmsArgs {
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
    /// Make this region a member of the tenancy whose home region is HOME: it adopts that
    /// tenancy's id and IAM (users, groups, policies, compartments), which from then on are
    /// changed in HOME only and replicated here. Both regions must have registered each other.
    JoinTenancy {
        /// The home region (as registered with `kms region add`).
        home: String,
        /// A CA certificate (PEM) to trust for the home region over https.
        #[arg(long, value_name = "FILE")]
        replication_ca_cert: Option<std::path::PathBuf>,
    },
    /// This region's tenancy: its id, its home region, the IAM revision held here and, on the
    /// home region, the member regions and what they acknowledged.
    Tenancy,
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
    /// Back up a vault (with --include-keys, every key that is not deleted, with every
    /// version), sealed so that only this deployment restores it (docs/KMS_BACKUP.md).
    Backup {
        vault_id: String,
        /// Include the vault's keys.
        #[arg(long)]
        include_keys: bool,
        #[command(flatten)]
        location: BackupLocationArgs,
    },
    /// Restore a vault backup from --uri or --bucket/--object: the vault comes back ACTIVE
    /// with its id and the keys the backup holds (refused while the vault exists).
    Restore {
        /// Compartment [default: the tenancy].
        #[arg(long)]
        compartment: Option<String>,
        #[command(flatten)]
        location: BackupLocationArgs,
    },
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

/// Where a backup goes or comes from (docs/KMS_BACKUP.md).
#[derive(Debug, Args)]
#[group(required = true, multiple = true)]
struct BackupLocationArgs {
    /// A URL that takes an HTTP PUT of the backup (a backup) or answers a GET with it (a
    /// restore): a pre-authenticated request URI, e.g. a presigned S3 URL.
    #[arg(long, conflicts_with_all = ["bucket", "object"])]
    uri: Option<String>,
    /// A bucket of the running server's S3 face.
    #[arg(long, requires = "object")]
    bucket: Option<String>,
    /// The object in --bucket.
    #[arg(long, requires = "bucket")]
    object: Option<String>,
}

impl BackupLocationArgs {
    /// OCI's `backupLocation`.
    fn to_json(&self) -> Value {
        match (&self.uri, &self.bucket, &self.object) {
            (Some(uri), _, _) => json!({ "destination": "PRE_AUTHENTICATED_REQUEST_URI", "uri": uri }),
            (None, bucket, object) => json!({
                "destination": "BUCKET",
                "namespace": "sealstore",
                "bucketName": bucket,
                "objectName": object,
            }),
        }
    }
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Create a master key (AES-256 unless --shape says otherwise).
    Create {
        /// Vault to create it in.
        #[arg(long)]
        vault: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Key shape: AES-128, AES-192, AES-256, RSA-2048, RSA-3072, RSA-4096, ECDSA-P256,
        /// ECDSA-P384 or ECDSA-P521.
        #[arg(long, default_value = "AES-256", value_parser = parse_shape)]
        shape: Value,
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
    /// Back up a key with every version, sealed so that only this deployment restores it, to
    /// --uri or --bucket/--object (docs/KMS_BACKUP.md).
    Backup {
        key_id: String,
        #[command(flatten)]
        location: BackupLocationArgs,
    },
    /// Restore a key backup from --uri or --bucket/--object into a vault: the key comes back
    /// with its id and every version (refused while the key exists).
    Restore {
        /// The vault to restore it into.
        #[arg(long)]
        vault: String,
        #[command(flatten)]
        location: BackupLocationArgs,
    },
    /// Bring your own key: create a key from key material you hold. The material is wrapped
    /// here under the vault's RSA-4096 wrapping key (RSA_OAEP_AES_SHA256) and unwrapped only
    /// inside the server; the key's first version has origin EXTERNAL.
    Import {
        /// Vault to create it in.
        #[arg(long)]
        vault: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Key shape of the material (see `create --shape`).
        #[arg(long, default_value = "AES-256", value_parser = parse_shape)]
        shape: Value,
        /// The key material: the raw key for AES (16, 24 or 32 bytes), an unencrypted PKCS#8
        /// private key (DER, or PEM "BEGIN PRIVATE KEY") for RSA and ECDSA.
        #[arg(long, value_name = "FILE")]
        material: std::path::PathBuf,
        /// Compartment [default: the vault's].
        #[arg(long)]
        compartment: Option<String>,
        /// Protection mode [default: SOFTWARE].
        #[arg(long, value_parser = parse_protection_mode)]
        protection_mode: Option<ProtectionMode>,
    },
    /// Bring your own key: rotate a key to a new version made of key material you hold (it
    /// must fit the key's shape; see `import --material`).
    ImportVersion {
        key_id: String,
        /// The key material (see `import --material`).
        #[arg(long, value_name = "FILE")]
        material: std::path::PathBuf,
    },
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

/// `--shape`: OCI's `keyShape` for a name such as `RSA-3072` or `ECDSA-P384`.
fn parse_shape(s: &str) -> Result<Value, String> {
    let spec = KeySpec::from_name(s).ok_or_else(|| {
        let names: Vec<String> = KeySpec::ALL.iter().map(|spec| spec.name()).collect();
        format!("'{s}' is not one of {}", names.join(", "))
    })?;
    Ok(json!(spec.shape()))
}

/// The compartment a new key of `vault` goes to: `chosen`, or (as in the console) the vault's.
fn key_compartment(api: &Api, vault: &str, chosen: &Option<String>) -> anyhow::Result<String> {
    Ok(match compartment(chosen)? {
        Some(c) => c,
        None => api.get(&format!("/20180608/vaults/{vault}"))?["compartmentId"]
            .as_str()
            .context("the vault has no compartmentId")?
            .to_owned(),
    })
}

/// Key material from `path`: raw bytes, or the DER inside a PEM `PRIVATE KEY`.
fn read_material(path: &std::path::Path) -> anyhow::Result<zeroize::Zeroizing<Vec<u8>>> {
    let raw = zeroize::Zeroizing::new(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?);
    let Some(text) = std::str::from_utf8(&raw).ok().map(str::trim) else {
        return Ok(raw);
    };
    if let Some(body) = text
        .strip_prefix("-----BEGIN PRIVATE KEY-----")
        .and_then(|t| t.strip_suffix("-----END PRIVATE KEY-----"))
    {
        let b64 = zeroize::Zeroizing::new(body.split_whitespace().collect::<String>());
        return Ok(zeroize::Zeroizing::new(
            B64.decode(b64.as_bytes())
                .with_context(|| format!("{}: the PEM body is not base64", path.display()))?,
        ));
    }
    if text.starts_with("-----BEGIN") {
        bail!(
            "{}: only unencrypted PKCS#8 PEM (\"BEGIN PRIVATE KEY\") or DER is accepted; convert with `openssl pkcs8 -topk8 -nocrypt`",
            path.display()
        );
    }
    Ok(raw)
}

/// `{"keyMaterial", "wrappingAlgorithm"}`: `material` wrapped under `vault`'s wrapping key.
fn wrapped_import_key(api: &Api, vault: &str, material: &std::path::Path) -> anyhow::Result<Value> {
    let material = read_material(material)?;
    let wrapping = api.get(&format!("/kms/{vault}/management/20180608/wrappingKeys"))?;
    let pem = wrapping["publicKey"]
        .as_str()
        .context("the wrapping key has no publicKey")?;
    let der = kms_core::protection::public_key_der(pem)?;
    let algorithm = kms_core::KeyWrapping::RsaOaepAesSha256;
    let wrapped = kms_core::byok::wrap_key_material(&der, algorithm, &material)?;
    Ok(json!({ "keyMaterial": B64.encode(wrapped), "wrappingAlgorithm": algorithm.as_str() }))
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
    ("VAULT", "vaultId"),
    ("AUTO-ROTATE", "isAutoRotationEnabled"),
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

/// Runs one command: KMS API calls for vaults, keys and crypto, admin requests for the rest.
fn answer(global: &GlobalOpts, cmd: KmsCommand) -> anyhow::Result<(Value, View)> {
    use ResourceType::{Key, Vault};
    let api = Api::new(global);
    Ok(match cmd {
        KmsCommand::Vault(v) => match v {
            VaultCommand::Create {
                name,
                compartment: c,
                r#type,
                external_vault_url,
            } => {
                let compartment = match compartment(&c)? {
                    Some(c) => c,
                    None => api.tenancy()?,
                };
                let mut body = json!({
                    "compartmentId": compartment,
                    "displayName": name,
                    "vaultType": match r#type {
                        VaultTypeArg::Default => "DEFAULT",
                        VaultTypeArg::VirtualPrivate => "VIRTUAL_PRIVATE",
                        VaultTypeArg::External => "EXTERNAL",
                    },
                });
                if let Some(url) = external_vault_url {
                    body["externalKeyManagerMetadata"] = json!({ "externalVaultEndpointUrl": url });
                }
                (api.post("/20180608/vaults", body)?, View::Fields)
            }
            VaultCommand::List { compartment: c } => (
                api.list(&with_compartment("/20180608/vaults", compartment(&c)?))?,
                View::Table(VAULT_COLUMNS),
            ),
            VaultCommand::Get { vault_id } => (api.get(&vault_path(&vault_id)?)?, View::Fields),
            VaultCommand::Update { vault_id, name } => (
                api.put(&vault_path(&vault_id)?, json!({ "displayName": name }))?,
                View::Fields,
            ),
            VaultCommand::ScheduleDeletion { vault_id, when } => (
                api.post(
                    &format!("{}/actions/scheduleDeletion", vault_path(&vault_id)?),
                    deletion_details(global, &when)?,
                )?,
                View::Fields,
            ),
            VaultCommand::CancelDeletion { vault_id } => (
                api.post(&format!("{}/actions/cancelDeletion", vault_path(&vault_id)?), json!({}))?,
                View::Fields,
            ),
            VaultCommand::Backup {
                vault_id,
                include_keys,
                location,
            } => (
                api.post(
                    &format!("{}/actions/backup", vault_path(&vault_id)?),
                    json!({ "backupLocation": location.to_json(), "isIncludeKeys": include_keys }),
                )?,
                View::Fields,
            ),
            VaultCommand::Restore {
                compartment: c,
                location,
            } => {
                let compartment = match compartment(&c)? {
                    Some(c) => c,
                    None => api.tenancy()?,
                };
                (
                    api.post(
                        &format!("/20180608/vaults/actions/restoreFromObjectStore?compartmentId={compartment}"),
                        json!({ "backupLocation": location.to_json() }),
                    )?,
                    View::Fields,
                )
            }
            VaultCommand::Replicate { vault_id, region } => (
                api.post(
                    &format!("{}/actions/createReplica", vault_path(&vault_id)?),
                    json!({ "replicaRegion": region }),
                )?,
                View::Fields,
            ),
            VaultCommand::Unreplicate { vault_id, region } => (
                api.post(
                    &format!("{}/actions/deleteReplica", vault_path(&vault_id)?),
                    json!({ "replicaRegion": region }),
                )?,
                View::Fields,
            ),
            VaultCommand::Replicas { vault_id } => (
                api.list(&format!("{}/actions/listReplicas", vault_path(&vault_id)?))?,
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
                shape,
                compartment: c,
                protection_mode,
                auto_rotate_days,
                external_key_id,
            } => {
                let vault = id(Vault, &vault)?;
                let compartment = key_compartment(&api, vault.as_str(), &c)?;
                let mut body = json!({
                    "compartmentId": compartment,
                    "displayName": name,
                    "keyShape": shape,
                });
                if let Some(mode) = protection_mode {
                    body["protectionMode"] = json!(mode);
                }
                if let Some(days) = auto_rotate_days {
                    body["isAutoRotationEnabled"] = json!(true);
                    body["autoKeyRotationDetails"] = json!({ "rotationIntervalInDays": days });
                }
                if let Some(external) = external_key_id {
                    body["externalKeyReference"] = json!({ "externalKeyId": external });
                }
                (
                    api.post(&format!("/kms/{vault}/management/20180608/keys"), body)?,
                    View::Fields,
                )
            }
            KeyCommand::List { vault, compartment: c } => {
                let keys = match opt_id(Vault, &vault)? {
                    Some(vault) => format!("/kms/{vault}/management/20180608/keys"),
                    None => "/20180608/keys".to_owned(),
                };
                (
                    api.list(&with_compartment(&keys, compartment(&c)?))?,
                    View::Table(KEY_COLUMNS),
                )
            }
            KeyCommand::Get { key_id } => (api.get(&key_path(&key_id)?)?, View::Fields),
            KeyCommand::Update {
                key_id,
                name,
                auto_rotate_days,
                no_auto_rotate,
            } => {
                let mut body = json!({});
                if let Some(name) = name {
                    body["displayName"] = json!(name);
                }
                match (auto_rotate_days, no_auto_rotate) {
                    (Some(days), _) => {
                        body["isAutoRotationEnabled"] = json!(true);
                        body["autoKeyRotationDetails"] = json!({ "rotationIntervalInDays": days });
                    }
                    (None, true) => body["isAutoRotationEnabled"] = json!(false),
                    (None, false) => {}
                }
                if body.as_object().is_some_and(|o| o.is_empty()) {
                    bail!("nothing to update: give --name, --auto-rotate-days or --no-auto-rotate");
                }
                (api.put(&key_path(&key_id)?, body)?, View::Fields)
            }
            KeyCommand::Enable { key_id } => (key_action(&api, &key_id, "enable", json!({}))?, View::Fields),
            KeyCommand::Disable { key_id } => (key_action(&api, &key_id, "disable", json!({}))?, View::Fields),
            KeyCommand::Rotate { key_id } => (
                api.post(&format!("{}/keyVersions", key_path(&key_id)?), json!({}))?,
                View::Fields,
            ),
            KeyCommand::Backup { key_id, location } => (
                key_action(&api, &key_id, "backup", json!({ "backupLocation": location.to_json() }))?,
                View::Fields,
            ),
            KeyCommand::Restore { vault, location } => (
                api.post(
                    &format!(
                        "/kms/{}/management/20180608/keys/actions/restoreFromObjectStore",
                        id(Vault, &vault)?
                    ),
                    json!({ "backupLocation": location.to_json() }),
                )?,
                View::Fields,
            ),
            KeyCommand::Import {
                vault,
                name,
                shape,
                material,
                compartment: c,
                protection_mode,
            } => {
                let vault = id(Vault, &vault)?;
                let compartment = key_compartment(&api, vault.as_str(), &c)?;
                let mut body = json!({
                    "compartmentId": compartment,
                    "displayName": name,
                    "keyShape": shape,
                    "wrappedImportKey": wrapped_import_key(&api, vault.as_str(), &material)?,
                });
                if let Some(mode) = protection_mode {
                    body["protectionMode"] = json!(mode);
                }
                (
                    api.post(&format!("/kms/{vault}/management/20180608/keys/import"), body)?,
                    View::Fields,
                )
            }
            KeyCommand::ImportVersion { key_id, material } => {
                let key = api.get(&key_path(&key_id)?)?;
                let vault = key["vaultId"].as_str().context("the key has no vaultId")?;
                let body = json!({ "wrappedImportKey": wrapped_import_key(&api, vault, &material)? });
                (
                    api.post(&format!("{}/keyVersions/import", key_path(&key_id)?), body)?,
                    View::Fields,
                )
            }
            KeyCommand::Refresh { key_id } => (
                key_action(&api, &key_id, "refresh", json!({}))?,
                View::Table(VERSION_COLUMNS),
            ),
            KeyCommand::Versions { key_id } => (
                api.list(&format!("{}/keyVersions", key_path(&key_id)?))?,
                View::Table(VERSION_COLUMNS),
            ),
            KeyCommand::Version { key_id, version_id } => {
                (api.get(&version_path(&key_id, &version_id)?)?, View::Fields)
            }
            KeyCommand::DisableVersion {
                key_id,
                version_id,
                force,
            } => (
                api.post(
                    &format!("{}/actions/disable", version_path(&key_id, &version_id)?),
                    json!({ "force": force }),
                )?,
                View::Fields,
            ),
            KeyCommand::EnableVersion { key_id, version_id } => (
                api.post(
                    &format!("{}/actions/enable", version_path(&key_id, &version_id)?),
                    json!({}),
                )?,
                View::Fields,
            ),
            KeyCommand::ScheduleDeletion { key_id, when } => (
                key_action(&api, &key_id, "scheduleDeletion", deletion_details(global, &when)?)?,
                View::Fields,
            ),
            KeyCommand::CancelDeletion { key_id } => {
                (key_action(&api, &key_id, "cancelDeletion", json!({}))?, View::Fields)
            }
        },
        KmsCommand::Encrypt(a) => {
            let key = match opt_id(Key, &a.key)? {
                Some(key) => key.to_string(),
                None => api.default_key()?,
            };
            let mut body = json!({ "keyId": key, "plaintext": plaintext_base64(&a.input)? });
            add_associated_data(&mut body, &a.aad)?;
            (api.post("/20180608/encrypt", body)?, View::Fields)
        }
        KmsCommand::Decrypt(a) => {
            let ciphertext = arg_or_stdin(&a.ciphertext)?;
            let key = match opt_id(Key, &a.key)? {
                Some(key) => key,
                None => key_of(&ciphertext)?,
            };
            let mut body = json!({ "keyId": key, "ciphertext": ciphertext.trim() });
            add_associated_data(&mut body, &a.aad)?;
            (api.post("/20180608/decrypt", body)?, View::Decrypted { raw: a.raw })
        }
        KmsCommand::GenerateDek(a) => {
            let key = match opt_id(Key, &a.key)? {
                Some(key) => key.to_string(),
                None => api.default_key()?,
            };
            let mut body = json!({
                "keyId": key,
                "keyShape": { "algorithm": "AES", "length": 32 },
                "includePlaintextKey": !a.no_plaintext,
            });
            add_associated_data(&mut body, &a.aad)?;
            (api.post("/20180608/generateDataEncryptionKey", body)?, View::Fields)
        }
        KmsCommand::Rewrap(a) => {
            let ciphertext = arg_or_stdin(&a.ciphertext)?;
            let mut body = json!({ "keyId": key_of(&ciphertext)?, "ciphertext": ciphertext.trim() });
            if let Some(destination) = opt_id(Key, &a.key)? {
                body["destinationKeyId"] = json!(destination);
            }
            add_associated_data(&mut body, &a.aad)?;
            (api.post("/20180608/reencrypt", body)?, View::Fields)
        }
        KmsCommand::Compliance { max_age_days } => (
            dispatch(global, Request::Compliance { max_age_days })?,
            View::Compliance,
        ),
        KmsCommand::Audit(AuditCommand::Verify) => (dispatch(global, Request::AuditVerify)?, View::AuditVerify),
        KmsCommand::Region(r) => match r {
            // Always JSON: the very file `region add --public-key` reads.
            RegionCommand::Identity => (dispatch(global, Request::RegionIdentity)?, View::Json),
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
                    dispatch(
                        global,
                        Request::RegionAdd {
                            name,
                            endpoint,
                            signing_key: identity.signing_key,
                            wrapping_key: identity.wrapping_key,
                        },
                    )?,
                    View::Fields,
                )
            }
            RegionCommand::List => (
                dispatch(global, Request::RegionList)?,
                View::Table(&[
                    ("NAME", "name"),
                    ("ENDPOINT", "endpoint"),
                    ("REGISTERED", "timeCreated"),
                ]),
            ),
            RegionCommand::Remove { name } => (dispatch(global, Request::RegionRemove { name })?, View::Fields),
            RegionCommand::JoinTenancy {
                home,
                replication_ca_cert,
            } => (
                dispatch(
                    global,
                    Request::RegionJoinTenancy {
                        home,
                        replication_ca_cert: replication_ca_cert.map(|p| std::path::absolute(&p)).transpose()?,
                    },
                )?,
                View::Json,
            ),
            RegionCommand::Tenancy => (dispatch(global, Request::RegionTenancy)?, View::Json),
        },
        KmsCommand::Audit(AuditCommand::List { from, limit }) => (
            dispatch(global, Request::AuditList { from, limit })?,
            View::Table(AUDIT_COLUMNS),
        ),
        KmsCommand::RunScheduler => (dispatch(global, Request::SchedulerRun)?, View::Scheduler),
        KmsCommand::Status => (dispatch(global, Request::Status)?, View::Fields),
        KmsCommand::Jwks => unreachable!("answered locally in run"),
    })
}

/// A compartment typed by the user (the tenancy is the root compartment and has a tenancy id).
fn compartment(c: &Option<String>) -> anyhow::Result<Option<String>> {
    Ok(match c.as_deref() {
        None => None,
        Some(s) if s.starts_with("ocid1.tenancy.") => Some(id(ResourceType::Tenancy, s)?.to_string()),
        Some(s) => Some(id(ResourceType::Compartment, s)?.to_string()),
    })
}

fn with_compartment(target: &str, compartment: Option<String>) -> String {
    match compartment {
        Some(c) => format!("{target}?compartmentId={c}"),
        None => target.to_owned(),
    }
}

fn vault_path(vault: &str) -> anyhow::Result<String> {
    Ok(format!("/20180608/vaults/{}", id(ResourceType::Vault, vault)?))
}

/// A key on the regional endpoint, which finds its vault.
fn key_path(key: &str) -> anyhow::Result<String> {
    Ok(format!("/20180608/keys/{}", id(ResourceType::Key, key)?))
}

fn version_path(key: &str, version: &str) -> anyhow::Result<String> {
    Ok(format!(
        "{}/keyVersions/{}",
        key_path(key)?,
        id(ResourceType::KeyVersion, version)?
    ))
}

fn key_action(api: &Api<'_>, key: &str, action: &str, body: Value) -> anyhow::Result<Value> {
    api.post(&format!("{}/actions/{action}", key_path(key)?), body)
}

/// `{"timeOfDeletion"}` for `--days` (from now, by this command's clock) or `--time`; `{}`
/// (the server's default, 30 days) for neither.
fn deletion_details(global: &GlobalOpts, when: &DeletionTime) -> anyhow::Result<Value> {
    let time = match (when.days, &when.time) {
        (Some(days), _) => Some(global.clock().now().plus_days(days)),
        (None, Some(t)) => Some(Timestamp::parse(t)?),
        (None, None) => None,
    };
    Ok(match time {
        Some(t) => json!({ "timeOfDeletion": t }),
        None => json!({}),
    })
}

/// Adds `--associated-data` as the API's `associatedData` map.
fn add_associated_data(body: &mut Value, aad: &AadArg) -> anyhow::Result<()> {
    if let Some(text) = &aad.associated_data {
        let kms_core::AssociatedData::Map(map) = kms_core::AssociatedData::from_json(text)? else {
            unreachable!("JSON associated data is a map")
        };
        body["associatedData"] = json!(map);
    }
    Ok(())
}

/// The key that made a ciphertext, read from its header (a ciphertext names its key and
/// version).
fn key_of(ciphertext: &str) -> anyhow::Result<kms_core::Ocid> {
    let bytes = B64
        .decode(ciphertext.trim())
        .map_err(|e| anyhow::anyhow!("the ciphertext is not valid base64: {e}"))?;
    Ok(kms_core::ciphertext::parse(&bytes)?.key_id)
}

pub(super) fn run(global: &GlobalOpts, args: KmsArgs) -> anyhow::Result<ExitCode> {
    if let KmsCommand::Jwks = args.command {
        let key =
            crate::external_kms::token::ClientKey::new(global.data_dir.join(super::EKM_CLIENT_KEY_FILE), String::new());
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&global.data_dir)?;
        println!("{}", key.jwks().map_err(anyhow::Error::msg)?);
        return Ok(ExitCode::SUCCESS);
    }
    let (value, view) = answer(global, args.command)?;
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
