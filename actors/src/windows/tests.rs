//! Run under Wine here (`cargo test --target x86_64-pc-windows-gnu`), on Windows anywhere.

use std::time::Duration;

use super::*;

/// True under Wine, which keeps no access lists on files and does not enforce a pipe's first
/// instance: the checks that need a real Windows say so and are not counted there.
fn under_wine() -> bool {
    windows_registry::CURRENT_USER.open(r"Software\Wine").is_ok()
}

/// Held by the tests that start and stop `ping.exe`: closing impacted processes closes every
/// ping, so they take turns.
static PING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The access entries of an SDDL string (`(A;OICI;FA;;;SY)`…).
fn aces(sddl: &str) -> Vec<String> {
    sddl.split('(').skip(1).map(|a| a.trim_end_matches(')').to_string()).collect()
}

#[test]
fn the_state_folder_is_open_to_system_and_administrators_only() {
    // The access list given is exactly SYSTEM and Administrators, inherited, cut from the parent.
    let wanted = acl::Descriptor::from_sddl(acl::STATE_FOLDER).unwrap();
    let mut entries = aces(&acl::describe(&wanted).unwrap());
    entries.sort();
    assert_eq!(entries, ["A;OICI;FA;;;BA", "A;OICI;FA;;;SY"]);
    let dir = tempfile::tempdir().unwrap();
    let before = acl::describe_path(dir.path()).unwrap();
    acl::restrict_folder(dir.path()).unwrap();
    if under_wine() {
        eprintln!("under Wine: files keep no access lists, so the folder's list is not read back here");
        return;
    }
    let after = acl::describe_path(dir.path()).unwrap();
    assert!(after.starts_with("D:P"), "inheritance from the parent is cut: {after} (was {before})");
    let mut entries = aces(&after);
    entries.sort();
    assert_eq!(entries, ["A;OICI;FA;;;BA", "A;OICI;FA;;;SY"], "{after}");
}

#[tokio::test]
async fn the_control_pipe_is_open_to_system_and_administrators_and_has_one_owner() {
    let name = std::path::PathBuf::from(format!(r"\\.\pipe\outpost-test-{}", std::process::id()));
    let server = pipe::create(&name, true).unwrap();
    let sddl = acl::describe_object(&server).unwrap();
    let mut entries = aces(&sddl);
    entries.sort();
    assert_eq!(entries, ["A;;GA;;;BA", "A;;GA;;;SY"], "{sddl}");
    if under_wine() {
        eprintln!("under Wine: a pipe's first instance is not enforced, so a second one is not checked here");
    } else {
        let e = pipe::create(&name, true).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(5), "a second first instance is refused (access denied): {e}");
    }
    // A local client reaches it, both ways.
    let accept = async {
        server.connect().await.unwrap();
        let mut line = String::new();
        let (read, mut write) = tokio::io::split(server);
        tokio::io::AsyncBufReadExt::read_line(&mut tokio::io::BufReader::new(read), &mut line).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut write, format!("got {line}").as_bytes()).await.unwrap();
    };
    let client = async {
        let mut c = tokio::net::windows::named_pipe::ClientOptions::new().open(&name).unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut c, b"status\n").await.unwrap();
        let mut back = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut tokio::io::BufReader::new(c), &mut back).await.unwrap();
        back
    };
    let ((), back) =
        tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(accept, client) }).await.unwrap();
    assert_eq!(back, "got status\n");
}

#[test]
fn programs_in_the_per_user_uninstall_key_are_listed_with_their_product_code() {
    let code = format!("{{0E5D7C11-2B6A-4F2E-9C1B-{:012X}}}", std::process::id());
    let path = format!(r"SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall\{code}");
    let key = windows_registry::CURRENT_USER.create(&path).unwrap();
    key.set_string("DisplayName", "Outpost Test Program").unwrap();
    key.set_string("DisplayVersion", "1.2.3").unwrap();
    key.set_string("Publisher", "Outpost").unwrap();
    key.set_string("UninstallString", format!("MsiExec.exe /X{code}")).unwrap();
    let hidden = windows_registry::CURRENT_USER.create(format!("{path}-hidden")).unwrap();
    hidden.set_string("DisplayName", "A system component").unwrap();
    hidden.set_u32("SystemComponent", 1).unwrap();
    let listed = registry::installed();
    let _ = windows_registry::CURRENT_USER.remove_tree(&path);
    let _ = windows_registry::CURRENT_USER.remove_tree(format!("{path}-hidden"));
    let found = listed.iter().find(|i| i.key == code).unwrap_or_else(|| panic!("not listed: {listed:?}"));
    assert_eq!(
        (found.name.as_str(), found.version.as_str(), found.publisher.as_str(), found.view),
        ("Outpost Test Program", "1.2.3", "Outpost", "user")
    );
    assert_eq!(found.product_code(), Some(code.as_str()));
    assert!(found.uninstall.contains(&code));
    assert!(!listed.iter().any(|i| i.name == "A system component"), "system components are left out");
    assert_eq!(registry::product_version(&code), None, "gone once its key is removed");
}

#[test]
fn windows_and_the_machine_are_described() {
    let (name, _, build) = registry::windows_version();
    assert!(name.contains("Windows"), "{name}");
    assert!(!build.is_empty());
    assert!(system::memory() > 0);
    assert!(system::uptime_ms() > 0);
    let drives = system::drives();
    let c = drives.iter().find(|d| d.root.eq_ignore_ascii_case(r"C:\")).unwrap_or_else(|| panic!("{drives:?}"));
    assert!(c.size > 0 && c.free <= c.size, "{c:?}");
}

#[tokio::test]
async fn a_setup_cmd_hook_gets_the_contract_of_setup_sh_and_3010_is_a_pending_reboot() {
    use outpost_protocol::control::Control;

    use crate::agent::hooks::{self, HookAction};
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("setup.cmd");
    std::fs::write(
        &script,
        "@echo off\r\necho %OUTPOST_PACKAGE% %OUTPOST_VERSION% %1 %OUTPOST_CONTROL_MAINTAINER%\r\nexit /b 3010\r\n",
    )
    .unwrap();
    let control = Control::parse("package: tool\nversion: 2.0-1\nmaintainer: ops\n").unwrap();
    let o = hooks::run(&script, HookAction::Install, dir.path(), dir.path(), &control, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(o.code, Some(3010), "{o:?}");
    assert!(o.success() && o.reboot_required());
    assert_eq!(o.output.trim(), "tool 2.0-1 install ops");
    assert!(o.summary("setup.cmd", HookAction::Install).contains("a reboot is pending"));
    std::fs::write(&script, "@echo off\r\necho failing\r\nexit /b 4\r\n").unwrap();
    let o = hooks::run(&script, HookAction::Uninstall, dir.path(), dir.path(), &control, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(o.code, Some(4));
    assert!(!o.success());
}

#[tokio::test]
async fn an_impacted_process_is_found_and_closed() {
    use crate::agent::processes;
    let _turn = PING.lock().await;
    let mut child = std::process::Command::new("ping")
        .args(["-n", "120", "127.0.0.1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let found = processes::find(&["PING".into()]);
    assert!(found.iter().any(|(p, _)| *p == pid), "ping.exe ({pid}) is found by its name: {found:?}");
    let said = processes::close(&["ping.exe".into()], Duration::from_secs(2)).await;
    assert!(said.iter().any(|l| l.contains(&format!("(pid {pid})"))), "{said:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "ping.exe still runs: {said:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(processes::find(&["ping".into()]).iter().all(|(p, _)| *p != pid));
}

#[tokio::test]
async fn a_hook_over_its_limit_is_stopped_with_the_processes_it_started() {
    use outpost_protocol::control::Control;

    use crate::agent::{hooks, processes};
    let _turn = PING.lock().await;
    let before: Vec<u32> = processes::find(&["ping".into()]).into_iter().map(|(p, _)| p).collect();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("setup.cmd");
    std::fs::write(
        &script,
        "@echo off\r\necho started\r\nstart /b ping -n 120 127.0.0.1 >nul\r\nping -n 120 127.0.0.1 >nul\r\n",
    )
    .unwrap();
    let control = Control::parse("package: p\nversion: 1\n").unwrap();
    let o = hooks::run(&script, hooks::HookAction::Install, dir.path(), dir.path(), &control, Duration::from_secs(4))
        .await
        .unwrap();
    assert!(o.timed_out && o.code.is_none(), "{o:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left: Vec<(u32, String)> =
            processes::find(&["ping".into()]).into_iter().filter(|(p, _)| !before.contains(p)).collect();
        if left.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the hook's children still run: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
