//! Pairing records across the two CRMs (X3, X8), as the component decides
//! it (`pair-read`, `pair-looked-up`, `fold-merges`): this file gathers what
//! those decisions need (stored links, held records, look-ups on the other
//! CRM) and applies what they say.

use super::*;
use crate::bindings::crmsync::sync::types::{
    Counterpart, CrmSide, LinkState, MergedId, MergedRecord, Pairing, PairingRules, ReadRecord,
    UnpairedRecord,
};

impl Bridge<'_> {
    /// X8: a Lead converted into a Contact (or HubSpot contacts merged) moves
    /// the link to the survivor, so its counterpart is updated, not doubled.
    /// `pairer` is either side's instance: the decision reads no CRM.
    pub(super) fn follow_merges(
        &mut self,
        pairer: &mut Instance,
        link_side: LinkSide,
        records: &[MappedRecord],
    ) -> Result<()> {
        let survivors: Vec<&MappedRecord> = records
            .iter()
            .filter(|r| !r.merged_ids.is_empty())
            .collect();
        if survivors.is_empty() {
            return Ok(());
        }
        let linked = |id: &str| -> Result<bool> {
            Ok(self.store.link(&self.config.name, link_side, id)?.is_some())
        };
        let mut asked = Vec::with_capacity(survivors.len());
        for record in &survivors {
            asked.push(MergedRecord {
                id: record.contact.external_id.clone(),
                linked: linked(&record.contact.external_id)?,
                merged: record
                    .merged_ids
                    .iter()
                    .map(|id| {
                        Ok(MergedId {
                            id: id.clone(),
                            linked: linked(id)?,
                        })
                    })
                    .collect::<Result<_>>()?,
            });
        }
        let folds = pairer.fold_merges(&asked)?;
        for (record, fold) in survivors.into_iter().zip(folds) {
            let Some(merged) = fold else { continue };
            if self.store.relink(
                &self.config.name,
                link_side,
                &merged,
                &record.contact.external_id,
                kind_of(record).as_deref(),
            )? {
                self.merged += 1;
            }
        }
        Ok(())
    }

    /// What pairing needs to know of this sync, for records read on `side`.
    fn pairing_rules(&self, side: LinkSide) -> PairingRules {
        PairingRules {
            side: crm_side(side),
            companies: self.crm.object == SyncObject::Companies,
            handle_mapped: self.crm.handle_field(&self.config.source.system).is_some(),
        }
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
        let object = self.crm.object;
        let mut links = Vec::with_capacity(records.len());
        let mut asked = Vec::with_capacity(records.len());
        for record in &records {
            let link = self.stored_link(LinkSide::Source, record)?;
            let read_counterparts = if link.is_some() {
                Vec::new()
            } else {
                self.held_counterparts(held, handles(record, object))?
            };
            asked.push(ReadRecord {
                id: record.contact.external_id.clone(),
                handles: handles(record, object).to_vec(),
                link: link.as_ref().map(|l| link_state(l, LinkSide::Source)),
                read_counterparts,
            });
            links.push(link);
        }
        let rules = self.pairing_rules(LinkSide::Source);
        let pairings = destination.instance.pair_read(&rules, &asked)?;
        let mut pairs = Vec::new();
        let mut alone = Vec::new();
        for ((record, link), pairing) in records.into_iter().zip(links).zip(pairings) {
            match (pairing, link) {
                (Pairing::Linked(linked), Some(mut link)) => {
                    if linked.resume {
                        self.resume(&mut link, LinkSide::Source)?;
                    }
                    let counterpart = match linked.counterpart_id.as_deref() {
                        Some(id) => held.take(id)?,
                        None => None,
                    };
                    pairs.push(Pair {
                        link,
                        source: Some(record),
                        destination: counterpart,
                    });
                }
                (Pairing::Paired(id), _) => {
                    let counterpart = held.take(&id)?;
                    pairs.push(new_pair(Some(record), counterpart));
                }
                (Pairing::LookUp(_), _) => alone.push(record),
                (other, _) => self.take_pairing(other, Some(record), None, &mut pairs)?,
            }
        }
        // A counterpart already paired on this page is taken, as a linked one is.
        let taken: Vec<String> = pairs
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
        let object = self.crm.object;
        let mut links = Vec::with_capacity(records.len());
        let mut asked = Vec::with_capacity(records.len());
        for record in &records {
            let link = self.stored_link(LinkSide::Destination, record)?;
            asked.push(ReadRecord {
                id: record.contact.external_id.clone(),
                handles: handles(record, object).to_vec(),
                link: link.as_ref().map(|l| link_state(l, LinkSide::Destination)),
                read_counterparts: Vec::new(),
            });
            links.push(link);
        }
        let rules = self.pairing_rules(LinkSide::Destination);
        let pairings = source.instance.pair_read(&rules, &asked)?;
        let mut pairs = Vec::new();
        let mut alone = Vec::new();
        for ((record, link), pairing) in records.into_iter().zip(links).zip(pairings) {
            match (pairing, link) {
                (Pairing::Linked(linked), Some(mut link)) => {
                    if linked.resume {
                        self.resume(&mut link, LinkSide::Destination)?;
                    }
                    pairs.push(Pair {
                        link,
                        source: None,
                        destination: Some(record),
                    });
                }
                (Pairing::LookUp(_), _) => alone.push(record),
                (other, _) => self.take_pairing(other, None, Some(record), &mut pairs)?,
            }
        }
        if two_way {
            pairs.extend(self.match_elsewhere(source, alone, LinkSide::Destination, Vec::new())?);
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
        taken: Vec<String>,
    ) -> Result<Vec<Pair>, Stop> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
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
        let mut counterparts = Vec::with_capacity(found.len());
        for record in &found {
            let id = &record.contact.external_id;
            counterparts.push(Counterpart {
                id: id.clone(),
                handles: handles(record, object).to_vec(),
                linked: self
                    .store
                    .link(&self.config.name, other.link_side, id)?
                    .is_some(),
            });
        }
        let asked: Vec<UnpairedRecord> = records
            .iter()
            .map(|r| UnpairedRecord {
                id: r.contact.external_id.clone(),
                handles: handles(r, object).to_vec(),
            })
            .collect();
        let rules = self.pairing_rules(side);
        let pairings = other
            .instance
            .pair_looked_up(&rules, &asked, &counterparts, &taken)?;
        let mut pairs = Vec::new();
        for (record, pairing) in records.into_iter().zip(pairings) {
            let counterpart = match &pairing {
                Pairing::Paired(id) => found.iter().find(|f| f.contact.external_id == *id).cloned(),
                _ => None,
            };
            let (source, destination) = match side {
                LinkSide::Source => (Some(record), counterpart),
                LinkSide::Destination => (counterpart, Some(record)),
            };
            match pairing {
                Pairing::Paired(_) | Pairing::Create => pairs.push(new_pair(source, destination)),
                other => self.take_pairing(other, source, destination, &mut pairs)?,
            }
        }
        Ok(pairs)
    }

    /// Applies an outcome that needs nothing of the pass's state: a create,
    /// a rejection or a skip. (`pair-read` does not create or reject, and
    /// `pair-looked-up` does not skip, but either answer is taken as said.)
    fn take_pairing(
        &mut self,
        pairing: Pairing,
        source: Option<MappedRecord>,
        destination: Option<MappedRecord>,
        pairs: &mut Vec<Pair>,
    ) -> Result<()> {
        match pairing {
            Pairing::Create => pairs.push(new_pair(source, destination)),
            Pairing::Rejected(error) => self.reject(error)?,
            Pairing::Skipped => self.counts.skipped += 1,
            unexpected => {
                anyhow::bail!("the component paired a record unexpectedly: {unexpected:?}")
            }
        }
        Ok(())
    }

    /// X4 for a create the CRM refused because the record holding its
    /// handle exists (`other`), when that record is linked to another: the
    /// component's rejection, as a look-up finding it linked would give.
    pub(super) fn reject_taken(
        &mut self,
        side: &mut Side,
        towards: LinkSide,
        key: &str,
        handle: String,
        other: &str,
    ) -> Result<()> {
        let read_on = match towards {
            LinkSide::Destination => LinkSide::Source,
            LinkSide::Source => LinkSide::Destination,
        };
        let record = UnpairedRecord {
            id: key.to_owned(),
            handles: vec![handle.clone()],
        };
        let holder = Counterpart {
            id: other.to_owned(),
            handles: vec![handle],
            linked: true,
        };
        let pairing = side.instance.pair_looked_up(
            &self.pairing_rules(read_on),
            &[record],
            &[holder],
            &[],
        )?;
        match pairing.into_iter().next() {
            Some(Pairing::Rejected(error)) => self.reject(error),
            other => anyhow::bail!("the component paired {key} with a linked record: {other:?}"),
        }
    }

    /// The stored link of a record read on `side`.
    fn stored_link(&self, side: LinkSide, record: &MappedRecord) -> Result<Option<Link>> {
        self.store
            .link(&self.config.name, side, &record.contact.external_id)
    }

    /// The held destination records sharing one of `handles`, each once,
    /// with the handles it was found by and whether a link holds it.
    fn held_counterparts(&self, held: &Held, handles: &[String]) -> Result<Vec<Counterpart>> {
        let mut counterparts: Vec<Counterpart> = Vec::new();
        for (id, handle) in held.with_handles(handles)? {
            match counterparts.iter_mut().find(|c| c.id == id) {
                Some(known) => known.handles.push(handle),
                None => {
                    let linked = self
                        .store
                        .link(&self.config.name, LinkSide::Destination, &id)?
                        .is_some();
                    counterparts.push(Counterpart {
                        id,
                        handles: vec![handle],
                        linked,
                    });
                }
            }
        }
        Ok(counterparts)
    }
}

fn crm_side(side: LinkSide) -> CrmSide {
    match side {
        LinkSide::Source => CrmSide::Source,
        LinkSide::Destination => CrmSide::Destination,
    }
}

/// The stored link of a record read on `side`, as pairing sees it.
fn link_state(link: &Link, side: LinkSide) -> LinkState {
    let counterpart = match side {
        LinkSide::Source => &link.destination_id,
        LinkSide::Destination => &link.source_id,
    };
    LinkState {
        counterpart_id: counterpart.clone(),
        syncing: link.syncing,
        stopped_by: link.stopped_at.map(crm_side),
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
