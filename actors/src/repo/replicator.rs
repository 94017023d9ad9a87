//! The edge's replicator: the actor that owns the edge's replication state. It keeps one
//! long-lived connection to the first upstream that answers (in the configured order), takes
//! the heads the upstream pushes (and polls as a fallback), runs a sync when a newer head
//! appears inside a sync window, and serves the new snapshot only once the sync is complete.
//! A lost or misbehaving upstream makes it fail over to the next; it fails back when a
//! preferred upstream answers again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use outpost_protocol::snapshot::{Head, Held};
use outpost_protocol::wire::{Request, Response};
use quinn::Connection;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::UpstreamState;
use super::sync::{self, SyncContext, SyncError, SyncOutcome};
use super::upstreams::{Effect, Upstreams, Use};
use crate::clock::unix_now;
use crate::metrics::label;
use crate::transport::{self, Dialer, Pace};

/// The receiving side of a head channel.
pub type HeadReceiver = watch::Receiver<Option<Head>>;

/// Settings of the replicator.
#[derive(Debug, Clone)]
pub struct ReplicatorConfig {
    /// Upstreams in order of preference (`host:port`).
    pub upstreams: Vec<String>,
    /// How often to poll the upstream's head (heads are also pushed).
    pub poll: Duration,
    /// When syncing is allowed.
    pub schedule: Arc<super::Schedule>,
    /// How long an upstream that served refused content is avoided.
    pub quarantine: Duration,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Connected {
    index: usize,
    connection: Connection,
}

#[derive(Message)]
#[rtype(result = "()")]
struct ConnectFailed {
    index: usize,
    error: String,
}

#[derive(Message)]
#[rtype(result = "()")]
struct UpstreamHead {
    index: usize,
    head: Head,
}

#[derive(Message)]
#[rtype(result = "()")]
struct LinkDown {
    index: usize,
    error: String,
}

#[derive(Message)]
#[rtype(result = "()")]
struct SyncDone {
    index: usize,
    started: Instant,
    result: Result<SyncOutcome, SyncError>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Tick;

/// What the check at start found missing from the snapshot of `sequence`.
#[derive(Message)]
#[rtype(result = "()")]
struct Checked {
    sequence: u64,
    missing: Vec<String>,
}

/// The replicator actor.
pub struct Replicator {
    config: ReplicatorConfig,
    dialer: Dialer,
    ctx: SyncContext,
    head: watch::Sender<Option<Head>>,
    upstream: Arc<Mutex<UpstreamState>>,
    /// Which upstream to use (the decisions; this actor does the I/O).
    choice: Upstreams,
    link: Option<CancellationToken>,
    syncing: bool,
    current: Option<Head>,
    /// The current snapshot lacks content (found by the check at start, which runs beside the
    /// first sync rather than before it): sync it again even if the upstream serves the same
    /// head.
    repair: bool,
    /// What the edge serves, for the next sync's rollback checks (its lineage included).
    held: Option<Held>,
    /// When this replicator started (a never-synced edge lags since then).
    started: Instant,
    cancel: CancellationToken,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator").field("choice", &self.choice).field("current", &self.current).finish()
    }
}

impl Replicator {
    /// A replicator serving the store's current snapshot until a sync brings a newer one.
    /// Returns it with the head channel the server reads and the shared upstream state.
    pub fn new(
        config: ReplicatorConfig,
        dialer: Dialer,
        ctx: SyncContext,
        cancel: CancellationToken,
    ) -> Result<(Self, HeadReceiver, Arc<Mutex<UpstreamState>>), crate::store::StoreError> {
        let (current, held) = match ctx.store.current()? {
            Some(signed) => match signed.unverified() {
                Ok(s) => (Some(s.head(&signed)), Some(s.held(&signed))),
                Err(_) => (None, None),
            },
            None => (None, None),
        };
        if let Some(h) = current {
            ctx.metrics.snapshot_sequence.set(i64::try_from(h.sequence).unwrap_or(i64::MAX));
            ctx.metrics.snapshot_expiry.set(h.expires);
        }
        let (head, rx) = watch::channel(current);
        let upstream = Arc::new(Mutex::new(UpstreamState::default()));
        let choice = Upstreams::new(config.upstreams.len(), config.quarantine);
        let me = Self {
            config,
            dialer,
            ctx,
            head,
            upstream: upstream.clone(),
            choice,
            link: None,
            syncing: false,
            current,
            repair: false,
            held,
            started: Instant::now(),
            cancel,
        };
        Ok((me, rx, upstream))
    }

    /// Does what the upstream choice decided.
    fn apply(&mut self, effects: Vec<Effect>, ctx: &mut Context<Self>) {
        for effect in effects {
            match effect {
                Effect::Connect(index) => self.connect(index, ctx),
                Effect::DropLink => self.drop_link(),
                Effect::RetryAfter(wait) => {
                    ctx.run_later(wait, |act, ctx| {
                        let effects = act.choice.retry(Instant::now());
                        act.apply(effects, ctx);
                    });
                }
            }
        }
    }

    fn connect(&mut self, index: usize, ctx: &mut Context<Self>) {
        let (dialer, addr, me) = (self.dialer.clone(), self.config.upstreams[index].clone(), ctx.address());
        tokio::spawn(async move {
            match dialer.connect(&addr).await {
                Ok(connection) => me.do_send(Connected { index, connection }),
                Err(e) => me.do_send(ConnectFailed { index, error: e.to_string() }),
            }
        });
    }

    fn drop_link(&mut self) {
        if let Some(token) = self.link.take() {
            token.cancel();
        }
        let mut up = self.upstream.lock().expect("not poisoned");
        if let Some((_, c)) = up.connection.take() {
            c.close(0u32.into(), b"switching upstream");
        }
    }

    fn set_error(&self, error: String) {
        self.upstream.lock().expect("not poisoned").last_error = Some(error);
    }

    fn maybe_sync(&mut self, ctx: &mut Context<Self>) {
        if self.syncing || self.cancel.is_cancelled() {
            return;
        }
        let (Some(index), Some(wanted)) = (self.choice.active(), self.upstream.lock().expect("not poisoned").head)
        else {
            return;
        };
        if self.current.is_some_and(|c| c.hash == wanted.hash) && !self.repair {
            return;
        }
        let now = unix_now();
        if !self.config.schedule.allowed(now) {
            let opens = self.config.schedule.next_change(now);
            let was_waiting =
                std::mem::replace(&mut self.upstream.lock().expect("not poisoned").waiting_for_window, true);
            if !was_waiting {
                tracing::info!(
                    sequence = wanted.sequence,
                    "snapshot {} waits for the next sync window, which opens {}",
                    wanted.sequence,
                    opens.map_or_else(
                        || "never in the coming week".to_string(),
                        |t| format!("at {}", self.config.schedule.zone.local(t))
                    )
                );
                // Wake up when it opens rather than at the next poll.
                if let Some(t) = opens {
                    let wait = Duration::from_secs(u64::try_from(t - now).unwrap_or(0) + 1);
                    ctx.run_later(wait, |act, ctx| act.maybe_sync(ctx));
                }
            }
            return;
        }
        self.upstream.lock().expect("not poisoned").waiting_for_window = false;
        let Some((addr, connection)) = self.upstream.lock().expect("not poisoned").connection.clone() else {
            return;
        };
        self.syncing = true;
        let held = self.held;
        let (sync_ctx, me, started) = (self.ctx.clone(), ctx.address(), Instant::now());
        tracing::info!(upstream = addr, sequence = wanted.sequence, "sync started");
        tokio::spawn(async move {
            let result = sync::run(&connection, &addr, wanted, held, &sync_ctx).await;
            me.do_send(SyncDone { index, started, result });
        });
    }

    fn update_lag(&self) {
        let up = self.upstream.lock().expect("not poisoned").head;
        let (lag, seconds) = match (up, self.current) {
            (Some(up), Some(cur)) => {
                let lag = up.sequence.saturating_sub(cur.sequence);
                (lag, if lag == 0 { 0.0 } else { (unix_now() - cur.created).max(0) as f64 })
            }
            // Never synced: behind by everything the upstream has (at least one snapshot, even
            // when no upstream answers), for as long as this edge has been waiting.
            (up, None) => (up.map_or(1, |u| u.sequence.max(1)), self.started.elapsed().as_secs_f64()),
            (None, Some(_)) => return,
        };
        self.ctx.metrics.lag_snapshots.set(i64::try_from(lag).unwrap_or(i64::MAX));
        self.ctx.metrics.lag_seconds.set(seconds);
    }
}

impl Actor for Replicator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Content the current snapshot needs and the store lost (a deleted file, a database
        // moved aside) is fetched again from upstream. Checked in the background: a newer
        // snapshot's sync (which fetches whatever it lacks) need not wait for it.
        if let Some(current) = self.current
            && self.ctx.fill == super::Fill::Immediate
        {
            let (store, me) = (self.ctx.store.clone(), ctx.address());
            tokio::task::spawn_blocking(move || match store.completeness(false) {
                Ok((missing, _)) => me.do_send(Checked { sequence: current.sequence, missing }),
                Err(e) => tracing::error!("checking that the current snapshot is whole failed: {e}"),
            });
        }
        self.update_lag();
        let effects = self.choice.start(Instant::now());
        self.apply(effects, ctx);
        ctx.run_interval(self.config.poll, |_, ctx| ctx.notify(Tick));
    }
}

impl Handler<Connected> for Replicator {
    type Result = ();

    fn handle(&mut self, msg: Connected, ctx: &mut Self::Context) {
        if self.choice.connected(msg.index) == Use::Close {
            msg.connection.close(0u32.into(), b"not needed");
            return;
        }
        self.drop_link();
        let addr = self.config.upstreams[msg.index].clone();
        tracing::info!(upstream = addr, "connected to upstream");
        {
            let mut up = self.upstream.lock().expect("not poisoned");
            up.connection = Some((addr, msg.connection.clone()));
            up.head = None;
        }
        let token = self.cancel.child_token();
        self.link = Some(token.clone());
        let (me, index, connection, pace) = (ctx.address(), msg.index, msg.connection, self.ctx.pace);
        tokio::spawn(async move {
            let error = tokio::select! {
                () = token.cancelled() => return,
                e = subscribe(&connection, index, &me, pace) => e,
            };
            me.do_send(LinkDown { index, error });
        });
    }
}

/// Follows the upstream's pushed heads until the stream ends; returns why it ended.
async fn subscribe(connection: &Connection, index: usize, me: &Addr<Replicator>, pace: Pace) -> String {
    super::client::follow_heads(connection, pace, |head| me.do_send(UpstreamHead { index, head })).await
}

impl Handler<ConnectFailed> for Replicator {
    type Result = ();

    fn handle(&mut self, msg: ConnectFailed, ctx: &mut Self::Context) {
        tracing::warn!(upstream = self.config.upstreams[msg.index], "cannot reach upstream: {}", msg.error);
        if self.choice.active().is_none() {
            // (A fail-back attempt that did not answer changes nothing.)
            self.set_error(msg.error);
        }
        let effects = self.choice.connect_failed(msg.index, Instant::now());
        self.apply(effects, ctx);
    }
}

impl Handler<LinkDown> for Replicator {
    type Result = ();

    fn handle(&mut self, msg: LinkDown, ctx: &mut Self::Context) {
        if self.choice.active() != Some(msg.index) || self.cancel.is_cancelled() {
            return;
        }
        tracing::warn!(upstream = self.config.upstreams[msg.index], "lost upstream: {}", msg.error);
        self.set_error(msg.error);
        let effects = self.choice.link_down(msg.index, Instant::now());
        self.apply(effects, ctx);
    }
}

impl Handler<UpstreamHead> for Replicator {
    type Result = ();

    fn handle(&mut self, msg: UpstreamHead, ctx: &mut Self::Context) {
        if self.choice.active() != Some(msg.index) {
            return;
        }
        self.upstream.lock().expect("not poisoned").head = Some(msg.head);
        self.update_lag();
        self.maybe_sync(ctx);
    }
}

impl Handler<Checked> for Replicator {
    type Result = ();

    fn handle(&mut self, msg: Checked, ctx: &mut Self::Context) {
        // A newer snapshot synced meanwhile is whole: its sync fetched what it lacked.
        if msg.missing.is_empty() || self.current.map(|c| c.sequence) != Some(msg.sequence) {
            return;
        }
        tracing::warn!(
            missing = msg.missing.len(),
            first = msg.missing[0],
            "the current snapshot lacks content; fetching it again from upstream"
        );
        self.repair = true;
        self.maybe_sync(ctx);
    }
}

impl Handler<SyncDone> for Replicator {
    type Result = ();

    fn handle(&mut self, msg: SyncDone, ctx: &mut Self::Context) {
        self.syncing = false;
        let metrics = self.ctx.metrics.clone();
        match msg.result {
            Ok(out) => {
                let Some(head) = out.head else { return };
                let elapsed = msg.started.elapsed();
                tracing::info!(
                    sequence = head.sequence,
                    fetched = out.fetched,
                    deduplicated = out.deduplicated,
                    bytes = out.bytes,
                    seconds = elapsed.as_secs_f64(),
                    "sync done"
                );
                metrics.syncs.get_or_create(&label("result", "ok")).inc();
                metrics.sync_duration.observe(elapsed.as_secs_f64());
                metrics.snapshot_sequence.set(i64::try_from(head.sequence).unwrap_or(i64::MAX));
                metrics.snapshot_expiry.set(head.expires);
                self.current = Some(head);
                self.held = out.held;
                self.repair = false;
                {
                    let mut up = self.upstream.lock().expect("not poisoned");
                    up.last_error = None;
                    up.last_sync = Some(crate::clock::unix_now());
                }
                self.head.send_replace(Some(head));
                self.update_lag();
                self.maybe_sync(ctx);
            }
            Err(e) => {
                metrics.syncs.get_or_create(&label("result", "failed")).inc();
                let addr = self.config.upstreams[msg.index].clone();
                tracing::warn!(upstream = addr, "sync failed: {e}");
                self.set_error(format!("sync from {addr} failed: {e}"));
                let avoid = match (e.refusal(), e.is_slow()) {
                    (Some(reason), _) => {
                        metrics.refused(reason);
                        true
                    }
                    (None, true) => {
                        metrics.refused("slow");
                        true
                    }
                    (None, false) => false,
                };
                if !avoid {
                    // A transient failure (a lost connection, a full disk): try again soon.
                    ctx.run_later(Duration::from_secs(2), |act, ctx| act.maybe_sync(ctx));
                }
                // Refused content or too slow: keep serving the last good snapshot, and use
                // another upstream for a while (what was verified stays in `partial/`).
                let effects = self.choice.sync_failed(msg.index, avoid, Instant::now());
                self.apply(effects, ctx);
            }
        }
    }
}

impl Handler<Tick> for Replicator {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Self::Context) {
        self.update_lag();
        if self.cancel.is_cancelled() || self.choice.connecting() {
            return;
        }
        // Connect, or fail back to a preferred upstream that answers again.
        let effects = self.choice.tick(Instant::now());
        self.apply(effects, ctx);
        match self.choice.active() {
            None => {}
            Some(index) => {
                // Poll the head, in case a push was missed.
                if let Some((_, connection)) = self.upstream.lock().expect("not poisoned").connection.clone() {
                    let (me, pace) = (ctx.address(), self.ctx.pace);
                    tokio::spawn(async move {
                        if let Ok((_, _, Response::Head(head))) =
                            transport::request(&connection, &Request::Head, pace).await
                        {
                            me.do_send(UpstreamHead { index, head });
                        }
                    });
                }
                self.maybe_sync(ctx);
            }
        }
    }
}
