//! The demo's steps, in order: PKI, server, edges, sample packages, agents, convergence, report.

use crate::cli::DemoArgs;
use crate::output::human_bytes;
use anyhow::Result;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use super::*;

impl Demo {
    /// A throw-away PKI: CA, enrollment CA, packager, administrator, the server and the edges.
    pub(super) fn make_pki(&self) -> Result<()> {
        self.say("making a throw-away PKI (CA, enrollment CA, packager, administrator, nodes)");
        self.run(&["pki", "init", "--dir", "pki", "--org", "Demo Org", "--no-password"])?;
        self.run(&["pki", "enroll-ca", "--dir", "pki", "--no-password"])?;
        let issue = |role: &str, name: &str, extra: &[&str]| {
            let mut args = vec!["pki", "issue", "--dir", "pki", "--role", role, "--name", name, "--no-password"];
            args.extend_from_slice(extra);
            self.run(&args).map(drop)
        };
        issue("signer", "Demo Packager", &[])?;
        issue("admin", "Demo Admin", &["--rights", "view,act,modify"])?;
        // A view-only certificate, as for a wall screen.
        issue("admin", "Demo Viewer", &["--rights", "view"])?;
        issue("server", "server.demo.example", &["--san", &format!("{NET}.0.1")])?;
        for s in &SITES {
            // The name is in the certificate too: Lyon's agents reach their edge by it (DNS SRV).
            issue("edge", &format!("edge-{}.demo.example", s.name), &["--san", &format!("{NET}.{}.1", s.net)])?;
        }
        Ok(())
    }

    /// Starts `outpost server` (central and the main repository); chooses every address.
    pub(super) fn start_server(&self) -> Result<Network> {
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
    pub(super) fn start_edges(&self, net: &Network) -> Result<()> {
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
    pub(super) fn publish_samples(&self, net: &Network) -> Result<usize> {
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
    pub(super) fn start_agents(&self, args: &DemoArgs, net: &Network) -> Result<(Vec<DemoHost>, Option<String>)> {
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
    pub(super) fn converge(&self, net: &Network, hosts: &[DemoHost], published: usize) -> Result<()> {
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
    pub(super) fn report(
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
}
