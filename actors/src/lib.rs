//! Outpost's stateful side: what touches disks and (with the repository issue) the network and
//! the actors that own long-lived state. Logic stays in `outpost-protocol`; this crate moves
//! bytes.
//!
//! * [`disk`]: crash-safe file writes and package source folders.

pub mod disk;
