//! How one-shot commands reach a running agent daemon: one JSON [`ControlRequest`] per
//! connection, one JSON [`Reply`]. On Unix a socket in the state folder (mode 0600); on
//! Windows a named pipe derived from the state folder, open to SYSTEM and Administrators only
//! and to local clients only.

use std::path::{Path, PathBuf};

use actix::Addr;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use super::actor::{AgentActor, ControlRequest, Reply};
#[cfg(windows)]
use crate::windows::pipe;

/// Longest request line read from a client.
const MAX_REQUEST: u64 = 1 << 20;

/// Where the daemon of `state_dir` listens: a socket path on Unix, a pipe name on Windows
/// (`\\.\pipe\outpost-agent-` and a hash of the folder's absolute path, so that two agents
/// with two state folders never meet).
pub fn address(state_dir: &Path) -> PathBuf {
    if cfg!(windows) {
        let absolute = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        let key = absolute.to_string_lossy().to_lowercase().replace('/', "\\");
        let key = key.trim_end_matches('\\');
        let hash = blake3::hash(key.as_bytes()).to_hex();
        PathBuf::from(format!(r"\\.\pipe\outpost-agent-{}", &hash[..16]))
    } else {
        state_dir.join("agent.sock")
    }
}

/// Whether a command given `asked` may run on a daemon started with `running`: both name the
/// same file (or both use the built-in defaults).
fn same_config(running: Option<&Path>, asked: Option<&Path>) -> bool {
    let canon = |p: Option<&Path>| p.map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()));
    canon(running) == canon(asked)
}

fn describe(config: Option<&Path>) -> String {
    config.map_or_else(|| "the built-in defaults".into(), |p| p.display().to_string())
}

/// Answers one client: reads its request line, runs it on the actor, writes the reply.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(stream: S, actor: Addr<AgentActor>, config: Option<PathBuf>) {
    let (read, mut write) = tokio::io::split(stream);
    let mut line = String::new();
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST));
    if reader.read_line(&mut line).await.is_err() || line.is_empty() {
        return;
    }
    let reply = match serde_json::from_str::<ControlRequest>(&line) {
        Ok(r) if !same_config(config.as_deref(), r.config.as_deref()) => Reply::Error(format!(
            "the agent daemon using this state folder runs with {}, but this command was given {}: give it the \
             same configuration, or stop the daemon to run the command on its own",
            describe(config.as_deref()),
            describe(r.config.as_deref()),
        )),
        Ok(r) => actor.send(r.command).await.unwrap_or_else(|e| Reply::Error(format!("the agent is stopping: {e}"))),
        Err(e) => Reply::Error(format!("bad command: {e}")),
    };
    let mut text = serde_json::to_string(&reply).unwrap_or_default();
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
    let _ = write.flush().await;
    let _ = write.shutdown().await;
}

/// Sends `request` on a connected stream and reads the reply (`None` when it stopped answering).
async fn ask<S: AsyncRead + AsyncWrite + Unpin>(stream: S, request: &ControlRequest) -> Option<Reply> {
    let (read, mut write) = tokio::io::split(stream);
    let mut text = serde_json::to_string(request).ok()?;
    text.push('\n');
    write.write_all(text.as_bytes()).await.ok()?;
    write.flush().await.ok()?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await.ok()?;
    serde_json::from_str(&line).ok()
}

/// A connection to a running daemon.
#[derive(Debug)]
pub struct DaemonConnection {
    #[cfg(unix)]
    stream: tokio::net::UnixStream,
    #[cfg(windows)]
    stream: tokio::net::windows::named_pipe::NamedPipeClient,
}

/// Sends a request to the daemon and reads its reply (`None` when it stopped answering).
pub async fn ask_daemon(connection: DaemonConnection, request: &ControlRequest) -> Option<Reply> {
    ask(connection.stream, request).await
}

/// Serves the control channel of `state_dir` until `cancel` fires. `config` is the file the
/// daemon was started with.
#[cfg(unix)]
pub async fn serve(
    state_dir: &Path,
    actor: Addr<AgentActor>,
    config: Option<PathBuf>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let path = address(state_dir);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    loop {
        let (stream, _) = tokio::select! {
            () = cancel.cancelled() => break,
            s = listener.accept() => s?,
        };
        tokio::spawn(answer(stream, actor.clone(), config.clone()));
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// Connects to the daemon of a state folder; `None` when none runs.
#[cfg(unix)]
pub async fn connect_daemon(state_dir: &Path) -> Option<DaemonConnection> {
    let stream = tokio::net::UnixStream::connect(address(state_dir)).await.ok()?;
    Some(DaemonConnection { stream })
}

/// Serves the control pipe of `state_dir` until `cancel` fires (see
/// [`crate::windows::pipe::create`] for who may open it).
#[cfg(windows)]
pub async fn serve(
    state_dir: &Path,
    actor: Addr<AgentActor>,
    config: Option<PathBuf>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let name = address(state_dir);
    let mut server = pipe::create(&name, true)?;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            c = server.connect() => c?,
        }
        // A new instance waits for the next client before this one is answered.
        let connected = std::mem::replace(&mut server, pipe::create(&name, false)?);
        tokio::spawn(answer(connected, actor.clone(), config.clone()));
    }
    Ok(())
}

/// Connects to the daemon of a state folder; `None` when none runs.
#[cfg(windows)]
pub async fn connect_daemon(state_dir: &Path) -> Option<DaemonConnection> {
    use tokio::net::windows::named_pipe::ClientOptions;
    let name = address(state_dir);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match ClientOptions::new().open(&name) {
            Ok(stream) => return Some(DaemonConnection { stream }),
            // Every instance is taken for a moment: the daemon makes the next one at once.
            Err(e) if e.raw_os_error() == Some(231) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_folder_has_its_own_address() {
        let a = address(Path::new("/var/lib/outpost/agent"));
        let b = address(Path::new("/var/lib/outpost/other"));
        assert_ne!(a, b);
        if cfg!(windows) {
            assert!(a.to_string_lossy().starts_with(r"\\.\pipe\outpost-agent-"), "{}", a.display());
            // The same folder written another way is the same pipe.
            assert_eq!(address(Path::new(r"C:\ProgramData\Outpost\")), address(Path::new("c:/programdata/outpost")));
        } else {
            assert_eq!(a, Path::new("/var/lib/outpost/agent/agent.sock"));
        }
    }
}
