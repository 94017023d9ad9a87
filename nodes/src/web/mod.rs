//! `outpost console web`: the web console, served by the admin's own `outpost`.
//!
//! Every page is made here from central's answers, asked over QUIC with the admin's
//! certificate: central checks rights exactly as for the CLI, and what the admin signs (actions,
//! host packages) is signed on this machine. Tables are paged and filtered on central. The page's
//! script asks this server for central's change counter every second (this server asks central
//! twice a second) and reloads the page's `<main>` when it moves: what central receives shows
//! within two seconds. Access is guarded by [`auth`].

mod auth;
mod pages;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::Markup;
use outpost_actors::central::client::CentralClient;
use outpost_actors::repo::client::RepoClient;
use outpost_actors::transport;
use outpost_protocol::central::{
    ALPN_CENTRAL, ActionKind, CentralRequest, CentralResponse, HostPageQuery, HostPageQueryV2, HostSort, Targets,
    parse_filter,
};
use outpost_protocol::entry::PackageEntry;
use outpost_protocol::pki::{Purpose, Right, TrustStore, cert_info};
use outpost_protocol::snapshot::Head;
use outpost_protocol::wire::ALPN_REPO;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::admin::Admin;
use crate::cli::ConsoleWebArgs;
use crate::daemon;
use outpost_actors::clock::unix_now;

use auth::{Guard, Verdict};
use pages::Frame;

/// Hosts on a page of the hosts view.
const PER_PAGE: u32 = 50;
/// Hosts unseen this long are "not seen for a while" on the dashboard.
const STALE_DAYS: u64 = 7;
/// How often this server asks central for its change counter.
const POLL: Duration = Duration::from_millis(500);
/// How long an action sent from the page stays valid.
const ACTION_SECS: u64 = 3600;

/// The web console's state.
struct Web {
    admin: Admin,
    subject: String,
    can_act: bool,
    can_modify: bool,
    guard: Guard,
    endpoint: quinn::Endpoint,
    central: Mutex<Option<CentralClient>>,
    generation: AtomicU64,
    /// For reading the main repository's snapshot (what is published).
    repo_endpoint: quinn::Endpoint,
    trust: TrustStore,
    /// The packages of the last snapshot read, by its head.
    published: Mutex<Option<(Head, Vec<PackageEntry>)>>,
}

impl std::fmt::Debug for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Web").field("server", &self.admin.server).finish()
    }
}

/// `outpost console web`
pub fn serve(args: &ConsoleWebArgs) -> Result<()> {
    let admin = Admin::resolve(&args.console)?;
    let identity = daemon::identity(&admin.cert, &admin.key, admin.password_file.as_deref())?;
    let me = cert_info(&identity.chain[0])?;
    let (trust, ca) = daemon::trust(&admin.ca)?;
    let listen: SocketAddr = args
        .listen
        .parse()
        .map_err(|_| anyhow::anyhow!("--listen: {:?} is not an address like 127.0.0.1:7445", args.listen))?;
    if !listen.ip().is_loopback() {
        eprintln!(
            "warning: serving the web console on {listen}: other machines can reach it (they still need the secret); use a loopback address to keep it to this machine"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let endpoint = transport::client(None, &identity, &ca, ALPN_CENTRAL)?;
        let repo_endpoint = transport::client(None, &identity, &ca, ALPN_REPO)?;
        let first = CentralClient::connect(&endpoint, &admin.server)
            .await
            .with_context(|| format!("central {}", admin.server))?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("--listen {listen}: the address is in use or not this machine's"))?;
        let bound = listener.local_addr()?;
        let guard = if listen.ip().is_unspecified() {
            Guard::new(random_hex()?, random_hex()?, bound.port(), &host_names()).on_every_address(bound.port())
        } else {
            let ip = bound.ip();
            let literal = if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() };
            Guard::new(random_hex()?, random_hex()?, bound.port(), &[literal])
        };
        let host = match bound.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_string(),
            ip if ip.is_ipv6() => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        let url = format!("http://{host}:{}/?secret={}", bound.port(), guard.secret);
        let web = Arc::new(Web {
            subject: me.subject.clone(),
            can_act: me.has(Purpose::Right(Right::Act)),
            can_modify: me.has(Purpose::Right(Right::Modify)),
            admin,
            guard,
            endpoint,
            central: Mutex::new(Some(first)),
            generation: AtomicU64::new(0),
            repo_endpoint,
            trust,
            published: Mutex::new(None),
        });
        tokio::spawn(watch(web.clone()));
        if let Some(file) = &args.url_file {
            // Whole or not at all: a script waiting for it never reads half an address.
            let mut out =
                outpost_actors::disk::AtomicFile::create(file, 0o600).with_context(|| file.display().to_string())?;
            std::io::Write::write_all(&mut out, url.as_bytes()).with_context(|| file.display().to_string())?;
            out.commit().with_context(|| file.display().to_string())?;
        }
        eprintln!("The web console for central {} is at:", web.admin.server);
        crate::out!("{url}");
        eprintln!("(the address holds this session's secret: give it to no one; Ctrl-C stops the console)");
        let app = router(web);
        axum::serve(listener, app).with_graceful_shutdown(daemon::shutdown_signal()).await?;
        Ok(())
    })
}

fn router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/hosts", get(hosts))
        .route("/host", get(host))
        .route("/packages", get(packages))
        .route("/package", get(package))
        .route("/repos", get(repos))
        .route("/actions", get(actions))
        .route("/act", post(act))
        .route("/api/generation", get(generation))
        .layer(axum::middleware::from_fn_with_state(web.clone(), guard))
        .route(
            "/static/console.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css")], include_str!("assets/console.css")) }),
        )
        .route(
            "/static/console.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], include_str!("assets/console.js")) }),
        )
        .with_state(web)
}

/// Refuses what [`auth::Guard`] refuses; a POST's CSRF token is read from its form first.
async fn guard(State(web): State<Arc<Web>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let (body, csrf) = if parts.method == Method::POST {
        let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
            return (StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response();
        };
        let pairs = form_body(&bytes);
        let csrf = pairs.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.clone());
        (axum::body::Body::from(bytes), csrf)
    } else {
        (body, None)
    };
    match web.guard.judge(&parts.method, parts.uri.path(), parts.uri.query(), &parts.headers, csrf.as_deref()) {
        Verdict::Allow => next.run(Request::from_parts(parts, body)).await,
        Verdict::SetCookie { to } => {
            let mut r = Redirect::to(&to).into_response();
            r.headers_mut().insert(header::SET_COOKIE, web.guard.set_cookie().parse().expect("a valid header"));
            r
        }
        Verdict::Deny(why) => {
            (StatusCode::FORBIDDEN, Html(format!("<!DOCTYPE html><title>Outpost</title><p>{why}</p>"))).into_response()
        }
    }
}

fn form_body(bytes: &[u8]) -> Vec<(String, String)> {
    form_pairs(std::str::from_utf8(bytes).unwrap_or(""))
}

/// `a=1&b=x+y` as pairs, percent-decoded.
fn form_pairs(s: &str) -> Vec<(String, String)> {
    let decode = |v: &str| {
        let v = v.replace('+', " ");
        let bytes = v.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%'
                && i + 2 < bytes.len()
                && let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16)
            {
                out.push(b);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    s.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Asks central for its change counter, for the pages' live refresh.
async fn watch(web: Arc<Web>) {
    loop {
        if let Ok(CentralResponse::Generation(g)) = web.ask(CentralRequest::Generation).await {
            web.generation.store(g, Ordering::Relaxed);
        }
        tokio::time::sleep(POLL).await;
    }
}

impl Web {
    /// Asks central, connecting again when the connection was lost.
    async fn ask(&self, request: CentralRequest) -> Result<CentralResponse> {
        let client = {
            let mut slot = self.central.lock().await;
            match slot.as_ref().filter(|c| c.is_open()) {
                Some(c) => c.clone(),
                None => {
                    let c = CentralClient::connect(&self.endpoint, &self.admin.server)
                        .await
                        .with_context(|| format!("central {}", self.admin.server))?;
                    *slot = Some(c.clone());
                    c
                }
            }
        };
        Ok(client.request(&request).await?)
    }

    /// The packages the main repository publishes now (its snapshot, verified; read again only
    /// when its head changes).
    async fn published(&self) -> Result<(Head, Vec<PackageEntry>)> {
        let CentralResponse::Repos(repos) = self.ask(CentralRequest::Repos).await? else { bail!("unexpected answer") };
        let main = repos
            .iter()
            .find(|r| r.role == "main" && r.error.is_none())
            .ok_or_else(|| anyhow::anyhow!("central knows no main repository that answers"))?;
        let client = RepoClient::connect(&self.repo_endpoint, &main.addr).await?;
        let head = client.head().await?;
        let mut cached = self.published.lock().await;
        if let Some((h, entries)) = cached.as_ref()
            && h.hash == head.hash
        {
            drop(client);
            return Ok((*h, entries.clone()));
        }
        let (_, snapshot) = client.snapshot(&head, &self.trust, unix_now(), None).await?;
        drop(client);
        let entries = snapshot.package_entries();
        *cached = Some((head, entries.clone()));
        Ok((head, entries))
    }

    fn frame<'a>(&'a self, title: &'a str, nav: &'a str) -> Frame<'a> {
        Frame {
            title,
            nav,
            generation: self.generation.load(Ordering::Relaxed),
            admin: &self.subject,
            server: &self.admin.server,
            can_act: self.can_act,
            can_modify: self.can_modify,
            csrf: &self.guard.csrf,
            live: true,
        }
    }
}

/// `?fragment=1`: only what goes in `<main>` (the live refresh).
#[derive(Debug, Default, Deserialize)]
struct Common {
    fragment: Option<String>,
}

fn respond(frame: Frame<'_>, fragment: bool, above: &Markup, main: Markup) -> Response {
    let html = if fragment { main } else { pages::page(&frame, above, &main) };
    ([(header::CACHE_CONTROL, "no-store")], Html(html.into_string())).into_response()
}

fn failed(web: &Web, title: &str, e: &anyhow::Error) -> Response {
    let frame = Frame { live: false, ..web.frame(title, "") };
    let main = pages::notice(title, &[format!("{e:#}")], false);
    (StatusCode::BAD_GATEWAY, Html(pages::page(&frame, &maud::html! {}, &main).into_string())).into_response()
}

async fn generation(State(web): State<Arc<Web>>) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], web.generation.load(Ordering::Relaxed).to_string()).into_response()
}

async fn dashboard(State(web): State<Arc<Web>>, Query(c): Query<Common>) -> Response {
    let asked = async {
        let CentralResponse::Overview(o) =
            web.ask(CentralRequest::Overview { stale_after: STALE_DAYS * 86_400 }).await?
        else {
            bail!("unexpected answer")
        };
        let CentralResponse::ReposV2(r) = web.ask(CentralRequest::ReposV2).await? else { bail!("unexpected answer") };
        let CentralResponse::Actions(a) = web.ask(CentralRequest::Actions).await? else { bail!("unexpected answer") };
        Ok((o, r, newest_first(a)))
    };
    match asked.await {
        Ok((o, r, a)) => {
            let main = pages::dashboard(&o, &r, &a, unix_now(), STALE_DAYS);
            respond(web.frame("Dashboard", "dashboard"), c.fragment.is_some(), &maud::html! {}, main)
        }
        Err(e) => failed(&web, "Dashboard", &e),
    }
}

fn newest_first(mut a: Vec<outpost_protocol::central::ActionLine>) -> Vec<outpost_protocol::central::ActionLine> {
    a.sort_by_key(|x| std::cmp::Reverse(x.expires));
    a
}

#[derive(Debug, Default, Deserialize)]
struct HostsParams {
    q: Option<String>,
    sort: Option<String>,
    desc: Option<String>,
    page: Option<u32>,
    fragment: Option<String>,
}

async fn hosts(State(web): State<Arc<Web>>, Query(p): Query<HostsParams>) -> Response {
    let line = p.q.clone().unwrap_or_default();
    let sort = p.sort.as_deref().and_then(HostSort::parse).unwrap_or_default();
    let descending = p.desc.as_deref().is_some_and(|d| d == "1");
    let frame = web.frame("Hosts", "hosts");
    let (filter, audit) = match parse_filter(&line) {
        Ok(f) => f,
        Err(e) => {
            let above = pages::hosts_above(&frame, &line, sort, descending, Some(&e.to_string()));
            let main = maud::html! { p.error { "Nothing listed: the filter is wrong." } };
            return respond(frame, p.fragment.is_some(), &above, main);
        }
    };
    let page = p.page.unwrap_or(1).max(1);
    let q = HostPageQuery { filter, sort, descending, offset: (page - 1).saturating_mul(PER_PAGE), limit: PER_PAGE };
    let request = match audit {
        Some(audit) => CentralRequest::HostPageV2(HostPageQueryV2 { page: q, audit: Some(audit) }),
        None => CentralRequest::HostPage(q),
    };
    match web.ask(request).await {
        Ok(CentralResponse::HostPage(hp)) => {
            let above = pages::hosts_above(&frame, &line, sort, descending, None);
            let main = pages::hosts(&hp, &line, sort, descending, PER_PAGE, unix_now(), web.can_act);
            respond(frame, p.fragment.is_some(), &above, main)
        }
        Ok(other) => failed(&web, "Hosts", &anyhow::anyhow!("unexpected answer {other:?}")),
        Err(e) => failed(&web, "Hosts", &e),
    }
}

#[derive(Debug, Default, Deserialize)]
struct HostParams {
    name: String,
    fragment: Option<String>,
}

async fn host(State(web): State<Arc<Web>>, Query(p): Query<HostParams>) -> Response {
    match web.ask(CentralRequest::HostV2(p.name.clone())).await {
        Ok(CentralResponse::HostV2(d)) => {
            let title = d.detail.summary.fqdn.clone();
            let main = pages::host(&d.detail, &d.reports, unix_now());
            respond(web.frame(&title, "hosts"), p.fragment.is_some(), &maud::html! {}, main)
        }
        Ok(CentralResponse::Error { message, .. }) => failed(&web, "Host", &anyhow::anyhow!(message)),
        Ok(other) => failed(&web, "Host", &anyhow::anyhow!("unexpected answer {other:?}")),
        Err(e) => failed(&web, "Host", &e),
    }
}

async fn packages(State(web): State<Arc<Web>>, Query(c): Query<Common>) -> Response {
    match web.ask(CentralRequest::Packages).await {
        Ok(CentralResponse::Packages(list)) => {
            // What is published, from the main repository's signed snapshot (verified here).
            let published = web.published().await;
            let main = pages::packages(
                &list,
                &published.as_ref().map(|(h, e)| (h, e.as_slice())).map_err(|e| format!("{e:#}")),
            );
            respond(web.frame("Packages", "packages"), c.fragment.is_some(), &maud::html! {}, main)
        }
        Ok(other) => failed(&web, "Packages", &anyhow::anyhow!("unexpected answer {other:?}")),
        Err(e) => failed(&web, "Packages", &e),
    }
}

#[derive(Debug, Default, Deserialize)]
struct PackageParams {
    name: String,
    fragment: Option<String>,
}

async fn package(State(web): State<Arc<Web>>, Query(p): Query<PackageParams>) -> Response {
    let fleet = match web.ask(CentralRequest::Packages).await {
        Ok(CentralResponse::Packages(list)) => list,
        Ok(other) => return failed(&web, "Package", &anyhow::anyhow!("unexpected answer {other:?}")),
        Err(e) => return failed(&web, "Package", &e),
    };
    let published = match web.published().await {
        Ok((_, entries)) => entries,
        Err(e) => return failed(&web, "Package", &e),
    };
    let mut versions: Vec<&PackageEntry> = published.iter().filter(|e| e.name == p.name).collect();
    versions.sort_by(|a, b| b.version.cmp(&a.version));
    let summary = fleet.iter().find(|s| s.name == p.name);
    let main = pages::package(&p.name, summary, &versions);
    respond(web.frame(&p.name, "packages"), p.fragment.is_some(), &maud::html! {}, main)
}

async fn repos(State(web): State<Arc<Web>>, Query(c): Query<Common>) -> Response {
    match web.ask(CentralRequest::ReposV2).await {
        Ok(CentralResponse::ReposV2(list)) => respond(
            web.frame("Repositories", "repos"),
            c.fragment.is_some(),
            &maud::html! {},
            pages::repos(&list, unix_now()),
        ),
        Ok(other) => failed(&web, "Repositories", &anyhow::anyhow!("unexpected answer {other:?}")),
        Err(e) => failed(&web, "Repositories", &e),
    }
}

async fn actions(State(web): State<Arc<Web>>, Query(c): Query<Common>) -> Response {
    match web.ask(CentralRequest::Actions).await {
        Ok(CentralResponse::Actions(list)) => {
            let main = pages::actions(&newest_first(list), unix_now());
            respond(web.frame("Actions", "actions"), c.fragment.is_some(), &maud::html! {}, main)
        }
        Ok(other) => failed(&web, "Actions", &anyhow::anyhow!("unexpected answer {other:?}")),
        Err(e) => failed(&web, "Actions", &e),
    }
}

/// An action on the selected hosts: first a page saying how many it reaches, then (confirmed)
/// signed here and relayed by central.
async fn act(State(web): State<Arc<Web>>, body: axum::body::Bytes) -> Response {
    let pairs = form_body(&body);
    let field = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    let hosts: Vec<String> = pairs.iter().filter(|(k, _)| k == "host").map(|(_, v)| v.clone()).collect();
    let kind = field("kind").unwrap_or("").to_string();
    let packages: Vec<String> =
        field("packages").unwrap_or("").split([',', ' ']).filter(|p| !p.is_empty()).map(str::to_string).collect();
    let frame = Frame { live: false, ..web.frame("Action", "hosts") };
    let refuse = |why: String| {
        (
            StatusCode::BAD_REQUEST,
            Html(pages::page(&frame, &maud::html! {}, &pages::notice("Not sent", &[why], false)).into_string()),
        )
            .into_response()
    };
    if !web.can_act {
        return refuse(format!("{} has no act right: this console is view only", web.subject));
    }
    if hosts.is_empty() {
        return refuse("select hosts first".into());
    }
    let needs_packages = matches!(kind.as_str(), "install" | "remove" | "set-packages");
    if needs_packages && packages.is_empty() {
        return refuse(format!("{kind} needs package names"));
    }
    if !matches!(kind.as_str(), "update" | "upgrade" | "install" | "remove" | "set-packages") {
        return refuse(format!("{kind:?} is not an action"));
    }
    if field("confirm") != Some("1") {
        // Name the hosts as central knows them.
        let mut names = Vec::new();
        for h in hosts.iter().take(50) {
            names.push(match web.ask(CentralRequest::Host(h.clone())).await {
                Ok(CentralResponse::Host(d)) => d.summary.fqdn.clone(),
                _ => h.clone(),
            });
        }
        if hosts.len() > 50 {
            names.extend(hosts[50..].iter().cloned());
        }
        let main = pages::confirm(&frame, &kind, &packages, &hosts, &names);
        return respond(frame, false, &maud::html! {}, main);
    }
    let result = send(&web, &kind, packages, hosts).await;
    match result {
        Ok(lines) => respond(frame, false, &maud::html! {}, pages::notice("Sent", &lines, true)),
        Err(e) => refuse(format!("{e:#}")),
    }
}

async fn send(web: &Arc<Web>, kind: &str, packages: Vec<String>, hosts: Vec<String>) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    let action_kind = match kind {
        "update" => ActionKind::Update,
        "upgrade" => ActionKind::Upgrade,
        "install" => ActionKind::Install(packages.clone()),
        "remove" => ActionKind::Remove(packages.clone()),
        _ => {
            // set-packages: each host's own host package, then an upgrade to apply it.
            let CentralResponse::Repos(repos) = web.ask(CentralRequest::Repos).await? else {
                bail!("unexpected answer")
            };
            let Some(main) = repos.iter().find(|r| r.role == "main" && r.error.is_none()) else {
                bail!("central knows no main repository to publish host packages to");
            };
            let mut published = 0;
            for h in &hosts {
                let CentralResponse::Host(d) = web.ask(CentralRequest::Host(h.clone())).await? else {
                    bail!("{h}: not a host central knows")
                };
                let name = d.summary.fqdn.clone();
                let (admin, repo, packages) = (web.admin.clone(), main.addr.clone(), packages.clone());
                let p =
                    tokio::task::spawn_blocking(move || admin.publish_host_package(&name, &packages, &repo)).await??;
                lines.push(format!("Published {} {} (snapshot {})", p.name, p.version, p.sequence));
                published = published.max(p.sequence);
            }
            // Agents upgrade from that snapshot or a newer one, even when the action reaches
            // them before their edge has it.
            ActionKind::UpgradeAfter(published)
        }
    };
    let admin = web.admin.clone();
    let targets = Targets::Hosts(hosts);
    let signed = tokio::task::spawn_blocking(move || admin.sign_action(action_kind, targets, ACTION_SECS)).await??;
    match web.ask(CentralRequest::Act(signed)).await? {
        CentralResponse::ActionQueued { id, targets, online } => {
            lines.push(format!(
                "Action {id} relayed to {online} of {targets} host(s); the others get it when they connect."
            ));
            Ok(lines)
        }
        CentralResponse::Error { message, .. } => bail!("central refused: {message}"),
        other => bail!("unexpected answer {other:?}"),
    }
}

/// This machine's own names, which a browser on another machine may use to reach it.
fn host_names() -> Vec<String> {
    let mut names = Vec::new();
    for var in ["HOSTNAME", "COMPUTERNAME"] {
        if let Ok(n) = std::env::var(var) {
            names.push(n);
        }
    }
    if let Ok(n) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        names.push(n.trim().to_string());
    }
    names.retain(|n| !n.is_empty());
    names.sort();
    names.dedup();
    names
}

fn random_hex() -> Result<String> {
    let mut n = [0u8; 24];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut n)
        .map_err(|_| anyhow::anyhow!("no randomness available"))?;
    Ok(outpost_protocol::hex::hex(&n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_repeated_fields() {
        let pairs = form_pairs("csrf=t&host=sha256%3Aab&host=sha256%3Acd&packages=a+b%2Cc&kind=install");
        let hosts: Vec<&str> = pairs.iter().filter(|(k, _)| k == "host").map(|(_, v)| v.as_str()).collect();
        assert_eq!(hosts, ["sha256:ab", "sha256:cd"]);
        assert!(pairs.contains(&("packages".into(), "a b,c".into())));
    }
}
