//! HubSpot associations (S2, S3): which companies a contact belongs to, and
//! which contacts a company has. The v3 listing returns them inline when asked
//! (`associations=companies`); everything else goes through the v4 API.

use crate::errors;
use crate::transport::{HttpRequest, Method, encode_component, parse_json};
use crate::types::SyncError;
use serde::Deserialize;
use serde_json::{Value, json};

/// Associations per object in one v4 answer page (the API's maximum).
pub const OBJECT_PAGE_LIMIT: usize = 500;

/// One object's associations from a v4 batch read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Associated {
    /// The object asked about.
    pub from: String,
    /// The associated objects' ids, primary association first.
    pub to: Vec<String>,
    /// The `after` cursor when the object has more than one page of them.
    pub more: Option<String>,
}

/// `POST /crm/v4/associations/{from}/{to}/batch/read` for `ids`.
pub fn batch_read_request(base: &str, from: &str, to: &str, ids: &[String]) -> HttpRequest {
    let body = json!({ "inputs": ids.iter().map(|id| json!({ "id": id })).collect::<Vec<_>>() });
    HttpRequest {
        method: Method::Post,
        url: format!("{base}/crm/v4/associations/{from}/{to}/batch/read"),
        body: Some(body.to_string().into_bytes()),
    }
}

/// `GET /crm/v4/objects/{from}/{id}/associations/{to}?limit=500[&after=c]`:
/// the rest of one object's associations.
pub fn object_request(base: &str, from: &str, id: &str, to: &str, after: &str) -> HttpRequest {
    HttpRequest {
        method: Method::Get,
        url: format!(
            "{base}/crm/v4/objects/{from}/{}/associations/{to}?limit={OBJECT_PAGE_LIMIT}&after={}",
            encode_component(id),
            encode_component(after)
        ),
        body: None,
    }
}

#[derive(Deserialize)]
struct BatchAnswer {
    #[serde(default)]
    results: Option<Vec<Value>>,
}

/// Reads a v4 batch read answer (HTTP 200, or 207 when some ids have no
/// associations: those are in `errors`, and simply have none).
pub fn parse_batch_read(body: &[u8]) -> Result<Vec<Associated>, SyncError> {
    let answer: BatchAnswer = parse_json(body, "associations answer")?;
    let mut read = Vec::new();
    for result in answer.results.unwrap_or_default() {
        let Some(from) = result
            .get("from")
            .and_then(|f| f.get("id"))
            .and_then(id_text)
        else {
            return Err(errors::invalid_response(
                "an associations result has no `from.id`",
            ));
        };
        read.push(Associated {
            from,
            to: targets(result.get("to")),
            more: next_after(&result),
        });
    }
    Ok(read)
}

/// Reads one page of `GET /crm/v4/objects/.../associations/...`.
pub fn parse_object_page(body: &[u8]) -> Result<(Vec<String>, Option<String>), SyncError> {
    let answer: Value = parse_json(body, "associations page")?;
    Ok((targets(answer.get("results")), next_after(&answer)))
}

/// The ids of v4 association entries (`toObjectId`), primary ones first.
fn targets(entries: Option<&Value>) -> Vec<String> {
    let mut primary = Vec::new();
    let mut other = Vec::new();
    for entry in entries.and_then(Value::as_array).into_iter().flatten() {
        let Some(id) = entry.get("toObjectId").and_then(id_text) else {
            continue;
        };
        let is_primary = entry
            .get("associationTypes")
            .and_then(Value::as_array)
            .is_some_and(|types| {
                types.iter().any(|t| {
                    t.get("label").and_then(Value::as_str) == Some("Primary")
                        || (t.get("category").and_then(Value::as_str) == Some("HUBSPOT_DEFINED")
                            && t.get("typeId").and_then(Value::as_u64) == Some(1))
                })
            });
        if is_primary { &mut primary } else { &mut other }.push(id);
    }
    dedup(primary.into_iter().chain(other))
}

/// The companies of a v3 object's inline `associations` (asked for with
/// `associations=companies`), the primary one (`contact_to_company`) first.
pub fn companies_of_listing(associations: &Value) -> Vec<String> {
    let entries = associations
        .get("companies")
        .and_then(|c| c.get("results"))
        .and_then(Value::as_array);
    let mut primary = Vec::new();
    let mut other = Vec::new();
    for entry in entries.into_iter().flatten() {
        let Some(id) = entry.get("id").and_then(id_text) else {
            continue;
        };
        let is_primary = entry.get("type").and_then(Value::as_str) == Some("contact_to_company");
        if is_primary { &mut primary } else { &mut other }.push(id);
    }
    dedup(primary.into_iter().chain(other))
}

fn dedup(ids: impl Iterator<Item = String>) -> Vec<String> {
    let mut unique: Vec<String> = Vec::new();
    for id in ids {
        if !unique.contains(&id) {
            unique.push(id);
        }
    }
    unique
}

/// v4 ids are numbers (`toObjectId`) or strings (`from.id`).
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn next_after(value: &Value) -> Option<String> {
    value
        .get("paging")?
        .get("next")?
        .get("after")
        .and_then(id_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_answer_lists_primary_companies_first_and_tolerates_207_errors() {
        let body = json!({
            "status": "COMPLETE",
            "results": [
                {"from": {"id": "1"}, "to": [
                    {"toObjectId": 20, "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 279, "label": null}]},
                    {"toObjectId": 10, "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 1, "label": "Primary"},
                                                            {"category": "HUBSPOT_DEFINED", "typeId": 279, "label": null}]}]},
                {"from": {"id": "2"}, "to": [{"toObjectId": 30, "associationTypes": []}],
                 "paging": {"next": {"after": "MzA=", "link": "?after=MzA="}}}
            ],
            "numErrors": 1,
            "errors": [{"status": "error", "category": "OBJECT_NOT_FOUND", "message": "No contacts are associated with company 3."}]
        });
        let read = parse_batch_read(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            read,
            [
                Associated {
                    from: "1".into(),
                    to: vec!["10".into(), "20".into()],
                    more: None
                },
                Associated {
                    from: "2".into(),
                    to: vec!["30".into()],
                    more: Some("MzA=".into())
                }
            ]
        );
        assert!(parse_batch_read(b"{\"results\": [{\"to\": []}]}").is_err());
        assert!(parse_batch_read(b"<html>").is_err());
        assert_eq!(parse_batch_read(b"{}").unwrap(), []);
    }

    #[test]
    fn inline_listing_associations_put_the_primary_company_first() {
        let associations = json!({"companies": {"results": [
            {"id": "7", "type": "contact_to_company_unlabeled"},
            {"id": "5", "type": "contact_to_company"},
            {"id": "5", "type": "contact_to_company_unlabeled"}]}});
        assert_eq!(companies_of_listing(&associations), ["5", "7"]);
        assert!(companies_of_listing(&json!({})).is_empty());
        assert!(companies_of_listing(&json!(null)).is_empty());
    }

    #[test]
    fn requests_are_the_documented_ones() {
        let r = batch_read_request(
            "https://api.hubapi.com",
            "contacts",
            "companies",
            &["1".into()],
        );
        assert_eq!(
            r.url,
            "https://api.hubapi.com/crm/v4/associations/contacts/companies/batch/read"
        );
        assert_eq!(
            serde_json::from_slice::<Value>(r.body.as_ref().unwrap()).unwrap(),
            json!({"inputs": [{"id": "1"}]})
        );
        let r = object_request("https://x", "companies", "9", "contacts", "MzA=");
        assert_eq!(
            r.url,
            "https://x/crm/v4/objects/companies/9/associations/contacts?limit=500&after=MzA%3D"
        );
    }
}
