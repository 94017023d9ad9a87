//! Outpost's stateful side: what touches disks and the network, and the actors that own
//! long-lived state. Logic stays in `outpost-protocol`; this crate moves bytes.
//!
//! * [`agent`]: the agent of a managed machine.
//! * [`central`]: the central server (enrollment, inventory, actions, console).
//! * [`clock`]: the wall clock, read in one place.
//! * [`db`]: opening redb databases with an integrity check (damage is an error, not a panic).
//! * [`disk`]: crash-safe file writes and package source folders.
//! * [`store`]: the content store (blobs named by BLAKE3, metadata in redb).
//! * [`transport`]: QUIC with mutual TLS and the protocol framing.
//! * [`repo`]: the repository roles (publisher and replicator actors, serving, client).
//! * [`metrics`]: the repository metrics.
//! * [`zone`]: time zones for schedules written in local time.

pub mod agent;
pub mod allocator;
pub mod assembler;
pub mod central;
pub mod clock;
pub mod db;
pub mod disk;
pub mod metrics;
pub mod repo;
pub mod store;
pub mod transport;
#[cfg(windows)]
pub mod windows;
pub mod zone;
