//! The peers: an rsync daemon and nginx over HTTPS, each on its own loopback address with a
//! throw-away configuration in the work folder, run in the foreground as the current user;
//! and their clients (rsync, curl).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::procs::{self, Daemon};

/// The current user's numeric uid and gid (from `/proc/self/status`).
fn ids() -> (u32, u32) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let get = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (get("Uid:"), get("Gid:"))
}

/// An rsync daemon serving `root` as module `data`.
#[derive(Debug)]
pub struct Rsync {
    /// The daemon.
    pub daemon: Daemon,
    /// `rsync://ip:port/data/`.
    pub url: String,
}

impl Rsync {
    /// Starts `rsync --daemon --no-detach` on `ip`, configured in `dir`.
    pub fn start(dir: &Path, ip: &str, root: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = procs::tcp_port(ip)?;
        let (uid, gid) = ids();
        let conf = dir.join("rsyncd.conf");
        std::fs::write(
            &conf,
            format!(
                "use chroot = no\nuid = {uid}\ngid = {gid}\nlog file = {log}\npid file = {pid}\n\n[data]\n  path = {root}\n  read only = yes\n",
                log = dir.join("rsyncd.log").display(),
                pid = dir.join("rsyncd.pid").display(),
                root = root.display()
            ),
        )?;
        let mut cmd = Command::new("rsync");
        cmd.args(["--daemon", "--no-detach", "--address", ip, "--port", &port.to_string()])
            .arg(format!("--config={}", conf.display()));
        let mut daemon = Daemon::spawn("rsync daemon", &mut cmd, &dir.join("rsync-daemon.out"))?;
        procs::wait_for(Duration::from_secs(10), Duration::from_millis(10), "the rsync daemon", || {
            if daemon.check_alive().is_err() {
                return Some(());
            }
            std::net::TcpStream::connect((ip, port)).ok().map(|_| ())
        })?;
        daemon.check_alive()?;
        Ok(Self { daemon, url: format!("rsync://{ip}:{port}/data/") })
    }
}

/// What an rsync client run reported (`--stats`).
#[derive(Debug, Clone, Copy, Default)]
pub struct RsyncStats {
    /// Bytes the client sent (file lists, block checksums).
    pub sent: u64,
    /// Bytes the client received (file lists, literal data, matched-block tokens).
    pub received: u64,
    /// Data sent literally (not matched in the old file).
    pub literal: u64,
}

/// Runs `rsync -a --stats URL dest/` to completion.
pub fn rsync_client(url: &str, dest: &Path) -> Result<RsyncStats> {
    std::fs::create_dir_all(dest)?;
    let out = procs::run(Command::new("rsync").args(["-a", "--stats", url]).arg(format!("{}/", dest.display())))?;
    let number = |key: &str| -> Result<u64> {
        let line = out.lines().find_map(|l| l.strip_prefix(key)).with_context(|| format!("{key} in:\n{out}"))?;
        let digits: String = line.split_whitespace().next().unwrap_or("").replace([',', '.'], "");
        digits.parse().with_context(|| format!("{key} {line:?}"))
    };
    Ok(RsyncStats {
        sent: number("Total bytes sent:")?,
        received: number("Total bytes received:")?,
        literal: number("Literal data:")?,
    })
}

/// nginx serving `root` over HTTPS (TLS 1.3, self-signed certificate from openssl).
#[derive(Debug)]
pub struct Nginx {
    /// The master process (its workers are its children).
    pub daemon: Daemon,
    /// `https://ip:port/`.
    pub base: String,
    /// The certificate curl trusts.
    pub cert: PathBuf,
}

impl Nginx {
    /// Starts `nginx -p DIR -c nginx.conf -g 'daemon off;'` on `ip` with two workers.
    pub fn start(dir: &Path, ip: &str, root: &Path) -> Result<Self> {
        for sub in ["logs", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
        procs::run(
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
                .args(["-days", "2", "-subj", &format!("/CN={ip}"), "-addext", &format!("subjectAltName=IP:{ip}")])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert),
        )?;
        let port = procs::tcp_port(ip)?;
        let user = if ids().0 == 0 { "user root root;\n" } else { "" };
        let tmp = dir.join("tmp");
        let conf = format!(
            "{user}worker_processes 2;\npid {pid};\nerror_log {err} warn;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  keepalive_requests 100000;\n\
             \x20 client_body_temp_path {t}/body;\n  proxy_temp_path {t}/proxy;\n  fastcgi_temp_path {t}/fastcgi;\n\
             \x20 uwsgi_temp_path {t}/uwsgi;\n  scgi_temp_path {t}/scgi;\n  types {{ application/octet-stream bin; }}\n\
             \x20 server {{\n    listen {ip}:{port} ssl http2;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n\
             \x20   ssl_protocols TLSv1.3;\n    root {root};\n  }}\n}}\n",
            pid = dir.join("nginx.pid").display(),
            err = dir.join("logs/error.log").display(),
            t = tmp.display(),
            cert = cert.display(),
            key = key.display(),
            root = root.display(),
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let program = if Path::new("/usr/sbin/nginx").is_file() { "/usr/sbin/nginx" } else { "nginx" };
        let mut cmd = Command::new(program);
        cmd.arg("-p").arg(dir).arg("-c").arg(&conf_path).args(["-g", "daemon off;"]);
        let mut daemon = Daemon::spawn("nginx", &mut cmd, &dir.join("nginx.out"))?;
        let started = Instant::now();
        loop {
            daemon.check_alive()?;
            if std::net::TcpStream::connect((ip, port)).is_ok() && procs::children(daemon.pid()).len() >= 2 {
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!(
                    "nginx did not start: {}",
                    std::fs::read_to_string(dir.join("logs/error.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Self { daemon, base: format!("https://{ip}:{port}/"), cert })
    }

    /// The master and its workers.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = procs::children(self.daemon.pid());
        pids.push(self.daemon.pid());
        pids
    }
}

/// How curl fetches: one invocation, every URL, HTTP/1.1 over one reused TLS connection, one
/// file after the other (as WAPT's replication downloads); or `--parallel` over HTTP/2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CurlMode {
    /// `--http1.1`, sequential, one connection.
    Sequential,
    /// `--http2 --parallel --parallel-max 8`, multiplexed on one connection.
    Parallel,
}

impl CurlMode {
    /// As written in the report.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Sequential => "one curl, HTTP/1.1, files one after the other on one TLS connection",
            Self::Parallel => "one curl, HTTP/2, --parallel --parallel-max 8 on one TLS connection",
        }
    }
}

/// Fetches `names` from nginx into `dest` with one curl; returns the bytes downloaded.
pub fn curl(nginx: &Nginx, names: &[String], dest: &Path, mode: CurlMode) -> Result<u64> {
    std::fs::create_dir_all(dest)?;
    let mut cmd = Command::new("curl");
    cmd.args(["--silent", "--show-error", "--fail", "--cacert"]).arg(&nginx.cert);
    match mode {
        CurlMode::Sequential => cmd.arg("--http1.1"),
        CurlMode::Parallel => cmd.args(["--http2", "--parallel", "--parallel-max", "8"]),
    };
    cmd.arg("--output-dir").arg(dest).args(["--write-out", "%{size_download}\\n"]);
    for n in names {
        cmd.args(["-O", &format!("{}{n}", nginx.base)]);
    }
    let out = procs::run(&mut cmd)?;
    Ok(out.lines().filter_map(|l| l.trim().parse::<u64>().ok()).sum())
}
