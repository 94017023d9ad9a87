//! The central server's protocol: enrollment, signed inventory reports (a full report, then
//! only the sections that changed), signed administrator actions and agent configurations, and
//! the console's queries. Every message is a versioned enum encoded with postcard; signed
//! documents carry their own bytes so that what was signed is what is checked.

use std::collections::BTreeMap;

use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::pki::{CertInfo, ChainError, PrivateKey, Purpose, Right, Role, TrustStore};
use crate::signing::{self, Domain, SignatureError};

/// ALPN of the central protocol (agents and consoles, with certificates).
pub const ALPN_CENTRAL: &[u8] = b"outpost-central/1";
/// ALPN of enrollment (agents without a certificate yet).
pub const ALPN_ENROLL: &[u8] = b"outpost-enroll/1";
/// Largest signed report central takes.
pub const MAX_REPORT_BYTES: usize = 1024 * 1024;
/// Largest framed central message (console answers may list many hosts).
pub const MAX_CENTRAL_FRAME: usize = 64 * 1024 * 1024;
/// How far in the future a signed document's creation time may be (clock skew).
pub const SKEW_SECS: i64 = 300;
/// Longest validity of an action.
pub const MAX_ACTION_SECS: i64 = 30 * 86_400;

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

/// Installed software (from dpkg or rpm).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Software {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
}

/// An Outpost package's state on the host.
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
    /// Installed software.
    Software(Vec<Software>),
    /// Outpost packages and the host's status.
    Packages { host_status: String, packages: Vec<PackageState> },
    /// The last update.
    LastUpdate(Option<UpdateResult>),
    /// The snapshot held.
    Snapshot(Option<SnapshotState>),
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
            Self::Software(_) => SectionKind::Software,
            Self::Packages { .. } => SectionKind::Packages,
            Self::LastUpdate(_) => SectionKind::LastUpdate,
            Self::Snapshot(_) => SectionKind::Snapshot,
        }
    }
}

/// A host's whole inventory: at most one section of each kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Sections by kind.
    pub sections: BTreeMap<SectionKind, Section>,
}

impl Inventory {
    /// An inventory of these sections (a later one of a kind replaces an earlier one).
    pub fn from_sections(sections: impl IntoIterator<Item = Section>) -> Self {
        let mut inv = Self::default();
        inv.apply(sections);
        inv
    }

    /// Replaces the sections given.
    pub fn apply(&mut self, sections: impl IntoIterator<Item = Section>) {
        for s in sections {
            self.sections.insert(s.kind(), s);
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

    /// The host's status (OK, NEED-UPGRADE, ERROR…), if reported.
    pub fn host_status(&self) -> Option<&str> {
        match self.sections.get(&SectionKind::Packages) {
            Some(Section::Packages { host_status, .. }) => Some(host_status),
            _ => None,
        }
    }

    /// Outpost packages.
    pub fn packages(&self) -> &[PackageState] {
        match self.sections.get(&SectionKind::Packages) {
            Some(Section::Packages { packages, .. }) => packages,
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
    pub fn software(&self) -> &[Software] {
        match self.sections.get(&SectionKind::Software) {
            Some(Section::Software(s)) => s,
            _ => &[],
        }
    }
}

/// An inventory report: the whole inventory (`full`) or the sections that changed since the
/// previous report, which had `sequence - 1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The host's UUID.
    pub host: String,
    /// One more than the previous report's.
    pub sequence: u64,
    /// True for a whole inventory.
    pub full: bool,
    /// When it was made (Unix seconds).
    pub created: i64,
    /// The sections.
    pub sections: Vec<Section>,
}

#[derive(Serialize, Deserialize)]
enum ReportWire {
    V1(Report),
}

/// A report signed by the host's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReport {
    /// The encoded report.
    pub report: Vec<u8>,
    /// Ed25519 signature by the host key.
    pub signature: Vec<u8>,
}

/// Why a document is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CentralError {
    /// Over the size limit.
    #[error("{what} of {len} bytes is over the {limit}-byte limit")]
    TooLarge { what: &'static str, len: usize, limit: usize },
    /// Not decodable.
    #[error("{what} cannot be decoded: {reason}")]
    Decode { what: &'static str, reason: String },
    /// The signature does not verify.
    #[error("{what}: bad signature: {error}")]
    Signature { what: &'static str, error: SignatureError },
    /// The signer's certificate is refused.
    #[error("{what}: signer refused: {error}")]
    Signer { what: &'static str, error: ChainError },
    /// Past its expiry.
    #[error("{what} expired at {expires} (now {now})")]
    Expired { what: &'static str, expires: i64, now: i64 },
    /// Created in the future, or valid for too long.
    #[error("{what}: {reason}")]
    Invalid { what: &'static str, reason: String },
}

impl CentralError {
    /// A short reason for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "oversized",
            Self::Decode { .. } => "malformed",
            Self::Signature { .. } => "signature",
            Self::Signer { .. } => "signer",
            Self::Expired { .. } => "expired",
            Self::Invalid { .. } => "invalid",
        }
    }
}

impl Report {
    /// Encodes and signs the report with the host's key.
    pub fn sign(&self, key: &PrivateKey) -> SignedReport {
        let report = postcard::to_stdvec(&ReportWire::V1(self.clone())).expect("encoding to a Vec cannot fail");
        let signature = signing::sign(key, Domain::InventoryReport, &report).to_vec();
        SignedReport { report, signature }
    }
}

impl SignedReport {
    /// Checks the size and the signature by `public_key` (the host certificate's key), then
    /// decodes.
    pub fn verify(&self, public_key: &[u8]) -> Result<Report, CentralError> {
        let what = "inventory report";
        if self.report.len() > MAX_REPORT_BYTES {
            return Err(CentralError::TooLarge { what, len: self.report.len(), limit: MAX_REPORT_BYTES });
        }
        signing::verify(public_key, Domain::InventoryReport, &self.report, &self.signature)
            .map_err(|source| CentralError::Signature { what, error: source })?;
        let ReportWire::V1(r) =
            postcard::from_bytes(&self.report).map_err(|e| CentralError::Decode { what, reason: e.to_string() })?;
        Ok(r)
    }
}

/// What central does with a verified report, given the sequence of the last one it applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportDecision {
    /// It follows: apply it.
    Apply,
    /// A gap, or a delta with nothing to apply it to: ask for a full report.
    FullNeeded,
    /// Not newer than what was applied: a replay (or a duplicate); nothing is stored.
    Replay,
}

/// Decides what to do with `report` when the last applied report had `last`.
pub fn decide(last: Option<u64>, report: &Report) -> ReportDecision {
    match (last, report.full) {
        (Some(l), _) if report.sequence <= l => ReportDecision::Replay,
        (_, true) => ReportDecision::Apply,
        (Some(l), false) if report.sequence == l + 1 => ReportDecision::Apply,
        _ => ReportDecision::FullNeeded,
    }
}

/// Which hosts an action or configuration is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Targets {
    /// Hosts by UUID or FQDN.
    Hosts(Vec<String>),
    /// Every host in this OU (its DN ends with it).
    Ou(String),
    /// Every host.
    All,
}

/// What a host is known by: its certificate first (one certificate, one host), then the names
/// it reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostNames<'a> {
    /// SHA-256 fingerprint of its certificate (lower-case hex).
    pub fingerprint: &'a str,
    /// Its UUID.
    pub uuid: &'a str,
    /// Its FQDN.
    pub fqdn: &'a str,
    /// Its DN.
    pub ou: &'a str,
}

/// The certificate fingerprint a host name gives, when it is one: `sha256:<hex>` or the 64 hex
/// digits alone.
pub fn fingerprint_name(name: &str) -> Option<String> {
    let hex = name.strip_prefix("sha256:").unwrap_or(name).to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

impl Targets {
    /// True when host `h` is a target: by certificate fingerprint, UUID or FQDN, by OU, or all.
    pub fn includes(&self, h: &HostNames<'_>) -> bool {
        let (uuid, fqdn, ou) = (h.uuid, h.fqdn, h.ou);
        match self {
            Self::All => true,
            Self::Hosts(names) => names.iter().any(|n| {
                n.eq_ignore_ascii_case(uuid)
                    || n.eq_ignore_ascii_case(fqdn)
                    || fingerprint_name(n).is_some_and(|fp| !h.fingerprint.is_empty() && fp == h.fingerprint)
            }),
            Self::Ou(dn) => {
                let norm = |s: &str| s.to_lowercase().replace(' ', "");
                let (ou, dn) = (norm(ou), norm(dn));
                !dn.is_empty() && (ou == dn || ou.ends_with(&format!(",{dn}")))
            }
        }
    }

    /// As written on the command line.
    pub fn describe(&self) -> String {
        match self {
            Self::All => "all hosts".into(),
            Self::Hosts(h) => h.join(","),
            Self::Ou(dn) => format!("OU {dn}"),
        }
    }
}

/// What an action asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionKind {
    /// `agent update`.
    Update,
    /// `agent upgrade`.
    Upgrade,
    /// `agent install`.
    Install(Vec<String>),
    /// `agent remove`.
    Remove(Vec<String>),
}

impl ActionKind {
    /// A short name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Update => "update",
            Self::Upgrade => "upgrade",
            Self::Install(_) => "install",
            Self::Remove(_) => "remove",
        }
    }
}

/// An administrator's action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// Random; agents remember it until the expiry and refuse it again.
    pub nonce: [u8; 16],
    /// Who it is for.
    pub targets: Targets,
    /// What to do.
    pub kind: ActionKind,
    /// When it was signed (Unix seconds).
    pub created: i64,
    /// When it stops being valid.
    pub expires: i64,
}

#[derive(Serialize, Deserialize)]
enum ActionWire {
    V1(Action),
}

/// A signed document with its signer's chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    /// The encoded document.
    pub body: Vec<u8>,
    /// Ed25519 signature.
    pub signature: Vec<u8>,
    /// The signer's certificate first (DER).
    pub chain: Vec<Vec<u8>>,
}

impl Signed {
    fn make(body: Vec<u8>, domain: Domain, key: &PrivateKey, chain: &[CertificateDer<'_>]) -> Self {
        let signature = signing::sign(key, domain, &body).to_vec();
        Self { body, signature, chain: chain.iter().map(|c| c.to_vec()).collect() }
    }

    fn check(
        &self,
        what: &'static str,
        domain: Domain,
        right: Right,
        trust: &TrustStore,
        now: i64,
    ) -> Result<CertInfo, CentralError> {
        let chain: Vec<CertificateDer<'_>> = self.chain.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
        let info = trust
            .verify(&chain, now, &[Purpose::Role(Role::Admin), Purpose::Right(right)])
            .map_err(|source| CentralError::Signer { what, error: source })?;
        signing::verify(&info.public_key, domain, &self.body, &self.signature)
            .map_err(|source| CentralError::Signature { what, error: source })?;
        Ok(info)
    }

    /// BLAKE3 of the body: the document's identity.
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&self.body).as_bytes()
    }
}

impl Action {
    /// Signs the action with an admin's key and chain.
    pub fn sign(&self, key: &PrivateKey, chain: &[CertificateDer<'_>]) -> Signed {
        let body = postcard::to_stdvec(&ActionWire::V1(self.clone())).expect("encoding to a Vec cannot fail");
        Signed::make(body, Domain::Action, key, chain)
    }

    /// Checks a signed action: an admin with the `act` right signed it, it is not expired, not
    /// created in the future, and valid for at most [`MAX_ACTION_SECS`].
    pub fn verify(signed: &Signed, trust: &TrustStore, now: i64) -> Result<(Action, CertInfo), CentralError> {
        let what = "action";
        let info = signed.check(what, Domain::Action, Right::Act, trust, now)?;
        let ActionWire::V1(a) =
            postcard::from_bytes(&signed.body).map_err(|e| CentralError::Decode { what, reason: e.to_string() })?;
        if a.expires <= now {
            return Err(CentralError::Expired { what, expires: a.expires, now });
        }
        if a.created > now + SKEW_SECS {
            return Err(CentralError::Invalid { what, reason: "created in the future".into() });
        }
        if a.expires - a.created > MAX_ACTION_SECS {
            return Err(CentralError::Invalid { what, reason: "valid for more than 30 days".into() });
        }
        Ok((a, info))
    }
}

/// Agent settings distributed by central: the TOML of a `config` package's `agent.toml`
/// (repository rules and settings), for the targets, signed by an admin with `modify`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSettingsDoc {
    /// Grows with each new document; agents ignore older ones.
    pub sequence: u64,
    /// Who it is for.
    pub targets: Targets,
    /// The settings (same fields as a `config` package's `agent.toml`).
    pub toml: String,
    /// When it was signed.
    pub created: i64,
}

#[derive(Serialize, Deserialize)]
enum SettingsWire {
    V1(AgentSettingsDoc),
}

impl AgentSettingsDoc {
    /// Signs with an admin's key and chain.
    pub fn sign(&self, key: &PrivateKey, chain: &[CertificateDer<'_>]) -> Signed {
        let body = postcard::to_stdvec(&SettingsWire::V1(self.clone())).expect("encoding to a Vec cannot fail");
        Signed::make(body, Domain::AgentSettings, key, chain)
    }

    /// Checks that an admin with the `modify` right signed it.
    pub fn verify(signed: &Signed, trust: &TrustStore, now: i64) -> Result<(AgentSettingsDoc, CertInfo), CentralError> {
        let what = "agent settings";
        let info = signed.check(what, Domain::AgentSettings, Right::Modify, trust, now)?;
        let SettingsWire::V1(d) =
            postcard::from_bytes(&signed.body).map_err(|e| CentralError::Decode { what, reason: e.to_string() })?;
        if d.created > now + SKEW_SECS {
            return Err(CentralError::Invalid { what, reason: "created in the future".into() });
        }
        Ok((d, info))
    }
}

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

/// `console host NAME`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostDetail {
    /// The summary.
    pub summary: HostSummary,
    /// The inventory.
    pub inventory: Inventory,
    /// Recent action results for this host: action id (hex), kind, ok, message.
    pub actions: Vec<(String, String, bool, String)>,
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
    /// Results: host, ok, message, seconds from relay to result.
    pub results: Vec<(String, bool, String, f64)>,
    /// Hosts that have not answered yet.
    pub pending: Vec<String>,
}

/// A request to central. Only ever add variants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CentralRequest {
    /// Enrollment (on [`ALPN_ENROLL`]): a PKCS#10 request and a token, or none to wait for
    /// approval.
    Enroll { request: Vec<u8>, token: Option<String>, uuid: String, fqdn: String },
    /// An agent's inventory report.
    Report(SignedReport),
    /// An agent keeps this stream: central sends [`CentralResponse::Action`] frames on it.
    Listen,
    /// An agent's result for an action.
    ActionResult { nonce: [u8; 16], ok: bool, message: String },
    /// The signed agent settings that apply to the asking host, if any.
    Settings,
    /// Console: hosts.
    Hosts(HostQuery),
    /// Console: one host by UUID or FQDN.
    Host(String),
    /// Console: packages across the fleet.
    Packages,
    /// Console: repositories and their lag.
    Repos,
    /// Console: actions and their results.
    Actions,
    /// Console: a new enrollment token.
    TokenCreate { uses: u32, valid_secs: u64 },
    /// Console: hosts waiting for approval.
    Pending,
    /// Console: approve a waiting host.
    Approve(String),
    /// Console: revoke a host's certificate.
    Revoke(String),
    /// Console: relay a signed action.
    Act(Signed),
    /// Console: distribute signed agent settings.
    SetSettings(Signed),
    /// Console: hosts waiting for approval, with why ([`CentralResponse::PendingHostsV2`]).
    PendingV2,
    /// Console: approve a waiting host, revoking the certificates that held its name before.
    ApproveReplacing(String),
}

/// An answer. Only ever add variants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CentralResponse {
    /// Enrollment: the host certificate chain (PEM).
    Enrolled { chain_pem: String },
    /// Enrollment: waiting for an administrator (`console host approve`).
    EnrollPending,
    /// The report was applied.
    ReportApplied { sequence: u64 },
    /// Send a full report (gap, unknown base, or central lost its data).
    FullReportNeeded { last: Option<u64> },
    /// A relayed action (on a [`CentralRequest::Listen`] stream).
    Action(Signed),
    /// Signed settings for the host.
    Settings(Option<Signed>),
    /// Console answers.
    Hosts { total: u64, hosts: Vec<HostSummary> },
    /// One host.
    Host(Box<HostDetail>),
    /// Packages.
    Packages(Vec<PackageSummary>),
    /// Repositories.
    Repos(Vec<RepoLine>),
    /// Actions.
    Actions(Vec<ActionLine>),
    /// A new token.
    Token { token: String, expires: i64, uses: u32 },
    /// Waiting hosts: uuid, fqdn, since.
    PendingHosts(Vec<(String, String, i64)>),
    /// An action was queued: its id (hex), hosts targeted, hosts reached at once.
    ActionQueued { id: String, targets: u32, online: u32 },
    /// Done, with a message.
    Done(String),
    /// Refused or failed.
    Error { code: crate::wire::ErrorCode, message: String },
    /// Enrollment: waiting for an administrator, and why (the name is already enrolled…).
    EnrollWaiting { reason: String },
    /// Waiting hosts, with why.
    PendingHostsV2(Vec<PendingHost>),
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

#[derive(Serialize, Deserialize)]
enum CentralRequestWire {
    V1(CentralRequest),
}

#[derive(Serialize, Deserialize)]
enum CentralResponseWire {
    V1(CentralResponse),
}

/// Frames a request (little-endian `u32` length, then postcard).
pub fn encode_request(r: &CentralRequest) -> Vec<u8> {
    crate::wire::frame(&postcard::to_stdvec(&CentralRequestWire::V1(r.clone())).expect("encoding to a Vec cannot fail"))
}

/// Frames a response.
pub fn encode_response(r: &CentralResponse) -> Vec<u8> {
    crate::wire::frame(
        &postcard::to_stdvec(&CentralResponseWire::V1(r.clone())).expect("encoding to a Vec cannot fail"),
    )
}

/// Decodes a request body.
pub fn decode_request(body: &[u8]) -> Result<CentralRequest, CentralError> {
    let CentralRequestWire::V1(r) =
        postcard::from_bytes(body).map_err(|e| CentralError::Decode { what: "request", reason: e.to_string() })?;
    Ok(r)
}

/// Decodes a response body.
pub fn decode_response(body: &[u8]) -> Result<CentralResponse, CentralError> {
    let CentralResponseWire::V1(r) =
        postcard::from_bytes(body).map_err(|e| CentralError::Decode { what: "response", reason: e.to_string() })?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(sequence: u64, full: bool) -> Report {
        Report {
            host: "uuid-1".into(),
            sequence,
            full,
            created: 0,
            sections: vec![
                Section::Memory(1 << 30),
                Section::Software(vec![Software { name: "vim".into(), version: "9".into() }]),
            ],
        }
    }

    #[test]
    fn report_sequence_rules() {
        assert_eq!(decide(None, &report(5, true)), ReportDecision::Apply);
        assert_eq!(decide(None, &report(5, false)), ReportDecision::FullNeeded, "a delta needs a base");
        assert_eq!(decide(Some(4), &report(5, false)), ReportDecision::Apply);
        assert_eq!(decide(Some(4), &report(6, false)), ReportDecision::FullNeeded, "gap");
        assert_eq!(decide(Some(4), &report(4, false)), ReportDecision::Replay);
        assert_eq!(decide(Some(4), &report(3, true)), ReportDecision::Replay, "an old full report too");
        assert_eq!(decide(Some(4), &report(9, true)), ReportDecision::Apply);
    }

    #[test]
    fn reports_are_signed_and_size_limited() {
        let key = PrivateKey::generate().unwrap();
        let other = PrivateKey::generate().unwrap();
        let signed = report(1, true).sign(&key);
        assert_eq!(signed.verify(&key.public_key()).unwrap(), report(1, true));
        assert!(matches!(signed.verify(&other.public_key()), Err(CentralError::Signature { .. })));
        let mut bad = signed;
        let n = bad.report.len() - 1;
        bad.report[n] ^= 1;
        assert!(matches!(bad.verify(&key.public_key()), Err(CentralError::Signature { .. })));
        let big = SignedReport { report: vec![0; MAX_REPORT_BYTES + 1], signature: vec![0; 64] };
        assert_eq!(big.verify(&key.public_key()).unwrap_err().reason(), "oversized");
    }

    #[test]
    fn inventories_report_only_what_changed() {
        let a = Inventory::from_sections(report(1, true).sections);
        let mut b = a.clone();
        assert!(b.changed_since(&a).is_empty());
        b.apply([Section::Memory(2 << 30)]);
        assert_eq!(b.changed_since(&a), vec![Section::Memory(2 << 30)]);
        let mut c = a.clone();
        c.apply(b.changed_since(&a));
        assert_eq!(c, b);
    }

    #[test]
    fn targets_match_hosts_and_ous() {
        let n = |uuid, fqdn, ou| HostNames { fingerprint: "", uuid, fqdn, ou };
        let t = Targets::Ou("OU=Paris,DC=example,DC=org".into());
        assert!(t.includes(&n("u", "pc1", "CN=pc1,OU=Paris,DC=example,DC=org")));
        assert!(t.includes(&n("u", "pc1", "OU=Paris, DC=example, DC=org")));
        assert!(!t.includes(&n("u", "pc1", "CN=pc1,OU=NotParis,DC=example,DC=org")));
        assert!(!t.includes(&n("u", "pc1", "CN=pc1,OU=Lyon,DC=example,DC=org")));
        let h = Targets::Hosts(vec!["PC1.example.org".into()]);
        assert!(h.includes(&n("x", "pc1.example.org", "")));
        assert!(!h.includes(&n("x", "pc2.example.org", "")));
        // By certificate: exactly the host holding it, whatever names it reports.
        let fp = "ab".repeat(32);
        let by_cert = Targets::Hosts(vec![format!("sha256:{}", fp.to_uppercase())]);
        assert!(by_cert.includes(&HostNames { fingerprint: &fp, uuid: "x", fqdn: "pc1", ou: "" }));
        assert!(!by_cert.includes(&HostNames { fingerprint: &"cd".repeat(32), uuid: "x", fqdn: "pc1", ou: "" }));
        assert!(!by_cert.includes(&n("x", "pc1", "")), "a host that does not say its certificate is not it");
        assert_eq!(fingerprint_name(&fp), Some(fp.clone()));
        assert_eq!(fingerprint_name("pc1.example.org"), None);
    }

    #[test]
    fn actions_round_trip_through_signatures() {
        let key = PrivateKey::generate().unwrap();
        let a = Action {
            nonce: [3; 16],
            targets: Targets::Hosts(vec!["pc1".into()]),
            kind: ActionKind::Install(vec!["tool".into()]),
            created: 100,
            expires: 200,
        };
        let signed = a.sign(&key, &[]);
        let ActionWire::V1(back) = postcard::from_bytes(&signed.body).unwrap();
        assert_eq!(back, a);
        let r = CentralResponse::Action(signed);
        assert_eq!(decode_response(&encode_response(&r)[4..]).unwrap(), r);
    }

    #[test]
    fn frames_round_trip() {
        let r = CentralRequest::Hosts(HostQuery { software: Some("vim".into()), ..HostQuery::default() });
        let f = encode_request(&r);
        assert_eq!(u32::from_le_bytes(f[..4].try_into().unwrap()) as usize, f.len() - 4);
        assert_eq!(decode_request(&f[4..]).unwrap(), r);
        assert!(decode_request(&[9, 9]).is_err());
    }
}

/// The encodings sent and stored by earlier versions, frozen: each must still decode to what it
/// said.
#[cfg(test)]
mod golden {
    use super::*;
    use crate::hex::{assert_golden, decode};

    fn report() -> Report {
        let facts = HostFacts {
            uuid: "u".into(),
            fqdn: "h.ex".into(),
            ou: "OU=x".into(),
            site: "s".into(),
            profiles: vec!["p".into()],
            agent_version: "0.1.0".into(),
        };
        let package = PackageState {
            name: "a".into(),
            status: "ERROR".into(),
            installed: Some("1".into()),
            target: None,
            reason: Some("why".into()),
            output: None,
        };
        Report {
            host: "u".into(),
            sequence: 2,
            full: true,
            created: 100,
            sections: vec![
                Section::Host(facts),
                Section::Memory(1024),
                Section::Packages { host_status: "ERROR".into(), packages: vec![package] },
                Section::Snapshot(None),
            ],
        }
    }

    #[test]
    fn reports_actions_and_settings_still_decode() {
        let golden = "0001750201c8010400017504682e6578044f553d78017301017005302e312e3004800808054552524f52010161054552524f52010131000103776879000a00";
        assert_golden("a report", &postcard::to_stdvec(&ReportWire::V1(report())).unwrap(), golden);
        let ReportWire::V1(back) = postcard::from_bytes(&decode(golden).unwrap()).unwrap();
        assert_eq!(back, report());

        let action = Action {
            nonce: [4; 16],
            targets: Targets::Hosts(vec!["h.ex".into()]),
            kind: ActionKind::Install(vec!["a".into()]),
            created: 1,
            expires: 2,
        };
        let golden = "0004040404040404040404040404040404000104682e6578020101610204";
        assert_golden("an action", &postcard::to_stdvec(&ActionWire::V1(action.clone())).unwrap(), golden);
        let ActionWire::V1(back) = postcard::from_bytes(&decode(golden).unwrap()).unwrap();
        assert_eq!(back, action);

        let settings =
            AgentSettingsDoc { sequence: 3, targets: Targets::Ou("OU=x".into()), toml: "a = 1".into(), created: 5 };
        let golden = "000301044f553d780561203d20310a";
        assert_golden("agent settings", &postcard::to_stdvec(&SettingsWire::V1(settings.clone())).unwrap(), golden);
        let SettingsWire::V1(back) = postcard::from_bytes(&decode(golden).unwrap()).unwrap();
        assert_eq!(back, settings);
    }

    #[test]
    fn central_messages_still_decode() {
        let requests = [
            (
                CentralRequest::Enroll { request: vec![1], token: None, uuid: "u".into(), fqdn: "h".into() },
                "000001010001750168",
            ),
            (
                CentralRequest::Report(SignedReport { report: vec![1, 2], signature: vec![3; 4] }),
                "00010201020403030303",
            ),
            (CentralRequest::Hosts(HostQuery::default()), "0005000000000000"),
            (CentralRequest::ApproveReplacing("h".into()), "00110168"),
        ];
        for (request, golden) in requests {
            assert_golden(&format!("{request:?}"), &encode_request(&request)[4..], golden);
            assert_eq!(decode_request(&decode(golden).unwrap()).unwrap(), request);
        }
        let responses = [
            (CentralResponse::ReportApplied { sequence: 2 }, "000202"),
            (CentralResponse::FullReportNeeded { last: Some(1) }, "00030101"),
            (CentralResponse::Error { code: crate::wire::ErrorCode::Refused, message: "no".into() }, "000f01026e6f"),
            (
                CentralResponse::PendingHostsV2(vec![PendingHost {
                    uuid: "u".into(),
                    fqdn: "h".into(),
                    since: 1,
                    reason: "r".into(),
                }]),
                "00110101750168020172",
            ),
        ];
        for (response, golden) in responses {
            assert_golden(&format!("{response:?}"), &encode_response(&response)[4..], golden);
            assert_eq!(decode_response(&decode(golden).unwrap()).unwrap(), response);
        }
    }
}
