//! The embedding guide's wasmtime example (docs/embedding.md), kept honest by
//! running it: a minimal Rust host for the crmsync component that uses only
//! wasmtime's crates, not crmsync's runner. Its directory is a `Vec`, and it
//! needs no HTTP for map-fields, match-contact and classify-error.

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

wasmtime::component::bindgen!({ world: "plugin", path: "../wit" });

use crmsync::sync::types::{
    DestinationContact, FieldMapping, FieldTarget, FieldType, HandleKind, MatchOutcome, PageKeys,
    Property, SourceRecord,
};

/// The embedder's state: WASI, HTTP, and its own contact directory.
struct Host {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: DefaultHooks,
    table: ResourceTable,
    contacts: Vec<DestinationContact>,
}

/// wasmtime-wasi-http's default behaviour (real requests); a platform would
/// restrict hosts and add credentials here.
struct DefaultHooks;
impl wasmtime_wasi_http::WasiHttpHooks for DefaultHooks {}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl crmsync::sync::types::Host for Host {}

/// The directory contract: handles are compared normalised (the component
/// normalises what it asks for), and every write applied so far is visible.
impl crmsync::sync::directory::Host for Host {
    fn find_by_external_id(&mut self, external_id: String) -> Option<DestinationContact> {
        self.contacts
            .iter()
            .find(|c| c.external_id.as_deref() == Some(&external_id))
            .cloned()
    }

    fn find_by_handle(&mut self, kind: HandleKind, handle: String) -> Vec<DestinationContact> {
        self.contacts
            .iter()
            .filter(|c| match kind {
                HandleKind::Email => c.emails.contains(&handle),
                HandleKind::Phone => c.phones.contains(&handle),
                HandleKind::Domain => false,
            })
            .cloned()
            .collect()
    }

    /// This host keeps no accounts (it syncs no companies).
    fn find_account_by_external_id(&mut self, _external_id: String) -> Option<DestinationContact> {
        None
    }

    fn find_accounts_by_domain(&mut self, _domain: String) -> Vec<DestinationContact> {
        Vec::new()
    }

    /// `match-page`'s one look-up: every contact any of the page's ids or
    /// handles finds, each once.
    fn find_page(
        &mut self,
        external_ids: Vec<String>,
        emails: Vec<String>,
        phones: Vec<String>,
    ) -> Vec<DestinationContact> {
        self.contacts
            .iter()
            .filter(|c| {
                c.external_id
                    .as_ref()
                    .is_some_and(|e| external_ids.contains(e))
                    || c.emails.iter().any(|e| emails.contains(e))
                    || c.phones.iter().any(|p| phones.contains(p))
            })
            .cloned()
            .collect()
    }

    fn find_accounts_page(
        &mut self,
        _external_ids: Vec<String>,
        _domains: Vec<String>,
    ) -> Vec<DestinationContact> {
        Vec::new()
    }

    /// `match-keys-page`'s look-up: `find-page` for the packed page's ids
    /// and handles.
    fn find_page_keys(&mut self, keys: PageKeys) -> Vec<DestinationContact> {
        let [ids, emails, phones, _domains] = unpack(&keys);
        self.find_page(ids, emails, phones)
    }

    fn find_accounts_page_keys(&mut self, _keys: PageKeys) -> Vec<DestinationContact> {
        Vec::new()
    }
}

/// A `page-keys`' source ids, emails, phones and domains. The component keeps
/// the packing contract (it traps before sending keys that break it), so a
/// host that trusts it may slice without checks; crmsync's runner checks.
fn unpack(keys: &PageKeys) -> [Vec<String>; 4] {
    let mut lists: [Vec<String>; 4] = Default::default();
    let (mut start, mut ends) = (0, keys.ends.iter());
    let mut key = || {
        let end = *ends.next().expect("one end a key") as usize;
        let key = String::from_utf8(keys.text[start..end].to_vec()).expect("UTF-8 keys");
        start = end;
        key
    };
    for counts in keys.counts.chunks(3) {
        lists[0].push(key());
        for (kind, &count) in counts.iter().enumerate() {
            for _ in 0..count {
                lists[kind + 1].push(key());
            }
        }
    }
    lists
}

#[test]
fn a_minimal_wasmtime_host_embeds_the_component() -> wasmtime::Result<()> {
    let engine = Engine::default();
    let component = Component::from_file(&engine, crmsync_tests::component_path())?;
    let mut linker: Linker<Host> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)?;
    Plugin::add_to_linker::<Host, HasSelf<Host>>(&mut linker, |host| host)?;

    let host = Host {
        wasi: WasiCtx::builder().build(),
        http: WasiHttpCtx::new(),
        hooks: DefaultHooks,
        table: ResourceTable::new(),
        contacts: vec![DestinationContact {
            id: "front-7".into(),
            external_id: None,
            emails: vec!["ada@example.com".into()],
            phones: vec![],
            domains: vec![],
            // Handles the platform's own record had before any sync.
            from_source: vec![],
        }],
    };
    let mut store = Store::new(&engine, host);
    let plugin = Plugin::instantiate(&mut store, &component, &linker)?;
    let sync = plugin.crmsync_sync_sync();

    // A HubSpot record, mapped with the standard targets.
    let record = SourceRecord {
        id: "101".into(),
        properties: vec![
            Property {
                name: "firstname".into(),
                value: Some("Ada".into()),
            },
            Property {
                name: "email".into(),
                value: Some(" ADA@example.com".into()),
            },
        ],
        modified_at: None,
        merged_ids: Vec::new(),
        company_ids: Vec::new(),
    };
    let mappings = [
        FieldMapping {
            source: "firstname".into(),
            target: FieldTarget::FirstName,
            value_type: FieldType::Text,
        },
        FieldMapping {
            source: "email".into(),
            target: FieldTarget::Email,
            value_type: FieldType::Text,
        },
    ];
    let mapped = sync
        .call_map_fields(&mut store, &record, &mappings)?
        .contact;
    assert_eq!(mapped.emails, ["ada@example.com"]);

    // It shares a handle with an unlinked destination contact: link it (X3).
    let outcome = sync.call_match_contact(&mut store, &mapped)?;
    assert!(
        matches!(&outcome, MatchOutcome::Link(id) if id == "front-7"),
        "{outcome:?}"
    );

    // A whole page in one call: the second record claims the email the
    // first one takes, so it is skipped (X4) as if the first were applied.
    let mut second = mapped.clone();
    second.external_id = "102".into();
    let outcomes = sync.call_match_page(&mut store, &[mapped.clone(), second.clone()])?;
    assert!(
        matches!(&outcomes[..], [MatchOutcome::Link(id), MatchOutcome::Skip(_)] if id == "front-7"),
        "{outcomes:?}"
    );

    // The same page packed: what matching reads of each record (its id,
    // then its emails, phones and domains) as bytes and two integer lists.
    let mut keys = PageKeys {
        text: Vec::new(),
        ends: Vec::new(),
        counts: Vec::new(),
    };
    for contact in [&mapped, &second] {
        let lists = [&contact.emails, &contact.phones, &contact.domains];
        keys.counts.extend(lists.map(|list| list.len() as u32));
        for key in std::iter::once(&contact.external_id).chain(lists.into_iter().flatten()) {
            keys.text.extend_from_slice(key.as_bytes());
            keys.ends.push(keys.text.len() as u32);
        }
    }
    let packed = sync.call_match_keys_page(&mut store, &keys)?;
    assert_eq!(format!("{packed:?}"), format!("{outcomes:?}"));
    Ok(())
}
