//! # device-agent (`edge-agent`), in progress
//!
//! The per-device daemon of issue 3. What exists so far: the durable telemetry queue
//! ([`outbox`]) and the atomically swapped set of served models ([`host`]). The reconciler, A/B
//! slots on disk, health watch, local API and the `edge-agent` binary come next. They build on this crate, `edge-runtime` and the signed messages of
//! `edge-protocol`.

#![deny(missing_docs)]

pub mod host;
pub mod outbox;
