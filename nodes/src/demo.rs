//! `outpost demo`: the whole chain that exists today, on throw-away data, in one command.
//!
//! It makes an organisation PKI, builds and signs packages (a runtime, an editor with a hook
//! that depends on it, a unit package for an OU, a host package signed by a deployer, and an
//! old viewer that conflicts with the editor), verifies every byte of each, shows a tampered
//! copy refused, and resolves the plan for a host that has the old viewer installed.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use outpost_actors::disk::{AtomicFile, DirSource};
use outpost_protocol::control::Control;
use outpost_protocol::entry::{HostCapabilities, PackageEntry};
use outpost_protocol::package::{self, PackageArchive, Signer};
use outpost_protocol::pki::{self, IssueRequest, Role, TrustStore};
use outpost_protocol::resolver::{self, HostIdentity, InstallState, InstalledPackage, Origin, ResolveInput};

use crate::cli::DemoArgs;
use crate::now;
use crate::pkg_cmd::human_bytes;

const HOST: &str = "pc-042.demo.example";
const OU: &str = "CN=pc-042,OU=Paris,OU=Sites,DC=demo,DC=example";

/// One sample package: name, version, extra control lines, files, signed by the deployer.
struct Sample {
    name: &'static str,
    version: &'static str,
    extra: &'static str,
    files: &'static [(&'static str, &'static str)],
    by_deployer: bool,
}

const SAMPLES: [Sample; 6] = [
    Sample {
        name: "demo-runtime",
        version: "1.4-2",
        extra: "description: Shared runtime used by the demo editor\n",
        files: &[("lib/runtime.txt", "demo runtime 1.4\n")],
        by_deployer: false,
    },
    Sample {
        name: "demo-editor",
        version: "2.3-1",
        extra: "description: A text editor\ndepends: demo-runtime(>=1.4)\n",
        files: &[
            (
                "setup.sh",
                "#!/bin/sh\n# Runs as: setup.sh install|uninstall|audit|session-setup\necho \"$1 $OUTPOST_PACKAGE\"\n",
            ),
            ("bin/editor", "#!/bin/sh\necho editor\n"),
        ],
        by_deployer: false,
    },
    Sample {
        name: "demo-fonts",
        version: "2024.1-1",
        extra: "description: Fonts for the Paris office\n",
        files: &[("fonts/README", "fonts\n")],
        by_deployer: false,
    },
    Sample {
        name: "demo-viewer-legacy",
        version: "0.9-7",
        extra: "description: The old viewer, replaced by the editor\n",
        files: &[("bin/viewer", "old\n")],
        by_deployer: false,
    },
    Sample {
        name: "OU=Paris,OU=Sites,DC=demo,DC=example",
        version: "3",
        extra: "section: unit\ndescription: What every machine in Paris gets\ndepends: demo-fonts\n",
        files: &[],
        by_deployer: true,
    },
    Sample {
        name: HOST,
        version: "12",
        extra: "section: host\ndescription: The host package of pc-042\ndepends: demo-editor\nconflicts: demo-viewer-legacy\n",
        files: &[],
        by_deployer: true,
    },
];

/// `outpost demo`
pub fn run(args: &DemoArgs) -> Result<()> {
    let dir: PathBuf = match &args.dir {
        Some(d) => {
            if d.exists() && d.read_dir().is_ok_and(|mut r| r.next().is_some()) {
                bail!("{} is not empty; give an empty or new folder to --dir", d.display());
            }
            d.clone()
        }
        None => tempfile_dir()?,
    };
    let result = demo(&dir);
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        crate::out!("\nEverything is kept in {}.", dir.display());
    }
    result
}

fn demo(dir: &Path) -> Result<()> {
    let now = now();
    crate::out!("Outpost demo in {}", dir.display());

    step(1, "organisation PKI");
    let ca = pki::create_ca("Demo Org", now, 30)?;
    let issue = |role, name: &str| {
        pki::issue(
            &ca.cert,
            &ca.key,
            &IssueRequest { role, name: name.into(), rights: vec![], alt_names: vec![], days: 7 },
            now,
        )
    };
    let signer_cert = issue(Role::Signer, "Demo Packagers")?;
    let deployer_cert = issue(Role::Deployer, "Demo Helpdesk")?;
    let pki_dir = dir.join("pki");
    std::fs::create_dir_all(&pki_dir)?;
    std::fs::write(pki_dir.join("ca.crt"), ca.cert_pem())?;
    for (name, issued) in [("signer", &signer_cert), ("deployer", &deployer_cert)] {
        std::fs::write(pki_dir.join(format!("{name}.crt")), issued.cert_pem())?;
        let key = pki::encode_private_key(&issued.key, None)?;
        outpost_actors::disk::write_atomic(&pki_dir.join(format!("{name}.key")), key.as_bytes(), 0o600)?;
    }
    crate::out!("  CA \"Demo Org CA\", signer \"Demo Packagers\" (code signing), deployer \"Demo Helpdesk\"");
    crate::out!("  (demo keys are written unencrypted; real ones are encrypted unless --no-password)");
    let signer = Signer::new(signer_cert.key, vec![signer_cert.cert], now)?;
    let deployer = Signer::new(deployer_cert.key, vec![deployer_cert.cert], now)?;

    step(2, "build and sign packages");
    let dist = dir.join("dist");
    std::fs::create_dir_all(&dist)?;
    let mut built = Vec::new();
    for sample in &SAMPLES {
        let path = build_sample(dir, &dist, sample, if sample.by_deployer { &deployer } else { &signer }, now)?;
        crate::out!(
            "  {:<40} {:<9} signed by {}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            sample.version,
            if sample.by_deployer { "the deployer (no scripts)" } else { "the signer" }
        );
        built.push(path);
    }
    let err = build_sample(dir, &dist, &SAMPLES[1], &deployer, now).expect_err("a deployer cannot sign hooks");
    crate::out!("  refused as expected: demo-editor signed by the deployer: {err:#}");

    step(3, "verify every package (chain, usages, signature, every byte)");
    let trust = TrustStore::new(vec![ca.cert.clone()])?;
    let mut entries = Vec::new();
    for path in &built {
        let archive = PackageArchive::open(BufReader::new(File::open(path)?))?;
        let (verified, who) = archive.verify(&trust, now, &mut |_| {}).with_context(|| path.display().to_string())?;
        let entry = verified.manifest().entry()?;
        crate::out!(
            "  OK {:<40} {} file(s), {}, by {:?}",
            entry.name,
            verified.manifest().files.len(),
            human_bytes(verified.manifest().total_size()),
            who.subject
        );
        entries.push(entry);
    }

    step(4, "a tampered package is refused");
    let mut bytes = std::fs::read(&built[1])?;
    let at = bytes.windows(6).position(|w| w == b"editor").unwrap_or(bytes.len() / 2);
    bytes[at] ^= 0x20;
    let tampered = dist.join("demo-editor_tampered.outpost");
    std::fs::write(&tampered, &bytes)?;
    let refused = PackageArchive::open(BufReader::new(File::open(&tampered)?))
        .and_then(|a| a.verify(&trust, now, &mut |_| {}).map(drop));
    match refused {
        Err(e) => crate::out!("  REFUSED {}: {e}", tampered.file_name().unwrap_or_default().to_string_lossy()),
        Ok(()) => bail!("a tampered package verified: this is a bug"),
    }

    step(5, &format!("resolve the plan for {HOST}"));
    crate::out!("  host: {HOST}, {OU}; installed: demo-viewer-legacy 0.9-7");
    let host = HostIdentity { uuid: None, fqdn: Some(HOST.into()), ou: Some(OU.into()), profiles: vec![] };
    let caps = HostCapabilities {
        architectures: vec!["x64".into()],
        os: vec!["linux".into()],
        now,
        ..HostCapabilities::default()
    };
    let viewer = entries.iter().find(|e| e.name == "demo-viewer-legacy").cloned().context("the viewer was built")?;
    let installed = [InstalledPackage { entry: viewer, state: InstallState::Ok, origin: Origin::Explicit }];
    let resolution = resolver::resolve(&ResolveInput {
        entries: &entries,
        host: &host,
        capabilities: &caps,
        installed: &installed,
        requested: &[],
    });
    crate::out!("  plan:");
    for (i, s) in resolution.plan.iter().enumerate() {
        crate::out!("    {}. {s}", i + 1);
    }
    crate::out!("  statuses:");
    for p in &resolution.packages {
        crate::out!("    {:<13} {}", p.status.as_str(), p.name);
    }
    for e in &resolution.errors {
        crate::out!("    error: {e}");
    }
    crate::out!("  host status: {}", resolution.host_status.as_str());

    crate::out!("\nTry it yourself:");
    crate::out!("  outpost pki init --dir pki --org \"Example Org\"");
    crate::out!("  outpost pki issue --dir pki --role signer --name packager");
    crate::out!("  outpost pkg build SRC_DIR --cert pki/packager.crt --key pki/packager.key --out dist");
    crate::out!("  outpost pkg verify dist/NAME.outpost --trust pki/ca.crt");
    crate::out!("  outpost wapt verify-control WAPT/control --trust vendor.crt");
    Ok(())
}

fn step(n: usize, what: &str) {
    crate::out!("\n[{n}/5] {what}");
}

fn build_sample(dir: &Path, dist: &Path, sample: &Sample, signer: &Signer, now: i64) -> Result<PathBuf> {
    let src = dir.join("src").join(package::file_name(&entry_of(sample)?).trim_end_matches(".outpost"));
    if !src.exists() {
        std::fs::create_dir_all(src.join("WAPT"))?;
        std::fs::write(src.join("WAPT/control"), control_of(sample).to_text())?;
        for (path, text) in sample.files {
            let p = src.join(path);
            std::fs::create_dir_all(p.parent().unwrap_or(&src))?;
            std::fs::write(&p, text)?;
        }
    }
    let mut source = DirSource::new(&src);
    let entries = source.entries(&["WAPT/control"])?;
    let target = dist.join(package::file_name(&entry_of(sample)?));
    let mut out = AtomicFile::create(&target, 0o644)?;
    package::build(&mut out, &control_of(sample), entries, &mut source, signer, now, &mut |_| {})?;
    out.commit()?;
    Ok(target)
}

fn control_of(sample: &Sample) -> Control {
    let mut c = Control::new();
    for (k, v) in [
        ("package", sample.name),
        ("version", sample.version),
        ("architecture", "all"),
        ("section", "base"),
        ("priority", "optional"),
        ("maintainer", "Demo Org"),
    ] {
        c.set(k, v);
    }
    let extra = Control::parse(sample.extra).expect("sample controls are valid");
    for (k, v) in extra.iter() {
        c.set(k, v);
    }
    c
}

fn entry_of(sample: &Sample) -> Result<PackageEntry> {
    Ok(PackageEntry::from_control(&control_of(sample))?)
}

fn tempfile_dir() -> Result<PathBuf> {
    let base = std::env::temp_dir().join(format!("outpost-demo-{}", std::process::id()));
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    Ok(base)
}
