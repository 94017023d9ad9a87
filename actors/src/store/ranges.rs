//! The ranges served most recently, kept in memory and shared by the clients that ask for the
//! same bytes: when a hundred agents of a site download the same package at once, the edge
//! reads and checks each range once and hands the same bytes to every connection (QUIC takes
//! them without a copy), where it read each range from the page cache once per client.
//!
//! A range being read is a slot the other askers wait on, so a burst of clients asking for the
//! same range at once causes one read. Bytes in the cache were checked against their file's
//! chunk list when they were read, and files never change (they are named by their hash); a
//! file that is removed, or that a client found damaged, is forgotten here at once. Ranges
//! read more than [`IDLE`] ago are dropped (the repository's server trims them every few
//! seconds): after a rollout an idle edge gives the memory back. At most 64 MiB by default;
//! repositories set it with `range_memory` ([`Ranges::set_budget`]).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::OnceCell;

/// Most bytes held by default (ranges of up to 4 MiB, usually 1 MiB): a hundred clients of one
/// file stay within this window of each other when they start together.
const BUDGET: usize = 64 * 1024 * 1024;

/// Ranges read longer ago than this are dropped at the next trim: clients of one rollout ask
/// for the same ranges within seconds of each other.
pub const IDLE: Duration = Duration::from_secs(30);

/// A range: its file, offset and length.
type Key = ([u8; 32], u64, u32);
type Slot = Arc<OnceCell<Bytes>>;

#[derive(Debug)]
pub struct Ranges {
    inner: Mutex<Inner>,
    budget: AtomicUsize,
}

#[derive(Debug, Default)]
struct Inner {
    slots: HashMap<Key, Slot>,
    /// The ranges read and when, oldest first (the order in which they are dropped).
    order: VecDeque<(Key, Instant)>,
    bytes: usize,
}

impl Inner {
    /// Drops the range read first; false when there is none.
    fn drop_oldest(&mut self) -> bool {
        let Some((oldest, _)) = self.order.pop_front() else { return false };
        if let Some(old) = self.slots.remove(&oldest) {
            self.bytes -= old.get().map_or(0, Bytes::len);
        }
        true
    }
}

impl Default for Ranges {
    fn default() -> Self {
        Self::with_budget(BUDGET)
    }
}

impl Ranges {
    pub(super) fn with_budget(budget: usize) -> Self {
        Self { inner: Mutex::new(Inner::default()), budget: AtomicUsize::new(budget) }
    }

    /// Holds at most `budget` bytes from now on (0: none; every read is the caller's own).
    pub fn set_budget(&self, budget: usize) {
        self.budget.store(budget, Ordering::Relaxed);
        let mut inner = self.inner();
        while inner.bytes > budget {
            if !inner.drop_oldest() {
                break;
            }
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bytes of range `len` at `offset` of `file`: from memory, or read by `read` (once
    /// for all who ask at the same time). `read`'s error, or its `None` (the file is not
    /// here), is this caller's alone: whoever waited tries again.
    pub async fn get_or_read<E, F>(
        &self,
        file: [u8; 32],
        offset: u64,
        len: u32,
        read: impl FnOnce() -> F,
    ) -> Result<Option<Bytes>, E>
    where
        F: Future<Output = Result<Option<Bytes>, E>>,
    {
        let key = (file, offset, len);
        let slot = self.inner().slots.entry(key).or_default().clone();
        if let Some(bytes) = slot.get() {
            return Ok(Some(bytes.clone()));
        }
        let (mut outcome, mut ran) = (None, false);
        let (mine, ran_here) = (&mut outcome, &mut ran);
        let read = slot
            .get_or_try_init(|| async move {
                *ran_here = true;
                match read().await {
                    Ok(Some(bytes)) => Ok(bytes),
                    failed => {
                        *mine = Some(failed);
                        Err(())
                    }
                }
            })
            .await;
        match read {
            Ok(bytes) => {
                let bytes = bytes.clone();
                if ran {
                    self.settle(key, &slot, bytes.len());
                }
                Ok(Some(bytes))
            }
            Err(()) => {
                self.drop_slot(key, &slot);
                outcome.unwrap_or(Ok(None))
            }
        }
    }

    /// Counts a slot its caller just read, dropping the oldest ranges beyond the budget.
    fn settle(&self, key: Key, slot: &Slot, len: usize) {
        let mut inner = self.inner();
        let Some(current) = inner.slots.get(&key) else { return };
        // Forgotten meanwhile (its file removed): not kept.
        if !Arc::ptr_eq(current, slot) {
            return;
        }
        let budget = self.budget.load(Ordering::Relaxed);
        if len > budget {
            inner.slots.remove(&key);
            return;
        }
        inner.order.push_back((key, Instant::now()));
        inner.bytes += len;
        while inner.bytes > budget {
            if !inner.drop_oldest() {
                break;
            }
        }
    }

    /// Drops the ranges read more than `idle` ago.
    pub fn trim(&self, idle: Duration) {
        let mut inner = self.inner();
        while inner.order.front().is_some_and(|(_, read)| read.elapsed() > idle) {
            inner.drop_oldest();
        }
    }

    fn drop_slot(&self, key: Key, slot: &Slot) {
        let mut inner = self.inner();
        if inner.slots.get(&key).is_some_and(|s| Arc::ptr_eq(s, slot) && !s.initialized()) {
            inner.slots.remove(&key);
        }
    }

    /// Forgets every range of `file` (removed, or reported damaged).
    pub(super) fn forget(&self, file: &[u8; 32]) {
        let mut inner = self.inner();
        // Usually so when files are removed (maintenance runs when clients are gone).
        if inner.slots.is_empty() {
            return;
        }
        let mut freed = 0;
        inner.slots.retain(|k, s| {
            if &k.0 == file {
                freed += s.get().map_or(0, Bytes::len);
                false
            } else {
                true
            }
        });
        inner.order.retain(|(k, _)| &k.0 != file);
        inner.bytes -= freed;
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.inner().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    async fn read(reads: Arc<AtomicUsize>, bytes: Vec<u8>) -> Result<Option<Bytes>, String> {
        reads.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        Ok(Some(Bytes::from(bytes)))
    }

    async fn ask(ranges: &Ranges, reads: &Arc<AtomicUsize>, file: u8, offset: u64, bytes: Vec<u8>) -> Option<Bytes> {
        let len = bytes.len() as u32;
        let reads = reads.clone();
        ranges.get_or_read([file; 32], offset, len, || read(reads, bytes)).await.unwrap()
    }

    #[tokio::test]
    async fn clients_asking_for_the_same_range_at_once_cause_one_read() {
        let ranges = Arc::new(Ranges::with_budget(1 << 20));
        let reads = Arc::new(AtomicUsize::new(0));
        let mut asks = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let (ranges, reads) = (ranges.clone(), reads.clone());
            asks.spawn(async move { ask(&ranges, &reads, 1, 0, vec![7; 4]).await });
        }
        while let Some(answer) = asks.join_next().await {
            assert_eq!(answer.unwrap().as_deref(), Some(&[7u8; 4][..]));
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1, "fifty asks at once, one read");
        assert_eq!(ranges.bytes(), 4, "counted once");
        // Later asks are answered from memory; another range of the file is read.
        assert_eq!(ask(&ranges, &reads, 1, 0, vec![9; 4]).await.as_deref(), Some(&[7u8; 4][..]));
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        ask(&ranges, &reads, 1, 4, vec![8; 4]).await;
        assert_eq!((reads.load(Ordering::SeqCst), ranges.bytes()), (2, 8));
    }

    #[tokio::test]
    async fn a_failed_or_missing_read_is_not_kept_and_the_next_asker_reads_again() {
        let ranges = Ranges::with_budget(1 << 20);
        let failed: Result<Option<Bytes>, String> =
            ranges.get_or_read([2; 32], 0, 4, || async { Err("disk error".to_string()) }).await;
        assert_eq!(failed, Err("disk error".to_string()));
        let missing: Result<Option<Bytes>, String> = ranges.get_or_read([2; 32], 0, 4, || async { Ok(None) }).await;
        assert_eq!(missing, Ok(None));
        let reads = Arc::new(AtomicUsize::new(0));
        let read = ask(&ranges, &reads, 2, 0, vec![1; 4]).await;
        assert_eq!((read.as_deref(), reads.load(Ordering::SeqCst)), (Some(&[1u8; 4][..]), 1));
        assert_eq!(ranges.bytes(), 4);
    }

    #[tokio::test]
    async fn the_oldest_ranges_are_dropped_beyond_the_budget_and_a_file_can_be_forgotten() {
        let ranges = Ranges::with_budget(10);
        let reads = Arc::new(AtomicUsize::new(0));
        for offset in 0..3u8 {
            ask(&ranges, &reads, 3, u64::from(offset) * 4, vec![offset; 4]).await;
        }
        assert_eq!(ranges.bytes(), 8, "the first of the three 4-byte ranges was dropped");
        ask(&ranges, &reads, 3, 0, vec![0; 4]).await;
        assert_eq!(reads.load(Ordering::SeqCst), 4, "the dropped range is read again");
        ask(&ranges, &reads, 4, 0, vec![5; 2]).await;
        ranges.forget(&[3; 32]);
        assert_eq!(ranges.bytes(), 2);
        ask(&ranges, &reads, 3, 8, vec![6; 4]).await;
        assert_eq!(reads.load(Ordering::SeqCst), 6, "a forgotten file's range is read again");
        // Trimmed: those read longer ago than given are dropped, the others kept.
        ranges.trim(Duration::from_secs(3600));
        assert_eq!(ranges.bytes(), 6);
        ranges.trim(Duration::ZERO);
        assert_eq!(ranges.bytes(), 0);
        ask(&ranges, &reads, 3, 8, vec![6; 4]).await;
        assert_eq!(reads.load(Ordering::SeqCst), 7, "a trimmed range is read again");
        // A smaller budget set (`range_memory`) drops what is beyond it at once; none keeps nothing.
        ask(&ranges, &reads, 5, 0, vec![7; 4]).await;
        assert_eq!(ranges.bytes(), 8);
        ranges.set_budget(5);
        assert_eq!(ranges.bytes(), 4, "the oldest dropped");
        ranges.set_budget(0);
        assert_eq!(ranges.bytes(), 0);
        ask(&ranges, &reads, 5, 0, vec![7; 4]).await;
        ask(&ranges, &reads, 5, 0, vec![7; 4]).await;
        assert_eq!((reads.load(Ordering::SeqCst), ranges.bytes()), (10, 0), "every ask reads");
    }
}
