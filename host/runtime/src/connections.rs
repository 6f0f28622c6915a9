//! Connections to the API origins, kept open from one request to the next.
//!
//! A sync sends its requests one after another to one origin, and the
//! listing's cursor makes each page wait for the one before. A connection
//! per request puts a TCP round trip, and over TLS a full handshake with
//! its certificate checks, in front of every page. So each origin keeps the
//! HTTP/1.1 connections that ended cleanly, and the next request to it
//! takes one; one TLS client configuration (its roots, and the session
//! cache resumption needs) serves every connection.
//!
//! Kept connections bring two hazards that a connection per request hides:
//! - A server that writes an answer's head and body in two writes without
//!   `TCP_NODELAY` holds the second back, by Nagle's rule, until the first
//!   is acknowledged, and Linux delays that acknowledgement by up to 40 ms
//!   on a connection past its first exchange. So after every read that
//!   brings data the socket is asked to acknowledge at once
//!   (`TCP_QUICKACK`).
//! - A server may close a connection while it is idle here. A connection is
//!   kept [`IDLE_LIMIT`] at most (under the keep-alive timeouts servers
//!   commonly use), and a request that a closed connection gave back unsent
//!   goes out on a new one. A request that may have reached the server is
//!   sent again only if it is a `GET` (nothing twice: other requests fail,
//!   and the engine's retry loop decides).

use bytes::Bytes;
use http::uri::Scheme;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use wasmtime_wasi::runtime::AbortOnDropJoinHandle;
use wasmtime_wasi_http::Error as HttpError;
use wasmtime_wasi_http::io::TokioIo;

/// How long a connection may sit idle and still be used: under the 5 s
/// keep-alive timeout of Node's and Apache's servers, so a connection is
/// rarely taken just as its server closes it.
pub const IDLE_LIMIT: Duration = Duration::from_secs(4);

/// A connection's read buffer, fixed. hyper's adaptive one grows towards
/// 400 KiB on a connection that reads large answers, and on a kept one that
/// cost the runner 4-5 MiB more peak memory over a run of 40,000 records
/// read 2,000 to a page (the `bounds` tests). It also bounds an answer's
/// head, which hyper refuses past this size.
const READ_BUFFER: usize = 64 * 1024;

/// Idle connections kept per origin: enough for fifty portals syncing from
/// one API with a request ahead each.
const IDLE_PER_ORIGIN: usize = 128;

/// Timeouts for one exchange on a connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// To open the TCP connection and finish the TLS and HTTP handshakes.
    pub connect: Duration,
    /// From the request leaving to the answer's head.
    pub first_byte: Duration,
}

/// The process's connections: the runner's HTTP goes through [`shared`].
pub struct Connections {
    tls: tokio_rustls::TlsConnector,
    idle: Mutex<HashMap<Origin, Vec<Kept>>>,
}

/// Where a connection goes: scheme, host and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Origin {
    tls: bool,
    /// `host:port`, the port always given.
    authority: String,
}

/// An open HTTP/1.1 connection.
pub struct Connection {
    origin: Origin,
    sender: SendRequest<Full<Bytes>>,
    /// Drives the socket; the connection closes when this is dropped.
    _driver: AbortOnDropJoinHandle<()>,
    /// Whether it served a request before this one.
    reused: bool,
}

struct Kept {
    connection: Connection,
    since: Instant,
}

/// The process's connections, with the public web's roots of trust.
pub fn shared() -> &'static Connections {
    static SHARED: LazyLock<Connections> = LazyLock::new(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        Connections::new(roots)
    });
    &SHARED
}

impl Connections {
    /// Connections that trust servers whose certificates chain to `roots`.
    pub fn new(roots: rustls::RootCertStore) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Connections {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `request` (its URI absolute) and returns the answer's head and
    /// the connection, which goes back with [`Connections::keep`] once the
    /// body was read whole.
    pub async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
        timeouts: Timeouts,
    ) -> Result<(http::Response<Incoming>, Connection), HttpError> {
        let origin = origin(request.uri())?;
        let mut request = origin_form(request);
        loop {
            let mut connection = match self.take(&origin) {
                Some(mut kept) => {
                    // Its last answer was read whole; hyper marks it ready
                    // once it has seen that too, or closed if the server
                    // has gone.
                    let ready = tokio::time::timeout(timeouts.connect, kept.sender.ready());
                    match ready.await {
                        Ok(Ok(())) => kept,
                        _ => continue,
                    }
                }
                None => self.connect(&origin, timeouts.connect).await?,
            };
            let idempotent = request.method() == http::Method::GET;
            let copy = (connection.reused && idempotent).then(|| clone(&request));
            let answer = tokio::time::timeout(
                timeouts.first_byte,
                connection.sender.try_send_request(request),
            )
            .await;
            match answer {
                Ok(Ok(response)) => return Ok((response, connection)),
                Err(_) => return Err(HttpError::ConnectionReadTimeout),
                Ok(Err(mut failed)) => {
                    let unsent = failed.take_message();
                    let error = failed.into_error();
                    match unsent.or(copy) {
                        // A kept connection that the server closed: again,
                        // on another (a new one, at the latest).
                        Some(again) if connection.reused => {
                            tracing::debug!("a kept connection failed ({error}); sending again");
                            request = again;
                        }
                        _ => return Err(error.into()),
                    }
                }
            }
        }
    }

    /// Keeps `connection` for the origin's next request, if it can take one.
    pub fn keep(&self, mut connection: Connection) {
        if connection.sender.is_closed() {
            return;
        }
        connection.reused = true;
        let mut idle = self.idle.lock().expect("connections lock");
        let kept = idle.entry(connection.origin.clone()).or_default();
        if kept.len() < IDLE_PER_ORIGIN {
            kept.push(Kept {
                connection,
                since: Instant::now(),
            });
        }
    }

    /// The most recently kept open connection to `origin`; older ones past
    /// [`IDLE_LIMIT`] or closed by their server are dropped on the way.
    fn take(&self, origin: &Origin) -> Option<Connection> {
        let mut idle = self.idle.lock().expect("connections lock");
        let kept = idle.get_mut(origin)?;
        let now = Instant::now();
        kept.retain(|k| {
            now.duration_since(k.since) < IDLE_LIMIT && !k.connection.sender.is_closed()
        });
        kept.pop().map(|k| k.connection)
    }

    async fn connect(&self, origin: &Origin, limit: Duration) -> Result<Connection, HttpError> {
        let open = async {
            let tcp = TcpStream::connect(&origin.authority)
                .await
                .map_err(HttpError::Connect)?;
            // Requests are written whole; nothing is gained by holding the
            // last segment back.
            tcp.set_nodelay(true).map_err(HttpError::Connect)?;
            let tcp = QuickAck(tcp);
            if origin.tls {
                let name = server_name(&origin.authority)?;
                let tls = self.tls.connect(name, tcp).await.map_err(HttpError::Tls)?;
                handshake(origin, tls).await
            } else {
                handshake(origin, tcp).await
            }
        };
        match tokio::time::timeout(limit, open).await {
            Ok(connection) => connection,
            Err(_) => Err(HttpError::ConnectionTimeout),
        }
    }
}

async fn handshake<S>(origin: &Origin, stream: S) -> Result<Connection, HttpError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .read_buf_exact_size(Some(READ_BUFFER))
        .handshake(TokioIo::new(stream))
        .await?;
    let driver = wasmtime_wasi::runtime::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("connection ended with {e}");
        }
    });
    Ok(Connection {
        origin: origin.clone(),
        sender,
        _driver: driver,
        reused: false,
    })
}

fn origin(uri: &http::Uri) -> Result<Origin, HttpError> {
    let authority = uri.authority().ok_or(HttpError::HttpRequestUriInvalid)?;
    let tls = match uri.scheme() {
        Some(s) if *s == Scheme::HTTPS => true,
        Some(s) if *s == Scheme::HTTP => false,
        _ => return Err(HttpError::HttpRequestUriInvalid),
    };
    let authority = match authority.port() {
        Some(_) => authority.to_string(),
        None => format!("{}:{}", authority.host(), if tls { 443 } else { 80 }),
    };
    Ok(Origin { tls, authority })
}

/// The request as an origin server takes it: `/path?query`, the host in
/// the `Host` header (hyper adds none of its own).
fn origin_form(mut request: http::Request<Full<Bytes>>) -> http::Request<Full<Bytes>> {
    if let Some(authority) = request.uri().authority()
        && !request.headers().contains_key(http::header::HOST)
        && let Ok(host) = http::HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(http::header::HOST, host);
    }
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .expect("a path and query is a URI");
    *request.uri_mut() = path;
    request
}

fn clone(request: &http::Request<Full<Bytes>>) -> http::Request<Full<Bytes>> {
    let mut copy = http::Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// The TLS name of `host:port`: a DNS name or an IP address.
fn server_name(authority: &str) -> Result<rustls::pki_types::ServerName<'static>, HttpError> {
    use rustls::pki_types::ServerName;
    if let Ok(address) = authority.parse::<std::net::SocketAddr>() {
        return Ok(ServerName::from(address.ip()));
    }
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host);
    let name = ServerName::try_from(host).map_err(|_| HttpError::HttpRequestUriInvalid)?;
    Ok(name.to_owned())
}

/// A TCP stream that acknowledges what it reads at once (see the module's
/// doc: a server's Nagle waits for that acknowledgement).
struct QuickAck(TcpStream);

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.0).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            acknowledge_now(&self.0);
        }
        read
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn acknowledge_now(tcp: &TcpStream) {
    // Only a missed speed-up if it fails.
    let _ = socket2::SockRef::from(tcp).set_tcp_quickack(true);
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn acknowledge_now(_: &TcpStream) {}

impl AsyncWrite for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// What the test server does with the `n`th request on a connection.
    #[derive(Clone, Copy)]
    enum Then {
        /// Answers, keeping the connection.
        Answer,
        /// Answers, then closes the connection.
        AnswerAndClose,
        /// Closes the connection without answering.
        Drop,
        /// Answers with a head larger than the read buffer.
        HugeHead,
    }

    #[derive(Default)]
    struct Seen {
        connections: AtomicUsize,
        requests: AtomicUsize,
        posts: AtomicUsize,
    }

    const TIMEOUTS: Timeouts = Timeouts {
        connect: Duration::from_secs(10),
        first_byte: Duration::from_secs(10),
    };

    /// A server on loopback that, like tiny_http, writes an answer's head
    /// and body in two writes without `TCP_NODELAY`; over TLS when given
    /// a configuration.
    fn serve(
        tls: Option<Arc<rustls::ServerConfig>>,
        then: fn(usize) -> Then,
    ) -> (std::net::SocketAddr, Arc<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let counts = seen.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { return };
                counts.connections.fetch_add(1, Ordering::SeqCst);
                let (counts, tls) = (counts.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    Some(config) => {
                        let session = rustls::ServerConnection::new(config).unwrap();
                        converse(rustls::StreamOwned::new(session, tcp), &counts, then)
                    }
                    None => converse(tcp, &counts, then),
                });
            }
        });
        (address, seen)
    }

    fn converse(stream: impl Read + Write, seen: &Seen, then: fn(usize) -> Then) {
        let mut stream = BufReader::new(stream);
        for n in 0.. {
            let (mut line, mut length, mut post) = (String::new(), 0, false);
            loop {
                line.clear();
                if stream.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                post |= line.starts_with("POST ");
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            stream.read_exact(&mut body).unwrap();
            seen.requests.fetch_add(1, Ordering::SeqCst);
            if post {
                seen.posts.fetch_add(1, Ordering::SeqCst);
            }
            let then = then(n);
            if matches!(then, Then::Drop) {
                return;
            }
            let stream = stream.get_mut();
            if matches!(then, Then::HugeHead) {
                let pad = "a".repeat(READ_BUFFER + 1024);
                let head =
                    format!("HTTP/1.1 200 OK\r\nx-pad: {pad}\r\ncontent-length: 2\r\n\r\nok");
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.flush();
                continue;
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n");
            let _ = stream.flush();
            let _ = stream.write_all(b"ok");
            let _ = stream.flush();
            if matches!(then, Then::AnswerAndClose) {
                return;
            }
        }
    }

    /// One request through `connections`, its body read whole and its
    /// connection kept, as the runner's `exchange` does.
    fn exchange(connections: &Connections, method: &str, url: &str) -> Result<String, HttpError> {
        let request = http::Request::builder()
            .method(method)
            .uri(url)
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        wasmtime_wasi::runtime::in_tokio(async {
            let (response, connection) = connections.send(request, TIMEOUTS).await?;
            let body = response.into_body().collect().await?.to_bytes();
            connections.keep(connection);
            Ok(String::from_utf8(body.to_vec()).unwrap())
        })
    }

    fn plain() -> Connections {
        Connections::new(rustls::RootCertStore::empty())
    }

    #[test]
    fn requests_to_one_origin_share_one_connection() {
        let (address, seen) = serve(None, |_| Then::Answer);
        let connections = plain();
        for _ in 0..3 {
            assert_eq!(
                exchange(&connections, "GET", &format!("http://{address}/a")).unwrap(),
                "ok"
            );
        }
        assert_eq!(
            exchange(&connections, "POST", &format!("http://{address}/b")).unwrap(),
            "ok"
        );
        assert_eq!(seen.requests.load(Ordering::SeqCst), 4);
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_connection_its_server_closed_is_replaced() {
        let (address, seen) = serve(None, |_| Then::AnswerAndClose);
        let connections = plain();
        for method in ["GET", "POST", "GET"] {
            let url = format!("http://{address}/a");
            assert_eq!(exchange(&connections, method, &url).unwrap(), "ok");
        }
        assert_eq!(seen.requests.load(Ordering::SeqCst), 3);
        assert_eq!(seen.connections.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_get_a_kept_connection_lost_is_sent_again_on_a_new_one() {
        // The first request on a connection is answered, the second dropped:
        // as a server that closes an idle connection while a request is on
        // its way.
        let (address, seen) = serve(None, |n| if n == 0 { Then::Answer } else { Then::Drop });
        let connections = plain();
        let url = format!("http://{address}/a");
        assert_eq!(exchange(&connections, "GET", &url).unwrap(), "ok");
        assert_eq!(exchange(&connections, "GET", &url).unwrap(), "ok");
        assert_eq!(seen.requests.load(Ordering::SeqCst), 3);
        assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_post_a_kept_connection_lost_is_not_sent_twice() {
        let (address, seen) = serve(None, |n| if n == 0 { Then::Answer } else { Then::Drop });
        let connections = plain();
        let url = format!("http://{address}/a");
        assert_eq!(exchange(&connections, "GET", &url).unwrap(), "ok");
        let lost = exchange(&connections, "POST", &url);
        assert!(lost.is_err(), "{lost:?}");
        assert_eq!(seen.posts.load(Ordering::SeqCst), 1);
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_answer_whose_head_passes_the_read_buffer_is_refused() {
        let (address, _) = serve(None, |_| Then::HugeHead);
        let refused = exchange(&plain(), "GET", &format!("http://{address}/a"));
        assert!(refused.is_err(), "{refused:?}");
    }

    fn test_server_tls() -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let certificate =
            CertificateDer::from(include_bytes!("../testdata/tls/server.der").to_vec());
        let key =
            PrivatePkcs8KeyDer::from(include_bytes!("../testdata/tls/server.key.der").to_vec());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certificate], PrivateKeyDer::from(key))
            .unwrap();
        Arc::new(config)
    }

    #[test]
    fn tls_connections_are_verified_and_kept() {
        let (address, seen) = serve(Some(test_server_tls()), |_| Then::Answer);
        let mut roots = rustls::RootCertStore::empty();
        let ca = rustls::pki_types::CertificateDer::from(
            include_bytes!("../testdata/tls/ca.der").to_vec(),
        );
        roots.add(ca).unwrap();
        let trusting = Connections::new(roots);
        let url = format!("https://localhost:{}/a", address.port());
        for _ in 0..3 {
            assert_eq!(exchange(&trusting, "GET", &url).unwrap(), "ok");
        }
        assert_eq!(seen.requests.load(Ordering::SeqCst), 3);
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1);

        // The public web's roots do not know the test authority.
        let refused = exchange(shared(), "GET", &url);
        assert!(matches!(refused, Err(HttpError::Tls(_))), "{refused:?}");
        assert_eq!(seen.requests.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn origins_name_their_port_and_requests_go_in_origin_form() {
        let key = |url: &str| origin(&url.parse().unwrap()).unwrap();
        assert_eq!(
            key("https://api.hubapi.com/x").authority,
            "api.hubapi.com:443"
        );
        assert_eq!(key("http://127.0.0.1:8080/x").authority, "127.0.0.1:8080");
        assert!(key("https://api.hubapi.com/x").tls);
        assert!(origin(&"/relative".parse().unwrap()).is_err());
        let request =
            http::Request::get("https://api.hubapi.com/crm/v3/objects/contacts?limit=100")
                .body(Full::new(Bytes::new()))
                .unwrap();
        let request = origin_form(request);
        assert_eq!(request.uri(), "/crm/v3/objects/contacts?limit=100");
        assert_eq!(request.headers()[http::header::HOST], "api.hubapi.com");
    }
}
