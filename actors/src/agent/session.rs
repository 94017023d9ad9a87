//! `session-setup`: per-user configuration, run once per package version for each user at
//! logon (`outpost agent session-setup`, started by a systemd user unit or an XDG autostart
//! entry, as the user).
//!
//! The agent's state database belongs to the system; users cannot read it. So the agent exports
//! what a user's session needs to `STATE/session/`: `index.json` (each installed package whose
//! hook handles `session-setup`: name, version, control) and the hooks, readable by everyone.
//! A user's run keeps what it did in the user's own state (`$XDG_STATE_HOME/outpost`), and
//! writes its results to `STATE/session/results/USER.json` (a folder every user may write to,
//! sticky like /tmp), where the agent reads failures into the host's status.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use outpost_protocol::control::Control;
use serde::{Deserialize, Serialize};

use super::hooks::{self, HookAction};
use super::state::InstalledRecord;
use crate::clock::unix_now;

/// The folder under the agent's state.
pub const DIR: &str = "session";

/// A package a session may have to set up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exported {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its control fields (the hook's environment).
    pub control: Vec<(String, String)>,
    /// Its hook's file name under `session/hooks/`.
    pub hook: String,
}

/// One user's session-setup of one package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRun {
    /// The package.
    pub package: String,
    /// The version set up.
    pub version: String,
    /// The user.
    pub user: String,
    /// True when the hook succeeded.
    pub ok: bool,
    /// What happened.
    pub message: String,
    /// When (Unix seconds).
    pub at: i64,
}

/// Why a session-setup run could not start.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Files.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    /// The agent has not exported anything yet (it runs at the next upgrade).
    #[error("{0}: nothing to set up yet (the agent writes it when it installs packages)")]
    NotExported(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SessionError + '_ {
    move |error| SessionError::Io { path: path.to_path_buf(), error }
}

/// True when a hook handles the `session-setup` action (it names it).
pub fn handles_session(hook: &[u8]) -> bool {
    String::from_utf8_lossy(hook).contains("session-setup")
}

/// Writes what sessions need for the installed packages (run by the agent, as the system).
pub fn export(state_dir: &Path, installed: &[(String, InstalledRecord)]) -> Result<(), SessionError> {
    let dir = state_dir.join(DIR);
    let hooks_dir = dir.join("hooks");
    let results = dir.join("results");
    for d in [&dir, &hooks_dir, &results] {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for (d, mode) in [(&dir, 0o755), (&hooks_dir, 0o755), (&results, 0o1777)] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode)).map_err(io(d))?;
        }
    }
    let mut index = Vec::new();
    for (name, record) in installed {
        let Some(hook) = record.hook.as_ref().filter(|h| handles_session(h)) else { continue };
        let file = format!("{}.{}", sanitize(name), if cfg!(windows) { "ps1" } else { "sh" });
        let path = hooks_dir.join(&file);
        write_whole(&path, hook, 0o644)?;
        index.push(Exported {
            name: name.clone(),
            version: record.control().get("version").unwrap_or_default().to_string(),
            control: record.control.clone(),
            hook: file,
        });
    }
    let text =
        serde_json::to_vec_pretty(&index).map_err(|e| SessionError::Io { path: dir.clone(), error: e.into() })?;
    write_whole(&dir.join("index.json"), &text, 0o644)
}

fn write_whole(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SessionError> {
    let mut f = crate::disk::AtomicFile::create(path, mode).map_err(io(path))?;
    std::io::Write::write_all(&mut f, bytes).map_err(io(path))?;
    f.commit().map_err(io(path))
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
}

/// Largest results file read from a user (a user could write any size into the shared folder).
const MAX_RESULTS_BYTES: u64 = 1024 * 1024;

/// The failed session-setups every user reported (read by the agent for the host's status).
/// A file that is too large or not results is skipped.
pub fn failures(state_dir: &Path) -> Vec<SessionRun> {
    let Ok(dir) = std::fs::read_dir(state_dir.join(DIR).join("results")) else { return Vec::new() };
    dir.flatten()
        .filter(|e| e.metadata().is_ok_and(|m| m.is_file() && m.len() <= MAX_RESULTS_BYTES))
        .filter_map(|e| serde_json::from_slice::<BTreeMap<String, SessionRun>>(&std::fs::read(e.path()).ok()?).ok())
        .flat_map(BTreeMap::into_values)
        .filter(|r| !r.ok)
        .collect()
}

/// Runs, as `user` whose own state is `user_state`, the session-setup of every exported package
/// not yet set up at its version (a failed one is tried again at the next logon). Returns the
/// runs made.
pub async fn run_for_user(
    state_dir: &Path,
    user_state: &Path,
    user: &str,
    limit: Duration,
) -> Result<Vec<SessionRun>, SessionError> {
    let dir = state_dir.join(DIR);
    let index_path = dir.join("index.json");
    let index: Vec<Exported> = match std::fs::read(&index_path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| SessionError::Io { path: index_path.clone(), error: e.into() })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(SessionError::NotExported(index_path)),
        Err(e) => return Err(SessionError::Io { path: index_path, error: e }),
    };
    std::fs::create_dir_all(user_state).map_err(io(user_state))?;
    let done_path = user_state.join("session.json");
    let mut done: BTreeMap<String, SessionRun> =
        std::fs::read(&done_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let mut runs = Vec::new();
    for p in &index {
        if done.get(&p.name).is_some_and(|r| r.ok && r.version == p.version) {
            continue;
        }
        let work = user_state.join("work").join(sanitize(&p.name));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).map_err(io(&work))?;
        let script = work.join(&p.hook);
        std::fs::copy(dir.join("hooks").join(&p.hook), &script).map_err(io(&script))?;
        let control = Control::from_fields(p.control.clone()).unwrap_or_default();
        let (ok, message) =
            match hooks::run(&script, HookAction::SessionSetup, &work, user_state, &control, limit).await {
                Ok(o) => {
                    let summary = o.summary(&p.hook, HookAction::SessionSetup);
                    let tail: Vec<&str> = o.output.lines().rev().take(5).collect();
                    let said = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
                    (o.success(), if said.is_empty() { summary } else { format!("{summary}\n{said}") })
                }
                Err(e) => (false, format!("{} could not start: {e}", p.hook)),
            };
        let _ = std::fs::remove_dir_all(&work);
        let run = SessionRun {
            package: p.name.clone(),
            version: p.version.clone(),
            user: user.to_string(),
            ok,
            message,
            at: unix_now(),
        };
        done.insert(p.name.clone(), run.clone());
        runs.push(run);
    }
    // Packages no longer installed are forgotten.
    done.retain(|name, _| index.iter().any(|p| &p.name == name));
    let text =
        serde_json::to_vec_pretty(&done).map_err(|e| SessionError::Io { path: done_path.clone(), error: e.into() })?;
    write_whole(&done_path, &text, 0o600)?;
    // What the agent reads into the host's status.
    let report = dir.join("results").join(format!("{}.json", sanitize(user)));
    write_whole(&report, &text, 0o644)?;
    Ok(runs)
}
