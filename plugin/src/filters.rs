//! Filters (S4): which source records sync.
//!
//! Every filter is evaluated here on every record read, whatever the source
//! did with it: pushing a filter down to HubSpot's search API only has to
//! narrow the read to a superset of the matching records, never decide it.

use crate::types::{FieldType, Filter, FilterOp, Page, SourceRecord};
use crate::values;
use serde_json::{Value, json};
use std::cmp::Ordering;

/// Keeps the page's records that pass every filter and lists the others'
/// ids as `excluded` (S4).
pub fn apply(filters: &[Filter], mut page: Page) -> Page {
    if filters.is_empty() {
        return page;
    }
    let (kept, excluded): (Vec<_>, Vec<_>) = page
        .records
        .into_iter()
        .partition(|record| keep(filters, record));
    page.records = kept;
    page.excluded
        .extend(excluded.into_iter().map(|record| record.id));
    page
}

/// Whether a record passes every filter (AND).
pub fn keep(filters: &[Filter], record: &SourceRecord) -> bool {
    filters.iter().all(|filter| {
        let value = record
            .properties
            .iter()
            .find(|p| p.name == filter.property)
            .and_then(|p| p.value.as_deref())
            .filter(|v| !v.trim().is_empty());
        holds(filter, value)
    })
}

/// One filter on one value (`None`: the property has no value).
pub fn holds(filter: &Filter, value: Option<&str>) -> bool {
    let t = &filter.value_type;
    let text = |test: fn(&str, &str) -> bool, operand: &str| {
        value.is_some_and(|v| test(&v.to_lowercase(), &operand.to_lowercase()))
    };
    match &filter.op {
        FilterOp::IsEmpty => value.is_none(),
        FilterOp::IsNotEmpty => value.is_some(),
        FilterOp::Equals(x) => value.is_some_and(|v| equal(v, x, t)),
        FilterOp::NotEquals(x) => !value.is_some_and(|v| equal(v, x, t)),
        FilterOp::Contains(x) => text(|v, x| v.contains(x), x),
        FilterOp::NotContains(x) => !text(|v, x| v.contains(x), x),
        FilterOp::StartsWith(x) => text(|v, x| v.starts_with(x), x),
        FilterOp::EndsWith(x) => text(|v, x| v.ends_with(x), x),
        FilterOp::GreaterThan(x) => {
            value.is_some_and(|v| order(v, x, t) == Some(Ordering::Greater))
        }
        FilterOp::LessThan(x) => value.is_some_and(|v| order(v, x, t) == Some(Ordering::Less)),
        FilterOp::IsAnyOf(xs) => value.is_some_and(|v| xs.iter().any(|x| equal(v, x, t))),
        FilterOp::IsNoneOf(xs) => !value.is_some_and(|v| xs.iter().any(|x| equal(v, x, t))),
    }
}

fn equal(value: &str, operand: &str, value_type: &FieldType) -> bool {
    match value_type {
        FieldType::Boolean => {
            let read = |s: &str| match values::convert(s, value_type) {
                Ok(crate::types::FieldData::Boolean(b)) => Some(b),
                _ => None,
            };
            read(value).is_some_and(|v| Some(v) == read(operand))
        }
        // Any one of the selected values.
        FieldType::MultiSelect(_) => value
            .split(';')
            .any(|v| v.trim().to_lowercase() == operand.trim().to_lowercase()),
        FieldType::Text | FieldType::Picklist(_) | FieldType::Phone(_) => {
            value.trim().to_lowercase() == operand.trim().to_lowercase()
        }
        FieldType::Number | FieldType::Date | FieldType::DateTime => {
            order(value, operand, value_type) == Some(Ordering::Equal)
        }
    }
}

/// How `value` compares with `operand` as the filter's type; `None` when
/// either cannot be read as that type.
fn order(value: &str, operand: &str, value_type: &FieldType) -> Option<Ordering> {
    match value_type {
        FieldType::Number => values::number(value)?.partial_cmp(&values::number(operand)?),
        FieldType::Date => Some(values::date(value)?.cmp(&values::date(operand)?)),
        FieldType::DateTime => Some(values::date_time(value)?.cmp(&values::date_time(operand)?)),
        FieldType::Boolean => None,
        // Text that reads as numbers on both sides compares as numbers
        // ("9" < "10"), the rest alphabetically, ignoring case.
        FieldType::Text
        | FieldType::Picklist(_)
        | FieldType::MultiSelect(_)
        | FieldType::Phone(_) => match (values::number(value), values::number(operand)) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => Some(
                value
                    .trim()
                    .to_lowercase()
                    .cmp(&operand.trim().to_lowercase()),
            ),
        },
    }
}

/// The filter as a HubSpot search filter, when the API's operator selects a
/// superset of what [`holds`] keeps. Substring tests are not pushed (the
/// API's `CONTAINS_TOKEN` matches whole tokens), nor negative ones (whether
/// the API's `NEQ`/`NOT_IN` keep records without the property is not
/// documented), nor anything on multi-select values.
pub fn search_filter(filter: &Filter) -> Option<Value> {
    let property = &filter.property;
    let make = |operator: &str, value: Option<String>| {
        Some(match value {
            Some(value) => {
                json!({ "propertyName": property, "operator": operator, "value": value })
            }
            None => json!({ "propertyName": property, "operator": operator }),
        })
    };
    let t = &filter.value_type;
    match &filter.op {
        FilterOp::IsEmpty => make("NOT_HAS_PROPERTY", None),
        FilterOp::IsNotEmpty => make("HAS_PROPERTY", None),
        FilterOp::Equals(x) => match t {
            FieldType::Number => make("EQ", Some(number_text(values::number(x)?))),
            FieldType::Text | FieldType::Picklist(_) => make("EQ", Some(x.trim().to_owned())),
            _ => None,
        },
        FilterOp::GreaterThan(x) | FilterOp::LessThan(x) => {
            let operator = if matches!(filter.op, FilterOp::GreaterThan(_)) {
                "GT"
            } else {
                "LT"
            };
            let value = match t {
                FieldType::Number => number_text(values::number(x)?),
                // Dates and times are epoch milliseconds in search filters. A
                // date's midnight bound keeps a superset of the days compared.
                FieldType::Date => {
                    let day = values::date(x)?.and_hms_opt(0, 0, 0)?.and_utc();
                    day.timestamp_millis().to_string()
                }
                FieldType::DateTime => values::date_time(x)?.timestamp_millis().to_string(),
                _ => return None,
            };
            make(operator, Some(value))
        }
        FilterOp::IsAnyOf(xs) => {
            let values: Option<Vec<String>> = match t {
                FieldType::Number => xs
                    .iter()
                    .map(|x| values::number(x).map(number_text))
                    .collect(),
                // The API documents lower-case values for IN on string properties.
                FieldType::Text | FieldType::Picklist(_) => {
                    Some(xs.iter().map(|x| x.trim().to_lowercase()).collect())
                }
                _ => None,
            };
            Some(json!({ "propertyName": property, "operator": "IN", "values": values? }))
        }
        _ => None,
    }
}

fn number_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(op: FilterOp, t: FieldType) -> Filter {
        Filter {
            property: "p".into(),
            op,
            value_type: t,
        }
    }

    fn s(x: &str) -> String {
        x.to_owned()
    }

    /// Each operator on a value that matches, one that does not, and no value.
    #[test]
    fn every_operator_on_text() {
        use FilterOp::*;
        let t = FieldType::Text;
        let cases: Vec<(FilterOp, &str, &str, bool)> = vec![
            (Equals(s("France")), "france ", "Spain", false),
            (NotEquals(s("France")), "Spain", "FRANCE", true),
            (Contains(s("ACME")), "Big Acme Inc", "Initech", false),
            (NotContains(s("acme")), "Initech", "acme", true),
            (GreaterThan(s("m")), "Zoe", "Adam", false),
            (LessThan(s("m")), "adam", "zoe", false),
            (IsEmpty, "", "x", true),
            (IsNotEmpty, "x", "", false),
            (StartsWith(s("+44")), "+44 20", "+1 44", false),
            (
                EndsWith(s("@acme.com")),
                "ada@ACME.com",
                "ada@acme.co",
                false,
            ),
            (IsAnyOf(vec![s("a"), s("B")]), "b", "c", false),
            (IsNoneOf(vec![s("a"), s("B")]), "c", "b", true),
        ];
        for (op, yes, no, empty) in cases {
            let filter = f(op, t.clone());
            let v = |x: &'static str| (!x.is_empty()).then_some(x);
            assert!(
                holds(&filter, v(yes)),
                "{:?} should keep {yes:?}",
                filter.op
            );
            assert!(!holds(&filter, v(no)), "{:?} should drop {no:?}", filter.op);
            assert_eq!(holds(&filter, None), empty, "{:?} on no value", filter.op);
        }
    }

    #[test]
    fn numbers_compare_as_numbers() {
        let gt = f(FilterOp::GreaterThan(s("9")), FieldType::Number);
        assert!(holds(&gt, Some("10")));
        assert!(!holds(&gt, Some("8.5")));
        assert!(!holds(&gt, Some("lots")));
        let eq = f(FilterOp::Equals(s("100")), FieldType::Number);
        assert!(holds(&eq, Some("100.0")) && holds(&eq, Some("1e2")));
        let ne = f(FilterOp::NotEquals(s("100")), FieldType::Number);
        assert!(holds(&ne, Some("lots")), "unreadable values are not equal");
        let any = f(FilterOp::IsAnyOf(vec![s("1"), s("2")]), FieldType::Number);
        assert!(holds(&any, Some("2.0")) && !holds(&any, Some("3")));
        // As text, "10" > "9" holds too: both read as numbers.
        assert!(holds(
            &f(FilterOp::GreaterThan(s("9")), FieldType::Text),
            Some("10")
        ));
    }

    #[test]
    fn dates_compare_as_instants() {
        let after = f(FilterOp::GreaterThan(s("2024-01-31")), FieldType::DateTime);
        assert!(holds(&after, Some("2024-01-31T00:00:00.001Z")));
        assert!(holds(&after, Some("1706745600000"))); // 2024-02-01 in epoch ms
        assert!(!holds(&after, Some("2024-01-30T23:59:59Z")));
        let day = f(FilterOp::GreaterThan(s("2024-01-31")), FieldType::Date);
        assert!(
            !holds(&day, Some("2024-01-31T22:00:00Z")),
            "same day is not after"
        );
        assert!(holds(&day, Some("2024-02-01")));
        let before = f(
            FilterOp::LessThan(s("2024-01-31T12:00:00+02:00")),
            FieldType::DateTime,
        );
        assert!(holds(&before, Some("2024-01-31T09:59:59Z")));
        assert!(!holds(&before, Some("2024-01-31T10:00:00Z")));
    }

    #[test]
    fn booleans_and_multi_selects() {
        let yes = f(FilterOp::Equals(s("true")), FieldType::Boolean);
        assert!(holds(&yes, Some("Yes")) && !holds(&yes, Some("false")));
        let tag = f(
            FilterOp::Equals(s("vip")),
            FieldType::MultiSelect(Vec::new()),
        );
        assert!(holds(&tag, Some("new;VIP")) && !holds(&tag, Some("new")));
    }

    #[test]
    fn only_supersets_are_pushed_down() {
        let push = |op, t| search_filter(&f(op, t));
        assert_eq!(
            push(FilterOp::GreaterThan(s("2024-01-31")), FieldType::Date).unwrap(),
            json!({"propertyName": "p", "operator": "GT", "value": "1706659200000"})
        );
        assert_eq!(
            push(FilterOp::IsAnyOf(vec![s("FR"), s("de")]), FieldType::Text).unwrap(),
            json!({"propertyName": "p", "operator": "IN", "values": ["fr", "de"]})
        );
        assert_eq!(
            push(FilterOp::IsEmpty, FieldType::Number).unwrap(),
            json!({"propertyName": "p", "operator": "NOT_HAS_PROPERTY"})
        );
        assert_eq!(
            push(FilterOp::Equals(s("5.0")), FieldType::Number).unwrap()["value"],
            "5"
        );
        assert!(push(FilterOp::Contains(s("x")), FieldType::Text).is_none());
        assert!(push(FilterOp::NotEquals(s("x")), FieldType::Text).is_none());
        assert!(push(FilterOp::IsNoneOf(vec![s("x")]), FieldType::Text).is_none());
        assert!(push(FilterOp::GreaterThan(s("m")), FieldType::Text).is_none());
        assert!(push(FilterOp::Equals(s("x")), FieldType::MultiSelect(Vec::new())).is_none());
    }
}
