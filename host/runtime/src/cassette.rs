//! Recorded HTTP exchanges ("cassettes"): replayed offline by the HTTP hooks,
//! written by `crmsync sync --record`.
//!
//! Format (JSON, version 1):
//!
//! ```json
//! { "crmsync_cassette": 1,
//!   "note": "free text",
//!   "exchanges": [
//!     { "request":  { "method": "GET", "url": "/crm/v3/objects/contacts?limit=100", "body": null },
//!       "response": { "status": 200, "headers": { "content-type": "application/json" },
//!                     "body": { "results": [] } } } ] }
//! ```
//!
//! `url` is the path and query only, so a cassette replays against any
//! `source.base_url`. A request `body` that is JSON is compared as JSON; a
//! missing request body matches any body. A response `body` holds JSON; a
//! body that is not JSON goes in `body_text` instead, verbatim. Request
//! headers are never recorded, so no credential can end up in a cassette.
//!
//! Replay answers each request with the first unused matching exchange, in
//! file order (so "429, then 200" replays as such); once all matching
//! exchanges are used, the last one answers again, so a cassette replays any
//! number of runs.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

const FORMAT_VERSION: u32 = 1;

/// A list of recorded exchanges.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cassette {
    pub crmsync_cassette: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub exchanges: Vec<Exchange>,
    #[serde(skip)]
    used: Vec<bool>,
}

/// One request and its response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exchange {
    pub request: RecordedRequest,
    pub response: RecordedResponse,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, e.g. `/crm/v3/objects/contacts?limit=100&after=2`.
    pub url: String,
    #[serde(default)]
    pub body: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedResponse {
    pub status: u16,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_text: Option<String>,
}

impl Cassette {
    /// An empty cassette, for recording.
    pub fn new(note: Option<String>) -> Self {
        Cassette {
            crmsync_cassette: FORMAT_VERSION,
            note,
            exchanges: Vec::new(),
            used: Vec::new(),
        }
    }

    /// Reads a cassette file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read cassette {}", path.display()))?;
        let mut cassette: Cassette = serde_json::from_str(&text)
            .with_context(|| format!("cassette {} is not a crmsync cassette", path.display()))?;
        if cassette.crmsync_cassette != FORMAT_VERSION {
            bail!(
                "cassette {} has format version {}, this crmsync reads version {FORMAT_VERSION}",
                path.display(),
                cassette.crmsync_cassette
            );
        }
        for (index, exchange) in cassette.exchanges.iter().enumerate() {
            if http::StatusCode::from_u16(exchange.response.status).is_err() {
                bail!(
                    "cassette {}: exchanges[{index}].response.status is not an HTTP status",
                    path.display()
                );
            }
            if exchange.response.body.is_some() && exchange.response.body_text.is_some() {
                bail!(
                    "cassette {}: exchanges[{index}].response has both body and body_text",
                    path.display()
                );
            }
        }
        cassette.used = vec![false; cassette.exchanges.len()];
        Ok(cassette)
    }

    /// Writes the cassette as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write cassette {}", path.display()))
    }

    /// Appends a recorded exchange.
    pub fn push(&mut self, exchange: Exchange) {
        self.exchanges.push(exchange);
        self.used.push(true);
    }

    /// The exchange that answers this request, if any (see the module docs).
    pub fn answer(&mut self, method: &str, url: &str, body: &[u8]) -> Option<Exchange> {
        let body: Option<Value> = serde_json::from_slice(body).ok();
        let matching: Vec<usize> = self
            .exchanges
            .iter()
            .enumerate()
            .filter(|(_, e)| e.request.matches(method, url, body.as_ref()))
            .map(|(i, _)| i)
            .collect();
        let index = matching
            .iter()
            .copied()
            .find(|&i| !self.used[i])
            .or_else(|| matching.last().copied())?;
        self.used[index] = true;
        Some(self.exchanges[index].clone())
    }
}

impl RecordedRequest {
    fn matches(&self, method: &str, url: &str, body: Option<&Value>) -> bool {
        self.method.eq_ignore_ascii_case(method)
            && self.url == url
            && match &self.body {
                None | Some(Value::Null) => true,
                Some(expected) => body == Some(expected),
            }
    }
}

impl Exchange {
    /// Records an exchange; the request's headers are deliberately not kept.
    pub fn new(
        method: &str,
        url: &str,
        request_body: &[u8],
        status: http::StatusCode,
        headers: &http::HeaderMap,
        response_body: &[u8],
    ) -> Self {
        let request_body = (!request_body.is_empty()).then(|| {
            serde_json::from_slice(request_body).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(request_body).into_owned())
            })
        });
        let (body, body_text) = match serde_json::from_slice::<Value>(response_body) {
            Ok(json) => (Some(json), None),
            Err(_) if response_body.is_empty() => (None, None),
            Err(_) => (
                None,
                Some(String::from_utf8_lossy(response_body).into_owned()),
            ),
        };
        let headers = headers
            .iter()
            .filter(|(name, _)| !matches!(name.as_str(), "set-cookie" | "cookie" | "authorization"))
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect();
        Exchange {
            request: RecordedRequest {
                method: method.to_owned(),
                url: url.to_owned(),
                body: request_body,
            },
            response: RecordedResponse {
                status: status.as_u16(),
                headers,
                body,
                body_text,
            },
        }
    }

    /// The response as the HTTP hooks hand it to the component.
    pub fn response_parts(&self) -> (http::StatusCode, http::HeaderMap, Bytes) {
        let response = &self.response;
        let status = http::StatusCode::from_u16(response.status)
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        let mut headers = http::HeaderMap::new();
        for (name, value) in &response.headers {
            if let (Ok(name), Ok(value)) = (
                http::header::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
        let body = match (&response.body, &response.body_text) {
            (Some(json), _) => {
                headers
                    .entry(http::header::CONTENT_TYPE)
                    .or_insert(http::HeaderValue::from_static("application/json"));
                Bytes::from(json.to_string())
            }
            (None, Some(text)) => Bytes::from(text.clone()),
            (None, None) => Bytes::new(),
        };
        (status, headers, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cassette(json: &str) -> Cassette {
        let mut c: Cassette = serde_json::from_str(json).unwrap();
        c.used = vec![false; c.exchanges.len()];
        c
    }

    const TWO_TRIES: &str = r#"{"crmsync_cassette":1,"exchanges":[
        {"request":{"method":"GET","url":"/a"},"response":{"status":429,"headers":{"retry-after":"1"},"body":{"errorType":"RATE_LIMIT"}}},
        {"request":{"method":"GET","url":"/a"},"response":{"status":200,"body":{"results":[]}}},
        {"request":{"method":"POST","url":"/b","body":{"inputs":[{"id":"1"}]}},"response":{"status":200,"body_text":"{\"cut"}}
    ]}"#;

    #[test]
    fn matching_exchanges_replay_in_order_then_the_last_repeats() {
        let mut c = cassette(TWO_TRIES);
        assert_eq!(c.answer("GET", "/a", b"").unwrap().response.status, 429);
        assert_eq!(c.answer("GET", "/a", b"").unwrap().response.status, 200);
        assert_eq!(c.answer("GET", "/a", b"").unwrap().response.status, 200);
        assert!(c.answer("GET", "/other", b"").is_none());
    }

    #[test]
    fn json_request_bodies_compare_as_json() {
        let mut c = cassette(TWO_TRIES);
        assert!(
            c.answer("POST", "/b", br#"{ "inputs" : [ {"id":"1"} ] }"#)
                .is_some()
        );
        assert!(
            c.answer("POST", "/b", br#"{"inputs":[{"id":"2"}]}"#)
                .is_none()
        );
        let (status, _, body) = c
            .answer("POST", "/b", br#"{"inputs":[{"id":"1"}]}"#)
            .unwrap()
            .response_parts();
        assert_eq!(status, 200);
        assert_eq!(&body[..], b"{\"cut");
    }

    #[test]
    fn recorded_exchanges_keep_no_credentials_or_cookies() {
        let mut headers = http::HeaderMap::new();
        headers.insert("set-cookie", "session=secret".parse().unwrap());
        headers.insert("x-hubspot-ratelimit-remaining", "99".parse().unwrap());
        let e = Exchange::new(
            "GET",
            "/a",
            b"",
            http::StatusCode::OK,
            &headers,
            b"{\"results\":[]}",
        );
        let text = serde_json::to_string(&e).unwrap();
        assert!(!text.contains("secret"));
        assert!(text.contains("x-hubspot-ratelimit-remaining"));
        assert_eq!(e.response.body, Some(serde_json::json!({"results": []})));
    }

    #[test]
    fn a_cassette_round_trips_through_a_file() {
        let dir = std::env::temp_dir().join(format!("crmsync-cassette-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.json");
        let mut c = Cassette::new(Some("test".into()));
        c.push(Exchange::new(
            "GET",
            "/x",
            b"",
            http::StatusCode::OK,
            &http::HeaderMap::new(),
            b"not json",
        ));
        c.save(&path).unwrap();
        let mut back = Cassette::load(&path).unwrap();
        assert_eq!(
            back.answer("GET", "/x", b"")
                .unwrap()
                .response
                .body_text
                .as_deref(),
            Some("not json")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
