//! `outpost console …`: an administrator's view of central, and the actions and settings
//! they sign.

use anyhow::{Context, Result, bail};
use outpost_actors::central::client::CentralClient;
use outpost_protocol::central::{
    ActionKind, AgentSettingsDoc, CentralRequest, CentralResponse, HostDetail, HostFilter, HostPageQuery,
    HostPageQueryV2, HostSort, MAX_PAGE, Signed, StatusFilter, Targets,
};
use outpost_protocol::time_fmt::format_unix;
use serde_json::json;

use crate::admin::Admin;
use crate::cli::{
    ConsoleActionArgs, ConsoleArgs, ConsoleCommand, ConsoleHostArgs, ConsoleHostCommand, ConsoleHostsArgs,
    ConsoleSetPackagesArgs, ConsoleSettingsArgs, ConsoleTokenCommand, TargetArgs,
};
use crate::config::{self};
use crate::output::Table;
use crate::output::human_bytes;
use outpost_actors::clock::unix_now;
use outpost_protocol::central::parse_filter;
use outpost_protocol::resolver::InstallState;

/// Runs `f` with a console connection to central.
fn with_central<T, F, Fut>(args: &ConsoleArgs, f: F) -> Result<T>
where
    F: FnOnce(CentralClient) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let admin = Admin::resolve(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let connected = admin.connect().await?;
        let result = f(connected.client.clone()).await;
        connected.close().await;
        result
    })
}

fn ask(args: &ConsoleArgs, request: CentralRequest) -> Result<CentralResponse> {
    with_central(args, move |c| async move { Ok(c.request(&request).await?) })
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    crate::out!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn ago(t: i64) -> String {
    ago_at(unix_now(), t)
}

fn ago_at(now: i64, t: i64) -> String {
    if t == 0 {
        return "never".into();
    }
    let s = now - t;
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
        ConsoleCommand::Login(a) => login(a),
        ConsoleCommand::Web(a) => crate::web::serve(a),
        ConsoleCommand::Hosts(a) => hosts(a),
        ConsoleCommand::Report(a) => report(a),
        ConsoleCommand::Host(a) => host(a),
        ConsoleCommand::Packages(a) => {
            let CentralResponse::Packages(p) = ask(a, CentralRequest::Packages)? else { bail!("unexpected answer") };
            if a.json {
                return print_json(&p);
            }
            let mut table = Table::new(&["PACKAGE", "HOSTS BY STATUS", "VERSIONS"]);
            for p in p {
                let st: Vec<String> = p.by_status.iter().map(|(k, v)| format!("{k} {v}")).collect();
                let ve: Vec<String> = p.versions.iter().map(|(k, v)| format!("{k} ({v})")).collect();
                table.row(vec![p.name, st.join(", "), ve.join(", ")]);
            }
            table.print();
            Ok(())
        }
        ConsoleCommand::Repos(a) => {
            let CentralResponse::ReposV2(r) = ask(a, CentralRequest::ReposV2)? else { bail!("unexpected answer") };
            if a.json {
                // One object per repository: its line's fields and the rest side by side.
                let flat: Vec<serde_json::Value> = r
                    .iter()
                    .map(|v| {
                        let mut o = serde_json::to_value(&v.line).unwrap_or_default();
                        if let (Some(o), Ok(serde_json::Value::Object(rest))) =
                            (o.as_object_mut(), serde_json::to_value(v))
                        {
                            o.extend(rest.into_iter().filter(|(k, _)| k != "line"));
                        }
                        o
                    })
                    .collect();
                return print_json(&flat);
            }
            let now = unix_now();
            let mut table = Table::new(&[
                "NAME",
                "ADDRESS",
                "ROLE",
                "SNAPSHOT",
                "LAG",
                "UPSTREAM",
                "LAST SYNC",
                "SERVED",
                "WINDOWS",
                "STATE",
            ]);
            for v in r {
                let l = v.line;
                let windows = if v.windows.is_empty() {
                    "always".to_string()
                } else {
                    format!(
                        "{} ({}){}",
                        v.windows.join(", "),
                        match v.window_open {
                            Some(true) => "open",
                            Some(false) => "closed",
                            None => "-",
                        },
                        v.window_changes.map(|t| format!(" until {t}")).unwrap_or_default()
                    )
                };
                table.row(vec![
                    l.name,
                    l.addr,
                    l.role.clone(),
                    l.sequence.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                    l.lag.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                    l.upstream.unwrap_or_default(),
                    v.last_sync
                        .map(|t| ago_at(now, t))
                        .unwrap_or_else(|| if l.role == "edge" { "never".into() } else { "-".into() }),
                    human_bytes(v.served_bytes),
                    windows,
                    l.error.map_or_else(|| "ok".to_string(), |e| format!("ERROR: {e}")),
                ]);
            }
            table.print();
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
                for r in &l.results {
                    crate::out!(
                        "    {:<30} {:<6} {:>6.2}s {}",
                        r.host,
                        if r.ok { "OK" } else { "FAILED" },
                        r.seconds,
                        r.message
                    );
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

/// `console login`: checks that central answers this certificate, then saves the profile.
fn login(a: &ConsoleArgs) -> Result<()> {
    let admin = Admin::resolve(a)?.absolute()?;
    let path = crate::admin::profiles_path()
        .ok_or_else(|| anyhow::anyhow!("no configuration folder: set {}", crate::admin::PROFILES_ENV))?;
    let generation = with_central(a, |c| async move {
        match c.request(&CentralRequest::Generation).await? {
            CentralResponse::Generation(g) => Ok(g),
            other => bail!("unexpected answer {other:?}"),
        }
    })?;
    let mut profiles = crate::admin::Profiles::load(&path)?;
    let name = a.profile.clone().unwrap_or_else(|| "default".into());
    if a.profile.is_none() || profiles.default.is_none() {
        profiles.default = Some(name.clone());
    }
    profiles.profiles.insert(name.clone(), admin.clone());
    profiles.save(&path)?;
    if a.json {
        return print_json(&json!({"profile": name, "file": path, "server": admin.server, "generation": generation}));
    }
    crate::out!("Central {} answers this certificate. Profile {name:?} saved in {}.", admin.server, path.display());
    crate::out!(
        "Console commands now need no flags{}.",
        if profiles.default.as_deref() == Some(name.as_str()) { "" } else { " with --profile NAME" }
    );
    Ok(())
}

fn hosts(a: &ConsoleHostsArgs) -> Result<()> {
    let (mut filter, mut audit) = match &a.filter {
        Some(line) => parse_filter(line).with_context(|| format!("filter {line:?}"))?,
        None => (HostFilter::default(), None),
    };
    if let Some(x) = &a.audit {
        audit = Some(match x.to_ascii_uppercase().as_str() {
            "OK" => InstallState::Ok,
            "WARNING" => InstallState::Warning,
            _ => InstallState::Error,
        });
    }
    let status = a.status.as_deref().map(|s| StatusFilter::parse(s).expect("checked by the flag's parser"));
    for (flag, slot) in [
        (&a.package, &mut filter.package),
        (&a.software, &mut filter.software),
        (&a.ou, &mut filter.ou),
        (&a.site, &mut filter.site),
        (&a.name, &mut filter.name),
    ] {
        if flag.is_some() {
            slot.clone_from(flag);
        }
    }
    filter.status = status.or(filter.status);
    let sort = HostSort::parse(&a.sort).expect("checked by the flag's parser");
    let (total, hosts) = with_central(&a.console, |c| async move {
        // Central sends a page at a time; --limit 0 reads them all.
        let mut hosts = Vec::new();
        let mut offset = a.offset;
        loop {
            let want = if a.limit == 0 { MAX_PAGE } else { (a.limit - hosts.len() as u32).min(MAX_PAGE) };
            let q = HostPageQuery { filter: filter.clone(), sort, descending: a.desc, offset, limit: want };
            // Only asked with the audit filter when there is one: an older central answers both.
            let request = match audit {
                Some(audit) => CentralRequest::HostPageV2(HostPageQueryV2 { page: q, audit: Some(audit) }),
                None => CentralRequest::HostPage(q),
            };
            let CentralResponse::HostPage(page) = c.request(&request).await? else { bail!("unexpected answer") };
            let got = page.hosts.len() as u32;
            hosts.extend(page.hosts);
            offset += got;
            let wanted_all = a.limit > 0 && hosts.len() as u32 >= a.limit;
            if got == 0 || u64::from(offset) >= page.total || wanted_all {
                return Ok((page.total, hosts));
            }
        }
    })?;
    if a.console.json {
        return print_json(&json!({"total": total, "hosts": hosts}));
    }
    let mut table = Table::new(&["HOST", "STATUS", "SITE", "OU", "PACKAGES", "REPORT", "SEEN"]);
    for h in &hosts {
        let seen = format!(
            "{}{}{}",
            ago(h.last_seen),
            if h.online { ", online" } else { "" },
            if h.revoked { ", REVOKED" } else { "" }
        );
        table.row(vec![
            h.fqdn.clone(),
            h.status.clone(),
            h.site.clone(),
            h.ou.clone(),
            h.packages.to_string(),
            h.sequence.to_string(),
            seen,
        ]);
        if let Some(c) = &h.clash {
            table
                .note(format!("    CLASH (certificate sha256:{}): {c}", &h.fingerprint[..16.min(h.fingerprint.len())]));
        }
    }
    table.print();
    let shown = hosts.len() as u64;
    if a.offset > 0 || shown < total {
        eprintln!(
            "hosts {}-{} of {total} shown (--offset, --limit)",
            u64::from(a.offset) + u64::from(shown > 0),
            u64::from(a.offset) + shown
        );
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
            print_host(&d);
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
    let signed = Admin::resolve(&a.console)?
        .sign_action(kind, targets(&a.targets)?, valid)
        .with_context(|| format!("--expires {}", a.expires))?;
    if let Some(out) = &a.out {
        std::fs::write(out, postcard::to_stdvec(&signed)?).with_context(|| out.display().to_string())?;
    }
    relay(&a.console, signed)
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
    let (chain, key) = Admin::resolve(&a.console)?.signer()?;
    done(&a.console, CentralRequest::SetSettings(doc.sign(&key, &chain)))
}

fn set_packages(a: &ConsoleSetPackagesArgs) -> Result<()> {
    let admin = Admin::resolve(&a.console)?;
    let p = admin.publish_host_package(&a.host, &a.packages, &a.repo)?;
    crate::out!("Published {} {} to {}: snapshot {}", p.name, p.version, a.repo, p.sequence);
    if a.now {
        // From that snapshot or a newer one, even when the action reaches the host before its
        // edge has it.
        let kind = ActionKind::UpgradeAfter(p.sequence);
        relay(&a.console, admin.sign_action(kind, Targets::Hosts(vec![a.host.clone()]), 3600)?)?;
    }
    Ok(())
}

/// `console host NAME` for a reader.
fn print_host(d: &HostDetail) {
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
            Section::Programs(s) => {
                crate::out!("software:  {} installed (--json lists them)", s.len());
            }
            Section::Notes(n) => {
                for note in n {
                    crate::out!("not read:  {note}");
                }
            }
            Section::Transfers(t) => {
                let by: Vec<String> = t.iter().map(|(r, b)| format!("{r} {}", human_bytes(*b))).collect();
                crate::out!("fetched:   {}", by.join(", "));
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
                crate::out!("update:    {} {} ({})", if u.ok { "ok" } else { "FAILED" }, format_unix(u.at), u.message);
            }
            _ => {}
        }
    }
    let mut table = Table::new(&["STATUS", "PACKAGE", "INSTALLED", "TARGET", "REASON"]);
    for p in d.inventory.packages() {
        table.row(vec![
            p.status.as_str().to_string(),
            p.name.clone(),
            p.installed.clone().unwrap_or_default(),
            p.target.clone().unwrap_or_default(),
            p.reason.clone().or_else(|| p.cause.as_ref().map(ToString::to_string)).unwrap_or_default(),
        ]);
        if p.status == outpost_protocol::resolver::PackageStatus::Error
            && let Some(o) = &p.output
        {
            for line in o.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev() {
                table.note(format!("    | {line}"));
            }
        }
    }
    table.print();
    for r in &d.actions {
        crate::out!("action:    {} {} {}: {}", r.id, r.kind, if r.ok { "ok" } else { "FAILED" }, r.message);
    }
}

/// `outpost console report`
fn report(a: &crate::cli::ConsoleReportArgs) -> Result<()> {
    let words: Vec<&str> = a.words.iter().map(String::as_str).collect();
    let request = match words.as_slice() {
        ["list"] => CentralRequest::Reports,
        ["save", name] => {
            let sql = match (&a.sql, &a.sql_file) {
                (Some(s), _) => s.clone(),
                (None, Some(f)) => std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
                (None, None) => bail!("report save {name}: give the query with --sql or --sql-file"),
            };
            if ["list", "save", "delete"].contains(name) {
                bail!("{name:?} cannot name a report (it is a word of `console report`)");
            }
            CentralRequest::SaveReport { name: (*name).to_string(), description: a.description.clone(), sql }
        }
        ["delete", name] => CentralRequest::DeleteReport((*name).to_string()),
        [name] => {
            let mut params = Vec::new();
            for p in &a.params {
                let Some((k, v)) = p.split_once('=') else { bail!("--param {p:?}: write NAME=VALUE") };
                params.push((k.trim().to_string(), v.to_string()));
            }
            CentralRequest::RunReport { name: (*name).to_string(), params }
        }
        _ => bail!("console report: give `list`, a report's name, `save NAME` or `delete NAME`"),
    };
    match ask(&a.console, request)? {
        CentralResponse::Reports(list) => {
            if a.console.json {
                return print_json(&list);
            }
            let mut table = Table::new(&["REPORT", "KIND", "PARAMETERS", "DESCRIPTION"]);
            for r in list {
                let params: Vec<String> = r.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let kind = if r.builtin { "built in".to_string() } else { format!("saved by {}", r.author) };
                table.row(vec![r.name, kind, params.join(" "), r.description]);
            }
            table.print();
            Ok(())
        }
        CentralResponse::Table(t) => {
            if a.console.json {
                let rows: Vec<serde_json::Map<String, serde_json::Value>> = t
                    .rows
                    .iter()
                    .map(|r| {
                        t.columns
                            .iter()
                            .zip(r)
                            .map(|(c, v)| {
                                (c.clone(), v.clone().map_or(serde_json::Value::Null, serde_json::Value::String))
                            })
                            .collect()
                    })
                    .collect();
                print_json(&rows)?;
            } else if a.csv {
                let mut out = String::new();
                csv_line(&mut out, t.columns.iter().map(|c| Some(c.as_str())));
                for r in &t.rows {
                    csv_line(&mut out, r.iter().map(Option::as_deref));
                }
                crate::out!("{}", out.trim_end_matches("\r\n"));
            } else {
                let header: Vec<String> = t.columns.iter().map(|c| c.to_uppercase()).collect();
                let mut table = Table::new(&header.iter().map(String::as_str).collect::<Vec<_>>());
                for r in t.rows.iter().cloned() {
                    table.row(r.into_iter().map(Option::unwrap_or_default).collect());
                }
                table.print();
            }
            if t.truncated {
                eprintln!("only the first {} rows are shown: narrow the report", t.rows.len());
            }
            Ok(())
        }
        CentralResponse::Done(m) => {
            crate::out!("{m}");
            Ok(())
        }
        other => bail!("unexpected answer {other:?}"),
    }
}

/// One CSV record (RFC 4180): fields with a comma, a quote or a line break are quoted; NULL
/// is an empty field.
fn csv_line<'a>(out: &mut String, fields: impl Iterator<Item = Option<&'a str>>) {
    let mut first = true;
    for f in fields {
        if !first {
            out.push(',');
        }
        first = false;
        let f = f.unwrap_or("");
        if f.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&f.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(f);
        }
    }
    out.push_str("\r\n");
}
