//! Package requests: `name`, `name(>=1.2)`, `name(=1.2-3)`, … as found in `depends`,
//! `conflicts` and on the command line.
//!
//! Operators are `> < = == >= <=` (an empty operator means `=`); spaces are allowed around
//! the parenthesis and the operator. When the request's version has no packaging number, only
//! the software versions are compared: `foo(=1.2)` matches `1.2-1` and `1.2-7`.

use std::cmp::Ordering;
use std::fmt;

use crate::version::{Version, VersionError};

/// Longest package name accepted in a request.
pub const MAX_NAME_LEN: usize = 256;

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Operator {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `=` or `==`
    Eq,
    /// `>=`
    Ge,
    /// `>`
    Gt,
}

impl Operator {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "" | "=" | "==" => Self::Eq,
            "<" => Self::Lt,
            "<=" => Self::Le,
            ">=" => Self::Ge,
            ">" => Self::Gt,
            _ => return None,
        })
    }

    fn holds(self, ord: Ordering) -> bool {
        match self {
            Self::Lt => ord == Ordering::Less,
            Self::Le => ord != Ordering::Greater,
            Self::Eq => ord == Ordering::Equal,
            Self::Ge => ord != Ordering::Less,
            Self::Gt => ord == Ordering::Greater,
        }
    }

    /// The operator as written in canonical form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Eq => "=",
            Self::Ge => ">=",
            Self::Gt => ">",
        }
    }
}

/// A version condition of a request.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Condition {
    /// How to compare.
    pub operator: Operator,
    /// With what.
    pub version: Version,
}

/// A request for a package, optionally with a version condition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PackageRequest {
    /// The package name.
    pub name: String,
    /// The version condition, if any.
    pub condition: Option<Condition>,
}

/// Why a request text is not a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Nothing before the parenthesis.
    #[error("invalid package request {text:?}: the package name is missing")]
    NoName { text: String },
    /// A name with characters a name cannot hold.
    #[error(
        "invalid package request {text:?}: the name may not contain spaces, commas, parentheses or control characters"
    )]
    BadName { text: String },
    /// `(` without `)`, or text after `)`.
    #[error("invalid package request {text:?}: expected name(operator version), like tis-firefox(>=59)")]
    Syntax { text: String },
    /// An operator other than `> < = == >= <=`.
    #[error("invalid package request {text:?}: unknown operator {operator:?} (use one of > < = == >= <=)")]
    Operator { text: String, operator: String },
    /// A version that does not parse.
    #[error("invalid package request {text:?}: {error}")]
    Version { text: String, error: VersionError },
}

impl PackageRequest {
    /// A request for any version of `name`.
    pub fn any(name: &str) -> Self {
        Self { name: name.to_string(), condition: None }
    }

    /// Parses one request.
    pub fn parse(text: &str) -> Result<Self, RequestError> {
        let trimmed = text.trim();
        let (name, rest) = match trimmed.find('(') {
            Some(at) => (trimmed[..at].trim(), Some(&trimmed[at + 1..])),
            None => (trimmed, None),
        };
        if name.is_empty() {
            return Err(RequestError::NoName { text: text.to_string() });
        }
        if name.len() > MAX_NAME_LEN || name.chars().any(|c| c.is_whitespace() || c.is_control() || ",()".contains(c)) {
            return Err(RequestError::BadName { text: text.to_string() });
        }
        let Some(rest) = rest else {
            return Ok(Self::any(name));
        };
        let Some(inner) = rest.strip_suffix(')') else {
            return Err(RequestError::Syntax { text: text.to_string() });
        };
        let inner = inner.trim();
        let split = inner.find(|c: char| !"<=>".contains(c)).unwrap_or(inner.len());
        let (op_text, version_text) = inner.split_at(split);
        let operator = Operator::parse(op_text)
            .ok_or_else(|| RequestError::Operator { text: text.to_string(), operator: op_text.to_string() })?;
        let version = Version::parse(version_text.trim())
            .map_err(|source| RequestError::Version { text: text.to_string(), error: source })?;
        Ok(Self { name: name.to_string(), condition: Some(Condition { operator, version }) })
    }

    /// Parses a comma-separated list (`depends`, `conflicts`); empty items are skipped.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, RequestError> {
        text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(Self::parse).collect()
    }

    /// True when a package called `name` at `version` satisfies this request.
    pub fn matches(&self, name: &str, version: &Version) -> bool {
        self.name == name && self.matches_version(version)
    }

    /// True when `version` satisfies the condition (or there is none).
    pub fn matches_version(&self, version: &Version) -> bool {
        let Some(cond) = &self.condition else {
            return true;
        };
        let ord =
            if cond.version.has_packaging() { version.cmp(&cond.version) } else { version.cmp_software(&cond.version) };
        cond.operator.holds(ord)
    }
}

impl fmt::Display for PackageRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.condition {
            None => f.write_str(&self.name),
            Some(c) => write!(f, "{}({}{})", self.name, c.operator.as_str(), c.version),
        }
    }
}

impl std::str::FromStr for PackageRequest {
    type Err = RequestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn parses_forms() {
        let r = PackageRequest::parse("tis-firefox").unwrap();
        assert_eq!((r.name.as_str(), r.condition), ("tis-firefox", None));
        for (text, op, ver) in [
            ("a(>=1.2)", Operator::Ge, "1.2"),
            ("a (= 1.2-3)", Operator::Eq, "1.2-3"),
            ("a(==1.2)", Operator::Eq, "1.2"),
            ("a(1.2)", Operator::Eq, "1.2"),
            ("a(<2)", Operator::Lt, "2"),
            ("a(<=2)", Operator::Le, "2"),
            ("a(>2)", Operator::Gt, "2"),
        ] {
            let r = PackageRequest::parse(text).unwrap();
            let c = r.condition.unwrap();
            assert_eq!((r.name.as_str(), c.operator, c.version.as_str()), ("a", op, ver), "{text}");
        }
    }

    #[test]
    fn refuses_with_reasons() {
        assert!(matches!(PackageRequest::parse("(>=1)"), Err(RequestError::NoName { .. })));
        assert!(matches!(PackageRequest::parse("a b"), Err(RequestError::BadName { .. })));
        assert!(matches!(PackageRequest::parse("a(>=1"), Err(RequestError::Syntax { .. })));
        assert!(matches!(PackageRequest::parse("a(>=1)x"), Err(RequestError::Syntax { .. })));
        assert!(matches!(PackageRequest::parse("a(=>1)"), Err(RequestError::Operator { .. })));
        assert!(matches!(PackageRequest::parse("a(>=x)"), Err(RequestError::Version { .. })));
        let msg = PackageRequest::parse("a(>=x)").unwrap_err().to_string();
        assert!(msg.contains("a(>=x)") && msg.contains("invalid version"), "{msg}");
    }

    #[test]
    fn without_packaging_only_software_counts() {
        let r = PackageRequest::parse("a(=1.2)").unwrap();
        assert!(r.matches("a", &v("1.2-1")) && r.matches("a", &v("1.2-7")) && r.matches("a", &v("1.2")));
        assert!(!r.matches("a", &v("1.3-1")) && !r.matches("b", &v("1.2-1")));
        let r = PackageRequest::parse("a(>1.2)").unwrap();
        assert!(!r.matches("a", &v("1.2-5")));
        assert!(r.matches("a", &v("1.2.1-1")));
        let r = PackageRequest::parse("a(=1.2-3)").unwrap();
        assert!(r.matches("a", &v("1.2-3")) && !r.matches("a", &v("1.2-4")));
        let r = PackageRequest::parse("a(<=1.2)").unwrap();
        assert!(r.matches("a", &v("1.2-99")) && !r.matches("a", &v("1.2.1")));
    }

    #[test]
    fn lists() {
        let l = PackageRequest::parse_list(" a, b(>=2) ,,c ").unwrap();
        assert_eq!(l.iter().map(ToString::to_string).collect::<Vec<_>>(), ["a", "b(>=2)", "c"]);
        assert!(PackageRequest::parse_list("").unwrap().is_empty());
    }

    proptest! {
        #[test]
        fn request_without_packaging_ignores_it(
            soft in proptest::collection::vec(0u32..20, 1..=4),
            pack_a in 0u32..50, pack_b in 0u32..50,
            op in prop::sample::select(vec!["<", "<=", "=", ">=", ">"]),
        ) {
            let s = soft.iter().map(u32::to_string).collect::<Vec<_>>().join(".");
            let r = PackageRequest::parse(&format!("p({op}{s})")).unwrap();
            let a = v(&format!("{s}-{pack_a}"));
            let b = v(&format!("{s}-{pack_b}"));
            prop_assert_eq!(r.matches_version(&a), r.matches_version(&b));
        }

        #[test]
        fn display_round_trips(name in "[a-z][a-z0-9-]{0,10}", ver in "[0-9]{1,3}(\\.[0-9]{1,3}){0,3}(-[0-9a-z]{1,3})?",
                               op in prop::sample::select(vec!["<", "<=", "=", ">=", ">"])) {
            let r = PackageRequest::parse(&format!("{name}({op}{ver})")).unwrap();
            prop_assert_eq!(PackageRequest::parse(&r.to_string()).unwrap(), r);
        }
    }
}
