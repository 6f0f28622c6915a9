//! Resolving the intents a killed run left: each create recorded before its
//! request is found on its side by the values written, and linked, or made
//! again only once the CRM's reads would show it.

use super::*;

impl Bridge<'_> {
    /// Creates a crashed run recorded and never linked (see
    /// [`crate::store::Intent`]): each side's records modified since the
    /// oldest are read once, and a record not linked to anything whose values
    /// are those the create wrote is linked as the pair's, with the values
    /// both sides then agreed on. One not found is forgotten once the
    /// side's reads have had time to show it (the create never landed: at
    /// once for Salesforce, after a minute for HubSpot's search index), and
    /// until then its record is not created again and the run keeps its
    /// bookmark, so the next run reads that record again.
    pub(super) fn resolve_intents(
        &mut self,
        source: &mut Side,
        destination: &mut Side,
    ) -> Result<(), Stop> {
        let intents = self.store.intents(&self.config.name)?;
        for side in [source, destination] {
            let mine: Vec<&Intent> = intents
                .iter()
                .filter(|i| i.side == side.link_side)
                .collect();
            let Some(oldest) = mine.iter().map(|i| i.created_ms).min() else {
                continue;
            };
            let other_id = |intent: &Intent| match intent.side {
                LinkSide::Destination => intent.link.source_id.clone(),
                LinkSide::Source => intent.link.destination_id.clone(),
            };
            let window = TimeWindow {
                since: (oldest - CLOCK_MARGIN_MS).max(0) as u64,
                until: (now_ms() + CLOCK_MARGIN_MS).max(0) as u64,
            };
            let recent = match side.read(self.options, HubspotScope::Modified(window)) {
                Ok(records) => records,
                Err(Stop::Classified(error)) => {
                    tracing::warn!("earlier creates not checked: {}", error.message);
                    self.blocked.extend(mine.iter().filter_map(|i| other_id(i)));
                    continue;
                }
                Err(stop) => return Err(stop),
            };
            let mut claimed: HashSet<&str> = HashSet::new();
            for intent in mine {
                let mut found = None;
                for record in &recent {
                    let id = record.contact.external_id.as_str();
                    if !claimed.contains(id)
                        && written_matches(&intent.written, record)
                        && self
                            .store
                            .link(&self.config.name, side.link_side, id)?
                            .is_none()
                    {
                        found = Some(id);
                        break;
                    }
                }
                let intent_id = intent.id.expect("a recorded intent");
                match found {
                    Some(id) => {
                        claimed.insert(id);
                        let mut link = intent.link.clone();
                        match side.link_side {
                            LinkSide::Destination => link.destination_id = Some(id.to_owned()),
                            LinkSide::Source => link.source_id = Some(id.to_owned()),
                        }
                        tracing::info!(
                            "linked {id}, created by an interrupted run for {}",
                            other_id(intent).unwrap_or_default()
                        );
                        self.store.begin()?;
                        self.store.save_link(&self.config.name, &link)?;
                        self.store.forget_intent(intent_id)?;
                        self.store.commit()?;
                    }
                    None if now_ms() - intent.created_ms > side.search_lag_ms() => {
                        self.store.forget_intent(intent_id)?;
                    }
                    None => self.blocked.extend(other_id(intent)),
                }
            }
        }
        Ok(())
    }
}
