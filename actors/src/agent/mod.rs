//! The agent: keeps its machine in the state its host, group, unit and profile packages
//! describe, from the best repository for where it is, and never installs what it cannot
//! verify.
//!
//! * [`identity`]: who and what the machine is.
//! * [`select`]: which repository (rules, DNS SRV, configured list, main; health and RTT).
//! * [`core`]: update, upgrade, install, remove, audit, status.
//! * [`plan`]: the stored plan and the steps a partial upgrade runs (pure).
//! * [`download`]: the verified package cache (resumable, across repositories).
//! * [`hooks`]: running `setup.sh` / `setup.ps1`.
//! * [`state`]: the local redb state.
//! * [`status`]: what `status` says, decided from what the agent holds (pure).
//! * [`actor`]: the daemon's actor and its local control socket.
//! * [`inventory`]: what the agent reports about its machine.
//! * [`link`]: the daemon's link to central (reports, actions, settings).
//! * [`metrics`]: the agent's metrics.
//! * [`report`]: what the commands answer.

pub mod actor;
pub mod catalogue;
pub mod core;
pub mod download;
pub mod hooks;
pub mod identity;
pub mod inventory;
pub mod link;
pub mod metrics;
pub mod plan;
pub mod processes;
pub mod report;
pub mod select;
pub mod session;
pub mod state;
pub mod status;

pub use core::{Agent, AgentError, AgentSettings};
