//! Ships replicated vaults to their replica regions (spec: `docs/REPLICATION.md`): the
//! outbox is read, each entry's vault state (or, for a replica being deleted, its removal) is
//! sent signed with this region's replication key, and an acknowledged entry is cleared. Failures back off per region (200 ms doubling to
//! 5 s) and retry until acknowledged; nothing is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method};
use kms_core::replication::{Region, Shipment};
use kms_core::Kms;

use super::replication::APPLY_PATH;
use super::signature::RequestSigner;
use crate::http_client::{error_chain, host_header, BlockingClient, Timeouts};

/// The destination lacks material an incremental state left out.
#[derive(Debug, thiserror::Error)]
#[error("the replica lacks material it acknowledged")]
struct Incomplete;

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs until `stop` is set (then wake it with [`Kms::notify_replication`]); peers over https
/// are verified against the system's CAs and `extra_ca`.
pub fn run(kms: Arc<Kms>, stop: Arc<AtomicBool>, extra_ca: Option<&std::path::Path>) -> anyhow::Result<()> {
    // Made when there is first something to ship: most servers never replicate.
    let mut signer: Option<RequestSigner> = None;
    let timeouts = Timeouts {
        connect: Duration::from_secs(2),
        read: Duration::from_secs(10),
        total: Duration::from_secs(30),
    };
    let http = BlockingClient::new(extra_ca, timeouts, "replication").map_err(anyhow::Error::msg)?;
    let mut backoff: HashMap<String, (Instant, Duration)> = HashMap::new();
    while !stop.load(Ordering::Acquire) {
        let generation = kms.replication_generation();
        let outbox = kms.replication_outbox()?;
        let mut waiting = false;
        if signer.is_none() && !outbox.is_empty() {
            let identity = kms.replication_identity()?;
            signer = Some(
                RequestSigner::from_pkcs8(format!("region/{}", kms.region()), identity.signing_pkcs8())
                    .map_err(|e| anyhow::anyhow!("replication signing key: {e}"))?,
            );
        }
        for entry in &outbox {
            if backoff
                .get(&entry.region)
                .is_some_and(|(until, _)| Instant::now() < *until)
            {
                waiting = true;
                continue;
            }
            let signer = signer.as_ref().expect("made above when the outbox is not empty");
            let Some((region, shipment)) = kms.replication_shipment(entry)? else {
                continue; // the replica is DELETED: nothing left to send there
            };
            match ship(&http, signer, &region, &shipment) {
                Ok(()) => {
                    backoff.remove(&entry.region);
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
                    let delay = backoff
                        .get(&entry.region)
                        .map_or(FIRST_BACKOFF, |(_, d)| (*d * 2).min(MAX_BACKOFF));
                    tracing::warn!(vault = %entry.vault_id, region = %entry.region, retry_in_ms = delay.as_millis() as u64, error = %e, "replication shipment failed");
                    backoff.insert(entry.region.clone(), (Instant::now() + delay, delay));
                    waiting = true;
                }
            }
        }
        let wait = if waiting {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(1)
        };
        kms.wait_for_replication_work(generation, wait);
    }
    Ok(())
}

fn ship(http: &BlockingClient, signer: &RequestSigner, region: &Region, shipment: &Shipment) -> anyhow::Result<()> {
    let body = serde_json::to_vec(shipment)?;
    let url = reqwest::Url::parse(&region.endpoint)?;
    let host = host_header(&url)
        .ok_or_else(|| anyhow::anyhow!("region {} has no host in {}", region.name, region.endpoint))?;
    let mut headers = HeaderMap::new();
    headers.insert(http::header::HOST, HeaderValue::from_str(&host)?);
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    signer
        .sign(&Method::POST, APPLY_PATH, &mut headers, Some(&body))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let url = format!("{}{APPLY_PATH}", region.endpoint.trim_end_matches('/'));
    let answer = http
        .send(Method::POST, &url, headers, Some(body))
        .map_err(|e| anyhow::anyhow!("{url}: {}", error_chain(&e)))?;
    if answer.status == http::StatusCode::CONFLICT
        && serde_json::from_slice::<serde_json::Value>(&answer.body)
            .is_ok_and(|b| b["code"] == super::error::REPLICA_INCOMPLETE)
    {
        return Err(Incomplete.into());
    }
    if !answer.status.is_success() {
        anyhow::bail!(
            "{url} answered {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    Ok(())
}
