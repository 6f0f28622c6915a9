//! A component that implements crmsync's world and tries everything the
//! sandbox must stop: spinning forever, allocating without bound, reading
//! the environment and the filesystem, calling hosts it was not given and
//! sending its own `Authorization` header. Each attempt reports what it saw.

wit_bindgen::generate!({ world: "plugin", path: "../../wit", generate_all });

#[cfg(target_arch = "wasm32")]
mod component {
    use super::crmsync::sync::types::{
        Counterpart, MergedRecord, Pairing, PairingRules, ReadRecord, UnpairedRecord,
    };
    use super::crmsync::sync::types::{
        Destination, ErrorCategory, ErrorScope, Failure, FieldMapping, FieldRule, MappedContact,
        MappedPage, MappedRecord, MatchOutcome, OutgoingRecord, Owner, Page, PageKeys,
        PropertyDefinition, ReconcileInput, Reconciled, Source, SourceRecord, SyncError,
        WriteResult,
    };
    use super::exports::crmsync::sync::sync::Guest;

    struct Misbehaving;
    super::export!(Misbehaving with_types_in super);

    fn report(message: String) -> SyncError {
        SyncError {
            category: ErrorCategory::Validation,
            retryable: false,
            retry_after_ms: None,
            scope: ErrorScope::Sync,
            record_id: None,
            field: None,
            message,
            resolution: String::new(),
        }
    }

    /// Busy forever: only the host's time limit ends it.
    fn spin() -> ! {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }

    fn base_url(source: &Source) -> String {
        match source {
            Source::HubspotContacts(s) | Source::HubspotCompanies(s) => s.base_url.clone(),
            Source::Salesforce(s) => s.instance_url.clone(),
        }
    }

    /// `GET url`, optionally with its own Authorization header: what happened, as text.
    fn attempt(url: &str, authorization: bool) -> String {
        use wasip2::http::outgoing_handler;
        use wasip2::http::types::{Fields, OutgoingBody, OutgoingRequest, Scheme};
        let uri: http::Uri = url.parse().expect("a valid URL");
        let mut headers = Vec::new();
        if authorization {
            headers.push(("authorization".to_owned(), b"Bearer stolen".to_vec()));
        }
        let headers = match Fields::from_list(&headers) {
            Ok(headers) => headers,
            Err(error) => return format!("failed: {error:?}"),
        };
        let request = OutgoingRequest::new(headers);
        let _ = request.set_scheme(Some(&Scheme::Http));
        let _ = request.set_authority(uri.authority().map(|a| a.as_str()));
        let _ = request.set_path_with_query(uri.path_and_query().map(|p| p.as_str()));
        let body = request.body().expect("the body, once");
        let answer = match outgoing_handler::handle(request, None) {
            Ok(future) => {
                let _ = OutgoingBody::finish(body, None);
                future.subscribe().block();
                future.get().expect("ready").expect("taken once")
            }
            Err(code) => Err(code),
        };
        match answer {
            Ok(response) => format!("status {}", response.status()),
            Err(code) => format!("denied: {code:?}"),
        }
    }

    impl Guest for Misbehaving {
        /// Reports the environment, the filesystem and three HTTP attempts.
        fn fetch_page(source: Source, _cursor: Option<String>) -> Result<Page, SyncError> {
            let base = base_url(&source);
            let env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
            let fs = match std::fs::read_dir("/") {
                Ok(entries) => format!("fs: {} entries", entries.count()),
                Err(e) => format!("fs: {e}"),
            };
            let allowed = attempt(&format!("{base}/echo"), false);
            let other_host = attempt("http://127.0.0.2:9/elsewhere", false);
            let own_auth = attempt(&format!("{base}/echo"), true);
            Err(report(format!(
                "env: {env:?}\n{fs}\nallowed: {allowed}\nother host: {other_host}\nown authorization: {own_auth}"
            )))
        }

        /// Allocates without bound, like `map-fields`.
        fn fetch_mapped_page(
            _source: Source,
            _cursor: Option<String>,
            mappings: Vec<FieldMapping>,
        ) -> Result<MappedPage, SyncError> {
            let record = SourceRecord {
                id: String::new(),
                properties: Vec::new(),
                modified_at: None,
                merged_ids: Vec::new(),
                company_ids: Vec::new(),
            };
            Self::map_fields(record, mappings);
            unreachable!("map-fields never returns")
        }

        /// Spins forever.
        fn list_properties(_source: Source) -> Result<Vec<PropertyDefinition>, SyncError> {
            spin()
        }

        /// Spins forever, as `list-properties` does.
        fn list_owners(_source: Source) -> Result<Vec<Owner>, SyncError> {
            spin()
        }

        /// Allocates until something stops it.
        fn map_fields(_record: SourceRecord, _mappings: Vec<FieldMapping>) -> MappedRecord {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }

        /// Panics (a trap).
        fn match_contact(_contact: MappedContact) -> MatchOutcome {
            panic!("misbehaving on purpose")
        }

        /// Panics too.
        fn match_account(_account: MappedContact) -> MatchOutcome {
            panic!("misbehaving on purpose")
        }

        /// Panics too.
        fn match_page(_contacts: Vec<MappedContact>) -> Vec<MatchOutcome> {
            panic!("misbehaving on purpose")
        }

        /// Panics too.
        fn match_accounts_page(_accounts: Vec<MappedContact>) -> Vec<MatchOutcome> {
            panic!("misbehaving on purpose")
        }

        /// Panics too.
        fn match_keys_page(_keys: PageKeys) -> Vec<MatchOutcome> {
            panic!("misbehaving on purpose")
        }

        /// Panics too.
        fn match_accounts_keys_page(_keys: PageKeys) -> Vec<MatchOutcome> {
            panic!("misbehaving on purpose")
        }

        /// Behaves, so a test can show an instance still works between failures.
        fn classify_error(_failure: Failure) -> SyncError {
            report("classified".into())
        }

        /// Spins, as `fetch-page` does: writes are time-limited like reads.
        fn write_records(
            _destination: Destination,
            _records: Vec<OutgoingRecord>,
        ) -> Result<Vec<WriteResult>, SyncError> {
            loop {
                std::hint::black_box(0u64);
            }
        }

        /// Panics.
        fn reconcile(_rules: Vec<FieldRule>, _records: Vec<ReconcileInput>) -> Vec<Reconciled> {
            panic!("misbehaving on purpose")
        }

        /// Panics.
        fn pair_read(_rules: PairingRules, _records: Vec<ReadRecord>) -> Vec<Pairing> {
            panic!("misbehaving on purpose")
        }

        /// Panics.
        fn pair_looked_up(
            _rules: PairingRules,
            _records: Vec<UnpairedRecord>,
            _found: Vec<Counterpart>,
            _taken: Vec<String>,
        ) -> Vec<Pairing> {
            panic!("misbehaving on purpose")
        }

        /// Panics.
        fn fold_merges(_records: Vec<MergedRecord>) -> Vec<Option<String>> {
            panic!("misbehaving on purpose")
        }
    }
}
