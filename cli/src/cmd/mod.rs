//! One module per `edgectl` subcommand.

pub mod bench;
pub mod demo;
pub mod eval;
pub mod fleet;
pub mod keys;
pub mod local_fleet;
pub mod ort;
pub mod pack;
pub mod quantize;
pub mod run;
pub mod simulate;
pub mod trust;
pub mod verify;
