//! Pairing records across the two CRMs (X3, X8): by stored link, then by
//! email among the records read, then by a look-up of the other side; merges
//! and converted Leads followed to their survivor.

use super::*;

impl Bridge<'_> {
    /// X8: a Lead converted into a Contact (or HubSpot contacts merged) moves
    /// the link to the survivor, so its counterpart is updated, not doubled.
    pub(super) fn follow_merges(&mut self, records: &[MappedRecord], side: LinkSide) -> Result<()> {
        for record in records {
            for merged in &record.merged_ids {
                let kind = kind_of(record);
                if self.store.relink(
                    &self.config.name,
                    side,
                    merged,
                    &record.contact.external_id,
                    kind.as_deref(),
                )? {
                    self.merged += 1;
                }
            }
        }
        Ok(())
    }

    /// Pairs a page of source records: by stored link (X1, X2), then by
    /// email with an unlinked destination record read this run (X3), then by
    /// email looked up on the destination; a record left alone gets its
    /// counterpart created (X5) unless it has no email to match it by later
    /// (E1), or its email's record is linked to another (X4, E2).
    pub(super) fn pair_source_page(
        &mut self,
        destination: &mut Side,
        records: Vec<MappedRecord>,
        held: &mut Held,
    ) -> Result<Vec<Pair>, Stop> {
        let sync = self.config.name.clone();
        let mut pairs = Vec::new();
        let mut alone = Vec::new();
        for record in records {
            if let Some(mut link) =
                self.store
                    .link(&sync, LinkSide::Source, &record.contact.external_id)?
            {
                match (link.syncing, link.stopped_at) {
                    (true, _) => {}
                    // Its destination record was deleted: nothing to write to.
                    (false, Some(LinkSide::Destination)) => {
                        self.counts.skipped += 1;
                        continue;
                    }
                    // Read matching again: it syncs again.
                    (false, _) => self.resume(&mut link, LinkSide::Source)?,
                }
                let counterpart = match link.destination_id.as_deref() {
                    Some(id) => held.take(id)?,
                    None => None,
                };
                pairs.push(Pair {
                    link,
                    source: Some(record),
                    destination: counterpart,
                });
                continue;
            }
            let mut counterpart = None;
            for id in held.with_handles(handles(&record, self.crm.object))? {
                if self
                    .store
                    .link(&sync, LinkSide::Destination, &id)?
                    .is_none()
                {
                    counterpart = held.take(&id)?;
                    break;
                }
            }
            match counterpart {
                Some(counterpart) => pairs.push(new_pair(Some(record), Some(counterpart))),
                None => alone.push(record),
            }
        }
        // A counterpart already paired on this page is taken, as a linked one is.
        let taken: HashSet<String> = pairs
            .iter()
            .filter_map(|p| p.link.destination_id.clone())
            .collect();
        let found = self.match_elsewhere(destination, alone, LinkSide::Source, taken)?;
        for pair in &found {
            if let Some(id) = &pair.link.destination_id {
                held.take(id)?;
            }
        }
        pairs.extend(found);
        Ok(pairs)
    }

    /// The destination records no source record took: their links, or
    /// (two-way) a counterpart looked up on the source or created there.
    pub(super) fn pair_held(
        &mut self,
        source: &mut Side,
        records: Vec<MappedRecord>,
        two_way: bool,
    ) -> Result<Vec<Pair>, Stop> {
        let sync = self.config.name.clone();
        let mut pairs = Vec::new();
        let mut alone = Vec::new();
        for record in records {
            match self
                .store
                .link(&sync, LinkSide::Destination, &record.contact.external_id)?
            {
                // Read live again after its deletion (restored): it syncs again.
                Some(mut link) if link.stopped_at == Some(LinkSide::Destination) => {
                    self.resume(&mut link, LinkSide::Destination)?;
                    pairs.push(Pair {
                        link,
                        source: None,
                        destination: Some(record),
                    });
                }
                // Its source record no longer syncs: nothing flows back to it.
                Some(link) if !link.syncing => self.counts.skipped += 1,
                Some(link) => pairs.push(Pair {
                    link,
                    source: None,
                    destination: Some(record),
                }),
                None => alone.push(record),
            }
        }
        if two_way {
            pairs.extend(self.match_elsewhere(
                source,
                alone,
                LinkSide::Destination,
                HashSet::new(),
            )?);
        }
        Ok(pairs)
    }

    /// Records of `side` with no counterpart among the records read: looks
    /// their emails up on `other`. `taken` are `other`'s records already
    /// paired this run.
    pub(super) fn match_elsewhere(
        &mut self,
        other: &mut Side,
        records: Vec<MappedRecord>,
        side: LinkSide,
        mut taken: HashSet<String>,
    ) -> Result<Vec<Pair>, Stop> {
        let object = self.crm.object;
        // Sorted: the same records make the same requests (replayable, testable).
        let wanted: Vec<String> = records
            .iter()
            .filter_map(|r| handles(r, object).first().cloned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let found = if wanted.is_empty() {
            Vec::new()
        } else {
            other.lookup(self.options, &wanted)?
        };
        // A look-up by domain finds every Website containing it: only exact
        // (normalised) handles count.
        let mut by_handle: HashMap<&str, &MappedRecord> = HashMap::new();
        for record in &found {
            for handle in handles(record, object) {
                by_handle.entry(handle.as_str()).or_insert(record);
            }
        }
        let mut pairs = Vec::new();
        for record in records {
            let id = record.contact.external_id.clone();
            let Some(handle) = handles(&record, object).first().cloned() else {
                let handle_mapped = self.crm.handle_field(&self.config.source.system).is_some();
                if object == SyncObject::Contacts && handle_mapped {
                    // As HubSpot's connector: no email, no counterpart
                    // created (it could never be matched again).
                    self.reject(missing_email(&id))?;
                    continue;
                }
                // A company needs no domain (as in a sync into the store):
                // its link alone pairs it from now on.
                pairs.push(match side {
                    LinkSide::Source => new_pair(Some(record), None),
                    LinkSide::Destination => new_pair(None, Some(record)),
                });
                continue;
            };
            let counterpart = by_handle.get(handle.as_str()).copied().cloned();
            if let Some(counterpart) = &counterpart {
                let other_id = &counterpart.contact.external_id;
                let linked = self
                    .store
                    .link(&self.config.name, other.link_side, other_id)?
                    .is_some();
                if linked || !taken.insert(other_id.clone()) {
                    self.reject(handle_taken(object, &id, &handle, other_id))?;
                    continue;
                }
            }
            pairs.push(match side {
                LinkSide::Source => new_pair(Some(record), counterpart),
                LinkSide::Destination => new_pair(counterpart, Some(record)),
            });
        }
        Ok(pairs)
    }
}

/// A pair of records never linked before (one may be missing: created).
pub(super) fn new_pair(source: Option<MappedRecord>, destination: Option<MappedRecord>) -> Pair {
    let link = Link {
        source_id: source.as_ref().map(|r| r.contact.external_id.clone()),
        source_kind: source.as_ref().and_then(kind_of),
        destination_id: destination.as_ref().map(|r| r.contact.external_id.clone()),
        destination_kind: destination.as_ref().and_then(kind_of),
        ..Link::default()
    };
    Pair {
        link,
        source,
        destination,
    }
}

pub(super) fn source_id(pair: &Pair) -> Option<String> {
    pair.source.as_ref().map(|r| r.contact.external_id.clone())
}

pub(super) fn destination_id(pair: &Pair) -> Option<String> {
    pair.destination
        .as_ref()
        .map(|r| r.contact.external_id.clone())
}
