//! The JSON WAPT signs: Python's `json.dumps(obj, sort_keys=True, separators=(',', ':'))` with
//! `ensure_ascii`, byte for byte.

use std::collections::BTreeMap;

/// A value in a signed control map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A string.
    Str(String),
    /// A whole number, as digits (Python ints have no size limit).
    Int(String),
}

/// Serialises a flat map the way WAPT's Python does. Keys sort by code point, which is the
/// order of `String` in a `BTreeMap`.
pub fn dumps_sorted(map: &BTreeMap<String, Value>) -> String {
    let mut out = String::from("{");
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_string(&mut out, key);
        out.push(':');
        match value {
            Value::Str(s) => push_string(&mut out, s),
            Value::Int(digits) => out.push_str(digits),
        }
    }
    out.push('}');
    out
}

/// The integer form Python's `int()` gives ASCII digits: no leading zeros.
pub fn int_digits(text: &str) -> Option<String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let trimmed = text.trim_start_matches('0');
    Some(if trimmed.is_empty() { "0".to_string() } else { trimmed.to_string() })
}

fn push_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_python() {
        let mut m = BTreeMap::new();
        m.insert("b".to_string(), Value::Str("é\"\\\n\t\u{7f}😀 x".into()));
        m.insert("a".to_string(), Value::Int(int_digits("0042").unwrap()));
        m.insert("c".to_string(), Value::Str(String::new()));
        // python3 -c 'import json;print(json.dumps({"b":"é\"\\\n\t\x7f😀 x","a":42,"c":""},sort_keys=True,separators=(",",":")))'
        assert_eq!(dumps_sorted(&m), r#"{"a":42,"b":"\u00e9\"\\\n\t\u007f\ud83d\ude00 x","c":""}"#);
        assert_eq!(int_digits("000"), Some("0".into()));
        assert_eq!(int_digits("12a"), None);
    }
}
