//! The administrator's side of central, shared by the CLI console and the web console: which
//! central and which certificate (flags, `OUTPOST_*` variables, or a profile that
//! `outpost console login` saved), the connection to it, and what the admin signs on this
//! machine (actions, host packages): the admin's key never leaves it.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use outpost_actors::central::client::CentralClient;
use outpost_actors::transport;
use outpost_protocol::central::{ALPN_CENTRAL, Action, ActionKind, Signed, Targets};
use outpost_protocol::pki::PrivateKey;
use serde::{Deserialize, Serialize};

use crate::cli::ConsoleArgs;
use crate::daemon;
use outpost_actors::clock::unix_now;

/// The environment variable naming the profile file (default: the user's config folder).
pub const PROFILES_ENV: &str = "OUTPOST_CONSOLE_PROFILES";

/// Where central is and who the admin is, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admin {
    /// Central's address (`host:port`).
    pub server: String,
    /// The organisation CA certificate.
    pub ca: PathBuf,
    /// The admin's certificate.
    pub cert: PathBuf,
    /// Its private key (the file stays where it is; profiles keep only its path).
    pub key: PathBuf,
    /// A file holding the key's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

/// The profiles file: named admins, and the one used when none is named.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profiles {
    /// The profile used when none is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Profiles by name.
    #[serde(default)]
    pub profiles: BTreeMap<String, Admin>,
}

/// The profiles file: `OUTPOST_CONSOLE_PROFILES`, else `console.toml` in the user's
/// configuration folder (`$XDG_CONFIG_HOME/outpost`, `~/.config/outpost`, `%APPDATA%\Outpost`).
pub fn profiles_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(PROFILES_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let base = if cfg!(windows) {
        std::env::var_os("APPDATA").map(|a| PathBuf::from(a).join("Outpost"))
    } else {
        std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .map(|c| c.join("outpost"))
    };
    base.map(|b| b.join("console.toml"))
}

impl Profiles {
    /// Reads the profiles file (none yet: no profiles).
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| path.display().to_string()),
        }
    }

    /// Writes the profiles file (whole or not at all; readable by its owner only).
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        }
        let text = format!(
            "# Outpost console profiles (`outpost console login`): where central is and which certificate\n# to use. Paths only: keys stay in their own files.\n{}",
            toml::to_string(self)?
        );
        let mut file =
            outpost_actors::disk::AtomicFile::create(path, 0o600).with_context(|| path.display().to_string())?;
        std::io::Write::write_all(&mut file, text.as_bytes()).with_context(|| path.display().to_string())?;
        file.commit().with_context(|| path.display().to_string())
    }
}

impl Admin {
    /// The admin the flags, `OUTPOST_*` variables and the profile name, field by field in that
    /// order (`--profile`, else `OUTPOST_PROFILE`, else the file's default).
    pub fn resolve(args: &ConsoleArgs) -> Result<Self> {
        let path = profiles_path();
        let profiles = match &path {
            Some(p) => Profiles::load(p)?,
            None => Profiles::default(),
        };
        let name = args.profile.clone().or_else(|| profiles.default.clone());
        let saved = name.as_ref().and_then(|n| profiles.profiles.get(n)).cloned();
        let missing = |what: &str| match (&args.profile, &saved) {
            // A profile named but not saved: say so (flags alone may still be complete, as
            // for `console login --profile NEW`).
            (Some(n), None) => anyhow::anyhow!(
                "no console profile {n:?}{}; `outpost console login --profile {n} --server … --ca … --cert … --key …` makes it",
                path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default()
            ),
            _ => anyhow::anyhow!(
                "no {what} given: give --server, --ca, --cert and --key (or OUTPOST_SERVER, OUTPOST_CA, OUTPOST_CERT, OUTPOST_KEY), or save them once with `outpost console login`"
            ),
        };
        Ok(Self {
            server: args
                .server
                .clone()
                .or_else(|| saved.as_ref().map(|s| s.server.clone()))
                .ok_or_else(|| missing("central (--server)"))?,
            ca: args
                .ca
                .clone()
                .or_else(|| saved.as_ref().map(|s| s.ca.clone()))
                .ok_or_else(|| missing("CA certificate (--ca)"))?,
            cert: args
                .cert
                .clone()
                .or_else(|| saved.as_ref().map(|s| s.cert.clone()))
                .ok_or_else(|| missing("certificate (--cert)"))?,
            key: args
                .key
                .clone()
                .or_else(|| saved.as_ref().map(|s| s.key.clone()))
                .ok_or_else(|| missing("key (--key)"))?,
            password_file: args.password_file.clone().or_else(|| saved.and_then(|s| s.password_file)),
        })
    }

    /// The same with every path absolute (what a profile keeps).
    pub fn absolute(&self) -> Result<Self> {
        let abs = |p: &Path| std::path::absolute(p).with_context(|| p.display().to_string());
        Ok(Self {
            server: self.server.clone(),
            ca: abs(&self.ca)?,
            cert: abs(&self.cert)?,
            key: abs(&self.key)?,
            password_file: self.password_file.as_deref().map(abs).transpose()?,
        })
    }

    /// The admin's certificate chain and key (asks for the key's password when needed).
    pub fn signer(&self) -> Result<(Vec<rustls_pki_types::CertificateDer<'static>>, PrivateKey)> {
        let identity = daemon::identity(&self.cert, &self.key, self.password_file.as_deref())?;
        Ok((identity.chain.clone(), PrivateKey::from_pkcs8_der(&identity.key)?))
    }

    /// Connects to central with the admin's certificate. On a terminal a line says what is
    /// being waited for; an unreachable central is an error after the handshake timeout.
    pub async fn connect(&self) -> Result<Connected> {
        let identity = daemon::identity(&self.cert, &self.key, self.password_file.as_deref())?;
        let (_, ca) = daemon::trust(&self.ca)?;
        let endpoint = transport::client(None, &identity, &ca, ALPN_CENTRAL)?;
        let waiting = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_message(format!(
                "connecting to central {} (giving up after {} s)…",
                self.server,
                transport::IDLE_TIMEOUT.as_secs()
            ));
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        let connected = CentralClient::connect(&endpoint, &self.server).await;
        if let Some(bar) = waiting {
            bar.finish_and_clear();
        }
        let client = connected.with_context(|| format!("central {}", self.server))?;
        Ok(Connected { client, endpoint })
    }

    /// Signs an action on this machine with the admin's key.
    pub fn sign_action(&self, kind: ActionKind, targets: Targets, valid_secs: u64) -> Result<Signed> {
        let most = outpost_protocol::central::MAX_ACTION_SECS.unsigned_abs();
        if valid_secs > most {
            bail!("an action is valid for at most 30 days");
        }
        let created = unix_now();
        let action = Action {
            nonce: nonce()?,
            targets,
            kind,
            created,
            expires: created + i64::try_from(valid_secs).unwrap_or(i64::MAX / 2),
        };
        let (chain, key) = self.signer()?;
        Ok(action.sign(&key, &chain))
    }

    /// Builds, signs and publishes the host package of `host` (its name) that depends on
    /// `packages`, to the main repository at `repo`.
    pub fn publish_host_package(
        &self,
        host: &str,
        packages: &[String],
        repo: &str,
    ) -> Result<crate::packaging::Published> {
        for p in packages {
            outpost_protocol::request::PackageRequest::parse(p).with_context(|| format!("package request {p:?}"))?;
        }
        let work = std::env::temp_dir().join(format!("outpost-host-package-{}-{}", std::process::id(), nonce_hex()?));
        let _ = std::fs::remove_dir_all(&work);
        let src = work.join("src");
        std::fs::create_dir_all(src.join("WAPT")).with_context(|| src.display().to_string())?;
        // Versions only grow: the time of the change.
        let control = format!(
            "package: {host}\nversion: {}\narchitecture: all\nsection: host\npriority: optional\ndescription: host package of {host} (set by an administrator from the console)\ndepends: {}\n",
            unix_now(),
            packages.join(",")
        );
        std::fs::write(src.join("WAPT/control"), control)?;
        let signing = crate::cli::SigningKey {
            cert: self.cert.clone(),
            key: self.key.clone(),
            password_file: self.password_file.clone(),
        };
        let client = crate::cli::ClientArgs {
            repo: repo.to_string(),
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            password_file: self.password_file.clone(),
            min_rate: "16KiB".into(),
        };
        let published = crate::secrets::load_signer(&signing)
            .and_then(|signer| crate::packaging::build(&src, &work, &signer, crate::signing_time(), false))
            .and_then(|built| crate::packaging::publish(&client, &built.path));
        let _ = std::fs::remove_dir_all(&work);
        published
    }
}

/// A connection to central.
#[derive(Debug)]
pub struct Connected {
    /// The client.
    pub client: CentralClient,
    endpoint: quinn::Endpoint,
}

impl Connected {
    /// Closes the connection, letting the close reach central.
    pub async fn close(self) {
        self.client.close();
        transport::finish(&self.endpoint).await;
    }
}

fn nonce() -> Result<[u8; 16]> {
    let mut n = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut n)
        .map_err(|_| anyhow::anyhow!("no randomness available"))?;
    Ok(n)
}

fn nonce_hex() -> Result<String> {
    Ok(outpost_protocol::hex::hex(&nonce()?))
}
