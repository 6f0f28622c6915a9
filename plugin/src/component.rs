//! The component's exports, and the two host capabilities it uses: HTTP
//! (`wasi:http/outgoing-handler`, in `wasi_http`) and the `directory` import.

use crate::bindings::crmsync::sync::directory;
use crate::bindings::exports::crmsync::sync::sync::Guest;
use crate::hubspot::Object;
use crate::matching::Directory;
use crate::types::{Counterpart, MergedRecord, Pairing, PairingRules, ReadRecord, UnpairedRecord};
use crate::types::{
    Destination, DestinationContact, Failure, FieldMapping, FieldRule, HandleKind, MappedContact,
    MappedPage, MappedRecord, MatchOutcome, OutgoingRecord, Owner, Page, PageKeys,
    PropertyDefinition, ReconcileInput, Reconciled, SalesforceScope, Source, SourceRecord,
    SyncError, WriteResult,
};
use crate::wasi_http::WasiHttp;
use crate::{
    counterparts, errors, filters, hubspot, mapping, matching, page_matching, reconcile,
    salesforce, writes,
};

struct Component;

crate::bindings::export!(Component with_types_in crate::bindings);

impl Guest for Component {
    fn fetch_page(source: Source, cursor: Option<String>) -> Result<Page, SyncError> {
        let cursor = cursor.as_deref();
        match &source {
            Source::HubspotContacts(source) => {
                hubspot::fetch_page(&mut WasiHttp, Object::Contacts, source, cursor)
            }
            Source::HubspotCompanies(source) => {
                hubspot::fetch_page(&mut WasiHttp, Object::Companies, source, cursor)
            }
            Source::Salesforce(source) => {
                let page = salesforce::fetch_page(&mut WasiHttp, source, cursor)?;
                if source.scope == SalesforceScope::Deleted {
                    return Ok(page);
                }
                Ok(filters::apply(&source.filters, page))
            }
        }
    }

    fn fetch_mapped_page(
        source: Source,
        cursor: Option<String>,
        mappings: Vec<FieldMapping>,
    ) -> Result<MappedPage, SyncError> {
        let page = Self::fetch_page(source, cursor)?;
        Ok(mapping::map_page(page, &mappings))
    }

    fn list_properties(source: Source) -> Result<Vec<PropertyDefinition>, SyncError> {
        match &source {
            Source::HubspotContacts(source) => {
                hubspot::list_properties(&mut WasiHttp, Object::Contacts, source)
            }
            Source::HubspotCompanies(source) => {
                hubspot::list_properties(&mut WasiHttp, Object::Companies, source)
            }
            Source::Salesforce(source) => salesforce::list_properties(&mut WasiHttp, source),
        }
    }

    fn list_owners(source: Source) -> Result<Vec<Owner>, SyncError> {
        match &source {
            Source::HubspotContacts(source) | Source::HubspotCompanies(source) => {
                hubspot::list_owners(&mut WasiHttp, source)
            }
            Source::Salesforce(source) => salesforce::list_owners(&mut WasiHttp, source),
        }
    }

    fn map_fields(record: SourceRecord, mappings: Vec<FieldMapping>) -> MappedRecord {
        mapping::map_fields(record, &mappings)
    }

    fn match_contact(contact: MappedContact) -> MatchOutcome {
        matching::match_contact(&mut HostDirectory, &contact)
    }

    fn match_account(account: MappedContact) -> MatchOutcome {
        matching::match_account(&mut HostDirectory, &account)
    }

    fn match_page(contacts: Vec<MappedContact>) -> Vec<MatchOutcome> {
        page_matching::match_page(&mut HostDirectory, &contacts)
    }

    fn match_accounts_page(accounts: Vec<MappedContact>) -> Vec<MatchOutcome> {
        page_matching::match_accounts_page(&mut HostDirectory, &accounts)
    }

    fn match_keys_page(keys: PageKeys) -> Vec<MatchOutcome> {
        page_matching::match_keys_page(&mut HostDirectory, &keys)
    }

    fn match_accounts_keys_page(keys: PageKeys) -> Vec<MatchOutcome> {
        page_matching::match_accounts_keys_page(&mut HostDirectory, &keys)
    }

    fn classify_error(failure: Failure) -> SyncError {
        errors::classify(&failure)
    }

    fn write_records(
        destination: Destination,
        records: Vec<OutgoingRecord>,
    ) -> Result<Vec<WriteResult>, SyncError> {
        writes::write_records(&mut WasiHttp, &destination, &records)
    }

    fn reconcile(rules: Vec<FieldRule>, records: Vec<ReconcileInput>) -> Vec<Reconciled> {
        reconcile::reconcile(&rules, &records)
    }

    fn pair_read(rules: PairingRules, records: Vec<ReadRecord>) -> Vec<Pairing> {
        counterparts::pair_read(&rules, &records)
    }

    fn pair_looked_up(
        rules: PairingRules,
        records: Vec<UnpairedRecord>,
        found: Vec<Counterpart>,
        taken: Vec<String>,
    ) -> Vec<Pairing> {
        counterparts::pair_looked_up(&rules, &records, &found, &taken)
    }

    fn fold_merges(records: Vec<MergedRecord>) -> Vec<Option<String>> {
        counterparts::fold_merges(&records)
    }
}

/// The host's `directory` import.
struct HostDirectory;

impl Directory for HostDirectory {
    fn find_by_external_id(&mut self, external_id: &str) -> Option<DestinationContact> {
        directory::find_by_external_id(external_id)
    }

    fn find_by_handle(&mut self, kind: HandleKind, handle: &str) -> Vec<DestinationContact> {
        directory::find_by_handle(kind, handle)
    }

    fn find_account_by_external_id(&mut self, external_id: &str) -> Option<DestinationContact> {
        directory::find_account_by_external_id(external_id)
    }

    fn find_accounts_by_domain(&mut self, domain: &str) -> Vec<DestinationContact> {
        directory::find_accounts_by_domain(domain)
    }

    fn find_page(
        &mut self,
        external_ids: &[String],
        emails: &[String],
        phones: &[String],
    ) -> Vec<DestinationContact> {
        directory::find_page(external_ids, emails, phones)
    }

    fn find_accounts_page(
        &mut self,
        external_ids: &[String],
        domains: &[String],
    ) -> Vec<DestinationContact> {
        directory::find_accounts_page(external_ids, domains)
    }

    fn find_page_keys(&mut self, keys: &PageKeys) -> Vec<DestinationContact> {
        directory::find_page_keys(keys)
    }

    fn find_accounts_page_keys(&mut self, keys: &PageKeys) -> Vec<DestinationContact> {
        directory::find_accounts_page_keys(keys)
    }
}
