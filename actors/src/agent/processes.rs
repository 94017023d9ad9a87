//! The processes a package names in `impacted_process`: closed before it is installed, upgraded
//! or removed — asked to stop first, then stopped after a time limit — and said in the step's
//! output. Names match without regard to case, with or without `.exe` (WAPT's Windows names).

use std::time::{Duration, Instant};

/// How long a process asked to stop has before it is stopped.
pub const GRACE: Duration = Duration::from_secs(10);

/// The names a control's `impacted_process` lists.
pub fn impacted(control: &outpost_protocol::control::Control) -> Vec<String> {
    control
        .get_or_empty("impacted_process")
        .split(',')
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

fn normal(name: &str) -> String {
    let n = name.trim().to_lowercase();
    n.strip_suffix(".exe").map(str::to_string).unwrap_or(n)
}

/// Running processes whose name is one of `names`: (pid, name).
pub fn find(names: &[String]) -> Vec<(u32, String)> {
    let wanted: Vec<String> = names.iter().map(|n| normal(n)).collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    running().into_iter().filter(|(pid, n)| wanted.contains(&normal(n)) && alive(*pid)).collect()
}

#[cfg(target_os = "linux")]
fn running() -> Vec<(u32, String)> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            if pid == me {
                return None;
            }
            // `comm` is cut at 15 bytes: the executable's own name is preferred when readable.
            let exe = std::fs::read_link(e.path().join("exe"))
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
            let comm = std::fs::read_to_string(e.path().join("comm")).ok().map(|c| c.trim().to_string());
            Some((pid, exe.or(comm)?))
        })
        .collect()
}

#[cfg(windows)]
fn running() -> Vec<(u32, String)> {
    let me = std::process::id();
    crate::windows::system::processes().into_iter().filter(|(pid, _)| *pid != me && *pid != 0).collect()
}

#[cfg(not(any(target_os = "linux", windows)))]
fn running() -> Vec<(u32, String)> {
    Vec::new()
}

/// Closes the running processes named `names`: asks each to stop, waits up to `grace`, then
/// stops those left. Returns what was done, a line per process.
pub async fn close(names: &[String], grace: Duration) -> Vec<String> {
    let found = find(names);
    if found.is_empty() {
        return Vec::new();
    }
    for (pid, _) in &found {
        signal(*pid, false);
    }
    let started = Instant::now();
    let alive = |pid: u32| alive(pid);
    while found.iter().any(|(p, _)| alive(*p)) && started.elapsed() < grace {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    found
        .iter()
        .map(|(pid, name)| {
            if alive(*pid) {
                signal(*pid, true);
                format!("stopped {name} (pid {pid}): it did not close within {} s", grace.as_secs())
            } else {
                format!("closed {name} (pid {pid})")
            }
        })
        .collect()
}

/// True while the process runs (a process that exited and waits for its parent to collect it
/// is not running).
#[cfg(target_os = "linux")]
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()))
        .is_some_and(|state| state != 'Z' && state != 'X')
}

#[cfg(windows)]
fn alive(pid: u32) -> bool {
    crate::windows::system::running(pid)
}

#[cfg(not(any(target_os = "linux", windows)))]
fn alive(_pid: u32) -> bool {
    false
}

#[cfg(unix)]
fn signal(pid: u32, kill: bool) {
    let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else { return };
    let sig = if kill { rustix::process::Signal::KILL } else { rustix::process::Signal::TERM };
    let _ = rustix::process::kill_process(pid, sig);
}

/// Windows: `taskkill /PID` asks the program to close (its windows get WM_CLOSE); with `/F`
/// it is ended.
#[cfg(windows)]
fn signal(pid: u32, kill: bool) {
    let mut cmd = std::process::Command::new("taskkill.exe");
    cmd.arg("/PID").arg(pid.to_string());
    if kill {
        cmd.arg("/F");
    }
    let _ = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status();
}

#[cfg(not(any(unix, windows)))]
fn signal(_pid: u32, _kill: bool) {}
