//! A loopback HTTP server's lifecycle: bound to an ephemeral port on
//! 127.0.0.1, answering on its own thread, stopped when dropped. The API
//! servers (`hubspot_server`, `salesforce_server`) supply only the handler.

use std::sync::Arc;
use std::thread::JoinHandle;
use tiny_http::Server;

/// A running loopback server.
pub struct Loopback {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    server: Arc<Server>,
    thread: Option<JoinHandle<()>>,
}

impl Loopback {
    /// Starts answering every request with `handle`.
    pub fn start(handle: impl Fn(tiny_http::Request) + Send + 'static) -> Self {
        let server = Arc::new(Server::http("127.0.0.1:0").expect("loopback server binds"));
        let port = server.server_addr().to_ip().expect("an IP address").port();
        let thread = {
            let server = server.clone();
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    handle(request);
                }
            })
        };
        Loopback {
            base_url: format!("http://127.0.0.1:{port}"),
            server,
            thread: Some(thread),
        }
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
