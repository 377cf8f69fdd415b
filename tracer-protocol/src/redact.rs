//! What the tool prints from the payload must not leak secrets.
//!
//! Header values are never printed, and the parsers never keep the ones that
//! carry credentials (Authorization, Proxy-Authorization, Cookie, Set-Cookie):
//! `http1` holds on only to the framing and upgrade headers it needs
//! (Connection, Upgrade, Content-Length, Transfer-Encoding,
//! Sec-WebSocket-Key/Accept/Protocol). What is left is the request path, whose
//! query string routinely carries tokens, session ids and personal data: with
//! redaction on, no byte of it survives.
use std::borrow::Cow;

/// The marker that stands in for a redacted query string.
const REDACTED: &str = "<redacted>";

/// `path` as it may be printed: with `redact`, everything after the first `?`
/// is replaced by a marker, so that the query's length is not disclosed either.
pub fn path(path: &str, redact: bool) -> Cow<'_, str> {
    match path.split_once('?') {
        Some((before, _)) if redact => Cow::Owned(format!("{before}?{REDACTED}")),
        _ => Cow::Borrowed(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn query_is_replaced() {
        assert_eq!(path("/search?q=secret", true), "/search?<redacted>");
        assert_eq!(path("/a?b?c#frag", true), "/a?<redacted>");
        assert_eq!(path("/empty?", true), "/empty?<redacted>");
    }

    #[test]
    fn path_without_query_is_borrowed() {
        assert!(matches!(path("/index.html", true), Cow::Borrowed("/index.html")));
    }

    #[test]
    fn no_redaction_keeps_the_query() {
        assert!(matches!(
            path("/search?q=secret", false),
            Cow::Borrowed("/search?q=secret")
        ));
    }

    proptest! {
        #[test]
        fn no_byte_of_the_query_survives(before in "[^?]*", query in ".*") {
            let full = format!("{before}?{query}");
            prop_assert_eq!(path(&full, true), format!("{before}?{REDACTED}"));
        }
    }
}
