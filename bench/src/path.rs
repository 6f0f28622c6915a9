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
use crate::{Report, live_state, median};
use anyhow::Result;
use crmsync_host::bindings::crmsync::sync::types as host;
use crmsync_host::config::{Config, mapped_properties};
use crmsync_host::runtime::{EMBEDDED_COMPONENT_BUILT_AT, Instance, Runtime, Sandbox};
use crmsync_host::store::ContactStore;
use crmsync_plugin::types as guest;
use std::path::Path;
use std::time::{Duration, Instant};

/// Rounds of the comparison; the median of their ratios is reported.
const PATH_ROUNDS: usize = 5;

/// One side's times in a round: the path (fetch, map, match-keys-page),
/// match-keys-page's share of it, and match-page's and match-contact's,
/// timed apart.
#[derive(Default, Clone, Copy)]
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
        let instance = runtime.instantiate(live_state(runtime, config.source.origin.clone())?)?;
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
fn round<const N: usize>(sides: [&mut dyn Side; N], records: u64) -> Result<[Round; N]> {
    let mut rounds = [Round::default(); N];
    let mut going = [true; N];
    let mut page = 0;
    while going.iter().any(|&g| g) {
        for turn in 0..N {
            let i = (page + turn) % N;
            if going[i] {
                going[i] = sides[i].step(&mut rounds[i])?;
            }
        }
        page += 1;
    }
    for side in &sides {
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

    let mut rounds = Vec::with_capacity(PATH_ROUNDS);
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
        rounds.push(round([&mut wasm, &mut native, &mut bare], records)?);
    }
    report_rounds(&rounds, records, report);
    Ok(())
}

/// Each round's sides, in `component_path`'s order.
const WASM: usize = 0;
const NATIVE: usize = 1;
const UNCHECKED: usize = 2;

/// Which of a round's times a figure reads.
type Time = fn(&Round) -> Duration;

/// One figure of every round: its median, lowest and highest.
struct Spread {
    median: f64,
    low: f64,
    high: f64,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Spread {
        values.sort_by(f64::total_cmp);
        Spread {
            median: values[values.len() / 2],
            low: values[0],
            high: values[values.len() - 1],
        }
    }
}

/// Reports the medians of `rounds` (each the component's, native's and the
/// unchecked component's times): rates, ratios and their rounds' spread.
fn report_rounds(rounds: &[[Round; 3]], records: u64, report: &mut Report) {
    let ratio = |side: usize, time: Time| {
        Spread::of(
            rounds
                .iter()
                .map(|r| time(&r[side]).as_secs_f64() / time(&r[NATIVE]).as_secs_f64())
                .collect(),
        )
    };
    let median_of = |side: usize, time: Time| {
        median(&mut rounds.iter().map(|r| time(&r[side])).collect::<Vec<_>>())
    };
    let rate = |d: Duration| format!("{:.0} records/s", records as f64 / d.as_secs_f64());
    let per_record = |d: Duration| d.as_secs_f64() * 1e6 / records as f64;
    let path: Time = |r| r.path;
    let in_page: Time = |r| r.in_page;
    report.add(
        "component path in wasmtime",
        rate(median_of(WASM, path)),
        "",
        None,
    );
    report.add(
        "component path native",
        rate(median_of(NATIVE, path)),
        "",
        None,
    );
    let whole = ratio(WASM, path);
    report.add(
        "component path wasm / native",
        format!(
            "{:.2} (rounds {:.2}-{:.2})",
            whole.median, whole.low, whole.high
        ),
        "<= 1.15",
        Some(whole.median <= 1.15),
    );
    let page = ratio(WASM, in_page);
    report.add(
        "match-keys-page only (the runner's), wasm / native",
        format!(
            "{:.2} ({:.2} vs {:.2} us/record; rounds {:.2}-{:.2})",
            page.median,
            per_record(median_of(WASM, in_page)),
            per_record(median_of(NATIVE, in_page)),
            page.low,
            page.high
        ),
        "<= 1.3",
        Some(page.median <= 1.3),
    );
    report.add(
        "without the time limits' epoch checks (diagnostic): path, match-keys-page",
        format!(
            "{:.2}, {:.2} wasm / native",
            ratio(UNCHECKED, path).median,
            ratio(UNCHECKED, in_page).median
        ),
        "",
        None,
    );
    // The exports embedders may call instead of the runner's.
    let others: [(&str, Time); 2] = [
        ("match-page on list<mapped-contact>", |r| r.in_list),
        ("match-contact per record", |r| r.in_contact),
    ];
    for (name, time) in others {
        report.add(
            &format!("{name}, wasm / native"),
            format!(
                "{:.2} ({:.2} vs {:.2} us/record)",
                ratio(WASM, time).median,
                per_record(median_of(WASM, time)),
                per_record(median_of(NATIVE, time))
            ),
            "",
            None,
        );
    }
}
