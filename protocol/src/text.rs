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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short() {
        assert_eq!(excerpt("abc", 10), "\"abc\"");
        let e = excerpt(&"é".repeat(1000), 5);
        assert_eq!(e, "\"ééééé\"… (2000 bytes)");
    }
}
