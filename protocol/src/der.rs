//! The few DER encodings Outpost writes itself: object identifiers with arcs wider than 64 bits
//! (Outpost's arc is `2.25.<UUID>`, registration-free per ITU-T X.667) and the extended key
//! usage extension that carries them.

/// Outpost's object-identifier arc: `2.25.191591692002547538546566266745824954494`
/// (UUID 902337b9-6012-4954-9559-7c0f9b8b487e).
pub const OUTPOST_ARC: [u128; 3] = [2, 25, 191_591_692_002_547_538_546_566_266_745_824_954_494];

/// The OID of the extended-key-usage extension (2.5.29.37).
pub const EXTENDED_KEY_USAGE_EXTENSION: [u64; 4] = [2, 5, 29, 37];

/// Encodes object-identifier arcs as DER content bytes (without tag and length).
///
/// # Panics
/// With fewer than two arcs or a first arc above 2: identifiers are constants of this crate.
pub fn oid_content(arcs: &[u128]) -> Vec<u8> {
    assert!(arcs.len() >= 2 && arcs[0] <= 2, "invalid object identifier");
    let mut out = Vec::new();
    push_base128(&mut out, arcs[0] * 40 + arcs[1]);
    for arc in &arcs[2..] {
        push_base128(&mut out, *arc);
    }
    out
}

/// A DER tag-length-value.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// The DER value of an extended-key-usage extension: `SEQUENCE OF OBJECT IDENTIFIER`, from
/// the identifiers' content bytes.
pub fn extended_key_usage(oids: &[&[u8]]) -> Vec<u8> {
    let body: Vec<u8> = oids.iter().flat_map(|oid| tlv(0x06, oid)).collect();
    tlv(0x30, &body)
}

fn push_base128(out: &mut Vec<u8>, mut value: u128) {
    let mut groups = vec![(value & 0x7f) as u8];
    value >>= 7;
    while value > 0 {
        groups.push(0x80 | (value & 0x7f) as u8);
        value >>= 7;
    }
    out.extend(groups.iter().rev());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_known_identifiers() {
        // id-kp-codeSigning 1.3.6.1.5.5.7.3.3
        assert_eq!(oid_content(&[1, 3, 6, 1, 5, 5, 7, 3, 3]), [0x2b, 6, 1, 5, 5, 7, 3, 3]);
        // 2.25 with a 128-bit arc keeps every bit
        let oid = oid_content(&[2, 25, u128::MAX]);
        assert_eq!(oid[0], 0x69);
        assert_eq!(oid.len(), 1 + 19);
        assert_eq!(tlv(0x04, &[0u8; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(tlv(0x04, &[0u8; 300])[..4], [0x04, 0x82, 1, 44]);
        assert_eq!(extended_key_usage(&[&[0x2b, 6]]), [0x30, 4, 0x06, 2, 0x2b, 6]);
    }
}
