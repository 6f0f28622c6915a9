//! The HTTP seam between the sync logic and whatever sends requests.
//!
//! The component sends through `wasi:http` (see `component.rs`); unit tests
//! answer from memory. Credentials never pass through here: the host adds them.

use crate::errors;
use crate::types::{HttpFailure, SyncError};

/// An HTTP method the API clients use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Patch,
}

/// A request, fully built: the URL includes the query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: Method,
    pub url: String,
    /// JSON body for POST and PATCH requests.
    pub body: Option<Vec<u8>>,
}

/// A response as received; any status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Vec<u8>,
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// The host refused to send it (the destination is not an allowed host).
    Denied(String),
    /// Connect failure, timeout, reset, a body cut short.
    Failed(String),
    /// The response was larger than the host accepts.
    TooLarge(String),
}

/// Something that can send an [`HttpRequest`].
pub trait Transport {
    /// Sends `request` and waits for its answer. If `request` equals one
    /// sent ahead, that one's answer is the answer.
    fn send(&mut self, request: &HttpRequest) -> Result<HttpResponse, TransportError>;

    /// Starts `request` now because a later [`Transport::send`] of an equal
    /// request is expected (the next page, once its cursor is read); its
    /// answer waits for that call. A transport that cannot send in the
    /// background does nothing, and the later call sends it.
    fn send_ahead(&mut self, _request: &HttpRequest) {}
}

/// Sends `request` and returns the body of a 2xx response. A request that got
/// no answer is classified here (denied, too large, transient); an answer
/// with another status by `classify`, which knows the API's error bodies.
pub fn exchange(
    transport: &mut impl Transport,
    request: &HttpRequest,
    classify: impl FnOnce(HttpFailure) -> SyncError,
) -> Result<Vec<u8>, SyncError> {
    let what = || format!("{} {}", method_name(request.method), path_of(&request.url));
    let response = transport.send(request).map_err(|e| match e {
        TransportError::Denied(detail) => errors::request_denied(&detail),
        TransportError::TooLarge(detail) => {
            errors::response_too_large(&format!("{}: {detail}", what()))
        }
        TransportError::Failed(detail) => {
            errors::transient(format!("{} did not complete: {detail}", what()))
        }
    })?;
    if (200..300).contains(&response.status) {
        return Ok(response.body);
    }
    Err(classify(HttpFailure {
        status: response.status,
        retry_after: response.retry_after,
        body: String::from_utf8_lossy(&response.body).into_owned(),
    }))
}

/// Reads a success answer's JSON; a body that is not the documented shape
/// is `invalid-response`, naming `what` was read.
pub fn parse_json<'a, T: serde::Deserialize<'a>>(
    body: &'a [u8],
    what: &str,
) -> Result<T, SyncError> {
    // Checked as UTF-8 once, the answer is read as text: reading bytes
    // checks every string on its own, which costs more for many short
    // strings (a page's property names and values), most of all in wasm,
    // whose word is four bytes. Bytes that are not UTF-8 are read as bytes,
    // for the error that names where.
    let read = match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    };
    read.map_err(|e| {
        errors::invalid_response(&format!(
            "the {what} is not valid JSON of the documented shape ({e})"
        ))
    })
}

fn method_name(method: Method) -> &'static str {
    match method {
        Method::Get => "GET",
        Method::Post => "POST",
        Method::Patch => "PATCH",
    }
}

/// The path of a URL, for messages: never the host, which may be internal.
fn path_of(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
    path.split('?').next().unwrap_or(path)
}

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`).
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a query-string or path component (RFC 3986 unreserved set kept).
pub fn encode_component(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, COMPONENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_unreserved_and_escapes_the_rest() {
        assert_eq!(encode_component("abc-1.2_~"), "abc-1.2_~");
        assert_eq!(encode_component("a b/c?d=e&f"), "a%20b%2Fc%3Fd%3De%26f");
        assert_eq!(encode_component("é"), "%C3%A9");
    }
}
