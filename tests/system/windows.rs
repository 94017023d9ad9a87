//! The Windows agent: `outpost.exe` (built for x86_64-pc-windows-gnu) under Wine, in a Wine
//! prefix of its own, against a native `outpost server` and edge on loopback. It enrolls, runs
//! as a Windows service, takes one-shot commands over its named pipe, installs an MSI package
//! (an MSI built here with wixl) and a `setup.cmd` package, reports both to central, upgrades
//! the MSI and removes it; a packager builds and publishes a package from Windows, pulls one
//! with `repo pull` and lists hosts with the console. Skipped, saying why, where Wine, the Windows target, mingw or wixl
//! is missing (`scripts/setup` installs them).
//!
//! PowerShell is not exercised: Wine's `powershell.exe` is a stub that runs nothing and exits
//! 0, so a `setup.ps1` run under Wine would pass without running; it is left to real Windows.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::central::Console;
use crate::cluster::{Cluster, next_ip, wait_for};
use crate::common::{Run, root};

const LIMIT: Duration = Duration::from_secs(120);
const TARGET: &str = "x86_64-pc-windows-gnu";

/// What is missing to run Windows tests here, if anything.
fn missing() -> Option<String> {
    let have = |cmd: &str, arg: &str| Command::new(cmd).arg(arg).output().is_ok_and(|o| o.status.success());
    if !have("wine", "--version") {
        return Some("wine is not installed".into());
    }
    if !have("x86_64-w64-mingw32-gcc", "--version") {
        return Some("mingw (gcc-mingw-w64-x86-64) is not installed".into());
    }
    if !have("wixl", "--version") {
        return Some("wixl is not installed".into());
    }
    let targets = Command::new("rustup").args(["target", "list", "--installed"]).output().ok()?;
    if !String::from_utf8_lossy(&targets.stdout).lines().any(|l| l.trim() == TARGET) {
        return Some(format!("the Rust target {TARGET} is not installed"));
    }
    None
}

/// Builds outpost.exe (nothing to do when it is current) and returns its path.
fn build_exe() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root())
        .args(["build", "--quiet", "--target", TARGET, "-p", "outpost"])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building outpost.exe failed");
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    target_dir.join(TARGET).join("debug").join("outpost.exe")
}

/// A path as Windows programs under Wine see it (`Z:` is the Unix root).
fn win(path: &Path) -> String {
    format!("Z:{}", path.display().to_string().replace('/', "\\"))
}

/// A Wine prefix of this test's own, with outpost.exe to run in it; everything Wine started in
/// it is stopped when dropped.
struct Wine {
    prefix: PathBuf,
    exe: PathBuf,
}

impl Wine {
    fn new(dir: &Path, exe: PathBuf) -> Self {
        let prefix = dir.join("wine");
        let status =
            Command::new(root().join("scripts/wine/prefix")).arg(&prefix).status().expect("scripts/wine/prefix runs");
        assert!(status.success(), "making the Wine prefix failed");
        Self { prefix, exe }
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("wine");
        cmd.arg(program).env("WINEPREFIX", &self.prefix).env("WINEDEBUG", "-all").stdin(std::process::Stdio::null());
        for var in ["OUTPOST_CONFIG", "OUTPOST_LOG", "OUTPOST_KEY_PASSWORD", "OUTPOST_SERVER"] {
            cmd.env_remove(var);
        }
        cmd
    }

    /// `outpost.exe ARGS` under Wine.
    fn outpost(&self, args: &[&str]) -> Run {
        let exe = self.exe.to_string_lossy().into_owned();
        Run::from(&self.command(&exe).args(args).output().expect("wine runs"))
    }

    /// A Windows program of the prefix (`reg`, `cmd`…).
    fn program(&self, program: &str, args: &[&str]) -> Run {
        Run::from(&self.command(program).args(args).output().expect("wine runs"))
    }

    /// Where the prefix's `C:\` is.
    fn drive_c(&self) -> PathBuf {
        self.prefix.join("drive_c")
    }

    /// What the service wrote to its log.
    fn service_log(&self) -> String {
        std::fs::read_to_string(self.drive_c().join("ProgramData/Outpost/agent-service.log")).unwrap_or_default()
    }
}

impl Drop for Wine {
    fn drop(&mut self) {
        let _ = Command::new("wineserver").arg("-k").env("WINEPREFIX", &self.prefix).status();
        let _ = Command::new("wineserver").arg("-w").env("WINEPREFIX", &self.prefix).status();
    }
}

/// An MSI of "Outpost Hello" at `version` (its own product code, one upgrade code) installing
/// `hello.txt` into Program Files.
fn msi(dir: &Path, version: &str, product_code: &str) -> PathBuf {
    let work = dir.join(format!("msi-{version}"));
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("hello.txt"), format!("hello {version}\r\n")).unwrap();
    let wxs = format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<Wix xmlns="http://schemas.microsoft.com/wix/2006/wi">
  <Product Id="{product_code}" Name="Outpost Hello" Language="1033" Version="{version}"
           Manufacturer="Outpost Test" UpgradeCode="5D0E3C44-7F1A-4C8B-A2E9-0B6C1D2E3F40">
    <Package InstallerVersion="200" Compressed="yes" InstallScope="perMachine" />
    <Media Id="1" Cabinet="hello.cab" EmbedCab="yes" />
    <Directory Id="TARGETDIR" Name="SourceDir">
      <Directory Id="ProgramFiles64Folder">
        <Directory Id="INSTALLDIR" Name="OutpostHello">
          <Component Id="MainFile" Guid="1E2D3C4B-5A69-4788-9A0B-1C2D3E4F5061" Win64="yes">
            <File Id="HelloTxt" Source="hello.txt" KeyPath="yes" />
          </Component>
        </Directory>
      </Directory>
    </Directory>
    <Feature Id="Main" Level="1"><ComponentRef Id="MainFile" /></Feature>
  </Product>
</Wix>
"#
    );
    std::fs::write(work.join("hello.wxs"), wxs).unwrap();
    let out = work.join(format!("hello-{version}.msi"));
    let status =
        Command::new("wixl").current_dir(&work).args(["-a", "x64", "-o"]).arg(&out).arg("hello.wxs").status().unwrap();
    assert!(status.success(), "wixl failed");
    out
}

/// A `setup.cmd` that records each action in the agent's state folder.
const GREET_HOOK: &str = "@echo off\r\n\
if \"%1\"==\"install\" echo %OUTPOST_PACKAGE% %OUTPOST_VERSION% %OUTPOST_CONTROL_MAINTAINER%> \"%OUTPOST_STATE_DIR%\\greet.txt\"\r\n\
if \"%1\"==\"uninstall\" del \"%OUTPOST_STATE_DIR%\\greet.txt\"\r\n\
if \"%1\"==\"audit\" if not exist \"%OUTPOST_STATE_DIR%\\greet.txt\" exit /b 2\r\n\
echo greet %1 done\r\n\
exit /b 0\r\n";

/// The software section of `agent inventory --json`.
fn software(inventory: &str) -> Vec<Value> {
    let sections: Vec<Value> = serde_json::from_str(inventory).unwrap_or_else(|e| panic!("{e}: {inventory}"));
    sections
        .iter()
        .find_map(|s| s["Software"].as_array().cloned())
        .unwrap_or_else(|| panic!("no software: {inventory}"))
}

/// The software the host reports to central, by name.
fn reported_software(admin: &Console<'_>, host: &str) -> Vec<Value> {
    let detail = admin.json(&["host", host]);
    detail["inventory"]["sections"]["software"]["Software"].as_array().cloned().unwrap_or_default()
}

#[test]
fn the_windows_agent_under_wine_enrolls_installs_an_msi_and_a_cmd_package_upgrades_and_removes() {
    if let Some(why) = missing() {
        eprintln!("skipped: {why} (scripts/setup installs what Windows tests need)");
        return;
    }
    let exe = build_exe();
    let c = Cluster::new();
    let wine = Wine::new(c.dir(), exe);
    let (server, central) = c.server(&[]);
    let edge = c.edge(&[&server.addr], &[]);
    let admin = Console::new(&c, &central, "Admin", "view,act,modify");
    let token = admin.json(&["token", "create", "--uses", "1"])["token"].as_str().unwrap().to_string();

    // The packages: an MSI with no script, and a setup.cmd.
    let msi_v1 = msi(c.dir(), "1.0.0", "8C1B1A4B-5A1F-4E4B-9C59-3C4A0F1E2D31");
    let hello = c.package_with(
        "hello",
        "1.0.0-1",
        "install_msi: hello-1.0.0.msi\nmsi_properties: REBOOT=ReallySuppress\n",
        &[("hello-1.0.0.msi", &std::fs::read(&msi_v1).unwrap())],
    );
    let greet = c.package_with("greet", "1-1", "maintainer: ops\n", &[("setup.cmd", GREET_HOOK.as_bytes())]);
    c.publish(&hello, &server.addr);
    let seq = c.publish(&greet, &server.addr);
    c.wait_sequence(&edge.addr, seq, LIMIT);

    // The Windows machine's configuration, with Windows paths.
    let state = c.dir().join("win-state");
    let config = c.dir().join("win-agent.toml");
    let (cert, key) = (c.dir().join("win-host.crt"), c.dir().join("win-host.key"));
    std::fs::write(
        &config,
        format!(
            "state = '{}'\nca = '{}'\ncert = '{}'\nkey = '{}'\nrepos = [{:?}]\nserver = {:?}\nbind = {:?}\n\
             fqdn = \"win1.test\"\nuuid = \"uuid-win1\"\nupdate_every = \"2s\"\nhook_timeout = \"120s\"\n\
             srv_discovery = false\nmetrics = \"\"\n",
            win(&state),
            win(&c.pki.ca()),
            win(&cert),
            win(&key),
            edge.addr,
            central,
            next_ip(),
        ),
    )
    .unwrap();
    let config_arg = win(&config);
    let agent = |args: &[&str]| {
        let mut all = vec!["agent"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", &config_arg]);
        wine.outpost(&all)
    };

    // Enrollment over QUIC from Wine (a plain UDP socket: Wine refuses quinn's options).
    agent(&["enroll", "--token", &token]).ok();
    assert!(cert.is_file() && key.is_file(), "the certificate and key are written");

    // The daemon as a Windows service.
    let installed = wine.outpost(&["agent", "service", "install", "--config", &config_arg]).ok();
    assert!(installed.stdout.contains("installed the OutpostAgent service"), "{}", installed.stdout);
    let query = wine.program("reg", &["query", r"HKLM\System\CurrentControlSet\Services\OutpostAgent"]).ok();
    assert!(
        query.stdout.contains("agent service run --config") && query.stdout.contains("LocalSystem"),
        "{}",
        query.stdout
    );
    wine.outpost(&["agent", "service", "install", "--config", &config_arg]).fails_with("already installed");
    wine.outpost(&["agent", "service", "start"]).ok();
    // One-shot commands reach it over the named pipe: flags it cannot honour are refused by it.
    let deadline = std::time::Instant::now() + LIMIT;
    let piped = loop {
        let r = agent(&["status", "--server", "192.0.2.1:7444"]);
        if r.code == Some(1) && r.stderr.contains("the agent daemon is running") {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the service's control pipe did not answer in {LIMIT:?}; its log:\n{}\nthe command said:\n{}",
            wine.service_log(),
            r.stderr
        );
    };
    assert!(piped.stderr.contains("--server"), "{}", piped.stderr);

    // Install both by a one-shot command the daemon runs.
    let out = agent(&["install", "hello", "greet"]).ok();
    assert!(out.stdout.contains("hello") && out.stdout.contains("greet"), "{}", out.stdout);
    let status: Value = serde_json::from_str(&agent(&["status", "--json"]).ok().stdout).unwrap();
    let line = |s: &Value, name: &str| {
        s["packages"].as_array().unwrap().iter().find(|p| p["name"] == name).cloned().unwrap_or(Value::Null)
    };
    assert_eq!(line(&status, "hello")["installed"], "1.0.0-1", "{status:#}");
    assert_eq!(line(&status, "greet")["status"], "OK", "{status:#}");
    let greeted = std::fs::read_to_string(state.join("greet.txt")).unwrap();
    assert_eq!(greeted.trim(), "greet 1-1 ops", "setup.cmd ran install with the package's environment");
    let file = wine.drive_c().join("Program Files/OutpostHello/hello.txt");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), "hello 1.0.0", "msiexec installed the MSI");

    // Central sees both: the packages, and the product in the registry's Uninstall keys.
    let product = wait_for(LIMIT, "central to list the MSI's product", || {
        reported_software(&admin, "win1.test").into_iter().find(|s| s["name"] == "Outpost Hello")
    });
    assert_eq!(product["version"], "1.0.0");
    assert_eq!(product["product_code"], "{8C1B1A4B-5A1F-4E4B-9C59-3C4A0F1E2D31}");
    assert_eq!(product["publisher"], "Outpost Test");
    assert_eq!(product["source"], "machine-64");
    let hosts = admin.hosts(&["pkg:greet"]);
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    let detail = admin.json(&["host", "win1.test"]);
    let os = &detail["inventory"]["sections"]["os"]["Os"];
    assert!(os["name"].as_str().unwrap_or_default().contains("Windows"), "{os}");

    // The audit asks msi.dll's registration and the hook.
    let audit = agent(&["audit"]).ok();
    assert!(audit.stdout.contains("{8C1B1A4B-5A1F-4E4B-9C59-3C4A0F1E2D31} 1.0.0 is installed"), "{}", audit.stdout);

    // A new version of the MSI: the daemon upgrades by itself (update_every 2s, upgrade auto).
    let msi_v2 = msi(c.dir(), "2.0.0", "8C1B1A4B-5A1F-4E4B-9C59-3C4A0F1E2D32");
    let hello2 = c.package_with(
        "hello",
        "2.0.0-1",
        "install_msi: hello-2.0.0.msi\n",
        &[("hello-2.0.0.msi", &std::fs::read(&msi_v2).unwrap())],
    );
    let seq = c.publish(&hello2, &server.addr);
    c.wait_sequence(&edge.addr, seq, LIMIT);
    wait_for(LIMIT, "the upgrade to hello 2.0.0-1", || {
        let s: Value = serde_json::from_str(&agent(&["status", "--json"]).stdout).ok()?;
        (line(&s, "hello")["installed"] == "2.0.0-1" && line(&s, "hello")["status"] == "OK").then_some(())
    });
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), "hello 2.0.0");
    let codes: Vec<Value> = software(&agent(&["inventory", "--json"]).ok().stdout)
        .iter()
        .filter(|s| s["name"] == "Outpost Hello")
        .map(|s| s["product_code"].clone())
        .collect();
    assert_eq!(codes, ["{8C1B1A4B-5A1F-4E4B-9C59-3C4A0F1E2D32}"], "the new product replaced the old one");

    // Removal: msiexec /x by product code; the product leaves the registry.
    agent(&["remove", "hello"]).ok();
    let left = software(&agent(&["inventory", "--json"]).ok().stdout);
    assert!(!left.iter().any(|s| s["name"] == "Outpost Hello"), "the product is gone from the registry: {left:?}");
    assert!(!file.exists(), "its file is gone");
    let key = r"HKLM\Software\Microsoft\Windows\CurrentVersion\Uninstall\{8C1B1A4B-5A1F-4E4B-9C59-3C4A0F1E2D32}";
    assert_ne!(wine.program("reg", &["query", key]).code, Some(0), "no Uninstall key is left");
    wait_for(LIMIT, "central to see the product gone", || {
        (!reported_software(&admin, "win1.test").iter().any(|s| s["name"] == "Outpost Hello")).then_some(())
    });

    // A packager on Windows: builds a package there (a setup.cmd written with CRLF) and
    // publishes it; the agent installs it from the edge.
    let src = c.dir().join("win-src");
    crate::common::source(
        &src,
        &crate::common::control("winpkg", "1-1", ""),
        &[("setup.cmd", b"@echo off\r\necho winpkg %1\r\nexit /b 0\r\n")],
    );
    let (signer_cert, signer_key) = (win(&c.admin.0), win(&c.admin.1));
    let built = wine
        .outpost(&[
            "pkg",
            "build",
            &win(&src),
            "--cert",
            &signer_cert,
            "--key",
            &signer_key,
            "--out",
            &win(&c.dir().join("win-dist")),
        ])
        .ok();
    let file = built.stdout.lines().last().unwrap_or_default().trim().to_string();
    assert!(file.ends_with(".outpost"), "{}", built.stdout);
    let ca = win(&c.pki.ca());
    // Repository commands from Windows, as the packager.
    let as_packager = |args: &[&str], repo: &str| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--repo", repo, "--ca", &ca, "--cert", &signer_cert, "--key", &signer_key]);
        wine.outpost(&all)
    };
    let published = as_packager(&["pkg", "publish", &file], &server.addr).ok();
    let seq: u64 =
        published.stdout.rsplit("snapshot ").next().and_then(|t| t.split_whitespace().next()?.parse().ok()).unwrap();
    c.wait_sequence(&edge.addr, seq, LIMIT);
    let out = agent(&["install", "winpkg"]).ok();
    assert!(out.stdout.contains("winpkg"), "{}", out.stdout);
    // `repo pull` from Windows: the package's files, verified, in a folder.
    let pulled_to = win(&c.dir().join("win-pulled"));
    let pulled = as_packager(&["repo", "pull", "greet", "--out", &pulled_to], &edge.addr).ok();
    assert!(pulled.stdout.trim().ends_with(r"win-pulled\greet_1-1"), "a Windows path: {}", pulled.stdout);
    let hook = std::fs::read(c.dir().join("win-pulled/greet_1-1/setup.cmd")).ok();
    assert_eq!(hook.as_deref(), Some(GREET_HOOK.as_bytes()), "{}", pulled.stdout);
    // The console from Windows.
    let (admin_cert, admin_key) = c.pki.issue("admin", "Windows Admin", &["--rights", "view"]);
    let hosts = wine
        .outpost(&[
            "console",
            "hosts",
            "--server",
            &central,
            "--ca",
            &ca,
            "--cert",
            &win(&admin_cert),
            "--key",
            &win(&admin_key),
        ])
        .ok();
    assert!(hosts.stdout.contains("win1.test"), "{}", hosts.stdout);

    // The service stops cleanly; then commands run in place, and the state is intact.
    wine.outpost(&["agent", "service", "stop"]).ok();
    let s: Value = serde_json::from_str(&agent(&["status", "--json"]).ok().stdout).unwrap();
    assert_eq!(line(&s, "greet")["status"], "OK", "{s:#}");
    assert_eq!(line(&s, "hello"), Value::Null, "{s:#}");
    wine.outpost(&["agent", "service", "uninstall"]).ok();
    wine.outpost(&["agent", "service", "start"]).fails_with("not installed");
    drop(edge);
    drop(server);
}
