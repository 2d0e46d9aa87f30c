//! Vaults on the regional endpoint: list, get, create, update, schedule and cancel deletion.

use kms_core::iam::{ResourceKind, Target, Verb};
use kms_core::{
    CreateVault, DefinedTags, FreeformTags, Ocid, ResourceType, Timestamp, UpdateResource, Vault, VaultType,
};
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::{paging, wire, Call, Reply};

fn target(vault: &Vault) -> Target<'_> {
    Target {
        vault_id: Some(vault.id.as_str()),
        key_id: None,
    }
}

/// The vault `id`, if the caller may `verb` it (404 otherwise, as when it does not exist).
pub(crate) fn authorized(call: &Call<'_>, id: &str, verb: Verb) -> Result<Vault, ApiError> {
    let what = format_args!("vault {id}");
    let id = Ocid::parse(ResourceType::Vault, id).map_err(|_| ApiError::not_found(what))?;
    let vault = call.kms.get_vault(&id).map_err(|_| ApiError::not_found(what))?;
    call.require(verb, ResourceKind::Vaults, &vault.compartment_id, target(&vault), what)?;
    Ok(vault)
}

/// Defined tags need tag namespaces, which sealstore does not have: refuse rather than drop.
pub(crate) fn refuse_defined_tags(tags: &Option<DefinedTags>) -> Result<(), ApiError> {
    match tags {
        Some(t) if !t.is_empty() => Err(ApiError::invalid(
            "definedTags are not supported (sealstore has no tag namespaces); use freeformTags",
        )),
        _ => Ok(()),
    }
}

/// Parses a compartment id (the tenancy's or a compartment's).
pub(crate) fn compartment_id(s: &str) -> Result<Ocid, ApiError> {
    Ocid::parse(ResourceType::Compartment, s)
        .or_else(|_| Ocid::parse(ResourceType::Tenancy, s))
        .map_err(|_| ApiError::invalid(format!("'{s}' is not a compartment or tenancy id")))
}

/// `GET /20180608/vaults?compartmentId=…`. sealstore extension: without `compartmentId`, the
/// vaults of every compartment the caller may inspect.
pub(crate) fn list(call: &Call<'_>) -> Result<Reply, ApiError> {
    let compartment = call.query.get("compartmentId").map(|c| compartment_id(c)).transpose()?;
    let vaults: Vec<Vault> = call
        .kms
        .list_vaults(compartment.as_ref())?
        .into_iter()
        .filter(|v| call.may(Verb::Inspect, ResourceKind::Vaults, &v.compartment_id, target(v)))
        .collect();
    let (page, next) = paging::page(vaults, call.query)?;
    Ok(Reply::list(
        page.iter().map(|v| wire::vault_summary(call.base_url, v)).collect(),
        next,
    ))
}

/// `GET /20180608/vaults/{id}`
pub(crate) fn get(call: &Call<'_>, id: &str) -> Result<Reply, ApiError> {
    let vault = authorized(call, id, Verb::Read)?;
    Ok(Reply::resource(wire::vault(call.base_url, &vault)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateVaultDetails {
    compartment_id: Option<String>,
    display_name: Option<String>,
    vault_type: Option<String>,
    #[serde(default)]
    freeform_tags: FreeformTags,
    defined_tags: Option<DefinedTags>,
    external_key_manager_metadata: Option<Value>,
}

/// `POST /20180608/vaults`
pub(crate) fn create(call: &Call<'_>) -> Result<Reply, ApiError> {
    let details: CreateVaultDetails = call.json()?;
    let compartment = compartment_id(
        details
            .compartment_id
            .as_deref()
            .ok_or_else(|| ApiError::missing("compartmentId"))?,
    )?;
    let display_name = details.display_name.ok_or_else(|| ApiError::missing("displayName"))?;
    let vault_type = match details.vault_type.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None => return Err(ApiError::missing("vaultType")),
        Some("DEFAULT") => VaultType::Default,
        Some("VIRTUAL_PRIVATE") => VaultType::VirtualPrivate,
        Some("EXTERNAL") => VaultType::External,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "vaultType must be DEFAULT, VIRTUAL_PRIVATE or EXTERNAL, not '{other}'"
            )))
        }
    };
    // OCI's shape: {externalVaultEndpointUrl, privateEndpointId, oauthMetadata}; sealstore
    // needs the URL only (its tokens are its own: docs/EXTERNAL_KMS.md).
    let external_key_manager = match (&details.external_key_manager_metadata, vault_type) {
        (Some(_), t) if t != VaultType::External => {
            return Err(ApiError::invalid(
                "externalKeyManagerMetadata is only for EXTERNAL vaults",
            ))
        }
        (Some(meta), _) => {
            let url = meta["externalVaultEndpointUrl"]
                .as_str()
                .ok_or_else(|| ApiError::missing("externalKeyManagerMetadata.externalVaultEndpointUrl"))?;
            Some(kms_core::ExternalKeyManager::from_vault_url(url).ok_or_else(|| {
                ApiError::invalid(format!(
                    "externalVaultEndpointUrl must be <key manager URL>/ekm/v1/vaults/<vault id>, not '{url}'"
                ))
            })?)
        }
        (None, _) => None,
    };
    refuse_defined_tags(&details.defined_tags)?;
    call.require(
        Verb::Manage,
        ResourceKind::Vaults,
        &compartment,
        Target::default(),
        format_args!("compartment {compartment}"),
    )?;
    let vault = call.kms.create_vault(
        &call.principal,
        CreateVault {
            compartment_id: Some(compartment),
            display_name,
            vault_type: Some(vault_type),
            freeform_tags: details.freeform_tags,
            external_key_manager,
        },
    )?;
    Ok(Reply::resource(wire::vault(call.base_url, &vault)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateVaultDetails {
    display_name: Option<String>,
    freeform_tags: Option<FreeformTags>,
    defined_tags: Option<DefinedTags>,
}

/// `PUT /20180608/vaults/{id}`
pub(crate) fn update(call: &Call<'_>, id: &str) -> Result<Reply, ApiError> {
    let vault = authorized(call, id, Verb::Manage)?;
    call.check_if_match(&wire::vault(call.base_url, &vault))?;
    let details: UpdateVaultDetails = call.json()?;
    refuse_defined_tags(&details.defined_tags)?;
    let vault = call.kms.update_vault(
        &call.principal,
        &vault.id,
        UpdateResource {
            display_name: details.display_name,
            freeform_tags: details.freeform_tags,
            auto_rotation_interval_days: None,
        },
    )?;
    Ok(Reply::resource(wire::vault(call.base_url, &vault)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ScheduleDeletionDetails {
    pub time_of_deletion: Option<String>,
}

impl ScheduleDeletionDetails {
    /// The requested time (the service's default, 30 days, when absent).
    pub(super) fn time(&self) -> Result<Option<Timestamp>, ApiError> {
        Ok(self.time_of_deletion.as_deref().map(Timestamp::parse).transpose()?)
    }
}

/// `POST /20180608/vaults/{id}/actions/{scheduleDeletion|cancelDeletion}`
pub(crate) fn action(call: &Call<'_>, id: &str, action: &str) -> Result<Reply, ApiError> {
    if !matches!(action, "scheduleDeletion" | "cancelDeletion") {
        return Err(ApiError::not_found(format_args!("vault action '{action}'")));
    }
    let vault = authorized(call, id, Verb::Manage)?;
    call.check_if_match(&wire::vault(call.base_url, &vault))?;
    let vault = if action == "scheduleDeletion" {
        let details: ScheduleDeletionDetails = call.json()?;
        call.kms
            .schedule_vault_deletion(&call.principal, &vault.id, details.time()?)?
    } else {
        call.kms.cancel_vault_deletion(&call.principal, &vault.id)?
    };
    Ok(Reply::resource(wire::vault(call.base_url, &vault)))
}
