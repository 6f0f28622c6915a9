//! A run's errors: the sync-level ones the runner classifies itself, a
//! classified `sync-error` as the store keeps it (a row), its category's
//! name, and the one error a pass answers by leaving a field out (a field
//! the API hides from the integration user).

use crate::bindings::crmsync::sync::types::{ErrorCategory, ErrorScope, FieldMapping, SyncError};
use crate::store::ErrorRow;

/// The mapped field a query refused as one it cannot see (`field-not-found`
/// naming it), if it is one the sync could leave out.
pub(crate) fn hidden_field<'a>(error: &'a SyncError, mappings: &[FieldMapping]) -> Option<&'a str> {
    let field = error.field.as_deref()?;
    (error.category == ErrorCategory::FieldNotFound && mappings.iter().any(|m| m.source == field))
        .then_some(field)
}

/// The stored form of a classified error.
pub fn error_row(run_id: i64, error: &SyncError) -> ErrorRow {
    ErrorRow {
        run_id,
        record_id: error.record_id.clone(),
        category: category_name(error.category).to_owned(),
        scope: match error.scope {
            ErrorScope::Record => "record",
            ErrorScope::Field => "field",
            ErrorScope::Sync => "sync",
        }
        .to_owned(),
        field: error.field.clone(),
        retryable: error.retryable,
        message: error.message.clone(),
        resolution: error.resolution.clone(),
    }
}

/// The category's name as the WIT spells it.
pub fn category_name(category: ErrorCategory) -> &'static str {
    match category {
        ErrorCategory::MissingHandle => "missing-handle",
        ErrorCategory::EmailTaken => "email-taken",
        ErrorCategory::PhoneTaken => "phone-taken",
        ErrorCategory::RateLimited => "rate-limited",
        ErrorCategory::DependencyFailed => "dependency-failed",
        ErrorCategory::DomainTaken => "domain-taken",
        ErrorCategory::FieldNotFound => "field-not-found",
        ErrorCategory::ListNotFound => "list-not-found",
        ErrorCategory::AuthExpired => "auth-expired",
        ErrorCategory::AuthInvalid => "auth-invalid",
        ErrorCategory::PermissionDenied => "permission-denied",
        ErrorCategory::Validation => "validation",
        ErrorCategory::Transient => "transient",
        ErrorCategory::InvalidResponse => "invalid-response",
    }
}

/// A sync-level error the runner classifies itself (not retried, naming
/// no record): an expired credential, a cursor that repeats, S5's cap.
pub(crate) fn sync_level(category: ErrorCategory, message: String, resolution: &str) -> SyncError {
    SyncError {
        category,
        retryable: false,
        retry_after_ms: None,
        scope: ErrorScope::Sync,
        record_id: None,
        field: None,
        message,
        resolution: resolution.to_owned(),
    }
}
