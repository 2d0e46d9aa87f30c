//! The rules that vaults, keys and versions share: names, auto-rotation intervals and the
//! 7–30-day deletion window.

use crate::error::{KmsError, Result};
use crate::ids::Ocid;
use crate::model::{
    AutoKeyRotationDetails, Key, KeyState, KeyVersion, KeyVersionState, Vault, VaultState, MAX_DELETION_DAYS,
    MAX_ROTATION_INTERVAL_DAYS, MIN_DELETION_DAYS, MIN_ROTATION_INTERVAL_DAYS,
};
use crate::time::Timestamp;

/// A display name: 1–255 characters, not only spaces.
pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.len() > 255 {
        return Err(KmsError::InvalidParameter(
            "displayName must be 1–255 characters".into(),
        ));
    }
    Ok(())
}

pub(crate) fn check_rotation_interval(days: u32) -> Result<()> {
    if !(MIN_ROTATION_INTERVAL_DAYS..=MAX_ROTATION_INTERVAL_DAYS).contains(&days) {
        return Err(KmsError::InvalidParameter(format!(
            "rotation interval must be {MIN_ROTATION_INTERVAL_DAYS}–{MAX_ROTATION_INTERVAL_DAYS} days, got {days}"
        )));
    }
    Ok(())
}

/// Validates a requested deletion time: 7–30 days after `now`, 30 days when absent.
pub(crate) fn deletion_time(now: Timestamp, requested: Option<Timestamp>) -> Result<Timestamp> {
    let Some(t) = requested else {
        return Ok(now.plus_days(MAX_DELETION_DAYS));
    };
    // A minute of slack so that "in 7 days" computed by a client a moment ago is accepted.
    let slack = 60_000;
    let earliest = now.plus_days(MIN_DELETION_DAYS).unix_millis() - slack;
    let latest = now.plus_days(MAX_DELETION_DAYS).unix_millis() + slack;
    if t.unix_millis() < earliest || t.unix_millis() > latest {
        return Err(KmsError::InvalidParameter(format!(
            "timeOfDeletion {t} must be between {MIN_DELETION_DAYS} and {MAX_DELETION_DAYS} days from now ({} to {})",
            now.plus_days(MIN_DELETION_DAYS),
            now.plus_days(MAX_DELETION_DAYS)
        )));
    }
    Ok(t)
}

pub(crate) fn auto_rotation_details(interval: u32, last_rotation: Timestamp) -> AutoKeyRotationDetails {
    AutoKeyRotationDetails {
        rotation_interval_in_days: interval,
        time_of_schedule_start: Some(last_rotation),
        time_of_next_rotation: Some(last_rotation.plus_days(interval.into())),
        time_of_last_rotation: None,
        last_rotation_status: None,
        last_rotation_message: None,
    }
}

/// A resource whose deletion is scheduled 7–30 days ahead and can be cancelled until then:
/// vaults, keys and key versions. [`schedule_deletion`] and [`cancel_deletion`] are the one
/// definition of both transitions.
pub(crate) trait ScheduledDeletion {
    /// "vault", "key", "key version".
    const KIND: &'static str;
    /// Its id, for messages.
    fn id(&self) -> &Ocid;
    /// Its state, for messages.
    fn state(&self) -> String;
    /// Whether its state allows scheduling its deletion.
    fn may_schedule(&self) -> bool;
    /// Whether its deletion is scheduled (and may be cancelled).
    fn is_pending_deletion(&self) -> bool;
    /// Sets PENDING_DELETION (or back to usable, with `None`) and the time of deletion.
    fn set_deletion(&mut self, at: Option<Timestamp>);
}

/// Schedules `resource`'s deletion at `at` (7–30 days after `now`; 30 when `None`).
pub(crate) fn schedule_deletion<R: ScheduledDeletion>(
    resource: &mut R,
    now: Timestamp,
    at: Option<Timestamp>,
) -> Result<()> {
    if !resource.may_schedule() {
        return Err(KmsError::IncorrectState(format!(
            "{} {} is {}; it cannot be scheduled for deletion",
            R::KIND,
            resource.id(),
            resource.state()
        )));
    }
    resource.set_deletion(Some(deletion_time(now, at)?));
    Ok(())
}

/// Cancels `resource`'s scheduled deletion; it becomes usable again.
pub(crate) fn cancel_deletion<R: ScheduledDeletion>(resource: &mut R) -> Result<()> {
    if !resource.is_pending_deletion() {
        return Err(KmsError::IncorrectState(format!(
            "{} {} is {}, not PENDING_DELETION",
            R::KIND,
            resource.id(),
            resource.state()
        )));
    }
    resource.set_deletion(None);
    Ok(())
}

impl ScheduledDeletion for Vault {
    const KIND: &'static str = "vault";
    fn id(&self) -> &Ocid {
        &self.id
    }
    fn state(&self) -> String {
        format!("{:?}", self.lifecycle_state)
    }
    fn may_schedule(&self) -> bool {
        self.lifecycle_state == VaultState::Active
    }
    fn is_pending_deletion(&self) -> bool {
        self.lifecycle_state == VaultState::PendingDeletion
    }
    fn set_deletion(&mut self, at: Option<Timestamp>) {
        self.lifecycle_state = if at.is_some() {
            VaultState::PendingDeletion
        } else {
            VaultState::Active
        };
        self.time_of_deletion = at;
    }
}

impl ScheduledDeletion for Key {
    const KIND: &'static str = "key";
    fn id(&self) -> &Ocid {
        &self.id
    }
    fn state(&self) -> String {
        format!("{:?}", self.lifecycle_state)
    }
    fn may_schedule(&self) -> bool {
        matches!(self.lifecycle_state, KeyState::Enabled | KeyState::Disabled)
    }
    fn is_pending_deletion(&self) -> bool {
        self.lifecycle_state == KeyState::PendingDeletion
    }
    fn set_deletion(&mut self, at: Option<Timestamp>) {
        self.lifecycle_state = if at.is_some() {
            KeyState::PendingDeletion
        } else {
            KeyState::Enabled
        };
        self.time_of_deletion = at;
    }
}

impl ScheduledDeletion for KeyVersion {
    const KIND: &'static str = "key version";
    fn id(&self) -> &Ocid {
        &self.id
    }
    fn state(&self) -> String {
        format!("{:?}", self.lifecycle_state)
    }
    fn may_schedule(&self) -> bool {
        matches!(
            self.lifecycle_state,
            KeyVersionState::Enabled | KeyVersionState::Disabled
        )
    }
    fn is_pending_deletion(&self) -> bool {
        self.lifecycle_state == KeyVersionState::PendingDeletion
    }
    fn set_deletion(&mut self, at: Option<Timestamp>) {
        self.lifecycle_state = if at.is_some() {
            KeyVersionState::PendingDeletion
        } else {
            KeyVersionState::Enabled
        };
        self.time_of_deletion = at;
    }
}
