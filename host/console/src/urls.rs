//! The console's own URLs: a sync's name as a path segment, so any name
//! (spaces, slashes, markup) addresses its sync and nothing else.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// The URL path of a sync's page (its name percent-encoded).
pub fn sync_path(name: &str) -> String {
    format!("/syncs/{}", encode_segment(name))
}

/// Everything but RFC 3986's unreserved characters is escaped.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `name` as one URL path segment.
pub fn encode_segment(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_names_are_one_path_segment() {
        assert_eq!(sync_path("people"), "/syncs/people");
        assert_eq!(sync_path("a b/../c?"), "/syncs/a%20b%2F..%2Fc%3F");
    }
}
