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
        keep_freed_memory();
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

/// Processes that move gigabytes (repositories serving and syncing, `repo pull`, publishes)
/// allocate and free buffers of 64 KiB (each received datagram) to a few MiB (ranges) many
/// times a second. With glibc's defaults the heap's free top goes back to the system as soon
/// as it exceeds 128 KiB and is faulted in and zeroed again at the next allocation (7% of an
/// edge's CPU in a fresh sync, measured with `perf`). Allocations up to 16 MiB stay on the
/// heap, and up to 64 MiB of free heap is kept for reuse (bench/README.md, fresh sync).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn keep_freed_memory() {
    // SAFETY: mallopt only changes two thresholds of the allocator; called before the runtime
    // starts any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 16 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    /// Memory freed by a repository process stays on its heap for the next buffer: a 4 MiB
    /// buffer (a range) comes from the heap, not a mapping of its own, and once freed it is
    /// kept, not given back to the system (glibc's defaults map it, then unmap it).
    #[test]
    #[allow(unsafe_code)]
    fn freed_buffers_stay_with_the_process() {
        super::keep_freed_memory();
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = || unsafe { libc::mallinfo2() };
        let mapped = info().hblkhd;
        let buffer = std::hint::black_box(vec![1u8; 4 << 20]);
        assert_eq!(info().hblkhd, mapped, "the buffer is on the heap, not mapped on its own");
        drop(buffer);
        assert!(info().fordblks >= 4 << 20, "the freed buffer is kept: {} bytes free on the heap", info().fordblks);
    }
}
