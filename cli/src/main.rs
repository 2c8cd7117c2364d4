//! `edgectl`: the edgefleet command line. Each subcommand lives in its own module under `cmd/`;
//! this file only declares the interface (clap) and dispatches.

#![forbid(unsafe_code)]

mod cmd;
mod input;
mod trust_arg;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "edgectl",
    version,
    about = "edgefleet: package, sign, verify and run edge models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Trust-root arguments shared by every command that verifies bundles.
#[derive(clap::Args, Clone)]
pub struct TrustArgs {
    /// The fleet trust root (trust.cbor).
    #[arg(long)]
    trust: PathBuf,
    /// Pin the root public key (root.pub): the trust document must be signed by it. Without it the
    /// document is trusted as the file it is (fine on your own workstation; devices always pin).
    #[arg(long)]
    root: Option<PathBuf>,
    /// CAUTION: accept expired bundles and trust documents (forensics only).
    #[arg(long)]
    ignore_expiry: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Create an ed25519 key pair: NAME.key (0600) and NAME.pub.
    Keygen {
        /// Directory for the two files.
        #[arg(long)]
        out: PathBuf,
        /// Base name of the files.
        #[arg(long)]
        name: String,
    },
    /// Fleet trust root documents.
    Trust {
        #[command(subcommand)]
        command: cmd::trust::TrustCommand,
    },
    /// Pack an ONNX model with its spec into a signed bundle (.efb).
    Pack(cmd::pack::PackArgs),
    /// Post-training int8 quantization of an ONNX model (QDQ; per-channel weights).
    Quantize(cmd::quantize::QuantizeArgs),
    /// Verify a bundle against a trust root: exit 0 only if valid, else a one-line reason.
    Verify {
        /// The bundle.
        bundle: PathBuf,
        #[command(flatten)]
        trust: TrustArgs,
        /// Also load it on this engine (auto, cpu, gpu, cuda), run its self-test, and say which
        /// engine runs it here and why (e.g. the reason a GPU engine fell back to the CPU).
        #[arg(long)]
        engine: Option<edge_runtime::engine::EngineKind>,
    },
    /// Show a bundle's manifest (without verifying it).
    Inspect {
        /// The bundle.
        bundle: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a bundle on one input file (.npy, .json nested array, or a PNG/JPEG image).
    Run(cmd::run::RunArgs),
    /// Accuracy of a classification bundle on a labelled set (or error metrics for regression).
    Eval(cmd::eval::EvalArgs),
    /// Load time, latency percentiles, throughput and peak RSS of a bundle or any .onnx file;
    /// --compare-ort runs ONNX Runtime on the same inputs in the same run.
    Bench(cmd::bench::BenchArgs),
    /// The whole loop on this machine: server, agents, a staged rollout and a bad one rolled back.
    Demo(cmd::demo::DemoArgs),
    /// Load test: N light simulated devices (real keys, MQTT, downloads, telemetry; no model)
    /// against a local server, through a one-phase and a three-phase rollout.
    Simulate(cmd::simulate::SimulateArgs),
    /// Upload a bundle to the OTA server (verified there against the fleet trust root).
    Push {
        /// The bundle.
        bundle: PathBuf,
        #[command(flatten)]
        server: cmd::fleet::ServerArgs,
    },
    /// Staged rollouts on the OTA server.
    Rollout {
        #[command(subcommand)]
        command: cmd::fleet::RolloutCommand,
    },
    /// Devices registered with the OTA server.
    Devices {
        #[command(subcommand)]
        command: cmd::fleet::DevicesCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen { out, name } => cmd::keys::keygen(&out, &name),
        Command::Trust { command } => cmd::trust::run(command),
        Command::Pack(args) => cmd::pack::run(args),
        Command::Quantize(args) => cmd::quantize::run(args),
        Command::Verify {
            bundle,
            trust,
            engine,
        } => cmd::verify::verify(&bundle, &trust, engine),
        Command::Inspect { bundle, json } => cmd::verify::inspect(&bundle, json),
        Command::Run(args) => cmd::run::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Simulate(args) => cmd::simulate::run(args),
        Command::Push { bundle, server } => cmd::fleet::push(&bundle, &server),
        Command::Rollout { command } => cmd::fleet::rollout(command),
        Command::Devices { command } => cmd::fleet::devices(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
