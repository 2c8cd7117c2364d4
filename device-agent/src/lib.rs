//! # device-agent (`edge-agent`), in progress
//!
//! The per-device daemon of issue 3. What exists so far: the durable telemetry queue
//! ([`outbox`]), the atomically swapped set of served models ([`host`]) and the A/B slots on disk
//! with boot recovery ([`slots`]), and the trial-window health verdict ([`trial`]). The
//! reconciler (download, install, driving the trial), enrollment, MQTT, the local API and the `edge-agent` binary come next. They build on this crate, `edge-runtime` and the signed messages of
//! `edge-protocol`.

#![deny(missing_docs)]

pub mod host;
pub mod outbox;
pub mod slots;
pub mod trial;
