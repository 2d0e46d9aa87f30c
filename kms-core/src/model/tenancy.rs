//! One tenancy across regions (protocol: `docs/REPLICATION.md`, "One tenancy across
//! regions"): the home region's record of its member regions, and the IAM state it ships
//! them.
//!
//! A data directory whose meta has no home region is the home of its own tenancy (every
//! data directory made before tenancies spanned regions is one).

use serde::{Deserialize, Serialize};

use crate::ids::Ocid;
use crate::model::iam::{Group, Policy, User};
use crate::model::Compartment;
use crate::time::Timestamp;

/// A region that joined this (home) region's tenancy: IAM changes are shipped to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenancyMember {
    /// The member region (a registered peer).
    pub region: String,
    /// When it joined.
    pub time_joined: Timestamp,
    /// The IAM revision (see [`IamState::revision`]) it acknowledged last.
    pub acknowledged_revision: u64,
    /// When the oldest IAM change it has not acknowledged was made (`None`: none waits).
    #[serde(default)]
    pub pending_since: Option<Timestamp>,
    /// The last acknowledged shipment.
    #[serde(default)]
    pub time_last_shipped: Option<Timestamp>,
}

/// The tenancy's whole IAM state, as the home region ships it to a member (and answers a
/// join with). Shipping the whole state makes delivery idempotent and catching up trivial:
/// IAM is small.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IamState {
    /// The home region, which sends it.
    pub from_region: String,
    /// The tenancy (root compartment) id.
    pub tenancy_id: Ocid,
    /// The home's IAM revision: every IAM change made there moves it by one. A member
    /// applies a state only if it is newer than the one it holds.
    pub revision: u64,
    /// Every compartment, the root (the tenancy) included, oldest first.
    pub compartments: Vec<Compartment>,
    /// Every user with its API keys, oldest first.
    pub users: Vec<User>,
    /// Every group with its members, oldest first.
    pub groups: Vec<Group>,
    /// Every policy, oldest first.
    pub policies: Vec<Policy>,
    /// User id → console password hash (Argon2id PHC), for users that have one.
    #[serde(default)]
    pub console_passwords: Vec<(Ocid, String)>,
}

/// This region's place in its tenancy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenancyInfo {
    /// The tenancy id.
    pub tenancy_id: Ocid,
    /// This region.
    pub region: String,
    /// The home region (where IAM is changed): this region when it is the home.
    pub home_region: String,
    /// The IAM revision this region holds.
    pub iam_revision: u64,
    /// Member regions (on the home region; empty on a member).
    pub members: Vec<TenancyMember>,
}
