//! The component path in wasmtime against the same crate built natively:
//! fetch, map and match-keys-page of every page of one server, as the runner
//! calls them, and the other matching exports embedders may call instead.
//!
//! The sides take turns page by page, not round by round: a 20,000-record
//! round is tens of milliseconds a side, and on a shared machine a slow
//! stretch of that length used to fall on one side only (a single run's
//! rounds spread from 1.11 to 1.58). Paired page by page, every side meets
//! the machine's moments alike, so the ratio reflects the code rather than
//! the neighbours; the order within a page rotates so no side always runs
//! right after another.

use crate::native;
use crate::server::{BenchServer, Setup};
use crate::{Report, median};
use anyhow::Result;
use crmsync_host::bindings::crmsync::sync::types as host;
use crmsync_host::config::{Config, mapped_properties};
use crmsync_host::http::{Hooks, HttpLimits, HttpMode, HttpStats};
use crmsync_host::runtime::{EMBEDDED_COMPONENT_BUILT_AT, HostState, Instance, Runtime, Sandbox};
use crmsync_host::store::ContactStore;
use crmsync_plugin::types as guest;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rounds of the comparison; the median of their ratios is reported.
const PATH_ROUNDS: usize = 5;

/// One side's times in a round: the path (fetch, map, match-keys-page),
/// match-keys-page's share of it, and match-page's and match-contact's,
/// timed apart.
#[derive(Default)]
struct Round {
    path: Duration,
    in_page: Duration,
    in_list: Duration,
    in_contact: Duration,
}

/// A side of the comparison, stepped one page at a time.
trait Side {
    /// Fetches, maps and matches the next page into `round`; false once the
    /// server has no next page.
    fn step(&mut self, round: &mut Round) -> Result<bool>;
    /// Records matched so far.
    fn seen(&self) -> u64;
}

/// The component in wasmtime, through the runner's hooks and an in-memory
/// store, called as the runner calls it.
struct WasmSide<'a> {
    instance: Instance,
    source: &'a host::Source,
    mappings: &'a [host::FieldMapping],
    cursor: Option<String>,
    seen: u64,
}

impl<'a> WasmSide<'a> {
    fn new(
        runtime: &Runtime,
        config: &'a Config,
        source: &'a host::Source,
    ) -> Result<WasmSide<'a>> {
        let hooks = Hooks::new(
            config.source.origin.clone(),
            HttpMode::Live,
            Default::default(),
            HttpLimits::default(),
            Arc::new(HttpStats::default()),
        );
        let instance = runtime.instantiate(HostState::new(
            hooks,
            Box::new(ContactStore::open_in_memory()?),
            runtime.sandbox(),
        ))?;
        Ok(WasmSide {
            instance,
            source,
            mappings: &config.mappings,
            cursor: None,
            seen: 0,
        })
    }
}

impl Side for WasmSide<'_> {
    fn step(&mut self, round: &mut Round) -> Result<bool> {
        let fetch = Instant::now();
        let page = self
            .instance
            .fetch_mapped_page(self.source, self.cursor.as_deref(), self.mappings)?
            .map_err(|e| anyhow::anyhow!(e.message))?;
        round.path += fetch.elapsed();
        let contacts: Vec<_> = page.records.iter().map(|r| &r.contact).collect();
        let calls = Instant::now();
        self.seen += self.instance.match_keys_page(&contacts)?.len() as u64;
        let in_page = calls.elapsed();
        round.in_page += in_page;
        round.path += in_page;
        let owned: Vec<_> = contacts.iter().map(|&c| c.clone()).collect();
        let calls = Instant::now();
        self.instance.match_page(&owned)?;
        round.in_list += calls.elapsed();
        let calls = Instant::now();
        for contact in &owned {
            self.instance.match_contact(contact)?;
        }
        round.in_contact += calls.elapsed();
        self.cursor = page.next_cursor;
        Ok(self.cursor.is_some())
    }

    fn seen(&self) -> u64 {
        self.seen
    }
}

/// The same crate's code natively, with the same HTTP client and store.
struct NativeSide<'a> {
    store: ContactStore,
    transport: native::HyperTransport,
    source: &'a guest::HubspotSource,
    mappings: &'a [guest::FieldMapping],
    cursor: Option<String>,
    seen: u64,
}

impl Side for NativeSide<'_> {
    fn step(&mut self, round: &mut Round) -> Result<bool> {
        let mut directory = native::StoreDirectory(&self.store);
        let fetch = Instant::now();
        let page = crmsync_plugin::hubspot::fetch_page(
            &mut self.transport,
            crmsync_plugin::hubspot::Object::Contacts,
            self.source,
            self.cursor.as_deref(),
        )
        .map_err(|e| anyhow::anyhow!(e.message))?;
        let page = crmsync_plugin::mapping::map_page(page, self.mappings);
        round.path += fetch.elapsed();
        let contacts: Vec<_> = page.records.iter().map(|r| r.contact.clone()).collect();
        let calls = Instant::now();
        let keys = crmsync_plugin::page_keys::pack(&contacts);
        let outcomes = std::hint::black_box(crmsync_plugin::page_matching::match_keys_page(
            &mut directory,
            &keys,
        ));
        self.seen += outcomes.len() as u64;
        let in_page = calls.elapsed();
        round.in_page += in_page;
        round.path += in_page;
        let calls = Instant::now();
        std::hint::black_box(crmsync_plugin::page_matching::match_page(
            &mut directory,
            &contacts,
        ));
        round.in_list += calls.elapsed();
        let calls = Instant::now();
        for contact in &contacts {
            std::hint::black_box(crmsync_plugin::matching::match_contact(
                &mut directory,
                contact,
            ));
        }
        round.in_contact += calls.elapsed();
        self.cursor = page.next_cursor;
        Ok(self.cursor.is_some())
    }

    fn seen(&self) -> u64 {
        self.seen
    }
}

/// Steps every side through the server's pages, taking turns page by page
/// (the first to go rotates), and returns each side's times in `sides`' order.
fn round(sides: &mut [&mut dyn Side], records: u64) -> Result<Vec<Round>> {
    let mut rounds: Vec<Round> = sides.iter().map(|_| Round::default()).collect();
    let mut going = vec![true; sides.len()];
    let mut page = 0;
    while going.iter().any(|&g| g) {
        for turn in 0..sides.len() {
            let i = (page + turn) % sides.len();
            if going[i] {
                going[i] = sides[i].step(&mut rounds[i])?;
            }
        }
        page += 1;
    }
    for side in sides.iter() {
        anyhow::ensure!(
            side.seen() == records,
            "a side saw {} of {records}",
            side.seen()
        );
    }
    Ok(rounds)
}

/// Fetch -> map -> match of `records` records, in wasmtime and natively,
/// against the same server through the same HTTP client; also the component
/// built without the epoch checks its time limits rest on (a diagnostic).
pub fn component_path(records: u64, component: Option<&Path>, report: &mut Report) -> Result<()> {
    println!(
        "\ncomponent path: fetch-mapped-page -> match-keys-page, {records} records, sides paired page by page, median of {PATH_ROUNDS} rounds"
    );
    let server = BenchServer::start(Setup {
        contacts: records,
        limit: None,
        latency: None,
    });
    let config = Config::parse(
        &format!(
            "[source]\nsystem = \"hubspot\"\nbase_url = \"{}\"\n",
            server.base_url
        ),
        "path",
        Path::new("."),
    )?;
    let properties = mapped_properties(&config.mappings);
    let runtime = match component {
        Some(path) => Runtime::load(path, Sandbox::default())?,
        None => Runtime::load_embedded(Sandbox::default())?,
    };
    // The same component without the epoch checks its time limits rest on:
    // what the checks cost, apart from the component's own code.
    let unchecked = Runtime::load_without_time_limits(
        component.unwrap_or(Path::new(EMBEDDED_COMPONENT_BUILT_AT)),
    )?;
    let wasm_source = host::Source::HubspotContacts(host::HubspotSource {
        base_url: server.base_url.clone(),
        scope: host::HubspotScope::All,
        properties: properties.clone(),
        filters: Vec::new(),
        with_companies: false,
    });
    let native_mappings: Vec<guest::FieldMapping> = config
        .mappings
        .iter()
        .map(|m| guest::FieldMapping {
            source: m.source.clone(),
            target: match &m.target {
                host::FieldTarget::FirstName => guest::FieldTarget::FirstName,
                host::FieldTarget::LastName => guest::FieldTarget::LastName,
                host::FieldTarget::FullName => guest::FieldTarget::FullName,
                host::FieldTarget::Email => guest::FieldTarget::Email,
                host::FieldTarget::Phone => guest::FieldTarget::Phone,
                host::FieldTarget::Domain => guest::FieldTarget::Domain,
                host::FieldTarget::Custom(name) => guest::FieldTarget::Custom(name.clone()),
            },
            // The bench's config maps plain text only.
            value_type: guest::FieldType::Text,
        })
        .collect();
    let native_source = guest::HubspotSource {
        base_url: server.base_url.clone(),
        scope: guest::HubspotScope::All,
        properties,
        filters: Vec::new(),
        with_companies: false,
    };

    let mut figures = Figures::default();
    for _ in 0..PATH_ROUNDS {
        let mut wasm = WasmSide::new(&runtime, &config, &wasm_source)?;
        let mut native = NativeSide {
            store: ContactStore::open_in_memory()?,
            transport: native::HyperTransport::default(),
            source: &native_source,
            mappings: &native_mappings,
            cursor: None,
            seen: 0,
        };
        let mut bare = WasmSide::new(&unchecked, &config, &wasm_source)?;
        let mut times = round(&mut [&mut wasm, &mut native, &mut bare], records)?.into_iter();
        let (w, n, u) = match (times.next(), times.next(), times.next()) {
            (Some(w), Some(n), Some(u)) => (w, n, u),
            _ => anyhow::bail!("a side of the round is missing"),
        };
        figures.add(&w, &n, &u);
    }
    figures.report(records, report);
    Ok(())
}

/// Every round's times and ratios, for the medians.
#[derive(Default)]
struct Figures {
    wasm: Vec<Duration>,
    native: Vec<Duration>,
    ratios: Vec<f64>,
    wasm_page: Vec<Duration>,
    native_page: Vec<Duration>,
    page_ratios: Vec<f64>,
    wasm_list: Vec<Duration>,
    native_list: Vec<Duration>,
    list_ratios: Vec<f64>,
    wasm_contact: Vec<Duration>,
    native_contact: Vec<Duration>,
    contact_ratios: Vec<f64>,
    unchecked_ratios: Vec<f64>,
    unchecked_page_ratios: Vec<f64>,
}

impl Figures {
    /// One round: the component `w`, native `n`, the component without
    /// epoch checks `u`.
    fn add(&mut self, w: &Round, n: &Round, u: &Round) {
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        self.unchecked_ratios.push(ratio(u.path, n.path));
        self.unchecked_page_ratios.push(ratio(u.in_page, n.in_page));
        self.ratios.push(ratio(w.path, n.path));
        self.page_ratios.push(ratio(w.in_page, n.in_page));
        self.list_ratios.push(ratio(w.in_list, n.in_list));
        self.contact_ratios.push(ratio(w.in_contact, n.in_contact));
        self.wasm.push(w.path);
        self.native.push(n.path);
        self.wasm_page.push(w.in_page);
        self.native_page.push(n.in_page);
        self.wasm_list.push(w.in_list);
        self.native_list.push(n.in_list);
        self.wasm_contact.push(w.in_contact);
        self.native_contact.push(n.in_contact);
    }

    fn report(mut self, records: u64, report: &mut Report) {
        let median_f = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let rate = |d: Duration| format!("{:.0} records/s", records as f64 / d.as_secs_f64());
        let per_record = |d: Duration| d.as_secs_f64() * 1e6 / records as f64;
        report.add(
            "component path in wasmtime",
            rate(median(&mut self.wasm)),
            "",
            None,
        );
        report.add(
            "component path native",
            rate(median(&mut self.native)),
            "",
            None,
        );
        let ratio = median_f(&mut self.ratios);
        report.add(
            "component path wasm / native",
            format!(
                "{ratio:.2} (rounds {:.2}-{:.2})",
                self.ratios[0],
                self.ratios[self.ratios.len() - 1]
            ),
            "<= 1.15",
            Some(ratio <= 1.15),
        );
        let page_ratio = median_f(&mut self.page_ratios);
        report.add(
            "match-keys-page only (the runner's), wasm / native",
            format!(
                "{page_ratio:.2} ({:.2} vs {:.2} us/record; rounds {:.2}-{:.2})",
                per_record(median(&mut self.wasm_page)),
                per_record(median(&mut self.native_page)),
                self.page_ratios[0],
                self.page_ratios[self.page_ratios.len() - 1]
            ),
            "<= 1.3",
            Some(page_ratio <= 1.3),
        );
        report.add(
            "without the time limits' epoch checks (diagnostic): path, match-keys-page",
            format!(
                "{:.2}, {:.2} wasm / native",
                median_f(&mut self.unchecked_ratios),
                median_f(&mut self.unchecked_page_ratios)
            ),
            "",
            None,
        );
        report.add(
            "match-page on list<mapped-contact>, wasm / native",
            format!(
                "{:.2} ({:.2} vs {:.2} us/record)",
                median_f(&mut self.list_ratios),
                per_record(median(&mut self.wasm_list)),
                per_record(median(&mut self.native_list))
            ),
            "",
            None,
        );
        report.add(
            "match-contact per record, wasm / native",
            format!(
                "{:.2} ({:.2} vs {:.2} us/record)",
                median_f(&mut self.contact_ratios),
                per_record(median(&mut self.wasm_contact)),
                per_record(median(&mut self.native_contact))
            ),
            "",
            None,
        );
    }
}
