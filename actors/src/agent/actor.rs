//! The agent daemon: an actor that owns the agent and runs one operation at a time (a timer's
//! update and upgrade, or a command from the local control socket), and the socket itself, so
//! that `outpost agent …` commands run by the daemon when it is up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use outpost_protocol::snapshot::Head;

use super::Agent;
use super::report::Answer;
use crate::repo::client::RepoClient;

/// A command, as sent on the control socket.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[rtype(result = "Reply")]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Command {
    /// `update`.
    Update,
    /// `upgrade`.
    Upgrade,
    /// `upgrade` from snapshot `snapshot` or a newer one (an action sent with what it published).
    UpgradeAfter { snapshot: u64 },
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
    /// The inventory sections this host reports to central.
    Inventory,
    /// Open the agent again from its configuration (after `reset-uuid` changed who it is).
    Reload,
    /// `search TEXT`.
    Search { text: String },
    /// `show NAME`.
    Show { name: String },
    /// `list`.
    List,
    /// `forget NAME…`.
    Forget { names: Vec<String> },
    /// `clean`.
    Clean,
    /// `install --force`.
    Reinstall { requests: Vec<String> },
}

impl Command {
    /// True for commands that may change what the host reports (central is told after them).
    pub fn changes_state(&self) -> bool {
        !matches!(
            self,
            Self::Status | Self::Repos | Self::Inventory | Self::Search { .. } | Self::Show { .. } | Self::List
        )
    }
}

/// What a one-shot command sends on the control socket: the command and the configuration
/// file it was given, so that the daemon refuses a command meant for another configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlRequest {
    /// The configuration file the command read (`None`: the built-in defaults).
    pub config: Option<PathBuf>,
    /// The command.
    pub command: Command,
}

/// An answer: the command's report, or why it failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    /// The report.
    Ok(Answer),
    /// Why it failed.
    Error(String),
}

/// Runs a command on an agent (the daemon's actor and the one-shot commands share this).
pub async fn run(agent: &Agent, command: Command, progress: &(dyn Fn(&str, u64, u64) + Send + Sync)) -> Reply {
    let answer = match command {
        Command::Update => agent.update().await.map(Answer::Update),
        Command::Upgrade => agent.upgrade(None, false, progress).await.map(Answer::Upgrade),
        Command::UpgradeAfter { snapshot } => agent.upgrade_after(snapshot, progress).await.map(Answer::Upgrade),
        Command::DownloadUpgrade => agent.upgrade(None, true, progress).await.map(Answer::Upgrade),
        Command::Install { requests } => agent.install(&requests, progress).await.map(Answer::Upgrade),
        Command::Remove { names } => agent.remove(&names).await.map(Answer::Upgrade),
        Command::Status => agent.status().map(|s| Answer::Status(Box::new(s))),
        Command::Repos => Ok(Answer::Repos(agent.repos().await)),
        Command::Audit => agent.audit().await.map(Answer::Audit),
        Command::Inventory => agent.inventory_sections().map(Answer::Inventory),
        Command::Reload => Ok(Answer::Reloaded),
        Command::Search { text } => agent.search(&text).map(Answer::Search),
        Command::Show { name } => agent.show(&name).map(|o| Answer::Show(Box::new(o))),
        Command::List => agent.list().map(Answer::List),
        Command::Forget { names } => agent.forget(&names).await.map(Answer::Upgrade),
        Command::Clean => agent.clean().map(Answer::Cleaned),
        Command::Reinstall { requests } => agent.reinstall(&requests, progress).await.map(Answer::Upgrade),
    };
    answer.map_or_else(|e| Reply::Error(e.to_string()), Reply::Ok)
}

/// Opens the agent again from the configuration (after a `config` package changed the
/// settings): `true` applies the `config` packages' overlays, `false` ignores them (the
/// fallback when they do not make valid settings). Returns the agent, its update interval and
/// whether it upgrades by itself.
pub type Reopen = Box<dyn Fn(bool) -> Result<(Agent, Duration, bool), ReopenError> + Send>;

/// Why the agent could not be opened again (the configuration's own error, with its causes).
pub type ReopenError = Box<dyn std::error::Error + Send + Sync>;

/// The daemon's actor.
pub struct AgentActor {
    agent: Option<Arc<Agent>>,
    every: Duration,
    auto_upgrade: bool,
    reopen: Option<Reopen>,
    settings_mark: [u8; 32],
    timer: Option<SpawnHandle>,
    changed: Option<Arc<tokio::sync::Notify>>,
    metrics: Option<Arc<super::metrics::AgentMetrics>>,
    watch: Option<Watch>,
}

/// The repository the daemon follows: the connection kept open to the one its last update
/// used, on which the repository pushes each new head. While it lives, a cycle costs no
/// request when nothing changed, and a new snapshot is taken as soon as it is published.
struct Watch {
    client: RepoClient,
    head: Option<Head>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long after losing the repository it followed the daemon checks every repository.
const WATCH_RETRY: Duration = Duration::from_secs(5);

/// A head pushed by the repository followed.
#[derive(Message)]
#[rtype(result = "()")]
struct Pushed {
    repo: String,
    head: Head,
}

/// The repository followed is gone (its connection or stream ended).
#[derive(Message)]
#[rtype(result = "()")]
struct WatchLost {
    repo: String,
    why: String,
}

impl std::fmt::Debug for AgentActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentActor").field("every", &self.every).field("auto_upgrade", &self.auto_upgrade).finish()
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Cycle;

impl AgentActor {
    /// An actor that updates every `every` (and at start), upgrading after each update when
    /// `auto_upgrade`. With `reopen`, it reloads its settings when a `config` package installed
    /// or removed changes them.
    pub fn new(agent: Arc<Agent>, every: Duration, auto_upgrade: bool, reopen: Option<Reopen>) -> Self {
        let settings_mark = overlay_mark(agent.state_dir());
        Self {
            agent: Some(agent),
            every,
            auto_upgrade,
            reopen,
            settings_mark,
            timer: None,
            changed: None,
            metrics: None,
            watch: None,
        }
    }

    /// Notifies `changed` after each operation that may change the host's state (the link to
    /// central then reports).
    pub fn with_notify(mut self, changed: Arc<tokio::sync::Notify>) -> Self {
        self.changed = Some(changed);
        self
    }

    /// Keeps `metrics` up to date: after each operation, and every few seconds (a snapshot
    /// expires without anything happening).
    pub fn with_metrics(mut self, metrics: Arc<super::metrics::AgentMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn notify(&self) {
        if let Some(n) = &self.changed {
            n.notify_one();
        }
        self.observe();
    }

    fn observe(&self) {
        if let (Some(m), Some(agent)) = (&self.metrics, &self.agent) {
            match agent.status() {
                Ok(status) => m.observe(&status),
                Err(e) => tracing::warn!("metrics: cannot read the status: {e}"),
            }
        }
    }

    fn agent(&self) -> Option<Arc<Agent>> {
        self.agent.clone()
    }

    /// After each operation: when the `config` packages' settings changed (or `force`), the
    /// agent is opened again with them (the old one is closed first: one database handle at a
    /// time).
    fn reload_if_changed(&mut self, ctx: &mut Context<Self>, force: bool) {
        let Some(dir) = self.agent.as_ref().map(|a| a.state_dir().to_path_buf()) else { return };
        let mark = overlay_mark(&dir);
        if (mark == self.settings_mark && !force) || self.reopen.is_none() {
            return;
        }
        self.settings_mark = mark;
        self.agent = None;
        // The repositories may be others now: the next cycle chooses again.
        self.watch = None;
        let reopen = self.reopen.as_ref().expect("checked");
        let opened = reopen(true).or_else(|e| {
            tracing::error!(
                "the settings from config packages are not valid, ignored: {}",
                outpost_protocol::text::causes(&*e)
            );
            reopen(false)
        });
        match opened {
            Ok((agent, every, auto)) => {
                tracing::info!(update_every = ?every, auto_upgrade = auto, "settings changed by a config package: reloaded");
                self.agent = Some(Arc::new(agent));
                self.auto_upgrade = auto;
                if every != self.every {
                    self.every = every;
                    self.schedule(ctx);
                }
            }
            Err(e) => {
                tracing::error!("cannot open the agent again: {}; stopping", outpost_protocol::text::causes(&*e));
                System::current().stop_with_code(1);
            }
        }
    }

    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
        }
        self.timer = Some(ctx.run_interval(self.every, |_, ctx| ctx.notify(Cycle)));
    }
}

/// A fingerprint of the `config` packages' settings in `state_dir/config.d`.
pub fn overlay_mark(state_dir: &Path) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(state_dir.join("config.d"))
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        hasher.update(f.as_os_str().as_encoded_bytes());
        hasher.update(&[0]);
        hasher.update(&std::fs::read(&f).unwrap_or_default());
        hasher.update(&[0]);
    }
    *hasher.finalize().as_bytes()
}

impl Actor for AgentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.notify(Cycle);
        self.schedule(ctx);
        // Audits run on their packages' own schedules (`audit_schedule`).
        ctx.run_interval(AUDIT_TICK, |_, ctx| ctx.notify(AuditTick));
        if self.metrics.is_some() {
            ctx.run_interval(Duration::from_secs(15), |act, _| act.observe());
        }
    }
}

/// How often the daemon looks for audits that are due.
const AUDIT_TICK: Duration = Duration::from_secs(2);

/// Runs the audits that are due.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct AuditTick;

impl Handler<AuditTick> for AgentActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: AuditTick, _: &mut Self::Context) -> Self::Result {
        let agent = self.agent();
        AtomicResponse::new(Box::pin(
            async move {
                let Some(agent) = agent else { return false };
                match agent.audit_due(crate::clock::unix_now()).await {
                    Ok(done) => {
                        for a in &done {
                            tracing::info!(package = a.name, result = %a.result, "scheduled audit");
                        }
                        !done.is_empty()
                    }
                    Err(e) => {
                        tracing::warn!("scheduled audits failed: {e}");
                        false
                    }
                }
            }
            .into_actor(self)
            .map(|ran, act, _| {
                if ran {
                    act.notify();
                }
            }),
        ))
    }
}

impl AgentActor {
    /// The repository followed and the head it pushed last.
    fn pushed(&self) -> Option<(RepoClient, Head)> {
        let w = self.watch.as_ref().filter(|w| w.client.connection.close_reason().is_none())?;
        Some((w.client.clone(), w.head?))
    }

    /// Follows `repo` (the one the last update used) unless it already does.
    fn follow(&mut self, ctx: &mut Context<Self>, repo: String) {
        if self.watch.as_ref().is_some_and(|w| w.client.addr == repo) {
            return;
        }
        self.watch = None;
        let Some(agent) = self.agent() else { return };
        let me = ctx.address();
        ctx.spawn(async move { agent.connect_repo(&repo).await.map_err(|e| (repo, e)) }.into_actor(self).map(
            move |connected, act, _| match connected {
                Ok(client) => {
                    let (connection, repo, pace) = (client.connection.clone(), client.addr.clone(), client.pace);
                    let task = tokio::spawn(async move {
                        let why = crate::repo::client::follow_heads(&connection, pace, |head| {
                            me.do_send(Pushed { repo: repo.clone(), head });
                        })
                        .await;
                        me.do_send(WatchLost { repo, why });
                    });
                    tracing::info!(repo = client.addr, "following the repository's heads");
                    act.watch = Some(Watch { client, head: None, task });
                }
                Err((repo, e)) => tracing::info!(repo, "cannot follow the repository's heads, polling instead: {e}"),
            },
        ));
    }
}

impl Handler<Pushed> for AgentActor {
    type Result = ();

    fn handle(&mut self, msg: Pushed, ctx: &mut Self::Context) {
        let Some(watch) = self.watch.as_mut().filter(|w| w.client.addr == msg.repo) else { return };
        let changed = watch.head.map(|h| h.hash) != Some(msg.head.hash);
        watch.head = Some(msg.head);
        if changed {
            ctx.notify(Cycle);
        }
    }
}

impl Handler<WatchLost> for AgentActor {
    type Result = ();

    fn handle(&mut self, msg: WatchLost, ctx: &mut Self::Context) {
        if self.watch.as_ref().is_some_and(|w| w.client.addr == msg.repo) {
            tracing::info!(repo = msg.repo, "no longer following the repository's heads: {}", msg.why);
            self.watch = None;
            // Choose again soon (not at once: a repository that drops every subscription is
            // not asked in a loop).
            ctx.notify_later(Cycle, WATCH_RETRY);
        }
    }
}

impl Handler<Cycle> for AgentActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: Cycle, _: &mut Self::Context) -> Self::Result {
        let (agent, auto) = (self.agent(), self.auto_upgrade);
        let pushed = self.pushed();
        AtomicResponse::new(Box::pin(
            async move {
                let agent = agent?;
                // The repository followed pushed its head: nothing to ask it when unchanged. If
                // that fails, the repositories are checked again as without it.
                let mut result = match &pushed {
                    Some((client, head)) => agent.update_pushed(client, *head).await,
                    None => agent.update().await,
                };
                let mut followed = pushed.map(|(client, _)| client);
                if let (Err(e), Some(_)) = (&result, &followed) {
                    tracing::info!("update from the repository followed failed ({e}): checking every repository");
                    followed = None;
                    result = agent.update().await;
                }
                match &result {
                    Ok(r) => tracing::info!(repo = r.repo, sequence = r.sequence, pending = r.pending, "update"),
                    Err(e) => tracing::warn!("update failed: {e}"),
                }
                if auto {
                    let upgraded = match (&followed, &result) {
                        (Some(client), Ok(_)) => agent.upgrade_from(std::slice::from_ref(client), &|_, _, _| {}).await,
                        _ => agent.upgrade(None, false, &|_, _, _| {}).await,
                    };
                    match upgraded {
                        Ok(r) if !r.installed.is_empty() || !r.removed.is_empty() || !r.failed.is_empty() => {
                            tracing::info!(installed = ?r.installed, removed = ?r.removed, failed = ?r.failed, "upgrade");
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!("upgrade failed: {e}"),
                    }
                }
                result.ok().map(|r| r.first_choice.then_some(r.repo))
            }
            .into_actor(self)
            .map(|repo, act, ctx| {
                match repo {
                    Some(Some(repo)) => act.follow(ctx, repo),
                    // A fallback: every repository is checked again at the next cycle.
                    Some(None) => act.watch = None,
                    None => act.watch = None,
                }
                act.reload_if_changed(ctx, false);
                act.notify();
            }),
        ))
    }
}

impl Handler<Command> for AgentActor {
    type Result = AtomicResponse<Self, Reply>;

    fn handle(&mut self, command: Command, _: &mut Self::Context) -> Self::Result {
        let agent = self.agent();
        let changes = command.changes_state();
        let force = matches!(command, Command::Reload);
        // `update` asked on the connection to the repository followed: one round trip.
        let followed = matches!(command, Command::Update).then(|| self.pushed()).flatten().map(|(client, _)| client);
        AtomicResponse::new(Box::pin(
            async move {
                let Some(agent) = agent else {
                    return Reply::Error("the agent could not reload its settings".into());
                };
                if let Some(client) = followed
                    && let Ok(report) = agent.update_followed(&client).await
                {
                    return Reply::Ok(Answer::Update(report));
                }
                run(&agent, command, &|_, _, _| {}).await
            }
            .into_actor(self)
            .map(move |reply, act, ctx| {
                act.reload_if_changed(ctx, force);
                if changes {
                    act.notify();
                } else {
                    act.observe();
                }
                reply
            }),
        ))
    }
}
