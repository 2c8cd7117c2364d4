//! # ota-server
//!
//! The fleet side of edgefleet. It depends on `edge-bundle` for verification and never on an
//! inference engine.
//!
//! | module | owns |
//! |---|---|
//! | [`selector`] | cohorts by device tags (`edge_protocol::selector`, re-exported) |
//! | [`cohort`] | stable hash buckets: which selected devices a phase reaches |
//! | [`rollout`] | the phase / gate state machine; every transition kept with its cause |
//! | [`health`] | a phase's merged telemetry and install tally; `phase_health`, shared by gate and API |
//! | [`telemetry_keys`] | where telemetry-derived records live in the store |
//! | [`desired`] | each device's desired models, computed from the rollouts |
//! | [`engine`] | one engine step: tick rollouts, record baselines, new desired generations |
//! | [`director`] | desired states signed with the director key |
//! | [`ingest`] | device messages in: verified, de-duplicated, aggregated, one commit per batch |
//! | [`series`] | telemetry time series, retention and downsampling |
//! | [`fleet`] | the running loop: its device hub or broker client, ingest worker, engine timer |
//! | [`lease`] | the engine lease kept beside a long step, within a bound |
//! | [`hub`] | the devices connected here, their retained desired states, the way to the ingest |
//! | [`gate`] | the devices' MQTT front door: MQTT ends here; authentication, topic ACLs, rate limit |
//! | [`store`] | the `Store` trait (tables of JSON records) and its redb backend |
//! | [`bundles`] | the verified, content-addressed bundle registry |
//! | [`http`] | the HTTP API, a router per resource, bodies typed in `edge_protocol::rest` |
//! | [`auth`] | hashed admin tokens with roles |
//! | [`devices`] | enrollment (token or pre-authorized key, proof of possession), device tokens |
//! | [`metrics`], [`openapi`], [`ratelimit`] | `/metrics`, `/v1/openapi.json` (derived, in `http`), device HTTP limits |
//! | [`tls`] | fleet CA and server certificate, rustls listeners |

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod acks;
pub mod auth;
pub mod bundles;
pub mod charts;
pub mod dashboard;
pub use edge_protocol::cohort;
pub mod desired;
pub mod devices;
pub mod director;
pub mod engine;
pub mod experiment;
pub mod fleet;
pub mod gate;
pub mod health;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod lease;
pub mod limits;
pub mod metrics;
pub use http::openapi;
pub mod ratelimit;
pub mod rollout;
pub use edge_protocol::selector;
pub mod series;
pub mod store;
pub mod telemetry_keys;
pub mod tls;
