//! The chunk lists of the files served most recently, decoded once: a range request needs its
//! file's chunk list, and decoding it from the database for every range cost a client fetching
//! a 100 MiB file (12,800 chunks) more than sending the bytes. A file's chunk list never changes
//! (files are named by their hash); the cache is emptied when maintenance drops chunk lists.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::FileInfo;

/// Most chunks held in all cached lists together (40 bytes each: about 10 MiB, the lists of
/// about 2 GiB of files).
const BUDGET: usize = 256 * 1024;

#[derive(Debug, Default)]
pub(super) struct Infos(Mutex<Inner>);

#[derive(Debug, Default)]
struct Inner {
    lists: HashMap<[u8; 32], (Arc<FileInfo>, u64)>,
    chunks: usize,
    clock: u64,
}

impl Infos {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached list of `file`, marked as used.
    pub(super) fn get(&self, file: &[u8; 32]) -> Option<Arc<FileInfo>> {
        let mut inner = self.inner();
        inner.clock += 1;
        let now = inner.clock;
        inner.lists.get_mut(file).map(|(info, used)| {
            *used = now;
            info.clone()
        })
    }

    /// Keeps the list of `file`, dropping the least recently used ones beyond the budget (a
    /// list larger than the whole budget is not kept).
    pub(super) fn put(&self, file: [u8; 32], info: Arc<FileInfo>) {
        let size = info.chunks.len().max(1);
        if size > BUDGET {
            return;
        }
        let mut inner = self.inner();
        inner.clock += 1;
        let now = inner.clock;
        if let Some((old, _)) = inner.lists.insert(file, (info, now)) {
            inner.chunks -= old.chunks.len().max(1);
        }
        inner.chunks += size;
        while inner.chunks > BUDGET {
            let Some(oldest) = inner.lists.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| *k) else { break };
            if let Some((old, _)) = inner.lists.remove(&oldest) {
                inner.chunks -= old.chunks.len().max(1);
            }
        }
    }

    /// Forgets every list (chunk lists were dropped from the database).
    pub(super) fn clear(&self) {
        let mut inner = self.inner();
        inner.lists.clear();
        inner.chunks = 0;
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.inner().lists.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::chunking::Chunk;

    fn list(n: usize) -> Arc<FileInfo> {
        Arc::new(FileInfo { size: n as u64, chunks: vec![Chunk { hash: [0; 32], len: 1 }; n] })
    }

    #[test]
    fn the_least_recently_used_lists_go_first_and_the_budget_holds() {
        let infos = Infos::default();
        infos.put([1; 32], list(BUDGET / 2));
        infos.put([2; 32], list(BUDGET / 4));
        assert!(infos.get(&[1; 32]).is_some(), "used again: [2] is now the oldest");
        infos.put([3; 32], list(BUDGET / 2));
        assert!(infos.get(&[2; 32]).is_none() && infos.get(&[1; 32]).is_some() && infos.get(&[3; 32]).is_some());
        assert_eq!(infos.inner().chunks, BUDGET);
        infos.put([4; 32], list(BUDGET + 1));
        assert!(infos.get(&[4; 32]).is_none(), "a list above the budget is not kept");
        infos.clear();
        assert_eq!(infos.len(), 0);
        assert_eq!(infos.inner().chunks, 0);
    }
}
