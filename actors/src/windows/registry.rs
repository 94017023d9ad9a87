//! What the registry says: software installed (the Uninstall keys, in the 64-bit, 32-bit and
//! per-user views), the Windows version, the machine's firmware and processor.

use windows_registry::{CURRENT_USER, Key, LOCAL_MACHINE};

/// `KEY_WOW64_64KEY` and `KEY_WOW64_32KEY`: which view of `SOFTWARE` a 64-bit process reads.
const VIEW_64: u32 = 0x0100;
const VIEW_32: u32 = 0x0200;
/// `KEY_READ`.
const READ: u32 = 0x20019;

const UNINSTALL: &str = r"SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall";

/// One program in an Uninstall key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    /// The key's name: the product code (`{…}`) for Windows Installer products.
    pub key: String,
    /// `DisplayName`.
    pub name: String,
    /// `DisplayVersion`.
    pub version: String,
    /// `Publisher`.
    pub publisher: String,
    /// `UninstallString`.
    pub uninstall: String,
    /// `machine-64`, `machine-32` or `user`.
    pub view: &'static str,
}

impl Installed {
    /// The product code, when the key is a Windows Installer product's.
    pub fn product_code(&self) -> Option<&str> {
        (self.key.starts_with('{') && self.key.ends_with('}') && self.key.len() == 38).then_some(self.key.as_str())
    }
}

fn open(root: &Key, path: &str, view: u32) -> Option<Key> {
    root.options().access(READ | view).open(path).ok()
}

fn text(key: &Key, name: &str) -> String {
    key.get_string(name).unwrap_or_default().trim().to_string()
}

/// Every program with a display name in the three Uninstall views (system components and
/// updates left out, as Programs and Features does).
pub fn installed() -> Vec<Installed> {
    let views: [(&Key, u32, &'static str); 3] =
        [(LOCAL_MACHINE, VIEW_64, "machine-64"), (LOCAL_MACHINE, VIEW_32, "machine-32"), (CURRENT_USER, 0, "user")];
    let mut out: Vec<Installed> = Vec::new();
    for (root, view, label) in views {
        let Some(list) = open(root, UNINSTALL, view) else { continue };
        let Ok(names) = list.keys() else { continue };
        for name in names {
            let Some(key) = open(&list, &name, view) else { continue };
            let display = text(&key, "DisplayName");
            if display.is_empty()
                || key.get_u32("SystemComponent").unwrap_or(0) == 1
                || !text(&key, "ParentKeyName").is_empty()
            {
                continue;
            }
            let entry = Installed {
                name: display,
                version: text(&key, "DisplayVersion"),
                publisher: text(&key, "Publisher"),
                uninstall: text(&key, "UninstallString"),
                key: name,
                view: label,
            };
            // Where the two machine views are one (32-bit Windows), each key would show twice.
            let twice = label == "machine-32"
                && out.iter().any(|o| o.view == "machine-64" && o.key == entry.key && o.name == entry.name);
            if !twice {
                out.push(entry);
            }
        }
    }
    out
}

/// The version a Windows Installer product is registered with, when it is installed (any view).
pub fn product_version(code: &str) -> Option<String> {
    for view in [VIEW_64, VIEW_32] {
        if let Some(key) = open(LOCAL_MACHINE, &format!(r"{UNINSTALL}\{code}"), view) {
            return Some(text(&key, "DisplayVersion"));
        }
    }
    open(CURRENT_USER, &format!(r"{UNINSTALL}\{code}"), 0).map(|k| text(&k, "DisplayVersion"))
}

/// Windows' product name, version (`23H2`, or the release id) and build (`22631.2861`).
pub fn windows_version() -> (String, String, String) {
    let Some(key) = open(LOCAL_MACHINE, r"SOFTWARE\Microsoft\Windows NT\CurrentVersion", VIEW_64) else {
        return Default::default();
    };
    let mut version = text(&key, "DisplayVersion");
    if version.is_empty() {
        version = text(&key, "ReleaseId");
    }
    if version.is_empty() {
        version = text(&key, "CurrentVersion");
    }
    let mut build = text(&key, "CurrentBuild");
    if build.is_empty() {
        build = text(&key, "CurrentBuildNumber");
    }
    if let Ok(ubr) = key.get_u32("UBR") {
        build = format!("{build}.{ubr}");
    }
    (text(&key, "ProductName"), version, build)
}

/// Firmware facts: manufacturer, model, serial (when the firmware gives one), BIOS version.
pub fn firmware() -> (String, String, String, String) {
    let Some(bios) = open(LOCAL_MACHINE, r"HARDWARE\DESCRIPTION\System\BIOS", 0) else { return Default::default() };
    (
        text(&bios, "SystemManufacturer"),
        text(&bios, "SystemProductName"),
        text(&bios, "SystemSerialNumber"),
        text(&bios, "BIOSVersion"),
    )
}

/// The first processor's name.
pub fn processor() -> String {
    open(LOCAL_MACHINE, r"HARDWARE\DESCRIPTION\System\CentralProcessor\0", 0)
        .map(|k| text(&k, "ProcessorNameString"))
        .unwrap_or_default()
}
