//! System tests: the real `outpost` binary run as a user would, on real files.
//!
//! One test binary (fewer links on a 2-core machine); one module per area.

mod agent;
mod central;
mod cluster;
mod common;
mod console;
mod deploy;
mod everyday;
mod field;
mod flood;
mod hygiene;
mod identity;
mod monitoring;
mod netns;
mod pg;
mod pkg;
mod pki;
mod postgres;
mod purity;
mod relay;
mod repo;
mod robustness;
mod wapt;
mod web;
mod webdriver;
mod windows;
