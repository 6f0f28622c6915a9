//! `crmsync serve`: the daemon and its console in one process. The daemon
//! runs the syncs on their schedules and tells the console of every run;
//! the console serves pages, the API, metrics and HubSpot's webhooks on its
//! own thread. A stop (SIGTERM, Ctrl-C) drains both: runs in flight finish
//! their pages, then the server closes.

use crate::daemon::run_observed;
use crate::runtime::Runtime;
use crate::sync::SyncOptions;
use anyhow::Result;
use crmsync_console::catalog::Catalog;
use crmsync_console::live::Live;
use crmsync_console::{Console, Settings, serve};
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Runs the syncs of `paths` (as [`crate::daemon::run_daemon`] does) and
/// the console on `listener` until `options.stop` is set.
pub fn run_serve(
    runtime: Arc<Runtime>,
    paths: &[PathBuf],
    options: &SyncOptions,
    concurrency: usize,
    settings: Settings,
    listener: TcpListener,
    out: &mut dyn Write,
) -> Result<()> {
    let catalog = Catalog::load(paths)?;
    let live = Arc::new(Live::default());
    let address = listener.local_addr()?;
    let webhooks = settings.webhook_secret.is_some();
    let console = Arc::new(Console::new(
        settings,
        catalog,
        live.clone(),
        runtime.clone(),
    )?);
    writeln!(
        out,
        "crmsync console on http://{address}{}",
        if webhooks {
            format!(
                "; HubSpot webhooks at {}/webhooks/hubspot",
                console.public_url
            )
        } else {
            String::new()
        }
    )?;
    let stop = options.stop.clone();
    let server = std::thread::Builder::new()
        .name("console".into())
        .spawn(move || {
            let served = serve(listener, console, stop.clone());
            // A server that cannot go on stops the daemon too: a console
            // nobody can reach should not look like one that runs.
            stop.store(true, Ordering::Relaxed);
            served
        })?;
    let ran = run_observed(&runtime, paths, options, concurrency, live, out);
    options.stop.store(true, Ordering::Relaxed);
    let served = server
        .join()
        .map_err(|_| anyhow::anyhow!("the console's server panicked"))?;
    ran?;
    served?;
    Ok(())
}
