//! Whole-system replication benchmark: the release `outpost` binary as `repo main` and `repo
//! edge` processes on loopback addresses, against its peers measured in the same run.
//!
//! (Over 600 lines on purpose: the scenarios, in the order they run and are reported, read top to
//! bottom in one file; the peers, processes and QUIC baseline are in the files beside it.)
//!
//! Run (installs rsync, nginx, curl and openssl with `bench/setup` when missing, then builds
//! the release `outpost` binary with cargo):
//!
//! ```sh
//! cargo run --release -p outpost-bench --bin replication
//! ```
//!
//! Flags: `--runs N` (fresh and update syncs, median reported; default 5), `--packages 8`,
//! `--files 16` (per package), `--file-mib 8`, `--change-percent 5`, `--regions 4` (changed
//! regions per file), `--latency-rounds 10`, `--work DIR` (default: a folder in the temporary
//! folder, removed at the end unless `--keep`), `--no-setup`, `--no-build`, `--outpost PATH`,
//! `--no-prime` (no memory ballast; see `outpost_bench::Ballast`), `--fs xfs` (root only: the work
//! folder on a fresh XFS file system with reflinks, on a loop device with direct I/O, so that
//! an edge's unchanged ranges are shared with `copy_file_range` instead of written again;
//! every system's files are on it alike; see [`XfsMount`]).
//!
//! What it measures, all in one run:
//! 1. **Fresh sync** of 128 files of 8 MiB of incompressible data (1 GiB), spread over 8
//!    signed packages published to the main beforehand: wall time from starting an empty edge
//!    until its `/metrics` shows the main's snapshot (polled every 10 ms; confirmed with
//!    `outpost repo status --json`), and the CPU seconds of main + edge over that time. Peers,
//!    the same files: an rsync daemon and its client (`rsync -a`), nginx over HTTPS (TLS 1.3)
//!    with curl (HTTP/1.1 one file after the other, and HTTP/2 `--parallel`), and the limit: a
//!    raw QUIC copy with Outpost's transport settings (see `quic.rs`).
//! 2. **Update sync** after 5% of every file changed (four regions per file) and new package
//!    versions were published (edge stopped meanwhile): bytes received by the edge
//!    (`outpost_repo_received_bytes_total`), chunks fetched and deduplicated, wall time from
//!    starting the edge again; rsync's `--stats` bytes; and whole-file sync as WAPT replicates
//!    (every file whose SHA-256 changed, fetched with curl from nginx). Each version's packages
//!    are published together (one snapshot). Beside it, an edge that keeps running, as edges
//!    do: from when the main first serves the new snapshot until that edge serves it (it
//!    learns of it from the main's pushed head; both `/metrics` polled every 10 ms from a
//!    thread while the publish runs).
//! 3. **Publish-to-edge latency** on main → region → site for a 4 KiB package: from just
//!    before `outpost pkg publish` starts until the site's `/metrics` shows the new snapshot.
//!
//! CPU seconds are utime + stime from `/proc/PID/stat` (own and reaped children) of the
//! processes involved, as a difference over the transfer. The report is printed as Markdown
//! and written to `report.md` in the work folder.

mod peers;
mod procs;
mod quic;

use std::fmt::Write as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::peers::{CurlMode, Nginx, Rsync};
use crate::procs::{Daemon, loopback_bytes, reaped_children_ticks, total_ticks};

/// Loopback addresses of this benchmark (away from the 127.0.x.y the system tests use).
const NET: &str = "127.42.0";
/// How often a sync's end is polled.
const POLL: Duration = Duration::from_millis(10);
/// How often the latency rounds poll.
const LATENCY_POLL: Duration = Duration::from_millis(2);
/// Longest any one wait may take.
const LIMIT: Duration = Duration::from_secs(900);

#[derive(Debug, Clone)]
struct Options {
    runs: usize,
    packages: usize,
    files: usize,
    file_mib: usize,
    change_percent: f64,
    regions: usize,
    latency_rounds: usize,
    work: Option<PathBuf>,
    keep: bool,
    setup: bool,
    build: bool,
    prime: bool,
    outpost: Option<PathBuf>,
    xfs: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let mut o = Self {
            runs: 5,
            packages: 8,
            files: 16,
            file_mib: 8,
            change_percent: 5.0,
            regions: 4,
            latency_rounds: 10,
            work: None,
            keep: false,
            setup: true,
            build: true,
            prime: true,
            outpost: None,
            xfs: false,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().with_context(|| format!("{a} needs a value")).cloned();
            match a.as_str() {
                "--runs" => o.runs = value()?.parse()?,
                "--packages" => o.packages = value()?.parse()?,
                "--files" => o.files = value()?.parse()?,
                "--file-mib" => o.file_mib = value()?.parse()?,
                "--change-percent" => o.change_percent = value()?.parse()?,
                "--regions" => o.regions = value()?.parse()?,
                "--latency-rounds" => o.latency_rounds = value()?.parse()?,
                "--work" => o.work = Some(PathBuf::from(value()?)),
                "--outpost" => o.outpost = Some(PathBuf::from(value()?)),
                "--keep" => o.keep = true,
                "--no-setup" => o.setup = false,
                "--no-build" => o.build = false,
                "--no-prime" => o.prime = false,
                "--fs" => match value()?.as_str() {
                    "xfs" => o.xfs = true,
                    "ext4" | "default" => o.xfs = false,
                    other => bail!("--fs {other}: say xfs (or default, the work folder's own)"),
                },
                "--bench" => {} // passed by `cargo bench`
                other => bail!("unknown argument {other:?} (see the doc comment of bench/src/bin/replication/main.rs)"),
            }
        }
        if o.runs == 0 || o.packages == 0 || o.files == 0 || o.file_mib == 0 || o.regions == 0 {
            bail!("--runs, --packages, --files, --file-mib and --regions must be at least 1");
        }
        Ok(o)
    }

    fn file_size(&self) -> usize {
        self.file_mib * 1024 * 1024
    }
}

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    match argv.get(1).map(String::as_str) {
        Some("quic-serve") => return quic::serve_main(&argv[2..]),
        Some("quic-fetch") => return quic::fetch_main(&argv[2..]),
        _ => {}
    }
    let options = Options::parse(&argv[1..])?;
    let root = outpost_bench::workspace_root()?;
    if options.setup {
        procs::run(&mut Command::new(root.join("bench/setup")))
            .context("installing the peers (bench/setup); --no-setup skips it")?;
    }
    let outpost = outpost_bench::outpost_binary(options.outpost.as_deref(), options.build)?;
    let work = outpost_bench::work_folder(options.work.as_deref(), "replication")?;
    let mount = if options.xfs { Some(XfsMount::over(&work)?) } else { None };
    let result = Bench::new(options.clone(), outpost, work.clone()).and_then(|mut b| b.run());
    if !options.keep {
        drop(mount);
        let _ = std::fs::remove_dir_all(&work);
    } else if let Some(m) = mount {
        eprintln!("kept mounted: {} on {} (umount it, then losetup -d it)", m.device, work.display());
        std::mem::forget(m);
    }
    let report = result?;
    println!("{report}");
    Ok(())
}

/// A fresh XFS file system with reflinks mounted over the (empty) work folder: the image is a
/// sparse file beside the folder, on a loop device with direct I/O (the page cache holds the
/// files once, as on a real disk). Unmounted and removed when dropped.
struct XfsMount {
    image: PathBuf,
    device: String,
    at: PathBuf,
}

impl XfsMount {
    fn over(at: &Path) -> Result<Self> {
        if !is_root() {
            bail!("--fs xfs needs root (losetup and mount)");
        }
        let image = at.with_extension("xfs.img");
        std::fs::File::create(&image)?.set_len(48 << 30).context("making the XFS image")?;
        let mkfs = PathBuf::from("/usr/sbin/mkfs.xfs");
        procs::run(Command::new(&mkfs).args(["-q", "-f", "-m", "reflink=1"]).arg(&image))
            .context("mkfs.xfs (xfsprogs, which bench/setup installs)")?;
        let device = procs::run(Command::new("losetup").args(["-f", "--show", "--direct-io=on"]).arg(&image))?
            .trim()
            .to_string();
        if let Err(e) = procs::run(Command::new("mount").arg(&device).arg(at)) {
            let _ = Command::new("losetup").args(["-d", &device]).status();
            return Err(e);
        }
        eprintln!("work folder on XFS with reflinks ({device}, image {})", image.display());
        Ok(Self { image, device, at: at.to_path_buf() })
    }
}

impl Drop for XfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.at).status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:")).map(|u| u.split_whitespace().next() == Some("0")))
        .unwrap_or(false)
}

/// One measurement.
#[derive(Debug, Clone, Default)]
struct Sample {
    /// Wall seconds.
    wall: f64,
    /// CPU seconds of every process involved.
    cpu: f64,
    /// Payload bytes (fresh) or bytes on the wire as the tool counts them (update).
    bytes: u64,
    /// Bytes through the loopback interface (both directions, headers included, all traffic).
    loopback: u64,
    /// CPU seconds by process, for the report.
    detail: String,
    /// Seconds a `sync` right after took (write-back the tool left to the kernel).
    flush: f64,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The median sample by wall time (its other figures come with it).
fn median_sample(samples: &[Sample]) -> Sample {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.wall.total_cmp(&b.wall));
    sorted[(sorted.len() - 1) / 2].clone()
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// A running `outpost repo main|edge`.
#[derive(Debug)]
struct Node {
    daemon: Daemon,
    addr: String,
    metrics: String,
}

impl Node {
    fn scrape(&self) -> Option<String> {
        procs::scrape(&self.metrics)
    }

    fn metric(&self, name: &str) -> f64 {
        self.scrape().map(|t| procs::metric_sum(&t, name)).unwrap_or(0.0)
    }

    fn sequence(&self) -> u64 {
        self.metric("outpost_repo_snapshot_sequence") as u64
    }

    fn pid(&self) -> u32 {
        self.daemon.pid()
    }
}

/// Watches the main and a running edge from before a publish: when the main first serves each
/// snapshot, and when the edge does, with both processes' CPU ticks and the loopback's bytes
/// then. Polled every [`POLL`] on a thread of its own while the publish runs.
struct LiveWatch {
    seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One observation: which process (`true`: the edge), the sequence it served, when, the CPU
/// ticks of both, the loopback's bytes, the edge's received bytes.
#[derive(Debug, Clone, Copy)]
struct Seen {
    edge: bool,
    sequence: u64,
    at: Instant,
    main_ticks: u64,
    edge_ticks: u64,
    loopback: u64,
    received: u64,
}

impl LiveWatch {
    fn start(main: &Node, edge: &Node) -> Self {
        let (main_metrics, edge_metrics) = (main.metrics.clone(), edge.metrics.clone());
        let (main_pid, edge_pid) = (main.pid(), edge.pid());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut last = (0u64, 0u64);
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                let main_seq = procs::scrape(&main_metrics)
                    .map(|t| procs::metric_sum(&t, "outpost_repo_snapshot_sequence") as u64)
                    .unwrap_or(0);
                let edge_text = procs::scrape(&edge_metrics).unwrap_or_default();
                let edge_seq = procs::metric_sum(&edge_text, "outpost_repo_snapshot_sequence") as u64;
                let received = procs::metric_sum(&edge_text, "outpost_repo_received_bytes_total") as u64;
                let at = Instant::now();
                let sample = |edge, sequence| Seen {
                    edge,
                    sequence,
                    at,
                    main_ticks: total_ticks(&[main_pid]),
                    edge_ticks: total_ticks(&[edge_pid]),
                    loopback: loopback_bytes(),
                    received,
                };
                let mut out = seen2.lock().expect("not poisoned");
                if out.is_empty() {
                    // Where things stood before the publish.
                    out.push(sample(false, main_seq));
                    out.push(sample(true, edge_seq));
                    last = (main_seq, edge_seq);
                }
                if main_seq > last.0 {
                    out.push(sample(false, main_seq));
                }
                if edge_seq > last.1 {
                    out.push(sample(true, edge_seq));
                }
                last = (last.0.max(main_seq), last.1.max(edge_seq));
                drop(out);
                std::thread::sleep(POLL);
            }
        });
        Self { seen, stop, thread: Some(thread) }
    }

    /// Waits until the edge serves `head`, and measures from when the main first served it:
    /// the running edge's whole sync of that snapshot. `cpu` turns ticks into seconds.
    fn until(mut self, head: u64, cpu: impl Fn(u64) -> f64) -> Result<Sample> {
        let find = |seen: &[Seen], edge: bool| seen.iter().find(|s| s.edge == edge && s.sequence >= head).copied();
        let (from, to) = procs::wait_for(LIMIT, POLL, "the running edge to serve the new snapshot", || {
            let seen = self.seen.lock().expect("not poisoned");
            Some((find(&seen, false)?, find(&seen, true)?))
        })?;
        self.halt();
        // The edge's received bytes before this snapshot: its last observation before it.
        let before = {
            let seen = self.seen.lock().expect("not poisoned");
            seen.iter().filter(|s| s.edge && s.sequence < head).map(|s| s.received).max().unwrap_or(0)
        };
        let (main_cpu, edge_cpu) =
            (cpu(to.main_ticks.saturating_sub(from.main_ticks)), cpu(to.edge_ticks.saturating_sub(from.edge_ticks)));
        Ok(Sample {
            wall: to.at.saturating_duration_since(from.at).as_secs_f64(),
            cpu: main_cpu + edge_cpu,
            bytes: to.received.saturating_sub(before),
            loopback: to.loopback.saturating_sub(from.loopback),
            detail: format!("main {main_cpu:.2} s + edge {edge_cpu:.2} s"),
            flush: 0.0,
        })
    }
}

impl LiveWatch {
    /// Stops the polling thread and waits for it.
    fn halt(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LiveWatch {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A node's address and certificate.
#[derive(Debug, Clone)]
struct Slot {
    ip: String,
    port: u16,
    metrics_port: u16,
    cert: PathBuf,
    key: PathBuf,
}

impl Slot {
    fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
}

struct Bench {
    o: Options,
    outpost: PathBuf,
    work: PathBuf,
    tick: f64,
    ca: PathBuf,
    signer: (PathBuf, PathBuf),
    names: Vec<String>,
    /// See [`outpost_bench::Ballast`].
    ballast: Option<outpost_bench::Ballast>,
}

impl Bench {
    fn new(o: Options, outpost: PathBuf, work: PathBuf) -> Result<Self> {
        let tick = procs::clock_ticks();
        let mut b = Self {
            o,
            outpost,
            work,
            tick,
            ca: PathBuf::new(),
            signer: (PathBuf::new(), PathBuf::new()),
            names: Vec::new(),
            ballast: None,
        };
        procs::run(b.cmd().args(["pki", "init", "--dir", "pki", "--org", "Bench Org", "--no-password"]))?;
        b.ca = b.work.join("pki/ca.crt");
        b.signer = b.issue("signer", "packager", None)?;
        if b.o.prime {
            b.ballast = outpost_bench::Ballast::create(&b.work)?;
            b.warm(&b.work.join("pki"))?;
        }
        Ok(b)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.outpost);
        c.current_dir(&self.work);
        for var in ["OUTPOST_KEY_PASSWORD", "OUTPOST_CA_PASSWORD", "SOURCE_DATE_EPOCH"] {
            c.env_remove(var);
        }
        // The sync's phases (debug) go to the nodes' logs in the work folder.
        c.env("OUTPOST_LOG", "info,outpost_actors::repo::sync=debug");
        c
    }

    fn cpu(&self, ticks: u64) -> f64 {
        ticks as f64 / self.tick
    }

    fn issue(&self, role: &str, name: &str, san: Option<&str>) -> Result<(PathBuf, PathBuf)> {
        let mut c = self.cmd();
        c.args(["pki", "issue", "--dir", "pki", "--role", role, "--name", name, "--no-password"]);
        if let Some(ip) = san {
            c.args(["--san", ip]);
        }
        let cert = self.work.join(procs::run(&mut c)?.trim());
        Ok((cert.clone(), cert.with_extension("key")))
    }

    fn slot(&self, n: u8, role: &str) -> Result<Slot> {
        let ip = format!("{NET}.{n}");
        let (cert, key) = self.issue(role, &format!("{role}-{ip}"), Some(&ip))?;
        Ok(Slot { port: procs::udp_port(&ip)?, metrics_port: procs::tcp_port(&ip)?, ip, cert, key })
    }

    /// Starts `outpost repo main` (`upstream` None) or `repo edge`; does not wait for it.
    fn spawn_node(&self, name: &str, slot: &Slot, data: &Path, upstream: Option<&str>) -> Result<Node> {
        let metrics = format!("{}:{}", slot.ip, slot.metrics_port);
        let mut c = self.cmd();
        c.args(["repo", if upstream.is_some() { "edge" } else { "main" }, "--listen", &slot.addr()])
            .arg("--data")
            .arg(data)
            .arg("--ca")
            .arg(&self.ca)
            .arg("--cert")
            .arg(&slot.cert)
            .arg("--key")
            .arg(&slot.key)
            .args(["--metrics", &metrics, "--name", name]);
        if let Some(u) = upstream {
            c.args(["--upstream", u]);
        }
        let daemon = Daemon::spawn(name, &mut c, &self.work.join(format!("{name}.log")))?;
        Ok(Node { daemon, addr: slot.addr(), metrics })
    }

    /// Starts a node and waits until it serves `/metrics`.
    fn start_node(&self, name: &str, slot: &Slot, data: &Path, upstream: Option<&str>) -> Result<Node> {
        let mut node = self.spawn_node(name, slot, data, upstream)?;
        procs::wait_for(Duration::from_secs(30), POLL, &format!("{name} to serve /metrics"), || {
            if node.daemon.check_alive().is_err() {
                return Some(());
            }
            node.scrape().map(|_| ())
        })?;
        node.daemon.check_alive()?;
        Ok(node)
    }

    fn client_args(&self, c: &mut Command, repo: &str) {
        c.args(["--repo", repo])
            .arg("--ca")
            .arg(&self.ca)
            .arg("--cert")
            .arg(&self.signer.0)
            .arg("--key")
            .arg(&self.signer.1);
    }

    fn publish_cmd(&self, file: &Path, repo: &str) -> Command {
        let mut c = self.cmd();
        c.env("OUTPOST_LOG", "warn").args(["pkg", "publish"]).arg(file);
        self.client_args(&mut c, repo);
        c
    }

    /// Publishes and returns the new snapshot sequence.
    fn publish(&self, file: &Path, repo: &str) -> Result<u64> {
        parse_sequence(&procs::run(&mut self.publish_cmd(file, repo))?)
    }

    fn status(&self, repo: &str) -> Result<serde_json::Value> {
        let mut c = self.cmd();
        c.env("OUTPOST_LOG", "warn").args(["repo", "status", "--json"]);
        self.client_args(&mut c, repo);
        Ok(serde_json::from_str(&procs::run(&mut c)?)?)
    }

    fn build(&self, src: &Path) -> Result<PathBuf> {
        let mut c = self.cmd();
        c.args(["pkg", "build"]).arg(src).arg("--cert").arg(&self.signer.0).arg("--key").arg(&self.signer.1);
        c.args(["--out", "dist"]);
        Ok(self.work.join(procs::run(&mut c)?.trim()))
    }

    fn payload(&self) -> PathBuf {
        self.work.join("payload")
    }

    fn package_dir(&self, p: usize) -> PathBuf {
        self.work.join(format!("pkgsrc/bench-{p}"))
    }

    fn write_controls(&self, version: &str) -> Result<()> {
        for p in 0..self.o.packages {
            std::fs::write(
                self.package_dir(p).join("WAPT/control"),
                format!(
                    "package: bench-{p}\nversion: {version}\narchitecture: all\nsection: base\npriority: optional\n\
                     description: replication benchmark payload {p}\n"
                ),
            )?;
        }
        Ok(())
    }

    /// Writes the payload: `packages` x `files` files of incompressible data, each file also
    /// hard-linked into its package's source folder.
    fn make_payload(&mut self) -> Result<()> {
        let size = self.o.file_size();
        std::fs::create_dir_all(self.payload())?;
        let mut buf = vec![0u8; size];
        for p in 0..self.o.packages {
            let dir = self.package_dir(p);
            std::fs::create_dir_all(dir.join("WAPT"))?;
            std::fs::create_dir_all(dir.join("data"))?;
            for f in 0..self.o.files {
                let name = format!("p{p}-f{f:02}.bin");
                noise(&mut buf, (p * 1000 + f) as u64 + 1);
                std::fs::write(self.payload().join(&name), &buf)?;
                std::fs::hard_link(self.payload().join(&name), dir.join("data").join(&name))?;
                self.names.push(name);
            }
        }
        self.write_controls("1.0-1")
    }

    /// Overwrites `regions` regions of every file (`change_percent` of its bytes in all), in
    /// place (so the package folders see it too). Returns the bytes changed.
    fn change_payload(&self, round: usize) -> Result<u64> {
        let size = self.o.file_size();
        let len = (size as f64 * self.o.change_percent / 100.0) as usize / self.o.regions;
        let span = size / self.o.regions;
        if len >= span {
            bail!("--change-percent too large for --regions");
        }
        let mut buf = vec![0u8; len];
        let mut changed = 0u64;
        for (i, name) in self.names.iter().enumerate() {
            let file = std::fs::OpenOptions::new().write(true).open(self.payload().join(name))?;
            for r in 0..self.o.regions {
                let seed = 1_000_003 * (round as u64 + 1) + 1009 * i as u64 + r as u64;
                let at = r * span + (seed as usize * 7919) % (span - len);
                noise(&mut buf, seed);
                file.write_all_at(&buf, at as u64)?;
                changed += len as u64;
            }
        }
        Ok(changed)
    }

    /// SHA-256 of every payload file (what WAPT's sync.json lists), and the seconds it took.
    fn digests(&self) -> Result<(Vec<[u8; 32]>, f64)> {
        let started = Instant::now();
        let mut out = Vec::new();
        for name in &self.names {
            out.push(sha256_file(&self.payload().join(name))?);
        }
        Ok((out, started.elapsed().as_secs_f64()))
    }

    fn payload_bytes(&self) -> u64 {
        (self.names.len() * self.o.file_size()) as u64
    }

    fn build_and_publish(&self, version: &str, main: &Node) -> Result<(u64, f64, f64)> {
        self.write_controls(version)?;
        let started = Instant::now();
        let mut files = Vec::new();
        for p in 0..self.o.packages {
            files.push(self.build(&self.package_dir(p))?);
        }
        let built = started.elapsed().as_secs_f64();
        // The archives just written are flushed first: on ext4 (`data=ordered`) the first flush
        // of any file writes out every file's pending data, and the running edge's flush must
        // not pay for this benchmark's own build output.
        procs::sync_disks();
        // One `pkg publish` of every package: one snapshot per version, as an operator
        // releasing them together makes (and what a running edge then syncs at once).
        let started = Instant::now();
        let mut c = self.cmd();
        c.env("OUTPOST_LOG", "warn").args(["pkg", "publish"]).args(&files);
        self.client_args(&mut c, &main.addr);
        let head = parse_sequence(&procs::run(&mut c)?)?;
        for f in &files {
            std::fs::remove_file(f)?;
        }
        Ok((head, built, started.elapsed().as_secs_f64()))
    }

    /// Starts an edge on `data` and waits until it serves `head`; stops it after.
    fn outpost_sync(&self, name: &str, slot: &Slot, data: &Path, main: &Node, head: u64) -> Result<(Sample, String)> {
        procs::sync_disks();
        let main0 = total_ticks(&[main.pid()]);
        let lo0 = loopback_bytes();
        let started = Instant::now();
        let mut edge = self.spawn_node(name, slot, data, Some(&main.addr))?;
        let mut up: Option<Duration> = None;
        // When the last byte arrived, and the edge's CPU then: what follows is checking the
        // new files, flushing the store and committing the snapshot.
        let (mut last_bytes, mut last_change, mut edge_ticks_then) = (0u64, Duration::ZERO, 0u64);
        procs::wait_for(LIMIT, POLL, "the edge to serve the main's head", || {
            let text = edge.scrape()?;
            up.get_or_insert(started.elapsed());
            let received = procs::metric_sum(&text, "outpost_repo_received_bytes_total") as u64;
            if received != last_bytes {
                (last_bytes, last_change, edge_ticks_then) = (received, started.elapsed(), total_ticks(&[edge.pid()]));
            }
            (procs::metric_sum(&text, "outpost_repo_snapshot_sequence") as u64 >= head).then_some(())
        })
        .or_else(|e| edge.daemon.check_alive().and(Err(e)))?;
        let wall = started.elapsed().as_secs_f64();
        let edge_ticks = total_ticks(&[edge.pid()]);
        let (main_cpu, edge_cpu) = (self.cpu(total_ticks(&[main.pid()]) - main0), self.cpu(edge_ticks));
        let loopback = loopback_bytes() - lo0;
        let flush = timed_sync();
        let text = edge.scrape().unwrap_or_default();
        let received = procs::metric_sum(&text, "outpost_repo_received_bytes_total") as u64;
        let fetched = procs::metric_sum(&text, "outpost_repo_chunks_fetched_total") as u64;
        let dedup = procs::metric_sum(&text, "outpost_repo_chunks_deduplicated_total") as u64;
        let status = self.status(&edge.addr)?;
        if status["head"]["sequence"].as_u64() != Some(head) {
            bail!("the edge's status does not show snapshot {head}: {status}");
        }
        edge.daemon.stop();
        let up = up.unwrap_or_default().as_secs_f64();
        let sample = Sample {
            wall,
            cpu: main_cpu + edge_cpu,
            bytes: received,
            loopback,
            detail: format!("main {main_cpu:.2} s + edge {edge_cpu:.2} s"),
            flush,
        };
        let tail = wall - last_change.as_secs_f64();
        let tail_cpu = self.cpu(edge_ticks - edge_ticks_then);
        let extra = format!(
            "{fetched} chunks fetched, {dedup} deduplicated; edge start-up to /metrics {up:.3} s; last byte received \
             at {:.2} s, then {tail:.2} s (edge CPU {tail_cpu:.2} s) to check the new files, flush the store \
             and commit",
            last_change.as_secs_f64()
        );
        eprintln!("  outpost: {wall:.2} s, {} MB received, cpu {}; {extra}", mb(received), sample.detail);
        Ok((sample, extra))
    }

    fn rsync_sync(&self, rsync: &Rsync, dest: &Path) -> Result<(Sample, peers::RsyncStats)> {
        procs::sync_disks();
        let (d0, c0, lo0) = (total_ticks(&[rsync.daemon.pid()]), reaped_children_ticks(), loopback_bytes());
        let started = Instant::now();
        let stats = peers::rsync_client(&rsync.url, dest)?;
        let wall = started.elapsed().as_secs_f64();
        let loopback = loopback_bytes() - lo0;
        let client = reaped_children_ticks() - c0;
        let flush = timed_sync();
        // The daemon's per-connection child is counted once the daemon has reaped it.
        let daemon = procs::wait_for(Duration::from_secs(2), POLL, "", || {
            let d = total_ticks(&[rsync.daemon.pid()]);
            (d > d0).then_some(d - d0)
        })
        .unwrap_or(0);
        let (dc, cc) = (self.cpu(daemon), self.cpu(client));
        let sample = Sample {
            wall,
            cpu: dc + cc,
            bytes: stats.sent + stats.received,
            loopback,
            detail: format!("daemon {dc:.2} s + client {cc:.2} s"),
            flush,
        };
        eprintln!("  rsync: {wall:.2} s, cpu {}, {stats:?}", sample.detail);
        Ok((sample, stats))
    }

    fn curl_sync(&self, nginx: &Nginx, names: &[String], dest: &Path, mode: CurlMode) -> Result<Sample> {
        procs::sync_disks();
        let (n0, c0, lo0) = (total_ticks(&nginx.pids()), reaped_children_ticks(), loopback_bytes());
        let started = Instant::now();
        let bytes = peers::curl(nginx, names, dest, mode)?;
        let wall = started.elapsed().as_secs_f64();
        let loopback = loopback_bytes() - lo0;
        let flush = timed_sync();
        let (nc, cc) = (self.cpu(total_ticks(&nginx.pids()) - n0), self.cpu(reaped_children_ticks() - c0));
        let detail = format!("nginx {nc:.2} s + curl {cc:.2} s");
        let sample = Sample { wall, cpu: nc + cc, bytes, loopback, detail, flush };
        eprintln!("  curl ({mode:?}): {wall:.2} s, {} MB, cpu {}", mb(bytes), sample.detail);
        Ok(sample)
    }

    fn quic_copy(&self, server: &Daemon, slot: &Slot, client: &Slot, dest: &Path) -> Result<Sample> {
        procs::sync_disks();
        let (s0, c0, lo0) = (total_ticks(&[server.pid()]), reaped_children_ticks(), loopback_bytes());
        let started = Instant::now();
        let mut c = Command::new(std::env::current_exe()?);
        c.args(["quic-fetch", "--connect", &slot.addr()])
            .arg("--dir")
            .arg(dest)
            .arg("--ca")
            .arg(&self.ca)
            .arg("--cert")
            .arg(&client.cert)
            .arg("--key")
            .arg(&client.key)
            .arg("--")
            .args(&self.names);
        let bytes: u64 = procs::run(&mut c)?.trim().parse()?;
        let wall = started.elapsed().as_secs_f64();
        let loopback = loopback_bytes() - lo0;
        let flush = timed_sync();
        let (sc, cc) = (self.cpu(total_ticks(&[server.pid()]) - s0), self.cpu(reaped_children_ticks() - c0));
        let detail = format!("server {sc:.2} s + client {cc:.2} s");
        let sample = Sample { wall, cpu: sc + cc, bytes, loopback, detail, flush };
        eprintln!("  quic: {wall:.2} s, {} MB, cpu {}", mb(bytes), sample.detail);
        Ok(sample)
    }

    /// Reads the ballast (see [`Bench::ballast`]), then every file under `dir`, so that the
    /// source of the next transfer is in the page cache for every system alike.
    fn warm(&self, dir: &Path) -> Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        if let Some(ballast) = &self.ballast {
            let t = ballast.read()?;
            if t > 1.0 {
                eprintln!("  (memory primed again in {t:.1} s)");
            }
        }
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d)? {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    stack.push(entry.path());
                } else {
                    // Twice: pages read a second time are kept before pages read once (the
                    // ballast is read at every warm), so the room a publish's writes need is
                    // not taken from the files just warmed for the running edge's sync.
                    for _ in 0..2 {
                        let mut f = std::fs::File::open(entry.path())?;
                        while std::io::Read::read(&mut f, &mut buf)? > 0 {}
                    }
                }
            }
        }
        Ok(())
    }

    fn check_copy(&self, dest: &Path, want: &[[u8; 32]], what: &str) -> Result<()> {
        for (name, digest) in self.names.iter().zip(want) {
            if &sha256_file(&dest.join(name))? != digest {
                bail!("{what}: {name} differs from the source");
            }
        }
        Ok(())
    }

    fn run(&mut self) -> Result<String> {
        let o = self.o.clone();
        let started = Instant::now();
        eprintln!("payload: {} packages x {} files x {} MiB", o.packages, o.files, o.file_mib);
        self.make_payload()?;
        let (mut digests, _) = self.digests()?;
        let total = self.payload_bytes();

        let main_slot = self.slot(11, "server")?;
        let edge_slot = self.slot(12, "edge")?;
        let quic_server = self.slot(15, "edge")?;
        let main = self.start_node("main", &main_slot, &self.work.join("data-main"), None)?;
        eprintln!("building and publishing {} packages", o.packages);
        let (mut head, built, published) = self.build_and_publish("1.0-1", &main)?;
        eprintln!("  built in {built:.1} s, published in {published:.1} s (snapshot {head})");
        let publish_line = format!(
            "Building the {} packages took {built:.1} s and publishing them to the main {published:.1} s \
             ({:.0} MB/s: upload, chunking, hashing and storing).",
            o.packages,
            mb(total) / published
        );

        let rsync = Rsync::start(&self.work.join("rsync"), &format!("{NET}.13"), &self.payload())?;
        let nginx = Nginx::start(&self.work.join("nginx"), &format!("{NET}.14"), &self.payload())?;
        let mut quic_cmd = Command::new(std::env::current_exe()?);
        quic_cmd
            .args(["quic-serve", "--listen", &quic_server.addr()])
            .arg("--dir")
            .arg(self.payload())
            .arg("--ca")
            .arg(&self.ca)
            .arg("--cert")
            .arg(&quic_server.cert)
            .arg("--key")
            .arg(&quic_server.key);
        let quic = Daemon::spawn("quic-serve", &mut quic_cmd, &self.work.join("quic-serve.log"))?;
        std::thread::sleep(Duration::from_millis(200));

        // Fresh syncs. Every run writes to folders of its own and nothing is deleted before the
        // end: on a file system without a journal, ext4 checks recently freed inodes when it
        // allocates one, and deleting 13,000 blobs just before a run made inode allocation a
        // third of the edge's CPU time.
        let (mut edge_data, mut rsync_dest, mut curl_dest) = (PathBuf::new(), PathBuf::new(), PathBuf::new());
        let (mut f_outpost, mut f_rsync, mut f_curl, mut f_curl2, mut f_quic) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut outpost_extra = String::new();
        for run in 0..o.runs {
            eprintln!("fresh sync, run {} of {}", run + 1, o.runs);
            edge_data = self.work.join(format!("data-edge-{run}"));
            rsync_dest = self.work.join(format!("dest-rsync-{run}"));
            curl_dest = self.work.join(format!("dest-curl-{run}"));
            // Each run starts with another system, so that drift over the run (the machine's
            // page cache, memory given back to the host) does not always hit the same one.
            for k in 0..5 {
                match (k + run) % 5 {
                    0 => {
                        self.warm(&self.work.join("data-main"))?;
                        let (s, extra) = self.outpost_sync("edge", &edge_slot, &edge_data, &main, head)?;
                        f_outpost.push(s);
                        outpost_extra = extra;
                    }
                    1 => {
                        self.warm(&self.payload())?;
                        f_rsync.push(self.rsync_sync(&rsync, &rsync_dest)?.0);
                        self.check_copy(&rsync_dest, &digests, "rsync")?;
                    }
                    2 => {
                        self.warm(&self.payload())?;
                        f_curl.push(self.curl_sync(&nginx, &self.names, &curl_dest, CurlMode::Sequential)?);
                        self.check_copy(&curl_dest, &digests, "curl")?;
                    }
                    3 => {
                        self.warm(&self.payload())?;
                        let dest = self.work.join(format!("dest-curl-parallel-{run}"));
                        f_curl2.push(self.curl_sync(&nginx, &self.names, &dest, CurlMode::Parallel)?);
                        self.check_copy(&dest, &digests, "curl --parallel")?;
                    }
                    _ => {
                        self.warm(&self.payload())?;
                        let dest = self.work.join(format!("dest-quic-{run}"));
                        f_quic.push(self.quic_copy(&quic, &quic_server, &edge_slot, &dest)?);
                        self.check_copy(&dest, &digests, "quic")?;
                    }
                }
            }
        }

        // An edge that keeps running through the updates, as edges do: told of each new
        // snapshot by the main's pushed head. Its first (fresh) sync is not measured.
        let live_slot = self.slot(16, "edge")?;
        let mut live = self.start_node("edge-live", &live_slot, &self.work.join("data-edge-live"), Some(&main.addr))?;
        procs::wait_for(LIMIT, POLL, "the running edge's first sync", || (live.sequence() >= head).then_some(()))
            .or_else(|e| live.daemon.check_alive().and(Err(e)))?;

        // Update syncs.
        let mut u_live = Vec::new();
        let (mut u_outpost, mut u_rsync, mut u_whole) = (Vec::new(), Vec::new(), Vec::new());
        let (mut changed_total, mut u_extra, mut hash_seconds, mut u_publish) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut rsync_literal = Vec::new();
        for round in 0..o.runs {
            eprintln!("update sync, round {} of {}", round + 1, o.runs);
            let changed = self.change_payload(round)?;
            let (new_digests, hashing) = self.digests()?;
            hash_seconds.push(hashing);
            let changed_names: Vec<String> = self
                .names
                .iter()
                .zip(digests.iter().zip(&new_digests))
                .filter(|(_, (a, b))| a != b)
                .map(|(n, _)| n.clone())
                .collect();
            digests = new_digests;
            changed_total.push(changed);
            // Its data read into memory first, as every system's before its transfer (the
            // publish's own reading and writing may push some of it out again).
            self.warm(&self.work.join("data-edge-live"))?;
            let watching = LiveWatch::start(&main, &live);
            let (h, _, published) = self.build_and_publish(&format!("1.0-{}", round + 2), &main)?;
            head = h;
            u_publish.push(published);
            let s = watching.until(head, |ticks| self.cpu(ticks)).or_else(|e| live.daemon.check_alive().and(Err(e)))?;
            eprintln!("  outpost, edge running: {:.2} s, {} MB received, cpu {}", s.wall, mb(s.bytes), s.detail);
            u_live.push(s);
            self.warm(&self.work.join("data-main"))?;
            self.warm(&edge_data)?;
            let (s, extra) = self.outpost_sync("edge", &edge_slot, &edge_data, &main, head)?;
            u_outpost.push(s);
            u_extra.push(extra);
            self.warm(&self.payload())?;
            self.warm(&rsync_dest)?;
            let (s, stats) = self.rsync_sync(&rsync, &rsync_dest)?;
            rsync_literal.push(stats.literal);
            u_rsync.push(s);
            self.check_copy(&rsync_dest, &digests, "rsync update")?;
            self.warm(&self.payload())?;
            u_whole.push(self.curl_sync(&nginx, &changed_names, &curl_dest, CurlMode::Sequential)?);
            self.check_copy(&curl_dest, &digests, "whole-file update")?;
        }
        // What the edge serves is what was published.
        {
            let edge = self.start_node("edge", &edge_slot, &edge_data, Some(&main.addr))?;
            let mut c = self.cmd();
            c.env("OUTPOST_LOG", "warn").args(["repo", "pull", "bench-0", "--out", "pulled"]);
            self.client_args(&mut c, &edge.addr);
            let dir = self.work.join(procs::run(&mut c)?.trim());
            let pulled = dir.join("data");
            for (name, digest) in self.names.iter().zip(&digests).filter(|(n, _)| n.starts_with("p0-")) {
                if &sha256_file(&pulled.join(name))? != digest {
                    bail!("the edge served {name} with other content than published");
                }
            }
            std::fs::remove_dir_all(&dir)?;
        }
        drop((rsync, nginx, quic, live));

        // Latency on main → region → site.
        eprintln!("latency: main -> region -> site, {} rounds", o.latency_rounds);
        let lat = self.latency()?;
        drop(main);

        Ok(self.report(Report {
            total,
            f_outpost,
            f_rsync,
            f_curl,
            f_curl2,
            f_quic,
            outpost_extra,
            publish_line,
            u_outpost,
            u_live,
            u_rsync,
            u_whole,
            u_extra,
            changed: changed_total,
            rsync_literal,
            hash_seconds,
            u_publish,
            lat,
            seconds: started.elapsed().as_secs_f64(),
        }))
    }

    fn latency(&self) -> Result<Latency> {
        let slots = [self.slot(21, "server")?, self.slot(22, "edge")?, self.slot(23, "edge")?];
        let main = self.start_node("lat-main", &slots[0], &self.work.join("data-lat-main"), None)?;
        let region = self.start_node("lat-region", &slots[1], &self.work.join("data-lat-region"), Some(&main.addr))?;
        let site = self.start_node("lat-site", &slots[2], &self.work.join("data-lat-site"), Some(&region.addr))?;
        let src = self.work.join("pkgsrc/latency");
        std::fs::create_dir_all(src.join("WAPT"))?;
        let mut blob = vec![0u8; 4096];
        let mut files = Vec::new();
        for k in 0..=self.o.latency_rounds {
            std::fs::write(
                src.join("WAPT/control"),
                format!("package: small\nversion: 1.{k}-1\narchitecture: all\nsection: base\npriority: optional\n"),
            )?;
            noise(&mut blob, 77 + k as u64);
            std::fs::write(src.join("small.bin"), &blob)?;
            files.push(self.build(&src)?);
        }
        // Warm-up: connections up, first snapshot everywhere.
        let seq = self.publish(&files[0], &main.addr)?;
        procs::wait_for(Duration::from_secs(60), POLL, "the site to serve the first snapshot", || {
            (site.sequence() >= seq).then_some(())
        })?;
        let mut out = Latency::default();
        for file in &files[1..] {
            std::thread::sleep(Duration::from_millis(300));
            let expected = main.sequence() + 1;
            let started = Instant::now();
            let mut child = self
                .publish_cmd(file, &main.addr)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()?;
            let (mut returned, mut at_region, mut at_site) = (None, None, None);
            while returned.is_none() || at_site.is_none() {
                if returned.is_none() && child.try_wait()?.is_some() {
                    returned = Some(started.elapsed());
                }
                if at_region.is_none() && region.sequence() >= expected {
                    at_region = Some(started.elapsed());
                }
                if at_site.is_none() && site.sequence() >= expected {
                    at_site = Some(started.elapsed());
                }
                if started.elapsed() > Duration::from_secs(60) {
                    bail!("the site did not serve snapshot {expected} within 60 s");
                }
                std::thread::sleep(LATENCY_POLL);
            }
            let output = child.wait_with_output()?;
            let got = parse_sequence(&String::from_utf8_lossy(&output.stdout))?;
            if got != expected {
                bail!("published snapshot {got}, expected {expected}");
            }
            let (returned, at_region, at_site) =
                (returned.unwrap_or_default(), at_region.unwrap_or_default(), at_site.unwrap_or_default());
            eprintln!(
                "  publish returned {:.0} ms, region {:.0} ms, site {:.0} ms",
                returned.as_secs_f64() * 1e3,
                at_region.as_secs_f64() * 1e3,
                at_site.as_secs_f64() * 1e3
            );
            out.publish.push(returned.as_secs_f64());
            out.region.push(at_region.as_secs_f64());
            out.site.push(at_site.as_secs_f64());
            out.after_return.push(at_site.saturating_sub(returned).as_secs_f64());
        }
        Ok(out)
    }

    fn report(&self, r: Report) -> String {
        let o = &self.o;
        let mut s = String::new();
        let fresh = |s: &mut String, name: &str, samples: &[Sample]| {
            let m = median_sample(samples);
            let mut walls: Vec<f64> = samples.iter().map(|x| x.wall).collect();
            let mut cpus: Vec<f64> = samples.iter().map(|x| x.cpu).collect();
            let (wall, cpu) = (median(&mut walls), median(&mut cpus));
            let runs: Vec<String> = walls.iter().map(|w| format!("{w:.2}")).collect();
            let mut flushes: Vec<f64> = samples.iter().map(|x| x.flush).collect();
            let _ = writeln!(
                s,
                "| {name} | {wall:.2} | {:.0} | {cpu:.2} | {} | {:.2} | {} |",
                mb(r.total) / wall,
                m.detail,
                median(&mut flushes),
                runs.join(", ")
            );
        };
        let _ = writeln!(
            s,
            "Payload: {} files of {} MiB of incompressible data in {} packages ({:.1} MB); {} runs, medians; \
             whole benchmark {:.0} s; every system's files on {}.\n",
            self.names.len(),
            o.file_mib,
            o.packages,
            mb(r.total),
            o.runs,
            r.seconds,
            if o.xfs { "XFS with reflinks (`--fs xfs`)" } else { "the work folder's file system" }
        );
        let _ = writeln!(s, "**Fresh sync** (main → empty edge)\n");
        let _ = writeln!(
            s,
            "| system | wall s | MB/s | CPU s | CPU by process (median run) | `sync` after, s | wall s of each run |"
        );
        let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- | --- |");
        fresh(&mut s, "Outpost (repo main → repo edge)", &r.f_outpost);
        fresh(&mut s, "rsync daemon (`rsync -a`)", &r.f_rsync);
        fresh(&mut s, "nginx HTTPS + curl (HTTP/1.1, sequential)", &r.f_curl);
        fresh(&mut s, "nginx HTTPS + curl (HTTP/2, `--parallel`)", &r.f_curl2);
        fresh(&mut s, &format!("raw QUIC copy (limit; {} streams)", quic::STREAMS), &r.f_quic);
        let m = median_sample(&r.f_outpost);
        let _ = writeln!(
            s,
            "\nOutpost, median run: {:.1} MB received by the edge; {}.\n{}\ncurl: {}; {}.\n",
            mb(m.bytes),
            r.outpost_extra,
            r.publish_line,
            CurlMode::Sequential.describe(),
            CurlMode::Parallel.describe()
        );

        let mut changed: Vec<f64> = r.changed.iter().map(|&c| c as f64).collect();
        let changed = median(&mut changed);
        let _ = writeln!(
            s,
            "**Update sync** ({}% of every file changed in {} regions: {:.1} MB changed of {:.1} MB)\n",
            o.change_percent,
            o.regions,
            changed / 1e6,
            mb(r.total)
        );
        let _ = writeln!(
            s,
            "| system | changed MB | bytes on the wire MB | ratio to changed | wall s | CPU s | loopback MB | CPU by process | `sync` after, s |"
        );
        let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        let update = |s: &mut String, name: &str, samples: &[Sample]| {
            let m = median_sample(samples);
            let mut b: Vec<f64> = samples.iter().map(|x| x.bytes as f64).collect();
            let mut w: Vec<f64> = samples.iter().map(|x| x.wall).collect();
            let mut c: Vec<f64> = samples.iter().map(|x| x.cpu).collect();
            let mut l: Vec<f64> = samples.iter().map(|x| x.loopback as f64).collect();
            let mut f: Vec<f64> = samples.iter().map(|x| x.flush).collect();
            let bytes = median(&mut b);
            let _ = writeln!(
                s,
                "| {name} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {:.2} |",
                changed / 1e6,
                bytes / 1e6,
                bytes / changed,
                median(&mut w),
                median(&mut c),
                median(&mut l) / 1e6,
                m.detail,
                median(&mut f)
            );
            bytes
        };
        let ob = update(&mut s, "Outpost (edge restarted)", &r.u_outpost);
        update(&mut s, "Outpost (edge running, told by the main's pushed head)", &r.u_live);
        let rb = update(&mut s, "rsync daemon (sent + received)", &r.u_rsync);
        let wb = update(&mut s, "whole-file (changed SHA-256, curl from nginx)", &r.u_whole);
        let mut lit: Vec<f64> = r.rsync_literal.iter().map(|&x| x as f64).collect();
        let mut hs = r.hash_seconds.clone();
        let mut up = r.u_publish.clone();
        let _ = writeln!(
            s,
            "\nOutpost per round: {}. rsync literal data {:.1} MB. Whole-file: SHA-256 of every file took {:.2} s \
             (not in its wall time). Publishing the new versions to the main took {:.1} s (not in any wall time). \
             Outpost's bytes are `outpost_repo_received_bytes_total` (payload of the QUIC streams), rsync's its \
             `--stats` totals, whole-file's curl's `size_download`; the loopback column counts every packet on `lo` \
             (headers, acknowledgements, both directions, and anything else running).",
            r.u_extra.join("; "),
            median(&mut lit) / 1e6,
            median(&mut hs),
            median(&mut up)
        );
        let _ = writeln!(s, "Outpost sends {:.1}x fewer bytes than whole-file sync, rsync {:.1}x.\n", wb / ob, wb / rb);

        let mut lat = r.lat;
        let row = |s: &mut String, name: &str, v: &mut Vec<f64>| {
            let med = median(v);
            let max = v.iter().copied().fold(0.0, f64::max);
            let _ = writeln!(s, "| {name} | {:.0} | {:.0} |", med * 1e3, max * 1e3);
        };
        let _ = writeln!(
            s,
            "**Publish-to-edge latency**, main → region → site, a 4 KiB package, {} rounds (polled every {} ms)\n",
            lat.site.len(),
            LATENCY_POLL.as_millis()
        );
        let _ = writeln!(s, "| from `outpost pkg publish` starting until | median ms | max ms |");
        let _ = writeln!(s, "| --- | --- | --- |");
        row(&mut s, "`pkg publish` returns", &mut lat.publish);
        row(&mut s, "the region serves the snapshot", &mut lat.region);
        row(&mut s, "the site serves the snapshot", &mut lat.site);
        row(&mut s, "(site, counted from the moment publish returned)", &mut lat.after_return);
        let report = s;
        let _ = std::fs::write(self.work.join("report.md"), &report);
        report
    }
}

struct Report {
    total: u64,
    f_outpost: Vec<Sample>,
    f_rsync: Vec<Sample>,
    f_curl: Vec<Sample>,
    f_curl2: Vec<Sample>,
    f_quic: Vec<Sample>,
    outpost_extra: String,
    publish_line: String,
    u_outpost: Vec<Sample>,
    u_live: Vec<Sample>,
    u_rsync: Vec<Sample>,
    u_whole: Vec<Sample>,
    u_extra: Vec<String>,
    changed: Vec<u64>,
    rsync_literal: Vec<u64>,
    hash_seconds: Vec<f64>,
    u_publish: Vec<f64>,
    lat: Latency,
    seconds: f64,
}

#[derive(Debug, Default)]
struct Latency {
    publish: Vec<f64>,
    region: Vec<f64>,
    site: Vec<f64>,
    after_return: Vec<f64>,
}

/// Runs `sync` and returns how long it took.
fn timed_sync() -> f64 {
    let started = Instant::now();
    procs::sync_disks();
    started.elapsed().as_secs_f64()
}

/// The snapshot sequence from `pkg publish`'s "… snapshot N" line.
fn parse_sequence(out: &str) -> Result<u64> {
    out.rsplit("snapshot ")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no snapshot number in {out:?}"))
}

/// Fills `buf` with reproducible, incompressible bytes (xorshift64*).
fn noise(buf: &mut [u8], seed: u64) {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut words = buf.chunks_exact_mut(8);
    for w in &mut words {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        w.copy_from_slice(&s.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    for b in words.into_remainder() {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        *b = (s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8;
    }
}

fn sha256_file(path: &Path) -> Result<[u8; 32]> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}
