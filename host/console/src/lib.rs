//! crmsync's operator console (`crmsync serve`): over the syncs a daemon
//! runs, a web page for people, a JSON API for programs, Prometheus metrics,
//! and HubSpot webhooks that trigger a portal's syncs when its records
//! change (R6). The daemon runs the syncs; the console reads their stores,
//! writes their controls (trigger, pause, resume — the same flags the CLI
//! sets) and watches runs through the daemon's observer ([`live::Live`]).
//!
//! Routes: `/`, `/syncs/{name}`, `/syncs/{name}/fields`, `/login`,
//! `/api/...` (see `docs/console-openapi.json`), `/metrics`, `/healthz`,
//! `/readyz`, `/webhooks/hubspot`, `/assets/...`.

pub mod access;
pub mod api;
pub mod catalog;
pub mod chart;
pub mod debounce;
pub mod live;
pub mod pages;
pub mod push;
pub mod record_links;
pub mod urls;
pub mod webhooks;

use access::Access;
use anyhow::{Context, Result};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use catalog::Catalog;
use crmsync_engine::runtime::Runtime;
use debounce::Debouncer;
use live::Live;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use webhooks::Replays;

/// The JSON API's OpenAPI description, served at `/api/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../docs/console-openapi.json");

/// The largest webhook delivery or form accepted: HubSpot sends at most 100
/// events per delivery, a few kilobytes.
pub const MAX_BODY: usize = 1024 * 1024;

/// How `crmsync serve` was asked to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The address listened on.
    pub listen: SocketAddr,
    /// The URL HubSpot and browsers reach the console at (default
    /// `http://` + the listen address): webhook signatures cover it.
    pub public_url: Option<String>,
    /// The HubSpot app's client secret; webhooks are off without it.
    pub webhook_secret: Option<String>,
    /// The token every request needs off loopback.
    pub token: Option<String>,
    /// This runner's id, shown on the page and sent as the source's User-Agent.
    pub runner: String,
}

/// Everything the console's routes share.
pub struct Console {
    pub catalog: Catalog,
    pub live: Arc<Live>,
    pub access: Arc<Access>,
    pub public_url: String,
    pub webhook_secret: Option<Vec<u8>>,
    pub replays: Mutex<Replays>,
    pub debouncer: Debouncer,
    pub runtime: Arc<Runtime>,
    pub runner: String,
}

impl Console {
    /// A console over `catalog`'s syncs. Off loopback a token is required:
    /// a console anyone on the network can drive is refused at start.
    pub fn new(
        settings: Settings,
        catalog: Catalog,
        live: Arc<Live>,
        runtime: Arc<Runtime>,
    ) -> Result<Console> {
        let loopback = settings.listen.ip().is_loopback();
        if !loopback && settings.token.is_none() {
            anyhow::bail!(
                "--listen {}: off loopback the console needs a token (--token-env NAME)",
                settings.listen
            );
        }
        let public_url = settings
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", settings.listen))
            .trim_end_matches('/')
            .to_owned();
        let port = settings.listen.port();
        let hosts = if loopback {
            let mut hosts = vec![
                format!("127.0.0.1:{port}"),
                format!("localhost:{port}"),
                format!("[::1]:{port}"),
                settings.listen.to_string(),
            ];
            if let Some(host) = public_url.split("://").nth(1) {
                hosts.push(host.split('/').next().unwrap_or(host).to_owned());
            }
            hosts
        } else {
            Vec::new()
        };
        Ok(Console {
            catalog,
            live,
            access: Arc::new(Access {
                token: settings.token,
                hosts,
                https: public_url.starts_with("https://"),
            }),
            webhook_secret: settings.webhook_secret.map(String::into_bytes),
            public_url,
            replays: Mutex::default(),
            debouncer: Debouncer::default(),
            runtime,
            runner: settings.runner,
        })
    }
}

async fn asset(kind: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, kind)], body)
}

/// Every route, behind the access rules, with headers that keep pages from
/// running anything but the console's own script or being framed.
pub fn router(console: Arc<Console>) -> Router {
    let access = console.access.clone();
    Router::new()
        .route("/", get(pages::index))
        .route("/syncs/{name}", get(pages::sync_page))
        .route("/syncs/{name}/fields", get(pages::fields_page))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/api/openapi.json", get(api::openapi))
        .route("/api/syncs", get(api::list))
        .route("/api/syncs/{name}", get(api::one))
        .route("/api/syncs/{name}/runs", get(api::runs))
        .route("/api/syncs/{name}/errors", get(api::errors))
        .route("/api/syncs/{name}/contacts", get(api::contacts))
        .route("/api/syncs/{name}/fields", get(api::fields))
        .route("/api/syncs/{name}/trigger", post(api::trigger))
        .route("/api/syncs/{name}/pause", post(api::pause))
        .route("/api/syncs/{name}/resume", post(api::resume))
        .route("/webhooks/hubspot", post(push::hubspot))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/assets/console.css",
            get(|| asset("text/css", include_str!("../assets/console.css"))),
        )
        .route(
            "/favicon.ico",
            get(|| asset("image/svg+xml", include_str!("../assets/favicon.svg"))),
        )
        .route(
            "/assets/console.js",
            get(|| asset("text/javascript", include_str!("../assets/console.js"))),
        )
        .layer(axum::middleware::from_fn_with_state(access, access::guard))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(console)
}

async fn secure_headers(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // Not `no-referrer`: under it a browser's form posts say `Origin:
        // null`, which the cross-site check must refuse. Links out (to a
        // record in HubSpot) still carry no referrer.
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn metrics(
    axum::extract::State(console): axum::extract::State<Arc<Console>>,
) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        console.live.render_metrics(),
    )
}

/// Ready once every served sync's store opens.
async fn readyz(
    axum::extract::State(console): axum::extract::State<Arc<Console>>,
) -> axum::response::Response {
    let outcome = api::blocking(move || {
        for served in console.catalog.syncs() {
            served.config()?.store.open()?;
        }
        Ok(())
    })
    .await;
    match outcome {
        Ok(()) => "ready".into_response(),
        Err(error) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, error.message).into_response(),
    }
}

/// Serves `console` on `listener` until `stop` is set: requests in flight
/// finish, then the server returns.
pub fn serve(listener: TcpListener, console: Arc<Console>, stop: Arc<AtomicBool>) -> Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the console's server")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let triggers = tokio::spawn(push::trigger_batches(console.clone()));
        let app = router(console);
        let stopped = async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
            .context("the console's server")?;
        triggers.abort();
        Ok(())
    })
}
