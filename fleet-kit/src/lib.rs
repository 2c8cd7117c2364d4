//! # edge-fleet-kit
//!
//! A fleet on one machine, for `edgectl demo` and `edgectl simulate` and for the tests (the
//! agent's, the end-to-end `fleet-tests`, the server's, the C ABI's): one copy of what each of
//! them used to write for itself.
//!
//! - [`fixtures`]: the digits sample model (embedded) packed into a signed bundle at any version,
//!   health spec or calibration set ([`fixtures::Digits`]); its test rows.
//! - [`keys`]: a fresh root, model-signing and director key, with the trust document and the
//!   files a server and its agents read ([`keys::FleetKeys`]).
//! - [`binaries`]: the workspace's `ota-server`, `edge-agent` and `edgectl`, next to the running
//!   executable, built with cargo if missing.
//! - [`server`]: `ota-server init` + `serve` on loopback, ready when its broker is connected.
//! - [`agent`]: an `edge-agent` config and process (port taken again by someone else: started
//!   again on another), its log, its local API.
//! - [`proxy`]: TCP proxies between a device and its server: one the test takes down and brings
//!   back, one that cuts and stalls connections at random (seeded).
//! - [`traffic`]: digits predictions sent to agents in the background.
//! - [`http`]: one-call HTTP with the fleet CA; [`wait`]: polling with a deadline.
//!
//! Everything that can fail returns `anyhow::Result` (edgectl reports it); the tests unwrap.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod agent;
pub mod binaries;
pub mod fixtures;
pub mod http;
pub mod keys;
pub mod proxy;
pub mod server;
pub mod traffic;
pub mod wait;

/// A free loopback port (the OS's choice; another process may take it before it is bound, so
/// starts retry on another).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A random number (file names, seeds).
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS random source");
    u64::from_le_bytes(b)
}
