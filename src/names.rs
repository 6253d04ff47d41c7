//! Kubernetes object names (pure): the DNS-1123 rules the API server applies, checked before
//! anything is planned so that a bad name is a config error, not a 422 at write time.

/// Longest DNS-1123 label (namespaces, registry names).
pub const MAX_LABEL_LEN: usize = 63;
/// Longest DNS-1123 subdomain (Secret and ServiceAccount names).
pub const MAX_SUBDOMAIN_LEN: usize = 253;

/// A Kubernetes namespace-style name, or `None` when fine.
pub fn dns1123_label_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("must not be empty");
    }
    if name.len() > MAX_LABEL_LEN {
        return Some("must be at most 63 characters");
    }
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !chars_ok {
        return Some("may contain only lowercase letters, digits and '-'");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some("must start and end with a lowercase letter or digit");
    }
    None
}

/// A Kubernetes object name such as a Secret's: labels joined by dots, at most 253 characters.
pub fn dns1123_subdomain_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("must not be empty");
    }
    if name.len() > MAX_SUBDOMAIN_LEN {
        return Some("must be at most 253 characters");
    }
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !chars_ok {
        return Some("may contain only lowercase letters, digits, '-' and '.'");
    }
    let labels_ok = name
        .split('.')
        .all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'));
    if !labels_ok {
        return Some("each dot-separated part must start and end with a lowercase letter or digit");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        for ok in ["a", "project-a", "a1", &"a".repeat(63)] {
            assert_eq!(dns1123_label_problem(ok), None, "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", &"a".repeat(64)] {
            assert!(dns1123_label_problem(bad).is_some(), "{bad}");
        }
        for ok in ["a", "a.b", "my-secret.v1", "0abc"] {
            assert_eq!(dns1123_subdomain_problem(ok), None, "{ok}");
        }
        for bad in ["", ".a", "a.", "a..b", "a.-b", "A", "a b", &"a".repeat(254)] {
            assert!(dns1123_subdomain_problem(bad).is_some(), "{bad}");
        }
    }
}
