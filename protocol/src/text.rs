//! Small text helpers shared by parsers and error messages.

/// At most `max` characters of `text`, quoted, with its length when it was cut: error messages
/// never repeat a whole (possibly huge) input.
pub fn excerpt(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return format!("{text:?}");
    }
    let head: String = text.chars().take(max).collect();
    format!("{head:?}… ({} bytes)", text.len())
}

/// An error and its causes, joined by `: ` (each error says its own part; its cause is its
/// `source`).
pub fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short() {
        assert_eq!(excerpt("abc", 10), "\"abc\"");
        let e = excerpt(&"é".repeat(1000), 5);
        assert_eq!(e, "\"ééééé\"… (2000 bytes)");
    }

    #[test]
    fn causes_are_joined_once_each() {
        #[derive(Debug, thiserror::Error)]
        #[error("opening the state")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("disk full"));
        assert_eq!(causes(&e), "opening the state: disk full");
        assert_eq!(causes(&std::io::Error::other("alone")), "alone");
    }
}
