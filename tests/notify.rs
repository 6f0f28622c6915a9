//! Notifications: a run that ends with errors or fails is POSTed to the
//! configured webhook (retried) and piped to the configured command.

use crmsync_tests::hubspot_server::{Contact, HubSpotServer};
use crmsync_tests::*;
use std::sync::{Arc, Mutex};

/// A loopback webhook receiver answering `statuses` in turn (then 200), keeping the bodies.
fn receiver(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<String>>>, std::thread::JoinHandle<()>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/hooks/crmsync",
        server.server_addr().to_ip().unwrap().port()
    );
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    let handle = std::thread::spawn(move || {
        let mut statuses = statuses.into_iter();
        while let Ok(Some(mut request)) = server.recv_timeout(std::time::Duration::from_secs(20)) {
            let mut body = String::new();
            request.as_reader().read_to_string(&mut body).unwrap();
            kept.lock().unwrap().push(body);
            let status = statuses.next().unwrap_or(200);
            request.respond(tiny_http::Response::empty(status)).unwrap();
            if status == 200 {
                break;
            }
        }
    });
    (url, bodies, handle)
}

fn server_with_a_duplicate() -> HubSpotServer {
    let server = HubSpotServer::start(TOKEN);
    server.state().contacts = vec![
        Contact::new(1, &[("email", Some("same@example.com"))]),
        Contact::new(2, &[("email", Some("SAME@example.com"))]),
    ];
    server
}

#[test]
fn a_run_with_errors_is_posted_to_the_webhook_with_retries_and_piped_to_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_a_duplicate();
    let (url, bodies, receiver) = receiver(vec![500, 503]);
    let piped = dir.path().join("piped.json");
    hubspot_config(
        dir.path(),
        "notified",
        &server.base_url,
        token_env(),
        "",
        &format!(
            "[notify]\nwebhook = \"{url}\"\ncommand = [\"sh\", \"-c\", \"cat > '{}'\"]\n",
            piped.display()
        ),
    );
    let config_path = dir.path().join("notified.toml");
    let component = component_path().display().to_string();

    let (_, out) = crmsync(&[
        "sync",
        "--config",
        config_path.to_str().unwrap(),
        "--component",
        &component,
    ])
    .unwrap();

    assert!(out.contains("email-taken"), "{out}");
    receiver.join().unwrap();
    let bodies = bodies.lock().unwrap();
    assert_eq!(
        bodies.len(),
        3,
        "two failed deliveries, then one that worked"
    );
    let summary: serde_json::Value = serde_json::from_str(&bodies[2]).unwrap();
    assert_eq!(summary["event"], "sync.completed_with_errors");
    assert_eq!(summary["sync"], "notified");
    assert_eq!(summary["errors_by_category"]["email-taken"], 1);
    assert_eq!(summary["created"], 1);
    let piped: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&piped).unwrap()).unwrap();
    assert_eq!(piped, summary);
}

#[test]
fn a_clean_run_notifies_only_when_asked_to_always() {
    let dir = tempfile::tempdir().unwrap();
    let server = HubSpotServer::start(TOKEN);
    server.state().contacts = vec![Contact::new(1, &[("email", Some("one@example.com"))])];
    let problems = dir.path().join("problems.json");
    let always = dir.path().join("always.json");
    for (name, file, on) in [
        ("quiet", &problems, "problems"),
        ("chatty", &always, "always"),
    ] {
        hubspot_config(
            dir.path(),
            name,
            &server.base_url,
            token_env(),
            "",
            &format!(
                "[notify]\non = \"{on}\"\ncommand = [\"sh\", \"-c\", \"cat > '{}'\"]\n",
                file.display()
            ),
        );
        let path = dir.path().join(format!("{name}.toml"));
        let component = component_path().display().to_string();
        crmsync(&[
            "sync",
            "--config",
            path.to_str().unwrap(),
            "--component",
            &component,
        ])
        .unwrap();
    }
    assert!(
        !problems.exists(),
        "a clean run notified with on = \"problems\""
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&always).unwrap()).unwrap();
    assert_eq!(summary["event"], "sync.completed");
}

#[test]
fn a_company_part_with_errors_is_notified_even_when_the_contacts_are_clean() {
    let dir = tempfile::tempdir().unwrap();
    let server = HubSpotServer::start(TOKEN);
    {
        let mut state = server.state();
        state.contacts = vec![Contact::new(1, &[("email", Some("one@example.com"))])];
        state.companies = vec![
            Contact::new(11, &[("name", Some("Acme")), ("domain", Some("acme.com"))]),
            Contact::new(
                12,
                &[("name", Some("Acme 2")), ("domain", Some("acme.com"))],
            ),
        ];
    }
    let file = dir.path().join("summary.json");
    hubspot_config(
        dir.path(),
        "parts",
        &server.base_url,
        token_env(),
        "rate_limit = \"none\"\n",
        &format!(
            "[companies]\n[notify]\ncommand = [\"sh\", \"-c\", \"cat > '{}'\"]\n",
            file.display()
        ),
    );
    let path = dir.path().join("parts.toml");
    let component = component_path().display().to_string();
    crmsync(&[
        "sync",
        "--config",
        path.to_str().unwrap(),
        "--component",
        &component,
    ])
    .unwrap();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(summary["event"], "sync.completed_with_errors");
    assert_eq!(summary["errors_by_category"], serde_json::json!({}));
    assert_eq!(
        summary["companies"]["errors_by_category"]["domain-taken"],
        1
    );
}
