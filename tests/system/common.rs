//! Helpers: run the binary, make a PKI, read fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("nodes/ is inside the workspace").to_path_buf()
}

/// A fixture file under `tests/fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures").join(rel)
}

/// Keeps the caller's passwords, log settings, configuration and console profiles away from a
/// command a test runs.
fn scrub(cmd: &mut Command) {
    for var in [
        "OUTPOST_KEY_PASSWORD",
        "OUTPOST_CA_PASSWORD",
        "OUTPOST_LOG",
        "OUTPOST_CONFIG",
        "SOURCE_DATE_EPOCH",
        "OUTPOST_SERVER",
        "OUTPOST_CA",
        "OUTPOST_CERT",
        "OUTPOST_KEY",
        "OUTPOST_PROFILE",
    ] {
        cmd.env_remove(var);
    }
    // The user's own console profiles never reach a test (a test sets its own file).
    cmd.env("OUTPOST_CONSOLE_PROFILES", std::env::temp_dir().join("outpost-tests-no-profiles/console.toml"));
}

/// The `outpost` command, with no password or log settings inherited from the caller.
pub fn outpost() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_outpost"));
    scrub(&mut cmd);
    cmd.stdin(std::process::Stdio::null());
    cmd
}

/// The result of a run, with its output as text.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(output: &Output) -> Self {
        Self {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Panics unless the run succeeded.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "expected success\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// Panics unless the command line was refused (exit code 2, as for any usage error) with
    /// `needle` in its error output.
    #[track_caller]
    pub fn refused_with(self, needle: &str) -> Self {
        assert_eq!(self.code, Some(2), "expected a usage error\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        assert!(self.stderr.contains(needle), "expected {needle:?} in the error output\nstderr:\n{}", self.stderr);
        self
    }

    /// Panics unless the run failed with exit code 1 and `needle` in its error output.
    #[track_caller]
    pub fn fails_with(self, needle: &str) -> Self {
        assert_eq!(self.code, Some(1), "expected failure\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        assert!(self.stderr.contains(needle), "expected {needle:?} in the error output\nstderr:\n{}", self.stderr);
        self
    }
}

/// Runs `outpost ARGS` in `dir`.
pub fn run_in(dir: &Path, args: &[&str]) -> Run {
    Run::from(&outpost().current_dir(dir).args(args).output().expect("the outpost binary runs"))
}

/// Runs `outpost ARGS` in `dir` with its address space limited to `kib` KiB (`ulimit -v`): a
/// command that would hold far more than it needs fails instead of passing unnoticed.
pub fn run_limited(dir: &Path, args: &[&str], kib: u64) -> Run {
    let mut cmd = Command::new("/bin/sh");
    cmd.current_dir(dir)
        .arg("-c")
        .arg(format!("ulimit -v {kib} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_outpost"));
    cmd.args(args).stdin(std::process::Stdio::null());
    scrub(&mut cmd);
    Run::from(&cmd.output().expect("sh runs"))
}

/// Runs `outpost ARGS` in `dir` with extra environment variables.
pub fn run_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = outpost();
    cmd.current_dir(dir).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Run::from(&cmd.output().expect("the outpost binary runs"))
}

/// A throw-away PKI: CA (unencrypted), and on demand certificates for roles.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        run_in(dir.path(), &["pki", "init", "--dir", "pki", "--org", "Test Org", "--no-password"]).ok();
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn ca(&self) -> PathBuf {
        self.path().join("pki/ca.crt")
    }

    /// Issues `role` for `name` (unencrypted key); returns (cert, key).
    pub fn issue(&self, role: &str, name: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
        let cert = self.path().join(self.try_issue(role, name, extra).ok().stdout.trim());
        let key = cert.with_extension("key");
        (cert, key)
    }

    /// Runs `pki issue` for `role` and `name` with `extra` arguments, whatever comes of it.
    pub fn try_issue(&self, role: &str, name: &str, extra: &[&str]) -> Run {
        let mut args = vec!["pki", "issue", "--dir", "pki", "--role", role, "--name", name, "--no-password"];
        args.extend_from_slice(extra);
        run_in(self.path(), &args)
    }
}

/// Writes a package source folder: WAPT/control from `control`, plus `files`.
pub fn source(dir: &Path, control: &str, files: &[(&str, &[u8])]) -> PathBuf {
    std::fs::create_dir_all(dir.join("WAPT")).unwrap();
    std::fs::write(dir.join("WAPT/control"), control).unwrap();
    for (path, data) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    }
    dir.to_path_buf()
}

/// A minimal valid control for `name` at `version`.
pub fn control(name: &str, version: &str, extra: &str) -> String {
    format!("package: {name}\nversion: {version}\narchitecture: all\nsection: base\npriority: optional\n{extra}")
}

/// Names of the entries of a folder, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// A child process stopped with SIGTERM (then killed) when dropped, even when a test fails.
pub struct Stop(pub std::process::Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        for _ in 0..300 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::park_timeout(std::time::Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `outpost demo --keep-running` with `agents` agents in `work/demo`: returns it (stopped when
/// dropped) and its `demo.json` once `ready` holds for it.
pub fn demo(work: &Path, agents: usize, ready: impl Fn(&serde_json::Value) -> bool) -> (Stop, serde_json::Value) {
    let dir = work.join("demo");
    let log = std::fs::File::create(work.join("demo.log")).unwrap();
    let child = outpost()
        .args(["demo", "--keep-running", "--agents", &agents.to_string(), "--dir", dir.to_str().unwrap()])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut demo = Stop(child);
    let info = crate::cluster::wait_for(std::time::Duration::from_secs(240), "the demo to be up", || {
        if let Ok(Some(status)) = demo.0.try_wait() {
            panic!(
                "the demo exited ({status}):\n{}",
                std::fs::read_to_string(work.join("demo.log")).unwrap_or_default()
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("demo.json")).ok()?).ok()?;
        ready(&v).then_some(v)
    });
    (demo, info)
}
