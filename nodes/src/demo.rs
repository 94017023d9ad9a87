//! `outpost demo`: a whole multi-site organisation on this machine, on throw-away data.
//!
//! It makes a PKI (CA, enrollment CA, packager, administrator, node certificates), starts
//! `outpost server` (central and the main repository), an edge for Paris with a second edge
//! chained under it (the Paris annex), an edge for Lyon, and a dozen agents on their own
//! 127.77.x.y addresses. Repository rules send each Paris and annex agent to its site's edge; the
//! Lyon agents find their edge through DNS SRV records served by a real dnsmasq when it is
//! installed (by a rule otherwise). The agents enroll with a token and report to central.
//! Sample packages have hooks that write files under the demo's folder: one depends on another,
//! one is assigned through a unit package (Paris OU), and one fails on purpose until a fixed
//! version is published and an upgrade action is sent. The demo ends with each host's status,
//! the repository that served it and the bytes it got from each, then the `/metrics` addresses
//! and console commands to try. Every process it started is stopped when it ends (`--keep-running`
//! waits for Ctrl-C first).

use std::collections::BTreeMap;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cli::DemoArgs;

mod steps;

const NET: &str = "127.77";
const DOMAIN: &str = "demo.example";
const WAIT: Duration = Duration::from_secs(180);

/// A site: its edge and its agents' subnet.
struct Site {
    name: &'static str,
    /// The third octet of its addresses.
    net: u8,
    ou: &'static str,
    /// The edge it replicates from (`None`: the main repository).
    upstream: Option<&'static str>,
}

const SITES: [Site; 3] = [
    Site { name: "paris", net: 1, ou: "OU=Paris,DC=demo,DC=example", upstream: None },
    Site { name: "annex", net: 3, ou: "OU=Annex,OU=Paris,DC=demo,DC=example", upstream: Some("paris") },
    Site { name: "lyon", net: 2, ou: "OU=Lyon,DC=demo,DC=example", upstream: None },
];

/// Processes started by the demo, stopped (SIGTERM, then SIGKILL) when it ends, even on error
/// or Ctrl-C.
#[derive(Default, Clone)]
struct Procs(Arc<Mutex<Vec<(String, Child)>>>);

impl Procs {
    fn add(&self, name: &str, child: Child) {
        self.0.lock().expect("not poisoned").push((name.to_string(), child));
    }

    fn check(&self) -> Result<()> {
        for (name, child) in self.0.lock().expect("not poisoned").iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("{name} exited ({status}); see its log in the demo folder");
            }
        }
        Ok(())
    }

    fn stop_all(&self) {
        let mut all = std::mem::take(&mut *self.0.lock().expect("not poisoned"));
        for (_, c) in &all {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for (_, c) in &mut all {
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Demo {
    dir: PathBuf,
    exe: PathBuf,
    procs: Procs,
    step: std::cell::Cell<usize>,
    steps: usize,
}

fn free_udp(ip: &str) -> Result<u16> {
    Ok(UdpSocket::bind((ip, 0)).with_context(|| format!("binding {ip}"))?.local_addr()?.port())
}

fn free_tcp(ip: &str) -> Result<u16> {
    Ok(TcpListener::bind((ip, 0)).with_context(|| format!("binding {ip}"))?.local_addr()?.port())
}

/// The addresses of the demo's nodes.
struct Network {
    /// The main repository.
    repo: String,
    /// Central.
    central: String,
    /// The server's `/metrics`.
    server_metrics: String,
    /// Each site's edge: its address and its `/metrics`.
    edges: BTreeMap<&'static str, (String, String)>,
}

/// A demo host: its FQDN, its site and its configuration file.
type DemoHost = (String, &'static str, PathBuf);

impl Demo {
    fn say(&self, what: &str) {
        self.step.set(self.step.get() + 1);
        eprintln!("[{}/{}] {what}", self.step.get(), self.steps);
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.exe);
        c.current_dir(&self.dir).stdin(Stdio::null());
        for v in ["OUTPOST_KEY_PASSWORD", "OUTPOST_CA_PASSWORD", "OUTPOST_LOG", "OUTPOST_SERVER"] {
            c.env_remove(v);
        }
        c
    }

    /// Runs `outpost ARGS`; returns its standard output.
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.cmd().args(args).output().with_context(|| format!("running outpost {}", args.join(" ")))?;
        if !out.status.success() {
            bail!("outpost {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts a long-running `outpost ARGS`, its output in `logs/NAME.log`.
    fn spawn(&self, name: &str, args: &[&str]) -> Result<()> {
        let log = self.dir.join("logs").join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = self
            .cmd()
            .args(args)
            .env("OUTPOST_LOG", "info")
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.procs.add(name, child);
        Ok(())
    }

    fn wait<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> Result<T> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = check() {
                return Ok(v);
            }
            self.procs.check()?;
            if Instant::now() > deadline {
                bail!("timed out after {WAIT:?} waiting for {what}; logs are in {}", self.dir.join("logs").display());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn path(&self, rel: &str) -> String {
        self.dir.join(rel).to_string_lossy().into_owned()
    }

    fn console(&self, central: &str, args: &[&str]) -> Result<String> {
        let mut all = vec!["console"];
        all.extend_from_slice(args);
        let (ca, cert, key) =
            (self.path("pki/ca.crt"), self.path("pki/Demo_Admin.crt"), self.path("pki/Demo_Admin.key"));
        all.extend_from_slice(&["--server", central, "--ca", &ca, "--cert", &cert, "--key", &key]);
        self.run(&all)
    }

    /// Builds a package from `control` lines and files, signed by the packager.
    fn package(&self, name: &str, version: &str, extra: &str, files: &[(&str, Vec<u8>)]) -> Result<String> {
        let src = self.dir.join("src").join(format!("{name}-{version}"));
        let _ = std::fs::remove_dir_all(&src);
        std::fs::create_dir_all(src.join("WAPT"))?;
        std::fs::write(
            src.join("WAPT/control"),
            format!(
                "package: {name}\nversion: {version}\narchitecture: all\nsection: base\npriority: optional\n{extra}"
            ),
        )?;
        for (path, data) in files {
            std::fs::write(src.join(path), data)?;
        }
        let (cert, key) = (self.path("pki/Demo_Packager.crt"), self.path("pki/Demo_Packager.key"));
        Ok(self
            .run(&["pkg", "build", &src.to_string_lossy(), "--cert", &cert, "--key", &key, "--out", "dist"])?
            .trim()
            .to_string())
    }

    fn publish(&self, file: &str, repo: &str) -> Result<()> {
        let (ca, cert, key) =
            (self.path("pki/ca.crt"), self.path("pki/Demo_Packager.crt"), self.path("pki/Demo_Packager.key"));
        self.run(&["pkg", "publish", file, "--repo", repo, "--ca", &ca, "--cert", &cert, "--key", &key])?;
        Ok(())
    }
}

/// A hook that writes `installed/<package>` under the agent's folder (and fails when `fail`).
fn hook(fail: bool) -> Vec<u8> {
    let tail = if fail { "echo \"simulated failure: cannot configure $OUTPOST_PACKAGE\" >&2\nexit 3\n" } else { "" };
    format!(
        "#!/bin/sh\nset -e\nout=\"$OUTPOST_STATE_DIR/../installed\"\nmkdir -p \"$out\"\n\
         case \"$1\" in\n  install) echo \"$OUTPOST_PACKAGE $OUTPOST_VERSION\" > \"$out/$OUTPOST_PACKAGE\" ;;\n  \
         uninstall) rm -f \"$out/$OUTPOST_PACKAGE\" ;;\nesac\necho \"$1 $OUTPOST_PACKAGE $OUTPOST_VERSION\"\n{tail}"
    )
    .into_bytes()
}

/// `outpost demo`
pub fn run(args: &DemoArgs) -> Result<()> {
    let (dir, temporary) = match &args.dir {
        Some(d) => {
            if d.exists() && std::fs::read_dir(d)?.next().is_some() {
                bail!("{} is not empty: give an empty or new folder", d.display());
            }
            (d.clone(), false)
        }
        None => (std::env::temp_dir().join(format!("outpost-demo-{}", std::process::id())), true),
    };
    std::fs::create_dir_all(dir.join("logs"))?;
    let dir = dir.canonicalize()?;
    let procs = Procs::default();
    // Ctrl-C or SIGTERM at any time: stop what was started, then leave.
    {
        let procs = procs.clone();
        let dir = dir.clone();
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(crate::daemon::shutdown_signal());
            eprintln!("\nstopping the demo's processes…");
            procs.stop_all();
            if temporary {
                let _ = std::fs::remove_dir_all(&dir);
            }
            std::process::exit(130);
        });
    }
    let demo = Demo {
        dir: dir.clone(),
        exe: std::env::current_exe()?,
        procs: procs.clone(),
        step: std::cell::Cell::new(0),
        steps: 9,
    };
    let result = demo.go(args);
    procs.stop_all();
    match &result {
        Ok(()) if temporary => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(()) => eprintln!("The demo's files are in {}.", dir.display()),
        Err(_) => eprintln!("The demo's files and logs are in {} (kept to look at).", dir.display()),
    }
    result
}

impl Demo {
    fn go(&self, args: &DemoArgs) -> Result<()> {
        let started = Instant::now();
        self.make_pki()?;
        let net = self.start_server()?;
        self.start_edges(&net)?;
        let published = self.publish_samples(&net)?;
        let (hosts, dns) = self.start_agents(args, &net)?;
        self.converge(&net, &hosts, published)?;
        self.report(args, &net, &hosts, dns.as_ref(), started)?;
        if args.keep_running {
            let url = self.start_web(&net)?;
            println!("Web console (Demo Admin): {url}");
            println!("Running; Ctrl-C stops everything.");
            loop {
                std::thread::sleep(Duration::from_secs(1));
                self.procs.check()?;
            }
        }
        Ok(())
    }

    /// Starts `outpost console web` with the demo administrator's certificate; returns its
    /// address (with its secret), also written to `demo.json`.
    fn start_web(&self, net: &Network) -> Result<String> {
        let url_file = self.dir.join("web.url");
        let _ = std::fs::remove_file(&url_file);
        let (ca, cert, key, file) = (
            self.path("pki/ca.crt"),
            self.path("pki/Demo_Admin.crt"),
            self.path("pki/Demo_Admin.key"),
            url_file.to_string_lossy().into_owned(),
        );
        let args = [
            "console",
            "web",
            "--listen",
            "127.0.0.1:0",
            "--url-file",
            &file,
            "--server",
            &net.central,
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
        ];
        self.spawn("web", &args)?;
        let url = self.wait("the web console", || std::fs::read_to_string(&url_file).ok().filter(|u| !u.is_empty()))?;
        let path = self.dir.join("demo.json");
        let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        doc["web"] = serde_json::Value::String(url.clone());
        std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)?;
        Ok(url)
    }

    fn scrape_sum(&self, addr: &str, name: &str) -> f64 {
        use std::io::{Read as _, Write as _};
        let Ok(mut s) = std::net::TcpStream::connect(addr) else { return 0.0 };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Starts dnsmasq serving `_outpost._udp.lyon.demo.example` → the Lyon edge, when installed.
    fn dnsmasq(&self, lyon: &str) -> Result<Option<String>> {
        let Some(bin) = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"].into_iter().find(|p| Path::new(p).exists()) else {
            return Ok(None);
        };
        let ip = format!("{NET}.0.53");
        let port = free_udp(&ip)?;
        let (edge_ip, edge_port) = lyon.rsplit_once(':').context("edge address")?;
        let log = std::fs::File::create(self.dir.join("logs/dnsmasq.log"))?;
        let root = std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
        let mut c = Command::new(bin);
        if root {
            // It would switch to `nobody`, which cannot read its folder here.
            c.arg("--user=root");
        }
        let child = c
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--pid-file=",
                &format!("--listen-address={ip}"),
                &format!("--port={port}"),
                &format!("--host-record=edge-lyon.{DOMAIN},{edge_ip}"),
                &format!("--srv-host=_outpost._udp.lyon.{DOMAIN},edge-lyon.{DOMAIN},{edge_port},0,10"),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {bin}"))?;
        self.procs.add("dnsmasq", child);
        Ok(Some(format!("{ip}:{port}")))
    }
}
