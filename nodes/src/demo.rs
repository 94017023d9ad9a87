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
use std::fmt::Write as _;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::cli::DemoArgs;
use crate::output::human_bytes;

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
            println!("Running; Ctrl-C stops everything.");
            loop {
                std::thread::sleep(Duration::from_secs(1));
                self.procs.check()?;
            }
        }
        Ok(())
    }

    /// A throw-away PKI: CA, enrollment CA, packager, administrator, the server and the edges.
    fn make_pki(&self) -> Result<()> {
        self.say("making a throw-away PKI (CA, enrollment CA, packager, administrator, nodes)");
        self.run(&["pki", "init", "--dir", "pki", "--org", "Demo Org", "--no-password"])?;
        self.run(&["pki", "enroll-ca", "--dir", "pki", "--no-password"])?;
        self.run(&["pki", "issue", "--dir", "pki", "--role", "signer", "--name", "Demo Packager", "--no-password"])?;
        self.run(&[
            "pki",
            "issue",
            "--dir",
            "pki",
            "--role",
            "admin",
            "--name",
            "Demo Admin",
            "--rights",
            "view,act,modify",
            "--no-password",
        ])?;
        self.run(&[
            "pki",
            "issue",
            "--dir",
            "pki",
            "--role",
            "server",
            "--name",
            "server.demo.example",
            "--san",
            &format!("{NET}.0.1"),
            "--no-password",
        ])?;
        for s in &SITES {
            // The name is in the certificate too: Lyon's agents reach their edge by it (DNS SRV).
            let ip = format!("{NET}.{}.1", s.net);
            let name = format!("edge-{}.demo.example", s.name);
            self.run(&[
                "pki",
                "issue",
                "--dir",
                "pki",
                "--role",
                "edge",
                "--name",
                &name,
                "--san",
                &ip,
                "--no-password",
            ])?;
        }
        Ok(())
    }

    /// Starts `outpost server` (central and the main repository); chooses every address.
    fn start_server(&self) -> Result<Network> {
        let server_ip = format!("{NET}.0.1");
        self.say("starting outpost server (central and the main repository)");
        let repo = format!("{server_ip}:{}", free_udp(&server_ip)?);
        let central = format!("{server_ip}:{}", free_udp(&server_ip)?);
        let server_metrics = format!("{server_ip}:{}", free_tcp(&server_ip)?);
        let (ca, scert, skey) = (
            self.path("pki/ca.crt"),
            self.path("pki/server.demo.example.crt"),
            self.path("pki/server.demo.example.key"),
        );
        let (ecert, ekey, data) = (self.path("pki/enroll-ca.crt"), self.path("pki/enroll-ca.key"), self.path("server"));
        let mut edges: BTreeMap<&str, (String, String)> = BTreeMap::new();
        for s in &SITES {
            let ip = format!("{NET}.{}.1", s.net);
            edges.insert(s.name, (format!("{ip}:{}", free_udp(&ip)?), format!("{ip}:{}", free_tcp(&ip)?)));
        }
        let mut server_args = vec![
            "server",
            "--listen",
            &repo,
            "--central-listen",
            &central,
            "--metrics",
            &server_metrics,
            "--data",
            &data,
            "--ca",
            &ca,
            "--cert",
            &scert,
            "--key",
            &skey,
            "--name",
            "main",
            "--enroll-cert",
            &ecert,
            "--enroll-key",
            &ekey,
        ];
        for (addr, _) in edges.values() {
            server_args.extend_from_slice(&["--watch", addr]);
        }
        self.spawn("server", &server_args)?;
        self.wait("the server", || std::net::TcpStream::connect(&server_metrics).ok())?;
        Ok(Network { repo, central, server_metrics, edges })
    }

    /// Starts the site edges (annex chained under paris).
    fn start_edges(&self, net: &Network) -> Result<()> {
        let (repo, edges, ca) = (&net.repo, &net.edges, self.path("pki/ca.crt"));
        self.say("starting the site edges: paris, annex (chained under paris), lyon");
        for s in &SITES {
            let (addr, metrics) = edges[s.name].clone();
            let upstream = s.upstream.map_or_else(|| repo.clone(), |u| edges[u].0.clone());
            let name = format!("edge-{}.demo.example", s.name);
            let (cert, key, data) = (
                self.path(&format!("pki/{name}.crt")),
                self.path(&format!("pki/{name}.key")),
                self.path(&format!("edges/{}", s.name)),
            );
            self.spawn(
                &format!("edge-{}", s.name),
                &[
                    "repo",
                    "edge",
                    "--listen",
                    &addr,
                    "--upstream",
                    &upstream,
                    "--metrics",
                    &metrics,
                    "--data",
                    &data,
                    "--ca",
                    &ca,
                    "--cert",
                    &cert,
                    "--key",
                    &key,
                    "--name",
                    s.name,
                    "--poll",
                    "5s",
                ],
            )?;
            self.wait(&format!("edge {}", s.name), || std::net::TcpStream::connect(&metrics).ok())?;
        }
        Ok(())
    }

    /// Builds and publishes the sample packages; returns how many.
    fn publish_samples(&self, net: &Network) -> Result<usize> {
        let repo = &net.repo;
        self.say("building and publishing sample packages");
        let out = |name: &str, version: &str, extra: &str, files: Vec<(&str, Vec<u8>)>| {
            self.package(name, version, extra, &files)
        };
        let pkgs = vec![
            out(
                "demo-lib",
                "1.0-1",
                "description: A shared library\n",
                vec![("setup.sh", hook(false)), ("lib.txt", b"demo lib\n".to_vec())],
            )?,
            out(
                "demo-app",
                "2.1-1",
                "description: The application every desktop gets (needs demo-lib)\ndepends: demo-lib\n",
                vec![("setup.sh", hook(false)), ("app.bin", outpost_protocol::chunking::noise(3_000_000, 1))],
            )?,
            out(
                "demo-paris-fonts",
                "1.0-1",
                "description: Fonts for the Paris offices (through their unit package)\n",
                vec![("setup.sh", hook(false))],
            )?,
            out(
                "demo-flaky",
                "1.0-1",
                "description: Fails on purpose; 1.0-2 fixes it\n",
                vec![("setup.sh", hook(true))],
            )?,
            out("OU=Paris,DC=demo,DC=example", "1", "section: unit\ndepends: demo-paris-fonts\n", vec![])?,
            out("demo-desktops", "1", "section: profile\ndepends: demo-app,demo-flaky\n", vec![])?,
        ];
        for p in &pkgs {
            self.publish(p, repo)?;
        }
        Ok(pkgs.len())
    }

    /// Enrolls and starts the agents; returns them and the DNS server Lyon's agents ask, if any.
    fn start_agents(&self, args: &DemoArgs, net: &Network) -> Result<(Vec<DemoHost>, Option<String>)> {
        let (repo, central, edges, ca) = (&net.repo, &net.central, &net.edges, self.path("pki/ca.crt"));
        let dns = self.dnsmasq(&edges["lyon"].0)?;
        let agents_per_site = args.agents.div_ceil(SITES.len()).max(1);
        self.say(&format!(
            "enrolling and starting {} agents (Lyon's find their edge {})",
            agents_per_site * SITES.len(),
            if dns.is_some() {
                "through DNS SRV records served by dnsmasq"
            } else {
                "by a rule: dnsmasq is not installed"
            }
        ));
        let token: Value =
            serde_json::from_str(&self.console(central, &["token", "create", "--uses", "1000", "--json"])?)?;
        let token = token["token"].as_str().unwrap_or_default().to_string();
        let mut hosts: Vec<(String, &'static str, PathBuf)> = Vec::new();
        for s in &SITES {
            for k in 0..agents_per_site {
                let ip = format!("{NET}.{}.{}", s.net, 10 + k);
                let fqdn = format!("pc-{}-{:02}.{DOMAIN}", s.name, k + 1);
                let home = self.dir.join("agents").join(&fqdn);
                std::fs::create_dir_all(&home)?;
                let mut cfg = format!(
                    "state = {state:?}\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\nfqdn = {fqdn:?}\nuuid = \"demo-{fqdn}\"\nbind = {ip:?}\n\
                     server = {central:?}\nmain = {repo:?}\nou = \"CN=pc,{ou}\"\nsite = {site:?}\nprofiles = [\"demo-desktops\"]\n\
                     update_every = \"1h\"\nhook_timeout = \"1m\"\nmetrics = \"\"\n",
                    state = home.join("state"),
                    cert = home.join("host.crt"),
                    key = home.join("host.key"),
                    ou = s.ou,
                    site = s.name,
                );
                match (s.name, &dns) {
                    ("lyon", Some(dns)) => {
                        let _ = writeln!(
                            cfg,
                            "srv_discovery = true\ndns_domain = \"lyon.{DOMAIN}\"\ndns_servers = [{dns:?}]"
                        );
                    }
                    (site, _) => {
                        let edge = &edges[site].0;
                        let _ = writeln!(
                            cfg,
                            "srv_discovery = false\n[[rules]]\nsequence = 10\nname = \"{site} office\"\ncondition = \"agent_ip\"\nvalue = \"{NET}.{}.0/24\"\nrepos = [{edge:?}]",
                            s.net
                        );
                    }
                }
                let config = home.join("agent.toml");
                std::fs::write(&config, cfg)?;
                let c = config.to_string_lossy().into_owned();
                self.run(&["agent", "enroll", "--config", &c, "--token", &token])?;
                self.spawn(&format!("agent-{fqdn}"), &["agent", "run", "--config", &c])?;
                hosts.push((fqdn, s.name, config));
            }
        }
        Ok((hosts, dns))
    }

    /// Waits for every host to report demo-flaky's failure, then publishes the fix and upgrades
    /// every host with an action, until all are OK.
    fn converge(&self, net: &Network, hosts: &[DemoHost], published: usize) -> Result<()> {
        let (repo, central, edges) = (&net.repo, &net.central, &net.edges);
        self.say("waiting for every host to install and report (demo-flaky 1.0-1 fails on purpose)");
        let hosts_json = || -> Option<Vec<Value>> {
            let out = self.console(central, &["hosts", "--json"]).ok()?;
            serde_json::from_str::<Value>(&out).ok()?["hosts"].as_array().cloned()
        };
        self.wait("every host to report an ERROR for demo-flaky", || {
            let h = hosts_json()?;
            (h.len() == hosts.len() && h.iter().all(|h| h["status"] == "ERROR")).then_some(())
        })?;

        self.say("publishing demo-flaky 1.0-2 (fixed) and sending an upgrade action to every host");
        let fixed = self.package("demo-flaky", "1.0-2", "description: Fixed\n", &[("setup.sh", hook(false))])?;
        self.publish(&fixed, repo)?;
        self.wait("the edges to serve the fix", || {
            SITES
                .iter()
                .all(|s| self.scrape_sum(&edges[s.name].1, "outpost_repo_snapshot_sequence") >= (published + 2) as f64)
                .then_some(())
        })?;
        self.console(central, &["action", "upgrade", "--all", "--expires", "10m"])?;
        self.wait("every host to be OK", || {
            let h = hosts_json()?;
            (h.len() == hosts.len() && h.iter().all(|h| h["status"] == "OK")).then_some(())
        })?;
        Ok(())
    }

    /// Prints what each host got and from where, the metrics addresses and console commands,
    /// and writes `demo.json`.
    fn report(
        &self,
        args: &DemoArgs,
        net: &Network,
        hosts: &[DemoHost],
        dns: Option<&String>,
        started: Instant,
    ) -> Result<()> {
        let (repo, central, server_metrics, edges) = (&net.repo, &net.central, &net.server_metrics, &net.edges);
        self.say("collecting what each host got, and from where");
        // Addresses and the DNS names Lyon's agents found by SRV, by repository.
        let names: BTreeMap<String, String> = edges
            .iter()
            .flat_map(|(n, (a, _))| {
                let port = a.rsplit_once(':').map(|(_, p)| p.to_string()).unwrap_or_default();
                [(a.clone(), format!("edge {n}")), (format!("edge-{n}.{DOMAIN}:{port}"), format!("edge {n}"))]
            })
            .chain([(repo.clone(), "main".to_string())])
            .collect();
        println!();
        println!(
            "{:<26} {:<6} {:<8} {:<12} {:>11} {:>11} HOOK FILES",
            "HOST", "SITE", "STATUS", "SERVED BY", "FROM EDGE", "FROM MAIN"
        );
        for (fqdn, site, config) in hosts {
            let c = config.to_string_lossy();
            let st: Value = serde_json::from_str(&self.run(&["agent", "status", "--json", "--config", &c])?)?;
            let served = st["last_update"]["repo"]
                .as_str()
                .map(|r| names.get(r).cloned().unwrap_or_else(|| r.to_string()))
                .unwrap_or_default();
            let (mut edge, mut main) = (0u64, 0u64);
            for (addr, n) in st["bytes_by_repo"].as_object().into_iter().flatten() {
                if addr == repo { main += n.as_u64().unwrap_or(0) } else { edge += n.as_u64().unwrap_or(0) }
            }
            let files = std::fs::read_dir(config.with_file_name("installed")).map(|d| d.count()).unwrap_or(0);
            println!(
                "{:<26} {:<6} {:<8} {:<12} {:>11} {:>11} {}",
                fqdn,
                site,
                st["host_status"].as_str().unwrap_or(""),
                served,
                human_bytes(edge),
                human_bytes(main),
                files
            );
        }
        println!();
        println!("Done in {:.0} s. Metrics (Prometheus text):", started.elapsed().as_secs_f64());
        println!("  server (central + main)  http://{server_metrics}/metrics");
        for s in &SITES {
            println!("  edge {:<20} http://{}/metrics", s.name, edges[s.name].1);
        }
        let flags = format!(
            "--server {central} --ca {} --cert {} --key {}",
            self.path("pki/ca.crt"),
            self.path("pki/Demo_Admin.crt"),
            self.path("pki/Demo_Admin.key")
        );
        println!("Console commands to try{}:", if args.keep_running { "" } else { " (with --keep-running)" });
        for c in ["hosts", "hosts --software demo-app", "host pc-paris-01.demo.example", "packages", "repos", "actions"]
        {
            println!("  outpost console {c} {flags}");
        }
        println!("Files the hooks wrote: {}/agents/*/installed/", self.dir.display());
        std::fs::write(
            self.dir.join("demo.json"),
            serde_json::to_vec_pretty(&serde_json::json!({
                "central": central,
                "repo": repo,
                "metrics": std::iter::once(server_metrics.clone()).chain(SITES.iter().map(|s| edges[s.name].1.clone())).collect::<Vec<_>>(),
                "edges": edges.iter().map(|(n, (a, m))| (n.to_string(), serde_json::json!({"addr": a, "metrics": m}))).collect::<BTreeMap<_, _>>(),
                "hosts": hosts.iter().map(|(f, s, c)| serde_json::json!({"fqdn": f, "site": s, "config": c})).collect::<Vec<_>>(),
                "admin": {"cert": self.path("pki/Demo_Admin.crt"), "key": self.path("pki/Demo_Admin.key"), "ca": self.path("pki/ca.crt")},
                "dnsmasq": dns,
            }))?,
        )?;
        Ok(())
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
