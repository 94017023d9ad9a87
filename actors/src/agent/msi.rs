//! Packages that install a Windows Installer file without a script, as WAPT's
//! `install_msi_if_needed` does: the control field `install_msi: setup.msi` names an `.msi` in
//! the package, `msi_properties: ALLUSERS=1 "INSTALLDIR=C:\Program Files\App"` adds public
//! properties. The agent reads the file's product code and version (msi.dll), runs
//! `msiexec /i … /qn /norestart` unless that very version is already registered, checks the
//! product is then in the registry's Uninstall keys, removes the product an earlier version of
//! the package installed if it is still there, audits by product code, and uninstalls by it
//! (`msiexec /x {code} /qn`). Exit codes 3010 and 1641 are success with a reboot pending.

use std::path::{Component, Path};

use outpost_protocol::control::Control;

/// The control field naming the `.msi` to install.
pub const FIELD: &str = outpost_protocol::package::INSTALL_MSI_FIELD;
/// The control field with public properties given to msiexec.
pub const PROPERTIES_FIELD: &str = "msi_properties";

/// Why an `install_msi` package could not be installed, audited or removed.
#[derive(Debug, thiserror::Error)]
pub enum MsiError {
    /// The field names no usable file.
    #[error("install_msi: {0}")]
    Field(String),
    /// The properties cannot be read.
    #[error("msi_properties: {0}")]
    Properties(String),
    /// Not on Windows.
    #[error("install_msi needs Windows Installer, and this host runs {0}")]
    NotWindows(&'static str),
    /// The file cannot be read as an MSI.
    #[error("{0}")]
    Read(String),
    /// msiexec could not be started or was stopped.
    #[error("msiexec {0}")]
    Run(String),
    /// msiexec failed.
    #[error("msiexec {action} {target} failed with exit code {code} ({})", meaning(*code))]
    Failed { action: &'static str, target: String, code: i32 },
    /// msiexec said it worked, but the registry disagrees.
    #[error("{0}")]
    NotRegistered(String),
}

/// The `.msi` a package's control asks to install (`None` when the field is absent); the path
/// is checked to name a file inside the package.
pub fn requested(control: &Control) -> Result<Option<&str>, MsiError> {
    let Some(file) = control.get(FIELD).map(str::trim) else { return Ok(None) };
    let path = Path::new(file);
    if file.is_empty() || !file.to_ascii_lowercase().ends_with(".msi") {
        return Err(MsiError::Field(format!("{file} is not the name of an .msi file in the package")));
    }
    if !path.components().all(|c| matches!(c, Component::Normal(_))) || file.contains([':', '\\']) {
        return Err(MsiError::Field(format!(
            "{file} must be a path inside the package, with / between folders (no .., no drive, no root)"
        )));
    }
    Ok(Some(file))
}

/// The public properties of `msi_properties`: `NAME=value` words, a value with spaces in double
/// quotes (`"INSTALLDIR=C:\Program Files\App"` or `INSTALLDIR="C:\Program Files\App"`). Names
/// are upper-case letters, digits and `_` (Windows Installer's public properties).
pub fn properties(control: &Control) -> Result<Vec<String>, MsiError> {
    let text = control.get(PROPERTIES_FIELD).unwrap_or_default();
    let mut words = Vec::new();
    let (mut word, mut quoted, mut any) = (String::new(), false, false);
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if quoted {
        return Err(MsiError::Properties(format!("a quote is not closed in {text:?}")));
    }
    if any {
        words.push(word);
    }
    for w in &words {
        let Some((name, _)) = w.split_once('=') else {
            return Err(MsiError::Properties(format!("{w:?} is not NAME=value")));
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
            return Err(MsiError::Properties(format!(
                "{name:?} is not a public property (upper-case letters, digits and _)"
            )));
        }
    }
    Ok(words)
}

/// What a Windows Installer exit code means, for messages.
pub fn meaning(code: i32) -> &'static str {
    match code {
        0 => "success",
        1602 => "cancelled by the user",
        1603 => "a fatal error during installation; see the log",
        1605 => "this product is not installed",
        1618 => "another installation is in progress; it is retried at the next upgrade",
        1619 => "the package could not be opened",
        1620 => "the package is not a valid Windows Installer package",
        1624 => "a transform could not be applied",
        1625 => "the installation is forbidden by system policy",
        1633 => "the package is not for this platform (processor architecture)",
        1638 => "another version of this product is already installed",
        1639 => "invalid command line: check msi_properties",
        1641 => "success; the installer started a reboot",
        3010 => "success; a reboot is required to complete",
        _ => "see the Windows Installer error codes",
    }
}

/// How an MSI install or removal ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsiOutcome {
    /// What was done, for the package's output.
    pub output: String,
    /// True when msiexec asked for a reboot.
    pub reboot: bool,
}

#[cfg(windows)]
pub use self::windows::{audit, install, uninstall};

/// Where Windows Installer is not, `install_msi` packages fail with a clear message.
#[cfg(not(windows))]
pub async fn install(
    _dir: &Path,
    _control: &Control,
    _previous: Option<&super::state::MsiProduct>,
    _logs: &Path,
    _limit: std::time::Duration,
) -> Result<(super::state::MsiProduct, MsiOutcome), MsiError> {
    Err(MsiError::NotWindows(std::env::consts::OS))
}

/// Where Windows Installer is not, `install_msi` packages fail with a clear message.
#[cfg(not(windows))]
pub async fn uninstall(
    _product: &super::state::MsiProduct,
    _logs: &Path,
    _limit: std::time::Duration,
) -> Result<MsiOutcome, MsiError> {
    Err(MsiError::NotWindows(std::env::consts::OS))
}

/// Where Windows Installer is not, nothing can be said of a product.
#[cfg(not(windows))]
pub fn audit(_product: &super::state::MsiProduct) -> Result<String, String> {
    Err(format!("install_msi needs Windows Installer, and this host runs {}", std::env::consts::OS))
}

#[cfg(windows)]
mod windows {
    use std::ffi::OsString;
    use std::path::Path;
    use std::time::Duration;

    use outpost_protocol::control::Control;

    use super::{MsiError, MsiOutcome, properties, requested};
    use crate::agent::hooks::REBOOT_CODES;
    use crate::agent::state::MsiProduct;
    use crate::windows::{msi, registry};

    /// `ERROR_UNKNOWN_PRODUCT`: removing what is not there.
    const UNKNOWN_PRODUCT: i32 = 1605;

    async fn msiexec(args: Vec<OsString>, limit: Duration) -> Result<i32, MsiError> {
        let mut cmd = tokio::process::Command::new("msiexec.exe");
        cmd.args(&args).kill_on_drop(true).stdin(std::process::Stdio::null());
        let mut child = cmd.spawn().map_err(|e| MsiError::Run(format!("could not be started: {e}")))?;
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(Ok(status)) => Ok(status.code().unwrap_or(-1)),
            Ok(Err(e)) => Err(MsiError::Run(format!("could not be waited for: {e}"))),
            Err(_) => {
                let _ = child.kill().await;
                Err(MsiError::Run(format!("ran past its time limit of {} s and was stopped", limit.as_secs())))
            }
        }
    }

    fn log_file(logs: &Path, what: &str) -> std::path::PathBuf {
        let _ = std::fs::create_dir_all(logs);
        logs.join(format!("{}.log", what.replace(['{', '}'], "")))
    }

    /// Installs the package's MSI (see the module documentation); `previous` is the product an
    /// earlier version of the package installed.
    pub async fn install(
        dir: &Path,
        control: &Control,
        previous: Option<&MsiProduct>,
        logs: &Path,
        limit: Duration,
    ) -> Result<(MsiProduct, MsiOutcome), MsiError> {
        let file = requested(control)?.ok_or_else(|| MsiError::Field("the field is missing".into()))?;
        let path = dir.join(file);
        if !path.is_file() {
            return Err(MsiError::Field(format!("{file} is not in the package")));
        }
        let props = properties(control)?;
        let read = |name: &str| {
            msi::property(&path, name).map_err(|e| MsiError::Read(e.to_string()))?.ok_or_else(|| {
                MsiError::Read(format!("{file} has no {name} property: is it a Windows Installer file?"))
            })
        };
        let product = MsiProduct { code: read("ProductCode")?, version: read("ProductVersion")? };
        let mut output = String::new();
        let mut reboot = false;
        if registry::product_version(&product.code).as_deref() == Some(product.version.as_str()) {
            output.push_str(&format!("{file}: {} {} is already installed\n", product.code, product.version));
        } else {
            let log = log_file(logs, &product.code);
            let mut args: Vec<OsString> = vec!["/i".into(), path.clone().into(), "/qn".into(), "/norestart".into()];
            args.push("/l*".into());
            args.push(log.clone().into());
            args.extend(props.iter().map(OsString::from));
            let code = msiexec(args, limit).await?;
            if code != 0 && !REBOOT_CODES.contains(&code) {
                return Err(MsiError::Failed {
                    action: "/i",
                    target: format!("{file} (log: {})", log.display()),
                    code,
                });
            }
            reboot |= REBOOT_CODES.contains(&code);
            output.push_str(&format!(
                "msiexec /i {file} /qn{}: exit code {code} ({}); log in {}\n",
                props.iter().map(|p| format!(" {p}")).collect::<String>(),
                super::meaning(code),
                log.display()
            ));
            if registry::product_version(&product.code).is_none() {
                return Err(MsiError::NotRegistered(format!(
                    "msiexec reported success, but {} ({file}) is not in the registry's Uninstall keys",
                    product.code
                )));
            }
        }
        // The product an earlier version installed, when this one did not replace it.
        if let Some(old) = previous.filter(|p| !p.code.eq_ignore_ascii_case(&product.code))
            && registry::product_version(&old.code).is_some()
        {
            let removed = uninstall(old, logs, limit).await?;
            reboot |= removed.reboot;
            output.push_str(&removed.output);
        }
        Ok((product, MsiOutcome { output, reboot }))
    }

    /// Removes a product by its code (`msiexec /x`); a product already gone is removed.
    pub async fn uninstall(product: &MsiProduct, logs: &Path, limit: Duration) -> Result<MsiOutcome, MsiError> {
        if registry::product_version(&product.code).is_none() {
            return Ok(MsiOutcome {
                output: format!("{} is not installed: nothing to remove\n", product.code),
                reboot: false,
            });
        }
        let log = log_file(logs, &format!("{}-remove", product.code));
        let args: Vec<OsString> = vec![
            "/x".into(),
            product.code.clone().into(),
            "/qn".into(),
            "/norestart".into(),
            "/l*".into(),
            log.clone().into(),
        ];
        let code = msiexec(args, limit).await?;
        if code != 0 && code != UNKNOWN_PRODUCT && !REBOOT_CODES.contains(&code) {
            return Err(MsiError::Failed {
                action: "/x",
                target: format!("{} (log: {})", product.code, log.display()),
                code,
            });
        }
        if registry::product_version(&product.code).is_some() {
            return Err(MsiError::NotRegistered(format!(
                "msiexec /x {} reported success, but the product is still in the registry",
                product.code
            )));
        }
        Ok(MsiOutcome {
            output: format!("msiexec /x {} /qn: exit code {code} ({})\n", product.code, super::meaning(code)),
            reboot: REBOOT_CODES.contains(&code),
        })
    }

    /// Whether the product is still installed: `Ok` with what was found, `Err` saying what is wrong.
    pub fn audit(product: &MsiProduct) -> Result<String, String> {
        match registry::product_version(&product.code) {
            Some(v) if v == product.version => Ok(format!("{} {} is installed", product.code, v)),
            Some(v) => Err(format!("{} is installed in version {v}, not {}", product.code, product.version)),
            None => Err(format!("{} ({}) is no longer installed", product.code, product.version)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(fields: &str) -> Control {
        Control::parse(&format!("package: p\nversion: 1\n{fields}")).unwrap()
    }

    #[test]
    fn the_msi_named_must_be_a_file_inside_the_package() {
        assert_eq!(requested(&control("")).unwrap(), None);
        assert_eq!(requested(&control("install_msi: app.msi\n")).unwrap(), Some("app.msi"));
        assert_eq!(requested(&control("install_msi: bin/App.MSI\n")).unwrap(), Some("bin/App.MSI"));
        for bad in ["../app.msi", "/tmp/app.msi", "C:\\app.msi", "app.exe", "c:app.msi", "bin\\..\\..\\app.msi"] {
            let e = requested(&control(&format!("install_msi: {bad}\n"))).unwrap_err().to_string();
            assert!(e.starts_with("install_msi:") && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn properties_are_public_names_with_values_quoted_when_they_have_spaces() {
        let c = control("msi_properties: ALLUSERS=1 \"INSTALLDIR=C:\\Program Files\\App\" MODE=\"a b\"\n");
        assert_eq!(properties(&c).unwrap(), ["ALLUSERS=1", "INSTALLDIR=C:\\Program Files\\App", "MODE=a b"]);
        assert!(properties(&control("")).unwrap().is_empty());
        for (bad, says) in [
            ("msi_properties: ALLUSERS\n", "not NAME=value"),
            ("msi_properties: allusers=1\n", "not a public property"),
            ("msi_properties: A=\"open\n", "not closed"),
        ] {
            let e = properties(&control(bad)).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn exit_codes_are_explained() {
        assert!(meaning(1603).contains("fatal"));
        assert!(meaning(3010).contains("reboot"));
        let e = MsiError::Failed { action: "/i", target: "app.msi".into(), code: 1618 };
        assert_eq!(
            e.to_string(),
            "msiexec /i app.msi failed with exit code 1618 (another installation is in progress; it is retried at \
             the next upgrade)"
        );
    }

    #[cfg(not(windows))]
    #[tokio::test]
    async fn elsewhere_than_windows_an_msi_package_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let c = control("install_msi: app.msi\n");
        let e = install(dir.path(), &c, None, dir.path(), std::time::Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("install_msi needs Windows Installer, and this host runs {}", std::env::consts::OS)
        );
    }
}
