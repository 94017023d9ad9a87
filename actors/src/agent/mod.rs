//! The agent: keeps its machine in the state its host, group, unit and profile packages
//! describe, from the best repository for where it is, and never installs what it cannot
//! verify.
//!
//! * [`identity`]: who and what the machine is.
//! * [`select`]: which repository (rules, DNS SRV, configured list, main; health and RTT).
//! * [`core`]: update, upgrade, install, remove, audit, status.
//! * [`plan`]: the stored plan and the steps a partial upgrade runs (pure).
//! * [`download`]: the verified package cache (resumable, across repositories).
//! * [`hooks`]: running `setup.sh`, `setup.cmd` or `setup.ps1`; [`msi`]: Windows Installer packages.
//! * [`state`]: the local redb state.
//! * [`status`]: what `status` says, decided from what the agent holds (pure).
//! * [`actor`]: the daemon's actor.
//! * [`control`]: how one-shot commands reach it (a Unix socket, or a named pipe on Windows).
//! * [`inventory`]: what the agent reports about its machine.
//! * [`link`]: the daemon's link to central (reports, actions, settings).
//! * [`metrics`]: the agent's metrics.
//! * [`report`]: what the commands answer.

pub mod actor;
pub mod catalogue;
pub mod control;
pub mod core;
pub mod download;
pub mod hooks;
pub mod identity;
pub mod inventory;
pub mod link;
pub mod metrics;
pub mod msi;
pub mod plan;
pub mod processes;
pub mod report;
pub mod select;
pub mod session;
pub mod state;
pub mod status;

pub use core::{Agent, AgentError, AgentSettings};
