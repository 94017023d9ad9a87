//! Micro-benchmarks of the pure core: control parsing, WAPT signature checks, version order,
//! resolution, package build and verification throughput, and report signatures checked in
//! batches. Run with
//! `cargo bench -p outpost-bench --bench core`.

use std::collections::BTreeMap;
use std::io::{self, Cursor, Read};
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use outpost_protocol::control::Control;
use outpost_protocol::entry::HostCapabilities;
use outpost_protocol::package::{self, FileSource, PackageArchive, Signer, SourceEntry};
use outpost_protocol::pki::{self, IssueRequest, Role, TrustStore, parse_pem_certificates};
use outpost_protocol::resolver::{self, HostIdentity, ResolveInput};
use outpost_protocol::signing::{self, Domain, PublicKey, ToVerify};
use outpost_protocol::version::Version;
use outpost_protocol::wapt;

const SEVEN_ZIP: &str = include_str!("../../tests/fixtures/wapt/tis-7zip.control");
const VENDOR: &str = include_str!("../../tests/fixtures/wapt/tranquilit.crt");
const NOW: i64 = 1_800_000_000;

fn control(c: &mut Criterion) {
    c.bench_function("control/parse tis-7zip", |b| b.iter(|| Control::parse(SEVEN_ZIP).unwrap()));
    let parsed = Control::parse(SEVEN_ZIP).unwrap();
    let trust = parse_pem_certificates(VENDOR).unwrap();
    c.bench_function("wapt/verify-control tis-7zip", |b| {
        b.iter(|| wapt::verify_control(&parsed, &trust, NOW).unwrap());
    });
}

fn versions(c: &mut Criterion) {
    let list: Vec<Version> = (0..10_000u32)
        .map(|i| Version::parse(&format!("{}.{}.{}-{}", i % 7, i % 13, i % 101, i % 5)).unwrap())
        .collect();
    c.bench_function("version/sort 10k", |b| b.iter_batched(|| list.clone(), |mut l| l.sort(), BatchSize::LargeInput));
}

fn resolve(c: &mut Criterion) {
    let host = "pc1.example.org";
    let entries = outpost_bench::universe(5_000, host);
    let identity = HostIdentity { fqdn: Some(host.into()), ..HostIdentity::default() };
    let caps = HostCapabilities { now: NOW, ..HostCapabilities::default() };
    c.bench_function("resolver/5000 packages x3 versions, 500 roots", |b| {
        b.iter(|| {
            let r = resolver::resolve(&ResolveInput {
                entries: &entries,
                host: &identity,
                capabilities: &caps,
                installed: &[],
                requested: &[],
                incomplete: false,
            });
            assert!(r.errors.is_empty());
            r
        });
    });
}

struct Mem(BTreeMap<String, Vec<u8>>);

impl FileSource for Mem {
    fn open(&mut self, path: &str) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(self.0[path].as_slice()))
    }
}

fn packages(c: &mut Criterion) {
    const MIB: usize = 1024 * 1024;
    let ca = pki::create_ca("Bench", NOW, 100).unwrap();
    let req = IssueRequest { role: Role::Signer, name: "bench".into(), rights: vec![], alt_names: vec![], days: 30 };
    let issued = pki::issue(&ca.cert, &ca.key, &req, NOW).unwrap();
    let signer = Signer::new(issued.key, vec![issued.cert], NOW).unwrap();
    let trust = TrustStore::new(vec![ca.cert]).unwrap();
    // 64 MiB in 16 files of pseudo-random bytes (incompressible, like installers).
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut files = BTreeMap::new();
    for i in 0..16 {
        let data: Vec<u8> = (0..4 * MIB)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        files.insert(format!("payload/file-{i:02}.bin"), data);
    }
    let entries: Vec<SourceEntry> =
        files.iter().map(|(p, d)| SourceEntry { path: p.clone(), size: d.len() as u64, mode: 0o644 }).collect();
    let ctl =
        Control::parse("package: bench\nversion: 1\narchitecture: all\nsection: base\npriority: optional\n").unwrap();
    let mut source = Mem(files);
    let mut group = c.benchmark_group("package 64 MiB");
    group.throughput(Throughput::Bytes(64 * MIB as u64)).sample_size(10).measurement_time(Duration::from_secs(20));
    group.bench_function("build", |b| {
        b.iter(|| {
            let mut out = Cursor::new(Vec::with_capacity(70 * MIB));
            package::build(&mut out, &ctl, entries.clone(), &mut source, &signer, NOW, &mut |_| {}).unwrap();
            out
        });
    });
    let mut out = Cursor::new(Vec::new());
    package::build(&mut out, &ctl, entries.clone(), &mut source, &signer, NOW, &mut |_| {}).unwrap();
    let bytes = out.into_inner();
    group.bench_function("verify", |b| {
        b.iter(|| {
            PackageArchive::open(Cursor::new(bytes.as_slice())).unwrap().verify(&trust, NOW, &mut |_| {}).unwrap();
        });
    });
    group.finish();
}

/// Inventory reports' Ed25519 signatures checked as central checks them: alone, and in batches
/// of the sizes around curve25519-dalek's switch from Straus's method to Pippenger's (at 190
/// points: 95 signatures); each signed by its own host key, 300-byte messages.
fn signatures(c: &mut Criterion) {
    let n = 512;
    let keys: Vec<pki::PrivateKey> = (0..n).map(|_| pki::PrivateKey::generate().unwrap()).collect();
    let messages: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; 300]).collect();
    let sigs: Vec<Vec<u8>> =
        keys.iter().zip(&messages).map(|(k, m)| signing::sign(k, Domain::InventoryReport, m).to_vec()).collect();
    let publics: Vec<PublicKey> = keys.iter().map(|k| PublicKey::new(&k.public_key())).collect();
    let items: Vec<ToVerify<'_>> =
        (0..n).map(|i| ToVerify { public_key: &publics[i], message: &messages[i], signature: &sigs[i] }).collect();
    let mut group = c.benchmark_group("report signatures");
    for batch in [1, 64, 96, 256, 512] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("batch {batch}"), |b| {
            b.iter(|| {
                assert!(signing::verify_batch(Domain::InventoryReport, &items[..batch]).iter().all(Result::is_ok));
            });
        });
    }
    group.finish();
}

criterion_group!(benches, control, versions, resolve, packages, signatures);
criterion_main!(benches);
