//! `outpost pkg new | build | verify | show`.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use outpost_protocol::hex::hex;
use outpost_protocol::package::PackageArchive;
use outpost_protocol::pki::{CertInfo, TrustStore};
use outpost_protocol::time_fmt::format_unix;
use serde_json::json;

use crate::cli::{PkgBuildArgs, PkgNewArgs, PkgShowArgs, PkgSignArgs, PkgVerifyArgs};
use crate::output::human_bytes;
use crate::packaging;
use crate::progress::Progress;
use crate::secrets::{self, load_signer};
use crate::signing_time;
use crate::templates::{self, Template};
use outpost_actors::clock::unix_now;
use outpost_protocol::package::SourceEntry;

/// `outpost pkg new`
pub fn new(args: &PkgNewArgs) -> Result<()> {
    let template = Template::parse(&args.template).expect("checked by the flag's parser");
    let dir = args.out.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    let maintainer = args
        .maintainer
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("USERNAME").ok())
        .unwrap_or_default();
    let made = templates::create(&dir, &args.name, template, &maintainer)?;
    for p in &made {
        crate::out!("{}", p.display());
    }
    eprintln!(
        "Made {} ({} package). Edit WAPT/control (version, description, depends…){}, then:\n  outpost pkg build {} --cert SIGNER.crt --key SIGNER.key [--publish REPO:7443 --ca ca.crt]\ndocs/packaging.md describes every field and the hook contract.",
        dir.display(),
        args.template,
        match template {
            Template::Files => " and put the files in payload/",
            Template::Msi => " and put the .msi in the folder as install_msi names it (README.txt)",
            Template::Deb | Template::Rpm | Template::Exe => " and put the installer beside the hook",
            Template::Config => " and agent.toml",
            _ => "",
        },
        dir.display()
    );
    Ok(())
}

/// `outpost pkg build`
pub fn build(args: &PkgBuildArgs) -> Result<PathBuf> {
    let signer = load_signer(&args.signing)?;
    let built = packaging::build(&args.src_dir, &args.out, &signer, signing_time(), true)?;
    eprintln!(
        "Built {} {} ({} files, {}), signed by {:?}.",
        built.entry.name,
        built.entry.version,
        built.files,
        human_bytes(built.size),
        signer.info().subject
    );
    crate::out!("{}", built.path.display());
    if let (Some(repo), Some(ca)) = (&args.publish, &args.ca) {
        let client = crate::cli::ClientArgs {
            repo: repo.clone(),
            ca: ca.clone(),
            cert: args.signing.cert.clone(),
            key: args.signing.key.clone(),
            password_file: args.signing.password_file.clone(),
            min_rate: "16KiB".into(),
        };
        let p = packaging::publish(&client, &built.path)?;
        eprintln!(
            "Published {} {} to {repo}: snapshot {}{}",
            p.name,
            p.version,
            p.sequence,
            if p.replaced { " (replaced the same version)" } else { "" }
        );
    }
    Ok(built.path)
}

/// `outpost pkg sign`: the package verified (chain and signature as of its own signature
/// date, every byte), then built again from its own control and files with the new signer.
pub fn sign(args: &PkgSignArgs) -> Result<()> {
    let trust = TrustStore::new(secrets::load_certs(&args.trust)?).with_context(|| args.trust.display().to_string())?;
    let signer = load_signer(&args.signing)?;
    let archive = open(&args.file)?;
    let signed_then = archive
        .manifest()
        .control
        .get("signature_date")
        .and_then(outpost_protocol::time_fmt::parse_date)
        .ok_or_else(|| anyhow::anyhow!("{}: the package has no signature date", args.file.display()))?;
    let (verified, old) = archive
        .verify(&trust, signed_then, &mut |_| {})
        .with_context(|| format!("{}: not re-signed, it does not verify", args.file.display()))?;
    let mut archive = verified.into_inner();
    let manifest = archive.manifest().clone();
    let entries: Vec<SourceEntry> =
        manifest.files.iter().map(|f| SourceEntry { path: f.path.clone(), size: f.size, mode: f.mode }).collect();
    std::fs::create_dir_all(&args.out).with_context(|| args.out.display().to_string())?;
    let entry = manifest.entry().with_context(|| args.file.display().to_string())?;
    let path = args.out.join(outpost_protocol::package::file_name(&entry));
    let mut file =
        outpost_actors::disk::AtomicFile::create(&path, 0o644).with_context(|| path.display().to_string())?;
    let bar = Progress::bytes("signing", manifest.total_size());
    outpost_protocol::package::build(
        &mut file,
        &manifest.control,
        entries,
        &mut archive,
        &signer,
        signing_time(),
        &mut |n| bar.set(n),
    )
    .with_context(|| format!("signing {} again", args.file.display()))?;
    bar.finish();
    drop(archive);
    file.commit().with_context(|| path.display().to_string())?;
    eprintln!(
        "{} {} was signed by {:?} on {}; now signed by {:?}.",
        entry.name,
        entry.version,
        old.subject,
        format_unix(signed_then),
        signer.info().subject
    );
    crate::out!("{}", path.display());
    Ok(())
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
