//! The console's pages, rendered on the server: the list of syncs, a sync's
//! page (state, controls, live progress, run chart and history, errors with
//! links to their records, field mapping), the source's fields, the login
//! form. Every value is escaped by `maud`; values from the source are also
//! shown with control and bidirectional characters escaped and long ones
//! cut, in `<bdi>` so they cannot reorder the page around them.

use crate::Console;
use crate::api::{ApiError, ErrorView, all_views, blocking, config_of, error_views, source_fields};
use crate::catalog::SyncView;
use crate::chart;
use crate::urls::{encode_segment, sync_path};
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use crmsync_engine::config::{target_name, type_name};
use crmsync_engine::status;
use crmsync_engine::store::{ContactRow, RunRow};
use crmsync_engine::untrusted::shown;
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use std::sync::Arc;

/// Longer source values are cut on the page (the whole value is in its tooltip).
const SHOWN_CHARS: usize = 160;

/// A source value as the page shows it.
fn value(text: &str) -> Markup {
    let safe = shown(text);
    let cut: String = safe.chars().take(SHOWN_CHARS).collect();
    let long = cut.len() < safe.len();
    html! {
        bdi title=[long.then_some(&safe)] { (cut) @if long { "…" } }
    }
}

fn layout(console: &Console, title: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · crmsync" }
                    link rel="stylesheet" href="/assets/console.css";
                    link rel="icon" type="image/svg+xml" href="/favicon.ico";
                    script src="/assets/console.js" defer {}
                }
                body {
                    header.top {
                        a.brand href="/" { "crmsync" }
                        span.runner { "runner " (value(&console.runner)) }
                        nav { a href="/metrics" { "metrics" } " " a href="/api/syncs" { "API" } }
                    }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

fn state_badge(state: &str) -> Markup {
    html! { span class=(format!("state {state}")) data-state=(state) { (state) } }
}

fn when(text: Option<&str>) -> Markup {
    match text {
        Some(t) => html! { time datetime=(t) { (t) } },
        None => html! { span.muted { "—" } },
    }
}

fn errors_summary(view: &SyncView) -> Markup {
    html! {
        @if view.status.open_errors.is_empty() {
            span.muted { "none" }
        } @else {
            @for (category, count) in &view.status.open_errors {
                span.error-chip { (category) " " (count) }
            }
        }
    }
}

/// `GET /`: every sync.
pub async fn index(State(console): State<Arc<Console>>) -> Result<Html<String>, ApiError> {
    let views = {
        let console = console.clone();
        blocking(move || Ok(all_views(&console))).await?
    };
    let body = html! {
        h1 { "Syncs" }
        table.syncs data-watch="/api/syncs" {
            thead { tr {
                th { "Sync" } th { "State" } th { "Last run" } th { "Next run" }
                th { "At the source" } th { "Synced" } th { "Open errors" }
            } }
            tbody {
                @for view in &views {
                    @match view {
                        Ok(view) => tr data-sync=(view.name) {
                            td { a href=(sync_path(&view.name)) { (value(&view.name)) } }
                            td { (state_badge(&view.status.state)) }
                            td {
                                @if let Some(run) = &view.status.last_run {
                                    "run " (run.id) " " (run.status) " at " (when(Some(&run.started_at)))
                                } @else { span.muted { "never" } }
                            }
                            td { (when(view.status.next_run_at.as_deref())) }
                            td.num { @match view.status.records_at_source { Some(n) => (n), None => span.muted { "unknown" } } }
                            td.num { (view.status.records_synced) }
                            td { (errors_summary(view)) }
                        },
                        Err((name, error)) => tr data-sync=(name) {
                            td { (value(name)) }
                            td { (state_badge("error")) }
                            td colspan="5" { (value(error)) }
                        },
                    }
                }
            }
        }
        @if views.is_empty() { p.muted { "No syncs: start `crmsync serve --config` with a config file or folder." } }
    };
    Ok(layout(&console, "Syncs", body))
}

fn controls(name: &str, paused: bool) -> Markup {
    let path = format!("/api/syncs/{}", encode_segment(name));
    html! {
        div.controls {
            form method="post" action=(format!("{path}/trigger")) { button #run-now type="submit" { "Run now" } }
            form method="post" action=(format!("{path}/trigger?full=true")) { button #full-resync type="submit" { "Full re-sync" } }
            @if paused {
                form method="post" action=(format!("{path}/resume")) { button #resume type="submit" { "Resume" } }
            } @else {
                form method="post" action=(format!("{path}/pause")) { button #pause type="submit" { "Pause" } }
            }
        }
    }
}

fn runs_table(runs: &[RunRow]) -> Markup {
    html! {
        table.runs {
            thead { tr {
                th { "Run" } th { "Status" } th { "Mode" } th { "Started" } th { "Ended" }
                th { "Seen" } th { "Created" } th { "Updated" } th { "Skipped" } th { "Failed" } th { "Runner" }
            } }
            tbody {
                @for run in runs {
                    tr data-run=(run.id) {
                        td.num { (run.id) }
                        td { span class=(format!("run {}", run.status)) { (run.status) } }
                        td { (run.mode) }
                        td { (when(Some(&run.started_at))) }
                        td { (when(run.ended_at.as_deref())) }
                        td.num { (run.counts.seen) } td.num { (run.counts.created) }
                        td.num { (run.counts.updated) } td.num { (run.counts.skipped) }
                        td.num { (run.counts.failed) }
                        td { @if let Some(r) = &run.runner { (value(r)) } }
                    }
                    @if let Some(error) = &run.error {
                        tr.run-error { td {} td colspan="10" { (value(error)) } }
                    }
                }
            }
        }
    }
}

fn errors_table(errors: &[ErrorView]) -> Markup {
    html! {
        @if errors.is_empty() {
            p.muted { "The last run recorded no errors." }
        } @else {
            table.errors {
                thead { tr { th { "Record" } th { "Category" } th { "Field" } th { "Message" } th { "What to do" } } }
                tbody {
                    @for e in errors {
                        tr {
                            td {
                                @match (&e.error.record_id, &e.record_url) {
                                    (Some(id), Some(url)) => a href=(url) target="_blank" rel="noopener noreferrer" { (value(id)) },
                                    (Some(id), None) => (value(id)),
                                    (None, _) => span.muted { "whole sync" },
                                }
                            }
                            td { span.error-chip { (e.error.category) } }
                            td { @if let Some(f) = &e.error.field { code { (value(f)) } } }
                            td { (value(&e.error.message)) }
                            td { (value(&e.error.resolution)) }
                        }
                    }
                }
            }
        }
    }
}

/// The destination contacts a sync's page lists (the API pages through all).
const CONTACTS_SHOWN: u32 = 50;

fn contacts_table(sync: &str, contacts: &[ContactRow]) -> Markup {
    html! {
        @if contacts.is_empty() {
            p.muted { "No contacts in the store." }
        } @else {
            table.contacts {
                thead { tr { th { "Id" } th { "Source record" } th { "Name" } th { "Emails" } th { "Phones" } th { "Account" } } }
                tbody { @for c in contacts {
                    tr data-contact=(c.id) {
                        td.num { (c.id) }
                        td { @match &c.external_id { Some(id) => (value(id)), None => span.muted { "unlinked" } } }
                        td { @if let Some(name) = &c.name { (value(name)) } }
                        td { (value(&c.emails.join(", "))) }
                        td { (value(&c.phones.join(", "))) }
                        td { @if let Some(a) = &c.account { @if let Some(name) = &a.name { (value(name)) } } }
                    }
                } }
            }
            @if contacts.len() as u32 == CONTACTS_SHOWN {
                p.muted { "The first " (CONTACTS_SHOWN) "; every one through "
                    a href=(format!("/api/syncs/{}/contacts?limit=1000", encode_segment(sync))) { "the API" } "." }
            }
        }
    }
}

/// `GET /syncs/{name}`: one sync.
pub async fn sync_page(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
) -> Result<Html<String>, ApiError> {
    let (view, runs, errors, mapping, contacts) = {
        let console = console.clone();
        blocking(move || {
            let config = config_of(&console, &name)?;
            let view = console.catalog.view(&config, &console.live)?;
            let store = config.store.open()?;
            let runs = status::runs(&config, &*store)?;
            let errors = error_views(&config, &*store, None)?;
            let contacts = store.contacts_after(0, Some(CONTACTS_SHOWN))?;
            let mapping: Vec<(String, String, &'static str)> = config
                .mappings
                .iter()
                .map(|m| {
                    (
                        m.source.clone(),
                        target_name(&m.target),
                        type_name(&m.value_type),
                    )
                })
                .collect();
            Ok((view, runs, errors, mapping, contacts))
        })
        .await?
    };
    let s = &view.status;
    let last_id = s.last_run.as_ref().map_or(0, |r| r.id);
    let body = html! {
        section.sync data-watch=(format!("/api/syncs/{}", encode_segment(&view.name)))
            data-state=(s.state) data-last-run=(last_id) {
            h1 { (value(&view.name)) " " (state_badge(&s.state)) }
            (controls(&view.name, s.control.paused))
            dl.facts {
                dt { "Source" } dd { (view.system) @if let Some(p) = view.portal_id { " portal " (p) } }
                dt { "Last run" } dd {
                    @if let Some(run) = &s.last_run { "run " (run.id) " " (run.status) " at " (when(Some(&run.started_at))) }
                    @else { span.muted { "never" } }
                }
                dt { "Next run" } dd { (when(s.next_run_at.as_deref())) @if s.control.paused { " (paused)" } }
                dt { "Records at the source" } dd {
                    @match (s.records_at_source, s.records_at_source_run) {
                        (Some(n), Some(run)) => { (n) " (at full run " (run) ")" },
                        _ => span.muted { "unknown until a full run" },
                    }
                }
                dt { "Synced" } dd { (s.records_synced) }
                dt { "Open errors" } dd { (errors_summary(&view)) }
            }
            div #progress.progress hidden[view.progress.is_none()] {
                @if let Some(p) = &view.progress {
                    "Running since " (p.started_at) ": " (p.counts.pages) " pages, " (p.counts.seen) " records ("
                    (p.counts.created) " created, " (p.counts.updated) " updated, " (p.counts.failed) " failed)"
                }
            }
            h2 { "Runs" }
            (chart::history(&runs))
            (runs_table(&runs))
            h2 { "Errors of the last run" }
            (errors_table(&errors))
            h2 { "Contacts" }
            (contacts_table(&view.name, &contacts))
            h2 { "Field mapping" }
            table.mapping {
                thead { tr { th { "Source field" } th { "Destination" } th { "Type" } } }
                tbody { @for (source, target, kind) in &mapping {
                    tr { td { code { (value(source)) } } td { (value(target)) } td { (kind) } }
                } }
            }
            p { a href=(format!("{}/fields", sync_path(&view.name))) { "Every field at the source" } " (asks the source's API)" }
        }
    };
    Ok(layout(&console, &view.name, body))
}

/// `GET /syncs/{name}/fields`: `crmsync fields`, as a page.
pub async fn fields_page(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
) -> Result<Html<String>, ApiError> {
    let (sync, fields) = {
        let console = console.clone();
        blocking(move || source_fields(&console, &name)).await?
    };
    let body = html! {
        h1 { "Fields of " a href=(sync_path(&sync)) { (value(&sync)) } }
        table.fields {
            thead { tr { th { "Field" } th { "Type" } th { "Label" } th { "Mapped to" } } }
            tbody { @for f in &fields {
                tr {
                    td { code { (value(&f.name)) } }
                    td { (value(&f.value_type)) }
                    td { (value(&f.label)) @if !f.options.is_empty() { span.muted { " [" (value(&f.options.join(", "))) "]" } } }
                    td {
                        @if let Some(target) = &f.mapped_to { (value(target)) }
                        @if !f.exists { " " span.error-chip { "not at the source" } }
                    }
                }
            } }
        }
    };
    Ok(layout(&console, &format!("Fields of {sync}"), body))
}

/// `GET /login`: the token form (only when the console has a token).
pub async fn login_form(State(console): State<Arc<Console>>) -> Html<String> {
    let body = html! {
        h1 { "Sign in" }
        form.login method="post" action="/login" {
            label { "Console token " input type="password" name="token" autocomplete="current-password" required; }
            button type="submit" { "Sign in" }
        }
    };
    layout(&console, "Sign in", body)
}

#[derive(Deserialize)]
pub struct Login {
    token: String,
}

/// `POST /login`: sets the session cookie for the right token.
pub async fn login(State(console): State<Arc<Console>>, Form(form): Form<Login>) -> Response {
    match console.access.session_cookie() {
        Some(cookie) if console.access.is_token(&form.token) => {
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        Some(_) => (StatusCode::UNAUTHORIZED, "wrong token").into_response(),
        None => Redirect::to("/").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_values_render_as_text() {
        let html = value("<script>alert(1)</script>\u{202E}evil\u{0}").into_string();
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;\\u{202e}evil\\u{0}"),
            "{html}"
        );
        assert!(!html.contains("<script>"));
        let long = value(&"n".repeat(5_000)).into_string();
        assert!(long.contains(&format!("{}…", "n".repeat(SHOWN_CHARS))));
        assert!(long.len() > 5_000, "the whole value stays in the tooltip");
    }
}
