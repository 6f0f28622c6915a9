//! `crmsync serve` (issue 17): the console's JSON API and pages over a
//! folder of configs, its access rules, Prometheus metrics, HubSpot webhook
//! triggers (signature, age, replay, debounce, portal) and, in a real
//! headless Chromium, a person's visit: list, sync page, hostile values as
//! text, Run now.

use crate::daemon::{completed_runs, ran_and_idle, wait_for};
use crmsync_host::runtime::{Runtime, Sandbox};
use crmsync_host::serve::run_serve;
use crmsync_host::sync::SyncOptions;
use crmsync_tests::hubspot_server::{Contact, HubSpotServer};
use crmsync_tests::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
const PORTAL_A: u64 = 62515;
const PORTAL_B: u64 = 777;

/// An HTTP/1.1 answer: status, head (lower-cased header lines) and body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One request over a fresh connection (`Connection: close`).
fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {address}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // Bodies come chunked or sized; chunked ones are unwrapped here.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            out.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
        out
    } else {
        body.to_owned()
    };
    Answer {
        status,
        head: head.to_ascii_lowercase(),
        body,
    }
}

fn get(address: SocketAddr, path: &str) -> Answer {
    request(address, "GET", path, &[], b"")
}

/// A running `crmsync serve` over the configs of `dir`.
struct Serving {
    address: SocketAddr,
    stop: Box<dyn FnOnce()>,
}

fn serve(dir: &Path, webhook_secret: Option<&str>, token: Option<&str>) -> Serving {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let options = SyncOptions {
        runner: "console-test".into(),
        ..live_options()
    };
    let stop = options.stop.clone();
    let settings = crmsync_console::Settings {
        listen: address,
        public_url: None,
        webhook_secret: webhook_secret.map(str::to_owned),
        token: token.map(str::to_owned),
        runner: "console-test".into(),
    };
    let runtime = Arc::new(Runtime::load(component_path(), Sandbox::default()).unwrap());
    let paths = vec![dir.to_owned()];
    let handle = std::thread::spawn(move || {
        run_serve(
            runtime,
            &paths,
            &options,
            4,
            settings,
            listener,
            &mut std::io::sink(),
        )
        .unwrap()
    });
    let until = Instant::now() + Duration::from_secs(20);
    while get(address, "/healthz").status != 200 {
        assert!(Instant::now() < until, "the console did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    Serving {
        address,
        stop: Box::new(move || {
            stop.store(true, Ordering::Relaxed);
            handle.join().unwrap();
        }),
    }
}

/// The hostile records of issue 17: markup, a right-to-left override, a NUL
/// and a 5,000-character name.
fn hostile_contacts() -> Vec<Contact> {
    let long = "L".repeat(5_000);
    [
        (
            1,
            "<script>window.__pwned = true</script>",
            "ada@example.com",
        ),
        (2, "\u{202E}evil\u{202C} Grace", "grace@example.com"),
        (3, "nul\u{0}byte", "nul@example.com"),
        (4, long.as_str(), "long@example.com"),
    ]
    .into_iter()
    .map(|(id, name, email)| Contact::new(id, &[("firstname", Some(name)), ("email", Some(email))]))
    .collect()
}

fn config(dir: &Path, name: &str, server: &HubSpotServer, portal: u64) -> PathBuf {
    write_config(
        dir,
        name,
        &format!(
            "schedule = \"1h\"\n[source]\nsystem = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"{}\"\nrate_limit = \"none\"\nportal_id = {portal}\n",
            server.base_url,
            token_env()
        ),
    )
}

/// Two portals' syncs, each run once.
fn two_portals(dir: &Path) -> (HubSpotServer, HubSpotServer, PathBuf, PathBuf) {
    let a = HubSpotServer::start(TOKEN);
    a.state().contacts = hostile_contacts();
    let b = HubSpotServer::start(TOKEN);
    b.state().contacts = vec![Contact::new(
        9,
        &[("firstname", Some("Bo")), ("email", Some("bo@example.com"))],
    )];
    let file_a = config(dir, "alpha", &a, PORTAL_A);
    let file_b = config(dir, "beta", &b, PORTAL_B);
    (a, b, file_a, file_b)
}

/// Waits until both portals of [`two_portals`] have run once and given their
/// leases back.
fn first_runs_done(file_a: &Path, file_b: &Path) {
    wait_for(
        "both first runs, their leases given back",
        Duration::from_secs(30),
        || ran_and_idle(file_a, "alpha", 1) && ran_and_idle(file_b, "beta", 1),
    );
}

fn signed_delivery(address: SocketAddr, body: &str, secret: &str, timestamp_ms: i64) -> Answer {
    let uri = format!("http://{address}/webhooks/hubspot");
    let timestamp = timestamp_ms.to_string();
    let signature = crmsync_console::webhooks::signature(
        secret.as_bytes(),
        "POST",
        &uri,
        body.as_bytes(),
        &timestamp,
    );
    request(
        address,
        "POST",
        "/webhooks/hubspot",
        &[
            ("Content-Type", "application/json"),
            ("X-HubSpot-Signature-v3", &signature),
            ("X-HubSpot-Request-Timestamp", &timestamp),
        ],
        body.as_bytes(),
    )
}

fn event(portal: u64, object: u64, event_id: u64) -> String {
    format!(
        r#"[{{"eventId":{event_id},"subscriptionId":1,"portalId":{portal},"appId":5,"occurredAt":{},"subscriptionType":"contact.propertyChange","attemptNumber":0,"objectId":{object},"propertyName":"firstname","propertyValue":"x","changeSource":"CRM"}}]"#,
        hubspot_server::now_ms()
    )
}

fn now_ms() -> i64 {
    hubspot_server::now_ms() as i64
}

#[test]
fn the_api_mirrors_the_cli_and_controls_the_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, _b, file_a, file_b) = two_portals(dir.path());
    let serving = serve(dir.path(), None, None);
    let address = serving.address;
    first_runs_done(&file_a, &file_b);

    let syncs = get(address, "/api/syncs");
    assert_eq!(syncs.status, 200);
    let syncs = syncs.json();
    let names: Vec<&str> = syncs
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    for key in [
        "name",
        "state",
        "last_run",
        "next_run_at",
        "records_at_source",
        "records_synced",
        "open_errors",
    ] {
        assert!(syncs[0].get(key).is_some(), "{key} missing: {}", syncs[0]);
    }
    assert_eq!(syncs[0]["state"], "idle");
    assert_eq!(syncs[0]["records_synced"], 4);
    assert_eq!(syncs[0]["records_at_source"], 4);
    assert_eq!(syncs[0]["portal_id"], PORTAL_A);

    // The same facts as `crmsync status --json` and `runs --json`.
    let (_, status) = crmsync(&["status", "--config", file_a.to_str().unwrap(), "--json"]).unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let one = get(address, "/api/syncs/alpha").json();
    assert_eq!(one["last_run"], status["last_run"]);
    assert_eq!(one["records_synced"], status["records_synced"]);
    let (_, runs) = crmsync(&["runs", "--config", file_a.to_str().unwrap(), "--json"]).unwrap();
    assert_eq!(
        get(address, "/api/syncs/alpha/runs").json(),
        serde_json::from_str::<serde_json::Value>(&runs).unwrap()
    );
    assert_eq!(
        get(address, "/api/syncs/alpha/errors").json(),
        serde_json::json!([])
    );
    assert_eq!(get(address, "/api/syncs/nobody").status, 404);

    // Contacts a page at a time, values verbatim in JSON.
    let first = get(address, "/api/syncs/alpha/contacts?limit=3").json();
    assert_eq!(first.as_array().unwrap().len(), 3);
    assert_eq!(first[0]["name"], "<script>window.__pwned = true</script>");
    assert_eq!(first[2]["name"], "nul\u{0}byte");
    let last_id = first[2]["id"].as_i64().unwrap();
    let rest = get(
        address,
        &format!("/api/syncs/alpha/contacts?limit=3&after={last_id}"),
    )
    .json();
    assert_eq!(rest.as_array().unwrap().len(), 1);
    assert_eq!(rest[0]["name"].as_str().unwrap().len(), 5_000);

    // Pages: hostile values as text, the console's headers.
    let page = get(address, "/syncs/alpha");
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("&lt;script&gt;window.__pwned = true&lt;/script&gt;")
    );
    assert!(!page.body.contains("<script>window"));
    assert!(page.body.contains("\\u{202e}evil"));
    assert!(!page.body.contains('\u{202E}'));
    assert!(!page.body.contains('\u{0}'));
    assert!(
        page.head
            .contains("content-security-policy: default-src 'none'; script-src 'self'")
    );
    let index = get(address, "/");
    assert!(index.body.contains("href=\"/syncs/alpha\"") && index.body.contains("beta"));

    // Controls: pause, resume, trigger; the daemon runs the trigger.
    let post = |path: &str| request(address, "POST", path, &[], b"");
    assert_eq!(post("/api/syncs/alpha/pause").status, 202);
    assert_eq!(get(address, "/api/syncs/alpha").json()["state"], "paused");
    assert_eq!(post("/api/syncs/alpha/resume").status, 202);
    let triggered = post("/api/syncs/alpha/trigger");
    assert_eq!(triggered.status, 202);
    assert_eq!(triggered.json()["done"], "triggered");
    wait_for("the triggered run", Duration::from_secs(15), || {
        completed_runs(&file_a, "alpha") == 2
    });
    // A full re-sync reads everything.
    assert_eq!(post("/api/syncs/alpha/trigger?full=true").status, 202);
    wait_for("the full re-sync", Duration::from_secs(15), || {
        completed_runs(&file_a, "alpha") == 3
    });
    let runs = get(address, "/api/syncs/alpha/runs").json();
    assert_eq!(runs[0]["mode"], "full");
    assert_eq!(runs[1]["mode"], "incremental");
    // A browser form gets its page back.
    let form = request(
        address,
        "POST",
        "/api/syncs/beta/pause",
        &[
            ("Accept", "text/html"),
            ("Origin", &format!("http://{address}")),
        ],
        b"",
    );
    assert_eq!(form.status, 303);
    assert!(form.head.contains("location: /syncs/beta"));

    // The API's description names every route the router has.
    let openapi = get(address, "/api/openapi.json").json();
    for path in [
        "/api/syncs",
        "/api/syncs/{name}",
        "/api/syncs/{name}/runs",
        "/api/syncs/{name}/errors",
        "/api/syncs/{name}/contacts",
        "/api/syncs/{name}/trigger",
        "/api/syncs/{name}/pause",
        "/api/syncs/{name}/resume",
        "/metrics",
        "/webhooks/hubspot",
    ] {
        assert!(openapi["paths"].get(path).is_some(), "{path} undocumented");
    }

    // Metrics: valid Prometheus text with the runs counted (a run is
    // counted when its pass returns, a moment after its store says it ended).
    let counted = "crmsync_runs_total{sync=\"alpha\",outcome=\"completed\"} 3";
    wait_for("the third run's metrics", Duration::from_secs(10), || {
        get(address, "/metrics").body.contains(counted)
    });
    let metrics = get(address, "/metrics");
    assert!(
        metrics
            .head
            .contains("content-type: text/plain; version=0.0.4")
    );
    check_prometheus_text(&metrics.body);
    assert!(
        metrics
            .body
            .contains("crmsync_runs_total{sync=\"alpha\",outcome=\"completed\"} 3"),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("# TYPE crmsync_run_duration_seconds histogram")
    );
    (serving.stop)();
}

/// Every line is a comment (`# HELP`/`# TYPE` of a known type) or a sample
/// `name{labels} value` of a metric whose type was declared before it.
fn check_prometheus_text(text: &str) {
    let mut typed = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            typed.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{line}");
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| typed.contains_key(*base))
            .unwrap_or(name);
        assert!(typed.contains_key(base), "{name} has no # TYPE before it");
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
        }
    }
    assert!(!typed.is_empty());
}

#[test]
fn access_rules_keep_other_sites_and_hosts_out() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, _b, file_a, _) = two_portals(dir.path());
    let serving = serve(dir.path(), None, Some("console-token"));
    let address = serving.address;
    // A token: pages and the API need it; health checks do not.
    assert_eq!(get(address, "/healthz").status, 200);
    assert_eq!(get(address, "/api/syncs").status, 401);
    assert_eq!(get(address, "/metrics").status, 401);
    let to_login = get(address, "/");
    assert_eq!(to_login.status, 303);
    assert!(to_login.head.contains("location: /login"));
    let bearer = [("Authorization", "Bearer console-token")];
    assert_eq!(
        request(address, "GET", "/api/syncs", &bearer, b"").status,
        200
    );
    // The login form sets a session cookie that is not the token.
    let login = request(
        address,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"token=console-token",
    );
    assert_eq!(login.status, 303);
    let cookie = login
        .head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(!cookie.contains("console-token"));
    assert!(login.head.contains("httponly; samesite=strict"));
    assert_eq!(
        request(address, "GET", "/api/syncs", &[("Cookie", &cookie)], b"").status,
        200
    );
    let wrong = request(
        address,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"token=guess",
    );
    assert_eq!(wrong.status, 401);
    // Another site's page cannot press a button, even with the cookie.
    let cross = request(
        address,
        "POST",
        "/api/syncs/alpha/pause",
        &[("Cookie", &cookie), ("Origin", "https://evil.example")],
        b"",
    );
    assert_eq!(cross.status, 403);
    let cross = request(
        address,
        "POST",
        "/api/syncs/alpha/pause",
        &[("Cookie", &cookie), ("Sec-Fetch-Site", "cross-site")],
        b"",
    );
    assert_eq!(cross.status, 403);
    let config = crmsync_host::config::Config::load(&file_a).unwrap();
    assert!(
        !config
            .store
            .open()
            .unwrap()
            .control("alpha")
            .unwrap()
            .paused
    );
    // A page elsewhere whose name resolves to 127.0.0.1 gets nothing.
    let rebound = request(
        address,
        "GET",
        "/api/syncs",
        &[
            ("Host", "evil.example"),
            ("Authorization", "Bearer console-token"),
        ],
        b"",
    );
    assert_eq!(rebound.status, 421);
    // No secret in any answer.
    let everything = [
        get(address, "/healthz").body,
        request(address, "GET", "/api/syncs", &bearer, b"").body,
        request(address, "GET", "/api/syncs/alpha", &bearer, b"").body,
        request(address, "GET", "/syncs/alpha", &bearer, b"").body,
        request(address, "GET", "/metrics", &bearer, b"").body,
    ]
    .concat();
    assert!(!everything.contains(TOKEN));
    assert!(!everything.contains("console-token"));
    (serving.stop)();

    // Off loopback, no token: refused at start.
    let settings = crmsync_console::Settings {
        listen: "0.0.0.0:0".parse().unwrap(),
        public_url: None,
        webhook_secret: None,
        token: None,
        runner: "r".into(),
    };
    let runtime = Arc::new(Runtime::load(component_path(), Sandbox::default()).unwrap());
    let catalog = crmsync_console::catalog::Catalog::load(&[dir.path().to_owned()]).unwrap();
    let refused = crmsync_console::Console::new(settings, catalog, Default::default(), runtime);
    assert!(
        format!("{:#}", refused.err().unwrap()).contains("--token-env"),
        "a console open to the network is refused"
    );
}

#[test]
fn a_signed_webhook_brings_its_portals_change_and_leaves_others_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _b, file_a, file_b) = two_portals(dir.path());
    let serving = serve(dir.path(), Some(SECRET), None);
    let address = serving.address;
    first_runs_done(&file_a, &file_b);

    // Refused: a wrong secret, an old timestamp, no signature, a replay.
    let body = event(PORTAL_A, 1, 1);
    assert_eq!(
        signed_delivery(address, &body, "not-the-secret", now_ms()).status,
        401
    );
    assert_eq!(
        signed_delivery(address, &body, SECRET, now_ms() - 6 * 60 * 1000).status,
        401
    );
    let unsigned = request(address, "POST", "/webhooks/hubspot", &[], body.as_bytes());
    assert_eq!(unsigned.status, 401);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        completed_runs(&file_a, "alpha"),
        1,
        "a refused delivery triggers nothing"
    );

    // A change at portal A, and its signed delivery: in the store within 15 s.
    a.state().edit(1, &[("firstname", Some("Ada Lovelace"))]);
    let at = now_ms();
    let timestamp = at.to_string();
    let uri = format!("http://{address}/webhooks/hubspot");
    let signature = crmsync_console::webhooks::signature(
        SECRET.as_bytes(),
        "POST",
        &uri,
        body.as_bytes(),
        &timestamp,
    );
    let headers = [
        ("X-HubSpot-Signature-v3", signature.as_str()),
        ("X-HubSpot-Request-Timestamp", timestamp.as_str()),
    ];
    let sent = Instant::now();
    assert_eq!(
        request(
            address,
            "POST",
            "/webhooks/hubspot",
            &headers,
            body.as_bytes()
        )
        .status,
        204
    );
    let replayed = request(
        address,
        "POST",
        "/webhooks/hubspot",
        &headers,
        body.as_bytes(),
    );
    assert_eq!(replayed.status, 401, "a replayed delivery is refused");
    let config_a = crmsync_host::config::Config::load(&file_a).unwrap();
    wait_for("the change at portal A", Duration::from_secs(15), || {
        let store = config_a.store.open().unwrap();
        store
            .contacts()
            .unwrap()
            .iter()
            .any(|c| c.name.as_deref() == Some("Ada Lovelace"))
    });
    let took = sent.elapsed();
    eprintln!("webhook to synced change: {took:?}");
    let runs = crmsync_host::status::runs(&config_a, &*config_a.store.open().unwrap()).unwrap();
    assert_eq!(runs[0].mode, "incremental");
    assert_eq!(
        completed_runs(&file_b, "beta"),
        1,
        "portal B's sync is left alone"
    );

    // 1,000 deliveries in about a second: one or two runs, not a thousand.
    let before = completed_runs(&file_a, "alpha");
    let started = Instant::now();
    for i in 0..1_000u64 {
        let answer = signed_delivery(
            address,
            &event(PORTAL_A, 1 + i % 4, 10 + i),
            SECRET,
            now_ms(),
        );
        assert_eq!(answer.status, 204);
    }
    let burst = started.elapsed();
    // Let every run the burst could cause start and end.
    std::thread::sleep(Duration::from_secs(4));
    wait_for("the burst's runs to end", Duration::from_secs(15), || {
        get(address, "/api/syncs/alpha").json()["progress"].is_null()
    });
    let burst_runs = completed_runs(&file_a, "alpha") - before;
    eprintln!("1,000 deliveries in {burst:?} gave {burst_runs} run(s)");
    assert!(
        (1..=2).contains(&burst_runs),
        "{burst_runs} runs from a burst of 1,000 deliveries in {burst:?}"
    );
    assert_eq!(completed_runs(&file_b, "beta"), 1);
    let metrics = get(address, "/metrics").body;
    assert!(
        metrics.contains("crmsync_webhook_deliveries_total{outcome=\"accepted\"} 1001"),
        "{metrics}"
    );
    assert!(metrics.contains("crmsync_webhook_deliveries_total{outcome=\"replayed\"} 1"));
    assert!(metrics.contains("crmsync_webhook_deliveries_total{outcome=\"bad_signature\"} 1"));
    assert!(metrics.contains("crmsync_webhook_deliveries_total{outcome=\"stale\"} 1"));
    (serving.stop)();
}

/// The console in Debian's headless Chromium (tests/console/browser.mjs),
/// with screenshots under target/console/.
#[test]
fn the_console_works_in_headless_chromium() {
    let chromium = std::env::var("CRMSYNC_TEST_CHROMIUM").expect(
        "CRMSYNC_TEST_CHROMIUM is not set: run the tests with `bash scripts/test.sh`, \
         which installs Debian's chromium and the driver's npm package",
    );
    let dir = tempfile::tempdir().unwrap();
    let (_a, _b, file_a, file_b) = two_portals(dir.path());
    let serving = serve(dir.path(), None, None);
    first_runs_done(&file_a, &file_b);
    let shots = workspace().join("target/console");
    let output = Command::new("node")
        .arg(workspace().join("tests/console/browser.mjs"))
        .arg(format!("http://{}", serving.address))
        .arg("alpha")
        .arg(&shots)
        .env("CRMSYNC_TEST_CHROMIUM", chromium)
        .output()
        .expect("node runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "the browser test failed:\n{said}");
    eprintln!("{said}");
    assert!(shots.join("syncs.png").is_file() && shots.join("sync.png").is_file());
    assert_eq!(completed_runs(&file_a, "alpha"), 2, "Run now ran the sync");
    (serving.stop)();
}
