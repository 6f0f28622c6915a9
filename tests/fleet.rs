//! Many runners, one PostgreSQL (the fleet): three daemons given the same 24
//! configs share the work, one is SIGKILLed mid-way and the others resume
//! its syncs from their checkpoints; every sync ends complete, with no
//! duplicate, and no two runners are ever inside one sync at once — checked
//! where it matters, on the API servers, from each request's `User-Agent`.
//! Then SIGTERM drains the survivors.

use crate::daemon::{child, completed_runs, wait_for};
use crmsync_host::config::Config;
use crmsync_tests::hubspot_server::{Contact, HubSpotServer};
use crmsync_tests::*;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

const SYNCS: usize = 24;
const PEOPLE: u64 = 40;

fn portal(index: usize) -> HubSpotServer {
    let server = HubSpotServer::start(TOKEN);
    {
        let mut state = server.state();
        state.contacts = (1..=PEOPLE)
            .map(|i| {
                Contact::new(
                    i,
                    &[
                        ("firstname", Some(&format!("P{index}"))),
                        ("email", Some(&format!("p{i}@portal{index}.example"))),
                    ],
                )
            })
            .collect();
        // Four pages of 10 at 40 ms a request: a run takes a few hundred
        // milliseconds, so a kill lands inside some.
        state.page_size = Some(10);
        state.latency = Some(Duration::from_millis(40));
    }
    server
}

/// The runner a request came from: `crmsync/<version> runner/<id>`.
fn runner_of(user_agent: Option<&str>) -> String {
    user_agent
        .and_then(|agent| agent.rsplit_once("runner/"))
        .map(|(_, id)| id.to_owned())
        .unwrap_or_default()
}

fn terminate(child: &mut std::process::Child) {
    let sent = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "a drained runner exits 0: {status:?}");
            return;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(15),
            "a runner did not drain within 15 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn three_runners_share_24_syncs_survive_a_kill_and_never_run_one_sync_twice_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let servers: Vec<HubSpotServer> = (0..SYNCS).map(portal).collect();
    let configs: Vec<(String, std::path::PathBuf)> = servers
        .iter()
        .enumerate()
        .map(|(i, server)| {
            let name = format!("portal{i:02}");
            let path = write_config_in(
                dir.path(),
                &name,
                &format!(
                    // `firstname` mapped by name: every run checks it in the
                    // catalogue (E6) before its first page, which the check
                    // of the server's log below relies on.
                    "schedule = \"3s\"\n[source]\nsystem = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"{}\"\nrate_limit = \"none\"\n[mapping]\nfirstname = \"first_name\"\n",
                    server.base_url,
                    token_env()
                ),
                &postgres_store(&name),
            );
            (name, path)
        })
        .collect();
    let folder = dir.path().to_str().unwrap().to_owned();
    let component = component_path().to_str().unwrap().to_owned();
    let start = |id: &str| {
        child(&[
            "daemon",
            "--config",
            &folder,
            "--component",
            &component,
            "--runner-id",
            id,
            "--concurrency",
            "6",
        ])
        .spawn()
        .unwrap()
    };
    let mut runners = [start("runner-a"), start("runner-b"), start("runner-c")];

    // Kill runner-a (SIGKILL) while it is inside some syncs.
    let requests_of = |runner: &str| {
        servers
            .iter()
            .map(|s| {
                s.state()
                    .seen
                    .iter()
                    .filter(|r| runner_of(r.user_agent.as_deref()) == runner)
                    .count()
            })
            .sum::<usize>()
    };
    wait_for("runner-a at work", Duration::from_secs(60), || {
        requests_of("runner-a") >= 8
    });
    runners[0].kill().unwrap();
    runners[0].wait().unwrap();
    let killed_at = Instant::now();

    let (_, listed) = crmsync(&["runners", "--config", &folder, "--json"]).unwrap();
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let ids: BTreeSet<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains("runner-b") && ids.contains("runner-c"),
        "{listed}"
    );

    wait_for(
        "every sync completed twice",
        Duration::from_secs(120),
        || {
            configs
                .iter()
                .all(|(name, path)| completed_runs(path, name) >= 2)
        },
    );
    eprintln!(
        "every sync completed twice {:?} after the kill",
        killed_at.elapsed()
    );
    for runner in &mut runners[1..] {
        terminate(runner);
    }
    // Drained: the survivors left the fleet and hold no lease.
    let (_, listed) = crmsync(&["runners", "--config", &folder, "--json"]).unwrap();
    assert!(
        !listed.contains("runner-b") && !listed.contains("runner-c"),
        "{listed}"
    );

    let mut resumed = 0;
    let mut runners_seen = BTreeSet::new();
    for (index, (name, path)) in configs.iter().enumerate() {
        let config = Config::load(path).unwrap();
        let store = config.store.open().unwrap();
        let contacts = store.contacts().unwrap();
        let emails: BTreeSet<&String> = contacts.iter().flat_map(|c| &c.emails).collect();
        assert_eq!(
            (contacts.len(), emails.len()),
            (PEOPLE as usize, PEOPLE as usize),
            "{name}: every contact once"
        );
        assert_eq!(
            store.control(name).unwrap().lease_owner,
            None,
            "{name}: its lease was released"
        );
        let mut runs = store.runs(name).unwrap();
        runs.reverse();
        for pair in runs.windows(2) {
            if let Some(ended) = &pair[0].ended_at {
                assert!(
                    pair[1].started_at >= *ended,
                    "{name}: run {} started before run {} ended",
                    pair[1].id,
                    pair[0].id
                );
            }
        }
        resumed += runs.iter().filter(|r| r.resumed > 0).count();
        runners_seen.extend(runs.iter().filter_map(|r| r.runner.clone()));

        // On the server: a request from another runner than the one before
        // always starts a run (the properties catalogue comes first: the configs
        // choose `firstname`), so no
        // runner was inside the sync while another was.
        let seen = servers[index].state().seen.clone();
        for pair in seen.windows(2) {
            let (before, after) = (
                runner_of(pair[0].user_agent.as_deref()),
                runner_of(pair[1].user_agent.as_deref()),
            );
            if before != after {
                assert!(
                    pair[1].path.starts_with("/crm/v3/properties/"),
                    "{name}: {after} sent {} while {before} was inside the sync",
                    pair[1].path
                );
            }
        }
    }
    assert!(
        resumed >= 1,
        "the killed runner's interrupted runs were resumed"
    );
    // The work was shared: both survivors ran syncs (runner-a's interrupted
    // runs now name whoever resumed them).
    assert!(
        runners_seen.contains("runner-b") && runners_seen.contains("runner-c"),
        "{runners_seen:?}"
    );
}
