//! A loopback server speaking Salesforce's REST API as documented: SOQL
//! `query`/`queryAll` with `nextRecordsUrl` paging (query locators), `describe`,
//! and Salesforce's error array. It understands the SOQL shapes a client
//! sends for these objects (`SELECT f, … FROM Obj [WHERE c AND …] [ORDER BY …]`
//! with `=`, `>=`, `<=` and `IN (…)` conditions) and refuses unknown fields
//! with `INVALID_FIELD`, as Salesforce does.

use crate::hubspot_server::{decode, is_refresh_grant};
use crate::loopback::Loopback;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use tiny_http::{Header, Response};

/// The API version the server answers under.
pub const API_VERSION: &str = "v60.0";

/// A Lead or Contact the server holds.
#[derive(Debug, Clone)]
pub struct Record {
    pub id: String,
    /// Field values (JSON: strings, numbers, booleans, null).
    pub fields: BTreeMap<String, Value>,
    /// `SystemModstamp`, epoch ms.
    pub modstamp: u64,
    pub deleted: bool,
}

impl Record {
    /// A record with these fields, last modified at `modstamp`.
    pub fn new(id: &str, fields: &[(&str, Value)], modstamp: u64) -> Self {
        Record {
            id: id.to_owned(),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            modstamp,
            deleted: false,
        }
    }
}

/// The fields each object has besides [`COMMON`].
/// The system fields every object has.
const COMMON: [&str; 4] = ["Id", "SystemModstamp", "LastModifiedDate", "IsDeleted"];

fn fields_of(object: &str) -> &'static [&'static str] {
    match object {
        "Lead" => &[
            "FirstName",
            "LastName",
            "Email",
            "Phone",
            "MobilePhone",
            "Title",
            "Company",
            "Status",
            "IsConverted",
            "ConvertedContactId",
            "ConvertedAccountId",
            "OwnerId",
        ],
        "Contact" => &[
            "FirstName",
            "LastName",
            "Email",
            "Phone",
            "MobilePhone",
            "Title",
            "AccountId",
            "OwnerId",
        ],
        "Account" => &["Name", "Website", "Industry", "Phone", "OwnerId"],
        "User" => &["Email", "IsActive", "Name"],
        _ => &[],
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub body: String,
    pub path: String,
    /// The SOQL statement of a query, decoded.
    pub soql: Option<String>,
    pub authorization: Option<String>,
}

/// The server's state.
#[derive(Debug, Default)]
pub struct State {
    /// Fields field-level security hides from the integration user, on every
    /// object: left out of `describe` and refused in queries (`INVALID_FIELD`).
    pub hidden_fields: Vec<String>,
    /// `describe` lists the hidden fields anyway, so only the query says so.
    pub describe_shows_hidden: bool,
    pub leads: Vec<Record>,
    pub contacts: Vec<Record>,
    pub accounts: Vec<Record>,
    /// Users, who own records (`OwnerId`).
    pub users: Vec<Record>,
    /// Records per query page (Salesforce's default batch is 2,000).
    pub batch_size: usize,
    pub valid_tokens: Vec<String>,
    /// The refresh token `/services/oauth2/token` accepts.
    pub refresh_token: Option<String>,
    /// Issued sessions expire after this many API requests.
    pub requests_per_session: Option<usize>,
    session_uses: HashMap<String, usize>,
    /// Records created or updated through sObject Collections.
    pub writes: usize,
    clock: u64,
    next_id: u64,
    /// Sessions issued so far.
    pub issued: usize,
    pub seen: Vec<Seen>,
    /// Open query locators: the remaining records of a query, by locator id.
    locators: HashMap<String, Vec<Value>>,
    next_locator: u64,
}

impl State {
    /// Ends every open query locator, as 15 minutes of inactivity do.
    pub fn expire_locators(&mut self) {
        self.locators.clear();
    }

    fn records(&self, object: &str) -> &[Record] {
        match object {
            "Lead" => &self.leads,
            "Account" => &self.accounts,
            "User" => &self.users,
            _ => &self.contacts,
        }
    }

    fn records_mut(&mut self, object: &str) -> &mut Vec<Record> {
        match object {
            "Lead" => &mut self.leads,
            "Account" => &mut self.accounts,
            "User" => &mut self.users,
            _ => &mut self.contacts,
        }
    }

    /// The org's clock for a save: now, and always after the last save.
    pub fn tick(&mut self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_millis() as u64;
        self.clock = now.max(self.clock + 1);
        self.clock
    }

    /// A new record id with the object's key prefix (`00Q` Leads, `003`
    /// Contacts, `001` Accounts).
    fn new_id(&mut self, object: &str) -> String {
        self.next_id += 1;
        let prefix = match object {
            "Lead" => "00Q",
            "Account" => "001",
            _ => "003",
        };
        format!("{prefix}Sv{:010}AAA", self.next_id)
    }

    /// Converts a Lead as Salesforce's convert action does: a new Contact
    /// with the Lead's person fields, the Lead marked converted into it.
    /// Returns the Contact's id.
    pub fn convert_lead(&mut self, lead_id: &str) -> String {
        let now = self.tick();
        let contact_id = self.new_id("Contact");
        let lead = self
            .leads
            .iter_mut()
            .find(|l| l.id == lead_id)
            .expect("a known lead");
        let mut fields = BTreeMap::new();
        for field in fields_of("Contact") {
            if let Some(value) = lead.fields.get(*field) {
                fields.insert((*field).to_owned(), value.clone());
            }
        }
        lead.fields.insert("IsConverted".into(), json!(true));
        lead.fields
            .insert("ConvertedContactId".into(), json!(contact_id));
        lead.modstamp = now;
        self.contacts.push(Record {
            id: contact_id.clone(),
            fields,
            modstamp: now,
            deleted: false,
        });
        contact_id
    }

    /// The Lead or Contact holding `email`, if any.
    pub fn person_by_email(&self, email: &str) -> Option<&Record> {
        self.leads
            .iter()
            .filter(|l| l.fields.get("IsConverted") != Some(&json!(true)))
            .chain(&self.contacts)
            .find(|r| {
                r.fields
                    .get("Email")
                    .and_then(Value::as_str)
                    .is_some_and(|e| e.eq_ignore_ascii_case(email))
            })
    }

    /// Sets a record's fields and bumps its `SystemModstamp`, as an edit does.
    pub fn edit(&mut self, object: &str, id: &str, fields: &[(&str, Value)], modstamp: u64) {
        let record = self
            .records_mut(object)
            .iter_mut()
            .find(|r| r.id == id)
            .expect("a known record");
        for (k, v) in fields {
            record.fields.insert((*k).to_owned(), v.clone());
        }
        record.modstamp = modstamp;
    }
}

/// A running server; stops when dropped.
pub struct SalesforceServer {
    pub instance_url: String,
    loopback: Loopback<State>,
}

impl SalesforceServer {
    /// Starts a server accepting the bearer token `token`.
    pub fn start(token: &str) -> Self {
        let state = State {
            valid_tokens: vec![token.to_owned()],
            batch_size: 2000,
            ..State::default()
        };
        let loopback = Loopback::start(state, handle);
        SalesforceServer {
            instance_url: loopback.base_url.clone(),
            loopback,
        }
    }

    /// The server's state, to arrange or inspect.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.loopback.state()
    }

    /// The SOQL statements received so far, in order.
    pub fn queries(&self) -> Vec<String> {
        self.state()
            .seen
            .iter()
            .filter_map(|s| s.soql.clone())
            .collect()
    }
}

fn handle(state: &Mutex<State>, mut request: tiny_http::Request) {
    let mut body = String::new();
    let _ = request.as_reader().read_to_string(&mut body);
    let url = request.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let soql = query
        .split('&')
        .find_map(|p| p.strip_prefix("q="))
        .map(decode);
    let method = request.method().as_str().to_owned();
    let authorization = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str().to_owned());
    let (status, answer) = {
        let mut state = state.lock().expect("server state");
        state.seen.push(Seen {
            method: method.clone(),
            body: body.clone(),
            path: path.to_owned(),
            soql: soql.clone(),
            authorization: authorization.clone(),
        });
        let token = authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or("")
            .to_owned();
        if let Some(limit) = state.requests_per_session {
            let uses = state.session_uses.entry(token.clone()).or_insert(0);
            *uses += 1;
            if *uses > limit {
                state.valid_tokens.retain(|t| *t != token);
            }
        }
        if path == "/services/oauth2/token" {
            oauth_token(&mut state, &body)
        } else if !state.valid_tokens.contains(&token) {
            (
                401,
                json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]),
            )
        } else if path == format!("/services/data/{API_VERSION}/composite/sobjects") {
            match method.as_str() {
                "POST" => save(&mut state, &body, true),
                "PATCH" => save(&mut state, &body, false),
                _ => not_found(path),
            }
        } else {
            route(&mut state, path, soql.as_deref())
        }
    };
    let response = Response::from_string(answer.to_string())
        .with_status_code(status)
        .with_header(
            Header::from_bytes("Content-Type", "application/json;charset=UTF-8").expect("header"),
        );
    let _ = request.respond(response);
}

/// The refresh-token grant, answered as Salesforce does: a new session and
/// the instance URL, with neither `expires_in` nor a new refresh token.
fn oauth_token(state: &mut State, body: &str) -> (u16, Value) {
    if !is_refresh_grant(body, state.refresh_token.as_ref()) {
        return (
            400,
            json!({"error": "invalid_grant", "error_description": "expired access/refresh token"}),
        );
    }
    state.issued += 1;
    let session = format!("00Dsession!{}", state.issued);
    state.valid_tokens.push(session.clone());
    (
        200,
        json!({"access_token": session, "instance_url": "http://127.0.0.1", "id": "https://login.salesforce.com/id/00D/005",
               "token_type": "Bearer", "issued_at": "1717200000000", "signature": "c2lnbmF0dXJl"}),
    )
}

fn route(state: &mut State, path: &str, soql: Option<&str>) -> (u16, Value) {
    let prefix = format!("/services/data/{API_VERSION}/");
    let Some(rest) = path.strip_prefix(&prefix) else {
        return not_found(path);
    };
    let segments: Vec<&str> = rest.split('/').collect();
    match segments.as_slice() {
        ["query"] | ["queryAll"] => match soql {
            Some(soql) => query(state, soql, segments[0] == "queryAll"),
            None => malformed("a query needs q"),
        },
        // A locator's batch can be fetched again while the locator lives (a
        // client retrying a page does); `expire_locators` ends them all.
        ["query", locator] => match state.locators.get(*locator).cloned() {
            Some(rest) => page(state, rest),
            None => (
                400,
                json!([{"message": "invalid query locator", "errorCode": "INVALID_QUERY_LOCATOR"}]),
            ),
        },
        ["sobjects", object, "describe"] if !fields_of(object).is_empty() => {
            let fields: Vec<Value> = COMMON
                .iter()
                .chain(fields_of(object))
                .filter(|f| state.describe_shows_hidden || !state.hidden_fields.iter().any(|h| h == *f))
                .map(|f| json!({"name": f, "label": f, "type": if *f == "Status" { "picklist" } else { "string" },
                                "picklistValues": if *f == "Status" { json!([{"value": "Open - Not Contacted", "active": true}, {"value": "Working - Contacted", "active": true}]) } else { json!([]) }}))
                .collect();
            (200, json!({"name": object, "fields": fields}))
        }
        _ => not_found(path),
    }
}

fn not_found(path: &str) -> (u16, Value) {
    (
        404,
        json!([{"message": format!("The requested resource does not exist: {path}"), "errorCode": "NOT_FOUND"}]),
    )
}

fn malformed(message: &str) -> (u16, Value) {
    (
        400,
        json!([{"message": message, "errorCode": "MALFORMED_QUERY"}]),
    )
}

/// Runs a statement of the shapes the client sends.
fn query(state: &mut State, soql: &str, all: bool) -> (u16, Value) {
    let Some((select, rest)) = soql
        .strip_prefix("SELECT ")
        .and_then(|s| s.split_once(" FROM "))
    else {
        return malformed("expected SELECT … FROM …");
    };
    let (rest, order) = match rest.split_once(" ORDER BY ") {
        Some((rest, order)) => (rest, Some(order)),
        None => (rest, None),
    };
    let (object, conditions) = match rest.split_once(" WHERE ") {
        Some((object, conditions)) => (object.trim(), conditions.split(" AND ").collect()),
        None => (rest.trim(), Vec::new()),
    };
    if fields_of(object).is_empty() {
        return (
            400,
            json!([{"message": format!("sObject type '{object}' is not supported."), "errorCode": "INVALID_TYPE"}]),
        );
    }
    let fields: Vec<&str> = select.split(',').map(str::trim).collect();
    for field in &fields {
        let visible = !state.hidden_fields.iter().any(|h| h == field);
        if !visible || (!COMMON.contains(field) && !fields_of(object).contains(field)) {
            return (
                400,
                json!([{"message": format!("\n{soql}\nERROR at Row:1:Column:8\nNo such column '{field}' on entity '{object}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name."),
                        "errorCode": "INVALID_FIELD"}]),
            );
        }
    }
    let mut hits: Vec<&Record> = state
        .records(object)
        .iter()
        .filter(|r| all || !r.deleted)
        .filter(|r| conditions.iter().all(|c| holds(r, c)))
        .collect();
    if order.is_some_and(|o| o.starts_with("SystemModstamp")) {
        hits.sort_by(|a, b| (a.modstamp, &a.id).cmp(&(b.modstamp, &b.id)));
    } else {
        hits.sort_by(|a, b| a.id.cmp(&b.id));
    }
    let rows: Vec<Value> = hits
        .iter()
        .map(|r| {
            let mut row = serde_json::Map::new();
            row.insert(
                "attributes".into(),
                json!({"type": object, "url": format!("/services/data/{API_VERSION}/sobjects/{object}/{}", r.id)}),
            );
            for field in &fields {
                let value = match *field {
                    "Id" => json!(r.id),
                    // Edits are the only changes here, so both times agree.
                    "SystemModstamp" | "LastModifiedDate" => json!(stamp(r.modstamp)),
                    "IsDeleted" => json!(r.deleted),
                    other => r.fields.get(other).cloned().unwrap_or(Value::Null),
                };
                row.insert((*field).to_owned(), value);
            }
            Value::Object(row)
        })
        .collect();
    page(state, rows)
}

/// The first `batch_size` rows; the rest behind a query locator.
fn page(state: &mut State, mut rows: Vec<Value>) -> (u16, Value) {
    let total = rows.len();
    let rest = if rows.len() > state.batch_size {
        rows.split_off(state.batch_size)
    } else {
        Vec::new()
    };
    let mut answer = json!({"totalSize": total, "done": rest.is_empty(), "records": rows});
    if !rest.is_empty() {
        state.next_locator += 1;
        let locator = format!(
            "01gD0000002HU6K{:04}-{}",
            state.next_locator, state.batch_size
        );
        answer["nextRecordsUrl"] = json!(format!("/services/data/{API_VERSION}/query/{locator}"));
        state.locators.insert(locator, rest);
    }
    (200, answer)
}

/// sObject Collections create (`POST`) or update (`PATCH`) with
/// `allOrNone` false: one save result per record, in order. Leads need
/// `LastName` and `Company`, Contacts `LastName`; unknown fields and
/// malformed emails are refused per record, as Salesforce does.
fn save(state: &mut State, body: &str, create: bool) -> (u16, Value) {
    let Ok(request) = serde_json::from_str::<Value>(body) else {
        return (
            400,
            json!([{"message": "JSON parser error", "errorCode": "JSON_PARSER_ERROR"}]),
        );
    };
    let records = request["records"].as_array().cloned().unwrap_or_default();
    if records.is_empty() || records.len() > 200 {
        return (
            400,
            json!([{"message": "a collection holds 1 to 200 records", "errorCode": "INVALID_FIELD"}]),
        );
    }
    let mut results = Vec::new();
    for record in records {
        let object = record["attributes"]["type"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let fields: BTreeMap<String, Value> = record
            .as_object()
            .into_iter()
            .flatten()
            // Field names are case-insensitive: the reference writes `id`.
            .filter(|(k, _)| *k != "attributes" && !k.eq_ignore_ascii_case("id"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let failure = |code: &str, message: String, fields: Vec<&str>| json!({"success": false, "errors": [{"statusCode": code, "message": message, "fields": fields}]});
        if fields_of(&object).is_empty() {
            results.push(failure(
                "INVALID_TYPE",
                format!("sObject type '{object}' is not supported."),
                vec![],
            ));
            continue;
        }
        if let Some(unknown) = fields
            .keys()
            .find(|f| !fields_of(&object).contains(&f.as_str()))
        {
            results.push(failure(
                "INVALID_FIELD",
                format!("No such column '{unknown}' on sobject of type {object}"),
                vec![],
            ));
            continue;
        }
        if let Some(email) = fields.get("Email").and_then(Value::as_str)
            && !email.contains('@')
        {
            results.push(failure(
                "INVALID_EMAIL_ADDRESS",
                format!("Email: invalid email address: {email}"),
                vec!["Email"],
            ));
            continue;
        }
        let existing = record["id"]
            .as_str()
            .or_else(|| record["Id"].as_str())
            .map(str::to_owned);
        let mut merged = match &existing {
            Some(id) => match state
                .records(&object)
                .iter()
                .find(|r| &r.id == id && !r.deleted)
            {
                Some(r) => r.fields.clone(),
                None => {
                    results.push(failure(
                        "ENTITY_IS_DELETED",
                        "entity is deleted".into(),
                        vec![],
                    ));
                    continue;
                }
            },
            None if !create => {
                results.push(failure(
                    "MISSING_ARGUMENT",
                    "Id not specified in an update call".into(),
                    vec![],
                ));
                continue;
            }
            None => BTreeMap::new(),
        };
        merged.extend(fields);
        let required: &[&str] = match object.as_str() {
            "Lead" => &["LastName", "Company"],
            "Contact" => &["LastName"],
            _ => &["Name"],
        };
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|f| merged.get(*f).is_none_or(|v| v.is_null() || v == ""))
            .collect();
        if !missing.is_empty() {
            results.push(failure(
                "REQUIRED_FIELD_MISSING",
                format!("Required fields are missing: [{}]", missing.join(", ")),
                missing,
            ));
            continue;
        }
        let now = state.tick();
        let id = match existing {
            Some(id) => id,
            None => {
                let id = state.new_id(&object);
                state.records_mut(&object).push(Record {
                    id: id.clone(),
                    fields: BTreeMap::new(),
                    modstamp: now,
                    deleted: false,
                });
                id
            }
        };
        let saved = state
            .records_mut(&object)
            .iter_mut()
            .find(|r| r.id == id)
            .expect("the record exists");
        merged.retain(|_, v| !v.is_null());
        if object == "Lead" {
            merged.entry("IsConverted".into()).or_insert(json!(false));
        }
        saved.fields = merged;
        saved.modstamp = now;
        state.writes += 1;
        results.push(json!({"id": id, "success": true, "errors": []}));
    }
    (200, Value::Array(results))
}

/// One `Field op value` condition.
fn holds(record: &Record, condition: &str) -> bool {
    let condition = condition.trim();
    if let Some(group) = condition
        .strip_prefix('(')
        .and_then(|c| c.strip_suffix(')'))
    {
        return group.split(" OR ").any(|c| holds(record, c));
    }
    if let Some((field, pattern)) = condition.split_once(" LIKE ") {
        // `%` at either end only, and case-insensitive, as SOQL's LIKE is.
        let pattern = pattern.trim().trim_matches('\'').to_lowercase();
        let needle = pattern.trim_matches('%');
        return value(record, field.trim()).is_some_and(|v| {
            let v = v.to_lowercase();
            match (pattern.starts_with('%'), pattern.ends_with('%')) {
                (true, true) => v.contains(needle),
                (true, false) => v.ends_with(needle),
                (false, true) => v.starts_with(needle),
                (false, false) => v == needle,
            }
        });
    }
    if let Some((field, list)) = condition.split_once(" IN (") {
        let wanted: Vec<String> = list
            .trim_end_matches(')')
            .split(',')
            .map(|v| v.trim().trim_matches('\'').to_owned())
            .collect();
        // Email comparisons ignore case in SOQL.
        return value(record, field.trim()).is_some_and(|v| {
            wanted
                .iter()
                .any(|w| w == &v || (field.trim() == "Email" && w.eq_ignore_ascii_case(&v)))
        });
    }
    for op in [">=", "<=", "="] {
        if let Some((field, literal)) = condition.split_once(&format!(" {op} ")) {
            let field = field.trim();
            let literal = literal.trim().trim_matches('\'');
            if field == "SystemModstamp" {
                let Some(at) = chrono::DateTime::parse_from_rfc3339(literal).ok() else {
                    return false;
                };
                let at = at.timestamp_millis() as u64;
                return match op {
                    ">=" => record.modstamp >= at,
                    "<=" => record.modstamp <= at,
                    _ => record.modstamp == at,
                };
            }
            let actual = value(record, field);
            return match literal {
                "true" | "false" => actual.as_deref().unwrap_or("false") == literal,
                _ => actual.as_deref() == Some(literal),
            };
        }
    }
    false
}

fn value(record: &Record, field: &str) -> Option<String> {
    match field {
        "Id" => Some(record.id.clone()),
        "IsDeleted" => Some(record.deleted.to_string()),
        other => match record.fields.get(other)? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            v => Some(v.to_string()),
        },
    }
}

/// Salesforce's time format: milliseconds and a `+0000` offset.
pub fn stamp(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .expect("a representable time")
        .format("%Y-%m-%dT%H:%M:%S%.3f%z")
        .to_string()
}
