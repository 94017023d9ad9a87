//! Files being fetched in the background for clients (an on-demand edge, a damaged file), and
//! which of their chunks have landed: verified against the signed chunk list and written to the
//! file's partial copy. A client asking for a range of such a file is answered from the partial
//! copy as soon as the fetch has landed the range (the edge relays it), instead of the edge
//! fetching the range from upstream once more for each client: a site's agents installing a
//! package their edge does not hold yet cost the link one copy of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Landings(Mutex<HashMap<[u8; 32], Arc<Landing>>>);

#[derive(Debug)]
struct Landing {
    landed: Mutex<Vec<bool>>,
    /// Woken at every range landed, and when the fetch ends.
    changed: Notify,
}

/// How a wait for a range ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Wait {
    /// Every chunk of the range is in the partial copy.
    Landed,
    /// No fetch of the file is running (never was, finished, or failed).
    NotFetching,
    /// The fetch landed nothing for the time given: it is stuck, or busy far from the range.
    Stalled,
}

impl Landings {
    fn get(&self, file: &[u8; 32]) -> Option<Arc<Landing>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(file).cloned()
    }

    /// A background fetch of `file` (of `chunks` chunks) starts: nothing landed yet.
    pub fn expect(&self, file: [u8; 32], chunks: usize) {
        let landing = Landing { landed: Mutex::new(vec![false; chunks]), changed: Notify::new() };
        self.0.lock().unwrap_or_else(|p| p.into_inner()).entry(file).or_insert_with(|| Arc::new(landing));
    }

    /// Chunks `first..first + count` of `file` are verified and written, when `file` is
    /// expected (otherwise nothing to do).
    pub fn land(&self, file: &[u8; 32], first: usize, count: usize) {
        let Some(landing) = self.get(file) else { return };
        {
            let mut landed = landing.landed.lock().unwrap_or_else(|p| p.into_inner());
            let end = (first + count).min(landed.len());
            landed[first.min(end)..end].fill(true);
        }
        landing.changed.notify_waiters();
    }

    /// The fetch of `file` ended (the file is in place, or the fetch failed).
    pub fn end(&self, file: &[u8; 32]) {
        let removed = self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(file);
        if let Some(landing) = removed {
            landing.changed.notify_waiters();
        }
    }

    /// True while a background fetch of `file` runs.
    pub fn fetching(&self, file: &[u8; 32]) -> bool {
        self.get(file).is_some()
    }

    /// Waits until chunks `first..last` of `file` have landed, as long as its fetch runs and
    /// lands something at least every `stall`, and for `within` at most (a client far ahead of
    /// the fetch on a slow link is better served by a fetch of its own than by a timeout).
    pub async fn wait(&self, file: &[u8; 32], first: usize, last: usize, stall: Duration, within: Duration) -> Wait {
        let end = tokio::time::Instant::now() + within;
        loop {
            let Some(landing) = self.get(file) else { return Wait::NotFetching };
            let changed = landing.changed.notified();
            tokio::pin!(changed);
            // Registered before looking, so a change between the look and the wait wakes it.
            changed.as_mut().enable();
            {
                let landed = landing.landed.lock().unwrap_or_else(|p| p.into_inner());
                if landed.get(first..last).is_some_and(|run| run.iter().all(|l| *l)) {
                    return Wait::Landed;
                }
            }
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || tokio::time::timeout(stall.min(left), changed).await.is_err() {
                return Wait::Stalled;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: [u8; 32] = [5; 32];
    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_wait_ends_when_its_chunks_land_or_the_fetch_ends_or_stalls() {
        let landings = Arc::new(Landings::default());
        assert_eq!(landings.wait(&FILE, 0, 1, Duration::from_secs(5), LONG).await, Wait::NotFetching);
        landings.expect(FILE, 10);
        let waiter = {
            let landings = landings.clone();
            tokio::spawn(async move { landings.wait(&FILE, 2, 6, Duration::from_secs(30), LONG).await })
        };
        tokio::task::yield_now().await;
        landings.land(&FILE, 0, 4);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "chunks 4 and 5 have not landed");
        landings.land(&FILE, 4, 2);
        assert_eq!(waiter.await.unwrap(), Wait::Landed);

        let waiter = {
            let landings = landings.clone();
            tokio::spawn(async move { landings.wait(&FILE, 8, 10, Duration::from_secs(30), LONG).await })
        };
        tokio::task::yield_now().await;
        landings.end(&FILE);
        assert_eq!(waiter.await.unwrap(), Wait::NotFetching);
        assert!(!landings.fetching(&FILE));

        landings.expect(FILE, 10);
        let stalled = landings.wait(&FILE, 0, 1, Duration::from_millis(20), LONG).await;
        assert_eq!(stalled, Wait::Stalled);
        // A fetch that lands other chunks all the time, but not these, within the time given.
        let waiting = {
            let landings = landings.clone();
            tokio::spawn(
                async move { landings.wait(&FILE, 0, 1, Duration::from_secs(30), Duration::from_millis(50)).await },
            )
        };
        let (give_up, mut other) = (std::time::Instant::now() + Duration::from_secs(10), 1);
        while !waiting.is_finished() {
            assert!(std::time::Instant::now() < give_up, "the wait did not end within the time given");
            landings.land(&FILE, other % 8 + 1, 1);
            other += 1;
            tokio::task::yield_now().await;
        }
        assert_eq!(waiting.await.unwrap(), Wait::Stalled);
        // Landing past the end of the list (a bad count) marks what exists and nothing else.
        landings.land(&FILE, 8, 5);
        assert_eq!(landings.wait(&FILE, 8, 10, Duration::from_millis(20), LONG).await, Wait::Landed);
    }
}
