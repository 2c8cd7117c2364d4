//! # device-agent (`edge-agent`)
//!
//! The per-device daemon: follows the desired state the OTA server publishes, installs signed
//! bundles into A/B slots, watches each new model through a trial window and rolls it back when
//! it is unhealthy, serves the models to apps on the device over a local HTTP API, and sends
//! signed telemetry through a durable outbox. See `ARCHITECTURE.md` for the map.
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the TOML config and its `EDGE_AGENT_*` overrides |
//! | [`identity`] | device id, device key, enrollment |
//! | [`core`] | shared state, events, hello |
//! | [`state`] | small durable facts (applied generation, director seq) |
//! | [`slots`] | A/B slots on disk, boot counting |
//! | [`download`] | resumable, paced, retried artifact download |
//! | [`reconcile`] | desired state → installed, verified, activated model |
//! | [`trial`] / [`watch`] | trial verdicts; commit/rollback; telemetry windows |
//! | [`outbox`] / [`uplink`] | durable signed messages; MQTT |
//! | [`host`] / [`api`] / [`metrics`] | served models; local HTTP API; Prometheus |
//! | [`sensor`] | I²C sensor sources feeding windows to models (streaming inference) |
//! | [`agent`] | wiring it all into the running daemon |

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod agent;
pub mod api;
pub mod config;
pub mod core;
pub mod download;
pub mod failpoint;
pub mod host;
pub mod identity;
pub mod metrics;
pub mod outbox;
pub mod reconcile;
pub mod sensor;
pub mod shadow;
pub mod slots;
pub mod state;
pub mod tls;
pub mod trial;
pub mod uplink;
pub mod watch;

/// Work for the reconciler thread.
pub enum Job {
    /// Apply a desired state (`true`: a newly accepted generation).
    Desired(edge_protocol::DesiredState, bool),
}
