//! The JSON API: the CLI's `--json` outputs over HTTP (`GET /api/syncs`,
//! a sync, its runs, errors, contacts and source fields) and the controls
//! (`POST .../trigger`, `pause`, `resume`). `docs/console-openapi.json`
//! describes every route. A control posted by the console's own form is
//! answered with a redirect back to the sync's page; by a program, in JSON.

use crate::Console;
use crate::catalog::SyncView;
use crate::record_links::record_url;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use crmsync_engine::config::Config;
use crmsync_engine::options::SyncOptions;
use crmsync_engine::status;
use crmsync_engine::store::{ErrorRow, Store};
use crmsync_engine::sync::SourceField;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A failed API call: its status and a message for a person.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    fn not_found(name: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("no sync named {name:?} is served here"),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("{error:#}"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

/// Runs store work off the server's threads.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::from(anyhow::anyhow!("the request's work failed: {e}")))?
}

/// The config of sync `name`, or a 404.
pub fn config_of(console: &Console, name: &str) -> Result<Config, ApiError> {
    console
        .catalog
        .config(name)?
        .ok_or_else(|| ApiError::not_found(name))
}

/// Every served sync's view; one whose config or store cannot be read is
/// listed with its error, so one broken sync hides no other.
pub fn all_views(console: &Console) -> Vec<Result<SyncView, (String, String)>> {
    console
        .catalog
        .syncs()
        .iter()
        .map(|served| {
            served
                .config()
                .and_then(|config| console.catalog.view(&config, &console.live))
                .map_err(|error| (served.name.clone(), format!("{error:#}")))
        })
        .collect()
}

/// `GET /api/syncs`.
pub async fn list(State(console): State<Arc<Console>>) -> Result<Response, ApiError> {
    let views = blocking(move || Ok(all_views(&console))).await?;
    let items: Vec<serde_json::Value> = views
        .into_iter()
        .map(|view| match view {
            Ok(view) => serde_json::to_value(view).expect("a view serialises"),
            Err((name, error)) => {
                serde_json::json!({ "name": name, "state": "error", "error": error })
            }
        })
        .collect();
    Ok(Json(items).into_response())
}

/// `GET /api/syncs/{name}`.
pub async fn one(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
) -> Result<Json<SyncView>, ApiError> {
    blocking(move || {
        let config = config_of(&console, &name)?;
        Ok(Json(console.catalog.view(&config, &console.live)?))
    })
    .await
}

/// `GET /api/syncs/{name}/runs`: `crmsync runs --json`.
pub async fn runs(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    blocking(move || {
        let config = config_of(&console, &name)?;
        let store = config.store.open()?;
        Ok(Json(status::runs(&config, &*store)?).into_response())
    })
    .await
}

/// An error with the link to its record in the source CRM.
#[derive(Debug, Serialize)]
pub struct ErrorView {
    #[serde(flatten)]
    pub error: ErrorRow,
    pub record_url: Option<String>,
}

/// The errors of run `run` (the last runs' when `None`), linked.
pub fn error_views(
    config: &Config,
    store: &dyn Store,
    run: Option<i64>,
) -> anyhow::Result<Vec<ErrorView>> {
    let (_, errors) = status::errors(config, store, run)?;
    // A company part's errors are about companies: link them as such.
    let company_runs: Vec<i64> = match config.companies.as_deref() {
        Some(part) => store.runs(&part.name)?.iter().map(|r| r.id).collect(),
        None => Vec::new(),
    };
    let part_of = |error: &ErrorRow| match config.companies.as_deref() {
        Some(part) if company_runs.contains(&error.run_id) => part,
        _ => config,
    };
    Ok(errors
        .into_iter()
        .map(|error| ErrorView {
            record_url: error
                .record_id
                .as_deref()
                .and_then(|id| record_url(part_of(&error), id)),
            error,
        })
        .collect())
}

#[derive(Debug, Deserialize)]
pub struct RunQuery {
    pub run: Option<i64>,
}

/// `GET /api/syncs/{name}/errors[?run=ID]`: `crmsync errors --json`, each with its `record_url`.
pub async fn errors(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
    Query(query): Query<RunQuery>,
) -> Result<Response, ApiError> {
    blocking(move || {
        let config = config_of(&console, &name)?;
        let store = config.store.open()?;
        Ok(Json(error_views(&config, &*store, query.run)?).into_response())
    })
    .await
}

/// The most contacts one page of `/contacts` holds.
pub const MAX_PAGE: u32 = 1_000;

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    pub limit: Option<u32>,
    pub after: Option<i64>,
}

/// `GET /api/syncs/{name}/contacts?limit&after`: `crmsync contacts --json`,
/// a page at a time (the next page is `after` the last id).
pub async fn contacts(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    blocking(move || {
        let config = config_of(&console, &name)?;
        let store = config.store.open()?;
        let page = store.contacts_after(query.after.unwrap_or(0), Some(limit))?;
        Ok(Json(page).into_response())
    })
    .await
}

/// The sync's name and its source's fields, asked of the source's API now
/// (as `crmsync fields` does).
pub fn source_fields(
    console: &Console,
    name: &str,
) -> Result<(String, Vec<SourceField>), ApiError> {
    let config = config_of(console, name)?;
    let options = SyncOptions {
        runner: console.runner.clone(),
        ..SyncOptions::default()
    };
    let fields = crmsync_engine::sync::source_fields(&console.runtime, &config, &options)?;
    Ok((config.name, fields))
}

/// `GET /api/syncs/{name}/fields`: `crmsync fields --json`.
pub async fn fields(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    blocking(move || Ok(Json(source_fields(&console, &name)?.1).into_response())).await
}

#[derive(Debug, Deserialize)]
pub struct TriggerQuery {
    #[serde(default)]
    pub full: bool,
}

/// What a control did.
#[derive(Debug, Serialize)]
struct Done {
    sync: String,
    done: &'static str,
}

/// A browser's form asks for HTML back; a program for JSON.
fn from_a_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

async fn control(
    console: Arc<Console>,
    name: String,
    headers: HeaderMap,
    done: &'static str,
    change: impl FnOnce(&Console, &Config) -> anyhow::Result<()> + Send + 'static,
) -> Result<Response, ApiError> {
    let sync = name.clone();
    blocking(move || {
        let config = config_of(&console, &name)?;
        change(&console, &config)?;
        Ok(())
    })
    .await?;
    if from_a_form(&headers) {
        return Ok(Redirect::to(&crate::urls::sync_path(&sync)).into_response());
    }
    Ok((StatusCode::ACCEPTED, Json(Done { sync, done })).into_response())
}

/// `POST /api/syncs/{name}/trigger[?full=true]`: run now (reading every
/// record with `full`); the daemon starts it within a second.
pub async fn trigger(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
    Query(query): Query<TriggerQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let done = if query.full {
        "full re-sync triggered"
    } else {
        "triggered"
    };
    control(console, name, headers, done, move |console, config| {
        if query.full {
            console.live.request_full(&config.name);
        }
        config.store.open()?.request_trigger(&config.name)
    })
    .await
}

/// Pauses or resumes the sync, as `crmsync pause|resume` do.
async fn set_paused(
    console: Arc<Console>,
    name: String,
    headers: HeaderMap,
    paused: bool,
) -> Result<Response, ApiError> {
    let done = if paused { "paused" } else { "resumed" };
    control(console, name, headers, done, move |_, config| {
        config.store.open()?.set_paused(&config.name, paused)
    })
    .await
}

/// `POST /api/syncs/{name}/pause`.
pub async fn pause(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    set_paused(console, name, headers, true).await
}

/// `POST /api/syncs/{name}/resume`.
pub async fn resume(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    set_paused(console, name, headers, false).await
}

/// `GET /api/openapi.json`: the API's description.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], crate::OPENAPI).into_response()
}
