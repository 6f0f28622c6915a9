//! Typed values (M4): a source's text converted to a destination field's type.
//!
//! HubSpot sends every property value as a string (numbers, booleans and
//! dates included), so one reader per type turns that text into a
//! [`FieldData`], or says why it cannot.

use crate::types::{FieldData, FieldType};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

/// Converts one non-empty source value. The error says what was expected,
/// for a field-level `validation` error.
pub fn convert(raw: &str, value_type: &FieldType) -> Result<FieldData, String> {
    match value_type {
        FieldType::Text => Ok(FieldData::Text(raw.to_owned())),
        FieldType::Phone(region) => crate::phones::e164(raw, region).map(FieldData::Text),
        FieldType::Number => number(raw)
            .map(FieldData::Number)
            .ok_or_else(|| "is not a number".to_owned()),
        FieldType::Boolean => boolean(raw)
            .map(FieldData::Boolean)
            .ok_or_else(|| "is not a boolean (true/false, yes/no, 1/0)".to_owned()),
        FieldType::Date => date(raw)
            .map(|d| FieldData::Date(d.format("%Y-%m-%d").to_string()))
            .ok_or_else(|| "is not a date (YYYY-MM-DD, RFC 3339 or epoch milliseconds)".to_owned()),
        FieldType::DateTime => date_time(raw)
            .map(|t| FieldData::DateTime(t.to_rfc3339_opts(SecondsFormat::Millis, true)))
            .ok_or_else(|| {
                "is not a date/time (RFC 3339, YYYY-MM-DD or epoch milliseconds)".to_owned()
            }),
        FieldType::Picklist(allowed) => {
            let value = raw.trim();
            if allowed.is_empty() || allowed.iter().any(|a| a == value) {
                Ok(FieldData::Text(value.to_owned()))
            } else {
                Err(format!("is not one of the allowed values {allowed:?}"))
            }
        }
        FieldType::MultiSelect(allowed) => {
            let mut values: Vec<String> = Vec::new();
            let mut refused: Vec<&str> = Vec::new();
            for value in raw.split(';').map(str::trim).filter(|v| !v.is_empty()) {
                if !allowed.is_empty() && !allowed.iter().any(|a| a == value) {
                    refused.push(value);
                } else if !values.iter().any(|v| v == value) {
                    values.push(value.to_owned());
                }
            }
            if refused.is_empty() {
                Ok(FieldData::Multi(values))
            } else {
                Err(format!(
                    "holds {refused:?}, not among the allowed values {allowed:?}"
                ))
            }
        }
    }
}

/// A finite decimal number; surrounding spaces are ignored.
pub fn number(raw: &str) -> Option<f64> {
    let text = raw.trim();
    // `f64::from_str` also reads "inf", "NaN" and "infinity": not numbers a CRM holds.
    if text.is_empty()
        || text
            .chars()
            .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
    {
        return None;
    }
    text.parse::<f64>().ok().filter(|n| n.is_finite())
}

fn boolean(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Some(true),
        "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// An instant from RFC 3339, a bare date (midnight UTC) or epoch milliseconds.
pub fn date_time(raw: &str) -> Option<DateTime<Utc>> {
    let text = raw.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return DateTime::from_timestamp_millis(text.parse().ok()?);
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(day.and_hms_opt(0, 0, 0)?.and_utc())
}

/// A calendar date: a bare date as written, else the UTC date of an instant.
pub fn date(raw: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d")
        .ok()
        .or_else(|| date_time(raw).map(|t| t.date_naive()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str, t: FieldType) -> FieldData {
        convert(raw, &t).unwrap_or_else(|e| panic!("{raw:?}: {e}"))
    }

    #[test]
    fn text_is_verbatim() {
        assert_eq!(
            ok(" a;b ", FieldType::Text),
            FieldData::Text(" a;b ".into())
        );
    }

    #[test]
    fn numbers_are_finite_decimals() {
        assert_eq!(ok("1200.50", FieldType::Number), FieldData::Number(1200.5));
        assert_eq!(ok(" -3 ", FieldType::Number), FieldData::Number(-3.0));
        assert_eq!(ok("1e3", FieldType::Number), FieldData::Number(1000.0));
        for bad in [
            "abc",
            "1,200",
            "NaN",
            "inf",
            "infinity",
            "",
            "1e999",
            "12 apples",
        ] {
            let e = convert(bad, &FieldType::Number).unwrap_err();
            assert!(e.contains("not a number"), "{bad}: {e}");
        }
    }

    #[test]
    fn booleans_accept_the_usual_spellings() {
        for (raw, want) in [
            ("true", true),
            ("FALSE", false),
            ("Yes", true),
            ("0", false),
        ] {
            assert_eq!(ok(raw, FieldType::Boolean), FieldData::Boolean(want));
        }
        assert!(convert("maybe", &FieldType::Boolean).is_err());
    }

    #[test]
    fn dates_and_times_read_hubspots_three_spellings() {
        let at = |s: &str| FieldData::DateTime(s.into());
        assert_eq!(
            ok("2024-01-31T10:30:00+01:00", FieldType::DateTime),
            at("2024-01-31T09:30:00.000Z")
        );
        assert_eq!(
            ok("2024-01-31", FieldType::DateTime),
            at("2024-01-31T00:00:00.000Z")
        );
        assert_eq!(
            ok("1706693400000", FieldType::DateTime),
            at("2024-01-31T09:30:00.000Z")
        );
        assert_eq!(
            ok("2024-01-31", FieldType::Date),
            FieldData::Date("2024-01-31".into())
        );
        assert_eq!(
            ok("1706659200000", FieldType::Date),
            FieldData::Date("2024-01-31".into())
        );
        assert_eq!(
            ok("2024-01-31T23:30:00-02:00", FieldType::Date),
            FieldData::Date("2024-02-01".into())
        );
        for bad in [
            "31/01/2024",
            "2024-02-30",
            "yesterday",
            "2024-01-31T25:00:00Z",
        ] {
            assert!(convert(bad, &FieldType::DateTime).is_err(), "{bad}");
            assert!(convert(bad, &FieldType::Date).is_err(), "{bad}");
        }
    }

    #[test]
    fn picklists_take_only_allowed_values() {
        let t = FieldType::Picklist(vec!["lead".into(), "customer".into()]);
        assert_eq!(
            ok(" customer ", t.clone()),
            FieldData::Text("customer".into())
        );
        let e = convert("Customer", &t).unwrap_err();
        assert!(e.contains("allowed"), "{e}");
    }

    #[test]
    fn multi_selects_split_on_semicolons() {
        let t = FieldType::MultiSelect(vec!["a".into(), "b".into(), "c".into()]);
        assert_eq!(
            ok("b; a;;b ", t.clone()),
            FieldData::Multi(vec!["b".into(), "a".into()])
        );
        let e = convert("a;z", &t).unwrap_err();
        assert!(e.contains("\"z\""), "{e}");
        assert_eq!(
            ok("x;y", FieldType::MultiSelect(Vec::new())),
            FieldData::Multi(vec!["x".into(), "y".into()])
        );
    }
}
