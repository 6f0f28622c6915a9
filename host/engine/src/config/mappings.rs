//! The `[mapping]` table: the default mappings of each source and object,
//! a config's own mappings applied over them, and their declared types (M1-M4).

use super::*;

/// The source properties `mappings` read, each once, in mapping order.
pub fn mapped_properties(mappings: &[FieldMapping]) -> Vec<String> {
    let mut properties: Vec<String> = Vec::new();
    for m in mappings {
        if !properties.contains(&m.source) {
            properties.push(m.source.clone());
        }
    }
    properties
}

/// The default HubSpot mappings, then each `source.properties` entry (to a
/// field of the same name unless it has a default), then `[mapping]`, which
/// replaces the target of a property already mapped. An empty target drops it.
pub(super) fn effective_mappings(
    object: SyncObject,
    mut mappings: Vec<FieldMapping>,
    properties: &[String],
    mapping: &BTreeMap<String, toml::Value>,
) -> Result<Vec<FieldMapping>> {
    if !properties.is_empty() {
        for (index, property) in properties.iter().enumerate() {
            if property.trim().is_empty() {
                bail!("source.properties[{index}]: a property name must not be empty");
            }
        }
        // An explicit property list chooses which fields sync (M1): defaults
        // outside it are dropped.
        mappings.retain(|m| properties.contains(&m.source));
        for property in properties {
            if !mappings.iter().any(|m| &m.source == property) {
                mappings.push(FieldMapping {
                    source: property.clone(),
                    target: FieldTarget::Custom(property.clone()),
                    value_type: FieldType::Text,
                });
            }
        }
    }
    for (source, target) in mapping {
        if source.trim().is_empty() {
            bail!("mapping: a source property name must not be empty");
        }
        let (field, value_type) = match target {
            toml::Value::String(field) => (field.clone(), FieldType::Text),
            toml::Value::Table(_) => {
                let typed: RawTypedMapping = target
                    .clone()
                    .try_into()
                    .map_err(|e| anyhow::anyhow!("mapping.{source}: {}", e.message()))?;
                let value_type = parse_type(typed.value_type.as_deref(), typed.options)
                    .with_context(|| format!("mapping.{source}"))?;
                (typed.field, value_type)
            }
            other => bail!(
                "mapping.{source}: expected a destination field name or a table \
                 {{ field = \"...\", type = \"...\" }}, got {other}"
            ),
        };
        let target = match field.as_str() {
            "" => {
                mappings.retain(|m| &m.source != source);
                continue;
            }
            "domain" if object == SyncObject::Companies => FieldTarget::Domain,
            "email" | "phone" | "first_name" | "last_name" if object == SyncObject::Companies => {
                bail!(
                    "mapping.{source}: {field:?} is a contact target; a company maps to \"name\", \
                     \"domain\" or a plain field"
                )
            }
            "name" => FieldTarget::FullName,
            "first_name" => FieldTarget::FirstName,
            "last_name" => FieldTarget::LastName,
            "email" => FieldTarget::Email,
            "phone" => FieldTarget::Phone,
            custom if custom.trim().is_empty() => {
                bail!("mapping.{source}: the destination field name must not be blank")
            }
            custom => FieldTarget::Custom(custom.to_owned()),
        };
        if value_type != FieldType::Text && !matches!(target, FieldTarget::Custom(_)) {
            bail!(
                "mapping.{source}: a type applies to plain fields only; {field:?} is a name or \
                 handle (always text)"
            );
        }
        match mappings.iter_mut().find(|m| &m.source == source) {
            Some(existing) => {
                existing.target = target;
                existing.value_type = value_type;
            }
            None => mappings.push(FieldMapping {
                source: source.clone(),
                target,
                value_type,
            }),
        }
    }
    Ok(mappings)
}

/// A mapping target as the config spells it (`first_name`, `email`, a field name).
pub fn target_name(target: &FieldTarget) -> String {
    match target {
        FieldTarget::FirstName => "first_name".to_owned(),
        FieldTarget::LastName => "last_name".to_owned(),
        FieldTarget::FullName => "name".to_owned(),
        FieldTarget::Email => "email".to_owned(),
        FieldTarget::Phone => "phone".to_owned(),
        FieldTarget::Domain => "domain".to_owned(),
        FieldTarget::Custom(name) => name.clone(),
    }
}

/// HubSpot's standard contact fields and where they land (M1, M2, M3).
pub fn default_mappings() -> Vec<FieldMapping> {
    [
        ("firstname", FieldTarget::FirstName),
        ("lastname", FieldTarget::LastName),
        ("email", FieldTarget::Email),
        ("hs_additional_emails", FieldTarget::Email),
        ("phone", FieldTarget::Phone),
        ("mobilephone", FieldTarget::Phone),
    ]
    .into_iter()
    .map(text_mapping)
    .collect()
}

/// A default mapping: HubSpot's standard properties are text.
pub(super) fn text_mapping((source, target): (&str, FieldTarget)) -> FieldMapping {
    FieldMapping {
        source: source.to_owned(),
        target,
        value_type: FieldType::Text,
    }
}

/// A mapping's `type` and `options` (M4).
pub(super) fn parse_type(name: Option<&str>, options: Option<Vec<String>>) -> Result<FieldType> {
    let value_type = match name.unwrap_or("string") {
        "string" | "text" => FieldType::Text,
        "number" => FieldType::Number,
        "boolean" => FieldType::Boolean,
        "date" => FieldType::Date,
        "datetime" => FieldType::DateTime,
        "picklist" => match options {
            Some(options) if !options.is_empty() => return Ok(FieldType::Picklist(options)),
            _ => bail!("type: a picklist needs its allowed values in `options`"),
        },
        "multi_select" => return Ok(FieldType::MultiSelect(options.unwrap_or_default())),
        other => bail!(
            "type: unknown type {other:?} (expected string, number, boolean, date, datetime, \
             picklist or multi_select)"
        ),
    };
    if options.is_some() {
        bail!("options: only picklist and multi_select fields take options");
    }
    Ok(value_type)
}

/// Salesforce's standard person fields (on Leads and Contacts alike) and
/// where they land; `record_type` and `lead_status` are filled by the
/// component (X8).
pub fn default_salesforce_mappings() -> Vec<FieldMapping> {
    [
        ("FirstName", FieldTarget::FirstName),
        ("LastName", FieldTarget::LastName),
        ("Email", FieldTarget::Email),
        ("Phone", FieldTarget::Phone),
        ("MobilePhone", FieldTarget::Phone),
        ("record_type", FieldTarget::Custom("record_type".into())),
        ("lead_status", FieldTarget::Custom("lead_status".into())),
    ]
    .into_iter()
    .map(text_mapping)
    .collect()
}

/// Salesforce's standard Account fields and where they land (S3): the name,
/// and the website as the domain accounts are matched by.
pub fn default_salesforce_account_mappings() -> Vec<FieldMapping> {
    [
        ("Name", FieldTarget::FullName),
        ("Website", FieldTarget::Domain),
    ]
    .into_iter()
    .map(text_mapping)
    .collect()
}

/// HubSpot's standard company fields and where they land (S3): the name,
/// and the domains that match companies to accounts.
pub fn default_company_mappings() -> Vec<FieldMapping> {
    [
        ("name", FieldTarget::FullName),
        ("domain", FieldTarget::Domain),
        ("hs_additional_domains", FieldTarget::Domain),
    ]
    .into_iter()
    .map(text_mapping)
    .collect()
}

/// A type as the config spells it.
pub fn type_name(value_type: &FieldType) -> &'static str {
    match value_type {
        FieldType::Text => "string",
        FieldType::Number => "number",
        FieldType::Boolean => "boolean",
        FieldType::Date => "date",
        FieldType::DateTime => "datetime",
        FieldType::Picklist(_) => "picklist",
        FieldType::MultiSelect(_) => "multi_select",
        FieldType::Phone(_) => "phone",
    }
}
