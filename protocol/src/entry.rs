//! The typed view of a package's control, and the filters a host applies to it.
//!
//! [`PackageEntry::from_control`] checks a control the way a package builder or an importer
//! must: required fields, a valid version, known section and architectures, well-formed
//! `depends`/`conflicts` and dates. [`PackageEntry::mismatch`] tells whether a host can take
//! the entry (architecture, OS, locale, maturity, validity window) and why not.

use std::cmp::Ordering;
use std::fmt;

use crate::control::Control;
use crate::request::{PackageRequest, RequestError};
use crate::time_fmt;
use crate::version::{Version, VersionError};

/// Architectures a control may name (`all` matches every host).
pub const ARCHITECTURES: [&str; 7] = ["all", "x86", "x64", "arm", "arm64", "armhf", "aarch64"];

/// The maturity a package without one has, and the one hosts accept by default.
pub const DEFAULT_MATURITY: &str = "PROD";

/// Dependency depth beyond which resolution stops (WAPT's limit).
pub const MAX_DEPENDENCY_DEPTH: usize = 30;

/// What a package is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    /// Software: the default.
    Base,
    /// Software hidden from self-service lists.
    Restricted,
    /// A group of packages (a bundle of `depends`).
    Group,
    /// A host package, named by the host's UUID or FQDN; not in the public index.
    Host,
    /// An organisational-unit package, named by the OU's distinguished name.
    Unit,
    /// A profile package, named by a directory group.
    Profile,
    /// Windows updates.
    Wsus,
    /// A list of packages users may install themselves.
    Selfservice,
    /// Agent settings.
    Config,
}

impl Section {
    /// Every section, in the order they are documented.
    pub const ALL: [Section; 9] = [
        Section::Base,
        Section::Restricted,
        Section::Group,
        Section::Host,
        Section::Unit,
        Section::Profile,
        Section::Wsus,
        Section::Selfservice,
        Section::Config,
    ];

    /// The name used in controls.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Base => "base",
            Self::Restricted => "restricted",
            Self::Group => "group",
            Self::Host => "host",
            Self::Unit => "unit",
            Self::Profile => "profile",
            Self::Wsus => "wsus",
            Self::Selfservice => "selfservice",
            Self::Config => "config",
        }
    }

    /// Parses a section name (case-insensitive).
    pub fn parse(text: &str) -> Option<Self> {
        let lower = text.trim().to_lowercase();
        Self::ALL.into_iter().find(|s| s.as_str() == lower)
    }

    /// True for the sections a host receives implicitly (host, unit, profile).
    pub fn is_implicit(&self) -> bool {
        matches!(self, Self::Host | Self::Unit | Self::Profile)
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a control cannot be a package entry. Names the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Required fields absent or empty.
    #[error("missing required field(s): {}", .0.join(", "))]
    Missing(Vec<&'static str>),
    /// The version field does not parse.
    #[error("field 'version': {0}")]
    Version(VersionError),
    /// A section outside the known list.
    #[error(
        "field 'section': unknown section {0:?} (expected one of base, restricted, group, host, unit, profile, wsus, selfservice, config)"
    )]
    Section(String),
    /// An architecture outside the known list.
    #[error(
        "field 'architecture': unknown architecture {0:?} (expected a comma list of all, x86, x64, arm, arm64, armhf)"
    )]
    Architecture(String),
    /// A `depends` or `conflicts` item that does not parse.
    #[error("field '{field}': {error}")]
    Request { field: &'static str, error: RequestError },
    /// A date that does not parse.
    #[error("field '{field}': invalid date {value:?} (expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)")]
    Date { field: &'static str, value: String },
    /// A package name that cannot be used.
    #[error("field 'package': invalid name {0:?} (no parentheses or control characters)")]
    Name(String),
}

impl From<VersionError> for EntryError {
    fn from(e: VersionError) -> Self {
        Self::Version(e)
    }
}

/// A package entry: the fields resolution and filtering use, plus the full control.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageEntry {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: Version,
    /// Architectures, lower-case; empty or containing `all` means any.
    pub architectures: Vec<String>,
    /// Section.
    pub section: Section,
    /// Maturity, upper-case; empty means PROD.
    pub maturity: String,
    /// Locales, lower-case; empty or `all` means any.
    pub locales: Vec<String>,
    /// Target operating systems, lower-case; empty or `all` means any.
    pub target_os: Vec<String>,
    /// Lowest OS version, inclusive.
    pub min_os_version: Option<String>,
    /// Highest OS version, inclusive.
    pub max_os_version: Option<String>,
    /// The oldest Outpost agent that may install it.
    pub min_outpost_version: Option<String>,
    /// The oldest WAPT agent that may install it (WAPT's field; compared with [`WAPT_LEVEL`]).
    pub min_wapt_version: Option<String>,
    /// Bytes it takes once installed: the install is refused when the disk lacks them.
    pub installed_size: Option<u64>,
    /// How often its audit hook runs, in seconds (`audit_schedule`; `None`: only when asked).
    pub audit_every: Option<u64>,
    /// Packages this one needs, installed before it.
    pub depends: Vec<PackageRequest>,
    /// Packages that must not be installed beside this one.
    pub conflicts: Vec<PackageRequest>,
    /// Not before (Unix seconds, UTC).
    pub valid_from: Option<i64>,
    /// Not from (Unix seconds, UTC).
    pub valid_until: Option<i64>,
    /// Signature date as written (ISO text sorts in time order).
    pub signature_date: String,
    /// Every field.
    pub control: Control,
}

/// What a host is and accepts. Lists are in preference order (first preferred).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostCapabilities {
    /// Architectures the host runs, e.g. `["x64", "x86"]`; empty accepts any.
    pub architectures: Vec<String>,
    /// Names of the host's OS that `target_os` may use, e.g. `["linux", "debian"]`; empty
    /// accepts any.
    pub os: Vec<String>,
    /// The OS version, compared with `min_os_version`/`max_os_version`.
    pub os_version: Option<String>,
    /// Locales, e.g. `["fr", "en"]`; empty accepts any.
    pub locales: Vec<String>,
    /// Accepted maturities, e.g. `["PROD"]`.
    pub maturities: Vec<String>,
    /// Current time (Unix seconds, UTC) for `valid_from`/`valid_until`.
    pub now: i64,
    /// This agent's Outpost version, for `min_outpost_version` (and [`WAPT_LEVEL`] for
    /// `min_wapt_version`); `None` checks neither.
    #[serde(default)]
    pub agent_version: Option<String>,
}

/// `audit_schedule` in seconds: minutes as a bare number, or a number with `s`, `m`, `h`, `d`
/// or `w` (WAPT's forms); `None` when empty, zero or not understood (an audit only when asked).
pub fn audit_period(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&text[..i], text[i..].trim()),
        None => (text.as_str(), "m"),
    };
    let n: u64 = number.parse().ok()?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    Some(n.checked_mul(unit)?).filter(|&s| s > 0)
}

/// The WAPT version whose packages an Outpost agent installs as WAPT does: a package whose
/// `min_wapt_version` is newer is not taken.
pub const WAPT_LEVEL: &str = "2.5";

impl Default for HostCapabilities {
    fn default() -> Self {
        Self {
            architectures: Vec::new(),
            os: Vec::new(),
            os_version: None,
            locales: Vec::new(),
            maturities: vec![DEFAULT_MATURITY.to_string()],
            now: 0,
            agent_version: None,
        }
    }
}

/// Why a host does not take an entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize)]
pub enum Mismatch {
    /// No architecture in common.
    #[error("architecture {0} does not fit this host")]
    Architecture(String),
    /// OS not targeted.
    #[error("made for {0}, not this operating system")]
    Os(String),
    /// OS version out of range.
    #[error("needs OS version in [{min}, {max}]")]
    OsVersion { min: String, max: String },
    /// Locale not accepted.
    #[error("locale {0} is not accepted here")]
    Locale(String),
    /// Maturity not accepted.
    #[error("maturity {0} is not accepted here")]
    Maturity(String),
    /// Outside its validity window.
    #[error("not valid at this time")]
    Validity,
    /// Made for a newer agent.
    #[error("needs {product} {needs} or later ({field}); this agent is {have}")]
    TooOld { field: &'static str, product: &'static str, needs: String, have: String },
}

impl PackageEntry {
    /// Checks and types a control.
    pub fn from_control(control: &Control) -> Result<Self, EntryError> {
        let missing = control.missing_required();
        if !missing.is_empty() {
            return Err(EntryError::Missing(missing));
        }
        let name = control.get_or_empty("package").to_string();
        if name.chars().any(|c| c.is_control() || "()".contains(c)) {
            return Err(EntryError::Name(name));
        }
        let version = Version::parse(control.get_or_empty("version"))?;
        let section_text = control.get_or_empty("section");
        let section = Section::parse(section_text).ok_or_else(|| EntryError::Section(section_text.to_string()))?;
        let architectures = list(control.get_or_empty("architecture"));
        if let Some(bad) = architectures.iter().find(|a| !ARCHITECTURES.contains(&a.as_str())) {
            return Err(EntryError::Architecture(bad.clone()));
        }
        let requests = |field: &'static str| {
            PackageRequest::parse_list(control.get_or_empty(field))
                .map_err(|source| EntryError::Request { field, error: source })
        };
        let date = |field: &'static str| -> Result<Option<i64>, EntryError> {
            let value = control.get_or_empty(field).trim();
            if value.is_empty() {
                return Ok(None);
            }
            time_fmt::parse_date(value).map(Some).ok_or_else(|| EntryError::Date { field, value: value.to_string() })
        };
        let optional = |field: &str| Some(control.get_or_empty(field).trim().to_string()).filter(|v| !v.is_empty());
        Ok(Self {
            name,
            version,
            architectures,
            section,
            maturity: control.get_or_empty("maturity").trim().to_uppercase(),
            locales: list(control.get_or_empty("locale")),
            target_os: list(control.get_or_empty("target_os")),
            min_os_version: optional("min_os_version"),
            max_os_version: optional("max_os_version"),
            min_outpost_version: optional("min_outpost_version"),
            min_wapt_version: optional("min_wapt_version"),
            installed_size: control.get_u64("installed_size"),
            audit_every: audit_period(control.get_or_empty("audit_schedule")),
            depends: requests("depends")?,
            conflicts: requests("conflicts")?,
            valid_from: date("valid_from")?,
            valid_until: date("valid_until")?,
            signature_date: control.get_or_empty("signature_date").to_string(),
            control: control.clone(),
        })
    }

    /// Why `host` cannot take this entry, or `None` when it can.
    pub fn mismatch(&self, host: &HostCapabilities) -> Option<Mismatch> {
        if !matches_list(&self.architectures, &host.architectures) {
            return Some(Mismatch::Architecture(self.architectures.join(",")));
        }
        if !matches_list(&self.target_os, &host.os) {
            return Some(Mismatch::Os(self.target_os.join(",")));
        }
        if let Some(os_version) = &host.os_version {
            let have = Version::parse_loose(os_version);
            let low = self.min_os_version.as_deref().map(Version::parse_loose);
            let high = self.max_os_version.as_deref().map(Version::parse_loose);
            if low.is_some_and(|l| have < l) || high.is_some_and(|h| have > h) {
                return Some(Mismatch::OsVersion {
                    min: self.min_os_version.clone().unwrap_or_default(),
                    max: self.max_os_version.clone().unwrap_or_default(),
                });
            }
        }
        if !matches_list(&self.locales, &host.locales) {
            return Some(Mismatch::Locale(self.locales.join(",")));
        }
        if !host.maturities.iter().any(|m| m.eq_ignore_ascii_case(self.effective_maturity())) {
            return Some(Mismatch::Maturity(self.effective_maturity().to_string()));
        }
        if self.valid_from.is_some_and(|t| host.now < t) || self.valid_until.is_some_and(|t| host.now >= t) {
            return Some(Mismatch::Validity);
        }
        if let Some(have) = &host.agent_version {
            for (field, product, needs, have) in [
                ("min_outpost_version", "Outpost", &self.min_outpost_version, have.as_str()),
                ("min_wapt_version", "WAPT", &self.min_wapt_version, WAPT_LEVEL),
            ] {
                if let Some(needs) = needs
                    && Version::parse_loose(have) < Version::parse_loose(needs)
                {
                    return Some(Mismatch::TooOld {
                        field,
                        product,
                        needs: needs.clone(),
                        have: if product == "WAPT" {
                            format!("at WAPT {WAPT_LEVEL}'s level")
                        } else {
                            have.to_string()
                        },
                    });
                }
            }
        }
        None
    }

    /// The maturity, PROD when none is written.
    pub fn effective_maturity(&self) -> &str {
        if self.maturity.is_empty() { DEFAULT_MATURITY } else { &self.maturity }
    }

    /// Orders two entries of the same package for `host`: newer version first, then the
    /// preferred maturity, locale and architecture, then the later signature.
    /// `Ordering::Greater` means `self` is better.
    pub fn preference(&self, other: &Self, host: &HostCapabilities) -> Ordering {
        self.version
            .cmp(&other.version)
            .then_with(|| {
                score(&[self.effective_maturity().to_string()], &upper(&host.maturities))
                    .cmp(&score(&[other.effective_maturity().to_string()], &upper(&host.maturities)))
            })
            .then_with(|| score(&self.locales, &host.locales).cmp(&score(&other.locales, &host.locales)))
            .then_with(|| {
                score(&self.architectures, &host.architectures).cmp(&score(&other.architectures, &host.architectures))
            })
            .then_with(|| self.signature_date.cmp(&other.signature_date))
    }
}

/// Splits a comma list, lower-cased, without empty items.
fn list(text: &str) -> Vec<String> {
    text.split(',').map(|s| s.trim().to_lowercase()).filter(|s| !s.is_empty()).collect()
}

fn upper(list: &[String]) -> Vec<String> {
    list.iter().map(|s| s.to_uppercase()).collect()
}

/// An entry list matches when it is empty, holds `all`, or shares an item with the host's
/// list (an empty host list accepts everything).
fn matches_list(entry: &[String], host: &[String]) -> bool {
    entry.is_empty()
        || entry.iter().any(|e| e == "all")
        || host.is_empty()
        || entry.iter().any(|e| host.iter().any(|h| h.eq_ignore_ascii_case(e)))
}

/// Preference score: the best position of an entry item in the host's list (first = highest);
/// generic entries (empty or `all`) score lowest among matches.
fn score(entry: &[String], host: &[String]) -> usize {
    entry
        .iter()
        .filter_map(|e| host.iter().position(|h| h.eq_ignore_ascii_case(e)))
        .map(|pos| host.len() - pos + 1)
        .max()
        .unwrap_or(usize::from(entry.is_empty() || entry.iter().any(|e| e == "all")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(extra: &str) -> PackageEntry {
        let text =
            format!("package: foo\nversion: 1.0-1\narchitecture: all\nsection: base\npriority: optional\n{extra}");
        PackageEntry::from_control(&Control::parse(&text).unwrap()).unwrap()
    }

    fn host() -> HostCapabilities {
        HostCapabilities {
            architectures: vec!["x64".into(), "x86".into()],
            os: vec!["linux".into(), "debian".into()],
            os_version: Some("12.4".into()),
            locales: vec!["fr".into(), "en".into()],
            maturities: vec!["PROD".into()],
            now: 1_700_000_000,
            agent_version: None,
        }
    }

    #[test]
    fn checks_fields() {
        let c = Control::parse("package: a\nversion: 1\n").unwrap();
        let err = PackageEntry::from_control(&c).unwrap_err();
        assert_eq!(err.to_string(), "missing required field(s): architecture, section, priority");
        let c = Control::parse("package: a\nversion: x\narchitecture: all\nsection: base\npriority: o\n").unwrap();
        assert!(PackageEntry::from_control(&c).unwrap_err().to_string().starts_with("field 'version'"));
        let c = Control::parse("package: a\nversion: 1\narchitecture: sparc\nsection: base\npriority: o\n").unwrap();
        assert!(matches!(PackageEntry::from_control(&c), Err(EntryError::Architecture(_))));
        let c = Control::parse("package: a\nversion: 1\narchitecture: all\nsection: nope\npriority: o\n").unwrap();
        assert!(matches!(PackageEntry::from_control(&c), Err(EntryError::Section(_))));
        let c =
            Control::parse("package: a\nversion: 1\narchitecture: all\nsection: base\npriority: o\ndepends: b(>=x)\n")
                .unwrap();
        assert!(PackageEntry::from_control(&c).unwrap_err().to_string().starts_with("field 'depends'"));
        let c = Control::parse(
            "package: a\nversion: 1\narchitecture: all\nsection: base\npriority: o\nvalid_until: soon\n",
        )
        .unwrap();
        assert!(matches!(PackageEntry::from_control(&c), Err(EntryError::Date { field: "valid_until", .. })));
    }

    #[test]
    fn filters_table() {
        let h = host();
        let cases: &[(&str, bool)] = &[
            ("", true),
            ("architecture: x86\n", true),
            ("architecture: arm64\n", false),
            ("architecture: x64,arm64\n", true),
            ("target_os: windows\n", false),
            ("target_os: debian\n", true),
            ("target_os: all\n", true),
            ("min_os_version: 11\n", true),
            ("min_os_version: 13\n", false),
            ("max_os_version: 12.4\n", true),
            ("max_os_version: 12.3\n", false),
            ("locale: de\n", false),
            ("locale: en\n", true),
            ("locale: all\n", true),
            ("maturity: DEV\n", false),
            ("maturity: prod\n", true),
            ("valid_from: 2030-01-01\n", false),
            ("valid_until: 2020-01-01\n", false),
            ("valid_from: 2020-01-01\nvalid_until: 2030-01-01T00:00:00\n", true),
        ];
        for (extra, fits) in cases {
            assert_eq!(entry(extra).mismatch(&h).is_none(), *fits, "{extra:?}");
        }
        let beta = HostCapabilities { maturities: vec!["BETA".into()], ..h };
        assert!(entry("").mismatch(&beta).is_some(), "no maturity means PROD");
    }

    #[test]
    fn audit_schedules_read_as_wapt_writes_them() {
        for (text, want) in [
            ("120", Some(7200)),
            ("30s", Some(30)),
            ("10m", Some(600)),
            ("2h", Some(7200)),
            ("1d", Some(86_400)),
            ("1W", Some(604_800)),
            ("", None),
            ("0", None),
            ("soon", None),
            ("5y", None),
        ] {
            assert_eq!(audit_period(text), want, "{text:?}");
        }
        assert_eq!(entry("audit_schedule: 1d\n").audit_every, Some(86_400));
    }

    #[test]
    fn an_agent_too_old_for_a_package_says_so() {
        let mut h = host();
        h.agent_version = Some("0.3.0".into());
        assert_eq!(entry("min_outpost_version: 0.2\n").mismatch(&h), None);
        let m = entry("min_outpost_version: 0.4.1\n").mismatch(&h).unwrap();
        assert_eq!(m.to_string(), "needs Outpost 0.4.1 or later (min_outpost_version); this agent is 0.3.0");
        assert_eq!(entry("min_wapt_version: 2.3\n").mismatch(&h), None, "an older WAPT level is fine");
        let w = entry("min_wapt_version: 2.6.1\n").mismatch(&h).unwrap();
        assert!(w.to_string().starts_with("needs WAPT 2.6.1 or later (min_wapt_version)"), "{w}");
        h.agent_version = None;
        assert_eq!(entry("min_outpost_version: 9\n").mismatch(&h), None, "not checked without a version");
        assert_eq!(entry("installed_size: 1234\n").installed_size, Some(1234));
    }

    #[test]
    fn preference_order() {
        let h = host();
        let newer = entry("");
        let mut older = entry("");
        older.version = Version::parse("0.9").unwrap();
        assert_eq!(newer.preference(&older, &h), Ordering::Greater);
        assert_eq!(entry("locale: fr\n").preference(&entry("locale: en\n"), &h), Ordering::Greater);
        assert_eq!(entry("locale: en\n").preference(&entry("locale: all\n"), &h), Ordering::Greater);
        assert_eq!(entry("architecture: x64\n").preference(&entry("architecture: x86\n"), &h), Ordering::Greater);
        assert_eq!(
            entry("signature_date: 2024-01-02T00:00:00\n")
                .preference(&entry("signature_date: 2024-01-01T00:00:00\n"), &h),
            Ordering::Greater
        );
    }
}
