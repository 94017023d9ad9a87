//! WAPT repository indexes (`Packages`): a zip holding the `Packages` text (control records
//! separated by blank lines, each with `filename`, `size`, `md5sum`), the signers'
//! certificates under `ssl/` and revocation lists under `crl/`. The index itself is not
//! signed; each record is.

use std::io::{BufReader, Read, Seek, SeekFrom};

use rustls_pki_types::CertificateDer;

use super::WaptError;
use crate::control::{Record, parse_records_reader};
use crate::pki::parse_pem_certificates;

/// Largest `Packages` text accepted.
pub const MAX_INDEX_BYTES: u64 = 512 * 1024 * 1024;

/// A read index.
#[derive(Clone, Debug)]
pub struct Index {
    /// Every record, in order, with its first line.
    pub records: Vec<Record>,
    /// Certificates found under `ssl/` (name, certificate).
    pub certificates: Vec<(String, CertificateDer<'static>)>,
    /// Number of revocation lists under `crl/`.
    pub crls: usize,
}

/// Reads an index: the zip WAPT publishes, or a bare `Packages` text. The text is parsed as
/// it is decompressed, one bounded record at a time ([`crate::control::parse_records_reader`]).
pub fn read_index<R: Read + Seek>(mut reader: R) -> Result<Index, WaptError> {
    let mut magic = [0u8; 4];
    let got = reader.read(&mut magic).map_err(|source| WaptError::Read { path: "index".into(), error: source })?;
    reader.seek(SeekFrom::Start(0)).map_err(|source| WaptError::Read { path: "index".into(), error: source })?;
    let is_zip = got == 4 && (&magic == b"PK\x03\x04" || &magic == b"PK\x05\x06");
    if !is_zip {
        let limited = BufReader::new(reader.take(MAX_INDEX_BYTES));
        let records = parse_records_reader(limited).map_err(|e| WaptError::Index(format!("Packages: {e}")))?;
        return Ok(Index { records, certificates: Vec::new(), crls: 0 });
    }
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| WaptError::Archive(e.to_string()))?;
    let records = {
        let member = zip
            .by_name("Packages")
            .map_err(|_| WaptError::Index("the zip has no 'Packages' member: it is not a WAPT index".into()))?;
        parse_records_reader(BufReader::new(member.take(MAX_INDEX_BYTES)))
            .map_err(|e| WaptError::Index(format!("Packages: {e}")))?
    };
    let mut certificates = Vec::new();
    let mut crls = 0;
    let names: Vec<String> = zip.file_names().filter_map(Result::ok).map(|n| n.to_string()).collect();
    for name in names {
        if name.starts_with("crl/") && !name.ends_with('/') {
            crls += 1;
        }
        if name.starts_with("ssl/") && (name.ends_with(".crt") || name.ends_with(".pem")) {
            let mut pem = Vec::new();
            zip.by_name(&name)
                .map_err(|e| WaptError::Archive(e.to_string()))?
                .take(super::archive::MAX_META_BYTES)
                .read_to_end(&mut pem)
                .map_err(|source| WaptError::Read { path: name.clone(), error: source })?;
            let certs = parse_pem_certificates(&String::from_utf8_lossy(&pem))
                .map_err(|e| WaptError::Certificate(format!("{name}: {e}")))?;
            certificates.extend(certs.into_iter().map(|c| (name.clone(), c)));
        }
    }
    Ok(Index { records, certificates, crls })
}
