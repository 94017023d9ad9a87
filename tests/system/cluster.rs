//! Running real `outpost` daemons on 127.0.0.x for the system tests: addresses, processes that
//! stop when dropped, waiting on conditions with a deadline, reading `/metrics`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use outpost_actors::store::Store;
use outpost_protocol::package::{Manifest, PackageRecord};
use outpost_protocol::pki;
use outpost_protocol::snapshot::{Snapshot, SnapshotEntry};

use crate::common::{Pki, Run, outpost, run_in};

/// A loopback address of its own for each node (127.0.0.2 … 127.0.0.250), so that tests that
/// run at the same time do not collide and peers are told apart by address.
pub fn next_ip() -> String {
    static NEXT: AtomicU8 = AtomicU8::new(2);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    assert!(n < 250, "out of loopback addresses");
    format!("127.0.{}.{}", std::process::id() % 200 + 1, n)
}

/// A free UDP port on `ip`.
pub fn udp_port(ip: &str) -> u16 {
    UdpSocket::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// A free TCP port on `ip`.
pub fn tcp_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// Waits until `check` returns `Some`, or panics after `limit` with `what`.
#[track_caller]
pub fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// The `/metrics` text served at `addr`, or `None` when nothing answers.
pub fn scrape(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

/// The environment variable that runs the suite's centrals on PostgreSQL (`postgres`) instead
/// of redb: `scripts/test` runs the central tests both ways.
pub const CENTRAL_BACKEND_ENV: &str = "OUTPOST_TEST_CENTRAL";

/// A new database for a central started by [`Cluster::server`] when the suite runs on
/// PostgreSQL (and the test did not choose its own, nor turn central off).
fn central_database(extra: &[&str]) -> Option<String> {
    if std::env::var(CENTRAL_BACKEND_ENV).as_deref() != Ok("postgres")
        || extra.iter().any(|a| *a == "--database" || *a == "--no-central")
    {
        return None;
    }
    let pg = crate::pg::server().unwrap_or_else(|why| panic!("{CENTRAL_BACKEND_ENV}=postgres, but {why}"));
    Some(pg.url(&pg.create_db()))
}

/// A daemon that is stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Daemon {
    pub child: Option<Child>,
    pub addr: String,
    pub metrics: String,
    pub log: PathBuf,
    pub data: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    args: Vec<String>,
    dir: PathBuf,
}

impl Daemon {
    pub fn spawn(dir: &Path, args: Vec<String>, addr: String, metrics: String, data: PathBuf, log: PathBuf) -> Self {
        let flag =
            |name: &str| PathBuf::from(args.iter().skip_while(|a| *a != name).nth(1).cloned().unwrap_or_default());
        let (cert, key) = (flag("--cert"), flag("--key"));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = outpost()
            .current_dir(dir)
            .args(&args)
            .env("OUTPOST_LOG", "info,outpost_actors=debug")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut d = Self { child: Some(child), addr, metrics, log, data, cert, key, args, dir: dir.to_path_buf() };
        wait_for(Duration::from_secs(20), &format!("{} to serve /metrics", d.addr), || {
            if let Some(Ok(Some(status))) = d.child.as_mut().map(Child::try_wait) {
                panic!("{} exited with {status}\n{}", d.addr, d.log_text());
            }
            d.scrape_opt().map(|_| ())
        });
        d
    }

    /// The arguments it was started with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its metrics, or `None` when it does not answer.
    pub fn scrape_opt(&self) -> Option<String> {
        scrape(&self.metrics)
    }

    /// The value of metric `name` with label set `labels` (e.g. `{reason="forged"}`), 0 if absent.
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        let text = self.scrape_opt().unwrap_or_default();
        let key = format!("{name}{labels} ");
        text.lines().find_map(|l| l.strip_prefix(&key)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
    }

    /// Stops it with SIGTERM and waits (at most 20 s); returns its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs the same command in the foreground, to its end (for one that must refuse to start).
    pub fn run_foreground(&self) -> Run {
        run_in(&self.dir, &self.args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Central loses all its data: its folder, or its PostgreSQL database (dropped and made
    /// again, empty). The daemon must be stopped.
    pub fn wipe_central(&self) {
        match self.args.iter().position(|a| a == "--database").and_then(|i| self.args.get(i + 1)) {
            Some(url) => {
                let db = url.rsplit("dbname=").next().expect("a dbname").to_string();
                crate::pg::server().expect("PostgreSQL").recreate_db(&db);
            }
            None => std::fs::remove_dir_all(self.data.join("central")).unwrap(),
        }
    }

    /// Starts it again with the same arguments, plus `extra` replacing flags of the same names.
    pub fn restart(&mut self, replace: &[(&str, &[&str])]) {
        self.stop();
        let mut args = Vec::new();
        let mut skip = false;
        for a in &self.args {
            if skip {
                skip = false;
                continue;
            }
            if replace.iter().any(|(flag, _)| a == flag) {
                skip = true;
                continue;
            }
            args.push(a.clone());
        }
        for (flag, values) in replace {
            for v in *values {
                args.push(flag.to_string());
                args.push(v.to_string());
            }
        }
        let fresh =
            Self::spawn(&self.dir, args, self.addr.clone(), self.metrics.clone(), self.data.clone(), self.log.clone());
        *self = fresh;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A test organisation with node certificates and daemons.
pub struct Cluster {
    pub pki: Pki,
    pub admin: (PathBuf, PathBuf),
}

impl Cluster {
    pub fn new() -> Self {
        let pki = Pki::new();
        let admin = pki.issue("signer", "packager", &[]);
        Self { pki, admin }
    }

    pub fn dir(&self) -> &Path {
        self.pki.path()
    }

    fn node_cert(&self, role: &str, ip: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let mut args = vec!["--san", ip];
        for n in names {
            args.extend_from_slice(&["--san", n]);
        }
        self.pki.issue(role, &format!("{role}-{ip}"), &args)
    }

    /// Starts a main repository; `extra` are more flags (e.g. `--config`).
    pub fn main(&self, extra: &[&str]) -> Daemon {
        self.main_named(extra, &[])
    }

    /// Starts a main repository whose certificate also carries these names (e.g. the address
    /// of a relay in front of it).
    pub fn main_named(&self, extra: &[&str], names: &[&str]) -> Daemon {
        let ip = next_ip();
        let (cert, key) = self.node_cert("server", &ip, names);
        self.daemon("main", &ip, &cert, &key, extra)
    }

    /// Starts an edge with these upstreams.
    pub fn edge(&self, upstreams: &[&str], extra: &[&str]) -> Daemon {
        self.edge_named(upstreams, extra, &[])
    }

    /// Starts an edge whose certificate also carries these DNS names.
    pub fn edge_named(&self, upstreams: &[&str], extra: &[&str], names: &[&str]) -> Daemon {
        let ip = next_ip();
        let (cert, key) = self.node_cert("edge", &ip, names);
        let mut args: Vec<&str> = Vec::new();
        for u in upstreams {
            args.push("--upstream");
            args.push(u);
        }
        args.extend_from_slice(extra);
        self.daemon("edge", &ip, &cert, &key, &args)
    }

    fn daemon(&self, role: &str, ip: &str, cert: &Path, key: &Path, extra: &[&str]) -> Daemon {
        let addr = format!("{ip}:{}", udp_port(ip));
        let metrics = format!("{ip}:{}", tcp_port(ip));
        let data = match extra.iter().position(|a| *a == "--data") {
            Some(i) => PathBuf::from(extra[i + 1]),
            None => self.dir().join(format!("data-{role}-{ip}")),
        };
        let log = self.dir().join(format!("{role}-{ip}.log"));
        let mut args: Vec<String> = [
            "repo",
            role,
            "--listen",
            &addr,
            "--ca",
            self.pki.ca().to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--metrics",
            &metrics,
            "--name",
            &format!("{role}-{ip}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !extra.contains(&"--data") {
            args.extend(["--data".to_string(), data.to_str().unwrap().to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Daemon::spawn(self.dir(), args, addr, metrics, data, log)
    }

    /// Starts `outpost server` (main repository and central, with enrollment); returns it and
    /// central's address.
    pub fn server(&self, extra: &[&str]) -> (Daemon, String) {
        let ip = next_ip();
        let (cert, key) = self.node_cert("server", &ip, &[]);
        if !self.dir().join("pki/enroll-ca.crt").exists() {
            run_in(self.dir(), &["pki", "enroll-ca", "--dir", "pki", "--no-password"]).ok();
        }
        let addr = format!("{ip}:{}", udp_port(&ip));
        let central = format!("{ip}:{}", udp_port(&ip));
        let metrics = format!("{ip}:{}", tcp_port(&ip));
        let data = self.dir().join(format!("data-server-{ip}"));
        let log = self.dir().join(format!("server-{ip}.log"));
        let pki = self.dir().join("pki");
        let mut args: Vec<String> = vec![
            "server".into(),
            "--listen".into(),
            addr.clone(),
            "--central-listen".into(),
            central.clone(),
            "--ca".into(),
            self.pki.ca().to_string_lossy().into_owned(),
            "--cert".into(),
            cert.to_string_lossy().into_owned(),
            "--key".into(),
            key.to_string_lossy().into_owned(),
            "--metrics".into(),
            metrics.clone(),
            "--name".into(),
            format!("server-{ip}"),
            "--data".into(),
            data.to_string_lossy().into_owned(),
            "--enroll-cert".into(),
            pki.join("enroll-ca.crt").to_string_lossy().into_owned(),
            "--enroll-key".into(),
            pki.join("enroll-ca.key").to_string_lossy().into_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        if let Some(url) = central_database(extra) {
            args.extend(["--database".to_string(), url]);
        }
        (Daemon::spawn(self.dir(), args, addr, metrics, data, log), central)
    }

    /// Runs a client command against `repo` with the packager's certificate.
    pub fn client(&self, args: &[&str], repo: &str) -> Run {
        self.client_as(args, repo, &self.admin)
    }

    /// Runs a client command against `repo` with another certificate.
    pub fn client_as(&self, args: &[&str], repo: &str, who: &(PathBuf, PathBuf)) -> Run {
        let ca = self.pki.ca();
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&[
            "--repo",
            repo,
            "--ca",
            ca.to_str().unwrap(),
            "--cert",
            who.0.to_str().unwrap(),
            "--key",
            who.1.to_str().unwrap(),
        ]);
        run_in(self.dir(), &all)
    }

    /// `repo status --json` of `repo`, or `None` when it does not answer.
    pub fn status(&self, repo: &str) -> Option<serde_json::Value> {
        let r = self.client(&["repo", "status", "--json"], repo);
        (r.code == Some(0)).then(|| serde_json::from_str(&r.stdout).unwrap())
    }

    /// The snapshot sequence `repo` serves (0 when none or unreachable).
    pub fn sequence(&self, repo: &str) -> u64 {
        self.status(repo).and_then(|s| s["head"]["sequence"].as_u64()).unwrap_or(0)
    }

    /// Waits until `repo` serves snapshot `sequence` or later.
    #[track_caller]
    pub fn wait_sequence(&self, repo: &str, sequence: u64, limit: Duration) {
        wait_for(limit, &format!("{repo} to serve snapshot {sequence}"), || {
            (self.sequence(repo) >= sequence).then_some(())
        });
    }

    /// Builds a package `name` `version` from `files` and returns its path.
    pub fn package(&self, name: &str, version: &str, files: &[(&str, &[u8])]) -> PathBuf {
        self.package_with(name, version, "", files)
    }

    /// Builds a package with more control lines (`extra`, e.g. `depends: a,b\n`).
    pub fn package_with(&self, name: &str, version: &str, extra: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let src = self.dir().join(format!("src-{}-{version}", name.replace(['=', ','], "_")));
        let _ = std::fs::remove_dir_all(&src);
        crate::common::source(&src, &crate::common::control(name, version, extra), files);
        let out = run_in(
            self.dir(),
            &[
                "pkg",
                "build",
                src.to_str().unwrap(),
                "--cert",
                self.admin.0.to_str().unwrap(),
                "--key",
                self.admin.1.to_str().unwrap(),
                "--out",
                "dist",
            ],
        )
        .ok();
        self.dir().join(out.stdout.trim())
    }

    /// Publishes a package file to `repo`; returns the new sequence.
    pub fn publish(&self, file: &Path, repo: &str) -> u64 {
        let r = self.client(&["pkg", "publish", file.to_str().unwrap()], repo).ok();
        r.stdout
            .rsplit("snapshot ")
            .next()
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap()
    }
}

/// An edge seeded with `snapshot` signed by `signer` and these package records; it serves them
/// to whoever asks (its own upstream does not answer).
pub fn rogue(
    c: &Cluster,
    snapshot: &Snapshot,
    records: &[([u8; 32], Vec<u8>)],
    signer: (&Path, &Path),
    tag: &str,
) -> Daemon {
    let chain = pki::parse_pem_certificates(&std::fs::read_to_string(signer.0).unwrap()).unwrap();
    let key = pki::decode_private_key(&std::fs::read_to_string(signer.1).unwrap(), None).unwrap();
    let signed = snapshot.sign(&key, &chain);
    let data = c.dir().join(format!("rogue-{tag}"));
    Store::open(&data).unwrap().commit(records, &[], &[], Some((snapshot.sequence, &signed))).unwrap();
    c.edge(&["127.0.0.1:9"], &["--data", data.to_str().unwrap()])
}

/// A snapshot entry for `record`.
pub fn entry(record: &PackageRecord) -> SnapshotEntry {
    let m = Manifest::decode(&record.manifest).unwrap();
    SnapshotEntry {
        control: m.control.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        manifest: record.hash(),
        size: m.total_size(),
    }
}

/// `record` with its manifest changed after signing: its signature no longer matches.
pub fn tampered(mut record: PackageRecord) -> PackageRecord {
    let mut m = Manifest::decode(&record.manifest).unwrap();
    m.control.set("description", "changed after signing");
    record.manifest = m.encode();
    record
}

/// `record` signed again by the certificate and key at `signer`, its manifest naming them.
pub fn signed_by(mut record: PackageRecord, signer: (&Path, &Path)) -> PackageRecord {
    let chain = pki::parse_pem_certificates(&std::fs::read_to_string(signer.0).unwrap()).unwrap();
    let key = pki::decode_private_key(&std::fs::read_to_string(signer.1).unwrap(), None).unwrap();
    let info = pki::cert_info(&chain[0]).unwrap();
    let mut m = Manifest::decode(&record.manifest).unwrap();
    m.control.set("signer", &info.subject);
    m.control.set("signer_fingerprint", &info.fingerprint);
    record.manifest = m.encode();
    record.signature =
        outpost_protocol::signing::sign(&key, outpost_protocol::signing::Domain::PackageManifest, &record.manifest)
            .to_vec();
    record.chain = chain.iter().map(|c| c.to_vec()).collect();
    record
}

/// Pseudo-random bytes (incompressible, reproducible).
pub use outpost_protocol::chunking::noise;

/// Number of blob files in a data folder.
pub fn blob_files(data: &Path) -> usize {
    std::fs::read_dir(data.join("blobs"))
        .map(|dirs| {
            dirs.filter_map(Result::ok).map(|d| std::fs::read_dir(d.path()).map(|f| f.count()).unwrap_or(0)).sum()
        })
        .unwrap_or(0)
}

/// True when the tests run as root.
pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// A tmpfs of `size` (`4m`) mounted on `dir` (made if missing), unmounted when dropped. Root
/// only.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    #[track_caller]
    pub fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let status =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).status();
        assert!(status.unwrap().success(), "mounting a tmpfs on {}", dir.display());
        Self(dir.to_path_buf())
    }

    /// Gives it `size` instead.
    #[track_caller]
    pub fn resize(&self, size: &str) {
        let status = Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.0).status();
        assert!(status.unwrap().success(), "resizing the tmpfs on {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
