//! Identity: compartments and the tenancy (`/20160918`), enough for the CLI's
//! `iam compartment list [--include-root]` and for tools that resolve names to ids.
//!
//! A compartment is visible to a caller who may inspect compartments, vaults or keys in it.

use kms_core::iam::{ResourceKind, Target, Verb};
use kms_core::{Compartment, CompartmentState};
use serde_json::json;

use super::error::ApiError;
use super::vaults::compartment_id;
use super::{paging, wire, Call, Reply};

fn visible(call: &Call<'_>, c: &Compartment) -> bool {
    [ResourceKind::Compartments, ResourceKind::Vaults, ResourceKind::Keys]
        .into_iter()
        .any(|kind| call.may(Verb::Inspect, kind, &c.id, Target::default()))
}

fn parse_bool(call: &Call<'_>, name: &str) -> Result<bool, ApiError> {
    match call.query.get(name).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::invalid(format!(
            "{name} must be true or false, not '{other}'"
        ))),
    }
}

/// `GET /20160918/compartments?compartmentId=…`: the children of a compartment (its whole
/// subtree with `compartmentIdInSubtree=true`, which OCI allows for the tenancy only).
pub(crate) fn list_compartments(call: &Call<'_>) -> Result<Reply, ApiError> {
    let parent = compartment_id(call.required("compartmentId")?)?;
    let subtree = parse_bool(call, "compartmentIdInSubtree")?;
    let tenancy = &call.kms.tenancy_id();
    if subtree && &parent != tenancy {
        return Err(ApiError::invalid(
            "compartmentIdInSubtree=true requires compartmentId to be the tenancy",
        ));
    }
    match call.query.get("accessLevel").map(String::as_str) {
        None | Some("ANY") | Some("ACCESSIBLE") => {}
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "accessLevel must be ANY or ACCESSIBLE, not '{other}'"
            )))
        }
    }
    let state = call.query.get("lifecycleState").map(String::as_str);
    let name = call.query.get("name").map(String::as_str);
    let compartments: Vec<Compartment> = call
        .kms
        .list_compartments()?
        .into_iter()
        .filter(|c| &c.id != tenancy)
        .filter(|c| {
            if subtree {
                call.iam.is_within(&c.id, &parent)
            } else {
                c.compartment_id == parent
            }
        })
        .filter(|c| state.is_none_or(|s| lifecycle(c) == s))
        .filter(|c| name.is_none_or(|n| c.name == n))
        .filter(|c| visible(call, c))
        .collect();
    let (page, next) = paging::page(compartments, call.query)?;
    Ok(Reply::list(page.iter().map(wire::compartment).collect(), next))
}

fn lifecycle(c: &Compartment) -> &'static str {
    match c.lifecycle_state {
        CompartmentState::Active => "ACTIVE",
        CompartmentState::Deleted => "DELETED",
    }
}

/// `GET /20160918/compartments/{id}` (the tenancy's id gives the root compartment).
pub(crate) fn get_compartment(call: &Call<'_>, id: &str) -> Result<Reply, ApiError> {
    let found = call
        .kms
        .list_compartments()?
        .into_iter()
        .find(|c| c.id.as_str() == id)
        .filter(|c| visible(call, c))
        .ok_or_else(|| ApiError::not_found(format_args!("compartment {id}")))?;
    Ok(Reply::resource(wire::compartment(&found)))
}

/// `GET /20160918/tenancies/{id}`: any signed-in user of the tenancy may read it.
pub(crate) fn get_tenancy(call: &Call<'_>, id: &str) -> Result<Reply, ApiError> {
    let tenancy = &call.kms.tenancy_id();
    if id != tenancy.as_str() {
        return Err(ApiError::not_found(format_args!("tenancy {id}")));
    }
    let root = call
        .kms
        .list_compartments()?
        .into_iter()
        .find(|c| &c.id == tenancy)
        .ok_or_else(ApiError::internal)?;
    Ok(Reply::resource(json!({
        "id": tenancy,
        "name": root.name,
        "description": root.description,
        "homeRegionKey": call.kms.region(),
        "upiIdcsCompatibilityLayerEndpoint": null,
        "freeformTags": {},
        "definedTags": {},
    })))
}
