//! Writing a step of reconciled pairs to each side: the records, their
//! company links and owners, the links and agreed values committed with
//! what landed, and intents recorded before creates no look-up could find.

use super::*;

impl Bridge<'_> {
    /// Reconciles a step of pairs, writes both ways, commits their links.
    pub(super) fn apply_step(
        &mut self,
        source: &mut Side,
        destination: &mut Side,
        rules: &[FieldRule],
        mut step: Vec<Pair>,
    ) -> Result<(), Stop> {
        self.step_intents.clear();
        let mut inputs: Vec<ReconcileInput> = Vec::with_capacity(step.len());
        for pair in &step {
            let base = agreed_values(&pair.link.agreed);
            let state = |record: &Option<MappedRecord>, side| -> Result<Option<SideState>> {
                record
                    .as_ref()
                    .map(|r| self.side_state(r, &base, side))
                    .transpose()
            };
            inputs.push(ReconcileInput {
                source: state(&pair.source, LinkSide::Source)?,
                destination: state(&pair.destination, LinkSide::Destination)?,
                base,
            });
        }
        let mut plans = source.instance.reconcile(rules, &inputs)?;
        self.place_owners(&step, &mut plans)?;
        // Writes to a CRM cannot be rolled back: none once the lease is another's.
        self.store.check_fence()?;
        let mut rejected = vec![false; step.len()];
        let mut wrote = vec![false; step.len()];
        // Pairs with a write planned that did not happen (the run stopped
        // first): linked if a create landed, but their agreed values stay.
        let mut incomplete = vec![false; step.len()];
        let mut outcomes = Vec::new();
        let mut stopped = None;
        for (towards, side) in [
            (LinkSide::Destination, &mut *destination),
            (LinkSide::Source, &mut *source),
        ] {
            if stopped.is_some() {
                for (index, plan) in plans.iter().enumerate() {
                    let planned = match towards {
                        LinkSide::Destination => &plan.to_destination,
                        LinkSide::Source => &plan.to_source,
                    };
                    incomplete[index] |= !planned.is_empty();
                }
                continue;
            }
            let mut attempted = Vec::new();
            if let Err(stop) = self.write_side(
                side,
                towards,
                &mut step,
                &plans,
                &mut outcomes,
                &mut attempted,
            ) {
                stopped = Some(stop);
            }
            for index in attempted {
                incomplete[index] |= !outcomes.iter().any(|(i, _)| *i == index);
            }
        }
        for (index, ok) in outcomes {
            if ok {
                wrote[index] = true;
            } else {
                rejected[index] = true;
            }
        }
        // What landed is committed even when the run stops here: a later
        // request's failure never loses the ids of the records created before.
        self.store.begin()?;
        for id in self.settled_intents.drain(..) {
            self.store.forget_intent(id)?;
        }
        for (index, (pair, plan)) in step.iter_mut().zip(&plans).enumerate() {
            let linked = pair.link.source_id.is_some() && pair.link.destination_id.is_some();
            if !linked {
                continue;
            }
            let agreed = agreed_json(&plan.agreed);
            let email = pair.handle(self.crm.object);
            if !rejected[index] && !incomplete[index] {
                if pair.link.agreed == agreed && pair.link.email == email && pair.link.id.is_some()
                {
                    if !wrote[index] {
                        self.counts.skipped += 1;
                    }
                    continue;
                }
                pair.link.agreed = agreed;
            }
            pair.link.email = email;
            self.store.save_link(&self.config.name, &pair.link)?;
            if !wrote[index] && !rejected[index] && !incomplete[index] {
                self.counts.skipped += 1;
            }
        }
        self.store
            .checkpoint(self.run_id, None, &self.counts, None)?;
        self.store.commit()?;
        match stopped {
            Some(stop) => Err(stop),
            None => Ok(()),
        }
    }

    /// Writes the plans' values for `towards` through `side`: pushes (pair
    /// index, written) to `outcomes` for every pair whose write was answered,
    /// and the index of every pair it tried to write to `attempted`. On a
    /// stop, what was answered before it is in `outcomes` all the same.
    pub(super) fn write_side(
        &mut self,
        side: &mut Side,
        towards: LinkSide,
        step: &mut [Pair],
        plans: &[Reconciled],
        outcomes: &mut Vec<(usize, bool)>,
        attempted: &mut Vec<usize>,
    ) -> Result<(), Stop> {
        // Outgoing records grouped by where they go (Salesforce: per object).
        let mut batches: BTreeMap<Batch, Vec<(usize, OutgoingRecord)>> = BTreeMap::new();
        for (index, (pair, plan)) in step.iter().zip(plans).enumerate() {
            let (values, id, kind, key) = match towards {
                LinkSide::Destination => (
                    &plan.to_destination,
                    pair.link.destination_id.clone(),
                    pair.link.destination_kind.clone(),
                    pair.link.source_id.clone().or(source_id(pair)),
                ),
                LinkSide::Source => (
                    &plan.to_source,
                    pair.link.source_id.clone(),
                    pair.link.source_kind.clone(),
                    pair.link.destination_id.clone().or(destination_id(pair)),
                ),
            };
            if values.is_empty() {
                continue;
            }
            let Some(key) = key else { continue };
            let create = id.is_none();
            // A create recorded by a crashed run that may have landed: not
            // sent again until that run's record is found or known absent.
            if create && self.blocked.contains(&key) {
                continue;
            }
            let kind = if create {
                side.create_kind().map(str::to_owned)
            } else {
                kind
            };
            // A field the record's Salesforce object lacks (a Contact's
            // `Company`) is not written; with nothing else, neither is the record.
            let absent = absent_fields(kind.as_deref());
            let company = match values.iter().find(|v| v.name == COMPANY_KEY) {
                Some(_) if kind.as_deref() == Some("lead") => None,
                Some(v) => self.company_id(v.value.as_ref(), towards)?,
                None => None,
            };
            let values: Vec<OutgoingValue> = values
                .iter()
                .filter(|v| v.name != COMPANY_KEY)
                .map(|v| OutgoingValue {
                    name: self.field_name(&v.name, towards),
                    value: v.value.clone(),
                })
                .filter(|v| !absent.contains(&v.name.as_str()))
                .collect();
            if values.is_empty() && company.is_none() {
                continue;
            }
            batches.entry((create, kind)).or_default().push((
                index,
                OutgoingRecord {
                    key,
                    id,
                    values,
                    company,
                },
            ));
        }
        let mut queue: std::collections::VecDeque<_> = batches.into_iter().collect();
        while let Some(((create, kind), batch)) = queue.pop_front() {
            let destination = side.destination(kind.as_deref());
            attempted.extend(batch.iter().map(|(index, _)| *index));
            if create {
                self.record_intents(step, plans, &batch, towards, kind.as_deref())?;
            }
            let retry = if create {
                Retry::NotProcessed
            } else {
                Retry::All
            };
            // Sent until every record is answered: what a failed request
            // carried is sent again (as far as `retry` allows), what landed
            // is kept whatever happens after.
            let mut pending: Vec<(usize, OutgoingRecord)> = batch;
            let mut answered = Vec::new();
            let sent = with_retries(side, &self.options.retry, retry, |side| {
                let records: Vec<OutgoingRecord> = pending.iter().map(|(_, r)| r.clone()).collect();
                let results = match side.instance.write_records(&destination, &records)? {
                    Ok(results) => results,
                    Err(error) => return Ok(Err(error)),
                };
                crate::test_hooks::after_write();
                let mut failure = None;
                let mut unanswered = Vec::new();
                for (entry, result) in pending.drain(..).zip(results) {
                    match result.outcome {
                        WriteOutcome::Failed(error) => {
                            failure.get_or_insert(error);
                            unanswered.push(entry);
                        }
                        outcome => answered.push((entry, outcome)),
                    }
                }
                pending = unanswered;
                Ok(failure.map_or(Ok(()), Err))
            });
            // Creates the CRM refused as existing records: written as updates.
            let mut existing = Vec::new();
            for ((index, record), outcome) in answered {
                // Another pair of this step holds it (paired before, or found
                // existing a moment ago): its link is not saved yet.
                let paired_in_step = |id: &str| {
                    step.iter().enumerate().any(|(i, p)| {
                        let held = match towards {
                            LinkSide::Destination => &p.link.destination_id,
                            LinkSide::Source => &p.link.source_id,
                        };
                        i != index && held.as_deref() == Some(id)
                    })
                };
                let taken = match &outcome {
                    WriteOutcome::Exists(id) => {
                        paired_in_step(id)
                            || self.store.link(&self.config.name, towards, id)?.is_some()
                    }
                    _ => false,
                };
                // Answered: whatever it says, the create's intent is settled.
                if let Some(intent) = self.step_intents.remove(&(index, towards)) {
                    self.settled_intents.push(intent);
                }
                let pair = &mut step[index];
                match outcome {
                    WriteOutcome::Exists(id) => {
                        if taken {
                            // X4: the record holding the handle is another's.
                            let handle = pair.handle(self.crm.object).unwrap_or_default();
                            self.reject_taken(side, towards, &record.key, handle, &id)?;
                            outcomes.push((index, false));
                            continue;
                        }
                        // X3: the record was there all along (the look-up
                        // missed it: a secondary email, the search index).
                        self.link_to(&mut pair.link, towards, &id, kind.clone());
                        existing.push((
                            index,
                            OutgoingRecord {
                                id: Some(id),
                                ..record.clone()
                            },
                        ));
                    }
                    WriteOutcome::Written(id) => {
                        let counts = match towards {
                            LinkSide::Destination => &mut self.written.to_destination,
                            LinkSide::Source => &mut self.written.to_source,
                        };
                        if create {
                            counts.created += 1;
                            self.counts.created += 1;
                            self.link_to(&mut pair.link, towards, &id, kind.clone());
                        } else {
                            counts.updated += 1;
                            self.counts.updated += 1;
                        }
                        outcomes.push((index, true));
                    }
                    WriteOutcome::Rejected(error) => {
                        self.reject(error)?;
                        outcomes.push((index, false));
                    }
                    WriteOutcome::Failed(_) => unreachable!("failed results stay pending"),
                }
            }
            sent?;
            if !existing.is_empty() {
                queue.push_back(((false, kind), existing));
            }
        }
        Ok(())
    }

    /// Before creates are sent: an intent for each record no look-up could
    /// find again (no email, no domain), committed before the request, so a
    /// kill before its link commits is resolved by the next run instead of
    /// creating the record twice.
    pub(super) fn record_intents(
        &mut self,
        step: &[Pair],
        plans: &[Reconciled],
        batch: &[(usize, OutgoingRecord)],
        towards: LinkSide,
        kind: Option<&str>,
    ) -> Result<(), Stop> {
        let handle = self
            .crm
            .handle_field(&self.config.source.system)
            .map(|f| f.source.clone());
        // Owners are written as the other CRM's ids: not how the record is recognised.
        let owners: HashSet<&str> = self
            .crm
            .fields
            .iter()
            .filter(|f| f.owner)
            .map(|f| f.source.as_str())
            .collect();
        let mut intents = Vec::new();
        let mut indexes = Vec::new();
        for (index, _) in batch {
            let plan = &plans[*index];
            let values = match towards {
                LinkSide::Destination => &plan.to_destination,
                LinkSide::Source => &plan.to_source,
            };
            let keyed = handle
                .as_ref()
                .is_some_and(|h| values.iter().any(|v| &v.name == h && v.value.is_some()));
            if keyed {
                continue;
            }
            let written: Vec<FieldValue> = values
                .iter()
                .filter(|v| v.name != COMPANY_KEY && !owners.contains(v.name.as_str()))
                .filter_map(|v| {
                    Some(FieldValue {
                        name: v.name.clone(),
                        value: v.value.clone()?,
                    })
                })
                .collect();
            let mut link = step[*index].link.clone();
            match towards {
                LinkSide::Destination => {
                    link.source_id = link.source_id.or(source_id(&step[*index]));
                    link.destination_kind = kind.map(str::to_owned);
                }
                LinkSide::Source => {
                    link.destination_id = link.destination_id.or(destination_id(&step[*index]));
                    link.source_kind = kind.map(str::to_owned);
                }
            }
            link.agreed = agreed_json(&plan.agreed);
            link.email = step[*index].handle(self.crm.object);
            intents.push(Intent {
                id: None,
                side: towards,
                link,
                written: agreed_json(&written),
                created_ms: now_ms(),
            });
            indexes.push(*index);
        }
        if intents.is_empty() {
            return Ok(());
        }
        self.store.record_intents(&self.config.name, &mut intents)?;
        for (index, intent) in indexes.into_iter().zip(intents) {
            if let Some(id) = intent.id {
                self.step_intents.insert((index, towards), id);
            }
        }
        Ok(())
    }

    /// Links the pair to its record `id` (of `kind`) on `towards`: one the
    /// run created, or found there. A record the run puts at the source
    /// counts as read by it (the full-run sweep keeps its link).
    pub(super) fn link_to(
        &mut self,
        link: &mut Link,
        towards: LinkSide,
        id: &str,
        kind: Option<String>,
    ) {
        match towards {
            LinkSide::Destination => {
                link.destination_id = Some(id.to_owned());
                link.destination_kind = kind;
            }
            LinkSide::Source => {
                if let Some(ids) = &mut self.read_ids {
                    ids.insert(id.to_owned());
                }
                link.source_id = Some(id.to_owned());
                link.source_kind = kind;
            }
        }
    }

    /// A record's values for `reconcile`. A field its Salesforce object does
    /// not have keeps the agreed value: not read is not blanked.
    pub(super) fn side_state(
        &self,
        record: &MappedRecord,
        base: &[FieldValue],
        side: LinkSide,
    ) -> Result<SideState> {
        let mut values: Vec<FieldValue> = record
            .contact
            .fields
            .iter()
            .filter(|f| f.name != RECORD_TYPE)
            .cloned()
            .collect();
        // The handle compares as a handle: an email whatever its case (HubSpot
        // lower-cases what it is sent), a company's domain whatever URL holds
        // it (`https://www.acme.com/` in a Website is HubSpot's `acme.com`);
        // so neither is a conflict, and what is written is the normalised form.
        if let Some(handle) = self.crm.handle_field(&self.config.source.system) {
            values.retain(|v| v.name != handle.source);
            if let Some(normalised) = handles(record, self.crm.object).first() {
                values.push(FieldValue {
                    name: handle.source.clone(),
                    value: FieldData::Text(normalised.clone()),
                });
            }
        }
        // An owner is its email while reconciled (ids differ between CRMs).
        for field in self.crm.fields.iter().filter(|f| f.owner) {
            if let Some(value) = values.iter_mut().find(|v| v.name == field.source)
                && let FieldData::Text(id) = &value.value
            {
                value.value = FieldData::Text(self.owners.email_of(side, id));
            }
        }
        let absent = absent_fields(kind_of(record).as_deref());
        for field in &self.crm.fields {
            let name = match side {
                LinkSide::Source => &field.source,
                LinkSide::Destination => &field.destination,
            };
            if absent.contains(&name.as_str()) {
                values.retain(|v| v.name != field.source);
                values.extend(base.iter().filter(|v| v.name == field.source).cloned());
            }
        }
        if let Some(part) = &self.company_part {
            values.retain(|v| v.name != COMPANY_KEY);
            if kind_of(record).as_deref() == Some("lead") {
                // A Lead has no Account (its company is text): not read, not blank.
                values.extend(base.iter().filter(|v| v.name == COMPANY_KEY).cloned());
            } else {
                // The first of its companies (HubSpot's primary first) that syncs.
                for company in &record.company_ids {
                    if let Some(link) = self.store.link(part, side, company)?
                        && let Some(id) = link.id
                    {
                        values.push(FieldValue {
                            name: COMPANY_KEY.to_owned(),
                            value: FieldData::Text(id.to_string()),
                        });
                        break;
                    }
                }
            }
        }
        Ok(SideState {
            values,
            modified_at: record.modified_at,
        })
    }

    /// The company a plan's `@company` value names, by its id on `towards`.
    /// A cleared company is `None`: associations are left as they are.
    pub(super) fn company_id(
        &self,
        value: Option<&FieldData>,
        towards: LinkSide,
    ) -> Result<Option<String>> {
        let Some(FieldData::Text(link)) = value else {
            return Ok(None);
        };
        let Ok(link) = link.parse::<i64>() else {
            return Ok(None);
        };
        Ok(self.store.link_by_id(link)?.and_then(|link| match towards {
            LinkSide::Source => link.source_id,
            LinkSide::Destination => link.destination_id,
        }))
    }

    /// A field key (the source's name) as `towards` spells it.
    pub(super) fn field_name(&self, key: &str, towards: LinkSide) -> String {
        match towards {
            LinkSide::Source => key.to_owned(),
            LinkSide::Destination => self
                .crm
                .fields
                .iter()
                .find(|f| f.source == key)
                .map_or_else(|| key.to_owned(), |f| f.destination.clone()),
        }
    }
}

/// Whether `record` holds every value an earlier create wrote (text
/// compared trimmed, other types exactly).
pub(super) fn written_matches(
    written: &BTreeMap<String, serde_json::Value>,
    record: &MappedRecord,
) -> bool {
    !written.is_empty()
        && agreed_values(written).iter().all(|value| {
            record
                .contact
                .fields
                .iter()
                .find(|f| f.name == value.name)
                .is_some_and(|f| match (&f.value, &value.value) {
                    (FieldData::Text(read), FieldData::Text(sent)) => read.trim() == sent.trim(),
                    (read, sent) => read == sent,
                })
        })
}

/// Agreed values as stored: `{"text": "..."}`, `{"number": 1.5}`, ... so
/// their type survives the round trip.
pub(super) fn agreed_json(values: &[FieldValue]) -> BTreeMap<String, serde_json::Value> {
    values
        .iter()
        .map(|v| {
            let tagged = match &v.value {
                FieldData::Text(t) => serde_json::json!({ "text": t }),
                FieldData::Number(n) => serde_json::json!({ "number": n }),
                FieldData::Boolean(b) => serde_json::json!({ "boolean": b }),
                FieldData::Date(d) => serde_json::json!({ "date": d }),
                FieldData::DateTime(t) => serde_json::json!({ "date_time": t }),
                FieldData::Multi(m) => serde_json::json!({ "multi": m }),
            };
            (v.name.clone(), tagged)
        })
        .collect()
}

pub(super) fn agreed_values(agreed: &BTreeMap<String, serde_json::Value>) -> Vec<FieldValue> {
    agreed
        .iter()
        .filter_map(|(name, tagged)| {
            let (tag, value) = tagged.as_object()?.iter().next()?;
            let text = || value.as_str().map(str::to_owned);
            let value = match tag.as_str() {
                "text" => FieldData::Text(text()?),
                "number" => FieldData::Number(value.as_f64()?),
                "boolean" => FieldData::Boolean(value.as_bool()?),
                "date" => FieldData::Date(text()?),
                "date_time" => FieldData::DateTime(text()?),
                "multi" => FieldData::Multi(
                    value
                        .as_array()?
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect(),
                ),
                _ => return None,
            };
            Some(FieldValue {
                name: name.clone(),
                value,
            })
        })
        .collect()
}

/// The fields a Salesforce record of `kind` does not have.
pub(super) fn absent_fields(kind: Option<&str>) -> &'static [&'static str] {
    match kind {
        Some("contact") => LEAD_ONLY,
        Some("lead") => CONTACT_ONLY,
        _ => &[],
    }
}

/// Salesforce fields only Leads have, and only Contacts: a record of the
/// other object reads them as absent, which is no change (a converted Lead's
/// Contact has no `Company`; its Account is the company).
pub(super) const LEAD_ONLY: &[&str] = &["Company", "Status", "LeadSource", "Industry", "Rating"];

pub(super) const CONTACT_ONLY: &[&str] = &["AccountId", "ReportsToId", "Department", "Birthdate"];
