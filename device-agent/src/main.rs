//! `edge-agent`: the edgefleet device daemon. `edge-agent run --config FILE` runs it;
//! `edge-agent status --config FILE` prints what is installed, the slots, the queue and the last
//! sync (asking the running agent, or reading the state directly when it is not running).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use device_agent::config::Config;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

#[derive(Parser)]
#[command(name = "edge-agent", version, about = "edgefleet device agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the agent until SIGINT/SIGTERM.
    Run {
        /// Config file (TOML); EDGE_AGENT_* variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Shows installed models, slots, outbox depth and last sync.
    Status {
        /// Config file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print the status document as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The log filter from `EDGE_AGENT_LOG` (`info`, `debug`, `warn,device_agent=debug`: a level,
/// and levels per module), `info` when unset. tracing's target filter, not its regex-based
/// `EnvFilter`: the same syntax for levels and modules, a fraction of the code on the board.
fn log_filter() -> Targets {
    match std::env::var("EDGE_AGENT_LOG") {
        Err(_) => Targets::new().with_default(LevelFilter::INFO),
        Ok(text) => text.parse().unwrap_or_else(|e| {
            eprintln!(
                "EDGE_AGENT_LOG={text:?} is not a log filter ({e}); logging at info. \
                 Write a level (error, warn, info, debug, trace) or module=level pairs, \
                 comma-separated."
            );
            Targets::new().with_default(LevelFilter::INFO)
        }),
    }
}

fn main() {
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(log_filter())
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => Config::load(config.as_deref())
            .map_err(Into::into)
            .and_then(device_agent::agent::run),
        Command::Status { config, json } => status(config, json),
    };
    if let Err(e) = result {
        eprintln!("edge-agent: {e:#}");
        std::process::exit(1);
    }
}

fn status(config: Option<PathBuf>, as_json: bool) -> Result<()> {
    let config = Config::load(config.as_deref())?;
    let doc = match ask_running(&config) {
        Some(doc) => doc,
        None => {
            let core = device_agent::core::Core::open(config)
                .context("the agent is not answering and its state cannot be opened")?;
            device_agent::api::status_json(&core, None)
        }
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    print!("{}", render(&doc));
    Ok(())
}

fn ask_running(config: &Config) -> Option<serde_json::Value> {
    if config.api.listen.is_empty() {
        return None;
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(3)))
        .build()
        .into();
    let mut r = agent
        .get(&format!("http://{}/v1/status", config.api.listen))
        .call()
        .ok()?;
    serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()
}

fn render(doc: &serde_json::Value) -> String {
    use std::fmt::Write;
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut o = String::new();
    let _ = writeln!(o, "device      {}", s(&doc["device_id"]));
    let running = doc["running"].as_bool().unwrap_or(false);
    let _ = writeln!(
        o,
        "agent       {} ({})",
        s(&doc["agent_version"]),
        if running {
            format!("running, up {} s", s(&doc["uptime_s"]))
        } else {
            "not running".into()
        }
    );
    match doc["server"].as_object() {
        Some(server) => {
            let _ = writeln!(
                o,
                "server      {} / {}{}",
                s(&server["url"]),
                s(&server["mqtt"]),
                match server["connected"].as_bool() {
                    Some(true) => " (connected)",
                    Some(false) => " (disconnected)",
                    None => "",
                }
            );
        }
        None => {
            let _ = writeln!(o, "server      none (offline, sideload only)");
        }
    }
    let last_sync = doc["last_sync"].as_u64().map_or("never".to_string(), |t| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(t);
        format!("{} s ago", now.saturating_sub(t))
    });
    let _ = writeln!(
        o,
        "generation  {}   last sync {last_sync}",
        s(&doc["applied_generation"])
    );
    let ob = &doc["outbox"];
    let _ = writeln!(
        o,
        "outbox      {} queued, {} / {} bytes, dropped {} telemetry / {} events",
        s(&ob["queued"]),
        s(&ob["bytes"]),
        s(&ob["max_bytes"]),
        s(&ob["dropped_telemetry"]),
        s(&ob["dropped_events"])
    );
    let models = doc["models"].as_array().cloned().unwrap_or_default();
    if models.is_empty() {
        let _ = writeln!(o, "models      none installed");
    }
    for m in models {
        let slot = |k: &str| {
            m["slots"][k]["version"]
                .as_str()
                .map_or("-".to_string(), str::to_string)
        };
        let _ = writeln!(
            o,
            "model       {:<16} {:<12} active {:<10} trial {:<10} previous {:<10} floor {}{}",
            s(&m["name"]),
            s(&m["state"]),
            slot("active"),
            slot("trial"),
            slot("previous"),
            s(&m["floor"]),
            match m["bad_versions"].as_array() {
                Some(b) if !b.is_empty() =>
                    format!("  bad {}", serde_json::Value::Array(b.clone())),
                _ => String::new(),
            }
        );
    }
    o
}
