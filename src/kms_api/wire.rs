//! Resources as OCI's JSON shows them: kms-core's records already serialize with OCI's
//! camelCase names; here they gain the fields that only the API has (endpoints, replica and
//! external-key fields, which sealstore reports as not in use) and are cut down to the
//! summary shapes that list calls return.

use kms_core::replication::ReplicaView;
use kms_core::{Compartment, Key, KeyVersion, Vault};
use serde_json::{json, Map, Value};

use super::paging::Listed;

/// The endpoints of `vault` as seen from `base_url`.
pub(super) fn management_endpoint(base_url: &str, vault: &Vault) -> String {
    format!("{base_url}/kms/{}/management", vault.id)
}

/// The crypto endpoint of `vault` as seen from `base_url`.
pub(super) fn crypto_endpoint(base_url: &str, vault: &Vault) -> String {
    format!("{base_url}/kms/{}/crypto", vault.id)
}

fn object(value: impl serde::Serialize) -> Map<String, Value> {
    match serde_json::to_value(value).expect("records serialize") {
        Value::Object(map) => map,
        _ => unreachable!("records serialize as objects"),
    }
}

/// OCI's `replicaDetails` (`VaultReplicaDetails`, `KeyReplicaDetails`,
/// `KeyVersionReplicaDetails`: `{replicationId}`) from a record's `replicationId`, which it
/// takes out of `o`; null until the resource has been replicated.
fn replica_details(o: &mut Map<String, Value>) -> Value {
    o.remove("isReplica");
    match o.remove("replicationId") {
        Some(Value::String(id)) => json!({ "replicationId": id }),
        _ => Value::Null,
    }
}

fn keep(mut full: Map<String, Value>, fields: &[&str]) -> Value {
    full.retain(|k, _| fields.contains(&k.as_str()));
    Value::Object(full)
}

/// A `Vault`.
pub(super) fn vault(base_url: &str, v: &Vault) -> Value {
    let mut o = object(v);
    o.insert("managementEndpoint".into(), management_endpoint(base_url, v).into());
    o.insert("cryptoEndpoint".into(), crypto_endpoint(base_url, v).into());
    o.insert("wrappingkeyId".into(), Value::Null);
    o.entry("restoredFromVaultId").or_insert(Value::Null);
    o.remove("replication");
    let is_replica = matches!(
        v.replication,
        Some(kms_core::replication::VaultReplication::Replica { .. })
    );
    let details = replica_details(&mut o);
    o.insert("replicaDetails".into(), details);
    // sealstore's addition on a replica: where it is managed and when it was last updated.
    if let Some(kms_core::replication::VaultReplication::Replica {
        primary_region,
        time_last_applied,
        ..
    }) = &v.replication
    {
        o.insert(
            "replicaOf".into(),
            json!({ "primaryRegion": primary_region, "timeLastApplied": time_last_applied }),
        );
    }
    o.insert("isPrimary".into(), (!is_replica).into());
    o.insert("isVaultReplicable".into(), (!is_replica).into());
    o.remove("externalKeyManager");
    let external = v.external_key_manager.as_ref().map(|m| {
        json!({
            "externalVaultEndpointUrl": m.vault_url(),
            "privateEndpointId": null,
            "oauthMetadataSummary": null,
            "vendorContext": {"vendorName": "sealstore", "vendorVersion": env!("CARGO_PKG_VERSION")},
        })
    });
    o.insert(
        "externalKeyManagerMetadataSummary".into(),
        external.unwrap_or(Value::Null),
    );
    Value::Object(o)
}

/// A `VaultSummary` (list item).
pub(super) fn vault_summary(base_url: &str, v: &Vault) -> Value {
    let Value::Object(full) = vault(base_url, v) else {
        unreachable!()
    };
    keep(
        full,
        &[
            "compartmentId",
            "cryptoEndpoint",
            "definedTags",
            "displayName",
            "freeformTags",
            "id",
            "lifecycleState",
            "managementEndpoint",
            "timeCreated",
            "vaultType",
            "externalKeyManagerMetadataSummary",
        ],
    )
}

/// A `Key`.
pub(super) fn key(k: &Key) -> Value {
    let mut o = object(k);
    o.entry("restoredFromKeyId").or_insert(Value::Null);
    let details = replica_details(&mut o);
    o.insert("replicaDetails".into(), details);
    o.insert("isPrimary".into(), (!k.is_replica).into());
    o.remove("externalKeyId");
    o.insert("externalKeyReferenceDetails".into(), key_reference(k));
    Value::Object(o)
}

fn key_reference(k: &Key) -> Value {
    match &k.external_key_id {
        Some(id) => json!({ "externalKeyId": id }),
        None => Value::Null,
    }
}

fn key_version_reference(v: &KeyVersion) -> Value {
    match &v.external_key_version_id {
        Some(id) => json!({ "externalKeyVersionId": id }),
        None => Value::Null,
    }
}

/// A `KeySummary` (list item).
pub(super) fn key_summary(k: &Key) -> Value {
    let mut o = object(k);
    o.insert("algorithm".into(), k.key_shape.algorithm.clone().into());
    o.insert("externalKeyReferenceDetails".into(), key_reference(k));
    keep(
        o,
        &[
            "compartmentId",
            "definedTags",
            "displayName",
            "freeformTags",
            "id",
            "lifecycleState",
            "timeCreated",
            "vaultId",
            "protectionMode",
            "algorithm",
            "externalKeyReferenceDetails",
            "isAutoRotationEnabled",
        ],
    )
}

/// A `KeyVersion`.
pub(super) fn key_version(v: &KeyVersion) -> Value {
    let mut o = object(v);
    o.entry("publicKey").or_insert(Value::Null);
    o.entry("restoredFromKeyVersionId").or_insert(Value::Null);
    let details = replica_details(&mut o);
    o.insert("replicaDetails".into(), details);
    o.insert("isPrimary".into(), (!v.is_replica).into());
    o.remove("externalKeyVersionId");
    o.insert("externalKeyReferenceDetails".into(), key_version_reference(v));
    Value::Object(o)
}

/// A `KeyVersionSummary` (list item).
pub(super) fn key_version_summary(v: &KeyVersion) -> Value {
    let mut o = object(v);
    o.insert("externalKeyReferenceDetails".into(), key_version_reference(v));
    keep(
        o,
        &[
            "compartmentId",
            "id",
            "keyId",
            "lifecycleState",
            "origin",
            "timeCreated",
            "timeOfDeletion",
            "vaultId",
            "externalKeyReferenceDetails",
            "isAutoRotated",
        ],
    )
}

/// A `VaultReplicaSummary` (`listReplicas` item): the destination region, OCI's status
/// (CREATING, CREATED, DELETING, DELETED) and the vault's endpoints in that region.
pub(super) fn vault_replica_summary(vault: &Vault, r: &ReplicaView) -> Value {
    let endpoint = |kind: &str| {
        r.endpoint
            .as_deref()
            .map(|e| format!("{}/kms/{}/{kind}", e.trim_end_matches('/'), vault.id))
    };
    // timeCreated, timeLastShipped, pendingChanges and lagMillis: sealstore's additions.
    json!({
        "region": r.region,
        "status": r.status,
        "cryptoEndpoint": endpoint("crypto"),
        "managementEndpoint": endpoint("management"),
        "timeCreated": r.time_created,
        "timeLastShipped": r.time_last_shipped,
        "pendingChanges": r.pending_changes,
        "lagMillis": r.lag_millis,
    })
}

/// A `Compartment`.
pub(super) fn compartment(c: &Compartment) -> Value {
    let mut o = object(c);
    o.insert("inactiveStatus".into(), Value::Null);
    o.insert("isAccessible".into(), true.into());
    o.insert("freeformTags".into(), json!({}));
    o.insert("definedTags".into(), json!({}));
    Value::Object(o)
}

/// A resource's etag: a digest of its JSON, so it changes whenever any field does.
pub(super) fn etag(resource: &Value) -> String {
    let bytes = serde_json::to_vec(resource).expect("JSON values serialize");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
    data_encoding::HEXLOWER.encode(&digest.as_ref()[..16])
}

impl Listed for Vault {
    fn id(&self) -> &str {
        self.id.as_str()
    }
    fn name(&self) -> &str {
        &self.display_name
    }
}

impl Listed for Key {
    fn id(&self) -> &str {
        self.id.as_str()
    }
    fn name(&self) -> &str {
        &self.display_name
    }
}

impl Listed for KeyVersion {
    fn id(&self) -> &str {
        self.id.as_str()
    }
    fn name(&self) -> &str {
        // Versions have no name; by-name sorting keeps creation order.
        ""
    }
}

impl Listed for ReplicaView {
    fn id(&self) -> &str {
        // One replica per region: the region names it (and is the page token).
        &self.region
    }
    fn name(&self) -> &str {
        &self.region
    }
}

impl Listed for Compartment {
    fn id(&self) -> &str {
        self.id.as_str()
    }
    fn name(&self) -> &str {
        &self.name
    }
}
