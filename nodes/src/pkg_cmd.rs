//! `outpost pkg build | verify | show`.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use outpost_actors::disk::{AtomicFile, DirSource};
use outpost_protocol::control::Control;
use outpost_protocol::hex::hex;
use outpost_protocol::package::{self, PackageArchive, Signer};
use outpost_protocol::pki::{CertInfo, TrustStore};
use outpost_protocol::time_fmt::format_unix;
use serde_json::json;

use crate::cli::{PkgBuildArgs, PkgShowArgs, PkgVerifyArgs, SigningKey};
use crate::progress::Progress;
use crate::secrets::{self, KEY_PASSWORD_ENV, PasswordSource};
use crate::signing_time;
use outpost_actors::clock::unix_now;

/// WAPT files that a source folder may still hold from a WAPT build; they are not packaged.
const WAPT_LEFTOVERS: [&str; 5] =
    ["WAPT/control", "WAPT/manifest.sha256", "WAPT/signature.sha256", "WAPT/certificate.crt", "WAPT/signature"];

/// `outpost pkg build`
pub fn build(args: &PkgBuildArgs) -> Result<PathBuf> {
    let control_path = args.src_dir.join("WAPT").join("control");
    let control_bytes = std::fs::read(&control_path)
        .with_context(|| format!("reading {} (a package source folder holds WAPT/control)", control_path.display()))?;
    let control = Control::parse_bytes(&control_bytes).with_context(|| control_path.display().to_string())?;
    let signer = load_signer(&args.signing)?;
    let mut source = DirSource::new(&args.src_dir);
    let entries = source.entries(&WAPT_LEFTOVERS)?;
    let total: u64 = entries.iter().map(|e| e.size).sum();
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;

    let entry = outpost_protocol::entry::PackageEntry::from_control(&control)
        .with_context(|| control_path.display().to_string())?;
    let target = args.out.join(package::file_name(&entry));
    let mut file = AtomicFile::create(&target, 0o644).with_context(|| format!("creating {}", target.display()))?;
    let progress = Progress::bytes("building", total);
    let built = package::build(&mut file, &control, entries, &mut source, &signer, signing_time(), &mut |n| {
        progress.set(n);
    })
    .with_context(|| format!("building {}", args.src_dir.display()))?;
    progress.finish();
    file.commit().with_context(|| format!("writing {}", target.display()))?;
    eprintln!(
        "Built {} {} ({} files, {}), signed by {:?}.",
        entry.name,
        entry.version,
        built.manifest.files.len(),
        human_bytes(built.manifest.total_size()),
        signer.info().subject
    );
    crate::out!("{}", target.display());
    Ok(target)
}

/// `outpost pkg verify`
pub fn verify(args: &PkgVerifyArgs) -> Result<()> {
    let trust = TrustStore::new(secrets::load_certs(&args.trust)?).with_context(|| args.trust.display().to_string())?;
    let archive = open(&args.file)?;
    let total = archive.manifest().total_size();
    let progress = Progress::bytes("verifying", archive.len() + total);
    let (verified, signer) = archive
        .verify(&trust, unix_now(), &mut |n| progress.set(n))
        .with_context(|| format!("{}: REFUSED", args.file.display()))?;
    progress.finish();
    let m = verified.manifest();
    let name = m.control.get_or_empty("package");
    let version = m.control.get_or_empty("version");
    if args.json {
        let out = json!({
            "file": args.file, "valid": true, "package": name, "version": version,
            "manifest_blake3": hex(&verified.hash()), "files": m.files.len(), "bytes": total,
            "signer": signer, "signed": m.control.get_or_empty("signature_date"),
        });
        crate::out!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        crate::out!(
            "OK {}: {name} {version}, {} files ({}), signed by {} on {}",
            args.file.display(),
            m.files.len(),
            human_bytes(total),
            signer.describe(),
            m.control.get_or_empty("signature_date")
        );
    }
    Ok(())
}

/// `outpost pkg show`
pub fn show(args: &PkgShowArgs) -> Result<()> {
    let archive = open(&args.file)?;
    let m = archive.manifest();
    let signer = archive.signer().ok();
    if args.json {
        let control: serde_json::Map<String, serde_json::Value> =
            m.control.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        let out = json!({
            "file": args.file, "verified": false, "manifest_blake3": hex(&archive.hash()),
            "control": control, "files": m.files, "hooks": m.hooks(), "signer": signer,
        });
        crate::out!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    crate::out!("{}", m.control.to_text().trim_end());
    crate::out!();
    crate::out!("manifest blake3: {}", hex(&archive.hash()));
    if let Some(s) = &signer {
        print_signer(s);
    }
    let hooks = m.hooks();
    crate::out!("hooks: {}", if hooks.is_empty() { "none".to_string() } else { hooks.join(", ") });
    crate::out!("files ({}, {}):", m.files.len(), human_bytes(m.total_size()));
    for f in &m.files {
        crate::out!("  {:o} {:>12}  {}  {}", f.mode, f.size, &hex(&f.blake3)[..16], f.path);
    }
    eprintln!("(not verified: use `outpost pkg verify FILE --trust CA.crt`)");
    Ok(())
}

fn print_signer(s: &CertInfo) {
    let role = s.role.map(|r| r.to_string()).unwrap_or_else(|| "none".into());
    crate::out!(
        "signer: {:?} (role {role}, issued by {:?}, valid until {})",
        s.subject,
        s.issuer,
        format_unix(s.not_after)
    );
}

fn open(path: &Path) -> Result<PackageArchive<BufReader<File>>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    PackageArchive::open(BufReader::new(file)).with_context(|| format!("{}: REFUSED", path.display()))
}

/// Loads the signing certificate and key and checks they can sign packages now.
pub fn load_signer(args: &SigningKey) -> Result<Signer> {
    let chain = secrets::load_certs(&args.cert)?;
    let source = PasswordSource {
        file: args.password_file.as_deref(),
        env: vec![KEY_PASSWORD_ENV],
        purpose: format!("the key {}", args.key.display()),
    };
    let key = secrets::load_key(&args.key, &source)?;
    Signer::new(key, chain, unix_now()).with_context(|| format!("{} cannot sign packages", args.cert.display()))
}

/// Sizes for people: `1.5 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} bytes") } else { format!("{value:.1} {}", UNITS[unit]) }
}
