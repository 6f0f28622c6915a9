//! Push triggers (R6): `POST /webhooks/hubspot` takes HubSpot's webhook
//! deliveries — signed, recent, new — and notes their portals; a task hands
//! each debounced batch on as a trigger of every sync reading that portal,
//! an incremental run the daemon starts within a second.

use crate::Console;
use crate::debounce::WINDOW;
use crate::webhooks::{Refusal, Signed, changed_portals, signed_uri, verify};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `POST /webhooks/hubspot`.
pub async fn hubspot(
    State(console): State<Arc<Console>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(secret) = &console.webhook_secret else {
        return (
            StatusCode::NOT_FOUND,
            "webhooks are off: start `crmsync serve` with --webhook-secret-env",
        )
            .into_response();
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signed = Signed {
        signature: header("x-hubspot-signature-v3"),
        timestamp: header("x-hubspot-request-timestamp"),
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let signed_at = signed_uri(&console.public_url, path);
    let now = now_ms();
    let outcome = verify(secret, method.as_str(), &signed_at, &body, signed, now)
        .and_then(|()| changed_portals(&body))
        .and_then(|portals| {
            let at = signed
                .timestamp
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(now);
            console.replays.lock().expect("replays lock").admit(
                signed.signature.unwrap_or_default(),
                at,
                now,
            )?;
            Ok(portals)
        });
    console.live.webhook_delivery(outcome.as_ref().map(|_| ()));
    match outcome {
        Ok(portals) => {
            tracing::debug!(?portals, "webhook delivery accepted");
            console.debouncer.push(portals);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(refusal) => {
            tracing::warn!("webhook delivery refused: {refusal}");
            let status = match refusal {
                Refusal::Malformed(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::UNAUTHORIZED,
            };
            (status, refusal.to_string()).into_response()
        }
    }
}

/// Triggers the syncs of each debounced batch of portals, until the server stops.
pub async fn trigger_batches(console: Arc<Console>) {
    loop {
        let portals = console.debouncer.next_batch(WINDOW).await;
        let console = console.clone();
        let done = tokio::task::spawn_blocking(move || {
            for portal in portals {
                for config in console.catalog.for_portal(portal) {
                    match config
                        .store
                        .open()
                        .and_then(|store| store.request_trigger(&config.name))
                    {
                        Ok(()) => {
                            tracing::info!(sync = %config.name, portal, "triggered by a HubSpot webhook");
                            console.live.webhook_trigger(&config.name);
                        }
                        Err(error) => {
                            tracing::error!(sync = %config.name, "webhook trigger: {error:#}")
                        }
                    }
                }
            }
        })
        .await;
        if let Err(error) = done {
            tracing::error!("webhook trigger task: {error}");
        }
    }
}
