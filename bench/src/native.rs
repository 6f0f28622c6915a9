//! The component's logic built natively, for the wasm/native ratio: the same
//! `crmsync-plugin` code (parse a page, map, match), the same HTTP client as
//! the runner's hooks (hyper, through `wasmtime-wasi-http`'s sender), and the
//! same SQLite directory.

use bytes::Bytes;
use crmsync_host::http::{Answer, HttpLimits, send};
use crmsync_host::store::{ContactStore, Handle};
use crmsync_plugin::matching::Directory;
use crmsync_plugin::page_keys::unpack;
use crmsync_plugin::transport::{HttpRequest, HttpResponse, Method, Transport, TransportError};
use crmsync_plugin::types::{DestinationContact, HandleKind, PageKeys};
use http_body_util::Full;
use wasmtime_wasi::runtime::AbortOnDropJoinHandle;

/// Sends through the runner's HTTP stack, with the component's one request
/// ahead (`Transport::send_ahead`) on the runner's tokio runtime, so both
/// builds overlap the same round trips.
#[derive(Default)]
pub struct HyperTransport {
    ahead: Option<(HttpRequest, AbortOnDropJoinHandle<Result<Answer, String>>)>,
}

impl HyperTransport {
    fn start(request: &HttpRequest) -> AbortOnDropJoinHandle<Result<Answer, String>> {
        let method = match request.method {
            Method::Get => http::Method::GET,
            Method::Post => http::Method::POST,
            Method::Patch => http::Method::PATCH,
        };
        let body = Bytes::from(request.body.clone().unwrap_or_default());
        let outgoing = http::Request::builder()
            .method(method)
            .uri(&request.url)
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(body));
        wasmtime_wasi::runtime::spawn(async move {
            let outgoing = outgoing.map_err(|e| e.to_string())?;
            send(outgoing, HttpLimits::default())
                .await
                .map_err(|e| e.to_string())
        })
    }
}

impl Transport for HyperTransport {
    fn send(&mut self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        let pending = match self.ahead.take() {
            Some((sent, pending)) if sent == *request => pending,
            _ => Self::start(request),
        };
        let (status, _headers, body) =
            wasmtime_wasi::runtime::in_tokio(pending).map_err(TransportError::Failed)?;
        Ok(HttpResponse {
            status: status.as_u16(),
            retry_after: None,
            body: body.to_vec(),
        })
    }

    fn send_ahead(&mut self, request: &HttpRequest) {
        self.ahead = Some((request.clone(), Self::start(request)));
    }
}

/// The runner's SQLite directory, seen through the plugin's `Directory` trait.
pub struct StoreDirectory<'a>(pub &'a ContactStore);

impl Directory for StoreDirectory<'_> {
    fn find_by_external_id(&mut self, external_id: &str) -> Option<DestinationContact> {
        self.0
            .find_by_external_id(external_id)
            .expect("a lookup")
            .map(convert)
    }

    fn find_by_handle(&mut self, kind: HandleKind, handle: &str) -> Vec<DestinationContact> {
        let kind = match kind {
            HandleKind::Email => Handle::Email,
            HandleKind::Phone => Handle::Phone,
            HandleKind::Domain => return Vec::new(),
        };
        self.0
            .find_by_handle(kind, handle)
            .expect("a lookup")
            .into_iter()
            .map(convert)
            .collect()
    }

    fn find_account_by_external_id(&mut self, external_id: &str) -> Option<DestinationContact> {
        self.0
            .find_account_by_external_id(external_id)
            .expect("a lookup")
            .map(convert)
    }

    fn find_accounts_by_domain(&mut self, domain: &str) -> Vec<DestinationContact> {
        self.0
            .find_accounts_by_domain(domain)
            .expect("a lookup")
            .into_iter()
            .map(convert)
            .collect()
    }

    fn find_page(
        &mut self,
        external_ids: &[String],
        emails: &[String],
        phones: &[String],
    ) -> Vec<DestinationContact> {
        self.0
            .find_page(&strs(external_ids), &strs(emails), &strs(phones))
            .expect("a lookup")
            .into_iter()
            .map(convert)
            .collect()
    }

    fn find_accounts_page(
        &mut self,
        external_ids: &[String],
        domains: &[String],
    ) -> Vec<DestinationContact> {
        self.0
            .find_accounts_page(&strs(external_ids), &strs(domains))
            .expect("a lookup")
            .into_iter()
            .map(convert)
            .collect()
    }

    /// As the runner's `find-page-keys`: the keys read in place, not copied.
    fn find_page_keys(&mut self, keys: &PageKeys) -> Vec<DestinationContact> {
        let records = unpack(keys);
        let ids: Vec<&str> = records.iter().map(|r| r.external_id).collect();
        let of = |kind| -> Vec<&str> {
            records
                .iter()
                .flat_map(|r| r.handles(kind).iter().copied())
                .collect()
        };
        self.0
            .find_page(&ids, &of(HandleKind::Email), &of(HandleKind::Phone))
            .expect("a lookup")
            .into_iter()
            .map(convert)
            .collect()
    }
}

fn strs(values: &[String]) -> Vec<&str> {
    values.iter().map(String::as_str).collect()
}

fn convert(entry: crmsync_host::store::DirectoryEntry) -> DestinationContact {
    DestinationContact {
        id: entry.id.to_string(),
        external_id: entry.external_id,
        emails: entry.emails,
        phones: entry.phones,
        domains: entry.domains,
        from_source: entry.from_source,
    }
}
