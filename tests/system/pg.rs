//! A real PostgreSQL server for the tests: made with `initdb` in a folder of its own, listening
//! only on a private socket directory, started once per test process and stopped when the
//! process ends (a watchdog shell holds the server and ends it when the test process's end
//! closes its input). As root, the server runs as the `postgres` user (PostgreSQL refuses root).
//! Each test takes databases of its own.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::cluster::wait_for;

/// The running server.
pub struct PgServer {
    /// Its folder (data and socket).
    pub dir: PathBuf,
    /// The folder of its binaries.
    pub bin: PathBuf,
    /// Its data folder.
    pub data: PathBuf,
    /// The socket's port number.
    pub port: u16,
    /// Whether it runs as the `postgres` user (the tests run as root).
    root: bool,
    /// The superuser.
    pub user: String,
    /// The other end of the watchdog's input: the server stops when it closes.
    _watchdog: Mutex<ChildStdin>,
}

/// The binaries of the newest PostgreSQL installed, if any.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

/// `program args…`, as the `postgres` user when root.
fn as_owner(root: bool, program: &Path) -> Command {
    if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A folder the server's user owns (outside the test's own temporary folder: as root, the
/// server's user must reach it).
fn owned_dir(root: bool, name: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("outpost-pg-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if root {
        let st = Command::new("chown").args(["postgres:postgres"]).arg(&dir).status();
        if !st.is_ok_and(|s| s.success()) {
            return Err("as root, the server runs as the postgres user, and there is none".into());
        }
    }
    Ok(dir)
}

fn run_ok(mut c: Command, what: &str) -> Result<(), String> {
    let out = c.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

/// Starts the server of `data` (made already) with its socket in `dir`, under a watchdog that
/// stops it and removes `dir` when the test process ends.
fn launch(bin: PathBuf, root: bool, dir: PathBuf, data: &Path, user: String) -> Result<PgServer, String> {
    let port = 5432u16;
    let options = format!(
        "-k {} -p {port} -c listen_addresses= -c fsync=off -c wal_level=replica -c max_connections=400 \
         -c max_wal_senders=4 -c hot_standby=on",
        dir.display()
    );
    let mut start = as_owner(root, &bin.join("pg_ctl"));
    start.arg("-D").arg(data).arg("-l").arg(dir.join("server.log")).args(["-w", "-t", "60", "-o", &options, "start"]);
    run_ok(start, "pg_ctl start")?;
    let mut stop = as_owner(root, &bin.join("pg_ctl"));
    stop.arg("-D").arg(data).args(["-m", "immediate", "stop"]);
    // Signals to the whole group (Ctrl-C) leave the watchdog standing until the test process is
    // gone, so that the server is always stopped.
    let command =
        format!("trap '' INT TERM HUP; read _; {} >/dev/null 2>&1; rm -rf '{}'", shell_words(&stop), dir.display());
    let mut watchdog = Command::new("sh")
        .args(["-c", &command])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the watchdog: {e}"))?;
    let stdin = watchdog.stdin.take().expect("piped");
    let pg = PgServer { dir, data: data.to_path_buf(), bin, port, user, root, _watchdog: Mutex::new(stdin) };
    wait_for(Duration::from_secs(60), "PostgreSQL to accept connections", || {
        pg.psql("postgres", "SELECT 1").status.success().then_some(())
    });
    Ok(pg)
}

/// A new server of its own (`name` tells its folder apart).
pub fn start_named(name: &str) -> Result<PgServer, String> {
    let bin = bin_dir().ok_or("PostgreSQL is not installed (scripts/setup installs Debian's postgresql)")?;
    let root = crate::cluster::is_root();
    let dir = owned_dir(root, name)?;
    let data = dir.join("data");
    let user = "outpost_test".to_string();
    let mut init = as_owner(root, &bin.join("initdb"));
    init.args(["--auth=trust", "--no-sync", "--encoding=UTF8", "--locale=C", "-U", &user, "-D"]).arg(&data);
    run_ok(init, "initdb")?;
    // Replication from the socket, for the replica tests.
    std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("pg_hba.conf"))
        .and_then(|mut f| f.write_all(b"local replication all trust\n"))
        .map_err(|e| format!("pg_hba.conf: {e}"))?;
    launch(bin, root, dir, &data, user)
}

fn start() -> Result<PgServer, String> {
    start_named("shared")
}

/// A command line for `sh`, each word quoted.
fn shell_words(c: &Command) -> String {
    std::iter::once(c.get_program())
        .chain(c.get_args())
        .map(|w| format!("'{}'", w.to_string_lossy().replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The server, started on first use; `Err` says why there is none (the test then skips).
pub fn server() -> Result<&'static PgServer, String> {
    static SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();
    SERVER.get_or_init(start).as_ref().map_err(Clone::clone)
}

/// The server, or `None` after saying why the test skips.
pub fn server_or_skip(test: &str) -> Option<&'static PgServer> {
    match server() {
        Ok(s) => Some(s),
        Err(why) => {
            eprintln!("skipped {test}: {why}");
            None
        }
    }
}

impl PgServer {
    /// A streaming replica of this server (a base backup, then a standby following it).
    pub fn replica(&self, name: &str) -> Result<PgServer, String> {
        let dir = owned_dir(self.root, name)?;
        let data = dir.join("data");
        let mut backup = as_owner(self.root, &self.bin.join("pg_basebackup"));
        backup
            .arg("-d")
            .arg(format!("host={} port={} user={}", self.dir.display(), self.port, self.user))
            .arg("-D")
            .arg(&data)
            .args(["-R", "-X", "stream", "--no-sync", "--checkpoint=fast"]);
        run_ok(backup, "pg_basebackup")?;
        launch(self.bin.clone(), self.root, dir, &data, self.user.clone())
    }

    /// Restarts the server (fast: clients are disconnected) and waits until it answers again.
    pub fn restart(&self) {
        let mut c = as_owner(self.root, &self.bin.join("pg_ctl"));
        // With its log file: otherwise the server keeps this command's output open.
        c.arg("-D").arg(&self.data).arg("-l").arg(self.dir.join("server.log"));
        c.args(["-w", "-t", "60", "-m", "fast", "restart"]);
        run_ok(c, "pg_ctl restart").unwrap();
        wait_for(Duration::from_secs(60), "PostgreSQL to accept connections again", || {
            self.psql("postgres", "SELECT 1").status.success().then_some(())
        });
    }

    /// A connection string for `db` as `user`.
    pub fn url_as(&self, user: &str, db: &str) -> String {
        format!("host={} port={} user={user} dbname={db}", self.dir.display(), self.port)
    }

    /// A connection string for `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        self.url_as(&self.user, db)
    }

    /// A new empty database; its name.
    pub fn create_db(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let name = format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.psql_ok("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// Drops `db` (disconnecting its clients) and makes it again, empty.
    pub fn recreate_db(&self, db: &str) {
        self.psql_ok("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"));
        self.psql_ok("postgres", &format!("CREATE DATABASE {db}"));
    }

    /// Runs `sql` in `db` as the superuser.
    pub fn psql(&self, db: &str, sql: &str) -> Output {
        self.psql_as(&self.user, db, sql)
    }

    /// Runs `sql` in `db` as `user`: unaligned, tuples only, stopping at the first error.
    pub fn psql_as(&self, user: &str, db: &str, sql: &str) -> Output {
        Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", &self.url_as(user, db), "-c", sql])
            .output()
            .expect("psql runs")
    }

    /// Runs `sql` and returns its output; panics with psql's message when it fails.
    #[track_caller]
    pub fn psql_ok(&self, db: &str, sql: &str) -> String {
        let out = self.psql(db, sql);
        assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}
