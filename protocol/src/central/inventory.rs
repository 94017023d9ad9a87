//! What a host reports about itself: its facts, hardware, software, Outpost packages and last
//! update, in sections; and the inventory they make.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::resolver::{HostStatus, InstallState, PackageStatus, StatusReason};

/// Who the host says it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    /// BIOS UUID (or machine-id).
    pub uuid: String,
    /// Fully qualified name.
    pub fqdn: String,
    /// Distinguished name of the host or its OU.
    pub ou: String,
    /// Site.
    pub site: String,
    /// Directory groups.
    pub profiles: Vec<String>,
    /// The agent's version.
    pub agent_version: String,
}

/// DMI data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hardware {
    /// System vendor.
    pub vendor: String,
    /// Product name.
    pub product: String,
    /// Serial number.
    pub serial: String,
    /// BIOS version.
    pub bios: String,
}

/// Operating system.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Os {
    /// Name, like "Debian GNU/Linux".
    pub name: String,
    /// Version, like "12".
    pub version: String,
    /// Kernel release.
    pub kernel: String,
    /// Machine architecture.
    pub arch: String,
}

/// Processor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cpu {
    /// Model name.
    pub model: String,
    /// Logical processors.
    pub threads: u32,
}

/// A mounted file system.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Mount point.
    pub mount: String,
    /// File system type.
    pub fs: String,
    /// Size in bytes.
    pub size: u64,
    /// Free bytes.
    pub free: u64,
}

/// A network interface.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetInterface {
    /// Name.
    pub name: String,
    /// Hardware address.
    pub mac: String,
    /// Addresses with prefix length.
    pub addresses: Vec<String>,
}

/// Installed software, version 1 of [`Section::Software`] (name and version only): read from
/// older agents, turned into [`Program`]s by [`Section::upgraded`].
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Software {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
}

/// One installed program, as the system lists it: a dpkg or rpm package, or an entry of
/// Windows' Uninstall keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Program {
    /// Name (`DisplayName` on Windows).
    pub name: String,
    /// Version.
    pub version: String,
    /// Publisher (Windows), or empty.
    pub publisher: String,
    /// Where it is listed: `dpkg`, `rpm`, `machine-64`, `machine-32` or `user` (Windows'
    /// 64-bit, 32-bit and per-user Uninstall keys).
    pub source: String,
    /// How Windows removes it (`UninstallString`), or empty.
    pub uninstall: String,
    /// Its Windows Installer product code (`{…}`), when it has one.
    pub product_code: Option<String>,
}

impl From<Software> for Program {
    fn from(s: Software) -> Self {
        Self { name: s.name, version: s.version, ..Self::default() }
    }
}

/// An Outpost package's state on the host, as version 1 of [`Section::Packages`] sent it
/// (statuses as text). Read from older agents and turned into a [`PackageReport`] on arrival.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageState {
    /// Name.
    pub name: String,
    /// OK, NEED-INSTALL, NEED-UPGRADE, NEED-REMOVE, ERROR.
    pub status: String,
    /// Installed version.
    pub installed: Option<String>,
    /// Version after the plan.
    pub target: Option<String>,
    /// Why (errors, removals).
    pub reason: Option<String>,
    /// The end of the last hook output.
    pub output: Option<String>,
}

/// An Outpost package's state on the host, typed ([`Section::PackagesV2`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageReport {
    /// Name.
    pub name: String,
    /// Its status.
    pub status: PackageStatus,
    /// Installed version.
    pub installed: Option<String>,
    /// Version after the plan.
    pub target: Option<String>,
    /// The local install state (WAPT's `install_status`).
    pub state: Option<InstallState>,
    /// Why, in words (errors, removals, failed installs).
    pub reason: Option<String>,
    /// Why, as resolution decided it (when the status comes from the plan).
    pub cause: Option<StatusReason>,
    /// The end of the last hook output.
    pub output: Option<String>,
}

impl PackageState {
    /// The typed report of a version-1 line: a status no version knows is an ERROR, its
    /// reason kept in words.
    pub fn upgraded(self) -> PackageReport {
        let status = PackageStatus::parse(&self.status);
        let reason = match (status, self.reason) {
            (Some(_), reason) => reason,
            (None, reason) => Some(format!(
                "reported status {:?}{}",
                self.status,
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            )),
        };
        PackageReport {
            name: self.name,
            status: status.unwrap_or(PackageStatus::Error),
            installed: self.installed,
            target: self.target,
            state: None,
            cause: None,
            reason,
            output: self.output,
        }
    }
}

/// The last update's result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateResult {
    /// When (Unix seconds).
    pub at: i64,
    /// Whether it worked.
    pub ok: bool,
    /// What happened.
    pub message: String,
    /// The repository used.
    pub repo: Option<String>,
}

/// The snapshot an agent holds (its freshness: nothing new is installed from an expired one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotState {
    /// Its sequence.
    pub sequence: u64,
    /// When it was made (Unix seconds).
    pub created: i64,
    /// When it expires (Unix seconds).
    pub expires: i64,
    /// True when it had expired at the time of the report.
    pub expired: bool,
}

/// One section of an inventory. Only ever add variants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Section {
    /// Identity and placement.
    Host(HostFacts),
    /// DMI.
    Hardware(Hardware),
    /// Operating system.
    Os(Os),
    /// Processor.
    Cpu(Cpu),
    /// Memory in bytes.
    Memory(u64),
    /// File systems.
    Disks(Vec<Disk>),
    /// Interfaces.
    Network(Vec<NetInterface>),
    /// Installed software, version 1: read from older agents, turned into
    /// [`Section::Programs`] by [`Section::upgraded`].
    #[serde(rename = "SoftwareV1")]
    Software(Vec<Software>),
    /// Outpost packages and the host's status, version 1 (statuses as text): read from older
    /// agents, turned into [`Section::PackagesV2`] by [`Section::upgraded`]. (Names matter in
    /// JSON only, where the current version keeps the name readers know.)
    #[serde(rename = "PackagesV1")]
    Packages { host_status: String, packages: Vec<PackageState> },
    /// The last update.
    LastUpdate(Option<UpdateResult>),
    /// The snapshot held.
    Snapshot(Option<SnapshotState>),
    /// Outpost packages and the host's status, typed.
    #[serde(rename = "Packages")]
    PackagesV2 { host_status: HostStatus, packages: Vec<PackageReport> },
    /// Bytes of packages fetched from each repository (its address) since the agent's state
    /// was made: which repository serves this host, and how much the main had to send.
    Transfers(BTreeMap<String, u64>),
    /// The last audit of each installed package that was audited.
    Audits(Vec<AuditResult>),
    /// Installed software with where it is listed and how it is removed.
    #[serde(rename = "Software")]
    Programs(Vec<Program>),
    /// What could not be read on this machine, and why (a missing source is an empty section
    /// and a note here, never a failed report).
    Notes(Vec<String>),
}

/// A package's last audit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditResult {
    /// The package.
    pub name: String,
    /// OK, WARNING or ERROR.
    pub result: InstallState,
    /// What the hook said (its summary and the end of its output).
    pub message: String,
    /// When it ran (Unix seconds).
    pub at: i64,
}

/// Which section a [`Section`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SectionKind {
    /// [`Section::Host`].
    Host,
    /// [`Section::Hardware`].
    Hardware,
    /// [`Section::Os`].
    Os,
    /// [`Section::Cpu`].
    Cpu,
    /// [`Section::Memory`].
    Memory,
    /// [`Section::Disks`].
    Disks,
    /// [`Section::Network`].
    Network,
    /// [`Section::Software`].
    Software,
    /// [`Section::Packages`].
    Packages,
    /// [`Section::LastUpdate`].
    LastUpdate,
    /// [`Section::Snapshot`].
    Snapshot,
    /// [`Section::Transfers`].
    Transfers,
    /// [`Section::Audits`].
    Audits,
    /// [`Section::Notes`].
    Notes,
}

impl Section {
    /// Which section it is.
    pub fn kind(&self) -> SectionKind {
        match self {
            Self::Host(_) => SectionKind::Host,
            Self::Hardware(_) => SectionKind::Hardware,
            Self::Os(_) => SectionKind::Os,
            Self::Cpu(_) => SectionKind::Cpu,
            Self::Memory(_) => SectionKind::Memory,
            Self::Disks(_) => SectionKind::Disks,
            Self::Network(_) => SectionKind::Network,
            Self::Software(_) | Self::Programs(_) => SectionKind::Software,
            Self::Packages { .. } | Self::PackagesV2 { .. } => SectionKind::Packages,
            Self::LastUpdate(_) => SectionKind::LastUpdate,
            Self::Snapshot(_) => SectionKind::Snapshot,
            Self::Transfers(_) => SectionKind::Transfers,
            Self::Audits(_) => SectionKind::Audits,
            Self::Notes(_) => SectionKind::Notes,
        }
    }
}

impl Section {
    /// The section in its current version (a version-1 packages section typed; a host
    /// status no version knows is ERROR).
    pub fn upgraded(self) -> Self {
        match self {
            Self::Packages { host_status, packages } => Self::PackagesV2 {
                host_status: HostStatus::parse(&host_status).unwrap_or(HostStatus::Error),
                packages: packages.into_iter().map(PackageState::upgraded).collect(),
            },
            Self::Software(list) => Self::Programs(list.into_iter().map(Program::from).collect()),
            other => other,
        }
    }
}

/// A host's whole inventory: at most one section of each kind, each in its current version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "InventoryWire")]
pub struct Inventory {
    /// Sections by kind.
    pub sections: BTreeMap<SectionKind, Section>,
}

/// An inventory as decoded, before its sections are brought to their current version.
#[derive(Deserialize)]
struct InventoryWire {
    sections: BTreeMap<SectionKind, Section>,
}

impl From<InventoryWire> for Inventory {
    fn from(wire: InventoryWire) -> Self {
        Self::from_sections(wire.sections.into_values())
    }
}

impl Inventory {
    /// An inventory of these sections (a later one of a kind replaces an earlier one).
    pub fn from_sections(sections: impl IntoIterator<Item = Section>) -> Self {
        let mut inv = Self::default();
        inv.apply(sections);
        inv
    }

    /// Replaces the sections given (brought to their current version).
    pub fn apply(&mut self, sections: impl IntoIterator<Item = Section>) {
        for s in sections {
            self.sections.insert(s.kind(), s.upgraded());
        }
    }

    /// The sections of `self` that differ from (or are missing in) `old`.
    pub fn changed_since(&self, old: &Inventory) -> Vec<Section> {
        self.sections.iter().filter(|(k, s)| old.sections.get(k) != Some(s)).map(|(_, s)| s.clone()).collect()
    }

    /// Identity and placement, if reported.
    pub fn host(&self) -> Option<&HostFacts> {
        match self.sections.get(&SectionKind::Host) {
            Some(Section::Host(h)) => Some(h),
            _ => None,
        }
    }

    /// The host's status, if reported.
    pub fn host_status(&self) -> Option<HostStatus> {
        match self.sections.get(&SectionKind::Packages) {
            Some(Section::PackagesV2 { host_status, .. }) => Some(*host_status),
            _ => None,
        }
    }

    /// Outpost packages.
    pub fn packages(&self) -> &[PackageReport] {
        match self.sections.get(&SectionKind::Packages) {
            Some(Section::PackagesV2 { packages, .. }) => packages,
            _ => &[],
        }
    }

    /// The snapshot the host holds, if reported.
    pub fn snapshot(&self) -> Option<&SnapshotState> {
        match self.sections.get(&SectionKind::Snapshot) {
            Some(Section::Snapshot(s)) => s.as_ref(),
            _ => None,
        }
    }

    /// Installed software.
    pub fn software(&self) -> &[Program] {
        match self.sections.get(&SectionKind::Software) {
            Some(Section::Programs(s)) => s,
            _ => &[],
        }
    }

    /// What the host could not read, and why.
    pub fn notes(&self) -> &[String] {
        match self.sections.get(&SectionKind::Notes) {
            Some(Section::Notes(n)) => n,
            _ => &[],
        }
    }

    /// The last audits, if reported.
    pub fn audits(&self) -> &[AuditResult] {
        match self.sections.get(&SectionKind::Audits) {
            Some(Section::Audits(a)) => a,
            _ => &[],
        }
    }

    /// The worst last audit result (ERROR over WARNING over OK), if any package was audited.
    pub fn worst_audit(&self) -> Option<InstallState> {
        let rank = |s: InstallState| match s {
            InstallState::Ok => 0,
            InstallState::Warning => 1,
            _ => 2,
        };
        self.audits().iter().map(|a| a.result).max_by_key(|s| rank(*s))
    }

    /// Bytes fetched from each repository, if reported.
    pub fn transfers(&self) -> Option<&BTreeMap<String, u64>> {
        match self.sections.get(&SectionKind::Transfers) {
            Some(Section::Transfers(t)) => Some(t),
            _ => None,
        }
    }
}
