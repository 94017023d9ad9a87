//! What the agent's commands answer: the reports of `update`, `upgrade` (and `install`,
//! `remove`, `download-upgrade`), `status` and `repos`. They travel as JSON on the control
//! socket and are printed by the command line.

use std::collections::BTreeMap;

use outpost_protocol::central::Section;
use outpost_protocol::resolver::{HostStatus, InstallState};
use serde::{Deserialize, Serialize};

use super::identity::Machine;
use super::state::{LastUpdate, PlannedStep};

/// What `update` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateReport {
    /// The repository used.
    pub repo: String,
    /// The snapshot's sequence.
    pub sequence: u64,
    /// False when the head was unchanged (nothing more was fetched).
    pub changed: bool,
    /// Steps now planned.
    pub pending: usize,
    /// Host status.
    pub host_status: HostStatus,
    /// Refusals from better repositories that were skipped.
    pub refused: Vec<String>,
    /// The repository used is the first choice (not a fallback while a better one is down or
    /// refused): a daemon follows its pushed heads only then, and keeps checking every
    /// repository otherwise, to come back to the better one when it recovers.
    #[serde(default)]
    pub first_choice: bool,
}

/// What `upgrade` did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UpgradeReport {
    /// Packages installed or upgraded.
    pub installed: Vec<String>,
    /// Packages removed.
    pub removed: Vec<String>,
    /// Packages downloaded only.
    pub downloaded: Vec<String>,
    /// Packages that failed, and why.
    pub failed: Vec<Failure>,
    /// Bytes fetched from repositories.
    pub fetched_bytes: u64,
    /// Bytes fetched from each repository (address).
    pub fetched_by_repo: BTreeMap<String, u64>,
    /// True when no repository answered and the cache was used.
    pub offline: bool,
    /// Steps postponed by the `impacted_process` policy (tried again at the next upgrade).
    #[serde(default)]
    pub postponed: Vec<Failure>,
}

/// A package that failed to download, verify, install or remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The package.
    pub name: String,
    /// Why, in words.
    pub reason: String,
}

/// The result of one package's audit hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLine {
    /// The package.
    pub name: String,
    /// OK, WARNING or ERROR.
    pub result: InstallState,
    /// What the hook said, or why it could not run.
    pub message: String,
}

/// A package line of `status`: what the inventory reports to central, field for field.
pub type PackageLine = outpost_protocol::central::PackageReport;

/// The snapshot the agent holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Its sequence.
    pub sequence: u64,
    /// When the main repository made it (Unix seconds).
    pub created: i64,
    /// When it expires (Unix seconds).
    pub expires: i64,
    /// True once it has expired: nothing new is installed from it.
    pub expired: bool,
}

/// What `status` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    /// The machine.
    pub host: Machine,
    /// OK, NEED-UPGRADE, ERROR.
    pub host_status: HostStatus,
    /// The last update.
    pub last_update: Option<LastUpdate>,
    /// The snapshot held.
    pub sequence: Option<u64>,
    /// The snapshot held, with its dates.
    pub snapshot: Option<SnapshotInfo>,
    /// Packages.
    pub packages: Vec<PackageLine>,
    /// Pending steps, in words (package and version named).
    pub plan: Vec<String>,
    /// Pending steps.
    pub steps: Vec<PlannedStep>,
    /// Problems: resolution errors, an expired snapshot.
    pub errors: Vec<String>,
    /// Bytes of packages fetched from each repository (address), since the state was made.
    pub bytes_by_repo: BTreeMap<String, u64>,
}

/// One candidate repository in `repos`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoLine {
    /// `host:port`.
    pub addr: String,
    /// Why it is a candidate.
    pub origin: String,
    /// Rank (lower is preferred).
    pub rank: u32,
    /// Answered.
    pub healthy: bool,
    /// Round-trip time, ms.
    pub rtt_ms: Option<f64>,
    /// Its snapshot sequence.
    pub sequence: Option<u64>,
    /// Why it did not answer.
    pub error: Option<String>,
    /// The one the agent uses.
    pub chosen: bool,
    /// Until when it is left aside after being too slow or failing (Unix seconds).
    pub probation_until: Option<i64>,
}

/// `repos`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReposReport {
    /// Candidates, best first.
    pub candidates: Vec<RepoLine>,
    /// The DNS SRV lookup error, if any.
    pub dns_error: Option<String>,
}

/// What a command answers, by command: the control socket carries these, and the command line
/// prints them (as text, or the inner report as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Answer {
    /// `update`.
    Update(UpdateReport),
    /// `upgrade`, `download-upgrade`, `install`, `remove`.
    Upgrade(UpgradeReport),
    /// `status`.
    Status(Box<StatusReport>),
    /// `repos`.
    Repos(ReposReport),
    /// `audit`.
    Audit(Vec<AuditLine>),
    /// The inventory sections this host reports.
    Inventory(Vec<Section>),
    /// The agent was opened again from its configuration.
    Reloaded,
    /// `search`.
    Search(Vec<crate::agent::catalogue::Offer>),
    /// `show`.
    Show(Box<crate::agent::catalogue::Offer>),
    /// `list`.
    List(Vec<crate::agent::catalogue::Listed>),
    /// `clean`.
    Cleaned(Cleaned),
}

/// What `clean` freed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cleaned {
    /// Cached packages (and partial downloads) removed.
    pub removed: u64,
    /// Bytes freed.
    pub freed: u64,
}

impl Answer {
    /// The packages that failed, when the command installs or removes.
    pub fn failed(&self) -> &[Failure] {
        match self {
            Self::Upgrade(u) => &u.failed,
            _ => &[],
        }
    }
}
