//! One step of the rollout engine, over the store only (no clock, no network): advance every
//! running rollout on its current phase's health, then recompute the desired state of the
//! devices it may have changed and give a new generation to each device whose desired models
//! changed. The caller signs and publishes those (and re-publishes a device's stored desired
//! state on hello).
//!
//! Everything the engine knows is in the store, so a restarted server resumes where it was: the
//! phase and its start time are in the rollout record; a device that enrolls (or comes back)
//! late is placed by the same stable bucket as the others at the next step.
//!
//! [`Engine`] remembers between steps what placement depends on (each device's tags, its
//! desired record, the rollouts' placement and baselines), so that a step in which nothing
//! changed reads the rollouts and bundles and the enrollment journal (`Table::Changes`, written
//! with every enrollment: [`crate::devices::journal`]) and touches no device: its cost does not grow with the fleet. A
//! rollout that changed what it places (a new phase, a rollback, a new rollout) recomputes the
//! fleet in memory and writes only the devices whose models changed; a new enrollment
//! recomputes that device. A fresh engine (a restart, a failed step) rebuilds from the store.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::bundles::BundleRecord;
use crate::desired::{desired_for, reaches, Placed, ShadowTarget, Target};
use crate::devices::{journal_device, DeviceRecord, JOURNAL};
use crate::health::phase_health;
use crate::rollout::{Lifecycle, Rollout, Status, Transition};
use crate::store::{decode, put, Records, Store, StoreError, Table, Write};
use crate::telemetry_keys::baselines_key;

/// A device's stored desired state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DesiredRecord {
    /// Generation (per device, increasing).
    pub generation: u64,
    /// Models.
    pub models: Vec<Target>,
    /// Candidates to run as shadows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadows: Vec<ShadowTarget>,
}

/// What one step did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepReport {
    /// Rollout transitions made, by rollout id.
    pub transitions: Vec<(String, Transition)>,
    /// Devices with a new desired state: id and the record to sign and publish.
    pub desired: Vec<(String, DesiredRecord)>,
    /// Devices whose desired state was computed (all of them on a full step, the changed
    /// ones after): what the step cost.
    pub devices_computed: usize,
}

fn creation_order(id: &str) -> u64 {
    id.trim_start_matches("r-").parse().unwrap_or(u64::MAX)
}

/// Journal entries read per step (the rest wait for the next one).
const JOURNAL_BATCH: usize = 20_000;

/// Runs one step at `now` with a fresh [`Engine`] (everything read from the store).
/// `reference` gives a bundle's reference statistics (from its manifest) for the PSI gate.
pub fn step<S: Store + ?Sized>(
    records: &Records<S>,
    now: u64,
    reference: impl Fn(&str) -> edge_bundle::ReferenceStats,
) -> Result<StepReport, StoreError> {
    Engine::default().step(records, now, reference)
}

/// The rollout engine and what it remembers between steps (see the module doc).
#[derive(Default)]
pub struct Engine {
    cache: Option<Cache>,
    /// The lease this engine leads under (name, fencing token): every write it makes is
    /// refused once another replica holds the lease ([`crate::store::Write::Fence`]).
    fence: Option<(String, u64)>,
}

/// What placement depends on, as of the last step that committed.
struct Cache {
    /// Tags by device.
    members: BTreeMap<String, BTreeMap<String, String>>,
    /// Desired record by device.
    desired: HashMap<String, DesiredRecord>,
    /// Baselines by rollout.
    baselines: HashMap<String, HashMap<String, Target>>,
    /// Digest of the rollouts' placement (see [`placement_digest`]).
    placement: u64,
    /// Devices in each running rollout's phase: (digest of that rollout's placement, count),
    /// kept up to date with enrollments.
    in_phase: HashMap<String, (u64, u64)>,
}

impl Cache {
    /// Everything from the store (a fresh engine).
    fn load<S: Store + ?Sized>(records: &Records<S>) -> Result<Cache, StoreError> {
        let members = records
            .list::<DeviceRecord>(Table::Devices, "", usize::MAX)?
            .into_iter()
            .map(|d| (d.id, d.tags))
            .collect();
        let desired = records
            .store()
            .scan(Table::Desired, "", usize::MAX)?
            .into_iter()
            .map(|(k, v)| decode(Table::Desired, &k, &v).map(|d| (k, d)))
            .collect::<Result<_, _>>()?;
        Ok(Cache {
            members,
            desired,
            baselines: HashMap::new(),
            placement: 0,
            in_phase: HashMap::new(),
        })
    }
}

/// What a rollout's placement depends on: its id, status, current share, selector and target.
fn rollout_digest(r: &Rollout, target: Option<&Target>) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    r.id.hash(&mut h);
    format!("{:?}", r.status).hash(&mut h);
    r.percent().to_bits().hash(&mut h);
    r.phase.hash(&mut h);
    serde_json::to_string(&r.spec.selector)
        .unwrap_or_default()
        .hash(&mut h);
    target
        .map(|t| (&t.name, &t.version, &t.sha256, t.size))
        .hash(&mut h);
    h.finish()
}

/// The digest of every rollout's placement, in order.
fn placement_digest(digests: &[u64]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    digests.hash(&mut h);
    h.finish()
}

impl Engine {
    /// Runs one step at `now`; `reference` gives a bundle's reference statistics (from its
    /// manifest) for the PSI gate. A step that fails leaves the engine to rebuild from the
    /// store at the next one.
    pub fn step<S: Store + ?Sized>(
        &mut self,
        records: &Records<S>,
        now: u64,
        reference: impl Fn(&str) -> edge_bundle::ReferenceStats,
    ) -> Result<StepReport, StoreError> {
        let cache = self.cache.take();
        let fence = self
            .fence
            .clone()
            .map(|(name, token)| Write::Fence { name, token });
        let (report, cache) = step_with(records, now, reference, cache, fence)?;
        self.cache = Some(cache);
        Ok(report)
    }

    /// Leads under lease `name` with fencing `token` from now on. A token other than the one
    /// it led under drops what it remembers: another replica may have led in between.
    pub fn lead(&mut self, name: &str, token: u64) {
        if self.fence.as_ref().map(|(n, t)| (n.as_str(), *t)) != Some((name, token)) {
            self.cache = None;
            self.fence = Some((name.to_string(), token));
        }
    }

    /// Stops leading (the lease went to another replica): the next lead starts from the store.
    pub fn follow(&mut self) {
        self.cache = None;
        self.fence = None;
    }
}

fn step_with<S: Store + ?Sized>(
    records: &Records<S>,
    now: u64,
    reference: impl Fn(&str) -> edge_bundle::ReferenceStats,
    cache: Option<Cache>,
    fence: Option<Write>,
) -> Result<(StepReport, Cache), StoreError> {
    // the rollouts as read: a transition is written only over the record it was computed from
    // (an operator's action on another replica in between makes the step fail and run again)
    let rollout_rows = records.store().scan(Table::Rollouts, "", usize::MAX)?;
    let mut rollouts: Vec<Rollout> = rollout_rows
        .iter()
        .map(|(k, v)| decode(Table::Rollouts, k, v))
        .collect::<Result<_, _>>()?;
    let read_as: HashMap<&str, &Vec<u8>> =
        rollout_rows.iter().map(|(k, v)| (k.as_str(), v)).collect();
    rollouts.sort_by_key(|r| creation_order(&r.id));
    let bundles: HashMap<String, BundleRecord> = records
        .list::<BundleRecord>(Table::Bundles, "", usize::MAX)?
        .into_iter()
        .map(|b| (b.sha256.clone(), b))
        .collect();
    let mut report = StepReport::default();

    // 0. the fleet: enrollments since the last step (journal first, so that an enrollment
    // racing a full load is read again at the next step), or everything
    let journal_entries = records
        .store()
        .scan(Table::Changes, JOURNAL, JOURNAL_BATCH)?;
    let full = cache.is_none();
    let mut cache = match cache {
        Some(c) => c,
        None => Cache::load(records)?,
    };
    // devices whose tags changed: (id, tags before, tags now)
    type Tags = BTreeMap<String, String>;
    let mut updates: Vec<(String, Option<Tags>, Option<Tags>)> = Vec::new();
    if !full {
        let mut seen = HashSet::new();
        for (key, _) in &journal_entries {
            let Some(id) = journal_device(key) else {
                continue;
            };
            if !seen.insert(id.to_string()) {
                continue;
            }
            let now_tags = records
                .get::<DeviceRecord>(Table::Devices, id)?
                .map(|d| d.tags);
            let before = match &now_tags {
                Some(tags) => cache.members.insert(id.to_string(), tags.clone()),
                None => cache.members.remove(id),
            };
            updates.push((id.to_string(), before, now_tags));
        }
    }

    // 1. advance running rollouts on their phase's health
    for r in rollouts.iter_mut().filter(|r| r.status == Status::Running) {
        let sha = r.spec.bundle.trim_start_matches("sha256:").to_string();
        let digest = rollout_digest(r, None);
        let reached =
            |id: &str, tags: &Option<Tags>| tags.as_ref().is_some_and(|t| r.judged_on(id, t));
        let in_phase = match cache.in_phase.get(&r.id) {
            // the count of the last step, moved by the enrollments since
            Some(&(d, n)) if d == digest => updates.iter().fold(n, |n, (id, before, now)| {
                (n + u64::from(reached(id, now))).saturating_sub(u64::from(reached(id, before)))
            }),
            _ => cache
                .members
                .iter()
                .filter(|(id, tags)| r.judged_on(id, tags))
                .count() as u64,
        };
        cache.in_phase.insert(r.id.clone(), (digest, in_phase));
        let health = phase_health(records, r, in_phase, &reference(&sha), now)?;
        // an experiment's look is kept when its samples changed (the chart of its confidence
        // sequence), and with the transition it decided
        let looked = health
            .experiment
            .clone()
            .is_some_and(|look| r.record_look(look));
        let transition = r.tick(now, &health);
        if transition.is_some() || looked {
            let mut writes: Vec<Write> = fence.iter().cloned().collect();
            writes.push(Write::Expect(
                Table::Rollouts,
                r.id.clone(),
                read_as.get(r.id.as_str()).map(|v| v.to_vec()),
            ));
            writes.push(put(Table::Rollouts, &r.id, &*r));
            records.store().write(writes)?;
            if let Some(t) = transition {
                report.transitions.push((r.id.clone(), t));
            }
        }
    }

    // 2. desired state of the devices placement may have changed
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
    for r in &rollouts {
        if !cache.baselines.contains_key(&r.id) {
            let b = records
                .get(Table::Telemetry, &baselines_key(&r.id))?
                .unwrap_or_default();
            cache.baselines.insert(r.id.clone(), b);
        }
    }
    let digests: Vec<u64> = rollouts
        .iter()
        .zip(&targets)
        .map(|(r, t)| rollout_digest(r, t.as_ref()))
        .collect();
    let placement = placement_digest(&digests);
    let everyone = full || placement != cache.placement;
    let empty = HashMap::new();
    let placed: Vec<Placed<'_>> = rollouts
        .iter()
        .zip(&targets)
        .filter_map(|(rollout, target)| {
            target.as_ref().map(|target| Placed {
                rollout,
                target,
                baselines: cache.baselines.get(&rollout.id).unwrap_or(&empty),
            })
        })
        .collect();
    let to_compute: Vec<&String> = if everyone {
        cache.members.keys().collect()
    } else {
        let mut ids: Vec<&String> = updates
            .iter()
            .filter_map(|(id, _, _)| cache.members.get_key_value(id).map(|(k, _)| k))
            .collect();
        ids.sort();
        ids
    };
    report.devices_computed = to_compute.len();
    let mut new_baselines: BTreeMap<String, HashMap<String, Target>> = BTreeMap::new();
    let mut desired_writes = Vec::new();
    for id in to_compute {
        let tags = &cache.members[id];
        let wanted = desired_for(id, tags, &placed);
        let current = cache.desired.get(id);
        // a device first reached by a rollout: remember what it was told before (its baseline)
        for p in &placed {
            if reaches(p, id, tags) && !p.baselines.contains_key(id) {
                if let Some(before) =
                    current.and_then(|c| c.models.iter().find(|m| m.name == p.target.name))
                {
                    if before != p.target {
                        new_baselines
                            .entry(p.rollout.id.clone())
                            .or_default()
                            .insert(id.clone(), before.clone());
                    }
                }
            }
        }
        let unchanged = match current {
            Some(c) => c.models == wanted.models && c.shadows == wanted.shadows,
            // never told anything, nothing to tell
            None => wanted.models.is_empty() && wanted.shadows.is_empty(),
        };
        if !unchanged {
            // the record is the only place a device's generation lives: one more than the last
            let generation = current.map_or(0, |c| c.generation) + 1;
            let record = DesiredRecord {
                generation,
                models: wanted.models,
                shadows: wanted.shadows,
            };
            desired_writes.push(put(Table::Desired, id, &record));
            report.desired.push((id.clone(), record));
        }
    }
    drop(placed);
    // every new desired state, the baselines and the journal entries read, in one transaction
    // (a first rollout step over a large fleet would otherwise commit once per device)
    let mut writes = desired_writes;
    let mut baselines_after = Vec::new();
    for (rollout, add) in new_baselines {
        let mut all = cache.baselines.get(&rollout).cloned().unwrap_or_default();
        all.extend(add);
        writes.push(put(Table::Telemetry, &baselines_key(&rollout), &all));
        baselines_after.push((rollout, all));
    }
    writes.extend(
        journal_entries
            .into_iter()
            .map(|(key, _)| Write::Delete(Table::Changes, key)),
    );
    if !writes.is_empty() {
        writes.extend(fence);
        records.store().write(writes)?;
    }
    // committed: remember it
    for (id, record) in &report.desired {
        cache.desired.insert(id.clone(), record.clone());
    }
    cache.baselines.extend(baselines_after);
    let live: HashSet<&str> = rollouts.iter().map(|r| r.id.as_str()).collect();
    cache.baselines.retain(|id, _| live.contains(id.as_str()));
    cache.in_phase.retain(|id, _| live.contains(id.as_str()));
    cache.placement = placement;
    Ok((report, cache))
}
