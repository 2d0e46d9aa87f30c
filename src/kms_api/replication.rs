//! Replication on the KMS API (spec: `docs/REPLICATION.md`).
//!
//! - `POST /20180608/vaults/{id}/actions/createReplica {replicaRegion}`,
//!   `…/actions/deleteReplica {replicaRegion}` and `GET …/actions/listReplicas` (paged
//!   `VaultReplicaSummary` items), as OCI (`manage vaults` for the first two, `read vaults`
//!   for the list).
//! - `GET /20180608/replicaOperations/{replicationId}/status` on a vault's management
//!   endpoint (where the CLI's `get-replication-status --endpoint $MGMT` sends it), or on
//!   the regional endpoint: whether that operation reached each replica region.
//! - `POST /20180608/replication/apply`: a vault's state from a peer region, signed with that
//!   region's replication key (`keyId="region/<name>"`), not by a user.

use kms_core::iam::Verb;
use kms_core::replication::{parse_replication_id, Shipment};
use kms_core::{Kms, Ocid};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::vaults::authorized;
use super::{paging, wire, Call, Reply};

/// Where peers send vault states.
pub(crate) const APPLY_PATH: &str = "/20180608/replication/apply";
/// Largest vault state accepted (about 1 KiB per key version).
pub(crate) const MAX_SHIPMENT: usize = 64 << 20;

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
    // No etag: the CLI prints the etag header of a call whose SDK model has no body, and
    // OCI's answer to these actions has neither.
    Ok(Reply::plain(wire::vault(call.base_url, &vault)))
}

/// `GET /20180608/vaults/{id}/actions/listReplicas[?limit][&page][&sortBy][&sortOrder]`:
/// `VaultReplicaSummary` items (`sortBy` TIMECREATED or DISPLAYNAME, the region's name).
pub(crate) fn list(call: &Call<'_>, id: &str) -> Result<Reply, ApiError> {
    let vault = authorized(call, id, Verb::Read)?;
    let (page, next) = paging::page(call.kms.replicas(&vault.id)?, call.query)?;
    Ok(Reply::list(
        page.iter().map(|r| wire::vault_replica_summary(&vault, r)).collect(),
        next,
    ))
}

/// `GET …/20180608/replicaOperations/{replicationId}/status`: `{"replicaDetails": [{region,
/// status: REPLICATING|REPLICATED}]}`. On a management endpoint the replication id must be
/// one of that vault's; on the regional endpoint its vault is the one it names.
pub(crate) fn status(call: &Call<'_>, endpoint_vault: Option<&Ocid>, replication_id: &str) -> Result<Reply, ApiError> {
    let not_found = || ApiError::not_found(format_args!("replication {replication_id}"));
    let (vault_id, operation) = parse_replication_id(replication_id).ok_or_else(not_found)?;
    if endpoint_vault.is_some_and(|v| v.as_str() != vault_id) {
        return Err(not_found());
    }
    let vault = authorized(call, vault_id, Verb::Read).map_err(|_| not_found())?;
    let regions = call
        .kms
        .replication_status(&vault.id, operation)
        .map_err(|_| not_found())?;
    Ok(Reply::plain(json!({
        "replicaDetails": regions
            .iter()
            .map(|r| json!({
                "region": r.region,
                "status": if r.replicated { "REPLICATED" } else { "REPLICATING" },
            }))
            .collect::<Vec<_>>(),
    })))
}

/// `POST /20180608/replication/apply`, checked against the registered regions' keys.
pub(crate) fn apply(kms: &Kms, parts: &http::request::Parts, target: &str, body: &[u8]) -> Result<Reply, ApiError> {
    let from = super::peer::verify(kms, parts, target, body)?;
    let shipment: Shipment = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("not a vault state or replica removal: {e}")))?;
    kms.apply_replication(&from, shipment)?;
    Ok(Reply::plain(json!({ "appliedFrom": from })))
}
