//! `[health]` (active probes, with per-backend overrides) and `[passive]` (ejection after
//! failures on live traffic).

use super::defaults;
use serde::{Deserialize, Deserializer};
use std::num::NonZeroU32;
use std::time::Duration;

/// An inclusive range of HTTP status codes, written `"200-399"` or `"200"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    pub low: u16,
    pub high: u16,
}

impl StatusRange {
    pub fn contains(&self, status: u16) -> bool {
        (self.low..=self.high).contains(&status)
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_status_range(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid status range {s:?}: expected \"200\" or \"200-399\" with codes 100-599"
            ))
        })
    }
}

fn parse_status_range(s: &str) -> Option<StatusRange> {
    let (low, high) = match s.split_once('-') {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
        None => {
            let v = s.trim().parse().ok()?;
            (v, v)
        }
    };
    let valid = (100..=599).contains(&low) && (100..=599).contains(&high) && low <= high;
    valid.then_some(StatusRange { low, high })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Extra key: `false` turns active probes off (passive ejection still works).
    pub enabled: bool,
    pub path: String,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub healthy_threshold: NonZeroU32,
    pub unhealthy_threshold: NonZeroU32,
    pub expect_status: StatusRange,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            enabled: defaults::HEALTH_ENABLED,
            path: defaults::HEALTH_PATH.into(),
            interval: defaults::HEALTH_INTERVAL,
            timeout: defaults::HEALTH_TIMEOUT,
            healthy_threshold: NonZeroU32::new(defaults::HEALTHY_THRESHOLD).expect("non-zero"),
            unhealthy_threshold: NonZeroU32::new(defaults::UNHEALTHY_THRESHOLD).expect("non-zero"),
            expect_status: StatusRange { low: defaults::EXPECT_STATUS_LOW, high: defaults::EXPECT_STATUS_HIGH },
        }
    }
}

/// Per-backend overrides of `[health]`; absent keys inherit.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthOverride {
    pub enabled: Option<bool>,
    pub path: Option<String>,
    #[serde(with = "humantime_serde")]
    pub interval: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub timeout: Option<Duration>,
    pub healthy_threshold: Option<NonZeroU32>,
    pub unhealthy_threshold: Option<NonZeroU32>,
    pub expect_status: Option<StatusRange>,
}

impl HealthConfig {
    /// This config with a backend's overrides applied.
    pub fn with_override(&self, o: &HealthOverride) -> HealthConfig {
        HealthConfig {
            enabled: o.enabled.unwrap_or(self.enabled),
            path: o.path.clone().unwrap_or_else(|| self.path.clone()),
            interval: o.interval.unwrap_or(self.interval),
            timeout: o.timeout.unwrap_or(self.timeout),
            healthy_threshold: o.healthy_threshold.unwrap_or(self.healthy_threshold),
            unhealthy_threshold: o.unhealthy_threshold.unwrap_or(self.unhealthy_threshold),
            expect_status: o.expect_status.unwrap_or(self.expect_status),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveConfig {
    pub consecutive_failures: NonZeroU32,
    #[serde(with = "humantime_serde")]
    pub ejection_time: Duration,
}

impl Default for PassiveConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: NonZeroU32::new(defaults::PASSIVE_FAILURES).expect("non-zero"),
            ejection_time: defaults::EJECTION_TIME,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges() {
        assert_eq!(parse_status_range("200-399"), Some(StatusRange { low: 200, high: 399 }));
        assert_eq!(parse_status_range("204"), Some(StatusRange { low: 204, high: 204 }));
        assert_eq!(parse_status_range("399-200"), None);
        assert_eq!(parse_status_range("abc"), None);
        assert_eq!(parse_status_range("99"), None);
    }

    #[test]
    fn overrides_replace_only_what_they_set() {
        let base = HealthConfig::default();
        let o = HealthOverride { path: Some("/up".into()), ..Default::default() };
        let h = base.with_override(&o);
        assert_eq!(h.path, "/up");
        assert_eq!(h.interval, base.interval);
        assert_eq!(h.expect_status, StatusRange { low: 200, high: 399 });
    }
}
