//! Source credentials, held by the host only (E8).
//!
//! A private-app token is read from the environment variable the config names.
//! OAuth uses the refresh-token grant, form-encoded, at the source's token
//! endpoint (HubSpot `POST {base_url}/oauth/v1/token`, Salesforce
//! `POST {instance_url}/services/oauth2/token`), refreshes a minute before
//! `expires_in` runs out when the answer has one (Salesforce's has not), and
//! once more when the API reports an expired session mid-run.

use crate::api_bounds;
use crate::http::{Bearer, HttpLimits, Token, send_blocking};
use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::Full;
use serde::Deserialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the host authenticates to the source. The values are names of
/// environment variables; secrets never live in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthConfig {
    /// A private-app access token.
    Token { env: String },
    /// OAuth 2 refresh-token grant.
    OAuth(OAuthEnv),
    /// Neither configured: requests go out without credentials (a local
    /// test server); HubSpot itself answers 401, reported as `auth-invalid`.
    None,
}

/// The environment variables holding the OAuth client and refresh token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthEnv {
    pub client_id_env: String,
    pub client_secret_env: String,
    pub refresh_token_env: String,
}

/// Refresh this long before the token's advertised expiry.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// The credentials of one source. Clones share the token and its refreshes:
/// two readers of one run (its pages, its archived records) refresh an
/// expired token once, not once each.
#[derive(Clone)]
pub struct Credentials {
    /// Held while a token is refreshed, so a second reader waits for that
    /// token instead of asking for another.
    state: Arc<Mutex<State>>,
    bearer: Bearer,
    /// Sent with token refreshes, as with every other API request.
    user_agent: Option<String>,
}

struct State {
    kind: Kind,
    /// Refreshes so far: a request that failed on an older token than the
    /// current one is retried without refreshing again.
    generation: u64,
}

enum Kind {
    /// Replay, or a source that needs no credentials: nothing to send.
    None,
    Static,
    OAuth {
        token_url: String,
        client_id: String,
        client_secret: String,
        refresh_token: String,
        expires_at: Option<Instant>,
    },
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// A credential problem that stops the sync (E8).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{key}: environment variable {var} is not set")]
    MissingVariable { key: String, var: String },
    #[error("refreshing the OAuth token failed: {0}")]
    RefreshFailed(String),
}

impl Credentials {
    /// No credentials (replaying a cassette).
    pub fn none() -> Self {
        Credentials::new(Kind::None, None)
    }

    fn new(kind: Kind, bearer: Option<String>) -> Self {
        Credentials {
            state: Arc::new(Mutex::new(State {
                kind,
                generation: 0,
            })),
            bearer: Arc::new(Mutex::new(Token {
                value: bearer,
                generation: 0,
            })),
            user_agent: None,
        }
    }

    /// Token refreshes carry `agent` as their `User-Agent`.
    pub fn with_user_agent(mut self, agent: &str) -> Self {
        self.user_agent = Some(agent.to_owned());
        self
    }

    /// Reads the credentials the config names from `env` (usually `std::env::var`).
    pub fn from_config(
        auth: &AuthConfig,
        token_url: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, AuthError> {
        let read = |key: &str, var: &str| {
            env(var)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| AuthError::MissingVariable {
                    key: key.to_owned(),
                    var: var.to_owned(),
                })
        };
        let (kind, bearer) = match auth {
            AuthConfig::None => {
                tracing::warn!(
                    "no credentials configured (source.token_env or source.oauth): requests carry none"
                );
                (Kind::None, None)
            }
            AuthConfig::Token { env } => (
                Kind::Static,
                Some(read("source.token_env", env)?.trim().to_owned()),
            ),
            AuthConfig::OAuth(OAuthEnv {
                client_id_env,
                client_secret_env,
                refresh_token_env,
            }) => (
                Kind::OAuth {
                    token_url: token_url.to_owned(),
                    client_id: read("source.oauth.client_id_env", client_id_env)?,
                    client_secret: read("source.oauth.client_secret_env", client_secret_env)?,
                    refresh_token: read("source.oauth.refresh_token_env", refresh_token_env)?,
                    expires_at: None,
                },
                None,
            ),
        };
        Ok(Credentials::new(kind, bearer))
    }

    /// The shared bearer slot the HTTP hooks read.
    pub fn bearer(&self) -> Bearer {
        self.bearer.clone()
    }

    /// Whether an expired token can be refreshed.
    pub fn can_refresh(&self) -> bool {
        matches!(self.state().kind, Kind::OAuth { .. })
    }

    /// How many times the token was refreshed; see [`Self::refresh_unless_newer`].
    pub fn generation(&self) -> u64 {
        self.state().generation
    }

    /// Refreshes the OAuth token if there is none yet or it is about to expire.
    pub fn ensure_fresh(&self) -> Result<(), AuthError> {
        let mut state = self.state();
        let due = match &state.kind {
            Kind::OAuth { expires_at, .. } => {
                self.bearer.lock().expect("bearer lock").value.is_none()
                    || expires_at.is_some_and(|at| Instant::now() + REFRESH_MARGIN >= at)
            }
            _ => false,
        };
        if due {
            self.refresh_locked(&mut state)
        } else {
            Ok(())
        }
    }

    /// Exchanges the refresh token for a new access token now.
    pub fn refresh(&self) -> Result<(), AuthError> {
        self.refresh_locked(&mut self.state())
    }

    /// After a request sent when the token's [`Self::generation`] was
    /// `seen` met an expired session: refreshes, unless another reader has
    /// refreshed since (then the request is only sent again). Whether it
    /// refreshed.
    pub fn refresh_unless_newer(&self, seen: u64) -> Result<bool, AuthError> {
        let mut state = self.state();
        if state.generation != seen {
            return Ok(false);
        }
        self.refresh_locked(&mut state).map(|()| true)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("credentials lock")
    }

    fn refresh_locked(&self, state: &mut State) -> Result<(), AuthError> {
        let Kind::OAuth {
            token_url,
            client_id,
            client_secret,
            refresh_token,
            expires_at,
        } = &mut state.kind
        else {
            return Err(AuthError::RefreshFailed(
                "a private-app token cannot be refreshed; create a new one".into(),
            ));
        };
        let form = form_encode(&[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("client_secret", client_secret),
            ("refresh_token", refresh_token),
        ]);
        let answer = post_form(token_url, form, self.user_agent.as_deref())
            .map_err(|e| AuthError::RefreshFailed(format!("{e:#}")))?;
        if let Some(new_refresh) = answer.refresh_token.filter(|t| !t.is_empty()) {
            *refresh_token = new_refresh;
        }
        *expires_at = answer
            .expires_in
            .map(|s| Instant::now() + api_bounds::token_lifetime(s));
        // The token and its generation change together, so a request sent
        // with this token is known to carry this generation.
        let mut token = self.bearer.lock().expect("bearer lock");
        state.generation += 1;
        *token = Token {
            value: Some(answer.access_token),
            generation: state.generation,
        };
        drop(token);
        tracing::info!("refreshed the OAuth access token");
        Ok(())
    }
}

fn post_form(url: &str, form: String, user_agent: Option<&str>) -> Result<TokenAnswer> {
    let mut request = http::Request::post(url);
    if let Some(agent) = user_agent {
        request = request.header(http::header::USER_AGENT, agent);
    }
    let request = request
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::from(form)))
        .context("cannot build the token request")?;
    let (status, _, body) = send_blocking(request, HttpLimits::default())
        .map_err(|e| anyhow!("POST {url} did not complete: {e}"))?;
    if !status.is_success() {
        // HubSpot answers BAD_REFRESH_TOKEN / invalid_grant bodies; their text helps the user.
        let text = String::from_utf8_lossy(&body);
        bail!(
            "POST /oauth/v1/token answered HTTP {}: {}",
            status.as_u16(),
            text.chars().take(300).collect::<String>()
        );
    }
    serde_json::from_slice(&body).context("the token answer has no access_token")
}

/// `application/x-www-form-urlencoded`.
/// `application/x-www-form-urlencoded`, as the OAuth token endpoints take it.
fn form_encode(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_escapes_reserved_characters() {
        assert_eq!(
            form_encode(&[("a b", "c&d=e/f"), ("t", "x.y-z_*")]),
            "a+b=c%26d%3De%2Ff&t=x.y-z_*"
        );
    }

    #[test]
    fn a_missing_token_variable_names_the_key_and_variable() {
        let e = Credentials::from_config(
            &AuthConfig::Token {
                env: "HS_TOKEN".into(),
            },
            "http://x",
            |_| None,
        )
        .err()
        .unwrap();
        assert_eq!(
            e.to_string(),
            "source.token_env: environment variable HS_TOKEN is not set"
        );
    }

    /// A private-app token, "pat-1" (with spaces around it, as pasted).
    fn static_token() -> Credentials {
        Credentials::from_config(&AuthConfig::Token { env: "T".into() }, "http://x", |_| {
            Some(" pat-1 ".into())
        })
        .unwrap()
    }

    #[test]
    fn a_request_that_failed_on_an_older_token_does_not_refresh_again() {
        let c = static_token();
        let shared = c.clone();
        assert_eq!(shared.generation(), 0);
        // Sent before a refresh the other reader made: retried as it is.
        assert!(!shared.refresh_unless_newer(7).unwrap());
        // Sent on the current token: refreshing is up to this reader (and a
        // private-app token cannot be refreshed).
        assert!(matches!(
            shared.refresh_unless_newer(0),
            Err(AuthError::RefreshFailed(_))
        ));
        assert_eq!(c.generation(), 0);
    }

    #[test]
    fn a_static_token_is_the_bearer() {
        let c = static_token();
        assert_eq!(c.bearer().lock().unwrap().value.as_deref(), Some("pat-1"));
        assert!(!c.can_refresh());
    }
}
