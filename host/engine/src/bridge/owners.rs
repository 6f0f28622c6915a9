//! Record owners across the two CRMs: read once per run from each side and
//! placed on the write by email, since an owner id means nothing to the other CRM.

use super::*;

impl Bridge<'_> {
    /// Both CRMs' owners; `None` (with the error recorded) when one side's
    /// cannot be read, such as a HubSpot token without the owners scope.
    pub(super) fn read_owners(
        &mut self,
        source: &mut Side,
        destination: &mut Side,
    ) -> Result<Option<Owners>, Stop> {
        let mut owners = Owners::default();
        for side in [source, destination] {
            let read = side.source(HubspotScope::All);
            match with_retries(side, &self.options.retry, Retry::All, |side| {
                side.instance.list_owners(&read)
            }) {
                Ok(list) => owners.add(side.link_side, list),
                Err(Stop::Classified(mut error)) => {
                    error.scope = ErrorScope::Field;
                    error.message = format!(
                        "owners were not synced this run: {} (owner fields need the CRM's users)",
                        error.message
                    );
                    self.store
                        .record_error(self.run_id, &error_row(self.run_id, &error))?;
                    return Ok(None);
                }
                Err(stop) => return Err(stop),
            }
        }
        Ok(Some(owners))
    }

    /// Owner fields in a step's plans: each email written becomes the
    /// owner's id on the side it goes to. An owner that side has no user for
    /// (or a cleared one: records always have an owner) is not written, is
    /// reported on the field, and stays as agreed before, so it is no change
    /// to echo back.
    pub(super) fn place_owners(&mut self, step: &[Pair], plans: &mut [Reconciled]) -> Result<()> {
        let owner_fields: Vec<&SyncField> = self.crm.fields.iter().filter(|f| f.owner).collect();
        if owner_fields.is_empty() {
            return Ok(());
        }
        for (pair, plan) in step.iter().zip(plans.iter_mut()) {
            let base = agreed_values(&pair.link.agreed);
            for towards in [LinkSide::Destination, LinkSide::Source] {
                let values = match towards {
                    LinkSide::Destination => &mut plan.to_destination,
                    LinkSide::Source => &mut plan.to_source,
                };
                let mut unplaced = Vec::new();
                values.retain_mut(|value| {
                    let Some(field) = owner_fields.iter().find(|f| f.source == value.name) else {
                        return true;
                    };
                    let email = match &value.value {
                        Some(FieldData::Text(email)) => email.clone(),
                        _ => {
                            unplaced.push((field.source.clone(), None));
                            return false;
                        }
                    };
                    match self.owners.id_of(towards, &email) {
                        Some(id) => {
                            value.value = Some(FieldData::Text(id.clone()));
                            true
                        }
                        None => {
                            unplaced.push((field.source.clone(), Some(email)));
                            false
                        }
                    }
                });
                for (key, email) in unplaced {
                    plan.agreed.retain(|v| v.name != key);
                    plan.agreed
                        .extend(base.iter().filter(|v| v.name == key).cloned());
                    let Some(email) = email else { continue };
                    let record = match towards {
                        LinkSide::Destination => pair.link.source_id.clone().or(source_id(pair)),
                        LinkSide::Source => {
                            pair.link.destination_id.clone().or(destination_id(pair))
                        }
                    };
                    let field = self.field_name(&key, towards);
                    let system = match (towards, &self.crm.system, &self.config.source.system) {
                        (LinkSide::Destination, SourceSystem::Hubspot, _)
                        | (LinkSide::Source, _, SourceSystem::Hubspot) => "HubSpot",
                        _ => "Salesforce",
                    };
                    let error = record_error(
                        ErrorCategory::Validation,
                        ErrorScope::Field,
                        record.as_deref(),
                        &field,
                        format!(
                            "the owner of record {} ({email}) is no {system} user, so {field} was \
                             not changed",
                            record.as_deref().unwrap_or("?")
                        ),
                        format!(
                            "Owners are matched by email: give the {system} user the email \
                             {email}, or change the record's owner."
                        ),
                    );
                    self.store
                        .record_error(self.run_id, &error_row(self.run_id, &error))?;
                }
            }
        }
        Ok(())
    }
}

/// The owners of both CRMs, by id and by email: an owner field's value is
/// the owner's email while reconciled, so it means the same on both sides.
#[derive(Default)]
pub(super) struct Owners {
    /// Per side (source, destination): owner id -> email.
    email: [HashMap<String, String>; 2],
    /// Per side: email -> owner id (the first owner listed with it).
    id: [HashMap<String, String>; 2],
}

impl Owners {
    pub(super) fn index(side: LinkSide) -> usize {
        match side {
            LinkSide::Source => 0,
            LinkSide::Destination => 1,
        }
    }

    pub(super) fn add(&mut self, side: LinkSide, owners: Vec<Owner>) {
        let i = Self::index(side);
        for owner in owners {
            if let Some(email) = owner.email {
                self.email[i].insert(owner.id.clone(), email.clone());
                self.id[i].entry(email).or_insert(owner.id);
            }
        }
    }

    /// An owner id of `side` as the email both sides know it by; an owner
    /// with no email stays its id (it cannot be carried across).
    pub(super) fn email_of(&self, side: LinkSide, id: &str) -> String {
        self.email[Self::index(side)]
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_owned())
    }

    /// The owner of `side` with this email.
    pub(super) fn id_of(&self, side: LinkSide, email: &str) -> Option<&String> {
        self.id[Self::index(side)].get(&email.to_lowercase())
    }
}
