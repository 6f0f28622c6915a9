//! The `crmsync` command line. Lives in the library so tests drive exactly
//! what an operator types, output included.

use crate::bindings::crmsync::sync::types::{
    FieldMapping, FieldTarget, FieldType, Property, SourceRecord,
};
use crate::cassette::Cassette;
use crate::config::Config;
use crate::daemon::{self, run_daemon};
use crate::http::{Hooks, HttpMode, HttpStats};
use crate::runtime::{HostState, Runtime, Sandbox};
use crate::store::{ContactData, DynStore, LinkSide, Store};
pub use crate::summary::write_summary;
use crate::sync::{SyncOptions, run_sync, source_fields};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// crmsync: sync CRM contacts into a destination, through a WebAssembly component.
#[derive(Debug, Parser)]
#[command(name = "crmsync", version, about)]
pub struct Cli {
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one sync pass now.
    Sync(SyncArgs),
    /// List the destination contacts.
    Contacts(ReadArgs),
    /// List the destination accounts (synced companies) and their contact counts.
    Accounts(ReadArgs),
    /// List a sync into a CRM's links: which source record is which
    /// destination record, and the values both sides last agreed on.
    Links(ReadArgs),
    /// Show the errors of the last run (of each part: companies, then contacts).
    Errors(ErrorsArgs),
    /// Show the sync's run history, newest first.
    Runs(ReadArgs),
    /// Run every sync on its schedule until SIGTERM or Ctrl-C.
    Daemon(DaemonArgs),
    /// Run the daemon with a web console, a JSON API, Prometheus metrics and
    /// HubSpot webhook triggers.
    Serve(ServeArgs),
    /// List the live runners sharing the configs' PostgreSQL stores, their
    /// heartbeats and the syncs each holds.
    Runners(RunnersArgs),
    /// Ask a running daemon to run the sync now.
    Trigger(ConfigArg),
    /// Stop scheduled runs of the sync until `resume`.
    Pause(ConfigArg),
    /// Restart scheduled runs of a paused sync.
    Resume(ConfigArg),
    /// Show the sync's state, last and next run, records and open errors.
    Status(ReadArgs),
    /// List the source's fields (properties) and where the sync maps them.
    Fields(FieldsArgs),
    /// Add contacts the destination already has (unlinked) from a JSON file:
    /// `[{"name": "...", "emails": [...], "phones": [...], "fields": {...}}]`.
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct RunnersArgs {
    /// Sync configs (files or folders) whose PostgreSQL databases to ask.
    #[arg(long, value_name = "FILE|DIR", required = true)]
    pub config: Vec<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The sync's TOML config file.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct ComponentArg {
    /// The sync component to load (default: the one built into this binary).
    #[arg(long, value_name = "PATH")]
    pub component: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub component: ComponentArg,
    /// Answer every request from this cassette instead of the network.
    #[arg(long, value_name = "CASSETTE", conflicts_with = "record")]
    pub replay: Option<PathBuf>,
    /// Save every exchange of this live run to this cassette.
    #[arg(long, value_name = "CASSETTE")]
    pub record: Option<PathBuf>,
    /// Print the run summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Read every record, not only those changed since the last run.
    #[arg(long)]
    pub full: bool,
    #[command(flatten)]
    pub runner: RunnerArg,
}

/// Who this runner is, on its runs, its requests' `User-Agent` and the fleet's runner list.
#[derive(Debug, Args)]
pub struct RunnerArg {
    /// This runner's id (default: host name and pid).
    #[arg(long, value_name = "ID")]
    pub runner_id: Option<String>,
}

impl RunnerArg {
    fn id(&self) -> String {
        self.runner_id
            .clone()
            .unwrap_or_else(crate::options::runner_id)
    }
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ErrorsArgs {
    #[command(flatten)]
    pub read: ReadArgs,
    /// Show this run's errors instead of the last run's.
    #[arg(long, value_name = "ID")]
    pub run: Option<i64>,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// A sync's TOML config, or a folder of them; repeatable.
    #[arg(long, value_name = "FILE|DIR", required = true)]
    pub config: Vec<PathBuf>,
    #[command(flatten)]
    pub runner: RunnerArg,
    /// How many syncs run at once (each waits mostly on its API).
    #[arg(long, value_name = "N", default_value_t = daemon::DEFAULT_CONCURRENCY as u64,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub concurrency: u64,
    #[command(flatten)]
    pub component: ComponentArg,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// The address to listen on; off loopback a token (--token-env) is required.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// The environment variable holding the HubSpot app's client secret:
    /// webhook deliveries are verified with it (webhooks are off without it).
    #[arg(long, value_name = "NAME")]
    pub webhook_secret_env: Option<String>,
    /// The URL HubSpot and browsers reach this server at, as HubSpot signs
    /// it (default: http:// and the listen address).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// The environment variable holding the token the console and API ask for.
    #[arg(long, value_name = "NAME")]
    pub token_env: Option<String>,
}

#[derive(Debug, Args)]
pub struct FieldsArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub component: ComponentArg,
    /// Answer from this cassette instead of the network.
    #[arg(long, value_name = "CASSETTE")]
    pub replay: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// The `[companies]` part's fields (company properties) instead.
    #[arg(long)]
    pub companies: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub component: ComponentArg,
    /// JSON file of contacts.
    pub file: PathBuf,
}

/// What a command asks the process to exit with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success,
    /// The sync stopped on a sync-level error (already reported).
    SyncFailed,
}

/// Runs a parsed command, writing its output to `out`.
pub fn run(cli: Cli, out: &mut dyn Write) -> Result<Exit> {
    match cli.command {
        Command::Sync(args) => sync(args, out),
        Command::Contacts(args) => {
            let (_, store) = open_store(&args.config)?;
            let contacts = store.contacts()?;
            if args.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&contacts)?)?;
            } else {
                for c in &contacts {
                    let account = c.account.as_ref().map(|a| {
                        format!(
                            "  @ {}",
                            terminal_safe(a.name.as_deref().unwrap_or("(unnamed account)"))
                        )
                    });
                    writeln!(
                        out,
                        "{:>6}  {:<14} {:<30} {:<40} {}{}",
                        c.id,
                        terminal_safe(c.external_id.as_deref().unwrap_or("(unlinked)")),
                        terminal_safe(c.name.as_deref().unwrap_or("-")),
                        terminal_safe(&c.emails.join(", ")),
                        terminal_safe(&c.phones.join(", ")),
                        account.unwrap_or_default()
                    )?;
                }
                writeln!(out, "{} contacts", contacts.len())?;
            }
            Ok(Exit::Success)
        }
        Command::Links(args) => {
            let (config, store) = open_store(&args.config)?;
            // Companies first, as they run; each link says which part it is.
            let mut parts_links = Vec::new();
            for part in crate::status::parts(&config) {
                let label = if part == config.name {
                    "people"
                } else {
                    "companies"
                };
                parts_links.push((label, store.links(part)?));
            }
            if args.json {
                let mut all = Vec::new();
                for (label, links) in &parts_links {
                    for link in links {
                        let mut value = serde_json::to_value(link)?;
                        value["part"] = serde_json::Value::from(*label);
                        all.push(value);
                    }
                }
                writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
            } else {
                for (label, links) in &parts_links {
                    for link in links {
                        let side = |id: &Option<String>, kind: &Option<String>| match (id, kind) {
                            (Some(id), Some(kind)) => format!("{} ({kind})", terminal_safe(id)),
                            (Some(id), None) => terminal_safe(id),
                            (None, _) => "(not created)".to_owned(),
                        };
                        writeln!(
                            out,
                            "{:<24} <-> {:<28} {:<32} {} fields agreed{}",
                            side(&link.source_id, &link.source_kind),
                            side(&link.destination_id, &link.destination_kind),
                            terminal_safe(link.email.as_deref().unwrap_or("-")),
                            link.agreed.len(),
                            match (link.syncing, link.stopped_at) {
                                (true, _) => "",
                                (false, Some(LinkSide::Destination)) => {
                                    "  (no longer syncing: deleted at the destination)"
                                }
                                (false, _) =>
                                    "  (no longer syncing: not at the source, or filtered out)",
                            }
                        )?;
                    }
                    match *label {
                        "companies" => writeln!(out, "{} company links", links.len())?,
                        _ => writeln!(out, "{} links", links.len())?,
                    }
                }
            }
            Ok(Exit::Success)
        }
        Command::Accounts(args) => {
            let (_, store) = open_store(&args.config)?;
            let accounts = store.accounts()?;
            if args.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&accounts)?)?;
            } else {
                for a in &accounts {
                    writeln!(
                        out,
                        "{:>6}  {:<14} {:<30} {:<40} {} contacts{}",
                        a.id,
                        terminal_safe(a.external_id.as_deref().unwrap_or("(unlinked)")),
                        terminal_safe(a.name.as_deref().unwrap_or("-")),
                        terminal_safe(&a.domains.join(", ")),
                        a.contacts,
                        if a.syncing {
                            ""
                        } else {
                            "  (no longer syncing)"
                        }
                    )?;
                }
                writeln!(out, "{} accounts", accounts.len())?;
            }
            Ok(Exit::Success)
        }
        Command::Errors(args) => {
            let (config, store) = open_store(&args.read.config)?;
            let (run_ids, errors) = crate::status::errors(&config, &*store, args.run)?;
            let run_id = (!run_ids.is_empty()).then(|| {
                run_ids
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(" and ")
            });
            if args.read.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&errors)?)?;
            } else {
                for e in &errors {
                    let subject = match (&e.record_id, &e.field) {
                        (Some(record), _) => format!("record {record}"),
                        (None, Some(field)) => format!("field {field}"),
                        (None, None) => "whole sync".to_owned(),
                    };
                    writeln!(
                        out,
                        "[{}] {subject}: {}\n    fix: {}",
                        e.category, e.message, e.resolution
                    )?;
                }
                writeln!(
                    out,
                    "{} errors in run {}",
                    errors.len(),
                    run_id.unwrap_or_else(|| "-".into())
                )?;
            }
            Ok(Exit::Success)
        }
        Command::Runs(args) => {
            let (config, store) = open_store(&args.config)?;
            let runs = crate::status::runs(&config, &*store)?;
            if args.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&runs)?)?;
            } else {
                for r in &runs {
                    let c = &r.counts;
                    writeln!(
                        out,
                        "run {:>4}  {:<9}  {:<11}  {} -> {}  seen {} created {} updated {} skipped {} failed {}{}{}",
                        r.id,
                        r.status,
                        r.mode,
                        r.started_at,
                        r.ended_at.as_deref().unwrap_or("…"),
                        c.seen,
                        c.created,
                        c.updated,
                        c.skipped,
                        c.failed,
                        r.runner
                            .as_deref()
                            .map(|runner| format!("  by {}", terminal_safe(runner)))
                            .unwrap_or_default(),
                        r.error
                            .as_deref()
                            .map(|e| format!("\n           {e}"))
                            .unwrap_or_default()
                    )?;
                }
            }
            Ok(Exit::Success)
        }
        Command::Import(args) => import(args, out),
        Command::Fields(args) => fields(args, out),
        Command::Daemon(args) => {
            let runtime = load_runtime(&args.component)?;
            let options = until_signalled(args.runner.id())?;
            run_daemon(
                &runtime,
                &args.config,
                &options,
                args.concurrency as usize,
                out,
            )?;
            Ok(Exit::Success)
        }
        Command::Serve(args) => serve(args, out),
        Command::Runners(args) => runners(args, out),
        Command::Trigger(args) => control(
            &args,
            out,
            |store, sync| store.request_trigger(sync),
            "triggered: a running daemon starts it within a second",
        ),
        Command::Pause(args) => control(
            &args,
            out,
            |store, sync| store.set_paused(sync, true),
            "paused: no scheduled or triggered run starts until `crmsync resume`",
        ),
        Command::Resume(args) => control(
            &args,
            out,
            |store, sync| store.set_paused(sync, false),
            "resumed",
        ),
        Command::Status(args) => {
            let config = Config::load(&args.config.config)?;
            let status = crate::status::status(&config)?;
            if args.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&status)?)?;
            } else {
                if let Some(companies) = &status.companies {
                    write_status(out, companies)?;
                }
                write_status(out, &status)?;
            }
            Ok(Exit::Success)
        }
    }
}

/// The human form of one part's status.
fn write_status(out: &mut dyn Write, status: &crate::status::Status) -> Result<()> {
    writeln!(out, "sync {:?}: {}", status.sync, status.state)?;
    match &status.last_run {
        Some(run) => writeln!(
            out,
            "  last run {} {} at {}: seen {} created {} updated {} skipped {} failed {}",
            run.id,
            run.status,
            run.started_at,
            run.counts.seen,
            run.counts.created,
            run.counts.updated,
            run.counts.skipped,
            run.counts.failed
        )?,
        None => writeln!(out, "  never run")?,
    }
    if let Some(next) = &status.next_run_at {
        writeln!(out, "  next run: {next}")?;
    }
    writeln!(
        out,
        "  records at the source: {}; synced: {}",
        match (status.records_at_source, status.records_at_source_run) {
            (Some(n), Some(run)) => format!("{n} (at full run {run})"),
            _ => "unknown".into(),
        },
        status.records_synced
    )?;
    for (category, count) in &status.open_errors {
        writeln!(out, "  open errors: {category} {count}")?;
    }
    Ok(())
}

/// Source values in human output, escaped (see [`crate::untrusted`]).
pub use crate::untrusted::shown as terminal_safe;

fn control(
    args: &ConfigArg,
    out: &mut dyn Write,
    change: impl Fn(&dyn Store, &str) -> Result<()>,
    done: &str,
) -> Result<Exit> {
    let (config, store) = open_store(args)?;
    change(&*store, &config.name)?;
    writeln!(out, "sync {:?} {done}", config.name)?;
    Ok(Exit::Success)
}

/// The options of a long-running runner `runner`: SIGTERM or SIGINT sets
/// its stop flag, so runs in flight finish their page and stay resumable.
fn until_signalled(runner: String) -> Result<SyncOptions> {
    let options = SyncOptions {
        runner,
        ..SyncOptions::default()
    };
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, options.stop.clone())?;
    }
    Ok(options)
}

/// The value of the environment variable `--{flag}` names.
fn secret_from_env(flag: &str, name: Option<&String>) -> Result<Option<String>> {
    let Some(name) = name else {
        return Ok(None);
    };
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => Ok(Some(value.trim().to_owned())),
        _ => bail!("--{flag} {name}: the environment variable {name} is not set"),
    }
}

fn serve(args: ServeArgs, out: &mut dyn Write) -> Result<Exit> {
    let settings = crmsync_console::Settings {
        listen: args.listen,
        public_url: args.public_url.clone(),
        webhook_secret: secret_from_env("webhook-secret-env", args.webhook_secret_env.as_ref())?,
        token: secret_from_env("token-env", args.token_env.as_ref())?,
        runner: args.daemon.runner.id(),
    };
    let runtime = Arc::new(load_runtime(&args.daemon.component)?);
    let options = until_signalled(settings.runner.clone())?;
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("--listen {}: cannot listen there", args.listen))?;
    crate::serve::run_serve(
        runtime,
        &args.daemon.config,
        &options,
        args.daemon.concurrency as usize,
        settings,
        listener,
        out,
    )?;
    Ok(Exit::Success)
}

fn runners(args: RunnersArgs, out: &mut dyn Write) -> Result<Exit> {
    let mut databases: Vec<String> = Vec::new();
    for file in daemon::config_files(&args.config)? {
        if let crate::store_location::StoreLocation::Postgres { url, .. } =
            Config::load(&file)?.store
            && !databases.contains(&url)
        {
            databases.push(url);
        }
    }
    if databases.is_empty() {
        bail!("none of these configs has a PostgreSQL store (store.url): no fleet to list");
    }
    let mut listed = Vec::new();
    for url in &databases {
        for runner in crmsync_store_postgres::fleet::runners(url)? {
            listed.push((crmsync_store_postgres::redact(url), runner));
        }
    }
    if args.json {
        let rows: Vec<serde_json::Value> = listed
            .iter()
            .map(|(database, runner)| {
                let mut row = serde_json::to_value(runner).expect("a runner serialises");
                row["database"] = database.clone().into();
                row
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
    } else {
        let now = crate::sync::now_ms();
        for (database, runner) in &listed {
            writeln!(
                out,
                "{}  heartbeat {:.1} s ago  holds {}  ({database})",
                terminal_safe(&runner.id),
                (now - runner.heartbeat_ms) as f64 / 1000.0,
                if runner.holds.is_empty() {
                    "nothing".to_owned()
                } else {
                    runner.holds.join(", ")
                }
            )?;
        }
    }
    Ok(Exit::Success)
}

fn open_store(config: &ConfigArg) -> Result<(Config, DynStore)> {
    let config = Config::load(&config.config)?;
    let store = config.store.open()?;
    Ok((config, store))
}

fn load_runtime(component: &ComponentArg) -> Result<Runtime> {
    match &component.component {
        Some(path) => Runtime::load(path, Sandbox::default()),
        None => Runtime::load_embedded(Sandbox::default()),
    }
}

fn fields(args: FieldsArgs, out: &mut dyn Write) -> Result<Exit> {
    let mut config = Config::load(&args.config.config)?;
    if args.companies {
        config = *config
            .companies
            .take()
            .context("--companies: this config has no [companies] part")?;
    }
    let runtime = load_runtime(&args.component)?;
    let mut options = SyncOptions::default();
    if let Some(path) = &args.replay {
        options.http_mode = HttpMode::Replay(Arc::new(Mutex::new(Cassette::load(path)?)));
    }
    let fields = source_fields(&runtime, &config, &options)?;
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&fields)?)?;
        return Ok(Exit::Success);
    }
    for field in &fields {
        // A sync into a CRM says its own arrows (`<->`, `<-`).
        let arrow = |target: &str| {
            if target.starts_with(['<', '-']) {
                target.to_owned()
            } else {
                format!("-> {target}")
            }
        };
        let mapping = match (&field.mapped_to, field.exists) {
            (Some(target), true) => arrow(target),
            (Some(target), false) => {
                format!("{}  (not at the source: field-not-found)", arrow(target))
            }
            (None, _) => String::new(),
        };
        let options = if field.options.is_empty() {
            String::new()
        } else {
            format!(" [{}]", field.options.join(", "))
        };
        writeln!(
            out,
            "{:<32} {:<12} {}{options}  {mapping}",
            terminal_safe(&field.name),
            terminal_safe(&field.value_type),
            terminal_safe(&field.label)
        )?;
    }
    writeln!(
        out,
        "{} fields, {} mapped",
        fields.iter().filter(|f| f.exists).count(),
        fields.iter().filter(|f| f.mapped_to.is_some()).count()
    )?;
    Ok(Exit::Success)
}

fn sync(args: SyncArgs, out: &mut dyn Write) -> Result<Exit> {
    let config = Config::load(&args.config.config)?;
    let runtime = load_runtime(&args.component)?;
    let mut options = SyncOptions {
        full: args.full,
        runner: args.runner.id(),
        ..SyncOptions::default()
    };
    let recording = match (&args.replay, &args.record) {
        (Some(path), _) => {
            options.http_mode = HttpMode::Replay(Arc::new(Mutex::new(Cassette::load(path)?)));
            None
        }
        (None, Some(path)) => {
            let cassette = Arc::new(Mutex::new(Cassette::new(Some(format!(
                "recorded by crmsync {} from sync {:?}",
                env!("CARGO_PKG_VERSION"),
                config.name
            )))));
            options.http_mode = HttpMode::Record(cassette.clone());
            Some((path, cassette))
        }
        (None, None) => None,
    };
    // A live progress line for people at a terminal; nothing of it in JSON,
    // pipes or logs.
    let bar = (!args.json && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .expect("a valid progress template"),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar.set_message(format!("sync {:?}: starting", config.name));
        bar
    });
    if let Some(bar) = &bar {
        let bar = bar.clone();
        let started = std::time::Instant::now();
        options.progress = Some(Arc::new(move |c: &crate::store::Counts| {
            let rate = c.seen as f64 / started.elapsed().as_secs_f64().max(0.001);
            bar.set_message(format!(
                "{} pages, {} records ({} created, {} updated, {} failed), {rate:.0} records/s",
                c.pages, c.seen, c.created, c.updated, c.failed
            ));
        }));
    }
    let report = run_sync(&runtime, &config, &options);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some((path, cassette)) = recording {
        // Saved even when the run failed: the failing exchange is what a bug report needs.
        cassette.lock().expect("cassette lock").save(path)?;
    }
    let report = report?;
    config.notify.after_run(&report);
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        write_summary(out, &report, &args.config.config)?;
    }
    let companies_failed = report.companies.as_ref().is_some_and(|c| c.error.is_some());
    Ok(if report.error.is_some() || companies_failed {
        Exit::SyncFailed
    } else {
        Exit::Success
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportedContact {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    emails: Vec<String>,
    #[serde(default)]
    phones: Vec<String>,
    /// Kept as given: the destination's own values, not a source's to convert.
    #[serde(default)]
    fields: crate::store::Fields,
}

/// Adds the destination's own contacts. Their handles go through the
/// component's `map-fields`, so they are normalised exactly as synced ones (M3).
fn import(args: ImportArgs, out: &mut dyn Write) -> Result<Exit> {
    let config = Config::load(&args.config.config)?;
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let contacts: Vec<ImportedContact> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a JSON array of contacts", args.file.display()))?;
    let runtime = load_runtime(&args.component)?;
    let store = config.store.open()?;
    let hooks = Hooks::new(
        config.source.origin.clone(),
        HttpMode::Live,
        Arc::new(Mutex::new(Default::default())),
        Default::default(),
        Arc::new(HttpStats::default()),
    );
    let mut instance = runtime.instantiate(HostState::new(hooks, store, runtime.sandbox()))?;
    instance.state().store()?.begin()?;
    for (index, contact) in contacts.iter().enumerate() {
        let (record, mappings) = as_source_record(index, contact, config.phone_region.as_deref());
        let mapped = instance.map_fields(&record, &mappings)?.contact;
        if mapped.emails.is_empty() && mapped.phones.is_empty() {
            instance.state().store()?.rollback();
            bail!(
                "{}: contact #{index} has no email and no phone; nothing could match it",
                args.file.display()
            );
        }
        instance.state().store()?.insert_unlinked(&ContactData {
            name: mapped.name,
            emails: mapped.emails,
            phones: mapped.phones,
            fields: contact.fields.clone(),
        })?;
    }
    instance.state().store()?.commit()?;
    writeln!(
        out,
        "imported {} contacts into {}",
        contacts.len(),
        config.store
    )?;
    Ok(Exit::Success)
}

/// An imported contact as a record to map: its phones typed as the sync's
/// (E.164 with a default region), so they compare as the sync's own.
fn as_source_record(
    index: usize,
    contact: &ImportedContact,
    phone_region: Option<&str>,
) -> (SourceRecord, Vec<FieldMapping>) {
    let mut properties = Vec::new();
    let mut mappings = Vec::new();
    let mut add = |name: String, value: &str, target: FieldTarget| {
        properties.push(Property {
            name: name.clone(),
            value: Some(value.to_owned()),
        });
        let value_type = match (&target, phone_region) {
            (FieldTarget::Phone, Some(region)) => FieldType::Phone(region.to_owned()),
            _ => FieldType::Text,
        };
        mappings.push(FieldMapping {
            source: name,
            target,
            value_type,
        });
    };
    if let Some(name) = &contact.name {
        add("name".into(), name, FieldTarget::FullName);
    }
    for (i, email) in contact.emails.iter().enumerate() {
        add(format!("email{i}"), email, FieldTarget::Email);
    }
    for (i, phone) in contact.phones.iter().enumerate() {
        add(format!("phone{i}"), phone, FieldTarget::Phone);
    }
    (
        SourceRecord {
            id: format!("import-{index}"),
            properties,
            modified_at: None,
            merged_ids: Vec::new(),
            company_ids: Vec::new(),
        },
        mappings,
    )
}
