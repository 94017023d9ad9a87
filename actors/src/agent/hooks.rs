//! Running a package's hook script: `setup.sh install|uninstall|audit|session-setup` (on
//! Windows `setup.cmd` under cmd.exe, or `setup.ps1` under PowerShell) in the package folder, with the package's name, version, folders and
//! control fields in the environment, a time limit, and the output captured (its end is kept
//! with the package's status).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_protocol::control::Control;

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
    /// The end of its output (stdout and stderr, in the order written).
    pub output: String,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Exit codes that mean success with a reboot to come: Windows Installer's
/// `ERROR_SUCCESS_REBOOT_REQUIRED` (3010) and `ERROR_SUCCESS_REBOOT_INITIATED` (1641), which
/// installers and hooks that wrap them return.
pub const REBOOT_CODES: [i32; 2] = [3010, 1641];

impl HookOutcome {
    /// True when it exited with 0, or with a code that asks for a reboot ([`REBOOT_CODES`]).
    pub fn success(&self) -> bool {
        !self.timed_out && self.code.is_some_and(|c| c == 0 || REBOOT_CODES.contains(&c))
    }

    /// True when it succeeded and asked for a reboot.
    pub fn reboot_required(&self) -> bool {
        !self.timed_out && self.code.is_some_and(|c| REBOOT_CODES.contains(&c))
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
                Some(c) if REBOOT_CODES.contains(&c) => {
                    format!("{script} {} succeeded; a reboot is pending (exit code {c})", action.as_str())
                }
                Some(c) => format!("{script} {} failed with exit code {c}", action.as_str()),
                None => format!("{script} {} was killed", action.as_str()),
            }
        }
    }
}

/// A mark of this boot of the machine, to know whether a reboot asked for has happened: the
/// kernel's boot id on Linux; on Windows the minute the machine started (from the time since
/// boot); `None` where neither is known.
pub fn boot_mark() -> Option<String> {
    #[cfg(windows)]
    {
        let started = crate::clock::unix_now() - i64::try_from(crate::windows::system::uptime_ms() / 1000).ok()?;
        Some(format!("boot-{started}"))
    }
    #[cfg(not(windows))]
    {
        let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        Some(id.trim().to_string()).filter(|s| !s.is_empty())
    }
}

/// Whether two [`boot_mark`]s are the same boot: equal, or both a start time (Windows) within
/// two minutes of each other (the wall clock and the time since boot are read a moment apart,
/// and the clock may be adjusted a little).
pub fn same_boot(a: &str, b: &str) -> bool {
    let start = |m: &str| m.strip_prefix("boot-").and_then(|n| n.parse::<i64>().ok());
    match (start(a), start(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= 120,
        _ => a == b,
    }
}

/// The hooks this platform runs: a package carries at most one of them.
pub const PLATFORM_HOOKS: &[&str] =
    if cfg!(windows) { &["setup.cmd", "setup.bat", "setup.ps1"] } else { &["setup.sh"] };
/// The hooks this platform runs, in words.
pub const PLATFORM_HOOK_NAMES: &str = if cfg!(windows) { "setup.cmd or setup.ps1" } else { "setup.sh" };

/// A package carries more than one of this platform's hooks.
#[derive(Debug, thiserror::Error)]
#[error("the package carries {}; this platform runs one hook: keep one of them", .0.join(" and "))]
pub struct TwoHooks(pub Vec<String>);

/// True when the package carries a hook this platform runs.
pub fn has_platform_hook(manifest: &outpost_protocol::package::Manifest) -> bool {
    PLATFORM_HOOKS.iter().any(|h| manifest.hook(h).is_some())
}

/// The hook script of a package unpacked in `dir`, for this platform, if it has one. Found
/// from the signed manifest, whatever the case of its name (`Setup.sh` is the hook, as a
/// case-insensitive file system would make it).
pub fn script_for(manifest: &outpost_protocol::package::Manifest, dir: &Path) -> Result<Option<PathBuf>, TwoHooks> {
    let found: Vec<&str> = PLATFORM_HOOKS.iter().filter_map(|h| manifest.hook(h)).collect();
    if found.len() > 1 {
        return Err(TwoHooks(found.into_iter().map(str::to_string).collect()));
    }
    Ok(found.first().map(|p| dir.join(p)).filter(|p| p.is_file()))
}

/// How a hook file is run, by its name: `setup.ps1` by PowerShell, `setup.cmd`/`setup.bat`
/// by cmd.exe, anything else by `/bin/sh`.
fn interpreter(script: &Path) -> tokio::process::Command {
    let name = script.file_name().unwrap_or_default().to_string_lossy().to_ascii_lowercase();
    if name.ends_with(".ps1") {
        let mut c = tokio::process::Command::new("powershell.exe");
        c.args(["-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-File"]).arg(script);
        c
    } else if name.ends_with(".cmd") || name.ends_with(".bat") {
        // Run from its folder (the working directory) by its bare name: cmd.exe's quoting of a
        // full path followed by arguments is unreliable, and hook names have no spaces.
        let mut c = tokio::process::Command::new("cmd.exe");
        c.args(["/D", "/C"]).arg(script.file_name().unwrap_or_default());
        c
    } else {
        let mut c = tokio::process::Command::new("/bin/sh");
        c.arg(script);
        c
    }
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
    let mut cmd = interpreter(script);
    cmd.arg(action.as_str())
        .current_dir(dir)
        .stdin(Stdio::null())
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
    // One pipe for both outputs: what the hook writes to stdout and stderr is kept in the order
    // it was written (two pipes read side by side would interleave them at random).
    let (reader, writer) = std::io::pipe()?;
    cmd.stdout(writer.try_clone()?).stderr(writer);
    let started = std::time::Instant::now();
    let mut child = cmd.spawn()?;
    // Windows has no process groups: the hook goes in a job, so that the processes it starts
    // are ended with it when it runs past its limit.
    #[cfg(windows)]
    let job = {
        let job = crate::windows::system::Job::new()?;
        job.assign(&child)?;
        job
    };
    // The command holds the pipe's write ends: without dropping it, the pipe never ends.
    drop(cmd);
    let tail = Arc::new(Mutex::new(Vec::new()));
    let (sink, (done_tx, done_rx)) = (tail.clone(), tokio::sync::oneshot::channel::<()>());
    // A plain thread, not the runtime's blocking pool: a child the hook left running with the
    // pipe open would otherwise keep the process from exiting.
    std::thread::Builder::new().name("hook-output".into()).spawn(move || {
        let mut reader = reader;
        let mut buf = vec![0u8; 8192];
        loop {
            match std::io::Read::read(&mut reader, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => push_tail(&mut sink.lock().expect("not poisoned"), &buf[..n]),
            }
        }
        let _ = done_tx.send(());
    })?;
    let (code, timed_out) = match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => (status?.code(), false),
        Err(_) => {
            #[cfg(windows)]
            job.terminate();
            kill_group(&mut child).await;
            (None, true)
        }
    };
    // The pipe closes when the script and its children are gone; a child that detached and
    // kept it open is not waited for long.
    let _ = tokio::time::timeout(Duration::from_secs(5), done_rx).await;
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

#[cfg(test)]
mod interpreters {
    use super::*;

    fn line(script: &str) -> Vec<String> {
        let cmd = interpreter(Path::new(script));
        let std = cmd.as_std();
        std::iter::once(std.get_program()).chain(std.get_args()).map(|a| a.to_string_lossy().into_owned()).collect()
    }

    /// Each hook runs under its own interpreter, with the action appended by `run`.
    #[test]
    fn each_hook_has_its_interpreter() {
        assert_eq!(line("/p/setup.sh"), ["/bin/sh", "/p/setup.sh"]);
        assert_eq!(line("/p/Setup.CMD"), ["cmd.exe", "/D", "/C", "Setup.CMD"]);
        assert_eq!(line("/p/setup.bat"), ["cmd.exe", "/D", "/C", "setup.bat"]);
        assert_eq!(
            line("/p/setup.ps1"),
            ["powershell.exe", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-File", "/p/setup.ps1"]
        );
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_keeps_the_order_it_was_written_in() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("setup.sh");
        let body: String = (0..200).map(|i| format!("echo out {i}\necho err {i} >&2\n")).collect();
        std::fs::write(&script, format!("{body}exit 3\n")).unwrap();
        let control = Control::parse("package: p\nversion: 1\n").unwrap();
        let o =
            run(&script, HookAction::Install, dir.path(), dir.path(), &control, Duration::from_secs(20)).await.unwrap();
        assert_eq!(o.code, Some(3));
        let want: String = (0..200).map(|i| format!("out {i}\nerr {i}\n")).collect();
        assert_eq!(o.output, want);
        assert!(o.summary("setup.sh", HookAction::Install).contains("exit code 3"));
    }

    #[tokio::test]
    async fn a_hook_over_its_limit_is_stopped_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("setup.sh");
        std::fs::write(&script, "echo started\nsleep 30 &\nsleep 30\n").unwrap();
        let control = Control::parse("package: p\nversion: 1\n").unwrap();
        let started = std::time::Instant::now();
        let o = run(&script, HookAction::Install, dir.path(), dir.path(), &control, Duration::from_millis(500))
            .await
            .unwrap();
        assert!(o.timed_out && o.code.is_none(), "{o:?}");
        assert_eq!(o.output, "started\n");
        assert!(started.elapsed() < Duration::from_secs(10), "not waited for the children");
    }
}
