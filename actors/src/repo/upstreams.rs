//! Which upstream an edge replicates from, decided without I/O: the replicator feeds it what
//! happened (a connection made or failed, a link lost, a sync refused or too slow, a tick) with
//! the current time, and does what it answers ([`Effect`]).
//!
//! The rules:
//! - upstreams are tried in their configured order; the first that answers is used;
//! - a connection that fails moves on to the next usable upstream; when the last has failed,
//!   every upstream is tried again from the first after [`RETRY_AFTER`];
//! - a lost link moves on to the next usable upstream after it;
//! - an upstream that served refused content or was too slow is left aside for the quarantine
//!   period (with other upstreams to go to, the edge leaves it at once);
//! - at each tick, an edge without a link connects to the first usable upstream, and one using
//!   a less preferred upstream tries the preferred ones again (fail-back): a connection to a
//!   preferred upstream replaces the link, one to a less preferred one is closed.

use std::time::{Duration, Instant};

/// The pause before trying every upstream again once all have failed.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What the replicator does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Open a connection to upstream `i`.
    Connect(usize),
    /// Drop the link in use.
    DropLink,
    /// Call [`Upstreams::retry`] after this long.
    RetryAfter(Duration),
}

/// What to do with a connection just made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Use it (dropping the link in use first, if any).
    Replace,
    /// Close it: the link in use is to a preferred upstream.
    Close,
}

/// The upstream choice of one edge.
#[derive(Debug, Clone)]
pub struct Upstreams {
    count: usize,
    quarantine: Duration,
    active: Option<usize>,
    connecting: bool,
    avoid_until: Vec<Option<Instant>>,
}

impl Upstreams {
    /// `count` upstreams in order of preference; refused or slow ones are left aside for
    /// `quarantine`.
    pub fn new(count: usize, quarantine: Duration) -> Self {
        Self { count, quarantine, active: None, connecting: false, avoid_until: vec![None; count] }
    }

    /// The upstream in use.
    pub fn active(&self) -> Option<usize> {
        self.active
    }

    /// True while a connection attempt is under way.
    pub fn connecting(&self) -> bool {
        self.connecting
    }

    /// True unless `i` is left aside at `now`.
    pub fn usable(&self, i: usize, now: Instant) -> bool {
        self.avoid_until[i].is_none_or(|t| now >= t)
    }

    /// At start: connect to the first usable upstream.
    pub fn start(&mut self, now: Instant) -> Vec<Effect> {
        if self.count == 0 {
            return vec![];
        }
        vec![self.connect(self.next_usable(0, now))]
    }

    /// A connection to `i` is up.
    pub fn connected(&mut self, i: usize) -> Use {
        self.connecting = false;
        if self.active.is_some_and(|a| a <= i) {
            return Use::Close;
        }
        self.active = Some(i);
        Use::Replace
    }

    /// A connection to `i` failed.
    pub fn connect_failed(&mut self, i: usize, now: Instant) -> Vec<Effect> {
        self.connecting = false;
        if self.active.is_some() {
            return vec![]; // a fail-back attempt that did not answer
        }
        if i + 1 < self.count {
            vec![self.connect(self.next_usable(i + 1, now))]
        } else {
            vec![Effect::RetryAfter(RETRY_AFTER)]
        }
    }

    /// The pause after every upstream failed is over.
    pub fn retry(&mut self, now: Instant) -> Vec<Effect> {
        if self.active.is_some() || self.connecting || self.count == 0 {
            return vec![];
        }
        vec![self.connect(self.next_usable(0, now))]
    }

    /// The link to `i` ended.
    pub fn link_down(&mut self, i: usize, now: Instant) -> Vec<Effect> {
        if self.active != Some(i) {
            return vec![];
        }
        self.active = None;
        vec![Effect::DropLink, self.connect(self.next_usable((i + 1) % self.count, now))]
    }

    /// A sync from `i` failed; `avoid` when it served refused content or was too slow.
    pub fn sync_failed(&mut self, i: usize, avoid: bool, now: Instant) -> Vec<Effect> {
        if !avoid {
            return vec![];
        }
        self.avoid_until[i] = Some(now + self.quarantine);
        if self.count > 1 && self.active == Some(i) {
            self.active = None;
            return vec![Effect::DropLink, self.connect(self.next_usable((i + 1) % self.count, now))];
        }
        vec![]
    }

    /// The periodic check: connect when there is no link, fail back when a preferred upstream
    /// is usable again.
    pub fn tick(&mut self, now: Instant) -> Vec<Effect> {
        if self.connecting || self.count == 0 {
            return vec![];
        }
        match self.active {
            None => vec![self.connect(self.next_usable(0, now))],
            Some(index) => match (0..index).find(|&i| self.usable(i, now)) {
                Some(better) => vec![self.connect(better)],
                None => vec![],
            },
        }
    }

    fn connect(&mut self, i: usize) -> Effect {
        self.connecting = true;
        Effect::Connect(i)
    }

    /// The first usable upstream at or after `from` (wrapping), or `from` if none is usable.
    fn next_usable(&self, from: usize, now: Instant) -> usize {
        (0..self.count).map(|k| (from + k) % self.count).find(|&i| self.usable(i, now)).unwrap_or(from % self.count)
    }
}

#[cfg(test)]
mod tests;
