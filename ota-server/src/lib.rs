//! # ota-server, in progress (issue 4)
//!
//! The fleet side of edgefleet. What exists so far is the pure core of staged rollouts:
//! [`selector`] (cohorts by device tags), [`cohort`] (stable hash buckets that decide which
//! selected devices each phase reaches), [`desired`] (each device's desired models, computed from
//! the rollouts), [`health`] (a phase's merged telemetry as gate input) and [`rollout`] (the phase / gate state machine, with
//! every transition recorded with the health that caused it), and [`store`] (the `Store` trait and
//! its redb implementation), [`bundles`] (the verified, content-addressed bundle registry). The
//! HTTP API, the
//! embedded broker, enrollment, artifacts and telemetry ingest come next.

#![deny(missing_docs)]

pub mod bundles;
pub mod cohort;
pub mod desired;
pub mod health;
pub mod rollout;
pub mod selector;
pub mod store;
