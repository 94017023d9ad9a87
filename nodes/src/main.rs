//! The `outpost` binary: one command for every role.
//!
//! Errors are printed as `error: <what>: <why>` on standard error with exit code 1; usage
//! errors exit with 2 (clap). Results that scripts use (a path, `OK …`, JSON) go to standard
//! output; everything else goes to standard error.

mod admin;
mod agent_cmd;
mod cli;
mod config;
mod console_cmd;
mod daemon;
mod demo;
mod output;
mod packaging;
mod pkg_cmd;
mod pki_cmd;
mod progress;
mod repo_cmd;
mod secrets;
mod server_cmd;
mod service;
mod templates;
mod wapt_cmd;
mod web;

use std::process::ExitCode;

use clap::Parser;
use cli::{AgentCommand, Cli, Command, PkgCommand, PkiCommand, RepoCommand, WaptCommand};
use outpost_actors::agent::actor::Command as Agent;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Daemons say what they do; one-shot commands only warn unless asked.
    let daemon = matches!(
        cli.command,
        Command::Repo(RepoCommand::Main(_) | RepoCommand::Edge(_))
            | Command::Agent(AgentCommand::Run(_) | AgentCommand::Service(cli::ServiceAction::Run(_)))
            | Command::Server(_)
    );
    init_logging(cli.verbose + u8::from(daemon));
    if matches!(cli.command, Command::Repo(_) | Command::Pkg(PkgCommand::Publish(_))) {
        outpost_actors::allocator::keep_freed_memory();
    }
    let result = match &cli.command {
        Command::Pki(PkiCommand::Init(a)) => pki_cmd::init(a),
        Command::Pki(PkiCommand::Issue(a)) => pki_cmd::issue(a),
        Command::Pki(PkiCommand::Show(a)) => pki_cmd::show(a),
        Command::Pki(PkiCommand::EnrollCa(a)) => pki_cmd::enroll_ca(a),
        Command::Pki(PkiCommand::SignLineage(a)) => pki_cmd::sign_lineage(a),
        Command::Server(a) => server_cmd::server(a),
        Command::Console(c) => console_cmd::console(c),
        Command::Agent(AgentCommand::Enroll(a)) => agent_cmd::agent_enroll(a),
        Command::Agent(AgentCommand::Inventory(a)) => agent_cmd::read(a, &Agent::Inventory),
        Command::Pkg(PkgCommand::New(a)) => pkg_cmd::new(a),
        Command::Pkg(PkgCommand::Build(a)) => pkg_cmd::build(a).map(drop),
        Command::Pkg(PkgCommand::Sign(a)) => pkg_cmd::sign(a),
        Command::Pkg(PkgCommand::Verify(a)) => pkg_cmd::verify(a),
        Command::Pkg(PkgCommand::Show(a)) => pkg_cmd::show(a),
        Command::Pkg(PkgCommand::Publish(a)) => repo_cmd::publish(a),
        Command::Pkg(PkgCommand::Unpublish(a)) => repo_cmd::unpublish(a),
        Command::Repo(RepoCommand::Main(a)) => repo_cmd::main(a),
        Command::Repo(RepoCommand::Edge(a)) => repo_cmd::edge(a),
        Command::Repo(RepoCommand::Status(a)) => repo_cmd::status(a),
        Command::Repo(RepoCommand::Pull(a)) => repo_cmd::pull(a),
        Command::Repo(RepoCommand::Fsck(a)) => repo_cmd::fsck(a),
        Command::Repo(RepoCommand::Gc(a)) => repo_cmd::gc(a),
        Command::Repo(RepoCommand::SetLineage(a)) => repo_cmd::set_lineage(a),
        Command::Agent(AgentCommand::Run(a)) => agent_cmd::run(a),
        Command::Agent(AgentCommand::Service(a)) => service::command(a),
        Command::Agent(AgentCommand::Update(a)) => agent_cmd::read(a, &Agent::Update),
        Command::Agent(AgentCommand::Upgrade(a)) => agent_cmd::read(a, &Agent::Upgrade),
        Command::Agent(AgentCommand::DownloadUpgrade(a)) => agent_cmd::read(a, &Agent::DownloadUpgrade),
        Command::Agent(AgentCommand::Status(a)) => agent_cmd::read(a, &Agent::Status),
        Command::Agent(AgentCommand::Audit(a)) => agent_cmd::read(a, &Agent::Audit),
        Command::Agent(AgentCommand::Repos(a)) => agent_cmd::read(a, &Agent::Repos),
        Command::Agent(AgentCommand::Install(a)) => agent_cmd::install(a),
        Command::Agent(AgentCommand::Search(a)) => agent_cmd::text(a, false),
        Command::Agent(AgentCommand::Show(a)) => agent_cmd::text(a, true),
        Command::Agent(AgentCommand::List(a)) => agent_cmd::read(a, &Agent::List),
        Command::Agent(AgentCommand::Forget(a)) => agent_cmd::forget(a),
        Command::Agent(AgentCommand::Clean(a)) => agent_cmd::read(a, &Agent::Clean),
        Command::Agent(AgentCommand::SessionSetup(a)) => agent_cmd::session_setup(a),
        Command::Agent(AgentCommand::Remove(a)) => agent_cmd::remove(a),
        Command::Agent(AgentCommand::ResetUuid(a)) => agent_cmd::reset_uuid(a),
        Command::Wapt(WaptCommand::VerifyControl(a)) => wapt_cmd::verify_control(a),
        Command::Wapt(WaptCommand::Index(a)) => wapt_cmd::index(a),
        Command::Wapt(WaptCommand::Import(a)) => wapt_cmd::import(a),
        Command::Demo(a) => demo::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by `: `. Each error type says only its own part: one that
/// prints a cause's text does not also chain it (a test of the workspace holds every type to
/// that), so every cause is said once.
fn error_text(e: &anyhow::Error) -> String {
    e.chain().map(ToString::to_string).collect::<Vec<_>>().join(": ")
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("OUTPOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only for a person at a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

/// The signature date for new packages: `SOURCE_DATE_EPOCH` when set (reproducible builds),
/// otherwise now.
pub fn signing_time() -> i64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(outpost_actors::clock::unix_now)
}
