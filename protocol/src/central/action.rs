//! Signed administrator actions and agent settings, and whom they are for.

use super::{CentralError, MAX_ACTION_SECS, SKEW_SECS};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::pki::{CertInfo, PrivateKey, Purpose, Right, Role, TrustStore};
use crate::signing::{self, Domain};
use crate::verified::Verified;

/// Which hosts an action or configuration is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Targets {
    /// Hosts by UUID or FQDN.
    Hosts(Vec<String>),
    /// Every host in this OU (its DN ends with it).
    Ou(String),
    /// Every host.
    All,
}

/// What a host is known by: its certificate first (one certificate, one host), then the names
/// it reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostNames<'a> {
    /// SHA-256 fingerprint of its certificate (lower-case hex).
    pub fingerprint: &'a str,
    /// Its UUID.
    pub uuid: &'a str,
    /// Its FQDN.
    pub fqdn: &'a str,
    /// Its DN.
    pub ou: &'a str,
}

/// The certificate fingerprint a host name gives, when it is one: `sha256:<hex>` or the 64 hex
/// digits alone.
pub fn fingerprint_name(name: &str) -> Option<String> {
    let hex = name.strip_prefix("sha256:").unwrap_or(name).to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

impl Targets {
    /// True when host `h` is a target: by certificate fingerprint, UUID or FQDN, by OU, or all.
    pub fn includes(&self, h: &HostNames<'_>) -> bool {
        let (uuid, fqdn, ou) = (h.uuid, h.fqdn, h.ou);
        match self {
            Self::All => true,
            Self::Hosts(names) => names.iter().any(|n| {
                n.eq_ignore_ascii_case(uuid)
                    || n.eq_ignore_ascii_case(fqdn)
                    || fingerprint_name(n).is_some_and(|fp| !h.fingerprint.is_empty() && fp == h.fingerprint)
            }),
            Self::Ou(dn) => {
                let norm = |s: &str| s.to_lowercase().replace(' ', "");
                let (ou, dn) = (norm(ou), norm(dn));
                !dn.is_empty() && (ou == dn || ou.ends_with(&format!(",{dn}")))
            }
        }
    }

    /// As written on the command line.
    pub fn describe(&self) -> String {
        match self {
            Self::All => "all hosts".into(),
            Self::Hosts(h) => h.join(","),
            Self::Ou(dn) => format!("OU {dn}"),
        }
    }
}

/// What an action asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionKind {
    /// `agent update`.
    Update,
    /// `agent upgrade`.
    Upgrade,
    /// `agent install`.
    Install(Vec<String>),
    /// `agent remove`.
    Remove(Vec<String>),
    /// `agent upgrade` from a snapshot at least as new as this one (the snapshot that published
    /// what the upgrade is for, such as the host's own package): an agent whose repository does
    /// not serve it yet waits for it a while, then takes another repository that does.
    UpgradeAfter(u64),
}

impl ActionKind {
    /// A short name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Update => "update",
            Self::Upgrade | Self::UpgradeAfter(_) => "upgrade",
            Self::Install(_) => "install",
            Self::Remove(_) => "remove",
        }
    }
}

/// An administrator's action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// Random; agents remember it until the expiry and refuse it again.
    pub nonce: [u8; 16],
    /// Who it is for.
    pub targets: Targets,
    /// What to do.
    pub kind: ActionKind,
    /// When it was signed (Unix seconds).
    pub created: i64,
    /// When it stops being valid.
    pub expires: i64,
}

#[derive(Serialize, Deserialize)]
pub(super) enum ActionWire {
    V1(Action),
}

/// A signed document with its signer's chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    /// The encoded document.
    pub body: Vec<u8>,
    /// Ed25519 signature.
    pub signature: Vec<u8>,
    /// The signer's certificate first (DER).
    pub chain: Vec<Vec<u8>>,
}

impl Signed {
    fn make(body: Vec<u8>, domain: Domain, key: &PrivateKey, chain: &[CertificateDer<'_>]) -> Self {
        let signature = signing::sign(key, domain, &body).to_vec();
        Self { body, signature, chain: chain.iter().map(|c| c.to_vec()).collect() }
    }

    fn check(
        &self,
        what: &'static str,
        domain: Domain,
        right: Right,
        trust: &TrustStore,
        now: i64,
    ) -> Result<CertInfo, CentralError> {
        let chain: Vec<CertificateDer<'_>> = self.chain.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
        let info = trust
            .verify(&chain, now, &[Purpose::Role(Role::Admin), Purpose::Right(right)])
            .map_err(|source| CentralError::Signer { what, error: source })?;
        signing::verify(&info.public_key, domain, &self.body, &self.signature)
            .map_err(|source| CentralError::Signature { what, error: source })?;
        Ok(info)
    }

    /// BLAKE3 of the body: the document's identity.
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&self.body).as_bytes()
    }
}

impl Action {
    /// Signs the action with an admin's key and chain.
    pub fn sign(&self, key: &PrivateKey, chain: &[CertificateDer<'_>]) -> Signed {
        let body = postcard::to_stdvec(&ActionWire::V1(self.clone())).expect("encoding to a Vec cannot fail");
        Signed::make(body, Domain::Action, key, chain)
    }

    /// Checks a signed action: an admin with the `act` right signed it, it is not expired, not
    /// created in the future, and valid for at most [`MAX_ACTION_SECS`].
    pub fn verify(signed: &Signed, trust: &TrustStore, now: i64) -> Result<(Verified<Action>, CertInfo), CentralError> {
        let what = "action";
        let info = signed.check(what, Domain::Action, Right::Act, trust, now)?;
        let ActionWire::V1(a) =
            postcard::from_bytes(&signed.body).map_err(|e| CentralError::Decode { what, reason: e.to_string() })?;
        if a.expires <= now {
            return Err(CentralError::Expired { what, expires: a.expires, now });
        }
        if a.created > now + SKEW_SECS {
            return Err(CentralError::Invalid { what, reason: "created in the future".into() });
        }
        if a.expires - a.created > MAX_ACTION_SECS {
            return Err(CentralError::Invalid { what, reason: "valid for more than 30 days".into() });
        }
        Ok((Verified::new(a), info))
    }
}

/// Agent settings distributed by central: the TOML of a `config` package's `agent.toml`
/// (repository rules and settings), for the targets, signed by an admin with `modify`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSettingsDoc {
    /// Grows with each new document; agents ignore older ones.
    pub sequence: u64,
    /// Who it is for.
    pub targets: Targets,
    /// The settings (same fields as a `config` package's `agent.toml`).
    pub toml: String,
    /// When it was signed.
    pub created: i64,
}

#[derive(Serialize, Deserialize)]
pub(super) enum SettingsWire {
    V1(AgentSettingsDoc),
}

impl AgentSettingsDoc {
    /// Signs with an admin's key and chain.
    pub fn sign(&self, key: &PrivateKey, chain: &[CertificateDer<'_>]) -> Signed {
        let body = postcard::to_stdvec(&SettingsWire::V1(self.clone())).expect("encoding to a Vec cannot fail");
        Signed::make(body, Domain::AgentSettings, key, chain)
    }

    /// Checks that an admin with the `modify` right signed it.
    pub fn verify(
        signed: &Signed,
        trust: &TrustStore,
        now: i64,
    ) -> Result<(Verified<AgentSettingsDoc>, CertInfo), CentralError> {
        let what = "agent settings";
        let info = signed.check(what, Domain::AgentSettings, Right::Modify, trust, now)?;
        let SettingsWire::V1(d) =
            postcard::from_bytes(&signed.body).map_err(|e| CentralError::Decode { what, reason: e.to_string() })?;
        if d.created > now + SKEW_SECS {
            return Err(CentralError::Invalid { what, reason: "created in the future".into() });
        }
        Ok((Verified::new(d), info))
    }
}
