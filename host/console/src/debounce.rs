//! Turning a burst of webhook events into few runs: portals that changed
//! are collected, and a short while after the first of a burst each is
//! handed on once. A burst of a thousand deliveries in a second so gives one
//! trigger, or two when it straddles the window; the trigger itself is a
//! flag on the sync, so triggers landing while a run goes add at most one
//! run after it.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

/// How long after the first event of a burst its portals are handed on.
pub const WINDOW: Duration = Duration::from_secs(1);

/// Portals waiting to be triggered.
#[derive(Debug, Default)]
pub struct Debouncer {
    pending: Mutex<BTreeSet<u64>>,
    wake: Notify,
}

impl Debouncer {
    /// Notes that `portals` changed.
    pub fn push(&self, portals: impl IntoIterator<Item = u64>) {
        let mut pending = self.pending.lock().expect("debouncer lock");
        let before = pending.len();
        pending.extend(portals);
        if pending.len() > before {
            self.wake.notify_one();
        }
    }

    /// Waits for a change, lets `window` pass so the rest of its burst
    /// joins it, and takes every portal noted meanwhile.
    pub async fn next_batch(&self, window: Duration) -> BTreeSet<u64> {
        loop {
            if !self.pending.lock().expect("debouncer lock").is_empty() {
                tokio::time::sleep(window).await;
                return std::mem::take(&mut *self.pending.lock().expect("debouncer lock"));
            }
            self.wake.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(flavor = "current_thread")]
    async fn a_burst_is_handed_on_once() {
        let debouncer = Arc::new(Debouncer::default());
        let pushing = debouncer.clone();
        let burst = tokio::spawn(async move {
            for i in 0..1_000u64 {
                pushing.push([62515, 7 + i % 2]);
                if i % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        let first = debouncer.next_batch(Duration::from_millis(200)).await;
        burst.await.unwrap();
        assert_eq!(first, BTreeSet::from([7, 8, 62515]));
        // Nothing more arrived: the next batch waits for the next change.
        let later = tokio::time::timeout(
            Duration::from_millis(300),
            debouncer.next_batch(Duration::from_millis(10)),
        )
        .await;
        assert!(later.is_err(), "no change, no batch");
        debouncer.push([9]);
        assert_eq!(
            debouncer.next_batch(Duration::from_millis(10)).await,
            BTreeSet::from([9])
        );
    }
}
