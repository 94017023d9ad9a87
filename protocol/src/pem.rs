//! PEM (RFC 7468) sections: `-----BEGIN LABEL-----`, base64, `-----END LABEL-----`.

use base64::Engine as _;

/// One decoded PEM section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// The label (`CERTIFICATE`, `ENCRYPTED PRIVATE KEY`, …).
    pub label: String,
    /// The decoded bytes.
    pub der: Vec<u8>,
}

/// Why a PEM text could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    /// A BEGIN line without its END line.
    #[error("line {line}: '-----BEGIN {label}-----' has no matching END line")]
    Unterminated { line: usize, label: String },
    /// A body that is not base64.
    #[error("line {line}: the {label} section is not valid base64")]
    Base64 { line: usize, label: String },
}

/// Encodes bytes as a PEM section with 64-character lines.
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Every section of a PEM text, in order; text outside sections is ignored.
pub fn parse(text: &str) -> Result<Vec<Section>, PemError> {
    let mut sections = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let Some(label) = line.trim().strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        let mut closed = false;
        for (_, inner) in lines.by_ref() {
            let inner = inner.trim();
            if inner == end {
                closed = true;
                break;
            }
            // Encapsulated headers (`Proc-Type: …`) are not base64; they carry nothing we use.
            if !inner.contains(':') {
                body.push_str(inner);
            }
        }
        if !closed {
            return Err(PemError::Unterminated { line: index + 1, label: label.to_string() });
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .map_err(|_| PemError::Base64 { line: index + 1, label: label.to_string() })?;
        sections.push(Section { label: label.to_string(), der });
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let text = format!("junk\n{}{}", encode("A", &[1, 2, 3]), encode("B", &[0; 100]));
        let s = parse(&text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].label.as_str(), s[0].der.as_slice()), ("A", &[1u8, 2, 3][..]));
        assert_eq!(s[1].der.len(), 100);
        assert!(matches!(parse("-----BEGIN A-----\nAAAA\n"), Err(PemError::Unterminated { line: 1, .. })));
        assert!(matches!(parse("-----BEGIN A-----\n!!\n-----END A-----\n"), Err(PemError::Base64 { .. })));
    }
}
