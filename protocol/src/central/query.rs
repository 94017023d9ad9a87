//! Which hosts a console asks for: a filter (written in one line, like
//! `status:ERROR site:lyon pkg:firefox sw:7zip ou:Paris name:pc-*`), an order and a page. The
//! filter is parsed here, once, so the web console, the CLI and central agree on what it means;
//! central applies it to its index and sends one page, never the whole fleet.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::HostSummary;
use crate::resolver::{HostStatus, InstallState};

/// Hosts on one page at most.
pub const MAX_PAGE: u32 = 1000;

/// A host status to filter on: one the hosts report, or unknown (not reported yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatusFilter {
    /// Hosts that reported this status.
    Is(HostStatus),
    /// Hosts that have not reported their packages yet.
    Unknown,
}

impl StatusFilter {
    /// The filter a word names (`error`, `NEED-UPGRADE`, `unknown`; any case).
    pub fn parse(text: &str) -> Option<Self> {
        super::parse_status(text).map(|s| s.map_or(Self::Unknown, Self::Is))
    }

    /// Whether a host with `status` (`None`: not reported) passes.
    pub fn matches(self, status: Option<HostStatus>) -> bool {
        match self {
            Self::Is(s) => status == Some(s),
            Self::Unknown => status.is_none(),
        }
    }
}

impl fmt::Display for StatusFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Is(s) => f.write_str(s.as_str()),
            Self::Unknown => f.write_str(super::UNKNOWN_STATUS),
        }
    }
}

/// What hosts must have to be listed; every filter given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFilter {
    /// Their status.
    pub status: Option<StatusFilter>,
    /// An Outpost package they have (any status).
    pub package: Option<String>,
    /// Software installed (dpkg/rpm/registry name, any case).
    pub software: Option<String>,
    /// Their OU: a distinguished name (`OU=Paris,DC=ex`: that OU or one below it) or one
    /// component's value (`Paris`).
    pub ou: Option<String>,
    /// Their site (any case).
    pub site: Option<String>,
    /// Their name (FQDN or UUID): a pattern with `*` and `?`, or a part of it.
    pub name: Option<String>,
}

/// Why a filter line was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A key no filter has.
    #[error("{key:?} is not a filter; use status:, site:, pkg:, sw:, ou:, name: or audit:")]
    UnknownKey { key: String },
    /// An audit result no audit has.
    #[error("{0:?} is not an audit result: OK, WARNING or ERROR")]
    Audit(String),
    /// A status no host can have.
    #[error("{0:?} is not a host status: OK, NEED-UPGRADE, ERROR or UNKNOWN")]
    Status(String),
    /// A key given twice.
    #[error("{key}: is given twice")]
    Twice { key: String },
    /// A key without a value.
    #[error("{key}: needs a value")]
    Empty { key: String },
    /// A quote that does not end.
    #[error("a quote (\") is not closed")]
    Quote,
}

impl HostFilter {
    /// Parses a filter line: `key:value` terms (`status`, `site`, `pkg`/`package`,
    /// `sw`/`software`, `ou`, `name`), values quoted with `"` when they hold spaces; a word
    /// without a key is part of a name.
    pub fn parse(line: &str) -> Result<Self, FilterError> {
        let mut filter = Self::default();
        for term in terms(line)? {
            let (key, value) = match term.split_once(':') {
                Some((k, v)) if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphabetic()) => {
                    (k.to_ascii_lowercase(), v.to_string())
                }
                _ => ("name".to_string(), term.clone()),
            };
            if value.is_empty() {
                return Err(FilterError::Empty { key });
            }
            let slot = match key.as_str() {
                "status" => {
                    if filter.status.is_some() {
                        return Err(FilterError::Twice { key });
                    }
                    filter.status = Some(StatusFilter::parse(&value).ok_or(FilterError::Status(value))?);
                    continue;
                }
                "site" => &mut filter.site,
                "pkg" | "package" => &mut filter.package,
                "sw" | "software" => &mut filter.software,
                "ou" => &mut filter.ou,
                "name" | "host" => &mut filter.name,
                _ => return Err(FilterError::UnknownKey { key }),
            };
            if slot.is_some() {
                return Err(FilterError::Twice { key });
            }
            *slot = Some(value);
        }
        Ok(filter)
    }

    /// The filter written as a line [`HostFilter::parse`] reads back.
    pub fn to_line(&self) -> String {
        let mut out = Vec::new();
        let mut push = |key: &str, value: &str| {
            if value.chars().any(char::is_whitespace) || value.contains('"') {
                out.push(format!("{key}:\"{}\"", value.replace('"', "")));
            } else {
                out.push(format!("{key}:{value}"));
            }
        };
        if let Some(s) = self.status {
            push("status", &s.to_string());
        }
        for (key, value) in [
            ("site", &self.site),
            ("pkg", &self.package),
            ("sw", &self.software),
            ("ou", &self.ou),
            ("name", &self.name),
        ] {
            if let Some(v) = value {
                push(key, v);
            }
        }
        out.join(" ")
    }

    /// Whether a host's name (FQDN or UUID) passes the name filter.
    pub fn name_matches(&self, fqdn: &str, uuid: &str) -> bool {
        let Some(pattern) = &self.name else { return true };
        let pattern = pattern.to_lowercase();
        let (fqdn, uuid) = (fqdn.to_lowercase(), uuid.to_lowercase());
        if pattern.contains(['*', '?']) {
            glob(&pattern, &fqdn) || glob(&pattern, &uuid)
        } else {
            fqdn.contains(&pattern) || uuid == pattern
        }
    }

    /// Whether a host in `ou` passes the OU filter.
    pub fn ou_matches(&self, ou: &str) -> bool {
        let Some(want) = &self.ou else { return true };
        let normal = |s: &str| s.to_lowercase().replace(' ', "");
        let (want, mine) = (normal(want), normal(ou));
        if want.contains('=') {
            mine == want || mine.ends_with(&format!(",{want}"))
        } else {
            mine.split(',').any(|rdn| rdn.split_once('=').is_some_and(|(_, v)| v == want))
        }
    }
}

/// Splits a line into terms, keeping quoted values (`ou:"OU=Paris Office"`) whole.
fn terms(line: &str) -> Result<Vec<String>, FilterError> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if quoted {
        return Err(FilterError::Quote);
    }
    if !current.is_empty() {
        out.push(current);
    }
    Ok(out)
}

/// `*` any run of characters, `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The column hosts are ordered by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostSort {
    /// FQDN.
    #[default]
    Name,
    /// Status (ERROR first when descending).
    Status,
    /// Site.
    Site,
    /// OU.
    Ou,
    /// Last report.
    LastSeen,
    /// Number of Outpost packages.
    Packages,
}

impl HostSort {
    /// Every order, with the word that names it.
    pub const ALL: [(Self, &'static str); 6] = [
        (Self::Name, "name"),
        (Self::Status, "status"),
        (Self::Site, "site"),
        (Self::Ou, "ou"),
        (Self::LastSeen, "seen"),
        (Self::Packages, "packages"),
    ];

    /// The order a word names.
    pub fn parse(word: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, w)| w.eq_ignore_ascii_case(word)).map(|(s, _)| *s)
    }

    /// Its word.
    pub fn word(self) -> &'static str {
        Self::ALL.iter().find(|(s, _)| *s == self).map_or("name", |(_, w)| w)
    }
}

/// One page of hosts: which, in which order, from where.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPageQuery {
    /// Which hosts.
    pub filter: HostFilter,
    /// In which order (then by FQDN).
    pub sort: HostSort,
    /// Largest first.
    pub descending: bool,
    /// Hosts skipped.
    pub offset: u32,
    /// Hosts on the page (at most [`MAX_PAGE`]; 0 means [`MAX_PAGE`]).
    pub limit: u32,
}

/// A page of hosts, filtered by their audits too ([`super::CentralRequest::HostPageV2`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPageQueryV2 {
    /// Everything [`HostPageQuery`] says.
    pub page: HostPageQuery,
    /// Hosts whose worst last audit is this (OK, WARNING or ERROR).
    pub audit: Option<InstallState>,
}

/// A filter line with its `audit:` term: the host filter, and the audit result asked for.
pub fn parse_filter(line: &str) -> Result<(HostFilter, Option<InstallState>), FilterError> {
    let mut audit = None;
    let mut rest = Vec::new();
    for term in terms(line)? {
        match term.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("audit") => {
                if audit.is_some() {
                    return Err(FilterError::Twice { key: "audit".into() });
                }
                audit = Some(match v.to_ascii_uppercase().as_str() {
                    "OK" => InstallState::Ok,
                    "WARNING" => InstallState::Warning,
                    "ERROR" => InstallState::Error,
                    _ => return Err(FilterError::Audit(v.to_string())),
                });
            }
            _ => rest.push(if term.contains(char::is_whitespace) {
                match term.split_once(':') {
                    Some((k, v)) => format!("{k}:\"{v}\""),
                    None => format!("\"{term}\""),
                }
            } else {
                term
            }),
        }
    }
    Ok((HostFilter::parse(&rest.join(" "))?, audit))
}

/// A page of hosts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPage {
    /// Hosts matching the filter, in all.
    pub total: u64,
    /// Where the page starts.
    pub offset: u32,
    /// The page.
    pub hosts: Vec<HostSummary>,
}

/// Hosts of one site by status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteCount {
    /// The site ("" when hosts did not say).
    pub site: String,
    /// Hosts there.
    pub hosts: u64,
    /// By status (`OK`, `NEED-UPGRADE`, `ERROR`, `UNKNOWN`).
    pub by_status: BTreeMap<String, u64>,
}

/// The fleet at a glance: what the dashboard shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetOverview {
    /// Central's change counter when this was made ([`super::CentralRequest::Generation`]).
    pub generation: u64,
    /// Hosts in all.
    pub hosts: u64,
    /// Hosts connected now.
    pub online: u64,
    /// By status (`OK`, `NEED-UPGRADE`, `ERROR`, `UNKNOWN`; every status present).
    pub by_status: BTreeMap<String, u64>,
    /// By site, largest first.
    pub by_site: Vec<SiteCount>,
    /// Hosts not seen for the time asked.
    pub stale: u64,
    /// The longest unseen of them (at most 10), oldest first.
    pub stale_hosts: Vec<HostSummary>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_line_sets_each_field_and_reads_back() {
        let f =
            HostFilter::parse(r#"status:error site:lyon pkg:firefox sw:7zip ou:"OU=Paris Office" name:pc-*"#).unwrap();
        assert_eq!(f.status, Some(StatusFilter::Is(HostStatus::Error)));
        assert_eq!(
            (f.site.as_deref(), f.package.as_deref(), f.software.as_deref()),
            (Some("lyon"), Some("firefox"), Some("7zip"))
        );
        assert_eq!((f.ou.as_deref(), f.name.as_deref()), (Some("OU=Paris Office"), Some("pc-*")));
        assert_eq!(HostFilter::parse(&f.to_line()).unwrap(), f);
        assert_eq!(HostFilter::parse("  ").unwrap(), HostFilter::default());
        assert_eq!(HostFilter::parse("pc-12").unwrap().name.as_deref(), Some("pc-12"), "a bare word is a name");
        assert_eq!(HostFilter::parse("status:unknown").unwrap().status, Some(StatusFilter::Unknown));
    }

    #[test]
    fn a_wrong_filter_says_what_is_wrong() {
        let cases = [
            ("status:BROKEN", "\"BROKEN\" is not a host status: OK, NEED-UPGRADE, ERROR or UNKNOWN"),
            ("colour:red", "\"colour\" is not a filter"),
            ("site:a site:b", "site: is given twice"),
            ("site:", "site: needs a value"),
            ("ou:\"OU=x", "a quote (\") is not closed"),
        ];
        for (line, want) in cases {
            let e = HostFilter::parse(line).unwrap_err().to_string();
            assert!(e.starts_with(want), "{line}: {e}");
        }
    }

    #[test]
    fn the_audit_term_is_read_beside_the_host_filter() {
        let (f, audit) = parse_filter(r#"audit:error site:lyon ou:"OU=Paris Office""#).unwrap();
        assert_eq!(audit, Some(InstallState::Error));
        assert_eq!((f.site.as_deref(), f.ou.as_deref()), (Some("lyon"), Some("OU=Paris Office")));
        assert_eq!(parse_filter("pc-1").unwrap(), (HostFilter::parse("pc-1").unwrap(), None));
        assert_eq!(
            parse_filter("audit:bad").unwrap_err().to_string(),
            "\"bad\" is not an audit result: OK, WARNING or ERROR"
        );
        assert!(parse_filter("audit:ok audit:error").is_err());
    }

    #[test]
    fn names_and_ous_match_as_an_operator_expects() {
        let f = |line: &str| HostFilter::parse(line).unwrap();
        assert!(f("name:pc-*").name_matches("PC-12.paris.ex", "u"));
        assert!(!f("name:pc-*").name_matches("srv-1.ex", "u"));
        assert!(f("name:pc-?2.*").name_matches("pc-12.ex", "u"));
        assert!(f("paris").name_matches("pc-12.paris.ex", "u"), "a part of the name");
        assert!(f("name:1234").name_matches("pc.ex", "1234"), "a UUID, whole");
        assert!(!f("name:123").name_matches("pc.ex", "1234"));
        assert!(f("ou:Paris").ou_matches("OU=Paris,DC=ex"));
        assert!(f("ou:paris").ou_matches("OU=Desks,OU=Paris,DC=ex"), "any component's value");
        assert!(!f("ou:Lyon").ou_matches("OU=Paris,DC=ex"));
        assert!(f("ou:\"OU=Paris, DC=ex\"").ou_matches("OU=Desks,OU=Paris,DC=ex"), "below a DN");
        assert!(!f("ou:OU=Paris,DC=ex").ou_matches("OU=NotParis,DC=ex"));
    }

    #[test]
    fn glob_handles_stars_and_question_marks() {
        for (p, t, want) in [
            ("*", "", true),
            ("a*b", "ab", true),
            ("a*b", "axxb", true),
            ("a*b", "axxbc", false),
            ("*b*", "abc", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("**", "x", true),
        ] {
            assert_eq!(glob(p, t), want, "{p} {t}");
        }
    }

    #[test]
    fn sort_words_name_each_order() {
        for (s, w) in HostSort::ALL {
            assert_eq!(HostSort::parse(w), Some(s));
            assert_eq!(s.word(), w);
        }
        assert_eq!(HostSort::parse("bogus"), None);
    }
}
