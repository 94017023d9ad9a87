//! `outpost repo main | edge | status | pull | fsck | gc` and `outpost pkg publish | unpublish`.

use std::sync::Arc;

use actix::Actor;
use anyhow::{Context, Result, bail};
use outpost_actors::metrics::RepoMetrics;
use outpost_actors::repo::publisher::{Publisher, PublisherConfig};
use outpost_actors::repo::replicator::{Replicator, ReplicatorConfig};
use outpost_actors::repo::sync::{Limiter, SyncContext};
use outpost_actors::repo::{Fill, Role, Shared, server};
use outpost_actors::store::Store;
use outpost_actors::transport;
use outpost_protocol::hex::hex;
use outpost_protocol::pki::{Purpose, cert_info};
use outpost_protocol::time_fmt::format_unix;
use outpost_protocol::version::Version;
use outpost_protocol::wire::ALPN_REPO;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::cli::{
    PkgPublishArgs, PkgUnpublishArgs, RepoEdgeArgs, RepoFsckArgs, RepoGcArgs, RepoMainArgs, RepoPullArgs,
    RepoSetLineageArgs, RepoStatusArgs,
};
use crate::config::{self, EdgeConfig, MainConfig};
use crate::daemon;
use crate::output::human_bytes;
use crate::packaging;
use crate::progress::Progress;
use outpost_actors::clock::unix_now;

/// The shortest period of anything that repeats (polls, re-signing).
const SECOND: std::time::Duration = std::time::Duration::from_secs(1);

/// The main repository's settings, checked.
pub struct MainSetup {
    /// Its settings, the flags over the file.
    pub cfg: MainConfig,
    /// Publisher settings.
    pub publisher: PublisherConfig,
    /// TLS identity.
    pub identity: transport::Identity,
    /// The snapshot key.
    pub key: outpost_protocol::pki::PrivateKey,
    /// The QUIC socket, bound before anything starts.
    pub socket: std::net::UdpSocket,
    /// Bytes of the ranges served last kept in memory.
    pub range_memory: usize,
}

impl MainSetup {
    /// Checks the configuration and loads the identity.
    pub fn new(cfg: MainConfig, password_file: Option<&std::path::Path>) -> Result<Self> {
        let c = &cfg;
        let publisher = PublisherConfig {
            name: c.name.clone(),
            lifetime: config::duration_at_least("snapshot_lifetime", &cfg.snapshot_lifetime, SECOND)?,
            resign_every: config::duration_at_least("resign_every", &cfg.resign_every, SECOND)?,
            keep: cfg.keep_snapshots,
            gc_grace: config::duration("gc_grace", &cfg.gc_grace)?,
        };
        if publisher.resign_every >= publisher.lifetime {
            bail!(
                "resign_every ({}) must be shorter than snapshot_lifetime ({})",
                cfg.resign_every,
                cfg.snapshot_lifetime
            );
        }
        let identity = daemon::identity(&c.cert, &c.key, password_file)?;
        let me = cert_info(&identity.chain[0])?;
        if !me.has(Purpose::SnapshotSigning) {
            bail!(
                "{}: certificate {:?} cannot sign snapshots; the main repository needs a server certificate (`outpost pki issue --role server`)",
                c.cert.display(),
                me.subject
            );
        }
        let key = outpost_protocol::pki::PrivateKey::from_pkcs8_der(&identity.key)?;
        let range_memory = config::range_memory("range_memory", &c.range_memory)?;
        let socket = transport::bind(listen_addr("listen", &c.listen)?)?;
        Ok(Self { cfg, publisher, identity, key, socket, range_memory })
    }

    /// Starts the publisher and the server inside a running actix system; returns the task
    /// serving clients (it ends after `cancel`) and the publisher.
    pub fn start(
        self,
        trust: outpost_protocol::pki::TrustStore,
        ca: &[rustls_pki_types::CertificateDer<'static>],
        registry: &mut Registry,
        revoked: outpost_actors::central::Revoked,
        cancel: CancellationToken,
    ) -> Result<MainStarted> {
        let c = self.cfg;
        let store = Arc::new(Store::open(&c.data).with_context(|| format!("opening {}", c.data.display()))?);
        store.ranges().set_budget(self.range_memory);
        store.set_role("main")?;
        let in_snapshot = store.current()?.and_then(|s| s.unverified().ok()).map(|s| s.revoked).unwrap_or_default();
        let metrics = Arc::new(RepoMetrics::default());
        metrics.register(registry);
        let (publisher, head) = Publisher::new(
            store.clone(),
            trust.clone(),
            self.key,
            self.identity.chain.clone(),
            self.publisher,
            metrics.clone(),
        )?;
        let (endpoint, checks) = transport::server_with_checks(self.socket, &self.identity, ca, &[ALPN_REPO])
            .with_context(|| format!("listening on {}", c.listen))?;
        let publisher = publisher.start();
        let shared = Shared {
            name: c.name.clone(),
            store,
            trust,
            head,
            metrics,
            role: Role::Main { publisher: publisher.clone() },
            revoked,
            tickets: Arc::default(),
        };
        eprintln!(
            "outpost repo main {:?} listening on {} (QUIC), data in {}",
            c.name,
            endpoint.local_addr()?,
            c.data.display()
        );
        Ok(MainStarted {
            serving: tokio::spawn(server::serve(endpoint, checks, shared, cancel)),
            publisher,
            revoked: in_snapshot,
        })
    }
}

/// A main repository started inside a daemon.
pub struct MainStarted {
    /// The task serving clients (it ends after the cancellation).
    pub serving: tokio::task::JoinHandle<()>,
    /// The publisher.
    pub publisher: actix::Addr<Publisher>,
    /// The certificates the current snapshot revokes (central recovers them from here).
    pub revoked: Vec<String>,
}

/// `outpost repo main`
pub fn main(args: &RepoMainArgs) -> Result<()> {
    let cfg: MainConfig = config::with_flags(&config::load(args.daemon.config.as_deref())?, &args.daemon)?;
    let (ca_path, metrics) = (cfg.ca.clone(), cfg.metrics.clone());
    let setup = MainSetup::new(cfg, args.daemon.password_file.as_deref())?;
    let (trust, ca) = daemon::trust(&ca_path)?;
    let metrics = daemon::bind_metrics(&metrics)?;
    daemon::run(move || async move {
        let cancel = CancellationToken::new();
        let mut registry = Registry::default();
        let serving = setup.start(trust, &ca, &mut registry, Default::default(), cancel.clone())?.serving;
        daemon::serve_metrics(metrics, registry, cancel.clone())?;
        daemon::shutdown_signal().await;
        eprintln!("stopping");
        cancel.cancel();
        let _ = serving.await;
        Ok(())
    })
}

/// A listening address (`ip:port`) of the configuration.
pub fn listen_addr(field: &str, value: &str) -> Result<std::net::SocketAddr> {
    value.parse().map_err(|_| anyhow::anyhow!("{field}: {value:?} is not an address like 0.0.0.0:7443 (ip:port)"))
}

/// `outpost repo edge`
pub fn edge(args: &RepoEdgeArgs) -> Result<()> {
    let cfg: EdgeConfig = config::with_flags(&config::load(args.daemon.config.as_deref())?, args)?;
    let c = &cfg;
    let upstreams = cfg.upstreams.clone();
    if upstreams.is_empty() {
        bail!("an edge needs at least one upstream: give --upstream HOST:PORT or `upstreams` in the configuration");
    }
    for u in &upstreams {
        transport::resolve(u).with_context(|| format!("upstream {u}"))?;
    }
    let fill = match cfg.fill.as_str() {
        "immediate" => Fill::Immediate,
        "on-demand" => Fill::OnDemand,
        other => bail!("fill: {other:?} must be immediate or on-demand"),
    };
    let bandwidth = config::bytes("bandwidth", &cfg.bandwidth)?;
    let pace = config::min_rate("min_rate", &cfg.min_rate)?;
    if bandwidth > 0 && bandwidth < pace.min_rate {
        bail!(
            "bandwidth ({}) is below min_rate ({}): every transfer would be abandoned as too slow; raise bandwidth or lower min_rate",
            cfg.bandwidth,
            cfg.min_rate
        );
    }
    let windows = config::windows(&cfg.sync_windows)?;
    let zone = config::zone(&cfg.time_zone, &cfg.utc_offset)?;
    let schedule = Arc::new(outpost_actors::repo::Schedule { windows, zone });
    let replicator_config = ReplicatorConfig {
        schedule: schedule.clone(),
        upstreams: upstreams.clone(),
        poll: config::duration_at_least("poll", &cfg.poll, SECOND)?,
        quarantine: config::duration("quarantine", &cfg.quarantine)?,
    };
    let identity = daemon::identity(&c.cert, &c.key, args.daemon.password_file.as_deref())?;
    let me = cert_info(&identity.chain[0])?;
    if !me.has(Purpose::ServerAuth) {
        bail!(
            "{}: certificate {:?} cannot serve TLS; an edge needs an edge certificate (`outpost pki issue --role edge`)",
            c.cert.display(),
            me.subject
        );
    }
    let (trust, ca) = daemon::trust(&c.ca)?;
    let (keep, grace) = (cfg.keep_snapshots, config::duration("gc_grace", &cfg.gc_grace)?);
    let concurrency =
        config::count("concurrency", cfg.concurrency, 1..=1024, "ranges of 1 MiB in flight during a sync")?;
    let range_memory = config::range_memory("range_memory", &cfg.range_memory)?;
    let socket = transport::bind(listen_addr("listen", &c.listen)?)?;
    let metrics_listener = daemon::bind_metrics(&c.metrics)?;
    daemon::run(move || async move {
        let cancel = CancellationToken::new();
        let store = Arc::new(Store::open(&c.data).with_context(|| format!("opening {}", c.data.display()))?);
        store.ranges().set_budget(range_memory);
        store.set_role(&format!("edge {}", fill.as_str()))?;
        let metrics = Arc::new(RepoMetrics::default());
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        // Large datagrams from its upstream, where the path allows.
        let client = transport::Dialer::new(&identity, &ca, ALPN_REPO)?;
        let ctx = SyncContext {
            store: store.clone(),
            trust: trust.clone(),
            metrics: metrics.clone(),
            fill,
            concurrency,
            limiter: (bandwidth > 0).then(|| Arc::new(Limiter::new(bandwidth))),
            pace,
            checked: Arc::default(),
        };
        let (endpoint, checks) = transport::server_with_checks(socket, &identity, &ca, &[ALPN_REPO])
            .with_context(|| format!("listening on {}", c.listen))?;
        let (replicator, head, upstream) = Replicator::new(replicator_config, client, ctx.clone(), cancel.clone())?;
        let _replicator = replicator.start();
        let shared = Shared {
            name: c.name.clone(),
            store: store.clone(),
            trust,
            head,
            metrics,
            role: Role::Edge {
                fill,
                upstream,
                sync: ctx,
                fetching: Arc::new(outpost_actors::repo::sync::Fetching::default()),
                schedule,
            },
            revoked: Default::default(),
            tickets: Arc::default(),
        };
        daemon::serve_metrics(metrics_listener, registry, cancel.clone())?;
        eprintln!(
            "outpost repo edge {:?} listening on {} (QUIC), upstreams {}, fill {}",
            c.name,
            endpoint.local_addr()?,
            upstreams.join(", "),
            fill.as_str()
        );
        let gc_store = store.clone();
        let gc_cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = gc_cancel.cancelled() => return,
                    () = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
                }
                let s = gc_store.clone();
                let _ = tokio::task::spawn_blocking(move || s.gc(keep, grace)).await;
            }
        });
        let serving = tokio::spawn(server::serve(endpoint, checks, shared, cancel.clone()));
        daemon::shutdown_signal().await;
        eprintln!("stopping");
        cancel.cancel();
        let _ = serving.await;
        Ok(())
    })
}

/// `outpost repo status`
pub fn status(args: &RepoStatusArgs) -> Result<()> {
    let v2 = packaging::with_repo(&args.client, |client, _| async move { Ok(client.status_v2().await?) })?;
    let status = &v2.status;
    if args.json {
        let mut json = status_json(status);
        json["sync_windows"] = serde_json::json!(v2.windows);
        json["time_zone"] = serde_json::json!((!v2.time_zone.is_empty()).then_some(&v2.time_zone));
        json["window_open"] = serde_json::json!(v2.window_open);
        json["window_changes"] = serde_json::json!(v2.window_changes);
        json["window_changes_local"] = serde_json::json!(v2.window_changes_local);
        json["waiting_for_window"] = serde_json::json!(v2.waiting_for_window);
        json["epoch"] = serde_json::json!(v2.epoch);
        crate::out!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    crate::out!("repository:  {} ({})", status.name, status.role);
    match &status.head {
        Some(h) => crate::out!(
            "snapshot:    {} (made {}, expires {})",
            h.sequence,
            format_unix(h.created),
            format_unix(h.expires)
        ),
        None => crate::out!("snapshot:    none yet"),
    }
    if v2.epoch > 0 {
        crate::out!("lineage:     {}", v2.epoch);
    }
    crate::out!("packages:    {} (+ {} host packages)", status.packages, status.hosts);
    crate::out!("store:       {} blobs, {}", status.blobs, human_bytes(status.bytes));
    if status.role == "edge" {
        crate::out!("fill:        {}", status.fill);
        crate::out!("upstream:    {}", status.upstream.as_deref().unwrap_or("(none reachable)"));
        match (&status.upstream_head, &status.head) {
            (Some(up), Some(me)) => {
                let lag = up.sequence.saturating_sub(me.sequence);
                crate::out!("lag:         {lag} snapshot(s) (upstream at {})", up.sequence);
            }
            (Some(up), None) => crate::out!("lag:         never synced (upstream at {})", up.sequence),
            _ => {}
        }
        if !v2.windows.is_empty() {
            let state = match (v2.window_open, &v2.window_changes_local) {
                (Some(true), Some(t)) => format!("open now, closes {t}"),
                (Some(false), Some(t)) => format!("closed now, opens {t}"),
                (Some(open), None) => {
                    (if open { "open now" } else { "closed now, no window in the coming week" }).into()
                }
                _ => String::new(),
            };
            crate::out!("windows:     {} ({}): {state}", v2.windows.join(", "), v2.time_zone);
            if v2.waiting_for_window {
                crate::out!("             a newer snapshot waits for the next window");
            }
        }
        if let Some(e) = &status.last_error {
            crate::out!("last error:  {e}");
        }
    }
    Ok(())
}

fn status_json(s: &outpost_protocol::wire::RepoStatus) -> serde_json::Value {
    let head = |h: &Option<outpost_protocol::snapshot::Head>| {
        h.map(|h| serde_json::json!({"sequence": h.sequence, "hash": hex(&h.hash), "created": h.created, "expires": h.expires}))
    };
    let lag = match (&s.upstream_head, &s.head) {
        (Some(u), Some(m)) => Some(u.sequence.saturating_sub(m.sequence)),
        (Some(u), None) => Some(u.sequence),
        _ => None,
    };
    serde_json::json!({
        "name": s.name, "role": s.role, "head": head(&s.head), "packages": s.packages, "hosts": s.hosts,
        "blobs": s.blobs, "bytes": s.bytes, "fill": (!s.fill.is_empty()).then_some(&s.fill),
        "upstream": s.upstream, "upstream_head": head(&s.upstream_head), "lag_snapshots": lag, "last_error": s.last_error,
    })
}

/// Splits `NAME` or `NAME=VERSION`.
fn name_version(text: &str) -> Result<(String, Option<Version>)> {
    match text.split_once('=') {
        Some((n, v)) => Ok((n.trim().to_string(), Some(Version::parse(v.trim())?))),
        None => Ok((text.trim().to_string(), None)),
    }
}

/// `outpost repo pull`
pub fn pull(args: &RepoPullArgs) -> Result<()> {
    let (name, version) = name_version(&args.package)?;
    let out = args.out.clone();
    let pulled = packaging::with_repo_bulk(&args.client, move |client, trust| async move {
        let progress = Progress::bytes("pulling", 0);
        let pulled = client
            .pull(&trust, unix_now(), &name, version.as_ref(), &out, &mut |done, total| {
                progress.resize(total);
                progress.set(done);
            })
            .await?;
        progress.finish();
        Ok(pulled)
    })?;
    eprintln!(
        "Pulled {} {} ({}), signed by {}; every file verified.",
        pulled.entry.name,
        pulled.entry.version,
        human_bytes(pulled.bytes),
        pulled.signer.describe()
    );
    crate::out!("{}", pulled.dir.display());
    Ok(())
}

/// `outpost pkg publish`
pub fn publish(args: &PkgPublishArgs) -> Result<()> {
    for p in packaging::publish_all(&args.client, &args.files)? {
        crate::out!(
            "Published {} {} to {}: snapshot {}{}",
            p.name,
            p.version,
            args.client.repo,
            p.sequence,
            if p.replaced { " (replaced the same version)" } else { "" }
        );
    }
    Ok(())
}

/// `outpost pkg unpublish`
pub fn unpublish(args: &PkgUnpublishArgs) -> Result<()> {
    let (name, version) = name_version(&args.package)?;
    let version = version.map(|v| v.to_string());
    let (sequence, removed) = packaging::with_repo(&args.client, move |client, _| async move {
        Ok(client.unpublish(&name, version.as_deref()).await?)
    })
    .with_context(|| format!("unpublishing {}", args.package))?;
    crate::out!("Removed {} from {}: snapshot {sequence}", removed.join(", "), args.client.repo);
    Ok(())
}

/// Opens a stopped node's store; with `repair`, a damaged state database is moved aside and
/// a new one made (an edge fetches its snapshot again at its next start).
fn open_for_maintenance(data: &std::path::Path, repair: bool) -> Result<Store> {
    match Store::open(data) {
        Ok(s) => Ok(s),
        Err(outpost_actors::store::StoreError::DamagedDatabase(why)) if repair => {
            let db = data.join("state.redb");
            let aside = data.join(format!("state.redb.damaged-{}", unix_now()));
            std::fs::rename(&db, &aside).with_context(|| format!("moving {} aside", db.display()))?;
            eprintln!(
                "{why}\nmoved the damaged database to {}; an edge fetches its snapshot again from upstream at its next \
                 start (the files it holds are kept). On the main repository, stop here and restore the data folder \
                 from a backup instead.",
                aside.display()
            );
            Store::open(data).with_context(|| format!("opening {}", data.display()))
        }
        Err(e) => Err(e).with_context(|| format!("opening {}", data.display())),
    }
}

/// `outpost repo fsck`
pub fn fsck(args: &RepoFsckArgs) -> Result<()> {
    let store = open_for_maintenance(&args.data, args.repair)?;
    let (_, total) = store.usage();
    let progress = Progress::bytes("checking", total);
    let report = store.fsck(args.repair, &mut |n| progress.set(n))?;
    progress.finish();
    if args.json {
        crate::out!(
            "{}",
            serde_json::json!({"checked": report.checked, "bytes": report.bytes, "damaged": report.damaged, "removed": report.removed, "linked": report.linked,
                "missing": report.missing, "not_fetched": report.not_fetched, "role": report.role,
                "stray": report.stray.iter().map(|p| p.display().to_string()).collect::<Vec<_>>()})
        );
    } else {
        crate::out!(
            "checked {} blobs ({}): {} damaged, {} missing from the current snapshot",
            report.checked,
            human_bytes(report.bytes),
            report.damaged.len(),
            report.missing.len()
        );
        for d in &report.damaged {
            crate::out!("  damaged: {d}{}", if args.repair { " (removed)" } else { "" });
        }
        for m in &report.missing {
            crate::out!("  missing: {m}");
        }
        if report.not_fetched > 0 {
            crate::out!("  {} file(s) not fetched yet (on-demand edge: normal)", report.not_fetched);
        }
        if report.linked > 0 {
            crate::out!(
                "  {} file(s) borrow their unchanged bytes from other versions stored here (checked there)",
                report.linked
            );
        }
        for s in &report.stray {
            crate::out!("  stray file: {}", s.display());
        }
    }
    if !report.damaged.is_empty() && !args.repair {
        bail!(
            "{} damaged blob(s); run again with --repair to remove them (an edge fetches them again)",
            report.damaged.len()
        );
    }
    if !report.missing.is_empty() {
        let edge = report.role.as_deref().is_some_and(|r| r.starts_with("edge"));
        if edge && args.repair {
            // The repair of an edge is its next start: it fetches what is missing.
            eprintln!(
                "{} item(s) the current snapshot needs are missing: the edge fetches them from upstream at its next start",
                report.missing.len()
            );
            return Ok(());
        }
        let advice = if edge {
            "the edge fetches what is missing from upstream at its next start"
        } else {
            "publish the packages concerned again, or restore the data folder from a backup"
        };
        bail!("{} item(s) the current snapshot needs are missing; {advice}", report.missing.len());
    }
    Ok(())
}

/// `outpost repo gc`
pub fn gc(args: &RepoGcArgs) -> Result<()> {
    let grace = config::duration("--grace", &args.grace)?;
    let store = open_for_maintenance(&args.data, false)?;
    let r = store.gc(args.keep, grace)?;
    crate::out!(
        "dropped {} snapshot(s) and {} metadata record(s); removed {} blob(s), freed {}; {} unreferenced blob(s) within the grace period or in use",
        r.snapshots_dropped,
        r.metadata_dropped,
        r.blobs_removed,
        human_bytes(r.bytes_freed),
        r.blobs_in_grace
    );
    if r.files_made_whole > 0 {
        crate::out!(
            "copied the bytes {} file(s) borrowed from removed blobs into them (they hold every byte again)",
            r.files_made_whole
        );
    }
    Ok(())
}

/// `outpost repo set-lineage`
pub fn set_lineage(args: &RepoSetLineageArgs) -> Result<()> {
    let bytes = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let signed =
        outpost_protocol::lineage::SignedLineage::decode(&bytes).with_context(|| args.file.display().to_string())?;
    let (trust, _) = daemon::trust(&args.ca)?;
    let doc = signed.verify(&trust, unix_now()).with_context(|| format!("{}: REFUSED", args.file.display()))?;
    let store = open_for_maintenance(&args.data, false)?;
    let current = store.current()?.and_then(|s| s.unverified().ok());
    if let Some(c) = &current
        && doc.epoch <= c.epoch
    {
        bail!(
            "{} opens lineage {}, but this repository already serves lineage {}: sign a lineage greater than {}",
            args.file.display(),
            doc.epoch,
            c.epoch,
            c.epoch
        );
    }
    if store.role()?.is_some_and(|r| r != "main") {
        bail!("{} is an edge's data folder: a lineage is opened by the main repository", args.data.display());
    }
    store.set_lineage(&bytes)?;
    crate::out!(
        "Lineage {} ({}) installed: the main repository opens it at its next start, at snapshot {}.",
        doc.epoch,
        doc.reason,
        current.map_or(1, |c| c.sequence + 1)
    );
    Ok(())
}
