//! `outpost pkg new NAME --template T`: a package source folder that `pkg build` accepts as it
//! is. The control lists every field in WAPT's layout (no comments: WAPT controls have none),
//! with values that work; the hook follows the documented contract (docs/packaging.md).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// What a template makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Template {
    /// A plain payload copied into place by `setup.sh`.
    Files,
    /// A `.deb` installed with `dpkg`/`apt` by `setup.sh`.
    Deb,
    /// An `.rpm` installed with `dnf`/`rpm` by `setup.sh`.
    Rpm,
    /// An `.msi` the agent installs itself (`install_msi`: msiexec, product code, removal).
    Msi,
    /// An `.exe` installer driven by `setup.ps1`.
    Exe,
    /// Agent settings (`agent.toml`), no hook.
    Config,
    /// Dependencies only: a group of packages.
    Group,
    /// Dependencies only: an OU's packages.
    Unit,
    /// Dependencies only: a directory group's packages.
    Profile,
    /// Dependencies only: one host's packages (named after the host).
    Host,
}

impl Template {
    /// Every template and its word.
    pub const ALL: [(Self, &'static str); 10] = [
        (Self::Files, "files"),
        (Self::Deb, "deb"),
        (Self::Rpm, "rpm"),
        (Self::Msi, "msi"),
        (Self::Exe, "exe"),
        (Self::Config, "config"),
        (Self::Group, "group"),
        (Self::Unit, "unit"),
        (Self::Profile, "profile"),
        (Self::Host, "host"),
    ];

    /// The template a word names.
    pub fn parse(word: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, w)| *w == word).map(|(t, _)| *t)
    }

    fn section(self) -> &'static str {
        match self {
            Self::Files | Self::Deb | Self::Rpm | Self::Msi | Self::Exe => "base",
            Self::Config => "config",
            Self::Group => "group",
            Self::Unit => "unit",
            Self::Profile => "profile",
            Self::Host => "host",
        }
    }

    fn target_os(self) -> &'static str {
        match self {
            Self::Deb | Self::Rpm | Self::Files => "linux",
            Self::Msi | Self::Exe => "windows",
            _ => "",
        }
    }

    fn description(self, name: &str) -> String {
        match self {
            Self::Files => format!("{name}: files copied into place"),
            Self::Deb => format!("{name}: a Debian package installed with apt"),
            Self::Rpm => format!("{name}: an RPM package installed with dnf"),
            Self::Msi => format!("{name}: a Windows Installer package"),
            Self::Exe => format!("{name}: a Windows installer run silently"),
            Self::Config => format!("{name}: agent settings"),
            Self::Group => format!("{name}: a group of packages"),
            Self::Unit => format!("the packages of the OU {name}"),
            Self::Profile => format!("the packages of the directory group {name}"),
            Self::Host => format!("the packages of the host {name}"),
        }
    }
}

/// The control of a new package (every field, WAPT's layout).
pub fn control(name: &str, template: Template, maintainer: &str) -> String {
    let fields: [(&str, String); 28] = [
        ("package", name.to_string()),
        ("version", "1.0-1".into()),
        ("architecture", "all".into()),
        ("section", template.section().into()),
        ("priority", "optional".into()),
        ("name", name.to_string()),
        ("categories", String::new()),
        ("maintainer", maintainer.to_string()),
        ("description", template.description(name)),
        ("depends", String::new()),
        ("conflicts", String::new()),
        ("maturity", "PROD".into()),
        ("locale", String::new()),
        ("target_os", template.target_os().into()),
        ("min_os_version", String::new()),
        ("max_os_version", String::new()),
        ("min_wapt_version", String::new()),
        ("min_outpost_version", String::new()),
        ("installed_size", String::new()),
        ("impacted_process", String::new()),
        ("audit_schedule", String::new()),
        ("editor", String::new()),
        ("keywords", String::new()),
        ("licence", String::new()),
        ("homepage", String::new()),
        ("valid_from", String::new()),
        ("valid_until", String::new()),
        ("changelog", String::new()),
    ];
    let mut text: String = fields.iter().map(|(k, v)| format!("{k:<18}: {v}\n")).collect();
    if template == Template::Msi {
        // The agent installs it with msiexec, detects it by product code and removes it.
        text.push_str(&format!("{:<18}: {name}.msi\n{:<18}: \n", "install_msi", "msi_properties"));
    }
    text
}

const SH_HEAD: &str = r#"#!/bin/sh
# Outpost package hook: run by the agent as `setup.sh ACTION` in the unpacked package folder.
# ACTION: install (also for upgrades), uninstall, audit, session-setup.
# Environment: OUTPOST_PACKAGE, OUTPOST_VERSION, OUTPOST_ACTION, OUTPOST_PACKAGE_DIR,
# OUTPOST_STATE_DIR, and each control field as OUTPOST_CONTROL_<FIELD> (upper case).
# Exit 0 when done; any other code is an error (audit: 0 OK, 1 WARNING, other ERROR).
# Everything printed is kept as the hook output shown in the console.
set -eu
"#;

fn files_hook(name: &str) -> String {
    format!(
        r#"{SH_HEAD}
target="/opt/{name}"

case "$1" in
  install)
    mkdir -p "$target"
    cp -R payload/. "$target/"
    echo "installed $OUTPOST_PACKAGE $OUTPOST_VERSION in $target"
    ;;
  uninstall)
    rm -rf "$target"
    echo "removed $target"
    ;;
  audit)
    if [ -d "$target" ]; then echo "OK: $target is there"; exit 0; fi
    echo "ERROR: $target is missing"
    exit 2
    ;;
  session-setup)
    ;;
  *)
    echo "unknown action: $1" >&2
    exit 2
    ;;
esac
"#
    )
}

fn deb_hook(name: &str) -> String {
    format!(
        r#"{SH_HEAD}
# Put the .deb file(s) beside this script; the Debian package name is:
debian_package="{name}"

case "$1" in
  install)
    DEBIAN_FRONTEND=noninteractive apt-get install -y ./*.deb
    ;;
  uninstall)
    DEBIAN_FRONTEND=noninteractive apt-get remove -y "$debian_package"
    ;;
  audit)
    if dpkg-query -W -f='${{Status}}' "$debian_package" 2>/dev/null | grep -q "install ok installed"; then
      echo "OK: $debian_package is installed"
      exit 0
    fi
    echo "ERROR: $debian_package is not installed"
    exit 2
    ;;
  session-setup)
    ;;
  *)
    echo "unknown action: $1" >&2
    exit 2
    ;;
esac
"#
    )
}

fn rpm_hook(name: &str) -> String {
    format!(
        r#"{SH_HEAD}
# Put the .rpm file(s) beside this script; the RPM package name is:
rpm_package="{name}"

case "$1" in
  install)
    if command -v dnf >/dev/null; then dnf install -y ./*.rpm; else rpm -U --replacepkgs ./*.rpm; fi
    ;;
  uninstall)
    if command -v dnf >/dev/null; then dnf remove -y "$rpm_package"; else rpm -e "$rpm_package"; fi
    ;;
  audit)
    if rpm -q "$rpm_package" >/dev/null 2>&1; then echo "OK: $rpm_package is installed"; exit 0; fi
    echo "ERROR: $rpm_package is not installed"
    exit 2
    ;;
  session-setup)
    ;;
  *)
    echo "unknown action: $1" >&2
    exit 2
    ;;
esac
"#
    )
}

const PS_HEAD: &str = r#"# Outpost package hook: run by the agent as `setup.ps1 ACTION` in the unpacked package folder.
# ACTION: install (also for upgrades), uninstall, audit, session-setup.
# Environment: OUTPOST_PACKAGE, OUTPOST_VERSION, OUTPOST_ACTION, OUTPOST_PACKAGE_DIR,
# OUTPOST_STATE_DIR, and each control field as OUTPOST_CONTROL_<FIELD> (upper case).
# Exit 0 when done (3010 and 1641: done, reboot pending); other codes are errors
# (audit: 0 OK, 1 WARNING, other ERROR). Everything written is kept as the hook output.
param([Parameter(Mandatory = $true)][string]$Action)
$ErrorActionPreference = "Stop"
"#;

fn msi_readme(name: &str) -> String {
    format!(
        "Put the Windows Installer file here as {name}.msi (or change install_msi in WAPT/control).\n\
         No script is needed: the agent reads its product code and version, runs\n\
         msiexec /i {name}.msi /qn /norestart with the properties of msi_properties\n\
         (NAME=value words, quoted when they hold spaces), checks the product is registered,\n\
         audits it by product code and removes it with msiexec /x. Exit codes 3010 and 1641\n\
         mean installed with a reboot pending. A setup.cmd or setup.ps1 beside it runs after\n\
         the MSI at install and before its removal.\n"
    )
}

fn exe_hook() -> String {
    format!(
        r#"{PS_HEAD}
# Put the installer beside this script and give its silent switches (they differ by vendor).
$installer = Get-ChildItem -Path . -Filter *.exe | Select-Object -First 1
$silent = @("/S")

switch ($Action) {{
  "install" {{
    $p = Start-Process $installer.FullName -ArgumentList $silent -Wait -PassThru
    exit $p.ExitCode
  }}
  "uninstall" {{
    # The vendor's uninstaller, as its Uninstall registry key names it.
    exit 0
  }}
  "audit" {{ exit 0 }}
  "session-setup" {{ exit 0 }}
  default {{ Write-Error "unknown action: $Action"; exit 2 }}
}}
"#
    )
}

const AGENT_TOML: &str = r#"# Agent settings a `config` package applies on every host that gets it (the fields of the
# agent's configuration a package may change). Remove the ones you do not set.
update_every = "2h"
upgrade = "auto"
maturities = ["PROD"]
hook_timeout = "30m"
"#;

/// `text` with CRLF line endings.
fn crlf(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\n', "\r\n")
}

/// Makes the package source folder `dir` (which must not exist yet) for `name`.
pub fn create(dir: &Path, name: &str, template: Template, maintainer: &str) -> Result<Vec<PathBuf>> {
    if dir.exists() {
        bail!("{} already exists: choose another folder (--out) or remove it", dir.display());
    }
    let mut written = Vec::new();
    let mut write = |rel: &str, text: &str, mode: u32| -> Result<()> {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
        }
        let mut f =
            outpost_actors::disk::AtomicFile::create(&path, mode).with_context(|| path.display().to_string())?;
        std::io::Write::write_all(&mut f, text.as_bytes()).with_context(|| path.display().to_string())?;
        f.commit().with_context(|| path.display().to_string())?;
        written.push(path);
        Ok(())
    };
    write("WAPT/control", &control(name, template, maintainer), 0o644)?;
    match template {
        Template::Files => {
            write("setup.sh", &files_hook(name), 0o755)?;
            write(
                "payload/README.txt",
                &format!("Files of {name}: everything in payload/ is copied to /opt/{name}.\n"),
                0o644,
            )?;
        }
        Template::Deb => write("setup.sh", &deb_hook(name), 0o755)?,
        Template::Rpm => write("setup.sh", &rpm_hook(name), 0o755)?,
        Template::Msi => write("README.txt", &crlf(&msi_readme(name)), 0o644)?,
        // Windows files with Windows line endings (cmd.exe needs them; editors expect them).
        Template::Exe => write("setup.ps1", &crlf(&exe_hook()), 0o644)?,
        Template::Config => write("agent.toml", AGENT_TOML, 0o644)?,
        Template::Group | Template::Unit | Template::Profile | Template::Host => {}
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::control::Control;
    use outpost_protocol::entry::PackageEntry;

    #[test]
    fn every_template_makes_a_control_the_builder_accepts() {
        for (t, word) in Template::ALL {
            assert_eq!(Template::parse(word), Some(t));
            let control = Control::parse(&control("tis-demo", t, "Alice")).unwrap();
            let entry = PackageEntry::from_control(&control).unwrap_or_else(|e| panic!("{word}: {e}"));
            assert_eq!((entry.name.as_str(), entry.version.as_str()), ("tis-demo", "1.0-1"), "{word}");
            assert_eq!(entry.section.to_string(), t.section(), "{word}");
            assert_eq!(control.get("maintainer"), Some("Alice"));
        }
        assert_eq!(Template::parse("bogus"), None);
    }

    #[test]
    fn windows_templates_have_windows_line_endings_and_an_msi_needs_no_script() {
        let dir = tempfile::tempdir().unwrap();
        let made = create(&dir.path().join("e"), "e", Template::Exe, "me").unwrap();
        let hook = std::fs::read_to_string(made.iter().find(|p| p.ends_with("setup.ps1")).unwrap()).unwrap();
        assert!(hook.contains("\r\n") && !hook.replace("\r\n", "").contains('\n'), "CRLF only");
        let made = create(&dir.path().join("m"), "tool", Template::Msi, "me").unwrap();
        assert!(!made.iter().any(|p| p.ends_with("setup.ps1") || p.ends_with("setup.sh")), "{made:?}");
        let control = Control::parse(&std::fs::read_to_string(dir.path().join("m/WAPT/control")).unwrap()).unwrap();
        assert_eq!(control.get("install_msi"), Some("tool.msi"));
        assert_eq!(control.get("target_os"), Some("windows"));
    }

    #[test]
    fn a_new_folder_is_never_written_over() {
        let dir = tempfile::tempdir().unwrap();
        let made = create(&dir.path().join("p"), "p", Template::Files, "me").unwrap();
        assert!(made.iter().any(|p| p.ends_with("setup.sh")));
        let e = create(&dir.path().join("p"), "p", Template::Files, "me").unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
    }
}
