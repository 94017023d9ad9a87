//! `outpost server`: central and the main repository in one process.

use std::sync::Arc;

use actix::Actor;
use anyhow::{Context, Result, bail};
use outpost_actors::central::metrics::DbMetrics;
use outpost_actors::central::server::{ServerContext, serve};
use outpost_actors::central::store::CentralStore;
use outpost_actors::central::store::postgres::{self, PgConfig};
use outpost_actors::central::{Central, CentralConfig, CentralMetrics, Changed, EnrollmentCa, Revoked};
use outpost_actors::transport;
use outpost_protocol::central::{ALPN_CENTRAL, ALPN_ENROLL};
use outpost_protocol::pki::{self};
use outpost_protocol::wire::ALPN_REPO;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::cli::ServerArgs;
use crate::config::{self, ServerConfig};
use crate::daemon;
use crate::repo_cmd::{MainSetup, listen_addr};
use crate::secrets::{self, KEY_PASSWORD_ENV, PasswordSource};
use outpost_actors::clock::unix_now;

/// `outpost server`
pub fn server(args: &ServerArgs) -> Result<()> {
    let mut cfg: ServerConfig = config::with_flags(&config::load(args.daemon.config.as_deref())?, args)?;
    cfg.watch.extend(args.watch.iter().cloned());
    if args.no_repository {
        cfg.repository = false;
    }
    if args.no_central {
        cfg.central = false;
    }
    if !cfg.repository && !cfg.central {
        bail!("nothing to run: both the repository and central are turned off");
    }
    if cfg.host_days == 0 || cfg.host_days > pki::MAX_DAYS {
        bail!("host_days: {} must be between 1 and {} (days)", cfg.host_days, pki::MAX_DAYS);
    }
    let database = database(&cfg, args)?;
    let common = &cfg;
    let main =
        if cfg.repository { Some(MainSetup::new(cfg.main(), args.daemon.password_file.as_deref())?) } else { None };
    let identity = daemon::identity(&common.cert, &common.key, args.daemon.password_file.as_deref())?;
    let (trust, ca) = daemon::trust(&common.ca)?;
    let enrollment = if cfg.central && !cfg.enroll_cert.as_os_str().is_empty() {
        let cert = secrets::load_certs(&cfg.enroll_cert)?.remove(0);
        let source = PasswordSource {
            file: args.daemon.password_file.as_deref(),
            env: vec![KEY_PASSWORD_ENV],
            purpose: "the enrollment CA key".into(),
        };
        let key = secrets::load_key(&cfg.enroll_key, &source)?;
        let info = pki::cert_info(&cert)?;
        if !info.is_ca || info.public_key != key.public_key() {
            bail!("{}: not an enrollment CA matching {}", cfg.enroll_cert.display(), cfg.enroll_key.display());
        }
        Some(EnrollmentCa { cert, key })
    } else {
        None
    };
    let repo_addr = cfg.repository.then(|| common.listen.clone());
    let central_socket =
        if cfg.central { Some(transport::bind(listen_addr("central_listen", &cfg.central_listen)?)?) } else { None };
    let metrics_listener = daemon::bind_metrics(&common.metrics)?;
    daemon::run(move || async move {
        let cancel = CancellationToken::new();
        let mut registry = Registry::default();
        let revoked: Revoked = Revoked::default();
        let mut tasks = Vec::new();
        let mut publisher = None;
        let mut in_snapshot = Vec::new();
        if let Some(main) = main {
            let started = main.start(trust.clone(), &ca, &mut registry, revoked.clone(), cancel.clone())?;
            tasks.push(started.serving);
            publisher = Some(started.publisher);
            in_snapshot = started.revoked;
        }
        if let Some(socket) = central_socket {
            let (store, place) = match &database {
                Some((write, _)) => {
                    let db_metrics = Arc::new(DbMetrics::default());
                    db_metrics.register(&mut registry);
                    let store = CentralStore::open_postgres(write, db_metrics)
                        .with_context(|| format!("central's database {}", write.url))?;
                    (store, format!("PostgreSQL {}", write.url))
                }
                None => {
                    (CentralStore::open(&cfg.data.join("central"))?, cfg.data.join("central").display().to_string())
                }
            };
            let store_pg = store.postgres().cloned();
            let metrics = Arc::new(CentralMetrics::default());
            metrics.register(&mut registry);
            let central = Central::open(
                store,
                CentralConfig { trust: trust.clone(), enrollment, host_days: cfg.host_days },
                metrics.clone(),
                revoked.clone(),
                &in_snapshot,
            )
            .with_context(|| format!("opening central's data in {place}"))?;
            let read_pool = match database.as_ref().and_then(|(_, read)| read.as_ref()) {
                Some(read) => {
                    Some(postgres::pool(read).with_context(|| format!("the reporting replica {}", read.url))?)
                }
                None => None,
            };
            if let Some(pg) = store_pg.as_ref() {
                tasks.push(tokio::spawn(postgres::watch(
                    pg.pool().clone(),
                    read_pool.clone(),
                    pg.metrics().clone(),
                    cancel.clone(),
                )));
            }
            let central = match read_pool {
                Some(p) => central.with_read_pool(p),
                None => central,
            };
            // Revocations go into the main repository's snapshot, and so to every edge.
            let alone = publisher.is_none();
            let central = match publisher {
                Some(p) => central.with_revocation_hook(Box::new(move |fps| {
                    p.do_send(outpost_actors::repo::publisher::Revoke(fps));
                })),
                None => central,
            };
            let endpoint = transport::server_with(socket, &identity, &ca, &[ALPN_CENTRAL, ALPN_ENROLL], true)
                .with_context(|| format!("listening on {}", cfg.central_listen))?;
            let mut repos: Vec<String> = repo_addr.iter().cloned().collect();
            repos.extend(cfg.watch.iter().cloned());
            let central = central.start();
            if let (Some(pg), Some((write, _))) = (store_pg.as_ref(), database.as_ref()) {
                // Other instances on the same database: their changes reach this one's memory.
                let addr = central.clone();
                pg.follow(write, Box::new(move |change| addr.do_send(Changed(change))))
                    .context("following the other central instances' changes")?;
            }
            if alone && !cfg.watch.is_empty() {
                // Central alone: the main repository's snapshot tells it the revocations it may
                // have lost (a central rebuilt from scratch).
                tokio::spawn(learn_revocations(
                    cfg.watch.clone(),
                    transport::client(None, &identity, &ca, ALPN_REPO)?,
                    trust.clone(),
                    central.clone(),
                    cancel.clone(),
                ));
            }
            let reports = outpost_actors::central::verifier::ReportVerifier::start(metrics.batches_redone.clone());
            let ctx = Arc::new(ServerContext {
                central,
                metrics,
                revoked: revoked.clone(),
                repos,
                repo_client: Some(transport::client(None, &identity, &ca, ALPN_REPO)?),
                reports,
            });
            eprintln!("outpost central listening on {} (QUIC), data in {place}", endpoint.local_addr()?);
            tasks.push(tokio::spawn(serve(endpoint, ctx, cancel.clone())));
        }
        daemon::serve_metrics(metrics_listener, registry, cancel.clone())?;
        daemon::shutdown_signal().await;
        eprintln!("stopping");
        cancel.cancel();
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    })
}

/// The database central writes, and the replica reports read, when central runs on
/// PostgreSQL. The password comes from a file or the environment, never from the command line.
fn database(cfg: &ServerConfig, args: &ServerArgs) -> Result<Option<(PgConfig, Option<PgConfig>)>> {
    if cfg.database.is_empty() {
        if !cfg.database_read.is_empty() {
            bail!("database_read is set without database: reports read a replica of central's PostgreSQL database");
        }
        return Ok(None);
    }
    for (flag, url) in [("--database", &args.database), ("--database-read", &args.database_read)] {
        if let Some(url) = url
            && postgres::has_password(url)?
        {
            bail!(
                "{flag}: the password would show in the process list; put it in a file (--database-password-file, \
                 or database_password_file in server.toml) or in {DATABASE_PASSWORD_ENV}"
            );
        }
    }
    let password = if cfg.database_password_file.as_os_str().is_empty() {
        std::env::var(DATABASE_PASSWORD_ENV).ok()
    } else {
        let f = &cfg.database_password_file;
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading the database password {}", f.display()))?;
        Some(text.trim_end_matches(['\r', '\n']).to_string())
    };
    let make = |url: &str| PgConfig { url: url.to_string(), password: password.clone(), pool_size: cfg.database_pool };
    let read = (!cfg.database_read.is_empty()).then(|| make(&cfg.database_read));
    Ok(Some((make(&cfg.database), read)))
}

/// The environment variable holding the database password.
pub const DATABASE_PASSWORD_ENV: &str = "OUTPOST_DATABASE_PASSWORD";

/// Reads the revocations in the snapshot of the first repository of `repos` that answers,
/// at start and every hour, and tells central.
async fn learn_revocations(
    repos: Vec<String>,
    endpoint: transport::Endpoint,
    trust: outpost_protocol::pki::TrustStore,
    central: actix::Addr<Central>,
    cancel: CancellationToken,
) {
    loop {
        for addr in &repos {
            let got = async {
                let client = outpost_actors::repo::client::RepoClient::connect(&endpoint, addr).await?;
                let head = client.head().await?;
                let (_, snapshot) = client.snapshot(&head, &trust, unix_now(), None).await?;
                Ok::<_, outpost_actors::repo::client::ClientError>(snapshot.revoked.clone())
            }
            .await;
            match got {
                Ok(revoked) => {
                    let _ = central.send(outpost_actors::central::LearnRevoked(revoked)).await;
                    break;
                }
                Err(e) => tracing::debug!(repo = addr, "revocations not read: {e}"),
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
        }
    }
}
