//! Pages over TLS: the runner's client on a kept connection against a new
//! connection (and handshake) per request, as it was until connections were
//! kept. The server is a rustls one on loopback with the runtime's test
//! certificate, so what differs is the client's and server's work per page;
//! the round trips a real API adds for TCP and TLS on a new connection
//! (two a page) are not on loopback and not in these figures.

use crate::scale::Figure;
use anyhow::Result;
use bytes::Bytes;
use crmsync_host::connections::{Connections, Timeouts};
use http_body_util::{BodyExt, Full};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// About a HubSpot page of 100 contacts with the default properties.
const PAGE_BYTES: usize = 48 * 1024;

const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(10),
    first_byte: Duration::from_secs(10),
};

/// How the client gets its connection for each page.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// The runner's way: a kept connection.
    Kept,
    /// A new connection each, from one client configuration (its session
    /// cache lets the handshake resume).
    New,
    /// As the runner did before connections were kept (wasmtime-wasi-http's
    /// sender): a new connection, and a new configuration with the public
    /// web's roots, for every request; a full handshake each.
    AsBefore,
}

/// `requests` GETs of a page one after another, in each [`Mode`].
pub fn pages(requests: u32, figures: &mut Vec<Figure>) -> Result<()> {
    println!("\npages over TLS on loopback: {requests} requests, a kept connection vs one each");
    let server = Server::start()?;
    let url = format!("https://localhost:{}/crm/v3/objects/contacts", server.port);
    let shared = Connections::new(roots(false)?);
    let mut rounds = Vec::new();
    for mode in [Mode::Kept, Mode::New, Mode::AsBefore] {
        let page = || match mode {
            Mode::Kept => exchange(&shared, &url, true),
            Mode::New => exchange(&shared, &url, false),
            Mode::AsBefore => exchange(&Connections::new(roots(true)?), &url, false),
        };
        // One page first: a connection kept, a session cached.
        page()?;
        let cpu = process_cpu();
        let served = server.cpu.load(Ordering::Relaxed);
        let started = Instant::now();
        for _ in 0..requests {
            page()?;
        }
        let wall = started.elapsed() / requests;
        let server_cpu = Duration::from_nanos(server.cpu.load(Ordering::Relaxed) - served);
        let client_cpu = (process_cpu() - cpu).saturating_sub(server_cpu) / requests;
        let server_cpu = server_cpu / requests;
        let name = match mode {
            Mode::Kept => "kept connection",
            Mode::New => "new connection each, session resumed",
            Mode::AsBefore => "new connection and configuration each (before)",
        };
        println!(
            "  {name}: {:.0} us a page, CPU {:.0} us client + {:.0} us server",
            us(wall),
            us(client_cpu),
            us(server_cpu)
        );
        rounds.push((wall, client_cpu, server_cpu));
    }
    let (kept, new, before) = (rounds[0], rounds[1], rounds[2]);
    let times = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64();
    figures.push((
        "TLS page (48 KiB), kept / resumed / as before: wall".into(),
        format!(
            "{:.0} / {:.0} / {:.0} us a page (before {:.1}x kept)",
            us(kept.0),
            us(new.0),
            us(before.0),
            times(kept.0, before.0)
        ),
        String::new(),
        None,
    ));
    figures.push((
        "TLS page (48 KiB), kept / resumed / as before: client CPU".into(),
        format!(
            "{:.0} / {:.0} / {:.0} us a page (before {:.1}x kept; server {:.0} / {:.0} / {:.0} us)",
            us(kept.1),
            us(new.1),
            us(before.1),
            times(kept.1, before.1),
            us(kept.2),
            us(new.2),
            us(before.2)
        ),
        String::new(),
        None,
    ));
    Ok(())
}

/// The test authority's root, with the public web's when `public`.
fn roots(public: bool) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    if public {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    roots.add(rustls::pki_types::CertificateDer::from(
        include_bytes!("../../host/runtime/testdata/tls/ca.der").to_vec(),
    ))?;
    Ok(roots)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One GET read whole; its connection kept or dropped.
fn exchange(connections: &Connections, url: &str, keep: bool) -> Result<()> {
    let request = http::Request::get(url).body(Full::new(Bytes::new()))?;
    let body = wasmtime_wasi::runtime::in_tokio(async {
        let (response, connection) = connections.send(request, TIMEOUTS).await?;
        let body = response.into_body().collect().await?.to_bytes();
        if keep {
            connections.keep(connection);
        }
        Ok::<_, anyhow::Error>(body)
    })?;
    anyhow::ensure!(
        body.len() == PAGE_BYTES,
        "a short page: {} bytes",
        body.len()
    );
    Ok(())
}

/// User and system CPU of this process.
fn process_cpu() -> Duration {
    rusage(libc::RUSAGE_SELF)
}

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: getrusage writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(who, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// A TLS server answering every request with a page, each connection on a
/// thread that adds the CPU it spent to `cpu`.
struct Server {
    port: u16,
    /// Nanoseconds of CPU the server's threads spent.
    cpu: Arc<AtomicU64>,
}

impl Server {
    fn start() -> Result<Server> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let certificate = CertificateDer::from(
            include_bytes!("../../host/runtime/testdata/tls/server.der").to_vec(),
        );
        let key = PrivatePkcs8KeyDer::from(
            include_bytes!("../../host/runtime/testdata/tls/server.key.der").to_vec(),
        );
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(vec![certificate], PrivateKeyDer::from(key))?,
        );
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let cpu = Arc::new(AtomicU64::new(0));
        let spent = cpu.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { return };
                let _ = tcp.set_nodelay(true);
                let (config, spent) = (config.clone(), spent.clone());
                std::thread::spawn(move || {
                    let Ok(session) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let mut stream = BufReader::new(rustls::StreamOwned::new(session, tcp));
                    let mut counted = Duration::ZERO;
                    let page = vec![b'x'; PAGE_BYTES];
                    let mut line = String::new();
                    loop {
                        // A GET: its head, up to the blank line.
                        line.clear();
                        match stream.read_line(&mut line) {
                            Ok(0) | Err(_) => break,
                            Ok(_) if line != "\r\n" => continue,
                            Ok(_) => {}
                        }
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {PAGE_BYTES}\r\n\r\n"
                        );
                        let out = stream.get_mut();
                        if out.write_all(head.as_bytes()).is_err()
                            || out.write_all(&page).is_err()
                            || out.flush().is_err()
                        {
                            break;
                        }
                        let now = rusage(libc::RUSAGE_THREAD);
                        spent.fetch_add((now - counted).as_nanos() as u64, Ordering::Relaxed);
                        counted = now;
                    }
                    let mut rest = Vec::new();
                    let _ = stream.read_to_end(&mut rest);
                    let now = rusage(libc::RUSAGE_THREAD);
                    spent.fetch_add((now - counted).as_nanos() as u64, Ordering::Relaxed);
                });
            }
        });
        Ok(Server { port, cpu })
    }
}
