//! Who may open the agent's state folder and control pipe: SYSTEM and the Administrators
//! group only (the folder holds the host's private key; the pipe runs installs).

use std::io;
use std::path::Path;
use std::ptr::{null, null_mut};

use windows_sys::Win32::Foundation::{HANDLE, LocalFree};
use windows_sys::Win32::Security::Authorization::{
    ConvertSecurityDescriptorToStringSecurityDescriptorW, ConvertStringSecurityDescriptorToSecurityDescriptorW,
    GetNamedSecurityInfoW, GetSecurityInfo, SDDL_REVISION_1, SE_FILE_OBJECT, SE_KERNEL_OBJECT, SetNamedSecurityInfoW,
};
use windows_sys::Win32::Security::{
    ACL, DACL_SECURITY_INFORMATION, GetSecurityDescriptorDacl, PROTECTED_DACL_SECURITY_INFORMATION,
    PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES,
};

use super::{from_wide, wide};

/// Full control for SYSTEM and Administrators, inherited by everything inside, nothing
/// inherited from the parent folder (`P`): Users lose the read access `C:\ProgramData` gives.
pub const STATE_FOLDER: &str = "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)";
/// The control pipe: SYSTEM and Administrators, nobody else.
pub const CONTROL_PIPE: &str = "D:P(A;;GA;;;SY)(A;;GA;;;BA)";

/// A security descriptor made from SDDL, freed when dropped.
#[derive(Debug)]
pub struct Descriptor(PSECURITY_DESCRIPTOR);

impl Descriptor {
    /// Parses `sddl`.
    pub fn from_sddl(sddl: &str) -> io::Result<Self> {
        let text = wide(sddl);
        let mut sd: PSECURITY_DESCRIPTOR = null_mut();
        // SAFETY: `text` is NUL-terminated and outlives the call; `sd` receives a LocalAlloc'd
        // descriptor that `Drop` frees.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(text.as_ptr(), SDDL_REVISION_1, &mut sd, null_mut())
        };
        if ok == 0 { Err(io::Error::last_os_error()) } else { Ok(Self(sd)) }
    }

    /// Security attributes pointing at this descriptor (valid while it lives).
    pub fn attributes(&self) -> SECURITY_ATTRIBUTES {
        SECURITY_ATTRIBUTES {
            nLength: u32::try_from(std::mem::size_of::<SECURITY_ATTRIBUTES>()).unwrap_or(0),
            lpSecurityDescriptor: self.0,
            bInheritHandle: 0,
        }
    }

    fn dacl(&self) -> io::Result<*mut ACL> {
        let (mut present, mut defaulted, mut dacl) = (0, 0, null_mut());
        // SAFETY: `self.0` is a valid descriptor; the out-pointers are locals.
        let ok = unsafe { GetSecurityDescriptorDacl(self.0, &mut present, &mut dacl, &mut defaulted) };
        if ok == 0 || present == 0 { Err(io::Error::last_os_error()) } else { Ok(dacl) }
    }
}

impl Drop for Descriptor {
    fn drop(&mut self) {
        // SAFETY: the descriptor was allocated by the conversion function with LocalAlloc.
        unsafe { LocalFree(self.0) };
    }
}

/// Gives `path` (a folder) the [`STATE_FOLDER`] access list, replacing what it inherited.
pub fn restrict_folder(path: &Path) -> io::Result<()> {
    let descriptor = Descriptor::from_sddl(STATE_FOLDER)?;
    let dacl = descriptor.dacl()?;
    let name = wide(path);
    // SAFETY: `name` is NUL-terminated; `dacl` points into `descriptor`, alive for the call.
    let rc = unsafe {
        SetNamedSecurityInfoW(
            name.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
            null_mut(),
            null_mut(),
            dacl,
            null(),
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(rc as i32)) }
}

/// The access list of a file or folder, as SDDL.
pub fn describe_path(path: &Path) -> io::Result<String> {
    let name = wide(path);
    described(|sd| {
        // SAFETY: `name` is NUL-terminated; `sd` receives a LocalAlloc'd descriptor.
        unsafe {
            GetNamedSecurityInfoW(
                name.as_ptr(),
                SE_FILE_OBJECT,
                DACL_SECURITY_INFORMATION,
                null_mut(),
                null_mut(),
                null_mut(),
                null_mut(),
                sd,
            )
        }
    })
}

/// The access list of a kernel object (a pipe), as SDDL.
pub fn describe_object(object: &impl std::os::windows::io::AsRawHandle) -> io::Result<String> {
    let handle: HANDLE = object.as_raw_handle();
    described(|sd| {
        // SAFETY: `handle` is open while `object` is borrowed; `sd` receives a LocalAlloc'd
        // descriptor.
        unsafe {
            GetSecurityInfo(
                handle,
                SE_KERNEL_OBJECT,
                DACL_SECURITY_INFORMATION,
                null_mut(),
                null_mut(),
                null_mut(),
                null_mut(),
                sd,
            )
        }
    })
}

/// The SDDL of the descriptor `get` fills (freed after), or the error it returns.
fn described(get: impl FnOnce(&mut PSECURITY_DESCRIPTOR) -> u32) -> io::Result<String> {
    let mut sd: PSECURITY_DESCRIPTOR = null_mut();
    let rc = get(&mut sd);
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc as i32));
    }
    sddl_of(&Descriptor(sd))
}

/// A descriptor's access list, as SDDL.
pub fn describe(descriptor: &Descriptor) -> io::Result<String> {
    sddl_of(descriptor)
}

fn sddl_of(descriptor: &Descriptor) -> io::Result<String> {
    let mut text: *mut u16 = null_mut();
    // SAFETY: the descriptor is valid; `text` receives a LocalAlloc'd string freed below.
    let ok = unsafe {
        ConvertSecurityDescriptorToStringSecurityDescriptorW(
            descriptor.0,
            SDDL_REVISION_1,
            DACL_SECURITY_INFORMATION,
            &mut text,
            null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the API returned a NUL-terminated string, freed right after it is copied.
    let sddl = unsafe { from_wide(text) };
    // SAFETY: allocated by the API with LocalAlloc.
    unsafe { LocalFree(text.cast()) };
    Ok(sddl)
}
