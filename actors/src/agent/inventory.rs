//! What the agent reports about its machine: hardware, CPU, memory, file systems, network
//! interfaces, the operating system, installed software, and (from the agent's own state) its
//! packages with their statuses and the last update. Linux reads `/sys`, `/proc` and dpkg or
//! rpm; Windows the registry (Uninstall keys in the 64-bit, 32-bit and per-user views, the
//! Windows version, firmware) and the system's API. Anything missing is reported empty, with a
//! note saying what could not be read, rather than failing the report.

use outpost_protocol::central::{HostFacts, Section, SnapshotState, UpdateResult};

use super::report::StatusReport;

/// Linux (and other Unix systems): `/sys`, `/proc`, dpkg or rpm.
#[cfg(not(windows))]
mod platform {
    use std::path::Path;
    use std::process::Command;

    use outpost_protocol::central::{Cpu, Disk, Hardware, NetInterface, Os, Program};

    fn read(path: impl AsRef<Path>) -> String {
        std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
    }

    /// Hardware from DMI.
    pub fn hardware() -> Hardware {
        let dmi = Path::new("/sys/class/dmi/id");
        Hardware {
            vendor: read(dmi.join("sys_vendor")),
            product: read(dmi.join("product_name")),
            serial: read(dmi.join("product_serial")),
            bios: read(dmi.join("bios_version")),
        }
    }

    /// The operating system from `/etc/os-release` and the kernel.
    pub fn os() -> Os {
        let release = read("/etc/os-release");
        let field = |k: &str| {
            release
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .map(|v| v.trim_matches('"').to_string())
                .unwrap_or_default()
        };
        Os {
            name: field("NAME"),
            version: field("VERSION_ID"),
            kernel: read("/proc/sys/kernel/osrelease"),
            arch: std::env::consts::ARCH.to_string(),
        }
    }

    /// Processor model and logical processors.
    pub fn cpu() -> Cpu {
        let info = read("/proc/cpuinfo");
        let model = info
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_default();
        let threads = std::thread::available_parallelism().map_or(0, |n| u32::try_from(n.get()).unwrap_or(u32::MAX));
        Cpu { model, threads }
    }

    /// Total memory in bytes.
    pub fn memory() -> u64 {
        read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    }

    /// Real file systems (block devices) with their size and free space (Linux: `/proc/mounts`;
    /// elsewhere none yet).
    #[cfg_attr(not(unix), allow(unused_mut, unused_variables))]
    pub fn disks() -> Vec<Disk> {
        let mut out = Vec::new();
        for line in read("/proc/mounts").lines() {
            let mut f = line.split_whitespace();
            let (Some(dev), Some(mount), Some(fs)) = (f.next(), f.next(), f.next()) else { continue };
            if !dev.starts_with("/dev/") || out.iter().any(|d: &Disk| d.mount == mount) {
                continue;
            }
            #[cfg(unix)]
            if let Ok(st) = rustix::fs::statvfs(mount) {
                out.push(Disk {
                    mount: mount.to_string(),
                    fs: fs.to_string(),
                    size: st.f_blocks * st.f_frsize,
                    free: st.f_bavail * st.f_frsize,
                });
            }
        }
        out
    }

    /// Network interfaces with their hardware and IP addresses (`ip -j addr` when present).
    pub fn network() -> Vec<NetInterface> {
        let mut out: Vec<NetInterface> = std::fs::read_dir("/sys/class/net")
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        NetInterface { mac: read(e.path().join("address")), name, addresses: vec![] }
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        if let Ok(o) = Command::new("ip").args(["-j", "addr"]).output()
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&o.stdout)
        {
            for i in v.as_array().into_iter().flatten() {
                let Some(name) = i["ifname"].as_str() else { continue };
                let addrs: Vec<String> = i["addr_info"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| Some(format!("{}/{}", a["local"].as_str()?, a["prefixlen"].as_u64()?)))
                    .collect();
                if let Some(n) = out.iter_mut().find(|n| n.name == name) {
                    n.addresses = addrs;
                }
            }
        }
        out
    }

    /// Software installed by the system's package manager (dpkg, else rpm), sorted by name.
    pub fn software(notes: &mut Vec<String>) -> Vec<Program> {
        let run = |cmd: &str, args: &[&str]| {
            Command::new(cmd).args(args).output().ok().filter(|o| o.status.success()).map(|o| o.stdout)
        };
        let mut source = "dpkg";
        let text = run("dpkg-query", &["-W", "-f", "${db:Status-Abbrev}\t${Package}\t${Version}\n"])
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .lines()
                    .filter(|l| l.starts_with("ii"))
                    .map(|l| l.split_once('\t').map_or("", |(_, rest)| rest).to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .or_else(|| {
                source = "rpm";
                run("rpm", &["-qa", "--qf", "%{NAME}\t%{VERSION}-%{RELEASE}\n"])
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            });
        let Some(text) = text else {
            notes.push("software: neither dpkg-query nor rpm answered, so no installed software is listed".into());
            return Vec::new();
        };
        let mut out: Vec<Program> = text
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(n, v)| Program {
                name: n.to_string(),
                version: v.to_string(),
                source: source.into(),
                ..Program::default()
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Windows: the registry and the system's API.
#[cfg(windows)]
mod platform {
    use outpost_protocol::central::{Cpu, Disk, Hardware, NetInterface, Os, Program};

    use crate::windows::{registry, system};

    /// Firmware facts from the registry.
    pub fn hardware() -> Hardware {
        let (vendor, product, serial, bios) = registry::firmware();
        Hardware { vendor, product, serial, bios }
    }

    /// Windows' name, version and build.
    pub fn os() -> Os {
        let (name, version, build) = registry::windows_version();
        Os { name, version, kernel: build, arch: std::env::consts::ARCH.to_string() }
    }

    /// Processor name and logical processors.
    pub fn cpu() -> Cpu {
        let threads = std::thread::available_parallelism().map_or(0, |n| u32::try_from(n.get()).unwrap_or(u32::MAX));
        Cpu { model: registry::processor(), threads }
    }

    /// Physical memory.
    pub fn memory() -> u64 {
        system::memory()
    }

    /// Fixed drives.
    pub fn disks() -> Vec<Disk> {
        system::drives().into_iter().map(|d| Disk { mount: d.root, fs: d.fs, size: d.size, free: d.free }).collect()
    }

    /// Network adapters.
    pub fn network() -> Vec<NetInterface> {
        let mut out: Vec<NetInterface> = system::adapters()
            .into_iter()
            .map(|a| NetInterface { name: a.name, mac: a.mac, addresses: a.addresses })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Programs in the Uninstall keys, sorted by name.
    pub fn software(notes: &mut Vec<String>) -> Vec<Program> {
        let mut out: Vec<Program> = registry::installed()
            .into_iter()
            .map(|i| Program {
                product_code: i.product_code().map(str::to_string),
                name: i.name,
                version: i.version,
                publisher: i.publisher,
                source: i.view.to_string(),
                uninstall: i.uninstall,
            })
            .collect();
        if out.is_empty() {
            notes.push("software: the registry's Uninstall keys list nothing".into());
        }
        out.sort();
        out
    }
}

/// The machine's sections (hardware and software; collected each time, cheap).
pub fn machine_sections(host: HostFacts) -> Vec<Section> {
    let mut notes = Vec::new();
    let software = platform::software(&mut notes);
    let hardware = platform::hardware();
    if hardware == outpost_protocol::central::Hardware::default() {
        notes.push(format!(
            "hardware: {}",
            if cfg!(windows) { "the registry has no BIOS key" } else { "no DMI in /sys" }
        ));
    }
    let os = platform::os();
    if os.name.is_empty() {
        notes.push("os: the system's name and version could not be read".into());
    }
    vec![
        Section::Host(host),
        Section::Hardware(hardware),
        Section::Os(os),
        Section::Cpu(platform::cpu()),
        Section::Memory(platform::memory()),
        Section::Disks(platform::disks()),
        Section::Network(platform::network()),
        Section::Programs(software),
        Section::Notes(notes),
    ]
}

/// The agent's own sections, from `status`.
pub fn agent_sections(status: &StatusReport) -> Vec<Section> {
    let packages = status.packages.clone();
    vec![
        Section::PackagesV2 { host_status: status.host_status, packages },
        Section::Transfers(status.bytes_by_repo.clone()),
        Section::LastUpdate(status.last_update.as_ref().map(|u| UpdateResult {
            at: u.at,
            ok: u.ok,
            message: u.message.clone(),
            repo: u.repo.clone(),
        })),
        Section::Snapshot(status.snapshot.as_ref().map(|s| SnapshotState {
            sequence: s.sequence,
            created: s.created,
            expires: s.expires,
            expired: s.expired,
        })),
    ]
}
