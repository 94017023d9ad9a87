//! `outpost agent run | update | upgrade | download-upgrade | install | remove | status |
//! audit | repos`. One-shot commands are sent to the daemon when it runs (its control socket),
//! and run here otherwise, holding the state folder's lock.

use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use anyhow::{Context, Result, bail};
use outpost_actors::agent::actor::{self, AgentActor, Command, Reply};
use outpost_actors::agent::control;
use outpost_actors::agent::report::{Answer, StatusReport};
use outpost_actors::agent::select::Sources;
use outpost_actors::agent::{Agent, AgentSettings};
use outpost_actors::central::client::enroll;
use outpost_protocol::central::{CentralRequest, CentralResponse};
use outpost_protocol::pki::{self, PrivateKey};
use outpost_protocol::resolver::PackageStatus;
use outpost_protocol::time_fmt::format_unix;
use tokio_util::sync::CancellationToken;

use crate::cli::{AgentArgs, AgentEnrollArgs, AgentInstallArgs, AgentNamesArgs, AgentReadArgs, AgentTextArgs};
use crate::config::{self, AgentConfig};
use crate::daemon;
use crate::output::{Table, human_bytes};
use crate::progress::Progress;

/// The configuration after the file, the `config` packages' overlays and the flags.
pub fn settings(args: &AgentArgs) -> Result<(AgentConfig, AgentSettings)> {
    settings_with(args, true)
}

/// The same, with or without the `config` packages' overlays.
fn settings_with(args: &AgentArgs, overlays: bool) -> Result<(AgentConfig, AgentSettings)> {
    let file: AgentConfig = config::load(config::agent_config_path(args.config.as_deref()).as_deref())?;
    // The flags go over the file (the state folder they name holds the overlays), then over
    // the `config` packages' overlays: a flag always wins.
    let cfg = config::with_flags(&file, args)?;
    let mut cfg = if overlays { config::with_flags(&cfg.with_overlays()?, args)? } else { cfg };
    // Absolute from here on: hooks run in their package's folder and are given these paths.
    cfg.state = std::path::absolute(&cfg.state).with_context(|| format!("state: {}", cfg.state.display()))?;
    for field in [&mut cfg.ca, &mut cfg.cert, &mut cfg.key] {
        if !field.as_os_str().is_empty() {
            *field = std::path::absolute(&*field).unwrap_or_else(|_| field.clone());
        }
    }
    config::duration_at_least("update_every", &cfg.update_every, Duration::from_secs(1))?;
    // A UUID given by `agent reset-uuid` stands before the detected one (the configuration's
    // before both).
    if cfg.uuid.is_empty()
        && let Some(u) = outpost_actors::agent::identity::reset_uuid(&cfg.state)
    {
        cfg.uuid = u;
    }
    let rules = cfg.rules.iter().map(config::RuleConfig::rule).collect::<Result<Vec<_>>>()?;
    let opt = |s: &str| Some(s.to_string()).filter(|v| !v.is_empty());
    let ip = |field: &str, s: &str| -> Result<Option<std::net::IpAddr>> {
        opt(s).map(|v| v.parse().with_context(|| format!("{field}: {v:?} is not an IP address"))).transpose()
    };
    let dns_servers = cfg
        .dns_servers
        .iter()
        .map(|s| s.parse().with_context(|| format!("dns_servers: {s:?} should be ip:port")))
        .collect::<Result<Vec<_>>>()?;
    let machine_domain =
        outpost_actors::agent::identity::detect(opt(&cfg.uuid).as_deref(), opt(&cfg.fqdn).as_deref()).domain;
    let sources = Sources {
        rules,
        configured: cfg.repos.clone(),
        configured_only: !args.repos.is_empty(),
        main: opt(&cfg.main),
        srv_domain: if cfg.srv_discovery { opt(&cfg.dns_domain).or(machine_domain) } else { None },
        dns_servers,
    };
    let settings = AgentSettings {
        state_dir: cfg.state.clone(),
        sources,
        bind: ip("bind", &cfg.bind)?,
        uuid: opt(&cfg.uuid),
        fqdn: opt(&cfg.fqdn),
        ou: opt(&cfg.ou),
        profiles: cfg.profiles.clone(),
        site: opt(&cfg.site),
        public_ip: ip("public_ip", &cfg.public_ip)?,
        maturities: cfg.maturities.clone(),
        locales: cfg.locales.clone(),
        hook_timeout: config::duration_at_least("hook_timeout", &cfg.hook_timeout, Duration::from_secs(1))?,
        postpone_impacted: match cfg.impacted_process.as_str() {
            "close" => false,
            "postpone" => true,
            other => bail!("impacted_process: {other:?} must be close or postpone"),
        },
        pace: config::min_rate("min_rate", &cfg.min_rate)?,
        probation: config::duration("probation", &cfg.probation)?,
    };
    if !["auto", "manual"].contains(&cfg.upgrade.as_str()) {
        bail!("upgrade: {:?} must be auto or manual", cfg.upgrade);
    }
    Ok((cfg, settings))
}

fn open(args: &AgentArgs, cfg: &AgentConfig, settings: AgentSettings) -> Result<Agent> {
    let identity = daemon::identity(&cfg.cert, &cfg.key, args.password_file.as_deref())?;
    let (_, ca) = daemon::trust(&cfg.ca)?;
    Agent::open(settings, &identity, &ca).with_context(|| format!("opening the agent state in {}", cfg.state.display()))
}

/// Holds the state folder's lock: one agent process per state folder.
struct StateLock(#[allow(dead_code)] std::fs::File);

fn lock(state: &std::path::Path) -> Result<StateLock> {
    std::fs::create_dir_all(state).with_context(|| format!("creating {}", state.display()))?;
    let path = state.join("agent.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| path.display().to_string())?;
    file.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "another outpost agent is using {} and does not answer on its control channel; wait for it or stop \
             it{}",
            state.display(),
            if cfg!(windows) {
                " (the control pipe is open to Administrators and SYSTEM only: run this from an administrator's \
                 prompt)"
            } else {
                ""
            }
        )
    })?;
    Ok(StateLock(file))
}

/// `outpost agent run`
pub fn run(args: &AgentArgs) -> Result<()> {
    let (cfg, agent_settings) = settings(args)?;
    let config_file = config::agent_config_path(args.config.as_deref());
    let _lock = lock(&cfg.state)?;
    // The state folder holds what the agent installs from and its records: SYSTEM and
    // Administrators only (on Unix, the folder's owner, as made by the packages and units).
    #[cfg(windows)]
    if let Err(e) = outpost_actors::windows::acl::restrict_folder(&cfg.state) {
        eprintln!("warning: could not restrict {} to SYSTEM and Administrators: {e}", cfg.state.display());
    }
    let metrics_listener = daemon::bind_metrics(&cfg.metrics)?;
    let link_args = LinkArgs {
        server: cfg.server.clone(),
        cert: cfg.cert.clone(),
        key: cfg.key.clone(),
        ca: cfg.ca.clone(),
        password_file: args.password_file.clone(),
        state: cfg.state.clone(),
        bind: agent_settings.bind.map(|ip| std::net::SocketAddr::new(ip, 0)),
    };
    let reopen_args = args.clone();
    let reopen: actor::Reopen = Box::new(move |overlays| {
        let (cfg, settings) = settings_with(&reopen_args, overlays)?;
        let every = config::duration_at_least("update_every", &cfg.update_every, Duration::from_secs(1))?;
        let agent = open(&reopen_args, &cfg, settings)?;
        Ok((agent, every, cfg.upgrade == "auto"))
    });
    daemon::run(move || async move {
        let cancel = CancellationToken::new();
        let (agent, every, auto) = reopen(true).map_err(|e| anyhow::anyhow!(e))?;
        let m = agent.machine().clone();
        eprintln!(
            "outpost agent for {} (uuid {}), state in {}, update every {}, upgrade {}",
            m.fqdn,
            m.uuid,
            cfg.state.display(),
            config::human_duration(every),
            if auto { "auto" } else { "manual" }
        );
        let changed = Arc::new(tokio::sync::Notify::new());
        let metrics = Arc::new(outpost_actors::agent::metrics::AgentMetrics::default());
        let mut registry = prometheus_client::registry::Registry::default();
        metrics.register(&mut registry);
        daemon::serve_metrics(metrics_listener, registry, cancel.clone())?;
        let addr = AgentActor::new(Arc::new(agent), every, auto, Some(reopen))
            .with_notify(changed.clone())
            .with_metrics(metrics)
            .start();
        let link = if link_args.server.is_empty() {
            None
        } else {
            let identity = daemon::identity(&link_args.cert, &link_args.key, link_args.password_file.as_deref())?;
            let (trust, ca) = daemon::trust(&link_args.ca)?;
            let endpoint = outpost_actors::transport::client(
                link_args.bind,
                &identity,
                &ca,
                outpost_protocol::central::ALPN_CENTRAL,
            )?;
            let key = outpost_protocol::pki::PrivateKey::from_pkcs8_der(&identity.key)?;
            let fingerprint = outpost_protocol::pki::cert_info(&identity.chain[0])?.fingerprint;
            eprintln!("reporting to central {}", link_args.server);
            let cfg = outpost_actors::agent::link::LinkConfig {
                server: link_args.server.clone(),
                endpoint,
                key,
                fingerprint,
                trust,
                state_dir: link_args.state.clone(),
                actor: addr.clone(),
                changed,
            };
            Some(tokio::spawn(outpost_actors::agent::link::run(cfg, cancel.clone())))
        };
        let control = {
            let state = cfg.state.clone();
            let (config_file, cancel) = (config_file.clone(), cancel.clone());
            tokio::spawn(async move {
                if let Err(e) = control::serve(&state, addr, config_file, cancel).await {
                    eprintln!("the control channel failed: {e}; one-shot commands cannot reach this daemon");
                }
            })
        };
        daemon::shutdown_signal().await;
        eprintln!("stopping");
        cancel.cancel();
        let _ = control.await;
        if let Some(l) = link {
            let _ = l.await;
        }
        Ok(())
    })
}

/// What the daemon's link to central needs from the settings.
struct LinkArgs {
    server: String,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    ca: std::path::PathBuf,
    password_file: Option<std::path::PathBuf>,
    state: std::path::PathBuf,
    bind: Option<std::net::SocketAddr>,
}

/// Runs `command` by the daemon if it answers, here otherwise; prints the reply.
fn execute(args: &AgentArgs, command: &Command, json: bool) -> Result<()> {
    let (cfg, settings) = settings(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let reply = runtime.block_on(async {
        if let Some(daemon) = control::connect_daemon(&cfg.state).await {
            let ignored = args.daemon_overrides();
            if !ignored.is_empty() {
                bail!(
                    "the agent daemon is running for {} with its own configuration, so {} cannot apply to this \
                     command: leave {} out (or change the configuration file), or stop the daemon first",
                    cfg.state.display(),
                    ignored.join(", "),
                    if ignored.len() == 1 { "it" } else { "them" }
                );
            }
            let request = actor::ControlRequest {
                config: config::agent_config_path(args.config.as_deref()),
                command: command.clone(),
            };
            if let Some(reply) = control::ask_daemon(daemon, &request).await {
                return Ok::<_, anyhow::Error>(reply);
            }
        }
        let _lock = lock(&cfg.state)?;
        let agent = open(args, &cfg, settings)?;
        let bar = Progress::bytes("", 0);
        let last = std::sync::Mutex::new(String::new());
        let progress = |label: &str, done: u64, total: u64| {
            let mut l = last.lock().expect("not poisoned");
            if *l != label {
                *l = label.to_string();
                bar.resize(total);
            }
            bar.set(done);
        };
        let reply = actor::run(&agent, command.clone(), &progress).await;
        bar.finish();
        Ok(reply)
    })?;
    let answer = match reply {
        Reply::Ok(answer) => answer,
        Reply::Error(e) => bail!("{e}"),
    };
    if json {
        crate::out!("{}", serde_json::to_string_pretty(&answer_json(&answer)?)?);
    } else {
        render(&answer);
    }
    let failed: Vec<&str> = answer.failed().iter().map(|f| f.name.as_str()).collect();
    if !failed.is_empty() {
        bail!(
            "{} package(s) failed: {} (see above; `outpost agent status` shows their output)",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// The report inside `answer`, as `--json` prints it.
fn answer_json(answer: &Answer) -> serde_json::Result<serde_json::Value> {
    match answer {
        Answer::Update(r) => serde_json::to_value(r),
        Answer::Upgrade(r) => serde_json::to_value(r),
        Answer::Status(r) => serde_json::to_value(r),
        Answer::Repos(r) => serde_json::to_value(r),
        Answer::Audit(r) => serde_json::to_value(r),
        Answer::Inventory(r) => serde_json::to_value(r),
        Answer::Reloaded => Ok(serde_json::json!({ "reloaded": true })),
        Answer::Search(r) => serde_json::to_value(r),
        Answer::Show(r) => Ok(offer_json(r)),
        Answer::List(r) => serde_json::to_value(r),
        Answer::Cleaned(r) => serde_json::to_value(r),
    }
}

/// An offer as JSON: each version's fields as an object (not pairs).
fn offer_json(o: &outpost_actors::agent::catalogue::Offer) -> serde_json::Value {
    let mut v = serde_json::to_value(o).unwrap_or_default();
    if let Some(versions) = v["versions"].as_array_mut() {
        for (i, ver) in versions.iter_mut().enumerate() {
            let fields: serde_json::Map<String, serde_json::Value> =
                o.versions[i].control.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect();
            ver["control"] = serde_json::Value::Object(fields);
        }
    }
    v
}

fn or_blank<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn render(answer: &Answer) {
    match answer {
        Answer::Update(u) => {
            crate::out!(
                "{} snapshot {} from {}: {} step(s) pending, host {}",
                if u.changed { "New" } else { "Unchanged" },
                u.sequence,
                u.repo,
                u.pending,
                u.host_status
            );
            for r in &u.refused {
                crate::out!("  refused: {r}");
            }
        }
        Answer::Upgrade(u) => {
            if u.offline {
                crate::out!("No repository answered: working from the cache.");
            }
            for p in &u.postponed {
                crate::out!("postponed: {}: {}", p.name, p.reason);
            }
            for (list, what) in [(&u.removed, "removed"), (&u.installed, "installed"), (&u.downloaded, "downloaded")] {
                for p in list {
                    crate::out!("  {what}: {p}");
                }
            }
            for f in &u.failed {
                crate::out!("  FAILED {}: {}", f.name, f.reason);
            }
            if u.fetched_bytes > 0 {
                crate::out!("  fetched {}", human_bytes(u.fetched_bytes));
            }
            if u.installed.is_empty() && u.removed.is_empty() && u.failed.is_empty() && u.downloaded.is_empty() {
                crate::out!("Nothing to do.");
            }
        }
        Answer::Status(st) => render_status(st),
        Answer::Repos(r) => {
            crate::out!("{:<3} {:<28} {:<40} {:>9} {:>8} {}", "", "REPOSITORY", "FROM", "RTT ms", "SNAPSHOT", "STATE");
            for c in &r.candidates {
                let rtt = c.rtt_ms.map_or_else(|| "-".into(), |r| format!("{r:.1}"));
                let state = if c.healthy {
                    "healthy".to_string()
                } else {
                    format!("down: {}", c.error.as_deref().unwrap_or_default())
                };
                crate::out!(
                    "{:<3} {:<28} {:<40} {:>9} {:>8} {}",
                    if c.chosen { "=>" } else { "" },
                    c.addr,
                    c.origin,
                    rtt,
                    or_blank(c.sequence),
                    state
                );
            }
            if let Some(e) = &r.dns_error {
                crate::out!("DNS discovery: {e}");
            }
        }
        Answer::Inventory(_) | Answer::Reloaded => {
            crate::out!("{}", answer_json(answer).and_then(|v| serde_json::to_string_pretty(&v)).unwrap_or_default());
        }
        Answer::Audit(lines) => {
            for a in lines {
                crate::out!("{:<8} {:<32} {}", a.result, a.name, a.message);
            }
        }
        Answer::Search(offers) => {
            let mut t = Table::new(&["PACKAGE", "THIS HOST GETS", "INSTALLED", "OFFERED", "DESCRIPTION"]);
            for o in offers {
                let offered: Vec<String> = o
                    .versions
                    .iter()
                    .map(|v| {
                        if v.fits {
                            v.version.clone()
                        } else {
                            format!("{} (no: {})", v.version, or_blank(v.why_not.as_ref()))
                        }
                    })
                    .collect();
                t.row(vec![
                    o.name.clone(),
                    o.chosen.clone().unwrap_or_else(|| "nothing fits".into()),
                    o.installed.clone().unwrap_or_default(),
                    offered.join(", "),
                    o.description.lines().next().unwrap_or_default().to_string(),
                ]);
            }
            t.print();
            eprintln!("{} package(s)", offers.len());
        }
        Answer::Show(o) => {
            crate::out!("package:   {} ({})", o.name, o.section);
            crate::out!("gets:      {}", o.chosen.as_deref().unwrap_or("nothing: no version fits this host"));
            crate::out!("installed: {}", o.installed.as_deref().unwrap_or("no"));
            for v in &o.versions {
                crate::out!();
                crate::out!(
                    "version {} {}{}",
                    v.version,
                    v.maturity,
                    match &v.why_not {
                        Some(w) => format!(" (not for this host: {w})"),
                        None if o.chosen.as_deref() == Some(v.version.as_str()) => " (this host gets it)".into(),
                        None => String::new(),
                    }
                );
                for (k, val) in &v.control {
                    if !val.is_empty() {
                        crate::out!("  {k:<18}: {}", val.replace('\n', "\n                      "));
                    }
                }
            }
        }
        Answer::List(list) => {
            let mut t = Table::new(&["PACKAGE", "VERSION", "STATE", "ORIGIN", "AUDIT", "DESCRIPTION"]);
            for l in list {
                t.row(vec![
                    l.name.clone(),
                    l.version.clone(),
                    l.state.to_string(),
                    l.origin.clone(),
                    l.audit.map(|a| a.to_string()).unwrap_or_default(),
                    l.description.lines().next().unwrap_or_default().to_string(),
                ]);
            }
            t.print();
        }
        Answer::Cleaned(c) => {
            crate::out!("Removed {} cached package(s), freed {}.", c.removed, human_bytes(c.freed));
        }
    }
}

fn render_status(st: &StatusReport) {
    crate::out!("host:     {} ({})", st.host.fqdn, st.host.uuid);
    crate::out!("status:   {}", st.host_status);
    if let Some(u) = &st.last_update {
        crate::out!("update:   {} {} ({})", if u.ok { "ok" } else { "FAILED" }, format_unix(u.at), u.message);
    }
    if let Some(snap) = &st.snapshot {
        crate::out!(
            "snapshot: {} (expires {}){}",
            snap.sequence,
            format_unix(snap.expires),
            if snap.expired { ": EXPIRED, nothing new is installed" } else { "" }
        );
    }
    crate::out!("{:<13} {:<32} {:<14} {:<14} {}", "STATUS", "PACKAGE", "INSTALLED", "TARGET", "REASON");
    for p in &st.packages {
        crate::out!(
            "{:<13} {:<32} {:<14} {:<14} {}",
            p.status,
            p.name,
            or_blank(p.installed.as_deref()),
            or_blank(p.target.as_deref()),
            or_blank(p.reason.as_deref())
        );
        // The output an error message points to: the end of the failing hook's.
        if p.status == PackageStatus::Error
            && let Some(out) = p.output.as_deref().filter(|o| !o.trim().is_empty())
        {
            for line in out.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev() {
                crate::out!("    | {line}");
            }
        }
    }
    if !st.bytes_by_repo.is_empty() {
        let parts: Vec<String> =
            st.bytes_by_repo.iter().map(|(k, n)| format!("{} from {k}", human_bytes(*n))).collect();
        crate::out!("fetched:  {}", parts.join(", "));
    }
    for step in &st.plan {
        crate::out!("  planned: {step}");
    }
    for e in &st.errors {
        crate::out!("  error: {e}");
    }
}

/// `outpost agent update|upgrade|download-upgrade|status|audit|repos`
pub fn read(args: &AgentReadArgs, command: &Command) -> Result<()> {
    execute(&args.agent, command, args.json)
}

/// `outpost agent install`
pub fn install(args: &AgentInstallArgs) -> Result<()> {
    let n = &args.names;
    let requests = n.packages.clone();
    let command = if args.force { Command::Reinstall { requests } } else { Command::Install { requests } };
    execute(&n.agent, &command, n.json)
}

/// `outpost agent session-setup`: runs as the user, from what the agent exported (no daemon,
/// no system state needed).
pub fn session_setup(args: &AgentReadArgs) -> Result<()> {
    let (cfg, _) = settings(&args.agent)?;
    let limit = config::duration_at_least("hook_timeout", &cfg.hook_timeout, Duration::from_secs(1))?;
    let user = std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_else(|_| "user".into());
    let user_state = if cfg!(windows) {
        std::env::var_os("LOCALAPPDATA").map(|d| std::path::PathBuf::from(d).join("Outpost"))
    } else {
        std::env::var_os("XDG_STATE_HOME")
            .filter(|v| !v.is_empty())
            .map(|d| std::path::PathBuf::from(d).join("outpost"))
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/state/outpost")))
    }
    .ok_or_else(|| anyhow::anyhow!("no folder for this user's state (set HOME or XDG_STATE_HOME)"))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let runs = runtime.block_on(outpost_actors::agent::session::run_for_user(&cfg.state, &user_state, &user, limit))?;
    if args.json {
        crate::out!("{}", serde_json::to_string_pretty(&runs)?);
    } else {
        for r in &runs {
            crate::out!(
                "{} {} {}: {}",
                if r.ok { "OK    " } else { "FAILED" },
                r.package,
                r.version,
                r.message.lines().next().unwrap_or_default()
            );
        }
        if runs.is_empty() {
            eprintln!("Nothing to set up for {user}.");
        }
    }
    let failed: Vec<&str> = runs.iter().filter(|r| !r.ok).map(|r| r.package.as_str()).collect();
    if !failed.is_empty() {
        bail!("session-setup failed for {} (tried again at the next logon)", failed.join(", "));
    }
    Ok(())
}

/// `outpost agent forget`
pub fn forget(args: &AgentNamesArgs) -> Result<()> {
    execute(&args.agent, &Command::Forget { names: args.packages.clone() }, args.json)
}

/// `outpost agent search` (`show`: one package, by name).
pub fn text(args: &AgentTextArgs, show: bool) -> Result<()> {
    let command = if show {
        if args.text.is_empty() {
            bail!("say which package: `outpost agent show NAME`");
        }
        Command::Show { name: args.text.clone() }
    } else {
        Command::Search { text: args.text.clone() }
    };
    execute(&args.agent, &command, args.json)
}

/// `outpost agent remove`
pub fn remove(args: &AgentNamesArgs) -> Result<()> {
    execute(&args.agent, &Command::Remove { names: args.packages.clone() }, args.json)
}

/// `outpost agent reset-uuid`: a new random UUID for this machine, kept in the state folder
/// (the running daemon takes it at once).
pub fn reset_uuid(args: &AgentReadArgs) -> Result<()> {
    let path = config::agent_config_path(args.agent.config.as_deref());
    let file_cfg: AgentConfig = config::with_flags(&config::load(path.as_deref())?, &args.agent)?;
    if !file_cfg.uuid.is_empty() {
        bail!(
            "the UUID is set to {:?} in {}: change it there (reset-uuid gives a new one only to a machine whose UUID is detected)",
            file_cfg.uuid,
            path.map_or_else(|| "the configuration".into(), |p| p.display().to_string())
        );
    }
    let state = std::path::absolute(&file_cfg.state)?;
    std::fs::create_dir_all(&state).with_context(|| state.display().to_string())?;
    let old = outpost_actors::agent::identity::detect(
        outpost_actors::agent::identity::reset_uuid(&state).as_deref(),
        Some(file_cfg.fqdn.as_str()).filter(|f| !f.is_empty()),
    )
    .uuid;
    let new = outpost_actors::agent::identity::new_uuid()?;
    outpost_actors::disk::write_atomic(
        &state.join(outpost_actors::agent::identity::UUID_FILE),
        format!("{new}\n").as_bytes(),
        0o644,
    )
    .with_context(|| format!("writing {}", state.join(outpost_actors::agent::identity::UUID_FILE).display()))?;
    // A running daemon opens the agent again with it (and reports it to central).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let told = runtime.block_on(async {
        let daemon = control::connect_daemon(&state).await?;
        control::ask_daemon(daemon, &actor::ControlRequest { config: path.clone(), command: Command::Reload }).await
    });
    if let Some(Reply::Error(e)) = told {
        bail!("the new UUID is written, but the daemon did not take it: {e}");
    }
    if args.json {
        crate::out!("{}", serde_json::json!({"old": old, "new": new}));
    } else {
        crate::out!("UUID {old} replaced by {new}; central sees the new one at the next report");
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
    // On Windows a new file takes its folder's access list: the key's folder is closed to all
    // but SYSTEM and Administrators before the key is written (C:\ProgramData lets Users read).
    #[cfg(windows)]
    if let Some(folder) = cfg.key.parent() {
        if folder == config::system_dir(config::Place::Config) {
            outpost_actors::windows::acl::restrict_folder(folder)
                .with_context(|| format!("restricting {} to SYSTEM and Administrators", folder.display()))?;
        } else {
            eprintln!(
                "note: the key takes the access list of {}: keep it where only administrators can read it",
                folder.display()
            );
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
