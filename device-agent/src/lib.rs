//! # device-agent (`edge-agent`), in progress
//!
//! The per-device daemon of issue 3. What exists so far is its durable telemetry queue:
//! [`outbox`]. The reconciler, A/B slots, health watch, local API and the `edge-agent` binary
//! come next. They build on this crate, `edge-runtime` and the signed messages of
//! `edge-protocol`.

#![deny(missing_docs)]

pub mod outbox;
