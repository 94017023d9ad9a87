//! Agent benchmark: the release `outpost` binary as `repo main` and as the agent, on loopback
//! addresses, with WAPT's way of checking for updates (nginx over HTTPS, curl) measured in the
//! same run.
//!
//! Run (installs nginx, curl and openssl with `bench/setup` when missing, then builds the
//! release `outpost` binary with cargo):
//!
//! ```sh
//! cargo run --release -p outpost-bench --bin agent
//! ```
//!
//! Flags: `--rounds N` (update measurements, median reported; default 10), `--packages N` (small
//! packages installed at once; default 100), `--idle-secs S` (how long the daemon idles before
//! its memory is read; default 10), `--work DIR`, `--keep`, `--no-setup`, `--no-build`,
//! `--outpost PATH`.
//!
//! What it measures:
//! 1. **Update when nothing changed**: `outpost agent update` against a main repository that
//!    holds the 61 packages of WAPT's 2016 index fixture (rebuilt as Outpost packages), after a
//!    first update; bytes and packets through the loopback interface (both directions, headers
//!    included) and wall time. Peer: what a WAPT agent does, `curl -I` (HEAD) on the index
//!    `Packages` served by nginx over HTTPS (TLS 1.3), and the download of the same index
//!    (`tests/fixtures/wapt/Packages-2016.zip`, 61 records) when it changed; next to the first
//!    Outpost update, which downloads the snapshot.
//! 2. **Idle memory and traffic**: `outpost agent run` (update every 2 h) after its first update
//!    and upgrade, left idle; VmRSS and VmHWM from `/proc/PID/status`, and the loopback bytes
//!    meanwhile (it follows the repository's pushed heads); then `outpost agent update` while it
//!    runs (answered by the daemon).
//! 3. **Install 100 small packages**: a host package depending on 100 packages of one 1 KiB
//!    file and a `setup.sh` that writes a file; wall time of `outpost agent upgrade` (download,
//!    verify, hook, state) after an update.

#[allow(dead_code)]
#[path = "replication/procs.rs"]
mod procs;

#[allow(dead_code)]
#[path = "replication/peers.rs"]
mod peers;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::peers::Nginx;
use crate::procs::Daemon;

const NET: &str = "127.43.0";

#[derive(Debug, Clone)]
struct Options {
    rounds: usize,
    packages: usize,
    idle_secs: u64,
    common: outpost_bench::CommonFlags,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let mut o = Self { rounds: 10, packages: 100, idle_secs: 10, common: outpost_bench::CommonFlags::default() };
        let mut common = o.common.clone();
        outpost_bench::parse_flags(args, &mut common, "bench/src/bin/agent.rs", |flag, value| {
            match flag {
                "--rounds" => o.rounds = value()?.parse()?,
                "--packages" => o.packages = value()?.parse()?,
                "--idle-secs" => o.idle_secs = value()?.parse()?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        o.common = common;
        Ok(o)
    }
}

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    let o = Options::parse(&argv[1..])?;
    let (root, outpost, work) = o.common.prepare("agent-bench")?;
    let result = Bench { o: o.clone(), outpost, work: work.clone(), root }.run();
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
    root: PathBuf,
}

/// One measured command.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    wall: f64,
    bytes: u64,
    packets: u64,
}

fn loopback_packets() -> u64 {
    std::fs::read_to_string("/sys/class/net/lo/statistics/rx_packets")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Runs `cmd` and measures it (the machine is otherwise quiet on loopback).
fn measure(cmd: &mut Command) -> Result<(Cost, String)> {
    let (b0, p0, t0) = (procs::loopback_bytes(), loopback_packets(), Instant::now());
    let out = procs::run(cmd)?;
    let wall = t0.elapsed().as_secs_f64();
    Ok((Cost { wall, bytes: procs::loopback_bytes() - b0, packets: loopback_packets() - p0 }, out))
}

fn median_cost(mut costs: Vec<Cost>) -> Cost {
    let mid = costs.len() / 2;
    let pick = |costs: &mut Vec<Cost>, key: fn(&Cost) -> f64| {
        costs.sort_by(|a, b| key(a).total_cmp(&key(b)));
        key(&costs[mid])
    };
    Cost {
        wall: pick(&mut costs, |c| c.wall),
        bytes: pick(&mut costs, |c| c.bytes as f64) as u64,
        packets: pick(&mut costs, |c| c.packets as f64) as u64,
    }
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

impl Bench {
    fn cmd(&self) -> Command {
        outpost_bench::outpost_command(&self.outpost, &self.work)
    }

    fn issue(&self, role: &str, name: &str, san: Option<&str>) -> Result<(PathBuf, PathBuf)> {
        outpost_bench::issue(&self.outpost, &self.work, role, name, san)
    }

    fn build(
        &self,
        name: &str,
        fields: &[(String, String)],
        files: &[(&str, Vec<u8>)],
        signer: &(PathBuf, PathBuf),
    ) -> Result<PathBuf> {
        let src = self.work.join("src").join(name);
        std::fs::create_dir_all(src.join("WAPT"))?;
        // Multi-line values continue on lines that start with a space, as in WAPT.
        let control: String = fields.iter().map(|(k, v)| format!("{k}: {}\n", v.replace('\n', "\n "))).collect();
        std::fs::write(src.join("WAPT/control"), control)?;
        for (path, data) in files {
            std::fs::write(src.join(path), data)?;
        }
        let mut c = self.cmd();
        c.args(["pkg", "build"])
            .arg(&src)
            .arg("--cert")
            .arg(&signer.0)
            .arg("--key")
            .arg(&signer.1)
            .args(["--out", "dist"]);
        Ok(self.work.join(procs::run(&mut c)?.trim()))
    }

    fn publish(&self, file: &Path, repo: &str, signer: &(PathBuf, PathBuf)) -> Result<()> {
        let mut c = self.cmd();
        c.args(["pkg", "publish"]).arg(file).args(["--repo", repo, "--ca"]).arg(self.work.join("pki/ca.crt"));
        c.arg("--cert").arg(&signer.0).arg("--key").arg(&signer.1);
        procs::run(&mut c)?;
        Ok(())
    }

    fn agent(&self, config: &Path, args: &[&str]) -> Command {
        let mut c = self.cmd();
        c.arg("agent").args(args).arg("--config").arg(config);
        c
    }

    fn run(&self) -> Result<String> {
        procs::run(self.cmd().args(["pki", "init", "--dir", "pki", "--org", "Bench Org", "--no-password"]))?;
        let signer = self.issue("signer", "packager", None)?;
        let ip = format!("{NET}.1");
        let server = self.issue("server", "main", Some(&ip))?;
        let host = self.issue("host", "bench-host.example.org", None)?;
        let port = procs::udp_port(&ip)?;
        let metrics = format!("{ip}:{}", procs::tcp_port(&ip)?);
        let addr = format!("{ip}:{port}");
        let mut c = self.cmd();
        c.args(["repo", "main", "--listen", &addr, "--metrics", &metrics, "--ca"])
            .arg(self.work.join("pki/ca.crt"))
            .arg("--cert")
            .arg(&server.0)
            .arg("--key")
            .arg(&server.1)
            .arg("--data")
            .arg(self.work.join("main"));
        let _main = Daemon::spawn("main", &mut c, &self.work.join("main.log"))?;
        procs::wait_for(Duration::from_secs(30), Duration::from_millis(10), "the main to start", || {
            procs::scrape(&metrics).map(|_| ())
        })?;

        // The 61 packages of WAPT's 2016 index, as Outpost packages.
        let fixture = self.root.join("tests/fixtures/wapt/Packages-2016.zip");
        let records: Vec<serde_json::Map<String, serde_json::Value>> =
            serde_json::from_str(&procs::run(self.cmd().args(["wapt", "index"]).arg(&fixture).arg("--json"))?)?;
        eprintln!("publishing the {} packages of the WAPT index fixture", records.len());
        let keep = [
            "package",
            "version",
            "architecture",
            "section",
            "priority",
            "maintainer",
            "description",
            "depends",
            "conflicts",
        ];
        let mut published = 0;
        for (i, r) in records.iter().enumerate() {
            let fields: Vec<(String, String)> = keep
                .iter()
                .filter_map(|k| Some((k.to_string(), r.get(*k)?.as_str()?.to_string())))
                .filter(|(k, v)| !v.is_empty() || *k == "description")
                .collect();
            let name = r["package"].as_str().unwrap_or("x").to_string();
            match self.build(&format!("wapt-{i}-{name}"), &fields, &[("data.txt", name.clone().into_bytes())], &signer)
            {
                Ok(file) => {
                    self.publish(&file, &addr, &signer)?;
                    published += 1;
                }
                Err(e) => eprintln!("  {name}: not built: {e}"),
            }
        }

        let state = self.work.join("agent");
        let config = self.work.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "state = {state:?}\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\nfqdn = \"bench-host.example.org\"\n\
                 uuid = \"bench-host-uuid\"\nrepos = [{addr:?}]\nsrv_discovery = false\nbind = \"{NET}.2\"\n",
                ca = self.work.join("pki/ca.crt"),
                cert = host.0,
                key = host.1,
            ),
        )?;
        let (first, _) = measure(&mut self.agent(&config, &["update"]))?;
        let mut unchanged = Vec::new();
        for _ in 0..self.o.rounds {
            unchanged.push(measure(&mut self.agent(&config, &["update"]))?.0);
        }
        let unchanged = median_cost(unchanged);

        // WAPT: HEAD on the index, then its download, from nginx over HTTPS.
        let www = self.work.join("www/wapt");
        std::fs::create_dir_all(&www)?;
        std::fs::copy(&fixture, www.join("Packages"))?;
        let nginx_ip = format!("{NET}.3");
        let nginx = Nginx::start(&self.work.join("nginx"), &nginx_ip, &self.work.join("www"))?;
        let url = format!("{}wapt/Packages", nginx.base);
        let curl = |head: bool| {
            let mut c = Command::new("curl");
            c.args(["--silent", "--show-error", "--fail", "--http1.1", "--output", "/dev/null", "--cacert"])
                .arg(&nginx.cert);
            if head {
                c.arg("--head");
            }
            c.arg(&url);
            c
        };
        let mut heads = Vec::new();
        let mut gets = Vec::new();
        for _ in 0..self.o.rounds {
            heads.push(measure(&mut curl(true))?.0);
            gets.push(measure(&mut curl(false))?.0);
        }
        let (head, get) = (median_cost(heads), median_cost(gets));
        drop(nginx);

        // 100 small packages with hooks, required by the host package.
        eprintln!("publishing {} small packages and the host package", self.o.packages);
        let marks = self.work.join("marks");
        std::fs::create_dir_all(&marks)?;
        let hook = format!(
            "#!/bin/sh\n[ \"$1\" = install ] && echo \"$OUTPOST_VERSION\" > '{}/'\"$OUTPOST_PACKAGE\"\nexit 0\n",
            marks.display()
        );
        let mut names = Vec::new();
        for i in 0..self.o.packages {
            let name = format!("small-{i:03}");
            let fields = vec![
                ("package".to_string(), name.clone()),
                ("version".to_string(), "1.0-1".to_string()),
                ("architecture".to_string(), "all".to_string()),
                ("section".to_string(), "base".to_string()),
                ("priority".to_string(), "optional".to_string()),
                ("description".to_string(), format!("small package {i}")),
            ];
            let data: Vec<u8> = (0..1024u32).map(|b| (b ^ i as u32) as u8).collect();
            let file =
                self.build(&name, &fields, &[("data.bin", data), ("setup.sh", hook.clone().into_bytes())], &signer)?;
            self.publish(&file, &addr, &signer)?;
            names.push(name);
        }
        let host_fields = vec![
            ("package".to_string(), "bench-host.example.org".to_string()),
            ("version".to_string(), "1".to_string()),
            ("architecture".to_string(), "all".to_string()),
            ("section".to_string(), "host".to_string()),
            ("priority".to_string(), "optional".to_string()),
            ("depends".to_string(), names.join(",")),
        ];
        let file = self.build("host", &host_fields, &[], &signer)?;
        self.publish(&file, &addr, &signer)?;
        procs::run(&mut self.agent(&config, &["update"]))?;
        let started = Instant::now();
        let out = procs::run(&mut self.agent(&config, &["upgrade", "--json"]))?;
        let install = started.elapsed().as_secs_f64();
        let report: serde_json::Value = serde_json::from_str(&out)?;
        let installed = report["installed"].as_array().map_or(0, Vec::len);
        let written = std::fs::read_dir(&marks)?.count();
        // The small packages and the host package itself.
        if installed != self.o.packages + 1 || written != self.o.packages {
            bail!("{installed} packages installed and {written} hooks ran, {} expected: {out}", self.o.packages);
        }

        // The daemon, idle.
        let mut daemon = Daemon::spawn("agent", &mut self.agent(&config, &["run"]), &self.work.join("agent.log"))?;
        procs::wait_for(Duration::from_secs(60), Duration::from_millis(50), "the daemon's first update", || {
            let out = procs::run(&mut self.agent(&config, &["status", "--json"])).ok()?;
            let v: serde_json::Value = serde_json::from_str(&out).ok()?;
            (v["host_status"] == "OK" && state.join("agent.sock").exists()).then_some(())
        })?;
        daemon.check_alive()?;
        // It follows the repository's pushed heads: idle, the loopback carries its keep-alives.
        let (idle_b0, idle_p0, idle_t0) = (procs::loopback_bytes(), loopback_packets(), Instant::now());
        std::thread::sleep(Duration::from_secs(self.o.idle_secs));
        let idle_cost = Cost {
            wall: idle_t0.elapsed().as_secs_f64(),
            bytes: procs::loopback_bytes() - idle_b0,
            packets: loopback_packets() - idle_p0,
        };
        let (rss, hwm) = (status_kib(daemon.pid(), "VmRSS:"), status_kib(daemon.pid(), "VmHWM:"));
        // `agent update` while the daemon runs: answered by the daemon from the pushed head.
        let mut through = Vec::new();
        for _ in 0..self.o.rounds {
            through.push(measure(&mut self.agent(&config, &["update"]))?.0);
        }
        let through = median_cost(through);
        daemon.stop();

        let kb = |b: u64| b as f64 / 1000.0;
        Ok(format!(
            "### Update when nothing changed (median of {rounds})\n\n\
             | what | bytes on loopback | packets | wall ms |\n| --- | --- | --- | --- |\n\
             | Outpost `agent update`, head unchanged | {ub:.1} kB | {up} | {uw:.0} |\n\
             | Outpost `agent update` while the daemon runs (it follows pushed heads) | {tb:.1} kB | {tp} | {tw:.0} |\n\
             | WAPT: HEAD on `Packages` (curl, HTTPS, HTTP/1.1) | {hb:.1} kB | {hp} | {hw:.0} |\n\
             | Outpost `agent update`, first (snapshot of {published} packages) | {fb:.1} kB | {fp} | {fw:.0} |\n\
             | WAPT: download of `Packages` ({n} records, {zip} bytes) | {gb:.1} kB | {gp} | {gw:.0} |\n\n\
             ### Agent daemon idle\n\nVmRSS {rss_mib:.1} MiB (peak VmHWM {hwm_mib:.1} MiB) after its first update and \
             upgrade and {idle} s idle. On the loopback meanwhile: {ib:.1} kB in {ip} packets ({ibs:.0} bytes/s: \
             QUIC keep-alives of the connection on which the repository pushes heads; no update check).\n\n\
             ### Install {pk} small packages\n\n`outpost agent upgrade`: {install:.2} s ({per:.1} ms per package: \
             download, verify, hook, state).\n",
            rounds = self.o.rounds,
            ub = kb(unchanged.bytes),
            up = unchanged.packets,
            uw = unchanged.wall * 1000.0,
            hb = kb(head.bytes),
            hp = head.packets,
            hw = head.wall * 1000.0,
            fb = kb(first.bytes),
            fp = first.packets,
            fw = first.wall * 1000.0,
            gb = kb(get.bytes),
            gp = get.packets,
            gw = get.wall * 1000.0,
            n = records.len(),
            zip = std::fs::metadata(&fixture)?.len(),
            tb = kb(through.bytes),
            tp = through.packets,
            tw = through.wall * 1000.0,
            ib = kb(idle_cost.bytes),
            ip = idle_cost.packets,
            ibs = idle_cost.bytes as f64 / idle_cost.wall,
            rss_mib = rss as f64 / 1024.0,
            hwm_mib = hwm as f64 / 1024.0,
            idle = self.o.idle_secs,
            pk = self.o.packages,
            per = install * 1000.0 / self.o.packages as f64,
        ))
    }
}
