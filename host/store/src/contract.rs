//! The store contract, written against the [`Store`] traits only: every
//! backend runs it (SQLite here, `sqlite_meets_the_store_contract`;
//! PostgreSQL in `crmsync-store-postgres`, with the `contract` feature).
//! Each check is one guarantee a sync relies on.

use crate::interface::Store;
use crate::{
    AccountData, Bookmark, Change, ContactData, Counts, DirectoryEntry, ErrorRow, Handle, Intent,
    Link, LinkSide, Records, RunMode, SeenBy,
};
use std::collections::HashSet;

/// Runs every check on fresh stores from `open`.
pub fn contract<S: Store>(open: impl Fn() -> S) {
    directory_matches_by_link_and_handle(&open());
    updates_keep_the_contacts_own_handles_and_write_nothing_unchanged(&open());
    accounts_match_by_link_and_domain(&open());
    records_a_complete_run_did_not_read_stop_syncing(&open());
    hostile_strings_round_trip(&open());
    a_page_and_its_checkpoint_commit_together(&open());
    pages_sharing_a_transaction_see_each_others_writes(&open());
    links_follow_merges_and_stop_and_resume(&open());
    runs_resume_from_their_checkpoint_and_bookmark_on_completion(&open());
    one_holder_at_a_time_and_a_fenced_commit_fails_after_a_takeover(&open());
    giving_a_lease_back_unfences_the_connection(&open());
    pause_trigger_and_intents_are_kept_per_sync(&open());
    contacts_read_back_in_pages(&open());
    a_batch_of_creates_is_many_creates(&open());
    a_page_sized_batch_keeps_every_handle_in_order(&open());
    a_batch_that_fails_lands_none_of_its_contacts(&open());
    // Through a trait object too: a runner may hold `&dyn Store`.
    let store = open();
    let dynamic: &dyn Store = &store;
    assert_eq!(dynamic.linked_pairs("none").unwrap(), 0);
}

fn contact(emails: &[&str], phones: &[&str]) -> ContactData {
    ContactData {
        name: Some("Ada".into()),
        emails: emails.iter().map(|e| (*e).to_owned()).collect(),
        phones: phones.iter().map(|p| (*p).to_owned()).collect(),
        fields: Default::default(),
    }
}

fn ids(entries: Vec<DirectoryEntry>) -> Vec<i64> {
    entries.into_iter().map(|e| e.id).collect()
}

fn directory_matches_by_link_and_handle(s: &impl Store) {
    let a = s
        .create("1", &contact(&["a@x.io"], &["+15550100"]), None)
        .unwrap();
    let b = s.create("2", &contact(&["b@x.io"], &[]), None).unwrap();
    assert_eq!(s.find_by_external_id("1").unwrap().unwrap().id, a);
    assert_eq!(s.find_by_external_id("3").unwrap(), None);
    assert_eq!(ids(s.find_by_handle(Handle::Email, "b@x.io").unwrap()), [b]);
    assert_eq!(
        ids(s.find_by_handle(Handle::Phone, "+15550100").unwrap()),
        [a]
    );
    let mut page = ids(s.find_page(&["2"], &["a@x.io"], &["+15559999"]).unwrap());
    page.sort();
    assert_eq!(page, [a, b]);
    // An email change replaces the synced email.
    s.update(a, "1", &contact(&["new@x.io"], &["+15550100"]), None)
        .unwrap();
    assert!(
        s.find_by_handle(Handle::Email, "a@x.io")
            .unwrap()
            .is_empty()
    );
    let entry = s.find_by_external_id("1").unwrap().unwrap();
    assert_eq!(entry.emails, ["new@x.io"]);
    assert!(entry.from_source.contains(&"new@x.io".to_owned()));
    // Merged source records fold into the survivor's contact.
    assert_eq!(s.absorb_merged("1", &["2".into()]).unwrap(), 1);
    assert_eq!(s.find_by_external_id("2").unwrap(), None);
    assert!(s.stop_syncing(Records::Contacts, "1").unwrap());
}

fn a_page_and_its_checkpoint_commit_together(s: &impl Store) {
    let run = s.start_run("demo", RunMode::Full, 1_000).unwrap();
    s.begin().unwrap();
    s.create("9", &contact(&["nine@x.io"], &[]), None).unwrap();
    let counts = Counts {
        pages: 1,
        seen: 1,
        created: 1,
        ..Counts::default()
    };
    s.checkpoint(run.id, Some("after-9"), &counts, Some(5))
        .unwrap();
    s.rollback();
    assert_eq!(s.find_by_external_id("9").unwrap(), None, "rolled back");
    let open_run = s.interrupted_run("demo").unwrap().unwrap();
    assert_eq!(
        open_run.cursor, None,
        "the checkpoint rolled back with the page"
    );
    s.begin().unwrap();
    s.create("9", &contact(&["nine@x.io"], &[]), None).unwrap();
    s.checkpoint(run.id, Some("after-9"), &counts, Some(5))
        .unwrap();
    s.commit().unwrap();
    assert!(s.find_by_external_id("9").unwrap().is_some());
    let open_run = s.interrupted_run("demo").unwrap().unwrap();
    assert_eq!(open_run.cursor.as_deref(), Some("after-9"));
    assert_eq!(open_run.counts, counts);
}

/// A store that takes several pages to a transaction: a later page's
/// look-ups see an earlier page's contacts (or it would create them twice),
/// and a rollback takes every page back to the last commit, checkpoints too.
fn pages_sharing_a_transaction_see_each_others_writes(s: &impl Store) {
    let pages = s.pages_per_transaction();
    assert!(pages >= 1);
    if pages == 1 {
        return;
    }
    let run = s.start_run("demo", RunMode::Full, 1_000).unwrap();
    let page = |n: u64| {
        let id = n.to_string();
        let email = format!("p{n}@x.io");
        let found = s.find_page(&[&id], &[&email], &[]).unwrap();
        let counts = Counts {
            pages: n,
            ..Counts::default()
        };
        let created = s.create_many(&[(&id, &contact(&[&email], &[]))], None);
        s.checkpoint(run.id, Some(&format!("after-{n}")), &counts, None)
            .unwrap();
        (found.len(), created.unwrap().len())
    };
    s.begin().unwrap();
    assert_eq!(page(1), (0, 1));
    assert_eq!(page(2), (0, 1));
    let again = s.find_page(&["1"], &["p2@x.io"], &[]).unwrap();
    assert_eq!(again.len(), 2, "the open transaction's pages are found");
    s.commit().unwrap();
    s.begin().unwrap();
    assert_eq!(page(3), (0, 1));
    assert_eq!(page(4), (0, 1));
    s.rollback();
    let open_run = s.interrupted_run("demo").unwrap().unwrap();
    assert_eq!(open_run.cursor.as_deref(), Some("after-2"));
    assert!(s.find_by_external_id("2").unwrap().is_some());
    assert_eq!(s.find_by_external_id("3").unwrap(), None, "rolled back");
    assert_eq!(s.find_by_external_id("4").unwrap(), None, "rolled back");
}

fn links_follow_merges_and_stop_and_resume(s: &impl Store) {
    let link = Link {
        source_id: Some("s1".into()),
        destination_id: Some("d1".into()),
        ..Link::default()
    };
    let id = s.save_link("crm", &link).unwrap();
    assert_eq!(
        s.link_by_id(id).unwrap().unwrap().source_id.as_deref(),
        Some("s1")
    );
    assert_eq!(
        s.link("crm", LinkSide::Destination, "d1")
            .unwrap()
            .unwrap()
            .id,
        Some(id)
    );
    assert!(
        s.link("other", LinkSide::Source, "s1").unwrap().is_none(),
        "per sync"
    );
    assert!(s.relink("crm", LinkSide::Source, "s1", "s2", None).unwrap());
    assert!(s.link("crm", LinkSide::Source, "s1").unwrap().is_none());
    assert!(
        s.set_link_syncing("crm", LinkSide::Destination, "d1", false)
            .unwrap()
    );
    let stopped = s.link("crm", LinkSide::Source, "s2").unwrap().unwrap();
    assert!(!stopped.syncing);
    assert_eq!(stopped.stopped_at, Some(LinkSide::Destination));
    assert!(
        s.set_link_syncing("crm", LinkSide::Destination, "d1", true)
            .unwrap()
    );
    assert!(
        s.link("crm", LinkSide::Source, "s2")
            .unwrap()
            .unwrap()
            .syncing
    );
    assert_eq!(s.stop_syncing_unread("crm", &HashSet::new()).unwrap(), 1);
    assert_eq!(s.linked_pairs("crm").unwrap(), 1);
    assert_eq!(s.links("crm").unwrap().len(), 1);
}

fn runs_resume_from_their_checkpoint_and_bookmark_on_completion(s: &impl Store) {
    assert_eq!(s.bookmark("demo").unwrap(), None);
    let run = s.start_run("demo", RunMode::Full, 1_000).unwrap();
    s.checkpoint(run.id, Some("c1"), &Counts::default(), Some(7))
        .unwrap();
    s.record_error(
        run.id,
        &ErrorRow {
            run_id: run.id,
            category: "transient".into(),
            scope: "sync".into(),
            message: "m".into(),
            resolution: "r".into(),
            ..ErrorRow::default()
        },
    )
    .unwrap();
    let open_run = s.interrupted_run("demo").unwrap().unwrap();
    assert_eq!((open_run.id, open_run.newest_ms), (run.id, Some(7)));
    s.resume_run(run.id).unwrap();
    s.note_runner(run.id, "runner-2").unwrap();
    assert_eq!(
        s.runs("demo").unwrap()[0].runner.as_deref(),
        Some("runner-2")
    );
    let bookmark = Bookmark {
        modified_ms: 7,
        fingerprint: "f".into(),
    };
    s.complete_run(run.id, "demo", &bookmark).unwrap();
    s.finish_run(run.id, None).unwrap();
    assert_eq!(s.interrupted_run("demo").unwrap(), None);
    assert_eq!(s.bookmark("demo").unwrap(), Some(bookmark));
}

fn one_holder_at_a_time_and_a_fenced_commit_fails_after_a_takeover(s: &impl Store) {
    let alive = |_: &str| false;
    let a = s
        .acquire_lease("demo", "a", 1_000, 60_000, &alive)
        .unwrap()
        .unwrap();
    assert_eq!(
        s.acquire_lease("demo", "b", 2_000, 60_000, &alive)
            .unwrap()
            .map(|l| l.owner),
        Err("a".into())
    );
    s.renew_lease(&a, 30_000, 60_000).unwrap();
    assert!(
        s.acquire_lease("demo", "b", 70_000, 60_000, &alive)
            .unwrap()
            .is_err()
    );
    s.fence(a.clone());
    s.check_fence().unwrap();
    let b = s
        .acquire_lease("demo", "b", 100_000, 60_000, &alive)
        .unwrap()
        .unwrap();
    assert!(b.token > a.token);
    assert!(s.check_fence().is_err(), "a's fence no longer holds");
    s.begin().unwrap();
    assert!(s.commit().is_err(), "a's commit is refused");
    s.release_lease(&b).unwrap();
    assert_eq!(s.control("demo").unwrap().lease_owner, None);
}

/// A connection that gave its lease back outlives the pass (a runner keeps
/// it for its schedule's reads and lends it to the next pass), so no fence
/// of the old lease may refuse its later writes.
fn giving_a_lease_back_unfences_the_connection(s: &impl Store) {
    let alive = |_: &str| false;
    let a = s
        .acquire_lease("demo", "a", 1_000, 60_000, &alive)
        .unwrap()
        .unwrap();
    s.fence(a.clone());
    s.release_lease(&a).unwrap();
    // Another holder comes and goes: `a` would no longer hold.
    let b = s
        .acquire_lease("demo", "b", 2_000, 60_000, &alive)
        .unwrap()
        .unwrap();
    s.release_lease(&b).unwrap();
    s.check_fence().unwrap();
    s.begin().unwrap();
    s.request_trigger("demo").unwrap();
    s.commit().unwrap();
    assert!(s.take_trigger("demo").unwrap());
}

fn pause_trigger_and_intents_are_kept_per_sync(s: &impl Store) {
    s.set_paused("demo", true).unwrap();
    s.request_trigger("demo").unwrap();
    assert!(s.control("demo").unwrap().paused);
    assert!(!s.control("other").unwrap().paused);
    assert!(s.take_trigger("demo").unwrap());
    assert!(!s.take_trigger("demo").unwrap());
    let mut intents = [Intent {
        id: None,
        side: LinkSide::Destination,
        link: Link {
            source_id: Some("s1".into()),
            ..Link::default()
        },
        written: Default::default(),
        created_ms: 5,
    }];
    s.record_intents("demo", &mut intents).unwrap();
    let id = intents[0].id.expect("recorded");
    assert_eq!(s.intents("demo").unwrap().len(), 1);
    assert!(s.intents("other").unwrap().is_empty());
    s.forget_intent(id).unwrap();
    assert!(s.intents("demo").unwrap().is_empty());
}

fn contacts_read_back_in_pages(s: &impl Store) {
    let made: Vec<i64> = (1..=5)
        .map(|i| {
            s.create(
                &i.to_string(),
                &contact(&[&format!("p{i}@x.io")], &[]),
                None,
            )
            .unwrap()
        })
        .collect();
    let page = |after, limit| ids_of(s.contacts_after(after, limit).unwrap());
    assert_eq!(page(0, Some(2)), made[..2]);
    assert_eq!(page(made[1], Some(2)), made[2..4]);
    assert_eq!(page(made[3], Some(2)), made[4..]);
    assert_eq!(page(made[4], Some(2)), Vec::<i64>::new());
    assert_eq!(page(0, None), made);
    let first = &s.contacts_after(0, Some(1)).unwrap()[0];
    assert_eq!(first.emails, ["p1@x.io"]);
}

fn a_batch_of_creates_is_many_creates(s: &impl Store) {
    let first = s.create("0", &contact(&["zero@x.io"], &[]), None).unwrap();
    let (a, b, c) = (
        contact(&["a@x.io", "a2@x.io"], &["+15550101"]),
        contact(&[], &["+15550102"]),
        contact(&["c@x.io"], &[]),
    );
    s.begin().unwrap();
    let made = s
        .create_many(&[("1", &a), ("2", &b), ("3", &c)], None)
        .unwrap();
    s.commit().unwrap();
    assert_eq!(made.len(), 3);
    assert!(made.iter().all(|id| *id > first), "{made:?}");
    assert_eq!(s.find_by_external_id("2").unwrap().unwrap().id, made[1]);
    assert_eq!(
        ids(s.find_by_handle(Handle::Email, "a2@x.io").unwrap()),
        [made[0]]
    );
    assert_eq!(
        ids(s.find_by_handle(Handle::Phone, "+15550102").unwrap()),
        [made[1]]
    );
    let rows = s.contacts().unwrap();
    let third = rows.iter().find(|r| r.id == made[2]).unwrap();
    assert_eq!(
        (third.external_id.as_deref(), third.emails.clone()),
        (Some("3"), vec!["c@x.io".to_owned()])
    );
    assert_eq!(
        rows.iter().find(|r| r.id == made[0]).unwrap().emails,
        ["a@x.io", "a2@x.io"]
    );
    assert_eq!(s.create_many(&[], None).unwrap(), Vec::<i64>::new());
}

/// Enough contacts and handles that a store writing them in multi-row
/// statements fills several and has some left over.
fn a_page_sized_batch_keeps_every_handle_in_order(s: &impl Store) {
    let data: Vec<ContactData> = (0..70)
        .map(|i| {
            let emails: Vec<String> = (0..i % 4).map(|k| format!("p{i}.{k}@x.io")).collect();
            let mut emails: Vec<&str> = emails.iter().map(String::as_str).collect();
            if i == 7 {
                // A handle twice in one record is kept once.
                emails.push("p7.0@x.io");
            }
            let phone = format!("+1555{i:07}");
            let phones: &[&str] = if i % 3 == 0 { &[] } else { &[&phone] };
            contact(&emails, phones)
        })
        .collect();
    let external_ids: Vec<String> = (0..70).map(|i| format!("b{i}")).collect();
    let batch: Vec<(&str, &ContactData)> =
        external_ids.iter().map(String::as_str).zip(&data).collect();
    s.begin().unwrap();
    let made = s.create_many(&batch, None).unwrap();
    s.commit().unwrap();
    assert_eq!(made.len(), 70);
    for ((external_id, data), id) in batch.iter().zip(&made) {
        let entry = s.find_by_external_id(external_id).unwrap().unwrap();
        assert_eq!(entry.id, *id, "{external_id}");
        let mut emails = data.emails.clone();
        if *external_id == "b7" {
            emails.pop();
        }
        assert_eq!(entry.emails, emails, "{external_id}");
        assert_eq!(entry.phones, data.phones, "{external_id}");
        for email in &emails {
            assert_eq!(ids(s.find_by_handle(Handle::Email, email).unwrap()), [*id]);
        }
    }
}

/// Outside a transaction too: a batch is one write, not one per contact.
fn a_batch_that_fails_lands_none_of_its_contacts(s: &impl Store) {
    let taken = s.create("b30", &contact(&[], &[]), None).unwrap();
    let data: Vec<ContactData> = (0..40)
        .map(|i| contact(&[&format!("f{i}@x.io")], &[]))
        .collect();
    let external_ids: Vec<String> = (0..40).map(|i| format!("b{i}")).collect();
    let batch: Vec<(&str, &ContactData)> =
        external_ids.iter().map(String::as_str).zip(&data).collect();
    assert!(s.create_many(&batch, None).is_err(), "b30 is taken");
    assert_eq!(ids_of(s.contacts().unwrap()), [taken]);
    assert!(
        s.find_by_handle(Handle::Email, "f0@x.io")
            .unwrap()
            .is_empty()
    );
}

fn ids_of(rows: Vec<crate::ContactRow>) -> Vec<i64> {
    rows.into_iter().map(|c| c.id).collect()
}

fn updates_keep_the_contacts_own_handles_and_write_nothing_unchanged(s: &impl Store) {
    let id = s
        .create("7", &contact(&["shared@x.io"], &[]), None)
        .unwrap();
    let same = contact(&["shared@x.io"], &[]);
    assert_eq!(s.update(id, "7", &same, None).unwrap(), Change::Unchanged);
    let mut moved = contact(&["moved@x.io"], &["+15550101"]);
    moved.name = None;
    moved.fields.insert("plan".into(), "pro".into());
    assert_eq!(s.update(id, "7", &moved, None).unwrap(), Change::Updated);
    let entry = s.find_by_external_id("7").unwrap().unwrap();
    assert_eq!(entry.emails, ["moved@x.io"]);
    assert_eq!(entry.phones, ["+15550101"]);
    assert_eq!(s.update(id, "7", &moved, None).unwrap(), Change::Unchanged);
}

fn accounts_match_by_link_and_domain(s: &impl Store) {
    let company = |name: &str, domains: &[&str]| AccountData {
        name: Some(name.into()),
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        fields: Default::default(),
    };
    let acme = s
        .create_account("c1", &company("Acme", &["acme.com", "acme.io"]), None)
        .unwrap();
    assert_eq!(
        s.find_account_by_external_id("c1").unwrap().unwrap().id,
        acme
    );
    assert_eq!(ids(s.find_accounts_by_domain("acme.io").unwrap()), [acme]);
    assert_eq!(
        ids(s.find_accounts_page(&["c9"], &["acme.com"]).unwrap()),
        [acme]
    );
    let same = company("Acme", &["acme.com", "acme.io"]);
    assert_eq!(
        s.update_account(acme, "c1", &same, None).unwrap(),
        Change::Unchanged
    );
    let renamed = company("Acme Inc", &[]);
    assert_eq!(
        s.update_account(acme, "c1", &renamed, None).unwrap(),
        Change::Updated
    );
    let entry = s.find_account_by_external_id("c1").unwrap().unwrap();
    assert_eq!(
        entry.domains,
        ["acme.com", "acme.io"],
        "no domains read: kept"
    );
    assert_eq!(s.synced_company_ids().unwrap(), ["c1"]);
    let person = s
        .create("p1", &contact(&["p@acme.com"], &[]), None)
        .unwrap();
    assert!(s.link_account(person, &["c9".into(), "c1".into()]).unwrap());
    assert!(
        !s.link_account(person, &["c1".into()]).unwrap(),
        "unchanged"
    );
    let read = &s.contacts().unwrap()[0];
    assert_eq!(read.account.as_ref().map(|a| a.id), Some(acme));
    assert_eq!(s.accounts().unwrap()[0].contacts, 1);
    assert_eq!(
        (s.linked_accounts().unwrap(), s.linked_contacts().unwrap()),
        (1, 1)
    );
    assert!(s.stop_syncing(Records::Accounts, "c1").unwrap());
    assert!(!s.stop_syncing(Records::Accounts, "c1").unwrap(), "already");
    assert!(s.synced_company_ids().unwrap().is_empty());
    let own = s.insert_unlinked(&contact(&["own@x.io"], &[])).unwrap();
    assert!(s.find_by_external_id("own").unwrap().is_none());
    assert_eq!(
        ids(s.find_by_handle(Handle::Email, "own@x.io").unwrap()),
        [own]
    );
}

fn records_a_complete_run_did_not_read_stop_syncing(s: &impl Store) {
    let seen = |run_id| {
        Some(SeenBy {
            sync: "list",
            run_id,
        })
    };
    s.create("1", &contact(&["1@x.io"], &[]), seen(1)).unwrap();
    let two = s.create("2", &contact(&["2@x.io"], &[]), seen(1)).unwrap();
    s.mark_seen(Records::Contacts, "1", "list", 2).unwrap();
    assert_eq!(
        s.stop_syncing_unseen(Records::Contacts, "other", 2)
            .unwrap(),
        0,
        "another sync's records are not touched"
    );
    assert_eq!(
        s.stop_syncing_unseen(Records::Contacts, "list", 2).unwrap(),
        1
    );
    // Read again: it syncs again.
    let back = contact(&["2@x.io"], &["+15550102"]);
    assert_eq!(s.update(two, "2", &back, seen(3)).unwrap(), Change::Updated);
    assert_eq!(
        s.stop_syncing_unseen(Records::Contacts, "list", 3).unwrap(),
        1
    );
}

fn hostile_strings_round_trip(s: &impl Store) {
    let hostile = format!(
        "O'Brien \"; DROP TABLE contacts;-- \u{200F}\u{0}🙂{}",
        "x".repeat(5000)
    );
    let mut data = contact(&["h@x.io"], &[]);
    data.name = Some(hostile.clone());
    data.fields.insert(hostile.clone(), hostile.clone().into());
    let id = s.create(&hostile, &data, None).unwrap();
    assert_eq!(s.find_by_external_id(&hostile).unwrap().unwrap().id, id);
    let read = &s.contacts().unwrap()[0];
    assert_eq!(read.name.as_deref(), Some(hostile.as_str()));
    assert_eq!(read.external_id.as_deref(), Some(hostile.as_str()));
    assert_eq!(read.fields[&hostile], hostile);
    assert_eq!(
        s.update(id, &hostile, &data, None).unwrap(),
        Change::Unchanged
    );
    // Sync names come from configs, not the source: plain text.
    let run = s.start_run("demo", RunMode::Full, 1).unwrap();
    let error = ErrorRow {
        run_id: run.id,
        record_id: Some(hostile.clone()),
        category: "validation".into(),
        scope: "record".into(),
        field: Some(hostile.clone()),
        message: hostile.clone(),
        resolution: "r".into(),
        ..ErrorRow::default()
    };
    s.record_error(run.id, &error).unwrap();
    assert_eq!(s.errors(run.id).unwrap(), [error]);
    assert_eq!(s.error_counts(run.id).unwrap()["validation"], 1);
    s.checkpoint(run.id, Some(&hostile), &Counts::default(), None)
        .unwrap();
    assert_eq!(s.runs("demo").unwrap()[0].id, run.id);
    let open = s.interrupted_run("demo").unwrap().unwrap();
    assert_eq!(open.cursor.as_deref(), Some(hostile.as_str()));
}

#[test]
fn sqlite_meets_the_store_contract() {
    contract(|| crate::ContactStore::open_in_memory().unwrap());
}
