//! Writing records to a CRM: HubSpot batch create/update and Salesforce
//! sObject Collections, each record's result read back on its own (E9).

use crate::errors;
use crate::pairing::{self, Placement};
use crate::salesforce;
use crate::transport::{self, HttpRequest, Method, Transport, parse_json};
use crate::types::{
    Destination, FieldData, HttpFailure, OutgoingRecord, SalesforceDestination, SalesforceObject,
    SyncError, WriteOutcome, WriteResult,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// HubSpot's batch endpoints take at most 100 inputs.
pub const HUBSPOT_BATCH: usize = 100;
/// sObject Collections take at most 200 records.
pub const SALESFORCE_BATCH: usize = 200;
/// HubSpot's default contact-to-company association label: the primary company.
const PRIMARY_COMPANY: u32 = 1;

/// The association `types` entry making a company a contact's primary one.
fn primary_company_type() -> Value {
    json!([{ "associationCategory": "HUBSPOT_DEFINED", "associationTypeId": PRIMARY_COMPANY }])
}

/// Writes `records` to `destination`: one result per record, in order.
pub fn write_records(
    transport: &mut impl Transport,
    destination: &Destination,
    records: &[OutgoingRecord],
) -> Result<Vec<WriteResult>, SyncError> {
    let mut results = Vec::with_capacity(records.len());
    let mut failure: Option<SyncError> = None;
    for batch in batches(destination, records) {
        if let Some(error) = &failure {
            // Not sent: an earlier request failed.
            results.extend(batch.iter().map(|r| failed(&r.key, error)));
            continue;
        }
        let written = match destination {
            Destination::HubspotContacts(base) => {
                hubspot_batch(transport, base, "contacts", &batch)
            }
            Destination::HubspotCompanies(base) => {
                hubspot_batch(transport, base, "companies", &batch)
            }
            Destination::Salesforce(org) => salesforce_batch(transport, org, &batch),
        };
        match written {
            Ok(written) => results.extend(written),
            // Nothing landed yet: the call's own failure.
            Err(error) if results.is_empty() => return Err(error),
            // Earlier requests landed: their results stand, these failed.
            Err(error) => {
                results.extend(batch.iter().map(|r| failed(&r.key, &error)));
                failure = Some(error);
            }
        }
    }
    // Back in the caller's order.
    results.sort_by_key(|r| records.iter().position(|o| o.key == r.key));
    Ok(results)
}

/// The requests `records` go in: creates and updates apart (different
/// endpoints), each at most the API's batch size. HubSpot creates that no
/// content could pair with their result (see [`pairing`]) go one per request.
fn batches<'a>(
    destination: &Destination,
    records: &'a [OutgoingRecord],
) -> Vec<Vec<&'a OutgoingRecord>> {
    let (creates, updates): (Vec<&OutgoingRecord>, Vec<&OutgoingRecord>) =
        records.iter().partition(|r| r.id.is_none());
    let (size, object) = match destination {
        Destination::Salesforce(_) => (SALESFORCE_BATCH, None),
        Destination::HubspotContacts(_) => (HUBSPOT_BATCH, Some("contacts")),
        Destination::HubspotCompanies(_) => (HUBSPOT_BATCH, Some("companies")),
    };
    let mut batches: Vec<Vec<&OutgoingRecord>> = Vec::new();
    let creates = match object {
        Some(object) => {
            let (pairable, alone) = pairing::split_creates(object, &creates);
            batches.extend(alone.into_iter().map(|record| vec![record]));
            pairable
        }
        None => creates,
    };
    for group in [creates, updates] {
        batches.extend(group.chunks(size).map(<[_]>::to_vec));
    }
    batches
}

// ----- HubSpot ---------------------------------------------------------------

/// A HubSpot property value: HubSpot takes text for every type; `""` clears.
fn hubspot_value(value: Option<&FieldData>) -> String {
    match value {
        None => String::new(),
        Some(FieldData::Text(text) | FieldData::Date(text) | FieldData::DateTime(text)) => {
            text.clone()
        }
        Some(FieldData::Number(n)) => number_text(*n),
        Some(FieldData::Boolean(b)) => b.to_string(),
        Some(FieldData::Multi(values)) => values.join(";"),
    }
}

/// `17`, not `17.0`: what HubSpot and people write for whole numbers.
fn number_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

/// The request for one batch: create (no ids) or update.
pub fn hubspot_request(base: &str, object: &str, batch: &[&OutgoingRecord]) -> HttpRequest {
    let create = batch.iter().all(|r| r.id.is_none());
    let inputs: Vec<Value> = batch
        .iter()
        .map(|record| {
            let properties: Map<String, Value> = record
                .values
                .iter()
                .map(|v| (v.name.clone(), json!(hubspot_value(v.value.as_ref()))))
                .collect();
            let mut input = json!({"properties": properties, "objectWriteTraceId": record.key});
            match &record.id {
                Some(id) => input["id"] = json!(id),
                // The create schema lists `associations` as required.
                None => {
                    input["associations"] = match (&record.company, object) {
                        (Some(company), "contacts") => json!([{
                            "to": { "id": company },
                            "types": primary_company_type(),
                        }]),
                        _ => json!([]),
                    }
                }
            }
            input
        })
        .collect();
    HttpRequest {
        method: Method::Post,
        url: format!(
            "{}/crm/v3/objects/{object}/batch/{}",
            base.trim_end_matches('/'),
            if create { "create" } else { "update" }
        ),
        body: Some(
            serde_json::to_vec(&json!({ "inputs": inputs })).expect("a request body serialises"),
        ),
    }
}

#[derive(Deserialize)]
struct HubspotBatchAnswer {
    #[serde(default)]
    results: Vec<HubspotWritten>,
    #[serde(default)]
    errors: Vec<HubspotBatchError>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HubspotWritten {
    id: Value,
    #[serde(default)]
    object_write_trace_id: Option<String>,
    /// Null when a server sends it so: no properties.
    #[serde(default, deserialize_with = "null_as_empty")]
    properties: Map<String, Value>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
    Ok(Option::<Map<String, Value>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize, Default)]
struct HubspotBatchError {
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    context: Map<String, Value>,
    #[serde(default)]
    errors: Vec<HubspotErrorDetail>,
}

#[derive(Deserialize, Default)]
struct HubspotErrorDetail {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    context: Map<String, Value>,
}

/// Sends one batch; a batch refused whole for its content (400, 409: HubSpot
/// names no record; 404: one of the records no longer exists) is sent again
/// one record per request, so one bad record does not hold back the rest.
fn hubspot_batch(
    transport: &mut impl Transport,
    base: &str,
    object: &str,
    batch: &[&OutgoingRecord],
) -> Result<Vec<WriteResult>, SyncError> {
    let request = hubspot_request(base, object, batch);
    match hubspot_write(transport, &request)? {
        Ok(body) => {
            let mut placement = read_hubspot_answer(&body, object, batch)?;
            reread_creates(transport, base, object, &mut placement)?;
            let mut results = answered(batch, placement);
            // A create carried its company; an update associates it after.
            if object == "contacts" && batch.iter().all(|r| r.id.is_some()) {
                associate_companies(transport, base, batch, &mut results)?;
            }
            Ok(results)
        }
        Err(_) if batch.len() > 1 => {
            let mut results = Vec::new();
            for record in batch {
                results.extend(hubspot_batch(transport, base, object, &[record])?);
            }
            Ok(results)
        }
        Err(failure) if failure.status == 404 => Ok(vec![rejected(
            &batch[0].key,
            errors::rejected_record(
                &batch[0].key,
                None,
                &format!(
                    "HubSpot has no record {} any more (deleted or merged away)",
                    batch[0].id.as_deref().unwrap_or("?")
                ),
                "HubSpot",
            ),
        )]),
        Err(failure) => {
            let error: HubspotBatchError = serde_json::from_str(&failure.body).unwrap_or_default();
            let outcome = match existing_id(&error) {
                Some(id) if batch[0].id.is_none() => WriteOutcome::Exists(id),
                _ => WriteOutcome::Rejected(hubspot_rejection(&batch[0].key, &error)),
            };
            Ok(vec![WriteResult {
                key: batch[0].key.clone(),
                outcome,
            }])
        }
    }
}

/// Sends a HubSpot write: the answer's body, or the failure when HubSpot
/// refused the request's content (400, 404, 409), which the caller answers
/// per record; any other failure is the call's own error.
fn hubspot_write(
    transport: &mut impl Transport,
    request: &HttpRequest,
) -> Result<Result<Vec<u8>, HttpFailure>, SyncError> {
    let mut refused = None;
    let body = transport::exchange(transport, request, |failure| {
        let error = errors::classify_http(&failure, errors::Endpoint::Other);
        if matches!(failure.status, 400 | 404 | 409) {
            refused = Some(failure);
        }
        error
    });
    match (body, refused) {
        (Ok(body), _) => Ok(Ok(body)),
        (Err(_), Some(failure)) => Ok(Err(failure)),
        (Err(error), None) => Err(error),
    }
}

/// Makes each updated contact's `company` its primary company: one v4
/// batch association create for the batch. A contact whose association the
/// answer does not confirm is rejected (its properties were written; the
/// pair is tried again when it next changes).
fn associate_companies(
    transport: &mut impl Transport,
    base: &str,
    batch: &[&OutgoingRecord],
    results: &mut [WriteResult],
) -> Result<(), SyncError> {
    let wanted: Vec<(usize, &str, &str)> = batch
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(results[*i].outcome, WriteOutcome::Written(_)))
        .filter_map(|(i, r)| Some((i, r.id.as_deref()?, r.company.as_deref()?)))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let inputs: Vec<Value> = wanted
        .iter()
        .map(|(_, contact, company)| {
            json!({ "from": { "id": contact }, "to": { "id": company }, "types": primary_company_type() })
        })
        .collect();
    let request = HttpRequest {
        method: Method::Post,
        url: format!(
            "{}/crm/v4/associations/contacts/companies/batch/create",
            base.trim_end_matches('/')
        ),
        body: Some(
            serde_json::to_vec(&json!({ "inputs": inputs })).expect("a request body serialises"),
        ),
    };
    let (confirmed, said) = match hubspot_write(transport, &request)? {
        Ok(body) => {
            let answer: Value = parse_json(&body, "HubSpot association answer")?;
            let confirmed: Vec<(String, String)> = answer["results"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| {
                    let from = r.get("fromObjectId").or_else(|| r["from"].get("id"))?;
                    let to = r.get("toObjectId").or_else(|| r["to"].get("id"))?;
                    Some((id_text(from)?, id_text(to)?))
                })
                .collect();
            let said = answer["errors"][0]["message"]
                .as_str()
                .unwrap_or("no result for this association")
                .to_owned();
            (confirmed, said)
        }
        Err(failure) => (Vec::new(), truncate_text(&failure.body)),
    };
    for (index, contact, company) in wanted {
        if !confirmed
            .iter()
            .any(|(from, to)| from == contact && to == company)
        {
            results[index].outcome = WriteOutcome::Rejected(errors::rejected_record(
                &batch[index].key,
                Some("associations"),
                &format!(
                    "HubSpot did not associate contact {contact} with company {company}: {said}"
                ),
                "HubSpot",
            ));
        }
    }
    Ok(())
}

fn truncate_text(text: &str) -> String {
    text.chars().take(300).collect()
}

/// Reads a 200/201/207 answer: errors by the trace ids (or ids) in their
/// context, results by trace id, id or content ([`pairing`]), never by
/// position.
pub fn read_hubspot_answer<'a>(
    body: &[u8],
    object: &'a str,
    batch: &'a [&'a OutgoingRecord],
) -> Result<Placement<'a>, SyncError> {
    let answer: HubspotBatchAnswer = parse_json(body, "HubSpot batch write answer")?;
    let mut placement = Placement::new(object, batch);
    for error in &answer.errors {
        let keys = error
            .context
            .get("objectWriteTraceId")
            .or_else(|| error.context.get("ids"))
            .map(strings)
            .unwrap_or_default();
        for key in keys {
            if let Some(i) = batch
                .iter()
                .position(|r| r.key == key || r.id.as_deref() == Some(key.as_str()))
            {
                placement.outcomes[i] = Some(match existing_id(error) {
                    Some(id) if batch[i].id.is_none() => WriteOutcome::Exists(id),
                    _ => WriteOutcome::Rejected(hubspot_rejection(&batch[i].key, error)),
                });
            }
        }
    }
    for result in answer.results {
        if let Some(id) = id_text(&result.id) {
            placement.place_result(
                id,
                result.object_write_trace_id.as_deref(),
                &result.properties,
            );
        }
    }
    placement.place_lone();
    Ok(placement)
}

/// Places the creates an answer left open by reading them back: the
/// unplaced results by id, then (contacts) the open creates by email, each
/// asking for the key property only. What is still open after is the
/// caller's `invalid-response`, never a guess.
fn reread_creates(
    transport: &mut impl Transport,
    base: &str,
    object: &str,
    placement: &mut Placement<'_>,
) -> Result<(), SyncError> {
    let (ids, _) = placement.rereads();
    read_back(transport, base, object, &ids, None, placement)?;
    // The emails of the creates the ids did not place.
    let (_, emails) = placement.rereads();
    read_back(transport, base, object, &emails, Some("email"), placement)
}

/// One `batch/read` of `inputs` (ids, or values of `id_property`) asking for
/// the key property, each record read placed by content.
fn read_back(
    transport: &mut impl Transport,
    base: &str,
    object: &str,
    inputs: &[String],
    id_property: Option<&str>,
    placement: &mut Placement<'_>,
) -> Result<(), SyncError> {
    if inputs.is_empty() {
        return Ok(());
    }
    let mut body = json!({
        "properties": [pairing::key_property(object)],
        "inputs": inputs.iter().map(|id| json!({ "id": id })).collect::<Vec<_>>(),
    });
    if let Some(id_property) = id_property {
        body["idProperty"] = json!(id_property);
    }
    let request = HttpRequest {
        method: Method::Post,
        url: format!(
            "{}/crm/v3/objects/{object}/batch/read",
            base.trim_end_matches('/')
        ),
        body: Some(serde_json::to_vec(&body).expect("a request body serialises")),
    };
    // A read refused for its content (none of them exist) places nothing.
    let Ok(answer) = hubspot_write(transport, &request)? else {
        return Ok(());
    };
    let answer: HubspotBatchAnswer = parse_json(&answer, "HubSpot batch read answer")?;
    for result in answer.results {
        if let Some(id) = id_text(&result.id) {
            placement.place_reread(id, &result.properties);
        }
    }
    Ok(())
}

/// The results of a placed batch, in its order; an input nothing placed is
/// `invalid-response` (not linked: a later run finds it by its key instead).
fn answered(batch: &[&OutgoingRecord], placement: Placement<'_>) -> Vec<WriteResult> {
    batch
        .iter()
        .zip(placement.outcomes)
        .map(|(record, outcome)| WriteResult {
            key: record.key.clone(),
            outcome: outcome.unwrap_or_else(|| {
                WriteOutcome::Rejected(errors::invalid_response(&format!(
                    "HubSpot's batch answer says nothing of record {}",
                    record.key
                )))
            }),
        })
        .collect()
}

/// The record a HubSpot conflict names: `Contact already exists. Existing ID: 123`.
fn existing_id(error: &HubspotBatchError) -> Option<String> {
    let message = error.message.as_deref()?;
    let rest = &message[message.find("Existing ID:")? + "Existing ID:".len()..];
    let id: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!id.is_empty()).then_some(id)
}

/// E9 for one HubSpot record: the property named by the error's detail
/// context, or by the JSON list in `Property values were not valid: [...]`.
fn hubspot_rejection(key: &str, error: &HubspotBatchError) -> SyncError {
    let message = error.message.clone().unwrap_or_default();
    let field = error
        .errors
        .iter()
        .find_map(|d| {
            d.context
                .get("propertyName")
                .and_then(|p| strings(p).into_iter().next())
        })
        .or_else(|| {
            let list = &message[message.find('[')?..=message.rfind(']')?];
            let invalid: Vec<Map<String, Value>> = serde_json::from_str(list).ok()?;
            invalid
                .iter()
                .find_map(|p| p.get("name")?.as_str().map(str::to_owned))
        });
    let detail = error
        .errors
        .iter()
        .filter_map(|d| d.message.as_deref())
        .collect::<Vec<_>>()
        .join("; ");
    let said = if detail.is_empty() { message } else { detail };
    errors::rejected_record(
        key,
        field.as_deref(),
        &format!(
            "HubSpot rejected the record ({}): {said}",
            error.category.as_deref().unwrap_or("error")
        ),
        "HubSpot",
    )
}

// ----- Salesforce ------------------------------------------------------------

fn object_name(object: SalesforceObject) -> &'static str {
    match object {
        SalesforceObject::Lead => "Lead",
        SalesforceObject::Contact => "Contact",
        SalesforceObject::Account => "Account",
    }
}

/// A Salesforce field value: JSON of the field's type; `null` clears.
fn salesforce_value(value: Option<&FieldData>) -> Value {
    match value {
        None => Value::Null,
        Some(FieldData::Text(text) | FieldData::Date(text) | FieldData::DateTime(text)) => {
            json!(text)
        }
        Some(FieldData::Number(n)) => json!(n),
        Some(FieldData::Boolean(b)) => json!(b),
        // Multi-select picklists take their values `;`-separated.
        Some(FieldData::Multi(values)) => json!(values.join(";")),
    }
}

/// `POST` (create) or `PATCH` (update) `/composite/sobjects`, `allOrNone` false.
pub fn salesforce_request(org: &SalesforceDestination, batch: &[&OutgoingRecord]) -> HttpRequest {
    let create = batch.iter().all(|r| r.id.is_none());
    let records: Vec<Value> = batch
        .iter()
        .map(|record| {
            let mut fields = Map::new();
            fields.insert(
                "attributes".into(),
                json!({"type": object_name(org.object)}),
            );
            if let Some(id) = &record.id {
                // As the sObject Collections reference spells it.
                fields.insert("id".into(), json!(id));
            }
            if let (Some(account), SalesforceObject::Contact) = (&record.company, org.object) {
                fields.insert("AccountId".into(), json!(account));
            }
            // A Lead's `Company` has no place on a Contact (its Account is the
            // company), nor a Contact's `AccountId` on a Lead.
            let other_objects_only = match org.object {
                SalesforceObject::Lead => salesforce::CONTACT_ONLY,
                SalesforceObject::Contact => salesforce::LEAD_ONLY,
                SalesforceObject::Account => &[],
            };
            for value in record
                .values
                .iter()
                .filter(|v| !other_objects_only.contains(&v.name.as_str()))
            {
                fields.insert(value.name.clone(), salesforce_value(value.value.as_ref()));
            }
            Value::Object(fields)
        })
        .collect();
    HttpRequest {
        method: if create { Method::Post } else { Method::Patch },
        url: format!(
            "{}/services/data/{}/composite/sobjects",
            org.instance_url.trim_end_matches('/'),
            org.api_version
        ),
        body: Some(
            serde_json::to_vec(&json!({"allOrNone": false, "records": records}))
                .expect("a request body serialises"),
        ),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SaveResult {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    success: bool,
    #[serde(default)]
    errors: Vec<SaveError>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SaveError {
    #[serde(default)]
    status_code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    fields: Vec<String>,
}

fn salesforce_batch(
    transport: &mut impl Transport,
    org: &SalesforceDestination,
    batch: &[&OutgoingRecord],
) -> Result<Vec<WriteResult>, SyncError> {
    let request = salesforce_request(org, batch);
    let body = transport::exchange(transport, &request, |failure: HttpFailure| {
        errors::classify_salesforce(&failure)
    })?;
    read_salesforce_answer(&body, batch)
}

/// Reads the save results, one per record in request order.
pub fn read_salesforce_answer(
    body: &[u8],
    batch: &[&OutgoingRecord],
) -> Result<Vec<WriteResult>, SyncError> {
    let saved: Vec<SaveResult> = parse_json(body, "Salesforce sObject Collections answer")?;
    if saved.len() != batch.len() {
        return Err(errors::invalid_response(&format!(
            "Salesforce answered {} save results for {} records",
            saved.len(),
            batch.len()
        )));
    }
    Ok(batch
        .iter()
        .zip(saved)
        .map(|(record, saved)| {
            let outcome = match (saved.success, saved.id.or_else(|| record.id.clone())) {
                (true, Some(id)) => WriteOutcome::Written(id),
                (true, None) => WriteOutcome::Rejected(errors::invalid_response(&format!(
                    "Salesforce saved record {} without saying its id",
                    record.key
                ))),
                (false, _) => {
                    let first = saved.errors.first();
                    let code = first.and_then(|e| e.status_code.as_deref()).unwrap_or("");
                    let message = saved
                        .errors
                        .iter()
                        .filter_map(|e| e.message.as_deref())
                        .collect::<Vec<_>>()
                        .join("; ");
                    let field = first.and_then(|e| e.fields.first().cloned()).or_else(|| {
                        // "Required fields are missing: [Company]"
                        let start = message.find('[')? + 1;
                        let end = start + message[start..].find([']', ','])?;
                        Some(message[start..end].trim().to_owned())
                    });
                    WriteOutcome::Rejected(errors::rejected_record(
                        &record.key,
                        field.as_deref(),
                        &format!("Salesforce rejected the record ({code}): {message}"),
                        "Salesforce",
                    ))
                }
            };
            WriteResult {
                key: record.key.clone(),
                outcome,
            }
        })
        .collect())
}

// ----- shared ----------------------------------------------------------------

fn failed(key: &str, error: &SyncError) -> WriteResult {
    WriteResult {
        key: key.to_owned(),
        outcome: WriteOutcome::Failed(error.clone()),
    }
}

fn rejected(key: &str, error: SyncError) -> WriteResult {
    WriteResult {
        key: key.to_owned(),
        outcome: WriteOutcome::Rejected(error),
    }
}

/// A JSON string or list of strings.
fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().filter_map(id_text).collect(),
        _ => Vec::new(),
    }
}

fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{HttpResponse, TransportError};
    use crate::types::{ErrorCategory, ErrorScope, OutgoingValue};
    use std::collections::VecDeque;

    /// Answers requests in order, recording them.
    #[derive(Default)]
    struct Script {
        answers: VecDeque<(u16, String)>,
        sent: Vec<HttpRequest>,
    }

    impl Script {
        fn answer(mut self, status: u16, body: Value) -> Self {
            self.answers.push_back((status, body.to_string()));
            self
        }
    }

    impl Transport for Script {
        fn send(&mut self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
            self.sent.push(request.clone());
            let (status, body) = self
                .answers
                .pop_front()
                .expect("an answer for every request");
            Ok(HttpResponse {
                status,
                retry_after: None,
                body: body.into_bytes(),
            })
        }
    }

    fn record(key: &str, id: Option<&str>, values: &[(&str, Option<FieldData>)]) -> OutgoingRecord {
        OutgoingRecord {
            company: None,
            key: key.into(),
            id: id.map(str::to_owned),
            values: values
                .iter()
                .map(|(name, value)| OutgoingValue {
                    name: (*name).into(),
                    value: value.clone(),
                })
                .collect(),
        }
    }

    fn body(request: &HttpRequest) -> Value {
        serde_json::from_slice(request.body.as_deref().unwrap()).unwrap()
    }

    fn text(value: &str) -> Option<FieldData> {
        Some(FieldData::Text(value.into()))
    }

    #[test]
    fn hubspot_creates_and_updates_go_to_their_batch_endpoints_with_trace_ids() {
        let records = [
            record(
                "003A",
                None,
                &[("email", text("a@x.io")), ("jobtitle", None)],
            ),
            record(
                "003B",
                Some("51"),
                &[("hs_count", Some(FieldData::Number(17.0)))],
            ),
        ];
        let mut t = Script::default()
            .answer(
                201,
                json!({"status": "COMPLETE", "results": [{"id": "77", "properties": {}}]}),
            )
            .answer(
                200,
                json!({"status": "COMPLETE", "results": [{"id": "51", "properties": {}}]}),
            );
        let results = write_records(
            &mut t,
            &Destination::HubspotContacts("http://h".into()),
            &records,
        )
        .unwrap();
        assert_eq!(
            t.sent[0].url,
            "http://h/crm/v3/objects/contacts/batch/create"
        );
        assert_eq!(
            body(&t.sent[0]),
            json!({"inputs": [{"properties": {"email": "a@x.io", "jobtitle": ""}, "objectWriteTraceId": "003A", "associations": []}]})
        );
        assert_eq!(
            t.sent[1].url,
            "http://h/crm/v3/objects/contacts/batch/update"
        );
        assert_eq!(
            body(&t.sent[1]),
            json!({"inputs": [{"id": "51", "properties": {"hs_count": "17"}, "objectWriteTraceId": "003B"}]})
        );
        assert_eq!(results[0].outcome, WriteOutcome::Written("77".into()));
        assert_eq!(results[1].outcome, WriteOutcome::Written("51".into()));
    }

    #[test]
    fn a_hubspot_207_rejects_one_record_naming_its_property_and_keeps_the_rest() {
        let records = [
            record("a", None, &[("email", text("a@x.io"))]),
            record(
                "b",
                None,
                &[("email", text("b@x.io")), ("lifecyclestage", text("nope"))],
            ),
            record("c", None, &[("email", text("c@x.io"))]),
        ];
        let mut t = Script::default().answer(
            207,
            json!({"status": "COMPLETE",
                   "results": [{"id": "1", "objectWriteTraceId": "a"}, {"id": "3", "objectWriteTraceId": "c"}],
                   "numErrors": 1,
                   "errors": [{"status": "error", "category": "VALIDATION_ERROR",
                               "message": "Property values were not valid: [{\"isValid\":false,\"message\":\"nope was not one of the allowed options\",\"error\":\"INVALID_OPTION\",\"name\":\"lifecyclestage\"}]",
                               "context": {"objectWriteTraceId": ["b"]}}]}),
        );
        let results = write_records(
            &mut t,
            &Destination::HubspotContacts("http://h".into()),
            &records,
        )
        .unwrap();
        assert_eq!(results[0].outcome, WriteOutcome::Written("1".into()));
        assert_eq!(results[2].outcome, WriteOutcome::Written("3".into()));
        let WriteOutcome::Rejected(error) = &results[1].outcome else {
            panic!("b is rejected: {:?}", results[1]);
        };
        assert_eq!(error.category, ErrorCategory::Validation);
        assert_eq!(error.scope, ErrorScope::Record);
        assert_eq!(error.field.as_deref(), Some("lifecyclestage"));
        assert_eq!(error.record_id.as_deref(), Some("b"));
    }

    #[test]
    fn hubspot_creates_answered_in_any_order_pair_by_email_not_position() {
        let records: Vec<OutgoingRecord> = (0..5)
            .map(|i| {
                record(
                    &format!("00Q{i}"),
                    None,
                    &[("email", text(&format!("p{i}@x.io")))],
                )
            })
            .collect();
        // Reversed, no trace ids, as HubSpot's v3 answers: each result holds its email.
        let results: Vec<Value> = (0..5)
            .rev()
            .map(|i| json!({"id": format!("{}", 100 + i), "properties": {"email": format!("P{i}@x.io")}}))
            .collect();
        let mut t =
            Script::default().answer(201, json!({"status": "COMPLETE", "results": results}));
        let written = write_records(
            &mut t,
            &Destination::HubspotContacts("http://h".into()),
            &records,
        )
        .unwrap();
        assert_eq!(t.sent.len(), 1);
        for (i, result) in written.iter().enumerate() {
            assert_eq!(result.key, format!("00Q{i}"));
            assert_eq!(
                result.outcome,
                WriteOutcome::Written(format!("{}", 100 + i))
            );
        }
    }

    #[test]
    fn results_without_their_email_are_read_back_rather_than_guessed() {
        let records = [
            record("a", None, &[("email", text("ann@x.io"))]),
            record("b", None, &[("email", text("bo@x.io"))]),
            record("c", None, &[("email", text("cy@x.io"))]),
        ];
        // Bare results; the read by id finds two, the read by email the third
        // (which the answer left out: it is not one this write created).
        let mut t = Script::default()
            .answer(
                201,
                json!({"results": [{"id": "2"}, {"id": "1", "properties": null}]}),
            )
            .answer(
                200,
                json!({"results": [
                {"id": "1", "properties": {"email": "bo@x.io"}},
                {"id": "2", "properties": {"email": "ann@x.io"}}]}),
            )
            .answer(
                200,
                json!({"results": [{"id": "9", "properties": {"email": "cy@x.io"}}]}),
            );
        let written = write_records(
            &mut t,
            &Destination::HubspotContacts("http://h".into()),
            &records,
        )
        .unwrap();
        assert_eq!(t.sent[1].url, "http://h/crm/v3/objects/contacts/batch/read");
        assert_eq!(
            body(&t.sent[1]),
            json!({"properties": ["email"], "inputs": [{"id": "2"}, {"id": "1"}]})
        );
        assert_eq!(
            body(&t.sent[2]),
            json!({"properties": ["email"], "idProperty": "email", "inputs": [{"id": "cy@x.io"}]})
        );
        assert_eq!(written[0].outcome, WriteOutcome::Written("2".into()));
        assert_eq!(written[1].outcome, WriteOutcome::Written("1".into()));
        assert_eq!(written[2].outcome, WriteOutcome::Exists("9".into()));
        // Nothing found at all: not written, never somebody else's id.
        let mut t = Script::default()
            .answer(201, json!({"results": [{"id": "2"}, {"id": "1"}]}))
            .answer(200, json!({"results": []}))
            .answer(200, json!({"results": []}));
        let written = write_records(
            &mut t,
            &Destination::HubspotContacts("http://h".into()),
            &records[..2],
        )
        .unwrap();
        assert!(
            written
                .iter()
                .all(|r| matches!(&r.outcome, WriteOutcome::Rejected(e) if e.category == ErrorCategory::InvalidResponse)),
            "{written:?}"
        );
    }

    #[test]
    fn companies_without_a_domain_are_created_one_per_request() {
        let records = [
            record("001A", None, &[("name", text("Acme"))]),
            record(
                "001B",
                None,
                &[("name", text("Globex")), ("domain", text("globex.example"))],
            ),
            record("001C", None, &[("name", text("Initech"))]),
        ];
        let mut t = Script::default()
            .answer(201, json!({"results": [{"id": "7"}]}))
            .answer(201, json!({"results": [{"id": "8"}]}))
            .answer(
                201,
                json!({"results": [{"id": "9", "properties": {"domain": "globex.example"}}]}),
            );
        let written = write_records(
            &mut t,
            &Destination::HubspotCompanies("http://h".into()),
            &records,
        )
        .unwrap();
        let inputs: Vec<usize> = t
            .sent
            .iter()
            .map(|r| body(r)["inputs"].as_array().unwrap().len())
            .collect();
        assert_eq!(inputs, [1, 1, 1]);
        assert_eq!(written[0].outcome, WriteOutcome::Written("7".into()));
        assert_eq!(written[1].outcome, WriteOutcome::Written("9".into()));
        assert_eq!(written[2].outcome, WriteOutcome::Written("8".into()));
    }

    #[test]
    fn a_hubspot_batch_refused_whole_is_retried_one_record_at_a_time() {
        let records = [
            record("a", Some("1"), &[("email", text("a@x.io"))]),
            record("b", Some("2"), &[("email", text("not-an-email"))]),
        ];
        let invalid = json!({"status": "error", "category": "VALIDATION_ERROR",
            "message": "Property values were not valid: [{\"isValid\":false,\"message\":\"Email address not-an-email is invalid\",\"error\":\"INVALID_EMAIL\",\"name\":\"email\"}]"});
        let mut t = Script::default()
            .answer(400, invalid.clone())
            .answer(200, json!({"results": [{"id": "1"}]}))
            .answer(400, invalid);
        let results = write_records(
            &mut t,
            &Destination::HubspotContacts("http://h".into()),
            &records,
        )
        .unwrap();
        assert_eq!(t.sent.len(), 3);
        assert_eq!(results[0].outcome, WriteOutcome::Written("1".into()));
        let WriteOutcome::Rejected(error) = &results[1].outcome else {
            panic!("b is rejected");
        };
        assert_eq!(error.field.as_deref(), Some("email"));
        assert!(error.message.contains("not-an-email"), "{}", error.message);
    }

    #[test]
    fn companies_and_accounts_go_to_their_own_endpoints() {
        let mut t = Script::default().answer(201, json!({"results": [{"id": "9"}]}));
        let company = [record("001A", None, &[("domain", text("acme.io"))])];
        let results = write_records(
            &mut t,
            &Destination::HubspotCompanies("http://h".into()),
            &company,
        )
        .unwrap();
        assert_eq!(
            t.sent[0].url,
            "http://h/crm/v3/objects/companies/batch/create"
        );
        assert_eq!(results[0].outcome, WriteOutcome::Written("9".into()));
        let mut t =
            Script::default().answer(200, json!([{"id": "001B", "success": true, "errors": []}]));
        let org = SalesforceDestination {
            instance_url: "http://s".into(),
            api_version: "v60.0".into(),
            object: SalesforceObject::Account,
        };
        let account = [record("7", None, &[("Name", text("Acme"))])];
        write_records(&mut t, &Destination::Salesforce(org), &account).unwrap();
        assert_eq!(
            body(&t.sent[0])["records"][0],
            json!({"attributes": {"type": "Account"}, "Name": "Acme"})
        );
    }

    #[test]
    fn a_contacts_company_is_its_primary_association_or_account_id() {
        let with_company = |key: &str, id: Option<&str>, company: &str| OutgoingRecord {
            company: Some(company.into()),
            ..record(key, id, &[("lastname", text("Li"))])
        };
        // A create carries the association in its input.
        let mut t = Script::default().answer(
            201,
            json!({"results": [{"id": "5", "objectWriteTraceId": "003A"}]}),
        );
        write_records(
            &mut t,
            &Destination::HubspotContacts("http://h".into()),
            &[with_company("003A", None, "9001")],
        )
        .unwrap();
        assert_eq!(t.sent.len(), 1);
        assert_eq!(
            body(&t.sent[0])["inputs"][0]["associations"],
            json!([{"to": {"id": "9001"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 1}]}])
        );
        // Updates are associated after, in one v4 request; the contact whose
        // association is not confirmed is rejected, naming it.
        let mut t = Script::default()
            .answer(200, json!({"results": [{"id": "5"}, {"id": "6"}]}))
            .answer(
                207,
                json!({"results": [{"fromObjectId": 5, "toObjectId": 9001, "labels": []}],
                                "errors": [{"status": "error", "category": "VALIDATION_ERROR",
                                            "message": "No company 404 to associate"}]}),
            );
        let results = write_records(
            &mut t,
            &Destination::HubspotContacts("http://h".into()),
            &[
                with_company("003A", Some("5"), "9001"),
                with_company("003B", Some("6"), "404"),
            ],
        )
        .unwrap();
        assert_eq!(
            t.sent[1].url,
            "http://h/crm/v4/associations/contacts/companies/batch/create"
        );
        assert_eq!(
            body(&t.sent[1])["inputs"],
            json!([
                {"from": {"id": "5"}, "to": {"id": "9001"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 1}]},
                {"from": {"id": "6"}, "to": {"id": "404"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 1}]}
            ])
        );
        assert_eq!(results[0].outcome, WriteOutcome::Written("5".into()));
        let WriteOutcome::Rejected(error) = &results[1].outcome else {
            panic!("{results:?}")
        };
        assert_eq!(error.field.as_deref(), Some("associations"));
        assert!(
            error.message.contains("No company 404"),
            "{}",
            error.message
        );
        // Salesforce: a Contact's AccountId; a Lead has none.
        for (object, expected) in [
            (SalesforceObject::Contact, json!("001A")),
            (SalesforceObject::Lead, Value::Null),
        ] {
            let mut t = Script::default()
                .answer(200, json!([{"id": "003X", "success": true, "errors": []}]));
            let org = SalesforceDestination {
                instance_url: "http://s".into(),
                api_version: "v60.0".into(),
                object,
            };
            write_records(
                &mut t,
                &Destination::Salesforce(org),
                &[with_company("5", None, "001A")],
            )
            .unwrap();
            assert_eq!(body(&t.sent[0])["records"][0]["AccountId"], expected);
        }
    }

    #[test]
    fn a_create_refused_as_an_existing_contact_names_it() {
        let conflict = |id: &str| {
            json!({"status": "error", "category": "CONFLICT",
                   "message": format!("Contact already exists. Existing ID: {id}")})
        };
        // In a 207, by trace id; refused whole, once re-sent alone.
        let mut multi = conflict("701");
        multi["context"] = json!({"objectWriteTraceId": ["b"]});
        let mut t = Script::default().answer(
            207,
            json!({"results": [{"id": "9", "objectWriteTraceId": "a"}], "errors": [multi]}),
        );
        let records = [
            record("a", None, &[("email", text("a@x.io"))]),
            record("b", None, &[("email", text("b@x.io"))]),
        ];
        let results = write_records(
            &mut t,
            &Destination::HubspotContacts("http://h".into()),
            &records,
        )
        .unwrap();
        assert_eq!(results[0].outcome, WriteOutcome::Written("9".into()));
        assert_eq!(results[1].outcome, WriteOutcome::Exists("701".into()));
        let mut t = Script::default()
            .answer(409, conflict("42"))
            .answer(
                201,
                json!({"results": [{"id": "10", "objectWriteTraceId": "a"}]}),
            )
            .answer(409, conflict("42"));
        let results = write_records(
            &mut t,
            &Destination::HubspotContacts("http://h".into()),
            &records,
        )
        .unwrap();
        assert_eq!(t.sent.len(), 3);
        assert_eq!(results[1].outcome, WriteOutcome::Exists("42".into()));
        // Any other conflict is a rejection.
        let mut t = Script::default().answer(
            409,
            json!({"status": "error", "category": "CONFLICT", "message": "Object already exists"}),
        );
        let results = write_records(
            &mut t,
            &Destination::HubspotContacts("http://h".into()),
            &[record("a", None, &[])],
        )
        .unwrap();
        assert!(matches!(results[0].outcome, WriteOutcome::Rejected(_)));
    }

    #[test]
    fn a_record_gone_from_hubspot_is_rejected_alone() {
        let records = [
            record("a", Some("1"), &[("jobtitle", text("CEO"))]),
            record("b", Some("404404"), &[("jobtitle", text("VP"))]),
        ];
        let gone = json!({"status": "error", "category": "OBJECT_NOT_FOUND", "message": "Object not found."});
        let mut t = Script::default()
            .answer(404, gone.clone())
            .answer(200, json!({"results": [{"id": "1"}]}))
            .answer(404, gone);
        let results = write_records(
            &mut t,
            &Destination::HubspotContacts("http://h".into()),
            &records,
        )
        .unwrap();
        assert_eq!(results[0].outcome, WriteOutcome::Written("1".into()));
        let WriteOutcome::Rejected(error) = &results[1].outcome else {
            panic!("b is rejected");
        };
        assert!(error.message.contains("404404"), "{}", error.message);
        assert_eq!(error.scope, ErrorScope::Record);
    }

    #[test]
    fn a_later_request_failing_keeps_the_results_of_those_that_landed() {
        let records: Vec<OutgoingRecord> = (0..250)
            .map(|i| {
                record(
                    &format!("k{i}"),
                    Some(&format!("{i}")),
                    &[("jobtitle", text("CEO"))],
                )
            })
            .collect();
        let landed: Vec<Value> = (0..100).map(|i| json!({"id": format!("{i}")})).collect();
        let mut t = Script::default()
            .answer(200, json!({ "results": landed }))
            .answer(502, json!({"status": "error", "message": "Bad gateway"}));
        let results = write_records(
            &mut t,
            &Destination::HubspotContacts("http://h".into()),
            &records,
        )
        .unwrap();
        assert_eq!(
            t.sent.len(),
            2,
            "the third batch is not sent after the second failed"
        );
        assert_eq!(results.len(), 250);
        assert!(
            results[..100]
                .iter()
                .all(|r| matches!(r.outcome, WriteOutcome::Written(_)))
        );
        assert!(results[100..].iter().all(|r| matches!(
            &r.outcome,
            WriteOutcome::Failed(e) if e.category == ErrorCategory::Transient
        )));
    }

    #[test]
    fn a_hubspot_failure_of_the_call_itself_is_the_calls_error() {
        let mut t = Script::default().answer(
            401,
            json!({"status": "error", "category": "EXPIRED_AUTHENTICATION", "message": "expired"}),
        );
        let error = write_records(
            &mut t,
            &Destination::HubspotContacts("http://h".into()),
            &[record("a", None, &[])],
        )
        .unwrap_err();
        assert_eq!(error.category, ErrorCategory::AuthExpired);
    }

    #[test]
    fn salesforce_collections_save_each_record_and_name_the_missing_field() {
        let org = SalesforceDestination {
            instance_url: "http://s".into(),
            api_version: "v60.0".into(),
            object: SalesforceObject::Lead,
        };
        let records = [
            record(
                "1",
                None,
                &[("LastName", text("Ng")), ("Company", text("Acme"))],
            ),
            record("2", None, &[("LastName", text("Li")), ("Company", None)]),
        ];
        let mut t = Script::default().answer(
            200,
            json!([{"id": "00Q1", "success": true, "errors": []},
                   {"success": false, "errors": [{"statusCode": "REQUIRED_FIELD_MISSING",
                     "message": "Required fields are missing: [Company]", "fields": ["Company"]}]}]),
        );
        let results =
            write_records(&mut t, &Destination::Salesforce(org.clone()), &records).unwrap();
        assert_eq!(t.sent[0].method, Method::Post);
        assert_eq!(
            t.sent[0].url,
            "http://s/services/data/v60.0/composite/sobjects"
        );
        assert_eq!(
            body(&t.sent[0]),
            json!({"allOrNone": false, "records": [
                {"attributes": {"type": "Lead"}, "LastName": "Ng", "Company": "Acme"},
                {"attributes": {"type": "Lead"}, "LastName": "Li", "Company": null}]})
        );
        assert_eq!(results[0].outcome, WriteOutcome::Written("00Q1".into()));
        let WriteOutcome::Rejected(error) = &results[1].outcome else {
            panic!("2 is rejected");
        };
        assert_eq!(error.field.as_deref(), Some("Company"));
        assert!(error.message.contains("REQUIRED_FIELD_MISSING"));

        let mut t =
            Script::default().answer(200, json!([{"id": "003X", "success": true, "errors": []}]));
        let update = [record(
            "9",
            Some("003X"),
            &[("Title", text("CEO")), ("Company", text("Acme"))],
        )];
        let org = SalesforceDestination {
            object: SalesforceObject::Contact,
            ..org
        };
        write_records(&mut t, &Destination::Salesforce(org), &update).unwrap();
        assert_eq!(t.sent[0].method, Method::Patch);
        assert_eq!(
            body(&t.sent[0])["records"][0],
            json!({"attributes": {"type": "Contact"}, "id": "003X", "Title": "CEO"})
        );
    }

    #[test]
    fn typed_values_take_each_apis_spelling() {
        assert_eq!(hubspot_value(Some(&FieldData::Number(2.5))), "2.5");
        assert_eq!(hubspot_value(Some(&FieldData::Boolean(true))), "true");
        assert_eq!(
            hubspot_value(Some(&FieldData::Multi(vec!["a".into(), "b".into()]))),
            "a;b"
        );
        assert_eq!(salesforce_value(Some(&FieldData::Number(3.0))), json!(3.0));
        assert_eq!(
            salesforce_value(Some(&FieldData::Boolean(false))),
            json!(false)
        );
        assert_eq!(
            salesforce_value(Some(&FieldData::Date("2024-06-01".into()))),
            json!("2024-06-01")
        );
    }
}
