//! Telemetry time series with retention and downsampling. A series is a key prefix in the
//! Telemetry table (`series/rollout/<id>/<phase>` or `series/version/<model>@<version>`);
//! its points are [`PhaseAggregate`]s per minute (`…/m/<unix minute start>`) and, once older
//! than [`Retention::minutes_secs`], per hour (`…/h/<unix hour start>`). [`compact`] folds old
//! minutes into their hour and deletes hours older than [`Retention::hours_secs`].

use std::collections::BTreeMap;

use crate::health::PhaseAggregate;
use crate::store::{put, Records, Store, StoreError, Table, Write};

/// Prefix of every series key.
pub const PREFIX: &str = "series/";

/// How long points are kept at each resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Minute points older than this are folded into hours.
    pub minutes_secs: u64,
    /// Hour points older than this are deleted.
    pub hours_secs: u64,
}

impl Default for Retention {
    /// Minutes for a day, hours for 30 days.
    fn default() -> Self {
        Retention {
            minutes_secs: 24 * 3600,
            hours_secs: 30 * 24 * 3600,
        }
    }
}

/// The series of one rollout phase.
pub fn rollout_series(rollout: &str, phase: usize) -> String {
    format!("{PREFIX}rollout/{rollout}/{phase:04}")
}

/// The series of one model version, over every device that runs it.
pub fn version_series(model: &str, version: &str) -> String {
    format!("{PREFIX}version/{model}@{version}")
}

/// The minute point of `series` holding time `at`.
pub fn minute_key(series: &str, at: u64) -> String {
    format!("{series}/m/{:012}", at - at % 60)
}

/// The hour point of `series` holding time `at`.
pub fn hour_key(series: &str, at: u64) -> String {
    format!("{series}/h/{:012}", at - at % 3600)
}

/// One point: its start time, resolution in seconds, and aggregate.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Start, unix seconds.
    pub start: u64,
    /// 60 or 3600.
    pub resolution: u64,
    /// Merged telemetry.
    pub aggregate: PhaseAggregate,
}

fn split(key: &str) -> Option<(&str, u64, u64)> {
    let (series, rest) = key.rsplit_once('/').and_then(|(head, ts)| {
        let (series, res) = head.rsplit_once('/')?;
        Some((series, (res, ts)))
    })?;
    let resolution = match rest.0 {
        "m" => 60,
        "h" => 3600,
        _ => return None,
    };
    Some((series, resolution, rest.1.parse().ok()?))
}

/// The points of `series`, oldest first (hours, then the minutes after them).
pub fn points<S: Store + ?Sized>(
    records: &Records<S>,
    series: &str,
) -> Result<Vec<Point>, StoreError> {
    let mut out = Vec::new();
    for (key, bytes) in records
        .store()
        .scan(Table::Telemetry, &format!("{series}/"), usize::MAX)?
    {
        let Some((_, resolution, start)) = split(&key) else {
            continue;
        };
        let aggregate: PhaseAggregate =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                table: Table::Telemetry.name(),
                key: key.clone(),
                reason: e.to_string(),
            })?;
        out.push(Point {
            start,
            resolution,
            aggregate,
        });
    }
    out.sort_by_key(|p| p.start);
    Ok(out)
}

/// What [`compact`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Minute points folded into hours.
    pub folded: usize,
    /// Hour points deleted.
    pub expired: usize,
}

/// Folds minute points older than the retention into hours and deletes expired hours, in one
/// transaction.
pub fn compact<S: Store + ?Sized>(
    records: &Records<S>,
    now: u64,
    retention: Retention,
) -> Result<Compacted, StoreError> {
    let mut hours: BTreeMap<String, PhaseAggregate> = BTreeMap::new();
    let mut writes = Vec::new();
    let mut done = Compacted::default();
    for (key, bytes) in records.store().scan(Table::Telemetry, PREFIX, usize::MAX)? {
        let Some((series, resolution, start)) = split(&key) else {
            continue;
        };
        let age = now.saturating_sub(start + resolution);
        if resolution == 3600 && age > retention.hours_secs {
            writes.push(Write::Delete(Table::Telemetry, key));
            done.expired += 1;
        } else if resolution == 60 && age > retention.minutes_secs {
            let minute: PhaseAggregate =
                serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                    table: Table::Telemetry.name(),
                    key: key.clone(),
                    reason: e.to_string(),
                })?;
            let hour = hour_key(series, start);
            if !hours.contains_key(&hour) {
                let existing = records.get(Table::Telemetry, &hour)?.unwrap_or_default();
                hours.insert(hour.clone(), existing);
            }
            hours.get_mut(&hour).expect("inserted").absorb(&minute);
            writes.push(Write::Delete(Table::Telemetry, key));
            done.folded += 1;
        }
    }
    for (key, aggregate) in &hours {
        writes.push(put(Table::Telemetry, key, aggregate));
    }
    if !writes.is_empty() {
        records.store().write(writes)?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_back() {
        let s = rollout_series("r-1", 2);
        assert_eq!(split(&minute_key(&s, 125)), Some((s.as_str(), 60, 120)));
        assert_eq!(split(&hour_key(&s, 7300)), Some((s.as_str(), 3600, 7200)));
        assert_eq!(split("r-1/0000"), None);
    }
}
