//! The component's [`Transport`]: `wasi:http/outgoing-handler`, with one
//! request that may be sent ahead of the call that needs it.
//!
//! Pages are sequential: each needs the cursor the one before sent back. A
//! request sent only when the host asks for the next page waits behind the
//! mapping, the host's hand-off and every other sync on the runner's cores;
//! sent as soon as the cursor is read, its round trip overlaps all of that.
//! The host runs it in the background (`handle` returns a future), so the
//! answer is ready, or on its way, when the next `fetch-page` asks.
//!
//! No credentials here: the host adds them to every request it sends.

use crate::transport::{HttpRequest, HttpResponse, Method, Transport, TransportError};
use std::cell::RefCell;
use std::time::{Duration, Instant};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingResponse, Method as WasiMethod,
    OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::streams::StreamError;

/// `wasi:http` as the sync logic's transport.
pub struct WasiHttp;

/// The host enforces its own, stricter timeouts; this only keeps a dead
/// connection attempt from hanging the call when a host sets none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How old an answer sent ahead may be and still stand for a new request.
/// A run asks for its next page within milliseconds; an instance a host
/// keeps and calls again much later must read what the source holds then.
const AHEAD_FOR: Duration = Duration::from_secs(30);

/// How much of a body one read asks for; the host bounds the whole body.
const READ_CHUNK: u64 = 1 << 20;

/// A request sent before it was needed, and its answer to come.
struct Ahead {
    request: HttpRequest,
    response: FutureIncomingResponse,
    sent: Instant,
}

thread_local! {
    /// At most one request ahead: the next page of the read in progress.
    /// An instance runs one call at a time, so this is its state between calls.
    static AHEAD: RefCell<Option<Ahead>> = const { RefCell::new(None) };
}

impl Transport for WasiHttp {
    fn send(&mut self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        let response = match take_ahead(request) {
            Some(response) => response,
            None => start(request)?,
        };
        receive(&response)
    }

    fn send_ahead(&mut self, request: &HttpRequest) {
        // One that cannot be started is started again, and fails, when it is needed.
        if let Ok(response) = start(request) {
            let ahead = Ahead {
                request: request.clone(),
                response,
                sent: Instant::now(),
            };
            // A request ahead that is replaced was not needed; dropping it cancels it.
            AHEAD.with(|slot| slot.replace(Some(ahead)));
        }
    }
}

/// The answer sent ahead for `request`, if one was sent for an equal
/// request recently enough. Other requests (a page's association reads)
/// leave it in place for the page it was sent for.
fn take_ahead(request: &HttpRequest) -> Option<FutureIncomingResponse> {
    AHEAD.with(|slot| {
        let ahead = slot.borrow_mut().take_if(|a| a.request == *request)?;
        (ahead.sent.elapsed() <= AHEAD_FOR).then_some(ahead.response)
    })
}

/// Hands `request` to the host, which sends it in the background.
fn start(request: &HttpRequest) -> Result<FutureIncomingResponse, TransportError> {
    let uri: http::Uri = request
        .url
        .parse()
        .map_err(|e| TransportError::Failed(format!("the URL is not valid ({e})")))?;
    let mut headers = vec![("accept".to_owned(), b"application/json".to_vec())];
    if request.body.is_some() {
        headers.push(("content-type".to_owned(), b"application/json".to_vec()));
    }
    let headers = Fields::from_list(&headers)
        .map_err(|e| TransportError::Failed(format!("request headers refused ({e:?})")))?;
    let outgoing = OutgoingRequest::new(headers);
    let refused = |what: &str| TransportError::Failed(format!("the host refused the {what}"));
    outgoing
        .set_method(&match request.method {
            Method::Get => WasiMethod::Get,
            Method::Post => WasiMethod::Post,
            Method::Patch => WasiMethod::Patch,
        })
        .map_err(|()| refused("method"))?;
    let scheme = match uri.scheme_str() {
        Some("https") => Scheme::Https,
        Some("http") => Scheme::Http,
        _ => return Err(TransportError::Failed("the URL is not http(s)".into())),
    };
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| refused("scheme"))?;
    outgoing
        .set_authority(uri.authority().map(|a| a.as_str()))
        .map_err(|()| refused("authority"))?;
    outgoing
        .set_path_with_query(uri.path_and_query().map(|p| p.as_str()))
        .map_err(|()| refused("path"))?;
    let body = outgoing.body().map_err(|()| refused("body"))?;
    let options = RequestOptions::new();
    options
        .set_connect_timeout(Some(CONNECT_TIMEOUT.as_nanos() as u64))
        .map_err(|()| refused("connect timeout"))?;
    let response = outgoing_handler::handle(outgoing, Some(options)).map_err(transport_error)?;
    if let Some(bytes) = &request.body {
        let stream = body.write().map_err(|()| refused("body"))?;
        // `blocking-write-and-flush` takes at most 4096 bytes a call.
        for chunk in bytes.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(stream_error)?;
        }
    }
    OutgoingBody::finish(body, None).map_err(transport_error)?;
    Ok(response)
}

/// Waits for the answer and reads it whole.
fn receive(response: &FutureIncomingResponse) -> Result<HttpResponse, TransportError> {
    let answer = match response.get() {
        Some(answer) => answer,
        None => {
            response.subscribe().block();
            response
                .get()
                .ok_or_else(|| TransportError::Failed("no answer after waiting".into()))?
        }
    };
    let incoming = answer
        .map_err(|()| TransportError::Failed("the answer was already taken".into()))?
        .map_err(transport_error)?;
    read(&incoming)
}

fn read(incoming: &IncomingResponse) -> Result<HttpResponse, TransportError> {
    let status = incoming.status();
    let retry_after = incoming
        .headers()
        .get("retry-after")
        .first()
        .and_then(|v| String::from_utf8(v.clone()).ok());
    let body = incoming
        .consume()
        .map_err(|()| TransportError::Failed("the body was already taken".into()))?;
    let mut bytes = Vec::new();
    {
        // The stream is the body's child: it must go first.
        let stream = body
            .stream()
            .map_err(|()| TransportError::Failed("the body was already read".into()))?;
        loop {
            match stream.blocking_read(READ_CHUNK) {
                // The runner hands a body over as one chunk: kept as it
                // came, it is not copied a second time.
                Ok(chunk) if bytes.is_empty() => bytes = chunk,
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(error) => return Err(stream_error(error)),
            }
        }
    }
    drop(body);
    Ok(HttpResponse {
        status,
        retry_after,
        body: bytes,
    })
}

fn stream_error(error: StreamError) -> TransportError {
    match error {
        StreamError::Closed => TransportError::Failed("the stream closed early".into()),
        StreamError::LastOperationFailed(error) => {
            match wasip2::http::types::http_error_code(&error) {
                Some(code) => transport_error(code),
                None => TransportError::Failed(error.to_debug_string()),
            }
        }
    }
}

fn transport_error(code: ErrorCode) -> TransportError {
    match code {
        ErrorCode::HttpRequestDenied => {
            TransportError::Denied("the host denied the request (not an allowed host)".into())
        }
        code @ ErrorCode::HttpResponseBodySize(_) => TransportError::TooLarge(format!("{code:?}")),
        code => TransportError::Failed(format!("{code:?}")),
    }
}
