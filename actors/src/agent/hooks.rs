//! Running a package's hook script: `setup.sh install|uninstall|audit|session-setup` (or
//! `setup.ps1` on Windows) in the package folder, with the package's name, version, folders and
//! control fields in the environment, a time limit, and the output captured (its end is kept
//! with the package's status).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_protocol::control::Control;
use tokio::io::AsyncReadExt;

/// How much of a hook's output is kept (its end).
pub const OUTPUT_TAIL: usize = 16 * 1024;

/// What a hook is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookAction {
    /// Install (or upgrade to) the package.
    Install,
    /// Remove it.
    Uninstall,
    /// Check it is still as installed.
    Audit,
    /// Per-user setup at session start.
    SessionSetup,
}

impl HookAction {
    /// The argument given to the script.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Install => "install",
            Self::Uninstall => "uninstall",
            Self::Audit => "audit",
            Self::SessionSetup => "session-setup",
        }
    }
}

/// How a hook ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookOutcome {
    /// Exit code (`None` when killed or timed out).
    pub code: Option<i32>,
    /// True when it ran past its time limit and was killed.
    pub timed_out: bool,
    /// The end of its output (stdout and stderr, interleaved as written).
    pub output: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl HookOutcome {
    /// True when it exited with 0.
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }

    /// A one-line summary for statuses.
    pub fn summary(&self, script: &str, action: HookAction) -> String {
        if self.timed_out {
            format!(
                "{script} {} exceeded its time limit of {:.0} s and was stopped",
                action.as_str(),
                self.elapsed.as_secs_f64()
            )
        } else {
            match self.code {
                Some(0) => format!("{script} {} succeeded", action.as_str()),
                Some(c) => format!("{script} {} failed with exit code {c}", action.as_str()),
                None => format!("{script} {} was killed", action.as_str()),
            }
        }
    }
}

/// The hook script of a package folder for this platform, if it has one.
pub fn script_in(dir: &Path) -> Option<PathBuf> {
    let name = if cfg!(windows) { "setup.ps1" } else { "setup.sh" };
    let path = dir.join(name);
    path.is_file().then_some(path)
}

/// Runs `script` with `action` in `dir`. The environment carries `OUTPOST_PACKAGE`,
/// `OUTPOST_VERSION`, `OUTPOST_ACTION`, `OUTPOST_PACKAGE_DIR`, `OUTPOST_STATE_DIR` and every
/// control field as `OUTPOST_CONTROL_<FIELD>` (upper-case).
pub async fn run(
    script: &Path,
    action: HookAction,
    dir: &Path,
    state_dir: &Path,
    control: &Control,
    limit: Duration,
) -> std::io::Result<HookOutcome> {
    let mut cmd = if cfg!(windows) {
        let mut c = tokio::process::Command::new("powershell.exe");
        c.args(["-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-File"]).arg(script);
        c
    } else {
        let mut c = tokio::process::Command::new("/bin/sh");
        c.arg(script);
        c
    };
    cmd.arg(action.as_str())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .env("OUTPOST_PACKAGE", control.get_or_empty("package"))
        .env("OUTPOST_VERSION", control.get_or_empty("version"))
        .env("OUTPOST_ACTION", action.as_str())
        .env("OUTPOST_PACKAGE_DIR", dir)
        .env("OUTPOST_STATE_DIR", state_dir);
    for (key, value) in control.iter() {
        let var: String =
            key.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
        cmd.env(format!("OUTPOST_CONTROL_{var}"), value);
    }
    #[cfg(unix)]
    cmd.process_group(0);
    let started = std::time::Instant::now();
    let mut child = cmd.spawn()?;
    let (mut out, mut err) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let tail = Arc::new(Mutex::new(Vec::new()));
    let sink = tail.clone();
    let collector = tokio::spawn(async move {
        let (mut a, mut b) = (vec![0u8; 8192], vec![0u8; 8192]);
        let (mut out_open, mut err_open) = (true, true);
        while out_open || err_open {
            tokio::select! {
                n = out.read(&mut a), if out_open => match n {
                    Ok(0) | Err(_) => out_open = false,
                    Ok(n) => push_tail(&mut sink.lock().expect("not poisoned"), &a[..n]),
                },
                n = err.read(&mut b), if err_open => match n {
                    Ok(0) | Err(_) => err_open = false,
                    Ok(n) => push_tail(&mut sink.lock().expect("not poisoned"), &b[..n]),
                },
            }
        }
    });
    let (code, timed_out) = match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => (status?.code(), false),
        Err(_) => {
            kill_group(&mut child).await;
            (None, true)
        }
    };
    // The pipes close when the script and its children are gone; a child that detached and
    // kept them open is not waited for long.
    let _ = tokio::time::timeout(Duration::from_secs(5), collector).await;
    let output = String::from_utf8_lossy(&tail.lock().expect("not poisoned")).into_owned();
    Ok(HookOutcome { code, timed_out, output, elapsed: started.elapsed() })
}

fn push_tail(tail: &mut Vec<u8>, bytes: &[u8]) {
    tail.extend_from_slice(bytes);
    if tail.len() > OUTPUT_TAIL {
        let cut = tail.len() - OUTPUT_TAIL;
        tail.drain(..cut);
    }
}

async fn kill_group(child: &mut tokio::process::Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id() {
        // The hook may have started children: stop the whole group.
        if let Some(pid) = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap_or(0)) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
    let _ = child.kill().await;
}
