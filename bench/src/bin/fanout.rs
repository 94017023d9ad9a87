//! Fan-out benchmark: many clients download the same package from one edge at once, against
//! nginx serving the same file to as many curl clients, in the same run.
//!
//! Run (installs nginx, curl and openssl with `bench/setup` when missing, then builds the
//! release `outpost` binary with cargo):
//!
//! ```sh
//! cargo run --release -p outpost-bench --bin fanout
//! ```
//!
//! Flags: `--clients 100`, `--mib 100` (the package's one file), `--runs 3` (median reported),
//! `--work DIR`, `--keep`, `--no-setup`, `--no-build`, `--outpost PATH`, `--no-prime` (no
//! memory ballast; see `outpost_bench::Ballast`).
//!
//! What it measures: a main and an edge (`outpost repo main`, `outpost repo edge`) on
//! loopback addresses; a package of one file of incompressible data published and replicated
//! to the edge. Then, each run, `--clients` processes of `outpost repo pull` (the agent's
//! download path: byte ranges, every chunk verified against the signed chunk list, the files
//! written) start at once against the edge, each into a folder of its own; the wall time runs
//! until the last has exited, and the edge's CPU seconds (utime + stime) over that time give
//! its CPU per GiB served. Peer: nginx (2 workers, TLS 1.3) and as many `curl --http1.1`
//! processes started at once, each writing the file. Before each system's run the clients'
//! folders are removed (and `sync` run), the memory ballast is read (the clients' writes take
//! pages the kernel holds, not pages the virtual machine gave back to its host) and every file
//! served is read into the page cache; the two systems take turns going first, run by run.

#[allow(dead_code)]
#[path = "replication/procs.rs"]
mod procs;

#[allow(dead_code)]
#[path = "replication/peers.rs"]
mod peers;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::peers::Nginx;
use crate::procs::Daemon;

const NET: &str = "127.44.0";

#[derive(Debug, Clone)]
struct Options {
    clients: usize,
    mib: usize,
    runs: usize,
    prime: bool,
    common: outpost_bench::CommonFlags,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let mut o =
            Self { clients: 100, mib: 100, runs: 3, prime: true, common: outpost_bench::CommonFlags::default() };
        let mut common = o.common.clone();
        outpost_bench::parse_flags(args, &mut common, "bench/src/bin/fanout.rs", |flag, value| {
            match flag {
                "--clients" => o.clients = value()?.parse()?,
                "--mib" => o.mib = value()?.parse()?,
                "--runs" => o.runs = value()?.parse()?,
                "--no-prime" => o.prime = false,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        o.common = common;
        if o.clients == 0 || o.mib == 0 || o.runs == 0 {
            bail!("--clients, --mib and --runs must be at least 1");
        }
        Ok(o)
    }
}

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    let o = Options::parse(&argv[1..])?;
    let (_, outpost, work) = o.common.prepare("fanout")?;
    let result = Bench { o: o.clone(), outpost, work: work.clone() }.run();
    if !o.common.keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    println!("{}", result?);
    Ok(())
}

struct Bench {
    o: Options,
    outpost: PathBuf,
    work: PathBuf,
}

/// One run of one system.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: f64,
    server_cpu: f64,
    clients_cpu: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Waits for every child; fails when one failed.
fn wait_all(children: Vec<(Child, String)>) -> Result<()> {
    let mut failed = Vec::new();
    for (mut child, what) in children {
        let status = child.wait()?;
        if !status.success() {
            failed.push(format!("{what}: {status}"));
        }
    }
    if !failed.is_empty() {
        bail!("{} client(s) failed: {}", failed.len(), failed.join("; "));
    }
    Ok(())
}

impl Bench {
    fn cmd(&self) -> Command {
        outpost_bench::outpost_command(&self.outpost, &self.work)
    }

    fn issue(&self, role: &str, name: &str, san: Option<&str>) -> Result<(PathBuf, PathBuf)> {
        outpost_bench::issue(&self.outpost, &self.work, role, name, san)
    }

    fn node(&self, role: &str, n: u8, upstream: Option<&str>) -> Result<(Daemon, String, String)> {
        let ip = format!("{NET}.{n}");
        let (cert, key) =
            self.issue(if upstream.is_some() { "edge" } else { "server" }, &format!("{role}-{ip}"), Some(&ip))?;
        let addr = format!("{ip}:{}", procs::udp_port(&ip)?);
        let metrics = format!("{ip}:{}", procs::tcp_port(&ip)?);
        let mut c = self.cmd();
        c.args(["repo", role, "--listen", &addr, "--metrics", &metrics, "--name", role, "--ca"])
            .arg(self.work.join("pki/ca.crt"))
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .arg("--data")
            .arg(self.work.join(format!("data-{role}")));
        if let Some(u) = upstream {
            c.args(["--upstream", u]);
        }
        let daemon = Daemon::spawn(role, &mut c, &self.work.join(format!("{role}.log")))?;
        procs::wait_for(Duration::from_secs(30), Duration::from_millis(10), &format!("{role} to start"), || {
            procs::scrape(&metrics).map(|_| ())
        })?;
        Ok((daemon, addr, metrics))
    }

    /// Reads every file under `dir` once (into the page cache).
    fn warm(dir: &Path) -> Result<()> {
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.is_dir() {
                Self::warm(&p)?;
            } else {
                std::fs::read(&p)?;
            }
        }
        Ok(())
    }

    fn clean(dir: &Path) -> Result<()> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        procs::sync_disks();
        Ok(())
    }

    fn run(&self) -> Result<String> {
        let o = &self.o;
        let ticks = procs::clock_ticks();
        procs::run(self.cmd().args(["pki", "init", "--dir", "pki", "--org", "Bench Org", "--no-password"]))?;
        let signer = self.issue("signer", "packager", None)?;
        let client = self.issue("host", "fanout-client.example.org", None)?;
        let ballast = if o.prime { outpost_bench::Ballast::create(&self.work)? } else { None };

        // The package: one file of incompressible data.
        let src = self.work.join("src/fanout");
        std::fs::create_dir_all(src.join("WAPT"))?;
        std::fs::write(
            src.join("WAPT/control"),
            "package: fanout\nversion: 1\narchitecture: all\nsection: base\npriority: optional\ndescription: fan-out payload\n",
        )?;
        let data = outpost_protocol::chunking::noise(o.mib * 1024 * 1024, 7);
        std::fs::write(src.join("big.bin"), &data)?;
        let www = self.work.join("www");
        std::fs::create_dir_all(&www)?;
        std::fs::write(www.join("big.bin"), &data)?;
        drop(data);
        let mut c = self.cmd();
        c.args(["pkg", "build"])
            .arg(&src)
            .arg("--cert")
            .arg(&signer.0)
            .arg("--key")
            .arg(&signer.1)
            .args(["--out", "dist"]);
        let file = self.work.join(procs::run(&mut c)?.trim());

        let (_main, main_addr, _) = self.node("main", 1, None)?;
        let mut c = self.cmd();
        c.args(["pkg", "publish"]).arg(&file).args(["--repo", &main_addr, "--ca"]).arg(self.work.join("pki/ca.crt"));
        c.arg("--cert").arg(&signer.0).arg("--key").arg(&signer.1);
        procs::run(&mut c)?;
        let (edge, edge_addr, edge_metrics) = self.node("edge", 2, Some(&main_addr))?;
        procs::wait_for(Duration::from_secs(120), Duration::from_millis(20), "the edge to hold the package", || {
            let text = procs::scrape(&edge_metrics)?;
            (procs::metric_sum(&text, "outpost_repo_blobs") >= 1.0).then_some(())
        })?;
        let nginx = Nginx::start(&self.work.join("nginx"), &format!("{NET}.3"), &www)?;
        let url = format!("{}big.bin", nginx.base);
        let edge_pid = edge.pid();
        let nginx_pids = nginx.pids();

        let mut outpost = Vec::new();
        let mut peer = Vec::new();
        let out = self.work.join("out");
        for run in 0..o.runs {
            eprintln!("run {} of {}", run + 1, o.runs);
            let mut order = [("outpost", &mut outpost), ("nginx", &mut peer)];
            // Turns at going first: what one system leaves (dirty pages being written back,
            // memory given back to the host) falls on each alike.
            if run % 2 == 1 {
                order.reverse();
            }
            for (system, samples) in order {
                Self::clean(&out)?;
                if let Some(b) = &ballast {
                    let t = b.read()?;
                    if t > 1.0 {
                        eprintln!("  (memory primed again in {t:.1} s)");
                    }
                }
                Self::warm(&self.work.join("data-edge/blobs"))?;
                Self::warm(&www)?;
                let server: Vec<u32> = if system == "outpost" { vec![edge_pid] } else { nginx_pids.clone() };
                let (s0, c0, t0) = (procs::total_ticks(&server), procs::reaped_children_ticks(), Instant::now());
                let mut children = Vec::new();
                for i in 0..o.clients {
                    let dest = out.join(format!("c{i}"));
                    std::fs::create_dir_all(&dest)?;
                    let mut c = if system == "outpost" {
                        let mut c = self.cmd();
                        c.args(["repo", "pull", "fanout", "--repo", &edge_addr, "--ca"])
                            .arg(self.work.join("pki/ca.crt"))
                            .arg("--cert")
                            .arg(&client.0)
                            .arg("--key")
                            .arg(&client.1)
                            .arg("--out")
                            .arg(&dest);
                        c
                    } else {
                        let mut c = Command::new("curl");
                        c.args(["--silent", "--show-error", "--fail", "--http1.1", "--cacert"])
                            .arg(&nginx.cert)
                            .arg("--output")
                            .arg(dest.join("big.bin"))
                            .arg(&url);
                        c
                    };
                    c.stdout(Stdio::null()).stderr(Stdio::inherit());
                    children.push((c.spawn().with_context(|| format!("starting client {i}"))?, format!("client {i}")));
                }
                wait_all(children)?;
                let wall = t0.elapsed().as_secs_f64();
                let server_cpu = (procs::total_ticks(&server) - s0) as f64 / ticks;
                let clients_cpu = (procs::reaped_children_ticks() - c0) as f64 / ticks;
                eprintln!("  {system}: {wall:.2} s, server CPU {server_cpu:.2} s, clients CPU {clients_cpu:.2} s");
                samples.push(Sample { wall, server_cpu, clients_cpu });
            }
        }
        Self::clean(&out)?;
        drop(nginx);

        let gib = (o.clients * o.mib) as f64 / 1024.0;
        let row = |name: &str, s: &[Sample]| {
            let wall = median(s.iter().map(|x| x.wall).collect());
            let server = median(s.iter().map(|x| x.server_cpu).collect());
            let clients = median(s.iter().map(|x| x.clients_cpu).collect());
            let runs: Vec<String> = s.iter().map(|x| format!("{:.2}", x.wall)).collect();
            format!(
                "| {name} | {wall:.2} | {:.0} | {server:.2} | {:.2} | {clients:.2} | {} |\n",
                gib * 1024.0 * 1.048_576 / wall,
                server / gib,
                runs.join(", ")
            )
        };
        Ok(format!(
            "### Fan-out: {clients} clients at once, one package of {mib} MiB, from one edge ({gib:.1} GiB served; median of {runs})\n\n\
             | system | wall s | MB/s | server CPU s | server CPU s per GiB | clients CPU s | wall s of each run |\n\
             | --- | --- | --- | --- | --- | --- | --- |\n{}{}",
            row("Outpost (`repo edge`, `repo pull` clients)", &outpost),
            row("nginx HTTPS (2 workers) + curl (HTTP/1.1)", &peer),
            clients = o.clients,
            mib = o.mib,
            runs = o.runs,
        ))
    }
}
