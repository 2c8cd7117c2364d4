//! The OTA server's admin API from the command line: `push`, `rollout …`, `devices …`. Every
//! command takes `--server URL --token T [--ca CA.pem]` (or `EDGECTL_SERVER` / `EDGECTL_TOKEN` /
//! `EDGECTL_CA`), prints a
//! short table, or the server's JSON with `--json`. Errors carry the server's reason. Answers
//! are read as the REST contract's types (`edge_protocol::rest`), never walked as raw JSON.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use edge_protocol::rest::{
    ApiError, Bundle, DeviceEvents, DeviceList, DeviceView, Gates, OnGateFailure, Phase, Rollout,
    RolloutList, RolloutSpec, RolloutStatus, RolloutView, ShadowPhase,
};
use edge_protocol::selector::Selector;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

/// Where the server is and who is asking.
#[derive(Args, Clone, Debug)]
pub struct ServerArgs {
    /// Server base URL.
    #[arg(long, env = "EDGECTL_SERVER", default_value = "https://127.0.0.1:8080")]
    pub server: String,
    /// API token (eft_…).
    #[arg(long, env = "EDGECTL_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The fleet CA (PEM, the server's DATA/tls/ca.pem) to pin for https://.
    #[arg(long, env = "EDGECTL_CA")]
    pub ca: Option<PathBuf>,
    /// Print the server's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `edgectl rollout …`.
#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// Create a rollout, from flags or a JSON spec file.
    Create(CreateArgs),
    /// List rollouts.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// One rollout: phase, health, transitions.
    Show {
        /// Rollout id (r-N).
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Pause a running rollout.
    Pause {
        /// Rollout id.
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Resume a paused rollout.
    Resume {
        /// Rollout id.
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Abort: devices keep what they have.
    Abort {
        /// Rollout id.
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Roll back: the rollout's devices get their previous version.
    Rollback {
        /// Rollout id.
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Draw a rollout's phase progress live until it finishes (or Ctrl-C).
    Watch {
        /// Rollout id.
        id: String,
        /// Seconds between polls.
        #[arg(long, default_value_t = 2)]
        interval: u64,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// `edgectl rollout create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// A JSON rollout spec (the `POST /v1/rollouts` body); the flags below are then ignored.
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// The bundle: sha256:<hex>, or a .efb file (its digest is used; push it first).
    #[arg(long, required_unless_present = "spec")]
    pub bundle: Option<String>,
    /// Device selector, e.g. "hw=jetson-orin,site in (berlin,paris)".
    #[arg(long, default_value = "")]
    pub selector: String,
    /// A phase as PERCENT[:SOAK_SECONDS[:shadow[=SAMPLE[/CPU_CORES]]]]; repeat in order, e.g.
    /// --phase 20:300:shadow=0.5/0.25 --phase 5:600 --phase 100. Experiment phases are given
    /// in a --spec file (docs/guide.md).
    #[arg(long = "phase", required_unless_present = "spec")]
    pub phases: Vec<String>,
    /// A gate as NAME=VALUE (max_install_failure_rate, max_error_rate, max_p99_latency_ms,
    /// max_psi, min_mean_confidence, min_reporting_devices, min_requests,
    /// min_shadow_agreement, max_shadow_p99_ms, min_shadow_requests, min_accuracy, max_mae,
    /// min_labels); repeat.
    #[arg(long = "gate")]
    pub gates: Vec<String>,
    /// pause or rollback.
    #[arg(long, default_value = "pause")]
    pub on_gate_failure: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `edgectl devices …`.
#[derive(Subcommand, Debug)]
pub enum DevicesCommand {
    /// List devices.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// One device, with its recent events.
    Show {
        /// Device id.
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub(crate) fn client(ca: Option<&PathBuf>) -> Result<ureq::Agent> {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(path) = ca {
        let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            bail!("{}: no PEM certificate", path.display());
        }
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
    }
    Ok(ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .tls_config(tls.build())
        .build()
        .into())
}

/// One call; the answer as `T` (a `edge_protocol::rest` type, or `Value`), or the server's
/// reason as the error.
pub(crate) fn call<T: DeserializeOwned>(
    s: &ServerArgs,
    method: &str,
    path: &str,
    body: Option<(&str, Vec<u8>)>,
) -> Result<T> {
    let url = format!("{}{path}", s.server.trim_end_matches('/'));
    let auth = format!("Bearer {}", s.token.trim());
    let a = client(s.ca.as_ref())?;
    let result = match method {
        "GET" => a.get(&url).header("authorization", &auth).call(),
        _ => {
            let r = a.post(&url).header("authorization", &auth);
            match body {
                Some((ct, bytes)) => r.header("content-type", ct).send(&bytes[..]),
                None => r.send_empty(),
            }
        }
    };
    let mut resp = result.with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .unwrap_or_default();
    if !(200..300).contains(&status) {
        let reason = serde_json::from_str::<ApiError>(&text).map_or(text, |e| e.error);
        bail!("{method} {path}: {status}: {reason}");
    }
    // a body that is not JSON (an old server's text answer) reads as a JSON string
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    serde_json::from_value(value).with_context(|| {
        format!("{method} {path}: the server's answer is not what this edgectl expects (versions differ?)")
    })
}

fn print_json(v: &impl Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// A value as JSON text (`null` for none): how optional figures print.
fn js(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// A status as the API spells it (`rolled_back`).
fn status_name(s: RolloutStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `edgectl push BUNDLE`.
pub fn push(bundle: &PathBuf, s: &ServerArgs) -> Result<()> {
    let bytes =
        std::fs::read(bundle).with_context(|| format!("cannot read {}", bundle.display()))?;
    let v: Bundle = call(
        s,
        "POST",
        "/v1/bundles",
        Some(("application/octet-stream", bytes)),
    )?;
    if s.json {
        print_json(&v);
    } else {
        println!("pushed {} {} as sha256:{}", v.name, v.version, v.sha256);
    }
    Ok(())
}

fn bundle_ref(arg: &str) -> Result<String> {
    if let Some(hexdigest) = arg.strip_prefix("sha256:") {
        return Ok(format!("sha256:{hexdigest}"));
    }
    let path = PathBuf::from(arg);
    if path.exists() {
        use sha2::Digest;
        let bytes = std::fs::read(&path)?;
        return Ok(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(&bytes))
        ));
    }
    bail!("--bundle '{arg}' is neither sha256:<hex> nor a file")
}

/// `shadow`, `shadow=SAMPLE` or `shadow=SAMPLE/CPU_CORES`.
fn shadow_flag(kind: &str) -> Result<ShadowPhase> {
    let mut shadow = ShadowPhase {
        sample: 1.0,
        cpu_budget: 0.5,
    };
    let rest = kind.strip_prefix("shadow").context("not shadow")?;
    if let Some(values) = rest.strip_prefix('=') {
        let (sample, cpu) = values.split_once('/').unwrap_or((values, ""));
        shadow.sample = sample.parse().context("SAMPLE is not a number")?;
        if !cpu.is_empty() {
            shadow.cpu_budget = cpu.parse().context("CPU_CORES is not a number")?;
        }
    } else if !rest.is_empty() {
        bail!("unexpected '{rest}'");
    }
    Ok(shadow)
}

fn spec_from_flags(a: &CreateArgs) -> Result<RolloutSpec> {
    let bundle = bundle_ref(a.bundle.as_deref().unwrap_or_default())?;
    let mut phases = Vec::new();
    for p in &a.phases {
        let mut parts = p.splitn(3, ':');
        let percent: f64 = parts
            .next()
            .unwrap_or_default()
            .parse()
            .with_context(|| format!("--phase '{p}': percent is not a number"))?;
        let soak_seconds: u64 = parts
            .next()
            .unwrap_or("0")
            .parse()
            .with_context(|| format!("--phase '{p}': soak seconds is not a whole number"))?;
        let mut phase = Phase::canary(percent, soak_seconds);
        if let Some(kind) = parts.next() {
            phase.shadow = Some(shadow_flag(kind).with_context(|| {
                format!("--phase '{p}': the kind is shadow[=SAMPLE[/CPU_CORES]]")
            })?);
        }
        phases.push(phase);
    }
    // a gates object as the server reads it (its defaults: min_reporting_devices 1)
    let mut gates = serde_json::Map::new();
    for g in &a.gates {
        let (name, value) = g
            .split_once('=')
            .with_context(|| format!("--gate '{g}': use NAME=VALUE"))?;
        let value: f64 = value
            .parse()
            .with_context(|| format!("--gate '{g}': value is not a number"))?;
        let value = if matches!(
            name,
            "min_reporting_devices" | "min_requests" | "min_shadow_requests" | "min_labels"
        ) {
            json!(value as u64)
        } else {
            json!(value)
        };
        gates.insert(name.to_string(), value);
    }
    let gates: Gates = serde_json::from_value(Value::Object(gates))
        .context("--gate: unknown gate name (see `edgectl rollout create --help`)")?;
    let on_gate_failure: OnGateFailure = serde_json::from_value(json!(a.on_gate_failure))
        .with_context(|| {
            format!(
                "--on-gate-failure '{}': use pause or rollback",
                a.on_gate_failure
            )
        })?;
    Ok(RolloutSpec {
        bundle,
        selector: Selector::parse(&a.selector).map_err(anyhow::Error::msg)?,
        phases,
        gates,
        on_gate_failure,
    })
}

fn rollout_line(r: &Rollout) -> String {
    format!(
        "{:<6} {:<12} {:<10} {:<10} phase {}/{} ({}%)  {}",
        r.id,
        r.model,
        r.version,
        status_name(r.status),
        r.phase + 1,
        r.spec.phases.len(),
        js(&r.spec.phases.get(r.phase).map(|p| p.percent)),
        r.spec.selector.as_str(),
    )
}

fn show_rollout(v: &RolloutView) {
    println!("{}", rollout_line(&v.rollout));
    let h = &v.health;
    println!(
        "  devices: {} selected, {} in this phase, {} reporting; installs {} (failed {}); requests {} (errors {}); p99 {} ms; mean confidence {}; prediction PSI {}",
        v.selected_devices, v.phase_devices, h.reporting_devices, h.installs,
        h.install_failures, h.requests, h.errors, js(&h.p99_ms), js(&h.mean_confidence), js(&h.psi),
    );
    if let Some(s) = &h.shadow {
        println!(
            "  shadow: {} devices, {} mirrored requests (errors {}), {} answers compared; agreement {}, top-k overlap {}, mean |delta| {}; shadow p99 {} ms; skipped {}",
            s.reporting_devices, s.requests, s.errors, s.compared, js(&s.agreement),
            js(&s.topk_overlap), js(&s.mean_abs_delta), js(&s.p99_ms), s.skipped,
        );
    }
    if let Some(f) = &h.feedback {
        println!(
            "  feedback: {} labels, accuracy {}; {} true values, MAE {}, interval coverage {}; {} rewards, mean {}",
            f.labelled, js(&f.accuracy), f.values, js(&f.mae), js(&f.interval_coverage),
            f.rewards, js(&f.mean_reward),
        );
        if !f.recall.is_empty() {
            let recall: Vec<String> = f
                .recall
                .iter()
                .map(|(label, r)| format!("{label} {r:.3}"))
                .collect();
            println!("  recall by label: {}", recall.join(", "));
        }
    }
    let looks: Vec<_> = v.rollout.looks.iter().chain(&h.experiment).collect();
    if !looks.is_empty() {
        println!("  experiment (arm A incumbent, B candidate; B-A with its confidence sequence):");
        // the looks kept, thinned to a screen's worth, and the current one
        let step = looks.len().div_ceil(12).max(1);
        for (i, l) in looks.iter().enumerate() {
            if i % step != 0 && i + 1 != looks.len() {
                continue;
            }
            let interval = l.interval.map_or("(not yet)".to_string(), |(lo, hi)| {
                format!("[{lo:+.4}, {hi:+.4}]")
            });
            println!(
                "    phase {} at {}: A {} devices {} samples mean {} | B {} devices {} samples mean {} | B-A {:+.4} {interval} p {:.4} -> {}",
                l.phase, l.at, l.incumbent.devices, l.incumbent.samples, js(&l.incumbent.mean),
                l.candidate.devices, l.candidate.samples, js(&l.candidate.mean), l.estimate,
                l.p_value, l.verdict,
            );
        }
    }
    for t in &v.rollout.transitions {
        println!(
            "  at {}: {} phase {} -> {} phase {}: {}",
            t.at,
            status_name(t.from_status),
            t.from_phase,
            status_name(t.to_status),
            t.to_phase,
            t.reason,
        );
    }
}

/// The phase bar of `watch`: one segment per phase, filled up to the current one.
pub(crate) fn progress(v: &RolloutView, now: u64) -> String {
    let r = &v.rollout;
    let done = r.status == RolloutStatus::Completed;
    let mut bar = String::new();
    for (i, p) in r.spec.phases.iter().enumerate() {
        let mark = if done || i < r.phase {
            "#"
        } else if i == r.phase {
            ">"
        } else {
            "."
        };
        bar.push_str(&format!("[{}{:>3}%]", mark.repeat(3), p.percent));
    }
    let soak = r.spec.phases.get(r.phase).map_or(0, |p| p.soak_seconds);
    let elapsed = now.saturating_sub(r.phase_started);
    let h = &v.health;
    let mut line = format!(
        "{} {} {:<10} soak {}/{} s  reporting {}/{}  requests {} errors {}  p99 {} ms",
        r.id,
        bar,
        status_name(r.status),
        elapsed.min(soak),
        soak,
        h.reporting_devices,
        v.phase_devices,
        h.requests,
        h.errors,
        js(&h.p99_ms),
    );
    if let Some(s) = &h.shadow {
        line += &format!(
            "  shadow {} runs, agreement {}",
            s.requests,
            js(&s.agreement)
        );
    }
    if let Some(l) = &h.experiment {
        line += &format!(
            "  A/B {} vs {} samples, B-A {:+.4}, p {:.4}",
            l.incumbent.samples, l.candidate.samples, l.estimate, l.p_value
        );
    }
    line
}

/// `edgectl rollout …`.
pub fn rollout(c: RolloutCommand) -> Result<()> {
    match c {
        RolloutCommand::Create(a) => {
            let spec = match &a.spec {
                Some(path) => {
                    let text = std::fs::read(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    serde_json::from_slice::<RolloutSpec>(&text)
                        .with_context(|| format!("{}: not a rollout spec", path.display()))?
                }
                None => spec_from_flags(&a)?,
            };
            spec.check().map_err(anyhow::Error::msg)?;
            let v: Rollout = call(
                &a.server,
                "POST",
                "/v1/rollouts",
                Some(("application/json", serde_json::to_vec(&spec)?)),
            )?;
            if a.server.json {
                print_json(&v);
            } else {
                println!("created {}", rollout_line(&v));
            }
        }
        RolloutCommand::List { server } => {
            let v: RolloutList = call(&server, "GET", "/v1/rollouts", None)?;
            if server.json {
                print_json(&v);
            } else {
                for r in &v.rollouts {
                    println!("{}", rollout_line(r));
                }
            }
        }
        RolloutCommand::Show { id, server } => {
            let v: RolloutView = call(&server, "GET", &format!("/v1/rollouts/{id}"), None)?;
            if server.json {
                print_json(&v);
            } else {
                show_rollout(&v);
            }
        }
        RolloutCommand::Pause { id, server } => rollout_action("pause", &id, &server)?,
        RolloutCommand::Resume { id, server } => rollout_action("resume", &id, &server)?,
        RolloutCommand::Abort { id, server } => rollout_action("abort", &id, &server)?,
        RolloutCommand::Rollback { id, server } => rollout_action("rollback", &id, &server)?,
        RolloutCommand::Watch {
            id,
            interval,
            server,
        } => {
            let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
            loop {
                let v: RolloutView = call(&server, "GET", &format!("/v1/rollouts/{id}"), None)?;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let line = progress(&v, now);
                if tty {
                    print!("\r\x1b[2K{line}");
                } else {
                    println!("{line}");
                }
                let _ = std::io::stdout().flush();
                if v.rollout.status.is_final() {
                    if tty {
                        println!();
                    }
                    if let Some(t) = v.rollout.transitions.last() {
                        println!("{}: {}", status_name(v.rollout.status), t.reason);
                    }
                    return Ok(());
                }
                std::thread::sleep(Duration::from_secs(interval.max(1)));
            }
        }
    }
    Ok(())
}

/// `edgectl rollout pause|resume|abort|rollback ID`.
pub fn rollout_action(action: &str, id: &str, s: &ServerArgs) -> Result<()> {
    let v: Rollout = call(s, "POST", &format!("/v1/rollouts/{id}/{action}"), None)?;
    if s.json {
        print_json(&v);
    } else {
        println!("{}", rollout_line(&v));
    }
    Ok(())
}

fn device_line(d: &DeviceView) -> String {
    let models: Vec<String> = d
        .reported
        .iter()
        .flat_map(|r| &r.models)
        .map(|m| format!("{}={}", m.name, m.active.as_deref().unwrap_or("-")))
        .collect();
    let tags: Vec<String> = d.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{:<24} {:<8} last seen {:<12} {:<30} {}",
        d.id,
        if d.online { "online" } else { "offline" },
        d.last_seen,
        models.join(" "),
        tags.join(","),
    )
}

/// `edgectl devices …`.
pub fn devices(c: DevicesCommand) -> Result<()> {
    match c {
        DevicesCommand::List { server } => {
            let v: DeviceList = call(&server, "GET", "/v1/devices", None)?;
            if server.json {
                print_json(&v);
            } else {
                for d in &v.devices {
                    println!("{}", device_line(d));
                }
            }
        }
        DevicesCommand::Show { id, server } => {
            let d: DeviceView = call(&server, "GET", &format!("/v1/devices/{id}"), None)?;
            let e: DeviceEvents = call(&server, "GET", &format!("/v1/devices/{id}/events"), None)?;
            if server.json {
                print_json(&json!({"device": d, "events": e.events}));
            } else {
                println!("{}", device_line(&d));
                let all: Vec<_> = e.events.iter().flat_map(|m| &m.events).collect();
                for ev in all.iter().rev().take(20).rev() {
                    println!(
                        "  at {}: {} {} gen {} {}{}",
                        ev.at,
                        ev.model,
                        ev.version,
                        ev.generation,
                        ev.step,
                        ev.detail
                            .as_deref()
                            .map(|d| format!(": {d}"))
                            .unwrap_or_default(),
                    );
                }
            }
        }
    }
    Ok(())
}
