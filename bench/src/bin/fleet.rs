//! Central benchmark: a simulated fleet (many agents in this one process, each with its own host
//! certificate and key, real QUIC, real Ed25519 signatures) against one release `outpost
//! server` (central only) on this machine.
//!
//! Run (builds the release `outpost` binary first):
//!
//! ```sh
//! cargo run --release -p outpost-bench --bin fleet
//! ```
//!
//! Flags: `--hosts N` (default 100000), `--connections N` (agents sending deltas at once,
//! default 1000), `--seconds S` (how long deltas are sent, default 20), `--software N` (packages
//! per host's software list, default 150), `--work DIR`, `--keep`, `--no-build`,
//! `--outpost PATH`; `--database URL` runs central on that PostgreSQL database (empty; the
//! password in `OUTPOST_DATABASE_PASSWORD`) instead of redb, `--instances N` runs N central
//! instances on it (the hosts spread over them); `--grow-to N` (PostgreSQL) then copies the
//! reported hosts in SQL (new certificates' fingerprints, names and UUIDs; the same rows and
//! sections) until the database holds N hosts, before the queries and the memory are measured
//! (a million full reports through QUIC would take hours on 2 cores); `--pin` runs central on
//! CPU 0 and this benchmark (the fleet) on CPU 1 (`taskset`); `--rate N` adds a phase where the
//! agents together offer N deltas per second (each delta due at its time, its latency counted
//! from then); `--deltas-only` stops after the deltas (no queries, pages or reports).
//! Deltas are signed before the clock starts (signing is the agents' work, on their machines).
//!
//! What it measures:
//! 1. **Enrolment load**: every host connects and sends its full inventory (host facts,
//!    hardware, OS, `--software` dpkg-like entries from a pool of 5,000 names, 10 Outpost
//!    packages); hosts and reports per second.
//! 2. **Signed deltas**: `--connections` agents each send, one after the other, a signed delta
//!    (the last update's result and one package's status change) and wait for central's
//!    answer, which comes once the report is durable; sustained deltas per second and the
//!    latency distribution (p50, p99).
//! 3. **Query**: `console hosts --software NAME` for a name installed on 1% of the hosts: the
//!    whole command as typed (process start, TLS, query, output of the first 1,000 hosts and the
//!    count), the request alone on an open connection, and the command listing every match.
//! 4. **Memory**: central's resident set (VmRSS, VmHWM) with every host loaded.

#[allow(dead_code)]
#[path = "replication/procs.rs"]
mod procs;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use outpost_actors::central::client::CentralClient;
use outpost_actors::transport::{self, Identity};
use outpost_protocol::central::{
    ALPN_CENTRAL, CentralRequest, CentralResponse, Hardware, HostFacts, HostFilter, HostPageQuery, MAX_PAGE, Os,
    PackageReport, Report, Section, Software, UpdateResult,
};
use outpost_protocol::pki::{self, IssueRequest, PrivateKey, Role};
use outpost_protocol::resolver::{HostStatus, PackageStatus};
use rustls::pki_types::CertificateDer;

use crate::procs::Daemon;

const NET: &str = "127.44.0";

#[derive(Debug, Clone)]
struct Options {
    hosts: usize,
    connections: usize,
    seconds: u64,
    software: usize,
    work: Option<PathBuf>,
    keep: bool,
    build: bool,
    outpost: Option<PathBuf>,
    database: Option<String>,
    instances: usize,
    grow_to: Option<usize>,
    rate: Option<usize>,
    pin: bool,
    deltas_only: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        hosts: 100_000,
        connections: 1000,
        seconds: 20,
        software: 150,
        work: None,
        keep: false,
        build: true,
        outpost: None,
        database: None,
        instances: 1,
        grow_to: None,
        rate: None,
        pin: false,
        deltas_only: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--hosts" => o.hosts = value()?.parse()?,
            "--connections" => o.connections = value()?.parse()?,
            "--seconds" => o.seconds = value()?.parse()?,
            "--software" => o.software = value()?.parse()?,
            "--work" => o.work = Some(PathBuf::from(value()?)),
            "--outpost" => o.outpost = Some(PathBuf::from(value()?)),
            "--keep" => o.keep = true,
            "--no-build" => o.build = false,
            "--database" => o.database = Some(value()?),
            "--instances" => o.instances = value()?.parse()?,
            "--grow-to" => o.grow_to = Some(value()?.parse()?),
            "--rate" => o.rate = Some(value()?.parse()?),
            "--pin" => o.pin = true,
            "--deltas-only" => o.deltas_only = true,
            other => bail!("unknown flag {other} (see the doc comment of bench/src/bin/fleet.rs)"),
        }
    }
    Ok(o)
}

/// One simulated host.
struct SimHost {
    uuid: String,
    fqdn: String,
    key: PrivateKey,
    config: quinn::ClientConfig,
}

fn software_of(i: usize, n: usize) -> Vec<Software> {
    let mut out: Vec<Software> = (0..n)
        .map(|k| {
            let name = (i.wrapping_mul(2_654_435_761).wrapping_add(k * 40_503)) % 5000;
            Software { name: format!("pkg-{name:04}"), version: format!("1.{}.0-1", k % 7) }
        })
        .collect();
    if i % 100 == 7 {
        out.push(Software { name: "rare-tool".into(), version: "2.0".into() });
    }
    out.sort();
    out.dedup_by(|a, b| a.name == b.name);
    out
}

fn packages_of(i: usize, round: u64) -> Section {
    let packages = (0..10)
        .map(|k| PackageReport {
            name: format!("outpost-pkg-{k}"),
            // An error now and then; one package waiting on every other host (a rollout under way).
            status: if (i + k + round as usize).is_multiple_of(97) {
                PackageStatus::Error
            } else if (i + k).is_multiple_of(20) {
                PackageStatus::NeedUpgrade
            } else {
                PackageStatus::Ok
            },
            installed: Some(format!("{k}.0")),
            target: None,
            state: None,
            cause: None,
            reason: None,
            output: None,
        })
        .collect();
    Section::PackagesV2 { host_status: HostStatus::Ok, packages }
}

fn full_sections(i: usize, h: &SimHost, software: usize) -> Vec<Section> {
    vec![
        Section::Host(HostFacts {
            uuid: h.uuid.clone(),
            fqdn: h.fqdn.clone(),
            ou: format!("OU=Site{},DC=fleet,DC=test", i % 50),
            site: format!("site-{}", i % 50),
            profiles: vec![],
            agent_version: "bench".into(),
        }),
        Section::Hardware(Hardware {
            vendor: "QEMU".into(),
            product: "Standard PC".into(),
            serial: format!("S{i}"),
            bios: "1.16".into(),
        }),
        Section::Os(Os {
            name: "Debian GNU/Linux".into(),
            version: "12".into(),
            kernel: "6.1.0".into(),
            arch: "x86_64".into(),
        }),
        Section::Memory(8 << 30),
        Section::Software(software_of(i, software)),
        packages_of(i, 0),
        Section::LastUpdate(Some(UpdateResult { at: 0, ok: true, message: "first".into(), repo: None })),
    ]
}

/// The highest delta rate the closed-loop phase is prepared for (deltas signed in advance).
const MAX_RATE: usize = 20_000;

/// The delta a simulated host sends in round `seq`: the packages section and the last update.
fn delta_of(i: usize, h: &SimHost, seq: u64) -> CentralRequest {
    let sections = vec![
        packages_of(i, seq),
        Section::LastUpdate(Some(UpdateResult {
            at: seq as i64,
            ok: true,
            message: format!("round {seq}"),
            repo: None,
        })),
    ];
    let report = Report { host: h.uuid.clone(), sequence: seq, full: false, created: 0, sections };
    CentralRequest::Report(report.sign(&h.key))
}

/// `count` signed deltas for each host, from sequence `first[i]` on.
fn presign(hosts: &[Arc<SimHost>], first: &[u64], count: usize) -> Vec<Vec<CentralRequest>> {
    hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let first = first[i];
            (first..first + count as u64).map(|seq| delta_of(i, h, seq)).collect()
        })
        .collect()
}

/// What one phase of deltas gave.
struct Deltas {
    applied: u64,
    errors: u64,
    /// Connections that sent every delta signed for them before the window ended.
    exhausted: u64,
    measured: f64,
    /// Milliseconds, sorted.
    latencies: Vec<f64>,
    /// How many deltas each connection sent (its host's sequence goes on from there).
    sent: Vec<u64>,
    /// What the connections sent and received meanwhile (the fleet's side).
    quic: Quic,
}

/// QUIC counters of the fleet's connections over a phase: datagrams each way and the frames
/// that are not the requests and answers themselves.
#[derive(Debug, Default, Clone, Copy)]
struct Quic {
    sent: u64,
    received: u64,
    acks_sent: u64,
    acks_received: u64,
    /// MAX_STREAMS, MAX_DATA and MAX_STREAM_DATA received: credit central grants.
    credit_received: u64,
}

impl Quic {
    fn of(s: &quinn::ConnectionStats) -> Self {
        let f = &s.frame_rx;
        Self {
            sent: s.udp_tx.datagrams,
            received: s.udp_rx.datagrams,
            acks_sent: s.frame_tx.acks,
            acks_received: f.acks,
            credit_received: f.max_streams_bidi + f.max_data + f.max_stream_data,
        }
    }

    fn add(&mut self, o: Self) {
        self.sent += o.sent;
        self.received += o.received;
        self.acks_sent += o.acks_sent;
        self.acks_received += o.acks_received;
        self.credit_received += o.credit_received;
    }

    fn since(self, before: Self) -> Self {
        Self {
            sent: self.sent - before.sent,
            received: self.received - before.received,
            acks_sent: self.acks_sent - before.acks_sent,
            acks_received: self.acks_received - before.acks_received,
            credit_received: self.credit_received - before.credit_received,
        }
    }

    /// Per delta, for the report.
    fn per(self, deltas: u64) -> String {
        let d = deltas.max(1) as f64;
        format!(
            "datagrams per delta: {:.2} sent + {:.2} received; ACK frames {:.2} sent, {:.2} received; credit frames received {:.2}",
            self.sent as f64 / d,
            self.received as f64 / d,
            self.acks_sent as f64 / d,
            self.acks_received as f64 / d,
            self.credit_received as f64 / d
        )
    }
}

/// Sends the signed deltas, one in flight per connection, for `window`. Without a rate each
/// connection sends its next delta as soon as the last is answered (latency from sending);
/// with one, the connections together offer `rate` deltas per second, each delta due at its
/// time (latency from when it was due, so a slow answer counts against every delta it delays).
async fn send_deltas(
    clients: Vec<CentralClient>,
    presigned: Vec<Vec<CentralRequest>>,
    window: Duration,
    rate: Option<usize>,
) -> Result<Deltas> {
    let n = clients.len();
    let started = tokio::time::Instant::now();
    let end = started + window;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (client, deltas)) in clients.into_iter().zip(presigned).enumerate() {
        tasks.spawn(async move {
            let before = Quic::of(&client.stats());
            let (mut applied, mut errors, mut lat, mut sent) = (0u64, 0u64, Vec::new(), 0u64);
            let mut exhausted = true;
            for (k, request) in deltas.iter().enumerate() {
                let due = match rate {
                    Some(r) => {
                        let due = started + Duration::from_secs_f64((i as f64 + (k * n) as f64) / r as f64);
                        tokio::time::sleep_until(due).await;
                        due
                    }
                    None => tokio::time::Instant::now(),
                };
                if due >= end || tokio::time::Instant::now() >= end {
                    exhausted = false;
                    break;
                }
                sent += 1;
                match client.request(request).await {
                    Ok(CentralResponse::ReportApplied { .. }) => {
                        lat.push(due.elapsed().as_secs_f64() * 1000.0);
                        applied += 1;
                    }
                    _ => errors += 1,
                }
            }
            let stats = Quic::of(&client.stats()).since(before);
            client.close();
            (i, applied, errors, exhausted, lat, sent, stats)
        });
    }
    let mut out = Deltas {
        applied: 0,
        errors: 0,
        exhausted: 0,
        measured: 0.0,
        latencies: Vec::new(),
        sent: vec![0; n],
        quic: Quic::default(),
    };
    while let Some(r) = tasks.join_next().await {
        let (i, applied, errors, exhausted, lat, sent, stats) = r?;
        out.quic.add(stats);
        out.sent[i] = sent;
        out.applied += applied;
        out.errors += errors;
        out.exhausted += u64::from(exhausted);
        out.latencies.extend(lat);
    }
    out.measured = started.elapsed().as_secs_f64();
    out.latencies.sort_by(f64::total_cmp);
    Ok(out)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// One `GET` to the web console (HTTP/1.0): the status code and the body's length.
fn http_get(addr: &str, path: &str, cookie: Option<&str>) -> Result<(u16, String, usize)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let cookie = cookie.map(|c| format!("Cookie: {c}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{cookie}\r\n")?;
    let mut text = Vec::new();
    s.read_to_end(&mut text)?;
    let text = String::from_utf8_lossy(&text);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((code, head.to_string(), body.len()))
}

/// Times pages of the web console (served by `outpost console web` at `url`): the hosts view's
/// first page, a filtered and sorted one, a deep page, and the dashboard; 20 of each.
fn web_pages(url: &str) -> Result<String> {
    let rest = url.trim().strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("not an address: {url}"))?;
    let (addr, query) = rest.split_once('/').unwrap_or((rest, ""));
    let (code, head, _) = http_get(addr, &format!("/{query}"), None)?;
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .and_then(|c| c.split(';').next())
        .ok_or_else(|| anyhow::anyhow!("the web console gave no session ({code})"))?
        .to_string();
    let mut out = String::new();
    for (what, path) in [
        ("hosts view, first page of 50 by name", "/hosts"),
        ("hosts view, `status:OK` (every host) by last report, newest first", "/hosts?q=status:OK&sort=seen&desc=1"),
        ("hosts view, page 1000 of 2000 by site", "/hosts?sort=site&page=1000"),
        ("hosts view, `sw:rare-tool name:h01*`", "/hosts?q=sw:rare-tool+name:h01*"),
        ("dashboard (counts by status and site, stale hosts)", "/"),
    ] {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..20 {
            let t = Instant::now();
            let (code, _, n) = http_get(addr, path, Some(&cookie))?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(code == 200, "{path}: HTTP {code}");
            bytes = n;
        }
        times.sort_by(f64::total_cmp);
        out.push_str(&format!(
            "| web console: {what} ({} kB of HTML) | median {:.1} ms, max {:.1} ms |\n",
            bytes / 1000,
            percentile(&times, 0.5),
            times.last().copied().unwrap_or(0.0)
        ));
    }
    Ok(out)
}

/// Times `console report` (whole commands, 10 of each) for the built-in reports.
fn console_reports(outpost: &Path, work: &Path, central: &str, admin: &(PathBuf, PathBuf)) -> Result<String> {
    let mut out = String::new();
    for args in [
        vec!["errors-by-site"],
        vec!["software-versions", "--param", "name=rare-tool"],
        vec!["not-seen", "--param", "days=7"],
        vec!["pending-by-site"],
    ] {
        let mut times = Vec::new();
        for _ in 0..10 {
            let mut c = cmd(outpost, work);
            c.args(["console", "report"]).args(&args).args(["--json", "--server", central]);
            c.arg("--ca").arg(work.join("pki/ca.crt")).arg("--cert").arg(&admin.0).arg("--key").arg(&admin.1);
            let t = Instant::now();
            procs::run(&mut c)?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        out.push_str(&format!(
            "| `console report {}`, whole command | median {:.1} ms, max {:.1} ms |\n",
            args.join(" "),
            percentile(&times, 0.5),
            times.last().copied().unwrap_or(0.0)
        ));
    }
    Ok(out)
}

/// Bytes the process `pid` caused to be written to storage (`write_bytes` of /proc/PID/io).
fn io_write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    let o = parse(&argv[1..])?;
    let outpost = outpost_bench::outpost_binary(o.outpost.as_deref(), o.build)?;
    let work = outpost_bench::work_folder(o.work.as_deref(), "fleet")?;
    if o.pin {
        // Before any thread starts: every thread of this process inherits the second CPU.
        procs::run(Command::new("taskset").args(["-p", "-c", "1", &std::process::id().to_string()]))
            .context("pinning the benchmark to CPU 1 (taskset)")?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = run(&o, &outpost, &work, &rt);
    if !o.keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    println!("{}", result?);
    Ok(())
}

fn cmd(outpost: &Path, work: &Path) -> Command {
    command(None, outpost, work)
}

/// `outpost` in `work`, on the one CPU `cpu` if given (through `taskset`).
fn command(cpu: Option<usize>, outpost: &Path, work: &Path) -> Command {
    let mut c = match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string()]).arg(outpost);
            c
        }
        None => Command::new(outpost),
    };
    c.current_dir(work).env("OUTPOST_LOG", "warn");
    for v in ["OUTPOST_KEY_PASSWORD", "OUTPOST_CA_PASSWORD"] {
        c.env_remove(v);
    }
    c
}

fn run(o: &Options, outpost: &Path, work: &Path, rt: &tokio::runtime::Runtime) -> Result<String> {
    procs::run(cmd(outpost, work).args(["pki", "init", "--dir", "pki", "--org", "Fleet", "--no-password"]))?;
    let ip = format!("{NET}.1");
    let issue = |role: &str, name: &str, extra: &[&str]| -> Result<(PathBuf, PathBuf)> {
        let mut c = cmd(outpost, work);
        c.args(["pki", "issue", "--dir", "pki", "--role", role, "--name", name, "--no-password"]).args(extra);
        let cert = work.join(procs::run(&mut c)?.trim());
        Ok((cert.clone(), cert.with_extension("key")))
    };
    let server_cert = issue("server", "central", &["--san", &ip])?;
    let admin = issue("admin", "viewer", &["--rights", "view"])?;
    anyhow::ensure!(o.instances >= 1 && (o.instances == 1 || o.database.is_some()), "--instances needs --database");
    let mut servers = Vec::new();
    let mut centrals = Vec::new();
    for k in 0..o.instances {
        let central = format!("{ip}:{}", procs::udp_port(&ip)?);
        let repo = format!("{ip}:{}", procs::udp_port(&ip)?);
        let metrics = format!("{ip}:{}", procs::tcp_port(&ip)?);
        // Pinned: central on the first core, the benchmark (the fleet) on the second.
        let mut c = command(if o.pin { Some(0) } else { None }, outpost, work);
        c.args(["server", "--no-repository", "--listen", &repo, "--central-listen", &central, "--metrics", &metrics])
            .arg("--data")
            .arg(work.join(format!("server-{k}")))
            .arg("--ca")
            .arg(work.join("pki/ca.crt"))
            .arg("--cert")
            .arg(&server_cert.0)
            .arg("--key")
            .arg(&server_cert.1);
        if let Some(url) = &o.database {
            c.args(["--database", url]);
        }
        servers.push(Daemon::spawn("server", &mut c, &work.join(format!("server-{k}.log")))?);
        procs::wait_for(Duration::from_secs(60), Duration::from_millis(10), "the server to start", || {
            procs::scrape(&metrics).map(|_| ())
        })?;
        centrals.push(central);
    }
    let central = centrals[0].clone();
    let central_of = |i: usize| centrals[i % centrals.len()].clone();

    // Host certificates, issued here by the CA (what enrollment would give each host).
    let ca_pem = std::fs::read_to_string(work.join("pki/ca.crt"))?;
    let ca: Vec<CertificateDer<'static>> = pki::parse_pem_certificates(&ca_pem)?;
    let ca_key = pki::decode_private_key(&std::fs::read_to_string(work.join("pki/ca.key"))?, None)?;
    let started = Instant::now();
    let now = outpost_actors::clock::unix_now();
    let mut hosts = Vec::with_capacity(o.hosts);
    for i in 0..o.hosts {
        let fqdn = format!("h{i:06}.fleet.test");
        let req = IssueRequest { role: Role::Host, name: fqdn.clone(), rights: vec![], alt_names: vec![], days: 30 };
        let issued = pki::issue(&ca[0], &ca_key, &req, now)?;
        let identity = Identity { chain: vec![issued.cert.clone()], key: issued.key.pkcs8_der().to_vec() };
        let config = transport::client_config(&identity, &ca, ALPN_CENTRAL)?;
        hosts.push(Arc::new(SimHost { uuid: format!("uuid-{i:06}"), fqdn, key: issued.key, config }));
    }
    let issuing = started.elapsed().as_secs_f64();
    eprintln!("{} host certificates issued in {issuing:.1} s", o.hosts);

    let endpoint = rt.block_on(async { transport::client_endpoint(None) })?;
    // 1. Every host sends its full inventory.
    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        let sem = Arc::new(tokio::sync::Semaphore::new(256));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, h) in hosts.iter().enumerate() {
            let permit = sem.clone().acquire_owned().await?;
            let (h, endpoint, central, done, software) =
                (h.clone(), endpoint.clone(), central_of(i), done.clone(), o.software);
            tasks.spawn(async move {
                let _permit = permit;
                let client = CentralClient::connect_with(&endpoint, h.config.clone(), &central).await?;
                let report = Report {
                    host: h.uuid.clone(),
                    sequence: 1,
                    full: true,
                    created: 0,
                    sections: full_sections(i, &h, software),
                };
                let answer = client.request(&CentralRequest::Report(report.sign(&h.key))).await?;
                client.close();
                if !matches!(answer, CentralResponse::ReportApplied { .. }) {
                    anyhow::bail!("unexpected answer {answer:?}");
                }
                done.fetch_add(1, Ordering::Relaxed);
                Ok::<_, anyhow::Error>(())
            });
            while let Some(r) = tasks.try_join_next() {
                r??;
            }
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let populate = started.elapsed().as_secs_f64();
    eprintln!("{} full reports in {populate:.1} s", o.hosts);
    let rss = servers.iter().map(|s| status_kib(s.pid(), "VmRSS:")).max().unwrap_or(0);
    let hwm = servers.iter().map(|s| status_kib(s.pid(), "VmHWM:")).max().unwrap_or(0);
    let db = match &o.database {
        Some(url) => database_size(url)?,
        None => std::fs::metadata(work.join("server-0/central/central.redb")).map(|m| m.len()).unwrap_or(0),
    };

    // 2. Signed deltas, one after the other per host, from many hosts at once. Each host's deltas
    //    are signed before the clock starts (signing is the agents' work, on their own machines).
    let n = o.connections.min(hosts.len());
    let per_host = (MAX_RATE * o.seconds as usize).div_ceil(n);
    let t = Instant::now();
    let first_seq = vec![2u64; n];
    let presigned = presign(&hosts[..n], &first_seq, per_host);
    eprintln!("{} deltas signed in {:.1} s", n * per_host, t.elapsed().as_secs_f64());
    let server_cpu = || servers.iter().map(|s| procs::cpu_ticks(s.pid()).map_or(0, |(own, _)| own)).sum::<u64>();
    let connect = || {
        rt.block_on(async {
            let mut clients = Vec::new();
            for (i, h) in hosts.iter().take(n).enumerate() {
                clients.push(CentralClient::connect_with(&endpoint, h.config.clone(), &central_of(i)).await?);
            }
            Ok::<_, anyhow::Error>(clients)
        })
    };
    // What central asked the disk to write (its data files; /proc/PID/io).
    let server_writes = || servers.iter().map(|s| io_write_bytes(s.pid())).sum::<u64>();
    let cpu_before = server_cpu();
    let writes_before = server_writes();
    let closed = rt.block_on(send_deltas(connect()?, presigned, Duration::from_secs(o.seconds), None))?;
    let central_cpu = (server_cpu() - cpu_before) as f64 / procs::clock_ticks();
    let central_writes = server_writes() - writes_before;
    let (applied, measured, errors) = (closed.applied, closed.measured, closed.errors);
    let lat = closed.latencies;
    eprintln!("{applied} deltas in {measured:.1} s, {errors} errors; {}", closed.quic.per(applied));
    anyhow::ensure!(closed.exhausted == 0, "{} connections sent every delta signed for them", closed.exhausted);
    // The same at a fixed offered rate: latency counted from when each delta was due.
    let paced = match o.rate {
        Some(rate) => {
            let per_host = (rate * o.seconds as usize).div_ceil(n) + 1;
            // Each host goes on from the last delta it sent (central asks a full report after a gap).
            let next: Vec<u64> = first_seq.iter().zip(&closed.sent).map(|(f, s)| f + s).collect();
            let presigned = presign(&hosts[..n], &next, per_host);
            let cpu_before = server_cpu();
            let r = rt.block_on(send_deltas(connect()?, presigned, Duration::from_secs(o.seconds), Some(rate)))?;
            let cpu = (server_cpu() - cpu_before) as f64 / procs::clock_ticks();
            eprintln!("paced at {rate}/s: {} deltas in {:.1} s, {} errors", r.applied, r.measured, r.errors);
            Some((rate, r, cpu))
        }
        None => None,
    };
    let cores = match o.pin {
        true => "central pinned to CPU 0, the agents' side to CPU 1",
        false => "the agents' side runs on the same 2 cores",
    };
    let mut delta_rows = format!(
        "| signed deltas sustained, {n} agents, one report in flight each, {secs} s | {rate:.0}/s ({applied} applied, \
         {errors} errors) |\n\
         | central's CPU during the deltas ({cores}) | {ccpu:.1} CPU-s for {secs} s: {per_core:.0} deltas per central \
         CPU-second |\n\
         | delta latency (sent to durable answer) | p50 {p50:.1} ms, p99 {p99:.1} ms, max {pmax:.1} ms |\n\
         | central's disk writes during the deltas | {wmb:.0} MB, {wpd:.0} bytes per delta |\n",
        wmb = central_writes as f64 / 1e6,
        wpd = central_writes as f64 / applied.max(1) as f64,
        secs = o.seconds,
        rate = applied as f64 / measured,
        ccpu = central_cpu,
        per_core = applied as f64 / central_cpu.max(0.001),
        p50 = percentile(&lat, 0.5),
        p99 = percentile(&lat, 0.99),
        pmax = lat.last().copied().unwrap_or(0.0),
    );
    if let Some((offered, r, cpu)) = &paced {
        delta_rows.push_str(&format!(
            "| signed deltas offered at {offered}/s by {n} agents, {secs} s | {got:.0}/s ({applied} applied, {errors} \
             errors), central {cpu:.1} CPU-s |\n\
             | latency at {offered}/s (from when each was due to durable answer) | p50 {p50:.1} ms, p99 {p99:.1} ms, \
             max {pmax:.1} ms |\n",
            secs = o.seconds,
            got = r.applied as f64 / r.measured,
            applied = r.applied,
            errors = r.errors,
            p50 = percentile(&r.latencies, 0.5),
            p99 = percentile(&r.latencies, 0.99),
            pmax = r.latencies.last().copied().unwrap_or(0.0),
        ));
    }
    if o.deltas_only {
        for s in &mut servers {
            s.stop();
        }
        return Ok(format!(
            "### Central deltas with {hosts} simulated hosts ({backend})\n\n| measure | result |\n| --- | --- |\n\
             | full reports (connect, TLS, {sw} software entries, signed) | {hosts} in {populate:.1} s ({pop:.0}/s) |\n\
             {delta_rows}",
            hosts = o.hosts,
            backend = backend(o),
            sw = o.software,
            pop = o.hosts as f64 / populate,
        ));
    }

    // Grown to more hosts, in SQL, for the queries and the memory.
    let total_hosts = match (&o.grow_to, &o.database) {
        (Some(n), Some(url)) if *n > o.hosts => {
            let copies = n.div_ceil(o.hosts) - 1;
            let t = Instant::now();
            grow(url, copies)?;
            let total = o.hosts * (copies + 1);
            eprintln!("grown to {total} hosts in {:.1} s", t.elapsed().as_secs_f64());
            total
        }
        (Some(_), None) => bail!("--grow-to needs --database"),
        _ => o.hosts,
    };
    // The queries measure a database that has run for a while, not one the writes just left.
    if let Some(url) = &o.database {
        let t = Instant::now();
        settle(url)?;
        eprintln!("vacuumed and checkpointed in {:.1} s", t.elapsed().as_secs_f64());
    }
    let db_grown = match (&o.database, total_hosts > o.hosts) {
        (Some(url), true) => database_size(url)?,
        _ => db,
    };

    // 3. The query, as a whole command and on an open connection.
    // As an operator types it: the first 1,000 hosts (the command's default) and how many matched.
    let console_hosts = |software: &str, limit: Option<&str>| {
        let mut c = cmd(outpost, work);
        c.args(["console", "hosts", "--software", software, "--json", "--server", &central]);
        if let Some(l) = limit {
            c.args(["--limit", l]);
        }
        c.arg("--ca").arg(work.join("pki/ca.crt")).arg("--cert").arg(&admin.0).arg("--key").arg(&admin.1);
        c
    };
    let mut walls = Vec::new();
    let (mut found, mut listed) = (0u64, 0usize);
    for _ in 0..10 {
        let mut c = console_hosts("rare-tool", None);
        let t = Instant::now();
        let out = procs::run(&mut c)?;
        walls.push(t.elapsed().as_secs_f64() * 1000.0);
        let v: serde_json::Value = serde_json::from_str(&out)?;
        found = v["total"].as_u64().unwrap_or(0);
        listed = v["hosts"].as_array().map_or(0, Vec::len);
    }
    walls.sort_by(f64::total_cmp);
    // Every matching host (`--limit 0`: pages of 1,000 until all are read).
    let mut all = Vec::new();
    for _ in 0..5 {
        let mut c = console_hosts("rare-tool", Some("0"));
        let t = Instant::now();
        procs::run(&mut c)?;
        all.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    all.sort_by(f64::total_cmp);
    // The same command with an empty answer: what starting the process and TLS cost.
    let mut empty = Vec::new();
    for _ in 0..10 {
        let mut c = console_hosts("no-such-software", None);
        let t = Instant::now();
        procs::run(&mut c)?;
        empty.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    empty.sort_by(f64::total_cmp);
    let admin_identity = Identity {
        chain: pki::parse_pem_certificates(&std::fs::read_to_string(&admin.0)?)?,
        key: pki::decode_private_key(&std::fs::read_to_string(&admin.1)?, None)?.pkcs8_der().to_vec(),
    };
    let admin_config = transport::client_config(&admin_identity, &ca, ALPN_CENTRAL)?;
    let mut rounds = rt.block_on(async {
        let client = CentralClient::connect_with(&endpoint, admin_config, &central).await?;
        let mut rounds = Vec::new();
        for _ in 0..20 {
            // What the command asks: the first page of 1,000 and the count.
            let q = HostPageQuery {
                filter: HostFilter { software: Some("rare-tool".into()), ..HostFilter::default() },
                limit: MAX_PAGE,
                ..HostPageQuery::default()
            };
            let t = Instant::now();
            client.request(&CentralRequest::HostPage(q)).await?;
            rounds.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        client.close();
        Ok::<_, anyhow::Error>(rounds)
    })?;
    rounds.sort_by(f64::total_cmp);

    // 5. The web console's pages at this fleet size, as a browser asks for them.
    let url_file = work.join("web.url");
    let mut c = cmd(outpost, work);
    c.args(["console", "web", "--listen", &format!("{ip}:0"), "--server", &central])
        .arg("--url-file")
        .arg(&url_file)
        .arg("--ca")
        .arg(work.join("pki/ca.crt"))
        .arg("--cert")
        .arg(&admin.0)
        .arg("--key")
        .arg(&admin.1);
    let mut web = Daemon::spawn("web", &mut c, &work.join("web.log"))?;
    let url = procs::wait_for(Duration::from_secs(30), Duration::from_millis(20), "the web console", || {
        std::fs::read_to_string(&url_file).ok()
    })?;
    let pages = web_pages(&url)?;
    web.stop();

    let reports = match &o.database {
        Some(_) => console_reports(outpost, work, &central, &admin)?,
        None => String::new(),
    };
    let rss_after = servers.iter().map(|s| status_kib(s.pid(), "VmRSS:")).max().unwrap_or(0);
    let hwm_after = servers.iter().map(|s| status_kib(s.pid(), "VmHWM:")).max().unwrap_or(0);
    for s in &mut servers {
        s.stop();
    }

    let mib = |k: u64| k as f64 / 1024.0;
    Ok(format!(
        "### Central with {hosts} simulated hosts ({backend})\n\n\
         | measure | result |\n| --- | --- |\n\
         | full reports (connect, TLS, {sw} software entries, signed) | {hosts} in {populate:.1} s ({pop_rate:.0}/s) |\n\
{delta_rows}\
         | `console hosts --software rare-tool` ({listed} listed, {found} of {total_hosts} hosts matched), whole command | median {cw:.1} ms, max {cwmax:.1} ms |\n\
         | the same query on an open connection | median {qm:.2} ms, max {qmax:.2} ms |\n\
         | `console hosts --software rare-tool --limit 0` (all {found}), whole command | median {aw:.1} ms |\n\
         | the command with an empty answer (process start, key, TLS) | median {ew:.1} ms |\n\
{pages}{reports}\
         | central memory (the largest instance) | VmRSS {r1:.0} MiB after the full reports, {r2:.0} MiB at the end (peak {h2:.0} MiB) |\n\
         | central database | {dbm:.0} MiB after the full reports{grown} |\n\n\
{grow_note}\
         Issuing the {hosts} host certificates in the benchmark process took {issuing:.1} s (not counted).\n",
        hosts = o.hosts,
        backend = backend(o),
        sw = o.software,
        pop_rate = o.hosts as f64 / populate,
        cw = percentile(&walls, 0.5),
        cwmax = walls.last().copied().unwrap_or(0.0),
        aw = percentile(&all, 0.5),
        qm = percentile(&rounds, 0.5),
        ew = percentile(&empty, 0.5),
        qmax = rounds.last().copied().unwrap_or(0.0),
        r1 = mib(rss),
        r2 = mib(rss_after),
        h2 = mib(hwm.max(hwm_after)),
        dbm = db as f64 / 1048576.0,
        grown = if total_hosts > o.hosts {
            format!(", {:.0} MiB with {total_hosts} hosts", db_grown as f64 / 1048576.0)
        } else {
            String::new()
        },
        grow_note = match (&o.database, total_hosts > o.hosts) {
            (Some(_), true) => format!(
                "The queries, pages, reports and the memory at the end are measured with {total_hosts} hosts in the \
                 database: the {} reported ones and {} copies of them made in SQL, then vacuumed and checkpointed.\n",
                o.hosts,
                total_hosts - o.hosts
            ),
            (Some(_), false) => "Before the queries the database was vacuumed and checkpointed.\n".to_string(),
            (None, _) => String::new(),
        },
    ))
}

fn backend(o: &Options) -> String {
    match (&o.database, o.instances) {
        (None, _) => "redb".to_string(),
        (Some(_), 1) => "PostgreSQL, one instance".to_string(),
        (Some(_), n) => format!("PostgreSQL, {n} instances"),
    }
}

fn database_size(url: &str) -> Result<u64> {
    let mut c = Command::new("psql");
    c.args(["-X", "-A", "-t", "-d", url, "-c", "SELECT pg_database_size(current_database())"]);
    Ok(procs::run(&mut c)?.trim().parse().unwrap_or(0))
}

/// Adds `copies` copies of every host in the database: another certificate's fingerprint, name
/// and UUID, the same rows and sections.
fn grow(url: &str, copies: usize) -> Result<()> {
    let sql = format!(
        "BEGIN;
         CREATE TEMP TABLE m AS
           SELECT h.fingerprint AS old, encode(sha256(convert_to(h.fingerprint || '/' || k, 'UTF8')), 'hex') AS new, k
           FROM outpost.hosts h, generate_series(1, {copies}) k;
         INSERT INTO outpost.hosts (fingerprint, uuid, sequence, last_seen, fqdn, site, ou, agent_version, status,
                                    packages, audit, snapshot_expired, recent_sequence, recent_at, recent_kinds)
           SELECT m.new, h.uuid || '-c' || m.k, h.sequence, h.last_seen, 'c' || m.k || '-' || h.fqdn, h.site, h.ou,
                  h.agent_version, h.status, h.packages, h.audit, h.snapshot_expired, h.recent_sequence,
                  h.recent_at, h.recent_kinds
           FROM m JOIN outpost.hosts h ON h.fingerprint = m.old;
         INSERT INTO outpost.sections (fingerprint, kind, body, doc)
           SELECT m.new, s.kind, s.body, s.doc FROM m JOIN outpost.sections s ON s.fingerprint = m.old;
         INSERT INTO outpost.host_packages (fingerprint, name, status, installed, target, reason, site, fqdn, uuid)
           SELECT m.new, p.name, p.status, p.installed, p.target, p.reason, p.site, h.fqdn, h.uuid
           FROM m JOIN outpost.host_packages p ON p.fingerprint = m.old JOIN outpost.hosts h ON h.fingerprint = m.new;
         INSERT INTO outpost.host_software (fingerprint, name, version, publisher, source, product_code, fqdn, uuid)
           SELECT m.new, s.name, s.version, s.publisher, s.source, s.product_code, h.fqdn, h.uuid
           FROM m JOIN outpost.host_software s ON s.fingerprint = m.old JOIN outpost.hosts h ON h.fingerprint = m.new;
         COMMIT;"
    );
    let mut c = Command::new("psql");
    c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", &sql]);
    procs::run(&mut c)?;
    Ok(())
}

/// Makes the database one that has run for a while: vacuumed (visibility maps set, as
/// autovacuum keeps them) and written out, so the measurements do not share the disk and the
/// cores with autovacuum and a checkpoint working through what was just written (CHECKPOINT
/// needs a superuser or pg_checkpoint: the benchmark's database is its own).
fn settle(url: &str) -> Result<()> {
    let mut c = Command::new("psql");
    c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", "VACUUM (ANALYZE)", "-c", "CHECKPOINT"]);
    procs::run(&mut c)?;
    Ok(())
}
