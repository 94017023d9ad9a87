//! The web console's pages, rendered on this machine from central's answers (maud: HTML
//! checked at compile time, every value escaped). Each page is a frame (navigation, the live
//! indicator, forms that must survive a refresh) around a `<main>` that the page's script
//! replaces when central's change counter moves.

use maud::{DOCTYPE, Markup, html};
use outpost_protocol::central::{
    ActionLine, FleetOverview, HostDetail, HostPage, HostSort, HostSummary, PackageSummary, RepoView, ReportSeen,
    Section,
};
use outpost_protocol::entry::PackageEntry;
use outpost_protocol::snapshot::Head;
use outpost_protocol::time_fmt::format_unix;

use crate::output::human_bytes;

/// What every page knows about the session.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The page's title.
    pub title: &'a str,
    /// Which navigation entry is lit.
    pub nav: &'a str,
    /// Central's change counter when the page was made.
    pub generation: u64,
    /// The admin's certificate subject.
    pub admin: &'a str,
    /// Central's address.
    pub server: &'a str,
    /// May send actions.
    pub can_act: bool,
    /// May change host packages.
    pub can_modify: bool,
    /// The token forms carry.
    pub csrf: &'a str,
    /// Refresh `<main>` when central changes.
    pub live: bool,
}

/// A whole page: `above` is kept across live refreshes, `main` is replaced.
pub fn page(f: &Frame<'_>, above: &Markup, main: &Markup) -> Markup {
    let entries = [
        ("dashboard", "/", "Dashboard"),
        ("hosts", "/hosts", "Hosts"),
        ("packages", "/packages", "Packages"),
        ("repos", "/repos", "Repositories"),
        ("actions", "/actions", "Actions"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (f.title) " · Outpost" }
                link rel="stylesheet" href="/static/console.css";
            }
            body data-generation=(f.generation) data-live=(if f.live { "1" } else { "0" }) {
                header {
                    span.brand { "Outpost" }
                    nav {
                        @for (key, href, label) in entries {
                            a href=(href) class=(if key == f.nav { "on" } else { "" }) { (label) }
                        }
                    }
                    span.who title=(format!("central {}", f.server)) {
                        (f.admin)
                        @if !f.can_act { " · view only" }
                        " · "
                        span #live { "…" }
                    }
                }
                (above)
                main #main { (main) }
                script src="/static/console.js" {}
            }
        }
    }
}

/// A status as a coloured badge.
pub fn badge(status: &str) -> Markup {
    let class = match status {
        "OK" => "ok",
        "ERROR" => "error",
        "NEED-UPGRADE" | "NEED-INSTALL" | "NEED-REMOVE" => "pending",
        _ => "unknown",
    };
    html! { span class=(format!("badge {class}")) { (status) } }
}

fn ago(now: i64, t: i64) -> String {
    if t == 0 {
        return "never".into();
    }
    match now - t {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

fn host_link(h: &HostSummary) -> Markup {
    let name = if h.fqdn.is_empty() { &h.uuid } else { &h.fqdn };
    html! { a href=(format!("/host?name=sha256:{}", h.fingerprint)) { (name) } }
}

/// The dashboard.
pub fn dashboard(o: &FleetOverview, repos: &[RepoView], actions: &[ActionLine], now: i64, stale_days: u64) -> Markup {
    let failures: Vec<(&ActionLine, &outpost_protocol::central::ActionResultLine)> =
        actions.iter().flat_map(|a| a.results.iter().filter(|r| !r.ok).map(move |r| (a, r))).take(10).collect();
    html! {
        section.cards {
            div.card { div.big #hosts-total { (o.hosts) } div { "hosts" } }
            @for (status, n) in &o.by_status {
                a.card href=(format!("/hosts?q=status:{status}")) {
                    div.big data-status=(status) { (n) } div { (badge(status)) }
                }
            }
            div.card { div.big { (o.online) } div { "connected now" } }
            a.card href="/hosts?sort=seen" { div.big { (o.stale) } div { "not seen for " (stale_days) " days" } }
        }
        div.columns {
            section {
                h2 { "Hosts by site" }
                table {
                    thead { tr { th { "Site" } th.num { "Hosts" } th.num { "OK" } th.num { "Need upgrade" } th.num { "Error" } th.num { "Unknown" } } }
                    tbody {
                        @for s in &o.by_site {
                            @let site = if s.site.is_empty() { "(none)" } else { s.site.as_str() };
                            tr {
                                td { a href=(format!("/hosts?q=site:{}", s.site)) { (site) } }
                                td.num { (s.hosts) }
                                @for st in ["OK", "NEED-UPGRADE", "ERROR", "UNKNOWN"] {
                                    td.num { (s.by_status.get(st).copied().unwrap_or(0)) }
                                }
                            }
                        }
                    }
                }
                h2 { "Not seen for a while" }
                @if o.stale_hosts.is_empty() { p.quiet { "Every host reported in the last " (stale_days) " days." } }
                ul {
                    @for h in &o.stale_hosts { li { (host_link(h)) " · " (ago(now, h.last_seen)) " · " (badge(&h.status)) } }
                }
            }
            section {
                h2 { "Repositories" }
                (repo_table(&tree(repos), now))
                h2 { "Recent actions" }
                (action_list(&actions[..actions.len().min(5)], now))
                h2 { "Recent failures" }
                @if failures.is_empty() { p.quiet { "No action failed." } }
                ul {
                    @for (a, r) in failures {
                        li { span.badge.error { "FAILED" } " " (a.kind) " on " (r.host) ": " (r.message) }
                    }
                }
            }
        }
    }
}

/// The hosts view's frame part: the filter box and the actions on the selection.
pub fn hosts_above(f: &Frame<'_>, line: &str, sort: HostSort, descending: bool, error: Option<&str>) -> Markup {
    html! {
        form.filter method="get" action="/hosts" {
            input #filter type="search" name="q" value=(line) size="70" autocomplete="off"
                placeholder="status:ERROR site:lyon pkg:firefox sw:7zip ou:Paris name:pc-*";
            input type="hidden" name="sort" value=(sort.word());
            @if descending { input type="hidden" name="desc" value="1"; }
            button type="submit" { "Filter" }
            @if let Some(e) = error { span.error #filter-error { (e) } }
        }
        @if f.can_act {
            form.act #act method="post" action="/act" {
                input type="hidden" name="csrf" value=(f.csrf);
                span { span #selected { "0" } " selected: " }
                button.needs-selection name="kind" value="update" { "Update" }
                button.needs-selection name="kind" value="upgrade" { "Upgrade" }
                input type="text" name="packages" placeholder="packages (install, remove, set-packages)" size="36";
                button.needs-selection name="kind" value="install" { "Install" }
                button.needs-selection name="kind" value="remove" { "Remove" }
                @if f.can_modify { button.needs-selection name="kind" value="set-packages" { "Set packages" } }
            }
        }
    }
}

/// A page of hosts.
pub fn hosts(
    page: &HostPage,
    line: &str,
    sort: HostSort,
    descending: bool,
    per_page: u32,
    now: i64,
    can_act: bool,
) -> Markup {
    let link = |s: HostSort| {
        let desc = s == sort && !descending;
        format!("/hosts?q={}&sort={}{}", encode(line), s.word(), if desc { "&desc=1" } else { "" })
    };
    let arrow = |s: HostSort| if s == sort { if descending { " ▼" } else { " ▲" } } else { "" };
    let first = u64::from(page.offset) + u64::from(!page.hosts.is_empty());
    let last = u64::from(page.offset) + page.hosts.len() as u64;
    let pages = page.total.div_ceil(u64::from(per_page.max(1))).max(1);
    let current = u64::from(page.offset / per_page.max(1)) + 1;
    let nav = |p: u64| {
        format!("/hosts?q={}&sort={}{}&page={p}", encode(line), sort.word(), if descending { "&desc=1" } else { "" })
    };
    html! {
        p.count #count { "hosts " (first) "–" (last) " of " span #total { (page.total) } }
        table.hosts {
            thead { tr {
                @if can_act { th { input #all type="checkbox" title="select the hosts of this page"; } }
                th { a href=(link(HostSort::Name)) { "Host" (arrow(HostSort::Name)) } }
                th { a href=(link(HostSort::Status)) { "Status" (arrow(HostSort::Status)) } }
                th { a href=(link(HostSort::Site)) { "Site" (arrow(HostSort::Site)) } }
                th { a href=(link(HostSort::Ou)) { "OU" (arrow(HostSort::Ou)) } }
                th.num { a href=(link(HostSort::Packages)) { "Packages" (arrow(HostSort::Packages)) } }
                th { a href=(link(HostSort::LastSeen)) { "Last report" (arrow(HostSort::LastSeen)) } }
            } }
            tbody {
                @for h in &page.hosts {
                    tr data-host=(h.fqdn) {
                        @if can_act { td { input type="checkbox" name="host" form="act" value=(format!("sha256:{}", h.fingerprint)); } }
                        td { (host_link(h)) @if h.revoked { " " span.badge.error { "REVOKED" } } @if h.clash.is_some() { " " span.badge.error { "CLASH" } } }
                        td.status { (badge(&h.status)) }
                        td { (h.site) }
                        td.ou { (h.ou) }
                        td.num { (h.packages) }
                        td { (ago(now, h.last_seen)) @if h.online { " · online" } }
                    }
                }
            }
        }
        @if pages > 1 {
            nav.pages {
                @if current > 1 { a href=(nav(current - 1)) { "← previous" } }
                " page " (current) " of " (pages) " "
                @if current < pages { a href=(nav(current + 1)) { "next →" } }
            }
        }
    }
}

/// One host.
pub fn host(d: &HostDetail, reports: &[ReportSeen], now: i64) -> Markup {
    let s = &d.summary;
    html! {
        h1 { (s.fqdn) " " (badge(&s.status)) @if s.revoked { " " span.badge.error { "REVOKED" } } }
        @if let Some(c) = &s.clash { p.error { "CLASH: " (c) } }
        table.facts {
            tr { th { "UUID" } td { (s.uuid) } }
            tr { th { "Certificate" } td.mono { "sha256:" (s.fingerprint) } }
            tr { th { "Site" } td { (s.site) } }
            tr { th { "OU" } td { (s.ou) } }
            tr { th { "Last report" } td { "#" (s.sequence) " · " (ago(now, s.last_seen)) @if s.online { " · online" } } }
            @for section in d.inventory.sections.values() {
                @match section {
                    Section::Os(o) => tr { th { "OS" } td { (o.name) " " (o.version) " (kernel " (o.kernel) ", " (o.arch) ")" } },
                    Section::Hardware(h) if !(h.vendor.is_empty() && h.product.is_empty()) => tr { th { "Hardware" } td {
                        (h.vendor) " " (h.product) @if !h.serial.is_empty() { " · serial " (h.serial) }
                    } },
                    Section::Cpu(c) => tr { th { "CPU" } td { (c.model) " (" (c.threads) " threads)" } },
                    Section::Memory(m) => tr { th { "Memory" } td { (human_bytes(*m)) } },
                    Section::LastUpdate(Some(u)) => tr { th { "Last update" } td {
                        @if u.ok { span.badge.ok { "ok" } } @else { span.badge.error { "FAILED" } }
                        " " (format_unix(u.at)) " · " (u.message)
                        @if let Some(r) = u.repo.as_ref().filter(|r| !u.message.contains(r.as_str())) { " · from " (r) }
                    } },
                    Section::Snapshot(Some(snap)) => tr { th { "Snapshot" } td {
                        "#" (snap.sequence) " made " (format_unix(snap.created)) ", expires " (format_unix(snap.expires))
                        @if snap.expired { " " span.badge.error { "EXPIRED" } }
                    } },
                    _ => {}
                }
            }
        }
        @if let Some(t) = d.inventory.transfers() {
            h2 { "Bytes fetched, by repository" }
            table.transfers {
                @for (repo, bytes) in t { tr { td { (repo) } td.num { (human_bytes(*bytes)) } } }
            }
        }
        h2 { "Packages" }
        table.packages {
            thead { tr { th { "Status" } th { "Package" } th { "Installed" } th { "Target" } th { "Why" } } }
            tbody {
                @for p in d.inventory.packages() {
                    tr data-package=(p.name) {
                        td { (badge(p.status.as_str())) }
                        td { (p.name) }
                        td { (p.installed.clone().unwrap_or_default()) }
                        td { (p.target.clone().unwrap_or_default()) }
                        td { (p.reason.clone().or_else(|| p.cause.as_ref().map(ToString::to_string)).unwrap_or_default()) }
                    }
                    @if let Some(o) = &p.output {
                        tr.output { td {} td colspan="4" { details { summary { "hook output" } pre { (o) } } } }
                    }
                }
            }
        }
        h2 { "Recent reports" }
        @if reports.is_empty() { p.quiet { "No report since central started." } }
        table.reports {
            @for r in reports {
                tr { td { "#" (r.sequence) } td { (ago(now, r.at)) } td.quiet {
                    (r.sections.iter().map(|k| serde_json::to_value(k).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()).collect::<Vec<_>>().join(", "))
                } }
            }
        }
        h2 { "Recent actions" }
        @if d.actions.is_empty() { p.quiet { "No action reached this host yet." } }
        ul.results {
            @for r in &d.actions {
                li { @if r.ok { span.badge.ok { "OK" } } @else { span.badge.error { "FAILED" } } " " (r.kind) " " span.mono { (r.id.get(..8).unwrap_or(&r.id)) } ": " (r.message) }
            }
        }
        @let software: &[outpost_protocol::central::Program] = d.inventory.software();
        h2 { "Software (" (software.len()) ")" }
        details { summary { "installed software" } table {
            tr { th { "Name" } th { "Version" } th { "Publisher" } th { "Listed in" } th { "Product code" } }
            @for sw in software { tr { td { (sw.name) } td { (sw.version) } td { (sw.publisher) } td { (sw.source) } td.mono { (sw.product_code.as_deref().unwrap_or("")) } } }
        } }
        @if !d.inventory.notes().is_empty() {
            h2 { "Not read on this host" }
            ul { @for n in d.inventory.notes() { li { (n) } } }
        }
    }
}

/// What is published (the newest version of each package, from the main repository's
/// snapshot) and where each package is installed across the fleet.
pub fn packages(fleet: &[PackageSummary], published: &Result<(&Head, &[PackageEntry]), String>) -> Markup {
    use std::collections::BTreeMap;
    let mut newest: BTreeMap<&str, Vec<&PackageEntry>> = BTreeMap::new();
    if let Ok((_, entries)) = published {
        for e in *entries {
            newest.entry(e.name.as_str()).or_default().push(e);
        }
    }
    for v in newest.values_mut() {
        v.sort_by(|a, b| b.version.cmp(&a.version));
    }
    let by_name: BTreeMap<&str, &PackageSummary> = fleet.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut names: Vec<&str> = newest.keys().copied().chain(by_name.keys().copied()).collect();
    names.sort_unstable();
    names.dedup();
    html! {
        @match published {
            Ok((head, entries)) => p.quiet { (entries.len()) " package versions published in snapshot #" (head.sequence) " (signed " (format_unix(head.created)) ")." },
            Err(e) => p.error { "What is published is not known: " (e) },
        }
        table.packages {
            thead { tr {
                th { "Package" } th { "Published" } th { "Section" } th.num { "Hosts" } th.num { "OK" }
                th.num { "Need upgrade" } th.num { "Error" } th { "Versions installed" }
            } }
            tbody {
                @for name in &names {
                    @let fleet = by_name.get(name);
                    @let count = |s: &str| fleet.and_then(|p| p.by_status.get(s).copied()).unwrap_or(0);
                    @let hosts: u32 = fleet.map_or(0, |p| p.by_status.values().sum());
                    @let pending = count("NEED-INSTALL") + count("NEED-UPGRADE") + count("NEED-REMOVE");
                    tr data-package=(name) {
                        td { a href=(format!("/package?name={}", encode(name))) { (name) } }
                        td { @match newest.get(name) {
                            Some(v) => { (v[0].version.as_str()) @if v[0].maturity != "PROD" && !v[0].maturity.is_empty() { " " span.quiet { (v[0].maturity) } } @if v.len() > 1 { span.quiet { " (+" (v.len() - 1) " older)" } } },
                            None => span.quiet { "not published" },
                        } }
                        td { (newest.get(name).map(|v| v[0].section.to_string()).unwrap_or_default()) }
                        td.num { a href=(format!("/hosts?q=pkg:{}", encode(name))) { (hosts) } }
                        td.num { (count("OK")) }
                        td.num { (pending) }
                        td.num { (count("ERROR")) }
                        td { @if let Some(p) = fleet { @for (v, n) in &p.versions { span.version { (v) " × " (n) } " " } } }
                    }
                }
            }
        }
    }
}

/// One package: where it is installed, and every published version with all its fields.
pub fn package(name: &str, fleet: Option<&PackageSummary>, versions: &[&PackageEntry]) -> Markup {
    html! {
        h1 { (name) }
        @match fleet {
            Some(p) => p {
                a href=(format!("/hosts?q=pkg:{}", encode(name))) { (p.by_status.values().sum::<u32>()) " host(s)" }
                ": " @for (s, n) in &p.by_status { (badge(s)) " " (n) " " }
                @if !p.versions.is_empty() { " · installed: " @for (v, n) in &p.versions { span.version { (v) " × " (n) } " " } }
            },
            None => p.quiet { "Installed on no host." },
        }
        @if versions.is_empty() { p.quiet { "Not published by the main repository." } }
        @for e in versions {
            h2 { "Version " (e.version.as_str()) " " span.quiet { (e.effective_maturity()) } }
            table.fields data-version=(e.version.as_str()) {
                @for (k, v) in e.control.iter() {
                    @if !v.is_empty() { tr { th { (k) } td { @if v.contains('\n') { pre { (v) } } @else { (v) } } } }
                }
            }
        }
    }
}

fn repo_table(repos: &[(usize, &RepoView)], now: i64) -> Markup {
    html! {
        table.repos {
            thead { tr {
                th { "Repository" } th { "Role" } th { "Upstream" } th.num { "Snapshot" } th.num { "Lag" }
                th { "Last sync" } th { "Sync windows" } th.num { "Served" } th.num { "Stored" } th { "State" }
            } }
            tbody {
                @for (depth, v) in repos {
                    @let r = &v.line;
                    tr data-repo=(r.name) {
                        td {
                            @if *depth > 0 { span.quiet { ("   ".repeat(depth - 1)) "└─ " } }
                            (r.name) " " span.quiet { (r.addr) }
                        }
                        td { (r.role) @if !v.fill.is_empty() && r.role == "edge" { span.quiet { " " (v.fill) } } }
                        td { (r.upstream.clone().unwrap_or_default()) }
                        td.num { (r.sequence.map(|s| s.to_string()).unwrap_or_else(|| "-".into())) }
                        td.num { (r.lag.map(|s| s.to_string()).unwrap_or_else(|| "-".into())) }
                        td { (v.last_sync.map(|t| ago(now, t)).unwrap_or_else(|| if r.role == "edge" { "never".into() } else { "-".into() })) }
                        td {
                            @if v.windows.is_empty() { span.quiet { "always" } } @else {
                                (v.windows.join(", ")) " " span.quiet { (v.time_zone) }
                                @if let Some(open) = v.window_open { " · " @if open { "open" } @else { "closed" } }
                                @if let Some(next) = &v.window_changes { span.quiet { " until " (next) } }
                                @if v.waiting_for_window { " " span.badge.pending { "waiting" } }
                            }
                        }
                        td.num { (human_bytes(v.served_bytes)) }
                        td.num { (human_bytes(v.stored_bytes)) }
                        td { @match &r.error { Some(e) => span.badge.error title=(e) { "ERROR" }, None => span.badge.ok { "ok" } } }
                    }
                    @if let Some(e) = &r.error { tr.output { td {} td colspan="9" { span.error { (e) } } } }
                }
            }
        }
    }
}

/// Repositories as a tree: the main first, each edge under the upstream it syncs from.
pub fn repos(list: &[RepoView], now: i64) -> Markup {
    repo_table(&tree(list), now)
}

/// The repositories in tree order with their depth.
fn tree(list: &[RepoView]) -> Vec<(usize, &RepoView)> {
    let is_parent = |p: &RepoView, r: &RepoView| r.line.upstream.as_deref().is_some_and(|u| u == p.line.addr);
    let mut out: Vec<(usize, &RepoView)> = Vec::new();
    let mut stack: Vec<(usize, usize)> =
        (0..list.len()).rev().filter(|&i| !list.iter().any(|p| is_parent(p, &list[i]))).map(|i| (i, 0)).collect();
    let mut seen = vec![false; list.len()];
    while let Some((i, depth)) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        out.push((depth, &list[i]));
        for c in (0..list.len()).rev().filter(|&c| is_parent(&list[i], &list[c])) {
            stack.push((c, depth + 1));
        }
    }
    // A loop of upstreams (misconfigured) still shows every repository.
    out.extend((0..list.len()).filter(|&i| !seen[i]).map(|i| (0, &list[i])));
    out
}

fn action_list(actions: &[ActionLine], now: i64) -> Markup {
    html! {
        @if actions.is_empty() { p.quiet { "No action yet." } }
        @for a in actions {
            @let failed = a.results.iter().filter(|r| !r.ok).count();
            div.action data-action=(a.id) {
                div {
                    strong { (a.kind) } " " (a.packages.join(", ")) " → " (a.targets)
                    span.quiet { " by " (a.issuer) " · " span.mono { (a.id.get(..8).unwrap_or(&a.id)) }
                        @if a.expires < now { " · expired" } @else { " · valid until " (format_unix(a.expires)) } }
                }
                div {
                    span.badge.ok { (a.results.len() - failed) " ok" } " "
                    @if failed > 0 { span.badge.error { (failed) " failed" } " " }
                    @if !a.pending.is_empty() { span.badge.pending { (a.pending.len()) " pending" } }
                }
            }
        }
    }
}

/// Actions and their results per host.
pub fn actions(list: &[ActionLine], now: i64) -> Markup {
    html! {
        @for a in list {
            (action_list(std::slice::from_ref(a), now))
            table.results {
                @for r in &a.results {
                    tr { td { (r.host) } td { @if r.ok { span.badge.ok { "OK" } } @else { span.badge.error { "FAILED" } } } td.num { (format!("{:.2} s", r.seconds)) } td { (r.message) } }
                }
                @for p in &a.pending { tr { td { (p) } td { span.badge.pending { "pending" } } td {} td {} } }
            }
        }
    }
}

/// What an action will do, before it is sent.
pub fn confirm(f: &Frame<'_>, kind: &str, packages: &[String], hosts: &[String], names: &[String]) -> Markup {
    html! {
        h1 { "Confirm: " (kind) @if !packages.is_empty() { " " (packages.join(", ")) } }
        p { "This will reach " strong #reach { (hosts.len()) } " host(s):" }
        ul { @for n in names.iter().take(50) { li { (n) } } @if names.len() > 50 { li { "… and " (names.len() - 50) " more" } } }
        form method="post" action="/act" {
            input type="hidden" name="csrf" value=(f.csrf);
            input type="hidden" name="kind" value=(kind);
            input type="hidden" name="packages" value=(packages.join(" "));
            input type="hidden" name="confirm" value="1";
            @for h in hosts { input type="hidden" name="host" value=(h); }
            button #confirm type="submit" { "Send to " (hosts.len()) " host(s)" }
            " " a href="/hosts" { "Cancel" }
        }
    }
}

/// A message after a form.
pub fn notice(title: &str, lines: &[String], ok: bool) -> Markup {
    html! {
        h1 { (title) }
        @for l in lines { p class=(if ok { "notice" } else { "error" }) { (l) } }
        p { a href="/actions" { "See the actions" } " · " a href="/hosts" { "Back to the hosts" } }
    }
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'*' | b':' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
