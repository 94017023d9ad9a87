//! Package versions and their order, as WAPT compares them.
//!
//! A version is `^\d+(\.\d+){0,3}(-[0-9A-Za-z]+(\.[0-9A-Za-z]+)*)?$`: up to four numeric parts
//! (the software version), then `-` and a packaging number. Two versions compare part by part,
//! naturally (runs of digits as numbers, text lower-cased), missing parts counting as 0
//! (`7 == 7.0`), software version first, then the packaging number. Equality follows the
//! order: `7.0-01` equals `7-1`. The text is kept as written for display.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

/// Longest version text accepted.
pub const MAX_VERSION_LEN: usize = 128;

/// Most numeric parts in the software version.
pub const MAX_SOFTWARE_PARTS: usize = 4;

/// A parsed version.
#[derive(Clone, Debug)]
pub struct Version {
    text: String,
    software: Dotted,
    packaging: Option<Dotted>,
}

/// Why a version text is not a version.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid version {text:?}: {reason} (expected digits with up to four dotted parts, then optionally '-' and a packaging number, like 1.2.3-4)"
)]
pub struct VersionError {
    /// The text that was given.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Version {
    /// Parses a version, strictly.
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        let err = |reason| VersionError { text: text.to_string(), reason };
        if text.is_empty() {
            return Err(err("it is empty"));
        }
        if text.len() > MAX_VERSION_LEN {
            return Err(err("it is too long"));
        }
        let (software, packaging) = match text.split_once('-') {
            Some((s, p)) => (s, Some(p)),
            None => (text, None),
        };
        let parts: Vec<&str> = software.split('.').collect();
        if parts.len() > MAX_SOFTWARE_PARTS {
            return Err(err("more than four numeric parts before '-'"));
        }
        if parts.iter().any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
            return Err(err("the software version must be dot-separated digits"));
        }
        let packaging = match packaging {
            None => None,
            Some(p) => {
                let pparts: Vec<&str> = p.split('.').collect();
                if pparts.iter().any(|q| q.is_empty() || !q.bytes().all(|b| b.is_ascii_alphanumeric())) {
                    return Err(err("the packaging number after '-' must be dot-separated letters and digits"));
                }
                Some(Dotted::new(&pparts))
            }
        };
        Ok(Self { text: text.to_string(), software: Dotted::new(&parts), packaging })
    }

    /// Parses any dotted text with the same natural order (operating-system versions such as
    /// `10.0.19045` or `22.04`), without the strict syntax of package versions.
    pub fn parse_loose(text: &str) -> Self {
        let text = text.trim();
        let (software, packaging) = match text.split_once('-') {
            Some((s, p)) => (s, Some(Dotted::new(&p.split('.').collect::<Vec<_>>()))),
            None => (text, None),
        };
        Self { text: text.to_string(), software: Dotted::new(&software.split('.').collect::<Vec<_>>()), packaging }
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when a packaging number was written.
    pub fn has_packaging(&self) -> bool {
        self.packaging.is_some()
    }

    /// Compares the software versions only, ignoring packaging numbers.
    pub fn cmp_software(&self, other: &Self) -> Ordering {
        self.software.cmp(&other.software)
    }

    fn packaging_key(&self) -> &[Vec<Key>] {
        self.packaging.as_ref().map(|p| p.keys.as_slice()).unwrap_or(&[])
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.software.cmp(&other.software).then_with(|| self.packaging_key().cmp(other.packaging_key()))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl Hash for Version {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.software.keys.hash(state);
        self.packaging_key().hash(state);
    }
}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// One run inside a part: WAPT splits a part on digit runs, which gives text, number, text,
/// number, … (text possibly empty), so runs at the same position always have the same kind.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Key {
    /// A text run, lower-cased.
    Text(String),
    /// A digit run without its leading zeros: compared by length, then by digits.
    Number(NumberRun),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct NumberRun(String);

impl Ord for NumberRun {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.len().cmp(&other.0.len()).then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for NumberRun {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Dotted parts in canonical form: trailing parts equal to `0` are dropped, so that missing
/// parts count as zero and equal versions have equal keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Dotted {
    keys: Vec<Vec<Key>>,
}

impl Dotted {
    fn new(parts: &[&str]) -> Self {
        let zero = natural_key("0");
        let mut keys: Vec<Vec<Key>> = parts.iter().map(|p| natural_key(p)).collect();
        while keys.last() == Some(&zero) {
            keys.pop();
        }
        Self { keys }
    }
}

/// Compares as if the shorter list were padded with `0` parts: with trailing zeros dropped,
/// a plain lexicographic order gives exactly that, because a present part is never equal to
/// `0` at the end, and `0` sorts before any other part.
fn natural_key(part: &str) -> Vec<Key> {
    let mut keys = Vec::new();
    let mut text = String::new();
    let mut chars = part.chars().peekable();
    loop {
        while let Some(c) = chars.next_if(|c| !c.is_ascii_digit()) {
            text.extend(c.to_lowercase());
        }
        keys.push(Key::Text(std::mem::take(&mut text)));
        let mut digits = String::new();
        while let Some(c) = chars.next_if(char::is_ascii_digit) {
            digits.push(c);
        }
        if digits.is_empty() {
            break;
        }
        let trimmed = digits.trim_start_matches('0');
        keys.push(Key::Number(NumberRun(trimmed.to_string())));
    }
    // Python's re.split leaves a trailing empty text after a final number; an empty trailing
    // text carries no information, and dropping it keeps `1` and `1` equal either way.
    while keys.len() > 1 && keys.last() == Some(&Key::Text(String::new())) {
        keys.pop();
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn accepts_and_refuses() {
        for ok in ["1", "1.2", "1.2.3.4", "1.2-3", "24.9-46", "1.0-rc1.2", "007"] {
            assert!(Version::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1.2.3.4.5", "a", "1.", ".1", "1..2", "1-", "1-a_b", "1.2-3..4", "1 .2", "v1"] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn table_of_orders() {
        use Ordering::*;
        let cases = [
            ("1.2", "1.10", Less),
            ("7", "7.0", Equal),
            ("7", "7.0.0.0", Equal),
            ("7.0-1", "7-01", Equal),
            ("7.0", "7.0-1", Less),
            ("7-0", "7", Equal),
            ("1.2-9", "1.3-1", Less),
            ("1.2-10", "1.2-9", Greater),
            ("1.0-rc1", "1.0-rc2", Less),
            ("1.0-RC2", "1.0-rc2", Equal),
            ("1.0-rc10", "1.0-rc9", Greater),
            ("1.0-a", "1.0-1", Greater),
            ("59.0-1", "59.0.1-1", Less),
            ("2.57-32", "2.57-4", Greater),
            ("0.53-9", "0.53.0.0-9", Equal),
        ];
        for (a, b, want) in cases {
            assert_eq!(v(a).cmp(&v(b)), want, "{a} vs {b}");
            assert_eq!(v(b).cmp(&v(a)), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn loose_versions_for_operating_systems() {
        assert!(Version::parse_loose("10.0.19045") > Version::parse_loose("6.1"));
        assert_eq!(Version::parse_loose("22.04"), Version::parse_loose("22.4"));
    }

    fn version_text() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(0u32..12, 1..=4),
            proptest::option::of(proptest::collection::vec("[0-9a-cA-C]{1,3}", 1..3)),
        )
            .prop_map(|(soft, pack)| {
                let mut s = soft.iter().map(u32::to_string).collect::<Vec<_>>().join(".");
                if let Some(p) = pack {
                    s.push('-');
                    s.push_str(&p.join("."));
                }
                s
            })
    }

    fn hash_of(v: &Version) -> u64 {
        use std::collections::hash_map::DefaultHasher;
        let mut h = DefaultHasher::new();
        v.hash(&mut h);
        h.finish()
    }

    proptest! {
        #[test]
        fn order_is_total_and_consistent(a in version_text(), b in version_text(), c in version_text()) {
            let (a, b, c) = (v(&a), v(&b), v(&c));
            // antisymmetry
            prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
            // consistent with equality and hashing
            prop_assert_eq!(a == b, a.cmp(&b) == Ordering::Equal);
            if a == b {
                prop_assert_eq!(hash_of(&a), hash_of(&b));
            }
            // transitivity
            if a <= b && b <= c {
                prop_assert!(a <= c);
            }
            // reflexive
            prop_assert_eq!(a.cmp(&a), Ordering::Equal);
        }

        #[test]
        fn trailing_zero_parts_do_not_matter(base in proptest::collection::vec(0u32..50, 1..=3)) {
            let short = base.iter().map(u32::to_string).collect::<Vec<_>>().join(".");
            let long = format!("{short}.0");
            prop_assert_eq!(v(&short), v(&long));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = Version::parse(&s);
            let _ = Version::parse_loose(&s);
        }
    }
}
