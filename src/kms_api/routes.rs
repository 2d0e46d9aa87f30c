//! Which path goes to which handler.
//!
//! ```text
//! regional   /20160918/compartments[/{id}]          identity
//!            /20160918/tenancies/{id}
//!            /20180608/vaults[/{id}[/actions/{a}]]   vaults (replica actions: replication; backup)
//!            /20180608/vaults/actions/restoreFrom…   backup
//!            /20180608/replicaOperations/{id}/status  replication
//!            /20180608/auditEvents                   audit (a sealstore extension)
//! management /kms/{vault}/management/20180608/keys[/{id}[/actions/{a}|/keyVersions[/{id}[/actions/{a}]]]]
//!            /kms/{vault}/management/20180608/keys/actions/restoreFrom…   backup
//!            /kms/{vault}/management/20180608/keys/import, …/keys/{id}/keyVersions/import
//!            /kms/{vault}/management/20180608/wrappingKeys
//!            /kms/{vault}/management/20180608/replicaOperations/{id}/status
//! crypto     /kms/{vault}/crypto/20180608/{encrypt|decrypt|generateDataEncryptionKey|sign|verify|exportKey|reencrypt}
//! ```
//!
//! sealstore extension: the regional endpoint also answers key and crypto calls
//! (`/20180608/keys[/{id}…]`, `/20180608/{encrypt|…}`), on the vault of the key they name —
//! how `sealstore kms` reaches a key from its id alone. `ListKeys` there lists every vault's
//! keys; `CreateKey` names no vault, so it still goes to the vault's management endpoint.

use http::Method;
use kms_core::{Ocid, ResourceType};

use super::error::ApiError;
use super::{audit, backup, crypto, identity, keys, replication, vaults, wrong_method, Call, Endpoint, Reply};

/// Routes one authenticated call.
pub(crate) fn route(call: &Call<'_>, method: &Method, path: &str) -> Result<Reply, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (endpoint, rest) = match segments.as_slice() {
        ["kms", vault, kind, rest @ ..] => {
            let vault = Ocid::parse(ResourceType::Vault, vault)
                .map_err(|_| ApiError::not_found(format_args!("vault endpoint {path}")))?;
            match *kind {
                "management" => (Endpoint::Management(vault), rest),
                "crypto" => (Endpoint::Crypto(vault), rest),
                _ => return Err(ApiError::not_found(format_args!("endpoint {path}"))),
            }
        }
        rest => (Endpoint::Regional, rest),
    };
    on(call, method, path, endpoint, rest)
}

/// Routes a call that came in on `endpoint`; `rest` is its path after the endpoint.
fn on(call: &Call<'_>, method: &Method, path: &str, endpoint: Endpoint, rest: &[&str]) -> Result<Reply, ApiError> {
    let unknown = || ApiError::not_found(format_args!("{method} {path}: no such API"));
    match (&endpoint, rest) {
        (Endpoint::Regional, ["20160918", "compartments"]) => {
            only(method, Method::GET, || identity::list_compartments(call))
        }
        (Endpoint::Regional, ["20160918", "compartments", id]) => {
            only(method, Method::GET, || identity::get_compartment(call, id))
        }
        (Endpoint::Regional, ["20160918", "tenancies", id]) => {
            only(method, Method::GET, || identity::get_tenancy(call, id))
        }

        (Endpoint::Regional, ["20180608", "auditEvents"]) => only(method, Method::GET, || audit::list(call)),
        (Endpoint::Regional, ["20180608", "vaults"]) => match *method {
            Method::GET => vaults::list(call),
            Method::POST => vaults::create(call),
            _ => Err(wrong_method(method, "GET or POST")),
        },
        (Endpoint::Regional, ["20180608", "vaults", id]) => match *method {
            Method::GET => vaults::get(call, id),
            Method::PUT => vaults::update(call, id),
            _ => Err(wrong_method(method, "GET or PUT")),
        },
        (
            Endpoint::Regional,
            ["20180608", "vaults", "actions", action @ ("restoreFromFile" | "restoreFromObjectStore")],
        ) => only(method, Method::POST, || {
            backup::restore_vault(call, *action == "restoreFromObjectStore")
        }),
        (Endpoint::Regional, ["20180608", "vaults", id, "actions", "backup"]) => {
            only(method, Method::POST, || backup::backup_vault(call, id))
        }
        (Endpoint::Regional, ["20180608", "vaults", id, "actions", action @ ("createReplica" | "deleteReplica")]) => {
            only(method, Method::POST, || replication::action(call, id, action))
        }
        (Endpoint::Regional, ["20180608", "vaults", id, "actions", "listReplicas"]) => {
            only(method, Method::GET, || replication::list(call, id))
        }
        (Endpoint::Regional, ["20180608", "replicaOperations", id, "status"]) => {
            only(method, Method::GET, || replication::status(call, None, id))
        }
        (Endpoint::Regional, ["20180608", "vaults", id, "actions", action]) => {
            only(method, Method::POST, || vaults::action(call, id, action))
        }
        (Endpoint::Regional, ["20180608", "keys"]) => match *method {
            Method::GET => keys::list(call, None),
            _ => Err(ApiError::invalid(
                "CreateKey goes to the managementEndpoint of the vault the key is for (see `vault get`)",
            )),
        },
        (Endpoint::Regional, ["20180608", "keys", "import"] | ["20180608", "wrappingKeys"]) => Err(ApiError::invalid(
            "ImportKey and GetWrappingKey go to the managementEndpoint of the vault (see `vault get`)",
        )),
        (Endpoint::Regional, ["20180608", "keys", id, ..]) => {
            let vault = vault_of_key(call, id)?;
            on(call, method, path, Endpoint::Management(vault), rest)
        }
        (
            Endpoint::Regional,
            ["20180608", "encrypt" | "decrypt" | "generateDataEncryptionKey" | "reencrypt" | "sign" | "verify" | "exportKey"],
        ) => {
            let named: CryptoKey = call.json()?;
            let key = named.key_id.ok_or_else(|| ApiError::missing("keyId"))?;
            let vault = vault_of_key(call, &key)?;
            on(call, method, path, Endpoint::Crypto(vault), rest)
        }

        (Endpoint::Management(vault), ["20180608", "wrappingKeys"]) => {
            only(method, Method::GET, || keys::wrapping_key(call, vault))
        }
        (Endpoint::Management(vault), ["20180608", "keys", "import"]) => {
            only(method, Method::POST, || keys::import(call, vault))
        }
        (Endpoint::Management(vault), ["20180608", "keys", id, "keyVersions", "import"]) => {
            only(method, Method::POST, || keys::import_version(call, vault, id))
        }
        (Endpoint::Management(vault), ["20180608", "keys"]) => match *method {
            Method::GET => keys::list(call, Some(vault)),
            Method::POST => keys::create(call, vault),
            _ => Err(wrong_method(method, "GET or POST")),
        },
        (Endpoint::Management(vault), ["20180608", "keys", id]) => match *method {
            Method::GET => keys::get(call, vault, id),
            Method::PUT => keys::update(call, vault, id),
            _ => Err(wrong_method(method, "GET or PUT")),
        },
        (
            Endpoint::Management(vault),
            ["20180608", "keys", "actions", action @ ("restoreFromFile" | "restoreFromObjectStore")],
        ) => only(method, Method::POST, || {
            backup::restore_key(call, vault, *action == "restoreFromObjectStore")
        }),
        (Endpoint::Management(vault), ["20180608", "keys", id, "actions", "backup"]) => {
            only(method, Method::POST, || backup::backup_key(call, vault, id))
        }
        (Endpoint::Management(vault), ["20180608", "keys", id, "actions", action]) => {
            only(method, Method::POST, || keys::action(call, vault, id, action))
        }
        (Endpoint::Management(vault), ["20180608", "keys", id, "keyVersions"]) => match *method {
            Method::GET => keys::list_versions(call, vault, id),
            Method::POST => keys::create_version(call, vault, id),
            _ => Err(wrong_method(method, "GET or POST")),
        },
        (Endpoint::Management(vault), ["20180608", "keys", id, "keyVersions", version]) => {
            only(method, Method::GET, || keys::get_version(call, vault, id, version))
        }
        (Endpoint::Management(vault), ["20180608", "keys", id, "keyVersions", version, "actions", action]) => {
            only(method, Method::POST, || {
                keys::version_action(call, vault, id, version, action)
            })
        }

        (Endpoint::Management(vault), ["20180608", "replicaOperations", id, "status"]) => {
            only(method, Method::GET, || replication::status(call, Some(vault), id))
        }

        (Endpoint::Crypto(vault), ["20180608", operation]) => {
            only(method, Method::POST, || crypto::operation(call, vault, operation))
        }
        _ => Err(unknown()),
    }
}

/// The `keyId` of a crypto call's body.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct CryptoKey {
    key_id: Option<String>,
}

/// The vault of the key `id`; 404 when there is no such key (whether the caller may use it
/// is the handler's check, as on the vault's own endpoints).
fn vault_of_key(call: &Call<'_>, id: &str) -> Result<Ocid, ApiError> {
    Ocid::parse(ResourceType::Key, id)
        .ok()
        .and_then(|id| call.kms.get_key(&id).ok())
        .map(|key| key.vault_id)
        .ok_or_else(|| ApiError::not_found(format_args!("key {id}")))
}

fn only(
    method: &Method,
    allowed: Method,
    handler: impl FnOnce() -> Result<Reply, ApiError>,
) -> Result<Reply, ApiError> {
    if *method == allowed {
        handler()
    } else {
        Err(wrong_method(method, allowed.as_str()))
    }
}
