//! Keys and key versions on a vault's management endpoint. The vault comes from the
//! endpoint, so a key of another vault is "not found" here.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use kms_core::byok::WrappedKey;
use kms_core::iam::{ResourceKind, Target, Verb};
use kms_core::{
    CreateKey, DefinedTags, FreeformTags, Key, KeyShape, KeySpec, KeyVersion, KeyWrapping, Ocid, ProtectionMode,
    ResourceType, UpdateResource,
};
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::vaults::{compartment_id, refuse_defined_tags, ScheduleDeletionDetails};
use super::{paging, wire, Call, Reply};

/// Auto-rotation interval when a request turns auto-rotation on without naming one.
const DEFAULT_ROTATION_INTERVAL_DAYS: u32 = 90;

fn target(key: &Key) -> Target<'_> {
    Target {
        vault_id: Some(key.vault_id.as_str()),
        key_id: Some(key.id.as_str()),
    }
}

/// The key `id` of `vault`, if the caller may `verb` it (404 otherwise).
pub(crate) fn authorized(call: &Call<'_>, vault: &Ocid, id: &str, verb: Verb) -> Result<Key, ApiError> {
    let what = format_args!("key {id}");
    let id = Ocid::parse(ResourceType::Key, id).map_err(|_| ApiError::not_found(what))?;
    let key = call
        .kms
        .get_key(&id)
        .ok()
        .filter(|k| &k.vault_id == vault)
        .ok_or_else(|| ApiError::not_found(what))?;
    call.require(verb, ResourceKind::Keys, &key.compartment_id, target(&key), what)?;
    Ok(key)
}

/// `GET …/20180608/keys?compartmentId=…[&protectionMode][&algorithm][&length]`: the keys of
/// `vault`, or of every vault on the regional endpoint. sealstore extension: without
/// `compartmentId`, the keys of every compartment the caller may inspect.
pub(crate) fn list(call: &Call<'_>, vault: Option<&Ocid>) -> Result<Reply, ApiError> {
    let compartment = call.query.get("compartmentId").map(|c| compartment_id(c)).transpose()?;
    let mode = match call.query.get("protectionMode") {
        None => None,
        Some(m) => Some(ProtectionMode::parse(m).ok_or_else(|| {
            ApiError::invalid(format!("protectionMode must be HSM, SOFTWARE or EXTERNAL, not '{m}'"))
        })?),
    };
    let algorithm = call.query.get("algorithm");
    let curve = call.query.get("curveId");
    let length = match call.query.get("length") {
        None => None,
        Some(l) => Some(
            l.parse::<u32>()
                .map_err(|_| ApiError::invalid(format!("length must be a number, not '{l}'")))?,
        ),
    };
    let keys: Vec<Key> = call
        .kms
        .list_keys(vault, compartment.as_ref())?
        .into_iter()
        .filter(|k| mode.is_none_or(|m| k.protection_mode == m))
        .filter(|k| algorithm.is_none_or(|a| k.key_shape.algorithm.eq_ignore_ascii_case(a)))
        .filter(|k| length.is_none_or(|l| k.key_shape.length == l))
        .filter(|k| {
            curve.is_none_or(|c| {
                k.key_shape
                    .curve_id
                    .as_deref()
                    .is_some_and(|kc| kc.eq_ignore_ascii_case(c))
            })
        })
        .filter(|k| call.may(Verb::Inspect, ResourceKind::Keys, &k.compartment_id, target(k)))
        .collect();
    let (page, next) = paging::page(keys, call.query)?;
    Ok(Reply::list(page.iter().map(wire::key_summary).collect(), next))
}

/// `GET …/20180608/keys/{id}`
pub(crate) fn get(call: &Call<'_>, vault: &Ocid, id: &str) -> Result<Reply, ApiError> {
    Ok(Reply::resource(wire::key(&authorized(call, vault, id, Verb::Read)?)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeyShapeDetails {
    algorithm: Option<String>,
    length: Option<u32>,
    curve_id: Option<String>,
}

impl KeyShapeDetails {
    /// The shape of a master key: AES 16/24/32, RSA 256/384/512 or ECDSA 32/48/66 bytes with
    /// its curve, as OCI's; anything else is refused.
    pub(super) fn spec(&self) -> Result<KeySpec, ApiError> {
        let algorithm = self
            .algorithm
            .clone()
            .ok_or_else(|| ApiError::missing("keyShape.algorithm"))?;
        let length = self.length.ok_or_else(|| ApiError::missing("keyShape.length"))?;
        Ok(KeyShape {
            algorithm,
            length,
            curve_id: self.curve_id.clone(),
        }
        .spec()?)
    }

    /// Data encryption keys are AES-256: anything else is refused.
    pub(super) fn require_aes256(&self) -> Result<(), ApiError> {
        match self.spec() {
            Ok(KeySpec::AES_256) => Ok(()),
            _ => Err(ApiError::invalid(
                "keyShape must be {\"algorithm\": \"AES\", \"length\": 32}: sealstore's data encryption keys are AES-256",
            )),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AutoRotationDetails {
    rotation_interval_in_days: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateKeyDetails {
    compartment_id: Option<String>,
    display_name: Option<String>,
    key_shape: Option<KeyShapeDetails>,
    protection_mode: Option<String>,
    #[serde(default)]
    is_auto_rotation_enabled: bool,
    auto_key_rotation_details: Option<AutoRotationDetails>,
    #[serde(default)]
    freeform_tags: FreeformTags,
    defined_tags: Option<DefinedTags>,
    external_key_reference: Option<Value>,
}

/// `POST …/20180608/keys` (the vault is the endpoint's).
pub(crate) fn create(call: &Call<'_>, vault: &Ocid) -> Result<Reply, ApiError> {
    let details: CreateKeyDetails = call.json()?;
    let key = call
        .kms
        .create_key(&call.principal, create_request(call, vault, details)?)?;
    Ok(Reply::resource(wire::key(&key)))
}

/// The key `details` ask for in `vault`, once the caller may read the vault and manage keys in
/// the compartment.
fn create_request(call: &Call<'_>, vault: &Ocid, details: CreateKeyDetails) -> Result<CreateKey, ApiError> {
    let compartment = compartment_id(
        details
            .compartment_id
            .as_deref()
            .ok_or_else(|| ApiError::missing("compartmentId"))?,
    )?;
    let display_name = details.display_name.ok_or_else(|| ApiError::missing("displayName"))?;
    let spec = details.key_shape.ok_or_else(|| ApiError::missing("keyShape"))?.spec()?;
    let protection_mode = match details.protection_mode.as_deref() {
        None => None,
        Some(m) => Some(ProtectionMode::parse(m).ok_or_else(|| {
            ApiError::invalid(format!("protectionMode must be HSM, SOFTWARE or EXTERNAL, not '{m}'"))
        })?),
    };
    let external_key_id = match &details.external_key_reference {
        Some(_) if protection_mode.is_some_and(|m| m != ProtectionMode::External) => {
            return Err(ApiError::invalid("externalKeyReference is only for EXTERNAL keys"))
        }
        Some(reference) => Some(
            reference["externalKeyId"]
                .as_str()
                .ok_or_else(|| ApiError::missing("externalKeyReference.externalKeyId"))?
                .to_owned(),
        ),
        None => None,
    };
    refuse_defined_tags(&details.defined_tags)?;
    let interval = details.is_auto_rotation_enabled.then(|| {
        details
            .auto_key_rotation_details
            .and_then(|d| d.rotation_interval_in_days)
            .unwrap_or(DEFAULT_ROTATION_INTERVAL_DAYS)
    });
    // The vault must be one the caller can see, and keys manageable in the compartment.
    let vault_record = call
        .kms
        .get_vault(vault)
        .map_err(|_| ApiError::not_found(format_args!("vault {vault}")))?;
    let vault_target = Target {
        vault_id: Some(vault.as_str()),
        key_id: None,
    };
    call.require(
        Verb::Read,
        ResourceKind::Vaults,
        &vault_record.compartment_id,
        vault_target,
        format_args!("vault {vault}"),
    )?;
    call.require(
        Verb::Manage,
        ResourceKind::Keys,
        &compartment,
        vault_target,
        format_args!("compartment {compartment}"),
    )?;
    Ok(CreateKey {
        vault_id: vault.clone(),
        compartment_id: Some(compartment),
        display_name,
        protection_mode,
        key_shape: Some(spec.shape()),
        auto_rotation_interval_days: interval,
        freeform_tags: details.freeform_tags,
        external_key_id,
    })
}

/// OCI's `WrappedImportKey`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WrappedImportKeyDetails {
    key_material: Option<String>,
    wrapping_algorithm: Option<String>,
}

impl WrappedImportKeyDetails {
    fn wrapped(details: Option<Self>) -> Result<WrappedKey, ApiError> {
        let details = details.ok_or_else(|| ApiError::missing("wrappedImportKey"))?;
        let algorithm = KeyWrapping::parse(
            details
                .wrapping_algorithm
                .as_deref()
                .ok_or_else(|| ApiError::missing("wrappedImportKey.wrappingAlgorithm"))?,
        )?;
        let material = B64
            .decode(
                details
                    .key_material
                    .as_deref()
                    .ok_or_else(|| ApiError::missing("wrappedImportKey.keyMaterial"))?,
            )
            .map_err(|_| ApiError::invalid("wrappedImportKey.keyMaterial must be base64"))?;
        Ok(WrappedKey { algorithm, material })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImportKeyDetails {
    #[serde(flatten)]
    key: CreateKeyDetails,
    wrapped_import_key: Option<WrappedImportKeyDetails>,
}

/// `POST …/20180608/keys/import`: a key whose first version is the caller's material, wrapped
/// under the vault's wrapping key.
pub(crate) fn import(call: &Call<'_>, vault: &Ocid) -> Result<Reply, ApiError> {
    let details: ImportKeyDetails = call.json()?;
    if details.key.external_key_reference.is_some() {
        return Err(ApiError::invalid(
            "externalKeyReference is not for imported keys: EXTERNAL keys' material stays in the external key manager",
        ));
    }
    let wrapped = WrappedImportKeyDetails::wrapped(details.wrapped_import_key)?;
    let request = create_request(call, vault, details.key)?;
    let key = call.kms.import_key(&call.principal, request, &wrapped)?;
    Ok(Reply::resource(wire::key(&key)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImportKeyVersionDetails {
    wrapped_import_key: Option<WrappedImportKeyDetails>,
}

/// `POST …/20180608/keys/{id}/keyVersions/import`: a new version of the key made of the
/// caller's material; it becomes the key's current version.
pub(crate) fn import_version(call: &Call<'_>, vault: &Ocid, id: &str) -> Result<Reply, ApiError> {
    let key = authorized(call, vault, id, Verb::Manage)?;
    let details: ImportKeyVersionDetails = call.json()?;
    let wrapped = WrappedImportKeyDetails::wrapped(details.wrapped_import_key)?;
    let version = call.kms.import_key_version(&call.principal, &key.id, &wrapped)?;
    Ok(Reply::resource(wire::key_version(&version)))
}

/// `GET …/20180608/wrappingKeys`: the vault's wrapping key (made on first use). Its public key
/// is all it shows; reading it needs `read vaults`.
pub(crate) fn wrapping_key(call: &Call<'_>, vault: &Ocid) -> Result<Reply, ApiError> {
    let record = call
        .kms
        .get_vault(vault)
        .map_err(|_| ApiError::not_found(format_args!("vault {vault}")))?;
    call.require(
        Verb::Read,
        ResourceKind::Vaults,
        &record.compartment_id,
        Target {
            vault_id: Some(vault.as_str()),
            key_id: None,
        },
        format_args!("vault {vault}"),
    )?;
    let key = call.kms.wrapping_key(&call.principal, vault)?;
    Ok(Reply::plain(serde_json::to_value(&key).expect("records serialize")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateKeyDetails {
    display_name: Option<String>,
    freeform_tags: Option<FreeformTags>,
    defined_tags: Option<DefinedTags>,
    is_auto_rotation_enabled: Option<bool>,
    auto_key_rotation_details: Option<AutoRotationDetails>,
}

/// `PUT …/20180608/keys/{id}`
pub(crate) fn update(call: &Call<'_>, vault: &Ocid, id: &str) -> Result<Reply, ApiError> {
    let key = authorized(call, vault, id, Verb::Manage)?;
    call.check_if_match(&wire::key(&key))?;
    let details: UpdateKeyDetails = call.json()?;
    refuse_defined_tags(&details.defined_tags)?;
    let requested_interval = details
        .auto_key_rotation_details
        .and_then(|d| d.rotation_interval_in_days);
    let auto_rotation = match (details.is_auto_rotation_enabled, requested_interval) {
        (Some(false), _) => Some(None),
        (Some(true), interval) => Some(Some(
            interval.unwrap_or(
                key.auto_key_rotation_details
                    .as_ref()
                    .map_or(DEFAULT_ROTATION_INTERVAL_DAYS, |d| d.rotation_interval_in_days),
            ),
        )),
        (None, Some(interval)) => Some(Some(interval)),
        (None, None) => None,
    };
    let key = call.kms.update_key(
        &call.principal,
        &key.id,
        UpdateResource {
            display_name: details.display_name,
            freeform_tags: details.freeform_tags,
            auto_rotation_interval_days: auto_rotation,
        },
    )?;
    Ok(Reply::resource(wire::key(&key)))
}

/// `POST …/20180608/keys/{id}/actions/{enable|disable|scheduleDeletion|cancelDeletion}`, and
/// sealstore's `refresh` for keys of EXTERNAL vaults: pick up the versions the key gained in
/// its key manager; answers the versions it added.
pub(crate) fn action(call: &Call<'_>, vault: &Ocid, id: &str, action: &str) -> Result<Reply, ApiError> {
    if !matches!(
        action,
        "enable" | "disable" | "scheduleDeletion" | "cancelDeletion" | "refresh"
    ) {
        return Err(ApiError::not_found(format_args!("key action '{action}'")));
    }
    let key = authorized(call, vault, id, Verb::Manage)?;
    call.check_if_match(&wire::key(&key))?;
    if action == "refresh" {
        let versions = call.kms.refresh_external_key(&call.principal, &key.id)?;
        return Ok(Reply::list(
            versions.iter().map(wire::key_version_summary).collect(),
            None,
        ));
    }
    let (kms, who) = (call.kms, &call.principal);
    let key = match action {
        "enable" => kms.enable_key(who, &key.id)?,
        "disable" => kms.disable_key(who, &key.id)?,
        "scheduleDeletion" => {
            let details: ScheduleDeletionDetails = call.json()?;
            kms.schedule_key_deletion(who, &key.id, details.time()?)?
        }
        _ => kms.cancel_key_deletion(who, &key.id)?,
    };
    Ok(Reply::resource(wire::key(&key)))
}

/// `GET …/20180608/keys/{id}/keyVersions`
pub(crate) fn list_versions(call: &Call<'_>, vault: &Ocid, id: &str) -> Result<Reply, ApiError> {
    let key = authorized(call, vault, id, Verb::Inspect)?;
    let versions: Vec<KeyVersion> = call.kms.list_key_versions(&key.id)?;
    let (page, next) = paging::page(versions, call.query)?;
    Ok(Reply::list(page.iter().map(wire::key_version_summary).collect(), next))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateKeyVersionDetails {
    external_key_version_id: Option<String>,
}

/// `POST …/20180608/keys/{id}/keyVersions`: rotation. The new version becomes the key's
/// current version; older ones keep decrypting.
pub(crate) fn create_version(call: &Call<'_>, vault: &Ocid, id: &str) -> Result<Reply, ApiError> {
    let key = authorized(call, vault, id, Verb::Manage)?;
    let details: CreateKeyVersionDetails = call.json()?;
    if details.external_key_version_id.is_some() {
        return Err(ApiError::invalid(
            "externalKeyVersionId is only for keys of EXTERNAL vaults",
        ));
    }
    let version = call.kms.create_key_version(&call.principal, &key.id)?;
    Ok(Reply::resource(wire::key_version(&version)))
}

/// `GET …/20180608/keys/{id}/keyVersions/{version}`
pub(crate) fn get_version(call: &Call<'_>, vault: &Ocid, id: &str, version: &str) -> Result<Reply, ApiError> {
    let key = authorized(call, vault, id, Verb::Read)?;
    let what = format_args!("key version {version}");
    let version = Ocid::parse(ResourceType::KeyVersion, version).map_err(|_| ApiError::not_found(what))?;
    let version = call
        .kms
        .get_key_version(&key.id, &version)
        .map_err(|_| ApiError::not_found(what))?;
    Ok(Reply::resource(wire::key_version(&version)))
}

/// sealstore's `disable` of a key version: `force` disables it even though data still
/// depends on it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DisableVersionDetails {
    #[serde(default)]
    force: bool,
}

/// `POST …/20180608/keys/{id}/keyVersions/{version}/actions/{scheduleDeletion|cancelDeletion}`,
/// and sealstore's `disable` and `enable` (a disabled version neither encrypts nor decrypts).
pub(crate) fn version_action(
    call: &Call<'_>,
    vault: &Ocid,
    id: &str,
    version: &str,
    action: &str,
) -> Result<Reply, ApiError> {
    if !matches!(action, "scheduleDeletion" | "cancelDeletion" | "disable" | "enable") {
        return Err(ApiError::not_found(format_args!("key version action '{action}'")));
    }
    let key = authorized(call, vault, id, Verb::Manage)?;
    let what = format_args!("key version {version}");
    let version = Ocid::parse(ResourceType::KeyVersion, version).map_err(|_| ApiError::not_found(what))?;
    let current = call
        .kms
        .get_key_version(&key.id, &version)
        .map_err(|_| ApiError::not_found(what))?;
    call.check_if_match(&wire::key_version(&current))?;
    let (kms, who) = (call.kms, &call.principal);
    let version = match action {
        "scheduleDeletion" => {
            let details: ScheduleDeletionDetails = call.json()?;
            kms.schedule_key_version_deletion(who, &key.id, &version, details.time()?)?
        }
        "disable" => {
            let details: DisableVersionDetails = call.json()?;
            kms.disable_key_version(who, &key.id, &version, details.force)?
        }
        "enable" => kms.enable_key_version(who, &key.id, &version)?,
        _ => kms.cancel_key_version_deletion(who, &key.id, &version)?,
    };
    Ok(Reply::resource(wire::key_version(&version)))
}
