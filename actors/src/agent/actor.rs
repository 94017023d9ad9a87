//! The agent daemon: an actor that owns the agent and runs one operation at a time (a timer's
//! update and upgrade, or a command from the local control socket), and the socket itself, so
//! that `outpost agent …` commands run by the daemon when it is up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use super::Agent;

/// A command, as sent on the control socket.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[rtype(result = "Reply")]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Command {
    /// `update`.
    Update,
    /// `upgrade`.
    Upgrade,
    /// `download-upgrade`.
    DownloadUpgrade,
    /// `install`.
    Install { requests: Vec<String> },
    /// `remove`.
    Remove { names: Vec<String> },
    /// `status`.
    Status,
    /// `repos`.
    Repos,
    /// `audit`.
    Audit,
}

/// An answer: the command's report as JSON, or an error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    /// The report.
    Ok(serde_json::Value),
    /// Why it failed.
    Error(String),
}

/// Runs a command on an agent (the daemon's actor and the one-shot commands share this).
pub async fn run(agent: &Agent, command: Command, progress: &(dyn Fn(&str, u64, u64) + Send + Sync)) -> Reply {
    fn json<T: Serialize, E: std::fmt::Display>(r: Result<T, E>) -> Reply {
        match r {
            Ok(v) => serde_json::to_value(v).map_or_else(|e| Reply::Error(e.to_string()), Reply::Ok),
            Err(e) => Reply::Error(e.to_string()),
        }
    }
    match command {
        Command::Update => json(agent.update().await),
        Command::Upgrade => json(agent.upgrade(None, false, progress).await),
        Command::DownloadUpgrade => json(agent.upgrade(None, true, progress).await),
        Command::Install { requests } => json(agent.install(&requests, progress).await),
        Command::Remove { names } => json(agent.remove(&names).await),
        Command::Status => json(agent.status()),
        Command::Repos => json::<_, String>(Ok(agent.repos().await)),
        Command::Audit => json(agent.audit().await),
    }
}

/// The daemon's actor.
#[derive(Debug)]
pub struct AgentActor {
    agent: Arc<Agent>,
    every: Duration,
    auto_upgrade: bool,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Cycle;

impl AgentActor {
    /// An actor that updates every `every` (and at start), upgrading after each update when
    /// `auto_upgrade`.
    pub fn new(agent: Arc<Agent>, every: Duration, auto_upgrade: bool) -> Self {
        Self { agent, every, auto_upgrade }
    }
}

impl Actor for AgentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.notify(Cycle);
        ctx.run_interval(self.every, |_, ctx| ctx.notify(Cycle));
    }
}

impl Handler<Cycle> for AgentActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: Cycle, _: &mut Self::Context) -> Self::Result {
        let (agent, auto) = (self.agent.clone(), self.auto_upgrade);
        AtomicResponse::new(Box::pin(
            async move {
                match agent.update().await {
                    Ok(r) => tracing::info!(repo = r.repo, sequence = r.sequence, pending = r.pending, "update"),
                    Err(e) => tracing::warn!("update failed: {e}"),
                }
                if auto {
                    match agent.upgrade(None, false, &|_, _, _| {}).await {
                        Ok(r) if !r.installed.is_empty() || !r.removed.is_empty() || !r.failed.is_empty() => {
                            tracing::info!(installed = ?r.installed, removed = ?r.removed, failed = ?r.failed, "upgrade");
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!("upgrade failed: {e}"),
                    }
                }
            }
            .into_actor(self),
        ))
    }
}

impl Handler<Command> for AgentActor {
    type Result = AtomicResponse<Self, Reply>;

    fn handle(&mut self, command: Command, _: &mut Self::Context) -> Self::Result {
        let agent = self.agent.clone();
        AtomicResponse::new(Box::pin(async move { run(&agent, command, &|_, _, _| {}).await }.into_actor(self)))
    }
}

/// The control socket of a state folder.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("agent.sock")
}

/// Serves the control socket until `cancel` fires: one JSON command per line, one JSON reply.
#[cfg(unix)]
pub async fn serve_control(path: PathBuf, actor: Addr<AgentActor>, cancel: CancellationToken) -> std::io::Result<()> {
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    loop {
        let (stream, _) = tokio::select! {
            () = cancel.cancelled() => break,
            s = listener.accept() => s?,
        };
        let actor = actor.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            let Ok(Some(line)) = lines.next_line().await else { return };
            let reply = match serde_json::from_str::<Command>(&line) {
                Ok(c) => actor.send(c).await.unwrap_or_else(|e| Reply::Error(format!("the agent is stopping: {e}"))),
                Err(e) => Reply::Error(format!("bad command: {e}")),
            };
            let mut text = serde_json::to_string(&reply).unwrap_or_default();
            text.push('\n');
            let _ = write.write_all(text.as_bytes()).await;
        });
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// Sends a command to a running daemon; `None` when no daemon answers.
#[cfg(unix)]
pub async fn ask_daemon(state_dir: &Path, command: &Command) -> Option<Reply> {
    let stream = tokio::net::UnixStream::connect(socket_path(state_dir)).await.ok()?;
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(command).ok()?;
    text.push('\n');
    write.write_all(text.as_bytes()).await.ok()?;
    let mut lines = BufReader::new(read).lines();
    let line = lines.next_line().await.ok()??;
    serde_json::from_str(&line).ok()
}

/// Sends a command to a running daemon (no control socket on this platform yet).
#[cfg(not(unix))]
pub async fn ask_daemon(_state_dir: &Path, _command: &Command) -> Option<Reply> {
    None
}
