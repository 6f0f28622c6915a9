//! HubSpot CRM v3 as a source (S1, S2): requests exactly as the API documents
//! them, and tolerant reading of what it sends back (null or missing
//! properties, unknown fields, empty pages, no `paging` on the last page).

use crate::associations;
use crate::errors::{self, Endpoint};
use crate::filters;
use crate::transport::{self, HttpRequest, Method, Transport, encode_component, parse_json};
use crate::types::{
    HubspotScope, HubspotSource, Owner, Page, Property, PropertyDefinition, SourceRecord, SyncError,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::borrow::Cow;

/// `GET /crm/v3/objects/contacts` page size: the API's maximum.
pub const CONTACTS_PAGE_LIMIT: usize = 100;
/// `GET /crm/v3/lists/{id}/memberships` page size: the API's maximum.
pub const MEMBERSHIPS_PAGE_LIMIT: usize = 250;
/// `POST /crm/v3/objects/contacts/batch/read` inputs per call: the API's maximum.
pub const BATCH_READ_LIMIT: usize = 100;
/// `POST /crm/v3/objects/contacts/search` page size: the API's maximum.
pub const SEARCH_PAGE_LIMIT: usize = 200;

/// The contact property holding the last modification time; the search API
/// filters and sorts contacts by it.
pub const MODIFIED_PROPERTY: &str = "lastmodifieddate";
/// The same for companies.
pub const COMPANY_MODIFIED_PROPERTY: &str = "hs_lastmodifieddate";
/// Companies whose contacts one `companies-contacts` page covers: one v4
/// batch read of their associations.
pub const COMPANIES_PER_PAGE: usize = 100;
/// A `companies-contacts` page stops taking companies once it holds this many
/// contacts, so pages stay bounded whatever the companies' sizes.
pub const CONTACTS_PER_COMPANIES_PAGE: usize = 1_000;

/// The HubSpot object type a source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    Contacts,
    Companies,
}

impl Object {
    /// The object type as it appears in API paths.
    pub fn path(self) -> &'static str {
        match self {
            Object::Contacts => "contacts",
            Object::Companies => "companies",
        }
    }

    /// The property the search API filters and sorts modifications by.
    pub fn modified_property(self) -> &'static str {
        match self {
            Object::Contacts => MODIFIED_PROPERTY,
            Object::Companies => COMPANY_MODIFIED_PROPERTY,
        }
    }
}
/// On a merge's surviving contact, the ids merged into it (`;`-separated).
pub const MERGED_PROPERTY: &str = "hs_merged_object_ids";
const ID_PROPERTY: &str = "hs_object_id";

/// Reads one page of `source` starting at `cursor`, keeping the records its
/// filters let through (S4) and listing the others as `excluded`.
pub fn fetch_page(
    transport: &mut impl Transport,
    object: Object,
    source: &HubspotSource,
    cursor: Option<&str>,
) -> Result<Page, SyncError> {
    let pushed = match source.scope {
        HubspotScope::All => pushed_down(source),
        _ => Vec::new(),
    };
    let mut page = read_page(transport, object, source, cursor, &pushed)?;
    // Filtered first, so excluded records cost no association lookup.
    if !matches!(source.scope, HubspotScope::Archived) {
        page = filters::apply(&source.filters, page);
    }
    // The listing brings companies inline; the companies-contacts scope knows
    // them already; archived records need none.
    let needs_lookup = match source.scope {
        HubspotScope::All => !pushed.is_empty(),
        HubspotScope::Modified(_)
        | HubspotScope::ListMembers(_)
        | HubspotScope::Emails(_)
        | HubspotScope::Domains(_) => true,
        HubspotScope::Archived | HubspotScope::CompaniesContacts(_) => false,
    };
    if object == Object::Contacts && source.with_companies && needs_lookup {
        add_companies(transport, source, &mut page.records)?;
    }
    Ok(page)
}

/// The search filters a full read can hand to HubSpot (S4): at most four,
/// as a filter group holds six and paging by key uses two.
pub fn pushed_down(source: &HubspotSource) -> Vec<Value> {
    source
        .filters
        .iter()
        .filter_map(filters::search_filter)
        .take(4)
        .collect()
}

/// Fills each contact's `company-ids` through the v4 associations API: the
/// answer's first page per contact, then the rest of any that has more.
fn add_companies(
    transport: &mut impl Transport,
    source: &HubspotSource,
    records: &mut [SourceRecord],
) -> Result<(), SyncError> {
    if records.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    let associated = read_associations(transport, source, "contacts", "companies", &ids)?;
    for record in records {
        if let Some((_, companies)) = associated.iter().find(|(id, _)| *id == record.id) {
            record.company_ids = companies.clone();
        }
    }
    Ok(())
}

/// Every association from `ids` (of type `from`) to objects of type `to`.
fn read_associations(
    transport: &mut impl Transport,
    source: &HubspotSource,
    from: &str,
    to: &str,
    ids: &[String],
) -> Result<Vec<(String, Vec<String>)>, SyncError> {
    let request = associations::batch_read_request(base(source), from, to, ids);
    let body = send(transport, &request, Endpoint::Other)?;
    let mut read = Vec::new();
    for mut associated in associations::parse_batch_read(&body)? {
        let mut after = associated.more.take();
        while let Some(cursor) = after {
            let request =
                associations::object_request(base(source), from, &associated.from, to, &cursor);
            let body = send(transport, &request, Endpoint::Other)?;
            let (more_ids, next) = associations::parse_object_page(&body)?;
            if next.as_ref() == Some(&cursor) {
                return Err(errors::invalid_response(
                    "the associations API returned the same cursor again",
                ));
            }
            for id in more_ids {
                if !associated.to.contains(&id) {
                    associated.to.push(id);
                }
            }
            after = next;
        }
        read.push((associated.from, associated.to));
    }
    Ok(read)
}

/// Where a `companies-contacts` read stands: the last company read. Keyed by
/// id, not position, so a list that lost companies between an interruption
/// and the resume repeats and skips none (one added before the cursor waits
/// for the next run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CompaniesCursor {
    after: String,
}

/// Company ids in reading order: numeric ids as numbers, then as text.
fn id_order(id: &str) -> (usize, &str) {
    (id.len(), id)
}

/// One page of the contacts of `companies`: the next companies' associations,
/// then their contacts' properties, each contact carrying the listed
/// companies it belongs to.
fn read_companies_contacts(
    transport: &mut impl Transport,
    source: &HubspotSource,
    companies: &[String],
    cursor: Option<&str>,
) -> Result<Page, SyncError> {
    let mut companies: Vec<&String> = companies.iter().collect();
    companies.sort_by(|a, b| id_order(a).cmp(&id_order(b)));
    companies.dedup();
    let start = match cursor {
        None => 0,
        Some(text) => {
            let after = serde_json::from_str::<CompaniesCursor>(text)
                .map_err(|e| {
                    errors::invalid_response(&format!(
                        "the companies cursor {} is not one this component wrote ({e})",
                        truncate(text)
                    ))
                })?
                .after;
            companies.partition_point(|id| id_order(id) <= id_order(&after))
        }
    };
    let chunk: Vec<String> = companies[start..]
        .iter()
        .take(COMPANIES_PER_PAGE)
        .map(|id| (*id).clone())
        .collect();
    if chunk.is_empty() {
        return Ok(Page {
            records: Vec::new(),
            excluded: Vec::new(),
            next_cursor: None,
        });
    }
    let associated = read_associations(transport, source, "companies", "contacts", &chunk)?;
    let mut contact_ids: Vec<String> = Vec::new();
    let mut companies_of: std::collections::HashMap<String, Vec<String>> = Default::default();
    let mut consumed = 0;
    for company in &chunk {
        consumed += 1;
        let contacts = associated
            .iter()
            .find(|(id, _)| id == company)
            .map(|(_, contacts)| contacts.as_slice())
            .unwrap_or_default();
        for contact in contacts {
            let of = companies_of.entry(contact.clone()).or_default();
            if of.is_empty() {
                contact_ids.push(contact.clone());
            }
            if !of.contains(company) {
                of.push(company.clone());
            }
        }
        if contact_ids.len() >= CONTACTS_PER_COMPANIES_PAGE {
            break;
        }
    }
    let mut records = Vec::with_capacity(contact_ids.len());
    for ids in contact_ids.chunks(BATCH_READ_LIMIT) {
        let request = batch_read_request(Object::Contacts, source, ids);
        let body = send(transport, &request, Endpoint::Other)?;
        records.extend(parse_batch_read(&body)?);
    }
    records.sort_by_key(|r: &SourceRecord| contact_ids.iter().position(|id| *id == r.id));
    for record in &mut records {
        record.company_ids = companies_of.remove(&record.id).unwrap_or_default();
    }
    let next = start + consumed;
    Ok(Page {
        records,
        excluded: Vec::new(),
        next_cursor: (next < companies.len()).then(|| {
            let after = chunk[consumed - 1].clone();
            serde_json::to_string(&CompaniesCursor { after }).expect("a cursor serialises")
        }),
    })
}

/// Reads one page; `pushed` are the filters a full read hands to search.
fn read_page(
    transport: &mut impl Transport,
    object: Object,
    source: &HubspotSource,
    cursor: Option<&str>,
    pushed: &[Value],
) -> Result<Page, SyncError> {
    match &source.scope {
        // A filter the search API can evaluate makes a full read cheaper
        // through search than through the listing: only matching records
        // come back. Incremental reads keep every change (see `modified`).
        HubspotScope::All if !pushed.is_empty() => {
            let read = OneRequest::Search {
                since: 0,
                until: None,
                pushed,
            };
            read.read(transport, object, source, cursor)
        }
        HubspotScope::All => {
            OneRequest::Listing(Listing::Live).read(transport, object, source, cursor)
        }
        HubspotScope::Archived => {
            OneRequest::Listing(Listing::Archived).read(transport, object, source, cursor)
        }
        HubspotScope::Modified(window) => {
            let read = OneRequest::Search {
                since: window.since,
                until: Some(window.until),
                pushed: &[],
            };
            read.read(transport, object, source, cursor)
        }
        HubspotScope::ListMembers(list_id) => {
            let request = memberships_request(source, list_id, cursor);
            let body = send(transport, &request, Endpoint::ListMemberships)?;
            let (ids, next_cursor) = parse_memberships(&body)?;
            // The next memberships page overlaps this one's batch reads.
            if let Some(next) = next_cursor.as_deref() {
                transport.send_ahead(&memberships_request(source, list_id, Some(next)));
            }
            let mut records = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(BATCH_READ_LIMIT) {
                let request = batch_read_request(object, source, chunk);
                let body = send(transport, &request, Endpoint::Other)?;
                records.extend(parse_batch_read(&body)?);
            }
            // Batch read answers in no particular order; keep the list's order
            // so runs are reproducible. Members that no longer exist (deleted,
            // archived) are absent from the answer and so from the page.
            records.sort_by_key(|r: &SourceRecord| ids.iter().position(|id| *id == r.id));
            Ok(Page {
                records,
                excluded: Vec::new(),
                next_cursor,
            })
        }
        HubspotScope::CompaniesContacts(companies) => {
            read_companies_contacts(transport, source, companies, cursor)
        }
        HubspotScope::Emails(emails) => {
            if emails.len() > BATCH_READ_LIMIT {
                return Err(errors::invalid_request(&format!(
                    "a read by email takes at most {BATCH_READ_LIMIT} emails, not {}",
                    emails.len()
                )));
            }
            let records = if emails.is_empty() {
                Vec::new()
            } else {
                let mut request = batch_read_request(object, source, emails);
                let mut body: Value =
                    serde_json::from_slice(request.body.as_deref().unwrap_or(b"{}"))
                        .expect("the request body is JSON");
                body["idProperty"] = Value::from("email");
                request.body = Some(body.to_string().into_bytes());
                // 207: the emails no contact has are the answer's errors.
                parse_batch_read(&send(transport, &request, Endpoint::Other)?)?
            };
            Ok(Page {
                records,
                excluded: Vec::new(),
                next_cursor: None,
            })
        }
        HubspotScope::Domains(domains) => {
            if object != Object::Companies || domains.len() > BATCH_READ_LIMIT {
                return Err(errors::invalid_request(&format!(
                    "a read by domain takes companies and at most {BATCH_READ_LIMIT} domains, \
                     not {} {}",
                    domains.len(),
                    object.path()
                )));
            }
            if domains.is_empty() {
                return Ok(Page {
                    records: Vec::new(),
                    excluded: Vec::new(),
                    next_cursor: None,
                });
            }
            let request = domains_request(source, domains, cursor);
            let body = send(transport, &request, Endpoint::Other)?;
            let page: ObjectsPage = parse_json(&body, "search page")?;
            Ok(Page {
                records: read_objects(page.results.unwrap_or_default(), Listing::Live)?,
                excluded: Vec::new(),
                next_cursor: next_after(page.paging.as_ref()),
            })
        }
    }
}

/// `POST /crm/v3/objects/companies/search` for the companies holding these
/// domains, in id order, from `after`. Several companies may share a domain,
/// so the answer is paged like any search (offsets are safe here: the set
/// does not move as a modification window does).
pub fn domains_request(
    source: &HubspotSource,
    domains: &[String],
    after: Option<&str>,
) -> HttpRequest {
    let values: Vec<String> = domains.iter().map(|d| d.to_lowercase()).collect();
    let mut body = json!({
        "filterGroups": [{ "filters": [{ "propertyName": "domain", "operator": "IN", "values": values }] }],
        "sorts": [{ "propertyName": ID_PROPERTY, "direction": "ASCENDING" }],
        "properties": requested_properties(source),
        "limit": SEARCH_PAGE_LIMIT,
    });
    if let Some(after) = after {
        body["after"] = json!(after);
    }
    HttpRequest {
        method: Method::Post,
        url: format!("{}/crm/v3/objects/companies/search", base(source)),
        body: Some(body.to_string().into_bytes()),
    }
}

/// How a scope whose pages are one request each reads them: the listing
/// and search, where the cursor alone says what the next request is.
#[derive(Clone, Copy)]
enum OneRequest<'a> {
    Listing(Listing),
    Search {
        since: u64,
        until: Option<u64>,
        pushed: &'a [Value],
    },
}

impl OneRequest<'_> {
    fn request(
        self,
        object: Object,
        source: &HubspotSource,
        cursor: Option<&str>,
    ) -> Result<HttpRequest, SyncError> {
        Ok(match self {
            Self::Listing(listing) => list_request(object, source, cursor, listing),
            Self::Search {
                since,
                until,
                pushed,
            } => search_request(
                object,
                source,
                until,
                &search_position(cursor, since)?,
                pushed,
            ),
        })
    }

    /// Reads the page at `cursor` and sends the next page's request ahead:
    /// its round trip overlaps this page's filtering and mapping, and
    /// everything the host does with it, instead of waiting for the host to ask.
    fn read(
        self,
        transport: &mut impl Transport,
        object: Object,
        source: &HubspotSource,
        cursor: Option<&str>,
    ) -> Result<Page, SyncError> {
        let request = self.request(object, source, cursor)?;
        let body = send(transport, &request, Endpoint::Other)?;
        let page = self.parse(&body, cursor)?;
        if let Some(next) = page.next_cursor.as_deref()
            && let Ok(ahead) = self.request(object, source, Some(next))
        {
            transport.send_ahead(&ahead);
        }
        Ok(page)
    }

    fn parse(self, body: &[u8], cursor: Option<&str>) -> Result<Page, SyncError> {
        match self {
            Self::Listing(listing) => parse_objects_page(body, listing),
            Self::Search { since, .. } => parse_search_page(body, &search_position(cursor, since)?),
        }
    }
}

/// Where a search read stands: the cursor this component wrote, or the start.
fn search_position(cursor: Option<&str>, since: u64) -> Result<SearchCursor, SyncError> {
    match cursor {
        None => Ok(SearchCursor::Range {
            from: since,
            seen: Vec::new(),
        }),
        Some(text) => serde_json::from_str(text).map_err(|e| {
            errors::invalid_response(&format!(
                "the search cursor {} is not one this component wrote ({e})",
                truncate(text)
            ))
        }),
    }
}

/// Reads the object's property catalogue: `GET /crm/v3/properties/{object}`
/// (one unpaged answer; archived properties are not included by default).
pub fn list_properties(
    transport: &mut impl Transport,
    object: Object,
    source: &HubspotSource,
) -> Result<Vec<PropertyDefinition>, SyncError> {
    let request = HttpRequest {
        method: Method::Get,
        url: format!("{}/crm/v3/properties/{}", base(source), object.path()),
        body: None,
    };
    let body = send(transport, &request, Endpoint::Other)?;
    parse_properties(&body)
}

/// Every active owner: `GET /crm/v3/owners?limit=100&archived=false`,
/// following `paging.next.after`.
pub fn list_owners(
    transport: &mut impl Transport,
    source: &HubspotSource,
) -> Result<Vec<Owner>, SyncError> {
    let mut owners = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{}/crm/v3/owners?limit=100&archived=false", base(source));
        if let Some(after) = &after {
            url.push_str(&format!("&after={}", encode_component(after)));
        }
        let request = HttpRequest {
            method: Method::Get,
            url,
            body: None,
        };
        let body = send(transport, &request, Endpoint::Other)?;
        let page: OwnersPage = parse_json(&body, "owner list")?;
        for owner in page.results.unwrap_or_default() {
            let Some(id) = owner.get("id").and_then(id_string) else {
                continue;
            };
            owners.push(Owner {
                id,
                email: owner
                    .get("email")
                    .and_then(Value::as_str)
                    .map(|e| e.trim().to_lowercase())
                    .filter(|e| !e.is_empty()),
            });
        }
        match next_after(page.paging.as_ref()) {
            Some(next) if Some(&next) != after.as_ref() => after = Some(next),
            _ => return Ok(owners),
        }
    }
}

/// `CollectionResponsePublicOwnerForwardPaging`, read tolerantly.
#[derive(Deserialize)]
struct OwnersPage {
    #[serde(default)]
    results: Option<Vec<serde_json::Map<String, Value>>>,
    #[serde(default)]
    paging: Option<Value>,
}

#[derive(Deserialize)]
struct PropertiesAnswer {
    #[serde(default)]
    results: Option<Vec<Value>>,
}

/// Reads a `CollectionResponseProperty`. Entries without a name are skipped;
/// archived properties are treated as gone.
pub fn parse_properties(body: &[u8]) -> Result<Vec<PropertyDefinition>, SyncError> {
    let answer: PropertiesAnswer = parse_json(body, "property list")?;
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
    Ok(answer
        .results
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.get("archived").and_then(Value::as_bool) != Some(true))
        .filter_map(|p| {
            let name = p
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())?
                .to_owned();
            let options = p
                .get("options")
                .and_then(Value::as_array)
                .map(|options| {
                    options
                        .iter()
                        .filter_map(|o| o.get("value").and_then(Value::as_str).map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            Some(PropertyDefinition {
                label: text(&p, "label"),
                value_type: text(&p, "type"),
                name,
                options,
            })
        })
        .collect())
}

/// Where an incremental read stands (R4), as the opaque page cursor.
///
/// HubSpot's search takes one sort and pages by offset, capped at 10,000
/// results, and an offset shifts under records modified mid-run. So every page
/// is a fresh query from the newest modification time read so far; the ids
/// already returned at exactly that time are remembered and skipped. When a
/// whole page shares one timestamp, the records at that time are drained in
/// `hs_object_id` order (an exact key) before moving past it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum SearchCursor {
    /// Records modified at or after `from`, less the `seen` ones at exactly `from`.
    Range { from: u64, seen: Vec<String> },
    /// Records modified exactly at `at` with an id above `after`, less the
    /// `seen` ones; then everything after `at`.
    Ties {
        at: u64,
        after: Option<String>,
        seen: Vec<String>,
    },
}

/// `POST /crm/v3/objects/{object}/search` for the next page after `position`,
/// modified no later than `until`, and passing the `pushed` filters. Dates
/// are epoch milliseconds as strings, as the API documents.
pub fn search_request(
    object: Object,
    source: &HubspotSource,
    until: Option<u64>,
    position: &SearchCursor,
    pushed: &[Value],
) -> HttpRequest {
    let filter = |property: &str, operator: &str, value: String| json!({ "propertyName": property, "operator": operator, "value": value });
    let modified = object.modified_property();
    let (filters, sort_by) = match position {
        SearchCursor::Range { from, .. } => {
            let mut filters = vec![filter(modified, "GTE", from.to_string())];
            if let Some(until) = until {
                filters.push(filter(modified, "LTE", until.to_string()));
            }
            (filters, modified)
        }
        SearchCursor::Ties { at, after, .. } => {
            let mut filters = vec![filter(modified, "EQ", at.to_string())];
            if let Some(after) = after {
                filters.push(filter(ID_PROPERTY, "GT", after.clone()));
            }
            (filters, ID_PROPERTY)
        }
    };
    let filters: Vec<Value> = filters.into_iter().chain(pushed.iter().cloned()).collect();
    let mut properties = requested_properties(source);
    if !properties.iter().any(|p| p == modified) {
        properties.push(modified.to_owned());
    }
    let body = json!({
        "filterGroups": [{ "filters": filters }],
        "sorts": [{ "propertyName": sort_by, "direction": "ASCENDING" }],
        "properties": properties,
        "limit": SEARCH_PAGE_LIMIT,
    });
    HttpRequest {
        method: Method::Post,
        url: format!("{}/crm/v3/objects/{}/search", base(source), object.path()),
        body: Some(body.to_string().into_bytes()),
    }
}

/// Reads a search answer (`CollectionResponseWithTotal`) read from `position`:
/// the records not returned before, and where the next page starts.
pub fn parse_search_page(body: &[u8], position: &SearchCursor) -> Result<Page, SyncError> {
    let page: ObjectsPage = parse_json(body, "search page")?;
    let more = next_after(page.paging.as_ref()).is_some();
    let results = read_objects(page.results.unwrap_or_default(), Listing::Live)?;
    let stamped: Vec<(u64, SourceRecord)> = results
        .into_iter()
        .map(|r| {
            // A record without a time cannot be placed; reading it at the
            // current position returns it once and never loops.
            let at = r.modified_at.unwrap_or(match position {
                SearchCursor::Range { from, .. } => *from,
                SearchCursor::Ties { at, .. } => *at,
            });
            (at, r)
        })
        .collect();
    let next = if !more || stamped.is_empty() {
        None
    } else {
        Some(match position {
            SearchCursor::Range { from, seen } => {
                let newest = stamped.iter().map(|(at, _)| *at).max().unwrap_or(*from);
                let mut at_newest: Vec<String> = stamped
                    .iter()
                    .filter(|(at, _)| *at == newest)
                    .map(|(_, r)| r.id.clone())
                    .collect();
                if newest == *from {
                    at_newest.extend(seen.iter().cloned());
                    at_newest.sort();
                    at_newest.dedup();
                }
                if at_newest.len() >= stamped.len() {
                    // The whole page is one timestamp: more may share it.
                    SearchCursor::Ties {
                        at: newest,
                        after: None,
                        seen: at_newest,
                    }
                } else {
                    SearchCursor::Range {
                        from: newest,
                        seen: at_newest,
                    }
                }
            }
            SearchCursor::Ties { at, seen, .. } => SearchCursor::Ties {
                at: *at,
                after: stamped
                    .iter()
                    .map(|(_, r)| r.id.as_str())
                    .max_by_key(|id| (id.len(), *id))
                    .map(str::to_owned),
                seen: seen.clone(),
            },
        })
    };
    let next = match (next, position) {
        // The drain of one timestamp is over: go on strictly after it.
        (None, SearchCursor::Ties { at, .. }) => Some(SearchCursor::Range {
            from: at + 1,
            seen: Vec::new(),
        }),
        (next, _) => next,
    };
    let records = stamped
        .into_iter()
        .filter(|(at, r)| match position {
            SearchCursor::Range { from, seen } => !(*at == *from && seen.contains(&r.id)),
            SearchCursor::Ties { seen, .. } => !seen.contains(&r.id),
        })
        .map(|(_, r)| r)
        .collect();
    Ok(Page {
        records,
        excluded: Vec::new(),
        next_cursor: next.map(|c| serde_json::to_string(&c).expect("a cursor serialises")),
    })
}

/// The mapped properties plus the one every read needs for merges (X6).
fn requested_properties(source: &HubspotSource) -> Vec<String> {
    let mut properties = source.properties.clone();
    if !properties.iter().any(|p| p == MERGED_PROPERTY) {
        properties.push(MERGED_PROPERTY.to_owned());
    }
    properties
}

/// `GET /crm/v3/objects/{object}?limit=100&archived=false&properties=a,b[&associations=companies][&after=c]`.
pub fn list_request(
    object: Object,
    source: &HubspotSource,
    cursor: Option<&str>,
    listing: Listing,
) -> HttpRequest {
    let mut url = format!(
        "{}/crm/v3/objects/{}?limit={CONTACTS_PAGE_LIMIT}&archived={}",
        base(source),
        object.path(),
        listing == Listing::Archived
    );
    // The archived listing only needs ids (X6).
    let properties = match listing {
        Listing::Live => requested_properties(source),
        Listing::Archived => source.properties.clone(),
    };
    if !properties.is_empty() {
        url.push_str("&properties=");
        url.push_str(&properties_param(&properties));
    }
    // A contact's companies come with the page at no extra request (S3).
    if object == Object::Contacts && source.with_companies && listing == Listing::Live {
        url.push_str("&associations=companies");
    }
    push_after(&mut url, cursor);
    HttpRequest {
        method: Method::Get,
        url,
        body: None,
    }
}

/// Which records a contacts listing asks for and keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Live records; archived ones are dropped even if a server sends them.
    Live,
    /// Archived records only; anything not marked `"archived": true` is
    /// dropped, so a server that ignores `archived=true` cannot make live
    /// contacts look deleted.
    Archived,
}

/// `GET /crm/v3/lists/{listId}/memberships?limit=250[&after=c]`.
pub fn memberships_request(
    source: &HubspotSource,
    list_id: &str,
    cursor: Option<&str>,
) -> HttpRequest {
    let mut url = format!(
        "{}/crm/v3/lists/{}/memberships?limit={MEMBERSHIPS_PAGE_LIMIT}",
        base(source),
        encode_component(list_id)
    );
    push_after(&mut url, cursor);
    HttpRequest {
        method: Method::Get,
        url,
        body: None,
    }
}

/// `POST /crm/v3/objects/{object}/batch/read?archived=false` for up to 100 ids.
pub fn batch_read_request(object: Object, source: &HubspotSource, ids: &[String]) -> HttpRequest {
    let body = serde_json::json!({
        "properties": requested_properties(source),
        "propertiesWithHistory": [],
        "inputs": ids.iter().map(|id| serde_json::json!({ "id": id })).collect::<Vec<_>>(),
    });
    HttpRequest {
        method: Method::Post,
        url: format!(
            "{}/crm/v3/objects/{}/batch/read?archived=false",
            base(source),
            object.path()
        ),
        body: Some(body.to_string().into_bytes()),
    }
}

fn base(source: &HubspotSource) -> &str {
    source.base_url.trim_end_matches('/')
}

/// HubSpot documents `properties` as one comma-separated value.
fn properties_param(properties: &[String]) -> String {
    properties
        .iter()
        .map(|p| encode_component(p))
        .collect::<Vec<_>>()
        .join(",")
}

fn push_after(url: &mut String, cursor: Option<&str>) {
    if let Some(after) = cursor {
        url.push_str("&after=");
        url.push_str(&encode_component(after));
    }
}

/// Sends and returns the body of a 2xx response; anything else is classified
/// as HubSpot answers it.
fn send(
    transport: &mut impl Transport,
    request: &HttpRequest,
    endpoint: Endpoint,
) -> Result<Vec<u8>, SyncError> {
    transport::exchange(transport, request, |failure| {
        errors::classify_http(&failure, endpoint)
    })
}

#[derive(Deserialize)]
struct ObjectsPage<'a> {
    #[serde(default, borrow)]
    results: Option<Vec<RawResult<'a>>>,
    #[serde(default)]
    paging: Option<Value>,
}

/// Reads a `CollectionResponse` of contacts.
pub fn parse_objects_page(body: &[u8], listing: Listing) -> Result<Page, SyncError> {
    let page: ObjectsPage = parse_json(body, "contacts page")?;
    let records = read_objects(page.results.unwrap_or_default(), listing)?;
    Ok(Page {
        records,
        excluded: Vec::new(),
        next_cursor: next_after(page.paging.as_ref()),
    })
}

/// Reads a batch read answer (`BatchResponseSimplePublicObject`, HTTP 200 or 207).
pub fn parse_batch_read(body: &[u8]) -> Result<Vec<SourceRecord>, SyncError> {
    let page: ObjectsPage = parse_json(body, "batch read answer")?;
    read_objects(page.results.unwrap_or_default(), Listing::Live)
}

#[derive(Deserialize)]
struct MembershipsPage {
    #[serde(default)]
    results: Option<Vec<Value>>,
    #[serde(default)]
    paging: Option<Value>,
}

/// Reads a list memberships page: the member record ids and the next cursor.
pub fn parse_memberships(body: &[u8]) -> Result<(Vec<String>, Option<String>), SyncError> {
    let page: MembershipsPage = parse_json(body, "list memberships page")?;
    let mut ids = Vec::new();
    for (index, entry) in page.results.unwrap_or_default().into_iter().enumerate() {
        let id = match &entry {
            Value::Object(member) => member.get("recordId").and_then(id_string),
            bare => id_string(bare),
        };
        match id {
            Some(id) => ids.push(id),
            None => {
                return Err(errors::invalid_response(&format!(
                    "list membership #{index} has no recordId: {}",
                    truncate(&entry.to_string())
                )));
            }
        }
    }
    Ok((ids, next_after(page.paging.as_ref())))
}

fn read_objects(
    results: Vec<RawResult<'_>>,
    listing: Listing,
) -> Result<Vec<SourceRecord>, SyncError> {
    let mut records = Vec::with_capacity(results.len());
    for (index, result) in results.into_iter().enumerate() {
        let object = match result {
            RawResult::Object(object) => object,
            RawResult::Other(text) => {
                return Err(errors::invalid_response(&format!(
                    "result #{index} is not an object: {}",
                    truncate(&text)
                )));
            }
        };
        let Some(id) = object.id else {
            return Err(errors::invalid_response(&format!(
                "result #{index} has no id (properties: {})",
                truncate(
                    &object
                        .properties
                        .iter()
                        .map(|p| format!("{}={}", p.name, p.value.as_deref().unwrap_or("null")))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            )));
        };
        // Guards against a server that ignores the `archived` parameter
        // (X6: archived records never sync as live, live ones never look deleted).
        let archived = object.archived.as_ref().and_then(Value::as_bool) == Some(true);
        if archived != (listing == Listing::Archived) {
            continue;
        }
        let properties = object.properties;
        let property = |name: &str| {
            properties
                .iter()
                .find(|p| p.name == name)
                .and_then(|p| p.value.as_deref())
        };
        let modified_at = property(MODIFIED_PROPERTY)
            .or_else(|| property(COMPANY_MODIFIED_PROPERTY))
            .and_then(epoch_millis)
            .or_else(|| object.updated_at.as_deref().and_then(epoch_millis));
        let mut merged_ids: Vec<String> = Vec::new();
        for merged in property(MERGED_PROPERTY)
            .unwrap_or("")
            .split(';')
            .map(str::trim)
        {
            if !merged.is_empty() && merged != id && !merged_ids.iter().any(|m| m == merged) {
                merged_ids.push(merged.to_owned());
            }
        }
        let company_ids = object
            .associations
            .as_ref()
            .map(associations::companies_of_listing)
            .unwrap_or_default();
        records.push(SourceRecord {
            id,
            properties,
            modified_at,
            merged_ids,
            company_ids,
        });
    }
    Ok(records)
}

/// One entry of `results`: read field by field into its parts (the
/// properties straight into [`Property`] values, no JSON tree in between),
/// anything that is not an object kept as text for the error.
enum RawResult<'a> {
    Object(RawObject<'a>),
    Other(String),
}

/// The fields of a CRM object the sync reads; the rest are skipped unread.
/// Read without a copy where the page's own text will do: each object's
/// keys are matched in place and `updatedAt` (a fallback few records need)
/// borrows the answer; the id is read once into the record's own string.
#[derive(Default)]
struct RawObject<'a> {
    id: Option<String>,
    properties: Vec<Property>,
    updated_at: Option<Cow<'a, str>>,
    archived: Option<Value>,
    /// Only present when the request asked for associations.
    associations: Option<Value>,
}

/// The keys of a CRM object that [`RawObject`] reads.
enum ObjectKey {
    Id,
    Properties,
    UpdatedAt,
    Archived,
    Associations,
    Other,
}

impl<'de> Deserialize<'de> for ObjectKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = ObjectKey;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<ObjectKey, E> {
                Ok(match key {
                    "id" => ObjectKey::Id,
                    "properties" => ObjectKey::Properties,
                    "updatedAt" => ObjectKey::UpdatedAt,
                    "archived" => ObjectKey::Archived,
                    "associations" => ObjectKey::Associations,
                    _ => ObjectKey::Other,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawResult<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ResultVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for ResultVisitor<'a> {
            type Value = RawResult<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a CRM object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawResult<'a>, A::Error> {
                let mut object = RawObject::default();
                while let Some(key) = map.next_key::<ObjectKey>()? {
                    match key {
                        ObjectKey::Id => object.id = map.next_value::<RawId>()?.0,
                        ObjectKey::Properties => {
                            object.properties = map.next_value::<RawProperties>()?.0;
                        }
                        ObjectKey::UpdatedAt => object.updated_at = map.next_value::<Text>()?.0,
                        ObjectKey::Archived => object.archived = Some(map.next_value()?),
                        ObjectKey::Associations => object.associations = Some(map.next_value()?),
                        ObjectKey::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(RawResult::Object(object))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<RawResult<'a>, A::Error> {
                let value = Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
                Ok(RawResult::Other(value.to_string()))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawResult<'a>, E> {
                Ok(RawResult::Other(Value::from(v).to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<RawResult<'a>, E> {
                Ok(RawResult::Other(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawResult<'a>, E> {
                Ok(RawResult::Other(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawResult<'a>, E> {
                Ok(RawResult::Other(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<RawResult<'a>, E> {
                Ok(RawResult::Other(v.to_string()))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<RawResult<'a>, E> {
                Ok(RawResult::Other("null".into()))
            }
        }
        deserializer.deserialize_any(ResultVisitor(std::marker::PhantomData))
    }
}

/// An object's `id`: a non-empty string, or a number as its text (ids are
/// strings in v3); anything else is no id.
struct RawId(Option<String>);

impl<'de> Deserialize<'de> for RawId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(RawId(into_id(Value::deserialize(deserializer)?)))
    }
}

/// A string value, borrowed from the answer unless it holds escapes;
/// anything else reads as none.
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for TextVisitor<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Text<'a>, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Text(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Text<'a>, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        deserializer.deserialize_any(TextVisitor(std::marker::PhantomData))
    }
}

/// An object's `properties`; anything but an object reads as none.
struct RawProperties(Vec<Property>);

impl<'de> Deserialize<'de> for RawProperties {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PropertiesVisitor;
        impl<'de> serde::de::Visitor<'de> for PropertiesVisitor {
            type Value = RawProperties;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of properties")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawProperties, A::Error> {
                let mut properties = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(name) = map.next_key::<String>()? {
                    let value = map.next_value::<PropertyValue>()?.0;
                    properties.push(Property { name, value });
                }
                Ok(RawProperties(properties))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawProperties, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(RawProperties(Vec::new()))
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<RawProperties, E> {
                Ok(RawProperties(Vec::new()))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<RawProperties, E> {
                Ok(RawProperties(Vec::new()))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<RawProperties, E> {
                Ok(RawProperties(Vec::new()))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<RawProperties, E> {
                Ok(RawProperties(Vec::new()))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<RawProperties, E> {
                Ok(RawProperties(Vec::new()))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<RawProperties, E> {
                Ok(RawProperties(Vec::new()))
            }
        }
        deserializer.deserialize_any(PropertiesVisitor)
    }
}

/// HubSpot sends every property value as a string or null; other JSON types
/// are read as their text rather than failing the page. Empty means none.
struct PropertyValue(Option<String>);

impl<'de> Deserialize<'de> for PropertyValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl<'de> serde::de::Visitor<'de> for ValueVisitor {
            type Value = PropertyValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a property value")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PropertyValue, E> {
                Ok(PropertyValue((!v.is_empty()).then(|| v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<PropertyValue, E> {
                Ok(PropertyValue((!v.is_empty()).then_some(v)))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<PropertyValue, E> {
                Ok(PropertyValue(None))
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<PropertyValue, E> {
                Ok(PropertyValue(None))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<PropertyValue, E> {
                Ok(PropertyValue(Some(v.to_string())))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PropertyValue, E> {
                Ok(PropertyValue(Some(v.to_string())))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PropertyValue, E> {
                Ok(PropertyValue(Some(v.to_string())))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<PropertyValue, E> {
                Ok(PropertyValue(Some(Value::from(v).to_string())))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<PropertyValue, A::Error> {
                let value = Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(PropertyValue(Some(value.to_string())))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<PropertyValue, A::Error> {
                let value = Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
                Ok(PropertyValue(Some(value.to_string())))
            }
        }
        deserializer.deserialize_any(ValueVisitor)
    }
}

/// A HubSpot time: RFC 3339 (`2024-06-01T12:00:00.000Z`), or epoch
/// milliseconds as older endpoints send them.
pub fn epoch_millis(text: &str) -> Option<u64> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    let time = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    u64::try_from(time.timestamp_millis()).ok()
}

/// Ids are strings in v3, but numbers are accepted too.
fn id_string(value: &Value) -> Option<String> {
    into_id(value.clone())
}

/// [`id_string`] of a value that is no longer needed, its string kept.
fn into_id(value: Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `paging.next.after`; absent `paging`, absent `next` or an empty cursor all
/// mean this was the last page.
fn next_after(paging: Option<&Value>) -> Option<String> {
    paging?.get("next")?.get("after").and_then(id_string)
}

fn truncate(text: &str) -> String {
    const MAX: usize = 200;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{HttpResponse, TransportError};
    use crate::types::{ErrorCategory, TimeWindow};
    use std::collections::VecDeque;

    /// Answers requests from a queue and remembers what was sent, and
    /// what was sent ahead.
    #[derive(Default)]
    struct Scripted {
        answers: VecDeque<Result<HttpResponse, TransportError>>,
        sent: Vec<HttpRequest>,
        ahead: Vec<HttpRequest>,
    }

    impl Scripted {
        fn answer(mut self, status: u16, body: &str) -> Self {
            self.answers.push_back(Ok(HttpResponse {
                status,
                retry_after: None,
                body: body.as_bytes().to_vec(),
            }));
            self
        }
    }

    impl Transport for Scripted {
        fn send(&mut self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
            self.sent.push(request.clone());
            self.answers
                .pop_front()
                .expect("an unexpected request was sent")
        }

        fn send_ahead(&mut self, request: &HttpRequest) {
            self.ahead.push(request.clone());
        }
    }

    fn source(scope: HubspotScope) -> HubspotSource {
        HubspotSource {
            base_url: "https://api.hubapi.com/".into(),
            scope,
            properties: vec!["email".into(), "firstname".into()],
            filters: Vec::new(),
            with_companies: false,
        }
    }

    #[test]
    fn contacts_request_uses_the_documented_parameters() {
        let r = list_request(
            Object::Contacts,
            &source(HubspotScope::All),
            Some("abc=="),
            Listing::Live,
        );
        assert_eq!(r.method, Method::Get);
        assert_eq!(
            r.url,
            "https://api.hubapi.com/crm/v3/objects/contacts?limit=100&archived=false&properties=email,firstname,hs_merged_object_ids&after=abc%3D%3D"
        );
    }

    #[test]
    fn the_listing_brings_each_contacts_companies_inline() {
        let mut with = source(HubspotScope::All);
        with.with_companies = true;
        let mut t = Scripted::default().answer(
            200,
            r#"{"results":[
                {"id":"1","properties":{"email":"a@x.io"},"archived":false,
                 "associations":{"companies":{"results":[{"id":"9","type":"contact_to_company_unlabeled"},{"id":"7","type":"contact_to_company"}]}}},
                {"id":"2","properties":{"email":"b@x.io"},"archived":false}]}"#,
        );
        let page = fetch_page(&mut t, Object::Contacts, &with, None).unwrap();
        assert_eq!(t.sent.len(), 1, "no extra request");
        assert!(
            t.sent[0].url.ends_with("&associations=companies"),
            "{}",
            t.sent[0].url
        );
        assert_eq!(page.records[0].company_ids, ["7", "9"]);
        assert!(page.records[1].company_ids.is_empty());
        // Companies themselves are listed under their own path, without associations.
        let r = list_request(Object::Companies, &with, None, Listing::Live);
        assert!(
            r.url
                .starts_with("https://api.hubapi.com/crm/v3/objects/companies?limit=100")
        );
        assert!(!r.url.contains("associations"));
    }

    #[test]
    fn searched_contacts_get_their_companies_from_one_v4_batch_read() {
        let mut with = source(HubspotScope::Modified(window()));
        with.with_companies = true;
        let mut t = Scripted::default()
            .answer(200, &search_answer(&[(1, 2_000), (2, 3_000)], false))
            .answer(
                207,
                r#"{"results":[{"from":{"id":"2"},"to":[{"toObjectId":5,"associationTypes":[]}],
                               "paging":{"next":{"after":"NQ=="}}}],
                    "errors":[{"status":"error","category":"OBJECT_NOT_FOUND"}]}"#,
            )
            .answer(
                200,
                r#"{"results":[{"toObjectId":6,"associationTypes":[]}]}"#,
            );
        let page = fetch_page(&mut t, Object::Contacts, &with, None).unwrap();
        assert_eq!(
            t.sent[1].url,
            "https://api.hubapi.com/crm/v4/associations/contacts/companies/batch/read"
        );
        assert_eq!(
            serde_json::from_slice::<Value>(t.sent[1].body.as_ref().unwrap()).unwrap(),
            json!({"inputs": [{"id": "1"}, {"id": "2"}]})
        );
        assert_eq!(
            t.sent[2].url,
            "https://api.hubapi.com/crm/v4/objects/contacts/2/associations/companies?limit=500&after=NQ%3D%3D"
        );
        assert!(page.records[0].company_ids.is_empty());
        assert_eq!(page.records[1].company_ids, ["5", "6"]);
    }

    #[test]
    fn companies_contacts_pages_walk_the_companies_and_read_their_contacts() {
        let companies: Vec<String> = (1..=COMPANIES_PER_PAGE as u64 + 1)
            .map(|i| format!("c{i}"))
            .collect();
        let scope = HubspotScope::CompaniesContacts(companies.clone());
        let mut t = Scripted::default()
            .answer(
                200,
                r#"{"results":[
                    {"from":{"id":"c2"},"to":[{"toObjectId":11},{"toObjectId":12}]},
                    {"from":{"id":"c1"},"to":[{"toObjectId":12}]}]}"#,
            )
            .answer(
                200,
                r#"{"results":[{"id":"12","properties":{"email":"b@x.io"}},{"id":"11","properties":{"email":"a@x.io"}}]}"#,
            );
        let page = fetch_page(&mut t, Object::Contacts, &source(scope.clone()), None).unwrap();
        let body: Value = serde_json::from_slice(t.sent[0].body.as_ref().unwrap()).unwrap();
        assert_eq!(body["inputs"].as_array().unwrap().len(), COMPANIES_PER_PAGE);
        assert_eq!(
            t.sent[0].url,
            "https://api.hubapi.com/crm/v4/associations/companies/contacts/batch/read"
        );
        assert_eq!(
            t.sent[1].url,
            "https://api.hubapi.com/crm/v3/objects/contacts/batch/read?archived=false"
        );
        let got: Vec<(&str, Vec<String>)> = page
            .records
            .iter()
            .map(|r| (r.id.as_str(), r.company_ids.clone()))
            .collect();
        // Company order: c1's contact first, each contact once with all its listed companies.
        assert_eq!(
            got,
            [
                ("12", vec!["c1".to_owned(), "c2".to_owned()]),
                ("11", vec!["c2".to_owned()])
            ]
        );

        // The last company is the next page; then the scope is done.
        let next = page.next_cursor.unwrap();
        let mut t = Scripted::default().answer(200, r#"{"results":[]}"#);
        let page = fetch_page(&mut t, Object::Contacts, &source(scope), Some(&next)).unwrap();
        assert!(page.records.is_empty() && page.next_cursor.is_none());
        assert_eq!(t.sent.len(), 1, "no contacts, no batch read");
    }

    #[test]
    fn a_changed_company_list_resumes_after_the_last_company_read() {
        // Read up to company 20; since then 10 left and 5 and 25 arrived.
        let cursor = serde_json::to_string(&CompaniesCursor { after: "20".into() }).unwrap();
        let companies: Vec<String> = ["5", "30", "25", "20"]
            .iter()
            .map(|c| c.to_string())
            .collect();
        let mut t = Scripted::default().answer(200, r#"{"results":[]}"#);
        let page = fetch_page(
            &mut t,
            Object::Contacts,
            &source(HubspotScope::CompaniesContacts(companies)),
            Some(&cursor),
        )
        .unwrap();
        let body: Value = serde_json::from_slice(t.sent[0].body.as_ref().unwrap()).unwrap();
        // Numeric order, strictly after 20: 5 (new, before the cursor) is left
        // to the next run, 20 is not read twice.
        assert_eq!(body["inputs"], json!([{"id": "25"}, {"id": "30"}]));
        assert!(page.next_cursor.is_none());
    }

    fn window() -> TimeWindow {
        TimeWindow {
            since: 1_000,
            until: 9_000,
        }
    }

    /// A search answer: `(id, lastmodifieddate ms)` records, `more` = a next page.
    fn search_answer(records: &[(u64, u64)], more: bool) -> String {
        let results: Vec<Value> = records
            .iter()
            .map(|(id, at)| {
                json!({"id": id.to_string(), "archived": false,
                       "properties": {"hs_object_id": id.to_string(), "lastmodifieddate": at.to_string(), "email": format!("{id}@x.io")}})
            })
            .collect();
        let mut answer = json!({"total": 99_999, "results": results});
        if more {
            answer["paging"] = json!({"next": {"after": "200", "link": "?after=200"}});
        }
        answer.to_string()
    }

    fn ids(page: &Page) -> Vec<&str> {
        page.records.iter().map(|r| r.id.as_str()).collect()
    }

    fn cursor(page: &Page) -> SearchCursor {
        serde_json::from_str(page.next_cursor.as_deref().expect("a next page")).unwrap()
    }

    #[test]
    fn owners_are_listed_page_by_page_with_their_emails() {
        let mut scripted = Scripted::default()
            .answer(
                200,
                r#"{"results": [{"id": "101", "email": " Sam@Acme.io ", "type": "PERSON"},
                                {"id": "102", "email": null}, {"firstName": "no id"}],
                    "paging": {"next": {"after": "2"}}}"#,
            )
            .answer(
                200,
                r#"{"results": [{"id": 103, "email": "lee@acme.io", "teams": []}]}"#,
            );
        let owners = list_owners(&mut scripted, &source(HubspotScope::All)).unwrap();
        let owners: Vec<(&str, Option<&str>)> = owners
            .iter()
            .map(|o| (o.id.as_str(), o.email.as_deref()))
            .collect();
        assert_eq!(
            owners,
            [
                ("101", Some("sam@acme.io")),
                ("102", None),
                ("103", Some("lee@acme.io"))
            ]
        );
        assert_eq!(
            scripted.sent[0].url,
            "https://api.hubapi.com/crm/v3/owners?limit=100&archived=false"
        );
        assert_eq!(
            scripted.sent[1].url,
            "https://api.hubapi.com/crm/v3/owners?limit=100&archived=false&after=2"
        );
    }

    #[test]
    fn companies_are_found_by_domain_through_search_paged_by_after() {
        let mut scripted = Scripted::default()
            .answer(
                200,
                &json!({"total": 2, "results": [{"id": "9", "properties": {"domain": "acme.com"}}],
                        "paging": {"next": {"after": "1"}}})
                .to_string(),
            )
            .answer(
                200,
                &json!({"total": 2, "results": [{"id": "12", "properties": {"domain": "beta.io", "name": null}}]})
                    .to_string(),
            );
        let source = HubspotSource {
            properties: vec!["name".into(), "domain".into()],
            ..source(HubspotScope::Domains(vec![
                "Acme.com".into(),
                "beta.io".into(),
            ]))
        };
        let first = fetch_page(&mut scripted, Object::Companies, &source, None).unwrap();
        assert_eq!(ids(&first), ["9"]);
        let second = fetch_page(
            &mut scripted,
            Object::Companies,
            &source,
            first.next_cursor.as_deref(),
        )
        .unwrap();
        assert_eq!(ids(&second), ["12"]);
        assert_eq!(second.next_cursor, None);
        let sent: Vec<Value> = scripted
            .sent
            .iter()
            .map(|r| serde_json::from_slice(r.body.as_ref().unwrap()).unwrap())
            .collect();
        assert_eq!(
            scripted.sent[0].url,
            "https://api.hubapi.com/crm/v3/objects/companies/search"
        );
        assert_eq!(
            sent[0]["filterGroups"],
            json!([{"filters": [{"propertyName": "domain", "operator": "IN", "values": ["acme.com", "beta.io"]}]}])
        );
        assert_eq!(sent[0].get("after"), None);
        assert_eq!(sent[1]["after"], "1");
        // Contacts have no domain: asking is the caller's bug, not a request.
        assert!(fetch_page(&mut scripted, Object::Contacts, &source, None).is_err());
    }

    #[test]
    fn the_search_request_is_the_documented_body() {
        let source = source(HubspotScope::Modified(window()));
        let r = search_request(
            Object::Contacts,
            &source,
            Some(window().until),
            &SearchCursor::Range {
                from: 1_000,
                seen: vec![],
            },
            &[],
        );
        assert_eq!(r.method, Method::Post);
        assert_eq!(
            r.url,
            "https://api.hubapi.com/crm/v3/objects/contacts/search"
        );
        let body: Value = serde_json::from_slice(r.body.as_ref().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({
                "filterGroups": [{"filters": [
                    {"propertyName": "lastmodifieddate", "operator": "GTE", "value": "1000"},
                    {"propertyName": "lastmodifieddate", "operator": "LTE", "value": "9000"}]}],
                "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
                "properties": ["email", "firstname", "hs_merged_object_ids", "lastmodifieddate"],
                "limit": 200
            })
        );
        let r = search_request(
            Object::Contacts,
            &source,
            Some(window().until),
            &SearchCursor::Ties {
                at: 5_000,
                after: Some("77".into()),
                seen: vec![],
            },
            &[],
        );
        let body: Value = serde_json::from_slice(r.body.as_ref().unwrap()).unwrap();
        assert_eq!(
            body["filterGroups"],
            json!([{"filters": [
                {"propertyName": "lastmodifieddate", "operator": "EQ", "value": "5000"},
                {"propertyName": "hs_object_id", "operator": "GT", "value": "77"}]}])
        );
        assert_eq!(
            body["sorts"],
            json!([{"propertyName": "hs_object_id", "direction": "ASCENDING"}])
        );
    }

    #[test]
    fn a_search_page_continues_from_its_newest_time_skipping_what_it_returned() {
        let start = SearchCursor::Range {
            from: 1_000,
            seen: vec![],
        };
        let page = parse_search_page(
            search_answer(&[(1, 1_000), (2, 2_000), (3, 3_000), (4, 3_000)], true).as_bytes(),
            &start,
        )
        .unwrap();
        assert_eq!(ids(&page), ["1", "2", "3", "4"]);
        let next = cursor(&page);
        assert_eq!(
            next,
            SearchCursor::Range {
                from: 3_000,
                seen: vec!["3".into(), "4".into()]
            }
        );
        // The next query starts at 3,000 again: 3 and 4 come back and are
        // dropped, 5 (same time, past the old page) is new.
        let page = parse_search_page(
            search_answer(&[(4, 3_000), (3, 3_000), (5, 3_000), (6, 4_000)], false).as_bytes(),
            &next,
        )
        .unwrap();
        assert_eq!(ids(&page), ["5", "6"]);
        assert_eq!(page.next_cursor, None);
    }

    #[test]
    fn a_page_sharing_one_timestamp_is_drained_in_id_order() {
        let start = SearchCursor::Range {
            from: 1_000,
            seen: vec![],
        };
        let page = parse_search_page(
            search_answer(&[(9, 2_000), (4, 2_000)], true).as_bytes(),
            &start,
        )
        .unwrap();
        let ties = cursor(&page);
        assert_eq!(
            ties,
            SearchCursor::Ties {
                at: 2_000,
                after: None,
                seen: vec!["9".into(), "4".into()]
            }
        );
        let page = parse_search_page(
            search_answer(&[(4, 2_000), (7, 2_000), (9, 2_000), (12, 2_000)], true).as_bytes(),
            &ties,
        )
        .unwrap();
        assert_eq!(ids(&page), ["7", "12"]);
        let SearchCursor::Ties { after, .. } = cursor(&page) else {
            panic!("still draining")
        };
        assert_eq!(after.as_deref(), Some("12"));
        let page = parse_search_page(search_answer(&[], false).as_bytes(), &cursor(&page)).unwrap();
        assert!(page.records.is_empty());
        assert_eq!(
            cursor(&page),
            SearchCursor::Range {
                from: 2_001,
                seen: vec![]
            }
        );
    }

    #[test]
    fn merged_ids_and_modification_times_are_read() {
        let page = parse_objects_page(
            br#"{"results":[
                {"id":"5","properties":{"hs_merged_object_ids":"3; 4;;5;3","lastmodifieddate":"2024-06-01T00:00:00.250Z"}},
                {"id":"6","properties":{"hs_merged_object_ids":null},"updatedAt":"1970-01-01T00:00:01+00:00"},
                {"id":"7","properties":{"lastmodifieddate":"1717200000000"}},
                {"id":"8","properties":{"lastmodifieddate":"yesterday"}}
            ]}"#,
            Listing::Live,
        )
        .unwrap();
        assert_eq!(page.records[0].merged_ids, ["3", "4"]);
        assert_eq!(page.records[0].modified_at, Some(1_717_200_000_250));
        assert!(page.records[1].merged_ids.is_empty());
        assert_eq!(page.records[1].modified_at, Some(1_000));
        assert_eq!(page.records[2].modified_at, Some(1_717_200_000_000));
        assert_eq!(page.records[3].modified_at, None);
    }

    /// The object's keys are matched without a copy and `updatedAt` is
    /// borrowed from the answer; escaped keys and values, and types HubSpot
    /// does not send, read as they did through a JSON tree.
    #[test]
    fn escaped_keys_and_odd_ids_and_times_read_as_a_json_tree_would() {
        let page = parse_objects_page(
            br#"{"results":[
                {"\u0069d":"1","properties":{},"upd\u0061tedAt":"1970-01-01T00:00:02\u002B00:00"},
                {"id":2.5,"updatedAt":{"at":"1970-01-01T00:00:03Z"},"properties":{"lastmodifieddate":null}},
                {"id":3,"updatedAt":["1970-01-01T00:00:03Z"],"ignored":{"updatedAt":"x","id":"9"}},
                {"id":"","properties":{}}
            ]}"#,
            Listing::Live,
        );
        let e = page.unwrap_err();
        assert!(e.message.contains("result #3 has no id"), "{}", e.message);
        let page = parse_objects_page(
            br#"{"results":[
                {"\u0069d":"1","properties":{},"upd\u0061tedAt":"1970-01-01T00:00:02\u002B00:00"},
                {"id":2.5,"updatedAt":{"at":"1970-01-01T00:00:03Z"},"properties":{"lastmodifieddate":null}},
                {"id":3,"updatedAt":["1970-01-01T00:00:03Z"],"ignored":{"updatedAt":"x","id":"9"}},
                {"id":true}
            ]}"#,
            Listing::Live,
        );
        assert!(page.unwrap_err().message.contains("result #3 has no id"));
        let page = parse_objects_page(
            br#"{"results":[
                {"\u0069d":"1","properties":{},"upd\u0061tedAt":"1970-01-01T00:00:02\u002B00:00"},
                {"id":2.5,"updatedAt":{"at":"1970-01-01T00:00:03Z"},"properties":{"lastmodifieddate":null}},
                {"id":3,"updatedAt":["1970-01-01T00:00:03Z"],"ignored":{"updatedAt":"x","id":"9"}}
            ]}"#,
            Listing::Live,
        )
        .unwrap();
        let read: Vec<_> = page
            .records
            .iter()
            .map(|r| (r.id.as_str(), r.modified_at))
            .collect();
        assert_eq!(read, [("1", Some(2_000)), ("2.5", None), ("3", None)]);
    }

    #[test]
    fn a_cursor_this_component_did_not_write_is_an_invalid_response() {
        let mut t = Scripted::default();
        let e = fetch_page(
            &mut t,
            Object::Contacts,
            &source(HubspotScope::Modified(window())),
            Some("cur-7"),
        )
        .unwrap_err();
        assert_eq!(e.category, ErrorCategory::InvalidResponse);
        assert!(t.sent.is_empty());
    }

    #[test]
    fn a_page_with_nulls_unknown_fields_and_no_paging_is_the_last_page() {
        let body = br#"{"results":[
            {"id":"1","properties":{"email":"a@x.io","firstname":null,"hs_object_id":"1"},
             "createdAt":"2024-01-01T00:00:00Z","updatedAt":"2024-02-01T00:00:00Z","archived":false,"extra":{"x":1}},
            {"id":2,"properties":{"lastmodifieddate":5}}
        ],"total":2}"#;
        let page = parse_objects_page(body, Listing::Live).unwrap();
        assert_eq!(page.next_cursor, None);
        assert_eq!(page.records.len(), 2);
        let first = &page.records[0];
        assert_eq!(first.id, "1");
        assert_eq!(first.modified_at, Some(1_706_745_600_000));
        assert!(
            first
                .properties
                .iter()
                .any(|p| p.name == "firstname" && p.value.is_none())
        );
        assert_eq!(page.records[1].id, "2");
        assert_eq!(page.records[1].properties[0].value.as_deref(), Some("5"));
    }

    #[test]
    fn empty_and_odd_pages_are_accepted() {
        assert!(
            parse_objects_page(br#"{"results":[]}"#, Listing::Live)
                .unwrap()
                .records
                .is_empty()
        );
        assert!(
            parse_objects_page(br#"{}"#, Listing::Live)
                .unwrap()
                .records
                .is_empty()
        );
        let page = parse_objects_page(
            br#"{"results":[],"paging":{"next":{"after":"","link":"x"}}}"#,
            Listing::Live,
        )
        .unwrap();
        assert_eq!(page.next_cursor, None);
        let page = parse_objects_page(
            br#"{"results":[{"id":"9"}],"paging":{"next":{"after":"9"}}}"#,
            Listing::Live,
        )
        .unwrap();
        assert_eq!(page.next_cursor.as_deref(), Some("9"));
        assert!(page.records[0].properties.is_empty());
    }

    #[test]
    fn archived_results_never_come_back_as_live_records() {
        let page = parse_objects_page(
            br#"{"results":[{"id":"1","archived":true},{"id":"2"}]}"#,
            Listing::Live,
        )
        .unwrap();
        assert_eq!(
            page.records
                .iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>(),
            ["2"]
        );
    }

    #[test]
    fn the_archived_listing_keeps_only_records_marked_archived() {
        let mut t = Scripted::default().answer(
            200,
            r#"{"results":[{"id":"7","archived":true,"archivedAt":"2024-06-01T00:00:00Z"},{"id":"8"},{"id":"9","archived":false}]}"#,
        );
        let page = fetch_page(
            &mut t,
            Object::Contacts,
            &source(HubspotScope::Archived),
            None,
        )
        .unwrap();
        assert!(t.sent[0].url.contains("archived=true"));
        assert_eq!(
            page.records
                .iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>(),
            ["7"]
        );
    }

    #[test]
    fn malformed_bodies_are_invalid_responses_naming_the_problem() {
        let e = parse_objects_page(b"{\"results\":[{\"id\":\"1\"", Listing::Live).unwrap_err();
        assert_eq!(e.category, ErrorCategory::InvalidResponse);
        assert!(e.retryable);
        let e =
            parse_objects_page(br#"{"results":[{"properties":{}}]}"#, Listing::Live).unwrap_err();
        assert!(e.message.contains("result #0 has no id"), "{}", e.message);
        let e = parse_objects_page(br#"{"results":"nope"}"#, Listing::Live).unwrap_err();
        assert_eq!(e.category, ErrorCategory::InvalidResponse);
    }

    #[test]
    fn all_contacts_follow_the_after_cursor() {
        let mut t = Scripted::default().answer(
            200,
            r#"{"results":[{"id":"1","properties":{"email":"a@x.io"}}],"paging":{"next":{"after":"NTI1Cg%3D%3D","link":"?after=NTI1Cg%3D%3D"}}}"#,
        );
        let page = fetch_page(&mut t, Object::Contacts, &source(HubspotScope::All), None).unwrap();
        assert_eq!(page.next_cursor.as_deref(), Some("NTI1Cg%3D%3D"));
        assert!(!t.sent[0].url.contains("after="));
    }

    /// A request sent ahead that is not the next page's exact request is
    /// a wasted round trip and rate-limit token: the next page sends its own.
    #[test]
    fn the_request_sent_ahead_is_the_one_the_next_page_sends() {
        let listing = |more: bool| {
            let mut answer = json!({"results": [{"id": "1", "properties": {"email": "a@x.io"}}]});
            if more {
                answer["paging"] = json!({"next": {"after": "NTI1Cg%3D%3D"}});
            }
            answer.to_string()
        };
        let mut pushed = source(HubspotScope::All);
        pushed.filters = vec![crate::types::Filter {
            property: "email".into(),
            op: crate::types::FilterOp::IsNotEmpty,
            value_type: crate::types::FieldType::Text,
        }];
        let cases = [
            (source(HubspotScope::All), listing(true), listing(false)),
            (
                source(HubspotScope::Archived),
                listing(true),
                listing(false),
            ),
            (
                source(HubspotScope::Modified(window())),
                search_answer(&[(1, 2_000), (2, 3_000)], true),
                search_answer(&[(3, 4_000)], false),
            ),
            (
                pushed,
                search_answer(&[(1, 2_000), (2, 3_000)], true),
                search_answer(&[(3, 4_000)], false),
            ),
        ];
        for (source, first, last) in cases {
            let scope = format!("{:?}", source.scope);
            let mut t = Scripted::default().answer(200, &first).answer(200, &last);
            let page = fetch_page(&mut t, Object::Contacts, &source, None).unwrap();
            assert_eq!(t.ahead.len(), 1, "{scope}");
            let next = fetch_page(
                &mut t,
                Object::Contacts,
                &source,
                page.next_cursor.as_deref(),
            );
            assert_eq!(next.unwrap().next_cursor, None, "{scope}");
            assert_eq!(t.sent.len(), 2, "{scope}");
            assert_eq!(t.ahead[0], t.sent[1], "{scope}");
            // The last page has no next page to send ahead.
            assert_eq!(t.ahead.len(), 1, "{scope}");
        }

        let members = |after: Option<&str>| {
            let mut answer = json!({"results": [{"recordId": "7"}]});
            if let Some(after) = after {
                answer["paging"] = json!({"next": {"after": after}});
            }
            answer.to_string()
        };
        let batch = r#"{"status":"COMPLETE","results":[{"id":"7","properties":{}}]}"#;
        let list = source(HubspotScope::ListMembers("42".into()));
        let mut t = Scripted::default()
            .answer(200, &members(Some("m2")))
            .answer(200, batch)
            .answer(200, &members(None))
            .answer(200, batch);
        let page = fetch_page(&mut t, Object::Contacts, &list, None).unwrap();
        // Ahead before the page's batch read, so the two overlap.
        assert_eq!((t.ahead.len(), t.sent.len()), (1, 2));
        fetch_page(&mut t, Object::Contacts, &list, page.next_cursor.as_deref()).unwrap();
        assert_eq!(t.ahead, [t.sent[2].clone()]);
    }

    #[test]
    fn list_members_are_read_in_batches_of_100_in_list_order() {
        let ids: Vec<String> = (1..=150).map(|i| i.to_string()).collect();
        let memberships = serde_json::json!({
            "results": ids.iter().map(|id| serde_json::json!({"recordId": id, "membershipTimestamp": "2024-01-01T00:00:00Z"})).collect::<Vec<_>>(),
            "paging": {"next": {"after": "m2"}}
        });
        let batch = |range: std::ops::RangeInclusive<u32>| {
            let mut results: Vec<_> = range
                .map(|i| serde_json::json!({"id": i.to_string(), "properties": {"email": format!("{i}@x.io")}}))
                .collect();
            results.reverse();
            serde_json::json!({"status": "COMPLETE", "results": results}).to_string()
        };
        let mut t = Scripted::default()
            .answer(200, &memberships.to_string())
            .answer(200, &batch(1..=100))
            .answer(207, &batch(101..=149)); // 150 was deleted: absent from the answer
        let page = fetch_page(
            &mut t,
            Object::Contacts,
            &source(HubspotScope::ListMembers("42".into())),
            Some("m1"),
        )
        .unwrap();
        assert_eq!(
            t.sent[0].url,
            "https://api.hubapi.com/crm/v3/lists/42/memberships?limit=250&after=m1"
        );
        assert_eq!(t.sent[1].method, Method::Post);
        assert_eq!(
            t.sent[1].url,
            "https://api.hubapi.com/crm/v3/objects/contacts/batch/read?archived=false"
        );
        let sent: Value = serde_json::from_slice(t.sent[1].body.as_ref().unwrap()).unwrap();
        assert_eq!(sent["inputs"].as_array().unwrap().len(), 100);
        assert_eq!(
            sent["properties"],
            serde_json::json!(["email", "firstname", "hs_merged_object_ids"])
        );
        assert_eq!(page.records.len(), 149);
        assert_eq!(page.records[0].id, "1");
        assert_eq!(page.records[148].id, "149");
        assert_eq!(page.next_cursor.as_deref(), Some("m2"));
    }

    #[test]
    fn an_empty_list_page_sends_no_batch_read() {
        let mut t = Scripted::default().answer(200, r#"{"results":[]}"#);
        let page = fetch_page(
            &mut t,
            Object::Contacts,
            &source(HubspotScope::ListMembers("7".into())),
            None,
        )
        .unwrap();
        assert!(page.records.is_empty() && page.next_cursor.is_none());
        assert_eq!(t.sent.len(), 1);
    }

    #[test]
    fn the_property_catalogue_is_read_with_options() {
        let mut t = Scripted::default().answer(
            200,
            r#"{"results":[
                {"name":"email","label":"Email","type":"string","fieldType":"text","options":[],"hidden":false},
                {"name":"lifecyclestage","label":"Lifecycle stage","type":"enumeration","options":[{"label":"Lead","value":"lead"},{"label":"Customer","value":"customer"}]},
                {"name":"old_prop","label":"Old","type":"string","archived":true},
                {"label":"nameless"}
            ]}"#,
        );
        let props = list_properties(&mut t, Object::Contacts, &source(HubspotScope::All)).unwrap();
        assert_eq!(
            t.sent[0].url,
            "https://api.hubapi.com/crm/v3/properties/contacts"
        );
        assert_eq!(
            props.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["email", "lifecyclestage"]
        );
        assert_eq!(props[1].options, ["lead", "customer"]);
        assert_eq!(props[1].value_type, "enumeration");
    }

    #[test]
    fn a_deleted_list_is_list_not_found() {
        let mut t = Scripted::default().answer(
            404,
            r#"{"status":"error","message":"Not found","category":"OBJECT_NOT_FOUND"}"#,
        );
        let e = fetch_page(
            &mut t,
            Object::Contacts,
            &source(HubspotScope::ListMembers("7".into())),
            None,
        )
        .unwrap_err();
        assert_eq!(e.category, ErrorCategory::ListNotFound);
    }

    #[test]
    fn transport_failures_are_transient_and_denials_are_permission_errors() {
        let mut t = Scripted::default();
        t.answers
            .push_back(Err(TransportError::Failed("connection reset".into())));
        t.answers
            .push_back(Err(TransportError::Denied("HttpRequestDenied".into())));
        let e = fetch_page(&mut t, Object::Contacts, &source(HubspotScope::All), None).unwrap_err();
        assert_eq!(e.category, ErrorCategory::Transient);
        assert!(
            e.message
                .contains("GET /crm/v3/objects/contacts did not complete")
        );
        let e = fetch_page(&mut t, Object::Contacts, &source(HubspotScope::All), None).unwrap_err();
        assert_eq!(e.category, ErrorCategory::PermissionDenied);
    }
}
