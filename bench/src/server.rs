//! A fast HubSpot-shaped server for benchmarks: contacts are generated on the
//! fly from their number (nothing stored, so a million cost no memory), pages
//! are rendered straight into a byte buffer, and several threads answer. It
//! can enforce HubSpot's rolling-window limit with real 429s. It measures its
//! own busy time, so a report can show the server was not the bottleneck.
//! It also takes Salesforce writes (sObject Collections), for syncs into a CRM.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tiny_http::{Header, Method, Response, Server};

/// What the server serves and enforces.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub contacts: u64,
    /// `(requests, window)`: answer 429 past this many requests per rolling window.
    pub limit: Option<(usize, Duration)>,
    /// Every answer leaves this long after its request arrived, as a real
    /// API's round trip does.
    pub latency: Option<Duration>,
}

/// Counters, readable while the server runs.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub refused: AtomicU64,
    /// Nanoseconds spent answering (with a latency, waiting it too), summed
    /// over threads.
    pub busy_ns: AtomicU64,
    /// Records saved through sObject Collections.
    pub saved: AtomicU64,
    /// When each request for a page of the contact list arrived, kept only
    /// when answers wait a latency: a run's pages are sequential, so what
    /// separates two arrivals beyond the latency is the runner's turnaround.
    pub page_arrivals: Mutex<Vec<Instant>>,
}

/// A running server; stops when dropped.
pub struct BenchServer {
    pub base_url: String,
    pub stats: Arc<Stats>,
    server: Arc<Server>,
    threads: Vec<JoinHandle<()>>,
}

const THREADS: usize = 2;

impl BenchServer {
    pub fn start(setup: Setup) -> Self {
        let server = Arc::new(Server::http("127.0.0.1:0").expect("loopback server binds"));
        let port = server.server_addr().to_ip().expect("an IP address").port();
        let stats = Arc::new(Stats::default());
        let window = Arc::new(Mutex::new(VecDeque::new()));
        let threads = (0..THREADS)
            .map(|_| {
                let server = server.clone();
                let stats = stats.clone();
                let window = window.clone();
                std::thread::spawn(move || {
                    for request in server.incoming_requests() {
                        let started = Instant::now();
                        answer(request, &setup, &stats, &window);
                        stats
                            .busy_ns
                            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        BenchServer {
            base_url: format!("http://127.0.0.1:{port}"),
            stats,
            server,
            threads,
        }
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        self.server.unblock();
        for _ in 1..THREADS {
            self.server.unblock();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn answer(
    request: tiny_http::Request,
    setup: &Setup,
    stats: &Stats,
    window: &Mutex<VecDeque<Instant>>,
) {
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let arrived = Instant::now();
    if setup.latency.is_some()
        && request.url().starts_with("/crm/v3/objects/contacts?")
        && !request.url().contains("archived=true")
    {
        stats.page_arrivals.lock().expect("arrivals").push(arrived);
    }
    // The answer leaves `latency` after the request arrived, its rendering
    // inside that time, as a client sees a real API's round trip: the
    // portals' bound counts `latency` a page, not the latency and this
    // server's own work after it.
    let wait = || {
        if let Some(latency) = setup.latency {
            std::thread::sleep((arrived + latency).saturating_duration_since(Instant::now()));
        }
    };
    let json =
        Header::from_bytes("Content-Type", "application/json;charset=utf-8").expect("header");
    if let Some((limit, span)) = setup.limit {
        let now = Instant::now();
        let mut sent = window.lock().expect("window");
        while sent.front().is_some_and(|&t| now.duration_since(t) >= span) {
            sent.pop_front();
        }
        if sent.len() >= limit {
            drop(sent);
            stats.refused.fetch_add(1, Ordering::Relaxed);
            let body = r#"{"status":"error","message":"You have reached your ten_secondly_rolling limit.","errorType":"RATE_LIMIT","policyName":"TEN_SECONDLY_ROLLING"}"#;
            wait();
            let _ = request.respond(
                Response::from_string(body)
                    .with_status_code(429)
                    .with_header(json),
            );
            return;
        }
        sent.push_back(now);
    }
    let url = request.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
    };
    let mut request = request;
    let body = match (request.method(), path) {
        (Method::Get, "/crm/v3/properties/contacts") => catalogue(),
        (Method::Get, "/crm/v3/objects/contacts") if param("archived") == Some("true") => {
            r#"{"results":[]}"#.to_owned()
        }
        (Method::Get, "/crm/v3/objects/contacts") => {
            let limit: u64 = param("limit").and_then(|l| l.parse().ok()).unwrap_or(10);
            let after: u64 = param("after").and_then(|a| a.parse().ok()).unwrap_or(0);
            contacts_page(after, limit.min(100), setup.contacts)
        }
        (Method::Post, "/crm/v3/objects/contacts/search") => {
            r#"{"total":0,"results":[]}"#.to_owned()
        }
        // Salesforce as a destination: no person exists yet (every email
        // look-up finds nothing), and every saved record succeeds.
        (Method::Get, "/services/data/v60.0/query") => {
            r#"{"totalSize":0,"done":true,"records":[]}"#.to_owned()
        }
        // The E6 check before a run: the person fields every mapping uses.
        (Method::Get, path)
            if path.starts_with("/services/data/v60.0/sobjects/")
                && path.ends_with("/describe") =>
        {
            let fields: Vec<String> = [
                "Id",
                "FirstName",
                "LastName",
                "Email",
                "Phone",
                "Title",
                "Company",
            ]
            .iter()
            .map(|f| format!(r#"{{"name":"{f}","label":"{f}","type":"string"}}"#))
            .collect();
            format!(r#"{{"fields":[{}]}}"#, fields.join(","))
        }
        (Method::Post, "/services/data/v60.0/composite/sobjects") => {
            let mut body = String::new();
            let _ = request.as_reader().read_to_string(&mut body);
            let records = body.matches(r#""attributes""#).count();
            let first = stats.saved.fetch_add(records as u64, Ordering::Relaxed);
            let results: Vec<String> = (first..first + records as u64)
                .map(|n| format!(r#"{{"id":"00Q{n:012}","success":true,"errors":[]}}"#))
                .collect();
            format!("[{}]", results.join(","))
        }
        _ => {
            wait();
            let _ = request.respond(
                Response::from_string(r#"{"status":"error","category":"OBJECT_NOT_FOUND"}"#)
                    .with_status_code(404)
                    .with_header(json),
            );
            return;
        }
    };
    wait();
    let _ = request.respond(Response::from_string(body).with_header(json));
}

fn catalogue() -> String {
    let names = [
        "firstname",
        "lastname",
        "email",
        "hs_additional_emails",
        "phone",
        "mobilephone",
        "hs_object_id",
        "lastmodifieddate",
    ];
    let results: Vec<String> = names
        .iter()
        .map(|n| {
            format!(
                r#"{{"name":"{n}","label":"{n}","type":"string","fieldType":"text","options":[]}}"#
            )
        })
        .collect();
    format!(r#"{{"results":[{}]}}"#, results.join(","))
}

/// Contacts `after+1 ..= after+limit` of `total`, in HubSpot's list shape.
pub fn contacts_page(after: u64, limit: u64, total: u64) -> String {
    let last = (after + limit).min(total);
    let mut out = String::with_capacity(((last - after.min(last)) as usize) * 420 + 128);
    out.push_str(r#"{"results":["#);
    for id in after + 1..=last {
        if id > after + 1 {
            out.push(',');
        }
        let _ = write!(
            out,
            r#"{{"id":"{id}","properties":{{"createdate":"2024-01-01T00:00:00.000Z","email":"c{id}@example.com","firstname":"First{id}","hs_additional_emails":null,"hs_merged_object_ids":null,"hs_object_id":"{id}","lastmodifieddate":"2024-06-01T00:00:00.000Z","lastname":"Last{id}","mobilephone":null,"phone":"+1555{id:07}"}},"createdAt":"2024-01-01T00:00:00.000Z","updatedAt":"2024-06-01T00:00:00.000Z","archived":false}}"#
        );
    }
    out.push(']');
    if last < total {
        let _ = write!(
            out,
            r#","paging":{{"next":{{"after":"{last}","link":"/crm/v3/objects/contacts?after={last}"}}}}"#
        );
    }
    out.push('}');
    out
}
