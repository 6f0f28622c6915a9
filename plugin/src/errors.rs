//! Classification of failures into the categories a person can act on (E1-E11).
//!
//! HubSpot error bodies look like
//! `{"status":"error","message":"...","category":"RATE_LIMITS","errorType":"RATE_LIMIT","policyName":"TEN_SECONDLY_ROLLING"}`;
//! the status code decides first and the body refines it.

use crate::types::{
    ErrorCategory, ErrorScope, Failure, HandleConflict, HandleKind, HttpFailure, SyncError,
};
use serde::Deserialize;

/// The JSON error body HubSpot sends with non-2xx responses. Every field is
/// optional: proxies and gateways send other bodies, or none.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HubSpotErrorBody {
    message: Option<String>,
    category: Option<String>,
    sub_category: Option<String>,
    error_type: Option<String>,
    policy_name: Option<String>,
    #[serde(default)]
    errors: Vec<HubSpotErrorDetail>,
}

#[derive(Debug, Default, Deserialize)]
struct HubSpotErrorDetail {
    message: Option<String>,
    #[serde(default)]
    context: serde_json::Map<String, serde_json::Value>,
}

/// What the failed request was for; it decides what a 404 means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Any request whose 404 says nothing more specific.
    Other,
    /// The memberships of a list: a 404 means the list is gone (E7).
    ListMemberships,
}

/// Classifies any failure (the `classify-error` export).
pub fn classify(failure: &Failure) -> SyncError {
    match failure {
        // Salesforce answers errors as an array (`[{"message", "errorCode",
        // "fields"}]`), HubSpot as an object: the body says whose it is.
        Failure::Http(http) if is_salesforce_error_array(&http.body) => classify_salesforce(http),
        Failure::Http(http) => classify_http(http, Endpoint::Other),
        Failure::Transport(detail) => transient(format!("the request did not complete: {detail}")),
        Failure::InvalidResponse(detail) => invalid_response(detail),
        Failure::MissingHandle(record_id) => missing_handle(record_id),
        Failure::HandleTaken(conflict) => handle_taken(conflict),
        Failure::FieldNotFound(property) => field_not_found(property),
        Failure::DependencyFailed(sync) => dependency_failed(sync),
    }
}

/// Whether `body` is Salesforce's error array.
fn is_salesforce_error_array(body: &str) -> bool {
    serde_json::from_str::<Vec<serde_json::Map<String, serde_json::Value>>>(body)
        .is_ok_and(|errors| errors.first().is_some_and(|e| e.contains_key("errorCode")))
}

/// One entry of Salesforce's error array: `[{"message", "errorCode", "fields"}]`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SalesforceError {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    fields: Vec<String>,
}

/// Classifies a non-success answer of Salesforce's REST API (E4, E6, E8-E11).
pub fn classify_salesforce(http: &HttpFailure) -> SyncError {
    let errors: Vec<SalesforceError> = serde_json::from_str(&http.body).unwrap_or_default();
    let first = errors.into_iter().next().unwrap_or_default();
    let code = first.error_code.as_deref().unwrap_or("");
    let message = first.message.as_deref().unwrap_or("").trim();
    let said = if message.is_empty() {
        String::new()
    } else {
        format!(": {code} {message}")
    };
    let status = http.status;
    match (status, code) {
        (401, _) => sync_error(
            ErrorCategory::AuthExpired,
            true,
            format!("Salesforce rejected the session (HTTP 401){said}"),
            "crmsync refreshes OAuth sessions by itself; if this persists, reconnect Salesforce \
             (a new refresh token or access token in the configured environment variables).",
        ),
        (_, "REQUEST_LIMIT_EXCEEDED") => sync_error(
            ErrorCategory::RateLimited,
            false,
            format!("Salesforce's API request limit is used up (HTTP {status}){said}"),
            "The org's rolling 24-hour API limit is reached: wait for it to recover (Setup > \
             System Overview shows it), or raise it, then run the sync again.",
        ),
        (429, _) => rate_limited(http, &HubSpotErrorBody::default()),
        (_, "INVALID_FIELD") => {
            let field = quoted_after(message, "No such column '");
            SyncError {
                field: field.clone(),
                scope: ErrorScope::Field,
                ..sync_error(
                    ErrorCategory::FieldNotFound,
                    false,
                    format!("Salesforce says a mapped field does not exist (HTTP {status}){said}"),
                    &format!(
                        "The Salesforce field {} was deleted or renamed, or the integration \
                         user cannot see it (field-level security): map another field, or grant \
                         access.",
                        field.as_deref().unwrap_or("named above")
                    ),
                )
            }
        }
        (403, _)
        | (
            _,
            "INSUFFICIENT_ACCESS"
            | "INSUFFICIENT_ACCESS_OR_READONLY"
            | "API_DISABLED_FOR_ORG"
            | "INVALID_TYPE",
        ) => sync_error(
            ErrorCategory::PermissionDenied,
            false,
            format!("Salesforce denied access (HTTP {status}){said}"),
            "Give the integration user's profile or permission set API access and read access \
                 to Leads and Contacts (and their fields), then run the sync again.",
        ),
        (500..=599, _) => transient(format!("Salesforce answered HTTP {status}{said}")),
        (404, _) => not_found(
            &format!("Salesforce has no such resource (HTTP 404){said}"),
            "Check that base_url is the org's instance URL and api_version one the org \
             offers (Setup > Company Information); the same request gets the same answer.",
        ),
        (
            _,
            "REQUIRED_FIELD_MISSING"
            | "DUPLICATES_DETECTED"
            | "FIELD_CUSTOM_VALIDATION_EXCEPTION"
            | "MALFORMED_QUERY"
            | "INVALID_QUERY_LOCATOR",
        )
        | (400, _) => SyncError {
            field: first.fields.first().cloned(),
            ..sync_error(
                ErrorCategory::Validation,
                false,
                format!("Salesforce rejected the request (HTTP {status}){said}"),
                "Check the field named in the message; an expired query cursor \
                     (INVALID_QUERY_LOCATOR) is solved by running the sync again.",
            )
        },
        _ => invalid_response(&format!("Salesforce answered HTTP {status}{said}")),
    }
}

/// The text between `prefix` and the next `'` in `message`.
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let start = message.find(prefix)? + prefix.len();
    let end = message[start..].find('\'')?;
    Some(message[start..start + end].to_owned())
}

/// Classifies a non-success HTTP response from `endpoint`.
pub fn classify_http(http: &HttpFailure, endpoint: Endpoint) -> SyncError {
    let body: HubSpotErrorBody = serde_json::from_str(&http.body).unwrap_or_default();
    let said = body
        .message
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    let category = body.category.as_deref().unwrap_or("");
    let status = http.status;
    match status {
        429 => rate_limited(http, &body),
        401 if category == "EXPIRED_AUTHENTICATION" => sync_error(
            ErrorCategory::AuthExpired,
            true,
            format!("HubSpot says the access token expired (HTTP 401){said}"),
            "crmsync refreshes OAuth tokens by itself; if this persists, reconnect HubSpot \
             (create a new refresh token or private-app token) and update the configured \
             environment variables.",
        ),
        401 => sync_error(
            ErrorCategory::AuthInvalid,
            false,
            format!("HubSpot rejected the credentials (HTTP 401){said}"),
            "Reconnect HubSpot: check that the environment variable named by source.token_env \
             (or source.oauth) holds a valid, non-revoked token for this portal.",
        ),
        403 => {
            let scopes = required_scopes(&body);
            let missing = if scopes.is_empty() {
                String::new()
            } else {
                format!(" (required scopes: {})", scopes.join(", "))
            };
            sync_error(
                ErrorCategory::PermissionDenied,
                false,
                format!("HubSpot denied access (HTTP 403){said}{missing}"),
                &format!(
                    "Grant the app the missing scope{} (contacts need crm.objects.contacts.read, \
                     lists need crm.lists.read), then run the sync again.",
                    if scopes.is_empty() {
                        String::new()
                    } else {
                        format!(" {}", scopes.join(", "))
                    }
                ),
            )
        }
        404 if endpoint == Endpoint::ListMemberships || mentions_list(&body) => sync_error(
            ErrorCategory::ListNotFound,
            false,
            format!("the HubSpot list was not found (HTTP 404){said}"),
            "The list this sync reads was deleted or the id is wrong: pick another list and \
             set source.list_id to its id, then run the sync again.",
        ),
        400 | 422 if is_missing_property(&body) => {
            let mut error = sync_error(
                ErrorCategory::FieldNotFound,
                false,
                format!("HubSpot says a mapped property does not exist (HTTP {status}){said}"),
                "A HubSpot property this sync maps was deleted or renamed: choose another \
                 property in [mapping] / source.properties.",
            );
            error.scope = ErrorScope::Field;
            error
        }
        400 | 409 | 422 => sync_error(
            ErrorCategory::Validation,
            false,
            format!("HubSpot rejected the request (HTTP {status}){said}"),
            "Check the values named in the message; the request was not accepted as sent.",
        ),
        408 | 423 | 500..=599 => transient(format!("HubSpot answered HTTP {status}{said}")),
        404 => not_found(
            &format!("HubSpot has no such endpoint or record (HTTP 404){said}"),
            "Check that base_url points at the HubSpot API (https://api.hubapi.com) and that \
             the portal has the object; the same request gets the same answer.",
        ),
        _ => invalid_response(&format!("unexpected HTTP status {status}{said}")),
    }
}

fn rate_limited(http: &HttpFailure, body: &HubSpotErrorBody) -> SyncError {
    let policy = body.policy_name.as_deref().unwrap_or("");
    let said = body.message.as_deref().unwrap_or("rate limit reached");
    if policy == "DAILY" {
        // The daily budget resets at midnight in the portal's time zone: waiting
        // inside a run would block for hours, so the sync stops instead.
        return sync_error(
            ErrorCategory::RateLimited,
            false,
            format!("HubSpot's daily API limit is used up: {said}"),
            "Wait until the daily limit resets (midnight in the portal's time zone) or raise \
             the portal's API limit; the next scheduled run resumes from the last checkpoint.",
        );
    }
    let retry_after_ms = http
        .retry_after
        .as_deref()
        .and_then(parse_retry_after_ms)
        // Without the header: both the secondly (search) and the 10 s rolling
        // burst windows usually free a slot within a second.
        .unwrap_or(1_000);
    let mut error = sync_error(
        ErrorCategory::RateLimited,
        true,
        format!(
            "HubSpot rate limit hit ({}): {said}",
            if policy.is_empty() { "429" } else { policy }
        ),
        "Nothing to do: crmsync waits for the advertised delay and retries. If this happens \
         often, lower source.rate_limit or ask for a higher API limit.",
    );
    error.retry_after_ms = Some(retry_after_ms);
    error
}

/// The longest `Retry-After` taken as said: a server's number must not park
/// a run (or an embedding host that sleeps on it) for days.
pub const MAX_RETRY_AFTER_MS: u64 = 10 * 60 * 1000;

/// `Retry-After` in delta-seconds (HubSpot's form), at most
/// [`MAX_RETRY_AFTER_MS`]. HTTP dates are not used by HubSpot; they fall back
/// to the policy default.
fn parse_retry_after_ms(value: &str) -> Option<u64> {
    let value = value.trim();
    let ms = match value.parse::<u64>() {
        Ok(secs) => secs.saturating_mul(1000),
        Err(_) => value
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| (s * 1000.0) as u64)?,
    };
    Some(ms.min(MAX_RETRY_AFTER_MS))
}

fn required_scopes(body: &HubSpotErrorBody) -> Vec<String> {
    let mut scopes = Vec::new();
    for detail in &body.errors {
        for key in ["requiredGranularScopes", "requiredScopes"] {
            if let Some(serde_json::Value::Array(values)) = detail.context.get(key) {
                scopes.extend(values.iter().filter_map(|v| v.as_str().map(str::to_owned)));
            }
        }
    }
    scopes.dedup();
    scopes
}

fn mentions_list(body: &HubSpotErrorBody) -> bool {
    let sub = body.sub_category.as_deref().unwrap_or("");
    let message = body.message.as_deref().unwrap_or("").to_ascii_lowercase();
    sub.contains("LIST") || message.contains("list")
}

fn is_missing_property(body: &HubSpotErrorBody) -> bool {
    let error_type = body.error_type.as_deref().unwrap_or("");
    let sub = body.sub_category.as_deref().unwrap_or("");
    let mut messages = body
        .errors
        .iter()
        .filter_map(|e| e.message.as_deref())
        .chain(body.message.as_deref());
    error_type == "PROPERTY_DOESNT_EXIST"
        || sub.contains("PROPERTY_DOESNT_EXIST")
        || messages
            .any(|m| m.contains("does not exist") && m.to_ascii_lowercase().contains("propert"))
}

/// A network, timeout or 5xx failure (E10): retried with backoff by the host.
pub fn transient(message: String) -> SyncError {
    sync_error(
        ErrorCategory::Transient,
        true,
        message,
        "Nothing to do if it passes: crmsync retries with backoff. If it persists, check the \
         network path to the API and HubSpot's status page.",
    )
}

/// A success response that is not the documented shape. Retryable: a body cut
/// short by the network looks the same as a malformed one.
pub fn invalid_response(detail: &str) -> SyncError {
    sync_error(
        ErrorCategory::InvalidResponse,
        true,
        format!("the API answered something crmsync cannot read: {detail}"),
        "crmsync retries; if it persists, check that source.base_url points at the HubSpot API \
         (not a proxy or login page) and report the response.",
    )
}

/// A 404: the API says what was asked for is not there. Retrying asks again
/// for the same thing, so it is not retried.
fn not_found(message: &str, resolution: &str) -> SyncError {
    sync_error(
        ErrorCategory::InvalidResponse,
        false,
        message.to_owned(),
        resolution,
    )
}

/// The answer was larger than the host accepts: retrying gets the same answer.
pub fn response_too_large(detail: &str) -> SyncError {
    sync_error(
        ErrorCategory::InvalidResponse,
        false,
        format!("the API's answer exceeded the host's size limit ({detail})"),
        "Raise source.max_response_mb if the API really sends pages this large, or check that \
         source.base_url points at the HubSpot API.",
    )
}

/// The host refused the request: the URL is not one of the configured API hosts.
pub fn request_denied(detail: &str) -> SyncError {
    sync_error(
        ErrorCategory::PermissionDenied,
        false,
        format!("the host did not allow this request: {detail}"),
        "The component may only call the configured API host; check source.base_url.",
    )
}

/// E6: a mapped property the source no longer has. The field stops syncing;
/// the rest of every record goes on.
pub fn field_not_found(property: &str) -> SyncError {
    SyncError {
        category: ErrorCategory::FieldNotFound,
        retryable: false,
        retry_after_ms: None,
        scope: ErrorScope::Field,
        record_id: None,
        field: Some(property.to_owned()),
        message: format!(
            "the mapped property {property:?} does not exist in the CRM (deleted or renamed), so it \
             is not synced"
        ),
        resolution: format!(
            "Map another property instead of {property:?} in [mapping] or source.properties \
             (`crmsync fields` lists what exists); the other fields keep syncing meanwhile."
        ),
    }
}

/// M4: a value that cannot be converted to its destination field's type.
/// Only that field is left out; the rest of the record syncs.
pub fn field_validation(
    record_id: &str,
    property: &str,
    field: &str,
    value: &str,
    why: &str,
) -> SyncError {
    let shown = if value.chars().count() > 80 {
        format!("{}…", value.chars().take(80).collect::<String>())
    } else {
        value.to_owned()
    };
    SyncError {
        category: ErrorCategory::Validation,
        retryable: false,
        retry_after_ms: None,
        scope: ErrorScope::Field,
        record_id: Some(record_id.to_owned()),
        field: Some(property.to_owned()),
        message: format!(
            "the value {shown:?} of property {property:?} on record {record_id} {why}, so destination \
             field {field:?} was not synced (the rest of the record was)"
        ),
        resolution: format!(
            "Correct {property:?} on record {record_id} at the source, or change the type declared \
             for it in [mapping.{property}]."
        ),
    }
}

/// A request the host asked for that the API cannot take as asked: the
/// host's mistake, so no retry helps.
pub fn invalid_request(detail: &str) -> SyncError {
    sync_error(
        ErrorCategory::Validation,
        false,
        format!("crmsync asked for something the API cannot do: {detail}"),
        "This is a crmsync bug: report it with this message.",
    )
}

/// E9: a record the destination `system` refused to save; `field` is the
/// one it named, if it named one.
pub fn rejected_record(key: &str, field: Option<&str>, message: &str, system: &str) -> SyncError {
    let what = match field {
        Some(field) => format!("field {field:?}"),
        None => "the values named in the message".to_owned(),
    };
    record_error(
        ErrorCategory::Validation,
        key,
        field,
        format!("record {key} was not written: {message}"),
        format!(
            "Correct {what} of record {key} (or the {system} rule that refuses it: required \
             fields, picklist values, validation and duplicate rules), then change the record or \
             run `crmsync sync --full` so it is sent again."
        ),
    )
}

/// E1: a record with no email and no phone.
pub fn missing_handle(record_id: &str) -> SyncError {
    record_error(
        ErrorCategory::MissingHandle,
        record_id,
        None,
        format!("contact {record_id} has no email and no phone, so it was not synced"),
        format!(
            "Add at least one handle (email or phone) to contact {record_id} in HubSpot, or map \
             a property that holds one."
        ),
    )
}

/// E1 in a sync between CRMs: a person without an email gets no counterpart
/// on the other CRM, since nothing could match it there again.
pub fn missing_email(record_id: &str) -> SyncError {
    record_error(
        ErrorCategory::MissingHandle,
        record_id,
        Some("email"),
        format!(
            "record {record_id} has no email, so no counterpart was created for it on the other \
             side"
        ),
        format!(
            "Add an email to record {record_id}: records are matched across the two CRMs by \
             email, and one without could be created twice."
        ),
    )
}

/// E2 (X4) in a sync between CRMs: the record holding this email (or, for
/// companies, domain) on the other CRM is linked to another record already.
pub fn handle_taken_across(
    companies: bool,
    record_id: &str,
    handle: &str,
    other: &str,
) -> SyncError {
    let (category, what) = if companies {
        (ErrorCategory::DomainTaken, "domain")
    } else {
        (ErrorCategory::EmailTaken, "email")
    };
    let id = record_id;
    record_error(
        category,
        id,
        Some(what),
        format!(
            "{what} {handle} of record {id} belongs to record {other} on the other side, which is \
             already linked to another record, so record {id} was not synced"
        ),
        format!(
            "Two records share the {what} {handle}: merge them, or give record {id} its own {what}."
        ),
    )
}

/// E5: contacts "from synced companies" while the company sync failed.
pub fn dependency_failed(sync: &str) -> SyncError {
    SyncError {
        category: ErrorCategory::DependencyFailed,
        retryable: true,
        retry_after_ms: None,
        scope: ErrorScope::Sync,
        record_id: None,
        field: None,
        message: format!(
            "the contacts come from the companies sync {sync:?}, whose last run failed, so this \
             sync stopped before reading any contact"
        ),
        resolution: format!(
            "Fix the errors of {sync:?} (crmsync errors shows them), then run the sync again: the \
             companies sync runs first, and the contacts follow once it succeeds."
        ),
    }
}

/// E2/E3: a handle that belongs to another linked contact (X4); for accounts,
/// a domain that belongs to another linked account.
pub fn handle_taken(conflict: &HandleConflict) -> SyncError {
    let (category, field, noun) = match conflict.kind {
        HandleKind::Email => (ErrorCategory::EmailTaken, "email", "email"),
        HandleKind::Phone => (ErrorCategory::PhoneTaken, "phone", "phone number"),
        HandleKind::Domain => return domain_taken(conflict),
    };
    let id = &conflict.record_id;
    record_error(
        category,
        id,
        Some(field),
        format!(
            "{noun} {} of contact {id} is already taken by the contact linked to HubSpot \
             contact {}, so contact {id} was not synced",
            conflict.handle, conflict.owner_external_id
        ),
        format!(
            "Check the {field} property of HubSpot contact {id} (and of contact {}) and replace \
             it with a unique {noun}.",
            conflict.owner_external_id
        ),
    )
}

fn domain_taken(conflict: &HandleConflict) -> SyncError {
    let id = &conflict.record_id;
    record_error(
        ErrorCategory::DomainTaken,
        id,
        Some("domain"),
        format!(
            "domain {} of company {id} is already taken by the account linked to HubSpot company \
             {}, so company {id} was not synced",
            conflict.handle, conflict.owner_external_id
        ),
        format!(
            "Two HubSpot companies share the domain {}: merge companies {id} and {} in HubSpot, or \
             correct the domain of one.",
            conflict.handle, conflict.owner_external_id
        ),
    )
}

fn record_error(
    category: ErrorCategory,
    record_id: &str,
    field: Option<&str>,
    message: String,
    resolution: String,
) -> SyncError {
    SyncError {
        category,
        retryable: false,
        retry_after_ms: None,
        scope: ErrorScope::Record,
        record_id: Some(record_id.to_owned()),
        field: field.map(str::to_owned),
        message,
        resolution,
    }
}

fn sync_error(
    category: ErrorCategory,
    retryable: bool,
    message: String,
    resolution: &str,
) -> SyncError {
    SyncError {
        category,
        retryable,
        retry_after_ms: None,
        scope: ErrorScope::Sync,
        record_id: None,
        field: None,
        message,
        resolution: resolution.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16, body: &str) -> HttpFailure {
        HttpFailure {
            status,
            retry_after: None,
            body: body.to_owned(),
        }
    }

    #[test]
    fn ten_secondly_429_is_retryable_with_a_delay() {
        let e = classify(&Failure::Http(http(
            429,
            r#"{"status":"error","message":"You have reached your ten_secondly_rolling limit.","errorType":"RATE_LIMIT","policyName":"TEN_SECONDLY_ROLLING"}"#,
        )));
        assert_eq!(e.category, ErrorCategory::RateLimited);
        assert!(e.retryable);
        assert_eq!(e.retry_after_ms, Some(1_000));
        assert!(e.message.contains("TEN_SECONDLY_ROLLING"));
    }

    #[test]
    fn an_absurd_retry_after_is_clamped() {
        let mut f = http(
            429,
            r#"{"status":"error","policyName":"TEN_SECONDLY_ROLLING"}"#,
        );
        f.retry_after = Some("18446744073709551615".into());
        assert_eq!(
            classify_http(&f, Endpoint::Other).retry_after_ms,
            Some(MAX_RETRY_AFTER_MS)
        );
        f.retry_after = Some("1e300".into());
        assert_eq!(
            classify_http(&f, Endpoint::Other).retry_after_ms,
            Some(MAX_RETRY_AFTER_MS)
        );
    }

    #[test]
    fn retry_after_header_wins_over_the_policy_default() {
        let mut f = http(429, "");
        f.retry_after = Some("7".into());
        assert_eq!(
            classify_http(&f, Endpoint::Other).retry_after_ms,
            Some(7_000)
        );
    }

    #[test]
    fn a_404_is_not_retried_on_either_crm() {
        let gone = |body: &str| HttpFailure {
            status: 404,
            retry_after: None,
            body: body.into(),
        };
        let hubspot = classify_http(
            &gone(r#"{"status":"error","message":"Not Found","category":"OBJECT_NOT_FOUND"}"#),
            Endpoint::Other,
        );
        assert!(!hubspot.retryable);
        assert!(hubspot.message.contains("HTTP 404"), "{}", hubspot.message);
        let salesforce = classify_salesforce(&gone(
            r#"[{"message":"The requested resource does not exist","errorCode":"NOT_FOUND"}]"#,
        ));
        assert!(!salesforce.retryable);
        assert!(
            salesforce.message.contains("NOT_FOUND"),
            "{}",
            salesforce.message
        );
    }

    #[test]
    fn daily_limit_stops_the_sync() {
        let e = classify(&Failure::Http(http(
            429,
            r#"{"errorType":"RATE_LIMIT","policyName":"DAILY","message":"daily"}"#,
        )));
        assert_eq!(e.category, ErrorCategory::RateLimited);
        assert!(!e.retryable);
        assert_eq!(e.scope, ErrorScope::Sync);
    }

    #[test]
    fn expired_and_invalid_tokens_differ() {
        let expired = classify(&Failure::Http(http(
            401,
            r#"{"status":"error","message":"The OAuth token used to make this call expired 1 second(s) ago.","category":"EXPIRED_AUTHENTICATION"}"#,
        )));
        assert_eq!(expired.category, ErrorCategory::AuthExpired);
        assert!(expired.retryable);
        let invalid = classify(&Failure::Http(http(
            401,
            r#"{"status":"error","category":"INVALID_AUTHENTICATION"}"#,
        )));
        assert_eq!(invalid.category, ErrorCategory::AuthInvalid);
        assert!(!invalid.retryable);
    }

    #[test]
    fn missing_scopes_are_named() {
        let e = classify(&Failure::Http(http(
            403,
            r#"{"status":"error","message":"This app hasn't been granted all required scopes to make this call.","category":"MISSING_SCOPES","errors":[{"message":"One or more of the following scopes are required.","context":{"requiredGranularScopes":["crm.objects.contacts.read"]}}]}"#,
        )));
        assert_eq!(e.category, ErrorCategory::PermissionDenied);
        assert!(e.message.contains("crm.objects.contacts.read"));
        assert!(e.resolution.contains("crm.objects.contacts.read"));
    }

    #[test]
    fn a_404_on_memberships_is_list_not_found() {
        let e = classify_http(
            &http(404, r#"{"status":"error","category":"OBJECT_NOT_FOUND"}"#),
            Endpoint::ListMemberships,
        );
        assert_eq!(e.category, ErrorCategory::ListNotFound);
        assert_eq!(e.scope, ErrorScope::Sync);
        let e = classify(&Failure::Http(http(
            404,
            r#"{"message":"List 42 does not exist."}"#,
        )));
        assert_eq!(e.category, ErrorCategory::ListNotFound);
    }

    #[test]
    fn server_errors_and_timeouts_are_transient() {
        for status in [500, 502, 503, 504, 408] {
            let e = classify(&Failure::Http(http(status, "<html>bad gateway</html>")));
            assert_eq!(e.category, ErrorCategory::Transient, "{status}");
            assert!(e.retryable);
        }
        let e = classify(&Failure::Transport("connection reset".into()));
        assert_eq!(e.category, ErrorCategory::Transient);
    }

    #[test]
    fn property_errors_are_field_not_found() {
        let e = classify(&Failure::Http(http(
            400,
            r#"{"status":"error","message":"Property values were not valid","category":"VALIDATION_ERROR","errors":[{"message":"Property \"favourite_colour\" does not exist","code":"PROPERTY_DOESNT_EXIST"}]}"#,
        )));
        assert_eq!(e.category, ErrorCategory::FieldNotFound);
        let e = classify(&Failure::Http(http(
            400,
            r#"{"status":"error","message":"bad","category":"VALIDATION_ERROR"}"#,
        )));
        assert_eq!(e.category, ErrorCategory::Validation);
    }

    #[test]
    fn record_errors_name_the_record_and_handle() {
        let e = classify(&Failure::MissingHandle("17".into()));
        assert_eq!(e.category, ErrorCategory::MissingHandle);
        assert_eq!(e.scope, ErrorScope::Record);
        assert_eq!(e.record_id.as_deref(), Some("17"));
        let e = classify(&Failure::HandleTaken(HandleConflict {
            record_id: "18".into(),
            kind: HandleKind::Phone,
            handle: "+15550100".into(),
            owner_external_id: "9".into(),
        }));
        assert_eq!(e.category, ErrorCategory::PhoneTaken);
        assert!(e.message.contains("+15550100") && e.message.contains('9'));
        assert_eq!(e.field.as_deref(), Some("phone"));
    }

    #[test]
    fn a_missing_property_is_a_field_error_naming_it() {
        let e = classify(&Failure::FieldNotFound("favourite_colour".into()));
        assert_eq!(e.category, ErrorCategory::FieldNotFound);
        assert_eq!(e.scope, ErrorScope::Field);
        assert_eq!(e.field.as_deref(), Some("favourite_colour"));
        assert!(!e.retryable);
    }

    #[test]
    fn non_json_bodies_still_classify() {
        let e = classify(&Failure::Http(http(401, "not json at all")));
        assert_eq!(e.category, ErrorCategory::AuthInvalid);
        let e = classify(&Failure::Http(http(302, "")));
        assert_eq!(e.category, ErrorCategory::InvalidResponse);
    }
}
