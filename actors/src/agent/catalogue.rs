//! What the repositories offer and what is installed, as `agent search`, `agent show` and
//! `agent list` say it (wapt-get's `search`, `show` and `list`). Pure: fed the held snapshot's
//! entries, what this host accepts and its installed records.

use std::collections::BTreeMap;

use outpost_protocol::entry::{HostCapabilities, PackageEntry, Section};
use outpost_protocol::resolver::{InstallState, Origin};
use serde::{Deserialize, Serialize};

/// One version a repository offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferedVersion {
    /// Its version.
    pub version: String,
    /// Its maturity.
    pub maturity: String,
    /// Its architectures.
    pub architectures: Vec<String>,
    /// Its locales (empty: any).
    pub locales: Vec<String>,
    /// True when this host would take it.
    pub fits: bool,
    /// Why this host would not take it.
    pub why_not: Option<String>,
    /// Its control fields (`agent show` only).
    pub control: Vec<(String, String)>,
}

/// A package the repositories offer, with the version this host would get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// Its name.
    pub name: String,
    /// Its description (of the newest version).
    pub description: String,
    /// Its section.
    pub section: String,
    /// The version this host would get: the one the resolver prefers among those that fit.
    pub chosen: Option<String>,
    /// The version installed here.
    pub installed: Option<String>,
    /// Every version offered, newest first.
    pub versions: Vec<OfferedVersion>,
}

/// An installed package, as `agent list` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// How its last install ended.
    pub state: InstallState,
    /// Why it is here: `explicit` (asked for here), `host`, `unit`, `profile`, `group` (a
    /// package of that kind, or needed by one), or `dependency`.
    pub origin: String,
    /// Its description.
    pub description: String,
    /// When it was first installed (Unix seconds).
    pub installed_at: i64,
    /// The last audit's result.
    pub audit: Option<InstallState>,
}

/// The offers whose name or description contains `text` (any case; empty: all), by name.
pub fn search(
    entries: &[PackageEntry],
    host: &HostCapabilities,
    installed: &BTreeMap<String, String>,
    text: &str,
) -> Vec<Offer> {
    let text = text.to_lowercase();
    let mut by_name: BTreeMap<&str, Vec<&PackageEntry>> = BTreeMap::new();
    for e in entries {
        by_name.entry(e.name.as_str()).or_default().push(e);
    }
    by_name
        .into_iter()
        .filter(|(name, versions)| {
            text.is_empty()
                || name.to_lowercase().contains(&text)
                || versions.iter().any(|e| e.control.get_or_empty("description").to_lowercase().contains(&text))
        })
        .map(|(name, versions)| offer(name, &versions, host, installed.get(name), false))
        .collect()
}

/// Everything about the package `name`, every version with its fields; `None` when no
/// repository offers it.
pub fn show(
    entries: &[PackageEntry],
    host: &HostCapabilities,
    installed: &BTreeMap<String, String>,
    name: &str,
) -> Option<Offer> {
    let versions: Vec<&PackageEntry> = entries.iter().filter(|e| e.name.eq_ignore_ascii_case(name)).collect();
    let first = versions.first()?;
    Some(offer(&first.name.clone(), &versions, host, installed.get(&first.name), true))
}

fn offer(
    name: &str,
    versions: &[&PackageEntry],
    host: &HostCapabilities,
    installed: Option<&String>,
    fields: bool,
) -> Offer {
    let mut sorted: Vec<&PackageEntry> = versions.to_vec();
    sorted.sort_by(|a, b| b.preference(a, host));
    let chosen = sorted.iter().find(|e| e.mismatch(host).is_none()).map(|e| e.version.to_string());
    let newest = sorted.first();
    Offer {
        name: name.to_string(),
        description: newest.map(|e| e.control.get_or_empty("description").to_string()).unwrap_or_default(),
        section: newest.map(|e| e.section.to_string()).unwrap_or_default(),
        chosen,
        installed: installed.cloned(),
        versions: sorted
            .iter()
            .map(|e| {
                let why_not = e.mismatch(host).map(|m| m.to_string());
                OfferedVersion {
                    version: e.version.to_string(),
                    maturity: e.effective_maturity().to_string(),
                    architectures: e.architectures.clone(),
                    locales: e.locales.clone(),
                    fits: why_not.is_none(),
                    why_not,
                    control: if fields {
                        e.control.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect(),
    }
}

/// An installed package's name, entry, state, origin and times, for [`list`].
#[derive(Debug, Clone)]
pub struct InstalledLine<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its entry.
    pub entry: PackageEntry,
    /// Its state.
    pub state: InstallState,
    /// Why it was installed.
    pub origin: Origin,
    /// When.
    pub installed_at: i64,
    /// The last audit.
    pub audit: Option<InstallState>,
}

/// The installed packages with why each is here: asked for here; a host, unit, profile or
/// group package itself, or needed by one directly; otherwise a dependency.
pub fn list(installed: &[InstalledLine<'_>]) -> Vec<Listed> {
    let kind = |s: &Section| match s {
        Section::Host => Some("host"),
        Section::Unit => Some("unit"),
        Section::Profile => Some("profile"),
        Section::Group => Some("group"),
        _ => None,
    };
    installed
        .iter()
        .map(|p| {
            let origin = if p.origin == Origin::Explicit {
                "explicit"
            } else if let Some(k) = kind(&p.entry.section) {
                k
            } else {
                // The first placing package (host before unit before profile before group)
                // that asks for it directly.
                ["host", "unit", "profile", "group"]
                    .into_iter()
                    .find(|k| {
                        installed.iter().any(|q| {
                            kind(&q.entry.section) == Some(*k)
                                && q.entry.depends.iter().any(|d| d.name.eq_ignore_ascii_case(p.name))
                        })
                    })
                    .unwrap_or("dependency")
            };
            Listed {
                name: p.name.to_string(),
                version: p.entry.version.to_string(),
                state: p.state,
                origin: origin.to_string(),
                description: p.entry.control.get_or_empty("description").to_string(),
                installed_at: p.installed_at,
                audit: p.audit,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
