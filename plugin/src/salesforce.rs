//! Salesforce as a source (S1, X8): Leads and Contacts through the REST query
//! API (`GET /services/data/vXX.X/query?q=SOQL`, then `nextRecordsUrl` until
//! `done`), read tolerantly (nulls, unknown fields, nested objects).

use crate::errors;
use crate::transport::{self, HttpRequest, Method, Transport, encode_component, parse_json};
use crate::types::{
    Owner, Page, Property, PropertyDefinition, SalesforceObject, SalesforceScope, SalesforceSource,
    SourceRecord, SyncError,
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The property every person read gains: `lead` or `contact` (X8).
pub const RECORD_TYPE: &str = "record_type";
/// The property a Lead's `Status` is read into.
pub const LEAD_STATUS: &str = "lead_status";
/// Fields only Leads have: never selected from Contacts.
pub(crate) const LEAD_ONLY: &[&str] = &[
    "Status",
    "Company",
    "IsConverted",
    "ConvertedContactId",
    "ConvertedAccountId",
    "ConvertedDate",
];
/// Fields only Contacts have: never selected from Leads.
pub(crate) const CONTACT_ONLY: &[&str] = &["AccountId", "ReportsToId", "Department", "Birthdate"];
/// Converted-lead lookups per query: SOQL statements stay far below 100,000
/// characters.
const IDS_PER_LOOKUP: usize = 500;

/// Where a read stands: which object, and the next page of its query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    object: usize,
    /// The query's `nextRecordsUrl`; `None` starts the object's query.
    next: Option<String>,
}

fn object_name(object: SalesforceObject) -> &'static str {
    match object {
        SalesforceObject::Lead => "Lead",
        SalesforceObject::Contact => "Contact",
        SalesforceObject::Account => "Account",
    }
}

/// Fields a person read adds, and fields of the other person object it must
/// not select; nothing for Accounts, whose fields are their own mapping's.
fn person_fields(object: SalesforceObject) -> (&'static [&'static str], &'static [&'static str]) {
    match object {
        SalesforceObject::Lead => (
            &[
                "Status",
                "IsConverted",
                "ConvertedContactId",
                "ConvertedAccountId",
            ],
            CONTACT_ONLY,
        ),
        SalesforceObject::Contact => (&["AccountId"], LEAD_ONLY),
        SalesforceObject::Account => (&[], &[]),
    }
}

/// Reads one page of `source` at `cursor`.
pub fn fetch_page(
    transport: &mut impl Transport,
    source: &SalesforceSource,
    cursor: Option<&str>,
) -> Result<Page, SyncError> {
    let position = match cursor {
        None => Cursor {
            object: 0,
            next: None,
        },
        Some(text) => serde_json::from_str(text).map_err(|e| {
            errors::invalid_response(&format!(
                "the Salesforce cursor is not one this component wrote ({e})"
            ))
        })?,
    };
    let Some(&object) = source.objects.get(position.object) else {
        return Ok(Page {
            records: Vec::new(),
            excluded: Vec::new(),
            next_cursor: None,
        });
    };
    let first_page = || {
        query_request(
            source,
            &soql(source, object),
            source.scope == SalesforceScope::Deleted,
        )
    };
    let body = match &position.next {
        None => send(transport, &first_page())?,
        Some(next) => {
            match send_to_locator(transport, &next_request(source, next))? {
                Some(body) => body,
                // A query locator lives about 15 minutes: a run resumed later
                // reads the object again from its start (re-applying a record
                // changes nothing), rather than failing on the same cursor forever.
                None => send(transport, &first_page())?,
            }
        }
    };
    let (mut records, next) = parse_query_page(&body, object)?;
    // The next batch of the query overlaps this one's lead look-ups and
    // everything the host does with the page (see `Transport::send_ahead`).
    if let Some(url) = &next {
        transport.send_ahead(&next_request(source, url));
    }
    if object == SalesforceObject::Contact && source.scope != SalesforceScope::Deleted {
        add_converted_leads(transport, source, &mut records)?;
    }
    let next_cursor = match next {
        Some(url) => Some(Cursor {
            object: position.object,
            next: Some(url),
        }),
        None if position.object + 1 < source.objects.len() => Some(Cursor {
            object: position.object + 1,
            next: None,
        }),
        None => None,
    };
    Ok(Page {
        records,
        excluded: Vec::new(),
        next_cursor: next_cursor.map(|c| serde_json::to_string(&c).expect("a cursor serialises")),
    })
}

/// `GET /services/data/{v}/query?q=...` (`queryAll` for deleted records).
pub fn query_request(source: &SalesforceSource, soql: &str, all: bool) -> HttpRequest {
    HttpRequest {
        method: Method::Get,
        url: format!(
            "{}/services/data/{}/{}?q={}",
            base(source),
            source.api_version,
            if all { "queryAll" } else { "query" },
            encode_component(soql)
        ),
        body: None,
    }
}

/// `GET {instance}{nextRecordsUrl}`: the next page of a query.
fn next_request(source: &SalesforceSource, next: &str) -> HttpRequest {
    HttpRequest {
        method: Method::Get,
        url: format!("{}{next}", base(source)),
        body: None,
    }
}

/// The SOQL statement reading `object` for `source`'s scope.
pub fn soql(source: &SalesforceSource, object: SalesforceObject) -> String {
    let name = object_name(object);
    // `SystemModstamp` windows incremental reads (it also moves on system
    // changes, so nothing is missed); `LastModifiedDate` is the user's edit
    // time, read when the stamp is absent.
    let mut fields: Vec<&str> = vec!["Id", "SystemModstamp", "LastModifiedDate", "IsDeleted"];
    if source.scope == SalesforceScope::Deleted {
        return format!("SELECT Id FROM {name} WHERE IsDeleted = true ORDER BY Id");
    }
    let (extra, excluded) = person_fields(object);
    for field in source
        .fields
        .iter()
        .map(String::as_str)
        .filter(|f| !excluded.contains(f) && *f != RECORD_TYPE && *f != LEAD_STATUS)
        .chain(extra.iter().copied())
    {
        if !fields.iter().any(|f| f.eq_ignore_ascii_case(field)) {
            fields.push(field);
        }
    }
    let mut conditions: Vec<String> = Vec::new();
    if object == SalesforceObject::Lead {
        // A converted Lead lives on as its Contact (X8).
        conditions.push("IsConverted = false".into());
    }
    if let SalesforceScope::Emails(emails) = &source.scope {
        let list = emails
            .iter()
            .map(|e| format!("'{}'", escape(e)))
            .collect::<Vec<_>>()
            .join(", ");
        // `IN ()` is no SOQL: an empty list matches an impossible id instead.
        conditions.push(if list.is_empty() {
            "Id = null".into()
        } else {
            format!("Email IN ({list})")
        });
    }
    if let SalesforceScope::Domains(domains) = &source.scope {
        // `Website` is free text (`https://www.acme.com/about`): a substring
        // finds every spelling, and the caller keeps exact domain matches.
        let like = domains
            .iter()
            .map(|d| format!("Website LIKE '%{}%'", escape(&d.to_lowercase())))
            .collect::<Vec<_>>()
            .join(" OR ");
        conditions.push(if like.is_empty() {
            "Id = null".into()
        } else {
            format!("({like})")
        });
    }
    if let SalesforceScope::Modified(window) = &source.scope {
        conditions.push(format!(
            "SystemModstamp >= {}",
            literal(window.since, false)
        ));
        conditions.push(format!("SystemModstamp <= {}", literal(window.until, true)));
    }
    let mut statement = format!("SELECT {} FROM {name}", fields.join(", "));
    if !conditions.is_empty() {
        statement.push_str(" WHERE ");
        statement.push_str(&conditions.join(" AND "));
    }
    statement.push_str(" ORDER BY SystemModstamp ASC, Id ASC");
    statement
}

/// A SOQL dateTime literal at whole seconds, rounded outwards so the window
/// only grows (`2024-06-01T12:00:00Z`).
fn literal(ms: u64, up: bool) -> String {
    let seconds = ms / 1000 + u64::from(up && !ms.is_multiple_of(1000));
    DateTime::<Utc>::from_timestamp(i64::try_from(seconds).unwrap_or(i64::MAX), 0)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The Leads converted into these Contacts become the Contacts' `merged-ids`
/// (X8): the destination contact made from a Lead is relinked, never doubled.
fn add_converted_leads(
    transport: &mut impl Transport,
    source: &SalesforceSource,
    records: &mut [SourceRecord],
) -> Result<(), SyncError> {
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    for chunk in ids.chunks(IDS_PER_LOOKUP) {
        let list = chunk
            .iter()
            .map(|id| format!("'{}'", escape(id)))
            .collect::<Vec<_>>()
            .join(", ");
        let statement = format!(
            "SELECT Id, ConvertedContactId FROM Lead WHERE IsConverted = true AND ConvertedContactId IN ({list}) ORDER BY Id"
        );
        for lead in query_whole(transport, source, &statement)? {
            let (Some(lead_id), Some(contact)) =
                (text(lead.get("Id")), text(lead.get("ConvertedContactId")))
            else {
                continue;
            };
            if let Some(record) = records.iter_mut().find(|r| r.id == contact)
                && !record.merged_ids.contains(&lead_id)
            {
                record.merged_ids.push(lead_id);
            }
        }
    }
    Ok(())
}

/// Every row of a small query (a look-up, not a sync's read), following
/// `nextRecordsUrl` until `done`.
fn query_whole(
    transport: &mut impl Transport,
    source: &SalesforceSource,
    statement: &str,
) -> Result<Vec<serde_json::Map<String, Value>>, SyncError> {
    let mut rows = Vec::new();
    let mut request = query_request(source, statement, false);
    loop {
        let body = send(transport, &request)?;
        let page: QueryPage = parse_json(&body, "Salesforce query answer")?;
        rows.extend(page.records.unwrap_or_default());
        match page.next_records_url.filter(|_| page.done != Some(true)) {
            Some(next) => request = next_request(source, &next),
            None => return Ok(rows),
        }
    }
}

/// Every active User, who can own records: one query, paged by
/// `nextRecordsUrl`.
pub fn list_owners(
    transport: &mut impl Transport,
    source: &SalesforceSource,
) -> Result<Vec<Owner>, SyncError> {
    let users = query_whole(
        transport,
        source,
        "SELECT Id, Email FROM User WHERE IsActive = true ORDER BY Id",
    )?;
    Ok(users
        .iter()
        .filter_map(|user| {
            Some(Owner {
                id: text(user.get("Id"))?,
                email: text(user.get("Email")).map(|e| e.trim().to_lowercase()),
            })
        })
        .collect())
}

/// Escapes a SOQL string literal's quote and backslash.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\'', "\\'")
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryPage {
    #[serde(default)]
    done: Option<bool>,
    #[serde(default)]
    next_records_url: Option<String>,
    #[serde(default)]
    records: Option<Vec<serde_json::Map<String, Value>>>,
}

/// Reads a `QueryResult` page of `object`: its records, and the next page's
/// URL unless `done`.
pub fn parse_query_page(
    body: &[u8],
    object: SalesforceObject,
) -> Result<(Vec<SourceRecord>, Option<String>), SyncError> {
    let page: QueryPage = parse_json(body, "Salesforce query answer")?;
    let mut records = Vec::new();
    for (index, fields) in page.records.unwrap_or_default().into_iter().enumerate() {
        let Some(id) = text(fields.get("Id")) else {
            return Err(errors::invalid_response(&format!(
                "Salesforce record #{index} has no Id"
            )));
        };
        let modified_at = text(fields.get("SystemModstamp"))
            .or_else(|| text(fields.get("LastModifiedDate")))
            .and_then(|t| salesforce_millis(&t));
        let company_ids = match object {
            SalesforceObject::Account => Vec::new(),
            _ => text(fields.get("AccountId")).into_iter().collect(),
        };
        let mut properties: Vec<Property> = fields
            .iter()
            .filter(|(name, _)| *name != "attributes")
            .map(|(name, value)| Property {
                name: name.clone(),
                value: text(Some(value)),
            })
            .collect();
        let person = match object {
            SalesforceObject::Lead => Some(("lead", text(fields.get("Status")))),
            SalesforceObject::Contact => Some(("contact", None)),
            SalesforceObject::Account => None,
        };
        if let Some((record_type, status)) = person {
            properties.push(Property {
                name: RECORD_TYPE.into(),
                value: Some(record_type.into()),
            });
            properties.push(Property {
                name: LEAD_STATUS.into(),
                value: status,
            });
        }
        records.push(SourceRecord {
            id,
            properties,
            modified_at,
            merged_ids: Vec::new(),
            company_ids,
        });
    }
    let next = page.next_records_url.filter(|_| page.done != Some(true));
    Ok((records, next))
}

/// A JSON value as property text: strings as they are, numbers and booleans
/// spelled out, nested objects as JSON; null and empty strings are no value.
fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Salesforce times: `2024-06-01T12:00:00.000+0000` (no colon in the
/// offset), or RFC 3339.
pub fn salesforce_millis(text: &str) -> Option<u64> {
    let time = DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(text))
        .ok()?;
    u64::try_from(time.timestamp_millis()).ok()
}

/// The fields every listed object has (`GET /services/data/{v}/sobjects/{Object}/describe`),
/// plus the two every person read gains.
pub fn list_properties(
    transport: &mut impl Transport,
    source: &SalesforceSource,
) -> Result<Vec<PropertyDefinition>, SyncError> {
    let mut common: Option<Vec<PropertyDefinition>> = None;
    for object in &source.objects {
        let request = HttpRequest {
            method: Method::Get,
            url: format!(
                "{}/services/data/{}/sobjects/{}/describe",
                base(source),
                source.api_version,
                object_name(*object)
            ),
            body: None,
        };
        let body = send(transport, &request)?;
        let fields = parse_describe(&body)?;
        common = Some(match common {
            None => fields,
            Some(known) => known
                .into_iter()
                .filter(|d| fields.iter().any(|f| f.name == d.name))
                .collect(),
        });
    }
    let mut fields = common.unwrap_or_default();
    let people = source
        .objects
        .iter()
        .any(|o| *o != SalesforceObject::Account);
    for (name, label) in [(RECORD_TYPE, "Record type"), (LEAD_STATUS, "Lead status")]
        .into_iter()
        .filter(|_| people)
    {
        fields.push(PropertyDefinition {
            name: name.into(),
            label: label.into(),
            value_type: "string".into(),
            options: Vec::new(),
        });
    }
    Ok(fields)
}

#[derive(Deserialize)]
struct Describe {
    #[serde(default)]
    fields: Option<Vec<Value>>,
}

/// Reads a `describe` answer's `fields`: name, label, type, picklist values.
pub fn parse_describe(body: &[u8]) -> Result<Vec<PropertyDefinition>, SyncError> {
    let describe: Describe = parse_json(body, "Salesforce describe answer")?;
    Ok(describe
        .fields
        .unwrap_or_default()
        .iter()
        .filter_map(|f| {
            let name = f.get("name")?.as_str()?.to_owned();
            let options = f
                .get("picklistValues")
                .and_then(Value::as_array)
                .map(|values| {
                    values
                        .iter()
                        .filter(|v| v.get("active").and_then(Value::as_bool) != Some(false))
                        .filter_map(|v| v.get("value")?.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            Some(PropertyDefinition {
                label: f
                    .get("label")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                value_type: f
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                name,
                options,
            })
        })
        .collect())
}

fn base(source: &SalesforceSource) -> &str {
    source.instance_url.trim_end_matches('/')
}

/// [`send`] for a `nextRecordsUrl`: `None` when Salesforce says the query
/// locator expired (`INVALID_QUERY_LOCATOR`).
fn send_to_locator(
    transport: &mut impl Transport,
    request: &HttpRequest,
) -> Result<Option<Vec<u8>>, SyncError> {
    let mut expired = false;
    let answer = transport::exchange(transport, request, |failure| {
        expired = failure.body.contains("\"INVALID_QUERY_LOCATOR\"");
        errors::classify_salesforce(&failure)
    });
    match answer {
        Ok(body) => Ok(Some(body)),
        Err(_) if expired => Ok(None),
        Err(error) => Err(error),
    }
}

/// Sends and returns a 2xx body; anything else is classified as Salesforce
/// reports it (an array of `{message, errorCode, fields}`).
fn send(transport: &mut impl Transport, request: &HttpRequest) -> Result<Vec<u8>, SyncError> {
    transport::exchange(transport, request, |failure| {
        errors::classify_salesforce(&failure)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{HttpResponse, TransportError};
    use crate::types::{ErrorCategory, TimeWindow};
    use std::collections::VecDeque;

    #[derive(Default)]
    struct Scripted {
        answers: VecDeque<(u16, String)>,
        sent: Vec<HttpRequest>,
        ahead: Vec<HttpRequest>,
    }

    impl Transport for Scripted {
        fn send(&mut self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
            self.sent.push(request.clone());
            let (status, body) = self.answers.pop_front().expect("an unexpected request");
            Ok(HttpResponse {
                status,
                retry_after: None,
                body: body.into_bytes(),
            })
        }

        fn send_ahead(&mut self, request: &HttpRequest) {
            self.ahead.push(request.clone());
        }
    }

    fn source(scope: SalesforceScope) -> SalesforceSource {
        SalesforceSource {
            instance_url: "https://acme.my.salesforce.com/".into(),
            api_version: "v60.0".into(),
            objects: vec![SalesforceObject::Lead, SalesforceObject::Contact],
            scope,
            fields: vec!["FirstName".into(), "Email".into(), "Status".into()],
            filters: Vec::new(),
        }
    }

    #[test]
    fn the_queries_select_what_each_object_has() {
        let all = source(SalesforceScope::All);
        assert_eq!(
            soql(&all, SalesforceObject::Lead),
            "SELECT Id, SystemModstamp, LastModifiedDate, IsDeleted, FirstName, Email, Status, IsConverted, ConvertedContactId, ConvertedAccountId FROM Lead WHERE IsConverted = false ORDER BY SystemModstamp ASC, Id ASC"
        );
        assert_eq!(
            soql(&all, SalesforceObject::Contact),
            "SELECT Id, SystemModstamp, LastModifiedDate, IsDeleted, FirstName, Email, AccountId FROM Contact ORDER BY SystemModstamp ASC, Id ASC"
        );
        let window = source(SalesforceScope::Modified(TimeWindow {
            since: 1_717_243_200_500,
            until: 1_717_246_800_001,
        }));
        assert!(
            soql(&window, SalesforceObject::Contact).contains(
                "WHERE SystemModstamp >= 2024-06-01T12:00:00Z AND SystemModstamp <= 2024-06-01T13:00:01Z"
            )
        );
        let r = query_request(&all, "SELECT Id FROM Lead", false);
        assert_eq!(
            r.url,
            "https://acme.my.salesforce.com/services/data/v60.0/query?q=SELECT%20Id%20FROM%20Lead"
        );
        assert_eq!(
            soql(&source(SalesforceScope::Deleted), SalesforceObject::Contact),
            "SELECT Id FROM Contact WHERE IsDeleted = true ORDER BY Id"
        );
        let accounts = SalesforceSource {
            objects: vec![SalesforceObject::Account],
            fields: vec!["Name".into(), "Website".into()],
            ..source(SalesforceScope::Domains(vec![
                "acme.com".into(),
                "o'neil.io".into(),
            ]))
        };
        assert_eq!(
            soql(&accounts, SalesforceObject::Account),
            "SELECT Id, SystemModstamp, LastModifiedDate, IsDeleted, Name, Website FROM Account \
             WHERE (Website LIKE '%acme.com%' OR Website LIKE '%o\\'neil.io%') \
             ORDER BY SystemModstamp ASC, Id ASC"
        );
    }

    #[test]
    fn pages_follow_next_records_url_then_the_next_object() {
        let mut t = Scripted::default();
        t.answers.push_back((
            200,
            r#"{"totalSize": 3, "done": false, "nextRecordsUrl": "/services/data/v60.0/query/01gXX-2000",
                "records": [{"attributes": {"type": "Lead", "url": "/x"}, "Id": "00Q1", "FirstName": "Ada",
                             "Email": null, "Status": "Open - Not Contacted", "SystemModstamp": "2024-06-01T12:00:00.000+0000",
                             "NumberOfEmployees": 12, "Owner": {"Name": "Sam"}}]}"#
                .into(),
        ));
        let page = fetch_page(&mut t, &source(SalesforceScope::All), None).unwrap();
        let lead = &page.records[0];
        assert_eq!(lead.id, "00Q1");
        assert_eq!(lead.modified_at, Some(1_717_243_200_000));
        let value = |name: &str| {
            lead.properties
                .iter()
                .find(|p| p.name == name)
                .and_then(|p| p.value.clone())
        };
        assert_eq!(value("record_type").as_deref(), Some("lead"));
        assert_eq!(
            value("lead_status").as_deref(),
            Some("Open - Not Contacted")
        );
        assert_eq!(value("Email"), None);
        assert_eq!(value("NumberOfEmployees").as_deref(), Some("12"));
        assert!(value("attributes").is_none());

        t.answers.push_back((
            200,
            r#"{"totalSize": 3, "done": true, "records": []}"#.into(),
        ));
        let page = fetch_page(
            &mut t,
            &source(SalesforceScope::All),
            page.next_cursor.as_deref(),
        )
        .unwrap();
        assert_eq!(
            t.sent[1].url,
            "https://acme.my.salesforce.com/services/data/v60.0/query/01gXX-2000"
        );
        // The batch was asked for ahead, as soon as the first page named it;
        // the answer that said `done` asked for nothing more.
        assert_eq!(t.ahead, [t.sent[1].clone()]);
        // The Lead query is done: the Contact query is next.
        t.answers.push_back((
            200,
            r#"{"totalSize": 1, "done": true, "records": [{"Id": "0031", "AccountId": "0011", "Email": "a@x.io"}]}"#.into(),
        ));
        t.answers.push_back((
            200,
            r#"{"totalSize": 1, "done": true, "records": [{"Id": "00Q1", "ConvertedContactId": "0031"}]}"#.into(),
        ));
        let page = fetch_page(
            &mut t,
            &source(SalesforceScope::All),
            page.next_cursor.as_deref(),
        )
        .unwrap();
        assert!(t.sent[2].url.contains("FROM%20Contact"));
        assert!(
            t.sent[3]
                .url
                .contains("ConvertedContactId%20IN%20%28%270031%27%29"),
            "{}",
            t.sent[3].url
        );
        let contact = &page.records[0];
        assert_eq!(
            contact.merged_ids,
            ["00Q1"],
            "the converted lead becomes this contact"
        );
        assert_eq!(contact.company_ids, ["0011"]);
        assert!(page.next_cursor.is_none());
    }

    #[test]
    fn an_expired_query_locator_restarts_the_objects_query() {
        let cursor = serde_json::to_string(&Cursor {
            object: 1,
            next: Some("/services/data/v60.0/query/01gOLD-2000".into()),
        })
        .unwrap();
        let mut t = Scripted::default();
        t.answers.push_back((
            400,
            r#"[{"message": "invalid query locator", "errorCode": "INVALID_QUERY_LOCATOR"}]"#
                .into(),
        ));
        t.answers
            .push_back((200, r#"{"done": true, "records": [{"Id": "0031"}]}"#.into()));
        t.answers
            .push_back((200, r#"{"done": true, "records": []}"#.into()));
        let page = fetch_page(&mut t, &source(SalesforceScope::All), Some(&cursor)).unwrap();
        assert!(
            t.sent[1].url.contains("FROM%20Contact"),
            "{}",
            t.sent[1].url
        );
        assert_eq!(page.records[0].id, "0031");
        assert!(page.next_cursor.is_none());
    }

    #[test]
    fn salesforce_errors_are_classified() {
        let cases = [
            (
                401,
                r#"[{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]"#,
                ErrorCategory::AuthExpired,
            ),
            (
                403,
                r#"[{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]"#,
                ErrorCategory::RateLimited,
            ),
            (
                403,
                r#"[{"message": "insufficient access rights on object id", "errorCode": "INSUFFICIENT_ACCESS"}]"#,
                ErrorCategory::PermissionDenied,
            ),
            (
                400,
                r#"[{"message": "\nSELECT Foo__c FROM Lead\n       ^\nERROR at Row:1:Column:8\nNo such column 'Foo__c' on entity 'Lead'.", "errorCode": "INVALID_FIELD"}]"#,
                ErrorCategory::FieldNotFound,
            ),
            (503, "<html>unavailable</html>", ErrorCategory::Transient),
            (
                400,
                r#"[{"message": "unexpected token: FROM", "errorCode": "MALFORMED_QUERY"}]"#,
                ErrorCategory::Validation,
            ),
        ];
        for (status, body, category) in cases {
            let mut t = Scripted::default();
            t.answers.push_back((status, body.into()));
            let error = fetch_page(&mut t, &source(SalesforceScope::All), None).unwrap_err();
            assert_eq!(error.category, category, "{body}");
            assert!(!error.resolution.is_empty());
        }
        let mut t = Scripted::default();
        t.answers.push_back((400, r#"[{"message": "No such column 'Foo__c' on entity 'Lead'.", "errorCode": "INVALID_FIELD"}]"#.into()));
        let error = fetch_page(&mut t, &source(SalesforceScope::All), None).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("Foo__c"));
    }

    #[test]
    fn accounts_are_read_with_their_own_fields_only() {
        let accounts = SalesforceSource {
            objects: vec![SalesforceObject::Account],
            fields: vec!["Name".into(), "Website".into()],
            ..source(SalesforceScope::All)
        };
        assert_eq!(
            soql(&accounts, SalesforceObject::Account),
            "SELECT Id, SystemModstamp, LastModifiedDate, IsDeleted, Name, Website FROM Account ORDER BY SystemModstamp ASC, Id ASC"
        );
        let (records, _) = parse_query_page(
            br#"{"done": true, "records": [{"Id": "0011", "Name": "Acme", "Website": "acme.example"}]}"#,
            SalesforceObject::Account,
        )
        .unwrap();
        assert!(records[0].properties.iter().all(|p| p.name != RECORD_TYPE));
        assert!(records[0].company_ids.is_empty());
    }

    #[test]
    fn describe_lists_the_fields_every_object_has() {
        let mut t = Scripted::default();
        t.answers.push_back((200, r#"{"name": "Lead", "fields": [{"name": "Email", "label": "Email", "type": "email"},
            {"name": "Status", "label": "Status", "type": "picklist", "picklistValues": [{"value": "Open", "active": true}, {"value": "Old", "active": false}]}]}"#.into()));
        t.answers.push_back((200, r#"{"name": "Contact", "fields": [{"name": "Email", "label": "Email", "type": "email"}]}"#.into()));
        let fields = list_properties(&mut t, &source(SalesforceScope::All)).unwrap();
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["Email", "record_type", "lead_status"]);
        assert_eq!(
            t.sent[0].url,
            "https://acme.my.salesforce.com/services/data/v60.0/sobjects/Lead/describe"
        );
        let lead = parse_describe(br#"{"fields": [{"name": "Status", "type": "picklist", "picklistValues": [{"value": "Open", "active": true}, {"value": "Old", "active": false}]}]}"#).unwrap();
        assert_eq!(lead[0].options, ["Open"]);
    }
}
