//! `search`, `show`, `list`, `forget`, `clean` and `install --force`: wapt-get's everyday
//! commands, over the held snapshot (verified again) and the state database.

use std::collections::BTreeMap;

use super::{Agent, AgentError};
use crate::agent::catalogue::{self, InstalledLine, Listed, Offer};
use crate::agent::report::{Cleaned, UpgradeReport};

impl Agent {
    fn installed_versions(&self) -> Result<BTreeMap<String, String>, AgentError> {
        Ok(self
            .state
            .installed()?
            .into_iter()
            .filter_map(|(n, r)| r.as_installed().map(|i| (n, i.entry.version.to_string())))
            .collect())
    }

    fn offered(&self) -> Result<Vec<outpost_protocol::entry::PackageEntry>, AgentError> {
        let (_, snapshot) = self.held()?.ok_or(AgentError::NoPlan)?;
        Ok(snapshot.package_entries())
    }

    /// `search TEXT`: what the repositories offer (the held snapshot), with the version this
    /// host would get and why not the others.
    pub fn search(&self, text: &str) -> Result<Vec<Offer>, AgentError> {
        Ok(catalogue::search(&self.offered()?, &self.capabilities(), &self.installed_versions()?, text))
    }

    /// `show NAME`: every version of a package with its fields, and the one this host would get.
    pub fn show(&self, name: &str) -> Result<Offer, AgentError> {
        catalogue::show(&self.offered()?, &self.capabilities(), &self.installed_versions()?, name).ok_or_else(|| {
            AgentError::BadRequest(format!(
                "no repository offers {name:?} (`outpost agent search` lists what they offer)"
            ))
        })
    }

    /// `list`: the installed packages and why each is here.
    pub fn list(&self) -> Result<Vec<Listed>, AgentError> {
        let records = self.state.installed()?;
        let lines: Vec<InstalledLine<'_>> = records
            .iter()
            .filter_map(|(name, r)| {
                let i = r.as_installed()?;
                Some(InstalledLine {
                    name,
                    entry: i.entry,
                    state: r.state,
                    origin: r.origin,
                    installed_at: r.installed_at,
                    audit: r.audit,
                })
            })
            .collect();
        Ok(catalogue::list(&lines))
    }

    /// `forget NAME…`: drops packages from the state without running their uninstall hook
    /// (for software removed by hand). A package something still needs is planned again.
    pub async fn forget(&self, names: &[String]) -> Result<UpgradeReport, AgentError> {
        let mut report = UpgradeReport::default();
        for name in names {
            if self.state.get_installed(name)?.is_none() {
                return Err(AgentError::BadRequest(format!("{name} is not installed here (`outpost agent list`)")));
            }
        }
        for name in names {
            self.state.remove_request(name)?;
            self.state.remove_installed(name)?;
            report.removed.push(name.clone());
        }
        self.export_session();
        if let Some((_, snapshot)) = self.held().ok().flatten() {
            self.resolve(&snapshot, &[]).await?;
        }
        Ok(report)
    }

    /// `clean`: empties the package cache (what an upgrade downloaded and kept); says what it
    /// freed. Installed packages are not touched; what a pending upgrade needs is fetched again.
    pub fn clean(&self) -> Result<Cleaned, AgentError> {
        let cache = self.cache();
        let mut cleaned = Cleaned::default();
        let Ok(entries) = std::fs::read_dir(&cache) else { return Ok(cleaned) };
        for e in entries.flatten() {
            let path = e.path();
            let bytes = size_of(&path);
            let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            removed.map_err(|error| AgentError::Io { path: path.clone(), error })?;
            cleaned.removed += 1;
            cleaned.freed += bytes;
        }
        Ok(cleaned)
    }

    /// `install --force NAME…`: installs the packages again (their install hook runs again),
    /// even when the same version is installed.
    pub async fn reinstall(
        &self,
        requests: &[String],
        progress: &(dyn Fn(&str, u64, u64) + Send + Sync),
    ) -> Result<UpgradeReport, AgentError> {
        let mut marked = Vec::new();
        for r in requests {
            let name = outpost_protocol::request::PackageRequest::parse(r)
                .map_err(|e| AgentError::BadRequest(e.to_string()))?
                .name;
            if let Some(record) = self.state.get_installed(&name)? {
                // Marked as an install that did not finish: the plan installs it again.
                let mut again = record.clone();
                again.state = outpost_protocol::resolver::InstallState::Init;
                again.message = "reinstall asked".into();
                self.state.put_installed(&name, &again)?;
                marked.push((name, record));
            }
        }
        let result = self.install(requests, progress).await;
        // A package whose install never started (no repository, nothing in the cache, an
        // expired snapshot…) is as it was, not left looking interrupted.
        let mut restored = false;
        for (name, record) in &marked {
            if self.state.get_installed(name)?.is_some_and(|r| r.message == "reinstall asked") {
                self.state.put_installed(name, record)?;
                restored = true;
            }
        }
        if restored && let Some((_, snapshot)) = self.held().ok().flatten() {
            self.resolve(&snapshot, &[]).await?;
        }
        result
    }
}

/// Bytes of the files under `path`.
fn size_of(path: &std::path::Path) -> u64 {
    if path.is_dir() {
        std::fs::read_dir(path).map(|d| d.flatten().map(|e| size_of(&e.path())).sum()).unwrap_or(0)
    } else {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }
}
