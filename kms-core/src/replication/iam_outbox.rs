//! The tenancy side of every IAM change, inside its transaction (as [`super::outbox`] is for
//! vault changes): a member region refuses it, naming the home region; in the home region it
//! moves the IAM revision and marks every member region as waiting for it. The IAM shipper
//! sends members the whole IAM state until they acknowledge that revision.

use crate::error::{KmsError, Result};
use crate::store::WriteTxn;
use crate::time::Timestamp;

/// Refuses an IAM change in `region` when it is a member of a tenancy whose home is another
/// region.
pub(crate) fn refuse_if_member(txn: &WriteTxn, region: &str) -> Result<()> {
    match txn.tenancy_home()? {
        Some(home) if home != region => {
            let tenancy = txn
                .meta(crate::store::META_TENANCY)?
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            Err(KmsError::NotHomeRegion {
                tenancy,
                home,
                region: region.to_owned(),
            })
        }
        _ => Ok(()),
    }
}

/// Queues an IAM change (made in this, the home region) for every member region, in the
/// change's own transaction: the IAM revision moves by one and each member waits for it.
/// Whether any member is waiting.
pub(crate) fn queue(txn: &WriteTxn, now: Timestamp) -> Result<bool> {
    txn.set_iam_revision(txn.iam_revision()? + 1)?;
    let members = txn.tenancy_members()?;
    for mut member in members.iter().cloned() {
        if member.pending_since.is_none() {
            member.pending_since = Some(now);
            txn.put_tenancy_member(&member)?;
        }
    }
    Ok(!members.is_empty())
}
