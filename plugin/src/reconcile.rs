//! Two-way field reconciliation (M6): what each side of a linked pair must be
//! told so both hold the same values, under each field's direction and
//! conflict rule.
//!
//! Changes are found against `base`, the values both sides last agreed on.
//! A value the sync wrote comes back on the next read equal to `base`, so it
//! is no change and never flows back (no echo). Modification times only break
//! ties between two real changes (`most-recent`).

use crate::types::{
    ConflictRule, Direction, FieldData, FieldRule, FieldValue, OutgoingValue, ReconcileInput,
    Reconciled, SideState,
};

/// Reconciles each pair under `rules`.
pub fn reconcile(rules: &[FieldRule], records: &[ReconcileInput]) -> Vec<Reconciled> {
    records.iter().map(|r| reconcile_one(rules, r)).collect()
}

/// Which side a value came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Destination,
}

fn reconcile_one(rules: &[FieldRule], record: &ReconcileInput) -> Reconciled {
    let mut out = Reconciled {
        to_source: Vec::new(),
        to_destination: Vec::new(),
        agreed: Vec::new(),
    };
    for rule in rules {
        let base = value_of(&record.base, &rule.name);
        // A side not read this run did not change: it holds `base`.
        let source = read(&record.source, &rule.name);
        let destination = read(&record.destination, &rule.name);
        let changed = |value: &Option<Option<&FieldData>>| match value {
            Some(value) => !same(*value, base),
            None => false,
        };
        let from_source = changed(&source)
            && matches!(rule.direction, Direction::ToDestination | Direction::Both);
        let from_destination = changed(&destination)
            && matches!(rule.direction, Direction::ToSource | Direction::Both);
        let winner = match (from_source, from_destination) {
            (false, false) => None,
            (true, false) => Some(Side::Source),
            (false, true) => Some(Side::Destination),
            (true, true) => {
                let (s, d) = (source.flatten(), destination.flatten());
                if same(s, d) {
                    None
                } else {
                    Some(conflict_winner(rule.conflict, record, s, d))
                }
            }
        };
        let agreed = match winner {
            None if from_source => source.flatten(),
            None => base,
            Some(Side::Source) => {
                let value = source.flatten();
                if !destination.is_some_and(|d| same(d, value)) {
                    out.to_destination.push(outgoing(&rule.name, value));
                }
                value
            }
            Some(Side::Destination) => {
                let value = destination.flatten();
                if !source.is_some_and(|s| same(s, value)) {
                    out.to_source.push(outgoing(&rule.name, value));
                }
                value
            }
        };
        if let Some(value) = agreed {
            out.agreed.push(FieldValue {
                name: rule.name.clone(),
                value: value.clone(),
            });
        }
    }
    out
}

/// The side whose value wins when both changed a field to different values.
fn conflict_winner(
    rule: ConflictRule,
    record: &ReconcileInput,
    source: Option<&FieldData>,
    destination: Option<&FieldData>,
) -> Side {
    match rule {
        ConflictRule::SourceWins => Side::Source,
        ConflictRule::DestinationWins => Side::Destination,
        ConflictRule::MostRecent => {
            let at = |side: &Option<SideState>| side.as_ref().and_then(|s| s.modified_at);
            if at(&record.destination).unwrap_or(0) > at(&record.source).unwrap_or(0) {
                Side::Destination
            } else {
                Side::Source
            }
        }
        ConflictRule::PreferSourceUnlessBlank if source.is_none() => Side::Destination,
        ConflictRule::PreferSourceUnlessBlank => Side::Source,
        ConflictRule::PreferDestinationUnlessBlank if destination.is_none() => Side::Source,
        ConflictRule::PreferDestinationUnlessBlank => Side::Destination,
    }
}

/// A side's value of a field: `None` when the side was not read.
fn read<'a>(side: &'a Option<SideState>, name: &str) -> Option<Option<&'a FieldData>> {
    side.as_ref().map(|s| value_of(&s.values, name))
}

fn value_of<'a>(values: &'a [FieldValue], name: &str) -> Option<&'a FieldData> {
    values.iter().find(|v| v.name == name).map(|v| &v.value)
}

/// Equal values. Text compares exactly except for surrounding blanks, which
/// the CRMs trim on their own (a trimmed echo is no change).
fn same(a: Option<&FieldData>, b: Option<&FieldData>) -> bool {
    match (a, b) {
        (Some(FieldData::Text(a)), Some(FieldData::Text(b))) => a.trim() == b.trim(),
        (a, b) => a == b,
    }
}

fn outgoing(name: &str, value: Option<&FieldData>) -> OutgoingValue {
    OutgoingValue {
        name: name.to_owned(),
        value: value.cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(direction: Direction, conflict: ConflictRule) -> FieldRule {
        FieldRule {
            name: "title".into(),
            direction,
            conflict,
        }
    }

    fn values(value: Option<&str>) -> Vec<FieldValue> {
        value
            .map(|v| FieldValue {
                name: "title".into(),
                value: FieldData::Text(v.into()),
            })
            .into_iter()
            .collect()
    }

    fn side(value: Option<&str>, at: u64) -> Option<SideState> {
        Some(SideState {
            values: values(value),
            modified_at: Some(at),
        })
    }

    fn run(
        rule: FieldRule,
        base: Option<&str>,
        source: Option<SideState>,
        destination: Option<SideState>,
    ) -> Reconciled {
        reconcile(
            &[rule],
            &[ReconcileInput {
                base: values(base),
                source,
                destination,
            }],
        )
        .remove(0)
    }

    fn text(value: &str) -> Option<FieldData> {
        Some(FieldData::Text(value.into()))
    }

    #[test]
    fn a_change_on_one_side_flows_to_the_other() {
        let both = rule(Direction::Both, ConflictRule::SourceWins);
        let r = run(both.clone(), Some("CTO"), side(Some("CEO"), 2), None);
        assert_eq!(r.to_destination[0].value, text("CEO"));
        assert!(r.to_source.is_empty());
        assert_eq!(r.agreed, values(Some("CEO")));
        let r = run(both, Some("CTO"), None, side(Some("VP"), 2));
        assert_eq!(r.to_source[0].value, text("VP"));
        assert!(r.to_destination.is_empty());
    }

    #[test]
    fn a_cleared_value_clears_the_other_side() {
        let r = run(
            rule(Direction::Both, ConflictRule::MostRecent),
            Some("CTO"),
            side(None, 2),
            None,
        );
        assert_eq!(r.to_destination[0].value, None);
        assert!(r.agreed.is_empty());
    }

    #[test]
    fn an_echo_of_the_syncs_own_write_is_no_change() {
        // Last run wrote "CEO" to the destination; this run reads it back
        // (its modification time is newer than the source's) and the source
        // unchanged: nothing to write either way.
        let r = run(
            rule(Direction::Both, ConflictRule::MostRecent),
            Some("CEO"),
            side(Some("CEO"), 1),
            side(Some("CEO "), 9),
        );
        assert!(r.to_source.is_empty() && r.to_destination.is_empty());
        assert_eq!(r.agreed, values(Some("CEO")));
    }

    #[test]
    fn directions_hold_back_changes_from_the_other_side() {
        let one_way = rule(Direction::ToDestination, ConflictRule::SourceWins);
        let r = run(one_way.clone(), Some("CTO"), None, side(Some("VP"), 2));
        assert!(r.to_source.is_empty() && r.to_destination.is_empty());
        assert_eq!(r.agreed, values(Some("CTO")), "the base stays the source's");
        let r = run(
            one_way,
            Some("CTO"),
            side(Some("CEO"), 1),
            side(Some("VP"), 2),
        );
        assert_eq!(r.to_destination[0].value, text("CEO"));
        let back = rule(Direction::ToSource, ConflictRule::SourceWins);
        let r = run(back, Some("CTO"), side(Some("CEO"), 9), side(Some("VP"), 2));
        assert_eq!(r.to_source[0].value, text("VP"));
        assert!(r.to_destination.is_empty());
    }

    #[test]
    fn each_conflict_rule_picks_its_side() {
        let both_changed = |conflict, s: Option<&str>, s_at, d: Option<&str>, d_at| {
            run(
                rule(Direction::Both, conflict),
                Some("CTO"),
                side(s, s_at),
                side(d, d_at),
            )
        };
        let r = both_changed(ConflictRule::SourceWins, Some("CEO"), 1, Some("VP"), 2);
        assert_eq!((r.to_destination.len(), r.to_source.len()), (1, 0));
        assert_eq!(r.agreed, values(Some("CEO")));
        let r = both_changed(ConflictRule::DestinationWins, Some("CEO"), 2, Some("VP"), 1);
        assert_eq!(r.to_source[0].value, text("VP"));
        assert!(r.to_destination.is_empty());
        let r = both_changed(ConflictRule::MostRecent, Some("CEO"), 1, Some("VP"), 2);
        assert_eq!(r.to_source[0].value, text("VP"));
        let r = both_changed(ConflictRule::MostRecent, Some("CEO"), 3, Some("VP"), 2);
        assert_eq!(r.to_destination[0].value, text("CEO"));
        let r = both_changed(ConflictRule::MostRecent, Some("CEO"), 2, Some("VP"), 2);
        assert_eq!(r.agreed, values(Some("CEO")), "a tie goes to the source");
        let r = both_changed(
            ConflictRule::PreferDestinationUnlessBlank,
            Some("CEO"),
            2,
            Some("VP"),
            1,
        );
        assert_eq!(r.to_source[0].value, text("VP"));
        let r = both_changed(
            ConflictRule::PreferDestinationUnlessBlank,
            Some("CEO"),
            1,
            None,
            2,
        );
        assert_eq!(r.to_destination[0].value, text("CEO"));
        assert_eq!(r.agreed, values(Some("CEO")));
        let r = both_changed(
            ConflictRule::PreferSourceUnlessBlank,
            None,
            2,
            Some("VP"),
            1,
        );
        assert_eq!(r.to_source[0].value, text("VP"));
    }

    #[test]
    fn a_new_pair_takes_the_conflict_rule_and_a_missing_side_is_filled() {
        // Matched by email, never synced: no base, both sides hold values.
        let r = run(
            rule(Direction::Both, ConflictRule::PreferDestinationUnlessBlank),
            None,
            side(Some("CEO"), 5),
            side(Some("VP"), 1),
        );
        assert_eq!(r.to_source[0].value, text("VP"));
        // Only one side exists: the other is created with its values.
        let r = run(
            rule(Direction::Both, ConflictRule::MostRecent),
            None,
            side(Some("CEO"), 5),
            None,
        );
        assert_eq!(r.to_destination[0].value, text("CEO"));
        // Equal values on both sides: agreed, nothing written.
        let r = run(
            rule(Direction::Both, ConflictRule::SourceWins),
            None,
            side(Some("CEO"), 5),
            side(Some("CEO"), 1),
        );
        assert!(r.to_source.is_empty() && r.to_destination.is_empty());
        assert_eq!(r.agreed, values(Some("CEO")));
    }
}
