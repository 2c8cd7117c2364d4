//! `edgectl demo`: the whole loop on one machine. Keys and a trust root in a temporary
//! directory, `ota-server` (its own MQTT endpoint, TLS), N `edge-agent` processes in three cohorts with
//! prediction traffic (each answer's true label sent back as feedback, as an app that learns it
//! would), then four rollouts: v1 to everyone; v2 first as a shadow beside v1 on every device
//! (it must agree with v1), then in phases 10 % → 50 % → 100 % gated on health; a bad v3 (its
//! reference statistics say it should predict mostly one class, so live predictions drift far
//! from it: PSI) that must stop at its canary phase and roll back, with no other device touched;
//! and v4, which fixes a label mix-up v1 and v2 shipped with (their "5" and "6" swapped), in an
//! A/B experiment against v2 that the sequential test decides on the apps' labels. Live progress
//! on the terminal; with `--non-interactive` a JSON summary at the end and exit 0 only if every
//! expectation held.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use edge_fleet_kit::agent::{AgentConfig, AgentProcess};
use edge_fleet_kit::traffic::Traffic;
use edge_protocol::cohort::in_phase;
use edge_runtime::Tensor;
use serde_json::{json, Value};

use super::fleet::{call, progress};
use super::local_fleet::{binary, bundle, calibration_rows, test_labels, test_rows, LocalServer};
use edge_protocol::rest::{Bundle, DeviceList, Rollout, RolloutStatus, RolloutView};

/// `edgectl demo` flags.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Agents to start.
    #[arg(long, default_value_t = 12)]
    pub devices: usize,
    /// Use an external broker (mqtt://host:port) instead of the embedded one.
    #[arg(long)]
    pub broker: Option<String>,
    /// Keep the server and agents running at the end (until Ctrl-C).
    #[arg(long)]
    pub keep: bool,
    /// No live display; print a JSON summary and exit 0 only if the demo went as expected.
    #[arg(long)]
    pub non_interactive: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 240)]
    pub timeout: u64,
}

/// Test rows whose label is `label`: a calibration set that makes a reference predicting one class.
fn rows_of_class(x: &Tensor, y: &Tensor, label: i64) -> Tensor {
    let xs = x.to_f64_vec();
    let ys = y.to_f64_vec();
    let per = 64;
    let data: Vec<f32> = ys
        .iter()
        .enumerate()
        .filter(|(_, l)| **l as i64 == label)
        .flat_map(|(i, _)| xs[i * per..(i + 1) * per].iter().map(|v| *v as f32))
        .collect();
    let n = data.len() / per;
    Tensor::f32(vec![n, 1, 8, 8], data)
}

/// An agent of the demo: its device id and process.
struct Agent {
    id: String,
    process: AgentProcess,
}

fn active_version(agent: &AgentProcess) -> Option<String> {
    let s = agent.status()?;
    let m = s["models"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == "digits")?
        .clone();
    m["slots"]["active"]["version"].as_str().map(str::to_string)
}

fn versions(agents: &[Agent]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in agents {
        let v = active_version(&a.process).unwrap_or_else(|| "none".into());
        out.entry(v).or_default().push(a.id.clone());
    }
    out
}

fn versions_line(v: &BTreeMap<String, Vec<String>>) -> String {
    v.iter()
        .map(|(k, ids)| format!("{k}: {}", ids.len()))
        .collect::<Vec<_>>()
        .join("  ")
}

/// Timestamped lines on the terminal (stderr with `--non-interactive`, where stdout is the JSON).
struct Narrator {
    started: Instant,
    quiet: bool,
}

impl Narrator {
    fn say(&self, msg: &str) {
        let line = format!("[{:>5.1}s] {msg}", self.started.elapsed().as_secs_f64());
        if self.quiet {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
}

/// Runs the demo: the server, the agents and their traffic, the bundles, three rollouts, the
/// verdict.
pub fn run(a: DemoArgs) -> Result<()> {
    // first the binaries (possibly a build): the demo's clock starts after
    let server_bin = binary("ota-server")?;
    let agent_bin = binary("edge-agent")?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(a.timeout);
    let dir = tempfile::Builder::new()
        .prefix("edgefleet-demo-")
        .tempdir()?;
    let root = dir.path();
    let n = Narrator {
        started,
        quiet: a.non_interactive,
    };

    // 1. keys, trust root, the server
    let fleet = LocalServer::start(root, &server_bin, a.broker.as_deref(), &[], deadline)?;
    announce_server(&n, &fleet, root);
    // 2. agents in three cohorts, with prediction traffic all along
    let ids = device_ids(a.devices);
    let agents = start_agents(&a, &fleet, &agent_bin, root, &ids)?;
    wait("every device to enroll", deadline, || {
        let v: DeviceList = call(&fleet.api, "GET", "/v1/devices", None).ok()?;
        (v.devices.len() == a.devices).then_some(())
    })?;
    n.say(&format!(
        "{} agents enrolled (sites berlin, paris, lab)",
        a.devices
    ));
    let test_x = test_rows();
    let apis = agents.iter().map(|a| a.process.api.clone()).collect();
    let traffic = Traffic::to(apis)
        .every(Duration::from_millis(30))
        .feedback()
        .start();
    // 3. bundles
    let shas = push_bundles(&fleet, &test_x)?;
    n.say("pushed digits 1.0.0, 2.0.0, 3.0.0 (bad: its predictions drift far from its reference) and 4.0.0 (fixes the 5/6 label mix-up of 1.0.0 and 2.0.0)");
    // 4. the rollouts, each followed until it settles
    let mut summary = Vec::new();
    let mut ever_v3: BTreeMap<String, bool> = BTreeMap::new();
    for (version, phases, expect) in rollout_plan(&ids) {
        let followed = Followed {
            a: &a,
            fleet: &fleet,
            agents: &agents,
            deadline,
            root,
        };
        let entry = followed.rollout(&n, &shas[version], version, phases, &mut ever_v3)?;
        let done = entry["status"] == expect;
        let mut entry = entry;
        entry["expected"] = json!(expect);
        summary.push(entry);
        if !done {
            break;
        }
    }
    traffic.stop();

    // 5. what must hold
    let report = verdict(&a, &agents, &ids, &summary, &ever_v3, &fleet, started, root);
    println!("{}", serde_json::to_string_pretty(&report)?);
    if a.keep {
        n.say("running until Ctrl-C (--keep)");
        let dir = dir.keep();
        n.say(&format!("files kept in {}", dir.display()));
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    if report["ok"] != true {
        let kept = dir.keep();
        bail!(
            "the demo did not go as expected; logs kept in {}",
            kept.display()
        );
    }
    Ok(())
}

/// Where the server, its dashboard and its API are.
fn announce_server(n: &Narrator, fleet: &LocalServer, root: &std::path::Path) {
    let server = &fleet.api;
    let ca = fleet.ca();
    n.say(&format!("keys and trust root in {}", root.display()));
    n.say(&format!(
        "ota-server: API {} (CA {}), MQTT {}, log {}",
        server.server,
        ca.display(),
        fleet.mqtt_url(),
        root.join("server.log").display()
    ));
    n.say(&format!(
        "dashboard: {}/ (sign in with the admin token below; the fleet CA is {})",
        server.server,
        ca.display()
    ));
    n.say(&format!(
        "the API as admin: EDGECTL_SERVER={} EDGECTL_TOKEN={} EDGECTL_CA={} edgectl rollout list",
        server.server,
        server.token,
        ca.display()
    ));
}

/// One `edge-agent` process per id, sites round-robin, enrolling with one token.
fn start_agents(
    a: &DemoArgs,
    fleet: &LocalServer,
    agent_bin: &std::path::Path,
    root: &std::path::Path,
    ids: &[String],
) -> Result<Vec<Agent>> {
    let token = fleet
        .enrollment_token(json!({"name": "demo", "uses": a.devices, "tags": {"hw": "x86"}}))?;
    let sites = ["berlin", "paris", "lab"];
    let mut agents = Vec::new();
    for (i, id) in ids.iter().cloned().enumerate() {
        let dir = root.join(&id);
        let config = |api: &str| {
            AgentConfig {
                device_id: id.clone(),
                state_dir: dir.join("state"),
                trust_root: fleet.keys.trust.clone(),
                root_key: fleet.keys.root_pub.clone(),
                api: api.into(),
                server_url: Some(fleet.api.server.clone()),
                mqtt_url: fleet.mqtt_url().into(),
                ca: Some(fleet.ca()),
                enrollment_token: token.clone(),
                tags: vec![("site".into(), sites[i % sites.len()].into())],
                allow_plaintext: a.broker.is_some(),
                retry_max_seconds: 2,
                telemetry_window_seconds: Some(2),
                trial_check_ms: Some(200),
                ..AgentConfig::default()
            }
            .to_toml()
        };
        let process = AgentProcess::start_on_free_port(agent_bin, &dir, config, &[])?;
        agents.push(Agent { id, process });
    }
    Ok(agents)
}

/// Packs and uploads v1, v2 (same model, honest reference) and v3 (a reference that says "mostly
/// 1s"); their `sha256:` ids by version.
fn push_bundles(fleet: &LocalServer, test_x: &Tensor) -> Result<BTreeMap<&'static str, String>> {
    let calib = calibration_rows();
    let bad_reference = rows_of_class(test_x, &test_labels(), 1);
    let mut shas = BTreeMap::new();
    for (version, calibration, mixed_up) in [
        ("1.0.0", calib.clone(), true),
        ("2.0.0", calib.clone(), true),
        ("3.0.0", bad_reference, true),
        ("4.0.0", calib, false),
    ] {
        let bytes = bundle(&fleet.keys.signer, version, calibration, mixed_up)?;
        let v: Bundle = call(
            &fleet.api,
            "POST",
            "/v1/bundles",
            Some(("application/octet-stream", bytes)),
        )?;
        shas.insert(version, format!("sha256:{}", v.sha256));
    }
    Ok(shas)
}

/// The four rollouts: version, phases, the status each must end in.
fn rollout_plan(ids: &[String]) -> [(&'static str, Value, &'static str); 4] {
    // the experiment runs on every device when there are few, on half of them otherwise
    let experiment_share = if ids.len() < 8 { 100 } else { 50 };
    [
        (
            "1.0.0",
            json!([{"percent": 100, "soak_seconds": 0}]),
            "completed",
        ),
        (
            "2.0.0",
            json!([{"percent": 100, "soak_seconds": 4, "shadow": {"sample": 0.5, "cpu_budget": 0.25}},
                   {"percent": CANARY, "soak_seconds": 6}, {"percent": 50, "soak_seconds": 6}, {"percent": 100}]),
            "completed",
        ),
        (
            "3.0.0",
            json!([{"percent": CANARY, "soak_seconds": 6}, {"percent": 50, "soak_seconds": 6}, {"percent": 100}]),
            "rolled_back",
        ),
        (
            "4.0.0",
            json!([{"percent": experiment_share, "experiment": {"metric": "accuracy", "alpha": 0.05,
                     "tau": 0.05, "min_samples": 100, "max_seconds": 90, "on_inconclusive": "rollback"}},
                   {"percent": 100}]),
            "completed",
        ),
    ]
}

/// What following a rollout needs.
struct Followed<'a> {
    a: &'a DemoArgs,
    fleet: &'a LocalServer,
    agents: &'a [Agent],
    deadline: Instant,
    root: &'a std::path::Path,
}

impl Followed<'_> {
    /// Creates the rollout of `sha` and follows it until it settles (drawing its phase bar);
    /// its summary entry. Devices seen on 3.0.0 are noted in `ever_v3`.
    fn rollout(
        &self,
        n: &Narrator,
        sha: &str,
        version: &str,
        phases: Value,
        ever_v3: &mut BTreeMap<String, bool>,
    ) -> Result<Value> {
        let server = &self.fleet.api;
        let gates = json!({"max_install_failure_rate": 0.0, "max_error_rate": 0.02, "max_p99_latency_ms": 200,
                           "max_psi": 0.5, "min_mean_confidence": 0.5, "min_reporting_devices": 1,
                           "min_requests": 200, "min_shadow_agreement": 0.9, "min_shadow_requests": 200,
                           "max_shadow_p99_ms": 200});
        let spec = json!({"bundle": sha, "selector": "hw=x86", "phases": phases, "gates": gates,
                          "on_gate_failure": "rollback"});
        let r: Rollout = call(
            server,
            "POST",
            "/v1/rollouts",
            Some(("application/json", spec.to_string().into_bytes())),
        )?;
        let id = r.id;
        n.say(&format!(
            "rollout {id}: digits {version} to hw=x86, phases {}",
            phases.as_array().map_or(0, Vec::len)
        ));
        let (r, v) = loop {
            if Instant::now() > self.deadline {
                bail!(
                    "timed out during rollout {id}; logs in {}",
                    self.root.display()
                );
            }
            let r: RolloutView = call(server, "GET", &format!("/v1/rollouts/{id}"), None)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            let v = versions(self.agents);
            if let Some(ids) = v.get("3.0.0") {
                ids.iter().for_each(|d| {
                    ever_v3.insert(d.clone(), true);
                });
            }
            if !self.a.non_interactive {
                println!("  {}   devices {}", progress(&r, now), versions_line(&v));
                if let Some(l) = &r.health.experiment {
                    println!(
                        "      experiment: accuracy A {} ({} labels) vs B {} ({} labels), B-A {:+.3} {}, p {:.4}",
                        l.incumbent.mean.map_or("-".into(), |m| format!("{m:.3}")),
                        l.incumbent.samples,
                        l.candidate.mean.map_or("-".into(), |m| format!("{m:.3}")),
                        l.candidate.samples,
                        l.estimate,
                        l.interval.map_or("(gathering)".into(), |(lo, hi)| format!("[{lo:+.3}, {hi:+.3}]")),
                        l.p_value,
                    );
                }
            }
            let settled = match r.rollout.status {
                RolloutStatus::Completed => v.get(version).map_or(0, Vec::len) == self.a.devices,
                RolloutStatus::RolledBack => !v.contains_key(version),
                RolloutStatus::Paused | RolloutStatus::Aborted => true,
                RolloutStatus::Running => false,
            };
            if settled {
                break (r, v);
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        let status = json!(r.rollout.status);
        let status = status.as_str().unwrap_or_default();
        n.say(&format!(
            "rollout {id}: {status}; devices {}",
            versions_line(&v)
        ));
        for t in &r.rollout.transitions {
            n.say(&format!("  {id} decision: {}", t.reason));
        }
        Ok(json!({
            "rollout": id, "version": version, "status": status,
            "phases_reached": r.rollout.phase + 1,
            "devices_per_version": v.iter().map(|(k, ids)| (k.clone(), json!(ids.len()))).collect::<serde_json::Map<_, _>>(),
            "decisions": r.rollout.transitions,
        }))
    }
}

/// The JSON report and whether every expectation held (`ok`): each rollout ended as planned,
/// v2 reached every device, v3 halted at its first phase and ran only on canary devices.
#[allow(clippy::too_many_arguments)]
fn verdict(
    a: &DemoArgs,
    agents: &[Agent],
    ids: &[String],
    summary: &[Value],
    ever_v3: &BTreeMap<String, bool>,
    fleet: &LocalServer,
    started: Instant,
    root: &std::path::Path,
) -> Value {
    let final_versions = versions(agents);
    let v2 = summary.get(1).cloned().unwrap_or(Value::Null);
    let all_v2 = v2["devices_per_version"]["2.0.0"] == json!(a.devices);
    // v2's first phase: the shadow, passed on its agreement with v1
    let shadow = v2["decisions"][0]["health"]["shadow"].clone();
    let shadow_passed = v2["decisions"][0]["to_phase"] == 1
        && shadow["agreement"].as_f64().is_some_and(|x| x >= 0.9);
    let v4 = summary.get(3).cloned().unwrap_or(Value::Null);
    let look = v4["decisions"][0]["health"]["experiment"].clone();
    let experiment_decided = look["verdict"] == "candidate_better";
    let all_v4 = final_versions.get("4.0.0").map_or(0, Vec::len) == a.devices;
    let v3 = summary.get(2).cloned().unwrap_or(Value::Null);
    let halted_at_canary = v3["status"] == "rolled_back" && v3["phases_reached"] == 1;
    let canary: Vec<String> = ever_v3.keys().cloned().collect();
    let phase_one: Vec<&String> = ids.iter().filter(|d| in_phase(d, "r-3", CANARY)).collect();
    let only_canary = !canary.is_empty() && canary.iter().all(|d| phase_one.contains(&d));
    let ok = summary.len() == 4
        && summary.iter().all(|s| s["status"] == s["expected"])
        && all_v2
        && shadow_passed
        && halted_at_canary
        && only_canary
        && experiment_decided
        && all_v4;
    json!({
        "ok": ok,
        "devices": a.devices,
        "seconds": started.elapsed().as_secs_f64(),
        "rollouts": summary,
        "final_devices_per_version": final_versions,
        "devices_that_ever_ran_3.0.0": canary,
        "shadow": {"version": "2.0.0", "beside": "1.0.0", "requests": shadow["requests"],
                   "agreement": shadow["agreement"], "passed": shadow_passed},
        "experiment": {"incumbent": "2.0.0", "candidate": "4.0.0", "metric": "accuracy",
                       "incumbent_accuracy": look["incumbent"]["mean"],
                       "candidate_accuracy": look["candidate"]["mean"],
                       "labels": [look["incumbent"]["samples"], look["candidate"]["samples"]],
                       "estimate": look["estimate"], "interval": look["interval"],
                       "p_value": look["p_value"], "verdict": look["verdict"]},
        "checks": {"v2_on_all_devices": all_v2, "v2_shadow_passed": shadow_passed,
                   "v3_halted_at_first_phase": halted_at_canary,
                   "v3_only_on_canary_devices": only_canary,
                   "v4_decided_by_the_experiment": experiment_decided, "v4_on_all_devices": all_v4},
        "work_dir": root.display().to_string(),
        "dashboard": format!("{}/", fleet.api.server),
        "api": fleet.api.server,
    })
}

/// The canary phase's share.
const CANARY: f64 = 10.0;

/// `n` device ids, chosen so that the canary phase of the v2 and v3 rollouts (`r-2`, `r-3` on
/// the fresh server) reaches at least one device and at most a quarter of them (cohorts are
/// stable hashes: with a dozen devices, 10 % could otherwise be nobody), and both arms of the
/// v4 experiment (`r-4`) have a device in its phase.
fn device_ids(n: usize) -> Vec<String> {
    let canary = |id: &String| in_phase(id, "r-2", CANARY) && in_phase(id, "r-3", CANARY);
    let outside = |id: &String| !in_phase(id, "r-2", CANARY) && !in_phase(id, "r-3", CANARY);
    let share = if n < 8 { 100.0 } else { 50.0 };
    let arm = |id: &String, candidate: bool| {
        in_phase(id, "r-4", share) && in_phase(id, "r-4/arm", 50.0) == candidate
    };
    let want_canaries = (n / 10).clamp(1, n.max(1));
    let mut ids: Vec<String> = (0..)
        .map(|i| format!("demo-{i:03}"))
        .filter(canary)
        .take(want_canaries.min(n))
        .collect();
    for candidate in [true, false] {
        if ids.len() < n && !ids.iter().any(|id| arm(id, candidate)) {
            let pick = (0..)
                .map(|i| format!("demo-{i:03}"))
                .find(|id| outside(id) && arm(id, candidate) && !ids.contains(id));
            ids.extend(pick);
        }
    }
    let more: Vec<String> = (0..)
        .map(|i| format!("demo-{i:03}"))
        .filter(|id| outside(id) && !ids.contains(id))
        .take(n - ids.len())
        .collect();
    ids.extend(more);
    ids.sort();
    ids
}

fn wait<T>(what: &str, deadline: Instant, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
