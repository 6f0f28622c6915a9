//! Showing values from a source to people. Source data is untrusted: a name
//! may carry control characters or bidirectional overrides that would
//! rearrange or corrupt a terminal or a page around it, so human output
//! shows them escaped (`\u{202e}`). JSON output keeps every value verbatim.

/// `text` with control characters and bidirectional controls escaped.
pub fn shown(text: &str) -> String {
    text.chars()
        .map(|c| {
            let bidi = matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
            if c.is_control() || bidi {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn control_and_bidi_characters_are_escaped() {
        assert_eq!(
            shown("a\u{0}b\u{202E}c\u{1b}[31m ok 🙂"),
            "a\\u{0}b\\u{202e}c\\u{1b}[31m ok 🙂"
        );
    }
}
