//! Outgoing HTTP for the component: the one seam (`WasiHttpHooks`) where the
//! host allows only the configured API origin, adds the credentials, applies
//! timeouts and a response-size cap, and replays or records cassettes.

use crate::cassette::{Cassette, Exchange};
use crate::connections::{self, Timeouts};
use crate::origin::Origin;
use crate::rate_limit::{AccountLimiters, Limiter};
use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderValue, USER_AGENT};
use http_body_util::{BodyExt, Full};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime_wasi_http::{
    DEFAULT_FORBIDDEN_HEADERS, Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks,
};

/// Default cap on one API answer, in MiB: a HubSpot page of 100 contacts
/// with many properties is well under 1 MiB.
pub const DEFAULT_MAX_RESPONSE_MB: u32 = 32;

/// Limits on one outgoing request.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub between_bytes_timeout: Duration,
    /// Larger response bodies fail the request (`HttpResponseBodySize`).
    pub max_response_bytes: usize,
    /// The whole exchange (connect, headers, body) ends by then: the other
    /// timeouts each restart, so a server dripping a byte every few seconds
    /// would otherwise hold a call that runs in the host (where epoch
    /// interruption cannot stop it) for as long as it likes.
    pub total_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(60),
            between_bytes_timeout: Duration::from_secs(30),
            max_response_bytes: DEFAULT_MAX_RESPONSE_MB as usize * 1024 * 1024,
            total_timeout: Duration::from_secs(120),
        }
    }
}

/// Where requests go.
#[derive(Clone)]
pub enum HttpMode {
    /// To the network.
    Live,
    /// Answered from a cassette; nothing reaches the network.
    Replay(Arc<Mutex<Cassette>>),
    /// To the network, and every exchange is appended to the cassette.
    Record(Arc<Mutex<Cassette>>),
}

/// The access token the host adds to live requests; shared with the
/// credential refresher.
pub type Bearer = Arc<Mutex<Token>>;

/// An access token, and how many refreshes came before it (the
/// credentials' generation when it was issued).
#[derive(Clone, Debug, Default)]
pub struct Token {
    /// `None`: requests carry no credentials.
    pub value: Option<String>,
    /// The refreshes before this token: 0 for a private-app token.
    pub generation: u64,
}

/// No `401` answer since the last [`Hooks::take_rejected_generation`].
const NONE_REJECTED: u64 = u64::MAX;

/// The host's `WasiHttpHooks`.
pub struct Hooks {
    origin: Origin,
    mode: HttpMode,
    limiters: AccountLimiters,
    bearer: Bearer,
    limits: HttpLimits,
    stats: Arc<HttpStats>,
    /// Set on every live request, replacing the component's own.
    user_agent: Option<HeaderValue>,
    /// The oldest token generation a `401 Unauthorized` answer was sent
    /// with, or [`NONE_REJECTED`].
    rejected: Arc<AtomicU64>,
}

impl Hooks {
    /// Sends `agent` as every live request's `User-Agent` (one that is no
    /// valid header value is left out).
    pub fn with_user_agent(mut self, agent: &str) -> Self {
        self.user_agent = HeaderValue::from_str(agent).ok();
        self
    }

    /// Spaces live requests through the account's limiters (search requests
    /// through the search API's too) and feeds the API's rate-limit headers
    /// to the general one.
    pub fn with_limiters(mut self, limiters: AccountLimiters) -> Self {
        self.limiters = limiters;
        self
    }

    /// The generation of the oldest token that an answer `401 Unauthorized`
    /// was sent with since the last call, if any. A request the component
    /// sent ahead left during an earlier call, perhaps on a token that was
    /// refreshed since: an expired session it met needs no new refresh.
    pub fn take_rejected_generation(&self) -> Option<u64> {
        let generation = self.rejected.swap(NONE_REJECTED, Ordering::Relaxed);
        (generation != NONE_REJECTED).then_some(generation)
    }
}

/// Counters of what crossed the seam.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Requests let through (to the network or the cassette).
    pub sent: AtomicU64,
    /// Answers of `429 Too Many Requests` among them.
    pub rate_limited: AtomicU64,
    /// Requests sent again after a transient failure or a rate limit (the
    /// engine's retry loop counts them here).
    pub retries: AtomicU64,
}

impl Hooks {
    /// Requests pass the `limiter` (when there is one) before they go out.
    pub fn new(
        origin: Origin,
        mode: HttpMode,
        bearer: Bearer,
        limits: HttpLimits,
        stats: Arc<HttpStats>,
    ) -> Self {
        Hooks {
            origin,
            mode,
            limiters: AccountLimiters::default(),
            bearer,
            limits,
            stats,
            user_agent: None,
            rejected: Arc::new(AtomicU64::new(NONE_REJECTED)),
        }
    }
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for Hooks {
    fn forbidden_header_filter(&mut self) -> wasmtime_wasi_http::ForbiddenHeaderFilter {
        // The component must never carry credentials of its own.
        Arc::new(|name| name == AUTHORIZATION || DEFAULT_FORBIDDEN_HEADERS.contains(name))
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        if !self.origin.allows(request.uri()) {
            tracing::warn!(uri = %request.uri(), "denied a request to a host that is not configured");
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        let mode = self.mode.clone();
        let token = self.bearer.lock().expect("bearer lock").clone();
        let rejected = self.rejected.clone();
        let limits = self.limits;
        let user_agent = self.user_agent.clone();
        let limiter = self.limiters.api.clone();
        let stats = self.stats.clone();
        let search_limiter = self
            .limiters
            .search
            .clone()
            .filter(|_| request.uri().path().ends_with("/search"));
        Box::new(async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await?.to_bytes();
            let answer = match &mode {
                HttpMode::Replay(cassette) => {
                    let path = path_and_query(&parts.uri);
                    let exchange = cassette
                        .lock()
                        .expect("cassette lock")
                        .answer(parts.method.as_str(), &path, &body)
                        .ok_or_else(|| {
                            tracing::error!(method = %parts.method, %path, "no recorded response in the cassette");
                            HttpError::InternalError(Some(format!(
                                "the cassette has no response for {} {path}",
                                parts.method
                            )))
                        })?;
                    exchange.response_parts()
                }
                HttpMode::Live | HttpMode::Record(_) => {
                    let mut outgoing =
                        http::Request::from_parts(parts.clone(), Full::new(body.clone()));
                    if let Some(token) = &token.value {
                        let mut value =
                            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                                HttpError::InternalError(Some(
                                    "the access token is not a valid header value".into(),
                                ))
                            })?;
                        value.set_sensitive(true);
                        outgoing.headers_mut().insert(AUTHORIZATION, value);
                    }
                    if let Some(agent) = user_agent {
                        outgoing.headers_mut().insert(USER_AGENT, agent);
                    }
                    let book = |limiter: &Limiter| {
                        let now = Instant::now();
                        now + limiter.reserve(now)
                    };
                    let booked = limiter.as_deref().map(book);
                    let search_booked = search_limiter.as_deref().map(book);
                    if let Some(at) = booked.max(search_booked) {
                        let wait = at.saturating_duration_since(Instant::now());
                        if !wait.is_zero() {
                            tracing::debug!(
                                ?wait,
                                "spacing requests to stay within the rate limit"
                            );
                            tokio::time::sleep(wait).await;
                        }
                    }
                    let answer = send(outgoing, limits).await;
                    if let (Some(limiter), Some(at)) = (&search_limiter, search_booked) {
                        limiter.answered(at, Instant::now());
                    }
                    if let (Some(limiter), Some(at)) = (&limiter, booked) {
                        limiter.answered(at, Instant::now());
                        if let Ok(answer) = &answer {
                            observe_rate_limit(limiter, &answer.1);
                        }
                    }
                    let answer = answer?;
                    if let HttpMode::Record(cassette) = &mode {
                        cassette.lock().expect("cassette lock").push(Exchange::new(
                            parts.method.as_str(),
                            &path_and_query(&parts.uri),
                            &body,
                            answer.0,
                            &answer.1,
                            &answer.2,
                        ));
                    }
                    answer
                }
            };
            let (status, headers, body) = answer;
            if status == http::StatusCode::UNAUTHORIZED {
                rejected.fetch_min(token.generation, Ordering::Relaxed);
            }
            if status == http::StatusCode::TOO_MANY_REQUESTS {
                stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            }
            let mut response = http::Response::new(
                Full::new(body)
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            );
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            Ok((
                response,
                Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// Feeds HubSpot's `X-HubSpot-RateLimit-*` headers to the limiter (which
/// bounds them before they size anything).
fn observe_rate_limit(limiter: &Limiter, headers: &http::HeaderMap) {
    let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
    let max = number("x-hubspot-ratelimit-max");
    let remaining = number("x-hubspot-ratelimit-remaining");
    let interval = number("x-hubspot-ratelimit-interval-milliseconds");
    if max.is_some() || remaining.is_some() {
        limiter.observe(Instant::now(), max, remaining, interval);
    }
}

/// A response read whole: status, headers, body.
pub type Answer = (http::StatusCode, http::HeaderMap, Bytes);

/// [`send`] from a thread that is not async (the token refresh, the
/// webhook after a run), on wasmtime-wasi's own runtime.
pub fn send_blocking(
    request: http::Request<Full<Bytes>>,
    limits: HttpLimits,
) -> Result<Answer, HttpError> {
    wasmtime_wasi::runtime::in_tokio(send(request, limits))
}

/// Sends `request` to the network with `limits` and reads the whole body,
/// all of it within `limits.total_timeout`.
pub async fn send(
    request: http::Request<Full<Bytes>>,
    limits: HttpLimits,
) -> Result<Answer, HttpError> {
    match tokio::time::timeout(limits.total_timeout, exchange(request, limits)).await {
        Ok(answer) => answer,
        Err(_) => Err(HttpError::ConnectionReadTimeout),
    }
}

async fn exchange(
    request: http::Request<Full<Bytes>>,
    limits: HttpLimits,
) -> Result<Answer, HttpError> {
    let connections = connections::shared();
    let timeouts = Timeouts {
        connect: limits.connect_timeout,
        first_byte: limits.first_byte_timeout,
    };
    let (response, connection) = connections.send(request, timeouts).await?;
    let (parts, mut body) = response.into_parts();
    let mut collected = Vec::new();
    loop {
        let frame = tokio::time::timeout(limits.between_bytes_timeout, body.frame())
            .await
            .map_err(|_| HttpError::ConnectionReadTimeout)?;
        let Some(frame) = frame else { break };
        if let Ok(data) = frame?.into_data() {
            if collected.len() + data.len() > limits.max_response_bytes {
                return Err(HttpError::HttpResponseBodySize(Some(
                    limits.max_response_bytes as u64,
                )));
            }
            collected.extend_from_slice(&data);
        }
    }
    // Read whole: the connection can carry the next request.
    connections.keep(connection);
    Ok((parts.status, parts.headers, Bytes::from(collected)))
}

/// `/path?query` of a URI, as cassettes key requests.
pub fn path_and_query(uri: &http::Uri) -> String {
    uri.path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_server_dripping_its_body_is_cut_off_at_the_overall_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request);
            let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n");
            // A byte well within the between-bytes timeout, for ever.
            while socket.write_all(b"x").is_ok() {
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let limits = HttpLimits {
            total_timeout: Duration::from_millis(600),
            ..HttpLimits::default()
        };
        let request = http::Request::get(format!("http://{address}/slow"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let started = Instant::now();
        let answer = wasmtime_wasi::runtime::in_tokio(send(request, limits));
        assert!(
            matches!(answer, Err(HttpError::ConnectionReadTimeout)),
            "{answer:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}
