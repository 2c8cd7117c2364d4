//! One step of the rollout engine, over the store only (no clock, no network): advance every
//! running rollout on its current phase's health, then recompute every device's desired state
//! and give a new generation to each device whose desired models changed. The caller signs and
//! publishes those (and re-publishes a device's stored desired state on hello).
//!
//! Everything the engine knows is in the store, so a restarted server resumes where it was: the
//! phase and its start time are in the rollout record; a device that enrolls (or comes back)
//! late is placed by the same stable bucket as the others at the next step.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::bundles::BundleRecord;
use crate::desired::{desired_for, reaches, Placed, Target};
use crate::devices::DeviceRecord;
use crate::health::phase_health;
use crate::rollout::{Lifecycle, Rollout, Status, Transition};
use crate::store::{put, Records, Store, StoreError, Table};
use crate::telemetry_keys::baselines_key;

/// A device's stored desired state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredRecord {
    /// Generation (per device, increasing).
    pub generation: u64,
    /// Models.
    pub models: Vec<Target>,
}

/// What one step did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepReport {
    /// Rollout transitions made, by rollout id.
    pub transitions: Vec<(String, Transition)>,
    /// Devices with a new desired state: id and the record to sign and publish.
    pub desired: Vec<(String, DesiredRecord)>,
}

fn creation_order(id: &str) -> u64 {
    id.trim_start_matches("r-").parse().unwrap_or(u64::MAX)
}

/// Runs one step at `now`. `reference` gives a bundle's reference statistics (from its
/// manifest) for the PSI gate.
pub fn step<S: Store + ?Sized>(
    records: &Records<S>,
    now: u64,
    reference: impl Fn(&str) -> edge_bundle::ReferenceStats,
) -> Result<StepReport, StoreError> {
    let devices: Vec<DeviceRecord> = records.list(Table::Devices, "", usize::MAX)?;
    let mut rollouts: Vec<Rollout> = records.list(Table::Rollouts, "", usize::MAX)?;
    rollouts.sort_by_key(|r| creation_order(&r.id));
    let bundles: HashMap<String, BundleRecord> = records
        .list::<BundleRecord>(Table::Bundles, "", usize::MAX)?
        .into_iter()
        .map(|b| (b.sha256.clone(), b))
        .collect();
    let mut report = StepReport::default();

    // 1. advance running rollouts on their phase's health
    for r in rollouts.iter_mut().filter(|r| r.status == Status::Running) {
        let sha = r.spec.bundle.trim_start_matches("sha256:").to_string();
        let health = phase_health(records, r, &devices, &reference(&sha))?;
        if let Some(t) = r.tick(now, &health) {
            records.put(Table::Rollouts, &r.id, &*r)?;
            report.transitions.push((r.id.clone(), t));
        }
    }

    // 2. desired state per device
    let targets: Vec<Option<Target>> = rollouts
        .iter()
        .map(|r| {
            bundles
                .get(r.spec.bundle.trim_start_matches("sha256:"))
                .map(|b| Target {
                    name: b.name.clone(),
                    version: b.version.clone(),
                    sha256: b.sha256.clone(),
                    size: b.size,
                })
        })
        .collect();
    let baselines: Vec<HashMap<String, Target>> = rollouts
        .iter()
        .map(|r| {
            records
                .get(Table::Telemetry, &baselines_key(&r.id))
                .map(|b| b.unwrap_or_default())
        })
        .collect::<Result<_, _>>()?;
    let placed: Vec<Placed<'_>> = rollouts
        .iter()
        .zip(&targets)
        .zip(&baselines)
        .filter_map(|((rollout, target), baselines)| {
            target.as_ref().map(|target| Placed {
                rollout,
                target,
                baselines,
            })
        })
        .collect();
    let mut new_baselines: BTreeMap<String, HashMap<String, Target>> = BTreeMap::new();
    let mut desired_writes = Vec::new();
    for d in &devices {
        let models = desired_for(&d.id, &d.tags, &placed);
        let current: Option<DesiredRecord> = records.get(Table::Desired, &d.id)?;
        // a device first reached by a rollout: remember what it was told before (its baseline)
        for p in &placed {
            if reaches(p, &d.id, &d.tags) && !p.baselines.contains_key(&d.id) {
                if let Some(before) = current
                    .as_ref()
                    .and_then(|c| c.models.iter().find(|m| m.name == p.target.name))
                {
                    if before != p.target {
                        new_baselines
                            .entry(p.rollout.id.clone())
                            .or_default()
                            .insert(d.id.clone(), before.clone());
                    }
                }
            }
        }
        let unchanged = match &current {
            Some(c) => c.models == models,
            None => models.is_empty(), // never told anything, nothing to tell
        };
        if !unchanged {
            // the record is the only place a device's generation lives: one more than the last
            let generation = current.as_ref().map_or(0, |c| c.generation) + 1;
            let record = DesiredRecord { generation, models };
            desired_writes.push(put(Table::Desired, &d.id, &record));
            report.desired.push((d.id.clone(), record));
        }
    }
    // every new desired state in one transaction (a first rollout step over a large fleet
    // would otherwise commit once per device)
    let mut writes = desired_writes;
    for (rollout, add) in new_baselines {
        let mut all: HashMap<String, Target> = records
            .get(Table::Telemetry, &baselines_key(&rollout))?
            .unwrap_or_default();
        all.extend(add);
        writes.push(put(Table::Telemetry, &baselines_key(&rollout), &all));
    }
    if !writes.is_empty() {
        records.store().write(writes)?;
    }
    Ok(report)
}
