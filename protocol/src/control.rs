//! Control files: the `key: value` records that describe a package (WAPT's `WAPT/control`).
//!
//! The format, exactly as WAPT reads it:
//! * one `key: value` per line; the key is the text before the first `:`, trimmed and
//!   lower-cased; the value is the rest, trimmed;
//! * a line starting with a space or a tab continues the previous value (joined with `\n`, each
//!   line trimmed);
//! * a blank line ends a record (and separates records in an index);
//! * a line without `:` is an error; there is no comment syntax (`a: b # c` keeps `b # c`);
//! * a repeated key: the last one wins (it keeps the place of the first);
//! * `size` and `installed_size` are kept as written: whole numbers in practice, but a vendor
//!   may have signed other text, and WAPT signs it as text ([`Control::get_u64`] reads them);
//! * UTF-8 (a leading byte-order mark is tolerated on reading, never written).
//!
//! Writing uses WAPT's `"%-18s: %s"` layout; values spanning several lines are written as
//! continuation lines. Writing a [`Control`] and parsing the text gives the same fields back.

use std::fmt;
use std::io::BufRead;

/// Fields that hold whole numbers of bytes (WAPT signs them as JSON numbers when numeric).
pub const INTEGER_FIELDS: [&str; 2] = ["size", "installed_size"];

/// Fields every package control must carry.
pub const REQUIRED_FIELDS: [&str; 5] = ["package", "version", "architecture", "section", "priority"];

/// Largest control text accepted (a control is a few KiB; an index holds many of them), and
/// largest record of an index: a parser never holds more than this of one record.
pub const MAX_CONTROL_BYTES: usize = 1024 * 1024;
/// Longest excerpt of an offending line quoted in an error.
pub const EXCERPT_CHARS: usize = 60;

/// One control record: fields in the order they first appeared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Control {
    fields: Vec<(String, String)>,
}

/// A record of an index, with the line it starts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// 1-based line number of the record's first field.
    pub line: usize,
    /// The record's fields.
    pub control: Control,
}

/// Why a control text could not be read. Every variant names the 1-based line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// A line that is neither `key: value` nor a continuation (`text` is an excerpt).
    #[error("line {line}: no ':' in {text}; each line must be `key: value` (there is no comment syntax)")]
    NoColon { line: usize, text: String },
    /// `: value` with nothing before the colon.
    #[error("line {line}: the field name before ':' is empty")]
    EmptyKey { line: usize },
    /// An indented line before any field.
    #[error("line {line}: continuation line (starts with a space) before any field")]
    OrphanContinuation { line: usize },
    /// Bytes that are not UTF-8.
    #[error("line {line}: not valid UTF-8 (control files are UTF-8)")]
    InvalidUtf8 { line: usize },
    /// A record (or a line) larger than [`MAX_CONTROL_BYTES`].
    #[error("line {line}: the record starting at line {start} is larger than {MAX_CONTROL_BYTES} bytes")]
    RecordTooLarge { line: usize, start: usize },
    /// The text could not be read.
    #[error("line {line}: reading failed: {reason}")]
    Read { line: usize, reason: String },
    /// A second record after a blank line, in a text that must hold one record.
    #[error(
        "line {line}: a second record starts here; a control file holds one record (remove the blank line above it)"
    )]
    SecondRecord { line: usize },
    /// No field at all.
    #[error("no field found: the control is empty")]
    Empty,
    /// A field given as data (not parsed from text) that a control cannot hold.
    #[error("field {key:?}: {reason}")]
    InvalidField { key: String, reason: &'static str },
    /// More bytes than [`MAX_CONTROL_BYTES`].
    #[error("the control is {size} bytes; the limit is {MAX_CONTROL_BYTES}")]
    TooLarge { size: usize },
}

impl ControlError {
    /// The line the error is on, when it is about one line.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::NoColon { line, .. }
            | Self::EmptyKey { line }
            | Self::OrphanContinuation { line }
            | Self::InvalidUtf8 { line }
            | Self::RecordTooLarge { line, .. }
            | Self::Read { line, .. }
            | Self::SecondRecord { line } => Some(*line),
            Self::Empty | Self::TooLarge { .. } | Self::InvalidField { .. } => None,
        }
    }
}

impl Control {
    /// An empty control.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a text holding exactly one record (blank lines around it are allowed).
    pub fn parse(text: &str) -> Result<Self, ControlError> {
        if text.len() > MAX_CONTROL_BYTES {
            return Err(ControlError::TooLarge { size: text.len() });
        }
        let mut records = parse_records(text)?;
        match records.len() {
            0 => Err(ControlError::Empty),
            1 => Ok(records.remove(0).control),
            _ => Err(ControlError::SecondRecord { line: records[1].line }),
        }
    }

    /// Parses bytes holding one record, checking they are UTF-8 first.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, ControlError> {
        if bytes.len() > MAX_CONTROL_BYTES {
            return Err(ControlError::TooLarge { size: bytes.len() });
        }
        let mut records = parse_records_bytes(bytes)?;
        match records.len() {
            0 => Err(ControlError::Empty),
            1 => Ok(records.remove(0).control),
            _ => Err(ControlError::SecondRecord { line: records[1].line }),
        }
    }

    /// Builds a control from fields given as data (a decoded manifest), refusing what text
    /// could not hold: keys that are empty, not lower-case, or hold `:` or spaces at either
    /// end; values with blank or untrimmed lines; repeated keys.
    pub fn from_fields(fields: Vec<(String, String)>) -> Result<Self, ControlError> {
        let mut control = Control::new();
        for (key, value) in fields {
            let bad = |reason| ControlError::InvalidField { key: key.clone(), reason };
            if key.is_empty() || key.trim() != key || key.contains([':', '\n', '\r']) || key.to_lowercase() != key {
                return Err(bad("not a valid field name"));
            }
            if normalise_value(&value) != value {
                return Err(bad("the value has blank or untrimmed lines"));
            }
            if control.get(&key).is_some() {
                return Err(bad("repeated"));
            }
            control.fields.push((key, value));
        }
        Ok(control)
    }

    /// The value of `key` (lower-case), if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or `""` when absent.
    pub fn get_or_empty(&self, key: &str) -> &str {
        self.get(key).unwrap_or("")
    }

    /// Sets `key` to `value`, replacing an earlier value in place.
    ///
    /// The key is trimmed and lower-cased. The value is normalised the way reading would see
    /// it: each line trimmed, blank lines dropped (a blank line would end the record).
    ///
    /// # Panics
    /// When the key is empty or holds `:` or a line break: keys come from code or from a
    /// parsed control, where neither can happen.
    pub fn set(&mut self, key: &str, value: &str) {
        let key = key.trim().to_lowercase();
        assert!(!key.is_empty() && !key.contains([':', '\n', '\r']), "invalid control key {key:?}");
        let value = normalise_value(value);
        match self.fields.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((key, value)),
        }
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let at = self.fields.iter().position(|(k, _)| k == key)?;
        Some(self.fields.remove(at).1)
    }

    /// The fields in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when there is no field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The required fields ([`REQUIRED_FIELDS`]) that are absent or empty.
    pub fn missing_required(&self) -> Vec<&'static str> {
        REQUIRED_FIELDS.iter().copied().filter(|k| self.get(k).is_none_or(str::is_empty)).collect()
    }

    /// A whole-number field (`size`, `installed_size`): `None` when absent or empty.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).filter(|v| !v.is_empty()).and_then(|v| v.parse().ok())
    }

    /// The text of the control, WAPT's layout (`"%-18s: %s"`), ending with a line break.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (key, value) in &self.fields {
            let mut lines = value.split('\n');
            let first = lines.next().unwrap_or("");
            out.push_str(&format!("{key:<18}: {first}\n"));
            for line in lines {
                out.push(' ');
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl fmt::Display for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl FromIterator<(String, String)> for Control {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut control = Control::new();
        for (k, v) in iter {
            control.set(&k, &v);
        }
        control
    }
}

/// Parses an index text: records separated by blank lines. Every record is returned.
pub fn parse_records(text: &str) -> Result<Vec<Record>, ControlError> {
    parse_records_reader(text.as_bytes())
}

/// Parses index bytes.
pub fn parse_records_bytes(bytes: &[u8]) -> Result<Vec<Record>, ControlError> {
    parse_records_reader(bytes)
}

/// Parses an index read line by line from `reader`: a parser holds at most one record of
/// [`MAX_CONTROL_BYTES`] beyond the records already parsed, whatever the input (a huge line is
/// an error after that many bytes, not a huge allocation).
pub fn parse_records_reader<R: std::io::BufRead>(mut reader: R) -> Result<Vec<Record>, ControlError> {
    let mut parser = Parser::default();
    let mut buf = Vec::new();
    let mut line = 0usize;
    loop {
        line += 1;
        buf.clear();
        let limit = (MAX_CONTROL_BYTES + 2) as u64;
        let n = std::io::Read::take(&mut reader, limit)
            .read_until(b'\n', &mut buf)
            .map_err(|e| ControlError::Read { line, reason: e.to_string() })?;
        if n == 0 {
            break;
        }
        if buf.len() > MAX_CONTROL_BYTES {
            return Err(ControlError::RecordTooLarge { line, start: parser.start().unwrap_or(line) });
        }
        let text = std::str::from_utf8(&buf).map_err(|_| ControlError::InvalidUtf8 { line })?;
        let text = text.strip_suffix('\n').unwrap_or(text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        let text = if line == 1 { text.strip_prefix('\u{feff}').unwrap_or(text) } else { text };
        parser.line(line, text)?;
    }
    Ok(parser.finish())
}

/// Writes records as an index text (records separated by one blank line).
pub fn write_records<'a>(controls: impl IntoIterator<Item = &'a Control>) -> String {
    controls.into_iter().map(Control::to_text).collect::<Vec<_>>().join("\n")
}

fn normalise_value(value: &str) -> String {
    value.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("\n")
}

/// The control parser, fed one line at a time.
#[derive(Default)]
struct Parser {
    records: Vec<Record>,
    current: Option<Record>,
    last_key: Option<String>,
    /// Bytes of the current record so far.
    size: usize,
}

impl Parser {
    fn start(&self) -> Option<usize> {
        self.current.as_ref().map(|r| r.line)
    }

    fn line(&mut self, line: usize, raw: &str) -> Result<(), ControlError> {
        if raw.trim().is_empty() {
            if let Some(record) = self.current.take() {
                self.records.push(record);
            }
            self.last_key = None;
            self.size = 0;
            return Ok(());
        }
        self.size += raw.len() + 1;
        if self.size > MAX_CONTROL_BYTES {
            return Err(ControlError::RecordTooLarge { line, start: self.start().unwrap_or(line) });
        }
        if raw.starts_with([' ', '\t']) {
            let (Some(record), Some(key)) = (self.current.as_mut(), self.last_key.as_ref()) else {
                return Err(ControlError::OrphanContinuation { line });
            };
            let slot = record.control.fields.iter_mut().find(|(k, _)| k == key);
            let slot = slot.expect("the last key is always present in its record");
            if slot.1.is_empty() {
                slot.1 = raw.trim().to_string();
            } else {
                slot.1.push('\n');
                slot.1.push_str(raw.trim());
            }
            return Ok(());
        }
        let Some((key, value)) = raw.split_once(':') else {
            return Err(ControlError::NoColon { line, text: crate::text::excerpt(raw, EXCERPT_CHARS) });
        };
        let key = key.trim().to_lowercase();
        if key.is_empty() {
            return Err(ControlError::EmptyKey { line });
        }
        let value = value.trim();
        let record = self.current.get_or_insert_with(|| Record { line, control: Control::new() });
        match record.control.fields.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => record.control.fields.push((key.clone(), value.to_string())),
        }
        self.last_key = Some(key);
        Ok(())
    }

    fn finish(mut self) -> Vec<Record> {
        if let Some(record) = self.current.take() {
            self.records.push(record);
        }
        self.records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_keys_values_and_continuations() {
        let text = "Package : tis-foo\nversion: 1.2-3\ndescription: first\n  second line \n\tthird\n";
        let c = Control::parse(text).unwrap();
        assert_eq!(c.get("package"), Some("tis-foo"));
        assert_eq!(c.get("version"), Some("1.2-3"));
        assert_eq!(c.get("description"), Some("first\nsecond line\nthird"));
    }

    #[test]
    fn no_comment_syntax_and_first_colon_splits() {
        let c = Control::parse("section : base # note\nsources: https://x.org/a:b\n").unwrap();
        assert_eq!(c.get("section"), Some("base # note"));
        assert_eq!(c.get("sources"), Some("https://x.org/a:b"));
    }

    #[test]
    fn last_repeated_key_wins_in_first_place() {
        let c = Control::parse("a: 1\nb: 2\nA: 3\n").unwrap();
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![("a", "3"), ("b", "2")]);
    }

    #[test]
    fn errors_carry_line_numbers() {
        let cases: &[(&str, ControlError)] = &[
            ("a: 1\nbad line\n", ControlError::NoColon { line: 2, text: "\"bad line\"".into() }),
            ("a: 1\n: x\n", ControlError::EmptyKey { line: 2 }),
            (" x\na: 1\n", ControlError::OrphanContinuation { line: 1 }),
            ("a: 1\n\nb: 2\n", ControlError::SecondRecord { line: 3 }),
            ("\n \n", ControlError::Empty),
        ];
        for (text, want) in cases {
            assert_eq!(&Control::parse(text).unwrap_err(), want, "{text:?}");
        }
        let err = Control::parse_bytes(b"a: 1\nb: \xff\n").unwrap_err();
        assert_eq!(err, ControlError::InvalidUtf8 { line: 2 });
        assert!(err.to_string().starts_with("line 2:"));
    }

    #[test]
    fn integers_and_crlf_and_bom() {
        let c = Control::parse("\u{feff}size: 0042\r\ninstalled_size:\r\n").unwrap();
        assert_eq!(c.get_u64("size"), Some(42));
        assert_eq!(c.get_u64("installed_size"), None);
        assert_eq!(c.get("installed_size"), Some(""));
        // A vendor may have written (and signed) text: it is kept as it is.
        let c = Control::parse("package: a\ninstalled_size: 12 MB\nsize: 1.5e3\n").unwrap();
        assert_eq!(c.get("installed_size"), Some("12 MB"));
        assert_eq!(c.get_u64("installed_size"), None);
        assert_eq!(c.get_u64("size"), None);
    }

    #[test]
    fn huge_lines_are_refused_early_and_quoted_briefly() {
        let long = "x".repeat(3 * MAX_CONTROL_BYTES);
        let err = parse_records(&format!("package: a\n{long}\n")).unwrap_err();
        assert_eq!(err, ControlError::RecordTooLarge { line: 2, start: 1 });
        let err = parse_records(&format!("package: a\n{}\n", "y".repeat(5000))).unwrap_err();
        let text = err.to_string();
        assert!(text.len() < 200 && text.contains("5000 bytes"), "{text}");
        // Many small records are fine; one record over the limit is not.
        let many: String = (0..2000).map(|i| format!("package: p{i}\nversion: 1\n\n")).collect();
        assert_eq!(parse_records(&many).unwrap().len(), 2000);
        let big_record: String = (0..20_000).map(|i| format!("k{i}: {}\n", "v".repeat(60))).collect();
        assert!(matches!(parse_records(&big_record), Err(ControlError::RecordTooLarge { start: 1, .. })));
    }

    #[test]
    fn writes_wapt_layout() {
        let mut c = Control::new();
        c.set("package", "tis-foo");
        c.set("depends", "");
        c.set("description", "one\n two");
        assert_eq!(c.to_text(), "package           : tis-foo\ndepends           : \ndescription       : one\n two\n");
    }

    #[test]
    fn index_records_keep_their_lines() {
        let text = "package: a\nversion: 1\n\n\npackage: b\nversion: 2\n";
        let records = parse_records(text).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].line, 5);
        assert_eq!(records[1].control.get("package"), Some("b"));
        let again = parse_records(&write_records(records.iter().map(|r| &r.control))).unwrap();
        assert_eq!(
            again.iter().map(|r| &r.control).collect::<Vec<_>>(),
            vec![&records[0].control, &records[1].control]
        );
    }

    fn key() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9_]{0,20}".prop_filter("integer fields hold numbers", |k| !INTEGER_FIELDS.contains(&k.as_str()))
    }

    proptest! {
        #[test]
        fn write_then_read_gives_the_same_values(
            fields in proptest::collection::vec((key(), "\\PC{0,40}(\n\\PC{0,20}){0,3}"), 1..12)
        ) {
            let mut c = Control::new();
            for (k, v) in &fields {
                c.set(k, v);
            }
            prop_assume!(!c.is_empty());
            let back = Control::parse(&c.to_text()).unwrap();
            prop_assert_eq!(back, c);
        }

        #[test]
        fn parsing_never_panics(text in "\\PC{0,200}(\n[ a-z:]{0,20}){0,10}") {
            let _ = Control::parse(&text);
            let _ = parse_records(&text);
        }
    }
}
