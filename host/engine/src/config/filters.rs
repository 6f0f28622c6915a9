//! `[[filter]]` tables (S4): each a mapped property, one of the twelve
//! operators and its operands, checked against the property's declared type.

use super::*;

/// One `[[filter]]`: its property must be mapped, and it compares as the
/// mapping's type (names and handles are text).
/// `[[filter]]` entries (S4), each typed as its property's mapping; errors
/// name the entry (`filter[1]: …`, under `key`).
pub(super) fn parse_filters(
    raw: &[RawFilter],
    mappings: &[FieldMapping],
    key: &str,
) -> Result<Vec<Filter>> {
    raw.iter()
        .enumerate()
        .map(|(index, filter)| {
            parse_filter(filter, mappings).with_context(|| format!("{key}[{index}]"))
        })
        .collect()
}

pub(super) fn parse_filter(raw: &RawFilter, mappings: &[FieldMapping]) -> Result<Filter> {
    let Some(mapping) = mappings.iter().find(|m| m.source == raw.field) else {
        bail!(
            "field {:?} is not selected for sync; add it to source.properties or [mapping], \
             or filter on a synced field",
            raw.field
        );
    };
    let value_type = match mapping.target {
        FieldTarget::Custom(_) => mapping.value_type.clone(),
        _ => FieldType::Text,
    };
    let scalar = |value: &toml::Value| -> Result<String> {
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Datetime(d) => d.to_string(),
            other => bail!("value: expected a single value, got {other}"),
        };
        check_operand(&text, &value_type)?;
        Ok(text)
    };
    let one = || -> Result<String> {
        match &raw.value {
            Some(value) => scalar(value),
            None => bail!("value: operator {:?} needs a value", raw.op),
        }
    };
    let many = || -> Result<Vec<String>> {
        match &raw.value {
            Some(toml::Value::Array(values)) if !values.is_empty() => {
                values.iter().map(scalar).collect()
            }
            _ => bail!(
                "value: operator {:?} needs a non-empty list of values",
                raw.op
            ),
        }
    };
    let op = match raw.op.as_str() {
        "equals" => FilterOp::Equals(one()?),
        "not_equals" => FilterOp::NotEquals(one()?),
        "contains" => FilterOp::Contains(one()?),
        "not_contains" => FilterOp::NotContains(one()?),
        "gt" => FilterOp::GreaterThan(one()?),
        "lt" => FilterOp::LessThan(one()?),
        "starts_with" => FilterOp::StartsWith(one()?),
        "ends_with" => FilterOp::EndsWith(one()?),
        "in" => FilterOp::IsAnyOf(many()?),
        "not_in" => FilterOp::IsNoneOf(many()?),
        "is_empty" | "is_not_empty" => {
            if raw.value.is_some() {
                bail!("value: operator {:?} takes no value", raw.op);
            }
            if raw.op == "is_empty" {
                FilterOp::IsEmpty
            } else {
                FilterOp::IsNotEmpty
            }
        }
        other => bail!(
            "op: unknown operator {other:?} (expected one of {})",
            FILTER_OPERATORS.join(", ")
        ),
    };
    Ok(Filter {
        property: raw.field.clone(),
        op,
        value_type,
    })
}

/// A filter's operand must read as its field's type, or it would match
/// nothing (or everything) without a word.
pub(super) fn check_operand(text: &str, value_type: &FieldType) -> Result<()> {
    let readable = match value_type {
        FieldType::Number => text.trim().parse::<f64>().is_ok_and(f64::is_finite),
        FieldType::Boolean => matches!(
            text.trim().to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "1" | "0"
        ),
        FieldType::Date | FieldType::DateTime => {
            let text = text.trim();
            text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty()
                || chrono::DateTime::parse_from_rfc3339(text).is_ok()
                || chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok()
        }
        FieldType::Text
        | FieldType::Picklist(_)
        | FieldType::MultiSelect(_)
        | FieldType::Phone(_) => true,
    };
    if !readable {
        bail!("value: {text:?} is not a {}", type_name(value_type));
    }
    Ok(())
}
