//! What the dashboard's rollout charts draw (`GET /v1/rollouts/{id}/series`): for every phase
//! the rollout reached, its minute points (the telemetry of that phase's devices on the new
//! version), and the whole-fleet points of the new version and of the version it replaces, each
//! point reduced to the gate metrics (error rate, p99 latency, PSI against the bundle's
//! reference, mean confidence, reporting devices; install failure rate in the phase points),
//! plus the gate thresholds and the decision log.

use edge_bundle::ReferenceStats;
use serde_json::{json, Value};

use crate::health::PhaseAggregate;
use crate::rollout::Rollout;
use crate::series::{points, rollout_series, version_series};
use crate::store::{Records, Store, StoreError, Table};

/// One point's gate metrics.
pub fn point_json(
    start: u64,
    resolution: u64,
    a: &PhaseAggregate,
    reference: &ReferenceStats,
) -> Value {
    let h = a.health(0, 0, 0, reference);
    json!({
        "t": start,
        "resolution": resolution,
        "requests": h.requests,
        "errors": h.errors,
        "error_rate": (h.requests > 0).then(|| h.errors as f64 / h.requests as f64),
        "p99_ms": h.p99_ms,
        "psi": h.psi,
        "mean_confidence": h.mean_confidence,
        "reporting_devices": h.reporting_devices,
        "installs": a.installs,
        "install_failure_rate": (a.installs > 0).then(|| a.install_failures as f64 / a.installs as f64),
    })
}

fn series_json<S: Store + ?Sized>(
    records: &Records<S>,
    series: &str,
    reference: &ReferenceStats,
) -> Result<Vec<Value>, StoreError> {
    Ok(points(records, series)?
        .iter()
        .map(|p| point_json(p.start, p.resolution, &p.aggregate, reference))
        .collect())
}

/// Rollout ids are `r-1`, `r-2`, ... in creation order.
fn ordinal(id: &str) -> u64 {
    id.trim_start_matches("r-").parse().unwrap_or(0)
}

/// The version `r` replaces: the version of the latest earlier rollout of the same model that
/// completed (None for a first rollout).
pub fn previous_version<S: Store + ?Sized>(
    records: &Records<S>,
    r: &Rollout,
) -> Result<Option<String>, StoreError> {
    let all: Vec<Rollout> = records.list(Table::Rollouts, "", usize::MAX)?;
    Ok(all
        .into_iter()
        .filter(|o| {
            o.model == r.model
                && ordinal(&o.id) < ordinal(&r.id)
                && o.status == crate::rollout::Status::Completed
                && o.version != r.version
        })
        .max_by_key(|o| ordinal(&o.id))
        .map(|o| o.version))
}

/// The chart document of rollout `r`; `reference` is the reference statistics of its bundle.
pub fn rollout_charts<S: Store + ?Sized>(
    records: &Records<S>,
    r: &Rollout,
    reference: &ReferenceStats,
) -> Result<Value, StoreError> {
    let mut phases = Vec::new();
    for phase in 0..=r.phase.min(r.spec.phases.len().saturating_sub(1)) {
        phases.push(json!({
            "phase": phase,
            "percent": r.spec.phases[phase].percent,
            "points": series_json(records, &rollout_series(&r.id, phase), reference)?,
        }));
    }
    let previous = previous_version(records, r)?;
    let previous_points = match &previous {
        Some(v) => series_json(records, &version_series(&r.model, v), reference)?,
        None => vec![],
    };
    Ok(json!({
        "id": r.id,
        "model": r.model,
        "version": r.version,
        "gates": r.spec.gates,
        "phases": phases,
        "new": {"version": r.version,
                "points": series_json(records, &version_series(&r.model, &r.version), reference)?},
        "previous": {"version": previous, "points": previous_points},
        "transitions": r.transitions,
    }))
}
