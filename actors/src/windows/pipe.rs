//! The agent's control pipe instances, with their access list.

use std::path::Path;

use tokio::net::windows::named_pipe::{NamedPipeServer, PipeMode, ServerOptions};

use super::acl::{CONTROL_PIPE, Descriptor};

/// A pipe instance named `name`, open to SYSTEM and Administrators only ([`CONTROL_PIPE`]),
/// refusing remote clients; the `first` instance fails when another process holds the name
/// (so a second daemon, or an impostor that took the name first, is noticed).
pub fn create(name: &Path, first: bool) -> std::io::Result<NamedPipeServer> {
    let descriptor = Descriptor::from_sddl(CONTROL_PIPE)?;
    let mut attributes = descriptor.attributes();
    let mut options = ServerOptions::new();
    options.first_pipe_instance(first).reject_remote_clients(true).pipe_mode(PipeMode::Byte);
    // SAFETY: `attributes` points at `descriptor`, both alive for the call; the pipe keeps its
    // own copy of the security descriptor.
    unsafe { options.create_with_security_attributes_raw(name, (&raw mut attributes).cast()) }
}
