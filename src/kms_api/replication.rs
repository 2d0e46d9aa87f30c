//! Replication on the KMS API (spec: `docs/REPLICATION.md`).
//!
//! - `POST /20180608/vaults/{id}/actions/createReplica {replicaRegion}` and
//!   `…/actions/deleteReplica {replicaRegion}`, `GET /20180608/vaults/{id}/replicas`, as OCI
//!   (`manage vaults` for the actions, `read vaults` for the list).
//! - `POST /20180608/replication/apply`: a vault's state from a peer region, signed with that
//!   region's replication key (`keyId="region/<name>"`), not by a user.

use kms_core::iam::Verb;
use kms_core::replication::VaultShipment;
use kms_core::Kms;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::signature::{self, SignedRequest};
use super::vaults::authorized;
use super::{wire, Call, Reply};

/// Where peers send vault states.
pub const APPLY_PATH: &str = "/20180608/replication/apply";
/// Largest vault state accepted (about 1 KiB per key version).
pub const MAX_SHIPMENT: usize = 64 << 20;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReplicaDetails {
    replica_region: Option<String>,
}

/// `createReplica` / `deleteReplica` on a vault.
pub(crate) fn action(call: &Call<'_>, id: &str, action: &str) -> Result<Reply, ApiError> {
    let vault = authorized(call, id, Verb::Manage)?;
    let details: ReplicaDetails = call.json()?;
    let region = details
        .replica_region
        .ok_or_else(|| ApiError::missing("replicaRegion"))?;
    let vault = if action == "createReplica" {
        call.kms.create_replica(&call.principal, &vault.id, &region)?
    } else {
        call.kms.delete_replica(&call.principal, &vault.id, &region)?
    };
    Ok(Reply::resource(wire::vault(call.base_url, &vault)))
}

/// `GET /20180608/vaults/{id}/replicas`: each replica with its status and lag.
pub(crate) fn list(call: &Call<'_>, id: &str) -> Result<Reply, ApiError> {
    let vault = authorized(call, id, Verb::Read)?;
    let replicas = call.kms.replicas(&vault.id)?;
    Ok(Reply::list(
        replicas
            .iter()
            .map(|r| serde_json::to_value(r).expect("serializes"))
            .collect(),
        None,
    ))
}

/// `POST /20180608/replication/apply`, checked against the registered regions' keys.
pub(crate) fn apply(kms: &Kms, parts: &http::request::Parts, target: &str, body: &[u8]) -> Result<Reply, ApiError> {
    let regions = kms.list_regions()?;
    let from = signature::verify_region(
        &SignedRequest {
            method: &parts.method,
            target,
            headers: &parts.headers,
            body,
        },
        &regions,
        chrono::Utc::now().timestamp(),
    )
    .map_err(|e| ApiError::not_authenticated(e.0))?;
    let state: VaultShipment =
        serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("not a vault state: {e}")))?;
    kms.apply_replication(&from, state)?;
    Ok(Reply::plain(json!({ "appliedFrom": from })))
}
