//! The central server's protocol: enrollment, signed inventory reports (a full report, then
//! only the sections that changed), signed administrator actions and agent configurations, and
//! the console's queries. Every message is a versioned enum encoded with postcard; signed
//! documents carry their own bytes so that what was signed is what is checked.

use crate::pki::ChainError;
use crate::signing::SignatureError;

/// ALPN of the central protocol (agents and consoles, with certificates).
pub const ALPN_CENTRAL: &[u8] = b"outpost-central/1";
/// ALPN of enrollment (agents without a certificate yet).
pub const ALPN_ENROLL: &[u8] = b"outpost-enroll/1";
/// Largest signed report central takes.
pub const MAX_REPORT_BYTES: usize = 1024 * 1024;
/// Largest framed central message (console answers may list many hosts).
pub const MAX_CENTRAL_FRAME: usize = 64 * 1024 * 1024;
/// How far in the future a signed document's creation time may be (clock skew).
pub const SKEW_SECS: i64 = 300;
/// Longest validity of an action.
pub const MAX_ACTION_SECS: i64 = 30 * 86_400;

/// Why a document is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CentralError {
    /// Over the size limit.
    #[error("{what} of {len} bytes is over the {limit}-byte limit")]
    TooLarge { what: &'static str, len: usize, limit: usize },
    /// Not decodable.
    #[error("{what} cannot be decoded: {reason}")]
    Decode { what: &'static str, reason: String },
    /// The signature does not verify.
    #[error("{what}: bad signature: {error}")]
    Signature { what: &'static str, error: SignatureError },
    /// The signer's certificate is refused.
    #[error("{what}: signer refused: {error}")]
    Signer { what: &'static str, error: ChainError },
    /// Past its expiry.
    #[error("{what} expired at {expires} (now {now})")]
    Expired { what: &'static str, expires: i64, now: i64 },
    /// Created in the future, or valid for too long.
    #[error("{what}: {reason}")]
    Invalid { what: &'static str, reason: String },
}

impl CentralError {
    /// A short reason for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "oversized",
            Self::Decode { .. } => "malformed",
            Self::Signature { .. } => "signature",
            Self::Signer { .. } => "signer",
            Self::Expired { .. } => "expired",
            Self::Invalid { .. } => "invalid",
        }
    }
}

mod action;
mod console;
mod inventory;
mod messages;
mod query;
mod report;

pub use action::*;
pub use console::*;
pub use inventory::*;
pub use messages::*;
pub use query::*;
pub use report::*;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod golden;
