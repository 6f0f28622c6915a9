//! The daemon (R1, R2): schedules, trigger / pause / resume from another
//! process, the lease that keeps one sync to one process, status, SIGTERM.
//! "Another process" is this test binary re-executed with `CRMSYNC_CLI_CHILD`
//! set: it runs one `crmsync` command line and exits.

use crmsync_host::daemon::run_daemon;
use crmsync_host::store::ContactStore;
use crmsync_host::sync::SyncOptions;
use crmsync_tests::hubspot_server::{Contact, HubSpotServer};
use crmsync_tests::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const CHILD: &str = "CRMSYNC_CLI_CHILD";

/// In a child process: the `crmsync` command line in `CRMSYNC_CLI_CHILD` (arguments separated by `\n`).
#[test]
fn cli_child() {
    let Ok(args) = std::env::var(CHILD) else {
        return;
    };
    use clap::Parser;
    let argv: Vec<&str> = std::iter::once("crmsync").chain(args.split('\n')).collect();
    let cli = crmsync_host::cli::Cli::try_parse_from(argv).unwrap();
    let exit = crmsync_host::cli::run(cli, &mut std::io::stdout()).unwrap();
    assert_eq!(exit, crmsync_host::cli::Exit::Success);
}

/// The `crmsync` command line in a child process (this test binary, re-run).
pub(crate) fn child(args: &[&str]) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "daemon::cli_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, args.join("\n"))
        .env(token_env(), TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Runs one `crmsync` command in another process.
fn in_another_process(args: &[&str]) {
    assert!(
        child(args).status().unwrap().success(),
        "crmsync {args:?} failed"
    );
}

fn server(n: u64) -> HubSpotServer {
    let server = HubSpotServer::start(TOKEN);
    server.state().contacts = (1..=n)
        .map(|i| {
            Contact::new(
                i,
                &[
                    ("firstname", Some("D")),
                    ("email", Some(&format!("d{i}@example.com"))),
                ],
            )
        })
        .collect();
    server
}

fn config_file(dir: &Path, name: &str, server: &HubSpotServer, schedule: &str) -> PathBuf {
    write_config(
        dir,
        name,
        &format!(
            "schedule = \"{schedule}\"\n[source]\nsystem = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"{}\"\nrate_limit = \"none\"\n",
            server.base_url,
            token_env()
        ),
    )
}

pub(crate) fn completed_runs(path: &Path, name: &str) -> usize {
    completed_in(&*open_store(path), name)
}

/// Whether `name` has completed `count` runs and holds no lease: a run is
/// recorded completed just before its lease is given back, and until then
/// its state is `running`.
pub(crate) fn ran_and_idle(path: &Path, name: &str, count: usize) -> bool {
    let store = open_store(path);
    completed_in(&*store, name) == count && store.control(name).unwrap().lease_owner.is_none()
}

fn open_store(path: &Path) -> crmsync_host::store::DynStore {
    let config = crmsync_host::config::Config::load(path).unwrap();
    config.store.open().unwrap()
}

fn completed_in(store: &dyn crmsync_host::store::Store, name: &str) -> usize {
    let runs = store.runs(name).unwrap();
    runs.iter().filter(|r| r.status == "completed").count()
}

pub(crate) fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the daemon on a thread until the returned closure is called.
fn daemon(path: &Path) -> impl FnOnce() -> Duration {
    let options = SyncOptions {
        retry: fast_retries(),
        ..SyncOptions::default()
    };
    let stop = options.stop.clone();
    let paths = vec![path.to_owned()];
    let handle = std::thread::spawn(move || {
        run_daemon(runtime(), &paths, &options, 4, &mut std::io::sink()).unwrap()
    });
    move || {
        let asked = Instant::now();
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap();
        asked.elapsed()
    }
}

#[test]
fn a_daemon_on_a_two_second_schedule_runs_repeatedly_and_picks_up_source_edits() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(5);
    let path = config_file(dir.path(), "every2s", &server, "2s");
    let stop = daemon(&path);

    wait_for("the first run", Duration::from_secs(20), || {
        completed_runs(&path, "every2s") >= 1
    });
    server.state().put(Contact::new(
        1,
        &[
            ("firstname", Some("Edited")),
            ("email", Some("d1@example.com")),
        ],
    ));
    wait_for("two more runs", Duration::from_secs(20), || {
        completed_runs(&path, "every2s") >= 3
    });
    let stopped_in = stop();

    assert!(
        stopped_in < Duration::from_secs(3),
        "stopping took {stopped_in:?}"
    );
    let config = crmsync_host::config::Config::load(&path).unwrap();
    assert_eq!(
        contacts_by_external_id(&config)["1"].name.as_deref(),
        Some("Edited")
    );
    let runs = ContactStore::open(&config.store_path)
        .unwrap()
        .runs("every2s")
        .unwrap();
    // Scheduled two seconds apart (start to start), never overlapping.
    let starts: Vec<chrono::DateTime<chrono::Utc>> = runs
        .iter()
        .rev()
        .map(|r| r.started_at.parse().unwrap())
        .collect();
    for pair in starts.windows(2) {
        assert!(
            (pair[1] - pair[0]).num_milliseconds() >= 1_950,
            "{starts:?}"
        );
    }
    // Only the first run listed every contact; the later ones read changes (R4).
    let modes: Vec<&str> = runs.iter().rev().map(|r| r.mode.as_str()).collect();
    assert_eq!(modes[0], "full");
    assert!(modes[1..].iter().all(|m| *m == "incremental"), "{modes:?}");
    assert_eq!(server.live_pages().len(), 1);
    assert!(server.requests_to("/crm/v3/objects/contacts/search").len() >= 2);
}

#[test]
fn trigger_pause_and_resume_work_from_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(3);
    let path = config_file(dir.path(), "hourly", &server, "1h");
    let config_arg = path.to_str().unwrap();
    let stop = daemon(&path);
    wait_for(
        "the first run (a sync that never ran is due)",
        Duration::from_secs(20),
        || completed_runs(&path, "hourly") == 1,
    );

    in_another_process(&["trigger", "--config", config_arg]);
    wait_for("the triggered run", Duration::from_secs(10), || {
        completed_runs(&path, "hourly") == 2
    });

    in_another_process(&["pause", "--config", config_arg]);
    in_another_process(&["trigger", "--config", config_arg]);
    std::thread::sleep(Duration::from_millis(2_000));
    assert_eq!(completed_runs(&path, "hourly"), 2, "a paused sync ran");
    let (_, status) = crmsync(&["status", "--config", config_arg, "--json"]).unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["state"], "paused");

    in_another_process(&["resume", "--config", config_arg]);
    wait_for(
        "the trigger kept while paused",
        Duration::from_secs(10),
        || completed_runs(&path, "hourly") == 3,
    );
    stop();

    let (_, status) = crmsync(&["status", "--config", config_arg, "--json"]).unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["state"], "idle");
    assert_eq!(status["records_at_source"], 3);
    assert_eq!(status["records_synced"], 3);
    assert_eq!(status["last_run"]["status"], "completed");
    assert!(status["next_run_at"].as_str().is_some());
}

#[test]
fn a_trigger_that_finds_the_sync_busy_waits_for_the_lease_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(2);
    let path = config_file(dir.path(), "busy", &server, "24h");
    let config = crmsync_host::config::Config::load(&path).unwrap();
    let stop = daemon(&path);
    wait_for("the first run", Duration::from_secs(20), || {
        completed_runs(&path, "busy") == 1
    });
    // Another process runs the sync (it holds the lease) when a trigger comes.
    let store = ContactStore::open(&config.store_path).unwrap();
    let held = store
        .acquire_lease(
            "busy",
            "another-host:1",
            crmsync_host::sync::now_ms(),
            60_000,
            |_| false,
        )
        .unwrap()
        .unwrap();
    store.request_trigger("busy").unwrap();
    // The daemon meets the busy sync several times (it polls twice a second)...
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(completed_runs(&path, "busy"), 1);
    assert!(
        store.control("busy").unwrap().triggered,
        "the trigger was taken by a run that never started"
    );
    // ...and runs it once the other process is done.
    store.release_lease(&held).unwrap();
    wait_for("the triggered run", Duration::from_secs(10), || {
        completed_runs(&path, "busy") == 2
    });
    stop();
    assert!(!store.control("busy").unwrap().triggered, "the run took it");
}

#[test]
fn a_manual_sync_of_a_sync_running_elsewhere_says_it_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(2);
    let path = config_file(dir.path(), "leased", &server, "24h");
    let config = crmsync_host::config::Config::load(&path).unwrap();
    // A live process elsewhere holds the lease.
    let store = ContactStore::open(&config.store_path).unwrap();
    let held = store.acquire_lease(
        "leased",
        "another-host:1",
        crmsync_host::sync::now_ms(),
        60_000,
        |_| false,
    );
    assert!(held.unwrap().is_ok());

    let error = sync(&config, &live_options()).unwrap_err();

    assert!(
        format!("{error:#}").contains("already running (lease held by another-host:1)"),
        "{error:#}"
    );
    assert!(server.state().seen.is_empty(), "nothing was fetched");
}

#[test]
fn sigterm_stops_the_daemon_promptly_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(4);
    let path = config_file(dir.path(), "term", &server, "2s");
    let component = component_path().to_str().unwrap().to_owned();
    let mut daemon = child(&[
        "daemon",
        "--config",
        path.to_str().unwrap(),
        "--component",
        &component,
    ])
    .spawn()
    .unwrap();
    wait_for("the daemon's first run", Duration::from_secs(30), || {
        completed_runs(&path, "term") >= 1
    });

    let sent = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "the daemon did not stop within 5 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };

    assert!(status.success(), "exit status {status:?}");
    eprintln!("stopped {:?} after SIGTERM", sent.elapsed());
}

#[test]
fn syncs_of_one_account_share_its_rate_limit_in_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(80);
    {
        let mut state = server.state();
        state.page_size = Some(10);
        state.enforce_limit = Some((10, Duration::from_secs(5)));
    }
    // Two syncs of one account, each allowed 10 requests per 5 s; each makes
    // 10 (the catalogue, 8 pages, the archived listing): the first uses up the
    // window, so the second must wait before its first request, which only a
    // shared limiter knows (its own would learn from the headers too late).
    for name in ["first", "second"] {
        write_config(
            dir.path(),
            name,
            &format!(
                "schedule = \"1h\"\n[source]\nsystem = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"{}\"\nrate_limit = \"10/5s\"\n",
                server.base_url,
                token_env()
            ),
        );
    }
    let stop = daemon(dir.path());
    wait_for("both syncs", Duration::from_secs(20), || {
        completed_runs(&dir.path().join("first.toml"), "first") == 1
            && completed_runs(&dir.path().join("second.toml"), "second") == 1
    });
    stop();

    assert_eq!(
        server.state().refused,
        0,
        "the account's budget was exceeded"
    );
}

/// A slow portal holds up no other: with room for several syncs at once, a
/// fast sync completes (twice, on its schedule) while a sync whose API answers
/// every request after 400 ms is still reading its pages.
#[test]
fn a_slow_portal_never_holds_up_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let slow = server(60);
    {
        let mut state = slow.state();
        state.page_size = Some(5);
        state.latency = Some(Duration::from_millis(400));
    }
    let fast = server(5);
    let slow_path = config_file(dir.path(), "slow", &slow, "1h");
    let fast_path = config_file(dir.path(), "fast", &fast, "1s");
    let started = Instant::now();
    let stop = daemon(dir.path());
    wait_for("two runs of the fast sync", Duration::from_secs(20), || {
        completed_runs(&fast_path, "fast") >= 2
    });
    let fast_done = started.elapsed();
    assert_eq!(
        completed_runs(&slow_path, "slow"),
        0,
        "the slow sync (12 pages at 400 ms) is still running after {fast_done:?}"
    );
    wait_for("the slow sync", Duration::from_secs(30), || {
        completed_runs(&slow_path, "slow") == 1
    });
    stop();
}
