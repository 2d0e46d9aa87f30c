//! The rules that vaults, keys and versions share: names, auto-rotation intervals and the
//! 7–30-day deletion window.

use crate::error::{KmsError, Result};
use crate::model::{
    AutoKeyRotationDetails, MAX_DELETION_DAYS, MAX_ROTATION_INTERVAL_DAYS, MIN_DELETION_DAYS,
    MIN_ROTATION_INTERVAL_DAYS,
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
