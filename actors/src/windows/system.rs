//! System facts from the Windows API: memory, fixed drives, network adapters, time since boot.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use windows_sys::Win32::NetworkManagement::IpHelper::{
    GAA_FLAG_SKIP_ANYCAST, GAA_FLAG_SKIP_MULTICAST, GetAdaptersAddresses, IP_ADAPTER_ADDRESSES_LH,
};
use windows_sys::Win32::Networking::WinSock::{AF_INET, AF_INET6, AF_UNSPEC, SOCKADDR, SOCKADDR_IN, SOCKADDR_IN6};
use windows_sys::Win32::Storage::FileSystem::{
    GetDiskFreeSpaceExW, GetDriveTypeW, GetLogicalDriveStringsW, GetVolumeInformationW,
};
use windows_sys::Win32::System::SystemInformation::{GetTickCount64, GlobalMemoryStatusEx, MEMORYSTATUSEX};

use super::{from_buffer, from_wide, wide};

/// `DRIVE_FIXED`.
const FIXED: u32 = 3;

/// Physical memory in bytes (0 when unknown).
pub fn memory() -> u64 {
    let mut status = MEMORYSTATUSEX {
        dwLength: u32::try_from(std::mem::size_of::<MEMORYSTATUSEX>()).unwrap_or(0),
        ..Default::default()
    };
    // SAFETY: `status` is a properly sized MEMORYSTATUSEX with its length set.
    if unsafe { GlobalMemoryStatusEx(&mut status) } == 0 { 0 } else { status.ullTotalPhys }
}

/// Milliseconds since the machine started.
pub fn uptime_ms() -> u64 {
    // SAFETY: no arguments, no state.
    unsafe { GetTickCount64() }
}

/// One fixed drive: its root (`C:\`), file system, size and free bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drive {
    /// `C:\`.
    pub root: String,
    /// `NTFS`.
    pub fs: String,
    /// Bytes.
    pub size: u64,
    /// Bytes free for the caller.
    pub free: u64,
}

/// The fixed drives.
pub fn drives() -> Vec<Drive> {
    let mut buf = vec![0u16; 512];
    // SAFETY: `buf` holds the length given.
    let n = unsafe { GetLogicalDriveStringsW(u32::try_from(buf.len()).unwrap_or(0), buf.as_mut_ptr()) } as usize;
    if n == 0 || n > buf.len() {
        return Vec::new();
    }
    buf[..n]
        .split(|&c| c == 0)
        .filter(|r| !r.is_empty())
        .filter_map(|root| {
            let root = String::from_utf16_lossy(root);
            let w = wide(&root);
            // SAFETY: `w` is NUL-terminated.
            if unsafe { GetDriveTypeW(w.as_ptr()) } != FIXED {
                return None;
            }
            let (mut free, mut size, mut total_free) = (0u64, 0u64, 0u64);
            // SAFETY: `w` is NUL-terminated; the out-pointers are locals.
            if unsafe { GetDiskFreeSpaceExW(w.as_ptr(), &mut free, &mut size, &mut total_free) } == 0 {
                return None;
            }
            let mut fs = vec![0u16; 64];
            // SAFETY: `fs` holds the length given; the other buffers are not asked for.
            let named = unsafe {
                GetVolumeInformationW(
                    w.as_ptr(),
                    std::ptr::null_mut(),
                    0,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    fs.as_mut_ptr(),
                    u32::try_from(fs.len()).unwrap_or(0),
                )
            };
            let fs = if named == 0 { String::new() } else { from_buffer(&fs) };
            Some(Drive { root, fs, size, free })
        })
        .collect()
}

/// One network adapter: its name, hardware address and IP addresses with prefix length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adapter {
    /// The name shown to users (`Ethernet`).
    pub name: String,
    /// `aa:bb:cc:dd:ee:ff`, or empty.
    pub mac: String,
    /// `192.0.2.10/24`.
    pub addresses: Vec<String>,
}

/// The network adapters (empty when the API fails).
pub fn adapters() -> Vec<Adapter> {
    let mut size: u32 = 16 * 1024;
    for _ in 0..3 {
        // u64 elements: the list's structures need 8-byte alignment.
        let mut buf = vec![0u64; (size as usize).div_ceil(8)];
        let first = buf.as_mut_ptr().cast::<IP_ADAPTER_ADDRESSES_LH>();
        // SAFETY: `buf` holds `size` bytes, aligned for the structures written into it.
        let rc = unsafe {
            GetAdaptersAddresses(
                u32::from(AF_UNSPEC),
                GAA_FLAG_SKIP_ANYCAST | GAA_FLAG_SKIP_MULTICAST,
                std::ptr::null(),
                first,
                &mut size,
            )
        };
        if rc == 111 {
            continue; // ERROR_BUFFER_OVERFLOW: `size` now says how much is needed
        }
        if rc != 0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut next = first.cast_const();
        while !next.is_null() {
            // SAFETY: the API filled a linked list inside `buf`, which is alive here.
            let adapter = unsafe { &*next };
            let mac_len = (adapter.PhysicalAddressLength as usize).min(adapter.PhysicalAddress.len());
            let mac =
                adapter.PhysicalAddress[..mac_len].iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
            let mut addresses = Vec::new();
            let mut unicast = adapter.FirstUnicastAddress.cast_const();
            while !unicast.is_null() {
                // SAFETY: an element of the same list.
                let u = unsafe { &*unicast };
                // SAFETY: the socket address the API points at, inside `buf`.
                if let Some(ip) = unsafe { ip_of(u.Address.lpSockaddr) } {
                    addresses.push(format!("{ip}/{}", u.OnLinkPrefixLength));
                }
                unicast = u.Next.cast_const();
            }
            // SAFETY: a NUL-terminated name inside `buf`.
            let name = unsafe { from_wide(adapter.FriendlyName) };
            out.push(Adapter { name, mac, addresses });
            next = adapter.Next.cast_const();
        }
        return out;
    }
    Vec::new()
}

/// # Safety
/// `addr` is null or points to a socket address of the size its family says.
unsafe fn ip_of(addr: *const SOCKADDR) -> Option<IpAddr> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: every socket address starts with its family.
    match unsafe { (*addr).sa_family } {
        AF_INET => {
            // SAFETY: the family says it is a SOCKADDR_IN.
            let v4 = unsafe { &*addr.cast::<SOCKADDR_IN>() };
            // SAFETY: every view of the address union is four bytes.
            let bytes = unsafe { v4.sin_addr.S_un.S_addr }.to_ne_bytes();
            Some(IpAddr::V4(Ipv4Addr::from(bytes)))
        }
        AF_INET6 => {
            // SAFETY: the family says it is a SOCKADDR_IN6.
            let v6 = unsafe { &*addr.cast::<SOCKADDR_IN6>() };
            // SAFETY: every view of the address union is sixteen bytes.
            Some(IpAddr::V6(Ipv6Addr::from(unsafe { v6.sin6_addr.u.Byte })))
        }
        _ => None,
    }
}

/// Sends this process's standard output and error to `file` (a service has no console: what
/// the daemon says goes to its log file instead). The file stays open for the process's life.
pub fn redirect_output(file: std::fs::File) -> std::io::Result<()> {
    use std::os::windows::io::IntoRawHandle;
    use windows_sys::Win32::System::Console::{STD_ERROR_HANDLE, STD_OUTPUT_HANDLE, SetStdHandle};
    let handle = file.into_raw_handle();
    for which in [STD_OUTPUT_HANDLE, STD_ERROR_HANDLE] {
        // SAFETY: `handle` is an open file handle we own and never close (leaked on purpose).
        if unsafe { SetStdHandle(which, handle) } == 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The machine's program data folder (`C:\ProgramData`), from the shell's known folders: the
/// `ProgramData` variable is not what every process sees (services under some systems get
/// another), the known folder is.
pub fn program_data() -> Option<std::path::PathBuf> {
    use windows_sys::Win32::System::Com::CoTaskMemFree;
    use windows_sys::Win32::UI::Shell::{FOLDERID_ProgramData, SHGetKnownFolderPath};
    let mut path: *mut u16 = std::ptr::null_mut();
    // SAFETY: the GUID is a static; `path` receives a CoTaskMemAlloc'd string freed below.
    let rc = unsafe { SHGetKnownFolderPath(&FOLDERID_ProgramData, 0, std::ptr::null_mut(), &mut path) };
    // SAFETY: on success a NUL-terminated string; on failure null (read as empty).
    let text = if rc == 0 { unsafe { from_wide(path) } } else { String::new() };
    // SAFETY: freeing what the call allocated (null is allowed).
    unsafe { CoTaskMemFree(path.cast_const().cast()) };
    (!text.is_empty()).then(|| std::path::PathBuf::from(text))
}

/// Running processes: (pid, executable name such as `notepad.exe`).
pub fn processes() -> Vec<(u32, String)> {
    use windows_sys::Win32::Foundation::{CloseHandle, INVALID_HANDLE_VALUE};
    use windows_sys::Win32::System::Diagnostics::ToolHelp::{
        CreateToolhelp32Snapshot, PROCESSENTRY32W, Process32FirstW, Process32NextW, TH32CS_SNAPPROCESS,
    };
    // SAFETY: no pointers; the handle is closed below.
    let snapshot = unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0) };
    if snapshot == INVALID_HANDLE_VALUE || snapshot.is_null() {
        return Vec::new();
    }
    let mut entry = PROCESSENTRY32W {
        dwSize: u32::try_from(std::mem::size_of::<PROCESSENTRY32W>()).unwrap_or(0),
        ..Default::default()
    };
    let mut out = Vec::new();
    // SAFETY: `entry` is a properly sized PROCESSENTRY32W with its size set.
    let mut more = unsafe { Process32FirstW(snapshot, &mut entry) } != 0;
    while more {
        out.push((entry.th32ProcessID, from_buffer(&entry.szExeFile)));
        // SAFETY: as above.
        more = unsafe { Process32NextW(snapshot, &mut entry) } != 0;
    }
    // SAFETY: the snapshot handle is ours, closed once.
    unsafe { CloseHandle(snapshot) };
    out
}

/// True while process `pid` runs.
pub fn running(pid: u32) -> bool {
    use windows_sys::Win32::Foundation::CloseHandle;
    use windows_sys::Win32::System::Threading::{GetExitCodeProcess, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION};
    /// `STILL_ACTIVE`.
    const STILL_ACTIVE: u32 = 259;
    // SAFETY: no pointers; the handle is closed below.
    let handle = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if handle.is_null() {
        return false;
    }
    let mut code = 0u32;
    // SAFETY: `handle` is open; `code` is a local.
    let ok = unsafe { GetExitCodeProcess(handle, &mut code) } != 0;
    // SAFETY: ours, closed once.
    unsafe { CloseHandle(handle) };
    ok && code == STILL_ACTIVE
}

/// A job object: the processes assigned to it, and every process they start, can be ended
/// together (a hook over its time limit, with what it started).
#[derive(Debug)]
pub struct Job(windows_sys::Win32::Foundation::HANDLE);

// SAFETY: a job handle may be used and closed from any thread.
unsafe impl Send for Job {}

impl Job {
    /// A new, unnamed job.
    pub fn new() -> std::io::Result<Self> {
        use windows_sys::Win32::System::JobObjects::CreateJobObjectW;
        // SAFETY: no attributes, no name; the handle is closed on drop.
        let handle = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
        if handle.is_null() { Err(std::io::Error::last_os_error()) } else { Ok(Self(handle)) }
    }

    /// Puts `child` (and what it starts from now on) in the job.
    pub fn assign(&self, child: &tokio::process::Child) -> std::io::Result<()> {
        use windows_sys::Win32::System::JobObjects::AssignProcessToJobObject;
        let Some(process) = child.raw_handle() else { return Ok(()) }; // already ended
        // SAFETY: both handles are open: the job's is ours, the process's is held by `child`,
        // borrowed for the call.
        if unsafe { AssignProcessToJobObject(self.0, process) } == 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Ends every process in the job.
    pub fn terminate(&self) {
        use windows_sys::Win32::System::JobObjects::TerminateJobObject;
        // SAFETY: the job handle is open.
        unsafe { TerminateJobObject(self.0, 1) };
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // SAFETY: ours, closed once. Closing does not end the processes (no kill-on-close).
        unsafe { windows_sys::Win32::Foundation::CloseHandle(self.0) };
    }
}
