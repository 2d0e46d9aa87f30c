//! One tenancy across regions on the wire (spec: `docs/REPLICATION.md`, "One tenancy across
//! regions"). Both calls are signed by a peer region's replication key
//! (`keyId="region/<name>"`), checked against the registered regions, as vault shipments:
//!
//! - `POST /20180608/replication/tenancy/join` (in the home region): the signer becomes a
//!   member of this tenancy; the answer is the tenancy's whole IAM state
//!   ([`kms_core::tenancy::IamState`]), which the member adopts.
//! - `POST /20180608/replication/tenancy/apply` (in a member): the home region's IAM state
//!   after a change.
//!
//! The client side: [`join`] (what `sealstore kms region join-tenancy` runs in the member)
//! and [`run_shipper`], the thread of `serve` that ships IAM changes to members until they
//! acknowledge them (durable: what waits is in the store; retried with a backoff per region,
//! 200 ms doubling to 5 s).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use kms_core::tenancy::{IamState, TenancyInfo};
use kms_core::{Kms, Principal};
use serde_json::json;

use super::error::ApiError;
use super::peer::{self, Backoff};
use super::signature::RequestSigner;
use super::Reply;

/// Where a member-to-be asks the home region for the tenancy.
pub(crate) const JOIN_PATH: &str = "/20180608/replication/tenancy/join";
/// Where the home region ships IAM states to members.
pub(crate) const IAM_APPLY_PATH: &str = "/20180608/replication/tenancy/apply";

/// Whether a request goes to [`answer`] (signed by a region, not a user).
pub(crate) fn is_tenancy_call(method: &Method, path: &str) -> bool {
    *method == Method::POST && (path == JOIN_PATH || path == IAM_APPLY_PATH)
}

/// Answers a join or an IAM state, checked against the registered regions' keys.
pub(crate) fn answer(kms: &Kms, parts: &http::request::Parts, target: &str, body: &[u8]) -> Result<Reply, ApiError> {
    let from = peer::verify(kms, parts, target, body)?;
    if parts.uri.path() == JOIN_PATH {
        let state = kms.admit_tenancy_member(&from)?;
        tracing::info!(region = %from, tenancy = %state.tenancy_id, "region joined the tenancy");
        return Ok(Reply::plain(
            serde_json::to_value(state).map_err(|_| ApiError::internal())?,
        ));
    }
    let state: IamState =
        serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("not an IAM state: {e}")))?;
    let revision = state.revision;
    kms.apply_iam_state(&from, state)?;
    Ok(Reply::plain(json!({ "appliedFrom": from, "revision": revision })))
}

/// Makes this region a member of the tenancy whose home region is `home` (a registered
/// peer, which must have registered this region too): asks it over the signed replication
/// channel and adopts what it answers.
pub(crate) fn join(
    kms: &Kms,
    principal: &Principal,
    home: &str,
    extra_ca: Option<&std::path::Path>,
) -> anyhow::Result<TenancyInfo> {
    kms.check_join_tenancy(home)?;
    let region = kms
        .list_regions()?
        .into_iter()
        .find(|r| r.name == home)
        .ok_or_else(|| anyhow::anyhow!("region {home} is not registered here: `sealstore kms region add {home} …` first (and register this region there)"))?;
    let http = peer::client(extra_ca, "tenancy-join")?;
    let answer = peer::post(&http, &peer::signer(kms)?, &region, JOIN_PATH, b"{}".to_vec())
        .and_then(peer::Answer::success)
        .map_err(|e| anyhow::anyhow!("asking {home} for its tenancy: {e}"))?;
    let state: IamState =
        serde_json::from_slice(&answer).map_err(|e| anyhow::anyhow!("{home} did not answer a tenancy state: {e}"))?;
    Ok(kms.join_tenancy(principal, home, state)?)
}

/// Ships IAM changes to member regions until `stop` is set (then wake it with
/// [`Kms::notify_replication`]). Only a home region with members has anything to ship.
pub(crate) fn run_shipper(
    kms: Arc<Kms>,
    stop: Arc<AtomicBool>,
    extra_ca: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let mut signer_: Option<RequestSigner> = None;
    let http = peer::client(extra_ca, "iam-replication")?;
    let mut backoff = Backoff::default();
    let mut lease = crate::fleet::Lease::new("iam-replication", SHIPPER_LEASE, kms.is_shared());
    while !stop.load(Ordering::Acquire) {
        let generation = kms.replication_generation();
        let mut pass = || -> anyhow::Result<bool> {
            let pending = kms.iam_pending_members()?;
            let mut waiting = false;
            if !pending.is_empty() {
                let signer = match &signer_ {
                    Some(s) => s,
                    None => signer_.insert(peer::signer(&kms)?),
                };
                // One state for every member: the whole IAM, as of now.
                let state = kms.iam_state()?;
                let body = serde_json::to_vec(&state)?;
                for (region, member) in &pending {
                    if backoff.waiting(&region.name) {
                        waiting = true;
                        continue;
                    }
                    match peer::post(&http, signer, region, IAM_APPLY_PATH, body.clone())
                        .and_then(peer::Answer::success)
                    {
                        Ok(_) => {
                            backoff.succeeded(&region.name);
                            kms.iam_shipped(&region.name, state.revision)?;
                            let lag = member
                                .pending_since
                                .map_or(0, |since| kms.now().unix_millis() - since.unix_millis());
                            tracing::info!(region = %region.name, revision = state.revision, waited_ms = lag, "IAM replicated");
                        }
                        Err(e) => {
                            let delay = backoff.failed(&region.name);
                            tracing::warn!(region = %region.name, retry_in_ms = delay.as_millis() as u64, error = %e, "IAM replication failed");
                            waiting = true;
                        }
                    }
                }
            }
            Ok(waiting)
        };
        let wait = match lease.held(|name, holder, ttl| kms.lease(name, holder, ttl)) {
            false => Duration::from_secs(1),
            true => match pass() {
                Ok(true) => Duration::from_millis(100),
                Ok(false) => Duration::from_secs(1),
                // The store unreachable, say: the pass is tried again, nothing was lost.
                Err(e) => {
                    tracing::warn!(error = %e, "an IAM replication pass failed; retrying in a second");
                    Duration::from_secs(1)
                }
            },
        };
        kms.wait_for_replication_work(generation, wait);
    }
    Ok(())
}

/// How long a server's lease on a shipper lasts unrenewed: when that server stops, another
/// of its fleet takes the shipping over within this.
pub(crate) const SHIPPER_LEASE: Duration = Duration::from_secs(15);
