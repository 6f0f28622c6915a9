//! Scale: one runner holding many latency-bound syncs at once (wall time
//! against the concurrency bound, CPU per sync, idle cost), end to end into
//! PostgreSQL beside SQLite, and the fleet model: how many runners 10,000
//! portals on a 15-minute schedule need, found by simulating those portals'
//! runs on runners with the per-sync wall time and CPU measured here.

use crate::ms;
use crate::server::{BenchServer, Setup};
use anyhow::{Context, Result, bail};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// How to run the `crmsync` binary.
pub struct Binary<'a> {
    pub crmsync: &'a Path,
    pub component: &'a Path,
    pub cache: &'a Path,
    pub work: &'a Path,
}

/// One measured figure: name, value, target, whether it met it.
pub type Figure = (String, String, String, Option<bool>);

/// What the concurrency run measured, for the fleet model.
pub struct Measured {
    /// Wall time of one sync alone (its own report), at the API's latency.
    pub sync_wall: Duration,
    /// CPU the daemon spent per sync (user + system).
    pub sync_cpu: Duration,
}

fn config(name: &str, base_url: &str, store: &str, schedule: &str) -> String {
    format!(
        "name = \"{name}\"\nschedule = \"{schedule}\"\n[source]\nsystem = \"hubspot\"\nbase_url = \"{base_url}\"\nrate_limit = \"none\"\n[store]\n{store}\n"
    )
}

/// CPU time (user + system) of process `pid` so far.
fn cpu_of(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("a /proc stat line")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime), counted from the state (field 3).
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_millis(ticks * 1000 / hz))
}

/// `crmsync daemon` over a folder of configs, watched until each of its
/// syncs has run once.
struct Daemon {
    child: std::process::Child,
    pid: u32,
    started: Instant,
    done: mpsc::Receiver<Instant>,
    reader: std::thread::JoinHandle<()>,
}

impl Daemon {
    fn start(bin: &Binary<'_>, folder: &Path, concurrency: usize, syncs: usize) -> Result<Daemon> {
        let started = Instant::now();
        let mut child = Command::new(bin.crmsync)
            .arg("daemon")
            .arg("--config")
            .arg(folder)
            .arg("--component")
            .arg(bin.component)
            .args(["--concurrency", &concurrency.to_string()])
            .env("CRMSYNC_CACHE_DIR", bin.cache)
            .stdout(Stdio::piped())
            .spawn()?;
        let pid = child.id();
        let finished = Arc::new(AtomicUsize::new(0));
        let (all_done, done) = mpsc::channel();
        let stdout = child.stdout.take().context("the daemon's stdout")?;
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Each run's summary starts `sync "<name>": ...`.
                if line.starts_with("sync \"")
                    && finished.fetch_add(1, Ordering::Relaxed) + 1 == syncs
                {
                    let _ = all_done.send(Instant::now());
                }
            }
        });
        Ok(Daemon {
            child,
            pid,
            started,
            done,
            reader,
        })
    }

    /// How long until every sync had run once.
    fn all_ran(&self) -> Result<Duration> {
        let ended = self
            .done
            .recv_timeout(Duration::from_secs(600))
            .context("the daemon did not run every sync within 10 minutes")?;
        Ok(ended - self.started)
    }

    /// SIGTERM, and the daemon's drain.
    fn stop(mut self) -> Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()?;
        self.child.wait()?;
        let _ = self.reader.join();
        Ok(())
    }
}

impl Binary<'_> {
    /// `crmsync sync --json` of `config_text`; the JSON report.
    fn sync(&self, dir: &Path, config_text: &str) -> Result<serde_json::Value> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("sync.toml");
        std::fs::write(&path, config_text)?;
        let output = Command::new(self.crmsync)
            .args(["sync", "--json", "--config"])
            .arg(&path)
            .arg("--component")
            .arg(self.component)
            .env("CRMSYNC_CACHE_DIR", self.cache)
            .stderr(Stdio::inherit())
            .output()?;
        if !output.status.success() {
            bail!(
                "crmsync sync failed: {}",
                String::from_utf8_lossy(&output.stdout)
            );
        }
        Ok(serde_json::from_slice(&output.stdout)?)
    }
}

/// One daemon with `--concurrency limit` over `syncs` syncs, each against its
/// own server answering after `latency`: the wall time until every sync has
/// run once, against the bound `ceil(syncs / limit)` × one sync's time.
pub fn concurrency(
    bin: &Binary<'_>,
    syncs: usize,
    limit: usize,
    latency: Duration,
    contacts: u64,
    figures: &mut Vec<Figure>,
) -> Result<Measured> {
    println!(
        "\nconcurrency: one runner, --concurrency {limit}, {syncs} syncs of {contacts} contacts, {} ms per request",
        latency.as_millis()
    );
    let servers: Vec<BenchServer> = (0..syncs)
        .map(|_| {
            BenchServer::start(Setup {
                contacts,
                limit: None,
                latency: Some(latency),
            })
        })
        .collect();
    // One sync alone: the time each of the daemon's would take unhindered.
    let alone = bin.work.join("alone");
    let report = bin.sync(
        &alone,
        &config(
            "alone",
            &servers[0].base_url,
            "path = \"alone.sqlite\"",
            "24h",
        ),
    )?;
    let sync_wall = Duration::from_millis(report["elapsed_ms"].as_u64().unwrap_or(0));
    let folder = bin.work.join("daemon");
    std::fs::create_dir_all(&folder)?;
    for (i, server) in servers.iter().enumerate() {
        let name = format!("portal{i:03}");
        std::fs::write(
            folder.join(format!("{name}.toml")),
            config(
                &name,
                &server.base_url,
                &format!("path = \"{name}.sqlite\""),
                "24h",
            ),
        )?;
    }
    let daemon = Daemon::start(bin, &folder, limit, syncs)?;
    let wall = daemon.all_ran()?;
    let pid = daemon.pid;
    let busy_cpu = cpu_of(pid)?;
    // Idle: every sync ran and none is due for a day.
    let idle_window = Duration::from_secs(10);
    std::thread::sleep(idle_window);
    let idle_cpu = cpu_of(pid)? - busy_cpu;
    let peak_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .unwrap_or(0);
    daemon.stop()?;

    let waves = syncs.div_ceil(limit) as u32;
    // The faster nothing could go: waves of `limit` syncs each taking one
    // sync's time alone, or all their CPU spread over every core.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let by_latency = sync_wall * waves;
    let by_cpu = busy_cpu / cores;
    let bound = by_latency.max(by_cpu);
    let ratio = wall.as_secs_f64() / bound.as_secs_f64();
    let sync_cpu = busy_cpu / syncs as u32;
    figures.push((
        format!("concurrency {limit}, {syncs} syncs: wall / bound"),
        format!(
            "{ratio:.2} ({} vs {waves} waves x {} alone; CPU bound {})",
            ms(wall),
            ms(sync_wall),
            ms(by_cpu)
        ),
        "<= 1.25".into(),
        Some(ratio <= 1.25),
    ));
    figures.push((
        "concurrency: CPU per sync".into(),
        format!(
            "{:.1} ms ({contacts} contacts)",
            sync_cpu.as_secs_f64() * 1000.0
        ),
        String::new(),
        None,
    ));
    figures.push((
        format!("concurrency {limit}: the daemon's peak RSS"),
        format!(
            "{:.1} MiB ({:.2} MiB per sync in flight)",
            peak_kib as f64 / 1024.0,
            peak_kib as f64 / 1024.0 / limit as f64
        ),
        String::new(),
        None,
    ));
    let idle_share = idle_cpu.as_secs_f64() / idle_window.as_secs_f64();
    figures.push((
        format!("idle daemon, {syncs} syncs: CPU"),
        format!("{:.2}% of a core", idle_share * 100.0),
        "<= 0.5%".into(),
        Some(idle_share <= 0.005),
    ));
    for (name, value, target, _) in &figures[figures.len() - 4..] {
        println!("  {name}: {value}  (target {target})");
    }
    Ok(Measured {
        sync_wall,
        sync_cpu,
    })
}

/// `crmsync sync` of `n` contacts into PostgreSQL and into SQLite, one after
/// the other in this run.
pub fn postgres(bin: &Binary<'_>, url: &str, n: u64, figures: &mut Vec<Figure>) -> Result<()> {
    println!("\nend to end into PostgreSQL: {n} contacts, beside SQLite");
    // A first sync compiles the component into the code cache (about 1.5 s
    // on this machine): paid here, so neither measured run pays it.
    let warm = BenchServer::start(Setup {
        contacts: 100,
        limit: None,
        latency: None,
    });
    let dir = bin.work.join("e2e-warm-up");
    let _ = std::fs::remove_dir_all(&dir);
    bin.sync(
        &dir,
        &config("warm", &warm.base_url, "path = \"warm.sqlite\"", "24h"),
    )?;
    let mut rates = Vec::new();
    for (label, store) in [
        (
            "postgres",
            format!(
                "url = \"{url}\"\nnamespace = \"bench_{}_{}\"",
                std::process::id(),
                n
            ),
        ),
        ("sqlite", "path = \"bench.sqlite\"".to_owned()),
    ] {
        let server = BenchServer::start(Setup {
            contacts: n,
            limit: None,
            latency: None,
        });
        let dir = bin.work.join(format!("e2e-{label}"));
        let _ = std::fs::remove_dir_all(&dir);
        let started = Instant::now();
        let report = bin.sync(&dir, &config(label, &server.base_url, &store, "24h"))?;
        let wall = started.elapsed();
        anyhow::ensure!(report["created"].as_u64() == Some(n), "{report}");
        let rate = n as f64 / wall.as_secs_f64();
        println!("  {label}: {rate:.0} contacts/s in {}", ms(wall));
        rates.push(rate);
    }
    figures.push((
        format!("e2e {n} contacts into PostgreSQL"),
        format!(
            "{:.0} contacts/s ({:.2} of SQLite's {:.0})",
            rates[0],
            rates[0] / rates[1],
            rates[1]
        ),
        ">= 30000 contacts/s".into(),
        Some(rates[0] >= 30_000.0),
    ));
    Ok(())
}

/// The fleet model: the fewest runners (each `cores` cores and `slots`
/// syncs at once) on which `portals` portals, each due every `period` at a
/// random phase, all start within `slack` of their due time over four
/// periods, simulated with the measured per-sync wall time and CPU.
pub fn fleet_model(
    measured: &Measured,
    portals: usize,
    period: Duration,
    slots: usize,
    cores: f64,
    figures: &mut Vec<Figure>,
) {
    let slack = Duration::from_secs(60);
    // No fewer than the slots and the CPU the portals need on average.
    let per_period = portals as f64 / period.as_secs_f64();
    let by_slots = per_period * measured.sync_wall.as_secs_f64() / slots as f64;
    let by_cpu = per_period * measured.sync_cpu.as_secs_f64() / cores;
    let mut runners = (by_slots.max(by_cpu).ceil() as usize).max(1);
    let (lateness, busiest) = loop {
        let (lateness, busiest) = simulate(measured, portals, period, runners, slots, cores);
        if lateness <= slack || runners >= portals {
            break (lateness, busiest);
        }
        runners += 1;
    };
    let name = format!(
        "fleet model: {portals} portals every {} min",
        period.as_secs() / 60
    );
    let value = format!(
        "{runners} runner(s) of {cores} cores x {slots} syncs (latest start {:.0} s late, busiest runner {:.0}% CPU; per sync {:.2} s wall, {:.1} ms CPU)",
        lateness.as_secs_f64(),
        busiest * 100.0,
        measured.sync_wall.as_secs_f64(),
        measured.sync_cpu.as_secs_f64() * 1000.0
    );
    println!("\n{name}: {value}");
    figures.push((name, value, String::new(), None));
}

/// A discrete-time simulation (100 ms steps) of `portals` syncs on
/// `runners` runners: each due run waits for a free slot on the least loaded
/// runner; a run needs `sync_wall` when its runner's CPU is not saturated
/// and slows in proportion when it is. The latest start past its due time,
/// and the busiest runner's mean CPU share.
fn simulate(
    measured: &Measured,
    portals: usize,
    period: Duration,
    runners: usize,
    slots: usize,
    cores: f64,
) -> (Duration, f64) {
    let step = 0.1;
    let wall = measured.sync_wall.as_secs_f64().max(step);
    let cpu = measured.sync_cpu.as_secs_f64();
    let period = period.as_secs_f64();
    let mut rng = fastrand::Rng::with_seed(7);
    // Next due time per portal (in steps), spread over the first period.
    let mut due: Vec<f64> = (0..portals).map(|_| rng.f64() * period).collect();
    let mut upcoming: BinaryHeap<Reverse<(u64, usize)>> = due
        .iter()
        .enumerate()
        .map(|(portal, at)| Reverse(((at / step) as u64, portal)))
        .collect();
    let mut queue: std::collections::VecDeque<usize> = Default::default();
    // Per runner: the remaining work (in units of one run) of each run in flight.
    let mut in_flight: Vec<Vec<(usize, f64)>> = vec![Vec::new(); runners];
    let mut cpu_used = vec![0.0f64; runners];
    let mut latest = 0.0f64;
    let end = 4.0 * period;
    let mut now = 0.0;
    let mut tick = 0u64;
    while now < end {
        while let Some(Reverse((at, portal))) = upcoming.peek().copied() {
            if at > tick {
                break;
            }
            upcoming.pop();
            queue.push_back(portal);
        }
        while let Some(&portal) = queue.front() {
            let Some(runner) = (0..runners)
                .filter(|r| in_flight[*r].len() < slots)
                .min_by_key(|r| in_flight[*r].len())
            else {
                break;
            };
            queue.pop_front();
            latest = latest.max(now - due[portal]);
            in_flight[runner].push((portal, 1.0));
        }
        for runner in 0..runners {
            let active = in_flight[runner].len() as f64;
            if active == 0.0 {
                continue;
            }
            // CPU the runs would use this step, unhindered.
            let demand = active * cpu / wall;
            let speed = if demand > cores { cores / demand } else { 1.0 };
            cpu_used[runner] += demand.min(cores) * step;
            for run in &mut in_flight[runner] {
                run.1 -= speed * step / wall;
            }
            in_flight[runner].retain(|&(portal, left)| {
                if left <= 0.0 {
                    due[portal] += period;
                    upcoming.push(Reverse(((due[portal] / step) as u64, portal)));
                    false
                } else {
                    true
                }
            });
        }
        now += step;
        tick += 1;
    }
    let busiest = cpu_used.iter().cloned().fold(0.0, f64::max) / (end * cores);
    (Duration::from_secs_f64(latest.max(0.0)), busiest)
}

/// Many portals on one runner (issue 18 item 5): `portals` syncs at once,
/// each against its own server with a rate limit of `limit` requests per
/// window and `latency` per request. A portal's bound is the lower of its
/// rate limit and what sequential paging allows at that latency (one page
/// of 100 per round trip); each portal's contacts/s is reported against
/// it (min and median), with the 429s and the CPU per portal.
pub fn portals(
    bin: &Binary<'_>,
    portals: usize,
    contacts: u64,
    latency: Duration,
    limit: (usize, Duration),
    figures: &mut Vec<Figure>,
) -> Result<()> {
    println!(
        "\nportals: one runner, {portals} syncs of {contacts} contacts at once, each portal {} requests / {} s and {} ms per request",
        limit.0,
        limit.1.as_secs(),
        latency.as_millis()
    );
    let servers: Vec<BenchServer> = (0..portals)
        .map(|_| {
            BenchServer::start(Setup {
                contacts,
                limit: Some(limit),
                latency: Some(latency),
            })
        })
        .collect();
    let folder = bin.work.join("portals");
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder)?;
    let rate_limit = format!("{}/{}s", limit.0, limit.1.as_secs());
    for (i, server) in servers.iter().enumerate() {
        let name = format!("portal{i:03}");
        let text = config(
            &name,
            &server.base_url,
            &format!("path = \"{name}.sqlite\""),
            "24h",
        )
        .replace(
            "rate_limit = \"none\"",
            &format!("rate_limit = \"{rate_limit}\""),
        );
        std::fs::write(folder.join(format!("{name}.toml")), text)?;
    }
    let daemon = Daemon::start(bin, &folder, portals, portals)?;
    let wall = daemon.all_ran()?;
    let cpu = cpu_of(daemon.pid)?;
    daemon.stop()?;

    // The bound of one portal: pages are sequential (the cursor), one per
    // round trip; the rate limit allows `limit.0` requests per window.
    let pages = contacts.div_ceil(100) as f64;
    let by_paging = pages * latency.as_secs_f64();
    let by_limit = pages * limit.1.as_secs_f64() / limit.0 as f64;
    let bound = contacts as f64 / by_paging.max(by_limit);
    let mut shares = Vec::with_capacity(portals);
    for i in 0..portals {
        let file = folder.join(format!("portal{i:03}.toml"));
        let runs = Command::new(bin.crmsync)
            .args(["runs", "--json", "--config"])
            .arg(&file)
            .output()?;
        let runs: serde_json::Value = serde_json::from_slice(&runs.stdout)
            .with_context(|| format!("crmsync runs of {}", file.display()))?;
        let run = &runs[0];
        let at = |key: &str| {
            run[key]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .with_context(|| format!("run {key} of {}: {run}", file.display()))
        };
        let took = (at("ended_at")? - at("started_at")?)
            .num_milliseconds()
            .max(1) as f64
            / 1000.0;
        let rate = run["created"].as_u64().unwrap_or(0) as f64 / took;
        shares.push(rate / bound);
    }
    shares.sort_by(f64::total_cmp);
    let (min, median) = (shares[0], shares[shares.len() / 2]);
    let refused: u64 = servers
        .iter()
        .map(|s| s.stats.refused.load(Ordering::Relaxed))
        .sum();
    figures.push((
        format!("{portals} rate-limited portals on one runner: contacts/s vs each portal's bound"),
        format!(
            // Three places: a share just under the target must not print as 0.95.
            "min {:.3}, median {:.3} of {bound:.0} contacts/s ({} for all in {})",
            min,
            median,
            portals,
            ms(wall)
        ),
        ">= 0.95, no 429".into(),
        Some(min >= 0.95 && refused == 0),
    ));
    figures.push((
        format!("{portals} rate-limited portals: 429s, CPU per portal"),
        format!(
            "{refused} 429s; {:.1} ms CPU per portal ({contacts} contacts)",
            cpu.as_secs_f64() * 1000.0 / portals as f64
        ),
        String::new(),
        None,
    ));
    // Each portal's next page is asked for once the page before is read:
    // beyond the latency, the gap between two arrivals is the runner's
    // turnaround (reading, parsing, sending) plus the server's writing of
    // the answer and its sleep's overshoot (it renders within the latency).
    let mut gaps: Vec<f64> = servers
        .iter()
        .flat_map(|server| {
            let mut arrivals = server.stats.page_arrivals.lock().expect("arrivals").clone();
            arrivals.sort();
            arrivals
                .windows(2)
                .map(|pair| {
                    (pair[1] - pair[0]).as_secs_f64() * 1000.0 - latency.as_secs_f64() * 1000.0
                })
                .collect::<Vec<_>>()
        })
        .collect();
    gaps.sort_by(f64::total_cmp);
    let at = |share: f64| {
        gaps.get(((gaps.len() as f64 * share) as usize).min(gaps.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    let pages = gaps.len() + servers.len();
    figures.push((
        format!("{portals} rate-limited portals: turnaround between pages, beyond the latency"),
        format!(
            "median {:.2} ms, p99 {:.2} ms ({pages} pages)",
            at(0.5),
            at(0.99)
        ),
        String::new(),
        None,
    ));
    for (name, value, target, _) in &figures[figures.len() - 3..] {
        println!("  {name}: {value}  (target {target})");
    }
    Ok(())
}
