//! A loopback HTTP server's lifecycle and state: bound to an ephemeral port
//! on 127.0.0.1, answering on its own thread from a state the test arranges,
//! stopped when dropped. The API servers (`hubspot_server`,
//! `salesforce_server`) supply only the state and the handler.

use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use tiny_http::Server;

/// A running loopback server over a state `S`.
pub struct Loopback<S> {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    state: Arc<Mutex<S>>,
    server: Arc<Server>,
    thread: Option<JoinHandle<()>>,
}

impl<S: Send + 'static> Loopback<S> {
    /// Starts answering every request with `handle` over `state`.
    pub fn start(state: S, handle: fn(&Mutex<S>, tiny_http::Request)) -> Self {
        let server = Arc::new(Server::http("127.0.0.1:0").expect("loopback server binds"));
        let port = server.server_addr().to_ip().expect("an IP address").port();
        let state = Arc::new(Mutex::new(state));
        let thread = {
            let server = server.clone();
            let state = state.clone();
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    handle(&state, request);
                }
            })
        };
        Loopback {
            base_url: format!("http://127.0.0.1:{port}"),
            state,
            server,
            thread: Some(thread),
        }
    }

    /// The server's state, to arrange or inspect.
    pub fn state(&self) -> MutexGuard<'_, S> {
        self.state.lock().expect("server state")
    }
}

impl<S> Drop for Loopback<S> {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
