//! The command line: every subcommand and flag, documented where it is declared.

use clap::{Parser, Subcommand};

mod agent;
mod demo;
mod pkg;
mod pki;
mod repo;
mod server_console;
mod wapt;

pub use agent::*;
pub use demo::*;
pub use pkg::*;
pub use pki::*;
pub use repo::*;
pub use server_console::*;
pub use wapt::*;

/// Outpost: software deployment for organisations with many sites.
#[derive(Debug, Parser)]
#[command(name = "outpost", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// More log output (repeat for more: -v info, -vv debug). `OUTPOST_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The organisation's certificates: CA, signers, deployers, admins, nodes.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Build, verify and inspect signed Outpost packages.
    #[command(subcommand)]
    Pkg(PkgCommand),
    /// Read what WAPT wrote: signed controls, indexes, packages to import.
    #[command(subcommand)]
    Wapt(WaptCommand),
    /// Repositories: the main repository, edges, and their clients.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// The agent of a managed machine: the daemon and its one-shot commands.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// The server: central (enrollment, inventory, actions) and the main repository.
    Server(ServerArgs),
    /// Administer the fleet through central: hosts, packages, repositories, actions.
    #[command(subcommand)]
    Console(ConsoleCommand),
    /// Show the whole chain working on this machine, on throw-away data.
    Demo(DemoArgs),
}
