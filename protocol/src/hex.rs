//! Lower-case hexadecimal, the one text form of hashes and fingerprints.

/// Lower-case hex of bytes.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// Parses lower-case hex digits, two a byte; `None` for anything else.
#[must_use]
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let value = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    digits.chunks_exact(2).map(|pair| Some(value(pair[0])? << 4 | value(pair[1])?)).collect()
}

/// Parses the 64 lower-case hex digits of a 32-byte hash; `None` for anything else.
#[must_use]
pub fn parse_hex(text: &str) -> Option<[u8; 32]> {
    decode(text)?.try_into().ok()
}

/// For tests (here and in the crates that store these encodings): asserts that `bytes` are the frozen encoding `golden` of `what`, printing the
/// encoding found when they are not (a changed encoding of a stored or sent version breaks every
/// reader of what was written before: add a version instead).
#[track_caller]
pub fn assert_golden(what: &str, bytes: &[u8], golden: &str) {
    assert!(hex(bytes) == golden, "the encoding of {what} changed; it is now:\n{}", hex(bytes));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_is_not_a_hash() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        let text = hex(&bytes);
        assert_eq!(text.len(), 64);
        assert_eq!(&text[..6], "00254a");
        assert_eq!(parse_hex(&text), Some(bytes));
        assert_eq!(parse_hex(&text.to_uppercase()), None, "upper case is not the canonical form");
        assert_eq!(parse_hex(&text[..62]), None);
        assert_eq!(parse_hex(&format!("{}zz", &text[..62])), None);
        assert_eq!(parse_hex(&format!("{}é", &text[..62])), None);
        assert_eq!(decode("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(decode("0"), None);
        assert_eq!(decode(""), Some(vec![]));
    }
}
