//! What the dashboard's rollout charts draw (`GET /v1/rollouts/{id}/series`): for every phase
//! the rollout reached, its minute points (the telemetry of that phase's devices on the new
//! version), and the whole-fleet points of the new version and of the version it replaces, each
//! point reduced to the gate metrics (error rate, p99 latency, PSI against the bundle's
//! reference, mean confidence, reporting devices; install failure rate in the phase points;
//! shadow agreement and accuracy on app feedback where there are any), plus the gate thresholds
//! and the decision log.

use edge_bundle::ReferenceStats;
use edge_protocol::rest::{ChartPoint, PhaseSeries, RolloutCharts, VersionSeries};

use crate::health::PhaseAggregate;
use crate::rollout::Rollout;
use crate::series::{points, rollout_series, version_series};
use crate::store::{Records, Store, StoreError, Table};

/// One point's gate metrics.
pub fn point(
    start: u64,
    resolution: u64,
    a: &PhaseAggregate,
    reference: &ReferenceStats,
) -> ChartPoint {
    let h = a.health(0, 0, 0, reference);
    ChartPoint {
        t: start,
        resolution,
        requests: h.requests,
        errors: h.errors,
        error_rate: (h.requests > 0).then(|| h.errors as f64 / h.requests as f64),
        p99_ms: h.p99_ms,
        psi: h.psi,
        mean_confidence: h.mean_confidence,
        reporting_devices: h.reporting_devices,
        installs: a.installs,
        install_failure_rate: (a.installs > 0)
            .then(|| a.install_failures as f64 / a.installs as f64),
        shadow_agreement: h.shadow.and_then(|s| s.agreement),
        accuracy: h.feedback.and_then(|f| f.accuracy),
    }
}

fn series_points<S: Store + ?Sized>(
    records: &Records<S>,
    series: &str,
    reference: &ReferenceStats,
) -> Result<Vec<ChartPoint>, StoreError> {
    Ok(points(records, series)?
        .iter()
        .map(|p| point(p.start, p.resolution, &p.aggregate, reference))
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
) -> Result<RolloutCharts, StoreError> {
    let mut phases = Vec::new();
    for phase in 0..=r.phase.min(r.spec.phases.len().saturating_sub(1)) {
        phases.push(PhaseSeries {
            phase,
            percent: r.spec.phases[phase].percent,
            points: series_points(records, &rollout_series(&r.id, phase), reference)?,
        });
    }
    let previous = previous_version(records, r)?;
    let previous_points = match &previous {
        Some(v) => series_points(records, &version_series(&r.model, v), reference)?,
        None => vec![],
    };
    Ok(RolloutCharts {
        id: r.id.clone(),
        model: r.model.clone(),
        version: r.version.clone(),
        gates: r.spec.gates.clone(),
        phases,
        new: VersionSeries {
            version: Some(r.version.clone()),
            points: series_points(records, &version_series(&r.model, &r.version), reference)?,
        },
        previous: VersionSeries {
            version: previous,
            points: previous_points,
        },
        transitions: r.transitions.clone(),
    })
}
