//! What the console is answered: hosts, packages, repositories, actions, waiting hosts.

use super::Inventory;
use crate::resolver::HostStatus;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A host's line in `console hosts`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSummary {
    /// UUID.
    pub uuid: String,
    /// FQDN.
    pub fqdn: String,
    /// OU distinguished name.
    pub ou: String,
    /// Site.
    pub site: String,
    /// OK, NEED-UPGRADE, ERROR… (UNKNOWN before any report).
    pub status: String,
    /// Last report (Unix seconds).
    pub last_seen: i64,
    /// Sequence of the last report applied.
    pub sequence: u64,
    /// Outpost packages.
    pub packages: u32,
    /// True when its certificate is revoked.
    pub revoked: bool,
    /// True when it holds a connection to central now.
    pub online: bool,
    /// SHA-256 fingerprint of its certificate: one certificate, one host.
    pub fingerprint: String,
    /// Set when another certificate claims the same UUID or FQDN (a cloned machine, a second
    /// enrollment), or when this certificate is used by two machines at once: what clashes.
    pub clash: Option<String>,
}

/// What `console hosts` shows as the status of a host that has not reported its packages yet.
pub const UNKNOWN_STATUS: &str = "UNKNOWN";

/// The text of a host status in console answers ([`UNKNOWN_STATUS`] before any report).
pub fn status_text(status: Option<HostStatus>) -> &'static str {
    status.map_or(UNKNOWN_STATUS, HostStatus::as_str)
}

/// The host status a filter names, case-insensitively: `Some(None)` for [`UNKNOWN_STATUS`],
/// `None` when no status has that name.
pub fn parse_status(text: &str) -> Option<Option<HostStatus>> {
    if text.eq_ignore_ascii_case(UNKNOWN_STATUS) { Some(None) } else { HostStatus::parse(text).map(Some) }
}

/// One result of an action on a host, in `console host NAME`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostActionResult {
    /// The action's id (hex).
    pub id: String,
    /// What it did (install, upgrade…).
    pub kind: String,
    /// True when it succeeded.
    pub ok: bool,
    /// What the agent said.
    pub message: String,
}

/// `console host NAME`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostDetail {
    /// The summary.
    pub summary: HostSummary,
    /// The inventory.
    pub inventory: Inventory,
    /// Recent action results for this host.
    pub actions: Vec<HostActionResult>,
}

/// A report central applied, as a host's page lists the recent ones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportSeen {
    /// Its sequence number.
    pub sequence: u64,
    /// When it was applied (Unix seconds).
    pub at: i64,
    /// The sections it carried.
    pub sections: Vec<super::SectionKind>,
}

/// `console host NAME` with the host's recent reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostDetailV2 {
    /// What [`HostDetail`] says.
    pub detail: HostDetail,
    /// The reports applied since central started, newest first (at most ten).
    pub reports: Vec<ReportSeen>,
}

/// Which hosts `console hosts` lists (all filters must hold).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostQuery {
    /// Host status.
    pub status: Option<String>,
    /// Has this Outpost package (any status).
    pub package: Option<String>,
    /// Has this software installed (dpkg/rpm name, case-insensitive).
    pub software: Option<String>,
    /// In this OU.
    pub ou: Option<String>,
    /// At this site.
    pub site: Option<String>,
    /// At most this many lines (0: no limit).
    pub limit: u32,
}

impl HostQuery {
    /// The same filters as a [`super::HostFilter`]; `None` when the status names no status (no
    /// host matches).
    pub fn filter(&self) -> Option<super::HostFilter> {
        let status = match self.status.as_deref().map(super::StatusFilter::parse) {
            Some(None) => return None,
            Some(s) => s,
            None => None,
        };
        Some(super::HostFilter {
            status,
            package: self.package.clone(),
            software: self.software.clone(),
            ou: self.ou.clone(),
            site: self.site.clone(),
            name: None,
        })
    }
}

/// A package's line in `console packages`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageSummary {
    /// Name.
    pub name: String,
    /// Hosts that have it, by status.
    pub by_status: BTreeMap<String, u32>,
    /// Hosts by installed version.
    pub versions: BTreeMap<String, u32>,
}

/// A repository's line in `console repos`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoLine {
    /// Address.
    pub addr: String,
    /// Name.
    pub name: String,
    /// main or edge.
    pub role: String,
    /// Snapshot sequence served.
    pub sequence: Option<u64>,
    /// Snapshots behind the main.
    pub lag: Option<u64>,
    /// Its upstream.
    pub upstream: Option<String>,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// A repository as `console repos` and the web console show it: its line, and what it says of
/// its content, schedule and service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoView {
    /// Address, name, role, snapshot, lag, upstream, error.
    pub line: RepoLine,
    /// `immediate` or `on-demand` (edges).
    pub fill: String,
    /// Packages in the snapshot served.
    pub packages: u64,
    /// Bytes of files stored.
    pub stored_bytes: u64,
    /// Sync windows (empty: always).
    pub windows: Vec<String>,
    /// Their time zone.
    pub time_zone: String,
    /// Whether a window is open now (edges with windows).
    pub window_open: Option<bool>,
    /// When the windows next open or close, in their local time.
    pub window_changes: Option<String>,
    /// A newer snapshot waits for the next window.
    pub waiting_for_window: bool,
    /// When its last sync succeeded (edges; Unix seconds).
    pub last_sync: Option<i64>,
    /// Bytes it sent to clients since it started.
    pub served_bytes: u64,
}

/// An action's line in `console actions`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionLine {
    /// Nonce, hex.
    pub id: String,
    /// update, upgrade, install, remove.
    pub kind: String,
    /// Packages of install/remove.
    pub packages: Vec<String>,
    /// The signer.
    pub issuer: String,
    /// Targets as given.
    pub targets: String,
    /// Expiry.
    pub expires: i64,
    /// Results, as they came.
    pub results: Vec<ActionResultLine>,
    /// Hosts that have not answered yet.
    pub pending: Vec<String>,
}

/// One host's result for an action.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionResultLine {
    /// The host (FQDN, or certificate name).
    pub host: String,
    /// True when it succeeded.
    pub ok: bool,
    /// What the agent said.
    pub message: String,
    /// Seconds from relay to result.
    pub seconds: f64,
}

/// A host waiting for enrollment approval.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingHost {
    /// Its UUID.
    pub uuid: String,
    /// Its FQDN.
    pub fqdn: String,
    /// Since when (Unix seconds).
    pub since: i64,
    /// Why it waits: no token, or the certificates that already claim its name.
    pub reason: String,
}

/// A report central can run (`outpost console report`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportInfo {
    /// Its name.
    pub name: String,
    /// What it shows.
    pub description: String,
    /// Built into Outpost (otherwise saved by an administrator).
    pub builtin: bool,
    /// Its parameters with their defaults (`--param NAME=VALUE`).
    pub params: Vec<(String, String)>,
    /// Who saved it (saved reports).
    pub author: String,
}

/// Rows of a report: each value as text (`None` for SQL NULL).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// The rows.
    pub rows: Vec<Vec<Option<String>>>,
    /// True when rows were left out (over the row limit).
    pub truncated: bool,
}
