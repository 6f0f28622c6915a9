//! crmsync's benchmarks: figures, and the ratios and targets they are judged
//! by. Run with `bash scripts/bench.sh` (release builds, the Python baseline's
//! virtualenv), or `cargo run -p crmsync-bench --release -- --help`.
//!
//! Every figure is measured here, on this machine, in this run: end-to-end
//! syncs in a child `crmsync` process (its peak RSS sampled from `/proc`), the
//! component path in wasmtime against the same logic built natively, start-up
//! from a cold and a warm compiled-code cache, a run against a server that
//! enforces 190 requests per 10 s, and HubSpot's official Python client
//! paging the same server.

mod native;
mod path;
mod scale;
mod server;
mod tls;

use anyhow::{Context, Result, bail};
use clap::Parser;
use crmsync_host::config::Origin;
use crmsync_host::http::{Hooks, HttpLimits, HttpMode, HttpStats};
use crmsync_host::runtime::{EMBEDDED_COMPONENT_BUILT_AT, HostState, Runtime, Sandbox};
use crmsync_host::store::ContactStore;
use server::{BenchServer, Setup};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// crmsync's benchmark suite.
#[derive(Debug, Parser)]
struct Args {
    /// End-to-end sync sizes (contacts).
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    sizes: Vec<u64>,
    /// Runs of each end-to-end size; the median rate is reported.
    #[arg(long, default_value_t = 3)]
    e2e_rounds: usize,
    /// Records for the wasm vs native component path.
    #[arg(long, default_value_t = 100_000)]
    path_records: u64,
    /// Another build of the component (default: the one the runner
    /// carries), for the wasm side of the component path and every
    /// `crmsync` the bench starts: two builds of the guest compared
    /// against the same native build and the same runner. Start-up always
    /// loads the runner's own.
    #[arg(long)]
    component: Option<PathBuf>,
    /// Contacts for the run under a 190 requests / 10 s limit.
    #[arg(long, default_value_t = 60_000)]
    throttled_contacts: u64,
    /// A Python with `hubspot-api-client` installed, for the baseline.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Contacts the Python baseline pages through (also synced by crmsync for the ratio).
    #[arg(long, default_value_t = 100_000)]
    python_contacts: u64,
    /// The `crmsync` binary (default: beside this one).
    #[arg(long)]
    crmsync: Option<PathBuf>,
    /// Contacts a one-way sync into Salesforce creates.
    #[arg(long, default_value_t = 100_000)]
    bridge_contacts: u64,
    /// A PostgreSQL server (`postgresql://…`) for the PostgreSQL figures
    /// (scripts/bench.sh starts a throwaway one).
    #[arg(long)]
    postgres_url: Option<String>,
    /// Contacts the end-to-end run into PostgreSQL (and SQLite beside it) syncs.
    #[arg(long, default_value_t = 100_000)]
    postgres_contacts: u64,
    /// Syncs one runner holds in the concurrency run.
    #[arg(long, default_value_t = 100)]
    concurrency_syncs: usize,
    /// The runner's `--concurrency` there.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Each API request's latency there (ms).
    #[arg(long, default_value_t = 100)]
    latency_ms: u64,
    /// Contacts per sync there.
    #[arg(long, default_value_t = 200)]
    concurrency_contacts: u64,
    /// Rate-limited portals one runner holds at once in the portals run
    /// (each 190 requests / 10 s, at --latency-ms).
    #[arg(long, default_value_t = 50)]
    portals: usize,
    /// Contacts per portal there.
    #[arg(long, default_value_t = 5_000)]
    portal_contacts: u64,
    /// Pages the TLS section fetches each way.
    #[arg(long, default_value_t = 400)]
    tls_requests: u32,
    /// Only these sections: e2e, path, startup, store, throttled, python, bridge,
    /// concurrency (with the fleet model), portals, tls, postgres.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// A figure with its target, for the closing table.
struct Figure {
    name: String,
    value: String,
    target: String,
    met: Option<bool>,
}

struct Report(Vec<Figure>);

impl Report {
    fn add(&mut self, name: &str, value: String, target: &str, met: Option<bool>) {
        println!(
            "  {name}: {value}{}",
            if target.is_empty() {
                String::new()
            } else {
                format!("  (target {target})")
            }
        );
        self.0.push(Figure {
            name: name.to_owned(),
            value,
            target: target.to_owned(),
            met,
        });
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let wants = |section: &str| args.only.is_empty() || args.only.iter().any(|s| s == section);
    let work = std::env::temp_dir().join(format!("crmsync-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    // The in-process runtime starts with an empty compiled-code cache (the cold figure).
    let cache = work.join("cache");
    // SAFETY: set before any thread that reads the environment is started.
    unsafe { std::env::set_var("CRMSYNC_CACHE_DIR", &cache) };
    let crmsync = args.crmsync.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .expect("the bench's own path")
            .with_file_name("crmsync")
    });
    // The component the runner carries, as built beside it, unless another is given.
    let component = args
        .component
        .clone()
        .unwrap_or_else(|| PathBuf::from(EMBEDDED_COMPONENT_BUILT_AT));
    if !crmsync.is_file() || !component.is_file() {
        bail!(
            "build first: cargo build --release -p crmsync-host (looked for {} and {})",
            crmsync.display(),
            component.display()
        );
    }
    println!(
        "crmsync benchmarks: {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    let mut report = Report(Vec::new());

    if wants("startup") {
        startup(&mut report)?;
    }
    if wants("path") {
        path::component_path(args.path_records, args.component.as_deref(), &mut report)?;
    }
    if wants("store") {
        store_writes(args.path_records, &work, &mut report)?;
    }
    let child = Child {
        crmsync: &crmsync,
        component: &component,
        cache: &cache,
        work: &work,
    };
    let mut e2e_rates = Vec::new();
    if wants("e2e") {
        child.warm_up()?;
        let mut stores = Vec::new();
        for &n in &args.sizes {
            let (rate, server) = end_to_end(&child, n, args.e2e_rounds, &mut report)?;
            e2e_rates.push((n, rate));
            stores.push((n, server));
        }
        stores.sort_by_key(|(n, _)| *n);
        no_change_runs(&child, &stores, &mut report)?;
    }
    if wants("throttled") {
        child.warm_up()?;
        throttled(&child, args.throttled_contacts, &mut report)?;
    }
    if wants("bridge") {
        child.warm_up()?;
        bridge(&child, args.bridge_contacts, &mut report)?;
    }
    let bin = scale::Binary {
        crmsync: &crmsync,
        component: &component,
        cache: &cache,
        work: &work,
    };
    let mut figures = Vec::new();
    if wants("concurrency") {
        child.warm_up()?;
        let measured = scale::concurrency(
            &bin,
            args.concurrency_syncs,
            args.concurrency,
            Duration::from_millis(args.latency_ms),
            args.concurrency_contacts,
            &mut figures,
        )?;
        scale::fleet_model(
            &measured,
            10_000,
            Duration::from_secs(15 * 60),
            args.concurrency,
            std::thread::available_parallelism().map_or(2, |n| n.get()) as f64,
            &mut figures,
        );
    }
    if wants("portals") {
        child.warm_up()?;
        scale::portals(
            &bin,
            args.portals,
            args.portal_contacts,
            Duration::from_millis(args.latency_ms),
            (190, Duration::from_secs(10)),
            &mut figures,
        )?;
    }
    if wants("tls") {
        tls::pages(args.tls_requests, &mut figures)?;
    }
    if wants("postgres") {
        match &args.postgres_url {
            Some(url) => scale::postgres(&bin, url, args.postgres_contacts, &mut figures)?,
            None => println!(
                "PostgreSQL figures skipped: pass --postgres-url (scripts/bench.sh starts a server)"
            ),
        }
    }
    for (name, value, target, met) in figures {
        report.0.push(Figure {
            name,
            value,
            target,
            met,
        });
    }
    if wants("python") {
        match &args.python {
            Some(python) => {
                child.warm_up()?;
                let ours = match e2e_rates.iter().find(|(n, _)| *n == args.python_contacts) {
                    Some((_, rate)) => *rate,
                    None => end_to_end(&child, args.python_contacts, 1, &mut report)?.0,
                };
                python_baseline(python, args.python_contacts, ours, &work, &mut report)?;
            }
            None => {
                println!("python baseline skipped: pass --python (scripts/bench.sh sets one up)")
            }
        }
    }

    println!("\nsummary");
    for f in &report.0 {
        let verdict = match f.met {
            Some(true) => "met",
            Some(false) => "NOT MET",
            None => "",
        };
        println!(
            "  {:<48} {:>22}  {:<22} {verdict}",
            f.name, f.value, f.target
        );
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Component start-up: compiling on a cold cache, then loading from it.
/// The runner's own: its embedded component, as `crmsync` loads it
/// when no `--component` is given.
fn startup(report: &mut Report) -> Result<()> {
    println!("\nstart-up (the embedded component)");
    let started = Instant::now();
    let runtime = Runtime::load_embedded(Sandbox::default())?;
    let cold = started.elapsed();
    report.add("start-up, cold (compile + cache write)", ms(cold), "", None);
    let mut warm = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let runtime = Runtime::load_embedded(Sandbox::default())?;
        warm.push(started.elapsed());
        drop(runtime);
    }
    let warm = median(&mut warm);
    report.add(
        "start-up, from the cache (load)",
        ms(warm),
        "<= 2 ms",
        Some(warm <= Duration::from_millis(2)),
    );
    let mut instantiate = Vec::new();
    for _ in 0..20 {
        let state = live_state(&runtime, Origin::parse("http://127.0.0.1:9")?)?;
        let started = Instant::now();
        let instance = runtime.instantiate(state)?;
        instantiate.push(started.elapsed());
        drop(instance);
    }
    report.add(
        "instantiation (per run)",
        ms(median(&mut instantiate)),
        "",
        None,
    );
    report.add(
        "cold / cached",
        format!("{:.0}x", cold.as_secs_f64() / warm.as_secs_f64()),
        "",
        None,
    );
    Ok(())
}

/// The runner's destination writes alone: what applying `create` outcomes
/// costs in a file-backed store, a page per transaction, as a sync does.
fn store_writes(records: u64, work: &Path, report: &mut Report) -> Result<()> {
    use crmsync_host::store::{ContactData, SeenBy};
    println!("\nstore: {records} lookups + creates, 100 per transaction");
    let path = work.join("store-bench.sqlite");
    let _ = std::fs::remove_file(&path);
    let store = ContactStore::open(&path)?;
    let started = Instant::now();
    let mut lookups = Duration::ZERO;
    for page in 0..records.div_ceil(100) {
        store.begin()?;
        for i in page * 100 + 1..=((page + 1) * 100).min(records) {
            let data = ContactData {
                name: Some(format!("First{i} Last{i}")),
                emails: vec![format!("c{i}@example.com")],
                phones: vec![format!("+1555{i:07}")],
                fields: Default::default(),
            };
            let looked = Instant::now();
            store.find_by_external_id(&i.to_string())?;
            store.find_by_handle(crmsync_host::store::Handle::Email, &data.emails[0])?;
            store.find_by_handle(crmsync_host::store::Handle::Phone, &data.phones[0])?;
            lookups += looked.elapsed();
            store.create(
                &i.to_string(),
                &data,
                Some(SeenBy {
                    sync: "bench",
                    run_id: 1,
                }),
            )?;
        }
        store.commit()?;
    }
    let elapsed = started.elapsed();
    report.add(
        "store lookups + creates",
        format!(
            "{:.0} records/s ({:.1} us lookups + {:.1} us writes per record)",
            records as f64 / elapsed.as_secs_f64(),
            lookups.as_secs_f64() * 1e6 / records as f64,
            (elapsed - lookups).as_secs_f64() * 1e6 / records as f64
        ),
        "",
        None,
    );
    Ok(())
}

/// How to run the `crmsync` binary as a user would.
struct Child<'a> {
    crmsync: &'a Path,
    component: &'a Path,
    cache: &'a Path,
    work: &'a Path,
}

/// What one `crmsync sync` child did.
struct Run {
    wall: Duration,
    /// The child's own CPU, user and system.
    cpu: Duration,
    peak_rss_kib: u64,
    report: serde_json::Value,
}

impl Child<'_> {
    /// One tiny sync, so timed runs load the component from the cache.
    fn warm_up(&self) -> Result<()> {
        let server = BenchServer::start(Setup {
            contacts: 10,
            limit: None,
            latency: None,
        });
        let run = self.sync(&server.base_url, "none", "warmup")?;
        println!(
            "\nprocess start to finish, 10 contacts, cached component: {}",
            ms(run.wall)
        );
        Ok(())
    }

    fn sync(&self, base_url: &str, rate_limit: &str, name: &str) -> Result<Run> {
        self.sync_with(name, &Self::hubspot(base_url, rate_limit))
    }

    /// [`Child::sync`] again, into the store its last run left.
    fn resync(&self, base_url: &str, rate_limit: &str, name: &str) -> Result<Run> {
        self.sync_again(name, &Self::hubspot(base_url, rate_limit))
    }

    /// The `[source]` of a HubSpot sync against `base_url`.
    fn hubspot(base_url: &str, rate_limit: &str) -> String {
        format!(
            "[source]\nsystem = \"hubspot\"\nbase_url = \"{base_url}\"\nrate_limit = \"{rate_limit}\"\n"
        )
    }

    /// A fresh sync named `name` with this config body (a store is added).
    fn sync_with(&self, name: &str, body: &str) -> Result<Run> {
        let dir = self.work.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        self.sync_again(name, body)
    }

    /// Sync `name` with this config body, into the store its last run left.
    fn sync_again(&self, name: &str, body: &str) -> Result<Run> {
        let config = self.work.join(name).join("sync.toml");
        std::fs::write(
            &config,
            format!("name = \"{name}\"\n{body}[store]\npath = \"bench.sqlite\"\n"),
        )?;
        let started = Instant::now();
        let mut child = Command::new(self.crmsync)
            .args(["sync", "--json", "--config"])
            .arg(&config)
            .arg("--component")
            .arg(self.component)
            .env("CRMSYNC_CACHE_DIR", self.cache)
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", self.crmsync.display()))?;
        // The child's own high-water mark, sampled until it exits: wait4's
        // ru_maxrss also counts the memory of the process it was spawned
        // from (Linux keeps the pre-exec address space's high-water mark),
        // so after the in-process sections it reported the bench's 108 MiB.
        let pid = child.id();
        let sampler = std::thread::spawn(move || {
            let mut peak = 0u64;
            while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                // Before its exec the child still shares the bench's memory.
                let is_crmsync = status.lines().any(|l| l == "Name:\tcrmsync");
                let hwm = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok());
                match hwm {
                    Some(kib) if is_crmsync => peak = peak.max(kib),
                    Some(_) => {}
                    None => break, // exited: a zombie has no memory left
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        });
        let mut out = String::new();
        child
            .stdout
            .take()
            .expect("piped stdout")
            .read_to_string(&mut out)?;
        let peak_rss_kib = sampler.join().expect("the RSS sampler");
        let (status, usage) = wait4(pid)?;
        let wall = started.elapsed();
        if status != 0 {
            bail!("crmsync sync exited with status {status}: {out}");
        }
        let time = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        Ok(Run {
            wall,
            cpu: time(usage.ru_utime) + time(usage.ru_stime),
            peak_rss_kib,
            report: serde_json::from_str(&out).context("crmsync's JSON report")?,
        })
    }
}

/// Reaps the child, with its resource usage (peak RSS in KiB on Linux).
fn wait4(pid: u32) -> Result<(i32, libc::rusage)> {
    let mut status = 0;
    // SAFETY: plain FFI into wait4 with valid pointers; the child is ours and not yet reaped.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    if reaped != pid as i32 {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    Ok((libc::WEXITSTATUS(status), usage))
}

/// `crmsync sync` of `n` contacts from the fast server into a fresh store,
/// `rounds` times: the median rate, the largest peak RSS. The last round's
/// synced store is left behind with its server, for [`no_change_runs`].
fn end_to_end(
    child: &Child<'_>,
    n: u64,
    rounds: usize,
    report: &mut Report,
) -> Result<(f64, BenchServer)> {
    println!("\nend to end: crmsync sync of {n} contacts into a fresh SQLite store, {rounds} runs");
    let (mut rates, mut peak_kib, mut busy_share) = (Vec::new(), 0u64, Vec::new());
    let mut requests = 0;
    let mut last = None;
    for _ in 0..rounds.max(1) {
        let server = BenchServer::start(Setup {
            contacts: n,
            limit: None,
            latency: None,
        });
        let run = child.sync(&server.base_url, "none", &format!("e2e-{n}"))?;
        let seen = run.report["seen"].as_u64().unwrap_or(0);
        let created = run.report["created"].as_u64().unwrap_or(0);
        anyhow::ensure!(
            seen == n && created == n,
            "synced {created} of {n}: {}",
            run.report
        );
        let rate = n as f64 / run.wall.as_secs_f64();
        println!("  run: {rate:.0} contacts/s in {}", ms(run.wall));
        rates.push(rate);
        peak_kib = peak_kib.max(run.peak_rss_kib);
        let busy = Duration::from_nanos(server.stats.busy_ns.load(Ordering::Relaxed));
        busy_share.push(busy.as_secs_f64() / run.wall.as_secs_f64());
        requests = server.stats.requests.load(Ordering::Relaxed);
        last = Some(server);
    }
    rates.sort_by(f64::total_cmp);
    busy_share.sort_by(f64::total_cmp);
    let rate = rates[rates.len() / 2];
    report.add(
        &format!("e2e {n} contacts"),
        format!(
            "{rate:.0} contacts/s (runs {:.0}-{:.0})",
            rates[0],
            rates[rates.len() - 1]
        ),
        ">= 100000 contacts/s",
        Some(rate >= 100_000.0),
    );
    report.add(
        &format!("e2e {n} contacts, peak RSS"),
        format!("{:.1} MiB", peak_kib as f64 / 1024.0),
        if n >= 1_000_000 { "<= 64 MiB" } else { "" },
        (n >= 1_000_000).then_some(peak_kib <= 64 * 1024),
    );
    report.add(
        &format!("e2e {n} contacts, server busy"),
        format!(
            "{:.1}% of the run ({requests} requests per run)",
            100.0 * busy_share[busy_share.len() / 2]
        ),
        "",
        None,
    );
    Ok((rate, last.expect("one round at least")))
}

/// Runs of each synced store of `stores` (a size, and the server it was
/// synced from) when nothing changed at the source: incremental runs that
/// read no record. What such a run costs must not grow with the store (issue
/// 18): the largest store's CPU against the smallest's, runs alternating
/// between the stores so the machine's drift falls on each alike.
fn no_change_runs(
    child: &Child<'_>,
    stores: &[(u64, BenchServer)],
    report: &mut Report,
) -> Result<()> {
    const ROUNDS: usize = 7;
    println!("\nno changes at the source: incremental runs of the synced stores, {ROUNDS} each");
    let mut runs: Vec<Vec<Run>> = stores.iter().map(|_| Vec::new()).collect();
    for _ in 0..ROUNDS {
        for ((n, server), runs) in stores.iter().zip(&mut runs) {
            let run = child.resync(&server.base_url, "none", &format!("e2e-{n}"))?;
            anyhow::ensure!(
                run.report["mode"] == "incremental" && run.report["seen"].as_u64() == Some(0),
                "not an incremental run that read nothing: {}",
                run.report
            );
            println!("  store of {n}: {} CPU, {}", ms(run.cpu), ms(run.wall));
            runs.push(run);
        }
    }
    let mut medians = Vec::new();
    for ((n, _), runs) in stores.iter().zip(&runs) {
        let mut cpu: Vec<Duration> = runs.iter().map(|r| r.cpu).collect();
        let mut wall: Vec<Duration> = runs.iter().map(|r| r.wall).collect();
        let (cpu, wall) = (median(&mut cpu), median(&mut wall));
        report.add(
            &format!("no-change run, store of {n}"),
            format!("{} CPU, {} start to finish", ms(cpu), ms(wall)),
            "",
            None,
        );
        medians.push((*n, cpu));
    }
    if let (Some(&(small, small_cpu)), Some(&(large, large_cpu))) =
        (medians.first(), medians.last())
        && large > small
    {
        let ratio = large_cpu.as_secs_f64() / small_cpu.as_secs_f64();
        report.add(
            &format!("no-change run's CPU, store of {large} / of {small}"),
            format!("{ratio:.2}"),
            "<= 1.2",
            Some(ratio <= 1.2),
        );
    }
    Ok(())
}

/// A first (full) one-way sync of HubSpot contacts into Salesforce: every
/// contact read, its email looked up in Salesforce (Leads, then Contacts),
/// and created as a Lead in collections of 200.
fn bridge(child: &Child<'_>, n: u64, report: &mut Report) -> Result<()> {
    println!("\ninto a CRM: {n} HubSpot contacts created as Salesforce Leads, first run");
    let server = BenchServer::start(Setup {
        contacts: n,
        limit: None,
        latency: None,
    });
    let url = &server.base_url;
    let run = child.sync_with(
        &format!("bridge-{n}"),
        &format!(
            "[source]\nsystem = \"hubspot\"\nbase_url = \"{url}\"\nrate_limit = \"none\"\n\
             [destination]\nsystem = \"salesforce\"\nbase_url = \"{url}\"\n"
        ),
    )?;
    let created = run.report["written"]["to_destination"]["created"]
        .as_u64()
        .unwrap_or(0);
    anyhow::ensure!(created == n, "created {created} of {n}: {}", run.report);
    let rate = n as f64 / run.wall.as_secs_f64();
    let requests = server.stats.requests.load(Ordering::Relaxed);
    report.add(
        &format!("into Salesforce, {n} contacts"),
        format!("{rate:.0} contacts/s ({requests} requests)"),
        "",
        None,
    );
    report.add(
        &format!("into Salesforce, {n} contacts, peak RSS"),
        format!("{:.1} MiB", run.peak_rss_kib as f64 / 1024.0),
        "",
        None,
    );
    Ok(())
}

/// A run against a server enforcing 190 requests per rolling 10 s.
fn throttled(child: &Child<'_>, n: u64, report: &mut Report) -> Result<()> {
    const LIMIT: usize = 190;
    const WINDOW: Duration = Duration::from_secs(10);
    println!("\nthrottled: {n} contacts, the server enforcing {LIMIT} requests / 10 s");
    let server = BenchServer::start(Setup {
        contacts: n,
        limit: Some((LIMIT, WINDOW)),
        latency: None,
    });
    let run = child.sync(&server.base_url, "190/10s", "throttled")?;
    anyhow::ensure!(run.report["seen"].as_u64() == Some(n), "{}", run.report);
    let requests = server.stats.requests.load(Ordering::Relaxed);
    let refused = server.stats.refused.load(Ordering::Relaxed);
    // The fastest any client could be: its requests in consecutive windows of 190.
    let minimum = WINDOW * ((requests - refused).saturating_sub(1) / LIMIT as u64) as u32;
    let achieved = minimum.as_secs_f64() / run.wall.as_secs_f64();
    report.add(
        "throttled, contacts/s (steady bound 1,900/s)",
        format!(
            "{:.0} ({} in {}, minimum {})",
            n as f64 / run.wall.as_secs_f64(),
            requests - refused,
            ms(run.wall),
            ms(minimum)
        ),
        "",
        None,
    );
    report.add(
        "throttled, share of the bound",
        format!("{:.1}%", achieved * 100.0),
        ">= 95%",
        Some(achieved >= 0.95),
    );
    let share = refused as f64 / requests as f64;
    report.add(
        "throttled, 429s",
        format!("{refused} of {requests} ({:.2}%)", share * 100.0),
        "<= 1%",
        Some(share <= 0.01),
    );
    Ok(())
}

/// HubSpot's official Python client paging the same server into a file.
fn python_baseline(
    python: &Path,
    n: u64,
    ours: f64,
    work: &Path,
    report: &mut Report,
) -> Result<()> {
    println!("\nbaseline: hubspot-api-client (Python) paging {n} contacts into a file");
    let server = BenchServer::start(Setup {
        contacts: n,
        limit: None,
        latency: None,
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hubspot_client.py");
    let out = work.join("python-contacts.jsonl");
    let started = Instant::now();
    let status = Command::new(python)
        .arg(&script)
        .arg(&server.base_url)
        .arg(&out)
        .status()
        .with_context(|| format!("cannot run {}", python.display()))?;
    let wall = started.elapsed();
    anyhow::ensure!(status.success(), "the Python baseline failed: {status}");
    let lines = std::fs::read_to_string(&out)?.lines().count() as u64;
    anyhow::ensure!(lines == n, "the Python baseline wrote {lines} of {n}");
    let theirs = n as f64 / wall.as_secs_f64();
    report.add(
        "python hubspot-api-client",
        format!("{theirs:.0} contacts/s"),
        "",
        None,
    );
    report.add(
        "crmsync / python client",
        format!("{:.1}x", ours / theirs),
        ">= 12x",
        Some(ours / theirs >= 12.0),
    );
    Ok(())
}

/// A runner's host state for `runtime`: live requests to `origin` with the
/// default limits, over an in-memory store.
fn live_state(runtime: &Runtime, origin: Origin) -> Result<HostState> {
    let hooks = Hooks::new(
        origin,
        HttpMode::Live,
        Default::default(),
        HttpLimits::default(),
        Arc::new(HttpStats::default()),
    );
    Ok(HostState::new(
        hooks,
        Box::new(ContactStore::open_in_memory()?),
        runtime.sandbox(),
    ))
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    if d >= Duration::from_secs(10) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}
