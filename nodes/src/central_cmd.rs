//! `outpost server`, `outpost console …`, `outpost agent enroll` and `outpost pki enroll-ca`.

use std::sync::Arc;

use actix::Actor;
use anyhow::{Context, Result, bail};
use outpost_actors::central::client::{CentralClient, enroll};
use outpost_actors::central::server::{ServerContext, serve};
use outpost_actors::central::store::CentralStore;
use outpost_actors::central::{Central, CentralConfig, CentralMetrics, EnrollmentCa, Revoked};
use outpost_actors::transport;
use outpost_protocol::central::{
    ALPN_CENTRAL, ALPN_ENROLL, Action, ActionKind, AgentSettingsDoc, CentralRequest, CentralResponse, HostQuery,
    Signed, Targets,
};
use outpost_protocol::pki::{self, PrivateKey};
use outpost_protocol::time_fmt::format_unix;
use outpost_protocol::wire::ALPN_REPO;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::cli::{
    AgentEnrollArgs, ConsoleActionArgs, ConsoleArgs, ConsoleCommand, ConsoleHostArgs, ConsoleHostCommand,
    ConsoleHostsArgs, ConsoleSetPackagesArgs, ConsoleSettingsArgs, ConsoleTokenCommand, PkiEnrollCaArgs, ServerArgs,
    TargetArgs,
};
use crate::config::{self, ServerConfig};
use crate::daemon;
use crate::output::human_bytes;
use crate::packaging;
use crate::repo_cmd::{Common, MainSetup, listen_addr};
use crate::secrets::{self, CA_PASSWORD_ENV, KEY_PASSWORD_ENV, PasswordSource};
use outpost_actors::clock::unix_now;

/// `outpost server`
pub fn server(args: &ServerArgs) -> Result<()> {
    let mut cfg: ServerConfig = config::load(args.daemon.config.as_deref())?;
    if let Some(l) = &args.central_listen {
        cfg.central_listen = l.clone();
    }
    if let Some(c) = &args.enroll_cert {
        cfg.enroll_cert = c.clone();
    }
    if let Some(k) = &args.enroll_key {
        cfg.enroll_key = k.clone();
    }
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
    let common = Common::from(&cfg.node(), &args.daemon);
    cfg.data = common.data.clone();
    let main_cfg = cfg.main();
    let mut main_common = common.clone();
    main_common.data = cfg.data.join("repo");
    let main = if cfg.repository {
        Some(MainSetup::new(&main_cfg, main_common, args.daemon.password_file.as_deref())?)
    } else {
        None
    };
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
            let store = CentralStore::open(&cfg.data.join("central"))?;
            let metrics = Arc::new(CentralMetrics::default());
            metrics.register(&mut registry);
            let central = Central::open(
                store,
                CentralConfig { trust: trust.clone(), enrollment, host_days: cfg.host_days },
                metrics.clone(),
                revoked.clone(),
                &in_snapshot,
            )
            .with_context(|| format!("opening central's data in {}", cfg.data.join("central").display()))?;
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
            let ctx = Arc::new(ServerContext {
                central,
                metrics,
                revoked: revoked.clone(),
                repos,
                repo_client: Some(transport::client(None, &identity, &ca, ALPN_REPO)?),
            });
            eprintln!(
                "outpost central listening on {} (QUIC), data in {}",
                endpoint.local_addr()?,
                cfg.data.join("central").display()
            );
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

/// Runs `f` with a console connection to central.
fn with_central<T, F, Fut>(args: &ConsoleArgs, f: F) -> Result<T>
where
    F: FnOnce(CentralClient, (Vec<rustls_pki_types::CertificateDer<'static>>, PrivateKey)) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let identity = daemon::identity(&args.cert, &args.key, args.password_file.as_deref())?;
    let (_, ca) = daemon::trust(&args.ca)?;
    let key = PrivateKey::from_pkcs8_der(&identity.key)?;
    let chain = identity.chain.clone();
    let addr = args.server.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let endpoint = transport::client(None, &identity, &ca, ALPN_CENTRAL)?;
        let client = CentralClient::connect(&endpoint, &addr).await.with_context(|| format!("central {addr}"))?;
        let result = f(client.clone(), (chain, key)).await;
        client.close();
        transport::finish(&endpoint).await;
        result
    })
}

fn ask(args: &ConsoleArgs, request: CentralRequest) -> Result<CentralResponse> {
    with_central(args, move |c, _| async move { Ok(c.request(&request).await?) })
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    crate::out!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn ago(t: i64) -> String {
    if t == 0 {
        return "never".into();
    }
    let s = unix_now() - t;
    match s {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

/// `outpost console …`
pub fn console(cmd: &ConsoleCommand) -> Result<()> {
    match cmd {
        ConsoleCommand::Hosts(a) => hosts(a),
        ConsoleCommand::Host(a) => host(a),
        ConsoleCommand::Packages(a) => {
            let CentralResponse::Packages(p) = ask(a, CentralRequest::Packages)? else { bail!("unexpected answer") };
            if a.json {
                return print_json(&p);
            }
            crate::out!("{:<32} {:<40} VERSIONS", "PACKAGE", "HOSTS BY STATUS");
            for p in p {
                let st: Vec<String> = p.by_status.iter().map(|(k, v)| format!("{k} {v}")).collect();
                let ve: Vec<String> = p.versions.iter().map(|(k, v)| format!("{k} ({v})")).collect();
                crate::out!("{:<32} {:<40} {}", p.name, st.join(", "), ve.join(", "));
            }
            Ok(())
        }
        ConsoleCommand::Repos(a) => {
            let CentralResponse::Repos(r) = ask(a, CentralRequest::Repos)? else { bail!("unexpected answer") };
            if a.json {
                return print_json(&r);
            }
            crate::out!(
                "{:<24} {:<22} {:<6} {:>8} {:>5} {:<22} STATE",
                "NAME",
                "ADDRESS",
                "ROLE",
                "SNAPSHOT",
                "LAG",
                "UPSTREAM"
            );
            for l in r {
                crate::out!(
                    "{:<24} {:<22} {:<6} {:>8} {:>5} {:<22} {}",
                    l.name,
                    l.addr,
                    l.role,
                    l.sequence.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                    l.lag.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                    l.upstream.unwrap_or_default(),
                    l.error.map_or_else(|| "ok".to_string(), |e| format!("ERROR: {e}"))
                );
            }
            Ok(())
        }
        ConsoleCommand::Actions(a) => {
            let CentralResponse::Actions(list) = ask(a, CentralRequest::Actions)? else { bail!("unexpected answer") };
            if a.json {
                return print_json(&list);
            }
            for l in list {
                crate::out!(
                    "{} {} {} for {} by {:?}, expires {}: {} result(s), {} pending",
                    &l.id[..8],
                    l.kind,
                    l.packages.join(","),
                    l.targets,
                    l.issuer,
                    format_unix(l.expires),
                    l.results.len(),
                    l.pending.len()
                );
                for (h, ok, m, lat) in &l.results {
                    crate::out!("    {:<30} {:<6} {:>6.2}s {}", h, if *ok { "OK" } else { "FAILED" }, lat, m);
                }
            }
            Ok(())
        }
        ConsoleCommand::Pending(a) => {
            let CentralResponse::PendingHostsV2(p) = ask(a, CentralRequest::PendingV2)? else {
                bail!("unexpected answer")
            };
            if a.json {
                return print_json(&p);
            }
            for h in p {
                crate::out!("{:<32} {:<38} waiting since {}", h.fqdn, h.uuid, format_unix(h.since));
                crate::out!("    {}", h.reason);
            }
            Ok(())
        }
        ConsoleCommand::Token(ConsoleTokenCommand::Create { uses, valid, console }) => {
            let valid = config::duration_at_least("--valid", valid, std::time::Duration::from_secs(1))?.as_secs();
            let CentralResponse::Token { token, expires, uses } =
                ask(console, CentralRequest::TokenCreate { uses: *uses, valid_secs: valid })?
            else {
                bail!("unexpected answer")
            };
            if console.json {
                return print_json(&json!({"token": token, "expires": expires, "uses": uses}));
            }
            eprintln!("Enrollment token for {uses} host(s), valid until {} (shown once):", format_unix(expires));
            crate::out!("{token}");
            Ok(())
        }
        ConsoleCommand::Action(a) => action(a),
        ConsoleCommand::Settings(a) => settings(a),
    }
}

fn hosts(a: &ConsoleHostsArgs) -> Result<()> {
    let q = HostQuery {
        status: a.status.clone(),
        package: a.package.clone(),
        software: a.software.clone(),
        ou: a.ou.clone(),
        site: a.site.clone(),
        limit: a.limit,
    };
    let CentralResponse::Hosts { total, hosts } = ask(&a.console, CentralRequest::Hosts(q))? else {
        bail!("unexpected answer")
    };
    if a.console.json {
        return print_json(&json!({"total": total, "hosts": hosts}));
    }
    crate::out!("{:<32} {:<13} {:<10} {:<26} {:>8} {:>4} SEEN", "HOST", "STATUS", "SITE", "OU", "PACKAGES", "REPORT");
    for h in &hosts {
        crate::out!(
            "{:<32} {:<13} {:<10} {:<26} {:>8} {:>4} {}{}{}",
            h.fqdn,
            h.status,
            h.site,
            h.ou,
            h.packages,
            h.sequence,
            ago(h.last_seen),
            if h.online { ", online" } else { "" },
            if h.revoked { ", REVOKED" } else { "" }
        );
        if let Some(c) = &h.clash {
            crate::out!("    CLASH (certificate sha256:{}): {c}", &h.fingerprint[..16.min(h.fingerprint.len())]);
        }
    }
    if (hosts.len() as u64) < total {
        eprintln!("{} of {total} hosts shown (--limit)", hosts.len());
    } else {
        eprintln!("{total} host(s)");
    }
    Ok(())
}

fn host(a: &ConsoleHostArgs) -> Result<()> {
    match (&a.action, &a.name, &a.console) {
        (Some(ConsoleHostCommand::Approve { name, replace, console }), _, _) => done(
            console,
            if *replace {
                CentralRequest::ApproveReplacing(name.clone())
            } else {
                CentralRequest::Approve(name.clone())
            },
        ),
        (Some(ConsoleHostCommand::Revoke { name, console }), _, _) => {
            done(console, CentralRequest::Revoke(name.clone()))
        }
        (Some(ConsoleHostCommand::SetPackages(s)), _, _) => set_packages(s),
        (None, Some(name), Some(console)) => {
            let CentralResponse::Host(d) = ask(console, CentralRequest::Host(name.clone()))? else {
                bail!("unexpected answer")
            };
            if console.json {
                return print_json(&d);
            }
            let s = &d.summary;
            crate::out!("host:      {} ({})", s.fqdn, s.uuid);
            crate::out!("cert:      sha256:{}", s.fingerprint);
            crate::out!("status:    {}{}", s.status, if s.revoked { " (certificate REVOKED)" } else { "" });
            if let Some(c) = &s.clash {
                crate::out!("CLASH:     {c}");
            }
            crate::out!("ou:        {}", s.ou);
            crate::out!("site:      {}", s.site);
            crate::out!("report:    {} ({}){}", s.sequence, ago(s.last_seen), if s.online { ", online" } else { "" });
            for section in d.inventory.sections.values() {
                use outpost_protocol::central::Section;
                match section {
                    Section::Hardware(h) => {
                        crate::out!("hardware:  {} {} (serial {}, BIOS {})", h.vendor, h.product, h.serial, h.bios);
                    }
                    Section::Os(o) => {
                        crate::out!("os:        {} {} (kernel {}, {})", o.name, o.version, o.kernel, o.arch);
                    }
                    Section::Cpu(c) => {
                        crate::out!("cpu:       {} ({} threads)", c.model, c.threads);
                    }
                    Section::Memory(m) => {
                        crate::out!("memory:    {}", human_bytes(*m));
                    }
                    Section::Disks(d) => {
                        for d in d {
                            crate::out!(
                                "disk:      {} {} {} free of {}",
                                d.mount,
                                d.fs,
                                human_bytes(d.free),
                                human_bytes(d.size)
                            );
                        }
                    }
                    Section::Network(n) => {
                        for i in n {
                            crate::out!("network:   {} {} {}", i.name, i.mac, i.addresses.join(" "));
                        }
                    }
                    Section::Software(s) => {
                        crate::out!("software:  {} installed (--json lists them)", s.len());
                    }
                    Section::Snapshot(Some(snap)) => {
                        crate::out!(
                            "snapshot:  {} (made {}, expires {}){}",
                            snap.sequence,
                            format_unix(snap.created),
                            format_unix(snap.expires),
                            if snap.expired { ": EXPIRED, nothing new is installed" } else { "" }
                        );
                    }
                    Section::LastUpdate(Some(u)) => {
                        crate::out!(
                            "update:    {} {} ({})",
                            if u.ok { "ok" } else { "FAILED" },
                            format_unix(u.at),
                            u.message
                        );
                    }
                    _ => {}
                }
            }
            crate::out!("{:<13} {:<32} {:<14} {:<14} REASON", "STATUS", "PACKAGE", "INSTALLED", "TARGET");
            for p in d.inventory.packages() {
                crate::out!(
                    "{:<13} {:<32} {:<14} {:<14} {}",
                    p.status,
                    p.name,
                    p.installed.clone().unwrap_or_default(),
                    p.target.clone().unwrap_or_default(),
                    p.reason.clone().unwrap_or_default()
                );
                if p.status == "ERROR"
                    && let Some(o) = &p.output
                {
                    for line in o.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev() {
                        crate::out!("    | {line}");
                    }
                }
            }
            Ok(())
        }
        _ => bail!("give a host (UUID or FQDN) and --server/--ca/--cert/--key, or approve|revoke|set-packages"),
    }
}

fn done(console: &ConsoleArgs, request: CentralRequest) -> Result<()> {
    match ask(console, request)? {
        CentralResponse::Done(m) => {
            crate::out!("{m}");
            Ok(())
        }
        other => bail!("unexpected answer {other:?}"),
    }
}

fn targets(t: &TargetArgs) -> Result<Targets> {
    Ok(if t.all {
        Targets::All
    } else if let Some(ou) = &t.ou {
        Targets::Ou(ou.clone())
    } else if !t.hosts.is_empty() {
        Targets::Hosts(t.hosts.clone())
    } else {
        bail!("say which hosts: --hosts NAME,…, --ou DN or --all")
    })
}

fn nonce() -> Result<[u8; 16]> {
    let mut n = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut n)
        .map_err(|_| anyhow::anyhow!("no randomness available"))?;
    Ok(n)
}

/// Relays a signed action and prints central's answer.
fn relay(console: &ConsoleArgs, signed: Signed) -> Result<()> {
    match ask(console, CentralRequest::Act(signed))? {
        CentralResponse::ActionQueued { id, targets, online } => {
            if console.json {
                return print_json(&json!({"id": id, "targets": targets, "online": online}));
            }
            crate::out!(
                "Action {id} relayed to {online} of {targets} target host(s); the others get it when they connect (until it expires)."
            );
            Ok(())
        }
        other => bail!("unexpected answer {other:?}"),
    }
}

fn action(a: &ConsoleActionArgs) -> Result<()> {
    if a.kind == "send" {
        let Some(path) = &a.signed else { bail!("`send` needs --signed FILE") };
        let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
        let signed: Signed =
            postcard::from_bytes(&bytes).with_context(|| format!("{}: not a signed action", path.display()))?;
        return relay(&a.console, signed);
    }
    let kind = match a.kind.as_str() {
        "update" => ActionKind::Update,
        "upgrade" => ActionKind::Upgrade,
        "install" | "remove" if a.packages.is_empty() => bail!("{} needs package names", a.kind),
        "install" => ActionKind::Install(a.packages.clone()),
        _ => ActionKind::Remove(a.packages.clone()),
    };
    let valid = config::duration_at_least("--expires", &a.expires, std::time::Duration::from_secs(1))?.as_secs();
    let most = outpost_protocol::central::MAX_ACTION_SECS.unsigned_abs();
    if valid > most {
        bail!("--expires: {:?} is too long; an action is valid for at most 30 days", a.expires);
    }
    let created = unix_now();
    let action = Action {
        nonce: nonce()?,
        targets: targets(&a.targets)?,
        kind,
        created,
        expires: created + i64::try_from(valid).unwrap_or(i64::MAX / 2),
    };
    let (chain, key) = admin_key(&a.console)?;
    let signed = action.sign(&key, &chain);
    if let Some(out) = &a.out {
        std::fs::write(out, postcard::to_stdvec(&signed)?).with_context(|| out.display().to_string())?;
    }
    relay(&a.console, signed)
}

fn admin_key(c: &ConsoleArgs) -> Result<(Vec<rustls_pki_types::CertificateDer<'static>>, PrivateKey)> {
    let identity = daemon::identity(&c.cert, &c.key, c.password_file.as_deref())?;
    Ok((identity.chain.clone(), PrivateKey::from_pkcs8_der(&identity.key)?))
}

fn settings(a: &ConsoleSettingsArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.file).with_context(|| a.file.display().to_string())?;
    let _: config::AgentOverlay = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", a.file.display()))?;
    let doc = AgentSettingsDoc {
        sequence: a.sequence.unwrap_or_else(|| u64::try_from(unix_now()).unwrap_or(0)),
        targets: targets(&a.targets)?,
        toml: text,
        created: unix_now(),
    };
    let (chain, key) = admin_key(&a.console)?;
    done(&a.console, CentralRequest::SetSettings(doc.sign(&key, &chain)))
}

fn set_packages(a: &ConsoleSetPackagesArgs) -> Result<()> {
    for p in &a.packages {
        outpost_protocol::request::PackageRequest::parse(p).with_context(|| format!("package request {p:?}"))?;
    }
    let work = std::env::temp_dir().join(format!("outpost-host-package-{}-{}", std::process::id(), unix_now()));
    let _ = std::fs::remove_dir_all(&work);
    let src = work.join("src");
    std::fs::create_dir_all(src.join("WAPT"))?;
    // Versions only grow: the time of the change.
    let version = format!("{}", unix_now());
    let control = format!(
        "package: {}\nversion: {version}\narchitecture: all\nsection: host\npriority: optional\ndescription: host package of {} (outpost console host set-packages)\ndepends: {}\n",
        a.host,
        a.host,
        a.packages.join(",")
    );
    std::fs::write(src.join("WAPT/control"), control)?;
    let signing = crate::cli::SigningKey {
        cert: a.console.cert.clone(),
        key: a.console.key.clone(),
        password_file: a.console.password_file.clone(),
    };
    let client = crate::cli::ClientArgs {
        repo: a.repo.clone(),
        ca: a.console.ca.clone(),
        cert: a.console.cert.clone(),
        key: a.console.key.clone(),
        password_file: a.console.password_file.clone(),
        min_rate: "16KiB".into(),
    };
    let published = crate::secrets::load_signer(&signing)
        .and_then(|signer| packaging::build(&src, &work, &signer, crate::signing_time(), false))
        .and_then(|built| packaging::publish(&client, &built.path));
    let _ = std::fs::remove_dir_all(&work);
    let p = published?;
    crate::out!("Published {} {} to {}: snapshot {}", p.name, p.version, a.repo, p.sequence);
    if a.now {
        let created = unix_now();
        let (chain, key) = admin_key(&a.console)?;
        let action = Action {
            nonce: nonce()?,
            targets: Targets::Hosts(vec![a.host.clone()]),
            kind: ActionKind::Upgrade,
            created,
            expires: created + 3600,
        };
        relay(&a.console, action.sign(&key, &chain))?;
    }
    Ok(())
}

/// `outpost agent enroll`
pub fn agent_enroll(args: &AgentEnrollArgs) -> Result<()> {
    let (cfg, _) = crate::agent_cmd::settings(&args.agent)?;
    if cfg.server.is_empty() {
        bail!("no central server: give --server ADDR or `server` in the configuration");
    }
    if !args.force
        && let Some(existing) = [&cfg.cert, &cfg.key].into_iter().find(|p| p.exists())
    {
        bail!("{} already exists (use --force to enroll again and replace it)", existing.display());
    }
    let (_, ca) = daemon::trust(&cfg.ca)?;
    let machine = outpost_actors::agent::identity::detect(
        Some(cfg.uuid.as_str()).filter(|s| !s.is_empty()),
        Some(cfg.fqdn.as_str()).filter(|s| !s.is_empty()),
    );
    let key = PrivateKey::generate()?;
    let request = pki::certificate_request(&key, &machine.fqdn)?;
    let wait = config::duration("--wait", &args.wait)?;
    let deadline = std::time::Instant::now() + wait;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut told = false;
    let chain = loop {
        let req = CentralRequest::Enroll {
            request: request.clone(),
            token: args.token.clone(),
            uuid: machine.uuid.clone(),
            fqdn: machine.fqdn.clone(),
        };
        let answer = runtime
            .block_on(enroll(&ca, &cfg.server, req))
            .with_context(|| format!("enrolling with central {}", cfg.server))?;
        match answer {
            CentralResponse::Enrolled { chain_pem } => break chain_pem,
            CentralResponse::EnrollPending | CentralResponse::EnrollWaiting { .. } => {
                if !told {
                    if let CentralResponse::EnrollWaiting { reason } = &answer {
                        eprintln!("Waiting for an administrator: {reason}");
                    } else {
                        eprintln!(
                            "Waiting for an administrator: outpost console host approve {} (or {})",
                            machine.fqdn, machine.uuid
                        );
                    }
                    told = true;
                }
                if std::time::Instant::now() > deadline {
                    bail!(
                        "not approved within {}; run `outpost agent enroll` again later (the request stays waiting)",
                        args.wait
                    );
                }
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            other => bail!("unexpected answer {other:?}"),
        }
    };
    let certs = pki::parse_pem_certificates(&chain)?;
    let info = pki::cert_info(&certs[0])?;
    if info.public_key != key.public_key() {
        bail!("central returned a certificate for another key");
    }
    let key_pem = pki::encode_private_key(&key, None)?;
    for p in [&cfg.cert, &cfg.key] {
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
        }
    }
    outpost_actors::disk::write_all_or_none(
        &[(cfg.key.as_path(), key_pem.as_bytes(), 0o600), (cfg.cert.as_path(), chain.as_bytes(), 0o644)],
        args.force,
    )
    .with_context(|| format!("writing {} and {}", cfg.cert.display(), cfg.key.display()))?;
    eprintln!("Enrolled {} ({}): certificate valid until {}.", machine.fqdn, machine.uuid, format_unix(info.not_after));
    crate::out!("{}", cfg.cert.display());
    Ok(())
}

/// `outpost pki enroll-ca`
pub fn enroll_ca(args: &PkiEnrollCaArgs) -> Result<()> {
    let cert_path = args.dir.join("enroll-ca.crt");
    let key_path = args.dir.join("enroll-ca.key");
    if !args.force
        && let Some(existing) = [&cert_path, &key_path].into_iter().find(|p| p.exists())
    {
        bail!("{} already exists; use --force to replace it", existing.display());
    }
    let ca_cert = secrets::load_certs(&args.dir.join("ca.crt"))?.remove(0);
    let source = PasswordSource {
        file: args.ca_password_file.as_deref(),
        env: vec![CA_PASSWORD_ENV, KEY_PASSWORD_ENV],
        purpose: format!("the CA key {}", args.dir.join("ca.key").display()),
    };
    let ca_key = secrets::load_key(&args.dir.join("ca.key"), &source)?;
    let password = if args.password.no_password {
        None
    } else {
        let s = PasswordSource {
            file: args.password.password_file.as_deref(),
            env: vec![KEY_PASSWORD_ENV],
            purpose: "the enrollment CA key".into(),
        };
        Some(s.get(true).context("(or use --no-password: central loads this key unattended)")?)
    };
    let issued = pki::create_enrollment_ca(&ca_cert, &ca_key, &args.name, unix_now(), args.days)?;
    let key_pem = pki::encode_private_key(&issued.key, password.as_ref().map(|p| p.as_bytes()))?;
    outpost_actors::disk::write_all_or_none(
        &[(key_path.as_path(), key_pem.as_bytes(), 0o600), (cert_path.as_path(), issued.cert_pem().as_bytes(), 0o644)],
        args.force,
    )?;
    eprintln!("Made the enrollment CA {:?}: it can issue host certificates only.", args.name);
    eprintln!("  give central: enroll_cert = {:?}, enroll_key = {:?}", cert_path, key_path);
    crate::out!("{}", cert_path.display());
    Ok(())
}
