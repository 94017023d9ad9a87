//! Who and what this machine is: its UUID (DMI product UUID, else machine-id), its names, its
//! operating system, architecture and locale. Configuration may override each of them (many
//! agents on one machine, in tests and demos, each claim their own identity).

use std::net::{IpAddr, UdpSocket};

/// The machine's identity and capabilities as the agent reports and resolves with them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Machine {
    /// BIOS UUID (lower-case), or machine-id shaped as a UUID.
    pub uuid: String,
    /// Fully qualified name.
    pub fqdn: String,
    /// Host name (first label of the FQDN).
    pub hostname: String,
    /// DNS domain (the FQDN without its first label), if any.
    pub domain: Option<String>,
    /// Names `target_os` may use: `linux`, then the distribution's `ID` and `ID_LIKE`.
    pub os: Vec<String>,
    /// The OS version (`VERSION_ID`).
    pub os_version: Option<String>,
    /// Architectures in preference order (`x64`, `arm64`, …).
    pub architectures: Vec<String>,
    /// Locale from the environment (`fr` for `fr_FR.UTF-8`).
    pub locale: Option<String>,
}

/// The file of a state folder holding the UUID `outpost agent reset-uuid` gave the machine.
pub const UUID_FILE: &str = "uuid";

/// The UUID `outpost agent reset-uuid` gave this machine, if it did (it stands before the
/// detected one; a UUID in the configuration stands before both).
pub fn reset_uuid(state_dir: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(state_dir.join(UUID_FILE)).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// The operating system gave no random bytes.
#[derive(Debug, thiserror::Error)]
#[error("no randomness is available from the operating system")]
pub struct NoRandomness;

/// A new random UUID (version 4), lower-case.
pub fn new_uuid() -> Result<String, NoRandomness> {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).map_err(|_| NoRandomness)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = outpost_protocol::hex::hex(&b);
    Ok(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
}

/// Detects the machine; `uuid` and `fqdn` override detection when given.
pub fn detect(uuid: Option<&str>, fqdn: Option<&str>) -> Machine {
    let uuid = uuid.map(str::to_string).filter(|u| !u.is_empty()).unwrap_or_else(detect_uuid).to_lowercase();
    let fqdn = fqdn.map(str::to_string).filter(|f| !f.is_empty()).unwrap_or_else(detect_fqdn).to_lowercase();
    let (hostname, domain) = match fqdn.split_once('.') {
        Some((h, d)) => (h.to_string(), Some(d.to_string())),
        None => (fqdn.clone(), None),
    };
    let (os, os_version) = detect_os();
    Machine { uuid, fqdn, hostname, domain, os, os_version, architectures: architectures(), locale: detect_locale() }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn detect_uuid() -> String {
    if let Some(u) = read_trimmed("/sys/class/dmi/id/product_uuid") {
        return u;
    }
    if let Some(id) = read_trimmed("/etc/machine-id").or_else(|| read_trimmed("/var/lib/dbus/machine-id"))
        && id.len() == 32
    {
        return format!("{}-{}-{}-{}-{}", &id[..8], &id[8..12], &id[12..16], &id[16..20], &id[20..]);
    }
    "00000000-0000-0000-0000-000000000000".into()
}

fn detect_fqdn() -> String {
    let host = read_trimmed("/proc/sys/kernel/hostname")
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    if host.contains('.') {
        return host;
    }
    // The resolver's domain, when the host name has none.
    let domain = std::fs::read_to_string("/etc/resolv.conf").ok().and_then(|text| {
        text.lines().find_map(|l| {
            let mut words = l.split_whitespace();
            match words.next() {
                Some("domain" | "search") => words.next().map(str::to_string),
                _ => None,
            }
        })
    });
    match domain {
        Some(d) if d != "." => format!("{host}.{d}"),
        _ => host,
    }
}

fn detect_os() -> (Vec<String>, Option<String>) {
    let mut names = vec![std::env::consts::OS.replace("macos", "darwin")];
    if cfg!(target_os = "macos") {
        names.push("macos".into());
    }
    let mut version = None;
    if let Ok(text) = std::fs::read_to_string("/etc/os-release") {
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else { continue };
            let v = v.trim_matches('"').to_lowercase();
            match k {
                "ID" => names.push(v),
                "ID_LIKE" => names.extend(v.split_whitespace().map(str::to_string)),
                "VERSION_ID" => version = Some(v),
                _ => {}
            }
        }
        let based: Vec<String> = names
            .iter()
            .filter(|n| ["debian", "rhel", "fedora"].contains(&n.as_str()))
            .map(|n| format!("{n}_based"))
            .collect();
        names.extend(based);
    }
    names.dedup();
    (names, version)
}

fn architectures() -> Vec<String> {
    match std::env::consts::ARCH {
        "x86_64" => vec!["x64".into()],
        "x86" => vec!["x86".into()],
        "aarch64" => vec!["arm64".into(), "aarch64".into()],
        "arm" => vec!["armhf".into(), "arm".into()],
        other => vec![other.into()],
    }
}

fn detect_locale() -> Option<String> {
    ["LC_ALL", "LC_MESSAGES", "LANG"].iter().find_map(|v| {
        let value = std::env::var(v).ok()?;
        let lang = value.split(['_', '.', '@']).next()?.to_lowercase();
        (!lang.is_empty() && lang != "c" && lang != "posix").then_some(lang)
    })
}

/// The local address this machine uses to reach `addr` (no packet is sent).
pub fn source_address(addr: std::net::SocketAddr, bind: Option<IpAddr>) -> Option<IpAddr> {
    let local = bind.unwrap_or(if addr.is_ipv4() { IpAddr::from([0, 0, 0, 0]) } else { IpAddr::from([0u16; 8]) });
    let socket = UdpSocket::bind((local, 0)).ok()?;
    socket.connect(addr).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}
