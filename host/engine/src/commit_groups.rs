//! Several pages to a commit while the applier is behind its reader.
//!
//! A pass's reader fetches and maps pages; its applier matches, writes and
//! checkpoints them (R3). Every commit has a fixed price: the store writes
//! each b-tree page the transaction dirtied to its log, and a page of new
//! contacts dirties index leaves all over the store. When pages wait for the
//! applier, committing several at once pays that price once; when the
//! applier waits for pages (a slow or rate-limited source), each page commits
//! as soon as it is applied, so nothing applied waits on the network to be
//! committed. Either way a page's writes and its checkpoint commit together:
//! a crash resumes after the last commit and creates nobody twice.

use crate::retry::Stop;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

/// How long one transaction of several pages may stay open: it holds the
/// store's write lock, and a failure rolls all of it back.
pub(crate) const MOST_OPEN: Duration = Duration::from_millis(200);

/// What applies pages in transactions: the pass's applier, or a test's.
pub(crate) trait PageWriter {
    /// A page as the reader sends it.
    type Page;
    /// Opens a transaction.
    fn begin(&mut self) -> Result<(), Stop>;
    /// Applies `page` and its checkpoint in the open transaction; `true`
    /// when it was the read's last page.
    fn apply(&mut self, page: Self::Page) -> Result<bool, Stop>;
    /// Commits the open transaction. On failure the store has rolled it back.
    fn commit(&mut self) -> Result<(), Stop>;
    /// Abandons the open transaction after a page failed.
    fn roll_back(&mut self);
}

/// Applies the pages `received` until the reader hangs up or a page fails.
/// Up to `most` pages share a transaction while more are waiting, for at
/// most `most_open`; with none waiting, what is applied commits before the
/// writer waits. The read's last page always commits.
pub(crate) fn apply_in_groups<W: PageWriter>(
    writer: &mut W,
    received: &Receiver<W::Page>,
    most: usize,
    most_open: Duration,
) -> Result<(), Stop> {
    // When the open transaction began and how many pages it holds.
    let mut open: Option<(Instant, usize)> = None;
    loop {
        let page = match received.try_recv() {
            Ok(page) => page,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                if open.take().is_some() {
                    writer.commit()?;
                }
                match received.recv() {
                    Ok(page) => page,
                    Err(_) => break,
                }
            }
        };
        let (began, pages) = match &mut open {
            Some(group) => group,
            None => {
                writer.begin()?;
                open.insert((Instant::now(), 0))
            }
        };
        *pages += 1;
        let full = *pages >= most || began.elapsed() >= most_open;
        let last = match writer.apply(page) {
            Ok(last) => last,
            Err(stop) => {
                writer.roll_back();
                return Err(stop);
            }
        };
        if full || last {
            open = None;
            writer.commit()?;
        }
    }
    if open.is_some() {
        writer.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{Sender, channel, sync_channel};

    /// A writer that logs what it is asked to do; page `fail` fails, and
    /// each commit is told to `committed`.
    #[derive(Default)]
    struct Log {
        calls: Vec<String>,
        fail: Option<u32>,
        committed: Option<Sender<()>>,
    }

    impl PageWriter for Log {
        type Page = (u32, bool);
        fn begin(&mut self) -> Result<(), Stop> {
            self.calls.push("begin".into());
            Ok(())
        }
        fn apply(&mut self, (page, last): (u32, bool)) -> Result<bool, Stop> {
            if self.fail == Some(page) {
                return Err(Stop::Internal(anyhow::anyhow!("page {page} failed")));
            }
            self.calls.push(format!("{page}"));
            Ok(last)
        }
        fn commit(&mut self) -> Result<(), Stop> {
            self.calls.push("commit".into());
            if let Some(committed) = &self.committed {
                committed.send(()).unwrap();
            }
            Ok(())
        }
        fn roll_back(&mut self) {
            self.calls.push("roll back".into());
        }
    }

    /// Pages 1..=n, the last marked as such, all waiting before the writer starts.
    fn waiting(n: u32) -> Receiver<(u32, bool)> {
        let (send, received) = sync_channel(n as usize);
        for page in 1..=n {
            send.send((page, page == n)).unwrap();
        }
        received
    }

    fn run(log: &mut Log, received: &Receiver<(u32, bool)>, most: usize) -> Result<(), Stop> {
        apply_in_groups(log, received, most, Duration::from_secs(3600))
    }

    #[test]
    fn waiting_pages_share_commits_of_at_most_the_stores_number() {
        let mut log = Log::default();
        assert!(run(&mut log, &waiting(5), 2).is_ok());
        assert_eq!(
            log.calls.join(" "),
            "begin 1 2 commit begin 3 4 commit begin 5 commit"
        );
    }

    #[test]
    fn one_page_to_a_transaction_commits_each_page() {
        let mut log = Log::default();
        assert!(run(&mut log, &waiting(3), 1).is_ok());
        assert_eq!(
            log.calls.join(" "),
            "begin 1 commit begin 2 commit begin 3 commit"
        );
    }

    #[test]
    fn a_transaction_open_past_its_time_commits_with_its_next_page() {
        let mut log = Log::default();
        assert!(apply_in_groups(&mut log, &waiting(3), 16, Duration::ZERO).is_ok());
        assert_eq!(
            log.calls.join(" "),
            "begin 1 commit begin 2 commit begin 3 commit"
        );
    }

    #[test]
    fn caught_up_with_the_reader_the_writer_commits_before_it_waits() {
        // The reader sends page 2 only once page 1 is committed: without the
        // commit before waiting, this would wait forever.
        let (send, received) = channel();
        let (committed, commits) = channel();
        let reader = std::thread::spawn(move || {
            send.send((1, false)).unwrap();
            commits.recv().unwrap();
            send.send((2, true)).unwrap();
            commits.recv().unwrap();
        });
        let mut log = Log {
            committed: Some(committed),
            ..Log::default()
        };
        assert!(run(&mut log, &received, 16).is_ok());
        reader.join().unwrap();
        assert_eq!(log.calls.join(" "), "begin 1 commit begin 2 commit");
    }

    #[test]
    fn a_reader_that_stops_early_leaves_what_was_applied_committed() {
        let (send, received) = sync_channel(2);
        send.send((1, false)).unwrap();
        send.send((2, false)).unwrap();
        drop(send);
        let mut log = Log::default();
        assert!(run(&mut log, &received, 16).is_ok());
        assert_eq!(log.calls.join(" "), "begin 1 2 commit");
    }

    #[test]
    fn a_failed_page_rolls_back_its_transaction_and_stops() {
        let mut log = Log {
            fail: Some(4),
            ..Log::default()
        };
        assert!(matches!(
            run(&mut log, &waiting(6), 2),
            Err(Stop::Internal(_))
        ));
        assert_eq!(log.calls.join(" "), "begin 1 2 commit begin 3 roll back");
    }
}
