//! Signed inventory reports: a full report, then only the sections that changed, numbered; and
//! what central does with one given the last it applied.

use super::{CentralError, MAX_REPORT_BYTES, Section};
use serde::{Deserialize, Serialize};

use crate::pki::PrivateKey;
use crate::signing::{self, Domain};
use crate::verified::Verified;

/// An inventory report: the whole inventory (`full`) or the sections that changed since the
/// previous report, which had `sequence - 1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The host's UUID.
    pub host: String,
    /// One more than the previous report's.
    pub sequence: u64,
    /// True for a whole inventory.
    pub full: bool,
    /// When it was made (Unix seconds).
    pub created: i64,
    /// The sections.
    pub sections: Vec<Section>,
}

#[derive(Serialize, Deserialize)]
pub(super) enum ReportWire {
    V1(Report),
}

/// A report signed by the host's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReport {
    /// The encoded report.
    #[serde(with = "crate::raw")]
    pub report: Vec<u8>,
    /// Ed25519 signature by the host key.
    #[serde(with = "crate::raw")]
    pub signature: Vec<u8>,
}

impl Report {
    /// Encodes and signs the report with the host's key.
    pub fn sign(&self, key: &PrivateKey) -> SignedReport {
        let report = postcard::to_stdvec(&ReportWire::V1(self.clone())).expect("encoding to a Vec cannot fail");
        let signature = signing::sign(key, Domain::InventoryReport, &report).to_vec();
        SignedReport { report, signature }
    }
}

impl SignedReport {
    /// Checks the size and the signature by `public_key` (the host certificate's key), then
    /// decodes.
    pub fn verify(&self, public_key: &[u8]) -> Result<Verified<Report>, CentralError> {
        let what = "inventory report";
        if self.report.len() > MAX_REPORT_BYTES {
            return Err(CentralError::TooLarge { what, len: self.report.len(), limit: MAX_REPORT_BYTES });
        }
        signing::verify(public_key, Domain::InventoryReport, &self.report, &self.signature)
            .map_err(|source| CentralError::Signature { what, error: source })?;
        self.decode()
    }

    /// [`verify`](Self::verify) for many reports, each with its signer's public key: the
    /// signatures are checked as one batch ([`signing::verify_batch`]); each answer is what
    /// `verify` would give.
    pub fn verify_many(items: &[(&signing::PublicKey, &SignedReport)]) -> Vec<Result<Verified<Report>, CentralError>> {
        let what = "inventory report";
        let sized = |s: &SignedReport| s.report.len() <= MAX_REPORT_BYTES;
        let batch: Vec<signing::ToVerify<'_>> = items
            .iter()
            .filter(|(_, s)| sized(s))
            .map(|(key, s)| signing::ToVerify { public_key: key, message: &s.report, signature: &s.signature })
            .collect();
        let mut checked = signing::verify_batch(Domain::InventoryReport, &batch).into_iter();
        items
            .iter()
            .map(|(_, s)| {
                if !sized(s) {
                    return Err(CentralError::TooLarge { what, len: s.report.len(), limit: MAX_REPORT_BYTES });
                }
                checked
                    .next()
                    .expect("one answer per sized report")
                    .map_err(|source| CentralError::Signature { what, error: source })?;
                s.decode()
            })
            .collect()
    }

    /// The report, once its signature is checked.
    fn decode(&self) -> Result<Verified<Report>, CentralError> {
        let ReportWire::V1(r) = postcard::from_bytes(&self.report)
            .map_err(|e| CentralError::Decode { what: "inventory report", reason: e.to_string() })?;
        Ok(Verified::new(r))
    }
}

/// What central does with a verified report, given the sequence of the last one it applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportDecision {
    /// It follows: apply it.
    Apply,
    /// A gap, or a delta with nothing to apply it to: ask for a full report.
    FullNeeded,
    /// Not newer than what was applied: a replay (or a duplicate); nothing is stored.
    Replay,
}

/// Decides what to do with `report` when the last applied report had `last`.
pub fn decide(last: Option<u64>, report: &Report) -> ReportDecision {
    match (last, report.full) {
        (Some(l), _) if report.sequence <= l => ReportDecision::Replay,
        (_, true) => ReportDecision::Apply,
        (Some(l), false) if report.sequence == l + 1 => ReportDecision::Apply,
        _ => ReportDecision::FullNeeded,
    }
}
