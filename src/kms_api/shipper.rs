//! Ships replicated vaults to their replica regions (spec: `docs/REPLICATION.md`): the
//! outbox is read, each entry's vault state (or, for a replica being deleted, its removal) is
//! sent signed with this region's replication key, and an acknowledged entry is cleared. Failures back off per region (200 ms doubling to
//! 5 s) and retry until acknowledged; nothing is dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kms_core::replication::{Region, Shipment};
use kms_core::Kms;

use super::peer::{self, Backoff};
use super::replication::APPLY_PATH;
use super::signature::RequestSigner;
use crate::http_client::BlockingClient;

/// The destination lacks material an incremental state left out.
#[derive(Debug, thiserror::Error)]
#[error("the replica lacks material it acknowledged")]
struct Incomplete;

/// Runs until `stop` is set (then wake it with [`Kms::notify_replication`]); peers over https
/// are verified against the system's CAs and `extra_ca`.
pub(crate) fn run(kms: Arc<Kms>, stop: Arc<AtomicBool>, extra_ca: Option<&std::path::Path>) -> anyhow::Result<()> {
    // Made when there is first something to ship: most servers never replicate.
    let mut signer: Option<RequestSigner> = None;
    let http = peer::client(extra_ca, "replication")?;
    let mut backoff = Backoff::default();
    let mut lease = crate::fleet::Lease::new("replication", super::tenancy::SHIPPER_LEASE, kms.is_shared());
    while !stop.load(Ordering::Acquire) {
        let generation = kms.replication_generation();
        let mut pass = || -> anyhow::Result<bool> {
            let outbox = kms.replication_outbox()?;
            let mut waiting = false;
            if signer.is_none() && !outbox.is_empty() {
                signer = Some(peer::signer(&kms)?);
            }
            for entry in &outbox {
                if backoff.waiting(&entry.region) {
                    waiting = true;
                    continue;
                }
                let signer = signer.as_ref().expect("made above when the outbox is not empty");
                let Some((region, shipment)) = kms.replication_shipment(entry)? else {
                    continue; // the replica is DELETED: nothing left to send there
                };
                match ship(&http, signer, &region, &shipment) {
                    Ok(()) => {
                        backoff.succeeded(&entry.region);
                        kms.replication_shipped(entry, &shipment)?;
                        let lag = kms.now().unix_millis() - entry.since.unix_millis();
                        match shipment {
                            Shipment::State(_) => {
                                tracing::info!(vault = %entry.vault_id, region = %entry.region, changes = entry.changes, lag_ms = lag, "replicated")
                            }
                            Shipment::Removal(_) => {
                                tracing::info!(vault = %entry.vault_id, region = %entry.region, "replica deleted there")
                            }
                        }
                    }
                    Err(e) if e.downcast_ref::<Incomplete>().is_some() => {
                        tracing::warn!(vault = %entry.vault_id, region = %entry.region, "the replica lacks material it acknowledged; shipping the whole state");
                        kms.replication_resend(&entry.vault_id, &entry.region)?;
                        waiting = true;
                    }
                    Err(e) => {
                        let delay = backoff.failed(&entry.region);
                        tracing::warn!(vault = %entry.vault_id, region = %entry.region, retry_in_ms = delay.as_millis() as u64, error = %e, "replication shipment failed");
                        waiting = true;
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
                    tracing::warn!(error = %e, "a replication pass failed; retrying in a second");
                    Duration::from_secs(1)
                }
            },
        };
        kms.wait_for_replication_work(generation, wait);
    }
    Ok(())
}

fn ship(http: &BlockingClient, signer: &RequestSigner, region: &Region, shipment: &Shipment) -> anyhow::Result<()> {
    let answer = peer::post(http, signer, region, APPLY_PATH, serde_json::to_vec(shipment)?)?;
    if answer.status == http::StatusCode::CONFLICT && answer.code().as_deref() == Some(super::error::REPLICA_INCOMPLETE)
    {
        return Err(Incomplete.into());
    }
    answer.success().map(drop)
}
