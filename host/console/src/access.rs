//! Who may use the console. On loopback anyone on the machine may, but only
//! under a loopback `Host` (a page elsewhere that rebinds its DNS name to
//! 127.0.0.1 gets nothing). On any other address every page and API call
//! needs the console's token: `Authorization: Bearer` for programs, or the
//! session cookie the login form sets for a browser (`HttpOnly`,
//! `SameSite=Strict`, derived from the token, never the token itself).
//! Requests that change something must also come from the console's own
//! origin (`Origin`, `Sec-Fetch-Site`), so another site cannot make a
//! browser press its buttons. The health checks and HubSpot's webhook (which
//! its signature guards) are open.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "crmsync_session";

/// The console's access rules.
#[derive(Debug, Clone)]
pub struct Access {
    /// The bearer token every request needs (off loopback).
    pub token: Option<String>,
    /// `Host` values accepted (on loopback); empty: any.
    pub hosts: Vec<String>,
    /// Whether the console is reached over HTTPS (the cookie is `Secure`).
    pub https: bool,
}

impl Access {
    /// The session cookie's value for the token: an HMAC of it, so the
    /// browser holds no secret that works anywhere else.
    pub fn session(&self) -> Option<String> {
        let token = self.token.as_ref()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("any key length");
        mac.update(b"crmsync console session");
        Some(
            mac.finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }

    /// Whether `given` is the token (in constant time).
    pub fn is_token(&self, given: &str) -> bool {
        self.token
            .as_ref()
            .is_some_and(|token| bool::from(token.as_bytes().ct_eq(given.as_bytes())))
    }

    fn is_session(&self, given: &str) -> bool {
        self.session()
            .is_some_and(|session| bool::from(session.as_bytes().ct_eq(given.as_bytes())))
    }

    /// Whether the request carries the token or the session cookie.
    fn authenticated(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if bearer.is_some_and(|b| self.is_token(b.trim())) {
            return true;
        }
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| name == COOKIE && self.is_session(value))
    }

    /// The `Set-Cookie` value of a session.
    pub fn session_cookie(&self) -> Option<String> {
        Some(format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict{}",
            self.session()?,
            if self.https { "; Secure" } else { "" }
        ))
    }
}

/// Whether an unsafe request comes from the page's own origin: browsers
/// send `Origin` (and `Sec-Fetch-Site`) on every cross-site POST; programs
/// such as `curl` send neither.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    match headers.get(header::ORIGIN) {
        None => true,
        Some(origin) => {
            let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
            let origin = origin.to_str().unwrap_or_default();
            let origin_host = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            host.is_some() && origin_host == host
        }
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "error": message }).to_string(),
    )
        .into_response()
}

/// The middleware applying [`Access`] to every request.
pub async fn guard(State(access): State<Arc<Access>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let headers = request.headers();
    // Open to anyone, from anywhere: health checks, and HubSpot's webhook
    // (its signature is its guard).
    if matches!(path.as_str(), "/healthz" | "/readyz" | "/webhooks/hubspot") {
        return next.run(request).await;
    }
    if !access.hosts.is_empty() {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        if !host.is_some_and(|h| access.hosts.iter().any(|allowed| allowed == h)) {
            return refuse(
                StatusCode::MISDIRECTED_REQUEST,
                "this console answers only on the address it listens on",
            );
        }
    }
    let unsafe_method = !matches!(*request.method(), Method::GET | Method::HEAD);
    if unsafe_method && !same_origin(headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "cross-site request refused: use the console's own page or an API client",
        );
    }
    // The login form is how a browser gets in.
    if access.token.is_some() && path != "/login" && !access.authenticated(headers) {
        if path.starts_with("/api/") || path == "/metrics" || unsafe_method {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "send the console's token: Authorization: Bearer <token>",
            );
        }
        return Redirect::to("/login").into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn only_the_pages_own_origin_may_change_things() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin"),
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://evil.example"),
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("sec-fetch-site", "cross-site"),
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "null"),
        ])));
    }

    #[test]
    fn the_token_or_its_session_cookie_lets_a_request_in() {
        let access = Access {
            token: Some("s3cret".into()),
            hosts: Vec::new(),
            https: false,
        };
        let session = access.session().unwrap();
        assert!(!session.contains("s3cret"));
        assert!(access.authenticated(&headers(&[("authorization", "Bearer s3cret")])));
        assert!(!access.authenticated(&headers(&[("authorization", "Bearer s3cre")])));
        assert!(!access.authenticated(&headers(&[("authorization", "s3cret")])));
        assert!(access.authenticated(&headers(&[("cookie", &format!("a=b; {COOKIE}={session}"))])));
        assert!(!access.authenticated(&headers(&[("cookie", &format!("{COOKIE}=s3cret"))])));
        assert!(!access.authenticated(&HeaderMap::new()));
        assert!(
            access
                .session_cookie()
                .unwrap()
                .contains("HttpOnly; SameSite=Strict")
        );
    }
}
