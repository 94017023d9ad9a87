//! The agent's link to central (daemon only): a long-lived connection on which it sends signed
//! inventory reports (the whole inventory first, then only the sections that changed, each with
//! the next sequence number), receives administrators' signed actions, and fetches signed agent
//! settings.
//!
//! An action runs only when its signature chains to the organisation CA with the `act` right,
//! it is not expired, this host is a target, and its nonce was never seen here (nonces are kept
//! in `central.redb` until their action expires, so a replay is refused even after a restart).
//! Settings apply only when an admin with `modify` signed them, for this host, newer than the
//! last ones applied.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use outpost_protocol::central::{
    Action, ActionKind, AgentSettingsDoc, CentralRequest, CentralResponse, HostFacts, HostNames, Inventory, Report,
    Signed,
};
use outpost_protocol::pki::{PrivateKey, TrustStore};
use outpost_protocol::wire::ErrorCode;
use quinn::Endpoint;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::actor::{AgentActor, Command, Reply};
use super::report::Answer;
use crate::central::client::{ActionStream, CentralClient, CentralClientError};
use crate::clock::unix_now;

const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta");
const NONCES: TableDefinition<'static, &[u8; 16], i64> = TableDefinition::new("nonces");
const REPORT: &str = "report";
const SETTINGS_SEQ: &str = "settings_sequence";

/// The file of the central `config` overlay (applied like a `config` package's settings).
pub const SETTINGS_FILE: &str = "00-central.toml";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct ReportState {
    sequence: u64,
    /// What central has (after the last applied report); `None` forces a full report.
    sent: Option<Inventory>,
}

#[derive(Serialize, Deserialize)]
enum Wire<T> {
    V1(T),
}

/// The link's own small database (`state/central.redb`).
#[derive(Debug)]
pub struct LinkState {
    db: Database,
}

/// Why the link to central stopped or its state could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The link's database is damaged.
    #[error(
        "{error}. It holds the report sequence and the actions already run; move it away (mv {p} {p}.damaged): \
         the agent then sends a full report, and actions it ran before are refused by their expiry",
        p = path.display()
    )]
    Damaged { error: crate::db::OpenError, path: PathBuf },
    /// The link's database could not be opened.
    #[error(transparent)]
    Open(crate::db::OpenError),
    /// The link's database failed.
    #[error("the central link's state database")]
    Db(#[source] redb::Error),
    /// A record could not be encoded.
    #[error("the central link's state")]
    Encode(#[from] postcard::Error),
    /// Central could not be reached or refused a request.
    #[error(transparent)]
    Central(#[from] CentralClientError),
    /// The agent's actor is gone (the daemon is stopping).
    #[error("the agent is stopping")]
    Stopping(#[from] actix::MailboxError),
    /// The agent answered an error.
    #[error("the agent: {0}")]
    Agent(String),
    /// An answer that does not fit the request.
    #[error("unexpected answer to {what}: {answer}")]
    Unexpected { what: &'static str, answer: String },
    /// Central ended the action stream.
    #[error("central closed the action stream")]
    Closed,
}

fn db(x: impl Into<redb::Error>) -> LinkError {
    LinkError::Db(x.into())
}

impl LinkState {
    /// Opens (or creates) it.
    pub fn open(state_dir: &Path) -> Result<Self, LinkError> {
        let path = state_dir.join("central.redb");
        let database = crate::db::open(&path).map_err(|error| {
            if error.is_damaged() { LinkError::Damaged { error, path: path.clone() } } else { LinkError::Open(error) }
        })?;
        let txn = database.begin_write().map_err(db)?;
        txn.open_table(META).map_err(db)?;
        txn.open_table(NONCES).map_err(db)?;
        txn.commit().map_err(db)?;
        Ok(Self { db: database })
    }

    fn get<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Option<T> {
        let txn = self.db.begin_read().ok()?;
        let t = txn.open_table(META).ok()?;
        let v = t.get(key).ok()??;
        let Wire::V1(x) = postcard::from_bytes(v.value()).ok()?;
        Some(x)
    }

    fn put<T: Serialize>(&self, key: &str, value: T) -> Result<(), LinkError> {
        let bytes = postcard::to_stdvec(&Wire::V1(value))?;
        let txn = self.db.begin_write().map_err(db)?;
        txn.open_table(META).map_err(db)?.insert(key, bytes.as_slice()).map_err(db)?;
        txn.commit().map_err(db)
    }

    /// Records `nonce` until `expires`; false when it was already seen (a replay). Expired
    /// nonces are forgotten (their actions are refused as expired anyway).
    pub fn first_sight(&self, nonce: &[u8; 16], expires: i64, now: i64) -> Result<bool, LinkError> {
        let txn = self.db.begin_write().map_err(db)?;
        let fresh = {
            let mut t = txn.open_table(NONCES).map_err(db)?;
            t.retain(|_, exp| exp > now).map_err(db)?;
            if t.get(nonce).map_err(db)?.is_some() {
                false
            } else {
                t.insert(nonce, expires).map_err(db)?;
                true
            }
        };
        txn.commit().map_err(db)?;
        Ok(fresh)
    }
}

/// What the link needs.
pub struct LinkConfig {
    /// Central's address.
    pub server: String,
    /// A client endpoint with the host certificate and the central ALPN.
    pub endpoint: Endpoint,
    /// The host key (signs reports).
    pub key: PrivateKey,
    /// The SHA-256 fingerprint of the host certificate (actions may target it).
    pub fingerprint: String,
    /// The organisation CA (checks actions and settings).
    pub trust: TrustStore,
    /// The state folder.
    pub state_dir: PathBuf,
    /// The daemon.
    pub actor: Addr<AgentActor>,
    /// Notified after each operation: time to report.
    pub changed: Arc<Notify>,
}

impl std::fmt::Debug for LinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkConfig").field("server", &self.server).finish()
    }
}

/// Runs the link until `cancel`: connects (again after failures, with a growing pause), reports,
/// applies settings, and runs actions.
pub async fn run(cfg: LinkConfig, cancel: CancellationToken) {
    let state = match LinkState::open(&cfg.state_dir) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("central link: cannot open its state: {}", outpost_protocol::text::causes(&e));
            return;
        }
    };
    let mut pause = Duration::from_secs(1);
    loop {
        match session(&cfg, &state, &cancel).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(
                server = cfg.server,
                "central link: {}; trying again in {pause:?}",
                outpost_protocol::text::causes(&e)
            ),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(60));
    }
}

async fn session(cfg: &LinkConfig, state: &LinkState, cancel: &CancellationToken) -> Result<(), LinkError> {
    let client = CentralClient::connect(&cfg.endpoint, &cfg.server).await?;
    tracing::info!(server = client.addr, "connected to central");
    let mut actions: ActionStream = client.listen().await?;
    tracing::debug!("listening for actions");
    // A new connection always reports, even when nothing changed: the central instance may have
    // lost its data or never have seen this host, and only an answer says what it holds.
    let mut facts = report(cfg, state, &client, true).await?;
    settings(cfg, state, &client, &facts).await;
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    tick.tick().await;
    loop {
        tokio::select! {
            () = cancel.cancelled() => {
                client.close();
                return Ok(());
            }
            () = cfg.changed.notified() => {
                settings(cfg, state, &client, &facts).await;
                facts = report(cfg, state, &client, false).await?;
            }
            _ = tick.tick() => {
                settings(cfg, state, &client, &facts).await;
                facts = report(cfg, state, &client, false).await?;
            }
            a = actions.next() => match a? {
                Some(signed) => {
                    let (nonce, ok, message) = act(cfg, state, &signed, &facts).await;
                    if let Some(nonce) = nonce {
                        client.request(&CentralRequest::ActionResult { nonce, ok, message }).await?;
                    }
                    facts = report(cfg, state, &client, false).await?;
                }
                None => return Err(LinkError::Closed),
            },
        }
    }
}

/// The current inventory, from the daemon.
async fn inventory(cfg: &LinkConfig) -> Result<Inventory, LinkError> {
    match cfg.actor.send(Command::Inventory).await? {
        Reply::Ok(Answer::Inventory(sections)) => Ok(Inventory::from_sections(sections)),
        Reply::Ok(other) => Err(LinkError::Unexpected { what: "an inventory request", answer: format!("{other:?}") }),
        Reply::Error(m) => Err(LinkError::Agent(m)),
    }
}

/// Sends what changed since the last report central applied (everything the first time, or
/// when central asks), signed, with the next sequence; with nothing changed, sends nothing
/// unless `always` (then an empty report, which central applies or answers with a request for
/// a full one).
/// Returns the host's facts from the inventory it collected (for settings and actions, which
/// need only those: the inventory is collected once per operation).
async fn report(
    cfg: &LinkConfig,
    state: &LinkState,
    client: &CentralClient,
    always: bool,
) -> Result<HostFacts, LinkError> {
    let now_inv = inventory(cfg).await?;
    let facts = now_inv.host().cloned().unwrap_or_default();
    let host = now_inv.host().map(|h| h.uuid.clone()).unwrap_or_default();
    let mut st: ReportState = state.get(REPORT).unwrap_or_default();
    for _ in 0..2 {
        let (full, sections) = match &st.sent {
            Some(sent) => (false, now_inv.changed_since(sent)),
            None => (true, now_inv.sections.values().cloned().collect()),
        };
        if !full && sections.is_empty() && !always {
            tracing::debug!(sequence = st.sequence, "nothing changed since the last report");
            return Ok(facts);
        }
        let report = Report { host: host.clone(), sequence: st.sequence + 1, full, created: unix_now(), sections };
        let signed = report.sign(&cfg.key);
        match client.request(&CentralRequest::Report(signed)).await {
            Ok(CentralResponse::ReportApplied { sequence }) => {
                st = ReportState { sequence, sent: Some(now_inv.clone()) };
                state.put(REPORT, &st)?;
                tracing::debug!(sequence, full, "report applied");
                return Ok(facts);
            }
            Ok(CentralResponse::FullReportNeeded { last }) => {
                tracing::info!(?last, "central asks for a full report");
                st = ReportState { sequence: st.sequence.max(last.unwrap_or(0)) + 1, sent: None };
            }
            Ok(other) => return Err(LinkError::Unexpected { what: "a report", answer: format!("{other:?}") }),
            Err(CentralClientError::Remote { code: ErrorCode::Stale, .. }) => {
                // Central holds a later sequence (this state was restored from a backup):
                // continue above it with a full report.
                st = ReportState { sequence: st.sequence + 1000, sent: None };
            }
            Err(x) => return Err(x.into()),
        }
    }
    Ok(facts)
}

/// Fetches the signed settings for this host and applies them when they verify and are newer.
async fn settings(cfg: &LinkConfig, state: &LinkState, client: &CentralClient, h: &HostFacts) {
    let Ok(CentralResponse::Settings(Some(signed))) = client.request(&CentralRequest::Settings).await else { return };
    let (doc, info) = match AgentSettingsDoc::verify(&signed, &cfg.trust, unix_now()) {
        Ok(v) => v,
        Err(x) => {
            tracing::warn!("agent settings from central refused: {x}");
            return;
        }
    };
    let last: u64 = state.get(SETTINGS_SEQ).unwrap_or(0);
    if doc.sequence <= last {
        return;
    }
    if !doc.targets.includes(&HostNames { fingerprint: &cfg.fingerprint, uuid: &h.uuid, fqdn: &h.fqdn, ou: &h.ou }) {
        return;
    }
    let dir = cfg.state_dir.join("config.d");
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| crate::disk::write_atomic(&dir.join(SETTINGS_FILE), doc.toml.as_bytes(), 0o644));
    match written {
        Ok(()) => {
            let _ = state.put(SETTINGS_SEQ, doc.sequence);
            tracing::info!(sequence = doc.sequence, signer = info.subject, "agent settings from central applied");
            // The daemon reloads its settings after its next operation: give it one.
            let _ = cfg.actor.send(Command::Status).await;
        }
        Err(x) => tracing::warn!("writing agent settings: {x}"),
    }
}

/// Checks and runs one action; returns its nonce (if it could be read), success and message.
async fn act(cfg: &LinkConfig, state: &LinkState, signed: &Signed, h: &HostFacts) -> (Option<[u8; 16]>, bool, String) {
    let now = unix_now();
    let (action, info) = match Action::verify(signed, &cfg.trust, now) {
        Ok(v) => v,
        Err(x) => {
            tracing::warn!("action refused: {x}");
            return (None, false, format!("refused: {x}"));
        }
    };
    let refuse = |why: String| {
        tracing::warn!(signer = info.subject, "action refused: {why}");
        (Some(action.nonce), false, format!("refused: {why}"))
    };
    if !action.targets.includes(&HostNames { fingerprint: &cfg.fingerprint, uuid: &h.uuid, fqdn: &h.fqdn, ou: &h.ou }) {
        return refuse(format!("this host is not a target ({})", action.targets.describe()));
    }
    match state.first_sight(&action.nonce, action.expires, now) {
        Ok(true) => {}
        Ok(false) => return refuse("this action was already received (replay)".into()),
        Err(x) => return refuse(outpost_protocol::text::causes(&x)),
    }
    let command = match &action.kind {
        ActionKind::Update => Command::Update,
        ActionKind::Upgrade => Command::Upgrade,
        ActionKind::UpgradeAfter(snapshot) => Command::UpgradeAfter { snapshot: *snapshot },
        ActionKind::Install(p) => Command::Install { requests: p.clone() },
        ActionKind::Remove(p) => Command::Remove { names: p.clone() },
    };
    tracing::info!(kind = action.kind.name(), signer = info.subject, "running an action from central");
    match cfg.actor.send(command).await {
        Ok(Reply::Ok(answer)) => {
            let failed: Vec<String> = answer.failed().iter().map(|f| format!("{}: {}", f.name, f.reason)).collect();
            if failed.is_empty() {
                (Some(action.nonce), true, format!("{} done", action.kind.name()))
            } else {
                (Some(action.nonce), false, format!("{} failed for {}", action.kind.name(), failed.join("; ")))
            }
        }
        Ok(Reply::Error(m)) => (Some(action.nonce), false, m),
        Err(x) => (Some(action.nonce), false, x.to_string()),
    }
}

/// The records written by earlier versions, frozen: each must still decode to what it said.
#[cfg(test)]
mod golden {
    use outpost_protocol::hex::{assert_golden, decode};

    use super::*;

    #[test]
    fn the_report_state_and_settings_sequence_still_decode() {
        let dir = tempfile::tempdir().unwrap();
        let state = LinkState::open(dir.path()).unwrap();
        let sent = Inventory::from_sections(vec![outpost_protocol::central::Section::Memory(1024)]);
        let st = ReportState { sequence: 4, sent: Some(sent) };
        let golden = "0004010104048008";
        assert_golden("the report state", &postcard::to_stdvec(&Wire::V1(st.clone())).unwrap(), golden);
        put_raw(&state, REPORT, &decode(golden).unwrap());
        assert_eq!(state.get::<ReportState>(REPORT), Some(st));
        let golden = "0009";
        assert_golden("the settings sequence", &postcard::to_stdvec(&Wire::V1(9u64)).unwrap(), golden);
        put_raw(&state, SETTINGS_SEQ, &decode(golden).unwrap());
        assert_eq!(state.get::<u64>(SETTINGS_SEQ), Some(9));
    }

    fn put_raw(state: &LinkState, key: &str, bytes: &[u8]) {
        let txn = state.db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert(key, bytes).unwrap();
        txn.commit().unwrap();
    }
}
