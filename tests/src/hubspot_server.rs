//! A loopback server that speaks HubSpot's documented CRM v3 shapes: contacts
//! listing, search, list memberships, batch read, the property catalogue and
//! the OAuth token endpoint, with bearer-token checks, HubSpot's error bodies
//! and injectable faults. Tests assert on what crossed the wire.

use crate::loopback::Loopback;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tiny_http::{Header, Method, Response};

/// The properties every contact has, as HubSpot defines them.
pub const STANDARD_PROPERTIES: &[&str] = &[
    "firstname",
    "lastname",
    "email",
    "hs_additional_emails",
    "phone",
    "mobilephone",
    "company",
    "jobtitle",
    "hubspot_owner_id",
    "hs_object_id",
    "createdate",
    "lastmodifieddate",
];

/// The company properties the server's catalogue defines (HubSpot's standard ones).
pub const STANDARD_COMPANY_PROPERTIES: &[&str] = &[
    "name",
    "domain",
    "hs_additional_domains",
    "industry",
    "city",
    "country",
    "phone",
    "hs_object_id",
    "createdate",
    "hs_lastmodifieddate",
];

/// When contacts made with [`Contact::new`] were last modified: 2024-06-01T00:00:00Z.
pub const OLD_MODIFICATION_MS: u64 = 1_717_200_000_000;

/// A contact held by the server.
#[derive(Debug, Clone)]
pub struct Contact {
    pub id: u64,
    pub properties: BTreeMap<String, Option<String>>,
    pub archived: bool,
    /// `lastmodifieddate`, epoch ms.
    pub modified: u64,
    /// Whether the search index has caught up with the contact's last change
    /// (HubSpot's search is eventually consistent).
    pub indexed: bool,
}

impl Contact {
    /// A contact with the given property values (`None` = null), last
    /// modified at [`OLD_MODIFICATION_MS`].
    pub fn new(id: u64, properties: &[(&str, Option<&str>)]) -> Self {
        Contact {
            id,
            properties: properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
                .collect(),
            archived: false,
            modified: OLD_MODIFICATION_MS,
            indexed: true,
        }
    }

    /// The same contact, last modified at `ms`.
    pub fn modified_at(mut self, ms: u64) -> Self {
        self.modified = ms;
        self
    }
}

/// The server's clock, epoch ms.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as u64
}

/// A canned answer served instead of the real one, for the next matching request.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Only requests whose path starts with this are affected. The archived
    /// listing (`?archived=true`) is matched as `archived:` + its path, so a
    /// fault on a path means its pages: the runner reads the archived
    /// listing while it reads the pages, and a test of page retries would
    /// otherwise depend on which of the two asked first.
    pub path_prefix: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Fault {
    /// HubSpot's 429 for the ten-secondly burst limit.
    pub fn rate_limited(path_prefix: &str, retry_after: Option<&str>) -> Self {
        Fault {
            path_prefix: path_prefix.into(),
            status: 429,
            headers: retry_after.map(|r| ("Retry-After".to_owned(), r.to_owned())).into_iter().collect(),
            body: json!({"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
                         "errorType": "RATE_LIMIT", "correlationId": "00000000-0000-4000-8000-000000000429",
                         "policyName": "TEN_SECONDLY_ROLLING"})
            .to_string(),
        }
    }

    /// A bare server error, as a gateway would send it.
    pub fn server_error(path_prefix: &str, status: u16) -> Self {
        Fault {
            path_prefix: path_prefix.into(),
            status,
            headers: vec![("Content-Type".into(), "text/html".into())],
            body: "<html><body>upstream unavailable</body></html>".into(),
        }
    }

    /// A 200 whose JSON body is cut short.
    pub fn truncated(path_prefix: &str) -> Self {
        Fault {
            path_prefix: path_prefix.into(),
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: "{\"results\":[{\"id\":\"1\",\"proper".into(),
        }
    }
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    pub authorization: Option<String>,
    /// The `User-Agent` the runner sent (`crmsync/<version> runner/<id>`).
    pub user_agent: Option<String>,
    pub body: String,
    pub at: Instant,
}

/// The server's state; tests change it between runs.
#[derive(Debug, Default)]
pub struct State {
    pub contacts: Vec<Contact>,
    /// Companies, held like contacts (id, properties, archived, modification).
    pub companies: Vec<Contact>,
    /// Contact -> company associations: `(contact id, company id, primary)`.
    pub associations: Vec<(u64, u64, bool)>,
    pub lists: HashMap<String, Vec<u64>>,
    /// Owners (`hubspot_owner_id` values): `(id, email)`.
    pub owners: Vec<(u64, String)>,
    /// Most results per page the server returns (HubSpot may return fewer than `limit`).
    pub page_size: Option<usize>,
    /// Access tokens that are accepted.
    pub valid_tokens: Vec<String>,
    /// Access tokens that are answered with `EXPIRED_AUTHENTICATION`.
    pub expired_tokens: Vec<String>,
    /// Refresh token accepted by `/oauth/v1/token`, and how long issued tokens live.
    pub refresh_token: Option<String>,
    pub expires_in: u64,
    pub issued: u64,
    /// Issued OAuth access tokens expire after this many API requests.
    pub requests_per_token: Option<usize>,
    token_uses: HashMap<String, usize>,
    /// Properties deleted from the catalogue (E6).
    pub deleted_properties: Vec<String>,
    /// Custom properties in the catalogue beside the standard ones, with
    /// their HubSpot type (`string`, `number`, `date`, `datetime`, `bool`,
    /// `enumeration`); search compares `number`/`date`/`datetime` ones as numbers.
    pub custom_properties: Vec<(String, String)>,
    pub faults: VecDeque<Fault>,
    /// Faults served only after this many requests matching their prefix
    /// went through: the second batch of a write, say.
    pub delayed_faults: Vec<(usize, Fault)>,
    pub seen: Vec<Seen>,
    /// Enforce HubSpot's rolling-window limit: at most this many API
    /// requests per window, 429 beyond, `X-HubSpot-RateLimit-*` headers on answers.
    pub enforce_limit: Option<(usize, Duration)>,
    arrivals: VecDeque<Instant>,
    /// How many requests the enforced limit refused.
    pub refused: usize,
    /// Random faults on API requests: each kind with this probability.
    pub random_faults: Option<RandomFaults>,
    /// Faults served so far, by kind.
    pub faults_served: BTreeMap<&'static str, usize>,
    /// Records created or updated through the batch write endpoints.
    pub writes: usize,
    /// Batch write answers keep the inputs' order. Off by default: HubSpot's
    /// `batch/create` answers in no particular order, so this server
    /// shuffles them (seeded by `write_order_seed`) and no test can lean on order.
    pub ordered_writes: bool,
    /// A listing asked for the page after `.0` answers `.1` as its next
    /// cursor: the same one (a cursor that does not advance) or an earlier
    /// one (a cycle), as a broken server or proxy cache might.
    pub cursor_loop: Option<(String, String)>,
    /// Each answer waits this long before it is sent (a real API's 100-300 ms).
    pub latency: Option<Duration>,
    /// Headers added to every API answer (hostile rate-limit headers, say).
    pub extra_headers: Vec<(String, String)>,
    /// Seeds the shuffle of batch write answers.
    pub write_order_seed: u64,
    /// Batch write results carry only their id (no `properties`), as a
    /// terse server might: the client must read them back to pair them.
    pub bare_write_results: bool,
    clock: u64,
}

impl State {
    /// Creates or replaces the contact with `contact.id`, modified now, as an
    /// edit in HubSpot bumps `lastmodifieddate`.
    /// The server's clock for a write: now, and always after the last write,
    /// as `lastmodifieddate` is.
    pub fn tick(&mut self) -> u64 {
        self.clock = now_ms().max(self.clock + 1);
        self.clock
    }

    /// Sets properties of contact `id` as an edit in HubSpot does (its
    /// `lastmodifieddate` moves to now).
    pub fn edit(&mut self, id: u64, properties: &[(&str, Option<&str>)]) {
        let now = self.tick();
        let contact = self
            .contacts
            .iter_mut()
            .find(|c| c.id == id)
            .expect("a known contact");
        for (name, value) in properties {
            contact
                .properties
                .insert((*name).to_owned(), value.map(str::to_owned));
        }
        contact.modified = now;
    }

    /// The contact holding `email`, if any.
    pub fn by_email(&self, email: &str) -> Option<&Contact> {
        self.contacts.iter().find(|c| {
            c.properties
                .get("email")
                .cloned()
                .flatten()
                .is_some_and(|e| e.eq_ignore_ascii_case(email))
        })
    }

    pub fn put(&mut self, contact: Contact) {
        let contact = contact.modified_at(now_ms());
        match self.contacts.iter_mut().find(|c| c.id == contact.id) {
            Some(existing) => *existing = contact,
            None => self.contacts.push(contact),
        }
    }

    /// Archives (deletes) or restores a contact, modified now.
    pub fn set_archived(&mut self, id: u64, archived: bool) {
        let contact = self
            .contacts
            .iter_mut()
            .find(|c| c.id == id)
            .expect("a known contact");
        contact.archived = archived;
        contact.modified = now_ms();
    }
}

/// Each of server error, truncated body, malformed body and a stall past the
/// client's timeout, on `rate` of API requests each, from a seeded generator.
#[derive(Debug)]
pub struct RandomFaults {
    pub rate: f64,
    pub stall: Duration,
    pub rng: fastrand::Rng,
}

/// A running server; stops when dropped.
pub struct HubSpotServer {
    pub base_url: String,
    loopback: Loopback<State>,
}

impl HubSpotServer {
    /// Starts a server accepting the bearer token `token`.
    pub fn start(token: &str) -> Self {
        let state = State {
            valid_tokens: vec![token.to_owned()],
            expires_in: 1800,
            ..State::default()
        };
        let loopback = Loopback::start(state, handle);
        HubSpotServer {
            base_url: loopback.base_url.clone(),
            loopback,
        }
    }

    /// The server's state, to arrange or inspect.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.loopback.state()
    }

    /// Pages of the live contacts listing requested so far (not the archived listing).
    pub fn live_pages(&self) -> Vec<Seen> {
        self.requests_to("/crm/v3/objects/contacts")
            .into_iter()
            .filter(|s| {
                s.path == "/crm/v3/objects/contacts"
                    && s.query.get("archived").map(String::as_str) != Some("true")
            })
            .collect()
    }

    /// Requests received so far whose path starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<Seen> {
        self.state()
            .seen
            .iter()
            .filter(|s| s.path.starts_with(prefix))
            .cloned()
            .collect()
    }
}

fn handle(state: &Mutex<State>, mut request: tiny_http::Request) {
    let latency = state.lock().expect("server state").latency;
    if let Some(latency) = latency {
        std::thread::sleep(latency);
    }
    let mut body = String::new();
    let _ = request.as_reader().read_to_string(&mut body);
    let url = request.url().to_owned();
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p.to_owned(), parse_query(q)),
        None => (url.clone(), HashMap::new()),
    };
    let authorization = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str().to_owned());
    let user_agent = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("User-Agent"))
        .map(|h| h.value.as_str().to_owned());
    let method = request.method().clone();
    let (status, headers, answer) = {
        let mut state = state.lock().expect("server state");
        state.seen.push(Seen {
            method: method.as_str().to_owned(),
            path: path.clone(),
            query: query.clone(),
            authorization: authorization.clone(),
            user_agent,
            body: body.clone(),
            at: Instant::now(),
        });
        let limit_headers = match enforce(&mut state) {
            Ok(headers) => headers,
            Err(refused) => {
                state.refused += 1;
                let fault = Fault::rate_limited("", None);
                let response = Response::from_string(fault.body)
                    .with_status_code(refused)
                    .with_header(
                        Header::from_bytes("Content-Type", "application/json").expect("header"),
                    );
                drop(state);
                let _ = request.respond(response);
                return;
            }
        };
        if let Some(kind) = random_fault(&mut state, &path) {
            *state.faults_served.entry(kind.name()).or_insert(0) += 1;
            let stall = match &kind {
                RandomFault::Stall(stall) => Some(*stall),
                _ => None,
            };
            drop(state);
            if let Some(stall) = stall {
                std::thread::sleep(stall);
            }
            let fault = kind.fault();
            let mut response = Response::from_string(fault.body).with_status_code(fault.status);
            for (name, value) in fault.headers {
                response.add_header(
                    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header"),
                );
            }
            let _ = request.respond(response);
            return;
        }
        let fault_path = match query.get("archived").map(String::as_str) {
            Some("true") => format!("archived:{path}"),
            _ => path.clone(),
        };
        let fault_index = state
            .faults
            .iter()
            .position(|f| fault_path.starts_with(&f.path_prefix));
        let mut delayed = None;
        for (index, (wait, fault)) in state.delayed_faults.iter_mut().enumerate() {
            if fault_path.starts_with(&fault.path_prefix) {
                if *wait == 0 {
                    delayed = Some(index);
                    break;
                }
                *wait -= 1;
            }
        }
        let delayed = delayed.map(|i| state.delayed_faults.remove(i).1);
        match delayed.or_else(|| fault_index.and_then(|i| state.faults.remove(i))) {
            Some(fault) => (fault.status, fault.headers, fault.body),
            None => {
                let (status, value) = route(
                    &mut state,
                    &method,
                    &path,
                    &query,
                    &body,
                    authorization.as_deref(),
                );
                let mut headers = vec![(
                    "Content-Type".to_owned(),
                    "application/json;charset=utf-8".to_owned(),
                )];
                headers.extend(limit_headers);
                headers.extend(state.extra_headers.iter().cloned());
                (status, headers, value.to_string())
            }
        }
    };
    let mut response = Response::from_string(answer).with_status_code(status);
    for (name, value) in headers {
        response.add_header(
            Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header"),
        );
    }
    let _ = request.respond(response);
}

enum RandomFault {
    ServerError,
    Truncated,
    Malformed,
    Stall(Duration),
}

impl RandomFault {
    fn name(&self) -> &'static str {
        match self {
            RandomFault::ServerError => "server error",
            RandomFault::Truncated => "truncated body",
            RandomFault::Malformed => "malformed body",
            RandomFault::Stall(_) => "stall past the timeout",
        }
    }

    fn fault(&self) -> Fault {
        match self {
            RandomFault::ServerError => Fault::server_error("", 503),
            RandomFault::Truncated => Fault::truncated(""),
            RandomFault::Malformed => Fault {
                path_prefix: String::new(),
                status: 200,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: r#"{"results": "not a list", "paging": 7}"#.into(),
            },
            // Whatever comes after the stall, the client has given up.
            RandomFault::Stall(_) => Fault::server_error("", 504),
        }
    }
}

fn random_fault(state: &mut State, path: &str) -> Option<RandomFault> {
    if !path.starts_with("/crm/") {
        return None;
    }
    let faults = state.random_faults.as_mut()?;
    let roll = faults.rng.f64();
    let rate = faults.rate;
    Some(if roll < rate {
        RandomFault::ServerError
    } else if roll < 2.0 * rate {
        RandomFault::Truncated
    } else if roll < 3.0 * rate {
        RandomFault::Malformed
    } else if roll < 4.0 * rate {
        RandomFault::Stall(faults.stall)
    } else {
        return None;
    })
}

/// Counts the request against the enforced limit: its rate-limit headers, or the refusal status.
fn enforce(state: &mut State) -> Result<Vec<(String, String)>, u16> {
    let Some((limit, window)) = state.enforce_limit else {
        return Ok(Vec::new());
    };
    let now = Instant::now();
    while state
        .arrivals
        .front()
        .is_some_and(|&t| now.duration_since(t) >= window)
    {
        state.arrivals.pop_front();
    }
    if state.arrivals.len() >= limit {
        return Err(429);
    }
    state.arrivals.push_back(now);
    Ok(vec![
        ("X-HubSpot-RateLimit-Max".into(), limit.to_string()),
        (
            "X-HubSpot-RateLimit-Remaining".into(),
            (limit - state.arrivals.len()).to_string(),
        ),
        (
            "X-HubSpot-RateLimit-Interval-Milliseconds".into(),
            window.as_millis().to_string(),
        ),
    ])
}

fn route(
    state: &mut State,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    body: &str,
    authorization: Option<&str>,
) -> (u16, Value) {
    if path == "/oauth/v1/token" && *method == Method::Post {
        return token(state, body);
    }
    let token = authorization
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or("");
    if let (Some(limit), true) = (state.requests_per_token, token.starts_with("access-")) {
        let uses = state.token_uses.entry(token.to_owned()).or_insert(0);
        *uses += 1;
        if *uses > limit {
            state.expired_tokens.push(token.to_owned());
        }
    }
    if state.expired_tokens.iter().any(|t| t == token) {
        return (
            401,
            json!({"status": "error", "message": "The OAuth token used to make this call expired 5 second(s) ago.",
                            "correlationId": "c-expired", "category": "EXPIRED_AUTHENTICATION"}),
        );
    }
    if !state.valid_tokens.iter().any(|t| t == token) {
        return (
            401,
            json!({"status": "error", "message": "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
                            "correlationId": "c-auth", "category": "INVALID_AUTHENTICATION"}),
        );
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let object = |kind: &str| matches!(kind, "contacts" | "companies");
    match (method, segments.as_slice()) {
        (Method::Get, ["crm", "v3", "objects", kind]) if object(kind) => {
            list_objects(state, kind, query)
        }
        (Method::Post, ["crm", "v3", "objects", kind, "batch", "read"]) if object(kind) => {
            batch_read(state, kind, body)
        }
        (Method::Post, ["crm", "v3", "objects", kind, "batch", "create"]) if object(kind) => {
            batch_write(state, kind, body, true)
        }
        (Method::Post, ["crm", "v3", "objects", kind, "batch", "update"]) if object(kind) => {
            batch_write(state, kind, body, false)
        }
        (Method::Post, ["crm", "v3", "objects", kind, "search"]) if object(kind) => {
            search(state, kind, body)
        }
        (Method::Get, ["crm", "v3", "lists", list_id, "memberships"]) => {
            memberships(state, list_id, query)
        }
        (Method::Get, ["crm", "v3", "properties", kind]) if object(kind) => properties(state, kind),
        (Method::Get, ["crm", "v3", "owners"]) => owners(state, query),
        (Method::Post, ["crm", "v4", "associations", from, to, "batch", "read"])
            if object(from) && object(to) && from != to =>
        {
            associations_batch(state, from, body)
        }
        (
            Method::Post,
            [
                "crm",
                "v4",
                "associations",
                "contacts",
                "companies",
                "batch",
                "create",
            ],
        ) => create_associations(state, body),
        (Method::Get, ["crm", "v4", "objects", from, id, "associations", to])
            if object(from) && object(to) && from != to =>
        {
            associations_of(state, from, id)
        }
        _ => (
            404,
            json!({"status": "error", "message": format!("no route for {path}"), "category": "OBJECT_NOT_FOUND"}),
        ),
    }
}

/// `GET /crm/v3/owners?limit=&after=`: owners by id, `after` an offset.
fn owners(state: &State, params: &HashMap<String, String>) -> (u16, Value) {
    let limit: usize = params
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100)
        .min(500);
    let after: usize = params
        .get("after")
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let results: Vec<Value> = state
        .owners
        .iter()
        .skip(after)
        .take(limit)
        .map(|(id, email)| {
            json!({"id": id.to_string(), "email": email, "type": "PERSON", "firstName": "", "lastName": "",
                   "userId": id, "createdAt": "2024-01-01T00:00:00Z", "updatedAt": "2024-01-01T00:00:00Z",
                   "archived": false, "teams": []})
        })
        .collect();
    let mut answer = json!({ "results": results });
    if after + limit < state.owners.len() {
        answer["paging"] = json!({"next": {"after": (after + limit).to_string()}});
    }
    (200, answer)
}

/// Parses `a=1&b=2` (a query string or a form body).
pub(crate) fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-decodes a query-string component (`+` is a space).
pub(crate) fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The records of an object type.
fn records<'a>(state: &'a State, kind: &str) -> &'a [Contact] {
    if kind == "companies" {
        &state.companies
    } else {
        &state.contacts
    }
}

/// `(id, associated id, primary)` of every association, seen from `from`'s side.
fn associated(state: &State, from: &str) -> Vec<(u64, u64, bool)> {
    state
        .associations
        .iter()
        .map(|&(contact, company, primary)| {
            if from == "contacts" {
                (contact, company, primary)
            } else {
                (company, contact, primary)
            }
        })
        .collect()
}

/// Associates `contact` with `company`; a primary association (type 1)
/// makes every other company of the contact a plain one, as HubSpot does.
fn associate(state: &mut State, contact: u64, company: u64, primary: bool) {
    if primary {
        for association in state.associations.iter_mut().filter(|a| a.0 == contact) {
            association.2 = false;
        }
    }
    match state
        .associations
        .iter_mut()
        .find(|a| a.0 == contact && a.1 == company)
    {
        Some(existing) => existing.2 |= primary,
        None => state.associations.push((contact, company, primary)),
    }
}

/// Whether an association's `types` hold the primary label (type 1).
fn primary_type(types: &Value) -> bool {
    types
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| t["associationTypeId"].as_u64() == Some(1))
}

/// `POST /crm/v4/associations/contacts/companies/batch/create`: 201 with
/// each association made, or 207 with errors for ids that do not exist.
fn create_associations(state: &mut State, body: &str) -> (u16, Value) {
    let Ok(request) = serde_json::from_str::<Value>(body) else {
        return validation_error("Invalid input JSON");
    };
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for input in request["inputs"].as_array().into_iter().flatten() {
        let id = |side: &str| {
            input[side]["id"]
                .as_str()
                .and_then(|id| id.parse::<u64>().ok())
        };
        let (Some(contact), Some(company)) = (id("from"), id("to")) else {
            return validation_error("from.id and to.id are required");
        };
        let exists =
            |records: &[Contact], id: u64| records.iter().any(|r| r.id == id && !r.archived);
        if !exists(&state.contacts, contact) || !exists(&state.companies, company) {
            errors.push(json!({"status": "error", "category": "VALIDATION_ERROR",
                "message": format!("No contact {contact} or company {company} to associate"),
                "context": {"fromObjectId": [contact.to_string()]}}));
            continue;
        }
        associate(state, contact, company, primary_type(&input["types"]));
        results.push(json!({"fromObjectTypeId": "0-1", "fromObjectId": contact,
                            "toObjectTypeId": "0-2", "toObjectId": company, "labels": []}));
    }
    let mut answer = json!({"status": "COMPLETE", "results": results,
                            "startedAt": "2024-06-01T00:00:00.000Z", "completedAt": "2024-06-01T00:00:00.010Z"});
    if errors.is_empty() {
        (201, answer)
    } else {
        answer["numErrors"] = json!(errors.len());
        answer["errors"] = json!(errors);
        (207, answer)
    }
}

/// A v4 association entry.
fn association_entry(to: u64, primary: bool) -> Value {
    let mut types = vec![json!({"category": "HUBSPOT_DEFINED", "typeId": 279, "label": null})];
    if primary {
        types.insert(
            0,
            json!({"category": "HUBSPOT_DEFINED", "typeId": 1, "label": "Primary"}),
        );
    }
    json!({"toObjectId": to, "associationTypes": types})
}

/// `POST /crm/v4/associations/{from}/{to}/batch/read`: 200, or 207 with an
/// error for ids that have no associations.
fn associations_batch(state: &State, from: &str, body: &str) -> (u16, Value) {
    let Ok(request) = serde_json::from_str::<Value>(body) else {
        return validation_error("Invalid input JSON");
    };
    let inputs = request["inputs"].as_array().cloned().unwrap_or_default();
    if inputs.is_empty() || inputs.len() > 1_000 {
        return validation_error("inputs must hold 1 to 1000 ids");
    }
    let all = associated(state, from);
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for input in &inputs {
        let id = input["id"].as_str().unwrap_or("");
        let to: Vec<Value> = all
            .iter()
            .filter(|(f, _, _)| f.to_string() == id)
            .map(|&(_, to, primary)| association_entry(to, primary))
            .collect();
        if to.is_empty() {
            missing.push(id.to_owned());
        } else {
            results.push(json!({"from": {"id": id}, "to": to}));
        }
    }
    let mut answer = json!({"status": "COMPLETE", "results": results});
    if missing.is_empty() {
        (200, answer)
    } else {
        answer["numErrors"] = json!(missing.len());
        answer["errors"] = json!(missing.iter().map(|id| json!({"status": "error", "category": "OBJECT_NOT_FOUND",
            "message": format!("No associations found for {id}"), "context": {"fromObjectId": [id]}})).collect::<Vec<_>>());
        (207, answer)
    }
}

/// `GET /crm/v4/objects/{from}/{id}/associations/{to}`: everything in one page.
fn associations_of(state: &State, from: &str, id: &str) -> (u16, Value) {
    let results: Vec<Value> = associated(state, from)
        .iter()
        .filter(|(f, _, _)| f.to_string() == id)
        .map(|&(_, to, primary)| association_entry(to, primary))
        .collect();
    (200, json!({ "results": results }))
}

/// The object shape HubSpot returns: requested properties (null when empty)
/// plus the ones it always includes.
fn object(contact: &Contact, requested: &[String]) -> Value {
    let mut properties = serde_json::Map::new();
    for name in requested {
        properties.insert(
            name.clone(),
            json!(contact.properties.get(name).cloned().flatten()),
        );
    }
    let modified = chrono::DateTime::from_timestamp_millis(contact.modified as i64)
        .expect("a representable time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    properties.insert("hs_object_id".into(), json!(contact.id.to_string()));
    properties.insert("createdate".into(), json!("2024-01-01T00:00:00.000Z"));
    properties.insert("lastmodifieddate".into(), json!(modified));
    properties.insert("hs_lastmodifieddate".into(), json!(modified));
    json!({
        "id": contact.id.to_string(),
        "properties": properties,
        "createdAt": "2024-01-01T00:00:00.000Z",
        "updatedAt": modified,
        "archived": contact.archived,
    })
}

fn validation_error(message: &str) -> (u16, Value) {
    (
        400,
        json!({"status": "error", "message": message, "correlationId": "c-validation",
               "category": "VALIDATION_ERROR"}),
    )
}

/// `POST /crm/v3/objects/contacts/search` as documented: filter groups ORed,
/// filters ANDed, one sort at most, `limit` up to 200, `after` an offset, and
/// no paging past 10,000 results. Dates compare as epoch ms. Records sharing a
/// sort value come back in an order of the server's own (not by id).
fn search(state: &State, kind: &str, body: &str) -> (u16, Value) {
    let Ok(request) = serde_json::from_str::<Value>(body) else {
        return validation_error("Invalid input JSON on line 1");
    };
    let limit = request["limit"].as_u64().unwrap_or(10) as usize;
    if limit == 0 || limit > 200 {
        return validation_error("limit must be between 1 and 200");
    }
    let after: usize = match &request["after"] {
        Value::Null => 0,
        Value::String(a) => match a.parse() {
            Ok(a) => a,
            Err(_) => return validation_error("after must be an integer"),
        },
        Value::Number(n) => n.as_u64().unwrap_or(0) as usize,
        _ => return validation_error("after must be an integer"),
    };
    if after + limit > 10_000 {
        return validation_error(
            "The search endpoints are limited to 10,000 total results for any given query.",
        );
    }
    let sorts = request["sorts"].as_array().cloned().unwrap_or_default();
    if sorts.len() > 1 {
        return validation_error("Only one sorting rule can be applied to any search.");
    }
    let groups = request["filterGroups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if groups.len() > 5 {
        return validation_error("Too many filter groups (at most 5)");
    }
    if groups
        .iter()
        .any(|g| g["filters"].as_array().is_some_and(|f| f.len() > 6))
    {
        return validation_error("Too many filters in a filter group (at most 6)");
    }
    let value_of = |contact: &Contact, property: &str| -> Option<String> {
        match property {
            "lastmodifieddate" | "hs_lastmodifieddate" => Some(contact.modified.to_string()),
            "hs_object_id" => Some(contact.id.to_string()),
            other => contact
                .properties
                .get(other)
                .cloned()
                .flatten()
                .filter(|v| !v.is_empty()),
        }
    };
    let numeric = |p: &str| {
        matches!(
            p,
            "lastmodifieddate" | "hs_lastmodifieddate" | "hs_object_id"
        ) || state
            .custom_properties
            .iter()
            .any(|(name, t)| name == p && matches!(t.as_str(), "number" | "date" | "datetime"))
    };
    // Numbers (dates as epoch ms) by value; strings ignoring case, as HubSpot's search does.
    let compare = |property: &str, actual: &str, wanted: &str| -> Option<std::cmp::Ordering> {
        if numeric(property) {
            let number = |v: &str| {
                v.parse::<f64>()
                    .ok()
                    .or_else(|| epoch_ms(v).map(|ms| ms as f64))
            };
            number(actual)?.partial_cmp(&number(wanted)?)
        } else {
            Some(actual.to_lowercase().cmp(&wanted.to_lowercase()))
        }
    };
    let passes = |contact: &Contact, filter: &Value| -> bool {
        let property = filter["propertyName"].as_str().unwrap_or("");
        let wanted = filter["value"].as_str().unwrap_or("");
        let actual = value_of(contact, property);
        let order = actual.as_deref().and_then(|a| compare(property, a, wanted));
        let any_of = || {
            filter["values"].as_array().is_some_and(|values| {
                values.iter().any(|v| {
                    actual
                        .as_deref()
                        .zip(v.as_str())
                        .and_then(|(a, w)| compare(property, a, w))
                        == Some(std::cmp::Ordering::Equal)
                })
            })
        };
        use std::cmp::Ordering::*;
        match (filter["operator"].as_str().unwrap_or(""), order) {
            ("EQ", Some(o)) => o == Equal,
            ("NEQ", o) => o != Some(Equal),
            ("GT", Some(o)) => o == Greater,
            ("GTE", Some(o)) => o != Less,
            ("LT", Some(o)) => o == Less,
            ("LTE", Some(o)) => o != Greater,
            ("IN", _) => any_of(),
            ("NOT_IN", _) => !any_of(),
            ("HAS_PROPERTY", _) => actual.is_some(),
            ("NOT_HAS_PROPERTY", _) => actual.is_none(),
            _ => false,
        }
    };
    let mut hits: Vec<&Contact> = records(state, kind)
        .iter()
        .filter(|c| !c.archived && c.indexed)
        .filter(|c| {
            groups.is_empty()
                || groups.iter().any(|g| {
                    g["filters"]
                        .as_array()
                        .is_some_and(|fs| fs.iter().all(|f| passes(c, f)))
                })
        })
        .collect();
    // The server's own tie order: by a scramble of the id.
    hits.sort_by_key(|c| c.id.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17));
    if let Some(sort) = sorts.first() {
        let property = sort["propertyName"].as_str().unwrap_or("");
        let key = |c: &&Contact| {
            let v = value_of(c, property).unwrap_or_default();
            if numeric(property) {
                (v.parse::<u64>().unwrap_or(0), String::new())
            } else {
                (0, v)
            }
        };
        hits.sort_by_key(key);
        if sort["direction"].as_str() == Some("DESCENDING") {
            hits.reverse();
        }
    } else {
        hits.sort_by_key(|c| c.id);
    }
    let requested = requested_properties(&request)
        .unwrap_or_else(|| vec!["email".into(), "firstname".into(), "lastname".into()]);
    let page: Vec<Value> = hits
        .iter()
        .skip(after)
        .take(limit.min(state.page_size.unwrap_or(usize::MAX)))
        .map(|c| object(c, &requested))
        .collect();
    let served = after + page.len();
    let mut answer = json!({"total": hits.len(), "results": page});
    if served < hits.len() {
        answer["paging"] = json!({"next": {"after": served.to_string(), "link": "?after=".to_owned() + &served.to_string()}});
    }
    (200, answer)
}

/// A date or date-time property's value (`YYYY-MM-DD`, RFC 3339) as epoch ms.
fn epoch_ms(value: &str) -> Option<i64> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(value) {
        return Some(time.timestamp_millis());
    }
    let day = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()?;
    Some(day.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

fn limit(query: &HashMap<String, String>, max: usize) -> Result<usize, (u16, Value)> {
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(10);
    if limit == 0 || limit > max {
        return Err((
            400,
            json!({"status": "error", "message": format!("limit must be between 1 and {max}"), "category": "VALIDATION_ERROR"}),
        ));
    }
    Ok(limit)
}

fn list_objects(state: &State, kind: &str, query: &HashMap<String, String>) -> (u16, Value) {
    let limit = match limit(query, 100) {
        Ok(l) => l.min(state.page_size.unwrap_or(usize::MAX)),
        Err(e) => return e,
    };
    let requested: Vec<String> = query
        .get("properties")
        .map(|p| p.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let archived = query.get("archived").map(String::as_str) == Some("true");
    let after: u64 = query
        .get("after")
        .and_then(|a| a.strip_prefix("cur-"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let mut live: Vec<&Contact> = records(state, kind)
        .iter()
        .filter(|c| c.archived == archived && c.id > after)
        .collect();
    live.sort_by_key(|c| c.id);
    let page: Vec<&Contact> = live.iter().take(limit).copied().collect();
    let with_companies = kind == "contacts"
        && query
            .get("associations")
            .is_some_and(|a| a.split(',').any(|a| a == "companies"));
    let results: Vec<Value> = page
        .iter()
        .map(|c| {
            let mut value = object(c, &requested);
            let companies: Vec<Value> = state
                .associations
                .iter()
                .filter(|(contact, _, _)| *contact == c.id)
                .flat_map(|&(_, company, primary)| {
                    let mut entries = vec![
                        json!({"id": company.to_string(), "type": "contact_to_company_unlabeled"}),
                    ];
                    if primary {
                        entries.insert(
                            0,
                            json!({"id": company.to_string(), "type": "contact_to_company"}),
                        );
                    }
                    entries
                })
                .collect();
            // HubSpot leaves `associations` out when there are none.
            if with_companies && !companies.is_empty() {
                value["associations"] = json!({"companies": {"results": companies}});
            }
            value
        })
        .collect();
    let mut answer = json!({ "results": results });
    if live.len() > limit {
        let mut next = format!("cur-{}", page.last().expect("a full page").id);
        if let Some((at, to)) = &state.cursor_loop
            && query.get("after") == Some(at)
        {
            next = to.clone();
        }
        answer["paging"] = json!({"next": {"after": next, "link": format!("/crm/v3/objects/{kind}?after={next}")}});
    }
    (200, answer)
}

fn memberships(state: &State, list_id: &str, query: &HashMap<String, String>) -> (u16, Value) {
    let limit = match limit(query, 250) {
        Ok(l) => l.min(state.page_size.unwrap_or(usize::MAX)),
        Err(e) => return e,
    };
    let Some(members) = state.lists.get(list_id) else {
        return (
            404,
            json!({"status": "error", "message": format!("List does not exist with ID {list_id}."),
                            "correlationId": "c-list", "category": "OBJECT_NOT_FOUND", "subCategory": "ILS.LIST_NOT_FOUND"}),
        );
    };
    let offset: usize = query
        .get("after")
        .and_then(|a| a.strip_prefix("m-"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let page: Vec<Value> = members
        .iter()
        .skip(offset)
        .take(limit)
        .map(|id| json!({"recordId": id.to_string(), "membershipTimestamp": "2024-05-01T00:00:00.000Z"}))
        .collect();
    let mut answer = json!({ "results": page });
    if offset + limit < members.len() {
        answer["paging"] = json!({"next": {"after": format!("m-{}", offset + limit)}});
    }
    (200, answer)
}

fn batch_read(state: &State, kind: &str, body: &str) -> (u16, Value) {
    let Ok(request) = serde_json::from_str::<Value>(body) else {
        return (
            400,
            json!({"status": "error", "message": "Invalid input JSON", "category": "VALIDATION_ERROR"}),
        );
    };
    let inputs = request["inputs"].as_array().cloned().unwrap_or_default();
    if inputs.is_empty() || inputs.len() > 100 {
        return (
            400,
            json!({"status": "error", "message": "inputs must hold 1 to 100 ids", "category": "VALIDATION_ERROR"}),
        );
    }
    let requested = requested_properties(&request).unwrap_or_default();
    let by_email = request["idProperty"].as_str() == Some("email");
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for input in &inputs {
        let id = input["id"].as_str().unwrap_or("");
        match records(state, kind).iter().find(|c| {
            !c.archived
                && if by_email {
                    c.properties
                        .get("email")
                        .cloned()
                        .flatten()
                        .is_some_and(|e| e.eq_ignore_ascii_case(id))
                } else {
                    c.id.to_string() == id
                }
        }) {
            Some(c) => results.push(object(c, &requested)),
            None => missing.push(id.to_owned()),
        }
    }
    let mut answer = json!({"status": "COMPLETE", "results": results,
                            "startedAt": "2024-06-01T00:00:00.000Z", "completedAt": "2024-06-01T00:00:00.010Z"});
    if missing.is_empty() {
        (200, answer)
    } else {
        answer["numErrors"] = json!(1);
        answer["errors"] = json!([{"status": "error", "category": "OBJECT_NOT_FOUND",
                                   "message": "Could not get some CONTACT objects, they may be deleted or not exist.",
                                   "context": {"ids": missing}}]);
        (207, answer)
    }
}

/// `batch/create` and `batch/update` as documented: at most 100 inputs;
/// properties must exist; emails must look like emails and be unique. A
/// create whose every input carries an `objectWriteTraceId` answers 207 with
/// the failed inputs' errors and creates the rest (multi-status); otherwise,
/// and for updates, one invalid input refuses the whole batch (400/409).
fn batch_write(state: &mut State, kind: &str, body: &str, create: bool) -> (u16, Value) {
    let Ok(request) = serde_json::from_str::<Value>(body) else {
        return validation_error("Invalid input JSON on line 1");
    };
    let inputs = request["inputs"].as_array().cloned().unwrap_or_default();
    if inputs.is_empty() || inputs.len() > 100 {
        return validation_error("inputs must hold 1 to 100 records");
    }
    let traced = inputs
        .iter()
        .all(|i| i["objectWriteTraceId"].as_str().is_some());
    let standard = if kind == "companies" {
        STANDARD_COMPANY_PROPERTIES
    } else {
        STANDARD_PROPERTIES
    };
    let known: Vec<String> = standard
        .iter()
        .map(|p| (*p).to_owned())
        .chain(state.custom_properties.iter().map(|(p, _)| p.clone()))
        .filter(|p| !state.deleted_properties.contains(p))
        .collect();
    let mut problems: Vec<Option<(u16, Value)>> = Vec::new();
    for (index, input) in inputs.iter().enumerate() {
        let id = input["id"].as_str().and_then(|id| id.parse::<u64>().ok());
        let properties = input["properties"].as_object().cloned().unwrap_or_default();
        let mut problem = None;
        if !create
            && id.is_none_or(|id| {
                !records(state, kind)
                    .iter()
                    .any(|c| c.id == id && !c.archived)
            })
        {
            problem = Some((
                404,
                json!({"status": "error", "category": "OBJECT_NOT_FOUND",
                "message": format!("Object not found. objectId are usually numeric. Input {index}")}),
            ));
        }
        for (name, value) in &properties {
            if problem.is_some() {
                break;
            }
            if !known.contains(name) {
                problem = Some((
                    400,
                    json!({"status": "error", "category": "VALIDATION_ERROR",
                    "message": format!("Property values were not valid: [{{\"isValid\":false,\"message\":\"Property \\\"{name}\\\" does not exist\",\"error\":\"PROPERTY_DOESNT_EXIST\",\"name\":\"{name}\"}}]")}),
                ));
            } else if name == "email" {
                let email = value.as_str().unwrap_or("");
                // A contact's additional emails are as unique as its primary one.
                let holder = records(state, kind).iter().find(|c| {
                    Some(c.id) != id
                        && ["email", "hs_additional_emails"].iter().any(|p| {
                            c.properties.get(*p).cloned().flatten().is_some_and(|e| {
                                e.split(';').any(|e| e.trim().eq_ignore_ascii_case(email))
                            })
                        })
                });
                let taken = holder.is_some();
                let holder = holder.map_or(0, |c| c.id);
                if !email.is_empty() && !email.contains('@') {
                    problem = Some((
                        400,
                        json!({"status": "error", "category": "VALIDATION_ERROR",
                        "message": format!("Property values were not valid: [{{\"isValid\":false,\"message\":\"Email address {email} is invalid\",\"error\":\"INVALID_EMAIL\",\"name\":\"email\"}}]")}),
                    ));
                } else if taken && !email.is_empty() {
                    problem = Some((
                        409,
                        json!({"status": "error", "category": "CONFLICT",
                        "message": format!("Contact already exists. Existing ID: {holder}")}),
                    ));
                }
            }
        }
        problems.push(problem);
    }
    if !(create && traced)
        && let Some((status, body)) = problems.iter().flatten().next()
    {
        return (*status, body.clone());
    }
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for (input, problem) in inputs.iter().zip(problems) {
        if let Some((_, mut error)) = problem {
            error["context"] = json!({"objectWriteTraceId": [input["objectWriteTraceId"]]});
            errors.push(error);
            continue;
        }
        let now = state.tick();
        let properties = input["properties"].as_object().cloned().unwrap_or_default();
        let id = match input["id"].as_str().and_then(|id| id.parse::<u64>().ok()) {
            Some(id) => id,
            None => {
                let id = records(state, kind).iter().map(|c| c.id).max().unwrap_or(0) + 1;
                let contact = Contact::new(id, &[]).modified_at(now);
                if kind == "companies" {
                    state.companies.push(contact);
                } else {
                    state.contacts.push(contact);
                }
                id
            }
        };
        if kind == "contacts" {
            for association in input["associations"].as_array().into_iter().flatten() {
                if let Some(company) = association["to"]["id"]
                    .as_str()
                    .and_then(|c| c.parse::<u64>().ok())
                {
                    associate(state, id, company, primary_type(&association["types"]));
                }
            }
        }
        let record = records_mut(state, kind)
            .iter_mut()
            .find(|c| c.id == id)
            .expect("the record exists");
        for (name, value) in properties {
            let value = value
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            record
                .properties
                .insert(name, (!value.is_empty()).then_some(value));
        }
        record.modified = now;
        let written: Vec<String> = record.properties.keys().cloned().collect();
        results.push(object(record, &written));
    }
    state.writes += results.len();
    if !state.ordered_writes {
        state.write_order_seed = state.write_order_seed.wrapping_add(1);
        fastrand::Rng::with_seed(state.write_order_seed).shuffle(&mut results);
        fastrand::Rng::with_seed(state.write_order_seed).shuffle(&mut errors);
    }
    if state.bare_write_results {
        for result in &mut results {
            *result = json!({"id": result["id"]});
        }
    }
    let mut answer = json!({"status": "COMPLETE", "results": results,
                            "startedAt": "2024-06-01T00:00:00.000Z", "completedAt": "2024-06-01T00:00:00.010Z"});
    if errors.is_empty() {
        (if create { 201 } else { 200 }, answer)
    } else {
        answer["numErrors"] = json!(errors.len());
        answer["errors"] = json!(errors);
        (207, answer)
    }
}

fn records_mut<'a>(state: &'a mut State, kind: &str) -> &'a mut Vec<Contact> {
    if kind == "companies" {
        &mut state.companies
    } else {
        &mut state.contacts
    }
}

/// The `properties` array of a JSON request body, if it has one.
fn requested_properties(request: &Value) -> Option<Vec<String>> {
    request["properties"].as_array().map(|p| {
        p.iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    })
}

fn properties(state: &State, kind: &str) -> (u16, Value) {
    let names = if kind == "companies" {
        STANDARD_COMPANY_PROPERTIES
    } else {
        STANDARD_PROPERTIES
    };
    let standard = names.iter().map(|p| (*p, "string", true));
    let custom = state
        .custom_properties
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str(), false));
    let results: Vec<Value> = standard
        .chain(custom)
        .filter(|(p, _, _)| !state.deleted_properties.iter().any(|d| d == *p))
        .map(|(p, t, standard)| json!({"name": p, "label": p, "type": t, "fieldType": "text", "groupName": "contactinformation",
                        "options": [], "hidden": false, "hubspotDefined": standard}))
        .collect();
    (200, json!({ "results": results }))
}

/// Whether a form-encoded token request is the refresh-token grant for
/// `refresh_token`, with a client id and secret (HubSpot's and Salesforce's
/// token endpoints take the same form).
pub(crate) fn is_refresh_grant(body: &str, refresh_token: Option<&String>) -> bool {
    let form = parse_query(body);
    form.get("grant_type").map(String::as_str) == Some("refresh_token")
        && refresh_token.is_some()
        && form.get("refresh_token") == refresh_token
        && form.get("client_id").is_some_and(|v| !v.is_empty())
        && form.get("client_secret").is_some_and(|v| !v.is_empty())
}

fn token(state: &mut State, body: &str) -> (u16, Value) {
    if !is_refresh_grant(body, state.refresh_token.as_ref()) {
        return (
            400,
            json!({"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token",
                            "correlationId": "c-refresh"}),
        );
    }
    state.issued += 1;
    let access = format!("access-{}", state.issued);
    state.valid_tokens.push(access.clone());
    (
        200,
        json!({"token_type": "bearer", "refresh_token": state.refresh_token, "access_token": access,
                 "expires_in": state.expires_in}),
    )
}
