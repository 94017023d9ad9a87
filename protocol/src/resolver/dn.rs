//! Distinguished names: which unit packages a host takes.
//!
//! A DN is a comma list of `ATTR=value` components (`CN=pc1,OU=Paris,DC=corp,DC=lan`).
//! Attribute names are case-insensitive, spaces around `,` and `=` are tolerated, and `\,`
//! escapes a comma inside a value. The canonical form upper-cases attribute names, keeps
//! values as given and writes no spaces around separators.

/// The unit package names for a DN: each suffix starting with an `OU=` component, longest
/// first, then the domain suffix starting at the first `DC=` component, all in canonical form.
/// A leading `CN=` component (the host itself) is dropped. A DN that does not parse gives no
/// names.
///
/// `CN=pc1, ou=Paris,OU=Sites,DC=corp,DC=lan` →
/// `["OU=Paris,OU=Sites,DC=corp,DC=lan", "OU=Sites,DC=corp,DC=lan", "DC=corp,DC=lan"]`.
pub fn unit_names(dn: &str) -> Vec<String> {
    let Some(mut parts) = components(dn) else {
        return Vec::new();
    };
    if parts.first().is_some_and(|c| c.attr == "CN") {
        parts.remove(0);
    }
    let mut names: Vec<String> =
        (0..parts.len()).filter(|&i| parts[i].attr == "OU").map(|i| join(&parts[i..])).collect();
    if let Some(first_dc) = parts.iter().position(|c| c.attr == "DC") {
        names.push(join(&parts[first_dc..]));
    }
    names
}

/// The canonical form of a DN, or `None` when the text is not a DN.
pub(super) fn canonical(dn: &str) -> Option<String> {
    components(dn).map(|parts| join(&parts))
}

/// One `ATTR=value` component.
struct Component {
    /// Attribute name, upper-case.
    attr: String,
    /// Value as written, trimmed.
    value: String,
}

/// Splits a DN on unescaped commas; empty components are skipped. `None` when a component
/// has no `=`, an empty or non-alphanumeric attribute, or an empty value.
fn components(dn: &str) -> Option<Vec<Component>> {
    let mut raw = Vec::new();
    let mut current = String::new();
    let mut chars = dn.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                current.push(c);
                current.extend(chars.next());
            }
            ',' => raw.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    raw.push(current);
    let parts: Option<Vec<Component>> = raw
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (attr, value) = p.split_once('=')?;
            let (attr, value) = (attr.trim(), value.trim());
            let valid =
                !attr.is_empty() && attr.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') && !value.is_empty();
            valid.then(|| Component { attr: attr.to_ascii_uppercase(), value: value.to_string() })
        })
        .collect();
    parts.filter(|p| !p.is_empty())
}

fn join(parts: &[Component]) -> String {
    parts.iter().map(|c| format!("{}={}", c.attr, c.value)).collect::<Vec<_>>().join(",")
}
