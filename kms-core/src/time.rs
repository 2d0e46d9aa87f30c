//! Time: a millisecond timestamp type and a clock that tests can move.
//!
//! Deletion windows, auto-rotation and the compliance report all depend on "now"; every
//! kms-core operation asks the [`Clock`] it was built with, so tests use [`ManualClock`] to
//! jump weeks ahead instead of sleeping.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{KmsError, Result};

/// Milliseconds in a day.
pub(crate) const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// A UTC instant with millisecond precision. Serialized as OCI does: `2026-11-22T18:38:24.327Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// From milliseconds since the Unix epoch.
    pub const fn from_unix_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// This instant plus `days` days.
    pub fn plus_days(self, days: i64) -> Self {
        Timestamp(self.0 + days * DAY_MS)
    }

    /// Whole days from `earlier` to `self` (negative if `earlier` is later).
    pub fn days_since(self, earlier: Timestamp) -> i64 {
        (self.0 - earlier.0).div_euclid(DAY_MS)
    }

    /// Parses RFC 3339 (`2026-12-03T19:33:00.000000Z`, any fraction, any offset).
    pub fn parse(s: &str) -> Result<Self> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| Timestamp(t.timestamp_millis()))
            .map_err(|e| KmsError::InvalidParameter(format!("'{s}' is not an RFC 3339 time: {e}")))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match DateTime::<Utc>::from_timestamp_millis(self.0) {
            Some(t) => f.write_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            None => write!(f, "@{}ms", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Where kms-core gets the current time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp(Utc::now().timestamp_millis())
    }
}

/// A clock that stands still until told to move. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock set to `start`.
    pub(crate) fn new(start: Timestamp) -> Self {
        ManualClock(Arc::new(AtomicI64::new(start.0)))
    }

    /// A clock set to the current wall-clock time.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now())
    }

    /// Moves the clock forward by `days`.
    pub fn advance_days(&self, days: i64) {
        self.0.fetch_add(days * DAY_MS, Ordering::SeqCst);
    }

    /// Moves the clock forward by `ms` milliseconds.
    pub fn advance_millis(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// A clock running `offset_days` ahead of the wall clock: lets end-to-end tests of the real
/// binary reach deadlines (`SEALSTORE_CLOCK_OFFSET_DAYS`) without waiting for them.
#[derive(Debug, Clone, Copy)]
pub struct OffsetClock {
    /// Days added to the wall clock.
    pub offset_days: i64,
}

impl Clock for OffsetClock {
    fn now(&self) -> Timestamp {
        SystemClock.now().plus_days(self.offset_days)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_oci_and_parses_microseconds() {
        let t = Timestamp::parse("2026-11-22T18:38:24.327Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-22T18:38:24.327Z");
        let u = Timestamp::parse("2026-12-03T19:33:00.000000Z").unwrap();
        assert_eq!(u.to_string(), "2026-12-03T19:33:00.000Z");
        assert!(Timestamp::parse("yesterday").is_err());
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(Timestamp::from_unix_millis(0));
        assert_eq!(c.now().unix_millis(), 0);
        c.advance_days(2);
        assert_eq!(c.now().days_since(Timestamp::from_unix_millis(0)), 2);
    }
}
